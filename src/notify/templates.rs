//! Notification templates (minijinja). Placeholder until the template work lands: renders a
//! plain summary so the dispatcher can be built and tested.

use std::path::Path;

use super::Kind;
use super::context::TemplateContext;
use crate::problem::Problems;

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One-line subject.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// HTML.
    pub html: String,
}

/// Why a template failed to render.
#[derive(Debug, thiserror::Error)]
#[error("template {file}: {message}")]
pub struct TemplateError {
    /// The template file.
    pub file: String,
    /// What went wrong.
    pub message: String,
}

/// The loaded templates.
#[derive(Debug, Clone, Default)]
pub struct Templates;

impl Templates {
    /// Loads the defaults, overridden by files in `dir`.
    pub fn load(_dir: Option<&Path>) -> Result<Templates, Problems> {
        Ok(Templates)
    }

    /// Renders `kind` for `ctx`.
    pub fn render(&self, kind: Kind, ctx: &TemplateContext) -> Result<Rendered, TemplateError> {
        let lines: Vec<String> = ctx
            .items
            .iter()
            .map(|i| format!("{} ({}) due {} {}", i.title, i.period, i.due, i.link))
            .collect();
        Ok(Rendered {
            subject: format!(
                "{} {}",
                kind.as_str(),
                ctx.items.first().map(|i| i.title.as_str()).unwrap_or("")
            ),
            text: lines.join("\n"),
            html: format!("<p>{}</p>", lines.join("<br>")),
        })
    }

    /// Renders every template against sample data.
    pub fn check(&self) -> Problems {
        Problems::default()
    }
}
