//! The lists where calls wait: for a person's confirmation, for an operator's approval,
//! or for a client's answers to an upstream's questions. Each list is shared out by
//! key, then by tenant, then in all (`[limits] max_waiting_per_key`,
//! `max_waiting_per_tenant`, `max_waiting`), so that one tenant filling it cannot stop
//! another's destructive call from even asking.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use warden_proto::codes;
use warden_store::Principal;

use crate::error::RpcError;
use crate::swap::Swap;

/// How long a client told that a list is full should wait before trying again.
const RETRY_AFTER_SECS: u64 = 5;

struct Waiter<T> {
    tenant: String,
    key_id: String,
    since: Instant,
    value: T,
}

pub(crate) struct WaitingList<T> {
    /// What waits here, for the refusal's message (`"confirmation"`).
    what: &'static str,
    entries: Mutex<HashMap<String, Waiter<T>>>,
    shares: Swap<warden_config::Waiting>,
    ttl: Duration,
}

impl<T> WaitingList<T> {
    pub(crate) fn new(what: &'static str, shares: &warden_config::Waiting, ttl: Duration) -> Self {
        Self {
            what,
            entries: Mutex::default(),
            shares: Swap::new(shares.clone()),
            ttl,
        }
    }

    /// New shares (a reload): entries already waiting stay; new ones meet these.
    pub(crate) fn set_shares(&self, shares: &warden_config::Waiting) {
        self.shares.set(shares.clone());
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Waiter<T>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `value` under `id` for `principal`. What has expired, or what `gone` says
    /// ended on its own, makes room first; a share still full refuses (and hands the
    /// value back, so that dropping it is the caller's choice).
    pub(crate) fn add(
        &self,
        id: String,
        principal: &Principal,
        value: T,
        gone: impl Fn(&T) -> bool,
    ) -> Result<(), (RpcError, T)> {
        let mut entries = self.entries();
        if let Err(refused) = self.room(&mut entries, principal, gone) {
            return Err((refused, value));
        }
        entries.insert(
            id,
            Waiter {
                tenant: principal.tenant.clone(),
                key_id: principal.key_id.clone(),
                since: Instant::now(),
                value,
            },
        );
        Ok(())
    }

    /// Whether `principal` may add an entry now (for a caller that must record
    /// something elsewhere before it has the entry's id).
    pub(crate) fn check_room(&self, principal: &Principal) -> Result<(), RpcError> {
        self.room(&mut self.entries(), principal, |_| false)
    }

    fn room(
        &self,
        entries: &mut HashMap<String, Waiter<T>>,
        principal: &Principal,
        gone: impl Fn(&T) -> bool,
    ) -> Result<(), RpcError> {
        let ttl = self.ttl;
        entries.retain(|_, waiter| waiter.since.elapsed() < ttl && !gone(&waiter.value));
        let of_key = entries
            .values()
            .filter(|w| w.key_id == principal.key_id)
            .count();
        let of_tenant = entries
            .values()
            .filter(|w| w.tenant == principal.tenant)
            .count();
        let shares = self.shares.get();
        if of_key >= shares.per_key {
            Err(self.full("of this key"))
        } else if of_tenant >= shares.per_tenant {
            Err(self.full("of this tenant"))
        } else if entries.len() >= shares.total {
            Err(self.full("in all"))
        } else {
            Ok(())
        }
    }

    fn full(&self, whose: &str) -> RpcError {
        RpcError {
            code: codes::RATE_LIMITED,
            message: format!(
                "Too many calls {whose} are waiting for {}; try again in {RETRY_AFTER_SECS} s",
                self.what
            ),
            data: Some(json!({"layer": "limits.waiting", "retryAfter": RETRY_AFTER_SECS})),
            rule: Some("limits.waiting"),
        }
    }

    /// Takes the value waiting under `id`, unless it has expired.
    pub(crate) fn take(&self, id: &str) -> Option<T> {
        let waiter = self.entries().remove(id)?;
        (waiter.since.elapsed() < self.ttl).then_some(waiter.value)
    }

    /// The id of a live entry that `matches`.
    pub(crate) fn find(&self, matches: impl Fn(&T) -> bool) -> Option<String> {
        self.entries()
            .iter()
            .find(|(_, waiter)| waiter.since.elapsed() < self.ttl && matches(&waiter.value))
            .map(|(id, _)| id.clone())
    }

    /// Every live entry's id, with what `name` makes of it.
    pub(crate) fn named<N>(&self, name: impl Fn(&str, &T) -> N) -> Vec<(String, N)> {
        self.entries()
            .iter()
            .filter(|(_, waiter)| waiter.since.elapsed() < self.ttl)
            .map(|(id, waiter)| (id.clone(), name(id, &waiter.value)))
            .collect()
    }

    pub(crate) fn remove(&self, id: &str) {
        self.entries().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_store::Scope;

    fn principal(tenant: &str, key: &str) -> Principal {
        Principal {
            key_id: key.into(),
            tenant: tenant.into(),
            scope: Scope::Write,
            rpm: None,
            name: String::new(),
            labels: Default::default(),
            groups: Vec::new(),
        }
    }

    fn list(per_key: usize, per_tenant: usize, total: usize) -> WaitingList<u32> {
        let shares = warden_config::Waiting {
            per_key,
            per_tenant,
            total,
            confirm_timeout: Duration::from_secs(1),
        };
        WaitingList::new("confirmation", &shares, Duration::from_secs(60))
    }

    #[test]
    fn one_tenant_cannot_fill_the_list_for_another() {
        let waiting = list(2, 3, 5);
        let (a1, a2, b1) = (
            principal("a", "k1"),
            principal("a", "k2"),
            principal("b", "k3"),
        );
        waiting.add("1".into(), &a1, 1, |_| false).unwrap();
        waiting.add("2".into(), &a1, 2, |_| false).unwrap();
        let (refused, _) = waiting.add("3".into(), &a1, 3, |_| false).unwrap_err();
        assert!(
            refused.message.contains("of this key"),
            "{}",
            refused.message
        );
        waiting.add("4".into(), &a2, 4, |_| false).unwrap();
        let (refused, _) = waiting.add("5".into(), &a2, 5, |_| false).unwrap_err();
        assert!(refused.message.contains("of this tenant"));
        // Tenant a is at its share; tenant b still asks.
        waiting.add("6".into(), &b1, 6, |_| false).unwrap();
        assert_eq!(waiting.take("1"), Some(1));
        waiting.add("7".into(), &a2, 7, |_| false).unwrap();
        // What ended on its own makes room.
        waiting
            .add("8".into(), &b1, 8, |value| *value == 6)
            .unwrap();
        assert_eq!(waiting.find(|value| *value == 8).as_deref(), Some("8"));
    }
}
