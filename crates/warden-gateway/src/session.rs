//! Legacy-era sessions: minted by `initialize`, bound to the key that opened them,
//! bounded in number, expired when idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore as _;
use tokio::sync::watch;
use warden_proto::ProtocolVersion;

use crate::error::GatewayError;

/// Bytes of OS randomness in a session id (256 bits): unguessable, and visible ASCII
/// once base64url-encoded, as the spec requires.
const SESSION_ID_BYTES: usize = 32;
/// How often idle sessions are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    key_id: String,
    pub version: ProtocolVersion,
    last_seen: Mutex<Instant>,
    closed: watch::Sender<bool>,
    stream_open: AtomicBool,
}

impl Session {
    fn touch(&self) {
        *self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(
            *self
                .last_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Claims the session's one GET stream; the claim ends when the guard drops.
    pub fn open_stream(self: &Arc<Self>) -> Result<StreamClaim, GatewayError> {
        if self.stream_open.swap(true, Ordering::AcqRel) {
            return Err(GatewayError::StreamAlreadyOpen);
        }
        Ok(StreamClaim {
            session: self.clone(),
            closed: self.closed.subscribe(),
        })
    }
}

/// Held by an open GET stream: keeps the session alive and learns when it closes.
#[derive(Debug)]
pub(crate) struct StreamClaim {
    session: Arc<Session>,
    closed: watch::Receiver<bool>,
}

impl StreamClaim {
    /// Resolves when the session is deleted, expires or the server shuts down.
    pub async fn closed(&mut self) {
        let _ = self.closed.wait_for(|closed| *closed).await;
    }
}

impl Drop for StreamClaim {
    fn drop(&mut self) {
        self.session.touch();
        self.session.stream_open.store(false, Ordering::Release);
    }
}

#[derive(Debug)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    max: usize,
    idle_timeout: Duration,
}

impl Sessions {
    pub fn new(max: usize, idle_timeout: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
            idle_timeout,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn create(
        &self,
        key_id: &str,
        version: ProtocolVersion,
    ) -> Result<Arc<Session>, GatewayError> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let session = Arc::new(Session {
            id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            key_id: key_id.to_owned(),
            version,
            last_seen: Mutex::new(Instant::now()),
            closed: watch::channel(false).0,
            stream_open: AtomicBool::new(false),
        });
        let mut map = self.map();
        if map.len() >= self.max {
            Self::expire(&mut map, self.idle_timeout);
            if map.len() >= self.max {
                return Err(GatewayError::SessionLimit);
            }
        }
        map.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// The session, if it exists and belongs to this key. Another key's session is as
    /// unknown as a made-up one.
    pub fn get(&self, id: &str, key_id: &str) -> Result<Arc<Session>, GatewayError> {
        let session = self
            .map()
            .get(id)
            .filter(|s| s.key_id == key_id)
            .cloned()
            .ok_or(GatewayError::UnknownSession)?;
        session.touch();
        Ok(session)
    }

    pub fn remove(&self, id: &str, key_id: &str) -> Result<(), GatewayError> {
        let mut map = self.map();
        match map.get(id) {
            Some(session) if session.key_id == key_id => {
                session.close();
                map.remove(id);
                Ok(())
            }
            _ => Err(GatewayError::UnknownSession),
        }
    }

    fn expire(map: &mut HashMap<String, Arc<Session>>, idle_timeout: Duration) {
        let now = Instant::now();
        map.retain(|_, session| {
            let keep =
                session.stream_open.load(Ordering::Acquire) || session.idle_for(now) < idle_timeout;
            if !keep {
                session.close();
            }
            keep
        });
    }

    pub fn close_all(&self) {
        for (_, session) in self.map().drain() {
            session.close();
        }
    }
}

/// Expires idle sessions until `stop` flips.
pub(crate) async fn sweep_until(sessions: Arc<Sessions>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => Sessions::expire(&mut sessions.map(), sessions.idle_timeout),
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_belong_to_their_key() {
        let sessions = Sessions::new(10, Duration::from_secs(60));
        let s = sessions
            .create("key_a", ProtocolVersion::V2025_11_25)
            .unwrap();
        assert!(s.id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(s.id.len() >= 43);
        assert!(sessions.get(&s.id, "key_a").is_ok());
        assert!(matches!(
            sessions.get(&s.id, "key_b"),
            Err(GatewayError::UnknownSession)
        ));
        assert!(matches!(
            sessions.remove(&s.id, "key_b"),
            Err(GatewayError::UnknownSession)
        ));
        sessions.remove(&s.id, "key_a").unwrap();
        assert!(matches!(
            sessions.get(&s.id, "key_a"),
            Err(GatewayError::UnknownSession)
        ));
    }

    #[test]
    fn the_cap_holds_and_idle_sessions_make_room() {
        let sessions = Sessions::new(2, Duration::from_millis(0));
        sessions.create("k", ProtocolVersion::V2025_11_25).unwrap();
        let held = sessions.create("k", ProtocolVersion::V2025_11_25).unwrap();
        let _claim = held.open_stream().unwrap();
        // The idle one is expired to make room; the one with an open stream is kept.
        sessions.create("k", ProtocolVersion::V2025_11_25).unwrap();
        assert!(sessions.get(&held.id, "k").is_ok());
        let strict = Sessions::new(1, Duration::from_secs(3600));
        strict.create("k", ProtocolVersion::V2025_11_25).unwrap();
        assert!(matches!(
            strict.create("k", ProtocolVersion::V2025_11_25),
            Err(GatewayError::SessionLimit)
        ));
    }

    #[test]
    fn one_stream_per_session() {
        let sessions = Sessions::new(2, Duration::from_secs(60));
        let s = sessions.create("k", ProtocolVersion::V2025_11_25).unwrap();
        let claim = s.open_stream().unwrap();
        assert!(matches!(
            s.open_stream(),
            Err(GatewayError::StreamAlreadyOpen)
        ));
        drop(claim);
        assert!(s.open_stream().is_ok());
    }
}
