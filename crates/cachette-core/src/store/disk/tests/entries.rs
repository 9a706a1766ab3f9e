//! Entries: written, read, overwritten, deleted, cleared and damaged.

use std::fs;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{digest, NS};
use crate::envelope::{self, Times};
use crate::error::CoreError;
use crate::store::disk::layout::store_key;
use crate::store::disk::{DiskStore, Role};
use crate::store::Store;

#[test]
fn one_handle_per_directory_per_process() {
  let dir = crate::test_dir::TempDir::new();
  let a = DiskStore::open(dir.path()).unwrap();
  let b = DiskStore::open(&dir.path().join(".")).unwrap();
  assert!(Arc::ptr_eq(&a, &b));
  assert_eq!(a.role(), Role::Owner);
}

#[test]
fn writes_are_readable_at_once_and_durable_after_flush() {
  let dir = crate::test_dir::TempDir::new();
  {
    let s = DiskStore::open(dir.path()).unwrap();
    for i in 0..100 {
      s.put(NS, &digest(i), format!("v{i}").as_bytes(), Times::forever(1))
        .unwrap();
      assert_eq!(
        s.get(NS, &digest(i)).unwrap().unwrap().payload,
        format!("v{i}").as_bytes()
      );
    }
    s.flush(true).unwrap();
    assert_eq!(s.len(NS).unwrap(), 100);
  }
  let s = DiskStore::open(dir.path()).unwrap();
  assert_eq!(s.get(NS, &digest(42)).unwrap().unwrap().payload, b"v42");
}

#[test]
fn absent_keys_skip_the_database_once_it_was_scanned_and_stored_ones_still_read() {
  let dir = crate::test_dir::TempDir::new();
  {
    let s = DiskStore::open(dir.path()).unwrap();
    for i in 0..5000 {
      s.put(NS, &digest(i), &i.to_le_bytes(), Times::forever(1)).unwrap();
    }
    s.flush(false).unwrap();
  }
  let s = DiskStore::open(dir.path()).unwrap();
  // Written while the scan may still run: added to the filter by the write itself.
  s.put(NS, &digest(7000), b"late", Times::forever(1)).unwrap();
  let started = Instant::now();
  while !s.inner.scanned() {
    assert!(started.elapsed() < Duration::from_secs(10), "the scan never finished");
    thread::sleep(Duration::from_millis(5));
  }
  // What the database held before this process opened it came from the scan.
  for i in 0..5000 {
    assert_eq!(
      s.get(NS, &digest(i)).unwrap().map(|e| e.payload),
      Some(i.to_le_bytes().to_vec()),
      "{i}"
    );
  }
  s.put(NS, &digest(7001), b"later", Times::forever(1)).unwrap();
  s.flush(false).unwrap();
  assert_eq!(s.get(NS, &digest(7000)).unwrap().unwrap().payload, b"late");
  assert_eq!(s.get(NS, &digest(7001)).unwrap().unwrap().payload, b"later");
  let absent = 10_000..20_000;
  let ruled_out = absent
    .clone()
    .filter(|&i| s.inner.present.rules_out(&store_key(NS, &digest(i))))
    .count();
  assert!(ruled_out > 9_900, "{ruled_out}");
  assert!(absent.take(200).all(|i| s.get(NS, &digest(i)).unwrap().is_none()));
}

#[test]
fn a_batch_applied_in_key_order_keeps_the_last_write_of_each_key() {
  let dir = crate::test_dir::TempDir::new();
  {
    let s = DiskStore::open(dir.path()).unwrap();
    // Queued at once, so they meet in a few batches: overwrites, deletes and rewrites of the
    // same keys, interleaved with other keys.
    for round in 0..3u32 {
      for i in 0..500 {
        s.put(NS, &digest(i), format!("r{round}-{i}").as_bytes(), Times::forever(1))
          .unwrap();
        if i % 7 == 0 {
          s.delete(NS, &digest(i)).unwrap();
        }
      }
    }
    for i in (0..500).step_by(49) {
      s.put(NS, &digest(i), format!("last-{i}").as_bytes(), Times::forever(1))
        .unwrap();
    }
    s.flush(false).unwrap();
  }
  // Reopened: every read comes from RocksDB, none from the queue or the recent entries.
  let s = DiskStore::open(dir.path()).unwrap();
  for i in 0..500 {
    let want = if i % 49 == 0 {
      Some(format!("last-{i}"))
    } else if i % 7 == 0 {
      None
    } else {
      Some(format!("r2-{i}"))
    };
    assert_eq!(
      s.get(NS, &digest(i))
        .unwrap()
        .map(|e| String::from_utf8(e.payload).unwrap()),
      want,
      "key {i}"
    );
  }
}

#[test]
fn clear_removes_one_namespace_only() {
  let dir = crate::test_dir::TempDir::new();
  let s = DiskStore::open(dir.path()).unwrap();
  let other = [2u8; 8];
  for i in 0..10 {
    s.put(NS, &digest(i), b"a", Times::forever(1)).unwrap();
    s.put(other, &digest(i), b"b", Times::forever(1)).unwrap();
  }
  s.clear(NS).unwrap();
  assert_eq!(s.len(NS).unwrap(), 0);
  assert_eq!(s.len(other).unwrap(), 10);
}

#[test]
fn a_corrupted_entry_is_a_miss_and_other_entries_survive() {
  let dir = crate::test_dir::TempDir::new();
  let s = DiskStore::open(dir.path()).unwrap();
  s.put(NS, &digest(1), b"good", Times::forever(1)).unwrap();
  s.flush(false).unwrap();
  // Raw bytes written under key `i`'s slot, then read as key `i`.
  let raw_read = |i: u32, raw: Arc<[u8]>| {
    s.inner
      .enqueue_write(store_key(NS, &digest(i)), Some(raw), None)
      .unwrap();
    s.get(NS, &digest(i)).unwrap()
  };
  assert!(raw_read(2, Arc::from(&b"garbage"[..])).is_none());
  // A valid envelope of key 3 stored under key 4's slot is foreign: a miss.
  assert!(raw_read(4, envelope::seal(&digest(3), Times::forever(1), b"three").into()).is_none());
  assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"good");
}

#[test]
fn an_unwritable_path_is_store_unavailable() {
  let dir = crate::test_dir::TempDir::new();
  let file = dir.path().join("file");
  fs::write(&file, b"x").unwrap();
  assert!(matches!(
    DiskStore::open(&file.join("sub")),
    Err(CoreError::StoreUnavailable { .. })
  ));
  assert!(matches!(
    DiskStore::open(&file),
    Err(CoreError::StoreUnavailable { .. })
  ));
}

#[test]
fn recent_entries_follow_overwrites_deletes_and_clear() {
  let dir = crate::test_dir::TempDir::new();
  let s = DiskStore::open(dir.path()).unwrap();
  let other: [u8; 8] = *b"other-ns";
  for (ns, v) in [(NS, b"a1"), (other, b"b1")] {
    s.put(ns, &digest(1), v, Times::forever(1)).unwrap();
  }
  s.flush(false).unwrap();
  // Read once from RocksDB (kept in memory), then changed: reads see every change.
  assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"a1");
  s.put(NS, &digest(1), b"a2", Times::forever(2)).unwrap();
  assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"a2");
  s.flush(false).unwrap();
  assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"a2");
  assert!(s.delete(NS, &digest(1)).unwrap());
  s.flush(false).unwrap();
  assert_eq!(s.get(NS, &digest(1)).unwrap(), None);
  assert_eq!(s.get(other, &digest(1)).unwrap().unwrap().payload, b"b1");
  s.clear(other).unwrap();
  assert_eq!(s.get(other, &digest(1)).unwrap(), None);
}
