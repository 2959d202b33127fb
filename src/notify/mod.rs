//! Notifications: what is said to whom, through which channel.
//!
//! - [`message`]: the rendered message every channel delivers, and the delivery outcome.
//! - [`settings`]: `[[channels]]` in `qaloop.toml`.
//! - [`email`]: SMTP (lettre) and `.eml` files.
//! - [`ics`]: the iCalendar due-date attachment emails carry.
//! - [`chat`]: Teams Workflows, Slack, Google Chat and a signed generic webhook (reqwest).
//!
//! **Invariant:** nothing sends email or calls a webhook except through a [`message::Channel`],
//! and only the dispatcher calls channels.

pub mod chased;
pub mod chat;
pub mod context;
pub mod daily;
pub mod dispatcher;
pub mod email;
pub mod ics;
pub mod journal;
pub mod message;
pub mod planner;
pub mod registry;
pub mod router;
pub mod settings;
pub mod templates;
pub mod tracker;
pub mod urgent;
pub mod welcome;

pub use message::{CalendarEvent, Channel, DeliverFuture, DeliveryError, Kind, Message, Recipient};
pub use settings::{ChannelSettings, Secret};

/// Installs rustls's aws-lc-rs provider as the process default, once.
///
/// rustls cannot pick a provider by itself when more than one is compiled in, and panics at the
/// first TLS handshake that needs the default ("could not determine the process-level
/// CryptoProvider"). Channels call this when they are built; calling it again, or after someone
/// else installed a provider, does nothing.
pub fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err means a provider is already installed, which is all we need.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
