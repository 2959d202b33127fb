//! The synthetic organisation the benchmarks share (`reconcile`, `notify_year`).

use std::collections::BTreeSet;

use qaloop::org::StaffRecord;
use qaloop::schedule::Schedule;

/// A deterministic organisation of `staff` people: a director; senior leaders; heads of
/// service; service leads; `team_managers` team managers; one holder of every other role
/// the schedule uses (so every activity creates work); practitioners for the rest. Everyone but
/// the director has a line manager one level up, spread round-robin.
pub fn synthetic_org(staff: usize, team_managers: usize, schedule: &Schedule) -> Vec<StaffRecord> {
    let service_leads = team_managers.div_ceil(4);
    let heads = service_leads.div_ceil(7).max(4);
    let slt = (heads / 25).max(4);
    let hierarchy = ["slt", "head_of_service", "service_lead", "team_manager"];
    let specialists: Vec<&str> = schedule
        .roles
        .iter()
        .map(String::as_str)
        .filter(|r| !hierarchy.contains(r) && *r != "practitioner")
        .collect();
    let fixed = 1 + slt + heads + service_leads + team_managers + specialists.len();
    assert!(
        fixed <= staff,
        "{} staff cannot hold {fixed} managers",
        staff
    );
    let practitioners = staff - fixed;

    let mut records = Vec::with_capacity(staff);
    let mut person = |prefix: &str, n: usize, role: &str, manager: Option<String>| {
        let id = format!("{prefix}{n:05}");
        records.push(StaffRecord {
            staff_id: id.clone(),
            name: format!("Person {id}"),
            email: format!("{}@council.example", id.to_lowercase()),
            roles: BTreeSet::from([role.to_owned()]),
            line_manager_id: manager,
            team: format!("Team {}", n % 97),
            service: format!("Service {}", n % 13),
            locality: format!("Locality {}", n % 5),
            chat_id: None,
            start_date: None,
        });
        id
    };
    let director = person("D", 0, "slt", None);
    let leaders: Vec<String> = (0..slt)
        .map(|n| person("L", n, "slt", Some(director.clone())))
        .collect();
    let heads: Vec<String> = (0..heads)
        .map(|n| person("H", n, "head_of_service", Some(leaders[n % slt].clone())))
        .collect();
    let leads: Vec<String> = (0..service_leads)
        .map(|n| {
            let manager = heads[n % heads.len()].clone();
            person("S", n, "service_lead", Some(manager))
        })
        .collect();
    let managers: Vec<String> = (0..team_managers)
        .map(|n| {
            let manager = leads[n % leads.len()].clone();
            person("T", n, "team_manager", Some(manager))
        })
        .collect();
    for (n, role) in specialists.iter().enumerate() {
        person("X", n, role, Some(leaders[n % slt].clone()));
    }
    for n in 0..practitioners {
        let manager = managers[n % managers.len()].clone();
        person("P", n, "practitioner", Some(manager));
    }
    records
}
