//! A guest works through the owner and takes the directory over when the owner goes away.

use std::fs;
use std::thread;
use std::time::Duration;

use super::{digest, NS};
use crate::envelope::Times;
use crate::store::disk::{DiskStore, Role};
use crate::store::Store;

#[test]
fn a_second_opener_in_another_process_role_works_through_the_owner() {
  // Simulate a guest in this process: a second Inner elected against a live owner.
  let dir = crate::test_dir::TempDir::new();
  let owner = DiskStore::open(dir.path()).unwrap();
  owner.put(NS, &digest(1), b"from-owner", Times::forever(1)).unwrap();
  let guest = DiskStore::start(fs::canonicalize(dir.path()).unwrap(), crate::clock::system()).unwrap();
  assert_eq!(guest.role(), Role::Guest);
  assert_eq!(guest.get(NS, &digest(1)).unwrap().unwrap().payload, b"from-owner");
  guest.put(NS, &digest(2), b"from-guest", Times::forever(1)).unwrap();
  guest.flush(false).unwrap();
  assert_eq!(owner.get(NS, &digest(2)).unwrap().unwrap().payload, b"from-guest");
  // The owner keeps recent entries in memory: a guest's overwrite and delete reach them too.
  owner.flush(false).unwrap();
  assert_eq!(owner.get(NS, &digest(1)).unwrap().unwrap().payload, b"from-owner");
  guest.put(NS, &digest(1), b"overwritten", Times::forever(2)).unwrap();
  guest.flush(false).unwrap();
  assert_eq!(owner.get(NS, &digest(1)).unwrap().unwrap().payload, b"overwritten");
  guest.put(NS, &digest(3), b"short-lived", Times::forever(2)).unwrap();
  guest.flush(false).unwrap();
  assert!(owner.get(NS, &digest(3)).unwrap().is_some());
  assert!(guest.delete(NS, &digest(3)).unwrap());
  guest.flush(false).unwrap();
  assert_eq!(owner.get(NS, &digest(3)).unwrap(), None);
  // The owner goes away: the guest takes the directory over and keeps every entry.
  owner.close();
  drop(owner);
  assert_eq!(guest.get(NS, &digest(2)).unwrap().unwrap().payload, b"from-guest");
  assert_eq!(guest.role(), Role::Owner);
  assert_eq!(guest.get(NS, &digest(1)).unwrap().unwrap().payload, b"overwritten");
}

#[test]
fn every_write_a_guest_flushed_while_the_owner_closed_is_there_afterwards() {
  // The owner has writes queued, so its close takes a moment while the guest writes and flushes
  // every 25 writes; the guest takes the directory over. Nothing a flush acknowledged is lost,
  // and no flush fails.
  for run in 0..4u64 {
    let dir = crate::test_dir::TempDir::new();
    let owner = DiskStore::open(dir.path()).unwrap();
    let guest = DiskStore::start(fs::canonicalize(dir.path()).unwrap(), crate::clock::system()).unwrap();
    assert_eq!(guest.role(), Role::Guest);
    for i in 0..20_000 {
      owner.put([2; 8], &digest(i), &[7; 100], Times::forever(1)).unwrap();
    }
    let closer = thread::spawn(move || {
      thread::sleep(Duration::from_millis(2 + run * 3));
      owner.close();
      drop(owner);
    });
    let mut acked = Vec::new();
    for round in 0..400u32 {
      let keys: Vec<u32> = (0..25).map(|j| 100_000 + round * 25 + j).collect();
      for &i in &keys {
        guest.put(NS, &digest(i), &i.to_le_bytes(), Times::forever(1)).unwrap();
      }
      match guest.flush(false) {
        Ok(()) => acked.extend(keys),
        Err(e) => panic!("run {run}: a guest's flush failed while the owner closed: {e}"),
      }
    }
    closer.join().unwrap();
    assert_eq!(
      guest.role(),
      Role::Owner,
      "run {run}: the guest did not take the directory over"
    );
    drop(guest);
    let reopened = DiskStore::open(dir.path()).unwrap();
    let lost: Vec<u32> = acked
      .iter()
      .copied()
      .filter(|&i| reopened.get(NS, &digest(i)).unwrap().is_none())
      .collect();
    assert!(
      lost.is_empty(),
      "run {run}: {} acknowledged writes lost, the first {:?}",
      lost.len(),
      &lost[..lost.len().min(5)]
    );
  }
}
