//! The disk store: RocksDB in a cache directory, shared by every worker thread of a process
//! and by every process that opens the same directory.
//!
//! * One handle per directory per process ([`DiskStore::open`] returns the live one).
//! * Owner and guests: the process that gets RocksDB's `LOCK` owns the directory and serves the
//!   others over a Unix socket ([`super::ipc`]). When the owner goes away, the guests race to
//!   open the database again; exactly one wins and the rest reconnect to it. No RocksDB `LOCK`
//!   error ever reaches a caller.
//! * Write-behind: `put` queues the entry (readable at once by this process) and a writer
//!   thread applies queued entries in batches. `flush` waits until they are applied: after it
//!   returns, a `kill -9` of any process loses nothing (`sync: true` also survives power loss).
//! * Calculation locks: in-process single flight, then a kernel byte-range lock that the kernel
//!   drops if its holder dies. The byte-range lock is released only after the value is applied,
//!   so the next holder, in any process, reads it.
//! * TTL is checked on every read; a compaction filter reclaims expired entries.

use std::collections::HashMap;
use std::fs;
use std::mem::MaybeUninit;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::{
  BlockBasedOptions, Cache, CompactionDecision, DBCompressionType, IteratorMode, Options, ReadOptions, WriteBatch,
  WriteOptions, DB,
};

use super::ipc::{self, Cursor, WriteOp};
use super::{claim_local, reread_after_lock, Claimed, Entry, LockOutcome, ReadOrLock, Store};
use crate::clock::{Clock, SystemClock};
use crate::envelope::{self, Freshness, Times};
use crate::error::{CoreError, CoreResult};
use crate::file_lock::FileLocks;
use crate::key::{Digest, DigestHashing, STORE_KEY_LEN};
use crate::single_flight::{OwnerId, SingleFlight};

/// How long `open` (and a guest whose owner vanished) keeps trying to reach or become the owner.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A batch smaller than this waits up to [`LINGER`] for more entries before it is applied.
const MAX_BATCH: usize = 4096;
/// Most bytes of operations a guest sends in one request (frames are limited to `ipc::MAX_FRAME`).
const GUEST_CHUNK: usize = 32 << 20;
/// How long the writer waits after waking for more writes to join its batch, unless someone
/// waits for the batch (a flush, a clear, a guest's write, a write whose lock another process
/// waits for). Large batches matter: each has a fixed cost (a WAL write, a wakeup), and the
/// keys of a batch applied in order are close together in the memtable, which makes each
/// insert's search shorter (writer CPU per miss 3.4-3.9 µs with 0.5 ms, 3.0-3.2 µs with 2 ms).
const LINGER: Duration = Duration::from_millis(2);
/// Applied writes the writer drops from the pending map per hold of the queue's lock.
const PENDING_CHUNK: usize = 256;

/// The write-behind queue, and the writes it holds by key, under one lock. Producers append
/// without a system call while the writer is busy; only a writer that went idle is woken.
#[derive(Default)]
struct JobQueue {
  state: Mutex<QueueState>,
  ready: Condvar,
  /// The sequence number of the last job queued: written under the lock, read without it.
  queued: AtomicU64,
}

#[derive(Default)]
struct QueueState {
  jobs: Vec<Job>,
  idle: bool,
  closed: bool,
  /// Someone waits for what is queued: the writer's linger ends now.
  hurry: bool,
  /// An empty vector with room, for the next batch (see [`JobQueue::recycle`]).
  spare: Vec<Job>,
  /// The latest queued write of each key not applied yet: what reads see first.
  pending: HashMap<StoreKey, Pending, DigestHashing>,
}

impl JobQueue {
  /// Appends the job `make` builds with the next sequence number, and returns that number;
  /// `None` once the queue is closed.
  fn push(&self, q: &mut QueueState, make: impl FnOnce(u64) -> Job) -> Option<u64> {
    if q.closed {
      return None;
    }
    let seq = self.queued.load(Ordering::SeqCst) + 1;
    let job = make(seq);
    let urgent = !job.may_linger();
    q.jobs.push(job);
    self.queued.store(seq, Ordering::SeqCst);
    if urgent || q.jobs.len() == MAX_BATCH {
      self.hurry_locked(q);
    } else if q.idle {
      q.idle = false;
      self.ready.notify_one();
    }
    Some(seq)
  }

  /// Ends the writer's linger (or the next one), so what is queued is applied at once.
  fn hurry(&self) {
    self.hurry_locked(&mut self.state.lock());
  }

  fn hurry_locked(&self, q: &mut QueueState) {
    q.hurry = true;
    q.idle = false;
    self.ready.notify_one();
  }

  /// Waits up to [`LINGER`] for more writes to join `jobs`: less once the batch is full, the
  /// queue closes or someone [hurries](JobQueue::hurry) it.
  fn linger(&self, jobs: &mut Vec<Job>) {
    let deadline = Instant::now() + LINGER;
    let mut q = self.state.lock();
    while !q.hurry && !q.closed && jobs.len() + q.jobs.len() < MAX_BATCH {
      if self.ready.wait_until(&mut q, deadline).timed_out() {
        break;
      }
    }
    q.hurry = false;
    jobs.append(&mut q.jobs);
  }

  /// Waits for jobs and takes them all; `None` once closed and drained.
  fn take(&self) -> Option<Vec<Job>> {
    let mut q = self.state.lock();
    while q.jobs.is_empty() {
      if q.closed {
        return None;
      }
      q.idle = true;
      self.ready.wait(&mut q);
    }
    q.idle = false;
    let spare = std::mem::take(&mut q.spare);
    Some(std::mem::replace(&mut q.jobs, spare))
  }

  /// Hands back the vector of a batch applied (emptied here, outside the lock), so producers
  /// append to storage that has grown already instead of growing a new vector per batch.
  fn recycle(&self, mut jobs: Vec<Job>) {
    jobs.clear();
    let mut q = self.state.lock();
    if q.spare.capacity() < jobs.capacity() {
      q.spare = jobs;
    }
  }

  /// Queues a final stop; later pushes are refused.
  fn close(&self) {
    let mut q = self.state.lock();
    if !q.closed {
      q.jobs.push(Job::Stop);
      q.closed = true;
      self.ready.notify_one();
    }
  }

  fn is_closed(&self) -> bool {
    self.state.lock().closed
  }
}

/// Which role this process has for a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
  Owner,
  Guest,
}

type StoreKey = [u8; 8 + STORE_KEY_LEN];

/// Bytes of recent entries the owner keeps in memory (see [`Recent`]).
const RECENT_BYTES: usize = 32 << 20;
const RECENT_SHARDS: usize = 16;

/// The entries the owner process read or wrote lately, sealed as on disk, so a hit skips
/// RocksDB. It stays exact because every write to the directory, this process's or another's,
/// passes through the owner's queue: the writer updates it after applying each batch, and a
/// reader adds what it read from RocksDB only if nothing was queued since it began (checked
/// under the shard lock the writer takes too). Over budget, a shard drops arbitrary entries.
struct Recent {
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
  fn new() -> Self {
    Recent {
      shards: (0..RECENT_SHARDS).map(|_| Mutex::new(RecentShard::default())).collect(),
    }
  }

  fn shard(&self, key: &StoreKey) -> &Mutex<RecentShard> {
    &self.shards[key[8] as usize % RECENT_SHARDS]
  }

  fn get(&self, key: &StoreKey) -> Option<Arc<[u8]>> {
    self.shard(key).lock().map.get(key).cloned()
  }

  /// Adds `value` unless `changed()` says a write was queued meanwhile.
  fn offer(&self, key: StoreKey, value: Arc<[u8]>, changed: impl FnOnce() -> bool) {
    let mut shard = self.shard(&key).lock();
    if !changed() {
      shard.put(key, value);
    }
  }

  fn put(&self, key: StoreKey, value: Arc<[u8]>) {
    self.shard(&key).lock().put(key, value);
  }

  fn remove(&self, key: &StoreKey) {
    let mut shard = self.shard(key).lock();
    if let Some(old) = shard.map.remove(key) {
      shard.bytes -= recent_cost(&old);
    }
  }

  /// Drops every entry whose key falls in `from..to`.
  fn remove_range(&self, from: &[u8], to: &[u8]) {
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

/// Words of [`Present`]: 4 MiB, one 64-bit word per 8 bytes.
const PRESENT_WORDS: usize = 1 << 19;

/// The keys the directory may hold, as a blocked Bloom filter (3 bits in one 64-bit word per
/// key), kept by the owner so that a miss, the read before every store, skips RocksDB.
///
/// Every key this process queues is added before it is queued, and every write to the
/// directory passes through the owner's queue; what the database held before is added by a scan
/// that starts once this process owns it. Until that scan finishes, the filter rules nothing out.
/// Deleted and expired keys stay in it: a false "maybe", which only costs a RocksDB read. About
/// 1 read in 1,600 of absent keys still reaches RocksDB with a million keys stored, 1 in 5 with
/// ten million.
struct Present {
  words: Box<[AtomicU64]>,
  complete: AtomicBool,
}

impl Present {
  fn new() -> Self {
    Present {
      words: (0..PRESENT_WORDS).map(|_| AtomicU64::new(0)).collect(),
      complete: AtomicBool::new(false),
    }
  }

  /// The word and the three bits of a store key (its digest bytes are uniform already).
  fn place(key: &[u8]) -> (usize, u64) {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[8..16]);
    let h = u64::from_le_bytes(b);
    let word = (h as usize) & (PRESENT_WORDS - 1);
    let bits = (1u64 << ((h >> 40) & 63)) | (1u64 << ((h >> 46) & 63)) | (1u64 << ((h >> 52) & 63));
    (word, bits)
  }

  fn add(&self, key: &[u8]) {
    let (word, bits) = Self::place(key);
    // Ordered by the locks that publish the key (the queue's, the scan's completion).
    self.words[word].fetch_or(bits, Ordering::Relaxed);
  }

  /// True when `key` is certainly absent from the database and from the queue.
  fn rules_out(&self, key: &[u8]) -> bool {
    if !self.complete.load(Ordering::Acquire) {
      return false;
    }
    let (word, bits) = Self::place(key);
    self.words[word].load(Ordering::Relaxed) & bits != bits
  }
}

/// Seals an entry straight into the one buffer that the queue, the pending map and [`Recent`]
/// share (sealing into a `Vec` first would cost an allocation and a copy per write).
fn seal_shared(digest: &Digest, times: Times, payload: &[u8]) -> Arc<[u8]> {
  let mut sealed = Arc::<[u8]>::new_uninit_slice(envelope::sealed_len(times, payload.len()));
  let slot = Arc::get_mut(&mut sealed).expect("a new Arc has one owner");
  for b in slot.iter_mut() {
    b.write(0);
  }
  // SAFETY: every byte was initialised just above, and MaybeUninit<u8> has u8's layout.
  let bytes = unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(slot) as *mut [u8]) };
  envelope::seal_into(digest, times, payload, bytes);
  // SAFETY: initialised above.
  unsafe { sealed.assume_init() }
}

fn store_key(ns: [u8; 8], digest: &Digest) -> StoreKey {
  let mut k = [0u8; 8 + STORE_KEY_LEN];
  k[..8].copy_from_slice(&ns);
  k[8..].copy_from_slice(&digest[..STORE_KEY_LEN]);
  k
}

/// The half-open key range of one namespace.
fn ns_range(ns: [u8; 8]) -> (Vec<u8>, Vec<u8>) {
  let from = ns.to_vec();
  let to = match u64::from_be_bytes(ns).checked_add(1) {
    Some(n) => n.to_be_bytes().to_vec(),
    None => vec![0xff; 9],
  };
  (from, to)
}

enum Conn {
  Owner { db: Arc<DB>, server: Server },
  Guest { stream: Mutex<UnixStream> },
}

struct Pending {
  seq: u64,
  value: Option<Arc<[u8]>>,
}

enum Job {
  Write {
    seq: u64,
    key: StoreKey,
    value: Option<Arc<[u8]>>,
    sync: bool,
    unlock: Option<Digest>,
  },
  Range {
    seq: u64,
    from: Vec<u8>,
    to: Vec<u8>,
    sync: bool,
  },
  Sync {
    seq: u64,
  },
  Stop,
}

impl Job {
  /// Only a plain write can wait for others to join its batch: no one waits for it to land.
  fn may_linger(&self) -> bool {
    matches!(self, Job::Write { unlock: None, .. })
  }
}

#[derive(Default)]
struct Progress {
  done: u64,
  last_failed: u64,
  last_error: String,
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
  write_errors: AtomicU64,
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

fn unavailable(path: &Path, reason: impl std::fmt::Display) -> CoreError {
  CoreError::StoreUnavailable {
    path: path.to_owned(),
    reason: reason.to_string(),
  }
}

/// Creates the directory 0700 (umask-proof) if it does not exist.
fn prepare_dir(path: &Path) -> CoreResult<PathBuf> {
  if !path.exists() {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
      use std::os::unix::fs::DirBuilderExt;
      // Every directory created here, parents included, is private to this user.
      builder.mode(0o700);
    }
    builder
      .create(path)
      .map_err(|e| unavailable(path, format!("cannot create the directory: {e}")))?;
    #[cfg(unix)]
    {
      use std::os::unix::fs::PermissionsExt;
      fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|e| unavailable(path, e))?;
    }
  }
  let real = fs::canonicalize(path).map_err(|e| unavailable(path, e))?;
  if !real.is_dir() {
    return Err(unavailable(path, "not a directory"));
  }
  Ok(real)
}

fn socket_path(dir: &Path) -> PathBuf {
  let p = dir.join(".owner.sock");
  if p.as_os_str().len() < 100 {
    return p;
  }
  // Unix socket paths are limited to ~104 bytes: use a short per-user directory instead.
  let hash = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
  let base = std::env::temp_dir().join(format!("cachette-{}", unsafe { libc::getuid() }));
  let _ = fs::create_dir_all(&base);
  #[cfg(unix)]
  {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o700));
  }
  base.join(format!("{}.sock", &hash[..24]))
}

fn is_lock_error(e: &rocksdb::Error) -> bool {
  let s = e.to_string();
  s.contains("LOCK") && (s.contains("lock") || s.contains("Resource temporarily unavailable"))
}

/// `DB::open` rotates and trims RocksDB's info log (`LOG`, `LOG.old.*`) before it takes the
/// `LOCK`, so processes opening one directory at the same moment (a fresh start, or guests
/// electing a new owner) can each try to delete the same old log file, and the slower one's
/// open fails with ENOENT. Nothing in the database was touched yet: open again.
fn is_info_log_race(e: &rocksdb::Error) -> bool {
  let s = e.to_string();
  s.contains("No such file or directory") && s.contains("LOG")
}

fn db_options() -> Options {
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
  let clock = SystemClock;
  o.set_compaction_filter(
    "cachette-expired",
    move |_level, _key, value| match envelope::peek_times(value) {
      Some(t) if t.freshness(clock.now_ms()) != Freshness::Expired => CompactionDecision::Keep,
      _ => CompactionDecision::Remove,
    },
  );
  o
}

/// Offset of the owner lock in the `.locks` file: above every key's lock byte (keys use 62 bits).
/// Only the process holding it opens RocksDB, so the others never touch RocksDB's files (opening
/// rotates the info `LOG`, which would race with the owner's).
const OWNER_LOCK: i64 = 1 << 62;

/// Joins the owner of `dir`. Returns once the owner has answered a first request: by then it
/// takes byte-range locks for its own claims too (see [`Inner::share_locks`]).
fn guest(inner: &Inner) -> Option<Conn> {
  inner.shared_locks.store(true, Ordering::SeqCst);
  let stream = UnixStream::connect(socket_path(&inner.path)).ok()?;
  let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
  let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
  let stream = Mutex::new(stream);
  request(&stream, &probe()).ok()?;
  Some(Conn::Guest { stream })
}

/// A request that only checks the owner answers: the size of namespace 0, which no function uses.
fn probe() -> Vec<u8> {
  let mut body = vec![ipc::OP_COUNT];
  body.extend_from_slice(&[0u8; 8]);
  body
}

/// Tries to own `dir`, else to join its owner; retries until `ELECTION_TIMEOUT`.
fn elect(inner: &Arc<Inner>) -> CoreResult<Conn> {
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
      match DB::open(&db_options(), dir) {
        Ok(db) => {
          let db = Arc::new(db);
          let server = Server::start(inner, db.clone())?;
          return Ok(Conn::Owner { db, server });
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

fn quarantine(dir: &Path) -> CoreResult<()> {
  let stamp = SystemClock.now_ms();
  let aside = dir.join(format!(".corrupt-{stamp}"));
  fs::create_dir_all(&aside).map_err(|e| unavailable(dir, e))?;
  for entry in fs::read_dir(dir).map_err(|e| unavailable(dir, e))?.flatten() {
    let name = entry.file_name();
    let s = name.to_string_lossy();
    if s.starts_with(".corrupt-") || s == ".locks" || s == ".owner.sock" {
      continue;
    }
    let _ = fs::rename(entry.path(), aside.join(&name));
  }
  Ok(())
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
    let real = prepare_dir(path)?;
    let mut reg = registry().lock();
    if let Some(s) = reg.get(&real).and_then(Weak::upgrade) {
      return Ok(s);
    }
    let store = Arc::new(Self::start(real.clone())?);
    reg.insert(real, Arc::downgrade(&store));
    Ok(store)
  }

  fn start(path: PathBuf) -> CoreResult<DiskStore> {
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
      clock: Arc::new(SystemClock),
      write_errors: AtomicU64::new(0),
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

  /// Writes that failed since the store was opened (they are dropped: it is a cache).
  pub fn write_errors(&self) -> u64 {
    self.inner.write_errors.load(Ordering::Relaxed)
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

impl Inner {
  /// Makes every calculation lock of this process take its byte-range lock from now on, and
  /// takes it for the claims in progress, which went without: another process may contend.
  /// Set before the claims are listed, so a claim that starts meanwhile sees it and locks itself.
  fn share_locks(&self) {
    if self.shared_locks.swap(true, Ordering::SeqCst) {
      return;
    }
    self.flights.for_each_key(|d| {
      let _ = self.locks.try_lock(d);
    });
  }

  /// Releases the byte-range lock of `digest`, which a claim holds only once locks are shared.
  fn unlock_if_shared(&self, digest: &Digest) {
    if self.shared_locks.load(Ordering::SeqCst) {
      self.locks.unlock(digest);
    }
  }

  /// Ends `owner`'s claim of `digest`, releasing its byte-range lock when it has one (`unlock`:
  /// the caller's write needs no further wait, see `put_and_release`). The release and the
  /// claim's end are one step for [`Inner::share_locks`]: it never locks a claim already over.
  fn end_claim(&self, digest: &Digest, owner: OwnerId, error: Option<Vec<u8>>, unlock: bool) {
    let result = match error {
      Some(error) => Err(CoreError::ComputationFailed { error }),
      None => Ok(()),
    };
    // Without a claim of this owner the byte is not this owner's to release: another thread
    // of this process may hold it.
    self.flights.finish_with(digest, owner, result, || {
      if unlock {
        self.unlock_if_shared(digest);
      }
    });
  }

  /// Queues the job `make` builds with its sequence number, under the queue's lock `q`.
  fn send_locked(&self, q: &mut QueueState, make: impl FnOnce(u64) -> Job) -> CoreResult<u64> {
    self.queue.push(q, make).ok_or(CoreError::Closed)
  }

  fn send(&self, make: impl FnOnce(u64) -> Job) -> CoreResult<u64> {
    self.send_locked(&mut self.queue.state.lock(), make)
  }

  /// The latest queued, not yet applied, write of `key`: `Some(None)` for a deletion.
  fn queued_value(&self, key: &StoreKey) -> Option<Option<Arc<[u8]>>> {
    self.queue.state.lock().pending.get(key).map(|p| p.value.clone())
  }

  fn enqueue_write(&self, key: StoreKey, value: Option<Arc<[u8]>>, unlock: Option<Digest>) -> CoreResult<()> {
    if value.is_some() {
      self.present.add(&key);
    }
    let mut q = self.queue.state.lock();
    let seq = self.send_locked(&mut q, |seq| Job::Write {
      seq,
      key,
      value: value.clone(),
      sync: false,
      unlock,
    })?;
    q.pending.insert(key, Pending { seq, value });
    Ok(())
  }

  /// Queues the deletion of every key in `from..to`, dropping the queued writes it covers.
  fn enqueue_range(&self, from: Vec<u8>, to: Vec<u8>) -> CoreResult<u64> {
    let mut q = self.queue.state.lock();
    q.pending.retain(|k, _| !(k[..] >= from[..] && k[..] < to[..]));
    self.send_locked(&mut q, |seq| Job::Range {
      seq,
      from,
      to,
      sync: false,
    })
  }

  /// Queues a guest's operations behind this owner's own, then waits until they are applied.
  fn apply_for_guest(&self, ops: Vec<WriteOp>, sync: bool) -> CoreResult<()> {
    let bad_key = || CoreError::io("malformed key from a guest");
    for op in ops {
      match op {
        WriteOp::Put(k, v) => {
          self.enqueue_write(k.as_slice().try_into().map_err(|_| bad_key())?, Some(v.into()), None)?
        }
        WriteOp::Delete(k) => self.enqueue_write(k.as_slice().try_into().map_err(|_| bad_key())?, None, None)?,
        WriteOp::DeleteRange(from, to) => {
          self.enqueue_range(from, to)?;
        }
      }
    }
    let target = if sync {
      self.send(|seq| Job::Sync { seq })?
    } else {
      self.queue.queued.load(Ordering::SeqCst)
    };
    self.wait_done(target)
  }

  /// Waits until the jobs up to `target` are applied; the writer stops lingering for them.
  fn wait_done(&self, target: u64) -> CoreResult<()> {
    let mut p = self.progress.lock();
    let failed_before = p.last_failed;
    if p.done < target {
      self.queue.hurry();
    }
    while p.done < target {
      if self.queue.is_closed() && p.done < target {
        // Closing: the writer drains the queue before it exits.
        self.progressed.wait_for(&mut p, Duration::from_millis(50));
        continue;
      }
      self.progressed.wait(&mut p);
    }
    if p.last_failed != failed_before && p.last_failed <= target {
      return Err(CoreError::io(format!(
        "a queued write could not be applied: {}",
        p.last_error
      )));
    }
    Ok(())
  }

  fn write_loop(self: Arc<Self>) {
    // RocksDB counts every memtable comparison in a thread-local context by default.
    rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
    while let Some(mut jobs) = self.queue.take() {
      // Plain writes linger a moment so that the misses that follow join one batch; a
      // flush, clear or close is served at once.
      if jobs.len() < MAX_BATCH && jobs.iter().all(Job::may_linger) {
        self.queue.linger(&mut jobs);
      }
      let stop = jobs.iter().any(|j| matches!(j, Job::Stop));
      let mut sync = false;
      let mut max_seq = 0;
      let mut writes = false;
      for j in &jobs {
        match j {
          Job::Write { seq, sync: s, .. } | Job::Range { seq, sync: s, .. } => {
            writes = true;
            sync |= *s;
            max_seq = max_seq.max(*seq);
          }
          Job::Sync { seq } => {
            sync = true;
            max_seq = max_seq.max(*seq);
          }
          Job::Stop => {}
        }
      }
      let applied = if !writes && !sync {
        Ok(())
      } else {
        self.apply(&jobs, sync)
      };
      if applied.is_ok() && matches!(&*self.conn.read(), Some(Conn::Owner { .. })) {
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
        p.last_failed = max_seq;
        p.last_error = e.to_string();
        self.write_errors.fetch_add(1, Ordering::Relaxed);
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

  /// Raw bytes stored under `key`, queued writes first.
  fn raw_get(self: &Arc<Self>, key: &StoreKey) -> CoreResult<Option<Vec<u8>>> {
    if let Some(v) = self.queued_value(key) {
      return Ok(v.map(|v| v.to_vec()));
    }
    self.with_conn(|conn| match conn {
      Conn::Owner { db, .. } => db.get(key).map_err(CoreError::io),
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

  fn count(self: &Arc<Self>, ns: [u8; 8]) -> CoreResult<u64> {
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

  /// Runs `f` on the current connection; if the owner went away, elects again once and retries.
  fn with_conn<T>(self: &Arc<Self>, f: impl Fn(&Conn) -> CoreResult<T>) -> CoreResult<T> {
    {
      let conn = self.conn.read();
      let c = conn.as_ref().ok_or(CoreError::Closed)?;
      match f(c) {
        Err(CoreError::StoreUnavailable { .. }) if matches!(c, Conn::Guest { .. }) => {}
        r => return r,
      }
    }
    self.reelect()?;
    let conn = self.conn.read();
    f(conn.as_ref().ok_or(CoreError::Closed)?)
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
    let old = self.conn.write().take();
    drop(old);
    let conn = elect(self)?;
    *self.conn.write() = Some(conn);
    self.start_scan();
    Ok(())
  }

  /// When this process owns the directory, adds the keys its database holds to `present` on a
  /// thread of its own; `present` rules keys out once that is done.
  fn start_scan(self: &Arc<Self>) {
    let Some(Conn::Owner { db, .. }) = &*self.conn.read() else {
      return;
    };
    let (db, inner) = (db.clone(), self.clone());
    let scan = thread::Builder::new().name("cachette-disk-scan".into()).spawn(move || {
      let mut ro = ReadOptions::default();
      ro.fill_cache(false);
      ro.set_verify_checksums(false);
      let mut it = db.raw_iterator_opt(ro);
      it.seek_to_first();
      let mut n = 0u32;
      while let Some(key) = it.key() {
        if key.len() == 8 + STORE_KEY_LEN {
          inner.present.add(key);
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(4096) && inner.scan_stop.load(Ordering::Relaxed) {
          return;
        }
        it.next();
      }
      // A failed scan leaves the filter incomplete: every read keeps asking RocksDB.
      if it.status().is_ok() {
        inner.present.complete.store(true, Ordering::Release);
      }
    });
    // Without a thread the filter stays incomplete, which only costs speed.
    if let Ok(scan) = scan {
      *self.scan.lock() = Some(scan);
    }
  }

  #[cfg(test)]
  fn scanned(&self) -> bool {
    self.present.complete.load(Ordering::Acquire)
  }
}

fn apply_local(db: &DB, ops: &[WriteOp], sync: bool) -> CoreResult<()> {
  let mut batch = WriteBatch::default();
  for op in ops {
    match op {
      WriteOp::Put(k, v) => batch.put(k, v),
      WriteOp::Delete(k) => batch.delete(k),
      WriteOp::DeleteRange(a, b) => batch.delete_range(a, b),
    }
  }
  write_local(db, batch, sync)
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

fn count_local(db: &DB, ns: [u8; 8]) -> u64 {
  let (from, to) = ns_range(ns);
  db.iterator(IteratorMode::From(&from, rocksdb::Direction::Forward))
    .map_while(Result::ok)
    .take_while(|(k, _)| k.as_ref() < to.as_slice())
    .count() as u64
}

/// One request/response round trip to the owner. A broken connection is `StoreUnavailable`.
fn request(stream: &Mutex<UnixStream>, body: &[u8]) -> CoreResult<Vec<u8>> {
  let mut s = stream.lock();
  let lost = |e: std::io::Error| CoreError::StoreUnavailable {
    path: PathBuf::from("owner"),
    reason: e.to_string(),
  };
  ipc::write_frame(&mut *s, body).map_err(lost)?;
  match ipc::read_frame(&mut *s).map_err(lost)? {
    Some(r) => Ok(r),
    None => Err(CoreError::StoreUnavailable {
      path: PathBuf::from("owner"),
      reason: "the owner closed the connection".into(),
    }),
  }
}

/// The owner's side: accepts guests and answers their requests.
struct Server {
  socket: PathBuf,
  stop: Arc<AtomicBool>,
  peers: Arc<Mutex<Vec<UnixStream>>>,
  listener_fd: i32,
}

impl Server {
  fn start(inner: &Arc<Inner>, db: Arc<DB>) -> CoreResult<Server> {
    let socket = socket_path(&inner.path);
    // We hold the LOCK, so any socket file left here belongs to a dead owner.
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| unavailable(&inner.path, format!("owner socket: {e}")))?;
    #[cfg(unix)]
    {
      use std::os::unix::fs::PermissionsExt;
      let _ = fs::set_permissions(&socket, fs::Permissions::from_mode(0o600));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let peers: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
    let weak = Arc::downgrade(inner);
    // Server threads hold the database weakly: closing the store closes RocksDB at once,
    // whatever those threads are doing.
    let db = Arc::downgrade(&db);
    let (stop2, peers2) = (stop.clone(), peers.clone());
    let listener_fd = {
      use std::os::unix::io::AsRawFd;
      listener.as_raw_fd()
    };
    thread::Builder::new()
      .name("cachette-disk-owner".into())
      .spawn(move || {
        for stream in listener.incoming() {
          if stop2.load(Ordering::SeqCst) {
            break;
          }
          let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10));
            continue;
          };
          if let Ok(clone) = stream.try_clone() {
            peers2.lock().push(clone);
          }
          // Before the guest's first request is answered: from now on it may contend.
          if let Some(inner) = weak.upgrade() {
            inner.share_locks();
          }
          let (weak, db) = (weak.clone(), db.clone());
          let _ = thread::Builder::new()
            .name("cachette-disk-guest".into())
            .spawn(move || serve(weak, db, stream));
        }
      })
      .map_err(|e| unavailable(&inner.path, e))?;
    Ok(Server {
      socket,
      stop,
      peers,
      listener_fd,
    })
  }

  /// Stops serving without waiting for the accept thread: it wakes (listener shut down, or a
  /// last connection) and exits on its own. Waiting could hang if the socket file was removed.
  fn stop(&self) {
    self.stop.store(true, Ordering::SeqCst);
    // SAFETY: the fd belongs to the listener, which the accept thread owns until it exits;
    // shutdown only makes its blocked accept return.
    unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
    let _ = UnixStream::connect(&self.socket);
    for p in self.peers.lock().drain(..) {
      let _ = p.shutdown(std::net::Shutdown::Both);
    }
    let _ = fs::remove_file(&self.socket);
  }
}

fn serve(inner: Weak<Inner>, db: Weak<DB>, mut stream: UnixStream) {
  while let Ok(Some(body)) = ipc::read_frame(&mut stream) {
    let Some(db) = db.upgrade() else { break };
    let resp = match answer(&inner, &db, &body) {
      Ok(r) => r,
      Err(e) => ipc::error_response(&e),
    };
    if ipc::write_frame(&mut stream, &resp).is_err() {
      break;
    }
  }
  // A malformed or oversized frame ends the conversation: close it so the guest sees it at
  // once (the owner keeps a clone of every stream for its own shutdown).
  let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn answer(inner: &Weak<Inner>, db: &DB, body: &[u8]) -> CoreResult<Vec<u8>> {
  let mut c = Cursor::new(body);
  match c.u8()? {
    ipc::OP_GET => {
      let key = c.rest();
      let queued = inner.upgrade().and_then(|i| {
        let k: StoreKey = key.try_into().ok()?;
        i.queued_value(&k)
      });
      let found = match queued {
        Some(v) => v.map(|v| v.to_vec()),
        None => db.get(key).map_err(CoreError::io)?,
      };
      Ok(match found {
        Some(v) => {
          let mut r = Vec::with_capacity(v.len() + 1);
          r.push(ipc::ST_FOUND);
          r.extend_from_slice(&v);
          r
        }
        None => vec![ipc::ST_OK],
      })
    }
    ipc::OP_WRITE => {
      let (ops, sync) = ipc::decode_write(&mut c)?;
      match inner.upgrade() {
        // Through the owner's own queue, so a guest's writes and clears are ordered with the
        // owner's queued writes (a clear is never undone by an older queued put).
        Some(inner) => inner.apply_for_guest(ops, sync)?,
        None => apply_local(db, &ops, sync)?,
      }
      Ok(vec![ipc::ST_OK])
    }
    ipc::OP_COUNT => {
      let ns: [u8; 8] = c.take(8)?.try_into().map_err(CoreError::io)?;
      let mut r = vec![ipc::ST_OK];
      r.extend_from_slice(&count_local(db, ns).to_be_bytes());
      Ok(r)
    }
    _ => Err(CoreError::io("unknown request")),
  }
}

impl DiskStore {
  /// Reads the entry of `digest`, and tells whether this process owned the directory then.
  fn read_owned(&self, ns: [u8; 8], digest: &Digest, sink: &mut dyn FnMut(Times, &[u8])) -> CoreResult<(bool, bool)> {
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
      return match db
        .get_pinned_opt(key, &self.inner.read_options)
        .map_err(CoreError::io)?
      {
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

impl Store for DiskStore {
  fn get(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<Option<Entry>> {
    let mut found = None;
    self.read(ns, digest, &mut |times, payload| {
      found = Some(Entry {
        times,
        payload: payload.to_vec(),
      })
    })?;
    Ok(found)
  }

  fn read(&self, ns: [u8; 8], digest: &Digest, sink: &mut dyn FnMut(Times, &[u8])) -> CoreResult<bool> {
    self.read_owned(ns, digest, sink).map(|(found, _)| found)
  }

  fn read_or_lock(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    owner: OwnerId,
    timeout: Duration,
    now_ms: u64,
    sink: &mut dyn FnMut(Times, &[u8]),
  ) -> CoreResult<ReadOrLock> {
    // Every write to the directory, this process's or another's, passes through the owner's
    // queue: when the owner takes the lock and nothing was queued since its read, the read
    // still holds, and the second read of `lock_and_read` is skipped.
    let is_owner = || matches!(&*self.inner.conn.read(), Some(Conn::Owner { .. }));
    let queued = self.inner.queue.queued.load(Ordering::SeqCst);
    let (found, owned) = self.read_owned(ns, digest, sink)?;
    if found {
      return Ok(ReadOrLock::Hit);
    }
    let outcome = self.lock(digest, owner, timeout)?;
    // (Owner at both ends: a guest elected owner meanwhile read through the old owner.)
    if outcome == LockOutcome::Acquired
      && owned
      && is_owner()
      && self.inner.queue.queued.load(Ordering::SeqCst) == queued
    {
      return Ok(ReadOrLock::Claimed(Claimed::Acquired));
    }
    Ok(ReadOrLock::Claimed(reread_after_lock(
      self, outcome, ns, digest, owner, now_ms, sink,
    )?))
  }

  fn put(&self, ns: [u8; 8], digest: &Digest, payload: &[u8], times: Times) -> CoreResult<()> {
    let sealed = seal_shared(digest, times, payload);
    self.inner.enqueue_write(store_key(ns, digest), Some(sealed), None)
  }

  fn delete(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<bool> {
    let present = self.get(ns, digest)?.is_some();
    self.inner.enqueue_write(store_key(ns, digest), None, None)?;
    Ok(present)
  }

  fn clear(&self, ns: [u8; 8]) -> CoreResult<()> {
    let (from, to) = ns_range(ns);
    let seq = self.inner.enqueue_range(from, to)?;
    self.inner.wait_done(seq)
  }

  fn len(&self, ns: [u8; 8]) -> CoreResult<u64> {
    self.flush(false)?;
    self.inner.count(ns)
  }

  fn flush(&self, sync: bool) -> CoreResult<()> {
    let seq = if sync {
      self.inner.send(|seq| Job::Sync { seq })?
    } else {
      self.inner.queue.queued.load(Ordering::SeqCst)
    };
    self.inner.wait_done(seq)
  }

  fn lock(&self, digest: &Digest, owner: OwnerId, timeout: Duration) -> CoreResult<LockOutcome> {
    if let Some(outcome) = claim_local(&self.inner.flights, digest, owner, timeout) {
      return Ok(outcome);
    }
    // Read after the claim was registered (see `Inner::share_locks`).
    if !self.inner.shared_locks.load(Ordering::SeqCst) {
      return Ok(LockOutcome::Acquired);
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(500);
    loop {
      match self.inner.locks.try_lock(digest) {
        Ok(true) => return Ok(LockOutcome::Acquired),
        Ok(false) => {}
        Err(e) => {
          self.inner.flights.abandon(digest, owner);
          return Err(e);
        }
      }
      if Instant::now() >= deadline {
        self.inner.flights.abandon(digest, owner);
        return Ok(LockOutcome::TimedOut);
      }
      thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
      pause = (pause * 2).min(Duration::from_millis(20));
    }
  }

  fn put_and_release(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    payload: &[u8],
    times: Times,
    owner: OwnerId,
  ) -> CoreResult<()> {
    let sealed = seal_shared(digest, times, payload);
    // The owner serves its queued writes to the other processes, so they may take the lock at
    // once; a guest's write must reach the owner first, so the writer releases its lock after.
    let owner_role = matches!(&*self.inner.conn.read(), Some(Conn::Owner { .. }));
    let deferred = (!owner_role).then_some(*digest);
    let r = self.inner.enqueue_write(store_key(ns, digest), Some(sealed), deferred);
    self.inner.end_claim(digest, owner, None, owner_role || r.is_err());
    r
  }

  fn release(&self, digest: &Digest, owner: OwnerId, error: Option<Vec<u8>>) {
    self.inner.end_claim(digest, owner, error, true);
  }

  fn release_owner(&self, owner: OwnerId) {
    // The dead thread can no longer release its byte-range locks: release them for it, so
    // waiters in other processes take over too.
    let inner = &self.inner;
    inner
      .flights
      .abandon_owner(owner, |digest| inner.unlock_if_shared(digest));
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::key::{KeyValue, Keyspace};

  fn digest(i: u32) -> Digest {
    Keyspace::new("disk-test")
      .digest(&[KeyValue::Number(f64::from(i))])
      .unwrap()
  }

  const NS: [u8; 8] = [1; 8];

  #[test]
  fn one_handle_per_directory_per_process() {
    let dir = crate::test_dir::TempDir::new();
    let a = DiskStore::open(dir.path()).unwrap();
    let b = DiskStore::open(&dir.path().join(".")).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.role(), Role::Owner);
  }

  #[test]
  fn writes_are_readable_at_once_and_durable_after_flush() {
    let dir = crate::test_dir::TempDir::new();
    {
      let s = DiskStore::open(dir.path()).unwrap();
      for i in 0..100 {
        s.put(NS, &digest(i), format!("v{i}").as_bytes(), Times::forever(1))
          .unwrap();
        assert_eq!(
          s.get(NS, &digest(i)).unwrap().unwrap().payload,
          format!("v{i}").as_bytes()
        );
      }
      s.flush(true).unwrap();
      assert_eq!(s.len(NS).unwrap(), 100);
    }
    let s = DiskStore::open(dir.path()).unwrap();
    assert_eq!(s.get(NS, &digest(42)).unwrap().unwrap().payload, b"v42");
  }

  #[test]
  fn absent_keys_skip_the_database_once_it_was_scanned_and_stored_ones_still_read() {
    let dir = crate::test_dir::TempDir::new();
    {
      let s = DiskStore::open(dir.path()).unwrap();
      for i in 0..5000 {
        s.put(NS, &digest(i), &i.to_le_bytes(), Times::forever(1)).unwrap();
      }
      s.flush(false).unwrap();
    }
    let s = DiskStore::open(dir.path()).unwrap();
    // Written while the scan may still run: added to the filter by the write itself.
    s.put(NS, &digest(7000), b"late", Times::forever(1)).unwrap();
    let started = Instant::now();
    while !s.inner.scanned() {
      assert!(started.elapsed() < Duration::from_secs(10), "the scan never finished");
      thread::sleep(Duration::from_millis(5));
    }
    // What the database held before this process opened it came from the scan.
    for i in 0..5000 {
      assert_eq!(
        s.get(NS, &digest(i)).unwrap().map(|e| e.payload),
        Some(i.to_le_bytes().to_vec()),
        "{i}"
      );
    }
    s.put(NS, &digest(7001), b"later", Times::forever(1)).unwrap();
    s.flush(false).unwrap();
    assert_eq!(s.get(NS, &digest(7000)).unwrap().unwrap().payload, b"late");
    assert_eq!(s.get(NS, &digest(7001)).unwrap().unwrap().payload, b"later");
    let absent = 10_000..20_000;
    let ruled_out = absent
      .clone()
      .filter(|&i| s.inner.present.rules_out(&store_key(NS, &digest(i))))
      .count();
    assert!(ruled_out > 9_900, "{ruled_out}");
    assert!(absent.take(200).all(|i| s.get(NS, &digest(i)).unwrap().is_none()));
  }

  #[test]
  fn a_batch_applied_in_key_order_keeps_the_last_write_of_each_key() {
    let dir = crate::test_dir::TempDir::new();
    {
      let s = DiskStore::open(dir.path()).unwrap();
      // Queued at once, so they meet in a few batches: overwrites, deletes and rewrites of the
      // same keys, interleaved with other keys.
      for round in 0..3u32 {
        for i in 0..500 {
          s.put(NS, &digest(i), format!("r{round}-{i}").as_bytes(), Times::forever(1))
            .unwrap();
          if i % 7 == 0 {
            s.delete(NS, &digest(i)).unwrap();
          }
        }
      }
      for i in (0..500).step_by(49) {
        s.put(NS, &digest(i), format!("last-{i}").as_bytes(), Times::forever(1))
          .unwrap();
      }
      s.flush(false).unwrap();
    }
    // Reopened: every read comes from RocksDB, none from the queue or the recent entries.
    let s = DiskStore::open(dir.path()).unwrap();
    for i in 0..500 {
      let want = if i % 49 == 0 {
        Some(format!("last-{i}"))
      } else if i % 7 == 0 {
        None
      } else {
        Some(format!("r2-{i}"))
      };
      assert_eq!(
        s.get(NS, &digest(i))
          .unwrap()
          .map(|e| String::from_utf8(e.payload).unwrap()),
        want,
        "key {i}"
      );
    }
  }

  #[test]
  fn expired_entries_read_as_misses() {
    let dir = crate::test_dir::TempDir::new();
    let s = DiskStore::open(dir.path()).unwrap();
    let now = SystemClock.now_ms();
    s.put(
      NS,
      &digest(1),
      b"old",
      Times {
        created_ms: now - 10,
        stale_at_ms: now - 5,
        expires_ms: now - 1,
      },
    )
    .unwrap();
    assert!(s.get(NS, &digest(1)).unwrap().is_none());
    s.put(
      NS,
      &digest(2),
      b"stale",
      Times {
        created_ms: now,
        stale_at_ms: now,
        expires_ms: now + 60_000,
      },
    )
    .unwrap();
    assert_eq!(s.get(NS, &digest(2)).unwrap().unwrap().payload, b"stale");
  }

  #[test]
  fn compaction_reclaims_expired_entries_and_keeps_live_ones() {
    let dir = crate::test_dir::TempDir::new();
    let s = DiskStore::open(dir.path()).unwrap();
    let now = SystemClock.now_ms();
    s.put(
      NS,
      &digest(1),
      b"gone",
      Times {
        created_ms: now - 10,
        stale_at_ms: now - 5,
        expires_ms: now - 1,
      },
    )
    .unwrap();
    s.put(NS, &digest(2), b"kept", Times::forever(now)).unwrap();
    s.flush(false).unwrap();
    let Some(Conn::Owner { db, .. }) = &*s.inner.conn.read() else {
      panic!("not the owner")
    };
    db.flush().unwrap();
    db.compact_range::<&[u8], &[u8]>(None, None);
    assert!(
      db.get(store_key(NS, &digest(1))).unwrap().is_none(),
      "the expired entry survived compaction"
    );
    assert!(db.get(store_key(NS, &digest(2))).unwrap().is_some());
  }

  #[test]
  fn clear_removes_one_namespace_only() {
    let dir = crate::test_dir::TempDir::new();
    let s = DiskStore::open(dir.path()).unwrap();
    let other = [2u8; 8];
    for i in 0..10 {
      s.put(NS, &digest(i), b"a", Times::forever(1)).unwrap();
      s.put(other, &digest(i), b"b", Times::forever(1)).unwrap();
    }
    s.clear(NS).unwrap();
    assert_eq!(s.len(NS).unwrap(), 0);
    assert_eq!(s.len(other).unwrap(), 10);
  }

  #[test]
  fn a_corrupted_entry_is_a_miss_and_other_entries_survive() {
    let dir = crate::test_dir::TempDir::new();
    let s = DiskStore::open(dir.path()).unwrap();
    s.put(NS, &digest(1), b"good", Times::forever(1)).unwrap();
    s.flush(false).unwrap();
    let key = store_key(NS, &digest(2));
    s.inner
      .enqueue_write(key, Some(Arc::from(&b"garbage"[..])), None)
      .unwrap();
    assert!(s.get(NS, &digest(2)).unwrap().is_none());
    // A valid envelope of key 3 stored under key 4's slot is foreign: a miss.
    let foreign: Arc<[u8]> = envelope::seal(&digest(3), Times::forever(1), b"three").into();
    s.inner
      .enqueue_write(store_key(NS, &digest(4)), Some(foreign), None)
      .unwrap();
    assert!(s.get(NS, &digest(4)).unwrap().is_none());
    assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"good");
  }

  #[test]
  fn a_damaged_database_is_set_aside_and_a_fresh_one_opens() {
    let dir = crate::test_dir::TempDir::new();
    {
      let s = DiskStore::open(dir.path()).unwrap();
      s.put(NS, &digest(1), b"v", Times::forever(1)).unwrap();
      s.flush(true).unwrap();
      s.close();
    }
    // Damage RocksDB's CURRENT file, as a torn write or a disk error could.
    fs::write(dir.path().join("CURRENT"), b"\x00garbage").unwrap();
    let s = DiskStore::open(dir.path()).unwrap();
    assert_eq!(s.role(), Role::Owner);
    assert!(s.get(NS, &digest(1)).unwrap().is_none(), "a fresh cache starts empty");
    s.put(NS, &digest(2), b"w", Times::forever(1)).unwrap();
    assert_eq!(s.get(NS, &digest(2)).unwrap().unwrap().payload, b"w");
    let aside = fs::read_dir(dir.path())
      .unwrap()
      .flatten()
      .filter(|e| e.file_name().to_string_lossy().starts_with(".corrupt-"))
      .count();
    assert_eq!(aside, 1, "the damaged files were kept aside");
  }

  #[test]
  fn an_unwritable_path_is_store_unavailable() {
    let dir = crate::test_dir::TempDir::new();
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
      DiskStore::open(&file.join("sub")),
      Err(CoreError::StoreUnavailable { .. })
    ));
    assert!(matches!(
      DiskStore::open(&file),
      Err(CoreError::StoreUnavailable { .. })
    ));
  }

  #[test]
  fn lock_admits_one_thread_and_releases_after_the_write() {
    let dir = crate::test_dir::TempDir::new();
    let s = DiskStore::open(dir.path()).unwrap();
    let d = digest(7);
    assert_eq!(s.lock(&d, 1, Duration::from_secs(1)).unwrap(), LockOutcome::Acquired);
    let s2 = s.clone();
    let waiter = thread::spawn(move || s2.lock(&d, 2, Duration::from_secs(5)).unwrap());
    thread::sleep(Duration::from_millis(20));
    s.put_and_release(NS, &d, b"x", Times::forever(1), 1).unwrap();
    assert_eq!(waiter.join().unwrap(), LockOutcome::Settled(None));
    s.flush(false).unwrap();
    // The byte-range lock was released by the writer: a fresh claimant gets it.
    assert_eq!(s.lock(&d, 3, Duration::from_secs(1)).unwrap(), LockOutcome::Acquired);
    s.release(&d, 3, None);
  }

  #[test]
  fn read_or_lock_hits_claims_a_miss_and_hands_a_waiter_the_value_stored_meanwhile() {
    let dir = crate::test_dir::TempDir::new();
    let s = DiskStore::open(dir.path()).unwrap();
    let d = digest(8);
    let second = Duration::from_secs(1);
    let none = &mut |_: Times, _: &[u8]| panic!("nothing to read yet");
    assert_eq!(
      s.read_or_lock(NS, &d, 1, second, 1, none).unwrap(),
      ReadOrLock::Claimed(Claimed::Acquired)
    );
    // Another thread misses the same key: it waits for the holder, then reads what it stored.
    let s2 = s.clone();
    let waiter = thread::spawn(move || {
      let mut got = Vec::new();
      let r = s2
        .read_or_lock(NS, &d, 2, Duration::from_secs(5), 1, &mut |_, p| got = p.to_vec())
        .unwrap();
      (r, got)
    });
    thread::sleep(Duration::from_millis(20));
    s.put_and_release(NS, &d, b"x", Times::forever(1), 1).unwrap();
    assert_eq!(
      waiter.join().unwrap(),
      (ReadOrLock::Claimed(Claimed::Value), b"x".to_vec())
    );
    let mut got = Vec::new();
    assert_eq!(
      s.read_or_lock(NS, &d, 3, second, 1, &mut |_, p| got = p.to_vec())
        .unwrap(),
      ReadOrLock::Hit
    );
    assert_eq!(got, b"x");
    // A hit takes no lock: a claimant of the key gets it at once.
    assert_eq!(s.lock(&d, 4, second).unwrap(), LockOutcome::Acquired);
    s.release(&d, 4, None);
  }

  #[test]
  fn recent_entries_follow_overwrites_deletes_and_clear() {
    let dir = crate::test_dir::TempDir::new();
    let s = DiskStore::open(dir.path()).unwrap();
    let other: [u8; 8] = *b"other-ns";
    for (ns, v) in [(NS, b"a1"), (other, b"b1")] {
      s.put(ns, &digest(1), v, Times::forever(1)).unwrap();
    }
    s.flush(false).unwrap();
    // Read once from RocksDB (kept in memory), then changed: reads see every change.
    assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"a1");
    s.put(NS, &digest(1), b"a2", Times::forever(2)).unwrap();
    assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"a2");
    s.flush(false).unwrap();
    assert_eq!(s.get(NS, &digest(1)).unwrap().unwrap().payload, b"a2");
    assert!(s.delete(NS, &digest(1)).unwrap());
    s.flush(false).unwrap();
    assert_eq!(s.get(NS, &digest(1)).unwrap(), None);
    assert_eq!(s.get(other, &digest(1)).unwrap().unwrap().payload, b"b1");
    s.clear(other).unwrap();
    assert_eq!(s.get(other, &digest(1)).unwrap(), None);
  }

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

  #[test]
  #[cfg(target_os = "linux")]
  fn an_owner_alone_skips_byte_range_locks_and_takes_them_for_its_claims_when_a_guest_joins() {
    let dir = crate::test_dir::TempDir::new();
    let owner = DiskStore::open(dir.path()).unwrap();
    let second = Duration::from_secs(1);
    // Another descriptor of the lock file stands for another process's view of the bytes.
    let other = FileLocks::open(&dir.path().join(".locks")).unwrap();
    assert_eq!(owner.lock(&digest(1), 1, second).unwrap(), LockOutcome::Acquired);
    assert!(
      other.try_lock(&digest(1)).unwrap(),
      "no other process yet: no byte taken"
    );
    other.unlock(&digest(1));
    // A guest joins: the claim in progress takes its byte before the guest's first answer.
    let guest = DiskStore::start(fs::canonicalize(dir.path()).unwrap()).unwrap();
    assert_eq!(guest.role(), Role::Guest);
    assert!(!other.try_lock(&digest(1)).unwrap());
    assert_eq!(
      guest.lock(&digest(1), 2, Duration::from_millis(50)).unwrap(),
      LockOutcome::TimedOut
    );
    // Later claims take their byte at once; releases free them.
    assert_eq!(owner.lock(&digest(2), 1, second).unwrap(), LockOutcome::Acquired);
    assert!(!other.try_lock(&digest(2)).unwrap());
    owner.release(&digest(1), 1, None);
    owner.release(&digest(2), 1, None);
    assert_eq!(guest.lock(&digest(1), 2, second).unwrap(), LockOutcome::Acquired);
    assert!(other.try_lock(&digest(2)).unwrap());
    guest.release(&digest(1), 2, None);
  }

  #[test]
  fn a_second_opener_in_another_process_role_works_through_the_owner() {
    // Simulate a guest in this process: a second Inner elected against a live owner.
    let dir = crate::test_dir::TempDir::new();
    let owner = DiskStore::open(dir.path()).unwrap();
    owner.put(NS, &digest(1), b"from-owner", Times::forever(1)).unwrap();
    let guest = DiskStore::start(fs::canonicalize(dir.path()).unwrap()).unwrap();
    assert_eq!(guest.role(), Role::Guest);
    assert_eq!(guest.get(NS, &digest(1)).unwrap().unwrap().payload, b"from-owner");
    guest.put(NS, &digest(2), b"from-guest", Times::forever(1)).unwrap();
    guest.flush(false).unwrap();
    assert_eq!(owner.get(NS, &digest(2)).unwrap().unwrap().payload, b"from-guest");
    // The owner keeps recent entries in memory: a guest's overwrite and delete reach them too.
    owner.flush(false).unwrap();
    assert_eq!(owner.get(NS, &digest(1)).unwrap().unwrap().payload, b"from-owner");
    guest.put(NS, &digest(1), b"overwritten", Times::forever(2)).unwrap();
    guest.flush(false).unwrap();
    assert_eq!(owner.get(NS, &digest(1)).unwrap().unwrap().payload, b"overwritten");
    guest.put(NS, &digest(3), b"short-lived", Times::forever(2)).unwrap();
    guest.flush(false).unwrap();
    assert!(owner.get(NS, &digest(3)).unwrap().is_some());
    assert!(guest.delete(NS, &digest(3)).unwrap());
    guest.flush(false).unwrap();
    assert_eq!(owner.get(NS, &digest(3)).unwrap(), None);
    // The owner goes away: the guest takes the directory over and keeps every entry.
    owner.close();
    drop(owner);
    assert_eq!(guest.get(NS, &digest(2)).unwrap().unwrap().payload, b"from-guest");
    assert_eq!(guest.role(), Role::Owner);
    assert_eq!(guest.get(NS, &digest(1)).unwrap().unwrap().payload, b"overwritten");
  }
}
