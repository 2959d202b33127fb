//! Email channels: SMTP through lettre, and `.eml` files in a folder. (Being built.)

use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;

/// `kind = "email"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Channel name, for routing.
    pub name: String,
    /// Relay host.
    pub host: String,
    /// Relay port [default by security: 587 starttls, 465 tls, 25 none].
    pub port: Option<u16>,
    /// `starttls`, `tls` (implicit) or `none` (loopback relays only).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// SMTP AUTH user.
    pub username: Option<String>,
    /// SMTP AUTH password, inline.
    pub password: Option<Secret>,
    /// SMTP AUTH password, from a file.
    pub password_file: Option<PathBuf>,
    /// `From:` mailbox, e.g. `QA schedule <qa@council.gov.uk>`.
    pub from: String,
    /// `Reply-To:` mailbox.
    pub reply_to: Option<String>,
    /// Upper bound on one whole SMTP dialogue, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Pooled connections kept open.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS: only for a relay on loopback.
    None,
}

/// `kind = "file"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Channel name, for routing.
    pub name: String,
    /// Folder the `.eml` files go to (created if missing).
    pub dir: PathBuf,
    /// `From:` mailbox.
    pub from: String,
    /// `Reply-To:` mailbox.
    pub reply_to: Option<String>,
}

fn default_timeout() -> u64 {
    30
}
fn default_pool() -> u32 {
    4
}
