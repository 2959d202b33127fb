//! Notifications: what is said to whom, through which channel.
//!
//! - [`message`]: the rendered message every channel delivers, and the delivery outcome.
//! - [`settings`]: `[[channels]]` in `qaloop.toml`.
//! - [`email`]: SMTP (lettre) and `.eml` files.
//! - [`chat`]: Teams Workflows, Slack, Google Chat and a signed generic webhook (reqwest).
//!
//! **Invariant:** nothing sends email or calls a webhook except through a [`message::Channel`],
//! and only the dispatcher calls channels.

pub mod chat;
pub mod context;
pub mod daily;
pub mod dispatcher;
pub mod email;
pub mod message;
pub mod planner;
pub mod registry;
pub mod router;
pub mod settings;
pub mod templates;

pub use message::{CalendarEvent, Channel, DeliverFuture, DeliveryError, Kind, Message, Recipient};
pub use settings::{ChannelSettings, Secret};
