//! A fresh PostgreSQL database per test, on a real server: `WARDEN_TEST_POSTGRES_URL` if
//! set, else the local server on 127.0.0.1:5432, else a throwaway server started from the
//! installed binaries (`initdb`, `pg_ctl`) in a temporary folder. Where none of these
//! works the test fails, naming what to install; it never skips.
//!
//! Each database gets two roles of its own: an owner (migrations) and a runtime role
//! that owns nothing, as in production. Database and roles are dropped afterwards.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_postgres::NoTls;

/// A superuser's connection settings on the server the tests use.
#[derive(Debug, Clone)]
struct Server {
    host: String,
    port: u16,
    user: String,
}

impl Server {
    fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@{}:{}/{database}", self.host, self.port)
    }
}

/// `WARDEN_TEST_POSTGRES=throwaway` forces a throwaway server (to test that path).
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("WARDEN_TEST_POSTGRES_URL") {
            let server = from_url(&url);
            assert!(
                reachable(&server),
                "WARDEN_TEST_POSTGRES_URL names a server that does not answer"
            );
            return server;
        }
        let local = Server {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
        };
        if std::env::var("WARDEN_TEST_POSTGRES").as_deref() != Ok("throwaway") && reachable(&local)
        {
            return local;
        }
        throwaway()
    })
}

fn from_url(url: &str) -> Server {
    let config: tokio_postgres::Config = url.parse().expect("WARDEN_TEST_POSTGRES_URL parses");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    Server {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        user: config.get_user().unwrap_or("postgres").to_owned(),
    }
}

/// Runs `work` on a runtime of its own (callers may be inside one or not).
fn blocking<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
    .unwrap()
}

fn reachable(server: &Server) -> bool {
    let url = server.url(&server.user, "postgres");
    blocking(async move {
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        config.connect_timeout(Duration::from_secs(3));
        config.connect(NoTls).await.is_ok()
    })
}

/// Runs statements as the superuser, on `database`, one at a time (CREATE and DROP
/// DATABASE refuse to run in the implicit transaction of a multi-statement query).
fn admin(server: &Server, database: &str, statements: &[String]) {
    if let Err(error) = try_admin(server, database, statements) {
        panic!("{error}");
    }
}

fn try_admin(server: &Server, database: &str, statements: &[String]) -> Result<(), String> {
    let url = server.url(&server.user, database);
    let statements = statements.to_vec();
    blocking(async move {
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        for sql in statements {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    })
}

/// `text` as one word of a `sh` command line.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Where a PostgreSQL server's binaries are: on PATH, or in the distribution's folder.
fn binary(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let distribution = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin").join(name));
    on_path.chain(distribution).find(|path| path.is_file())
}

/// A server of our own in a temporary folder, stopped (and its folder removed) by a
/// watchdog when this test process exits.
fn throwaway() -> Server {
    OwnServer::start().server.clone()
}

/// A server this test process started (from `initdb`/`pg_ctl`) and may stop and start
/// again (an outage); a watchdog stops it and removes its folder when the process
/// exits. PostgreSQL refuses to run as root: as root it runs as the `postgres` user the
/// server package creates.
#[derive(Debug)]
pub struct OwnServer {
    server: Server,
    pg_ctl: PathBuf,
    data: PathBuf,
    options: String,
    log: PathBuf,
    as_root: bool,
}

impl OwnServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A throwaway server that also takes TLS, with this certificate and key (PEM).
    pub fn start_tls(certificate: &str, key: &str) -> Self {
        Self::start_with(Some((certificate, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let (Some(initdb), Some(pg_ctl)) = (binary("initdb"), binary("pg_ctl")) else {
            panic!(
                "these tests need PostgreSQL: set WARDEN_TEST_POSTGRES_URL, run a server on \
                 127.0.0.1:5432, or install the server binaries (apt-get install postgresql) \
                 so that a throwaway one can be started"
            );
        };
        // A fresh folder of our own (a predictable name could be planted beforehand);
        // the watchdog below removes it.
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        let mut tls_options = String::new();
        if let Some((certificate, key)) = tls {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::write(dir.join("server.crt"), certificate).unwrap();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join("server.key"))
                .unwrap();
            std::io::Write::write_all(&mut file, key.as_bytes()).unwrap();
            tls_options = format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.display()
            );
        }
        if as_root {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chowned.success(), "chown postgres {}", dir.display());
        }
        let data = dir.join("data");
        let port = free_port();
        let own = Self {
            server: Server {
                host: "127.0.0.1".into(),
                port,
                user: "postgres".into(),
            },
            pg_ctl: pg_ctl.clone(),
            options: format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off{tls_options}",
                dir.display()
            ),
            log: dir.join("server.log"),
            data: data.clone(),
            as_root,
        };
        own.run(
            &initdb,
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        own.resume();
        // The watchdog: once this process is gone, stop the server and remove its folder.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runas}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            runas = if as_root {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl = shell_quote(&pg_ctl.display().to_string()),
            data = shell_quote(&data.display().to_string()),
            dir = shell_quote(&dir.display().to_string()),
        );
        // Backgrounded by a shell that returns at once: the watchdog outlives this process.
        let started = Command::new("sh")
            .args(["-c", &format!("({stop}) </dev/null >/dev/null 2>&1 &")])
            .status()
            .unwrap();
        assert!(started.success(), "the throwaway server's watchdog");
        own
    }

    /// Stops the server (fast: open connections are cut, as in a failover).
    pub fn halt(&self) {
        let data = self.data.to_str().unwrap();
        self.run(&self.pg_ctl, &["-D", data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server again, waiting until it accepts connections.
    pub fn resume(&self) {
        let (data, log) = (self.data.to_str().unwrap(), self.log.to_str().unwrap());
        self.run(
            &self.pg_ctl,
            &["-D", data, "-o", &self.options, "-l", log, "-w", "start"],
        );
    }

    /// A fresh database on this server.
    pub fn database(&self) -> TestDb {
        TestDb::create_on(&self.server)
    }

    fn run(&self, program: &Path, args: &[&str]) {
        let mut command = if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        let out = command.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh database with its own owner and runtime roles, dropped with this value.
#[derive(Debug)]
pub struct TestDb {
    server: Server,
    pub name: String,
    pub owner: String,
    pub runtime: String,
}

impl TestDb {
    pub fn create() -> Self {
        Self::create_on(server())
    }

    fn create_on(server: &Server) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let db = Self {
            server: server.clone(),
            name: format!("warden_test_{tag}"),
            owner: format!("warden_owner_{tag}"),
            runtime: format!("warden_runtime_{tag}"),
        };
        admin(
            server,
            "postgres",
            &[
                format!("CREATE ROLE {} LOGIN", db.owner),
                format!("CREATE ROLE {} LOGIN", db.runtime),
                format!("CREATE DATABASE {} OWNER {}", db.name, db.owner),
            ],
        );
        // PostgreSQL 15 no longer lets everyone create in `public`; older servers do.
        admin(
            server,
            &db.name,
            &["REVOKE CREATE ON SCHEMA public FROM PUBLIC".into()],
        );
        db
    }

    /// The owner role's URL (for `warden store migrate`).
    pub fn owner_url(&self) -> String {
        self.server.url(&self.owner, &self.name)
    }

    /// The runtime role's URL (Warden's `[store] url`).
    pub fn runtime_url(&self) -> String {
        self.server.url(&self.runtime, &self.name)
    }

    /// The schema migrated (by the owner, the runtime role granted), and a pool of
    /// connections as the runtime role, as Warden uses it.
    pub async fn migrated_pool(&self) -> warden_store::postgres::Postgres {
        let timeout = Duration::from_secs(10);
        warden_store::postgres::migrate(&self.owner_url(), Some(&self.runtime), timeout)
            .await
            .unwrap();
        warden_store::postgres::Postgres::new(&warden_store::postgres::PgSettings {
            url: self.runtime_url(),
            pool_size: 4,
            statement_timeout: timeout,
            connect_timeout: timeout,
        })
        .unwrap()
    }

    /// A superuser's URL on this database (to look behind Warden's back).
    pub fn admin_url(&self) -> String {
        self.server.url(&self.server.user, &self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Never a panic here: it would abort a test that is already failing and hide
        // why.
        let dropped = try_admin(
            &self.server,
            "postgres",
            &[
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                format!("DROP ROLE IF EXISTS {}", self.owner),
                format!("DROP ROLE IF EXISTS {}", self.runtime),
            ],
        );
        if let Err(error) = dropped {
            eprintln!("test database {} not dropped: {error}", self.name);
        }
    }
}
