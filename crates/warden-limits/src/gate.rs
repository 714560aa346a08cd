//! Concurrency gates: at most `max` calls inside, a bounded FIFO queue in front, and a
//! short wait. A burst is absorbed; what cannot be served in time is refused, never
//! left hanging.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Gates kept for keys at once; idle ones are dropped past it.
const MAX_GATES: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The queue is full: refused at once.
    QueueFull,
    /// Waited the whole queue timeout.
    TimedOut,
}

#[derive(Debug)]
pub(crate) struct Gate {
    max: usize,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Gate {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            slots: Arc::new(Semaphore::new(max)),
            waiting: AtomicUsize::new(0),
        }
    }

    pub async fn enter(
        &self,
        queue_depth: usize,
        timeout: Duration,
    ) -> Result<OwnedSemaphorePermit, Closed> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = Queued::join(&self.waiting);
        if queued.ahead >= queue_depth {
            return Err(Closed::QueueFull);
        }
        // The semaphore hands released slots to waiters in arrival order. A call dropped
        // while it waits (its client went away) leaves the queue with `queued`.
        let waited = tokio::time::timeout(timeout, self.slots.clone().acquire_owned()).await;
        drop(queued);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Closed::TimedOut),
        }
    }

    /// The calls it lets in at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The count of calls waiting in front, for a caller that queues calls for slots
    /// counted elsewhere (shared across replicas).
    pub fn queue(&self) -> &AtomicUsize {
        &self.waiting
    }

    fn idle(&self) -> bool {
        self.slots.available_permits() == self.max && self.waiting.load(Ordering::Acquire) == 0
    }
}

/// A place in a queue, left when dropped.
pub(crate) struct Queued<'a> {
    waiting: &'a AtomicUsize,
    /// How many were waiting before this one.
    pub ahead: usize,
}

impl<'a> Queued<'a> {
    pub fn join(waiting: &'a AtomicUsize) -> Self {
        let ahead = waiting.fetch_add(1, Ordering::AcqRel);
        Self { waiting, ahead }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One gate per key, made on first use.
#[derive(Debug)]
pub(crate) struct Gates<K> {
    max: usize,
    gates: Mutex<HashMap<K, Arc<Gate>>>,
}

impl<K: Hash + Eq + Clone> Gates<K> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The calls each key's gate lets in at once.
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn get(&self, key: &K) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = gates.get(key) {
            return gate.clone();
        }
        if gates.len() >= MAX_GATES {
            gates.retain(|_, gate| !gate.idle());
        }
        let gate = Arc::new(Gate::new(self.max));
        gates.insert(key.clone(), gate.clone());
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_then_a_queue_then_refusal() {
        let gate = Arc::new(Gate::new(2));
        let one = gate.enter(1, Duration::from_secs(5)).await.unwrap();
        let _two = gate.enter(1, Duration::from_secs(5)).await.unwrap();
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(1, Duration::from_secs(5)).await.map(drop) }
        });
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            gate.enter(1, Duration::from_secs(5)).await.unwrap_err(),
            Closed::QueueFull
        );
        drop(one);
        assert_eq!(queued.await.unwrap(), Ok(()));
        let _three = gate.enter(0, Duration::ZERO).await.unwrap();
        // A waiter that is dropped (its client went away) leaves the queue.
        let abandoned = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(1, Duration::from_secs(60)).await.map(drop) }
        });
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
        assert_eq!(
            gate.enter(1, Duration::from_millis(10)).await.unwrap_err(),
            Closed::TimedOut
        );
    }
}
