//! The embedded notes server through the real binary, driven by rmcp's client in both
//! MCP eras: the whole note lifecycle, tenant isolation and key revocation.
//!
//! rmcp's test client answers no elicitation, so `delete_note` runs here without the
//! confirmation it needs by default (tests/injection.rs covers that).

mod support;

use rmcp::model::{PaginatedRequestParams, ReadResourceRequestParams};
use serde_json::json;
use support::{ERAS, Era, Warden, call, call_is_tool_error, call_ok, connect};

/// No confirmation for deletes: these tests are about the notes themselves.
const UNCONFIRMED_DELETES: &str = "[tools.delete_note]\nconfirm = \"none\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn note_lifecycle_in_both_eras() {
    let warden = Warden::start_config(UNCONFIRMED_DELETES);
    for era in ERAS {
        let client = connect(&warden.url, &warden.admin_key, era).await.unwrap();
        let expected_version = if era == Era::Modern {
            "2026-07-28"
        } else {
            "2025-11-25"
        };
        assert_eq!(
            client.peer().peer_info().unwrap().protocol_version.as_str(),
            expected_version
        );

        let tools = client.list_all_tools().await.unwrap();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "create_note",
                "delete_note",
                "get_note",
                "import_url",
                "list_notes",
                "restore_note",
                "search_notes",
                "update_note"
            ]
        );

        let word = format!(
            "wombat{}",
            if era == Era::Modern {
                "modern"
            } else {
                "legacy"
            }
        );
        let created = call_ok(
            &client,
            "create_note",
            json!({"title": "Field notes", "body": format!("The {word} digs burrows."), "tags": ["animals"]}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();

        let found = call_ok(&client, "search_notes", json!({"query": word})).await;
        assert_eq!(found["results"][0]["id"], id.as_str());
        assert!(
            found["results"][0]["snippet"]
                .as_str()
                .unwrap()
                .contains(&format!("[{word}]"))
        );

        let updated = call_ok(
            &client,
            "update_note",
            json!({"id": id, "title": "Burrow notes"}),
        )
        .await;
        assert_eq!(updated["title"], "Burrow notes");
        assert_eq!(
            updated["body"], created["body"],
            "fields left out keep their value"
        );
        let fetched = call_ok(&client, "get_note", json!({"id": id})).await;
        assert_eq!(fetched["title"], "Burrow notes");

        let listed = call_ok(&client, "list_notes", json!({"tag": "animals"})).await;
        assert!(
            listed["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == id.as_str())
        );

        let resource = client
            .read_resource(ReadResourceRequestParams::new(format!("notes://{id}")))
            .await
            .unwrap();
        let text = serde_json::to_value(&resource.contents[0]).unwrap();
        assert!(text["text"].as_str().unwrap().contains(&word));
        let resources = client
            .list_resources(Some(PaginatedRequestParams::default()))
            .await
            .unwrap();
        assert!(
            resources
                .resources
                .iter()
                .any(|r| r.uri == format!("notes://{id}"))
        );
        let templates = client
            .list_resource_templates(Some(PaginatedRequestParams::default()))
            .await
            .unwrap();
        assert_eq!(templates.resource_templates[0].uri_template, "notes://{id}");

        let deleted = call_ok(&client, "delete_note", json!({"id": id})).await;
        assert_eq!(deleted["deleted"], true);
        assert!(call_is_tool_error(&client, "get_note", json!({"id": id})).await);
        let after = call_ok(&client, "search_notes", json!({"query": word})).await;
        assert!(after["results"].as_array().unwrap().is_empty());
        client.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_notes() {
    let warden = Warden::start_config(UNCONFIRMED_DELETES);
    let (_, key_a) = warden.add_key("acme", "alice", "write");
    let (_, key_b) = warden.add_key("globex", "bob", "admin");
    let alice = connect(&warden.url, &key_a, Era::Legacy).await.unwrap();
    let secret = call_ok(
        &alice,
        "create_note",
        json!({"title": "Merger", "body": "codename bluejay", "tags": ["deals"]}),
    )
    .await;
    let id = secret["id"].as_str().unwrap().to_owned();

    for era in ERAS {
        let bob = connect(&warden.url, &key_b, era).await.unwrap();
        let search = call_ok(&bob, "search_notes", json!({"query": "bluejay"})).await;
        assert!(
            search["results"].as_array().unwrap().is_empty(),
            "{era:?}: search leaked"
        );
        assert!(
            call_is_tool_error(&bob, "get_note", json!({"id": id})).await,
            "{era:?}: get leaked"
        );
        let listed = call_ok(&bob, "list_notes", json!({})).await;
        assert!(
            listed["notes"].as_array().unwrap().is_empty(),
            "{era:?}: list leaked"
        );
        let tagged = call_ok(&bob, "list_notes", json!({"tag": "deals"})).await;
        assert!(
            tagged["notes"].as_array().unwrap().is_empty(),
            "{era:?}: tag list leaked"
        );
        let resources = bob
            .list_resources(Some(PaginatedRequestParams::default()))
            .await
            .unwrap();
        assert!(
            resources.resources.is_empty(),
            "{era:?}: resources/list leaked"
        );
        assert!(
            bob.read_resource(ReadResourceRequestParams::new(format!("notes://{id}")))
                .await
                .is_err(),
            "{era:?}: resources/read leaked"
        );
        assert!(call_is_tool_error(&bob, "update_note", json!({"id": id, "body": "pwned"})).await);
        assert!(call_is_tool_error(&bob, "delete_note", json!({"id": id})).await);
        bob.cancel().await.unwrap();
    }
    let still = call_ok(&alice, "get_note", json!({"id": id})).await;
    assert_eq!(
        still["body"], "codename bluejay",
        "the other tenant changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_once() {
    let warden = Warden::start();
    let (id, key) = warden.add_key("acme", "laptop", "write");
    let legacy = connect(&warden.url, &key, Era::Legacy).await.unwrap();
    let modern = connect(&warden.url, &key, Era::Modern).await.unwrap();
    call_ok(&legacy, "list_notes", json!({})).await;
    call_ok(&modern, "list_notes", json!({})).await;

    warden.revoke(&id);

    // Open sessions and stateless clients alike are refused on their very next call.
    assert!(call(&legacy, "list_notes", json!({})).await.is_err());
    assert!(call(&modern, "list_notes", json!({})).await.is_err());
    for era in ERAS {
        assert!(
            connect(&warden.url, &key, era).await.is_err(),
            "{era:?}: reconnect with a revoked key"
        );
    }
    let listed = String::from_utf8(warden.cli(&["keys", "list"]).stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{listed}"
    );
    assert!(!listed.contains(&key), "keys list never shows a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_sees_and_calls_only_read_tools() {
    let warden = Warden::start();
    let (_, reader) = warden.add_key("default", "viewer", "read");
    for era in ERAS {
        let client = connect(&warden.url, &reader, era).await.unwrap();
        let mut names: Vec<_> = client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["get_note", "list_notes", "search_notes"]);
        let refused = call(&client, "create_note", json!({"title": "t", "body": "b"}))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("Unknown tool"),
            "{era:?}: {refused}"
        );
        client.cancel().await.unwrap();
    }
}
