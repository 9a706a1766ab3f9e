//! RocksDB's options and how its errors read. The compaction filter judges expiry by the
//! store's clock, the one reads judge by, so it never reclaims an entry a read would return.

use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, CompactionDecision, DBCompressionType, Options};

use crate::clock::Clock;
use crate::envelope::{self, Freshness};

pub(super) fn is_lock_error(e: &rocksdb::Error) -> bool {
  let s = e.to_string();
  s.contains("LOCK") && (s.contains("lock") || s.contains("Resource temporarily unavailable"))
}

/// `DB::open` rotates and trims RocksDB's info log (`LOG`, `LOG.old.*`) before it takes the
/// `LOCK`, so processes opening one directory at the same moment (a fresh start, or guests
/// electing a new owner) can each try to delete the same old log file, and the slower one's
/// open fails with ENOENT. Nothing in the database was touched yet: open again.
pub(super) fn is_info_log_race(e: &rocksdb::Error) -> bool {
  let s = e.to_string();
  s.contains("No such file or directory") && s.contains("LOG")
}

pub(super) fn db_options(clock: Arc<dyn Clock>) -> Options {
  // Keys share their first 8 bytes (the namespace), so each memtable insert starts from where
  // the previous one of its namespace went, a search of O(log distance) instead of a descent
  // from the skip list's top: a batch is applied in key order, so the distance is short. (This
  // option has no setter; parsed from a string, it must come first: the Rust-side objects
  // set below, such as the compaction filter, live in the `Options` that owns them.)
  let mut o = Options::default()
    .get_options_from_string("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.8")
    .unwrap_or_default();
  o.create_if_missing(true);
  // Fresh data (flushes, the first compaction) is written uncompressed: compressing every
  // flush was a fifth of the CPU of a stream of misses, and those levels are rewritten soon.
  o.set_compression_per_level(&[
    DBCompressionType::None,
    DBCompressionType::None,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
  ]);
  o.set_keep_log_file_num(2);
  o.set_max_log_file_size(1 << 20);
  // Memtables of 8 MiB: each write searches the memtable's skip list, and in a stream of
  // misses that search grew with its size (1.8 µs of writer CPU per entry at 4 MiB, 2.4 at 16,
  // 3.2 at 64, measured). Eight flushed files, not four, before one is merged into the next
  // level keeps the merges that smaller files cause from costing that saving again.
  o.set_write_buffer_size(8 << 20);
  o.set_level_zero_file_num_compaction_trigger(8);
  o.set_memtable_whole_key_filtering(true);
  o.set_memtable_prefix_bloom_ratio(0.02);
  o.increase_parallelism(2);
  let mut table = BlockBasedOptions::default();
  table.set_bloom_filter(10.0, false);
  table.set_block_cache(&Cache::new_lru_cache(32 << 20));
  o.set_block_based_table_factory(&table);
  // Judged by the store's clock, the one its reads judge by.
  o.set_compaction_filter(
    "cachette-expired",
    move |_level, _key, value| match envelope::peek_times(value) {
      Some(t) if t.freshness(clock.now_ms()) != Freshness::Expired => CompactionDecision::Keep,
      _ => CompactionDecision::Remove,
    },
  );
  o
}
