//! Recent entries keep within their byte budget and refuse what a read found once a write
//! overtook it.

use std::sync::Arc;

use super::*;
use crate::store::disk::layout::store_key;
use crate::store::disk::tests::{digest, NS};

#[test]
fn recent_entries_stay_within_their_budget_and_refuse_a_read_overtaken_by_a_write() {
  let r = Recent::new();
  let value: Arc<[u8]> = vec![7u8; 4096].into();
  for i in 0..(2 * RECENT_BYTES / 4096) as u32 {
    r.put(store_key(NS, &digest(i)), value.clone());
  }
  for shard in &r.shards {
    let shard = shard.lock();
    assert!(shard.bytes <= RECENT_BYTES / RECENT_SHARDS);
    assert_eq!(shard.bytes, shard.map.values().map(|v| recent_cost(v)).sum::<usize>());
  }
  let key = store_key(NS, &digest(u32::MAX));
  r.offer(key, value.clone(), || true);
  assert!(r.get(&key).is_none(), "a write was queued since the read: not kept");
  r.offer(key, value, || false);
  assert!(r.get(&key).is_some());
}
