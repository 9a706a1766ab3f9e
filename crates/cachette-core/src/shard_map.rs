//! A sharded concurrent map from key digests to byte values, bounded by entry count and by
//! bytes (least recently used entries go first), with per-entry stale/expiry times.
//!
//! It backs `shared: true`: one map per namespace per process, used by every worker thread,
//! its values held off the V8 heap.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::envelope::{Freshness, Times};
use crate::key::Digest;

/// Bounds of a map; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
  pub max_entries: Option<usize>,
  pub max_bytes: Option<usize>,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
  pub value: Arc<[u8]>,
  pub times: Times,
  pub freshness: Freshness,
}

const NIL: usize = usize::MAX;
/// Bytes counted per entry on top of its value: none, so `maxBytes` bounds the encoded values
/// themselves, as the option promises (keys, times and links are not counted).
const ENTRY_OVERHEAD: usize = 0;

struct Node {
  key: Digest,
  value: Arc<[u8]>,
  times: Times,
  prev: usize,
  next: usize,
}

/// One shard: a hash index into a slab of nodes linked most- to least-recently used.
struct Shard {
  index: HashMap<Digest, usize>,
  nodes: Vec<Node>,
  free: Vec<usize>,
  head: usize,
  tail: usize,
  bytes: usize,
}

impl Shard {
  fn new() -> Self {
    Shard {
      index: HashMap::new(),
      nodes: Vec::new(),
      free: Vec::new(),
      head: NIL,
      tail: NIL,
      bytes: 0,
    }
  }

  fn unlink(&mut self, i: usize) {
    let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
    if prev == NIL {
      self.head = next
    } else {
      self.nodes[prev].next = next
    }
    if next == NIL {
      self.tail = prev
    } else {
      self.nodes[next].prev = prev
    }
  }

  fn push_front(&mut self, i: usize) {
    self.nodes[i].prev = NIL;
    self.nodes[i].next = self.head;
    if self.head != NIL {
      self.nodes[self.head].prev = i;
    }
    self.head = i;
    if self.tail == NIL {
      self.tail = i;
    }
  }

  fn remove_at(&mut self, i: usize) {
    self.unlink(i);
    let key = self.nodes[i].key;
    self.index.remove(&key);
    self.bytes -= self.nodes[i].value.len() + ENTRY_OVERHEAD;
    self.nodes[i].value = Arc::from(&[][..]);
    self.free.push(i);
  }

  fn len(&self) -> usize {
    self.index.len()
  }
}

/// The map. Cheap to share behind an `Arc`.
pub struct ShardMap {
  shards: Box<[Mutex<Shard>]>,
  per_shard: Bounds,
  clock: Arc<dyn Clock>,
}

impl ShardMap {
  /// Creates a map. Small bounds get a single shard so the LRU order is exact;
  /// large ones are split over 16 shards, each holding its share.
  pub fn new(bounds: Bounds, clock: Arc<dyn Clock>) -> Self {
    let small = bounds.max_entries.is_some_and(|n| n < 4096) || bounds.max_bytes.is_some_and(|b| b < (16 << 20));
    let n = if small { 1 } else { 16 };
    let per_shard = Bounds {
      max_entries: bounds.max_entries.map(|m| m.div_ceil(n)),
      max_bytes: bounds.max_bytes.map(|m| m.div_ceil(n)),
    };
    ShardMap {
      shards: (0..n).map(|_| Mutex::new(Shard::new())).collect(),
      per_shard,
      clock,
    }
  }

  fn shard(&self, key: &Digest) -> &Mutex<Shard> {
    &self.shards[key[0] as usize % self.shards.len()]
  }

  /// Reads `key`, marking it most recently used. Expired entries are removed and read as absent.
  pub fn get(&self, key: &Digest) -> Option<Found> {
    let now = self.clock.now_ms();
    let mut s = self.shard(key).lock();
    let i = *s.index.get(key)?;
    let freshness = s.nodes[i].times.freshness(now);
    if freshness == Freshness::Expired {
      s.remove_at(i);
      return None;
    }
    if s.head != i {
      s.unlink(i);
      s.push_front(i);
    }
    let node = &s.nodes[i];
    Some(Found {
      value: node.value.clone(),
      times: node.times,
      freshness,
    })
  }

  /// Stores `value` under `key`, then evicts least recently used entries while over bounds.
  /// A value larger than the whole byte bound is not stored; returns whether it was.
  pub fn insert(&self, key: Digest, value: Arc<[u8]>, times: Times) -> bool {
    let size = value.len() + ENTRY_OVERHEAD;
    if self.per_shard.max_bytes.is_some_and(|m| size > m) {
      self.remove(&key);
      return false;
    }
    let mut s = self.shard(&key).lock();
    if let Some(&i) = s.index.get(&key) {
      s.bytes = s.bytes - s.nodes[i].value.len() + value.len();
      s.nodes[i].value = value;
      s.nodes[i].times = times;
      if s.head != i {
        s.unlink(i);
        s.push_front(i);
      }
    } else {
      let node = Node {
        key,
        value,
        times,
        prev: NIL,
        next: NIL,
      };
      let i = match s.free.pop() {
        Some(i) => {
          s.nodes[i] = node;
          i
        }
        None => {
          s.nodes.push(node);
          s.nodes.len() - 1
        }
      };
      s.index.insert(key, i);
      s.bytes += size;
      s.push_front(i);
    }
    let Bounds { max_entries, max_bytes } = self.per_shard;
    while s.tail != NIL && (max_entries.is_some_and(|m| s.len() > m) || max_bytes.is_some_and(|m| s.bytes > m)) {
      let t = s.tail;
      s.remove_at(t);
    }
    true
  }

  /// Removes `key`; returns whether it was present.
  pub fn remove(&self, key: &Digest) -> bool {
    let mut s = self.shard(key).lock();
    match s.index.get(key).copied() {
      Some(i) => {
        s.remove_at(i);
        true
      }
      None => false,
    }
  }

  /// Removes every entry.
  pub fn clear(&self) {
    for s in self.shards.iter() {
      *s.lock() = Shard::new();
    }
  }

  /// Number of entries (expired ones not yet reclaimed included).
  pub fn len(&self) -> usize {
    self.shards.iter().map(|s| s.lock().len()).sum()
  }

  /// True when the map holds no entry.
  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  /// Bytes accounted to the entries.
  pub fn bytes(&self) -> usize {
    self.shards.iter().map(|s| s.lock().bytes).sum()
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::clock::ManualClock;
  use crate::envelope::NEVER;

  fn k(i: u32) -> Digest {
    *blake3::hash(&i.to_be_bytes()).as_bytes()
  }

  fn v(n: usize) -> Arc<[u8]> {
    vec![1u8; n].into()
  }

  fn map(bounds: Bounds) -> (ShardMap, ManualClock) {
    let clock = ManualClock::new(1_000);
    (ShardMap::new(bounds, Arc::new(clock.clone())), clock)
  }

  #[test]
  fn evicts_the_least_recently_used_entry_beyond_max_entries() {
    let (m, _) = map(Bounds {
      max_entries: Some(3),
      max_bytes: None,
    });
    for i in 0..3 {
      m.insert(k(i), v(1), Times::forever(0));
    }
    assert!(m.get(&k(0)).is_some()); // 0 is now most recent; 1 is the oldest
    m.insert(k(3), v(1), Times::forever(0));
    assert_eq!(m.len(), 3);
    assert!(m.get(&k(1)).is_none());
    for i in [0, 2, 3] {
      assert!(m.get(&k(i)).is_some(), "{i} was evicted");
    }
  }

  #[test]
  fn evicts_by_bytes_and_refuses_values_larger_than_the_bound() {
    let (m, _) = map(Bounds {
      max_entries: None,
      max_bytes: Some(3 * (100 + ENTRY_OVERHEAD)),
    });
    for i in 0..5 {
      m.insert(k(i), v(100), Times::forever(0));
    }
    assert_eq!(m.len(), 3);
    assert!(m.bytes() <= 3 * (100 + ENTRY_OVERHEAD));
    assert!(!m.insert(k(9), v(10_000), Times::forever(0)));
    assert!(m.get(&k(9)).is_none());
    assert_eq!(m.len(), 3);
  }

  #[test]
  fn entries_go_stale_then_expire_with_the_clock() {
    let (m, clock) = map(Bounds::default());
    m.insert(
      k(1),
      v(1),
      Times {
        created_ms: 1_000,
        stale_at_ms: 1_100,
        expires_ms: 1_200,
      },
    );
    assert_eq!(m.get(&k(1)).unwrap().freshness, Freshness::Fresh);
    clock.advance(150);
    assert_eq!(m.get(&k(1)).unwrap().freshness, Freshness::Stale);
    clock.advance(100);
    assert!(m.get(&k(1)).is_none());
    assert_eq!(m.len(), 0, "expired entry was not reclaimed on read");
  }

  #[test]
  fn replacing_a_value_keeps_byte_accounting_exact() {
    let (m, _) = map(Bounds::default());
    m.insert(k(1), v(10), Times::forever(0));
    m.insert(
      k(1),
      v(30),
      Times {
        created_ms: 0,
        stale_at_ms: NEVER,
        expires_ms: NEVER,
      },
    );
    assert_eq!(m.bytes(), 30 + ENTRY_OVERHEAD);
    assert!(m.remove(&k(1)));
    assert_eq!(m.bytes(), 0);
  }

  #[test]
  fn many_threads_insert_and_read_concurrently() {
    let m = Arc::new(ShardMap::new(
      Bounds {
        max_entries: Some(100_000),
        max_bytes: None,
      },
      crate::clock::system(),
    ));
    let hs: Vec<_> = (0..8u32)
      .map(|t| {
        let m = m.clone();
        std::thread::spawn(move || {
          for i in 0..5_000u32 {
            let key = k(t * 10_000 + i);
            m.insert(key, v(8), Times::forever(0));
            assert!(m.get(&key).is_some());
          }
        })
      })
      .collect();
    for h in hs {
      h.join().unwrap();
    }
    assert_eq!(m.len(), 40_000);
  }
}
