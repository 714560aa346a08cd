//! The egress guard at start: an upstream or key set at a private address is refused
//! unless the operator opens it with `[egress] allow`.

#![allow(clippy::unwrap_used)]

mod support;

#[test]
fn private_destinations_are_refused_unless_opened() {
    for url in [
        "http://127.0.0.1:9/mcp",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:10.0.0.1]/mcp",
        "https://2130706433/mcp",
        "https://metadata.google.internal/mcp",
    ] {
        let (ok, stderr) =
            support::serve_to_exit(&format!("[[upstream]]\nname = \"r\"\nurl = \"{url}\"\n"));
        assert!(!ok, "{url} was accepted");
        assert!(stderr.contains("[egress] allow"), "{url}: {stderr}");
    }
    let (ok, stderr) = support::serve_to_exit(
        "[auth.oauth]\nissuer = \"https://idp.test\"\nresource = \"https://mcp.test/mcp\"\njwks_url = \"http://127.0.0.1:9/jwks.json\"\n",
    );
    assert!(!ok && stderr.contains("[egress] allow"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_loopback_upstream_is_reached() {
    // A second Warden is the upstream; the first reaches it only with loopback opened.
    let inner = support::Warden::start();
    let outer = support::Warden::start_config(&format!(
        "[[upstream]]\nname = \"inner\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {}\" }}\n{}",
        inner.url,
        inner.admin_key,
        support::EGRESS_LOOPBACK
    ));
    let listed = support::raw::Http::new(&outer)
        .modern("tools/list", None, serde_json::json!({}))
        .await;
    assert!(
        listed.tool_names().contains(&"search_notes".to_owned()),
        "{}",
        listed.text
    );
}
