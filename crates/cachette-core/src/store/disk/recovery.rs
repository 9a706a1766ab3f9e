//! A database that stopped taking writes is opened again. After a write fails with ENOSPC,
//! RocksDB keeps that background error and fails every later write: the `rocksdb` crate (0.25)
//! exposes no `DB::Resume`, and RocksDB's own recovery waits for more free space than the
//! reserve of its memtables (16 MiB here). So the owner's writer closes the database and opens
//! it again. It opens it read-only first, so that reads (its own and its guests') go on
//! whatever happens next; if the read-write open fails too (the disk is still full), the
//! database stays read-only, writes fail and are reported, and the writer tries again later.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rocksdb::DB;

use super::options::db_options;
use super::{Conn, Inner};
use crate::error::CoreError;

/// How often a database that does not take writes is opened again, at most.
const RETRY: Duration = Duration::from_secs(1);

/// The writer's account of whether the database takes writes, and when to open it again.
#[derive(Default)]
pub(super) struct Reopen {
  failing: bool,
  last_try: Option<Instant>,
  /// Why the database stopped taking writes: the first failure since it last took them.
  cause: Option<String>,
}

impl Reopen {
  /// A write of the owner's database failed (`reason`: the store's account of why).
  pub(super) fn failed(&mut self, reason: &str) {
    self.failing = true;
    self.cause.get_or_insert_with(|| reason.to_owned());
  }

  /// While the database is open read-only, the error of every write: why it stopped taking
  /// writes, not RocksDB's "not supported in read-only mode".
  pub(super) fn suspended(&self) -> Option<CoreError> {
    let cause = self.cause.as_deref().filter(|_| self.failing)?;
    Some(CoreError::io(format!(
      "{cause} (no writes are applied until the database can be opened for writing again, tried every second)"
    )))
  }

  /// Whether to open the database again before the next batch.
  pub(super) fn due(&self) -> bool {
    self.failing && self.last_try.is_none_or(|t| t.elapsed() >= RETRY)
  }

  /// The outcome of [`Inner::reopen`].
  pub(super) fn tried(&mut self, writable: bool) {
    self.last_try = Some(Instant::now());
    self.failing = !writable;
    if writable {
      self.cause = None;
    }
  }
}

impl Inner {
  /// Closes the owner's database and opens it read-write again; true if it takes writes now.
  /// Runs on the writer thread, between batches.
  pub(super) fn reopen(self: &Arc<Self>) -> bool {
    let read_only = match &*self.conn.read() {
      Some(Conn::Owner { read_only, .. }) => *read_only,
      // A guest's writes are its owner's to heal.
      _ => return true,
    };
    // The scan reads the database: stopped here, resumed on the new one if it had not ended.
    self.scan_stop.store(true, Ordering::Relaxed);
    if let Some(scan) = self.scan.lock().take() {
      let _ = scan.join();
    }
    self.scan_stop.store(false, Ordering::Relaxed);
    let mut opts = db_options(self.clock.clone());
    // A directory removed meanwhile is not created again here (nor with other permissions).
    opts.create_if_missing(false);
    let writable = (read_only
      || match DB::open_for_read_only(&opts, &self.path, false) {
        Ok(ro) => {
          self.swap_db(ro, true);
          true
        }
        Err(_) => false,
      })
      && match DB::open(&opts, &self.path) {
        Ok(rw) => {
          self.swap_db(rw, false);
          true
        }
        Err(_) => false,
      };
    if !self.present.is_complete() {
      self.start_scan();
    }
    writable
  }

  /// Puts `db` in place of the owner's database, then closes the old one.
  fn swap_db(&self, db: DB, read_only: bool) {
    let old = {
      let mut conn = self.conn.write();
      let Some(Conn::Owner {
        db: slot,
        read_only: ro,
        ..
      }) = &mut *conn
      else {
        return;
      };
      *ro = read_only;
      std::mem::replace(slot, Arc::new(db))
    };
    // Every other user of the database borrows it under the connection's lock, which no
    // one holds with the old one any more; still, RocksDB closes only with the last handle.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
      thread::sleep(Duration::from_millis(1));
    }
    drop(old);
  }
}
