//! Stores: where entries live. Every backend keeps the same contract: values are opaque
//! payloads with [`Times`], indexed by a namespace id and a key digest; a read never returns
//! another key's value (each entry carries its full digest); `clear` removes one namespace.
//!
//! Stores that are shared by several callers also offer calculation locks through
//! [`Claim`]s: `lock` admits one computer per key, across threads (and, for the disk store,
//! across processes); `put_and_release` stores the value and wakes the others.

use crate::envelope::Times;
use crate::error::CoreResult;
use crate::key::Digest;
use crate::single_flight::OwnerId;
use std::time::Duration;

#[cfg(feature = "disk")]
pub mod disk;
pub mod memory;
#[cfg(feature = "remote")]
pub mod remote;
pub mod signed;

/// An entry read from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
  pub times: Times,
  pub payload: Vec<u8>,
}

/// How a lock request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
  /// The caller holds the key's lock: compute, then `put_and_release` or `release`.
  Acquired,
  /// Another caller of this process finished the key meanwhile: read it again.
  /// Carries that caller's serialized error if it failed.
  Settled(Option<Vec<u8>>),
  /// `lockTimeout` passed while another caller held the lock.
  TimedOut,
}

/// How [`Store::lock_and_read`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
  /// A fresh value is there (another caller stored it): `sink` saw it; no lock is held.
  Value,
  /// The caller holds the lock and there is no fresh value: compute.
  Acquired,
  /// Another caller of this process finished without a value, or with this serialized error.
  Settled(Option<Vec<u8>>),
  /// `lockTimeout` passed.
  TimedOut,
}

/// The operations every store offers. Implementations are thread-safe and shared by all
/// worker threads of a process.
pub trait Store: Send + Sync {
  /// Reads an entry, or `None` when absent, expired, foreign or corrupted.
  fn get(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<Option<Entry>>;
  /// Reads an entry without copying it first: `sink` sees its times and payload.
  /// Returns false (and does not call `sink`) on a miss.
  fn read(&self, ns: [u8; 8], digest: &Digest, sink: &mut dyn FnMut(Times, &[u8])) -> CoreResult<bool> {
    Ok(match self.get(ns, digest)? {
      Some(e) => {
        sink(e.times, &e.payload);
        true
      }
      None => false,
    })
  }
  /// Stores an entry (write-behind where the store supports it).
  fn put(&self, ns: [u8; 8], digest: &Digest, payload: &[u8], times: Times) -> CoreResult<()>;
  /// Removes an entry; true if one was present.
  fn delete(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<bool>;
  /// Removes every entry of a namespace.
  fn clear(&self, ns: [u8; 8]) -> CoreResult<()>;
  /// Number of entries of a namespace.
  fn len(&self, ns: [u8; 8]) -> CoreResult<u64>;
  /// Waits until every write issued before the call is durable.
  fn flush(&self, sync: bool) -> CoreResult<()>;
  /// Takes the calculation lock of a key, waiting at most `timeout` for its holder.
  fn lock(&self, digest: &Digest, owner: OwnerId, timeout: Duration) -> CoreResult<LockOutcome>;
  /// Stores the computed entry, then releases the lock taken by `lock`.
  fn put_and_release(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    payload: &[u8],
    times: Times,
    owner: OwnerId,
  ) -> CoreResult<()>;
  /// Releases the lock without a value; `error` (serialized) is handed to in-process waiters.
  fn release(&self, digest: &Digest, owner: OwnerId, error: Option<Vec<u8>>);
  /// Releases every lock `owner` holds (its worker thread is gone).
  fn release_owner(&self, owner: OwnerId);

  /// The miss path in one step: takes the key's lock, then reads the key again (the holder we
  /// waited for, or another process, may have stored it). A fresh value goes to `sink` and the
  /// lock is released at once.
  fn lock_and_read(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    owner: OwnerId,
    timeout: Duration,
    now_ms: u64,
    sink: &mut dyn FnMut(Times, &[u8]),
  ) -> CoreResult<Claimed> {
    let outcome = self.lock(digest, owner, timeout)?;
    reread_after_lock(self, outcome, ns, digest, owner, now_ms, sink)
  }

  /// A read, and on a miss the miss path ([`Store::lock_and_read`]) in the same call: `Hit`
  /// when the first read found an entry (fresh or stale: `sink` saw it), else how the claim
  /// ended.
  fn read_or_lock(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    owner: OwnerId,
    timeout: Duration,
    now_ms: u64,
    sink: &mut dyn FnMut(Times, &[u8]),
  ) -> CoreResult<ReadOrLock> {
    if self.read(ns, digest, sink)? {
      return Ok(ReadOrLock::Hit);
    }
    Ok(ReadOrLock::Claimed(
      self.lock_and_read(ns, digest, owner, timeout, now_ms, sink)?,
    ))
  }
}

/// How [`Store::read_or_lock`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOrLock {
  /// The first read found the entry.
  Hit,
  /// It was a miss: the claim ended so.
  Claimed(Claimed),
}

/// The second half of [`Store::lock_and_read`]: with the lock taken (or waited for), reads the
/// key again, since the holder we waited for, or another process, may have stored it.
pub(crate) fn reread_after_lock<S: Store + ?Sized>(
  store: &S,
  outcome: LockOutcome,
  ns: [u8; 8],
  digest: &Digest,
  owner: OwnerId,
  now_ms: u64,
  sink: &mut dyn FnMut(Times, &[u8]),
) -> CoreResult<Claimed> {
  use crate::envelope::Freshness;
  let mut fresh = |times: Times, payload: &[u8]| -> bool {
    let ok = times.freshness(now_ms) == Freshness::Fresh;
    if ok {
      sink(times, payload);
    }
    ok
  };
  let mut seen = false;
  match outcome {
    LockOutcome::Acquired => {
      store.read(ns, digest, &mut |t, p| seen = fresh(t, p))?;
      if seen {
        store.release(digest, owner, None);
        return Ok(Claimed::Value);
      }
      Ok(Claimed::Acquired)
    }
    LockOutcome::Settled(None) => {
      store.read(ns, digest, &mut |t, p| seen = fresh(t, p))?;
      Ok(if seen { Claimed::Value } else { Claimed::Settled(None) })
    }
    LockOutcome::Settled(Some(e)) => Ok(Claimed::Settled(Some(e))),
    LockOutcome::TimedOut => Ok(Claimed::TimedOut),
  }
}

/// Claims `digest` among the callers of this process: `Ok(None)` when the caller leads,
/// `Ok(Some(outcome))` when it waited for another caller (at most `timeout`, or timed out).
pub(crate) fn claim_local(
  flights: &crate::single_flight::SingleFlight<Digest, (), crate::key::DigestHashing>,
  digest: &Digest,
  owner: OwnerId,
  timeout: std::time::Duration,
) -> Option<LockOutcome> {
  use crate::error::CoreError;
  use crate::single_flight::{Claim, Outcome};
  // Read the clock only to wait: a leader, the common case, never needs it.
  let mut deadline = None;
  loop {
    match flights.claim(digest, owner) {
      Claim::Leader => return None,
      Claim::Follower(f) => match f.wait(Some(
        *deadline.get_or_insert_with(|| std::time::Instant::now() + timeout),
      )) {
        Outcome::Finished(Ok(())) => return Some(LockOutcome::Settled(None)),
        Outcome::Finished(Err(CoreError::ComputationFailed { error })) => {
          return Some(LockOutcome::Settled(Some(error)))
        }
        Outcome::Finished(Err(_)) | Outcome::Abandoned => continue,
        Outcome::TimedOut => return Some(LockOutcome::TimedOut),
      },
    }
  }
}

/// Ends a local flight: waiters see the error if there is one, or read the value again.
pub(crate) fn settle_local(
  flights: &crate::single_flight::SingleFlight<Digest, (), crate::key::DigestHashing>,
  digest: &Digest,
  owner: OwnerId,
  error: Option<Vec<u8>>,
) {
  match error {
    Some(error) => flights.finish(digest, owner, Err(crate::error::CoreError::ComputationFailed { error })),
    None => flights.finish(digest, owner, Ok(())),
  };
}
