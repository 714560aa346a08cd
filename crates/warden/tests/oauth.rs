//! OAuth 2.1 resource-server mode over real sockets, with keys generated here: a JWKS
//! file and a JWKS URL, good and bad tokens, the protected-resource metadata, and a
//! token that never reaches the upstream.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::Warden;
use support::raw::{Http, Reply};

const ISSUER: &str = "https://idp.test";
const RESOURCE: &str = "https://mcp.test/mcp";
const METADATA_URL: &str = "https://mcp.test/.well-known/oauth-protected-resource/mcp";

/// One of the authorization server's signing keys (ECDSA P-256).
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap();
        let encoding = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            encoding,
            jwk: serde_json::to_value(&jwk).unwrap(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn key_set(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a good token for tenant `acme` with read and write scopes; `changes`
/// replace fields, and `null` removes one.
fn claims(changes: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": RESOURCE,
        "sub": "alice@example.com",
        "iat": now(),
        "exp": now() + 600,
        "tenant": "acme",
        "scope": "read write",
    });
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn oauth_config(jwks: &str, extra: &str) -> String {
    format!(
        "[auth]\nmax_failures_per_ip = 1000\n{extra}\n[auth.oauth]\nissuer = \"{ISSUER}\"\nresource = \"{RESOURCE}\"\n{jwks}\n"
    )
}

/// Warden with its JWKS in a file holding `keys`; the directory lives as long as the
/// returned guard.
fn start_with_file(keys: &[&SigningKey], extra: &str) -> (Warden, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, key_set(keys)).unwrap();
    let jwks = format!("jwks_file = {:?}", path.to_str().unwrap());
    (Warden::start_config(&oauth_config(&jwks, extra)), dir)
}

async fn tool_names(warden: &Warden, token: &str) -> Reply {
    Http::with_key(warden, token)
        .modern("tools/list", None, json!({}))
        .await
}

#[tokio::test]
async fn tokens_are_checked_for_signature_issuer_audience_and_expiry() {
    let idp = SigningKey::generate("k1");
    let (warden, _dir) = start_with_file(&[&idp], "");

    // A good token: the scope decides what the caller sees.
    let writer = tool_names(&warden, &idp.sign(&claims(json!({})))).await;
    assert_eq!(writer.status, 200, "{}", writer.text);
    assert!(writer.tool_names().contains(&"create_note".to_owned()));
    let reader = tool_names(&warden, &idp.sign(&claims(json!({"scope": "read"})))).await;
    assert_eq!(reader.status, 200, "{}", reader.text);
    assert!(reader.tool_names().contains(&"search_notes".to_owned()));
    assert!(!reader.tool_names().contains(&"create_note".to_owned()));
    // Scopes as an array work too.
    let array = tool_names(&warden, &idp.sign(&claims(json!({"scope": ["read"]})))).await;
    assert_eq!(array.status, 200, "{}", array.text);

    // The tenant claim decides whose data the caller works on.
    let created = Http::with_key(&warden, &idp.sign(&claims(json!({}))))
        .modern(
            "tools/call",
            Some("create_note"),
            json!({"name": "create_note", "arguments": {"title": "acme-only", "body": "x"}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let titles_for = |key: String| {
        let http = Http::with_key(&warden, &key);
        async move {
            http.modern(
                "tools/call",
                Some("list_notes"),
                json!({"name": "list_notes", "arguments": {}}),
            )
            .await
            .text
        }
    };
    let (_, acme_key) = warden.add_key("acme", "laptop", "read");
    assert!(titles_for(acme_key).await.contains("acme-only"));
    assert!(
        !titles_for(warden.admin_key.clone())
            .await
            .contains("acme-only")
    );

    // Refused, all with the same answer.
    let impostor = SigningKey::generate("k1");
    let hmac = jsonwebtoken::encode(
        &Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(json!({})),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let b64 =
        |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "k1"})),
        b64(&claims(json!({})))
    );
    let refused = [
        (
            "wrong audience",
            idp.sign(&claims(json!({"aud": "https://other.test/mcp"}))),
        ),
        (
            "wrong issuer",
            idp.sign(&claims(json!({"iss": "https://evil.test"}))),
        ),
        ("expired", idp.sign(&claims(json!({"exp": now() - 3600})))),
        (
            "not yet valid",
            idp.sign(&claims(json!({"nbf": now() + 3600}))),
        ),
        ("no expiry", idp.sign(&claims(json!({"exp": null})))),
        ("bad signature", impostor.sign(&claims(json!({})))),
        ("HMAC", hmac),
        ("alg none", unsigned),
        ("no tenant", idp.sign(&claims(json!({"tenant": null})))),
        ("bad tenant", idp.sign(&claims(json!({"tenant": "../etc"})))),
        ("not a JWT", "opaque-token-from-somewhere".to_owned()),
    ];
    let mut bodies = Vec::new();
    for (case, token) in &refused {
        let reply = tool_names(&warden, token).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.text);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(
                format!("Bearer resource_metadata=\"{METADATA_URL}\", error=\"invalid_token\"")
                    .as_str()
            ),
            "{case}"
        );
        assert!(!reply.text.contains(token.as_str()), "{case}");
        bodies.push(reply.text);
    }
    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "{bodies:?}"
    );

    // Valid, but no scope of this server's: 403 naming the scope to ask for.
    let no_scope = tool_names(&warden, &idp.sign(&claims(json!({"scope": "profile"})))).await;
    assert_eq!(no_scope.status, 403, "{}", no_scope.text);
    assert!(
        no_scope
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\", scope=\"read\""),
        "{:?}",
        no_scope.header("www-authenticate")
    );

    // No credential: the challenge points at the metadata, with no error.
    let anonymous = Http::with_key(&warden, "")
        .send(reqwest::Method::POST, &[], None)
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{METADATA_URL}\"").as_str())
    );

    // API keys keep working beside OAuth.
    assert_eq!(tool_names(&warden, &warden.admin_key).await.status, 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    for (case, token) in &refused {
        assert!(!warden.has_written(token), "{case}: the token was written");
    }
    // The operator learns why; the client does not.
    assert!(warden.logged("reason=\"wrong audience\""));
}

#[tokio::test]
async fn the_metadata_is_public_at_both_well_known_paths() {
    let idp = SigningKey::generate("k1");
    let (warden, _dir) = start_with_file(&[&idp], "");
    let base = warden.url.trim_end_matches("/mcp").to_owned();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let reply = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(reply.status(), 200, "{path}");
        let document: Value = reply.json().await.unwrap();
        assert_eq!(document["resource"], RESOURCE);
        assert_eq!(document["authorization_servers"], json!([ISSUER]));
        assert_eq!(document["bearer_methods_supported"], json!(["header"]));
        assert_eq!(
            document["scopes_supported"],
            json!(["read", "write", "admin"])
        );
    }
}

#[tokio::test]
async fn api_keys_can_be_turned_off_when_oauth_is_on() {
    let idp = SigningKey::generate("k1");
    let (warden, _dir) = start_with_file(&[&idp], "api_keys = false");
    assert_eq!(tool_names(&warden, &warden.admin_key).await.status, 401);
    assert_eq!(
        tool_names(&warden, &idp.sign(&claims(json!({}))))
            .await
            .status,
        200
    );
}

/// An authorization server's JWKS endpoint and a minimal MCP server (2025-06-18) with
/// one tool, `ping`, that records every header it is sent.
#[derive(Default)]
struct Remote {
    jwks: Mutex<String>,
    headers_seen: Mutex<Vec<String>>,
}

async fn serve_jwks(State(remote): State<Arc<Remote>>) -> Response {
    (
        [("content-type", "application/json")],
        remote.jwks.lock().unwrap().clone(),
    )
        .into_response()
}

async fn serve_mcp(
    State(remote): State<Arc<Remote>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    remote.headers_seen.lock().unwrap().extend(
        headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?"))),
    );
    let message = body.0;
    let Some(id) = message.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let result = match message["method"].as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "remote", "version": "1"},
        }),
        "tools/list" => json!({"tools": [{"name": "ping", "inputSchema": {"type": "object"}}]}),
        "tools/call" => json!({"content": [{"type": "text", "text": "pong"}]}),
        _ => {
            return axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}))
                .into_response();
        }
    };
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

async fn start_remote(remote: Arc<Remote>) -> String {
    let app = axum::Router::new()
        .route("/jwks.json", get(serve_jwks))
        .route(
            "/mcp",
            post(serve_mcp).get(|| async { StatusCode::METHOD_NOT_ALLOWED }),
        )
        .with_state(remote);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

// Multi-threaded: the remote must answer while the test thread waits for Warden to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_a_url_and_tokens_never_reach_the_upstream() {
    let first = SigningKey::generate("2026-a");
    let remote = Arc::new(Remote::default());
    *remote.jwks.lock().unwrap() = key_set(&[&first]);
    let base = start_remote(remote.clone()).await;
    let config = oauth_config(&format!("jwks_url = \"{base}/jwks.json\""), "")
        + &format!("\n[[upstream]]\nname = \"remote\"\nurl = \"{base}/mcp\"\n")
        + support::EGRESS_LOOPBACK;
    let warden = Warden::start_config(&config);

    let call = |token: String| {
        let http = Http::with_key(&warden, &token);
        async move {
            http.modern(
                "tools/call",
                Some("ping"),
                json!({"name": "ping", "arguments": {}}),
            )
            .await
        }
    };
    let token = first.sign(&claims(json!({})));
    let answer = call(token.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json()["result"]["content"][0]["text"], "pong");

    // The authorization server rotates in a new key: a token naming it makes Warden
    // fetch the set again (no more than once per few seconds).
    let second = SigningKey::generate("2026-b");
    *remote.jwks.lock().unwrap() = key_set(&[&first, &second]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rotated = second.sign(&claims(json!({})));
    let answer = call(rotated.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let seen = remote.headers_seen.lock().unwrap().join("\n");
    assert!(!seen.is_empty(), "the upstream was never called");
    for token in [&token, &rotated] {
        assert!(
            !seen.contains(token.as_str()),
            "a token reached the upstream"
        );
    }
    assert!(
        !seen.to_ascii_lowercase().contains("authorization:"),
        "an Authorization header reached the upstream:\n{seen}"
    );
}

/// The operator's console takes an OAuth access token that grants the admin scope (or
/// read), not one that grants only write; with API keys off, not the admin key either.
#[tokio::test]
async fn an_oauth_admin_token_opens_the_console_and_a_client_token_does_not() {
    let idp = SigningKey::generate("k1");
    let (warden, _dir) = start_with_file(&[&idp], "api_keys = false");
    let admin = warden.admin_url();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |credential: String| {
        let (client, admin) = (client.clone(), admin.clone());
        async move {
            client
                .post(format!("{admin}/login"))
                .form(&[("credential", credential)])
                .send()
                .await
                .unwrap()
        }
    };
    let operator = login(idp.sign(&claims(json!({"scope": "admin"})))).await;
    assert_eq!(operator.status(), 303);
    let cookie = operator.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = client
        .get(format!("{admin}/keys"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("oauth:alice@example.com"), "{page}");
    assert!(page.contains(" · admin</span>"), "{page}");
    assert!(page.contains("id=\"add-key\""), "an admin token may act");

    let agent = login(idp.sign(&claims(json!({})))).await;
    assert_eq!(
        agent.status(),
        403,
        "a read-write client token opened the console"
    );
    let key = login(warden.admin_key.clone()).await;
    assert_eq!(key.status(), 401, "API keys are off");
}

/// A token's groups and string claims reach the policies: a group permit opens writes to
/// its members, a claim forbids one tool, and lists follow.
#[tokio::test]
async fn an_oauth_group_permits_what_its_members_may_call() {
    let idp = SigningKey::generate("k1");
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(
        policies.path().join("groups.cedar"),
        r#"
@id("editors-write")
permit (principal in Group::"editors", action in Action::"call_tool", resource);

@id("everyone-reads")
permit (principal, action in Action::"call_tool", resource)
when { resource.kind == "read" };

@id("interns-keep-notes")
forbid (principal, action == Action::"call_tool:delete_note", resource)
when { principal.hasTag("department") && principal.getTag("department") == "interns" };
"#,
    )
    .unwrap();
    let extra = format!(
        "\n[policy]\nfiles = [\"{}/*.cedar\"]\n",
        policies.path().display()
    );
    let (warden, _jwks) = start_with_file(&[&idp], &extra);
    let editor = idp.sign(&claims(json!({"groups": ["editors"]})));
    let viewer = idp.sign(&claims(json!({"groups": ["viewers"]})));
    let intern = idp.sign(&claims(
        json!({"groups": ["editors"], "department": "interns", "sub": "bob@example.com"}),
    ));
    let names = |reply: Reply| reply.tool_names();
    assert!(names(tool_names(&warden, &editor).await).contains(&"create_note".to_owned()));
    let viewed = names(tool_names(&warden, &viewer).await);
    assert!(viewed.contains(&"search_notes".to_owned()), "{viewed:?}");
    assert!(!viewed.contains(&"create_note".to_owned()), "{viewed:?}");
    assert!(!names(tool_names(&warden, &intern).await).contains(&"delete_note".to_owned()));

    let create = |token: String| {
        let warden = &warden;
        async move {
            Http::with_key(warden, &token)
                .call_tool("create_note", json!({"title": "t", "body": "b"}))
                .await
                .json()
        }
    };
    let made = create(editor.clone()).await;
    let id = made["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{made}"))
        .to_owned();
    let refused = create(viewer.clone()).await;
    assert_eq!(refused["error"]["message"], "Unknown tool", "{refused}");
    let kept = Http::with_key(&warden, &intern)
        .call_tool("delete_note", json!({"id": id}))
        .await
        .json();
    assert_eq!(
        kept["error"]["message"], "Refused by policy \"interns-keep-notes\"",
        "{kept}"
    );
}
