//! The read path: queued writes first, then the recent entries, then RocksDB (or the owner);
//! an entry reaches the caller only if its envelope is intact, its own and not expired.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rocksdb::{IteratorMode, DB};

use super::guest::request;
use super::ipc::{self, Cursor};
use super::layout::{ns_range, store_key, StoreKey};
use super::{Conn, DiskStore, Inner};
use crate::envelope::{self, Freshness, Times};
use crate::error::{CoreError, CoreResult};
use crate::key::Digest;

impl Inner {
  /// Raw bytes stored under `key`, queued writes first.
  fn raw_get(self: &Arc<Self>, key: &StoreKey) -> CoreResult<Option<Vec<u8>>> {
    if let Some(v) = self.queued_value(key) {
      return Ok(v.map(|v| v.to_vec()));
    }
    self.with_conn(|conn| match conn {
      Conn::Owner { db, .. } => self.read_db(db.get(key)),
      Conn::Guest { stream } => {
        let mut body = vec![ipc::OP_GET];
        body.extend_from_slice(key);
        let resp = request(stream, &body)?;
        match resp.first() {
          Some(&ipc::ST_FOUND) => Ok(Some(resp[1..].to_vec())),
          Some(&ipc::ST_OK) => Ok(None),
          _ => Err(CoreError::io(String::from_utf8_lossy(
            resp.get(1..).unwrap_or_default(),
          ))),
        }
      }
    })
  }

  pub(super) fn count(self: &Arc<Self>, ns: [u8; 8]) -> CoreResult<u64> {
    self.with_conn(|conn| match conn {
      Conn::Owner { db, .. } => Ok(count_local(db, ns)),
      Conn::Guest { stream } => {
        let mut body = vec![ipc::OP_COUNT];
        body.extend_from_slice(&ns);
        let resp = request(stream, &body)?;
        let mut c = Cursor::new(&resp);
        match c.u8()? {
          ipc::ST_OK => c.u64(),
          _ => Err(CoreError::io(String::from_utf8_lossy(c.rest()))),
        }
      }
    })
  }
}

pub(super) fn count_local(db: &DB, ns: [u8; 8]) -> u64 {
  let (from, to) = ns_range(ns);
  db.iterator(IteratorMode::From(&from, rocksdb::Direction::Forward))
    .map_while(Result::ok)
    .take_while(|(k, _)| k.as_ref() < to.as_slice())
    .count() as u64
}

impl DiskStore {
  /// Reads the entry of `digest`, and tells whether this process owned the directory then.
  pub(super) fn read_owned(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    sink: &mut dyn FnMut(Times, &[u8]),
  ) -> CoreResult<(bool, bool)> {
    let key = store_key(ns, digest);
    let conn = self.inner.conn.read();
    let owner = matches!(&*conn, Some(Conn::Owner { .. }));
    // A key the filter rules out is in neither the database nor the queue: a miss, the read
    // before every store, takes no lock.
    if owner && self.inner.present.rules_out(&key) {
      return Ok((false, true));
    }
    Ok((self.read_in(key, digest, conn, sink)?, owner))
  }

  /// The rest of [`DiskStore::read_owned`], under the connection's read lock `conn`.
  fn read_in(
    &self,
    key: StoreKey,
    digest: &Digest,
    conn: parking_lot::RwLockReadGuard<'_, Option<Conn>>,
    sink: &mut dyn FnMut(Times, &[u8]),
  ) -> CoreResult<bool> {
    // Taken before the queue is looked at: see `Recent`.
    let seq = self.inner.queue.queued.load(Ordering::SeqCst);
    let ranges = self.inner.ranges_applied.load(Ordering::SeqCst);
    let queued = self.inner.queued_value(&key);
    if let Some(v) = queued {
      drop(conn);
      return match v {
        Some(v) => self.accept(key, digest, &v, sink),
        None => Ok(false),
      };
    }
    // The owner reads its database in place; a guest asks the owner.
    if let Some(Conn::Owner { db, .. }) = &*conn {
      if let Some(raw) = self.inner.recent.get(&key) {
        return self.accept(key, digest, &raw, sink);
      }
      // A damaged entry is a miss (and heals the directory, see `heal`).
      return match self.inner.read_db(db.get_pinned_opt(key, &self.inner.read_options))? {
        Some(raw) => {
          let raw: Arc<[u8]> = Arc::from(&raw[..]);
          let inner = &self.inner;
          inner.recent.offer(key, raw.clone(), || {
            inner.queue.queued.load(Ordering::SeqCst) != seq || inner.ranges_applied.load(Ordering::SeqCst) != ranges
          });
          self.accept(key, digest, &raw, sink)
        }
        None => Ok(false),
      };
    }
    drop(conn);
    match self.inner.raw_get(&key)? {
      Some(raw) => self.accept(key, digest, &raw, sink),
      None => Ok(false),
    }
  }

  /// Checks an envelope read for `digest`: hands a live entry to `sink`, reclaims anything else.
  fn accept(&self, key: StoreKey, digest: &Digest, raw: &[u8], sink: &mut dyn FnMut(Times, &[u8])) -> CoreResult<bool> {
    match envelope::open(digest, raw) {
      Some((times, payload)) if times.freshness(self.inner.clock.now_ms()) != Freshness::Expired => {
        sink(times, payload);
        Ok(true)
      }
      // Expired, corrupted, foreign or of another format version: a miss, reclaimed now.
      _ => {
        self.inner.enqueue_write(key, None, None)?;
        Ok(false)
      }
    }
  }
}
