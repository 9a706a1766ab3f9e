//! How entries lie in RocksDB: a key is the namespace's 8 bytes, then the digest's first
//! `STORE_KEY_LEN` bytes, so a namespace is one contiguous key range; the sealed value repeats
//! the rest of the digest, so a read never returns another key's value.

use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::envelope::{self, Times};
use crate::key::{Digest, STORE_KEY_LEN};

pub(super) type StoreKey = [u8; 8 + STORE_KEY_LEN];

/// Seals an entry straight into the one buffer that the queue, the pending map and
/// [`Recent`](super::recent::Recent) share (sealing into a `Vec` first would cost an allocation
/// and a copy per write).
pub(super) fn seal_shared(digest: &Digest, times: Times, payload: &[u8]) -> Arc<[u8]> {
  let mut sealed = Arc::<[u8]>::new_uninit_slice(envelope::sealed_len(times, payload.len()));
  let slot = Arc::get_mut(&mut sealed).expect("a new Arc has one owner");
  for b in slot.iter_mut() {
    b.write(0);
  }
  // SAFETY: every byte was initialised just above, and MaybeUninit<u8> has u8's layout.
  let bytes = unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(slot) as *mut [u8]) };
  envelope::seal_into(digest, times, payload, bytes);
  // SAFETY: initialised above.
  unsafe { sealed.assume_init() }
}

pub(super) fn store_key(ns: [u8; 8], digest: &Digest) -> StoreKey {
  let mut k = [0u8; 8 + STORE_KEY_LEN];
  k[..8].copy_from_slice(&ns);
  k[8..].copy_from_slice(&digest[..STORE_KEY_LEN]);
  k
}

/// The half-open key range of one namespace.
pub(super) fn ns_range(ns: [u8; 8]) -> (Vec<u8>, Vec<u8>) {
  let from = ns.to_vec();
  let to = match u64::from_be_bytes(ns).checked_add(1) {
    Some(n) => n.to_be_bytes().to_vec(),
    None => vec![0xff; 9],
  };
  (from, to)
}
