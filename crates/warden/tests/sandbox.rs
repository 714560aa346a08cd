//! A sandboxed stdio server tries to get out: read beyond its directory, write to the data
//! directory, connect to 127.0.0.1 itself, fetch a blocked URL through its proxy,
//! connect to a Unix socket outside, send UDP, ptrace another process, read Warden's
//! environment, outlive Warden through a grandchild. Each attempt fails, what it may do
//! still works, and Warden keeps serving.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Era, Warden, call_text, connect, fixture_upstream, process_alive};

/// Counts every connection made to a port on 127.0.0.1.
fn recording_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stream.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_server_cannot_get_out_and_warden_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "not for the server").unwrap();
    // Loopback is opened for Warden's own upstreams; that does not open it to children.
    let upstream = fixture_upstream(
        "box",
        "sandbox = true\nsandbox_max_open_files = 256\nsandbox_memory_mb = 512\nsandbox_cpu_seconds = 120\nsandbox_max_processes = 2000",
    );
    let canary = "wdn_sandbox_env_canary_7f3a";
    let mut warden = Warden::start_config_with_env(
        &format!("{upstream}{}", support::EGRESS_LOOPBACK),
        &[("WARDEN_TEST_CANARY", canary)],
    );
    let data_dir = warden.data_dir.clone();
    let client = connect(&warden.url, &warden.admin_key, Era::Legacy)
        .await
        .unwrap();
    let attempt = |action: &'static str, target: String| {
        let client = &client;
        async move {
            call_text(
                client,
                "attempt",
                json!({"action": action, "target": target}),
            )
            .await
        }
    };
    let (port, connections) = recording_listener();
    // A Unix socket outside the sandbox, as a Docker daemon or an ssh-agent would have.
    let socket_path = outside.join("agent.sock");
    let unix = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();

    // What the sandbox reported on this kernel, and that it is in force.
    let report = warden
        .stderr()
        .lines()
        .find(|line| line.contains("warden sandbox: landlock"))
        .map(str::to_owned)
        .expect("the trampoline reports what it enforced");
    eprintln!("sandbox report on this kernel: {report}");
    assert!(report.contains("no_new_privs on"), "{report}");
    assert!(
        report.contains("seccomp on") && report.contains("unix sockets refused, udp refused"),
        "{report}"
    );

    let denied = [
        ("read", outside.join("secret.txt").display().to_string()),
        ("read", data_dir.join("keys.db").display().to_string()),
        ("read", data_dir.join("admin.key").display().to_string()),
        ("write", data_dir.join("planted").display().to_string()),
        ("write", outside.join("planted").display().to_string()),
        ("write", "/etc/planted".to_owned()),
        ("connect", port.to_string()),
        (
            "fetch",
            format!("http://127.0.0.1:{port}/through-the-proxy"),
        ),
        ("fetch", format!("https://127.0.0.1:{port}/tunnel")),
        (
            "fetch",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        ("fetch", "http://[::ffff:127.0.0.1]/".to_owned()),
        ("unix", socket_path.display().to_string()),
        ("udp", "127.0.0.1:53".to_owned()),
        ("udp", udp.local_addr().unwrap().to_string()),
        ("ptrace", String::new()),
    ];
    for (action, target) in denied {
        let outcome = attempt(action, target.clone()).await;
        assert!(
            outcome.starts_with("denied:"),
            "{action} {target}: {outcome}"
        );
    }
    assert!(!data_dir.join("planted").exists());
    assert!(!outside.join("planted").exists());
    assert!(unix.accept().is_err(), "a Unix socket connection got out");
    assert!(udp.recv_from(&mut [0; 16]).is_err(), "a datagram got out");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a connection got out"
    );

    // The proxy said which upstream tried, and refused before connecting.
    assert!(warden.logged("egress proxy: refused"));
    assert!(warden.logged("upstream=\"box\"") || warden.logged("upstream=box"));

    // What it may do: its own directory, the proxy's address, its configured limits.
    assert_eq!(
        attempt("write", "scratch.txt".to_owned()).await,
        "ok:written"
    );
    let home = attempt("env", "HOME".to_owned()).await;
    assert!(
        home.starts_with(&format!(
            "ok:{}",
            data_dir.join("upstreams").join("box").display()
        )),
        "{home}"
    );
    assert!(data_dir.join("upstreams/box/scratch.txt").exists());
    let proxy = attempt("env", "HTTPS_PROXY".to_owned()).await;
    assert!(proxy.starts_with("ok:http://127.0.0.1:"), "{proxy}");
    assert_eq!(attempt("env", "NO_PROXY".to_owned()).await, "ok:");
    // Warden's own environment stays with Warden.
    assert_eq!(
        attempt("env", "WARDEN_TEST_CANARY".to_owned()).await,
        "ok:<unset>"
    );
    let limits: serde_json::Value = serde_json::from_str(
        attempt("limits", String::new())
            .await
            .strip_prefix("ok:")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(limits["RLIMIT_NOFILE"], 256);
    assert_eq!(limits["RLIMIT_DATA"], 512 * 1024 * 1024);
    assert_eq!(limits["RLIMIT_CPU"], 120);
    assert_eq!(limits["RLIMIT_NPROC"], 2000);

    // Warden keeps serving.
    assert_eq!(
        call_text(&client, "echo", json!({"text": "still here"})).await,
        "still here"
    );
    assert!(!warden.has_written(canary));

    // A grandchild ends with the server's process group when Warden stops.
    let grandchild: u32 = attempt("spawn", String::new())
        .await
        .strip_prefix("ok:")
        .unwrap()
        .parse()
        .unwrap();
    assert!(process_alive(grandchild));
    drop(client);
    warden.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(grandchild) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!process_alive(grandchild), "the grandchild outlived Warden");
}

#[test]
fn sandbox_settings_are_checked_at_start() {
    for (extra, complaint) in [
        ("sandbox = \"sometimes\"", "best-effort"),
        ("sandbox_read = [\"relative/dir\"]", "absolute"),
        ("sandbox_max_open_files = 0", "between"),
    ] {
        let (ok, stderr) = support::serve_to_exit(&fixture_upstream("box", extra));
        assert!(!ok, "{extra} was accepted");
        assert!(stderr.contains(complaint), "{extra}: {stderr}");
    }
    let (ok, stderr) = support::serve_to_exit(
        "[[upstream]]\nname = \"r\"\nurl = \"https://example.com/mcp\"\nsandbox = true\n",
    );
    assert!(!ok, "a sandbox on a remote upstream was accepted: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_children_have_directories_the_other_tenant_cannot_read() {
    let warden = Warden::start_config(&fixture_upstream(
        "box",
        "sandbox = true\nper_tenant = true",
    ));
    let (_, acme) = warden.add_key("acme", "acme", "write");
    let (_, globex) = warden.add_key("globex", "globex", "write");
    let mut clients = Vec::new();
    for key in [&acme, &globex] {
        clients.push(connect(&warden.url, key, Era::Legacy).await.unwrap());
    }
    for (client, tenant) in clients.iter().zip(["acme", "globex"]) {
        let wrote = call_text(
            client,
            "attempt",
            json!({"action": "write", "target": "mine.txt"}),
        )
        .await;
        assert_eq!(wrote, "ok:written", "{tenant}");
    }
    let tenants = warden.data_dir.join("upstreams/box/tenants");
    assert!(tenants.join("acme/mine.txt").exists());
    assert!(tenants.join("globex/mine.txt").exists());
    let across = call_text(
        &clients[0],
        "attempt",
        json!({"action": "read", "target": tenants.join("globex/mine.txt").display().to_string()}),
    )
    .await;
    assert!(
        across.starts_with("denied:"),
        "acme read globex's file: {across}"
    );
    let own = call_text(
        &clients[0],
        "attempt",
        json!({"action": "read", "target": tenants.join("acme/mine.txt").display().to_string()}),
    )
    .await;
    assert!(own.starts_with("ok:"), "{own}");
}

/// A folder named in the command that the sandbox closes is named in the log with the
/// line that would open it (the filesystem server would otherwise answer `EACCES` for
/// a folder it was told to serve, and nothing would say why).
#[test]
fn a_path_the_sandbox_closes_is_named_with_the_setting_that_opens_it() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_server.py"
    );
    let config = |extra: &str| {
        format!(
            "[[upstream]]\nname = \"files\"\ncommand = [{:?}, {script:?}, {:?}]\n{extra}\n",
            support::python(),
            served.to_str().unwrap(),
        )
    };
    let hint = format!("sandbox_read = [\"{}\"]", served.display());
    let closed = Warden::start_config(&config(""));
    assert!(
        closed.logged(&format!("the command names {}", served.display())),
        "{}",
        closed.stderr()
    );
    assert!(closed.logged(&hint), "{}", closed.stderr());
    drop(closed);
    let opened = Warden::start_config(&config(&format!(
        "sandbox_read = [{:?}]",
        served.to_str().unwrap()
    )));
    assert!(opened.logged("warden sandbox: landlock"));
    assert!(
        !opened.stderr().contains("the command names"),
        "{}",
        opened.stderr()
    );
}
