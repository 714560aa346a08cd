//! Daily cost per tenant: each call's cost is reserved against the tenant's cap for the
//! current UTC day, and the totals are written to `costs.db` in batches (and once more
//! at shutdown), so the cap holds across restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use warden_store::Costs;

const DAY_SECS: i64 = 86_400;

/// Days since 1970-01-01, UTC.
pub(crate) fn today() -> i64 {
    warden_store::now_unix().div_euclid(DAY_SECS)
}

/// Seconds until the next UTC midnight, at least one.
pub(crate) fn until_midnight() -> u64 {
    let now = warden_store::now_unix();
    u64::try_from((now.div_euclid(DAY_SECS) + 1) * DAY_SECS - now)
        .unwrap_or(1)
        .max(1)
}

#[derive(Debug, Default)]
struct Day {
    day: i64,
    spent: HashMap<String, u64>,
    /// Tenants whose total changed since the last write.
    dirty: HashSet<String>,
}

#[derive(Debug)]
pub(crate) struct Ledger {
    store: Option<Arc<dyn Costs>>,
    day: Mutex<Day>,
}

/// A reservation refused: the cap, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverCap {
    pub cap: u64,
}

impl Ledger {
    /// Starts from what `store` holds for today.
    pub async fn open(store: Option<Arc<dyn Costs>>) -> Result<Self, warden_store::StoreError> {
        let day = today();
        let spent = match &store {
            Some(store) => store.day(day).await?.into_iter().collect(),
            None => HashMap::new(),
        };
        Ok(Self {
            store,
            day: Mutex::new(Day {
                day,
                spent,
                dirty: HashSet::new(),
            }),
        })
    }

    /// Charges `cost` to `tenant` if it stays within today's `cap` (the caps are the
    /// limiter's, which a reload may change).
    pub fn reserve(&self, tenant: &str, cost: u64, cap: u64) -> Result<(), OverCap> {
        let mut day = self.day.lock().unwrap_or_else(PoisonError::into_inner);
        let now = today();
        if day.day != now {
            *day = Day {
                day: now,
                ..Day::default()
            };
        }
        let spent = day.spent.get(tenant).copied().unwrap_or(0);
        let total = spent.saturating_add(cost);
        if total > cap {
            return Err(OverCap { cap });
        }
        if cost > 0 {
            day.spent.insert(tenant.to_owned(), total);
            day.dirty.insert(tenant.to_owned());
        }
        Ok(())
    }

    /// What each tenant spent today (as this process counts it).
    pub fn spent_today(&self) -> Vec<(String, u64)> {
        let day = self.day.lock().unwrap_or_else(PoisonError::into_inner);
        if day.day != today() {
            return Vec::new();
        }
        day.spent.iter().map(|(t, s)| (t.clone(), *s)).collect()
    }

    /// Gives back `cost` charged to `tenant` today (a call that never reached its
    /// upstream).
    pub fn refund(&self, tenant: &str, cost: u64) {
        let mut day = self.day.lock().unwrap_or_else(PoisonError::into_inner);
        if cost == 0 || day.day != today() {
            return;
        }
        if let Some(spent) = day.spent.get_mut(tenant) {
            *spent = spent.saturating_sub(cost);
            day.dirty.insert(tenant.to_owned());
        }
    }

    /// Writes the totals that changed since the last write.
    pub async fn flush(&self) -> Result<(), warden_store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let (day, totals) = {
            let mut day = self.day.lock().unwrap_or_else(PoisonError::into_inner);
            let dirty = std::mem::take(&mut day.dirty);
            let totals: Vec<(String, u64)> = dirty
                .into_iter()
                .map(|tenant| {
                    let spent = day.spent.get(&tenant).copied().unwrap_or(0);
                    (tenant, spent)
                })
                .collect();
            (day.day, totals)
        };
        if totals.is_empty() {
            return Ok(());
        }
        let written = store.record(day, &totals).await;
        if written.is_err() {
            // Not written: the next flush tries these again.
            let mut today = self.day.lock().unwrap_or_else(PoisonError::into_inner);
            if today.day == day {
                today
                    .dirty
                    .extend(totals.into_iter().map(|(tenant, _)| tenant));
            }
        }
        written
    }

    /// Writes every `interval` until `stop` turns true, then once more.
    pub async fn flush_until(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(interval) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if let Err(error) = self.flush().await {
                tracing::error!(%error, "daily costs not written; retrying");
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cap_holds_per_tenant_and_across_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = warden_store::DataDir::open(tmp.path()).unwrap();
        let store: Arc<dyn Costs> = Arc::new(warden_store::SqliteCosts::new(Arc::new(
            warden_store::CostStore::open(&dir).unwrap(),
        )));
        let ledger = Ledger::open(Some(store.clone())).await.unwrap();
        assert!(ledger.reserve("small", 2, 3).is_ok());
        assert_eq!(ledger.reserve("small", 2, 3), Err(OverCap { cap: 3 }));
        assert!(ledger.reserve("small", 1, 3).is_ok());
        // A refund makes room again.
        ledger.refund("small", 1);
        assert!(ledger.reserve("small", 1, 3).is_ok());
        assert!(ledger.reserve("big", 10, 10).is_ok());
        assert!(ledger.reserve("big", 1, 10).is_err());
        // A cap raised (a reload) lets the tenant go on.
        assert!(ledger.reserve("big", 1, 11).is_ok());
        ledger.flush().await.unwrap();
        let reopened = Ledger::open(Some(store)).await.unwrap();
        assert!(reopened.reserve("small", 1, 3).is_err());
        assert!(reopened.reserve("big", 1, 11).is_err());
        assert!(reopened.reserve("fresh", 10, 10).is_ok());
        assert!(until_midnight() <= 86_400);
    }
}
