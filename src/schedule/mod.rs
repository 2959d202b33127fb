//! The QA schedule: which activities exist, who owns them, how often they recur, when they are
//! due and how loudly to chase them. Parsed from `schedule.toml` and validated once, here.
//!
//! **Invariant:** pure. No IO (the caller reads the file), no clock. Nothing about any particular
//! council is hard-coded: the default table lives in `config/schedule.toml`.

pub mod due;
pub mod form;
pub mod period;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

pub use due::DueRule;
pub use form::{Field, FieldError, FieldKind, Form};
pub use period::{Cadence, FinancialYear, Period};

use crate::problem::{Problem, Problems, line_of};

/// How an activity's work is shared out among the people who hold its owner role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanOut {
    /// One assignment per active holder of the role.
    Each,
    /// One assignment owned by the role: every holder sees it, any holder completes it.
    Role,
    /// For a triggered activity: one per completed assignment of the trigger, for the line manager
    /// of whoever completed it, with that person as the subject.
    PerCompleted,
}

/// How notifications about an activity's assignments are timed. Parsed and validated now; the
/// notifier uses them. Days are working days.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// Tell the assignee when new work is assigned.
    pub on_assign: bool,
    /// Remind this many working days before the due date (each entry one reminder).
    pub remind_before: Vec<u32>,
    /// Send a "due today" notice on the due date.
    pub on_due_date: bool,
    /// Chase the assignee every this many working days while overdue (0: never).
    pub chase_every: u32,
    /// Escalate to the assignee's line manager after this many working days overdue (0: never).
    pub escalate_after: u32,
    /// Escalate to the next manager up after this many working days overdue (0: never).
    pub escalate_again_after: u32,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            on_assign: true,
            remind_before: vec![5, 1],
            on_due_date: true,
            chase_every: 3,
            escalate_after: 5,
            escalate_again_after: 10,
        }
    }
}

/// The senior-leadership digest of everything overdue, sent before each review of the
/// closing-the-loop tracker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestSettings {
    /// The activity whose due date the digest precedes.
    pub before_activity: String,
    /// How many working days before that due date it goes out.
    pub days_before: u32,
    /// The role that receives it.
    pub role: String,
}

impl Default for DigestSettings {
    fn default() -> Self {
        Self {
            before_activity: "closing-the-loop-review".into(),
            days_before: 5,
            role: "slt".into(),
        }
    }
}

/// Timelines for actions raised by audits (`[actions]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionSettings {
    /// Default due date of a new action: this many working days after it is raised.
    pub due_working_days: u32,
    /// The same for an action raised from an audit graded Inadequate: shorter.
    pub inadequate_due_working_days: u32,
    /// A done action not verified after this many working days reminds the verifier.
    pub verify_within: u32,
    /// How many levels sooner an overdue action from an Inadequate audit escalates: with 1, it
    /// goes to the line manager on its first overdue day instead of after `escalate_after`.
    pub inadequate_escalates_sooner: u32,
    /// How the daily message reminds, chases and escalates open actions (`[actions.notify]`):
    /// the same rules, and the same machinery, as an activity's work. `on_assign` puts a new
    /// action in its owner's next daily message. Unset keys come from `[defaults.notify]`.
    #[serde(skip)]
    pub notify: NotifySettings,
}

impl Default for ActionSettings {
    fn default() -> Self {
        Self {
            due_working_days: 20,
            inadequate_due_working_days: 10,
            verify_within: 5,
            inadequate_escalates_sooner: 1,
            notify: NotifySettings::default(),
        }
    }
}

/// One activity of the schedule table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Stable id (`file-audit`); the database keys assignments by it, so renaming it starts afresh.
    pub id: String,
    /// What people see (`Case file audit`).
    pub title: String,
    /// The role whose holders do the work.
    pub owner_role: String,
    /// How often it recurs; `None` for a triggered activity.
    pub cadence: Option<Cadence>,
    /// How work is shared among the role's holders.
    pub fan_out: FanOut,
    /// The activity whose completions create this one's work.
    pub triggered_by: Option<String>,
    /// When it is due.
    pub due: DueRule,
    /// Reminder, chase and escalation timing.
    pub notify: NotifySettings,
    /// The form completing it records (a key of `forms`); `None`: done, with an optional note.
    pub form: Option<String>,
    /// A moderation: completing it judges the graded fields of the trigger's record.
    pub moderates: bool,
}

/// The validated schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Every role a person may hold; the staff file is checked against it.
    pub roles: BTreeSet<String>,
    /// Each role's title for people to read (`Performance Unit`), from the `[roles]` table; a
    /// role listed without one reads as its id in words (see [`Schedule::role_title`]).
    pub role_titles: BTreeMap<String, String>,
    /// The role whose holders may complete anyone's work (the QA team).
    pub admin_role: String,
    /// Roles whose holders must have a line manager (someone must be escalated to).
    pub require_line_manager: BTreeSet<String>,
    /// The activities, in file order.
    pub activities: Vec<Activity>,
    /// The senior-leadership digest.
    pub digest: DigestSettings,
    /// Action timelines.
    pub actions: ActionSettings,
    /// Forms activities record, by id.
    pub forms: BTreeMap<String, Form>,
}

/// `roles`: a list of ids (`roles = ["team_manager", …]`), or a table of ids and their titles
/// (`[roles]` with `team_manager = "Team manager"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoles {
    Ids(Vec<String>),
    Titles(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    roles: RawRoles,
    #[serde(default = "default_admin_role")]
    admin_role: String,
    #[serde(default = "default_require_line_manager")]
    require_line_manager: Vec<String>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    digest: DigestSettings,
    #[serde(default)]
    actions: toml::Table,
    #[serde(default, rename = "activity")]
    activities: Vec<RawActivity>,
    #[serde(default)]
    scales: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    forms: BTreeMap<String, form::RawForm>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    notify: NotifySettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivity {
    id: String,
    title: String,
    owner_role: String,
    cadence: Option<Cadence>,
    fan_out: FanOut,
    triggered_by: Option<String>,
    due: DueRule,
    notify: Option<toml::Table>,
    form: Option<String>,
    #[serde(default)]
    moderates: bool,
}

fn default_admin_role() -> String {
    "qa_admin".into()
}

fn default_require_line_manager() -> Vec<String> {
    vec!["team_manager".into(), "service_lead".into()]
}

impl Schedule {
    /// Parses and validates a schedule file's text, reporting every problem with `file` and the
    /// key (or line) it concerns.
    pub fn parse(text: &str, file: &Path) -> Result<Schedule, Problems> {
        let raw: RawSchedule = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|s| format!("line {}", line_of(text, s.start)))
                .unwrap_or_default();
            Problem::new(file, location, e.message().trim().to_owned())
        })?;
        let mut problems = Problems::default();
        let role_titles: BTreeMap<String, String> = match raw.roles {
            RawRoles::Ids(ids) => ids.into_iter().map(|id| (id, String::new())).collect(),
            RawRoles::Titles(titles) => titles,
        };
        for (role, title) in &role_titles {
            if !valid_role(role) {
                problems.push(Problem::new(
                    file,
                    format!("roles.{role}"),
                    "role ids use lower-case letters, digits and `_` only",
                ));
            }
            if title.trim() != title || title.contains('\n') {
                problems.push(Problem::new(
                    file,
                    format!("roles.{role}"),
                    "a title is one line without leading or trailing spaces",
                ));
            }
        }
        let roles: BTreeSet<String> = role_titles.keys().cloned().collect();
        let role_titles: BTreeMap<String, String> = role_titles
            .into_iter()
            .filter(|(_, title)| !title.is_empty())
            .collect();
        let mut role_check = |key: String, role: &str| {
            if !roles.contains(role) {
                problems.push(Problem::new(
                    file,
                    key,
                    format!("unknown role `{role}`: add it to `roles` or fix the spelling"),
                ));
            }
        };
        role_check("admin_role".into(), &raw.admin_role);
        for role in &raw.require_line_manager {
            role_check("require_line_manager".into(), role);
        }
        role_check("digest.role".into(), &raw.digest.role);

        let forms = form::parse_forms(raw.scales, raw.forms, file, &mut problems);
        let mut activities = Vec::with_capacity(raw.activities.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, a) in raw.activities.into_iter().enumerate() {
            let at = |key: &str| format!("activity[{index}] ({}).{key}", a.id);
            if let Some(first) = seen.insert(a.id.clone(), index) {
                problems.push(Problem::new(
                    file,
                    at("id"),
                    format!("duplicate id: activity[{first}] already uses it"),
                ));
            }
            if !valid_id(&a.id) {
                problems.push(Problem::new(
                    file,
                    at("id"),
                    "ids use lower-case letters, digits and `-` only",
                ));
            }
            if !roles.contains(&a.owner_role) {
                problems.push(Problem::new(
                    file,
                    at("owner_role"),
                    format!(
                        "unknown role `{}`: add it to `roles` or fix the spelling",
                        a.owner_role
                    ),
                ));
            }
            match (&a.triggered_by, a.cadence, a.fan_out) {
                (None, None, _) => problems.push(Problem::new(
                    file,
                    at("cadence"),
                    "missing: give a cadence (monthly, bimonthly, quarterly, annually) or `triggered_by`",
                )),
                (Some(_), Some(_), _) => problems.push(Problem::new(
                    file,
                    at("cadence"),
                    "a triggered activity has no cadence of its own: remove one of `cadence` and `triggered_by`",
                )),
                (Some(_), None, FanOut::Each | FanOut::Role) => problems.push(Problem::new(
                    file,
                    at("fan_out"),
                    "a triggered activity uses fan_out = \"per_completed\"",
                )),
                (None, Some(_), FanOut::PerCompleted) => problems.push(Problem::new(
                    file,
                    at("fan_out"),
                    "fan_out = \"per_completed\" needs `triggered_by`",
                )),
                _ => {}
            }
            match (a.triggered_by.is_some(), a.due.is_trigger_relative()) {
                (true, false) => problems.push(Problem::new(
                    file,
                    at("due"),
                    "a triggered activity is due relative to its trigger: use rule = \"working_days_after_trigger\"",
                )),
                (false, true) => problems.push(Problem::new(
                    file,
                    at("due"),
                    "rule \"working_days_after_trigger\" needs `triggered_by`",
                )),
                _ => {}
            }
            if let Some(n) = a.due.count()
                && !(1..=60).contains(&n)
            {
                problems.push(Problem::new(
                    file,
                    at("due.n"),
                    "n must be between 1 and 60",
                ));
            }
            let notify = match a.notify {
                None => raw.defaults.notify.clone(),
                Some(overrides) => match merge_notify(&raw.defaults.notify, overrides) {
                    Ok(n) => n,
                    Err(e) => {
                        problems.push(Problem::new(file, at("notify"), e));
                        raw.defaults.notify.clone()
                    }
                },
            };
            validate_notify(&notify, &at("notify"), file, &mut problems);
            if let Some(f) = &a.form
                && !forms.contains_key(f)
            {
                problems.push(Problem::new(
                    file,
                    at("form"),
                    format!("no form `{f}` in [forms]"),
                ));
            }
            if a.moderates && a.form.is_some() {
                problems.push(Problem::new(
                    file,
                    at("form"),
                    "a moderation's form is made from the audit it moderates: remove `form`",
                ));
            }
            activities.push(Activity {
                id: a.id,
                title: a.title,
                owner_role: a.owner_role,
                cadence: a.cadence,
                fan_out: a.fan_out,
                triggered_by: a.triggered_by,
                due: a.due,
                notify,
                form: a.form,
                moderates: a.moderates,
            });
        }
        validate_notify(&raw.defaults.notify, "defaults.notify", file, &mut problems);
        for (index, a) in activities.iter().enumerate() {
            if let Some(trigger) = &a.triggered_by {
                match activities.iter().find(|t| &t.id == trigger) {
                    None => problems.push(Problem::new(
                        file,
                        format!("activity[{index}] ({}).triggered_by", a.id),
                        format!("no activity has id `{trigger}`"),
                    )),
                    Some(t) if t.triggered_by.is_some() => problems.push(Problem::new(
                        file,
                        format!("activity[{index}] ({}).triggered_by", a.id),
                        format!(
                            "`{trigger}` is itself triggered: chains of triggers are not supported"
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        for (index, a) in activities.iter().enumerate() {
            if !a.moderates {
                continue;
            }
            let graded = a
                .triggered_by
                .as_deref()
                .and_then(|t| activities.iter().find(|x| x.id == t))
                .and_then(|t| t.form.as_deref())
                .and_then(|f| forms.get(f))
                .is_some_and(|f| f.grade_fields().next().is_some());
            if !graded {
                problems.push(Problem::new(
                    file,
                    format!("activity[{index}] ({}).moderates", a.id),
                    "a moderation is triggered by an activity whose form has grade fields",
                ));
            }
        }
        match activities
            .iter()
            .find(|a| a.id == raw.digest.before_activity)
        {
            None => problems.push(Problem::new(
                file,
                "digest.before_activity",
                format!("no activity has id `{}`", raw.digest.before_activity),
            )),
            Some(a) if a.cadence.is_none() => problems.push(Problem::new(
                file,
                "digest.before_activity",
                "the digest must precede a scheduled (not triggered) activity",
            )),
            Some(_) => {}
        }
        let actions = parse_actions(raw.actions, &raw.defaults.notify, file, &mut problems);
        if activities.is_empty() {
            problems.push(Problem::new(
                file,
                "activity",
                "the schedule has no activities",
            ));
        }
        problems.into_result(Schedule {
            roles,
            role_titles,
            admin_role: raw.admin_role,
            require_line_manager: raw.require_line_manager.into_iter().collect(),
            activities,
            digest: raw.digest,
            actions,
            forms,
        })
    }

    /// What people read for `role`: its title from `[roles]`, else the id in words with a
    /// capital (`performance_unit` → `Performance unit`). Never the `role:` spelling.
    pub fn role_title(&self, role: &str) -> String {
        if let Some(title) = self.role_titles.get(role) {
            return title.clone();
        }
        let words = role.replace(['_', '-'], " ");
        let mut chars = words.chars();
        chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    }

    /// The activity with `id`.
    pub fn activity(&self, id: &str) -> Option<&Activity> {
        self.activities.iter().find(|a| a.id == id)
    }

    /// The form completing `activity` records, if it has one (moderations: see
    /// [`Schedule::moderated_form`]).
    pub fn form_of(&self, activity: &Activity) -> Option<&Form> {
        activity.form.as_deref().and_then(|f| self.forms.get(f))
    }

    /// For a moderation activity: the form of the audit it moderates.
    pub fn moderated_form(&self, activity: &Activity) -> Option<&Form> {
        if !activity.moderates {
            return None;
        }
        let trigger = self.activity(activity.triggered_by.as_deref()?)?;
        self.form_of(trigger)
    }

    /// Activities triggered by completions of `id`.
    pub fn triggered_by<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Activity> + 'a {
        self.activities
            .iter()
            .filter(move |a| a.triggered_by.as_deref() == Some(id))
    }
}

fn valid_role(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `[actions]`: the timelines, and `[actions.notify]` over the schedule's default rules.
fn parse_actions(
    mut table: toml::Table,
    defaults: &NotifySettings,
    file: &Path,
    problems: &mut Problems,
) -> ActionSettings {
    let overrides = match table.remove("notify") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            problems.push(Problem::new(file, "actions.notify", "must be a table"));
            toml::Table::new()
        }
    };
    let mut settings: ActionSettings = match toml::Value::Table(table).try_into() {
        Ok(s) => s,
        Err(e) => {
            let e: toml::de::Error = e;
            problems.push(Problem::new(file, "actions", e.message().trim().to_owned()));
            ActionSettings::default()
        }
    };
    settings.notify = match merge_notify(defaults, overrides) {
        Ok(n) => n,
        Err(e) => {
            problems.push(Problem::new(file, "actions.notify", e));
            defaults.clone()
        }
    };
    validate_notify(&settings.notify, "actions.notify", file, problems);
    settings
}

/// Applies an activity's `notify` overrides on top of the schedule's defaults.
fn merge_notify(
    defaults: &NotifySettings,
    overrides: toml::Table,
) -> Result<NotifySettings, String> {
    let mut base = toml::Table::try_from(defaults).map_err(|e| e.to_string())?;
    base.extend(overrides);
    toml::Value::Table(base)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_owned())
}

fn validate_notify(n: &NotifySettings, key: &str, file: &Path, problems: &mut Problems) {
    if n.remind_before.iter().any(|&d| d == 0 || d > 60) {
        problems.push(Problem::new(
            file,
            format!("{key}.remind_before"),
            "each reminder is 1 to 60 working days before the due date",
        ));
    }
    if n.escalate_after > 0
        && n.escalate_again_after > 0
        && n.escalate_again_after <= n.escalate_after
    {
        problems.push(Problem::new(
            file,
            format!("{key}.escalate_again_after"),
            format!(
                "must be later than escalate_after ({}), or 0 to switch it off",
                n.escalate_after
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/schedule.toml"))
            .unwrap()
    }

    #[test]
    fn the_shipped_schedule_has_the_framework_table() {
        let s = Schedule::parse(&shipped(), Path::new("schedule.toml")).unwrap();
        let ids: Vec<&str> = s.activities.iter().map(|a| a.id.as_str()).collect();
        for id in [
            "performance-data",
            "file-audit",
            "audit-moderation",
            "direct-observation",
            "observation-findings-report",
            "locality-overview-report",
            "service-themes-report",
            "complaints-report",
            "siu-participation-report",
            "closing-the-loop-review",
            "practitioner-forum",
            "supervision-audit",
            "service-observation",
            "supervision-findings-report",
            "dip-sampling",
            "private-fostering-review",
        ] {
            assert!(ids.contains(&id), "missing {id}");
        }
        let moderation = s.activity("audit-moderation").unwrap();
        assert_eq!(moderation.fan_out, FanOut::PerCompleted);
        assert_eq!(moderation.due, DueRule::WorkingDaysAfterTrigger { n: 10 });
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
roles = ["team_manager", "service_lead", "qa_admin", "slt"]
[[activity]]
id = "a"
title = "A"
owner_role = "team_managr"
cadence = "monthly"
fan_out = "each"
due = { rule = "working_days_after_trigger", n = 3 }

[[activity]]
id = "closing-the-loop-review"
title = "B"
owner_role = "slt"
fan_out = "per_completed"
triggered_by = "nope"
due = { rule = "working_days_after_trigger", n = 0 }
notify = { escalate_after = 5, escalate_again_after = 4 }
"#;
        let problems = Schedule::parse(text, Path::new("s.toml")).unwrap_err();
        let text = problems.to_string();
        assert!(
            text.contains("activity[0] (a).owner_role: unknown role `team_managr`"),
            "{text}"
        );
        assert!(text.contains("activity[0] (a).due"), "{text}");
        assert!(
            text.contains(
                "activity[1] (closing-the-loop-review).triggered_by: no activity has id `nope`"
            ),
            "{text}"
        );
        assert!(text.contains("due.n"), "{text}");
        assert!(text.contains("notify.escalate_again_after"), "{text}");
    }

    #[test]
    fn roles_have_titles_from_the_roles_table_or_read_as_words() {
        let s = Schedule::parse(&shipped(), Path::new("schedule.toml")).unwrap();

        assert_eq!(s.role_title("performance_unit"), "Performance Unit");
        assert!(s.roles.contains("qa_admin"));
        // The list form still parses; titles then read as the id in words.
        let text = "roles = [\"performance_unit\", \"slt\", \"qa_admin\", \"team_manager\", \"service_lead\"]\n\
            [[activity]]\nid = \"closing-the-loop-review\"\ntitle = \"A\"\nowner_role = \"slt\"\n\
            cadence = \"bimonthly\"\nfan_out = \"role\"\ndue = { rule = \"last_working_day\" }\n";
        let s = Schedule::parse(text, Path::new("s.toml")).unwrap();
        assert_eq!(s.role_title("performance_unit"), "Performance unit");
    }

    #[test]
    fn a_bad_role_id_or_title_in_the_roles_table_is_reported_with_its_key() {
        let text = "admin_role = \"qa_admin\"\n[digest]\nrole = \"slt\"\nbefore_activity = \"r\"\n\
            [roles]\nslt = \"Senior leadership\"\nqa_admin = \" QA team\"\nTeam-Manager = \"Team manager\"\n\
            team_manager = \"Team manager\"\nservice_lead = \"Service lead\"\n\
            [[activity]]\nid = \"r\"\ntitle = \"A\"\nowner_role = \"slt\"\n\
            cadence = \"bimonthly\"\nfan_out = \"role\"\ndue = { rule = \"last_working_day\" }\n";

        let problems = Schedule::parse(text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();

        assert!(
            problems.contains("roles.Team-Manager: role ids"),
            "{problems}"
        );
        assert!(
            problems.contains("roles.qa_admin: a title is one line"),
            "{problems}"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_with_a_line() {
        let text = "roles = [\"x\"]\n[[activity]]\nid = \"a\"\ntitle = \"A\"\nowner_role = \"x\"\ncadance = \"monthly\"\nfan_out = \"each\"\ndue = { rule = \"last_working_day\" }\n";
        let problems = Schedule::parse(text, Path::new("s.toml")).unwrap_err();
        let text = problems.to_string();
        assert!(text.contains("cadance"), "{text}");
        assert!(text.contains("line "), "{text}");
    }
}
