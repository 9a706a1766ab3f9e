//! Waits that block, run off the caller's thread: a calculation lock held by another thread or
//! process, a flush waiting for the disk writer. They run on the runtime's blocking pool
//! ([`crate::runtime`]: reused threads, at most [`MAX_BLOCKING_THREADS`], beyond which waits
//! start in order), never on a thread started per call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{CoreError, CoreResult};
use crate::key::Digest;
pub use crate::runtime::MAX_BLOCKING_THREADS;
use crate::single_flight::OwnerId;
use crate::store::{LockOutcome, Store};

/// Runs `job` on a pool thread.
pub fn spawn(job: impl FnOnce() + Send + 'static) {
  drop(crate::runtime::runtime().spawn_blocking(job));
}

/// Claims `digest`'s calculation lock without blocking the caller: a lock nobody holds is taken
/// at once, on this thread; a contended one is waited for on the pool. `done` gets the outcome.
/// When `cancelled` is set by the time the lock is taken (its handle closed meanwhile, so nobody
/// will release it), the lock is released at once and `done` gets `Closed`.
pub fn lock(
  store: Arc<dyn Store>,
  digest: Digest,
  owner: OwnerId,
  timeout: Duration,
  cancelled: Arc<AtomicBool>,
  done: impl FnOnce(CoreResult<LockOutcome>) + Send + 'static,
) {
  let finish = move |store: &dyn Store, r: CoreResult<LockOutcome>| {
    if matches!(r, Ok(LockOutcome::Acquired)) && cancelled.load(Ordering::SeqCst) {
      store.release(&digest, owner, None);
      return done(Err(CoreError::Closed));
    }
    done(r)
  };
  match store.lock(&digest, owner, Duration::ZERO) {
    Ok(LockOutcome::TimedOut) if !timeout.is_zero() => spawn(move || {
      let r = store.lock(&digest, owner, timeout);
      finish(&*store, r)
    }),
    r => finish(&*store, r),
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::clock::SystemClock;
  use crate::shard_map::Bounds;
  use crate::store::memory::SharedMemory;
  use std::sync::{mpsc, Barrier};
  use std::thread;

  #[test]
  fn a_lock_taken_after_its_handle_closed_is_released_and_reported_closed() {
    let s: Arc<dyn Store> = SharedMemory::open("blocking-test-cancel", Bounds::default(), Arc::new(SystemClock));
    let d = [4u8; 32];
    // A free lock is taken on this thread: `done` has run before `lock` returns.
    let (tx, rx) = mpsc::channel();
    lock(s.clone(), d, 1, Duration::from_secs(5), Arc::default(), move |r| {
      tx.send(r).unwrap()
    });
    assert_eq!(rx.try_recv().unwrap(), Ok(LockOutcome::Acquired));
    // A contended one waits on the pool; its handle closes meanwhile, then the holder goes away
    // (its thread died), so the waiter takes the lock over.
    let cancelled = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    lock(s.clone(), d, 2, Duration::from_secs(5), cancelled.clone(), move |r| {
      tx.send(r).unwrap()
    });
    cancelled.store(true, Ordering::SeqCst);
    s.release_owner(1);
    assert_eq!(
      rx.recv_timeout(Duration::from_secs(10)).unwrap(),
      Err(CoreError::Closed)
    );
    // Released for it: a third caller takes the lock at once.
    assert_eq!(s.lock(&d, 3, Duration::ZERO).unwrap(), LockOutcome::Acquired);
    s.release(&d, 3, None);
  }

  #[test]
  fn a_job_starts_while_every_idle_thread_was_just_handed_a_long_wait() {
    // Threads that finished a job sit idle; then as many long waits as there are, and one more job.
    let warm = 4;
    let (done, finished) = mpsc::channel();
    for _ in 0..warm {
      let done = done.clone();
      spawn(move || done.send(()).unwrap());
    }
    for _ in 0..warm {
      finished.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    let gate = Arc::new(Barrier::new(warm + 1));
    for _ in 0..warm {
      let gate = gate.clone();
      spawn(move || {
        gate.wait();
      });
    }
    let (tx, rx) = mpsc::channel();
    spawn(move || tx.send(()).unwrap());
    // The long waits end only after this: the last job must have had a thread of its own.
    let started = rx.recv_timeout(Duration::from_secs(10));
    gate.wait();
    assert!(started.is_ok(), "the job waited behind the long waits");
  }

  #[test]
  fn jobs_run_on_reused_threads_and_more_than_the_limit_all_complete() {
    let (tx, rx) = mpsc::channel();
    for i in 0..(MAX_BLOCKING_THREADS * 2) {
      let tx = tx.clone();
      spawn(move || {
        thread::sleep(Duration::from_millis(20));
        tx.send(i).unwrap();
      });
    }
    let mut got: Vec<usize> = (0..MAX_BLOCKING_THREADS * 2)
      .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
      .collect();
    got.sort_unstable();
    assert_eq!(got, (0..MAX_BLOCKING_THREADS * 2).collect::<Vec<_>>());
  }
}
