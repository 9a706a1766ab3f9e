//! A disk namespace opened with an integrity key: entries another writer of the directory put
//! there, with valid envelopes but without the key's MAC, read as misses, queued or on disk.

use std::sync::Arc;

use super::{digest, NS};
use crate::envelope::{self, Times};
use crate::integrity::IntegrityKey;
use crate::store::disk::layout::store_key;
use crate::store::disk::DiskStore;
use crate::store::signed::SignedStore;
use crate::store::Store;

#[test]
fn swapped_altered_and_unkeyed_envelopes_on_disk_read_as_counted_misses() {
  let dir = crate::test_dir::TempDir::new();
  let disk = DiskStore::open(dir.path()).unwrap();
  let key = IntegrityKey::derive(b"a disk integrity key of 32 bytes!").unwrap();
  let signed = SignedStore::new(disk.clone(), key.clone());
  let t = Times::forever(1);
  for i in 0..3 {
    signed.put(NS, &digest(i), format!("v{i}").as_bytes(), t).unwrap();
  }
  // What a writer without the key can make of them: envelopes that pass every envelope check.
  let stored = |i: u32| disk.get(NS, &digest(i)).unwrap().unwrap().payload;
  let mut altered = stored(1);
  altered[0] ^= 1;
  let forged: [(u32, Vec<u8>); 3] = [
    (0, envelope::seal(&digest(0), t, &stored(2))), // key 2's value and tag, under key 0
    (1, envelope::seal(&digest(1), t, &altered)),
    (2, envelope::seal(&digest(2), t, b"v2 without a tag")),
  ];
  for (i, raw) in forged {
    disk
      .inner
      .enqueue_write(store_key(NS, &digest(i)), Some(Arc::from(raw)), None)
      .unwrap();
  }
  let misses = |when: &str| {
    for i in 0..3 {
      assert_eq!(signed.get(NS, &digest(i)).unwrap(), None, "key {i}, {when}");
    }
    assert_eq!(signed.take_rejected(), 3, "{when}");
  };
  misses("queued");
  disk.flush(true).unwrap();
  misses("applied");
  drop(signed);
  disk.close();
  drop(disk);
  let disk = DiskStore::open(dir.path()).unwrap();
  let signed = SignedStore::new(disk.clone(), key);
  for i in 0..3 {
    assert_eq!(signed.get(NS, &digest(i)).unwrap(), None, "key {i} after a reopen");
  }
  assert_eq!(signed.take_rejected(), 3);
  signed.put(NS, &digest(0), b"computed", t).unwrap();
  assert_eq!(signed.get(NS, &digest(0)).unwrap().unwrap().payload, b"computed");
}
