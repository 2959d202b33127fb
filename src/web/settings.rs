//! `[web]` in `qaloop.toml`: where the pages listen and the keys their links are signed with.

use std::path::PathBuf;

use serde::Deserialize;

/// `[web]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Address the pages listen on; councils put their reverse proxy in front.
    pub listen: String,
    /// The key links are signed with (a systemd credential in production). Without one, no
    /// pages are served and messages carry plain links.
    pub link_key_file: Option<PathBuf>,
    /// Create `link_key_file` (32 random bytes, mode 0600) when it is missing: the example.
    pub create_link_key: bool,
    /// The previous key, still accepted while links signed with it are in people's inboxes.
    pub previous_link_key_file: Option<PathBuf>,
    /// How long a link works, in days.
    pub link_days: u32,
    /// Per-council overrides of the page templates (`config/templates/web/*.html`).
    pub templates_dir: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            link_key_file: None,
            create_link_key: false,
            previous_link_key_file: None,
            link_days: 30,
            templates_dir: None,
            max_body_bytes: 64 * 1024,
        }
    }
}
