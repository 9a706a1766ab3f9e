//! The disk store: RocksDB in a cache directory, shared by every worker thread of a process
//! and by every process that opens the same directory. Every write to the directory, this
//! process's or another's, passes through its owner's queue: the one order that the recent
//! entries, the key filter and the calculation locks rely on.
//!
//! * One handle per directory per process ([`DiskStore::open`] returns the live one).
//! * Owner and guests: the process that gets RocksDB's `LOCK` owns the directory and serves the
//!   others over a Unix socket ([`ipc`]). When the owner goes away, the guests race to
//!   open the database again; exactly one wins and the rest reconnect to it. No RocksDB `LOCK`
//!   error ever reaches a caller.
//! * Write-behind: `put` queues the entry (readable at once by this process) and a writer
//!   thread applies queued entries in batches. `flush` waits until they are applied: after it
//!   returns, a `kill -9` of any process loses nothing (`sync: true` also survives power loss).
//! * Calculation locks: in-process single flight, then a kernel byte-range lock that the kernel
//!   drops if its holder dies. The byte-range lock is released only after the value is applied,
//!   so the next holder, in any process, reads it.
//! * TTL is checked on every read; a compaction filter reclaims expired entries. Both judge
//!   time by the clock the store was opened with ([`DiskStore::open_with_clock`]).

mod contract;
mod directory;
mod election;
mod failures;
mod guest;
mod ipc;
mod layout;
mod locks;
mod options;
mod present;
mod queue;
mod read;
mod recent;
mod recovery;
mod server;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{self, JoinHandle};

use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::{ReadOptions, DB};

use crate::clock::Clock;
use crate::error::{CoreError, CoreResult};
use crate::file_lock::FileLocks;
use crate::key::{Digest, DigestHashing};
use crate::single_flight::SingleFlight;
use directory::prepare_dir;
use election::{elect, OWNER_LOCK};
use present::Present;
use queue::{JobQueue, Progress};
use recent::Recent;
use server::Server;

pub use failures::FailureCursor;

/// Which role this process has for a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
  Owner,
  Guest,
}

enum Conn {
  /// `read_only`: the database was reopened read-only after it stopped taking writes (see
  /// [`recovery`]); the writer opens it read-write again once it can.
  Owner {
    db: Arc<DB>,
    server: Server,
    read_only: bool,
  },
  Guest {
    stream: Mutex<UnixStream>,
  },
}

struct Inner {
  path: PathBuf,
  conn: RwLock<Option<Conn>>,
  electing: Mutex<()>,
  progress: Mutex<Progress>,
  /// Recent entries (owner only).
  recent: Recent,
  /// The keys the database may hold (owner only; see [`Present`]).
  present: Present,
  /// The scan that fills `present` from the database, and its stop signal (set by `close`).
  scan: Mutex<Option<JoinHandle<()>>>,
  scan_stop: AtomicBool,
  /// Range deletions (`clear()`) applied so far: a read that began before one refrains from
  /// adding what it read to `recent`, which the deletion may already have swept.
  ranges_applied: AtomicU64,
  progressed: Condvar,
  queue: JobQueue,
  locks: FileLocks,
  /// Whether calculation locks take their byte in `locks` too: false while no other process
  /// can contend (this process owns the directory and no guest ever joined), which spares
  /// two system calls per miss. See [`Inner::share_locks`].
  shared_locks: AtomicBool,
  flights: SingleFlight<Digest, (), DigestHashing>,
  clock: Arc<dyn Clock>,
  /// Batches that could not be applied; which writes they held is in `progress`.
  write_errors: AtomicU64,
  /// Every write up to this sequence number was covered by a [`Store::flush`] (see
  /// [`DiskStore::flush_reporting`], which each handle calls with its own cursor).
  flushed: AtomicU64,
  /// Entries carry their own checksum, checked on every read: RocksDB's block check is skipped.
  read_options: ReadOptions,
}

/// A disk cache directory opened by this process.
pub struct DiskStore {
  inner: Arc<Inner>,
  writer: Mutex<Option<JoinHandle<()>>>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<DiskStore>>> {
  static R: OnceLock<Mutex<HashMap<PathBuf, Weak<DiskStore>>>> = OnceLock::new();
  R.get_or_init(Default::default)
}

/// The error of a wait for writes one of which failed (`reason`: why).
fn not_stored(reason: String) -> CoreError {
  CoreError::Io {
    reason: format!("a write was not stored: {reason}"),
  }
}

fn unavailable(path: &Path, reason: impl std::fmt::Display) -> CoreError {
  CoreError::StoreUnavailable {
    path: path.to_owned(),
    reason: reason.to_string(),
  }
}

impl DiskStore {
  /// Opens the cache directory `path` for this process, creating it 0700 if needed.
  /// Every caller in the process gets the same handle while one is alive.
  ///
  /// # Errors
  /// `StoreUnavailable` when the directory cannot be created or opened (permissions, not a
  /// directory, a damaged database that cannot be set aside); `StoreLocked` when another
  /// process owns it and did not answer within ten seconds.
  pub fn open(path: &Path) -> CoreResult<Arc<DiskStore>> {
    Self::open_with_clock(path, crate::clock::system())
  }

  /// [`DiskStore::open`] with the clock that judges entry times: every read's, and the
  /// compaction filter's that reclaims expired entries. A handle already live for the directory
  /// is returned as it is, with the clock it was opened with.
  ///
  /// # Errors
  /// As [`DiskStore::open`].
  pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> CoreResult<Arc<DiskStore>> {
    let real = prepare_dir(path)?;
    let mut reg = registry().lock();
    if let Some(s) = reg.get(&real).and_then(Weak::upgrade) {
      return Ok(s);
    }
    let store = Arc::new(Self::start(real.clone(), clock)?);
    reg.insert(real, Arc::downgrade(&store));
    Ok(store)
  }

  fn start(path: PathBuf, clock: Arc<dyn Clock>) -> CoreResult<DiskStore> {
    let locks = FileLocks::open(&path.join(".locks"))?;
    let inner = Arc::new(Inner {
      path,
      conn: RwLock::new(None),
      electing: Mutex::new(()),
      progress: Mutex::new(Progress::default()),
      recent: Recent::new(),
      present: Present::new(),
      scan: Mutex::new(None),
      scan_stop: AtomicBool::new(false),
      ranges_applied: AtomicU64::new(0),
      progressed: Condvar::new(),
      queue: JobQueue::default(),
      locks,
      shared_locks: AtomicBool::new(false),
      flights: SingleFlight::new(),
      clock,
      write_errors: AtomicU64::new(0),
      flushed: AtomicU64::new(0),
      read_options: {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(false);
        ro
      },
    });
    let conn = elect(&inner)?;
    *inner.conn.write() = Some(conn);
    inner.start_scan();
    let w = inner.clone();
    let writer = thread::Builder::new()
      .name("cachette-disk-writer".into())
      .spawn(move || w.write_loop())
      .map_err(|e| unavailable(&inner.path, e))?;
    Ok(DiskStore {
      inner,
      writer: Mutex::new(Some(writer)),
    })
  }

  /// This process's role for the directory right now.
  pub fn role(&self) -> Role {
    match &*self.inner.conn.read() {
      Some(Conn::Owner { .. }) => Role::Owner,
      _ => Role::Guest,
    }
  }

  /// The canonical path of the directory.
  pub fn path(&self) -> &Path {
    &self.inner.path
  }

  /// Batches of writes that failed since the store was opened (their writes are dropped: it is
  /// a cache).
  pub fn write_errors(&self) -> u64 {
    self.inner.write_errors.load(Ordering::Relaxed)
  }

  /// A cursor for one handle of namespace `ns`, opened now: its first flush covers the writes
  /// queued from now on, and [`DiskStore::take_failures`] counts the failures from now on.
  pub fn failure_cursor(&self, ns: [u8; 8]) -> FailureCursor {
    let epoch = self.inner.write_errors.load(Ordering::SeqCst);
    let counted = self.inner.progress.lock().failures.of_namespace(ns);
    FailureCursor::new(ns, self.inner.queue.queued.load(Ordering::SeqCst), epoch, counted)
  }

  /// The writes of the cursor's namespace that failed since it last asked (one atomic load
  /// while none did).
  pub fn take_failures(&self, cursor: &FailureCursor) -> u64 {
    let epoch = self.inner.write_errors.load(Ordering::SeqCst);
    if cursor.epoch.load(Ordering::Relaxed) == epoch {
      return 0;
    }
    let now = self.inner.progress.lock().failures.of_namespace(cursor.ns);
    cursor.epoch.store(epoch, Ordering::Relaxed);
    now.saturating_sub(cursor.counted.swap(now, Ordering::Relaxed))
  }

  /// Why the last batch that could not be applied failed (empty if none did).
  pub fn last_write_error(&self) -> String {
    self.inner.progress.lock().failures.reason().to_owned()
  }

  /// Waits until every write queued so far is applied (`sync`: and on stable storage).
  ///
  /// # Errors
  /// `Io` when a write queued since the previous flush with this `cursor` (or since the cursor
  /// was made) could not be applied, whenever it failed: a flush that returns `Ok` means every
  /// write it covers is in the WAL.
  pub fn flush_reporting(&self, sync: bool, cursor: &FailureCursor) -> CoreResult<()> {
    self.flush_from(sync, &cursor.flushed)
  }

  /// [`DiskStore::flush_reporting`] with the cursor position `flushed`.
  fn flush_from(&self, sync: bool, flushed: &AtomicU64) -> CoreResult<()> {
    let from = flushed.load(Ordering::SeqCst);
    let target = if sync {
      self.inner.send(|seq| queue::Job::Sync { seq })?
    } else {
      self.inner.queue.queued.load(Ordering::SeqCst)
    };
    let r = self.inner.wait_applied(from, target);
    flushed.fetch_max(target, Ordering::SeqCst);
    r.map_err(not_stored)
  }

  /// Applies everything queued and closes the database (or the connection to the owner).
  /// Called when the last handle goes; later calls do nothing.
  pub fn close(&self) {
    self.inner.queue.close();
    if let Some(w) = self.writer.lock().take() {
      let _ = w.join();
    }
    self.inner.scan_stop.store(true, Ordering::Relaxed);
    if let Some(scan) = self.inner.scan.lock().take() {
      let _ = scan.join();
    }
    let conn = self.inner.conn.write().take();
    let owned = matches!(conn, Some(Conn::Owner { .. }));
    if let Some(Conn::Owner { server, .. }) = &conn {
      server.stop();
    }
    drop(conn);
    if owned {
      self.inner.locks.unlock_at(OWNER_LOCK);
    }
    registry().lock().retain(|_, w| w.strong_count() > 0);
  }
}

impl Drop for DiskStore {
  fn drop(&mut self) {
    self.close();
  }
}
