//! The PostgreSQL store on a real server (see `support/postgres.rs` for which): migrations
//! under concurrency, row-level security, and the runtime role's least privilege.

#![allow(clippy::unwrap_used)]

mod support {
    pub mod postgres;
}

use std::time::Duration;

use support::postgres::TestDb;
use tokio_postgres::NoTls;
use warden_store::postgres::{self, Migrated, PgSettings, Postgres, SCHEMA_VERSION};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("SET search_path = warden")
        .await
        .unwrap();
    client
}

/// What the server said.
fn message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
}

async fn migrate(db: &TestDb) -> Migrated {
    postgres::migrate(&db.owner_url(), Some(&db.runtime), TIMEOUT)
        .await
        .unwrap()
}

fn settings(db: &TestDb) -> PgSettings {
    PgSettings {
        url: db.runtime_url(),
        pool_size: 4,
        statement_timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
    }
}

/// Three replicas starting at once on an empty database all come up: the advisory lock
/// lets one apply each migration, and the others find it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_migrators_at_once_apply_each_migration_once() {
    let db = TestDb::create();
    let store = Postgres::new(&settings(&db)).unwrap();
    let before = store.check_schema().await.unwrap_err().to_string();
    assert!(before.contains("warden store migrate"), "{before}");

    let url = db.owner_url();
    let runs = (0..3).map(|_| {
        let url = url.clone();
        let runtime = db.runtime.clone();
        tokio::spawn(async move { postgres::migrate(&url, Some(&runtime), TIMEOUT).await })
    });
    let mut outcomes: Vec<Migrated> = Vec::new();
    for run in runs {
        outcomes.push(run.await.unwrap().unwrap());
    }
    outcomes.sort_by_key(|m| m.from);
    assert_eq!(
        outcomes,
        vec![
            Migrated {
                from: 0,
                to: SCHEMA_VERSION
            },
            Migrated {
                from: SCHEMA_VERSION,
                to: SCHEMA_VERSION
            },
            Migrated {
                from: SCHEMA_VERSION,
                to: SCHEMA_VERSION
            },
        ]
    );
    let admin = connect(&db.admin_url()).await;
    let applied: i64 = admin
        .query_one("SELECT count(*) FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, i64::from(SCHEMA_VERSION));
    store.check_schema().await.unwrap();
    // The owner (or a superuser) is refused as Warden's role: the policies would not
    // bind it.
    for url in [db.owner_url(), db.admin_url()] {
        let unbound = Postgres::new(&PgSettings {
            url,
            ..settings(&db)
        })
        .unwrap();
        let refused = unbound.check_schema().await.unwrap_err().to_string();
        assert!(
            refused.contains("row-level security would not bind it"),
            "{refused}"
        );
    }
}

/// Raw SQL without a tenant filter, as the runtime role with tenant B set, sees none of
/// tenant A's rows; with no tenant set it sees nothing; it cannot write a row for
/// another tenant.
#[tokio::test]
async fn row_level_security_confines_a_statement_that_forgets_its_tenant() {
    let db = TestDb::create();
    migrate(&db).await;
    let mut runtime = connect(&db.runtime_url()).await;
    let insert = "INSERT INTO notes (id, tenant, title, body, tags, created_at, updated_at)
                  VALUES ($1, $2, 'a title', 'a body', ARRAY['x'], 0, 0)";
    let tx = runtime.transaction().await.unwrap();
    tx.execute("SELECT set_config('warden.tenant', 'alpha', true)", &[])
        .await
        .unwrap();
    tx.execute(insert, &[&"n1", &"alpha"]).await.unwrap();
    let refused = tx.execute(insert, &[&"n2", &"beta"]).await.unwrap_err();
    let refused = message(&refused);
    assert!(refused.contains("row-level security"), "{refused}");
    drop(tx);
    let tx = runtime.transaction().await.unwrap();
    tx.execute("SELECT set_config('warden.tenant', 'alpha', true)", &[])
        .await
        .unwrap();
    tx.execute(insert, &[&"n1", &"alpha"]).await.unwrap();
    tx.commit().await.unwrap();

    let count = |rows: Vec<tokio_postgres::Row>| rows.len();
    let tx = runtime.transaction().await.unwrap();
    tx.execute("SELECT set_config('warden.tenant', 'beta', true)", &[])
        .await
        .unwrap();
    assert_eq!(
        count(tx.query("SELECT * FROM notes", &[]).await.unwrap()),
        0
    );
    let updated = tx
        .execute("UPDATE notes SET title = 'taken'", &[])
        .await
        .unwrap();
    assert_eq!(updated, 0);
    assert_eq!(tx.execute("DELETE FROM notes", &[]).await.unwrap(), 0);
    tx.commit().await.unwrap();
    // Outside any tenant's transaction: nothing at all (the setting ended with it).
    assert_eq!(
        count(runtime.query("SELECT * FROM notes", &[]).await.unwrap()),
        0
    );
    // The search function (which runs as the owner, for the GIN index) confines itself
    // to the transaction's tenant too, and finds nothing without one.
    let search = "SELECT id FROM search_notes('title', 1000, 10, '{0.1,0.25,0.5,1.0}')";
    assert_eq!(count(runtime.query(search, &[]).await.unwrap()), 0);
    // A statement that names its tenant for itself (as Warden's search does) leaves
    // nothing behind on its connection.
    let named = "SELECT s.id FROM (SELECT set_config('warden.tenant', 'alpha', true) AS t) n,
                 LATERAL search_notes('title' || left(n.t, 0), 1000, 10, '{0.1,0.25,0.5,1.0}') s";
    assert_eq!(count(runtime.query(named, &[]).await.unwrap()), 1);
    let left: Option<String> = runtime
        .query_one(
            "SELECT nullif(current_setting('warden.tenant', true), '')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, None);
    assert_eq!(count(runtime.query(search, &[]).await.unwrap()), 0);
    let tx = runtime.transaction().await.unwrap();
    tx.execute("SELECT set_config('warden.tenant', 'beta', true)", &[])
        .await
        .unwrap();
    assert_eq!(count(tx.query(search, &[]).await.unwrap()), 0);
    tx.execute("SELECT set_config('warden.tenant', 'alpha', true)", &[])
        .await
        .unwrap();
    assert_eq!(count(tx.query(search, &[]).await.unwrap()), 1);
    drop(tx);
    // The row is there, untouched, for its own tenant.
    let tx = runtime.transaction().await.unwrap();
    tx.execute("SELECT set_config('warden.tenant', 'alpha', true)", &[])
        .await
        .unwrap();
    let title: String = tx
        .query_one("SELECT title FROM notes WHERE id = 'n1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "a title");
}

/// The runtime role owns nothing: it cannot drop, alter or create tables or functions,
/// nor rewrite the schema version.
#[tokio::test]
async fn the_runtime_role_cannot_run_ddl() {
    let db = TestDb::create();
    migrate(&db).await;
    let runtime = connect(&db.runtime_url()).await;
    for statement in [
        "DROP TABLE notes",
        "ALTER TABLE notes ADD COLUMN stolen text",
        "ALTER TABLE notes DISABLE ROW LEVEL SECURITY",
        "CREATE TABLE warden.stash (x text)",
        "CREATE TABLE public.stash (x text)",
        "DELETE FROM schema_version",
        "TRUNCATE notes",
        "CREATE OR REPLACE FUNCTION search_notes(words text, candidates bigint, hits bigint, weights float4[]) RETURNS TABLE (id text, title text, body text, rank float8) LANGUAGE sql AS 'SELECT id, title, body, 1.0::float8 FROM notes'",
        "ALTER FUNCTION search_notes SECURITY INVOKER",
    ] {
        let text = message(&runtime.batch_execute(statement).await.unwrap_err());
        assert!(
            text.contains("permission denied") || text.contains("must be owner"),
            "{statement}: {text}"
        );
    }
}

/// A certificate authority and a server certificate it signed for `localhost` and
/// 127.0.0.1: (CA PEM, server certificate PEM, server key PEM).
fn authority_and_server() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "warden test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    (ca_cert.pem(), server.pem(), server_key.serialize_pem())
}

/// `sslmode=verify-full` with the server's CA: Warden's connections are encrypted
/// (the server says so) and the store works; with another CA, or none, it refuses to
/// connect rather than trust an unverified server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgresql_verifies_the_server() {
    let (ca, certificate, key) = authority_and_server();
    let (_server, db) = tokio::task::spawn_blocking(move || {
        let server = support::postgres::OwnServer::start_tls(&certificate, &key);
        let db = server.database();
        (server, db)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (other_ca, _, _) = authority_and_server();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other_ca).unwrap();

    let with_tls = |url: String, roots: &std::path::Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            url.replace("127.0.0.1", "localhost"),
            roots.display()
        )
    };
    postgres::migrate(
        &with_tls(db.owner_url(), &ca_file),
        Some(&db.runtime),
        TIMEOUT,
    )
    .await
    .unwrap();
    let pool = Postgres::new(&PgSettings {
        url: with_tls(db.runtime_url(), &ca_file),
        pool_size: 2,
        statement_timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
    })
    .unwrap();
    pool.check_schema().await.unwrap();
    assert!(pool.is_encrypted().await.unwrap());

    for url in [
        with_tls(db.runtime_url(), &other_file),
        // libpq's `require` would accept any certificate; Warden verifies it still.
        format!(
            "{}?sslmode=require&sslrootcert={}",
            db.runtime_url(),
            other_file.display()
        ),
    ] {
        let refused = Postgres::new(&PgSettings {
            url,
            pool_size: 1,
            statement_timeout: TIMEOUT,
            connect_timeout: TIMEOUT,
        })
        .unwrap()
        .check_schema()
        .await
        .unwrap_err();
        assert!(refused.is_unavailable(), "{refused}");
        assert!(
            refused.to_string().to_lowercase().contains("certificate"),
            "{refused}"
        );
    }
}
