//! Entry times: an expired entry is a miss, and compaction reclaims it.

use super::{digest, NS};
use crate::clock::{Clock, SystemClock};
use crate::envelope::Times;
use crate::store::disk::layout::store_key;
use crate::store::disk::{Conn, DiskStore};
use crate::store::Store;

#[test]
fn expired_entries_read_as_misses() {
  let dir = crate::test_dir::TempDir::new();
  let s = DiskStore::open(dir.path()).unwrap();
  let now = SystemClock.now_ms();
  s.put(
    NS,
    &digest(1),
    b"old",
    Times {
      created_ms: now - 10,
      stale_at_ms: now - 5,
      expires_ms: now - 1,
    },
  )
  .unwrap();
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
  let s = DiskStore::open(dir.path()).unwrap();
  let now = SystemClock.now_ms();
  s.put(
    NS,
    &digest(1),
    b"gone",
    Times {
      created_ms: now - 10,
      stale_at_ms: now - 5,
      expires_ms: now - 1,
    },
  )
  .unwrap();
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
