//! Chat channels: Teams Workflows, Slack, Google Chat, and a signed generic webhook. (Being built.)

use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;

/// `kind = "teams" | "slack" | "google_chat"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Channel name, for routing.
    pub name: String,
    /// The webhook URL, inline (it is a secret: anyone with it can post).
    pub url: Option<Secret>,
    /// The webhook URL, from a file.
    pub url_file: Option<PathBuf>,
    /// Upper bound on one request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

/// `kind = "webhook"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedWebhookSettings {
    /// Channel name, for routing.
    pub name: String,
    /// The endpoint URL.
    pub url: Option<Secret>,
    /// The endpoint URL, from a file.
    pub url_file: Option<PathBuf>,
    /// HMAC-SHA256 key, inline.
    pub secret: Option<Secret>,
    /// HMAC-SHA256 key, from a file.
    pub secret_file: Option<PathBuf>,
    /// Upper bound on one request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    10
}
