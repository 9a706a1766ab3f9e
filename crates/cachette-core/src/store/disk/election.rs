//! Who owns the directory: only the holder of the owner lock opens RocksDB, every other
//! process is a guest of it, and a guest whose owner went away elects again before it fails.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rocksdb::DB;

use super::directory::quarantine;
use super::guest::{guest, probe, request};
use super::options::{db_options, is_info_log_race, is_lock_error};
use super::server::Server;
use super::{unavailable, Conn, Inner};
use crate::error::{CoreError, CoreResult};

/// How long `open` (and a guest whose owner vanished) keeps trying to reach or become the owner.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Offset of the owner lock in the `.locks` file: above every key's lock byte (keys use 62 bits).
/// Only the process holding it opens RocksDB, so the others never touch RocksDB's files (opening
/// rotates the info `LOG`, which would race with the owner's).
pub(super) const OWNER_LOCK: i64 = 1 << 62;

/// Tries to own `dir`, else to join its owner; retries until `ELECTION_TIMEOUT`.
pub(super) fn elect(inner: &Arc<Inner>) -> CoreResult<Conn> {
  let dir = &inner.path;
  let deadline = Instant::now() + ELECTION_TIMEOUT;
  let mut quarantined = false;
  let mut pause = Duration::from_millis(2);
  loop {
    if !inner.locks.try_lock_at(OWNER_LOCK)? {
      if let Some(conn) = guest(inner) {
        return Ok(conn);
      }
    } else {
      match DB::open(&db_options(inner.clock.clone()), dir) {
        Ok(db) => {
          let server = Server::start(inner)?;
          return Ok(Conn::Owner {
            db: Arc::new(db),
            server,
            read_only: false,
          });
        }
        // A previous owner of this process still closing, or a platform whose byte-range
        // locks are per process: whoever holds RocksDB's LOCK serves us.
        Err(e) if is_lock_error(&e) => {
          inner.locks.unlock_at(OWNER_LOCK);
          if let Some(conn) = guest(inner) {
            return Ok(conn);
          }
        }
        Err(e) if is_info_log_race(&e) => inner.locks.unlock_at(OWNER_LOCK),
        Err(e) if e.to_string().contains("Corruption") && !quarantined => {
          // A cache is disposable: set the damaged database aside and start empty.
          inner.locks.unlock_at(OWNER_LOCK);
          quarantine(dir)?;
          quarantined = true;
          continue;
        }
        Err(e) => {
          inner.locks.unlock_at(OWNER_LOCK);
          return Err(unavailable(dir, e));
        }
      }
    }
    if Instant::now() >= deadline {
      return Err(CoreError::StoreLocked { path: dir.clone() });
    }
    thread::sleep(pause);
    pause = (pause * 2).min(Duration::from_millis(50));
  }
}

impl Inner {
  /// Runs `f` on the current connection. If the owner went away (it died, or it closed and
  /// hung up on a request it could not serve), elects again and retries, until an election
  /// fails or `ELECTION_TIMEOUT` passed: another process's departure never fails a request by
  /// itself, and a write is applied by whoever owns the directory next (this process, maybe).
  pub(super) fn with_conn<T>(self: &Arc<Self>, f: impl Fn(&Conn) -> CoreResult<T>) -> CoreResult<T> {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    let mut pause = Duration::ZERO;
    loop {
      {
        let conn = self.conn.read();
        let c = conn.as_ref().ok_or(CoreError::Closed)?;
        match f(c) {
          Err(CoreError::StoreUnavailable { .. }) if matches!(c, Conn::Guest { .. }) && Instant::now() < deadline => {}
          r => return r,
        }
      }
      // From the second retry on, a pause: a closing owner may still answer the probe of
      // `reelect` and then hang up on the request again.
      thread::sleep(pause);
      pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_millis(50));
      self.reelect()?;
    }
  }

  fn reelect(self: &Arc<Self>) -> CoreResult<()> {
    let _one = self.electing.lock();
    // Another thread may have re-elected while this one waited: probe the connection first.
    if let Some(Conn::Guest { stream }) = &*self.conn.read() {
      if request(stream, &probe()).is_ok() {
        return Ok(());
      }
    } else {
      return Ok(());
    }
    // The old connection stays in place until the new one is there: meanwhile a request on it
    // fails as unavailable and comes here, never finds the store without a connection (which
    // only `close()` leaves: `Closed`).
    let conn = elect(self)?;
    let old = self.conn.write().replace(conn);
    drop(old);
    self.start_scan();
    Ok(())
  }
}
