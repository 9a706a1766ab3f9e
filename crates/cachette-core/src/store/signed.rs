//! A store whose entries carry a keyed MAC ([`crate::integrity`]): one namespace's view of a
//! shared store (the disk directory) opened with an `integrityKey`. Writes store the value with
//! its tag; reads hand out only values whose tag checks, and count the entries that fail (a
//! miss: the next computed value overwrites them).
//!
//! Every read goes through the check, the miss path's second read included: a claim that the
//! inner store would settle with a forged entry is taken again through this store, so the
//! caller computes instead of reading it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{reread_after_lock, Claimed, Entry, LockOutcome, ReadOrLock, Store};
use crate::envelope::Times;
use crate::error::CoreResult;
use crate::integrity::{Checker, IntegrityKey};
use crate::key::Digest;
use crate::single_flight::OwnerId;

/// `inner`'s entries, signed and checked with `key`.
pub struct SignedStore {
  inner: Arc<dyn Store>,
  checker: Checker,
  rejected: AtomicU64,
}

impl SignedStore {
  pub fn new(inner: Arc<dyn Store>, key: IntegrityKey) -> Self {
    SignedStore {
      inner,
      checker: Checker::new(key),
      rejected: AtomicU64::new(0),
    }
  }

  /// Reads that found an entry whose tag was missing or wrong since the last call (and resets
  /// the count).
  pub fn take_rejected(&self) -> u64 {
    self.rejected.swap(0, Ordering::Relaxed)
  }

  /// A sink for `inner` that hands `sink` only checked values, noting in `ok` whether one was.
  fn checking<'a>(
    &'a self,
    ns: [u8; 8],
    digest: &'a Digest,
    ok: &'a mut bool,
    sink: &'a mut dyn FnMut(Times, &[u8]),
  ) -> impl FnMut(Times, &[u8]) + 'a {
    move |t, payload| {
      if let Some(value) = self.checker.verify(ns, digest, t, payload) {
        *ok = true;
        sink(t, value);
      }
    }
  }

  fn count_rejected(&self) {
    self.rejected.fetch_add(1, Ordering::Relaxed);
  }
}

impl Store for SignedStore {
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
    let mut ok = false;
    let found = self
      .inner
      .read(ns, digest, &mut self.checking(ns, digest, &mut ok, sink))?;
    if found && !ok {
      self.count_rejected();
    }
    Ok(ok)
  }

  fn put(&self, ns: [u8; 8], digest: &Digest, payload: &[u8], times: Times) -> CoreResult<()> {
    self
      .inner
      .put(ns, digest, &self.checker.sign(ns, digest, times, payload), times)
  }

  fn delete(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<bool> {
    self.inner.delete(ns, digest)
  }

  fn clear(&self, ns: [u8; 8]) -> CoreResult<()> {
    self.inner.clear(ns)
  }

  fn len(&self, ns: [u8; 8]) -> CoreResult<u64> {
    self.inner.len(ns)
  }

  fn flush(&self, sync: bool) -> CoreResult<()> {
    self.inner.flush(sync)
  }

  fn lock(&self, digest: &Digest, owner: OwnerId, timeout: Duration) -> CoreResult<LockOutcome> {
    self.inner.lock(digest, owner, timeout)
  }

  fn put_and_release(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    payload: &[u8],
    times: Times,
    owner: OwnerId,
  ) -> CoreResult<()> {
    let signed = self.checker.sign(ns, digest, times, payload);
    self.inner.put_and_release(ns, digest, &signed, times, owner)
  }

  fn release(&self, digest: &Digest, owner: OwnerId, error: Option<Vec<u8>>) {
    self.inner.release(digest, owner, error);
  }

  fn release_owner(&self, owner: OwnerId) {
    self.inner.release_owner(owner);
  }

  fn lock_and_read(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    owner: OwnerId,
    timeout: Duration,
    now_ms: u64,
    sink: &mut dyn FnMut(Times, &[u8]),
  ) -> CoreResult<Claimed> {
    // The second read is this store's, so a forged entry does not settle the claim.
    let outcome = self.inner.lock(digest, owner, timeout)?;
    reread_after_lock(self, outcome, ns, digest, owner, now_ms, sink)
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
    let mut ok = false;
    let r = self.inner.read_or_lock(
      ns,
      digest,
      owner,
      timeout,
      now_ms,
      &mut self.checking(ns, digest, &mut ok, sink),
    )?;
    match r {
      // The inner store found an entry that failed its check: it holds no lock, so claim again.
      ReadOrLock::Hit | ReadOrLock::Claimed(Claimed::Value) if !ok => {
        self.count_rejected();
        Ok(ReadOrLock::Claimed(
          self.lock_and_read(ns, digest, owner, timeout, now_ms, sink)?,
        ))
      }
      r => Ok(r),
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::clock::SystemClock;
  use crate::envelope::Times;
  use crate::shard_map::Bounds;
  use crate::store::memory::SharedMemory;

  const NS: [u8; 8] = [3; 8];

  fn key(s: &str) -> IntegrityKey {
    IntegrityKey::derive(format!("{s:<32}").as_bytes()).unwrap()
  }

  fn stores(name: &str) -> (Arc<dyn Store>, SignedStore) {
    let inner: Arc<dyn Store> = SharedMemory::open(name, Bounds::default(), Arc::new(SystemClock));
    let signed = SignedStore::new(inner.clone(), key("the key"));
    (inner, signed)
  }

  fn value_of(s: &dyn Store, d: &Digest) -> Option<Vec<u8>> {
    s.get(NS, d).unwrap().map(|e| e.payload)
  }

  #[test]
  fn a_value_written_through_the_signed_store_reads_back_and_carries_its_tag() {
    let (inner, signed) = stores("signed-round-trip");
    let d = [1u8; 32];
    signed.put(NS, &d, b"value", Times::forever(1)).unwrap();
    assert_eq!(value_of(&signed, &d).as_deref(), Some(&b"value"[..]));
    assert_eq!(
      value_of(&*inner, &d).map(|p| p.len()),
      Some(5 + crate::integrity::TAG_LEN)
    );
    assert_eq!(signed.take_rejected(), 0);
  }

  #[test]
  fn unkeyed_forged_and_swapped_entries_read_as_counted_misses() {
    let (inner, signed) = stores("signed-rejects");
    let (a, b) = ([1u8; 32], [2u8; 32]);
    inner.put(NS, &a, b"unkeyed", Times::forever(1)).unwrap();
    assert_eq!(value_of(&signed, &a), None, "written without the key");
    let other = SignedStore::new(inner.clone(), key("another key"));
    other.put(NS, &a, b"forged", Times::forever(1)).unwrap();
    assert_eq!(value_of(&signed, &a), None, "signed with another key");
    signed.put(NS, &b, b"b's value", Times::forever(1)).unwrap();
    let b_entry = inner.get(NS, &b).unwrap().unwrap();
    inner.put(NS, &a, &b_entry.payload, b_entry.times).unwrap();
    assert_eq!(value_of(&signed, &a), None, "b's entry copied under a");
    assert_eq!(signed.take_rejected(), 3);
    assert_eq!(signed.take_rejected(), 0, "taken");
  }

  #[test]
  fn a_claim_on_a_forged_entry_is_acquired_and_its_value_overwrites_it() {
    let (inner, signed) = stores("signed-claims");
    let d = [4u8; 32];
    let owner = crate::owners::next_owner();
    inner.put(NS, &d, b"forged", Times::forever(1)).unwrap();
    let mut seen = Vec::new();
    let r = signed
      .read_or_lock(NS, &d, owner, Duration::from_secs(1), 2, &mut |_, p| {
        seen.push(p.to_vec())
      })
      .unwrap();
    assert_eq!(r, ReadOrLock::Claimed(Claimed::Acquired));
    assert!(seen.is_empty(), "the forged value reached the caller");
    signed
      .put_and_release(NS, &d, b"computed", Times::forever(2), owner)
      .unwrap();
    assert_eq!(value_of(&signed, &d).as_deref(), Some(&b"computed"[..]));
    let r = signed
      .lock_and_read(NS, &d, owner, Duration::from_secs(1), 3, &mut |_, p| {
        seen.push(p.to_vec())
      })
      .unwrap();
    assert_eq!(r, Claimed::Value);
    assert_eq!(seen, vec![b"computed".to_vec()]);
  }
}
