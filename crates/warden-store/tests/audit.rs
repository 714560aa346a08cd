//! The audit trail on PostgreSQL (see `support/postgres.rs` for which server): each
//! replica keeps its own chain in the shared table; `verify` checks every chain and
//! names an edited row or a gap; retention keeps the chains verifiable; concurrent
//! writers of one replica never fork its chain.

#![allow(clippy::unwrap_used)]

mod support {
    pub mod postgres;
}

use support::postgres::TestDb;
use warden_store::Audit as _;
use warden_store::postgres::PgAudit;
use warden_store::{AuditRecord, Verdict};

fn record(n: i64) -> AuditRecord {
    AuditRecord {
        at_ms: n * 1000,
        tenant: "acme".into(),
        principal: "key_1".into(),
        method: "tools/call".into(),
        target: Some(format!("tool{n}")),
        decision: "allowed".into(),
        outcome: "ok".into(),
        ..AuditRecord::default()
    }
}

async fn admin(db: &TestDb, sql: &str) {
    let (client, connection) = tokio_postgres::connect(&db.admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_keeps_its_own_verifiable_chain() {
    let db = TestDb::create();
    let pool = db.migrated_pool().await;
    let (one, two) = (PgAudit::new(pool.clone(), "one"), PgAudit::new(pool, "two"));
    // Interleaved, as replicas write.
    one.append(&[record(1), record(2)]).await.unwrap();
    two.append(&[record(3)]).await.unwrap();
    one.append(&[record(4)]).await.unwrap();
    two.append(&[record(5), record(6)]).await.unwrap();
    assert_eq!(one.count().await.unwrap(), 6);
    assert_eq!(
        one.verify().await.unwrap(),
        vec![
            ("one".to_owned(), Verdict::Intact { rows: 3 }),
            ("two".to_owned(), Verdict::Intact { rows: 3 }),
        ]
    );

    // Retention cuts both chains; each still verifies from where it was cut, and goes on.
    assert_eq!(one.prune(3_500).await.unwrap(), 3);
    one.append(&[record(7)]).await.unwrap();
    assert_eq!(
        two.verify().await.unwrap(),
        vec![
            ("one".to_owned(), Verdict::Intact { rows: 2 }),
            ("two".to_owned(), Verdict::Intact { rows: 2 }),
        ]
    );

    // An edited row, and a removed one, are named in their own chain only.
    admin(
        &db,
        "UPDATE warden.audit SET outcome = 'refused' WHERE replica = 'one' AND seq = 4",
    )
    .await;
    admin(
        &db,
        "DELETE FROM warden.audit WHERE replica = 'two' AND seq = 2",
    )
    .await;
    assert_eq!(
        one.verify().await.unwrap(),
        vec![
            ("one".to_owned(), Verdict::Edited { id: 4 }),
            ("two".to_owned(), Verdict::Missing { before_id: 3 }),
        ]
    );
}

/// Two writers of one replica at once (the server and an admin command) take turns:
/// the chain does not fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_replica_do_not_fork_its_chain() {
    let db = TestDb::create();
    let pool = db.migrated_pool().await;
    let writers = (0..4).map(|w| {
        let audit = PgAudit::new(pool.clone(), "solo");
        tokio::spawn(async move {
            for n in 0..10 {
                audit.append(&[record(w * 100 + n)]).await.unwrap();
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let audit = PgAudit::new(pool, "solo");
    assert_eq!(
        audit.verify().await.unwrap(),
        vec![("solo".to_owned(), Verdict::Intact { rows: 40 })]
    );
}
