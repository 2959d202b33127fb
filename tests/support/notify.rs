//! The notification side of a daemon as a start builds it, over a loopback SMTP server: the
//! engine context with its router, and the dispatcher.

use std::sync::Arc;

use qaloop::engine::Context;
use qaloop::notify::dispatcher::{Dispatcher, RetryPolicy};
use qaloop::notify::router::Router;
use qaloop::notify::settings::NotifyConfig;
use qaloop::notify::templates::Templates;
use qaloop::notify::{Channel, ChannelSettings};

use super::org::context;
use super::smtp::SmtpServer;

/// An email channel named `email` to the loopback relay on `port`.
pub fn smtp_channel(port: u16) -> ChannelSettings {
    toml::from_str(&format!(
        "kind = \"email\"\nname = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         security = \"none\"\nfrom = \"qa@example-council.test\"\ntimeout_seconds = 5\n"
    ))
    .unwrap()
}

/// The engine context (with its router) and a dispatcher holding routine mail to working hours,
/// both over one email channel to `port`, with `config`'s notification settings, everyone on
/// one message per item (see [`super::org::single_messages`]).
pub fn start(port: u16, config: &NotifyConfig) -> (Context, Dispatcher) {
    start_with(port, config, super::org::single_messages())
}

/// [`start`] with these preferences (none: everyone gets the default daily message).
pub fn start_with(
    port: u16,
    config: &NotifyConfig,
    preferences: Vec<qaloop::notify::settings::Preference>,
) -> (Context, Dispatcher) {
    let settings = smtp_channel(port);
    let mut ctx = context();
    ctx.announcer = Some(Arc::new(Router::new(
        config,
        std::slice::from_ref(&settings),
        "Example Council",
        ctx.tz.clone(),
        preferences,
    )));
    let ChannelSettings::Email(email) = &settings else {
        unreachable!()
    };
    let channel: Arc<dyn Channel> = Arc::new(
        qaloop::notify::email::SmtpChannel::new(email, std::path::Path::new(".")).unwrap(),
    );
    let dispatcher = Dispatcher::new(
        [("email".to_owned(), channel)].into(),
        Arc::new(Templates::load(None).unwrap()),
        RetryPolicy::from_config(config),
        None,
    )
    .with_working_hours_of(&ctx);
    (ctx, dispatcher)
}

/// Received mail as (recipient address, subject, Message-ID).
pub fn mail(smtp: &SmtpServer) -> Vec<(String, String, String)> {
    smtp.received()
        .iter()
        .map(|m| {
            let header = |name: &str| {
                m.data
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                    .unwrap_or_default()
            };
            (m.rcpt_to.join(","), header("Subject"), header("Message-ID"))
        })
        .collect()
}
