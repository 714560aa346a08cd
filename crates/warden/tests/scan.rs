//! `warden scan` against real servers on 127.0.0.1: a deliberately careless one fails
//! every rule it breaks (and its SARIF report is valid SARIF 2.1.0); the repository's
//! HTTP fixture fails the rules Warden closes when reached directly, and grades A with
//! no security finding behind Warden; a Warden configuration is audited statically.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::{BIN, EGRESS_LOOPBACK, Warden};

const BAD_KEY: &str = "scan-fixture-key";

/// A Python fixture server, killed however the test ends.
struct Fixture {
    child: Child,
    url: String,
}

impl Fixture {
    fn start(script: &str) -> Self {
        let path = format!("{}/tests/fixtures/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(path)
            .stdout(Stdio::piped())
            // The HTTP fixture prints a trace for each body it cannot parse: noise here.
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            url: line.trim().to_owned(),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `warden scan ARGS`, with `env` set; (exit success, stdout, stderr).
fn scan(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(BIN);
    command.arg("scan").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The ids of the rules a JSON report failed, and of those at least medium.
fn failed(report: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let findings = report["findings"].as_array().unwrap();
    let failed = |serious: bool| {
        findings
            .iter()
            .filter(|f| f["result"] == "fail")
            .filter(|f| !serious || !matches!(f["severity"].as_str(), Some("low" | "info")))
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect()
    };
    (failed(false), failed(true))
}

#[test]
fn a_careless_server_fails_every_rule_it_breaks_and_the_sarif_is_valid() {
    let bad = Fixture::start("bad_server.py");
    let dir = tempfile::tempdir().unwrap();
    let sarif_path = dir.path().join("bad.sarif");
    let auth = format!("Bearer {BAD_KEY}");
    let env = [("SCAN_AUTH", auth.as_str())];
    let (ok, stdout, stderr) = scan(
        &[
            &bad.url,
            "--header",
            "Authorization: env:SCAN_AUTH",
            "--format",
            "json",
            "--skip",
            "availability",
            "--allow-calls",
        ],
        &env,
    );
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let (failures, _) = failed(&report);
    for rule in [
        "WS-AUTH-002", // 401 without WWW-Authenticate
        "WS-AUTH-005", // the key in the query string is taken
        "WS-AUTH-006", // ... and in the body
        "WS-DEF-001",  // instructions to the model
        "WS-DEF-002",  // invisible tag characters
        "WS-DEF-003",  // an encoded blob
        "WS-DEF-004",  // a description naming another tool
        "WS-DEF-005",  // read_file
        "WS-DEF-006",  // open schemas
        "WS-DEF-008",  // delete_all_notes without annotations
        "WS-DEF-009",  // injected instructions
        "WS-ERR-001",  // a stack trace
        "WS-ERR-002",  // a file path
        "WS-ERR-003",  // SQL
        "WS-ERR-004",  // Server: ... Python/3.11
        "WS-ERR-005",  // arguments echoed back
        "WS-WEB-002",  // Access-Control-Allow-Origin: *
        "WS-WEB-004",  // any Origin
        "WS-WEB-005",  // any Host
        "WS-VAL-001",  // unknown tools run
        "WS-VAL-002",
        "WS-VAL-004", // no validation
        "WS-VAL-006",
        "WS-VAL-007",
        "WS-VAL-008", // ../ taken
        "WS-VAL-009",
        "WS-TRN-005",  // malformed JSON answers a stack trace, 500
        "WS-AUTH-010", // no resource_metadata in the challenge
        "WS-WEB-003",  // the preflight reflects the origin ...
        "WS-WEB-006",  // ... with credentials
        "WS-WEB-007",  // ... and origin null
        "WS-VAL-011",  // null, "5", an invisible name taken
        "WS-VAL-012",
        "WS-VAL-013",
        "WS-VAL-014", // params as an array drops the connection
        "WS-VAL-010",
        "WS-ERR-006", // the 1 MiB value echoed
        "WS-ERR-007", // 10.0.3.7
        "WS-ERR-008", // the environment
        "WS-DEF-016", // get_weather's result steers the model (--allow-calls)
        "WS-DEF-017", // ... and breaks its output schema
    ] {
        assert!(failures.contains(rule), "{rule} should fail: {failures:?}");
    }
    assert_eq!(report["grade"], "F", "{stdout}");
    assert!(
        !stdout.contains(BAD_KEY),
        "the key never reaches the report"
    );

    // SARIF, to a file, and the CI gate.
    let (ok, _, stderr) = scan(
        &[
            &bad.url,
            "-H",
            "Authorization: env:SCAN_AUTH",
            "--format",
            "sarif",
            "--output",
            sarif_path.to_str().unwrap(),
            "--skip",
            "availability",
            "--fail-under",
            "B",
        ],
        &env,
    );
    assert!(!ok, "grade F is below B: {stderr}");
    assert!(stderr.contains("grade F is below B"), "{stderr}");
    let sarif_text = std::fs::read_to_string(&sarif_path).unwrap();
    assert!(!sarif_text.contains(BAD_KEY));
    let sarif: Value = serde_json::from_str(&sarif_text).unwrap();
    let mut schema: Value =
        serde_json::from_str(include_str!("fixtures/sarif-schema-2.1.0.json")).unwrap();
    // The published schema's `language` pattern has a stray `]` (`…{2}]?$`), which the
    // meta-schema's regex check refuses; it concerns a field no report of ours has. The
    // intended pattern stands in for it here; the vendored file stays as published.
    let mut patched = 0;
    for definition in schema["definitions"].as_object_mut().unwrap().values_mut() {
        let language = definition
            .pointer_mut("/properties/language/pattern")
            .filter(|pattern| *pattern == "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$");
        if let Some(language) = language {
            *language = Value::String("^[a-zA-Z]{2}(-[a-zA-Z]{2})?$".into());
            patched += 1;
        }
    }
    assert!(
        patched > 0,
        "the published schema changed: check the patch is still needed"
    );
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "invalid SARIF: {errors:?}");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|r| r["ruleId"] == "WS-AUTH-005" && r["level"] == "error")
    );
    // A report that leaves out a required field fails the schema: the check can fail.
    let mut broken = sarif.clone();
    broken["runs"][0]["tool"]["driver"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn behind_warden_the_fixture_grades_a_and_direct_it_shows_what_warden_closes() {
    let fixture = Fixture::start("http_server.py");
    let warden = Warden::start_config(&format!(
        "[[upstream]]\nname = \"fixture\"\nurl = \"{}\"\n{EGRESS_LOOPBACK}",
        fixture.url
    ));
    let auth = format!("Bearer {}", warden.admin_key);
    let env = [("SCAN_AUTH", auth.as_str())];
    // Both side by side, first (the full scans below guess keys, which gets this
    // address throttled for a minute): the rules Warden closes are listed.
    let (ok, table, stderr) = scan(
        &[
            "--compare",
            &fixture.url,
            &warden.url,
            "-H",
            "Authorization: env:SCAN_AUTH",
            "--only",
            "authentication,browser",
            "--skip",
            "WS-AUTH-009",
        ],
        &env,
    );
    assert!(ok, "{stderr}");
    assert!(table.contains("through Warden: grade A"), "{table}");
    assert!(
        table.contains("| WS-AUTH-001 | critical | fail | pass |"),
        "{table}"
    );

    let (ok, stdout, stderr) = scan(
        &[
            &warden.url,
            "-H",
            "Authorization: env:SCAN_AUTH",
            "--format",
            "json",
            "--fail-under",
            "A",
            "--allow-calls",
        ],
        &env,
    );
    let through: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    let (_, serious) = failed(&through);
    // `clock` (read-only) was called with valid arguments, and its result judged.
    for rule in ["WS-VAL-015", "WS-DEF-016", "WS-DEF-017"] {
        let finding = through["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == rule)
            .unwrap();
        assert_eq!(finding["result"], "pass", "{rule}: {finding}");
    }
    assert!(ok && through["grade"] == "A", "{stdout}");
    assert!(
        serious.is_empty(),
        "security findings behind Warden: {serious:?}"
    );
    assert!(!stdout.contains(&warden.admin_key) && !stderr.contains(&warden.admin_key));

    let (_, stdout, _) = scan(&[&fixture.url, "--format", "json"], &[]);
    let direct: Value = serde_json::from_str(&stdout).unwrap();
    let (failures, _) = failed(&direct);
    for rule in [
        "WS-AUTH-001",
        "WS-WEB-004",
        "WS-WEB-005",
        "WS-AVL-002",
        "WS-AVL-004",
        "WS-VAL-001",
    ] {
        assert!(
            failures.contains(rule),
            "direct, {rule} should fail: {failures:?}"
        );
    }
    assert_ne!(direct["grade"], "A");
}

#[test]
fn a_configuration_is_audited_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let careless = dir.path().join("careless.toml");
    std::fs::write(
        &careless,
        "[server]\nlisten = \"0.0.0.0:8080\"\nallow_plaintext = true\n\n[audit]\nenabled = false\n\n\
         [tools.delete_note]\nconfirm = \"none\"\n\n[[upstream]]\nname = \"fs\"\n\
         command = [\"npx\", \"-y\", \"@modelcontextprotocol/server-filesystem\", \"/srv\"]\nsandbox = false\n",
    )
    .unwrap();
    let (ok, stdout, _) = scan(
        &[
            "--config",
            careless.to_str().unwrap(),
            "--format",
            "json",
            "--fail-under",
            "C",
        ],
        &[],
    );
    assert!(!ok);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let (failures, _) = failed(&report);
    for rule in [
        "WS-CFG-001",
        "WS-CFG-002",
        "WS-CFG-004",
        "WS-CFG-005",
        "WS-CFG-008",
        "WS-CFG-009",
    ] {
        assert!(failures.contains(rule), "{rule}: {failures:?}");
    }
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["category"] == "configuration")
    );
    let safe = dir.path().join("safe.toml");
    std::fs::write(&safe, "[server]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    let (ok, table, _) = scan(
        &["--config", safe.to_str().unwrap(), "--fail-under", "A"],
        &[],
    );
    assert!(ok, "{table}");
    assert!(table.contains("grade A (score 100)"), "{table}");
}

#[test]
fn selections_and_headers_are_checked() {
    let (ok, _, stderr) = scan(&["http://127.0.0.1:9/mcp", "--only", "WS-NOPE-1"], &[]);
    assert!(
        !ok && stderr.contains("name no rule: WS-NOPE-1"),
        "{stderr}"
    );
    let (ok, _, stderr) = scan(
        &[
            "http://127.0.0.1:9/mcp",
            "-H",
            "Authorization: env:WARDEN_SCAN_UNSET",
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("WARDEN_SCAN_UNSET is not set"),
        "{stderr}"
    );
    let (ok, _, stderr) = scan(&["http://127.0.0.1:9/mcp", "-H", "Bearer-no-colon"], &[]);
    assert!(!ok && stderr.contains("expected `Name: value`"), "{stderr}");
    // Nothing listening: a clear word, and a failing grade for CI.
    let (_, stdout, _) = scan(&["http://127.0.0.1:9/mcp", "--skip", "availability"], &[]);
    assert!(stdout.contains("could not scan: "), "{stdout}");
    let (ok, rules, _) = scan(&["--list-rules"], &[]);
    assert!(
        ok && rules.lines().filter(|l| l.starts_with("| WS-")).count() >= 80,
        "{rules}"
    );
}

#[test]
fn a_stdio_server_started_by_an_unpinned_npx_is_flagged() {
    // A stand-in `npx` that runs the stdio fixture: the launcher's name and arguments are
    // what the supply-chain rules read, and nothing is downloaded.
    let dir = tempfile::tempdir().unwrap();
    let npx = dir.path().join("npx");
    let fixture = format!(
        "{}/tests/fixtures/stdio_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(&npx, format!("#!/bin/sh\nexec python3 {fixture}\n")).unwrap();
    std::fs::set_permissions(&npx, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let npx = npx.to_str().unwrap();
    let (_, stdout, stderr) = scan(
        &[
            "--stdio",
            "--format",
            "json",
            "--",
            npx,
            "-y",
            "careless-mcp-server",
        ],
        &[],
    );
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    assert!(report["tools"].as_u64().unwrap() > 0, "{stdout}");
    let (failures, _) = failed(&report);
    assert!(failures.contains("WS-SUP-001"), "{failures:?}");
    // Only what applies to a local process is judged.
    let families: BTreeSet<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["category"].as_str().unwrap())
        .collect();
    for absent in [
        "authentication",
        "browser",
        "tls",
        "availability",
        "configuration",
    ] {
        assert!(
            !families.contains(absent),
            "{absent} judged over stdio: {families:?}"
        );
    }
    let (_, stdout, _) = scan(
        &[
            "--stdio",
            "--format",
            "json",
            "--",
            npx,
            "-y",
            "careless-mcp-server@1.2.3",
        ],
        &[],
    );
    let (failures, _) = failed(&serde_json::from_str(&stdout).unwrap());
    assert!(!failures.contains("WS-SUP-001"), "{failures:?}");
}

/// On a terminal the scan keeps a live line (requests sent, the latest named); in a pipe
/// it says once what it scans and draws nothing.
#[test]
fn a_progress_line_on_a_terminal_and_none_in_a_pipe() {
    let fixture = Fixture::start("http_server.py");
    let args = [fixture.url.as_str(), "--only", "transport"];
    let (_, _, piped) = scan(&args, &[]);
    assert!(
        piped.contains(&format!("scanning {} …", fixture.url)),
        "{piped}"
    );
    assert!(!piped.contains("requests ·"), "{piped}");
    // `script` gives the scan a pseudo-terminal for its stderr.
    let line = format!("{BIN} scan {}", args.join(" "));
    let out = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs the scan on a pseudo-terminal");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(terminal.contains("requests ·"), "{terminal}");
    assert!(terminal.contains("grade"), "{terminal}");
}
