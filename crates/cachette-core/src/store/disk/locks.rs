//! Calculation locks across processes: a claim holds its byte in `.locks` whenever another
//! process may contend, since locks are shared from the moment a guest connects and the claims
//! in progress then take their byte too.

use std::sync::atomic::Ordering;

use super::Inner;
use crate::error::CoreError;
use crate::key::Digest;
use crate::single_flight::OwnerId;

impl Inner {
  /// Makes every calculation lock of this process take its byte-range lock from now on, and
  /// takes it for the claims in progress, which went without: another process may contend.
  /// Set before the claims are listed, so a claim that starts meanwhile sees it and locks itself.
  pub(super) fn share_locks(&self) {
    if self.shared_locks.swap(true, Ordering::SeqCst) {
      return;
    }
    self.flights.for_each_key(|d| {
      let _ = self.locks.try_lock(d);
    });
  }

  /// Releases the byte-range lock of `digest`, which a claim holds only once locks are shared.
  pub(super) fn unlock_if_shared(&self, digest: &Digest) {
    if self.shared_locks.load(Ordering::SeqCst) {
      self.locks.unlock(digest);
    }
  }

  /// Ends `owner`'s claim of `digest`, releasing its byte-range lock when it has one (`unlock`:
  /// the caller's write needs no further wait, see `put_and_release`). The release and the
  /// claim's end are one step for [`Inner::share_locks`]: it never locks a claim already over.
  pub(super) fn end_claim(&self, digest: &Digest, owner: OwnerId, error: Option<Vec<u8>>, unlock: bool) {
    let result = match error {
      Some(error) => Err(CoreError::ComputationFailed { error }),
      None => Ok(()),
    };
    // Without a claim of this owner the byte is not this owner's to release: another thread
    // of this process may hold it.
    self.flights.finish_with(digest, owner, result, || {
      if unlock {
        self.unlock_if_shared(digest);
      }
    });
  }
}
