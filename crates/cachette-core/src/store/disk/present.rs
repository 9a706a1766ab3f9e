//! The key filter never rules out a key the directory holds: every key is added before it is
//! queued, what the database held before is added by a scan, and until that scan completes the
//! filter rules nothing out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use rocksdb::ReadOptions;

use super::{Conn, Inner};
use crate::key::STORE_KEY_LEN;

/// Words of [`Present`]: 4 MiB, one 64-bit word per 8 bytes.
const PRESENT_WORDS: usize = 1 << 19;

/// The keys the directory may hold, as a blocked Bloom filter (3 bits in one 64-bit word per
/// key), kept by the owner so that a miss, the read before every store, skips RocksDB.
///
/// Every key this process queues is added before it is queued, and every write to the
/// directory passes through the owner's queue; what the database held before is added by a scan
/// that starts once this process owns it. Until that scan finishes, the filter rules nothing out.
/// Deleted and expired keys stay in it: a false "maybe", which only costs a RocksDB read. About
/// 1 read in 1,600 of absent keys still reaches RocksDB with a million keys stored, 1 in 5 with
/// ten million.
pub(super) struct Present {
  words: Box<[AtomicU64]>,
  complete: AtomicBool,
}

impl Present {
  pub(super) fn new() -> Self {
    Present {
      words: (0..PRESENT_WORDS).map(|_| AtomicU64::new(0)).collect(),
      complete: AtomicBool::new(false),
    }
  }

  /// The word and the three bits of a store key (its digest bytes are uniform already).
  fn place(key: &[u8]) -> (usize, u64) {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[8..16]);
    let h = u64::from_le_bytes(b);
    let word = (h as usize) & (PRESENT_WORDS - 1);
    let bits = (1u64 << ((h >> 40) & 63)) | (1u64 << ((h >> 46) & 63)) | (1u64 << ((h >> 52) & 63));
    (word, bits)
  }

  pub(super) fn add(&self, key: &[u8]) {
    let (word, bits) = Self::place(key);
    // Ordered by the locks that publish the key (the queue's, the scan's completion).
    self.words[word].fetch_or(bits, Ordering::Relaxed);
  }

  /// Whether the scan of the database completed (from then on, keys are ruled out).
  pub(super) fn is_complete(&self) -> bool {
    self.complete.load(Ordering::Acquire)
  }

  /// True when `key` is certainly absent from the database and from the queue.
  pub(super) fn rules_out(&self, key: &[u8]) -> bool {
    if !self.complete.load(Ordering::Acquire) {
      return false;
    }
    let (word, bits) = Self::place(key);
    self.words[word].load(Ordering::Relaxed) & bits != bits
  }
}

impl Inner {
  /// When this process owns the directory, adds the keys its database holds to `present` on a
  /// thread of its own; `present` rules keys out once that is done.
  pub(super) fn start_scan(self: &Arc<Self>) {
    let Some(Conn::Owner { db, .. }) = &*self.conn.read() else {
      return;
    };
    let (db, inner) = (db.clone(), self.clone());
    let scan = thread::Builder::new().name("cachette-disk-scan".into()).spawn(move || {
      let mut ro = ReadOptions::default();
      ro.fill_cache(false);
      ro.set_verify_checksums(false);
      let mut it = db.raw_iterator_opt(ro);
      it.seek_to_first();
      let mut n = 0u32;
      while let Some(key) = it.key() {
        if key.len() == 8 + STORE_KEY_LEN {
          inner.present.add(key);
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(4096) && inner.scan_stop.load(Ordering::Relaxed) {
          return;
        }
        it.next();
      }
      // A failed scan leaves the filter incomplete: every read keeps asking RocksDB.
      if it.status().is_ok() {
        inner.present.complete.store(true, Ordering::Release);
      }
    });
    // Without a thread the filter stays incomplete, which only costs speed.
    if let Ok(scan) = scan {
      *self.scan.lock() = Some(scan);
    }
  }

  #[cfg(test)]
  pub(super) fn scanned(&self) -> bool {
    self.present.complete.load(Ordering::Acquire)
  }
}
