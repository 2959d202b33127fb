//! `[[channels]]` in `qaloop.toml`: each a named way of reaching people.
//!
//! Secrets (SMTP passwords, webhook URLs, signing keys) are [`Secret`]s: given inline, or better
//! as `*_file` (systemd `LoadCredential=` puts them under `$CREDENTIALS_DIRECTORY`), and never
//! printed by `Debug`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// A secret string whose `Debug` prints nothing.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself: call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// One `[[channels]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelSettings {
    /// SMTP submission through a relay.
    Email(crate::notify::email::SmtpSettings),
    /// Write `.eml` files to a folder (for trying qaloop out, and for relays that pick up files).
    File(crate::notify::email::FileSettings),
    /// Microsoft Teams through a Workflows (Power Automate) webhook.
    Teams(crate::notify::chat::WebhookSettings),
    /// Slack incoming webhook.
    Slack(crate::notify::chat::WebhookSettings),
    /// Google Chat space webhook.
    GoogleChat(crate::notify::chat::WebhookSettings),
    /// A generic JSON webhook, signed with HMAC-SHA256.
    Webhook(crate::notify::chat::SignedWebhookSettings),
}

impl ChannelSettings {
    /// The channel's name.
    pub fn name(&self) -> &str {
        match self {
            ChannelSettings::Email(s) => &s.name,
            ChannelSettings::File(s) => &s.name,
            ChannelSettings::Teams(s)
            | ChannelSettings::Slack(s)
            | ChannelSettings::GoogleChat(s) => &s.name,
            ChannelSettings::Webhook(s) => &s.name,
        }
    }
}

/// Reads a secret given inline or as a file (trailing newline trimmed). Relative files resolve
/// against `base` (the config file's folder); `$CREDENTIALS_DIRECTORY/NAME` works as an
/// absolute path.
pub fn resolve_secret(
    inline: Option<&Secret>,
    file: Option<&PathBuf>,
    base: &std::path::Path,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err("give the secret inline or as a file, not both".into()),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => {
            let path = expand_credentials(path);
            let path = base.join(path);
            std::fs::read_to_string(&path)
                .map(|s| Some(Secret::new(s.trim_end_matches(['\n', '\r']))))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// Expands a leading `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
pub fn expand_credentials(path: &std::path::Path) -> PathBuf {
    let text = path.to_string_lossy();
    match (
        text.strip_prefix("$CREDENTIALS_DIRECTORY"),
        std::env::var("CREDENTIALS_DIRECTORY"),
    ) {
        (Some(rest), Ok(dir)) => PathBuf::from(format!("{dir}{rest}")),
        _ => path.to_owned(),
    }
}

/// `[notify]` in `qaloop.toml`: how notifications are timed and routed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Base URL of qaloop's pages; each message links to `{base_url}/a/{id}` (signed `?t=` when `[web] link_key_file` is set).
    pub base_url: String,
    /// Folder of per-council template overrides (files named like `config/templates/`).
    pub templates_dir: Option<PathBuf>,
    /// Working hours start (local `HH:MM`); notifications are held, not dropped, outside them.
    pub working_hours_start: String,
    /// Working hours end (local `HH:MM`).
    pub working_hours_end: String,
    /// When routine messages are delivered (local `HH:MM`, inside working hours; default
    /// `["08:00"]`): each waits for the next of these times on a working day. The day's daily
    /// message is sent at once if it was decided after the day's last delivery time; new work
    /// announced during the day waits for the next delivery. Urgent messages never wait.
    pub deliver_at: Vec<String>,
    /// Hold messages outside working hours and days (the default); the example configuration
    /// turns this off so a first run shows mail at once.
    pub hold_outside_working_hours: bool,
    /// A cap on attempts (0, the default: none). Messages are given up by age instead:
    /// see `give_up_after_working_days`.
    pub max_attempts: u32,
    /// A message that still cannot be delivered this many working days after it was queued is
    /// given up (dead, with an admin alert). A reminder or due-today notice is withdrawn sooner:
    /// once its due date has passed (the chases take over).
    pub give_up_after_working_days: u32,
    /// First retry delay in seconds; doubles each attempt (with jitter), up to `backoff_max_seconds`.
    pub backoff_base_seconds: u64,
    /// Longest retry delay in seconds.
    pub backoff_max_seconds: u64,
    /// Channel for admin alerts about dead messages (none: alerts only in logs and `outbox list`).
    pub admin_channel: Option<String>,
    /// Address for admin alerts when the admin channel is an email channel.
    pub admin_address: Option<String>,
    /// Per-person preferences (daily digest, channels), a TOML file.
    pub preferences_file: Option<PathBuf>,
    /// The sent journal: a file on this machine's own disk where each delivery is noted (one
    /// `write`) before the next message goes out, recorded in the database in groups
    /// (`notify/journal.rs`). Default: beside a SQLite database (`<file>.sent`); on PostgreSQL
    /// none, and each delivery is then recorded in the database at once instead (a round
    /// trip per message: about a third of webhook throughput; BENCHMARKS.md, "Dispatch").
    pub sent_journal: Option<PathBuf>,
    /// Which kinds go to which channels for which roles; first match wins. Default: every kind
    /// to every email channel.
    pub routes: Vec<Route>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            base_url: "http://localhost:8080".into(),
            templates_dir: None,
            working_hours_start: "08:00".into(),
            working_hours_end: "18:00".into(),
            deliver_at: vec!["08:00".into()],
            hold_outside_working_hours: true,
            max_attempts: 0,
            give_up_after_working_days: 3,
            backoff_base_seconds: 60,
            backoff_max_seconds: 6 * 3600,
            admin_channel: None,
            admin_address: None,
            preferences_file: None,
            sent_journal: None,
            routes: Vec::new(),
        }
    }
}

/// `[[notify.routes]]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Kinds this route covers (`reminder`, `escalation`, …, or `*`).
    pub kinds: Vec<String>,
    /// Only for recipients holding one of these roles (empty: anyone).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Channel names to send through.
    pub channels: Vec<String>,
}

/// One person's preferences, from `notify.preferences_file`:
/// `[[person]] staff_id = "S0012", daily_digest = true, channels = ["email"]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    /// Staff id.
    pub staff_id: String,
    /// One daily message (the default, `true`) or, with `false`, a message per item: new work
    /// at once, single reminders, due-today notices, chases and escalations.
    #[serde(default)]
    pub daily_digest: Option<bool>,
    /// Channels for this person's own notices, replacing the routes (escalations and the senior
    /// leadership digest always follow the routes: they are mandatory).
    pub channels: Option<Vec<String>>,
}

/// The preferences file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesFile {
    /// One entry per person with preferences.
    #[serde(default)]
    pub person: Vec<Preference>,
}
