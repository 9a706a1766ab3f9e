//! A lease this process holds: a random owner token, renewed from Rust every third of the lease
//! until it is committed, aborted, dropped or held for [`MAX_HOLD`], so only a live holder keeps it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{runtime, RemoteStore};
use crate::key::Digest;

/// A lease owner token: 16 random bytes.
pub type Token = [u8; 16];

pub(super) fn new_token() -> Token {
  let mut t = [0u8; 16];
  if getrandom::fill(&mut t).is_err() {
    // No OS randomness: still unique per process and call, which is all a lease needs.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
      .duration_since(std::time::UNIX_EPOCH)
      .map_or(0, |d| d.as_nanos());
    let h = blake3::hash(format!("{}:{n}:{nanos}", std::process::id()).as_bytes());
    t.copy_from_slice(&h.as_bytes()[..16]);
  }
  t
}

/// A held lease. Dropping it stops the renewal, so the lease expires on the server.
#[derive(Debug)]
pub struct Lease {
  pub token: Token,
  pub(super) digest: Digest,
  renewer: tokio::task::AbortHandle,
}

impl Drop for Lease {
  fn drop(&mut self) {
    self.stop_renewing();
  }
}

/// Renewals stop after this long, so an endless computation cannot park waiters forever: its
/// lease expires and one waiter takes over.
const MAX_HOLD: Duration = Duration::from_secs(600);

impl Lease {
  /// Starts renewing a lease `store` just took.
  pub(super) fn hold(store: &RemoteStore, digest: &Digest, token: Token, lease: Duration) -> Lease {
    let server = Arc::downgrade(&store.server);
    let ns = store.ns;
    let d = *digest;
    let lease_ms = lease.as_millis().max(1) as u64;
    let every = (lease / 3).max(Duration::from_millis(1));
    let task = runtime().spawn(async move {
      let started = Instant::now();
      while started.elapsed() < MAX_HOLD {
        tokio::time::sleep(every).await;
        let Some(server) = server.upgrade() else { return };
        // A failed renewal (server briefly unreachable) is retried at the next tick; a refused
        // one (the lease was taken over or cleared) ends the renewal.
        if let Ok(false) = on_server!(&*server, s => s.renew(ns, &d, &token, lease_ms).await) {
          return;
        }
      }
    });
    Lease {
      token,
      digest: *digest,
      renewer: task.abort_handle(),
    }
  }

  /// Stops the renewal: the lease now lasts until its expiry on the server at most.
  pub(super) fn stop_renewing(&self) {
    self.renewer.abort();
  }
}
