//! A small fixed organisation and the shipped schedule and calendar, for engine tests.

use qaloop::calendar::Calendar;
use qaloop::engine::Context;
use qaloop::org::StaffRecord;
use qaloop::schedule::{FinancialYear, Schedule};

/// The repository's `config/` folder.
pub fn config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// The shipped schedule and England-and-Wales bank holidays, Europe/London, April years.
pub fn context() -> Context {
    let schedule_path = config_dir().join("schedule.toml");
    let schedule = Schedule::parse(
        &std::fs::read_to_string(&schedule_path).unwrap(),
        &schedule_path,
    )
    .unwrap();
    let holidays = std::fs::read_to_string(config_dir().join("bank-holidays.json")).unwrap();
    Context {
        schedule,
        calendar: Calendar::from_govuk_json(&holidays, "england-and-wales").unwrap(),
        tz: jiff::tz::TimeZone::get("Europe/London").unwrap(),
        fy: FinancialYear::starting_in(4).unwrap(),
        start_date: None,
        announcer: None,
    }
}

/// One staff record.
pub fn person(id: &str, roles: &[&str], manager: Option<&str>) -> StaffRecord {
    StaffRecord {
        staff_id: id.into(),
        name: format!("Person {id}"),
        email: format!("{}@example-council.test", id.to_lowercase()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        line_manager_id: manager.map(Into::into),
        team: format!("Team of {id}"),
        service: "Children in Need".into(),
        locality: "North".into(),
        chat_id: None,
        start_date: None,
    }
}

/// A small organisation in which every role is held:
/// DIR (slt) → HOS (head_of_service) → SL1 (service_lead) → TM1, TM2 (team_manager) → P1, P2;
/// plus QA (qa_admin), PU (performance_unit), SWC, WLD, DL, SIU, PR, LDM.
pub fn small_org() -> Vec<StaffRecord> {
    vec![
        person("DIR", &["slt", "directorate_lead"], None),
        person("HOS", &["head_of_service"], Some("DIR")),
        person("SL1", &["service_lead"], Some("HOS")),
        person("TM1", &["team_manager"], Some("SL1")),
        person("TM2", &["team_manager"], Some("SL1")),
        person("P1", &["practitioner", "practitioner_rep"], Some("TM1")),
        person("P2", &["practitioner"], Some("TM2")),
        person("QA", &["qa_admin"], Some("DIR")),
        person("PU", &["performance_unit"], Some("QA")),
        person("SWC", &["social_work_consultant"], Some("HOS")),
        person("WLD", &["workforce_ld"], Some("DIR")),
        person("SIU", &["siu"], Some("DIR")),
        person("LDM", &["ld_manager"], Some("WLD")),
    ]
}

/// An instant from RFC 3339 text.
pub fn at(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

/// Preferences in which everyone in [`small_org`] chose a message per item (new work at once,
/// single reminders, chases and escalations) instead of the default daily message: for tests
/// of each rule on its own.
pub fn single_messages() -> Vec<qaloop::notify::settings::Preference> {
    small_org()
        .into_iter()
        .map(|p| qaloop::notify::settings::Preference {
            staff_id: p.staff_id,
            daily_digest: Some(false),
            channels: None,
        })
        .collect()
}
