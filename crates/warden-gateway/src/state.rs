//! What every request handler shares.

use std::sync::Arc;

use warden_config::Config;
use warden_notes::NotesServer;
use warden_policy::{Catalogue, ToolKind};
use warden_store::{KeyStore, NotesStore};

use crate::session::Sessions;

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Arc<KeyStore>,
    notes: NotesServer,
    catalogue: Catalogue,
    sessions: Arc<Sessions>,
    max_body_bytes: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(config: &Config, keys: Arc<KeyStore>, notes: Arc<NotesStore>) -> Self {
        // The embedded server is ours: its annotations are trusted.
        let (catalogue, _withheld) = Catalogue::build(
            warden_notes::tool_definitions(),
            ToolKind::from_trusted_annotations,
        );
        Self {
            inner: Arc::new(Inner {
                keys,
                notes: NotesServer::new(notes),
                catalogue,
                sessions: Arc::new(Sessions::new(
                    config.sessions.max_sessions,
                    config.sessions.idle_timeout,
                )),
                max_body_bytes: config.limits.max_body_bytes,
            }),
        }
    }

    pub(crate) fn keys(&self) -> &Arc<KeyStore> {
        &self.inner.keys
    }

    pub(crate) fn notes(&self) -> &NotesServer {
        &self.inner.notes
    }

    pub(crate) fn catalogue(&self) -> &Catalogue {
        &self.inner.catalogue
    }

    pub(crate) fn sessions(&self) -> Arc<Sessions> {
        self.inner.sessions.clone()
    }

    pub(crate) fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }
}
