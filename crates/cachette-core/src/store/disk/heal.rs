//! Damage heals; a cache loses entries, never its directory.
//!
//! * Opening: a database RocksDB finds damaged (a corrupted SST, WAL or MANIFEST, a MANIFEST
//!   deleted or a CURRENT naming one that is not there) is repaired: RocksDB's `RepairDB`
//!   rebuilds the MANIFEST from the files it can read and moves those it cannot into `lost/`.
//!   If that fails too, the database is set aside (`.corrupt-<time>`) and a fresh one created.
//!   Something other than a file in the place of RocksDB's `LOCK` is set aside at once.
//! * Open: an entry RocksDB cannot read (`Corruption: bad entry in block`), or a write refused
//!   because a compaction met damage, is counted and read as a miss; the owner then repairs the
//!   database in place, so the damage costs neither later reads nor the compactions that would
//!   meet it again. Guests reconnect meanwhile, as when an owner changes.
//!
//! A repair may bring back an entry deleted shortly before the damage (its own key's value, still
//! judged by its times), as a crash before a deletion reached the WAL would.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rocksdb::{ErrorKind, Options, DB};

use super::directory::{quarantine, set_aside_one};
use super::election::{elect, OWNER_LOCK};
use super::options::{db_options, is_info_log_race, is_lock_error};
use super::server::Server;
use super::{unavailable, Conn, Inner};
use crate::error::{CoreError, CoreResult};

/// Why the owner lock's holder could not open its database.
pub(super) enum Refused {
  /// Another handle of this process still holds RocksDB's `LOCK`: join its owner.
  Locked,
  /// A race with another opener over the info log: try again.
  Again,
  /// The database could not be opened, repaired nor set aside.
  Failed(CoreError),
}

/// Whether `e` says that files of the database are damaged, rather than busy or unreachable.
pub(super) fn is_damage(e: &rocksdb::Error) -> bool {
  if e.kind() == ErrorKind::Corruption {
    return true;
  }
  // A MANIFEST deleted, or a CURRENT naming one that is not there; something else than a file
  // in the place of one (only this user can write in the directory, and cachette makes none).
  let s = e.to_string();
  (s.contains("No such file or directory") && (s.contains("MANIFEST") || s.contains("CURRENT")))
    || s.contains("Is a directory")
}

/// Whether a write failed because RocksDB found damage (a compaction's, reported to writes).
pub(super) fn is_damage_reason(e: &CoreError) -> bool {
  matches!(e, CoreError::Io { reason } if reason.starts_with("Corruption"))
}

/// Something other than a regular file where RocksDB keeps its `LOCK`.
fn lock_is_taken(dir: &Path) -> bool {
  fs::symlink_metadata(dir.join("LOCK")).is_ok_and(|m| !m.is_file())
}

/// Opens the database in `dir` for the holder of the owner lock, healing damage on the way; says
/// whether it had to (the damage counts as the open database's does).
pub(super) fn open_healing(dir: &Path, opts: &Options) -> Result<(DB, bool), Refused> {
  let e = match DB::open(opts, dir) {
    Ok(db) => return Ok((db, false)),
    Err(e) => e,
  };
  let failed = |e: rocksdb::Error| Refused::Failed(unavailable(dir, e));
  // Only the owner lock's holder opens RocksDB, so nothing else uses this name: a directory (or
  // anything but a file) there would read as a LOCK held for ever.
  if lock_is_taken(dir) {
    set_aside_one(dir, "LOCK").map_err(Refused::Failed)?;
    return open_healing(dir, opts).map(|(db, _)| (db, true));
  }
  if is_lock_error(&e) {
    return Err(Refused::Locked);
  }
  if is_info_log_race(&e) {
    return Err(Refused::Again);
  }
  if !is_damage(&e) {
    return Err(failed(e));
  }
  match DB::repair(opts, dir).and_then(|()| DB::open(opts, dir)) {
    Ok(db) => Ok((db, true)),
    Err(e) if is_lock_error(&e) => Err(Refused::Locked),
    Err(_) => {
      quarantine(dir).map_err(Refused::Failed)?;
      DB::open(opts, dir).map(|db| (db, true)).map_err(failed)
    }
  }
}

/// How long a repair in place waits for the requests being answered to let go of the database.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

impl Inner {
  /// A read of the owner's database: a damaged entry is a miss, counted, and heals the directory.
  pub(super) fn read_db<T>(self: &Arc<Self>, r: Result<Option<T>, rocksdb::Error>) -> CoreResult<Option<T>> {
    match r {
      Err(e) if is_damage(&e) => {
        self.damaged();
        Ok(None)
      }
      r => r.map_err(CoreError::io),
    }
  }

  /// Counts damage found in the open database and repairs it on a thread of its own, one
  /// repair at a time.
  pub(super) fn damaged(self: &Arc<Self>) {
    self.damage.fetch_add(1, Ordering::Relaxed);
    if self.healing.swap(true, Ordering::SeqCst) {
      return;
    }
    let inner = self.clone();
    let spawned = thread::Builder::new().name("cachette-disk-heal".into()).spawn(move || {
      inner.heal();
      inner.healing.store(false, Ordering::SeqCst);
    });
    if spawned.is_err() {
      self.healing.store(false, Ordering::SeqCst);
    }
  }

  /// Closes the database, repairs it (or sets it aside) and opens it again, keeping the owner
  /// lock throughout. Readers and writers of this process wait only for the repair itself; the
  /// guests reconnect once the new socket listens.
  fn heal(self: &Arc<Self>) {
    let _one = self.electing.lock();
    // Stop serving first, without holding the connection: the requests being answered may wait
    // for the writer, which needs it. The scan's copy of the database goes too.
    {
      let conn = self.conn.read();
      let Some(Conn::Owner { server, .. }) = &*conn else {
        return;
      };
      if self.queue.is_closed() {
        return;
      }
      server.stop();
    }
    self.scan_stop.store(true, Ordering::Relaxed);
    if let Some(scan) = self.scan.lock().take() {
      let _ = scan.join();
    }
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    loop {
      let released = match &*self.conn.read() {
        Some(Conn::Owner { db, .. }) => Arc::strong_count(db) == 1,
        _ => return,
      };
      if released {
        break;
      }
      if Instant::now() >= deadline {
        // A request still holds the database: serve again as before, and heal another time.
        if let Some(Conn::Owner { server, .. }) = &mut *self.conn.write() {
          if let Ok(s) = Server::start(self) {
            *server = s;
          }
        }
        return;
      }
      thread::sleep(Duration::from_millis(1));
    }
    let mut conn = self.conn.write();
    let Some(Conn::Owner { db, .. }) = conn.take() else {
      return;
    };
    drop(db);
    let opts = db_options(self.clock.clone());
    match DB::repair(&opts, &self.path) {
      Ok(()) => {}
      // A request that outlived the wait still holds the database: opened again as it is once
      // that request lets go (the damage heals at a later repair).
      Err(e) if is_lock_error(&e) => {}
      Err(_) => {
        let _ = quarantine(&self.path);
      }
    }
    // The owner lock is still this process's: this opens the database and listens again. The
    // filter of present keys stays as it was: a repair only drops keys (or brings back deleted
    // ones, which it may rule out: a miss), and a key it does not rule out is read from RocksDB.
    // If that fails, the lock goes and the next request elects again (see `with_conn`).
    *conn = elect(self).ok();
    if conn.is_none() {
      self.locks.unlock_at(OWNER_LOCK);
    }
  }
}
