//! `pins.db`: the tool definitions an operator has accepted. A tool is pinned the first
//! time it is seen (unless its description looks like an injection); a later definition
//! with another hash waits, withheld, until `warden tools approve` accepts it.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use crate::db::{Durability, Single};
use crate::{DataDir, Result, StoreFuture, now_unix};

/// A definition as the catalogue saw it, to check against its pin.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub tool: String,
    /// The hash of the pinned form.
    pub hash: String,
    /// The pinned form itself (shown by `warden tools diff`).
    pub definition: String,
    /// Why the definition looks like it addresses the model, if it does.
    pub suspicion: Option<String>,
    /// The hash an older Warden pinned for the same fields.
    pub legacy_hash: String,
}

/// Accepted tool definitions, wherever they are kept.
pub trait Pins: std::fmt::Debug + Send + Sync {
    /// Checks each sighting against its pin (pinning first sights), in order.
    fn check_all<'a>(&'a self, seen: &'a [Sighting]) -> StoreFuture<'a, Vec<PinState>>;
    /// Accepts the waiting definition of `tool` if its hash (by `hash_of`) is `expected`.
    fn approve<'a>(
        &'a self,
        tool: &'a str,
        expected: &'a str,
        hash_of: fn(&str) -> String,
    ) -> StoreFuture<'a, bool>;
    fn get<'a>(&'a self, tool: &'a str) -> StoreFuture<'a, Option<Pin>>;
    /// Tools waiting for approval.
    fn waiting(&self) -> StoreFuture<'_, Vec<Pin>>;
    /// Changes whenever any process (a replica, the CLI) changes the pins.
    fn version(&self) -> StoreFuture<'_, i64>;
}

/// [`PinStore`] for async callers.
#[derive(Debug, Clone)]
pub struct SqlitePins(Arc<PinStore>);

impl SqlitePins {
    pub fn new(store: Arc<PinStore>) -> Self {
        Self(store)
    }

    fn blocking<'a, T: Send + 'static>(
        &self,
        work: impl FnOnce(&PinStore) -> Result<T> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        crate::on_blocking_thread(&self.0, "pins", work)
    }
}

impl Pins for SqlitePins {
    fn check_all<'a>(&'a self, seen: &'a [Sighting]) -> StoreFuture<'a, Vec<PinState>> {
        let seen = seen.to_vec();
        self.blocking(move |store| {
            seen.iter()
                .map(|s| {
                    store.check(
                        &s.tool,
                        &s.hash,
                        &s.definition,
                        s.suspicion.as_deref(),
                        &s.legacy_hash,
                    )
                })
                .collect()
        })
    }

    fn approve<'a>(
        &'a self,
        tool: &'a str,
        expected: &'a str,
        hash_of: fn(&str) -> String,
    ) -> StoreFuture<'a, bool> {
        let (tool, expected) = (tool.to_owned(), expected.to_owned());
        self.blocking(move |store| store.approve(&tool, &expected, hash_of))
    }

    fn get<'a>(&'a self, tool: &'a str) -> StoreFuture<'a, Option<Pin>> {
        let tool = tool.to_owned();
        self.blocking(move |store| store.get(&tool))
    }

    fn waiting(&self) -> StoreFuture<'_, Vec<Pin>> {
        self.blocking(PinStore::waiting)
    }

    fn version(&self) -> StoreFuture<'_, i64> {
        self.blocking(PinStore::version)
    }
}

pub(crate) const FILE: &str = "pins.db";
pub(crate) const MIGRATIONS: &[&str] = &["
    CREATE TABLE pins (
        tool        TEXT PRIMARY KEY,
        hash        TEXT,             -- the accepted definition's, NULL until one is
        definition  TEXT,
        pending     TEXT,             -- a different definition, waiting for approval
        pending_why TEXT,
        updated_at  INTEGER NOT NULL
    ) STRICT;
"];

/// Where a tool's definition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinState {
    /// The definition is the accepted one.
    Accepted,
    /// Withheld until approved; the reason says why. `new` when this definition was
    /// not already the one waiting.
    Withheld { reason: String, new: bool },
}

/// A tool's accepted and waiting definitions, for `warden tools`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub tool: String,
    pub definition: Option<String>,
    pub pending: Option<String>,
    pub pending_why: Option<String>,
}

#[derive(Debug)]
pub struct PinStore {
    db: Single,
    /// Approvals made through this handle: `data_version` moves only for other
    /// connections' writes, and the running Warden (its console) approves through the
    /// same one that it polls.
    approved_here: std::sync::atomic::AtomicI64,
}

impl PinStore {
    pub fn open(dir: &DataDir) -> Result<Self> {
        Ok(Self {
            db: Single::open(&dir.file(FILE), MIGRATIONS, Durability::Full)?,
            approved_here: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Checks `tool`'s definition against its pin. A first sight is pinned, unless
    /// `suspicion` names a reason to withhold it; a changed definition is withheld. A
    /// pin made by an older Warden over fewer fields (`legacy_hash`, the hash of this
    /// definition's old form) is carried over to the whole definition when those fields
    /// are unchanged.
    pub fn check(
        &self,
        tool: &str,
        hash: &str,
        definition: &str,
        suspicion: Option<&str>,
        legacy_hash: &str,
    ) -> Result<PinState> {
        let conn = self.db.lock();
        let row: Option<(Option<String>, Option<String>)> = conn
            .query_row(
                "SELECT hash, pending FROM pins WHERE tool = ?1",
                params![tool],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let (pinned, waiting) = match row {
            Some((hash, pending)) => (Some(hash), pending),
            None => (None, None),
        };
        let new = waiting.as_deref() != Some(definition);
        let withhold = |why: &str| -> Result<PinState> {
            conn.execute(
                "INSERT INTO pins (tool, pending, pending_why, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tool) DO UPDATE SET pending = excluded.pending,
                    pending_why = excluded.pending_why, updated_at = excluded.updated_at",
                params![tool, definition, why, now_unix()],
            )?;
            Ok(PinState::Withheld {
                reason: why.to_owned(),
                new,
            })
        };
        match pinned {
            Some(Some(accepted)) if accepted == hash => Ok(PinState::Accepted),
            Some(Some(accepted)) if accepted == legacy_hash => {
                conn.execute(
                    "UPDATE pins SET hash = ?2, definition = ?3, updated_at = ?4 WHERE tool = ?1",
                    params![tool, hash, definition, now_unix()],
                )?;
                Ok(PinState::Accepted)
            }
            Some(Some(_)) => withhold("its definition changed since it was approved"),
            _ => match suspicion {
                Some(why) => withhold(why),
                None => {
                    conn.execute(
                        "INSERT INTO pins (tool, hash, definition, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (tool) DO UPDATE SET hash = excluded.hash,
                            definition = excluded.definition, pending = NULL,
                            pending_why = NULL, updated_at = excluded.updated_at",
                        params![tool, hash, definition, now_unix()],
                    )?;
                    Ok(PinState::Accepted)
                }
            },
        }
    }

    /// Accepts `tool`'s waiting definition if its hash is `expected` (the one the
    /// operator reviewed: a definition that changed again since is not accepted by
    /// mistake). `hash_of` hashes a stored definition. Returns false when nothing waits
    /// or something else waits.
    pub fn approve(
        &self,
        tool: &str,
        expected: &str,
        hash_of: impl Fn(&str) -> String,
    ) -> Result<bool> {
        let conn = self.db.lock();
        let pending: Option<Option<String>> = conn
            .query_row(
                "SELECT pending FROM pins WHERE tool = ?1",
                params![tool],
                |row| row.get(0),
            )
            .optional()?;
        let Some(Some(pending)) = pending else {
            return Ok(false);
        };
        let hash = hash_of(&pending);
        if hash != expected {
            return Ok(false);
        }
        conn.execute(
            "UPDATE pins SET hash = ?2, definition = pending, pending = NULL, pending_why = NULL,
                updated_at = ?3 WHERE tool = ?1",
            params![tool, hash, now_unix()],
        )?;
        self.approved_here
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    pub fn get(&self, tool: &str) -> Result<Option<Pin>> {
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                "SELECT tool, definition, pending, pending_why FROM pins WHERE tool = ?1",
                params![tool],
                |row| {
                    Ok(Pin {
                        tool: row.get(0)?,
                        definition: row.get(1)?,
                        pending: row.get(2)?,
                        pending_why: row.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Tools waiting for approval.
    pub fn waiting(&self) -> Result<Vec<Pin>> {
        let conn = self.db.lock();
        let mut statement = conn.prepare(
            "SELECT tool, definition, pending, pending_why FROM pins
             WHERE pending IS NOT NULL ORDER BY tool",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(Pin {
                tool: row.get(0)?,
                definition: row.get(1)?,
                pending: row.get(2)?,
                pending_why: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Changes with every write to the file by another process (an approval from the
    /// CLI) and with every approval through this handle (the console's).
    pub fn version(&self) -> Result<i64> {
        let conn = self.db.lock();
        let version: i64 = conn.query_row("PRAGMA data_version", [], |row| row.get(0))?;
        Ok(version.wrapping_add(
            self.approved_here
                .load(std::sync::atomic::Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sight_pins_a_change_waits_and_approval_accepts() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PinStore::open(&DataDir::open(tmp.path()).unwrap()).unwrap();
        assert_eq!(
            store.check("t", "h1", "{d1}", None, "legacy").unwrap(),
            PinState::Accepted
        );
        assert_eq!(
            store.check("t", "h1", "{d1}", None, "legacy").unwrap(),
            PinState::Accepted
        );
        assert!(matches!(
            store.check("t", "h2", "{d2}", None, "legacy").unwrap(),
            PinState::Withheld { new: true, .. }
        ));
        assert!(matches!(
            store.check("t", "h2", "{d2}", None, "legacy").unwrap(),
            PinState::Withheld { new: false, .. }
        ));
        assert_eq!(store.waiting().unwrap().len(), 1);
        let hash_of = |d: &str| format!("hash of {d}");
        let before = store.version().unwrap();
        assert!(!store.approve("t", "hash of {d1}", hash_of).unwrap());
        assert_eq!(store.version().unwrap(), before, "nothing was approved");
        assert!(store.approve("t", "hash of {d2}", hash_of).unwrap());
        // Approved through this very handle (the console's): the version moves too.
        assert_ne!(store.version().unwrap(), before);
        assert_eq!(
            store
                .check("t", "hash of {d2}", "{d2}", None, "legacy")
                .unwrap(),
            PinState::Accepted
        );
        assert!(!store.approve("t", "hash of {d2}", hash_of).unwrap());
        // A suspicious first sight waits too.
        assert!(matches!(
            store
                .check("u", "h", "{d}", Some("injection"), "legacy")
                .unwrap(),
            PinState::Withheld { .. }
        ));
        assert!(store.approve("u", "h", |_| "h".into()).unwrap());
        assert_eq!(
            store
                .check("u", "h", "{d}", Some("injection"), "legacy")
                .unwrap(),
            PinState::Accepted
        );
    }

    #[test]
    fn a_pin_of_the_old_form_carries_over_when_its_fields_are_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PinStore::open(&DataDir::open(tmp.path()).unwrap()).unwrap();
        // Pinned by an older Warden: its hash is the old form's.
        store.check("t", "old", "{old}", None, "old").unwrap();
        assert_eq!(
            store.check("t", "new", "{new}", None, "old").unwrap(),
            PinState::Accepted
        );
        // From then on the whole definition is the pin.
        assert_eq!(
            store.check("t", "new", "{new}", None, "old").unwrap(),
            PinState::Accepted
        );
        assert!(matches!(
            store.check("t", "newer", "{newer}", None, "old").unwrap(),
            PinState::Withheld { new: true, .. }
        ));
    }
}
