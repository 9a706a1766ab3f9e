//! Entry times, judged by a manual clock: no test here sleeps or reads the system clock.

use std::sync::Arc;
use std::time::Duration;

use super::{digest, NS};
use crate::clock::{Clock, ManualClock};
use crate::envelope::{Freshness, Times};
use crate::store::disk::layout::store_key;
use crate::store::disk::{Conn, DiskStore};
use crate::store::{Claimed, LockOutcome, ReadOrLock, Store};
use crate::test_dir::TempDir;

/// Where the manual clocks start: early in 1970, so an entry the system clock judged would be
/// long expired, and a test passes only if the store judges by the clock it was given.
const T0: u64 = 1_000_000;

/// Opens `dir` with a clock that moves only when the test moves it.
fn open_at(dir: &TempDir) -> (Arc<DiskStore>, ManualClock) {
  let clock = ManualClock::new(T0);
  let s = DiskStore::open_with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
  (s, clock)
}

/// Times of an entry that expired just before `now`.
fn expired(now: u64) -> Times {
  Times {
    created_ms: now - 10,
    stale_at_ms: now - 5,
    expires_ms: now - 1,
  }
}

/// Times of an entry created at `T0`, stale after `stale` ms and expired after `expires` ms.
fn ttl(stale: u64, expires: u64) -> Times {
  Times {
    created_ms: T0,
    stale_at_ms: T0 + stale,
    expires_ms: T0 + expires,
  }
}

/// A store at the manual clock's start holding key 1 with `payload`, expired just before now.
fn with_an_expired_entry(dir: &crate::test_dir::TempDir, payload: &[u8]) -> (Arc<DiskStore>, u64) {
  let (s, clock) = open_at(dir);
  let now = clock.now_ms();
  s.put(NS, &digest(1), payload, expired(now)).unwrap();
  (s, now)
}

#[test]
fn expired_entries_read_as_misses() {
  let dir = crate::test_dir::TempDir::new();
  let (s, now) = with_an_expired_entry(&dir, b"old");
  assert!(s.get(NS, &digest(1)).unwrap().is_none());
  s.put(
    NS,
    &digest(2),
    b"stale",
    Times {
      created_ms: now,
      stale_at_ms: now,
      expires_ms: now + 60_000,
    },
  )
  .unwrap();
  assert_eq!(s.get(NS, &digest(2)).unwrap().unwrap().payload, b"stale");
}

#[test]
fn compaction_reclaims_expired_entries_and_keeps_live_ones() {
  let dir = crate::test_dir::TempDir::new();
  let (s, now) = with_an_expired_entry(&dir, b"gone");
  s.put(NS, &digest(2), b"kept", Times::forever(now)).unwrap();
  s.flush(false).unwrap();
  let Some(Conn::Owner { db, .. }) = &*s.inner.conn.read() else {
    panic!("not the owner")
  };
  db.flush().unwrap();
  db.compact_range::<&[u8], &[u8]>(None, None);
  assert!(
    db.get(store_key(NS, &digest(1))).unwrap().is_none(),
    "the expired entry survived compaction"
  );
  assert!(db.get(store_key(NS, &digest(2))).unwrap().is_some());
}

#[test]
fn an_entry_with_a_ttl_reads_fresh_then_stale_then_as_a_miss_as_the_clock_moves() {
  let dir = crate::test_dir::TempDir::new();
  let (s, clock) = open_at(&dir);
  s.put(NS, &digest(1), b"ttl", ttl(1_000, 2_000)).unwrap();
  let read = |s: &DiskStore| {
    s.get(NS, &digest(1))
      .unwrap()
      .map(|e| (e.payload, e.times.freshness(clock.now_ms())))
  };
  assert_eq!(read(&s), Some((b"ttl".to_vec(), Freshness::Fresh)), "queued");
  s.flush(false).unwrap();
  drop(s);
  // Reopened with the same clock: the reads below come from RocksDB.
  let s = DiskStore::open_with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
  clock.advance(999);
  assert_eq!(
    read(&s),
    Some((b"ttl".to_vec(), Freshness::Fresh)),
    "before its stale time"
  );
  clock.advance(1);
  assert_eq!(read(&s), Some((b"ttl".to_vec(), Freshness::Stale)), "at its stale time");
  clock.advance(999);
  assert_eq!(read(&s), Some((b"ttl".to_vec(), Freshness::Stale)), "before its expiry");
  clock.advance(1);
  assert_eq!(read(&s), None, "at its expiry");
}

#[test]
fn compaction_drops_an_entry_the_manual_clock_expired_and_keeps_a_live_one() {
  let dir = crate::test_dir::TempDir::new();
  let (s, clock) = open_at(&dir);
  s.put(NS, &digest(1), b"short", ttl(500, 1_000)).unwrap();
  s.put(NS, &digest(2), b"long", ttl(50_000, 100_000)).unwrap();
  s.flush(false).unwrap();
  let Some(Conn::Owner { db, .. }) = &*s.inner.conn.read() else {
    panic!("not the owner")
  };
  // Which of the two entries RocksDB holds after a flush and a full compaction.
  let compact_and_list = || {
    db.flush().unwrap();
    db.compact_range::<&[u8], &[u8]>(None, None);
    [1, 2].map(|i| db.get(store_key(NS, &digest(i))).unwrap().is_some())
  };
  // Both live by the store's clock (and long expired by the system's): both kept.
  assert_eq!(compact_and_list(), [true, true], "compaction judged by another clock");
  clock.advance(1_000);
  assert_eq!(
    compact_and_list(),
    [false, true],
    "the entry the clock expired survived compaction"
  );
}

#[test]
fn read_or_lock_claims_the_lock_for_an_expired_entry_instead_of_returning_it() {
  let dir = crate::test_dir::TempDir::new();
  let (s, clock) = open_at(&dir);
  let d = digest(3);
  let second = Duration::from_secs(1);
  s.put(NS, &d, b"old", ttl(500, 1_000)).unwrap();
  s.flush(false).unwrap();
  let mut got = Vec::new();
  assert_eq!(
    s.read_or_lock(NS, &d, 1, second, clock.now_ms(), &mut |_, p| got = p.to_vec())
      .unwrap(),
    ReadOrLock::Hit
  );
  assert_eq!(got, b"old");
  clock.advance(1_000);
  let expired = &mut |_: Times, _: &[u8]| panic!("an expired entry was returned");
  assert_eq!(
    s.read_or_lock(NS, &d, 2, second, clock.now_ms(), expired).unwrap(),
    ReadOrLock::Claimed(Claimed::Acquired)
  );
  // The claim holds the key: another caller would wait for it (this one gives up at once).
  assert_eq!(s.lock(&d, 3, Duration::ZERO).unwrap(), LockOutcome::TimedOut);
  s.put_and_release(NS, &d, b"new", ttl(500, 10_000), 2).unwrap();
  assert_eq!(s.get(NS, &d).unwrap().unwrap().payload, b"new");
}
