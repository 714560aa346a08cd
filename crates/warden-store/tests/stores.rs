//! Held calls, pins, daily costs and audit queries behave alike on SQLite and on
//! PostgreSQL (see `support/postgres.rs` for which server); on PostgreSQL, what
//! replicas share (held calls, pins) and what each keeps as its own (costs, the calls
//! it abandoned) is checked with two replicas on one database.

#![allow(clippy::unwrap_used)]

mod support {
    pub mod postgres;
}

use support::postgres::TestDb;
use warden_store::{AuditFilter, AuditRecord, DataDir, PinState, Sighting, Stores, now_unix};

const SECRET: [u8; 32] = [7; 32];

fn hash_of(definition: &str) -> String {
    format!("hash of {definition}")
}

fn sighting(tool: &str, definition: &str, suspicion: Option<&str>) -> Sighting {
    Sighting {
        tool: tool.into(),
        hash: hash_of(definition),
        definition: definition.into(),
        suspicion: suspicion.map(str::to_owned),
        legacy_hash: "legacy".into(),
    }
}

async fn check(stores: &Stores, seen: Sighting) -> PinState {
    stores.pins.check_all(&[seen]).await.unwrap().remove(0)
}

/// What every backend does the same way.
async fn the_same_on_every_backend(stores: &Stores) {
    // Held calls: decided once, run once, expired when old.
    let approvals = &stores.approvals;
    let id = approvals
        .hold("acme", "key_1", "delete_note", "{\"id\":\"n_1\"}")
        .await
        .unwrap();
    assert_eq!(approvals.pending().await.unwrap().len(), 1);
    assert!(!approvals.mark_done(&id).await.unwrap());
    let decided = approvals.decide(&id, true).await.unwrap().unwrap();
    assert_eq!(
        (decided.tool.as_str(), decided.tenant.as_str()),
        ("delete_note", "acme")
    );
    assert!(approvals.decide(&id, false).await.unwrap().is_none());
    assert_eq!(
        approvals.status(&id).await.unwrap().as_deref(),
        Some("approved")
    );
    assert!(approvals.mark_done(&id).await.unwrap());
    assert!(!approvals.mark_done(&id).await.unwrap());
    let old = approvals
        .hold("globex", "key_2", "delete_note", "{}")
        .await
        .unwrap();
    let expired = approvals.expire_before(now_unix() + 1).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, old);
    assert_eq!(
        approvals.status(&old).await.unwrap().as_deref(),
        Some("expired")
    );
    assert!(approvals.status("apr_unknown").await.unwrap().is_none());

    // Pins: a first sight is pinned, a change waits for approval by hash.
    assert_eq!(
        check(stores, sighting("t", "{d1}", None)).await,
        PinState::Accepted
    );
    assert_eq!(
        check(stores, sighting("t", "{d1}", None)).await,
        PinState::Accepted
    );
    assert!(matches!(
        check(stores, sighting("t", "{d2}", None)).await,
        PinState::Withheld { new: true, .. }
    ));
    assert!(matches!(
        check(stores, sighting("t", "{d2}", None)).await,
        PinState::Withheld { new: false, .. }
    ));
    let waiting = stores.pins.waiting().await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].pending.as_deref(), Some("{d2}"));
    assert!(
        !stores
            .pins
            .approve("t", "wrong hash", hash_of)
            .await
            .unwrap()
    );
    assert!(
        stores
            .pins
            .approve("t", &hash_of("{d2}"), hash_of)
            .await
            .unwrap()
    );
    assert_eq!(
        check(stores, sighting("t", "{d2}", None)).await,
        PinState::Accepted
    );
    assert_eq!(
        stores
            .pins
            .get("t")
            .await
            .unwrap()
            .unwrap()
            .definition
            .as_deref(),
        Some("{d2}")
    );
    // A suspicious first sight waits too, and an approval accepts it.
    assert!(matches!(
        check(stores, sighting("u", "{s}", Some("it addresses the model"))).await,
        PinState::Withheld { .. }
    ));
    assert!(
        stores
            .pins
            .approve("u", &hash_of("{s}"), hash_of)
            .await
            .unwrap()
    );
    assert!(stores.pins.get("nothing").await.unwrap().is_none());

    // Daily costs: totals only rise; earlier days go.
    let costs = &stores.costs;
    costs.record(100, &[("acme".into(), 5)]).await.unwrap();
    costs
        .record(100, &[("acme".into(), 3), ("beta".into(), 1)])
        .await
        .unwrap();
    let mut day = costs.day(100).await.unwrap();
    day.sort();
    assert_eq!(day, [("acme".into(), 5), ("beta".into(), 1)]);
    costs.record(101, &[("acme".into(), 2)]).await.unwrap();
    assert!(costs.day(100).await.unwrap().is_empty());

    // Audit queries: filtered, newest `limit`, oldest first, paged by position.
    let record = |tenant: &str, n: i64| AuditRecord {
        at_ms: n,
        tenant: tenant.into(),
        principal: "key_1".into(),
        method: "tools/call".into(),
        decision: "allowed".into(),
        outcome: "ok".into(),
        ..AuditRecord::default()
    };
    let records = [record("acme", 1), record("beta", 2), record("acme", 3)];
    stores.audit.append(&records).await.unwrap();
    let acme = AuditFilter {
        tenant: Some("acme".into()),
        limit: 10,
        ..AuditFilter::default()
    };
    let found = stores.audit.query(&acme).await.unwrap();
    assert_eq!(
        found.iter().map(|(_, r)| r.at_ms).collect::<Vec<_>>(),
        [1, 3]
    );
    let after = AuditFilter {
        after_id: Some(found[0].0),
        ..acme.clone()
    };
    let later = stores.audit.query(&after).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].1.at_ms, 3);
    // Paging back (the console's older pages) and a time window.
    let before = AuditFilter {
        before_id: Some(found[1].0),
        ..acme.clone()
    };
    let earlier = stores.audit.query(&before).await.unwrap();
    assert_eq!(
        earlier.iter().map(|(_, r)| r.at_ms).collect::<Vec<_>>(),
        [1]
    );
    let window = AuditFilter {
        since_ms: Some(2),
        until_ms: Some(3),
        limit: 10,
        ..AuditFilter::default()
    };
    let inside = stores.audit.query(&window).await.unwrap();
    assert_eq!(
        inside
            .iter()
            .map(|(_, r)| r.tenant.as_str())
            .collect::<Vec<_>>(),
        ["beta"]
    );
    assert_eq!(stores.audit.count().await.unwrap(), 3);
}

#[tokio::test]
async fn sqlite_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let stores = Stores::sqlite(&DataDir::open(tmp.path()).unwrap()).unwrap();
    the_same_on_every_backend(&stores).await;
    // One process holds every call: at start, every pending one was abandoned.
    let id = stores.approvals.hold("acme", "k", "t", "{}").await.unwrap();
    let abandoned = stores.approvals.expire_abandoned().await.unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].id, id);
}

#[tokio::test]
async fn postgres_stores_shared_by_two_replicas() {
    let db = TestDb::create();
    let pool = db.migrated_pool().await;
    let one = Stores::postgres(&pool, SECRET, "r1");
    let two = Stores::postgres(&pool, SECRET, "r2");
    the_same_on_every_backend(&one).await;

    // Held calls are seen by every replica; a replica starting expires only its own.
    let mine = one.approvals.hold("acme", "k", "t", "{}").await.unwrap();
    let theirs = two.approvals.hold("acme", "k", "t", "{}").await.unwrap();
    assert_eq!(two.approvals.pending().await.unwrap().len(), 2);
    let abandoned = two.approvals.expire_abandoned().await.unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].id, theirs);
    assert_eq!(
        one.approvals.status(&mine).await.unwrap().as_deref(),
        Some("pending")
    );
    assert!(two.approvals.decide(&mine, false).await.unwrap().is_some());

    // Pins are shared: a definition pinned by one is pinned for the other; a check
    // that changes nothing writes nothing (replicas watching the version stay asleep);
    // an approval on one changes the version every replica watches.
    assert_eq!(
        check(&two, sighting("t", "{d2}", None)).await,
        PinState::Accepted
    );
    let version = two.pins.version().await.unwrap();
    assert!(matches!(
        check(&one, sighting("t", "{d3}", None)).await,
        PinState::Withheld { new: true, .. }
    ));
    let withheld = two.pins.version().await.unwrap();
    assert_ne!(withheld, version);
    for replica in [&one, &two] {
        assert!(matches!(
            check(replica, sighting("t", "{d3}", None)).await,
            PinState::Withheld { new: false, .. }
        ));
        assert_eq!(
            check(replica, sighting("v", "{v}", None)).await,
            PinState::Accepted
        );
    }
    let settled = two.pins.version().await.unwrap();
    assert_eq!(
        check(&one, sighting("v", "{v}", None)).await,
        PinState::Accepted
    );
    assert_eq!(two.pins.version().await.unwrap(), settled);
    assert!(
        two.pins
            .approve("t", &hash_of("{d3}"), hash_of)
            .await
            .unwrap()
    );
    assert_ne!(one.pins.version().await.unwrap(), settled);
    assert_eq!(
        check(&one, sighting("t", "{d3}", None)).await,
        PinState::Accepted
    );

    // Two replicas seeing a new tool at the same moment pin it once.
    let new_tool = [sighting("w", "{w}", None)];
    let (a, b) = tokio::join!(one.pins.check_all(&new_tool), two.pins.check_all(&new_tool));
    assert_eq!(a.unwrap(), [PinState::Accepted]);
    assert_eq!(b.unwrap(), [PinState::Accepted]);

    // Costs are each replica's own: neither overwrites the other's total.
    one.costs.record(200, &[("acme".into(), 5)]).await.unwrap();
    two.costs.record(200, &[("acme".into(), 2)]).await.unwrap();
    assert_eq!(one.costs.day(200).await.unwrap(), [("acme".into(), 5)]);
    assert_eq!(two.costs.day(200).await.unwrap(), [("acme".into(), 2)]);

    // Audit positions run across replicas, in the order rows were written.
    let row = |n| AuditRecord {
        at_ms: n,
        tenant: "zeta".into(),
        decision: "allowed".into(),
        outcome: "ok".into(),
        ..AuditRecord::default()
    };
    one.audit.append(&[row(10)]).await.unwrap();
    two.audit.append(&[row(11)]).await.unwrap();
    let zeta = AuditFilter {
        tenant: Some("zeta".into()),
        limit: 10,
        ..AuditFilter::default()
    };
    let rows = two.audit.query(&zeta).await.unwrap();
    assert_eq!(
        rows.iter().map(|(_, r)| r.at_ms).collect::<Vec<_>>(),
        [10, 11]
    );
    // A NUL a client chose (PostgreSQL text cannot hold one) does not cost the batch.
    let poisoned = AuditRecord {
        target: Some("to\0ol".into()),
        ..row(12)
    };
    one.audit.append(&[poisoned, row(13)]).await.unwrap();
    assert_eq!(two.audit.query(&zeta).await.unwrap().len(), 4);
    let chains = one.audit.verify().await.unwrap();
    assert!(
        chains
            .iter()
            .all(|(_, verdict)| matches!(verdict, warden_store::Verdict::Intact { .. })),
        "{chains:?}"
    );
    assert_eq!(
        chains
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["r1", "r2"]
    );
}

/// `warden store copy`: everything a data directory holds reaches PostgreSQL and works
/// there (the key with the directory's secret, the note with its version, the pin still
/// waiting, the held call, the day's costs, the audit chain with its retention anchor);
/// a second copy adds nothing; another chain already under the name is refused.
#[tokio::test]
async fn a_data_directory_copies_into_postgres_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let sqlite = Stores::sqlite(&dir).unwrap();
    let key = sqlite
        .keys
        .add(
            "acme",
            "laptop",
            warden_store::Scope::Write,
            Default::default(),
        )
        .await
        .unwrap()
        .key;
    let note = sqlite
        .notes
        .create(
            "acme",
            Some("key_laptop"),
            "moved",
            "first body",
            &["m".to_owned()],
        )
        .await
        .unwrap();
    let patch = warden_store::notes::NotePatch {
        body: Some("second body".into()),
        ..Default::default()
    };
    sqlite
        .notes
        .update("acme", "key_laptop", &note.id, &patch)
        .await
        .unwrap();
    assert_eq!(
        check(&sqlite, sighting("t", "{d1}", None)).await,
        PinState::Accepted
    );
    assert!(matches!(
        check(&sqlite, sighting("t", "{d2}", None)).await,
        PinState::Withheld { .. }
    ));
    let held = sqlite
        .approvals
        .hold("acme", "key_1", "delete_note", "{}")
        .await
        .unwrap();
    sqlite
        .costs
        .record(42, &[("acme".into(), 7)])
        .await
        .unwrap();
    let records: Vec<AuditRecord> = (1..=5)
        .map(|at_ms| AuditRecord {
            at_ms,
            ..AuditRecord::action("operator:test", "keys/add", "acme", "key_1", "ok")
        })
        .collect();
    sqlite.audit.append(&records).await.unwrap();
    assert_eq!(sqlite.audit.prune(3).await.unwrap(), 2);
    drop(sqlite);

    let db = TestDb::create();
    let pool = db.migrated_pool().await;
    let report = warden_store::copy::sqlite_to_postgres(tmp.path(), &pool, "old")
        .await
        .unwrap();
    let counts: Vec<(&str, u64, u64)> = report
        .copied
        .iter()
        .map(|c| (c.what, c.found, c.added))
        .collect();
    assert_eq!(
        counts,
        [
            ("keys", 1, 1),
            ("notes", 1, 1),
            ("note versions", 1, 1),
            ("pins", 1, 1),
            ("held calls", 1, 1),
            ("daily costs", 1, 1),
            ("audit records", 3, 3),
        ]
    );
    assert_eq!(report.chain, warden_store::Verdict::Intact { rows: 3 });

    let secret = dir.secret("server.secret").unwrap();
    let pg = Stores::postgres(&pool, secret, "old");
    let principal = pg.keys.authenticate(&key).await.unwrap().unwrap();
    assert_eq!(principal.tenant, "acme");
    let copied = pg.notes.get("acme", &note.id).await.unwrap().unwrap();
    assert_eq!(
        (
            copied.body.as_str(),
            copied.tags.as_slice(),
            copied.author.as_deref()
        ),
        ("second body", &["m".to_owned()][..], Some("key_laptop")),
        "the note, its tags and its author are copied"
    );
    assert!(pg.notes.get("globex", &note.id).await.unwrap().is_none());
    pg.notes.restore("acme", &note.id).await.unwrap();
    assert_eq!(
        pg.notes.get("acme", &note.id).await.unwrap().unwrap().body,
        "first body"
    );
    let pin = pg.pins.get("t").await.unwrap().unwrap();
    assert_eq!(
        (pin.definition.as_deref(), pin.pending.as_deref()),
        (Some("{d1}"), Some("{d2}"))
    );
    assert_eq!(
        pg.approvals.status(&held).await.unwrap().as_deref(),
        Some("pending")
    );
    assert_eq!(pg.costs.day(42).await.unwrap(), [("acme".to_owned(), 7)]);
    // The replica of the copy's name continues its chain.
    pg.audit.append(&records[..1]).await.unwrap();
    assert_eq!(
        pg.audit.verify().await.unwrap(),
        [("old".to_owned(), warden_store::Verdict::Intact { rows: 4 })]
    );

    // Again: everything is there already (the restore above is kept, not overwritten).
    let again = warden_store::copy::sqlite_to_postgres(tmp.path(), &pool, "old")
        .await
        .unwrap();
    assert!(again.copied.iter().all(|c| c.added == 0), "{again:?}");
    assert_eq!(
        pg.notes.get("acme", &note.id).await.unwrap().unwrap().body,
        "first body"
    );

    // A name whose chain in the database is another's is refused, not merged.
    let clash = Stores::postgres(&pool, secret, "clash");
    clash.audit.append(&records[3..]).await.unwrap();
    let refused = warden_store::copy::sqlite_to_postgres(tmp.path(), &pool, "clash")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("--replica"), "{refused}");
}
