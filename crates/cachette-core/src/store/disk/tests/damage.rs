//! Damaged files heal: an entry that cannot be read is a miss, a damaged database is repaired
//! (or set aside) when it opens and in place while it is open, and nothing reads another value.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::{digest, NS};
use crate::envelope::Times;
use crate::store::disk::{Conn, DiskStore, Role};
use crate::store::Store;

const KEYS: u32 = 3000;

fn value(i: u32, round: u32) -> Vec<u8> {
  format!("{round}:{i}:{}", "v".repeat(150)).into_bytes()
}

/// Runs `f` on the owner's database.
fn with_db(s: &DiskStore, f: impl FnOnce(&rocksdb::DB)) {
  match &*s.inner.conn.read() {
    Some(Conn::Owner { db, .. }) => f(db),
    _ => panic!("not the owner"),
  }
}

/// A closed directory holding `KEYS` entries of round 0 in SST files (not only in the WAL).
fn written(dir: &Path) {
  let s = DiskStore::open(dir).unwrap();
  for i in 0..KEYS {
    s.put(NS, &digest(i), &value(i, 0), Times::forever(1)).unwrap();
  }
  s.flush(true).unwrap();
  with_db(&s, |db| db.flush().unwrap());
  s.close();
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
  let mut v: Vec<PathBuf> = fs::read_dir(dir)
    .unwrap()
    .flatten()
    .map(|e| e.path())
    .filter(|p| p.to_string_lossy().ends_with(suffix))
    .collect();
  v.sort();
  v
}

/// Zeroes 4 KiB in the middle of the largest SST file of `dir`.
fn zero_sst_middle(dir: &Path) {
  let sst = files_ending(dir, ".sst")
    .into_iter()
    .max_by_key(|p| fs::metadata(p).unwrap().len())
    .expect("an SST file");
  let len = fs::metadata(&sst).unwrap().len();
  assert!(len > 64 << 10, "SST of {len} bytes");
  let mut f = fs::OpenOptions::new().write(true).open(&sst).unwrap();
  f.seek(SeekFrom::Start(len / 2)).unwrap();
  f.write_all(&[0u8; 4096]).unwrap();
}

/// Changes one byte inside a value in the middle of the largest SST file of `dir`: the block
/// still parses (reads skip RocksDB's checksums; the entry's own checksum catches it), but a
/// compaction, which checks every block, meets the damage.
fn flip_in_value(dir: &Path) {
  let sst = files_ending(dir, ".sst")
    .into_iter()
    .max_by_key(|p| fs::metadata(p).unwrap().len())
    .expect("an SST file");
  let mut bytes = fs::read(&sst).unwrap();
  let from = bytes.len() / 2;
  let at = from
    + bytes[from..]
      .windows(32)
      .position(|w| w.iter().all(|&b| b == b'v'))
      .expect("a value");
  bytes[at + 16] = b'w';
  fs::write(&sst, bytes).unwrap();
}

/// Reads every key: counts right values and misses, and fails on a wrong value or an error.
fn read_all(s: &DiskStore, round: u32) -> (u32, u32) {
  let (mut right, mut missing) = (0, 0);
  for i in 0..KEYS {
    match s.get(NS, &digest(i)) {
      Ok(Some(e)) => {
        assert_eq!(e.payload, value(i, round), "key {i} read another value");
        right += 1;
      }
      Ok(None) => missing += 1,
      Err(e) => panic!("key {i}: {e}"),
    }
  }
  (right, missing)
}

fn wait_healed(s: &DiskStore) {
  let started = Instant::now();
  while s.inner.healing.load(std::sync::atomic::Ordering::SeqCst) {
    assert!(started.elapsed() < Duration::from_secs(30), "the repair never ended");
    thread::sleep(Duration::from_millis(5));
  }
}

#[test]
fn an_entry_in_a_zeroed_block_of_an_sst_reads_as_a_miss_and_the_directory_heals() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  zero_sst_middle(dir.path());
  let s = DiskStore::open(dir.path()).unwrap();
  let (right, missing) = read_all(&s, 0);
  assert!(missing > 0, "no entry met the damage");
  assert!(right > 0);
  assert!(s.damage() > 0, "the damage was not counted");
  wait_healed(&s);
  // Repaired in place: the damaged file went to lost/, reads meet no damage any more.
  assert_eq!(s.role(), Role::Owner);
  assert!(!files_ending(&dir.path().join("lost"), ".sst").is_empty());
  let damage = s.damage();
  read_all(&s, 0);
  assert_eq!(s.damage(), damage, "damage met again after the repair");
  // Writes work, and so do the compactions that would have met the damaged block.
  for i in 0..KEYS {
    s.put(NS, &digest(i), &value(i, 1), Times::forever(2)).unwrap();
  }
  s.flush(true).unwrap();
  with_db(&s, |db| {
    db.flush().unwrap();
    db.compact_range(None::<&[u8]>, None::<&[u8]>);
  });
  assert_eq!(read_all(&s, 1), (KEYS, 0));
  s.close();
  drop(s);
  let s = DiskStore::open(dir.path()).unwrap();
  assert_eq!(read_all(&s, 1), (KEYS, 0));
}

#[test]
fn a_compaction_that_meets_damage_repairs_the_directory_and_writes_go_on() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  flip_in_value(dir.path());
  let s = DiskStore::open(dir.path()).unwrap();
  // (Not read first: a block read into RocksDB's cache unchecked would not be checked again.)
  // A second file over the same keys, merged with the first: the compaction checks every block,
  // and RocksDB then refuses writes until the damage is gone.
  let overwrite = |round| {
    for i in 0..KEYS {
      s.put(NS, &digest(i), &value(i, round), Times::forever(2)).unwrap();
    }
  };
  overwrite(1);
  s.flush(true).unwrap();
  with_db(&s, |db| {
    db.flush().unwrap();
    db.compact_range(None::<&[u8]>, None::<&[u8]>);
  });
  // The next write is refused with the compaction's error: counted, and the repair starts.
  overwrite(2);
  let _ = s.flush(true);
  assert!(s.damage() > 0, "the compaction's damage was not met");
  wait_healed(&s);
  overwrite(3);
  s.flush(true).unwrap();
  with_db(&s, |db| {
    db.flush().unwrap();
    db.compact_range(None::<&[u8]>, None::<&[u8]>);
  });
  overwrite(4);
  s.flush(true).unwrap();
  assert_eq!(read_all(&s, 4), (KEYS, 0));
}

#[test]
fn a_deleted_manifest_is_repaired_when_the_directory_opens() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  for m in files_ending(dir.path(), "") {
    if m.file_name().unwrap().to_string_lossy().starts_with("MANIFEST-") {
      fs::remove_file(m).unwrap();
    }
  }
  let s = DiskStore::open(dir.path()).unwrap();
  assert_eq!(s.role(), Role::Owner);
  // Rebuilt from the SST files: every entry is there.
  assert_eq!(read_all(&s, 0), (KEYS, 0));
}

#[test]
fn a_current_naming_a_missing_manifest_is_repaired_when_the_directory_opens() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  fs::write(dir.path().join("CURRENT"), b"MANIFEST-999999\n").unwrap();
  let s = DiskStore::open(dir.path()).unwrap();
  assert_eq!(read_all(&s, 0), (KEYS, 0));
  s.put(NS, &digest(1), &value(1, 1), Times::forever(2)).unwrap();
  s.flush(true).unwrap();
}

#[test]
fn a_garbled_current_is_repaired_when_the_directory_opens() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  // As a torn write or a disk error could leave it.
  fs::write(dir.path().join("CURRENT"), b"\x00garbage").unwrap();
  let s = DiskStore::open(dir.path()).unwrap();
  assert_eq!(read_all(&s, 0), (KEYS, 0));
}

#[test]
fn a_database_that_cannot_be_repaired_is_set_aside_and_a_fresh_one_opens() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  // A directory where CURRENT belongs: neither opened nor replaced by a repair.
  fs::remove_file(dir.path().join("CURRENT")).unwrap();
  fs::create_dir(dir.path().join("CURRENT")).unwrap();
  let s = DiskStore::open(dir.path()).unwrap();
  assert_eq!(s.role(), Role::Owner);
  assert_eq!(read_all(&s, 0), (0, KEYS), "a fresh cache starts empty");
  s.put(NS, &digest(2), b"w", Times::forever(1)).unwrap();
  assert_eq!(s.get(NS, &digest(2)).unwrap().unwrap().payload, b"w");
  let aside: Vec<_> = fs::read_dir(dir.path())
    .unwrap()
    .flatten()
    .filter(|e| e.file_name().to_string_lossy().starts_with(".corrupt-"))
    .collect();
  assert_eq!(aside.len(), 1, "the damaged files were kept aside");
  assert!(!files_ending(&aside[0].path(), ".sst").is_empty());
}

#[test]
fn a_directory_in_place_of_rocksdb_lock_is_set_aside_at_once() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  fs::remove_file(dir.path().join("LOCK")).unwrap();
  fs::create_dir(dir.path().join("LOCK")).unwrap();
  let s = DiskStore::open(dir.path()).unwrap();
  assert_eq!(s.role(), Role::Owner);
  assert_eq!(read_all(&s, 0), (KEYS, 0));
  assert!(fs::metadata(dir.path().join("LOCK")).unwrap().is_file());
}

#[test]
fn damage_read_by_a_guest_is_a_miss_and_heals_in_the_owner() {
  let dir = crate::test_dir::TempDir::new();
  written(dir.path());
  zero_sst_middle(dir.path());
  let owner = DiskStore::open(dir.path()).unwrap();
  let guest = DiskStore::start(fs::canonicalize(dir.path()).unwrap(), crate::clock::system()).unwrap();
  assert_eq!(guest.role(), Role::Guest);
  let (_, missing) = read_all(&guest, 0);
  assert!(missing > 0);
  assert!(owner.damage() > 0);
  wait_healed(&owner);
  // The guest reconnected to the repaired owner and writes through it.
  guest.put(NS, &digest(7), &value(7, 1), Times::forever(2)).unwrap();
  guest.flush(true).unwrap();
  assert_eq!(owner.get(NS, &digest(7)).unwrap().unwrap().payload, value(7, 1));
  assert_eq!(guest.role(), Role::Guest);
}
