//! The [`Store`] contract for a disk directory: a read sees this process's queued writes at
//! once, and a claim trusts its first read only if nothing was queued since.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::ipc::MAX_VALUE;
use super::layout::{ns_range, seal_shared, store_key};
use super::{not_stored, Conn, DiskStore};
use crate::envelope::{self, Times};
use crate::error::{CoreError, CoreResult};
use crate::key::Digest;
use crate::single_flight::OwnerId;
use crate::store::{claim_local, reread_after_lock, Claimed, Entry, LockOutcome, ReadOrLock, Store};

/// Refuses a value larger than the directory takes, alike in the owner and in its guests.
fn fits(times: Times, payload: &[u8]) -> CoreResult<()> {
  let sealed = envelope::sealed_len(times, payload.len());
  if sealed > MAX_VALUE {
    return Err(CoreError::io(format!(
      "a value of {} bytes is larger than a disk cache entry can be ({MAX_VALUE} bytes); it is not stored",
      payload.len()
    )));
  }
  Ok(())
}

impl Store for DiskStore {
  fn get(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<Option<Entry>> {
    let mut found = None;
    self.read(ns, digest, &mut |times, payload| {
      found = Some(Entry {
        times,
        payload: payload.to_vec(),
      })
    })?;
    Ok(found)
  }

  fn read(&self, ns: [u8; 8], digest: &Digest, sink: &mut dyn FnMut(Times, &[u8])) -> CoreResult<bool> {
    self.read_owned(ns, digest, sink).map(|(found, _)| found)
  }

  fn read_or_lock(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    owner: OwnerId,
    timeout: Duration,
    now_ms: u64,
    sink: &mut dyn FnMut(Times, &[u8]),
  ) -> CoreResult<ReadOrLock> {
    // Every write to the directory, this process's or another's, passes through the owner's
    // queue: when the owner takes the lock and nothing was queued since its read, the read
    // still holds, and the second read of `lock_and_read` is skipped.
    let is_owner = || matches!(&*self.inner.conn.read(), Some(Conn::Owner { .. }));
    let queued = self.inner.queue.queued.load(Ordering::SeqCst);
    let (found, owned) = self.read_owned(ns, digest, sink)?;
    if found {
      return Ok(ReadOrLock::Hit);
    }
    let outcome = self.lock(digest, owner, timeout)?;
    // (Owner at both ends: a guest elected owner meanwhile read through the old owner.)
    if outcome == LockOutcome::Acquired
      && owned
      && is_owner()
      && self.inner.queue.queued.load(Ordering::SeqCst) == queued
    {
      return Ok(ReadOrLock::Claimed(Claimed::Acquired));
    }
    Ok(ReadOrLock::Claimed(reread_after_lock(
      self, outcome, ns, digest, owner, now_ms, sink,
    )?))
  }

  fn put(&self, ns: [u8; 8], digest: &Digest, payload: &[u8], times: Times) -> CoreResult<()> {
    fits(times, payload)?;
    let sealed = seal_shared(digest, times, payload);
    self
      .inner
      .enqueue_write(store_key(ns, digest), Some(sealed), None)
      .map(drop)
  }

  fn delete(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<bool> {
    let present = self.get(ns, digest)?.is_some();
    self.inner.enqueue_write(store_key(ns, digest), None, None)?;
    Ok(present)
  }

  fn clear(&self, ns: [u8; 8]) -> CoreResult<()> {
    let (from, to) = ns_range(ns);
    let seq = self.inner.enqueue_range(from, to)?;
    self.inner.wait_applied(seq - 1, seq).map_err(not_stored)
  }

  fn len(&self, ns: [u8; 8]) -> CoreResult<u64> {
    // Counts what the writes queued so far left, whether they were applied or not: a write
    // that failed is reported by a flush, not by the count.
    drop(self.inner.wait_done(self.inner.queue.queued.load(Ordering::SeqCst)));
    self.inner.count(ns)
  }

  /// Fails when a write queued since the previous `flush` of this store could not be applied
  /// (each handle of the binding has its own such window: [`DiskStore::flush_reporting`]).
  fn flush(&self, sync: bool) -> CoreResult<()> {
    self.flush_from(sync, &self.inner.flushed)
  }

  fn lock(&self, digest: &Digest, owner: OwnerId, timeout: Duration) -> CoreResult<LockOutcome> {
    if let Some(outcome) = claim_local(&self.inner.flights, digest, owner, timeout) {
      return Ok(outcome);
    }
    // Read after the claim was registered (see `Inner::share_locks`).
    if !self.inner.shared_locks.load(Ordering::SeqCst) {
      return Ok(LockOutcome::Acquired);
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(500);
    loop {
      match self.inner.locks.try_lock(digest) {
        Ok(true) => return Ok(LockOutcome::Acquired),
        Ok(false) => {}
        Err(e) => {
          self.inner.flights.abandon(digest, owner);
          return Err(e);
        }
      }
      if Instant::now() >= deadline {
        self.inner.flights.abandon(digest, owner);
        return Ok(LockOutcome::TimedOut);
      }
      thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
      pause = (pause * 2).min(Duration::from_millis(20));
    }
  }

  fn put_and_release(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    payload: &[u8],
    times: Times,
    owner: OwnerId,
  ) -> CoreResult<()> {
    // The owner serves its queued writes to the other processes, so they may take the lock at
    // once; a guest's write must reach the owner first, so the writer releases its lock after.
    let owner_role = matches!(&*self.inner.conn.read(), Some(Conn::Owner { .. }));
    let deferred = (!owner_role).then_some(*digest);
    let r = fits(times, payload).and_then(|()| {
      let sealed = seal_shared(digest, times, payload);
      self
        .inner
        .enqueue_write(store_key(ns, digest), Some(sealed), deferred)
        .map(drop)
    });
    self.inner.end_claim(digest, owner, None, owner_role || r.is_err());
    r
  }

  fn release(&self, digest: &Digest, owner: OwnerId, error: Option<Vec<u8>>) {
    self.inner.end_claim(digest, owner, error, true);
  }

  fn release_owner(&self, owner: OwnerId) {
    // The dead thread can no longer release its byte-range locks: release them for it, so
    // waiters in other processes take over too.
    let inner = &self.inner;
    inner
      .flights
      .abandon_owner(owner, |digest| inner.unlock_if_shared(digest));
  }
}
