//! Building the configured channels and the dispatcher from settings, once, at start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::dispatcher::{Dispatcher, RetryPolicy};
use super::templates::Templates;
use super::{Channel, ChannelSettings};
use crate::config::Settings;
use crate::problem::{Problem, Problems};

/// Builds every `[[channels]]` entry, reporting each bad one with its key.
pub fn build_channels(settings: &Settings) -> Result<HashMap<String, Arc<dyn Channel>>, Problems> {
    let base = settings.source.parent().unwrap_or(Path::new("."));
    let mut problems = Problems::default();
    let mut channels: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    for (index, config) in settings.channels.iter().enumerate() {
        match build_one(config, base) {
            Ok(channel) => {
                channels.insert(config.name().to_owned(), channel);
            }
            Err(message) => problems.push(Problem::new(
                &settings.source,
                format!("channels[{index}] ({})", config.name()),
                message,
            )),
        }
    }
    problems.into_result(channels)
}

fn build_one(config: &ChannelSettings, base: &Path) -> Result<Arc<dyn Channel>, String> {
    match config {
        ChannelSettings::Email(s) => Ok(Arc::new(super::email::SmtpChannel::new(s, base)?)),
        ChannelSettings::File(s) => Ok(Arc::new(super::email::FileChannel::new(s, base)?)),
        other => super::chat::WebhookChannel::from_settings(other, base)?
            .map(|c| Arc::new(c) as Arc<dyn Channel>)
            .ok_or_else(|| "not a chat channel".to_owned()),
    }
}

/// Loads templates (defaults plus overrides) and checks every one renders.
pub fn load_templates(settings: &Settings) -> Result<Templates, Problems> {
    let templates = Templates::load(settings.notify.templates_dir.as_deref())?;
    let problems = templates.check();
    problems.into_result(templates)
}

/// The dispatcher for these settings, or `None` when no channels are configured.
pub fn build_dispatcher(
    settings: &Settings,
    ctx: &crate::engine::Context,
) -> Result<Option<Dispatcher>, Problems> {
    if settings.channels.is_empty() {
        return Ok(None);
    }
    let mut problems = Problems::default();
    let channels = build_channels(settings)
        .map_err(|p| problems.0.extend(p.0))
        .ok();
    let templates = load_templates(settings)
        .map_err(|p| problems.0.extend(p.0))
        .ok();
    match (channels, templates) {
        (Some(channels), Some(templates)) if problems.is_empty() => Ok(Some(
            Dispatcher::new(
                channels,
                Arc::new(templates),
                RetryPolicy::from_config(&settings.notify),
                settings
                    .notify
                    .admin_channel
                    .clone()
                    .map(|c| (c, settings.notify.admin_address.clone())),
            )
            .with_working_hours_of(ctx)
            .with_journal(super::journal::configured(settings)),
        )),
        _ => Err(problems),
    }
}

impl Dispatcher {
    /// [`Dispatcher::with_working_hours`] from the engine context's router, when it has one.
    pub fn with_working_hours_of(self, ctx: &crate::engine::Context) -> Self {
        match super::router::Router::of(ctx) {
            Some(router) => self.with_working_hours(router.hours.clone(), ctx.calendar.clone()),
            None => self,
        }
    }
}
