//! The `shared: true` memory store: one [`ShardMap`] per namespace per process, shared by every
//! worker thread, with cross-thread calculation locks. A namespace's store lives as long as the
//! process (its entries within their bounds and ttl), whoever holds a handle: a worker pool that
//! recycles its workers keeps its cache.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use super::{claim_local, settle_local, Entry, LockOutcome, Store};
use crate::clock::Clock;
use crate::envelope::Times;
use crate::error::CoreResult;
use crate::key::{Digest, DigestHashing};
use crate::shard_map::{Bounds, ShardMap};
use crate::single_flight::{OwnerId, SingleFlight};

/// A process-wide memory store for one namespace.
pub struct SharedMemory {
  map: ShardMap,
  flights: SingleFlight<Digest, (), DigestHashing>,
}

/// Every namespace's store, held for the life of the process.
fn registry() -> &'static Mutex<HashMap<Vec<u8>, Arc<SharedMemory>>> {
  static R: OnceLock<Mutex<HashMap<Vec<u8>, Arc<SharedMemory>>>> = OnceLock::new();
  R.get_or_init(Default::default)
}

impl SharedMemory {
  /// The store of `namespace` in this process, created with `bounds` by its first opener;
  /// later openers share it (their bounds are ignored). It is never dropped: its entries outlive
  /// every handle, as long as their bounds and ttl allow.
  pub fn open(namespace: impl AsRef<[u8]>, bounds: Bounds, clock: Arc<dyn Clock>) -> Arc<SharedMemory> {
    registry()
      .lock()
      .entry(namespace.as_ref().to_vec())
      .or_insert_with(|| {
        Arc::new(SharedMemory {
          map: ShardMap::new(bounds, clock),
          flights: SingleFlight::new(),
        })
      })
      .clone()
  }
}

impl Store for SharedMemory {
  fn get(&self, _ns: [u8; 8], digest: &Digest) -> CoreResult<Option<Entry>> {
    Ok(self.map.get(digest).map(|f| Entry {
      times: f.times,
      payload: f.value.to_vec(),
    }))
  }

  fn read(&self, _ns: [u8; 8], digest: &Digest, sink: &mut dyn FnMut(Times, &[u8])) -> CoreResult<bool> {
    Ok(match self.map.get(digest) {
      Some(f) => {
        sink(f.times, &f.value);
        true
      }
      None => false,
    })
  }

  fn put(&self, _ns: [u8; 8], digest: &Digest, payload: &[u8], times: Times) -> CoreResult<()> {
    self.map.insert(*digest, payload.into(), times);
    Ok(())
  }

  fn delete(&self, _ns: [u8; 8], digest: &Digest) -> CoreResult<bool> {
    Ok(self.map.remove(digest))
  }

  fn clear(&self, _ns: [u8; 8]) -> CoreResult<()> {
    self.map.clear();
    Ok(())
  }

  fn len(&self, _ns: [u8; 8]) -> CoreResult<u64> {
    Ok(self.map.len() as u64)
  }

  fn flush(&self, _sync: bool) -> CoreResult<()> {
    Ok(())
  }

  fn lock(&self, digest: &Digest, owner: OwnerId, timeout: Duration) -> CoreResult<LockOutcome> {
    Ok(claim_local(&self.flights, digest, owner, timeout).unwrap_or(LockOutcome::Acquired))
  }

  fn put_and_release(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    payload: &[u8],
    times: Times,
    owner: OwnerId,
  ) -> CoreResult<()> {
    self.put(ns, digest, payload, times)?;
    settle_local(&self.flights, digest, owner, None);
    Ok(())
  }

  fn release(&self, digest: &Digest, owner: OwnerId, error: Option<Vec<u8>>) {
    settle_local(&self.flights, digest, owner, error);
  }

  fn release_owner(&self, owner: OwnerId) {
    self.flights.abandon_owner(owner, |_| {});
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::clock::SystemClock;
  use std::sync::atomic::{AtomicUsize, Ordering};
  use std::sync::Barrier;

  #[test]
  fn one_namespace_is_one_store_per_process() {
    let a = SharedMemory::open("mem-test-a", Bounds::default(), Arc::new(SystemClock));
    let b = SharedMemory::open("mem-test-a", Bounds::default(), Arc::new(SystemClock));
    a.put([0; 8], &[1; 32], b"v", Times::forever(0)).unwrap();
    assert_eq!(b.get([0; 8], &[1; 32]).unwrap().unwrap().payload, b"v");
    let c = SharedMemory::open("mem-test-c", Bounds::default(), Arc::new(SystemClock));
    assert!(c.get([0; 8], &[1; 32]).unwrap().is_none());
  }

  #[test]
  fn entries_outlive_every_handle_of_the_namespace() {
    let s = SharedMemory::open("mem-test-outlive", Bounds::default(), Arc::new(SystemClock));
    s.put([0; 8], &[2; 32], b"kept", Times::forever(0)).unwrap();
    drop(s);
    let again = SharedMemory::open("mem-test-outlive", Bounds::default(), Arc::new(SystemClock));
    assert_eq!(again.get([0; 8], &[2; 32]).unwrap().unwrap().payload, b"kept");
  }

  #[test]
  fn a_stampede_across_threads_computes_once() {
    let s = SharedMemory::open("mem-test-stampede", Bounds::default(), Arc::new(SystemClock));
    let computed = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let hs: Vec<_> = (0..16u64)
      .map(|owner| {
        let (s, computed, barrier) = (s.clone(), computed.clone(), barrier.clone());
        std::thread::spawn(move || {
          barrier.wait();
          let d = [9u8; 32];
          loop {
            if let Some(e) = s.get([0; 8], &d).unwrap() {
              return e.payload;
            }
            match s.lock(&d, owner, Duration::from_secs(5)).unwrap() {
              LockOutcome::Acquired => {
                computed.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                s.put_and_release([0; 8], &d, b"42", Times::forever(0), owner).unwrap();
              }
              LockOutcome::Settled(_) => {}
              LockOutcome::TimedOut => panic!("timed out"),
            }
          }
        })
      })
      .collect();
    for h in hs {
      assert_eq!(h.join().unwrap(), b"42");
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1);
  }

  #[test]
  fn a_failure_reaches_waiters_and_stores_nothing() {
    let s = SharedMemory::open("mem-test-fail", Bounds::default(), Arc::new(SystemClock));
    let d = [3u8; 32];
    assert_eq!(s.lock(&d, 1, Duration::from_secs(1)).unwrap(), LockOutcome::Acquired);
    let s2 = s.clone();
    let waiter = std::thread::spawn(move || s2.lock(&d, 2, Duration::from_secs(5)).unwrap());
    std::thread::sleep(Duration::from_millis(30));
    s.release(&d, 1, Some(b"err".to_vec()));
    assert_eq!(waiter.join().unwrap(), LockOutcome::Settled(Some(b"err".to_vec())));
    assert!(s.get([0; 8], &d).unwrap().is_none());
  }
}
