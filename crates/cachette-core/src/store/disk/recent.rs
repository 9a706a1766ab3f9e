//! The owner's recent entries stay exact because every write to the directory passes through
//! the owner's queue: the writer updates them after each batch, and a read adds what it found
//! only if nothing was queued since it began.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::layout::StoreKey;
use crate::key::{DigestHashing, STORE_KEY_LEN};

/// Bytes of recent entries the owner keeps in memory (see [`Recent`]).
const RECENT_BYTES: usize = 32 << 20;
const RECENT_SHARDS: usize = 16;

/// The entries the owner process read or wrote lately, sealed as on disk, so a hit skips
/// RocksDB. It stays exact because every write to the directory, this process's or another's,
/// passes through the owner's queue: the writer updates it after applying each batch, and a
/// reader adds what it read from RocksDB only if nothing was queued since it began (checked
/// under the shard lock the writer takes too). Over budget, a shard drops arbitrary entries.
pub(super) struct Recent {
  shards: Vec<Mutex<RecentShard>>,
}

#[derive(Default)]
struct RecentShard {
  map: HashMap<StoreKey, Arc<[u8]>, DigestHashing>,
  bytes: usize,
}

/// What an entry costs in [`Recent`]'s budget: its bytes, its key and the map's bookkeeping.
fn recent_cost(value: &[u8]) -> usize {
  value.len() + 8 + STORE_KEY_LEN + 48
}

impl Recent {
  pub(super) fn new() -> Self {
    Recent {
      shards: (0..RECENT_SHARDS).map(|_| Mutex::new(RecentShard::default())).collect(),
    }
  }

  fn shard(&self, key: &StoreKey) -> &Mutex<RecentShard> {
    &self.shards[key[8] as usize % RECENT_SHARDS]
  }

  pub(super) fn get(&self, key: &StoreKey) -> Option<Arc<[u8]>> {
    self.shard(key).lock().map.get(key).cloned()
  }

  /// Adds `value` unless `changed()` says a write was queued meanwhile.
  pub(super) fn offer(&self, key: StoreKey, value: Arc<[u8]>, changed: impl FnOnce() -> bool) {
    let mut shard = self.shard(&key).lock();
    if !changed() {
      shard.put(key, value);
    }
  }

  pub(super) fn put(&self, key: StoreKey, value: Arc<[u8]>) {
    self.shard(&key).lock().put(key, value);
  }

  pub(super) fn remove(&self, key: &StoreKey) {
    let mut shard = self.shard(key).lock();
    if let Some(old) = shard.map.remove(key) {
      shard.bytes -= recent_cost(&old);
    }
  }

  /// Drops every entry whose key falls in `from..to`.
  pub(super) fn remove_range(&self, from: &[u8], to: &[u8]) {
    for shard in &self.shards {
      let mut shard = shard.lock();
      let RecentShard { map, bytes } = &mut *shard;
      map.retain(|k, v| {
        let keep = !(k[..] >= *from && k[..] < *to);
        if !keep {
          *bytes -= recent_cost(v);
        }
        keep
      });
    }
  }
}

impl RecentShard {
  fn put(&mut self, key: StoreKey, value: Arc<[u8]>) {
    self.bytes += recent_cost(&value);
    if let Some(old) = self.map.insert(key, value) {
      self.bytes -= recent_cost(&old);
    }
    let budget = RECENT_BYTES / RECENT_SHARDS;
    if self.bytes > budget {
      let mut evict = Vec::new();
      let mut freed = 0;
      for (k, v) in &self.map {
        if self.bytes - freed <= budget * 3 / 4 {
          break;
        }
        freed += recent_cost(v);
        evict.push(*k);
      }
      for k in evict {
        self.map.remove(&k);
      }
      self.bytes -= freed;
    }
  }
}

#[cfg(test)]
mod tests;
