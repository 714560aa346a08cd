//! API keys. The store holds HMAC-SHA-256(server secret, key), never the key itself, so a
//! stolen `keys.db` without `server.secret` yields nothing to replay.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::{DataDir, Result, StoreError, StoreFuture, db, now_unix, write_private_file};

/// Every key starts with this, so scanners and redaction can recognise one.
pub const KEY_PREFIX: &str = "wdn_";
const KEY_RANDOM_BYTES: usize = 32;
pub(crate) const SECRET_FILE: &str = "server.secret";
pub(crate) const SECRET_BYTES: usize = 32;
/// `last_used` is written at most this often per key, not on every request.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

pub(crate) const FILE: &str = "keys.db";
pub(crate) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE keys (
        id         TEXT PRIMARY KEY,
        hash       BLOB NOT NULL UNIQUE,
        tenant     TEXT NOT NULL,
        name       TEXT NOT NULL,
        scope      TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used  INTEGER,
        revoked_at INTEGER
    ) STRICT;
",
    "
    ALTER TABLE keys ADD COLUMN expires_at INTEGER;
    ALTER TABLE keys ADD COLUMN rpm INTEGER;
",
    "
    ALTER TABLE keys ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
",
];

/// What a key may do. Each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, once a key has been accepted. Identifies the key by id only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub tenant: String,
    pub scope: Scope,
    /// This key's own requests-per-minute limit, replacing the configured default.
    pub rpm: Option<u32>,
    /// The key's name (empty for an OAuth client).
    pub name: String,
    /// What policies read besides the scope: a key's labels, or an OAuth client's
    /// (string) claims.
    pub labels: std::collections::BTreeMap<String, String>,
    /// An OAuth client's groups (`principal in Group::"…"` in a policy).
    pub groups: Vec<String>,
}

/// What a key may carry besides its tenant, name and scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
    pub rpm: Option<u32>,
    /// Labels policies read as the key's tags (`principal.getTag("team")`).
    pub labels: BTreeMap<String, String>,
}

/// Labels a key may carry at most, and how long a value may be.
const MAX_LABELS: usize = 32;
const MAX_LABEL_VALUE_CHARS: usize = 256;

/// Labels as stored: a JSON object of strings.
pub(crate) fn labels_text(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

/// Labels as stored, read back (what does not parse counts as none).
pub(crate) fn labels_of(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(StoreError::Invalid(format!(
            "a key carries at most {MAX_LABELS} labels"
        )));
    }
    for (name, value) in labels {
        validate_label("a label's name", name)?;
        if value.chars().count() > MAX_LABEL_VALUE_CHARS || value.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "label {name}: the value must be at most {MAX_LABEL_VALUE_CHARS} characters, none a control character"
            )));
        }
    }
    Ok(())
}

/// A key as the operator sees it: never the key, never its hash.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: i64,
    pub last_used: Option<i64>,
    pub revoked_at: Option<i64>,
    pub options: KeyOptions,
}

impl KeyRecord {
    /// `active`, `revoked <time>` or `expired <time>`, as of `now`.
    pub fn status(&self, now: i64) -> String {
        match (self.revoked_at, self.options.expires_at) {
            (Some(at), _) => format!("revoked {}", crate::format_time(at)),
            (None, Some(at)) if at <= now => format!("expired {}", crate::format_time(at)),
            _ => "active".to_owned(),
        }
    }
}

/// A freshly minted key. Its `Debug` hides the key so it cannot leak through a log.
pub struct NewKey {
    pub record: KeyRecord,
    pub key: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("record", &self.record)
            .field("key", &"<redacted>")
            .finish()
    }
}

pub struct KeyStore {
    conn: Mutex<Connection>,
    secret: [u8; SECRET_BYTES],
    accepted: Mutex<Accepted>,
    /// The key database's WAL-index, read for [`Version`]; `None` where it cannot be
    /// read (then SQLite's `PRAGMA data_version` is asked instead).
    wal_index: Option<std::fs::File>,
}

/// Keys accepted since the key database last changed, and the [`Version`] they were
/// accepted at: a hit is exactly as fresh as a lookup.
#[derive(Default)]
struct Accepted {
    version: Option<Version>,
    by_hash: std::collections::HashMap<[u8; 32], AcceptedKey>,
}

/// What changes whenever any connection, in any process, commits to the key database:
/// the first copy of the WAL-index header (SQLite's documented `-shm` format: version,
/// change counter, frame count, checksums), read with one `pread` and no lock. A read
/// torn by a commit in progress differs from every earlier one, so it only ever costs a
/// lookup. Where the header cannot be read, SQLite's `PRAGMA data_version` (which takes
/// the database's locks, about 6% of a call's CPU) fills the first bytes.
type Version = [u8; WAL_INDEX_HEADER];

/// Bytes of one copy of the WAL-index header.
const WAL_INDEX_HEADER: usize = 48;
/// The WAL-index format this reader knows (`iVersion`, the header's first field).
const WAL_INDEX_FORMAT: u32 = 3_007_000;

/// Opens the WAL-index of the database at `path` if it is in the format this reader
/// knows.
fn open_wal_index(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::FileExt as _;
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let file = std::fs::File::open(shm).ok()?;
    let mut format = [0u8; 4];
    file.read_exact_at(&mut format, 0).ok()?;
    (u32::from_ne_bytes(format) == WAL_INDEX_FORMAT).then_some(file)
}

struct AcceptedKey {
    principal: Principal,
    last_used: i64,
    expires_at: Option<i64>,
}

/// Accepted keys remembered at most; past it the memory starts over.
const MAX_ACCEPTED: usize = 10_000;

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    pub fn open(dir: &DataDir) -> Result<Self> {
        let secret = load_or_create_secret(dir, SECRET_FILE)?;
        let path = dir.file(FILE);
        let mut conn = db::open_writer(&path)?;
        db::migrate(&mut conn, MIGRATIONS)?;
        Ok(Self {
            conn: Mutex::new(conn),
            secret,
            accepted: Mutex::new(Accepted::default()),
            wal_index: open_wal_index(&path),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (statements are
        // atomic), so a poisoned lock is safe to reuse.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hash(&self, key: &str) -> [u8; 32] {
        key_hash(&self.secret, key)
    }

    pub fn add(&self, tenant: &str, name: &str, scope: Scope) -> Result<NewKey> {
        self.add_with(tenant, name, scope, KeyOptions::default())
    }

    pub fn add_with(
        &self,
        tenant: &str,
        name: &str,
        scope: Scope,
        options: KeyOptions,
    ) -> Result<NewKey> {
        Self::insert(
            &self.conn(),
            |key| self.hash(key),
            tenant,
            name,
            scope,
            options,
        )
    }

    fn insert(
        conn: &Connection,
        hash: impl Fn(&str) -> [u8; 32],
        tenant: &str,
        name: &str,
        scope: Scope,
        options: KeyOptions,
    ) -> Result<NewKey> {
        let NewKey { record, key } = mint(tenant, name, scope, options)?;
        conn.execute(
            "INSERT INTO keys (id, hash, tenant, name, scope, created_at, expires_at, rpm, labels) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![record.id, hash(&key).as_slice(), record.tenant, record.name, scope.as_str(), record.created_at, record.options.expires_at, record.options.rpm, labels_text(&record.options.labels)],
        )?;
        Ok(NewKey { record, key })
    }

    /// Replaces an active key with a new one of the same tenant, name, scope and options;
    /// the old one stays valid for `grace_secs` more (never longer than it already was).
    /// `None` when no active key has that id.
    pub fn rotate(&self, id: &str, grace_secs: i64) -> Result<Option<NewKey>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_unix();
        let old = tx
            .query_row(
                "SELECT tenant, name, scope, expires_at, rpm, labels FROM keys WHERE id = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                params![id, now],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                        row.get::<_, Option<u32>>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((tenant, name, scope, expires_at, rpm, labels)) = old else {
            return Ok(None);
        };
        let scope = Scope::parse(&scope).unwrap_or(Scope::Read);
        let new = Self::insert(
            &tx,
            |key| self.hash(key),
            &tenant,
            &name,
            scope,
            KeyOptions {
                expires_at,
                rpm,
                labels: labels_of(&labels),
            },
        )?;
        let until = now.saturating_add(grace_secs.max(0));
        tx.execute(
            "UPDATE keys SET expires_at = MIN(COALESCE(expires_at, ?2), ?2) WHERE id = ?1",
            params![id, until],
        )?;
        tx.commit()?;
        drop(conn);
        self.accepted().by_hash.clear();
        Ok(Some(new))
    }

    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, tenant, name, scope, created_at, last_used, revoked_at, expires_at, rpm, labels FROM keys ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |row| {
            let scope: String = row.get(3)?;
            Ok(KeyRecord {
                id: row.get(0)?,
                tenant: row.get(1)?,
                name: row.get(2)?,
                scope: Scope::parse(&scope).unwrap_or(Scope::Read),
                created_at: row.get(4)?,
                last_used: row.get(5)?,
                revoked_at: row.get(6)?,
                options: KeyOptions {
                    expires_at: row.get(7)?,
                    rpm: row.get(8)?,
                    labels: labels_of(&row.get::<_, String>(9)?),
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes a key; returns false when no active key has that id.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        self.accepted().by_hash.clear();
        let changed = self.conn().execute(
            "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_unix()],
        )?;
        Ok(changed == 1)
    }

    /// Whether any key was ever created (revoked ones count: an operator who revoked
    /// every key does not get a fresh admin key by restarting).
    pub fn has_keys(&self) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM keys)", [], |row| row.get(0))?)
    }

    /// The key database's [`Version`] now; `None` if it cannot be read.
    fn version(&self) -> Option<Version> {
        let mut version = [0u8; WAL_INDEX_HEADER];
        if let Some(wal_index) = &self.wal_index {
            std::os::unix::fs::FileExt::read_exact_at(wal_index, &mut version, 0).ok()?;
        } else {
            let data_version: i64 = self
                .conn()
                .prepare_cached("PRAGMA data_version")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                .ok()?;
            version[..8].copy_from_slice(&data_version.to_ne_bytes());
        }
        Some(version)
    }

    fn accepted(&self) -> std::sync::MutexGuard<'_, Accepted> {
        self.accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers from memory when the key was accepted since the database last changed and
    /// its last use needs no update: no disk I/O, so callable on an async worker. `None`
    /// means "ask [`KeyStore::authenticate`]".
    pub fn recently_accepted(&self, presented: &str) -> Option<Principal> {
        let hash = self.hash(presented);
        let version = self.version()?;
        let mut accepted = self.accepted();
        if accepted.version != Some(version) {
            accepted.version = Some(version);
            accepted.by_hash.clear();
            return None;
        }
        let known = accepted.by_hash.get(&hash)?;
        let now = now_unix();
        let fresh = now - known.last_used < LAST_USED_RESOLUTION_SECS
            && known.expires_at.is_none_or(|at| at > now);
        fresh.then(|| known.principal.clone())
    }

    /// Accepts a presented key if it exists and is not revoked. Looks the key up by its
    /// keyed hash and confirms the match in constant time. Consulted on every request, so
    /// a revocation by another process takes effect on the next call.
    pub fn authenticate(&self, presented: &str) -> Result<Option<Principal>> {
        if !plausible(presented) {
            return Ok(None);
        }
        let hash = self.hash(presented);
        let conn = self.conn();
        let row = conn
            .prepare_cached("SELECT id, hash, tenant, scope, last_used, expires_at, rpm, name, labels FROM keys WHERE hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)")?
            .query_row(params![hash.as_slice(), now_unix()], |row| {
                Ok((
                    (row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?),
                    (row.get::<_, String>(2)?, row.get::<_, String>(3)?),
                    row.get::<_, Option<i64>>(4)?,
                    (row.get::<_, Option<i64>>(5)?, row.get::<_, Option<u32>>(6)?),
                    (row.get::<_, String>(7)?, row.get::<_, String>(8)?),
                ))
            })
            .optional()?;
        let Some(((key_id, stored), (tenant, scope), last_used, (expires_at, rpm), (name, labels))) =
            row
        else {
            return Ok(None);
        };
        if !hashes_match(&stored, &hash) {
            return Ok(None);
        }
        let Some(scope) = Scope::parse(&scope) else {
            return Ok(None);
        };
        let mut now = now_unix();
        if last_used.is_none_or(|t| now - t >= LAST_USED_RESOLUTION_SECS) {
            conn.prepare_cached("UPDATE keys SET last_used = ?2 WHERE id = ?1")?
                .execute(params![key_id, now])?;
        } else {
            now = last_used.unwrap_or(now);
        }
        drop(conn);
        let principal = Principal {
            key_id,
            tenant,
            scope,
            rpm,
            name,
            labels: labels_of(&labels),
            groups: Vec::new(),
        };
        let mut accepted = self.accepted();
        if accepted.by_hash.len() >= MAX_ACCEPTED {
            accepted.by_hash.clear();
        }
        accepted.by_hash.insert(
            hash,
            AcceptedKey {
                principal: principal.clone(),
                last_used: now,
                expires_at,
            },
        );
        Ok(Some(principal))
    }
}

/// HMAC-SHA-256(server secret, key): what both backends store and look keys up by.
pub(crate) fn key_hash(secret: &[u8; SECRET_BYTES], key: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(key.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A new key and its record (not yet stored), for a valid tenant and name.
pub(crate) fn mint(tenant: &str, name: &str, scope: Scope, options: KeyOptions) -> Result<NewKey> {
    validate_label("tenant", tenant)?;
    validate_label("name", name)?;
    validate_labels(&options.labels)?;
    let key = format!("{KEY_PREFIX}{}", random_token(KEY_RANDOM_BYTES));
    let record = KeyRecord {
        id: format!("key_{}", random_hex(8)),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        scope,
        created_at: now_unix(),
        last_used: None,
        revoked_at: None,
        options,
    };
    Ok(NewKey { record, key })
}

/// Whether `presented` can be a key at all (checked before any lookup).
pub(crate) fn plausible(presented: &str) -> bool {
    presented.starts_with(KEY_PREFIX) && presented.len() <= 256
}

/// The stored key's hash equals the presented one's, compared in constant time.
pub(crate) fn hashes_match(stored: &[u8], presented: &[u8; 32]) -> bool {
    bool::from(stored.ct_eq(presented.as_slice()))
}

/// Every store of API keys, whichever database holds them.
pub trait Keys: fmt::Debug + Send + Sync {
    /// Accepts a presented key if it exists, is not revoked and has not expired.
    fn authenticate<'a>(&'a self, presented: &'a str) -> StoreFuture<'a, Option<Principal>>;
    fn add<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        scope: Scope,
        options: KeyOptions,
    ) -> StoreFuture<'a, NewKey>;
    /// See [`KeyStore::rotate`].
    fn rotate<'a>(&'a self, id: &'a str, grace_secs: i64) -> StoreFuture<'a, Option<NewKey>>;
    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>>;
    fn revoke<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Whether any key was ever created (revoked ones count).
    fn has_keys(&self) -> StoreFuture<'_, bool>;
}

/// [`KeyStore`] for async callers: a key accepted since the database last changed is
/// answered from memory; the rest runs on a blocking thread.
#[derive(Debug, Clone)]
pub struct SqliteKeys(Arc<KeyStore>);

impl SqliteKeys {
    pub fn new(store: Arc<KeyStore>) -> Self {
        Self(store)
    }

    fn blocking<'a, T: Send + 'static>(
        &self,
        work: impl FnOnce(&KeyStore) -> Result<T> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        crate::on_blocking_thread(&self.0, "key", work)
    }
}

impl Keys for SqliteKeys {
    fn authenticate<'a>(&'a self, presented: &'a str) -> StoreFuture<'a, Option<Principal>> {
        if let Some(principal) = self.0.recently_accepted(presented) {
            return Box::pin(std::future::ready(Ok(Some(principal))));
        }
        let presented = presented.to_owned();
        self.blocking(move |store| store.authenticate(&presented))
    }

    fn add<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        scope: Scope,
        options: KeyOptions,
    ) -> StoreFuture<'a, NewKey> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.blocking(move |store| store.add_with(&tenant, &name, scope, options))
    }

    fn rotate<'a>(&'a self, id: &'a str, grace_secs: i64) -> StoreFuture<'a, Option<NewKey>> {
        let id = id.to_owned();
        self.blocking(move |store| store.rotate(&id, grace_secs))
    }

    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        self.blocking(KeyStore::list)
    }

    fn revoke<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let id = id.to_owned();
        self.blocking(move |store| store.revoke(&id))
    }

    fn has_keys(&self) -> StoreFuture<'_, bool> {
        self.blocking(KeyStore::has_keys)
    }
}

pub use warden_config::is_valid_label;

fn validate_label(what: &str, value: &str) -> Result<()> {
    if is_valid_label(value) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// The 32-byte secret kept in `name` under the data dir, made on first use (mode 0600).
pub(crate) fn load_or_create_secret(dir: &DataDir, name: &str) -> Result<[u8; SECRET_BYTES]> {
    let path = dir.file(name);
    match std::fs::read(&path) {
        Ok(bytes) => bytes.try_into().map_err(|_| {
            StoreError::Invalid(format!(
                "{} is corrupt (expected {SECRET_BYTES} bytes)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; SECRET_BYTES];
            rand::rng().fill_bytes(&mut secret);
            write_private_file(&path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

/// URL-safe random text carrying `bytes` bytes of OS randomness.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KeyStore) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path().join("data")).unwrap();
        let store = KeyStore::open(&dir).unwrap();
        (tmp, store)
    }

    #[test]
    fn a_key_authenticates_until_revoked() {
        let (_tmp, store) = store();
        let new = store.add("acme", "laptop", Scope::Write).unwrap();
        assert!(new.key.starts_with(KEY_PREFIX));
        assert!(
            new.key.len() >= KEY_PREFIX.len() + 43,
            "256 bits of randomness"
        );
        let who = store.authenticate(&new.key).unwrap().unwrap();
        assert_eq!((who.tenant.as_str(), who.scope), ("acme", Scope::Write));
        assert!(store.revoke(&new.record.id).unwrap());
        assert_eq!(store.authenticate(&new.key).unwrap(), None);
        assert!(
            !store.revoke(&new.record.id).unwrap(),
            "second revoke is a no-op"
        );
    }

    #[test]
    fn remembered_keys_are_forgotten_when_another_process_revokes() {
        let (tmp, store) = store();
        let new = store.add("acme", "laptop", Scope::Write).unwrap();
        assert!(store.recently_accepted(&new.key).is_none());
        assert!(store.authenticate(&new.key).unwrap().is_some());
        // A first look learns the database's version; from then on, memory answers.
        let _ = store.recently_accepted(&new.key);
        assert!(store.authenticate(&new.key).unwrap().is_some());
        assert_eq!(
            store.recently_accepted(&new.key).map(|p| p.key_id),
            Some(new.record.id.clone())
        );
        let other = KeyStore::open(&DataDir::open(tmp.path().join("data")).unwrap()).unwrap();
        assert!(other.revoke(&new.record.id).unwrap());
        assert!(store.recently_accepted(&new.key).is_none());
        assert!(store.authenticate(&new.key).unwrap().is_none());
        assert!(store.recently_accepted("wdn_unknown").is_none());
    }

    #[test]
    fn the_change_signal_is_the_wal_index_and_any_commit_moves_it() {
        let (tmp, mut store) = store();
        assert!(
            store.wal_index.is_some(),
            "the WAL-index is read, not data_version"
        );
        let new = store.add("acme", "laptop", Scope::Write).unwrap();
        let before = store.version().unwrap();
        assert_eq!(store.version().unwrap(), before, "reading changes nothing");
        // Another process's commit, and this process's own (a revocation racing a
        // lookup that remembers the key again must still be seen).
        let other = KeyStore::open(&DataDir::open(tmp.path().join("data")).unwrap()).unwrap();
        other.add("acme", "phone", Scope::Read).unwrap();
        let after_other = store.version().unwrap();
        assert_ne!(after_other, before);
        assert!(store.revoke(&new.record.id).unwrap());
        assert_ne!(store.version().unwrap(), after_other);
        // Where the header cannot be read, data_version answers, and still moves.
        store.wal_index = None;
        let fallback = store.version().unwrap();
        other.add("acme", "tablet", Scope::Read).unwrap();
        assert_ne!(store.version().unwrap(), fallback);
    }

    #[test]
    fn expired_keys_are_refused_and_rotation_keeps_the_old_key_for_its_grace() {
        let (_tmp, store) = store();
        let past = KeyOptions {
            expires_at: Some(now_unix() - 1),
            ..KeyOptions::default()
        };
        let expired = store.add_with("acme", "old", Scope::Write, past).unwrap();
        assert!(store.authenticate(&expired.key).unwrap().is_none());
        assert!(store.rotate(&expired.record.id, 60).unwrap().is_none());

        let options = KeyOptions {
            rpm: Some(120),
            ..KeyOptions::default()
        };
        let old = store
            .add_with("acme", "ci", Scope::Read, options.clone())
            .unwrap();
        let principal = store.authenticate(&old.key).unwrap().unwrap();
        assert_eq!(principal.rpm, Some(120));
        let graceful = store.rotate(&old.record.id, 3600).unwrap().unwrap();
        assert_eq!(graceful.record.options, options);
        assert_eq!(graceful.record.scope, Scope::Read);
        assert!(store.authenticate(&old.key).unwrap().is_some());
        assert!(store.authenticate(&graceful.key).unwrap().is_some());
        // No grace: the old key is refused at once, even one just remembered (the first
        // look only learns the database's version).
        let _ = store.recently_accepted(&graceful.key);
        assert!(store.authenticate(&graceful.key).unwrap().is_some());
        assert!(store.recently_accepted(&graceful.key).is_some());
        let abrupt = store.rotate(&graceful.record.id, 0).unwrap().unwrap();
        assert!(store.recently_accepted(&graceful.key).is_none());
        assert!(store.authenticate(&graceful.key).unwrap().is_none());
        assert!(store.authenticate(&abrupt.key).unwrap().is_some());
        let listed = store.list().unwrap();
        let status = |id: &str| {
            let record = listed.iter().find(|k| k.id == id).unwrap();
            record.status(now_unix())
        };
        assert!(status(&graceful.record.id).starts_with("expired"));
        assert_eq!(status(&old.record.id), "active");
    }

    #[test]
    fn unknown_and_malformed_keys_are_refused() {
        let (_tmp, store) = store();
        let new = store.add("acme", "laptop", Scope::Read).unwrap();
        let mut tampered = new.key.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        for key in [
            tampered.as_str(),
            "",
            "wdn_",
            "Bearer x",
            &"wdn_x".repeat(100),
        ] {
            assert_eq!(store.authenticate(key).unwrap(), None);
        }
    }

    #[test]
    fn the_key_itself_is_never_stored() {
        let (tmp, store) = store();
        let new = store.add("acme", "laptop", Scope::Admin).unwrap();
        drop(store);
        for entry in std::fs::read_dir(tmp.path().join("data")).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let random_part = &new.key.as_bytes()[KEY_PREFIX.len()..];
            assert!(!bytes.windows(random_part.len()).any(|w| w == random_part));
        }
        assert!(!format!("{new:?}").contains(&new.key));
    }

    #[test]
    fn secret_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, store) = store();
        let key = store.add("acme", "a", Scope::Read).unwrap().key;
        drop(store);
        let path = tmp.path().join("data").join(SECRET_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let reopened = KeyStore::open(&DataDir::open(tmp.path().join("data")).unwrap()).unwrap();
        assert!(reopened.authenticate(&key).unwrap().is_some());
    }

    #[test]
    fn labels_are_validated() {
        let (_tmp, store) = store();
        assert!(store.add("", "a", Scope::Read).is_err());
        assert!(store.add("a b", "a", Scope::Read).is_err());
        assert!(store.add("a", &"x".repeat(65), Scope::Read).is_err());
    }
}
