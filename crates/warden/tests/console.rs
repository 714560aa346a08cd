//! The operator's console (issue 21) in a real browser: headless Chromium from the
//! distribution, driven over WebDriver. An operator signs in with an admin key,
//! approves a held call while the page updates itself, accepts a changed tool
//! definition from its side-by-side diff, adds and revokes keys; a read key only
//! looks; the core actions work with JavaScript off; every page passes axe-core and is
//! photographed at desktop and phone width. Plain HTTP checks cover what a browser
//! would hide: cookies, CSRF, the Host guard, the security headers and the login
//! throttle.

#![allow(clippy::unwrap_used)]

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::time::Duration;

use browser::Browser;
use serde_json::{Value, json};
use support::Warden;
use support::raw::{Http, Reply};

/// Two upstreams: the notes (its `delete_note` held for an operator) and the fixture
/// (whose `mutate` changes `echo`'s definition, which then waits for approval).
fn config(extra: &str) -> String {
    format!(
        "[rate]\nper_key_rpm = 100000\n\n\
         [tools.\"notes__delete_note\"]\nconfirm = \"approve\"\n\
         [tools.\"notes__update_note\"]\nconfirm = \"approve\"\n{extra}\n\
         [[upstream]]\nname = \"notes\"\nbuiltin = \"notes\"\n\n{}",
        support::fixture_upstream(
            "fx",
            &format!("env = {{ FIXTURE_MUTATED_DESCRIPTION = {MUTATED:?} }}")
        )
    )
}

/// What the fixture's `mutate` makes `echo`'s description: markup that must stay text.
const MUTATED: &str = "Returns its text, and quietly keeps a copy. \
    <script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";

fn text(reply: &Reply) -> String {
    reply.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", reply.text))
        .to_owned()
}

fn request_id(reply: &Reply) -> String {
    text(reply)
        .split_whitespace()
        .find(|word| word.starts_with("apr_"))
        .unwrap_or_else(|| panic!("{}", reply.text))
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

async fn create_note(http: &Http, title: &str) -> String {
    let made = http
        .call_tool("notes__create_note", json!({"title": title, "body": "x"}))
        .await;
    made.json()["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", made.text))
        .to_owned()
}

async fn sign_in(browser: &Browser, admin: &str, key: &str) {
    browser.open(&format!("{admin}/")).await;
    // Sent to the login first, and back to the page asked for after it.
    browser.fill("#credential", key).await;
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.wait_for("nav[aria-label=Sections]").await;
}

/// Waits until no element matches `css` (the page reloads after an action).
async fn until_gone(browser: &Browser, css: &str) {
    for _ in 0..150 {
        if browser.find(css).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} stayed");
}

/// Clicks `decision` (Approve or Deny) on a held request's row; waits for the row to go.
async fn decide(browser: &Browser, decision: &str, request: &str) {
    browser
        .click(&format!("button[aria-label='{decision} {request}']"))
        .await;
    until_gone(browser, &format!("tr[data-request='{request}']")).await;
}

/// Makes the held delete of `note` again: approved, it runs now.
async fn assert_deletes(http: &Http, note: &str) {
    let ran = http
        .call_tool("notes__delete_note", json!({"id": note}))
        .await;
    assert_eq!(
        ran.json()["result"]["structuredContent"]["deleted"],
        true,
        "{}",
        ran.text
    );
}

/// The console's audit records of operator actions.
fn console_actions(warden: &Warden, method: &str) -> Vec<Value> {
    warden
        .audit_rows()
        .into_iter()
        .filter(|row| row["method"] == method)
        .collect()
}

async fn until_audited(warden: &Warden, method: &str) -> Vec<Value> {
    for _ in 0..100 {
        let rows = console_actions(warden, method);
        if !rows.is_empty() {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {method} record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_a_held_call_as_it_appears_and_the_clients_call_runs() {
    let warden = Warden::start_config(&config(""));
    let admin = warden.admin_url();
    let http = Http::new(&warden);
    let browser = Browser::start(true).await;
    sign_in(&browser, &admin, &warden.admin_key).await;
    browser.open(&format!("{admin}/approvals")).await;
    // The live list is connected (its first event arrived) before anything is held.
    browser.wait_for("#pending[data-live=yes]").await;

    // A destructive call is held; the page shows it without a reload, with its
    // (redacted) arguments. A second one carries markup in its arguments: shown as
    // text, never run.
    let note = create_note(&http, "doomed").await;
    let held = http
        .call_tool("notes__delete_note", json!({"id": note}))
        .await;
    let request = request_id(&held);
    let payload = "<img src=x onerror=\"document.title='pwned'\">";
    let hostile_note = create_note(&http, "target").await;
    let hostile_arguments = json!({
        "id": hostile_note,
        "title": "<script>document.title='pwned'</script>",
        "body": payload,
    });
    let hostile = http
        .call_tool("notes__update_note", hostile_arguments.clone())
        .await;
    let hostile_request = request_id(&hostile);
    let shown = browser.text(&format!("tr[data-request='{request}']")).await;
    assert!(
        shown.contains("notes__delete_note") && shown.contains(&note),
        "{shown}"
    );
    let hostile_row = browser
        .text(&format!("tr[data-request='{hostile_request}']"))
        .await;
    assert!(
        hostile_row.contains("<img src=x") && hostile_row.contains("<script>"),
        "{hostile_row}"
    );
    assert!(browser.find("#pending img").await.is_none());
    assert!(browser.find("#pending script").await.is_none());
    assert_ne!(browser.client.title().await.unwrap(), "pwned");
    browser.resize(1280, 900).await;
    browser.screenshot("approvals-live-1280").await;

    // Approve the first, deny the second: the clients' repeated calls run or are
    // refused.
    decide(&browser, "Approve", &request).await;
    decide(&browser, "Deny", &hostile_request).await;
    assert_deletes(&http, &note).await;
    let refused = http
        .call_tool("notes__update_note", hostile_arguments)
        .await;
    assert!(
        refused.text.contains("denied"),
        "the denied call ran: {}",
        refused.text
    );

    // The audit trail, filtered to the denied tool's refused calls, then exported.
    browser.open(&format!("{admin}/audit")).await;
    browser.fill("#f-tool", "notes__update_note").await;
    browser
        .client
        .execute(
            "document.getElementById('f-decision').value = 'refused';",
            vec![],
        )
        .await
        .unwrap();
    browser.click("form.filters button[type=submit]").await;
    // The filtered page replaces this one: wait for its address, not for any table.
    let mut url = browser.client.current_url().await.unwrap();
    for _ in 0..100 {
        if url.as_str().contains("tool=notes__update_note") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        url = browser.client.current_url().await.unwrap();
    }
    assert!(url.as_str().contains("tool=notes__update_note"), "{url}");
    browser.wait_for("#records tbody tr td").await;
    let rows = browser.text("#records tbody").await;
    assert!(
        rows.contains("notes__update_note") && rows.contains("confirm.denied"),
        "{rows}"
    );
    assert!(!rows.contains("notes__delete_note"), "{rows}");
    assert!(browser.find("#records script").await.is_none());
    browser.screenshot("audit-filtered-1280").await;
    let exported = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             const link = document.querySelector('a[download]');\
             fetch(link.href).then(r => r.text()).then(done, e => done('failed: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    let exported = exported.as_str().unwrap().to_owned();
    let lines: Vec<Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("{exported}")))
        .collect();
    assert!(!lines.is_empty(), "{exported}");
    assert!(
        lines
            .iter()
            .all(|line| line["target"] == "notes__update_note" && line["decision"] == "refused"),
        "{exported}"
    );

    // Each decision is audited under the operator's key id.
    let login = until_audited(&warden, "console/login").await;
    let operator = login[0]["principal"].as_str().unwrap().to_owned();
    assert!(operator.starts_with("console:key_"), "{operator}");
    for method in ["approvals/approve", "approvals/deny"] {
        let rows = until_audited(&warden, method).await;
        assert_eq!(rows[0]["principal"], operator.as_str(), "{rows:?}");
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_definition_is_read_side_by_side_and_approved_by_its_hash() {
    let warden = Warden::start_config(&config(""));
    let admin = warden.admin_url();
    let http = Http::new(&warden);
    let mutated = http
        .modern(
            "tools/call",
            Some("fx__mutate"),
            json!({"name": "fx__mutate", "arguments": {}}),
        )
        .await;
    assert_eq!(mutated.status, 200, "{}", mutated.text);
    let browser = Browser::start(true).await;
    sign_in(&browser, &admin, &warden.admin_key).await;
    let mut withheld = None;
    for _ in 0..100 {
        browser.open(&format!("{admin}/tools")).await;
        withheld = browser.find("article[data-tool='fx__echo']").await;
        if withheld.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(withheld.is_some(), "{}", browser.source().await);
    // The old description beside the new one.
    let removed = browser
        .wait_for("article[data-tool='fx__echo'] td.del")
        .await;
    assert!(removed.text().await.unwrap().contains("Returns its text."));
    let added = browser
        .wait_for("article[data-tool='fx__echo'] td.ins")
        .await;
    let added = added.text().await.unwrap();
    assert!(added.contains("quietly keeps a copy"), "{added}");
    // The description's markup is shown as text: no element made of it, nothing run.
    assert!(
        added.contains("<script>") && added.contains("onerror="),
        "{added}"
    );
    assert!(
        browser
            .find("article[data-tool='fx__echo'] script")
            .await
            .is_none()
    );
    assert!(
        browser
            .find("article[data-tool='fx__echo'] img")
            .await
            .is_none()
    );
    assert_ne!(browser.client.title().await.unwrap(), "pwned");
    browser.screenshot("tools-diff-1280").await;
    browser
        .click("button[aria-label='Approve the waiting definition of fx__echo']")
        .await;
    until_gone(&browser, "article[data-tool='fx__echo']").await;
    let mut listed = false;
    for _ in 0..100 {
        let names = http
            .modern("tools/list", None, json!({}))
            .await
            .tool_names();
        if names.contains(&"fx__echo".to_owned()) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "the approved definition was not served again");
    let rows = until_audited(&warden, "tools/approve").await;
    assert!(
        rows[0]["principal"]
            .as_str()
            .unwrap()
            .starts_with("console:key_")
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_keys_are_added_shown_once_and_revoked_and_a_read_key_only_looks() {
    let warden = Warden::start_config(&config(""));
    let admin = warden.admin_url();
    let browser = Browser::start(false).await;
    sign_in(&browser, &admin, &warden.admin_key).await;

    // Add a key: shown once, and it works on the MCP port.
    browser.open(&format!("{admin}/keys")).await;
    browser.fill("#k-tenant", "acme").await;
    browser.fill("#k-name", "laptop").await;
    browser.fill("#k-rpm", "120").await;
    browser.click("#add-key button[type=submit]").await;
    let shown = browser.wait_for("#new-key").await;
    let key = shown.prop("value").await.unwrap().unwrap();
    assert!(key.starts_with("wdn_"), "{key}");
    browser.screenshot("keys-added-once-1280").await;
    let client = Http::with_key(&warden, &key);
    assert_eq!(
        client.modern("tools/list", None, json!({})).await.status,
        200
    );
    // Shown once: the listing again has no key in it.
    browser.open(&format!("{admin}/keys")).await;
    assert!(!browser.source().await.contains(&key));
    let id = warden
        .audit_rows()
        .into_iter()
        .filter(|row| row["method"] == "keys/add")
        .map(|row| row["target"].as_str().unwrap().to_owned())
        .next_back()
        .unwrap();
    let row = browser.wait_for(&format!("tr[data-key='{id}']")).await;
    assert!(row.text().await.unwrap().contains("120"));
    browser
        .click(&format!("button[aria-label='Revoke {id}']"))
        .await;
    let mut revoked = false;
    for _ in 0..50 {
        if client.modern("tools/list", None, json!({})).await.status == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked, "the revoked key still works");

    // A held call approved with JavaScript off.
    let http = Http::new(&warden);
    let note = create_note(&http, "no-js").await;
    let request = request_id(
        &http
            .call_tool("notes__delete_note", json!({"id": note}))
            .await,
    );
    browser.open(&format!("{admin}/approvals")).await;
    decide(&browser, "Approve", &request).await;
    assert_deletes(&http, &note).await;
    browser.close().await;

    // A read key looks: no action is offered, and a forged one is refused.
    let (_, read_key) = warden.add_key("acme", "auditor", "read");
    let viewer = Browser::start(false).await;
    sign_in(&viewer, &admin, &read_key).await;
    let request = request_id(
        &http
            .call_tool(
                "notes__delete_note",
                json!({"id": create_note(&http, "kept").await}),
            )
            .await,
    );
    viewer.open(&format!("{admin}/approvals")).await;
    let row = viewer
        .wait_for(&format!("tr[data-request='{request}']"))
        .await;
    assert!(row.text().await.unwrap().contains("read only"));
    assert!(viewer.find("button[aria-label^=Approve]").await.is_none());
    viewer.open(&format!("{admin}/keys")).await;
    assert!(viewer.find("#add-key").await.is_none());
    let source = viewer.source().await;
    let csrf = source
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let forged = reqwest::Client::new()
        .post(format!("{admin}/approvals/decide"))
        .header("cookie", viewer.cookie_header().await)
        .form(&[
            ("csrf", csrf.as_str()),
            ("id", &request),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("read key can look but not act")
    );
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe_and_fits_a_desktop_and_a_phone() {
    let warden = Warden::start_config(&config(""));
    let admin = warden.admin_url();
    let http = Http::new(&warden);
    // Something on every page: a held call, a withheld definition, traffic, refusals,
    // spending.
    let note = create_note(&http, "pictured").await;
    http.call_tool("notes__delete_note", json!({"id": note}))
        .await;
    http.modern(
        "tools/call",
        Some("fx__mutate"),
        json!({"name": "fx__mutate", "arguments": {}}),
    )
    .await;
    http.call_tool("notes__no_such_tool", json!({})).await;
    Http::with_key(&warden, "wdn_wrong")
        .modern("tools/list", None, json!({}))
        .await;
    let browser = Browser::start(true).await;
    browser.resize(1280, 900).await;
    browser.open(&format!("{admin}/login")).await;
    browser.wait_for("#credential").await;
    let mut violations = Vec::new();
    for (width, height) in [(1280, 900), (390, 844)] {
        browser.resize(width, height).await;
        browser.open(&format!("{admin}/login")).await;
        browser.screenshot(&format!("login-{width}")).await;
        violations.extend(
            browser
                .accessibility_violations()
                .await
                .into_iter()
                .map(|v| json!({"page": "login", "width": width, "violation": v})),
        );
    }
    sign_in(&browser, &admin, &warden.admin_key).await;
    let pages = [
        ("overview", "/"),
        ("approvals", "/approvals"),
        ("tools", "/tools"),
        ("audit", "/audit"),
        ("keys", "/keys"),
        ("tenants", "/tenants"),
        ("audit-verify", "/audit/verify"),
    ];
    for (width, height) in [(1280, 900), (390, 844)] {
        browser.resize(width, height).await;
        for (name, path) in pages {
            browser.open(&format!("{admin}{path}")).await;
            browser.wait_for("main h1").await;
            browser.screenshot(&format!("{name}-{width}")).await;
            violations.extend(
                browser
                    .accessibility_violations()
                    .await
                    .into_iter()
                    .map(|v| json!({"page": name, "width": width, "violation": v})),
            );
            // Nothing spills sideways: wide tables scroll inside their own box.
            let overflow = browser
                .client
                .execute(
                    "return document.documentElement.scrollWidth - window.innerWidth;",
                    vec![],
                )
                .await
                .unwrap();
            assert!(
                overflow.as_i64().unwrap_or(0) <= 1,
                "{name} at {width} px is {overflow} px too wide"
            );
        }
    }
    assert!(
        violations.is_empty(),
        "{}",
        serde_json::to_string_pretty(&violations).unwrap()
    );
    // The charts and the tenants page show what happened.
    browser.open(&format!("{admin}/")).await;
    let requests = browser.wait_for("#requests-desc").await;
    let said = requests.text().await.unwrap_or_default();
    let summary = browser.source().await;
    assert!(!said.starts_with("0 in"), "{said} {summary}");
    assert!(
        summary.contains("notes__no_such_tool") || summary.contains("catalogue"),
        "the latest errors miss the refusal"
    );
    browser.open(&format!("{admin}/tenants")).await;
    let tenant = browser.wait_for("tr[data-tenant='default']").await;
    assert!(tenant.text().await.unwrap().contains("default"));
    browser.close().await;
}

/// The console's cookie from a login answer.
fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let set = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (set.split(';').next().unwrap().to_owned(), set)
}

#[tokio::test]
async fn cookies_csrf_headers_host_guard_and_the_login_throttle_hold_over_plain_http() {
    let warden = Warden::start_config(&format!(
        "{}\n[auth]\nmax_failures_per_ip = 3\nfailure_window_secs = 60\n",
        config("")
    ));
    let admin = warden.admin_url();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |credential: String| {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            client
                .post(format!("{admin}/login"))
                .form(&[("credential", credential.as_str()), ("next", "/keys")])
                .send()
                .await
                .unwrap()
        }
    };

    // The session cookie: HttpOnly, SameSite=Strict, the whole console, 12 h.
    let signed_in = login(warden.admin_key.clone()).await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/keys");
    let (cookie, set) = session_cookie(&signed_in);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains(&warden.admin_key));

    // Every page: a strict policy, no inline script, no framing.
    let page = client
        .get(format!("{admin}/keys"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'none'",
        "form-action 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.match_indices("<script")
            .all(|(at, _)| html[at..].starts_with("<script src=")),
        "an inline script: {html}"
    );
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();

    // A change needs the session's CSRF token: missing or wrong, refused.
    let add = |token: Option<&str>| {
        let client = client.clone();
        let url = format!("{admin}/keys/add");
        let cookie = cookie.clone();
        let mut form = vec![("tenant", "acme"), ("name", "x"), ("scope", "write")];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let form: Vec<(String, String)> = form
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        async move {
            client
                .post(url)
                .header("cookie", cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(add(None).await.status(), 403);
    assert_eq!(add(Some("forged")).await.status(), 403);
    let added = add(Some(&csrf)).await;
    assert_eq!(added.status(), 200);
    let added = added.text().await.unwrap();
    assert!(added.contains("only time it is shown"), "{added}");
    // Rotate: the new key is shown once and works; the old one, given no grace, stops.
    let new_id = added
        .split("Key <code>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("{added}"))
        .to_owned();
    let rotated = client
        .post(format!("{admin}/keys/rotate"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("id", &new_id),
            ("grace_secs", "0"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated = rotated.text().await.unwrap();
    let shown_key = |page: &str| {
        page.split("id=\"new-key\" type=\"text\" readonly value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{page}"))
            .to_owned()
    };
    let (old, fresh) = (shown_key(&added), shown_key(&rotated));
    assert_ne!(old, fresh);
    assert_eq!(
        Http::with_key(&warden, &old)
            .modern("tools/list", None, json!({}))
            .await
            .status,
        401
    );
    assert_eq!(
        Http::with_key(&warden, &fresh)
            .modern("tools/list", None, json!({}))
            .await
            .status,
        200
    );

    // The audit trail a page at a time: 50, then the older ones.
    let http = Http::new(&warden);
    for _ in 0..55 {
        http.call_tool("notes__no_such_tool", json!({})).await;
    }
    // Records reach the trail a flush after their answer: ask until all 55 are there.
    let page = |path: String| {
        let (client, cookie) = (client.clone(), cookie.clone());
        async move {
            client
                .get(path)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let rows = |html: &str| {
        html.matches("<td class=\"mono\">notes__no_such_tool</td>")
            .count()
    };
    let mut pages = (String::new(), String::new());
    for _ in 0..50 {
        let first = page(format!("{admin}/audit?tool=notes__no_such_tool")).await;
        let older = first
            .split("href=\"")
            .filter_map(|rest| rest.split('"').next())
            .find(|href| href.contains("before="))
            .map(|href| href.replace("&amp;", "&"));
        let second = match older {
            Some(older) => page(format!("{admin}{older}")).await,
            None => String::new(),
        };
        pages = (first, second);
        if rows(&pages.0) == 50 && rows(&pages.1) == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows(&pages.0), 50, "{}", pages.0);
    assert_eq!(rows(&pages.1), 5, "{}", pages.1);
    let verified = client
        .get(format!("{admin}/audit/verify"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(verified.contains("Intact"), "{verified}");

    // Without a session: a page sends to the login, an action is refused.
    let anonymous = client.get(format!("{admin}/audit")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/login?next=%2Faudit");
    let anonymous = client
        .post(format!("{admin}/keys/add"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // The Host guard of the MCP port: another Host, or a form from another site.
    let rebound = client
        .get(format!("{admin}/"))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let cross_site = client
        .post(format!("{admin}/login"))
        .header("origin", "https://evil.example.com")
        .form(&[("credential", warden.admin_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);

    // A write key is for MCP clients, not the console.
    let (_, write_key) = warden.add_key("acme", "agent", "write");
    let refused = login(write_key).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("set-cookie").is_none());

    // Signing out ends the session.
    let out = client
        .post(format!("{admin}/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let after = client
        .get(format!("{admin}/keys"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303, "the session outlived its sign-out");

    // Guessing is throttled like wrong keys: three wrong ones, then even the right
    // key waits, and the MCP port refuses the address too.
    // (The key rotated away above already counted once.)
    let mut wrong = 0;
    loop {
        let status = login("wdn_guess".to_owned()).await.status();
        if status == 429 {
            break;
        }
        assert_eq!(status, 401);
        wrong += 1;
        assert!(wrong <= 3, "not throttled after {wrong} wrong keys");
    }
    let throttled = login(warden.admin_key.clone()).await;
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    let mcp = Http::new(&warden)
        .modern("tools/list", None, json!({}))
        .await;
    assert_eq!(mcp.status, 429, "{}", mcp.text);
    // No credential reached a log line.
    assert!(!warden.has_written("wdn_guess"));
}
