//! The leases a process's callers hold, by a number a caller outside Rust can keep (the JS side
//! holds no `Lease` object): a lease leaves the table exactly once, to be committed, aborted, or
//! released when its namespace closes, so no lease is committed twice or left renewing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{runtime, Acquired, Lease, RemoteStore};
use crate::envelope::Times;
use crate::error::CoreResult;

/// One namespace's store and the leases its callers hold on it.
pub struct HeldLeases {
  store: RemoteStore,
  leases: Mutex<HashMap<u32, Lease>>,
}

/// Lease numbers, unique in the process (0 is never used).
static NEXT: AtomicU32 = AtomicU32::new(1);

impl HeldLeases {
  pub fn new(store: RemoteStore) -> Self {
    HeldLeases {
      store,
      leases: Mutex::default(),
    }
  }

  /// The namespace's store, for everything that holds no lease.
  pub fn store(&self) -> &RemoteStore {
    &self.store
  }

  /// What [`RemoteStore::acquire`] answered, a lease taken kept here under the number returned.
  pub fn hold(&self, acquired: Acquired) -> Acquired<u32> {
    match acquired {
      Acquired::Value(t, v) => Acquired::Value(t, v),
      Acquired::Locked(l) => {
        let id = NEXT.fetch_add(1, Ordering::Relaxed).max(1);
        self.leases.lock().insert(id, l);
        Acquired::Locked(id)
      }
      Acquired::Failed(e) => Acquired::Failed(e),
      Acquired::TimedOut => Acquired::TimedOut,
    }
  }

  /// Takes lease `id` out of the table (None: committed, aborted or released already).
  pub fn take(&self, id: u32) -> Option<Lease> {
    self.leases.lock().remove(&id)
  }

  /// Commits under lease `id`: false when it is no longer held (here, or on the server).
  pub async fn commit(&self, lease: Option<Lease>, payload: &[u8], times: Times) -> CoreResult<bool> {
    match lease {
      Some(l) => self.store.commit(l, payload, times).await,
      None => Ok(false),
    }
  }

  /// Aborts a lease taken with [`HeldLeases::take`]; `error` reaches the callers waiting for it.
  pub async fn abort(&self, lease: Option<Lease>, error: Option<&[u8]>, keep: Duration) -> CoreResult<()> {
    match lease {
      Some(l) => self.store.abort(l, error, keep).await,
      None => Ok(()),
    }
  }

  /// Releases every lease still held, in the background: their holders' commits are refused.
  pub fn release_all(self: &std::sync::Arc<Self>) {
    let leases: Vec<Lease> = self.leases.lock().drain().map(|(_, l)| l).collect();
    if leases.is_empty() {
      return;
    }
    let me = self.clone();
    runtime().spawn(async move {
      for l in leases {
        let _ = me.store.abort(l, None, Duration::ZERO).await;
      }
    });
  }

  /// Leases held now (for tests).
  pub fn held(&self) -> usize {
    self.leases.lock().len()
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::store::remote::testing::{keyspace, redis_url, spec, sql_urls};
  use std::sync::Arc;

  const LEASE: Duration = Duration::from_millis(600);
  const PATIENCE: Duration = Duration::from_secs(10);

  #[test]
  fn a_lease_is_held_by_number_taken_once_and_released_when_the_namespace_closes() {
    let mut urls = vec![redis_url()];
    urls.extend(sql_urls());
    for url in urls {
      runtime().block_on(async {
        let ks = keyspace("held-leases");
        let open = || RemoteStore::open(&spec(&url), ks.id()).unwrap_or_else(|e| panic!("{url}: {e}"));
        let held = Arc::new(HeldLeases::new(open()));
        held.store().clear().await.expect("clear");
        let (a, b) = (ks.digest_encoded(b"a"), ks.digest_encoded(b"b"));
        let Acquired::Locked(id) = held.hold(held.store().acquire(&a, LEASE, PATIENCE, false).await.expect("acquire")) else {
          panic!("{url}: a miss takes the lease")
        };
        let lease = held.take(id);
        assert!(lease.is_some(), "{url}");
        assert!(held.take(id).is_none(), "{url}: a lease leaves the table once");
        assert!(
          held.commit(lease, b"v", Times::forever(1)).await.expect("commit"),
          "{url}"
        );
        assert!(
          !held.commit(None, b"w", Times::forever(1)).await.expect("commit"),
          "{url}"
        );
        assert!(
          matches!(held.hold(held.store().acquire(&a, LEASE, PATIENCE, false).await.expect("acquire")), Acquired::Value(_, v) if v == b"v")
        );
        // A lease still held when the namespace closes is released: another caller takes it at once.
        assert!(matches!(
          held.hold(held.store().acquire(&b, LEASE, PATIENCE, false).await.expect("acquire")),
          Acquired::Locked(_)
        ));
        assert_eq!(held.held(), 1);
        held.release_all();
        assert_eq!(held.held(), 0);
        let other = HeldLeases::new(open());
        let r = other.hold(other.store().acquire(&b, LEASE, PATIENCE, false).await.expect("acquire"));
        assert!(matches!(r, Acquired::Locked(_)), "{url}: {r:?}");
        other.store().clear().await.expect("clear");
      });
    }
  }
}
