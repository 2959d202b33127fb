//! One error type for every page: each variant maps to a status and a plain page that says
//! what the reader can do, never why internally (internal causes go to the log, with ids only).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The link's token is missing, damaged, expired, or for something else: the page offers
    /// to email a fresh link. Carries the token as given (to derive that form's CSRF token).
    #[error("link refused: {reason}")]
    BadLink {
        /// The token as given.
        token: String,
        /// Why, for the log.
        reason: String,
    },
    /// The form's CSRF token is missing or wrong.
    #[error("form token missing or wrong")]
    Csrf,
    /// No such page or assignment.
    #[error("not found")]
    NotFound,
    /// The person may not do this; the message says so in plain words.
    #[error("refused: {0}")]
    Forbidden(String),
    /// Anything else (database, template): logged, shown as a generic apology.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound(_) => WebError::NotFound,
            e => WebError::Internal(e.to_string()),
        }
    }
}

impl From<minijinja::Error> for WebError {
    fn from(e: minijinja::Error) -> Self {
        WebError::Internal(format!("template: {e:#}"))
    }
}

impl WebError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadLink { .. } | WebError::Csrf | WebError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error the handlers return; rendered by [`super::AppState::error_page`] through this
/// wrapper so the page has the state's templates.
pub struct ErrorPage(pub Response);

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        self.0
    }
}
