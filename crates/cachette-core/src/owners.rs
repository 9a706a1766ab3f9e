//! Who holds calculation locks. Every caller that takes locks (a JS thread, in the binding) gets
//! an [`OwnerId`] here; when it goes away, [`release_everywhere`] releases every lock it still
//! holds in every store the process opened, so one of its waiters takes over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;

use crate::single_flight::OwnerId;
use crate::store::Store;

/// The stores opened so far, weakly: a closed store leaves the list at the next registration.
fn stores() -> &'static Mutex<Vec<Weak<dyn Store>>> {
  static S: OnceLock<Mutex<Vec<Weak<dyn Store>>>> = OnceLock::new();
  S.get_or_init(Default::default)
}

/// A fresh owner id (never 0, never reused in this process).
pub fn next_owner() -> OwnerId {
  static NEXT: AtomicU64 = AtomicU64::new(1);
  NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Adds `store` to the stores whose locks [`release_everywhere`] releases (once: a store opened
/// again, such as a `shared: true` namespace that lives as long as the process, is not added twice).
pub fn register(store: &Arc<dyn Store>) {
  let weak = Arc::downgrade(store);
  let mut s = stores().lock();
  s.retain(|w| w.strong_count() > 0);
  if !s.iter().any(|w| w.ptr_eq(&weak)) {
    s.push(weak);
  }
}

/// Releases every lock `owner` holds, in every open store: its thread is gone.
pub fn release_everywhere(owner: OwnerId) {
  let open: Vec<Arc<dyn Store>> = stores().lock().iter().filter_map(Weak::upgrade).collect();
  for s in open {
    s.release_owner(owner);
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::clock::SystemClock;
  use crate::shard_map::Bounds;
  use crate::store::memory::SharedMemory;
  use crate::store::LockOutcome;
  use std::time::Duration;

  #[test]
  fn a_gone_owners_locks_are_released_in_every_registered_store() {
    let owner = next_owner();
    let other = next_owner();
    assert_ne!(owner, other);
    let a: Arc<dyn Store> = SharedMemory::open("owners-test-a", Bounds::default(), Arc::new(SystemClock));
    let b: Arc<dyn Store> = SharedMemory::open("owners-test-b", Bounds::default(), Arc::new(SystemClock));
    register(&a);
    register(&b);
    let d = [5u8; 32];
    assert_eq!(a.lock(&d, owner, Duration::ZERO).unwrap(), LockOutcome::Acquired);
    assert_eq!(b.lock(&d, owner, Duration::ZERO).unwrap(), LockOutcome::Acquired);
    assert_eq!(a.lock(&d, other, Duration::ZERO).unwrap(), LockOutcome::TimedOut);
    release_everywhere(owner);
    assert_eq!(a.lock(&d, other, Duration::ZERO).unwrap(), LockOutcome::Acquired);
    assert_eq!(b.lock(&d, other, Duration::ZERO).unwrap(), LockOutcome::Acquired);
  }
}
