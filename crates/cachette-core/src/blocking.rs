//! One pool of threads for the waits that block: a calculation lock held by another thread or
//! process, a flush waiting for the disk writer. The binding hands them here instead of starting
//! a thread per call. Threads are reused, grow on demand up to [`MAX_THREADS`] (each may block
//! for a whole `lockTimeout`), and exit after [`IDLE`] without work; beyond the limit, jobs
//! queue and start in order as threads free up.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Most threads the pool runs at once.
pub const MAX_THREADS: usize = 64;
/// How long an idle thread waits for work before it exits.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
  jobs: VecDeque<Job>,
  threads: usize,
  idle: usize,
}

struct Pool {
  queue: Mutex<Queue>,
  work: Condvar,
}

fn pool() -> &'static Pool {
  static P: OnceLock<Pool> = OnceLock::new();
  P.get_or_init(|| Pool {
    queue: Mutex::new(Queue::default()),
    work: Condvar::new(),
  })
}

/// Runs `job` on a pool thread.
pub fn spawn(job: impl FnOnce() + Send + 'static) {
  let p = pool();
  let mut q = p.queue.lock();
  q.jobs.push_back(Box::new(job));
  // An idle thread counts as idle until it has the lock again: so a job needs a new thread
  // whenever more jobs wait than threads are idle, however many were woken already.
  if q.jobs.len() <= q.idle || q.threads >= MAX_THREADS {
    p.work.notify_one();
    return; // an idle thread takes it, or the next thread that frees up
  }
  q.threads += 1;
  drop(q);
  if thread::Builder::new().name("cachette-wait".into()).spawn(work).is_err() {
    let mut q = p.queue.lock();
    q.threads -= 1;
    if q.threads > 0 {
      return; // the running threads take it in turn
    }
    // No thread at all to be had: run the waiting jobs here rather than lose them.
    let jobs: Vec<Job> = q.jobs.drain(..).collect();
    drop(q);
    for job in jobs {
      job();
    }
  }
}

fn work() {
  let p = pool();
  let mut q = p.queue.lock();
  loop {
    if let Some(job) = q.jobs.pop_front() {
      drop(q);
      job();
      q = p.queue.lock();
      continue;
    }
    q.idle += 1;
    let timed_out = p.work.wait_for(&mut q, IDLE).timed_out();
    q.idle -= 1;
    if timed_out && q.jobs.is_empty() {
      q.threads -= 1;
      return;
    }
  }
}

/// Threads the pool runs now (for tests).
pub fn threads() -> usize {
  pool().queue.lock().threads
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::{mpsc, Arc, Barrier};

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
    for i in 0..(MAX_THREADS * 2) {
      let tx = tx.clone();
      spawn(move || {
        thread::sleep(Duration::from_millis(20));
        tx.send(i).unwrap();
      });
    }
    let mut got: Vec<usize> = (0..MAX_THREADS * 2)
      .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
      .collect();
    got.sort_unstable();
    assert_eq!(got, (0..MAX_THREADS * 2).collect::<Vec<_>>());
    assert!(threads() <= MAX_THREADS, "{}", threads());
  }
}
