//! Who is at the console. A login with an `admin`- or `read`-scope key (or an OAuth
//! token granting one) opens a session: a random id in a cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` under TLS) that lapses after 12 idle hours, and a CSRF
//! token every change must carry. Wrong credentials count against the address like
//! wrong keys on the MCP port. A `read` session looks; only an `admin` one acts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use warden_store::{AuditRecord, Scope};

use crate::Console;
use crate::error::ConsoleError;
use crate::gateway::Login;
use crate::html::Page;

/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; past it the least recently used ends.
const MAX_SESSIONS: usize = 256;
/// Random bytes in a session id and in a CSRF token.
const TOKEN_BYTES: usize = 32;
/// The longest credential the login reads (keys are far shorter; tokens may be long).
const MAX_CREDENTIAL: usize = 8192;

/// The operator behind a request, as the pages see them.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub key_id: String,
    pub scope: Scope,
    pub csrf: String,
}

impl Operator {
    /// Who the audit trail names for what this operator does.
    pub fn actor(&self) -> String {
        format!("console:{}", self.key_id)
    }

    pub fn may_act(&self) -> bool {
        self.scope == Scope::Admin
    }

    /// A change is allowed: an admin session, and the form's CSRF token is this
    /// session's.
    pub fn check_change(&self, csrf: &str) -> Result<(), ConsoleError> {
        if !bool::from(csrf.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return Err(ConsoleError::Csrf);
        }
        if !self.may_act() {
            return Err(ConsoleError::ReadOnly);
        }
        Ok(())
    }
}

struct Session {
    operator: Operator,
    last_seen: Instant,
}

pub(crate) struct Operators {
    sessions: Mutex<HashMap<String, Session>>,
    /// The cookie's name and attributes: `__Host-` and `Secure` under TLS.
    cookie: &'static str,
    secure: bool,
}

fn random_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Operators {
    pub fn new(tls: bool) -> Self {
        Self {
            sessions: Mutex::default(),
            cookie: if tls { "__Host-warden" } else { "warden" },
            secure: tls,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session; the cookie that carries it.
    fn open(&self, key_id: String, scope: Scope) -> String {
        let id = random_token();
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.last_seen.elapsed() < IDLE);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                operator: Operator {
                    key_id,
                    scope,
                    csrf: random_token(),
                },
                last_seen: Instant::now(),
            },
        );
        self.cookie_value(&id, IDLE.as_secs())
    }

    fn cookie_value(&self, id: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
            self.cookie
        )
    }

    /// The session a request's cookie names, if it lives (its idle clock restarts).
    fn find(&self, headers: &HeaderMap) -> Option<(String, Operator)> {
        let id = session_cookie(headers, self.cookie)?;
        let mut sessions = self.sessions();
        let session = sessions.get_mut(id)?;
        if session.last_seen.elapsed() >= IDLE {
            sessions.remove(id);
            return None;
        }
        session.last_seen = Instant::now();
        Some((id.to_owned(), session.operator.clone()))
    }

    fn close(&self, id: &str) {
        self.sessions().remove(id);
    }

    /// Whether any session of this key is open (a live page ends when none is).
    pub fn signed_in(&self, key_id: &str) -> bool {
        self.sessions()
            .values()
            .any(|session| session.operator.key_id == key_id && session.last_seen.elapsed() < IDLE)
    }

    /// Ends every session of a key (it was revoked or rotated away).
    pub fn close_key(&self, key_id: &str) {
        self.sessions()
            .retain(|_, session| session.operator.key_id != key_id);
    }
}

/// The value of cookie `name`, if the request carries it once.
fn session_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value);
    let first = found.next()?;
    // Two cookies of one name (one planted by a sibling site): trust neither.
    found.next().is_none().then_some(first)
}

/// Lets a request through only with a live session, whose operator the handlers read
/// from the request's extensions. Without one, a page asks for the login; anything
/// else is refused.
pub(crate) async fn require(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    match console.operators.find(request.headers()) {
        Some((_, operator)) => {
            request.extensions_mut().insert(operator);
            next.run(request).await
        }
        None if request.method() == axum::http::Method::GET => {
            let next_page = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &next_page)
                .finish();
            Redirect::to(&format!("/login?{query}")).into_response()
        }
        None => ConsoleError::NoSession.into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// Where to go after the login: a path on this console, never another site, and
/// nothing that could not stand in a `Location` header as it is.
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|next| {
        next.starts_with('/')
            && !next.starts_with("//")
            && !next.starts_with("/login")
            && next.len() <= 2048
            && next
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_-.~?=&%+:,".contains(&b))
    })
    .unwrap_or("/")
}

pub(crate) async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    login_form(query.next.as_deref(), None, StatusCode::OK)
}

fn login_form(next: Option<&str>, problem: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.login {
            h1 { "Warden console" }
            p { "Sign in with an " strong { "admin" } " key (to act) or a " strong { "read" } " key (to look). An OAuth access token granting one of those scopes works too." }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(safe_next(next));
                label for="credential" { "Key or token" }
                input #credential type="password" name="credential" autocomplete="off" required maxlength=(MAX_CREDENTIAL);
                button type="submit" { "Sign in" }
            }
        }
    };
    (status, Page::bare("Sign in", body).render()).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    credential: String,
    next: Option<String>,
}

pub(crate) async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = form.next.as_deref();
    let refused = |why: &str, status| login_form(next, Some(why), status);
    let credential = form.credential.trim();
    if credential.is_empty() || credential.len() > MAX_CREDENTIAL {
        return refused("Enter a key or a token.", StatusCode::UNPROCESSABLE_ENTITY);
    }
    let address = peer.ip().to_canonical();
    let principal = match console.gateway.login(address, credential).await {
        Login::Valid(principal) => principal,
        Login::Refused => {
            tracing::info!(%address, "console login refused: unknown, revoked or expired credential");
            return refused("That key or token is not valid.", StatusCode::UNAUTHORIZED);
        }
        Login::Throttled { retry_after } => {
            let mut response = refused(
                &format!("Too many wrong keys from this address; try again in {retry_after} s."),
                StatusCode::TOO_MANY_REQUESTS,
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Login::Unavailable => {
            return refused(
                "The key store cannot be reached; try again shortly.",
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    if principal.scope == Scope::Write {
        return refused(
            "A write key is for MCP clients; the console takes an admin or read key.",
            StatusCode::FORBIDDEN,
        );
    }
    let cookie = console
        .operators
        .open(principal.key_id.clone(), principal.scope);
    console
        .gateway
        .record(AuditRecord::action(
            &format!("console:{}", principal.key_id),
            "console/login",
            &principal.tenant,
            principal.scope.as_str(),
            "ok",
        ))
        .await;
    tracing::info!(key_id = %principal.key_id, scope = principal.scope.as_str(), "console login");
    let mut response = Redirect::to(safe_next(next)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    /// Missing counts as wrong: refused as a forged form is.
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(console): State<Arc<Console>>,
    axum::Extension(operator): axum::Extension<Operator>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, ConsoleError> {
    // Anyone may end their own session, read sessions too; the token still must match.
    if !bool::from(form.csrf.as_bytes().ct_eq(operator.csrf.as_bytes())) {
        return Err(ConsoleError::Csrf);
    }
    if let Some((id, _)) = console.operators.find(&headers) {
        console.operators.close(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&console.operators.cookie_value("", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The hidden field that carries the CSRF token in every form that changes something.
pub(crate) fn csrf_field(operator: &Operator) -> maud::Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf); }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_here_are_followed_after_the_login() {
        assert_eq!(safe_next(Some("/audit?tenant=a")), "/audit?tenant=a");
        assert_eq!(safe_next(Some("//evil.example.com")), "/");
        assert_eq!(safe_next(Some("https://evil.example.com")), "/");
        assert_eq!(safe_next(Some("/\\evil.example.com")), "/");
        assert_eq!(safe_next(Some("/login?next=/")), "/");
        assert_eq!(safe_next(Some("/keys\r\nSet-Cookie: x=1")), "/");
        assert_eq!(safe_next(Some("/a\"><script>")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_cookie_named_twice_is_trusted_in_neither() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; warden=abc".parse().unwrap());
        assert_eq!(session_cookie(&headers, "warden"), Some("abc"));
        headers.append(header::COOKIE, "warden=planted".parse().unwrap());
        assert_eq!(session_cookie(&headers, "warden"), None);
    }

    #[test]
    fn sessions_are_found_by_their_cookie_and_end_with_their_key() {
        let operators = Operators::new(true);
        let cookie = operators.open("key_1".into(), Scope::Read);
        assert!(cookie.starts_with("__Host-warden="));
        for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        let pair = cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, pair.parse().unwrap());
        let (_, operator) = operators.find(&headers).unwrap();
        assert_eq!(operator.key_id, "key_1");
        assert!(matches!(
            operator.check_change(&operator.csrf),
            Err(ConsoleError::ReadOnly)
        ));
        assert!(matches!(
            operator.check_change("forged"),
            Err(ConsoleError::Csrf)
        ));
        assert!(operators.signed_in("key_1"));
        operators.close_key("key_1");
        assert!(operators.find(&headers).is_none());
        assert!(!operators.signed_in("key_1"), "its live pages end too");
        assert!(
            !Operators::new(false)
                .open("k".into(), Scope::Admin)
                .contains("Secure")
        );
    }
}
