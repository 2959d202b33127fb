//! The message a channel delivers, already rendered, and how delivery can fail.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jiff::civil::Date;
use serde::Serialize;

/// What a notification is about. Templates and routing are chosen by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// New work has been assigned (or reassigned) to the recipient.
    NewAssignment,
    /// Work is due in a few working days.
    Reminder,
    /// Work is due today.
    DueToday,
    /// Work is overdue.
    Chase,
    /// Someone the recipient manages has overdue work.
    Escalation,
    /// One person's daily digest of due and overdue work.
    Digest,
    /// Senior leadership's bi-monthly digest of everything overdue.
    SltDigest,
    /// One summary per person after downtime or a first start, instead of a burst.
    CatchUp,
    /// `qaloop notify test`.
    Test,
    /// To the admin channel: a message could not be delivered.
    AdminAlert,
    /// An audit recorded an urgent (or health) concern: sent at once, never held or bundled,
    /// repeated until someone acknowledges it.
    UrgentConcern,
    /// A person's first message ever: what qaloop is, what they will receive, their current
    /// work. Replaces that day's daily message or catch-up summary; sent once per person.
    Welcome,
}

impl Kind {
    /// The snake_case name used in config, templates and the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewAssignment => "new_assignment",
            Kind::Reminder => "reminder",
            Kind::DueToday => "due_today",
            Kind::Chase => "chase",
            Kind::Escalation => "escalation",
            Kind::Digest => "digest",
            Kind::SltDigest => "slt_digest",
            Kind::CatchUp => "catch_up",
            Kind::Test => "test",
            Kind::AdminAlert => "admin_alert",
            Kind::UrgentConcern => "urgent_concern",
            Kind::Welcome => "welcome",
        }
    }

    /// Every kind, for template checks.
    pub const ALL: [Kind; 12] = [
        Kind::NewAssignment,
        Kind::Reminder,
        Kind::DueToday,
        Kind::Chase,
        Kind::Escalation,
        Kind::Digest,
        Kind::SltDigest,
        Kind::CatchUp,
        Kind::Test,
        Kind::AdminAlert,
        Kind::UrgentConcern,
        Kind::Welcome,
    ];

    /// Parses the snake_case name.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Who a message is for. Staff id always (it is what logs carry); addresses when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// Staff id, or a label such as `admin` for the admin channel.
    pub staff_id: String,
    /// Email address, for email channels.
    pub email: Option<String>,
    /// Chat handle from the staff file (e.g. a Slack member id or a Teams UPN), for mentions.
    pub chat_id: Option<String>,
}

/// A due date to put in the recipient's calendar (an .ics attachment on email).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalendarEvent {
    /// Stable per assignment, so a later reminder updates the same calendar entry.
    pub uid: String,
    /// The all-day date.
    pub date: Date,
    /// Calendar title (activity and period; no case detail).
    pub summary: String,
    /// Link to the work.
    pub url: Option<String>,
}

/// A rendered notification, ready for any channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The outbox key: deterministic, so a retry reuses it (as the email `Message-ID`, the
    /// webhook idempotency header and the `.eml` file name).
    pub key: String,
    /// What it is about.
    pub kind: Kind,
    /// Who it is for.
    pub recipient: Recipient,
    /// Email subject / chat card title.
    pub subject: String,
    /// Plain-text body (also the chat fallback text).
    pub text: String,
    /// HTML body, from the same template as the text.
    pub html: String,
    /// The one link the message carries.
    pub link: Option<String>,
    /// A due date for the recipient's calendar.
    pub calendar: Option<CalendarEvent>,
    /// When this copy was composed (the caller's clock, at send time): the email `Date:`
    /// header, the `.ics` `DTSTAMP`, the webhook signature timestamp and the base for a
    /// `Retry-After` date. Channels never read a clock of their own.
    pub composed_at: jiff::Timestamp,
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Try again later: connection refused, timeout, SMTP 4xx, HTTP 429 or 5xx.
    #[error("temporary failure: {reason}")]
    Temporary {
        /// What happened (no personal data).
        reason: String,
        /// The peer's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Trying again will not help: SMTP 5xx to RCPT, HTTP 4xx other than 429, bad address.
    #[error("permanent failure: {reason}")]
    Permanent {
        /// What happened (no personal data).
        reason: String,
    },
}

/// The future a channel's delivery returns.
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// A way of reaching people: an SMTP relay, a folder of `.eml` files, a webhook.
pub trait Channel: Send + Sync {
    /// The channel's configured name (`[[channels]] name`).
    fn name(&self) -> &str;
    /// Whether this channel can reach `recipient` (an email channel needs an address).
    fn reaches(&self, recipient: &Recipient) -> bool;
    /// Delivers one message. Must not retry internally: the dispatcher owns retries.
    fn deliver<'a>(&'a self, message: &'a Message) -> DeliverFuture<'a>;
    /// Whether this channel sends [`Message::html`]; when not, the dispatcher leaves it empty
    /// and skips rendering it.
    fn sends_html(&self) -> bool {
        true
    }
    /// How many messages the dispatcher may have in flight on this channel at once (each over
    /// a connection of its own; `[channels.*] connections` for SMTP). 1: one at a time, in
    /// queue order.
    fn connections(&self) -> usize {
        1
    }
}
