//! The writer thread: applies queued jobs in batches, in queue order for each key, and only
//! then updates the recent entries, drops the jobs from the pending map, releases deferred
//! byte-range locks and reports progress.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rocksdb::{WriteBatch, WriteOptions, DB};

use super::guest::request;
use super::ipc::{self, WriteOp};
use super::queue::{Job, MAX_BATCH};
use super::recovery::Reopen;
use super::{Conn, Inner};
use crate::error::{CoreError, CoreResult};

/// Most bytes of operations a guest sends in one request (frames are limited to `ipc::MAX_FRAME`).
const GUEST_CHUNK: usize = 32 << 20;

/// Applied writes the writer drops from the pending map per hold of the queue's lock.
const PENDING_CHUNK: usize = 256;

impl Inner {
  pub(super) fn write_loop(self: Arc<Self>) {
    // RocksDB counts every memtable comparison in a thread-local context by default.
    rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
    let mut reopen = Reopen::default();
    while let Some(mut jobs) = self.queue.take() {
      // Plain writes linger a moment so that the misses that follow join one batch; a
      // flush, clear or close is served at once.
      if jobs.len() < MAX_BATCH && jobs.iter().all(Job::may_linger) {
        self.queue.linger(&mut jobs);
      }
      let stop = jobs.iter().any(|j| matches!(j, Job::Stop));
      let mut sync = false;
      let (mut min_seq, mut max_seq) = (u64::MAX, 0);
      let mut writes = false;
      for j in &jobs {
        let seq = match j {
          Job::Write { seq, sync: s, .. } | Job::Range { seq, sync: s, .. } => {
            writes = true;
            sync |= *s;
            *seq
          }
          Job::Sync { seq } => {
            sync = true;
            *seq
          }
          Job::Stop => continue,
        };
        min_seq = min_seq.min(seq);
        max_seq = max_seq.max(seq);
      }
      // A database that failed a write (a full disk) takes none until it is opened again.
      if (writes || sync) && reopen.due() {
        reopen.tried(self.reopen());
      }
      let read_only = matches!(&*self.conn.read(), Some(Conn::Owner { read_only: true, .. }));
      let applied = match reopen.suspended().filter(|_| read_only) {
        _ if !writes && !sync => Ok(()),
        Some(e) => Err(e),
        None => self.apply(&jobs, sync),
      };
      let owner = matches!(&*self.conn.read(), Some(Conn::Owner { .. }));
      if applied.is_ok() && owner {
        if jobs.iter().any(|j| matches!(j, Job::Range { .. })) {
          self.ranges_applied.fetch_add(1, Ordering::SeqCst);
        }
        for j in &jobs {
          match j {
            Job::Write {
              key, value: Some(v), ..
            } => self.recent.put(*key, v.clone()),
            Job::Write { key, value: None, .. } => self.recent.remove(key),
            Job::Range { from, to, .. } => self.recent.remove_range(from, to),
            _ => {}
          }
        }
      }
      if let (Err(e), true) = (&applied, owner) {
        reopen.failed(&reason(e));
      }
      // In chunks, so producers queueing meanwhile wait for the lock at most a chunk's time.
      for chunk in jobs.chunks(PENDING_CHUNK) {
        let pending = &mut self.queue.state.lock().pending;
        for j in chunk {
          if let Job::Write { seq, key, .. } = j {
            if pending.get(key).is_some_and(|p| p.seq == *seq) {
              pending.remove(key);
            }
          }
        }
      }
      for j in &jobs {
        if let Job::Write { unlock: Some(d), .. } = j {
          self.locks.unlock(d);
        }
      }
      let mut p = self.progress.lock();
      p.done = p.done.max(max_seq);
      if let Err(e) = applied {
        p.failures
          .record(min_seq, max_seq, reason(&e), jobs.iter().filter_map(Job::namespace));
        // After the record: a reader that sees the new count finds the failures in it.
        self.write_errors.fetch_add(1, Ordering::SeqCst);
      }
      self.progressed.notify_all();
      drop(p);
      self.queue.recycle(jobs);
      if stop {
        break;
      }
    }
  }

  /// Applies the writes of `jobs` to the database, directly (owner) or through the owner (guest).
  fn apply(self: &Arc<Self>, jobs: &[Job], sync: bool) -> CoreResult<()> {
    self.with_conn(|conn| match conn {
      Conn::Owner { db, .. } => {
        let mut batch = WriteBatch::default();
        // Keys are digests, so a batch's keys land all over the memtable's skip list. Applied in
        // key order, each insert starts from the previous one's place instead of searching the
        // list from its top (the stable sort keeps the last write of a key last). A range
        // deletion orders the batch, so a batch with one keeps its order.
        let mut ordered: Vec<(u128, u64, &Job)> = jobs
          .iter()
          .map(|j| match j {
            // Compared as integers, big-endian, which orders them as RocksDB's bytewise
            // comparator does and costs no memcmp call.
            Job::Write { key, .. } => (
              u128::from_be_bytes(key[..16].try_into().expect("16 bytes")),
              u64::from_be_bytes(key[16..].try_into().expect("8 bytes")),
              j,
            ),
            // Syncs and stops add nothing to the batch.
            _ => (0, 0, j),
          })
          .collect();
        if !jobs.iter().any(|j| matches!(j, Job::Range { .. })) {
          // Stable, so the last write of a key stays last.
          ordered.sort_by_key(|&(hi, lo, _)| (hi, lo));
        }
        for (_, _, j) in ordered {
          match j {
            Job::Write {
              key, value: Some(v), ..
            } => batch.put(key, v),
            Job::Write { key, value: None, .. } => batch.delete(key),
            Job::Range { from, to, .. } => batch.delete_range(from, to),
            Job::Sync { .. } | Job::Stop => {}
          }
        }
        write_local(db, batch, sync)
      }
      Conn::Guest { stream } => {
        let ops: Vec<WriteOp> = jobs
          .iter()
          .filter_map(|j| match j {
            Job::Write { key, value, .. } => Some(match value {
              Some(v) => WriteOp::Put(key.to_vec(), v.to_vec()),
              None => WriteOp::Delete(key.to_vec()),
            }),
            Job::Range { from, to, .. } => Some(WriteOp::DeleteRange(from.clone(), to.clone())),
            Job::Sync { .. } | Job::Stop => None,
          })
          .collect();
        // One request per chunk of at most GUEST_CHUNK bytes, so no frame exceeds the limit.
        let mut chunks = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, op) in ops.iter().enumerate() {
          let size = match op {
            WriteOp::Put(k, v) | WriteOp::DeleteRange(k, v) => k.len() + v.len(),
            WriteOp::Delete(k) => k.len(),
          } + 16;
          if bytes + size > GUEST_CHUNK && i > start {
            chunks.push(&ops[start..i]);
            (start, bytes) = (i, 0);
          }
          bytes += size;
        }
        chunks.push(&ops[start..]);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
          let resp = request(stream, &ipc::encode_write(chunk, sync && i == last))?;
          if resp.first() != Some(&ipc::ST_OK) {
            return Err(CoreError::io(String::from_utf8_lossy(
              resp.get(1..).unwrap_or_default(),
            )));
          }
        }
        Ok(())
      }
    })
  }
}

/// What went wrong, without the "I/O failed" that the error adds when it is shown.
fn reason(e: &CoreError) -> String {
  match e {
    CoreError::Io { reason } => reason.clone(),
    e => e.to_string(),
  }
}

/// Writes `batch` (an empty one with `sync`: makes everything written so far durable).
fn write_local(db: &DB, batch: WriteBatch, sync: bool) -> CoreResult<()> {
  if batch.is_empty() {
    return if sync {
      db.flush_wal(true).map_err(CoreError::io)
    } else {
      Ok(())
    };
  }
  let mut wo = WriteOptions::default();
  wo.set_sync(sync);
  db.write_opt(batch, &wo).map_err(CoreError::io)
}
