//! API keys on each backend, the same suite (SQLite files, a real PostgreSQL): minting,
//! authenticating, revoking, rotating with a grace period, expiry; on PostgreSQL two
//! replicas share keys and a revocation on one holds on the other at once, and the
//! database alone (without the server secret) accepts nothing.

#![allow(clippy::unwrap_used)]

mod support {
    pub mod postgres;
}

use std::sync::Arc;
use support::postgres::TestDb;
use warden_store::postgres::PgKeys;
use warden_store::{DataDir, KeyOptions, KeyStore, Keys, Scope, SqliteKeys, now_unix};

const SECRET: [u8; 32] = [7; 32];

async fn suite(keys: &dyn Keys) {
    assert!(!keys.has_keys().await.unwrap());
    let labels: std::collections::BTreeMap<String, String> =
        [("team".to_owned(), "payments".to_owned())].into();
    let options = KeyOptions {
        expires_at: None,
        rpm: Some(30),
        labels: labels.clone(),
    };
    let alice = keys
        .add("acme", "alice", Scope::Write, options)
        .await
        .unwrap();
    assert!(keys.has_keys().await.unwrap());
    let principal = keys.authenticate(&alice.key).await.unwrap().unwrap();
    assert_eq!(
        (principal.tenant.as_str(), principal.scope, principal.rpm),
        ("acme", Scope::Write, Some(30))
    );
    assert_eq!(principal.key_id, alice.record.id);
    // What policies read of a key: its name and labels.
    assert_eq!(
        (principal.name.as_str(), &principal.labels),
        ("alice", &labels)
    );
    let too_many = KeyOptions {
        labels: (0..33).map(|n| (format!("l{n}"), "v".to_owned())).collect(),
        ..KeyOptions::default()
    };
    assert!(keys.add("acme", "x", Scope::Read, too_many).await.is_err());
    let control = KeyOptions {
        labels: [("team".to_owned(), "a\nb".to_owned())].into(),
        ..KeyOptions::default()
    };
    assert!(keys.add("acme", "x", Scope::Read, control).await.is_err());
    let forged = format!("{}x", &alice.key[..alice.key.len() - 1]);
    assert!(keys.authenticate(&forged).await.unwrap().is_none());
    assert!(keys.authenticate("not-a-key").await.unwrap().is_none());
    assert!(
        keys.add("bad tenant!", "x", Scope::Read, KeyOptions::default())
            .await
            .is_err()
    );

    // Rotation: the new key works, the old one for its grace period only.
    let rotated = keys.rotate(&alice.record.id, 3600).await.unwrap().unwrap();
    assert_eq!(rotated.record.tenant, "acme");
    assert_eq!(rotated.record.options.labels, labels, "labels carry over");
    assert!(keys.authenticate(&rotated.key).await.unwrap().is_some());
    assert!(keys.authenticate(&alice.key).await.unwrap().is_some());
    let again = keys.rotate(&rotated.record.id, 0).await.unwrap().unwrap();
    assert!(keys.authenticate(&rotated.key).await.unwrap().is_none());
    assert!(keys.authenticate(&again.key).await.unwrap().is_some());
    assert!(keys.rotate("key_nope", 10).await.unwrap().is_none());

    // Revocation and expiry.
    assert!(keys.revoke(&again.record.id).await.unwrap());
    assert!(!keys.revoke(&again.record.id).await.unwrap());
    assert!(keys.authenticate(&again.key).await.unwrap().is_none());
    let expired = keys
        .add(
            "acme",
            "old",
            Scope::Read,
            KeyOptions {
                expires_at: Some(now_unix() - 1),
                ..KeyOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(keys.authenticate(&expired.key).await.unwrap().is_none());

    let listed = keys.list().await.unwrap();
    assert_eq!(listed.len(), 4);
    let now = now_unix();
    assert!(listed.iter().any(|k| k.status(now).starts_with("revoked")));
    assert!(listed.iter().any(|k| k.status(now).starts_with("expired")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_behave_the_same_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(&DataDir::open(dir.path()).unwrap()).unwrap();
    suite(&SqliteKeys::new(Arc::new(store))).await;

    let db = TestDb::create();
    suite(&PgKeys::new(db.migrated_pool().await, SECRET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_keys_and_the_database_alone_accepts_nothing() {
    let db = TestDb::create();
    let one = PgKeys::new(db.migrated_pool().await, SECRET);
    let two = PgKeys::new(db.migrated_pool().await, SECRET);
    let key = one
        .add("acme", "laptop", Scope::Read, KeyOptions::default())
        .await
        .unwrap();
    assert!(two.authenticate(&key.key).await.unwrap().is_some());
    assert!(one.revoke(&key.record.id).await.unwrap());
    assert!(two.authenticate(&key.key).await.unwrap().is_none());

    let other = one
        .add("acme", "phone", Scope::Read, KeyOptions::default())
        .await
        .unwrap();
    // Another secret (a dump restored elsewhere) accepts nothing.
    let stranger = PgKeys::new(db.migrated_pool().await, [8; 32]);
    assert!(stranger.authenticate(&other.key).await.unwrap().is_none());
    // Nothing in the table is the key.
    let (admin, connection) = tokio_postgres::connect(&db.admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let dump: String = admin
        .query_one("SELECT string_agg(k::text, ' ') FROM warden.keys k", &[])
        .await
        .unwrap()
        .get(0);
    let random_part = &other.key[4..];
    assert!(!dump.contains(random_part), "{dump}");
}
