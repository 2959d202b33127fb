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
fn expand_credentials(path: &std::path::Path) -> PathBuf {
    let text = path.to_string_lossy();
    match (
        text.strip_prefix("$CREDENTIALS_DIRECTORY"),
        std::env::var("CREDENTIALS_DIRECTORY"),
    ) {
        (Some(rest), Ok(dir)) => PathBuf::from(format!("{dir}{rest}")),
        _ => path.to_owned(),
    }
}
