//! The schema, in versions applied in order, each once, under an advisory lock: three
//! replicas starting at once on an empty database apply every migration exactly once.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::url::Transport;
use crate::{Result, StoreError};

/// The migrations; version N is `MIGRATIONS[N - 1]`. Each runs in its own transaction
/// with `search_path = warden`. Never edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the notes, full-text searchable, and their earlier versions.
    "
    -- array_to_string is immutable for text[]; PostgreSQL only cannot prove it.
    CREATE FUNCTION tags_text(text[]) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN array_to_string($1, ' ');
    CREATE TABLE notes (
        id         text PRIMARY KEY,
        tenant     text NOT NULL,
        title      text NOT NULL,
        body       text NOT NULL,
        tags       text[] NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        -- Newest first is descending order; listings page by it.
        seq        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        -- 'simple' keeps every word as written (lowercased), like FTS5's unicode61.
        -- Weights: title A, tags B, body C (ranked 1 : 0.5 : 0.25, as SQLite's 4 : 2 : 1).
        search     tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('simple', title), 'A')
            || setweight(to_tsvector('simple', tags_text(tags)), 'B')
            || setweight(to_tsvector('simple', body), 'C')
        ) STORED
    );
    CREATE INDEX notes_by_tenant ON notes (tenant, seq DESC);
    -- fastupdate off: new entries go straight into the index instead of a pending list
    -- that every search scans linearly until a vacuum (3,000 fresh notes made a search
    -- take 12 ms instead of 1). Notes are searched far more often than written.
    CREATE INDEX notes_search ON notes USING gin (search) WITH (fastupdate = off);
    CREATE INDEX notes_tags ON notes USING gin (tags) WITH (fastupdate = off);
    CREATE TABLE note_versions (
        note_id     text NOT NULL REFERENCES notes (id) ON DELETE CASCADE,
        tenant      text NOT NULL,
        version     integer NOT NULL,
        title       text NOT NULL,
        body        text NOT NULL,
        tags        text[] NOT NULL,
        replaced_at bigint NOT NULL,
        PRIMARY KEY (note_id, version)
    );
    -- Full-text search of the tenant the transaction names. Row-level security would
    -- keep the GIN index out of reach (`@@` is not leakproof, so PostgreSQL applies it
    -- row by row after the policy), so this one function runs as the schema's owner,
    -- which the policies do not bind, and confines itself to the transaction's tenant
    -- as the policies do: it takes no tenant argument, and with none set finds nothing.
    CREATE FUNCTION search_notes(
        words text, candidates bigint, hits bigint, weights float4[], headline text
    ) RETURNS TABLE (id text, title text, snippet text, rank float8)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = warden, pg_temp
    AS $search$
    BEGIN
        -- Dynamic, so that each call is planned for its own words: a plan made for
        -- unknown words scans every note.
        -- The query is written out where it is used: behind a CTE the planner cannot
        -- see it and scans every note instead of the GIN index.
        RETURN QUERY EXECUTE '
            WITH matches AS (
                SELECT n.id, n.title, n.body, n.search, n.seq FROM warden.notes n
                WHERE n.tenant = $2 AND n.search @@ plainto_tsquery(''simple'', $1)
                ORDER BY n.seq DESC LIMIT $3
            ),
            ranked AS (
                SELECT m.id, m.title, m.body, m.seq,
                       ts_rank($5, m.search, plainto_tsquery(''simple'', $1)) AS rank
                FROM matches m
                ORDER BY rank DESC, m.seq DESC LIMIT $4
            )
            SELECT r.id, r.title,
                   ts_headline(''simple'', r.body, plainto_tsquery(''simple'', $1), $6),
                   r.rank::float8
            FROM ranked r ORDER BY r.rank DESC, r.seq DESC'
        USING words, nullif(current_setting('warden.tenant', true), ''), candidates, hits,
              weights, headline;
    END
    $search$;
    REVOKE EXECUTE ON FUNCTION search_notes FROM PUBLIC;
    -- A version belongs to its note's tenant: never to another's note.
    ALTER TABLE notes ADD CONSTRAINT notes_id_tenant UNIQUE (id, tenant);
    ALTER TABLE note_versions ADD CONSTRAINT note_versions_of_note
        FOREIGN KEY (note_id, tenant) REFERENCES notes (id, tenant) ON DELETE CASCADE;
    ",
    // 2: API keys, as keyed hashes (the secret stays out of the database). Not a tenant
    // table: a key is looked up by its hash before any tenant is known.
    "
    CREATE TABLE keys (
        id         text PRIMARY KEY,
        hash       bytea NOT NULL UNIQUE,
        tenant     text NOT NULL,
        name       text NOT NULL,
        scope      text NOT NULL,
        created_at bigint NOT NULL,
        last_used  bigint,
        revoked_at bigint,
        expires_at bigint,
        rpm        integer
    );
    ",
    // 3: the audit trail, one hash chain per replica in one table (each replica appends
    // to its own, so replicas never wait on each other's chain end).
    "
    CREATE TABLE audit (
        replica       text NOT NULL,
        seq           bigint NOT NULL,
        at_ms         bigint NOT NULL,
        tenant        text NOT NULL,
        principal     text NOT NULL,
        client        text NOT NULL,
        instance      text NOT NULL,
        era           text NOT NULL,
        method        text NOT NULL,
        target        text,
        upstream      text,
        decision      text NOT NULL,
        rule          text,
        outcome       text NOT NULL,
        latency_us    bigint NOT NULL,
        request_bytes bigint NOT NULL,
        result_bytes  bigint NOT NULL,
        args_hash     text,
        prev_hash     bytea NOT NULL,
        hash          bytea NOT NULL,
        PRIMARY KEY (replica, seq)
    );
    CREATE INDEX audit_at ON audit (at_ms);
    CREATE INDEX audit_tenant ON audit (tenant, at_ms);
    -- Where each replica's chain starts after retention cut older rows.
    CREATE TABLE audit_anchor (
        replica   text PRIMARY KEY,
        first_seq bigint NOT NULL,
        prev_hash bytea NOT NULL
    );
    ",
    // 4: approvals, pins and daily costs; the audit trail's order of insertion, across
    // replicas, for listing.
    "
    ALTER TABLE audit ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
    -- Calls held for an operator. The call itself lives in the memory of the replica
    -- that holds it: `replica` says which, so that a replica starting expires only
    -- what its predecessor left.
    CREATE TABLE approvals (
        id         text PRIMARY KEY,
        replica    text NOT NULL,
        tenant     text NOT NULL,
        principal  text NOT NULL,
        tool       text NOT NULL,
        summary    text NOT NULL,
        status     text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'done', 'expired')),
        created_at bigint NOT NULL,
        decided_at bigint
    );
    CREATE INDEX approvals_pending ON approvals (created_at) WHERE status = 'pending';
    -- Accepted tool definitions, shared: a definition approved once is approved for
    -- every replica. `revision` rises with every change (replicas watch its maximum).
    CREATE SEQUENCE pins_revision;
    CREATE TABLE pins (
        tool        text PRIMARY KEY,
        hash        text,
        definition  text,
        pending     text,
        pending_why text,
        updated_at  bigint NOT NULL,
        revision    bigint NOT NULL
    );
    -- Each replica's spending per tenant and day (sharing one ledger is the cluster's).
    CREATE TABLE daily_costs (
        tenant  text NOT NULL,
        day     bigint NOT NULL,
        replica text NOT NULL,
        spent   bigint NOT NULL,
        PRIMARY KEY (tenant, day, replica)
    );
    ",
    // 5: search without reading more than it must. A note's body and search vector
    // live out of line (TOAST), so the table itself stays narrow (~100 bytes a note)
    // and a full-text match costs a visit to a cached page, not the read of a wide row;
    // rows written before this keep their layout until rewritten.
    "
    ALTER TABLE notes SET (toast_tuple_target = 128);
    ALTER TABLE notes ALTER COLUMN body SET STORAGE EXTERNAL,
                      ALTER COLUMN search SET STORAGE EXTERNAL;
    -- Two ways to find the newest `candidates` matches, each cheap where the other is
    -- not. Words in many notes are met soon walking back through the newest notes:
    -- each step reads that note's search vector (~4 µs), so the walk is bounded, and
    -- it ranks what it matches as it goes. Rarer words come from the
    -- full-text index, which reads no vector but visits every match (~0.5 µs each);
    -- then only the candidates' vectors are read to rank them. The planner's own
    -- estimate of the share of notes that match picks the way (left to itself, the
    -- planner walks too often: it does not count the reading of vectors). Bodies are
    -- read only for the notes returned, and Warden cuts their snippets itself
    -- (ts_headline took ~0.2 ms a note).
    DROP FUNCTION search_notes(text, bigint, bigint, float4[], text);
    CREATE FUNCTION search_notes(
        words text, candidates bigint, hits bigint, weights float4[]
    ) RETURNS TABLE (id text, title text, body text, rank float8)
    -- VOLATILE: it asks the planner (EXPLAIN) and sets planner settings.
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = warden, pg_temp
    AS $search$
    DECLARE
        -- Newest notes walked at most. Where a quarter of the notes match, walking
        -- 4,000 costs what the index costs for a quarter of 100,000 notes.
        walk CONSTANT bigint := 4 * candidates;
        me CONSTANT text := nullif(current_setting('warden.tenant', true), '');
        query CONSTANT tsquery := plainto_tsquery('simple', words);
        estimate json;
        share float8;
        picked bigint[];
        ranks float8[];
        index_scans text;
        seq_scans text;
    BEGIN
        EXECUTE format(
            'EXPLAIN (FORMAT JSON) SELECT 1 FROM warden.notes WHERE search @@ %L::tsquery',
            query::text)
            INTO estimate;
        -- reltuples is -1 before the first ANALYZE (then a table is small: walk it).
        share := (estimate -> 0 -> 'Plan' ->> 'Plan Rows')::float8
            / greatest((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'warden.notes'::regclass), 1);
        IF share * walk >= candidates THEN
            SELECT array_agg(w.seq), array_agg(w.rank) INTO picked, ranks FROM (
                SELECT r.seq, ts_rank(weights, r.search, query)::float8 AS rank FROM (
                    SELECT n.seq, n.search FROM notes n
                    WHERE n.tenant = me ORDER BY n.seq DESC LIMIT walk
                ) r
                WHERE r.search @@ query ORDER BY r.seq DESC LIMIT candidates
            ) w;
        END IF;
        IF coalesce(cardinality(picked), 0) < candidates THEN
            -- Every match through the index (the planner would walk instead).
            index_scans := current_setting('enable_indexscan');
            seq_scans := current_setting('enable_seqscan');
            PERFORM set_config('enable_indexscan', 'off', true),
                    set_config('enable_seqscan', 'off', true);
            -- Dynamic, so that it is planned for its own words.
            EXECUTE 'SELECT array_agg(m.seq) FROM (
                         SELECT n.seq FROM warden.notes n
                         WHERE n.search @@ $1 AND n.tenant = $2
                         ORDER BY n.seq DESC LIMIT $3) m'
                INTO picked USING query, me, candidates;
            PERFORM set_config('enable_indexscan', index_scans, true),
                    set_config('enable_seqscan', seq_scans, true);
            SELECT array_agg(c.seq), array_agg(ts_rank(weights, c.search, query)::float8)
                INTO picked, ranks
                FROM notes c WHERE c.seq = ANY (picked) AND c.tenant = me;
        END IF;
        RETURN QUERY
            SELECT n.id, n.title, n.body, r.rank
            FROM (
                SELECT c.seq, c.rank FROM unnest(picked, ranks) AS c (seq, rank)
                ORDER BY c.rank DESC, c.seq DESC LIMIT hits
            ) r
            JOIN notes n ON n.seq = r.seq AND n.tenant = me
            ORDER BY r.rank DESC, r.seq DESC;
    END
    $search$;
    REVOKE EXECUTE ON FUNCTION search_notes FROM PUBLIC;
    ",
    // 6: a key's labels (`warden keys add --label k=v`), a JSON object of strings that
    // policies read as the key's tags.
    "
    ALTER TABLE keys ADD COLUMN labels text NOT NULL DEFAULT '{}';
    ",
    // 7: who wrote a note (`Note::author`): the one key or OAuth client that created and
    // changed it, NULL once a second one changed it or for text from outside.
    "
    ALTER TABLE notes ADD COLUMN author text;
    ",
    // 8: the trace a call belonged to (`[telemetry]`), to find its record from a trace.
    // Not indexed, as in SQLite: random keys would touch an index page per record.
    "
    ALTER TABLE audit ADD COLUMN trace_id text;
    ",
];

/// The schema version this build speaks.
pub const SCHEMA_VERSION: i32 = 8;

/// The tables that hold a tenant's rows: row-level security confines each to the tenant
/// the transaction names, for every role but the owner and superusers.
const TENANT_TABLES: &[&str] = &["notes", "note_versions"];

/// Held while migrating (a session-level advisory lock; "WARDEN" and 1).
const MIGRATION_LOCK: i64 = 0x5741_5244_454e_0001;

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version the database was at (0: empty).
    pub from: i32,
    pub to: i32,
}

/// Brings the schema to [`SCHEMA_VERSION`] as the owner role of `owner_url`, and grants
/// `runtime_role` (when it is another role) exactly what Warden needs at run time.
pub async fn migrate(
    owner_url: &str,
    runtime_role: Option<&str>,
    connect_timeout: Duration,
) -> Result<Migrated> {
    let (mut config, transport) = super::url::parse(owner_url)?;
    config.connect_timeout(connect_timeout);
    config.application_name("warden migrate");
    let (mut client, driver) = match transport {
        Transport::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, tokio::spawn(connection))
        }
        Transport::Tls { root_cert } => {
            let tls = super::url::tls_connector(root_cert.as_deref())?;
            let (client, connection) = config.connect(tls).await?;
            (client, tokio::spawn(connection))
        }
    };
    let result = apply(&mut client, runtime_role).await;
    // Closing the session releases the advisory lock, whatever happened.
    drop(client);
    let _ = driver.await;
    result
}

async fn apply(client: &mut Client, runtime_role: Option<&str>) -> Result<Migrated> {
    // A migrator stuck holding the lock makes the others give up, not hang.
    client.batch_execute("SET lock_timeout = '120s'").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS warden;
             CREATE TABLE IF NOT EXISTS warden.schema_version (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await?;
    let from: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM warden.schema_version",
            &[],
        )
        .await?
        .get(0);
    if from > SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "the database schema is version {from}, newer than this Warden ({SCHEMA_VERSION})"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(from).unwrap_or(0))
    {
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL search_path = warden").await?;
        tx.batch_execute(sql).await?;
        for table in TENANT_TABLES {
            let exists: bool = tx
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("warden.{table}")],
                )
                .await?
                .get(0);
            let secured: bool = exists
                && tx
                    .query_one(
                        "SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass($1)",
                        &[&format!("warden.{table}")],
                    )
                    .await?
                    .get(0);
            if exists && !secured {
                tx.batch_execute(&format!(
                    "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                     CREATE POLICY tenant_only ON {table}
                         USING (tenant = current_setting('warden.tenant', true))
                         WITH CHECK (tenant = current_setting('warden.tenant', true));"
                ))
                .await?;
            }
        }
        tx.execute(
            "INSERT INTO warden.schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
    }
    if let Some(role) = runtime_role {
        grant(client, role).await?;
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

/// Gives `role` data access to schema `warden` and nothing more: no DDL (it owns
/// nothing and has no CREATE on the schema), no writes to the schema version.
async fn grant(client: &Client, role: &str) -> Result<()> {
    let me: String = client.query_one("SELECT current_user", &[]).await?.get(0);
    if me == role {
        return Ok(());
    }
    let found = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?;
    if found.is_none() {
        return Err(StoreError::Invalid(format!(
            "the runtime role {role:?} does not exist: create it first (CREATE ROLE … LOGIN)"
        )));
    }
    let role = quote_identifier(role);
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA warden TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA warden TO {role};
             REVOKE INSERT, UPDATE, DELETE ON warden.schema_version FROM {role};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA warden TO {role};
             GRANT EXECUTE ON FUNCTION warden.search_notes(text, bigint, bigint, float4[])
                 TO {role};"
        ))
        .await?;
    Ok(())
}

/// `name` as a PostgreSQL identifier, whatever it holds.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_number_of_migrations() {
        assert_eq!(
            usize::try_from(super::SCHEMA_VERSION).unwrap(),
            super::MIGRATIONS.len()
        );
        assert_eq!(super::quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
