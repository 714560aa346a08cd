//! Requests and refusals per minute over the last hour, from the gateway's running
//! totals: a mark is kept for each minute the console sampled (every 15 s, and on each
//! look at the overview), and a minute's count is the difference to the next mark.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::Console;
use crate::gateway::Totals;

/// Minutes shown.
pub(crate) const MINUTES: usize = 60;
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// One minute's traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Minute {
    pub requests: u64,
    pub refusals: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// The totals first seen in each sampled minute (minutes since the epoch), oldest
    /// first.
    marks: Mutex<VecDeque<(i64, Totals)>>,
}

pub(crate) fn this_minute() -> i64 {
    warden_store::now_unix().div_euclid(60)
}

impl Traffic {
    pub fn observe(&self, minute: i64, totals: Totals) {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if marks.back().is_none_or(|(last, _)| *last < minute) {
            marks.push_back((minute, totals));
        }
        while marks.len() > MINUTES + 1 {
            marks.pop_front();
        }
    }

    /// The last [`MINUTES`] minutes up to `minute`, oldest first, with `now` the
    /// totals at this moment.
    pub fn last_hour(&self, minute: i64, now: &Totals) -> Vec<Minute> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let first = minute - (MINUTES as i64 - 1);
        let mut hour = vec![Minute::default(); MINUTES];
        let ends = marks.iter().skip(1).map(|(_, totals)| totals).chain([now]);
        for ((at, start), end) in marks.iter().zip(ends) {
            let Ok(slot) = usize::try_from(at - first) else {
                continue;
            };
            let Some(counts) = hour.get_mut(slot) else {
                continue;
            };
            counts.requests += end.requests.saturating_sub(start.requests);
            for (layer, count) in &end.refusals {
                let before = start.refusals.get(layer).copied().unwrap_or(0);
                let delta = count.saturating_sub(before);
                if delta > 0 {
                    *counts.refusals.entry(layer.clone()).or_default() += delta;
                }
            }
        }
        hour
    }
}

/// Samples the totals until the console is gone.
pub(crate) async fn sample_until_dropped(console: Weak<Console>) {
    loop {
        {
            let Some(console) = console.upgrade() else {
                return;
            };
            console
                .traffic
                .observe(this_minute(), console.gateway.totals());
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, rate: u64) -> Totals {
        Totals {
            requests,
            refusals: BTreeMap::from([("rate".to_owned(), rate)]),
        }
    }

    #[test]
    fn each_minute_counts_what_happened_until_the_next_mark() {
        let traffic = Traffic::default();
        traffic.observe(1000, totals(10, 0));
        traffic.observe(1000, totals(12, 0)); // a later sample in the same minute
        traffic.observe(1001, totals(30, 2));
        traffic.observe(1003, totals(31, 2));
        let hour = traffic.last_hour(1003, &totals(40, 5));
        assert_eq!(hour.len(), MINUTES);
        let last = MINUTES - 1;
        assert_eq!(hour[last - 3].requests, 20);
        assert_eq!(hour[last - 3].refusals.get("rate"), Some(&2));
        assert_eq!(hour[last - 2].requests, 1);
        assert!(hour[last - 2].refusals.is_empty());
        assert_eq!(hour[last - 1], Minute::default());
        assert_eq!(hour[last].requests, 9);
        assert_eq!(hour[last].refusals.get("rate"), Some(&3));
        // Older than an hour: out of the picture.
        assert_eq!(
            traffic.last_hour(1100, &totals(40, 5))[0],
            Minute::default()
        );
    }
}
