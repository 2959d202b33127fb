//! The pages people reach from the links in their messages: a thin edge over the same engine
//! and store as the CLI.
//!
//! - [`settings`]: the `web` section of `qaloop.toml`.
//! - [`pages`]: the handlers — the work page (`/a/{id}?t=…`, GET shows, POST completes), "my
//!   work" (`/me?t=…`), and asking for a fresh link (`POST /link`).
//! - [`concerns`]: an urgent concern (`/concerns/{id}?t=…`, GET shows, POST acknowledges).
//! - [`actions`]: one action (`/actions/{id}?t=…`: done, verify, reopen) and raising one by
//!   hand (`/a/{id}/actions/new?t=…` from a completed audit, `/me/actions/new?t=…`).
//! - [`tracker`]: the closing-the-loop tracker (`/tracker?t=…`, `/tracker.csv?t=…`) for senior
//!   leadership and heads of service.
//! - [`error`]: one error enum → status + a plain page.
//! - [`security`]: the headers every response carries; CSRF tokens come from [`crate::links`].
//! - [`templates`]: minijinja pages, compiled in, overridable per file.
//!
//! **Invariant:** a handler translates a request into one engine call (authorised by
//! [`crate::domain::authorise`], recorded with `via = link`) and its result into a page, and
//! nothing else; no handler writes on GET; the clock is read once per request from the state.

pub mod actions;
pub mod concerns;
pub mod error;
pub mod pages;
pub mod security;
pub mod settings;
pub mod templates;
pub mod tracker;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Serialize;

pub use error::WebError;
pub use settings::WebSettings;

use crate::clock::Clock;
use crate::domain::UrgentSettings;
use crate::engine::Context;
use crate::links::LinkKeys;
use crate::store::Store;

/// What every handler shares.
pub struct AppState {
    /// The same store the daemon and the CLI use.
    pub store: Store,
    /// Schedule, calendar, zone and the notification router (the engine's context).
    pub ctx: Arc<Context>,
    /// Checks and makes link and CSRF tokens.
    pub keys: LinkKeys,
    /// Read once per request; tests pass a `FixedClock`.
    pub clock: Arc<dyn Clock>,
    /// Page templates.
    pub pages: Environment<'static>,
    /// Organisation name, for page titles.
    pub organisation: String,
    /// `[urgent]`: who may acknowledge a concern is decided from the same roles that alert.
    pub urgent: UrgentSettings,
}

impl AppState {
    /// Renders page `name` with `context` (plus the organisation name) at `status`.
    pub fn render<S: Serialize>(
        &self,
        status: StatusCode,
        name: &str,
        context: S,
    ) -> Result<Response, WebError> {
        let body = self.pages.get_template(name)?.render(minijinja::context! {
            organisation => &self.organisation,
            ..minijinja::Value::from_serialize(&context)
        })?;
        Ok((status, Html(body)).into_response())
    }

    /// The page for an error: what the reader can do, never internal detail.
    pub fn error_page(&self, error: WebError) -> Response {
        let status = error.status();
        let page = match &error {
            WebError::BadLink { token, reason } => {
                tracing::info!(reason, "link refused");
                self.render(
                    status,
                    "link_problem.html",
                    minijinja::context! {
                        page_title => "This link does not work",
                        token => token,
                        csrf => self.keys.csrf(token),
                    },
                )
            }
            WebError::Csrf => self.message(
                status,
                "This form has expired",
                &["Open the link in your email again and resubmit. Nothing was saved."],
            ),
            WebError::NotFound => self.message(
                status,
                "Page not found",
                &["Check the link, or open it again from your email."],
            ),
            WebError::Forbidden(why) => self.message(status, "You cannot do this", &[why]),
            WebError::Internal(cause) => {
                tracing::error!(cause, "page failed");
                self.message(
                    status,
                    "Sorry, there is a problem with the service",
                    &["Try again later. Nothing you entered was lost if you go back."],
                )
            }
        };
        page.unwrap_or_else(|e| {
            tracing::error!(error = %e, "error page failed");
            (status, "error").into_response()
        })
    }

    /// A plain page with a heading and paragraphs.
    pub fn message(
        &self,
        status: StatusCode,
        heading: &str,
        paragraphs: &[&str],
    ) -> Result<Response, WebError> {
        self.render(
            status,
            "message.html",
            minijinja::context! { page_title => heading, heading => heading, paragraphs => paragraphs },
        )
    }
}

/// The application: routes, the body limit and the security headers on every response.
pub fn app(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/a/{id}", get(pages::work).post(pages::submit))
        .route("/me", get(pages::my_work))
        .route(
            "/me/actions/new",
            get(actions::new_by_hand).post(actions::raise_by_hand),
        )
        .route(
            "/a/{id}/actions/new",
            get(actions::new_from_audit).post(actions::raise_from_audit),
        )
        .route("/actions/{id}", get(actions::show).post(actions::change))
        .route("/link", post(pages::fresh_link))
        .route(
            "/concerns/{id}",
            get(concerns::show).post(concerns::acknowledge),
        )
        .route("/tracker", get(tracker::page))
        .route("/tracker.csv", get(tracker::csv))
        .route("/static/qaloop.css", get(stylesheet))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
        .layer(axum::middleware::from_fn(security::headers))
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        templates::CSS,
    )
        .into_response()
}

/// Serves `app` on `listener` until `shutdown` completes (requests in flight finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
