//! `[ops]` and `[backup]` in `qaloop.toml`: the operations listener and nightly backups.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::problem::{Problem, Problems};

/// `[ops]`: the health and metrics listener, and what "ready" means.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsSettings {
    /// `HOST:PORT` for `/healthz`, `/readyz` and `/metrics` on a listener of their own, or
    /// `off`. Loopback by default: for councils that expose the pages (`[web] listen`) but
    /// keep the metrics to the server (with `on_web = false`).
    pub listen: String,
    /// Whether the pages' listener (`[web] listen`) answers `/healthz`, `/readyz` and
    /// `/metrics` too (the same handlers). Turn off when the pages are exposed further than
    /// the metrics should be.
    pub on_web: bool,
    /// `/readyz` fails when the last pass is older than this many minutes (default: three
    /// `daemon.every_minutes`, or 4 days when only `daily_at` triggers passes).
    pub ready_max_pass_age_minutes: Option<u32>,
    /// `/readyz` fails when a message has waited this many minutes past its send time.
    pub ready_max_send_delay_minutes: u32,
}

impl Default for OpsSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            on_web: true,
            ready_max_pass_age_minutes: None,
            ready_max_send_delay_minutes: 60,
        }
    }
}

impl OpsSettings {
    /// The address to listen on; `None` when `off`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen.eq_ignore_ascii_case("off") || self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            format!(
                "`{}` is not HOST:PORT with a numeric host (e.g. 127.0.0.1:9464), nor `off`",
                self.listen
            )
        })
    }
}

/// `[backup]`: nightly backups by `serve` (SQLite only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Folder for nightly backups; none: no nightly backup.
    pub dir: Option<PathBuf>,
    /// How many nightly backups to keep (older ones are deleted).
    pub keep: u32,
    /// Local time (`HH:MM`) of the nightly backup.
    pub at: String,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            dir: None,
            keep: 7,
            at: "02:30".into(),
        }
    }
}

/// Checks `[ops]` and `[backup]`, naming keys in `source`.
pub fn validate(ops: &OpsSettings, backup: &BackupSettings, source: &std::path::Path) -> Problems {
    let mut problems = Problems::default();
    if let Err(message) = ops.listen_addr() {
        problems.push(Problem::new(source, "ops.listen", message));
    }
    if backup.dir.is_some() && backup.keep == 0 {
        problems.push(Problem::new(source, "backup.keep", "must be at least 1"));
    }
    if crate::config::parse_hh_mm(&backup.at).is_none() {
        problems.push(Problem::new(
            source,
            "backup.at",
            format!("`{}` is not a time (HH:MM)", backup.at),
        ));
    }
    problems
}
