//! The frame every page shares, and the headers every answer carries.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::operator::{Operator, csrf_field};

/// No script or style but the console's own files, no inline script, no framing, no
/// form posted anywhere else, nothing fetched from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The sections in the navigation, by path.
const SECTIONS: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/approvals", "Approvals"),
    ("/tools", "Tools"),
    ("/audit", "Audit"),
    ("/keys", "Keys"),
    ("/tenants", "Tenants"),
];

pub(crate) struct Page<'a> {
    title: &'a str,
    /// The signed-in operator and the section shown (none on the login page).
    frame: Option<(&'a Operator, &'a str)>,
    body: Markup,
}

impl<'a> Page<'a> {
    pub fn new(title: &'a str, operator: &'a Operator, section: &'a str, body: Markup) -> Self {
        Self {
            title,
            frame: Some((operator, section)),
            body,
        }
    }

    /// A page without the navigation (the login, errors).
    pub fn bare(title: &'a str, body: Markup) -> Self {
        Self {
            title,
            frame: None,
            body,
        }
    }

    pub fn render(self) -> Html<String> {
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · Warden" }
                    link rel="stylesheet" href="/assets/console.css";
                    script src="/assets/console.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/" { "Warden" }
                        @if let Some((operator, section)) = self.frame {
                            nav aria-label="Sections" {
                                ul {
                                    @for (path, name) in SECTIONS {
                                        li {
                                            @if path == section {
                                                a href=(path) aria-current="page" { (name) }
                                            } @else {
                                                a href=(path) { (name) }
                                            }
                                        }
                                    }
                                }
                            }
                            form.logout method="post" action="/logout" {
                                (csrf_field(operator))
                                span.who {
                                    (operator.key_id) " · " (operator.scope.as_str())
                                }
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                    main { (self.body) }
                }
            }
        };
        Html(markup.into_string())
    }
}

/// Adds the console's security headers to every answer.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on the console's own
        // forms, which the Origin guard must refuse.
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Unix seconds as `2026-12-03 22:17:54Z`.
pub(crate) fn time(unix: i64) -> String {
    warden_store::format_time(unix)
}

/// Milliseconds since the epoch as [`time`] does.
pub(crate) fn time_ms(unix_ms: i64) -> String {
    time(unix_ms.div_euclid(1000))
}
