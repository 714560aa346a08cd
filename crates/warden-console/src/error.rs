//! The console's one error type, and the one place it becomes an HTTP answer: a short
//! page that says what was wrong, never a store's or a credential's details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::html::Page;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    #[error("Sign in first.")]
    NoSession,
    #[error(
        "This form is stale or did not come from this console (its CSRF token does not match): reload the page and try again."
    )]
    Csrf,
    #[error("A read key can look but not act: sign in with an admin key to do this.")]
    ReadOnly,
    #[error("{0}")]
    Invalid(String),
    #[error("{0} was not found (it may have been decided or removed meanwhile).")]
    NotFound(String),
    #[error(
        "Too many live pages are open; close some, or reload this page to see it as it is now."
    )]
    Busy,
    /// The store failed: logged where it happened; the page says only that.
    #[error("The store could not do this now; see Warden's log.")]
    Store,
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoSession => StatusCode::UNAUTHORIZED,
            Self::Csrf | Self::ReadOnly => StatusCode::FORBIDDEN,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Busy | Self::Store => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Logs a store error and says only that the store failed.
    pub fn store(error: &warden_store::StoreError) -> Self {
        tracing::error!(%error, "console: store error");
        Self::Store
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let body = html! {
            section {
                h1 { "Not done" }
                p.problem role="alert" { (self.to_string()) }
                p { a href="/" { "Back to the overview" } }
            }
        };
        (self.status(), Page::bare("Not done", body).render()).into_response()
    }
}

pub(crate) async fn not_found() -> Response {
    ConsoleError::NotFound("This page".to_owned()).into_response()
}
