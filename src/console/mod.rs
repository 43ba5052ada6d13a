//! The operator console (`[console] listen`): server-rendered pages over
//! the ledger's own queries, and forms that act only through the operator
//! actions the command line uses (release, supersede, reject, redeliver,
//! approve, deny), so four-eyes and every guard hold here too. A thin
//! adapter: no SQL and no decision of its own.
//!
//! - [`session`]: login cookie, token hashing, CSRF comparison.
//! - [`view`]: amounts, ages and the chart's geometry (pure).
//! - [`diff`]: a conflicting re-send against the fed file (pure).
//! - [`pages`]: the handlers.

pub mod diff;
mod pages;
pub mod session;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::LoginLimit;
use crate::channels::sftp_server::limits::FailedLogins;
use crate::config::console::{
    DEFAULT_FAILED_LOGIN_BLOCK, DEFAULT_FAILED_LOGIN_WINDOW, DEFAULT_MAX_FAILED_LOGINS,
};
use crate::http::Current;
use crate::intake::IntakeError;
use crate::ledger::LedgerError;

/// Why a console request is answered with an error page.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    /// Not allowed for this user, or a form without its CSRF token.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A form that is not filled in as it must be.
    #[error("{0}")]
    BadRequest(String),
    /// The console was removed from the configuration by a reload.
    #[error("the console is not configured")]
    Off,
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Intake(IntakeError::Refused(_)) => StatusCode::CONFLICT,
            ConsoleError::Intake(IntakeError::NoSuchFile(_)) => StatusCode::NOT_FOUND,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Off => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "console: request failed");
        }
        let text = html_escape(&self.to_string());
        let body = format!(
            "<!doctype html><html lang=\"ko\"><head><meta charset=\"utf-8\"><title>settlegate console: {}</title></head>\
             <body><h1>{}</h1><p class=\"error\" id=\"error\">{text}</p><p><a href=\"/day\">Back to the day</a></p></body></html>",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error")
        );
        (status, Html(body)).into_response()
    }
}

/// Escape text for HTML (the error page is the one page not rendered by
/// the template engine).
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What every request of the console shares.
#[derive(Clone)]
pub struct ConsoleState {
    /// The gateway of the moment (a reload replaces it, and with it the
    /// operators and their roles).
    current: Current,
    /// Failed logins per address: the SFTP server's limiter.
    failed: Arc<Mutex<FailedLogins>>,
    templates: Arc<minijinja::Environment<'static>>,
}

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // `.html` names: every value is HTML-escaped unless marked safe.
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("day.html", include_str!("templates/day.html")),
        ("quarantine.html", include_str!("templates/quarantine.html")),
        ("actions.html", include_str!("templates/actions.html")),
        ("requests.html", include_str!("templates/requests.html")),
        ("file.html", include_str!("templates/file.html")),
        ("endpoints.html", include_str!("templates/endpoints.html")),
        ("done.html", include_str!("templates/done.html")),
    ] {
        if let Err(e) = env.add_template(name, text) {
            // The templates are part of the binary: a broken one is a bug
            // the unit tests catch; the page then answers with the error.
            tracing::error!(template = name, error = %e, "console template does not compile");
        }
    }
    env
}

pub fn router(current: Current) -> Router {
    let limit = current
        .borrow()
        .config
        .console
        .as_ref()
        .map(|c| c.login_limit)
        .unwrap_or(LoginLimit {
            max_failures: DEFAULT_MAX_FAILED_LOGINS,
            window: std::time::Duration::from_secs(DEFAULT_FAILED_LOGIN_WINDOW),
            block: std::time::Duration::from_secs(DEFAULT_FAILED_LOGIN_BLOCK),
        });
    let state = ConsoleState {
        current,
        failed: Arc::new(Mutex::new(FailedLogins::new(limit))),
        templates: Arc::new(templates()),
    };
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/day", get(pages::day))
        .route("/quarantine", get(pages::quarantine))
        .route("/requests", get(pages::requests))
        .route("/requests/{id}/approve", post(pages::approve))
        .route("/requests/{id}/deny", post(pages::deny))
        .route("/files/{id}", get(pages::file))
        .route("/files/{id}/bytes", get(pages::file_bytes))
        .route("/files/{id}/act", post(pages::act))
        .route("/endpoints", get(pages::endpoints))
        .with_state(state)
}

/// Serve the console on `listener` until `stop` says so.
pub async fn run(
    current: Current,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(current).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "console stopped");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        let env = super::templates();
        for name in [
            "base.html",
            "login.html",
            "day.html",
            "quarantine.html",
            "actions.html",
            "requests.html",
            "file.html",
            "endpoints.html",
            "done.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn error_pages_escape() {
        assert_eq!(
            super::html_escape("<b>\"김\" & 'x'</b>"),
            "&lt;b&gt;&quot;김&quot; &amp; &#39;x&#39;&lt;/b&gt;"
        );
    }
}
