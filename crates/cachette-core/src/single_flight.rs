//! In-process single flight with moka's `get_with` contract: for one key, one caller computes
//! and the others wait; a success reaches every waiter; a failure reaches every waiter and
//! nothing is stored; if the computer goes away without an answer (its thread or worker died,
//! or it gave the claim up), the claim is released and one waiter takes over.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{CoreError, CoreResult};

/// Identifies who holds a claim: the binding uses one id per JS environment (thread).
pub type OwnerId = u64;

enum State<V> {
  Running,
  Done(Result<V, CoreError>),
  Abandoned,
}

/// One key's flight, shared by its computer and its waiters.
pub struct Flight<V> {
  state: Mutex<State<V>>,
  done: Condvar,
}

/// What a waiter sees.
#[derive(Debug)]
pub enum Outcome<V> {
  /// The computer finished: its value, or its error.
  Finished(Result<V, CoreError>),
  /// The computer went away without an answer: claim again.
  Abandoned,
  /// The deadline passed first.
  TimedOut,
}

/// Result of [`SingleFlight::claim`].
pub enum Claim<V> {
  /// The caller computes and must call [`SingleFlight::finish`] (or `abandon`).
  Leader,
  /// Another caller computes; wait on this flight.
  Follower(Arc<Flight<V>>),
}

/// A claim in progress: who holds it, and its flight once a waiter needs one (most claims end
/// with no waiter, and so without an allocation).
struct Slot<V> {
  owner: OwnerId,
  flight: Option<Arc<Flight<V>>>,
}

/// The table of flights in progress, its keys hashed by `S`.
pub struct SingleFlight<K, V, S = RandomState> {
  flights: Mutex<HashMap<K, Slot<V>, S>>,
}

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Default> Default for SingleFlight<K, V, S> {
  fn default() -> Self {
    Self::new()
  }
}

impl<V: Clone> Flight<V> {
  /// Waits for the flight to end, at most until `deadline`.
  pub fn wait(&self, deadline: Option<Instant>) -> Outcome<V> {
    let mut state = self.state.lock();
    loop {
      match &*state {
        State::Done(r) => return Outcome::Finished(r.clone()),
        State::Abandoned => return Outcome::Abandoned,
        State::Running => {}
      }
      match deadline {
        Some(d) => {
          if self.done.wait_until(&mut state, d).timed_out() {
            return match &*state {
              State::Done(r) => Outcome::Finished(r.clone()),
              State::Abandoned => Outcome::Abandoned,
              State::Running => Outcome::TimedOut,
            };
          }
        }
        None => self.done.wait(&mut state),
      }
    }
  }

  fn settle(&self, to: State<V>) {
    *self.state.lock() = to;
    self.done.notify_all();
  }
}

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Default> SingleFlight<K, V, S> {
  pub fn new() -> Self {
    SingleFlight {
      flights: Mutex::new(HashMap::default()),
    }
  }

  /// Claims `key` for `owner`, or joins the flight already running for it.
  pub fn claim(&self, key: &K, owner: OwnerId) -> Claim<V> {
    let mut flights = self.flights.lock();
    if let Some(slot) = flights.get_mut(key) {
      let flight = slot.flight.get_or_insert_with(|| {
        Arc::new(Flight {
          state: Mutex::new(State::Running),
          done: Condvar::new(),
        })
      });
      return Claim::Follower(flight.clone());
    }
    flights.insert(key.clone(), Slot { owner, flight: None });
    Claim::Leader
  }

  /// Ends `owner`'s flight of `key` with `result`, waking every waiter.
  /// Returns false if `owner` did not hold the claim (it was released meanwhile).
  pub fn finish(&self, key: &K, owner: OwnerId, result: Result<V, CoreError>) -> bool {
    self.end(key, owner, State::Done(result), || {})
  }

  /// Like [`SingleFlight::finish`], running `last` (if `owner` holds the claim) while no other
  /// claim of the table can start, end or be listed by [`SingleFlight::for_each_key`].
  pub fn finish_with(&self, key: &K, owner: OwnerId, result: Result<V, CoreError>, last: impl FnOnce()) -> bool {
    self.end(key, owner, State::Done(result), last)
  }

  /// Runs `f` on the key of every flight in progress, while none can start or end.
  pub fn for_each_key(&self, mut f: impl FnMut(&K)) {
    for k in self.flights.lock().keys() {
      f(k);
    }
  }

  /// Gives the claim up without an answer: one waiter takes over.
  pub fn abandon(&self, key: &K, owner: OwnerId) -> bool {
    self.end(key, owner, State::Abandoned, || {})
  }

  fn end(&self, key: &K, owner: OwnerId, to: State<V>, last: impl FnOnce()) -> bool {
    let flight = {
      let mut flights = self.flights.lock();
      match flights.get(key) {
        Some(slot) if slot.owner == owner => {
          last();
          flights.remove(key)
        }
        _ => None,
      }
    };
    match flight {
      Some(slot) => {
        if let Some(f) = slot.flight {
          f.settle(to);
        }
        true
      }
      None => false,
    }
  }

  /// Releases every claim `owner` holds (its thread or worker is gone), running `last` on each
  /// key before its claim ends, as [`SingleFlight::finish_with`] does. Returns their keys.
  pub fn abandon_owner(&self, owner: OwnerId, mut last: impl FnMut(&K)) -> Vec<K> {
    let gone = {
      let mut flights = self.flights.lock();
      let keys: Vec<K> = flights
        .iter()
        .filter(|(_, slot)| slot.owner == owner)
        .map(|(k, _)| k.clone())
        .collect();
      keys.iter().for_each(&mut last);
      keys
        .into_iter()
        .filter_map(|k| flights.remove(&k).map(|f| (k, f)))
        .collect::<Vec<_>>()
    };
    for f in gone.iter().filter_map(|(_, slot)| slot.flight.as_ref()) {
      f.settle(State::Abandoned);
    }
    gone.into_iter().map(|(k, _)| k).collect()
  }

  /// Number of flights in progress.
  pub fn len(&self) -> usize {
    self.flights.lock().len()
  }

  /// True when no flight is in progress.
  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  /// Runs `init` once for `key` across all concurrent callers; the others get its result.
  ///
  /// # Errors
  /// The error `init` returned (every waiter gets a clone), or `LockTimeout` when `timeout`
  /// passed before the computing caller finished.
  ///
  /// # Panics
  /// Never because of `init`: if it panics, the claim is abandoned, one waiter takes over,
  /// and the panic continues in the caller that ran `init`.
  pub fn get_with(
    &self,
    key: &K,
    owner: OwnerId,
    timeout: Option<Duration>,
    init: impl FnOnce() -> CoreResult<V>,
  ) -> CoreResult<V> {
    let start = Instant::now();
    let deadline = timeout.map(|t| start + t);
    let mut init = Some(init);
    loop {
      match self.claim(key, owner) {
        Claim::Leader => {
          struct AbandonOnUnwind<'a, K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Default>(
            &'a SingleFlight<K, V, S>,
            &'a K,
            OwnerId,
            bool,
          );
          impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Default> Drop for AbandonOnUnwind<'_, K, V, S> {
            fn drop(&mut self) {
              if !self.3 {
                self.0.abandon(self.1, self.2);
              }
            }
          }
          let mut guard = AbandonOnUnwind(self, key, owner, false);
          let result = (init.take().expect("init runs at most once per caller"))();
          guard.3 = true;
          self.finish(key, owner, result.clone());
          return result;
        }
        Claim::Follower(flight) => match flight.wait(deadline) {
          Outcome::Finished(r) => return r,
          Outcome::Abandoned => continue,
          Outcome::TimedOut => {
            return Err(CoreError::LockTimeout {
              waited_ms: start.elapsed().as_millis() as u64,
            })
          }
        },
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::atomic::{AtomicUsize, Ordering};
  use std::sync::Barrier;
  use std::thread;

  #[test]
  fn init_runs_once_for_64_concurrent_callers() {
    let sf = Arc::new(SingleFlight::<u32, u32>::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(64));
    let handles: Vec<_> = (0..64)
      .map(|i| {
        let (sf, calls, barrier) = (sf.clone(), calls.clone(), barrier.clone());
        thread::spawn(move || {
          barrier.wait();
          sf.get_with(&7, i, None, || {
            calls.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(50));
            Ok(42)
          })
        })
      })
      .collect();
    for h in handles {
      assert_eq!(h.join().unwrap(), Ok(42));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(sf.is_empty());
  }

  #[test]
  fn an_error_reaches_every_waiter_and_the_next_call_recomputes() {
    let sf = Arc::new(SingleFlight::<u32, u32>::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
      .map(|i| {
        let (sf, calls, barrier) = (sf.clone(), calls.clone(), barrier.clone());
        thread::spawn(move || {
          barrier.wait();
          sf.get_with(&1, i, None, || {
            calls.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(50));
            Err(CoreError::Io { reason: "boom".into() })
          })
        })
      })
      .collect();
    for h in handles {
      assert_eq!(h.join().unwrap(), Err(CoreError::Io { reason: "boom".into() }));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(sf.get_with(&1, 99, None, || Ok(5)), Ok(5));
  }

  #[test]
  fn a_dead_owners_claim_is_released_and_a_waiter_takes_over() {
    let sf = Arc::new(SingleFlight::<u32, u32>::new());
    assert!(matches!(sf.claim(&3, 1), Claim::Leader));
    let waiter = {
      let sf = sf.clone();
      thread::spawn(move || sf.get_with(&3, 2, Some(Duration::from_secs(5)), || Ok(11)))
    };
    thread::sleep(Duration::from_millis(30));
    assert_eq!(sf.abandon_owner(1, |_| {}), vec![3]);
    assert_eq!(waiter.join().unwrap(), Ok(11));
    // The dead owner's late answer is refused.
    assert!(!sf.finish(&3, 1, Ok(0)));
  }

  #[test]
  fn a_panicking_init_lets_one_waiter_take_over() {
    let sf = Arc::new(SingleFlight::<u32, u32>::new());
    let sf2 = sf.clone();
    let panicker = thread::spawn(move || {
      let _ = sf2.get_with(&9, 1, None, || -> CoreResult<u32> {
        thread::sleep(Duration::from_millis(50));
        panic!("init panicked")
      });
    });
    thread::sleep(Duration::from_millis(10));
    let got = sf.get_with(&9, 2, Some(Duration::from_secs(5)), || Ok(77));
    assert!(panicker.join().is_err());
    assert_eq!(got, Ok(77));
  }

  #[test]
  fn waiting_past_the_deadline_is_a_lock_timeout() {
    let sf = SingleFlight::<u32, u32>::new();
    assert!(matches!(sf.claim(&1, 1), Claim::Leader));
    let r = sf.get_with(&1, 2, Some(Duration::from_millis(40)), || Ok(1));
    assert!(matches!(r, Err(CoreError::LockTimeout { waited_ms }) if waited_ms >= 40));
  }
}
