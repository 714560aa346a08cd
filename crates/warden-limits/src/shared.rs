//! Counters kept outside the process, so that a limit holds across replicas: `per_key_rpm
//! = 60` means 60 whatever the number of replicas. `warden-cluster` keeps them in Redis;
//! without it every counter is the process's own.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::Layer;

/// The shared counters could not be reached in time (the caller decides: refuse, or
/// count locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable;

pub type SharedFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Unreachable>> + Send + 'a>>;

/// One bucket's name: what it counts, and whose.
#[derive(Debug, Clone, Copy)]
pub enum Bucket<'a> {
    Address(&'a str),
    Key(&'a str),
}

/// Everything one call is admitted by, checked and charged all at once: either every
/// counter moves or none does.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub key_id: &'a str,
    pub tenant: &'a str,
    pub session: &'a str,
    pub max_session_calls: u64,
    /// The catalogue name and its own rate, when the tool has one.
    pub tool_rate: Option<(&'a str, u32)>,
    pub max_per_key: usize,
    pub max_total: usize,
    pub cost: u64,
    pub cap: u64,
    /// Days since 1970-01-01, UTC: the ledger the cost goes to.
    pub day: i64,
}

/// The answer to an admission.
#[derive(Debug)]
pub enum Admitted {
    /// In: the call holds a slot (leased) until it is released.
    Yes(Lease),
    /// A rate or the daily cost refused: wait this long.
    Limited(Layer, Duration),
    /// Every slot of this kind is taken now: the caller may queue and retry.
    Busy(Taken),
}

/// Which slots a busy admission found all taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The key's own.
    Key,
    /// Every slot, of every key.
    All,
}

/// A call's shared slots and charged cost, given back by [`SharedCounters::release`].
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    pub key_id: String,
    pub tenant: String,
    pub cost: u64,
    pub day: i64,
}

/// Where the counters that must hold across replicas live.
pub trait SharedCounters: Send + Sync + 'static {
    /// Takes one token from `bucket` (a minute's allowance of `per_minute`, refilled
    /// continuously): `None` taken, `Some(wait)` empty.
    fn take<'a>(
        &'a self,
        bucket: Bucket<'a>,
        per_minute: u32,
    ) -> SharedFuture<'a, Option<Duration>>;

    /// Admits one call: its session's count, its tool's rate, a slot of its key and one
    /// in all, and its cost against its tenant's cap for the day.
    fn admit<'a>(&'a self, admission: Admission<'a>) -> SharedFuture<'a, Admitted>;

    /// Gives a call's slots back, and its cost when the call never reached its
    /// upstream (`refund`). Returns at once; the round trip happens in the background.
    fn release(&self, lease: Lease, refund: bool);

    /// Whether the counters answer now (for readiness).
    fn ping(&self) -> SharedFuture<'_, ()>;

    /// Round trips to the shared store so far, by this process (for metrics).
    fn round_trips(&self) -> u64;
}
