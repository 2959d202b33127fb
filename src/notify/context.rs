//! The data a notification template sees. Deliberately minimal: activity titles, periods, dates,
//! links, and staff names and role titles so people can act on it — never case details or
//! children's names. Staff ids and `role:` spellings stay in the data (for links, JSON and
//! logs) but the shipped templates print only the `*_name` and `*_long` fields.

use serde::{Deserialize, Serialize};

use super::Kind;

/// Everything a template can use. One shape for every kind; fields a kind does not need are
/// empty, so a template can be switched from one kind to another without surprises.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateContext {
    /// The kind, as its snake_case name (`reminder`).
    pub kind: String,
    /// The organisation's name from `qaloop.toml`.
    pub organisation: String,
    /// The configured base URL of qaloop's pages, without a trailing slash.
    pub base_url: String,
    /// The recipient's staff id (or the channel name for a channel post).
    pub recipient: String,
    /// The local date the notification was decided on (YYYY-MM-DD).
    pub today: String,
    /// The work the notification is about: one item for single notices, many for digests.
    pub items: Vec<Item>,
    /// The daily message: the recipient's reports' overdue work that reached an escalation
    /// point today (or, in a catch-up summary, since the last message).
    #[serde(default)]
    pub team_items: Vec<Item>,
    /// The daily message: the recipient's own actions that the rules select today (new, due
    /// soon, due today, overdue), oldest first.
    #[serde(default)]
    pub action_items: Vec<Item>,
    /// The daily message: actions done by their owners and waiting for the recipient (who
    /// raised them, or their manager) to verify or reopen them.
    #[serde(default)]
    pub verify_items: Vec<Item>,
    /// The senior-leadership digest: its day fell while qaloop was not running, so it is sent
    /// late, on this date (`YYYY-MM-DD` it was due to go out).
    #[serde(default)]
    pub late_from: Option<String>,
    /// The daily message: the recipient's audits moderated since their last message.
    #[serde(default)]
    pub moderated: Vec<Moderated>,
    /// The recipient's name from the staff file, for the greeting.
    #[serde(default)]
    pub recipient_name: Option<String>,
    /// Escalations: whose overdue work it is (staff id).
    pub about: Option<String>,
    /// Escalations: their name (or the role's title), for people to read.
    #[serde(default)]
    pub about_name: Option<String>,
    /// Replies to this message reach the QA team (the email channel has a `reply_to`).
    #[serde(default)]
    pub replies_to_qa: bool,
    /// Escalations: 1 for the line manager, 2 for the next manager up.
    pub level: Option<u8>,
    /// The senior-leadership digest: overdue work grouped by service, then team.
    pub groups: Vec<Group>,
    /// The senior-leadership digest: overdue items now.
    pub total: Option<u32>,
    /// The senior-leadership digest: overdue items at the previous digest (None for the first).
    pub previous_total: Option<u32>,
    /// Admin alerts: what could not be delivered.
    pub failure: Option<Failure>,
    /// The senior-leadership digest: the closing-the-loop tracker's unclosed actions.
    #[serde(default)]
    pub actions: Option<super::tracker::ActionsSection>,
    /// Urgent-concern alerts: which concern (a case reference and a link, never details).
    #[serde(default)]
    pub concern: Option<ConcernAlert>,
}

/// An urgent concern as its alert shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcernAlert {
    /// Concern id.
    pub id: i64,
    /// The case reference (never a name).
    pub case_reference: String,
    /// A health concern: must also be raised with the health service.
    pub health: bool,
    /// The auditor's staff id.
    pub raised_by: String,
    /// The auditor's name.
    #[serde(default)]
    pub raised_by_name: String,
    /// When it was recorded, for people: `Friday 11 June 2027 at 17:55`.
    pub raised_at_long: String,
    /// 0 for the first alert, n for the n-th reminder.
    pub round: u32,
    /// This is the escalation to senior leadership.
    pub escalation: bool,
    /// Where to acknowledge it.
    pub link: String,
}

/// What an [`Item`] is: the daily rules chase both kinds the same way; templates word them
/// differently and links lead to different pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// An assignment of the schedule (the id is an assignment id).
    #[default]
    Assignment,
    /// An action for its owner to do (the id is an action id).
    Action,
    /// A done action waiting for the recipient to verify it (the id is an action id).
    Verify,
}

impl Work {
    /// Whether the item is about an action (either side of it).
    pub fn is_action(self) -> bool {
        matches!(self, Work::Action | Work::Verify)
    }
}

/// One piece of work — an assignment or an action — as a template shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Assignment id, or action id for an action (see `work`).
    pub id: i64,
    /// What the item is.
    #[serde(default)]
    pub work: Work,
    /// Activity id (`file-audit`).
    pub activity: String,
    /// Activity title (`Case file audit`).
    pub title: String,
    /// Period label (`2027-05`, `2027-28 Q3`): links and JSON.
    pub period: String,
    /// The period in words (`June 2027`, `Quarter 3 2027/28`): what messages print.
    #[serde(default)]
    pub period_long: String,
    /// Due date, `YYYY-MM-DD`.
    pub due: String,
    /// Due date for people: `Friday 28 May 2027`.
    pub due_long: String,
    /// Working days until due (0 on the day); None once overdue.
    pub days_until_due: Option<u32>,
    /// Working days overdue; None while not overdue.
    pub days_overdue: Option<u32>,
    /// Who holds it: a staff id or `role:NAME`.
    pub assignee: String,
    /// The holder's name (or the role's name), for people to read.
    #[serde(default)]
    pub assignee_name: String,
    /// Who it is about (a moderation's audit author), if anyone.
    pub subject: Option<String>,
    /// Their name.
    #[serde(default)]
    pub subject_name: Option<String>,
    /// Created since the recipient's last daily message.
    #[serde(default)]
    pub new: bool,
    /// For escalated items: their holder's line manager's name (who has been told first).
    #[serde(default)]
    pub manager_name: Option<String>,
    /// Already past its due date when qaloop went live: shown in the welcome, never chased.
    #[serde(default)]
    pub before_go_live: bool,
    /// Link to the assignment: `{base_url}/assignments/{id}`.
    pub link: String,
}

/// A moderation's outcome, as the auditor's next daily message shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moderated {
    /// The audited activity's title.
    pub title: String,
    /// Its period label.
    pub period: String,
    /// The period in words.
    #[serde(default)]
    pub period_long: String,
    /// Who moderated it.
    pub moderator_name: String,
    /// Grades the moderator agreed with.
    pub agreed: u32,
    /// Grades moderated.
    pub total: u32,
    /// The audit's page, where the moderated grades and the feedback are.
    pub link: String,
}

/// Overdue work of one service, for the senior-leadership digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Service name.
    pub service: String,
    /// Overdue items in the service.
    pub count: u32,
    /// Its teams, each with its overdue items, oldest first.
    pub teams: Vec<TeamGroup>,
}

/// Overdue work of one team.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamGroup {
    /// Team name.
    pub team: String,
    /// Overdue items, oldest due first.
    pub items: Vec<Item>,
}

/// An undeliverable message, for the admin alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Outbox row id (for `qaloop outbox retry ID`).
    pub outbox_id: i64,
    /// The message's kind.
    pub kind: String,
    /// The channel that failed.
    pub channel: String,
    /// The intended recipient's staff id.
    pub recipient: String,
    /// Their name (or the role's title, or the channel), for people to read.
    #[serde(default)]
    pub recipient_name: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error (no personal data).
    pub error: String,
}

impl TemplateContext {
    /// A context of `kind` with nothing else filled in.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind: kind.as_str().to_owned(),
            ..Self::default()
        }
    }
}
