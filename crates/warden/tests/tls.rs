//! TLS over a real socket with certificates from a test CA: a client that trusts the CA
//! gets through, one that does not is refused, a stalled handshake is cut off, and
//! SIGHUP swaps the certificate for new connections while established ones go on;
//! `warden scan` judges the chain, the version and HSTS over the same socket.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use support::raw::modern_body;
use support::{BIN, Warden};

/// A test CA, and a server certificate from it for 127.0.0.1 and localhost.
struct TestCa {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// Writes a server certificate and its key to `dir`; its key's pin (the base64
    /// SHA-256 of its SubjectPublicKeyInfo).
    fn server_certificate(&self, dir: &Path) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let key = KeyPair::generate().unwrap();
        let pin = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&key),
        ));
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join("cert.pem"), certificate.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        pin
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }
}

async fn list_tools(client: &reqwest::Client, warden: &Warden) -> reqwest::Result<u16> {
    let response = client
        .post(&warden.url)
        .header("authorization", format!("Bearer {}", warden.admin_key))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(modern_body("tools/list", json!({})).to_string())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Warden serving a fresh certificate from `ca`; the directory holds the files.
fn serving(ca: &TestCa, extra: &str) -> (tempfile::TempDir, Warden) {
    let dir = tempfile::tempdir().unwrap();
    ca.server_certificate(dir.path());
    let warden = start(dir.path(), extra);
    (dir, warden)
}

/// Sends SIGHUP and waits up to 5 s for `outcome` in Warden's log.
async fn hang_up(warden: &Warden, outcome: &str) {
    let pid = warden.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(sent.unwrap().success());
    for _ in 0..50 {
        if warden.stderr().contains(outcome) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {outcome:?} in the log: {}", warden.stderr());
}

fn start(dir: &Path, extra: &str) -> Warden {
    Warden::start_config(&format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    ))
}

#[tokio::test]
async fn clients_that_trust_the_ca_get_through_and_others_do_not() {
    let ca = TestCa::new();
    let (dir, warden) = serving(&ca, "");
    assert!(warden.url.starts_with("https://"), "{}", warden.url);
    assert_eq!(list_tools(&ca.client(), &warden).await.unwrap(), 200);

    let stranger = TestCa::new();
    assert!(list_tools(&stranger.client(), &warden).await.is_err());

    // Plain HTTP to the TLS port gets no MCP answer.
    let plain = warden.url.replacen("https://", "http://", 1);
    let answer = reqwest::Client::new().post(&plain).body("{}").send().await;
    assert!(answer.is_err() || answer.unwrap().status() != 200);
    // Nothing in the log holds the key's PEM.
    let key_pem = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
    let body_line = key_pem.lines().nth(1).unwrap();
    assert!(!warden.stderr().contains(body_line));
}

#[tokio::test]
async fn a_stalled_handshake_is_closed() {
    let ca = TestCa::new();
    let (_dir, warden) = serving(&ca, "tls_handshake_timeout_ms = 300\n");
    let address = warden.url["https://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let closed = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 16];
        // Says nothing; the server hangs up (end of stream, or a reset) well before the
        // 5 s read timeout, which would show as WouldBlock or TimedOut.
        match socket.read(&mut buffer) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    })
    .await
    .unwrap();
    assert!(closed);
    // Meanwhile others are served.
    assert_eq!(list_tools(&ca.client(), &warden).await.unwrap(), 200);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_without_dropping_connections() {
    let (first, second) = (TestCa::new(), TestCa::new());
    let (dir, warden) = serving(&first, "");
    let old_client = first.client();
    assert_eq!(list_tools(&old_client, &warden).await.unwrap(), 200);
    assert!(list_tools(&second.client(), &warden).await.is_err());

    second.server_certificate(dir.path());
    hang_up(&warden, "TLS certificate reloaded").await;
    assert_eq!(list_tools(&second.client(), &warden).await.unwrap(), 200);
    // The old client's pooled connection (made with the first certificate) still works:
    // a new connection would fail, since that client trusts only the first CA.
    assert_eq!(list_tools(&old_client, &warden).await.unwrap(), 200);

    // A broken pair on disk is refused; the current certificate stays.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    hang_up(&warden, "not reloaded").await;
    assert_eq!(list_tools(&second.client(), &warden).await.unwrap(), 200);
}

/// `warden scan` over TLS: trusting the CA (`--ca-cert`) the TLS rules pass, Warden's
/// Strict-Transport-Security included; without it the chain is the finding, and the
/// scan grades F because it could not speak to the server.
#[test]
fn a_scan_over_tls_judges_the_chain_and_hsts() {
    let ca = TestCa::new();
    let (dir, warden) = serving(&ca, "");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let auth = format!("Bearer {}", warden.admin_key);
    let scan = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args([
                "scan",
                &warden.url,
                "--only",
                "tls,WS-TRN-020",
                "--format",
                "json",
            ])
            .args(["-H", "Authorization: env:SCAN_AUTH"])
            .args(extra)
            .env("SCAN_AUTH", &auth)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        report
    };
    let result = |report: &serde_json::Value, id: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| (f["result"].as_str().unwrap().to_owned(), f.to_string()))
            .unwrap()
    };
    let trusted = scan(&["--ca-cert", ca_file.to_str().unwrap()]);
    for id in [
        "WS-TLS-001",
        "WS-TLS-002",
        "WS-TLS-003",
        "WS-TLS-004",
        "WS-TRN-020",
    ] {
        let (outcome, finding) = result(&trusted, id);
        assert_eq!(outcome, "pass", "{finding}");
    }
    assert_eq!(trusted["grade"], "A", "{trusted}");
    let untrusted = scan(&[]);
    let (outcome, finding) = result(&untrusted, "WS-TLS-002");
    assert_eq!(outcome, "fail", "{finding}");
    assert!(finding.contains("certificate"), "{finding}");
    assert_eq!(untrusted["grade"], "F");
    // A file with no certificate in it is named, not silently ignored.
    let out = std::process::Command::new(BIN)
        .args([
            "scan",
            &warden.url,
            "--ca-cert",
            dir.path().join("key.pem").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

/// A replica's Redis over TLS (`rediss://`): the server's certificate is verified
/// against the system's roots (here the test CA, through `SSL_CERT_FILE`), and a server
/// Warden cannot verify is refused, closed: calls get 503, never an unverified link.
#[tokio::test]
async fn redis_over_tls_is_verified_and_fails_closed() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.server_certificate(dir.path());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let redis =
        support::redis::OwnRedis::own_tls(&file("cert.pem"), &file("key.pem"), &file("ca.pem"));
    assert!(redis.url.starts_with("rediss://"), "{}", redis.url);
    let config = "[cluster]\nredis = \"env:WARDEN_REDIS_URL\"\nredis_timeout_ms = 2000\n";
    let trusting = Warden::start_config_with_env(
        config,
        &[
            ("WARDEN_REDIS_URL", &redis.url),
            ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ],
    );
    let plain = reqwest::Client::new();
    assert_eq!(list_tools(&plain, &trusting).await.unwrap(), 200);
    let metrics = reqwest::get(format!("{}/metrics", trusting.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let round_trips: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("warden_redis_round_trips_total "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(round_trips >= 2.0, "{metrics}");

    // The system's own roots do not know the test CA: refused, not downgraded.
    let doubting = Warden::start_config_with_env(config, &[("WARDEN_REDIS_URL", &redis.url)]);
    assert_eq!(list_tools(&plain, &doubting).await.unwrap(), 503);
}

/// `[admin] tls`: the console and the machines' routes over HTTPS with the server's
/// certificate; the console's cookie is then `Secure` (and `__Host-`); `warden reload`
/// reaches the listener over TLS, accepting only the configured certificate.
#[tokio::test]
async fn the_admin_listener_over_tls_gives_a_secure_cookie_and_the_cli_pins_its_certificate() {
    let ca = TestCa::new();
    let (dir, warden) = serving(&ca, "[admin]\ntls = true\n");
    let admin = warden.admin_url();
    assert!(admin.starts_with("https://"), "{admin}");
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ready = client.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let login = client
        .post(format!("{admin}/login"))
        .form(&[("credential", warden.admin_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-warden="), "{cookie}");
    for attribute in ["; Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // No plain HTTP on it.
    let plain = admin.replacen("https://", "http://", 1);
    let answer = reqwest::Client::new()
        .get(format!("{plain}/readyz"))
        .send()
        .await;
    assert!(answer.is_err() || answer.unwrap().status() != 200);

    // The CLI finds the listener's TLS in the configuration, and checks the certificate.
    let config = warden.data_dir.parent().unwrap().join("warden.toml");
    let address = admin.trim_start_matches("https://");
    let reload = std::process::Command::new(BIN)
        .args(["reload", "--admin", address, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    // Another certificate in the configuration: the CLI refuses the listener.
    let other = tempfile::tempdir().unwrap();
    TestCa::new().server_certificate(other.path());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.path().join("cert.pem").display().to_string(),
        &other.path().join("cert.pem").display().to_string(),
    );
    let impostor_config = other.path().join("warden.toml");
    std::fs::write(&impostor_config, text).unwrap();
    let refused = std::process::Command::new(BIN)
        .args(["reload", "--admin", address, "--config"])
        .arg(&impostor_config)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another certificate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn admin_tls_without_a_certificate_is_refused_at_start() {
    let (ok, stderr) = support::serve_to_exit("[admin]\ntls = true\n");
    assert!(!ok);
    assert!(stderr.contains("admin.tls"), "{stderr}");
}

/// The HTTP fixture over TLS with a certificate from `ca`; killed when dropped.
struct TlsUpstream {
    child: std::process::Child,
    url: String,
    pin: String,
    _dir: tempfile::TempDir,
}

impl TlsUpstream {
    fn start(ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pin = ca.server_certificate(dir.path());
        let (child, url) = support::start_http_fixture(&[
            std::ffi::OsStr::new("--tls"),
            dir.path().join("cert.pem").as_os_str(),
            dir.path().join("key.pem").as_os_str(),
        ]);
        Self {
            child,
            url,
            pin,
            _dir: dir,
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pin_sha256` on a remote upstream: a valid chain is not enough, its key must be one
/// of the pins; listing two lets a key be rotated; a mismatch keeps the upstream away,
/// and the log names it. The JWKS of OAuth is pinned the same way.
#[tokio::test]
async fn a_remote_upstream_is_reached_only_with_a_pinned_key() {
    let ca = TestCa::new();
    let upstream = TlsUpstream::start(&ca);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let other = TestCa::new().server_certificate(ca_dir.path());
    let serve = |pins: &[&str]| {
        let pins: Vec<String> = pins.iter().map(|pin| format!("{pin:?}")).collect();
        Warden::start_config_with_env(
            &format!(
                "[[upstream]]\nname = \"remote\"\nurl = \"{}\"\npin_sha256 = [{}]\ncall_timeout_ms = 3000\n{}",
                upstream.url,
                pins.join(", "),
                support::EGRESS_LOOPBACK
            ),
            &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
        )
    };
    let clock = |warden: &Warden| {
        let http = support::raw::Http::new(warden);
        async move { http.call_tool("clock", json!({"zone": "UTC"})).await }
    };
    // Pinned (and, for rotation, beside another pin): served.
    for pins in [
        vec![upstream.pin.as_str()],
        vec![other.as_str(), upstream.pin.as_str()],
    ] {
        let warden = serve(&pins);
        let answer = clock(&warden).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(answer.text.contains("now"), "{}", answer.text);
    }
    // Another key than the pinned one: never reached, and the log says why.
    let warden = serve(&[other.as_str()]);
    let answer = clock(&warden).await;
    assert!(!answer.text.contains("\"now\""), "{}", answer.text);
    let mut said = false;
    for _ in 0..50 {
        if warden.logged("matches none of its pin_sha256") {
            said = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(said, "{}", warden.stderr());
    assert!(
        warden.stderr().contains("upstream \\\"remote\\\"")
            || warden.stderr().contains("upstream \"remote\""),
        "{}",
        warden.stderr()
    );

    // The JWKS: with a pin that does not match, no key is fetched (tokens are refused),
    // and the log says why.
    drop(warden);
    let warden = Warden::start_config_with_env(
        &format!(
            "[auth.oauth]\nissuer = \"https://idp.test\"\nresource = \"https://mcp.test/mcp\"\n\
             jwks_url = \"{}\"\npin_sha256 = [{other:?}]\n{}",
            upstream.url.replace("/mcp", "/jwks"),
            support::EGRESS_LOOPBACK
        ),
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    );
    let mut said = false;
    for _ in 0..50 {
        if warden.logged("the JWKS (auth.oauth.jwks_url) matches none of its pin_sha256") {
            said = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(said, "{}", warden.stderr());
}

#[test]
fn pins_are_checked_when_the_configuration_is_read() {
    for (config, said) in [
        (
            "[[upstream]]\nname = \"r\"\nurl = \"http://127.0.0.1:1/mcp\"\npin_sha256 = [\"AAAA\"]\n",
            "must be https",
        ),
        (
            "[[upstream]]\nname = \"r\"\nurl = \"https://mcp.example.com/mcp\"\npin_sha256 = [\"not base64\"]\n",
            "is not a base64 SHA-256",
        ),
    ] {
        let (ok, stderr) = support::serve_to_exit(config);
        assert!(!ok);
        assert!(stderr.contains(said), "{stderr}");
    }
}
