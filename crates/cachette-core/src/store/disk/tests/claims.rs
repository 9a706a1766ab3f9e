//! Calculation locks: in this process, and across processes through byte-range locks.

use std::fs;
use std::thread;
use std::time::Duration;

use super::{digest, NS};
use crate::envelope::Times;
use crate::file_lock::FileLocks;
use crate::store::disk::{DiskStore, Role};
use crate::store::{Claimed, LockOutcome, ReadOrLock, Store};

#[test]
fn lock_admits_one_thread_and_releases_after_the_write() {
  let dir = crate::test_dir::TempDir::new();
  let s = DiskStore::open(dir.path()).unwrap();
  let d = digest(7);
  assert_eq!(s.lock(&d, 1, Duration::from_secs(1)).unwrap(), LockOutcome::Acquired);
  let s2 = s.clone();
  let waiter = thread::spawn(move || s2.lock(&d, 2, Duration::from_secs(5)).unwrap());
  thread::sleep(Duration::from_millis(20));
  s.put_and_release(NS, &d, b"x", Times::forever(1), 1).unwrap();
  assert_eq!(waiter.join().unwrap(), LockOutcome::Settled(None));
  s.flush(false).unwrap();
  // The byte-range lock was released by the writer: a fresh claimant gets it.
  assert_eq!(s.lock(&d, 3, Duration::from_secs(1)).unwrap(), LockOutcome::Acquired);
  s.release(&d, 3, None);
}

#[test]
fn read_or_lock_hits_claims_a_miss_and_hands_a_waiter_the_value_stored_meanwhile() {
  let dir = crate::test_dir::TempDir::new();
  let s = DiskStore::open(dir.path()).unwrap();
  let d = digest(8);
  let second = Duration::from_secs(1);
  let none = &mut |_: Times, _: &[u8]| panic!("nothing to read yet");
  assert_eq!(
    s.read_or_lock(NS, &d, 1, second, 1, none).unwrap(),
    ReadOrLock::Claimed(Claimed::Acquired)
  );
  // Another thread misses the same key: it waits for the holder, then reads what it stored.
  let s2 = s.clone();
  let waiter = thread::spawn(move || {
    let mut got = Vec::new();
    let r = s2
      .read_or_lock(NS, &d, 2, Duration::from_secs(5), 1, &mut |_, p| got = p.to_vec())
      .unwrap();
    (r, got)
  });
  thread::sleep(Duration::from_millis(20));
  s.put_and_release(NS, &d, b"x", Times::forever(1), 1).unwrap();
  assert_eq!(
    waiter.join().unwrap(),
    (ReadOrLock::Claimed(Claimed::Value), b"x".to_vec())
  );
  let mut got = Vec::new();
  assert_eq!(
    s.read_or_lock(NS, &d, 3, second, 1, &mut |_, p| got = p.to_vec())
      .unwrap(),
    ReadOrLock::Hit
  );
  assert_eq!(got, b"x");
  // A hit takes no lock: a claimant of the key gets it at once.
  assert_eq!(s.lock(&d, 4, second).unwrap(), LockOutcome::Acquired);
  s.release(&d, 4, None);
}

#[test]
#[cfg(target_os = "linux")]
fn an_owner_alone_skips_byte_range_locks_and_takes_them_for_its_claims_when_a_guest_joins() {
  let dir = crate::test_dir::TempDir::new();
  let owner = DiskStore::open(dir.path()).unwrap();
  let second = Duration::from_secs(1);
  // Another descriptor of the lock file stands for another process's view of the bytes.
  let other = FileLocks::open(&dir.path().join(".locks")).unwrap();
  assert_eq!(owner.lock(&digest(1), 1, second).unwrap(), LockOutcome::Acquired);
  assert!(
    other.try_lock(&digest(1)).unwrap(),
    "no other process yet: no byte taken"
  );
  other.unlock(&digest(1));
  // A guest joins: the claim in progress takes its byte before the guest's first answer.
  let guest = DiskStore::start(fs::canonicalize(dir.path()).unwrap(), crate::clock::system()).unwrap();
  assert_eq!(guest.role(), Role::Guest);
  assert!(!other.try_lock(&digest(1)).unwrap());
  assert_eq!(
    guest.lock(&digest(1), 2, Duration::from_millis(50)).unwrap(),
    LockOutcome::TimedOut
  );
  // Later claims take their byte at once; releases free them.
  assert_eq!(owner.lock(&digest(2), 1, second).unwrap(), LockOutcome::Acquired);
  assert!(!other.try_lock(&digest(2)).unwrap());
  owner.release(&digest(1), 1, None);
  owner.release(&digest(2), 1, None);
  assert_eq!(guest.lock(&digest(1), 2, second).unwrap(), LockOutcome::Acquired);
  assert!(other.try_lock(&digest(2)).unwrap());
  guest.release(&digest(1), 2, None);
}
