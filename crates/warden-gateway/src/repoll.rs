//! Each client connection's task, and each upstream call that runs in a task of its
//! own, polled without waking itself. hyper hands a request's body from its connection
//! to the handler, and the upstream connection hands a request to its dispatcher and the
//! answer back, through channels that wake whoever polled last: here, the very task that
//! is polling, since a connection, its handler and the handler's upstream call all run
//! in one task. Tokio treats a task woken during its own poll as one that yielded: it
//! goes to the back of the run queue and an idle worker is woken to steal it. At low
//! load that was about two futex wake-ups, context switches and often a move to the
//! other core per call: a sixth of the call's CPU.
//!
//! [`repolled`] gives the future a waker of its own. A wake that arrives while the task
//! is polling it only asks for another round of the same poll; one that arrives later
//! (a socket became readable) wakes the task as before.
//!
//! Work that only reports on a request (its log line) can wait until the poll is over:
//! [`after_this_poll`]. hyper writes an answer out within the poll that produced it, so
//! work put off this way runs once the answer is on its way to the client, and no
//! longer delays it: one call at a time, the client is reading while it runs.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Rounds polled in a row before a wake is passed on to the task instead. A future that
/// keeps waking itself (a cooperative yield, an exhausted budget) must reach the
/// scheduler, not spin here.
const MAX_ROUNDS: usize = 4;

/// Runs `future`, with the wakes it gives itself while being polled turned into rounds
/// of the same poll.
pub(crate) async fn repolled<F: Future>(future: F) -> F::Output {
    let flags = Arc::new(Flags {
        polling: AtomicBool::new(false),
        woken: AtomicBool::new(false),
        task: Mutex::new(None),
    });
    let waker = Waker::from(Arc::clone(&flags));
    let mut future = pin!(future);
    poll_fn(|cx| {
        let _after = AfterPoll::begin();
        flags.poll(cx, &waker, |inner| future.as_mut().poll(inner))
    })
    .await
}

/// Work put off until the end of the poll this thread is in.
type Job = Box<dyn FnOnce()>;

/// This thread's put-off work, and whether a [`repolled`] future is being polled on it.
#[derive(Default)]
struct Deferred {
    polling: bool,
    jobs: Vec<Job>,
}

thread_local! {
    static DEFERRED: RefCell<Deferred> = RefCell::new(Deferred::default());
}

/// Runs `job` when the poll of the [`repolled`] future this thread is in ends, or at
/// once outside such a poll. For work that must not hold an answer back and that
/// nothing waits for.
pub(crate) fn after_this_poll(job: impl FnOnce() + 'static) {
    let job: Job = Box::new(job);
    let now = DEFERRED.with_borrow_mut(|deferred| {
        if deferred.polling {
            deferred.jobs.push(job);
            None
        } else {
            Some(job)
        }
    });
    if let Some(job) = now {
        job();
    }
}

/// The outermost poll on a thread: runs the work put off during it when it ends.
struct AfterPoll {
    outermost: bool,
}

impl AfterPoll {
    fn begin() -> Self {
        let outermost =
            DEFERRED.with_borrow_mut(|deferred| !std::mem::replace(&mut deferred.polling, true));
        Self { outermost }
    }
}

impl Drop for AfterPoll {
    fn drop(&mut self) {
        if !self.outermost {
            return;
        }
        // A job may put off more work: run until none is left. The jobs run outside the
        // borrow, and their vector goes back to keep its room for the next poll.
        loop {
            let mut jobs = DEFERRED.with_borrow_mut(|deferred| std::mem::take(&mut deferred.jobs));
            let done = jobs.is_empty();
            // A poll that panicked drops its reports rather than risk a second panic. A
            // report that panics is lost alone: the thread must not stay marked as
            // polling, or the work put off on it later would pile up unrun.
            if std::thread::panicking() {
                jobs.clear();
            } else {
                for job in jobs.drain(..) {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            }
            DEFERRED.with_borrow_mut(|deferred| {
                if deferred.jobs.is_empty() {
                    deferred.jobs = jobs;
                }
                if done {
                    deferred.polling = false;
                }
            });
            if done {
                break;
            }
        }
    }
}

struct Flags {
    /// The task is inside [`Flags::poll`].
    polling: AtomicBool,
    /// A wake arrived since the round began.
    woken: AtomicBool,
    /// The task to wake when a wake arrives outside a poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Flags {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // `woken` before `polling`, and the reverse in `poll`: either this wake sees
        // that nobody is polling and wakes the task, or the poll sees `woken`.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(task) = &*task {
                task.wake_by_ref();
            }
        }
    }
}

impl Flags {
    /// Polls `round` with `own` (this future's waker) until it is ready, or until a
    /// round passes without a wake (then the task waits for the next one).
    fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        own: &Waker,
        mut round: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        {
            let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *task {
                Some(task) if task.will_wake(cx.waker()) => {}
                task => *task = Some(cx.waker().clone()),
            }
        }
        let mut inner = Context::from_waker(own);
        self.polling.store(true, Ordering::SeqCst);
        for _ in 0..MAX_ROUNDS {
            self.woken.store(false, Ordering::SeqCst);
            if let Poll::Ready(value) = round(&mut inner) {
                self.polling.store(false, Ordering::SeqCst);
                return Poll::Ready(value);
            }
            if !self.woken.load(Ordering::SeqCst) {
                self.polling.store(false, Ordering::SeqCst);
                // A wake between the check and the store found `polling` still set.
                if !self.woken.load(Ordering::SeqCst) {
                    return Poll::Pending;
                }
                self.polling.store(true, Ordering::SeqCst);
            }
        }
        self.polling.store(false, Ordering::SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A future that wakes itself during its first polls, then is ready.
    struct WakesItself {
        times: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for WakesItself {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.times == 0 {
                return Poll::Ready(());
            }
            self.times -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the task's wakes.
    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> (Poll<F::Output>, usize) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let polled = future.poll(&mut Context::from_waker(&waker));
        (polled, counter.0.load(Ordering::SeqCst))
    }

    #[test]
    fn wakes_during_the_poll_are_rounds_of_it_not_wakes_of_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let future = pin!(repolled(WakesItself {
            times: MAX_ROUNDS - 1,
            polls: Arc::clone(&polls),
        }));
        let (polled, wakes) = poll_once(future);
        assert_eq!(polled, Poll::Ready(()));
        assert_eq!(wakes, 0);
        assert_eq!(polls.load(Ordering::SeqCst), MAX_ROUNDS);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_reaches_the_scheduler() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut future = pin!(repolled(WakesItself {
            times: usize::MAX,
            polls: Arc::clone(&polls),
        }));
        let (polled, wakes) = poll_once(future.as_mut());
        assert_eq!(polled, Poll::Pending);
        assert_eq!(wakes, 1);
        assert_eq!(polls.load(Ordering::SeqCst), MAX_ROUNDS);
    }

    /// A future that puts off a report in each poll, and notes what it saw of the
    /// reports before.
    struct Reports {
        seen: Arc<Mutex<Vec<&'static str>>>,
        polls: usize,
    }

    impl Future for Reports {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            let seen = Arc::clone(&self.seen);
            after_this_poll(move || seen.lock().unwrap().push("report"));
            self.seen.lock().unwrap().push("polled");
            self.polls += 1;
            if self.polls == 2 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn work_put_off_runs_when_the_poll_ends() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut future = pin!(repolled(Reports {
            seen: Arc::clone(&seen),
            polls: 0,
        }));
        assert_eq!(poll_once(future.as_mut()).0, Poll::Pending);
        assert_eq!(*seen.lock().unwrap(), ["polled", "report"]);
        assert_eq!(poll_once(future.as_mut()).0, Poll::Ready(()));
        assert_eq!(
            *seen.lock().unwrap(),
            ["polled", "report", "polled", "report"]
        );
        // Outside a poll, work runs at once.
        let now = Arc::clone(&seen);
        after_this_poll(move || now.lock().unwrap().push("at once"));
        assert_eq!(seen.lock().unwrap().last(), Some(&"at once"));
    }

    #[test]
    fn work_put_off_in_a_nested_poll_waits_for_the_outer_one() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Arc::clone(&seen);
        let outer = Arc::clone(&seen);
        let future = pin!(repolled(async move {
            repolled(Reports {
                seen: inner,
                polls: 1,
            })
            .await;
            outer.lock().unwrap().push("outer went on");
        }));
        assert_eq!(poll_once(future).0, Poll::Ready(()));
        assert_eq!(*seen.lock().unwrap(), ["polled", "outer went on", "report"]);
    }

    #[test]
    fn a_poll_that_panics_leaves_the_thread_able_to_put_off_work() {
        let panicked = std::panic::catch_unwind(|| {
            let future = pin!(repolled(async {
                after_this_poll(|| {});
                panic!("in the poll");
            }));
            poll_once(future)
        });
        assert!(panicked.is_err());
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ran);
        after_this_poll(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "work outside a poll runs at once"
        );
    }

    #[test]
    fn a_report_that_panics_is_lost_alone() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let after = Arc::clone(&seen);
        let future = pin!(repolled(async move {
            after_this_poll(|| panic!("in a report"));
            after_this_poll(move || after.lock().unwrap().push("next report"));
        }));
        assert_eq!(poll_once(future).0, Poll::Ready(()));
        assert_eq!(*seen.lock().unwrap(), ["next report"]);
        // The thread is not left marked as polling: later polls still run their work.
        let later = Arc::clone(&seen);
        let future = pin!(repolled(async move {
            after_this_poll(move || later.lock().unwrap().push("later poll"));
        }));
        assert_eq!(poll_once(future).0, Poll::Ready(()));
        assert_eq!(seen.lock().unwrap().last(), Some(&"later poll"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_from_elsewhere_after_the_poll_wakes_the_task() {
        let (send, receive) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn(repolled(receive));
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::thread::spawn(move || send.send(7).unwrap());
        let received = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert_eq!(received.unwrap().unwrap().unwrap(), 7);
    }
}
