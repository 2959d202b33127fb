//! Urgent concerns: an audit found something about a child's safety or health that cannot wait
//! for the next daily message.
//!
//! The framework: "any urgent concerns found for the child's safety and welfare are raised
//! immediately with Senior Manager / Head of Service … Health concerns will be raised
//! immediately … with the Health Service". qaloop alerts at once, re-alerts until someone
//! acknowledges, and escalates to senior leadership if nobody does.
//!
//! Which alerts are due is decided from time alone ([`Concern::alerts_due`]): round `n` is due
//! once `n × realert_minutes` have passed since the concern was raised, and each round has its
//! own outbox key — so a restart, a catch-up or a second node sends each round at most once,
//! and downtime yields the current round only, never a burst of missed ones.
//!
//! **Invariant:** pure. Alerts carry the case reference and a link, never details.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::org::Org;

/// What kind of concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcernKind {
    /// The child's safety or welfare.
    Urgent,
    /// The child's health: must also be raised with the health service.
    Health,
}

impl ConcernKind {
    /// The database and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcernKind::Urgent => "urgent",
            ConcernKind::Health => "health",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<ConcernKind> {
        match text {
            "urgent" => Some(ConcernKind::Urgent),
            "health" => Some(ConcernKind::Health),
            _ => None,
        }
    }
}

/// `[urgent]` in `qaloop.toml`: who hears of a concern and how insistently.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrgentSettings {
    /// Roles alerted besides the auditor's head of service (e.g. the deputy director).
    pub notify_roles: Vec<String>,
    /// The role whose nearest holder above the auditor is alerted first.
    pub head_role: String,
    /// Re-alert every this many minutes until acknowledged.
    pub realert_minutes: u32,
    /// Alert this role too once this many minutes pass unacknowledged.
    pub escalate_after_minutes: u32,
    /// Who is alerted on escalation.
    pub escalate_role: String,
}

impl Default for UrgentSettings {
    fn default() -> Self {
        Self {
            notify_roles: Vec::new(),
            head_role: "head_of_service".into(),
            realert_minutes: 60,
            escalate_after_minutes: 240,
            escalate_role: "slt".into(),
        }
    }
}

/// A concern to record: found in an audit (its record's flags) or raised by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConcern {
    /// The audit that recorded it.
    pub assignment_id: i64,
    /// The case reference.
    pub case_reference: String,
    /// Urgent or health.
    pub kind: ConcernKind,
}

/// A concern as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Concern {
    /// Database id.
    pub id: i64,
    /// The audit that recorded it.
    pub assignment_id: i64,
    /// The case reference (never a name).
    pub case_reference: String,
    /// Urgent or health.
    pub kind: ConcernKind,
    /// The auditor (staff id).
    pub raised_by: String,
    /// When it was recorded.
    pub raised_at: Timestamp,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<Timestamp>,
    /// What they did next.
    pub acknowledgement: Option<String>,
    /// For a health concern: whether the acknowledger confirmed it was raised with the health
    /// service.
    pub health_informed: Option<bool>,
}

/// Which alert is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertRound {
    /// Round 0 is the first alert; round n the n-th re-alert.
    Alert(u32),
    /// The escalation to senior leadership (once).
    Escalation,
}

impl AlertRound {
    /// Part of the outbox key: `r0`, `r3`, `esc`.
    pub fn key(self) -> String {
        match self {
            AlertRound::Alert(n) => format!("r{n}"),
            AlertRound::Escalation => "esc".to_owned(),
        }
    }
}

impl Concern {
    /// Not yet acknowledged.
    pub fn is_open(&self) -> bool {
        self.acknowledged_at.is_none()
    }

    /// The alerts due at `now`: the current round (only the latest: missed rounds are not
    /// replayed) and, once `escalate_after_minutes` have passed, the escalation. Nothing once
    /// acknowledged.
    pub fn alerts_due(&self, now: Timestamp, settings: &UrgentSettings) -> Vec<AlertRound> {
        if !self.is_open() || now < self.raised_at {
            return Vec::new();
        }
        let minutes = now.duration_since(self.raised_at).as_secs() / 60;
        let every = i64::from(settings.realert_minutes.max(1));
        let round = u32::try_from(minutes / every).unwrap_or(u32::MAX);
        let mut due = vec![AlertRound::Alert(round)];
        if minutes >= i64::from(settings.escalate_after_minutes) {
            due.push(AlertRound::Escalation);
        }
        due
    }

    /// When the next alert falls due after `now` (for a daemon deciding when to wake).
    pub fn next_alert_after(&self, now: Timestamp, settings: &UrgentSettings) -> Option<Timestamp> {
        if !self.is_open() {
            return None;
        }
        let every = SignedDuration::from_mins(i64::from(settings.realert_minutes.max(1)));
        let mut next = self.raised_at;
        while next <= now {
            next = next.checked_add(every).ok()?;
        }
        let escalation = self
            .raised_at
            .checked_add(SignedDuration::from_mins(i64::from(
                settings.escalate_after_minutes,
            )))
            .ok()?;
        Some(if escalation > now {
            next.min(escalation)
        } else {
            next
        })
    }

    /// Minutes from raising to acknowledgement (or to `now`, while open).
    pub fn minutes_to_acknowledge(&self, now: Timestamp) -> i64 {
        self.acknowledged_at
            .unwrap_or(now)
            .duration_since(self.raised_at)
            .as_secs()
            / 60
    }

    /// Who is alerted for `round`: for alerts, the nearest holder of `head_role` above the
    /// auditor plus every current holder of `notify_roles`; for the escalation, every current
    /// holder of `escalate_role`. Staff ids, sorted, without duplicates.
    pub fn recipients(
        &self,
        round: AlertRound,
        org: &Org,
        settings: &UrgentSettings,
    ) -> Vec<String> {
        let mut ids: Vec<String> = match round {
            AlertRound::Alert(_) => {
                let head = org
                    .managers_of(&self.raised_by)
                    .into_iter()
                    .find(|m| m.is_current() && m.holds(&settings.head_role))
                    .map(|m| m.record.staff_id.clone());
                head.into_iter()
                    .chain(settings.notify_roles.iter().flat_map(|role| {
                        org.current_holders(role)
                            .into_iter()
                            .map(|p| p.record.staff_id.clone())
                    }))
                    .collect()
            }
            AlertRound::Escalation => org
                .current_holders(&settings.escalate_role)
                .into_iter()
                .map(|p| p.record.staff_id.clone())
                .collect(),
        };
        ids.sort();
        ids.dedup();
        ids
    }

    /// Whether `by` may acknowledge: anyone who is or would be alerted (head of service, the
    /// notify roles, senior leadership), or a holder of the admin role.
    pub fn may_acknowledge(
        &self,
        org: &Org,
        by: &str,
        settings: &UrgentSettings,
        admin_role: &str,
    ) -> bool {
        let Some(person) = org.get(by).filter(|p| p.is_current()) else {
            return false;
        };
        person.holds(admin_role)
            || self
                .recipients(AlertRound::Alert(0), org, settings)
                .iter()
                .chain(&self.recipients(AlertRound::Escalation, org, settings))
                .any(|id| id == by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::org::StaffRecord;

    fn record(id: &str, roles: &[&str], manager: Option<&str>) -> StaffRecord {
        StaffRecord {
            staff_id: id.into(),
            name: format!("Person {id}"),
            email: format!("{id}@x.test"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            line_manager_id: manager.map(Into::into),
            team: String::new(),
            service: String::new(),
            locality: String::new(),
            chat_id: None,
            start_date: None,
        }
    }

    fn org() -> Org {
        Org::from_records([
            record("DIR", &["slt"], None),
            record("DD", &["deputy_director"], Some("DIR")),
            record("HOS", &["head_of_service"], Some("DIR")),
            record("SL", &["service_lead"], Some("HOS")),
            record("TM", &["team_manager"], Some("SL")),
        ])
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn concern() -> Concern {
        Concern {
            id: 4,
            assignment_id: 9,
            case_reference: "CR-123456".into(),
            kind: ConcernKind::Urgent,
            raised_by: "TM".into(),
            raised_at: at("2027-06-11T16:55:00Z"),
            acknowledged_by: None,
            acknowledged_at: None,
            acknowledgement: None,
            health_informed: None,
        }
    }

    fn settings() -> UrgentSettings {
        UrgentSettings {
            notify_roles: vec!["deputy_director".into()],
            ..UrgentSettings::default()
        }
    }

    #[test]
    fn one_round_per_hour_and_escalation_after_four_hours() {
        let c = concern();
        let s = settings();
        assert_eq!(
            c.alerts_due(at("2027-06-11T16:55:00Z"), &s),
            vec![AlertRound::Alert(0)]
        );
        assert_eq!(
            c.alerts_due(at("2027-06-11T17:54:59Z"), &s),
            vec![AlertRound::Alert(0)]
        );
        assert_eq!(
            c.alerts_due(at("2027-06-11T17:55:00Z"), &s),
            vec![AlertRound::Alert(1)]
        );
        assert_eq!(
            c.alerts_due(at("2027-06-11T20:55:00Z"), &s),
            vec![AlertRound::Alert(4), AlertRound::Escalation]
        );
        assert_eq!(
            c.next_alert_after(at("2027-06-11T17:00:00Z"), &s),
            Some(at("2027-06-11T17:55:00Z"))
        );
    }

    #[test]
    fn nothing_once_acknowledged() {
        let mut c = concern();
        c.acknowledged_at = Some(at("2027-06-11T17:10:00Z"));
        c.acknowledged_by = Some("HOS".into());
        assert!(
            c.alerts_due(at("2027-06-11T22:00:00Z"), &settings())
                .is_empty()
        );
        assert_eq!(
            c.next_alert_after(at("2027-06-11T22:00:00Z"), &settings()),
            None
        );
        assert_eq!(c.minutes_to_acknowledge(at("2027-06-12T00:00:00Z")), 15);
    }

    #[test]
    fn the_head_of_service_and_configured_roles_hear_then_senior_leadership() {
        let c = concern();
        let s = settings();
        assert_eq!(
            c.recipients(AlertRound::Alert(0), &org(), &s),
            vec!["DD", "HOS"]
        );
        assert_eq!(
            c.recipients(AlertRound::Escalation, &org(), &s),
            vec!["DIR"]
        );
        assert!(c.may_acknowledge(&org(), "HOS", &s, "qa_admin"));
        assert!(c.may_acknowledge(&org(), "DIR", &s, "qa_admin"));
        assert!(
            !c.may_acknowledge(&org(), "SL", &s, "qa_admin"),
            "not alerted, not an admin"
        );
    }
}
