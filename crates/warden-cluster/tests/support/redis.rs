//! Redis for tests: a throwaway `redis-server` of the test's own (so that a test may
//! stop and start it), or, where the binary is missing, the machine's at
//! 127.0.0.1:6379 (which a test never stops). Each test keeps to a key prefix of its
//! own, so tests can share one server.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnRedis {
    child: Option<Child>,
    port: u16,
    /// `--tls-cert-file`, `--tls-key-file`, `--tls-ca-cert-file`: a TLS-only server.
    tls: Option<[String; 3]>,
    /// `--requirepass`: clients must give this password.
    password: Option<String>,
    pub url: String,
}

/// Whether `redis-server` can be started here.
fn have_binary() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .output()
        .is_ok()
}

impl OwnRedis {
    /// A server of the test's own; the machine's when no binary is installed.
    pub fn start() -> Self {
        if !have_binary() {
            assert!(
                std::net::TcpStream::connect("127.0.0.1:6379").is_ok(),
                "these tests need Redis: install redis-server (Debian: apt-get install redis-server), or run one at 127.0.0.1:6379"
            );
            return Self {
                child: None,
                port: 6379,
                tls: None,
                password: None,
                url: "redis://127.0.0.1:6379".into(),
            };
        }
        Self::own()
    }

    /// A server of the test's own, which it may stop: fails clearly without the binary.
    pub fn own() -> Self {
        Self::own_with(None, None)
    }

    /// A server of the test's own that asks for `password` (the URL carries it).
    pub fn own_with_password(password: &str) -> Self {
        Self::own_with(None, Some(password.to_owned()))
    }

    /// A server of the test's own that speaks TLS only (`rediss://`), with this
    /// certificate, key and CA (PEM files).
    pub fn own_tls(cert: &str, key: &str, ca: &str) -> Self {
        Self::own_with(Some([cert.to_owned(), key.to_owned(), ca.to_owned()]), None)
    }

    fn own_with(tls: Option<[String; 3]>, password: Option<String>) -> Self {
        assert!(
            have_binary(),
            "this test starts its own Redis, so it needs redis-server installed (Debian: apt-get install redis-server)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        let login = password
            .as_ref()
            .map(|password| format!(":{password}@"))
            .unwrap_or_default();
        let mut redis = Self {
            child: None,
            port,
            tls,
            url: format!("{scheme}://{login}127.0.0.1:{port}"),
            password,
        };
        redis.resume();
        redis
    }

    /// Stops the server (as a crash would: every connection drops).
    pub fn halt(&mut self) {
        let child = self
            .child
            .as_mut()
            .expect("only a server of the test's own stops");
        let _ = child.kill();
        let _ = child.wait();
        self.child = None;
    }

    /// Starts it again on the same port, empty (it keeps nothing on disk).
    pub fn resume(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some([cert, key, ca]) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", cert, "--tls-key-file", key])
                .args(["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]),
        };
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
