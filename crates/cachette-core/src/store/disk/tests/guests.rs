//! A guest works through the owner and takes the directory over when the owner goes away.

use std::fs;

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
