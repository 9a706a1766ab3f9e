//! Tests of the disk store, by concern; each test opens its own temporary directory.

use crate::key::{Digest, Keyspace};

mod claims;
mod damage;
mod entries;
mod expiry;
mod guests;
mod integrity;
mod private;

pub(super) fn digest(i: u32) -> Digest {
  Keyspace::new("disk-test").digest_encoded(&i.to_be_bytes())
}

pub(super) const NS: [u8; 8] = [1; 8];
