//! The disk and `shared: true` stores as JS sees them: `openDisk`, `openShared`, the
//! `NativeStore` class, and the hot-path functions raw.rs registers (a store's handle names it in
//! its JS thread's table).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;
use parking_lot::Mutex;

use cachette_core::clock;
use cachette_core::key::Keyspace;
use cachette_core::shard_map::Bounds;
use cachette_core::store::disk::{DiskStore, FailureCursor, Role};
use cachette_core::store::memory::SharedMemory;
use cachette_core::store::{Claimed, ReadOrLock, Store};
use cachette_core::{blocking, owners, CoreError, CoreResult};

use crate::handles;
use crate::{
  coded, copy_found, digest_of, failure, hash_into, lock_result, napi_failure, now_ms, times, ClaimState, Code,
  LockResult, WAITED_AT,
};

/// Opens the disk cache directory `path` for `namespace` (its WTF-8 bytes, as for every store).
#[napi]
pub fn open_disk(path: String, namespace: Buffer) -> Result<NativeStore, Code> {
  let disk = DiskStore::open_with_clock(&PathBuf::from(path), clock::process()).map_err(coded)?;
  Ok(NativeStore::new(disk.clone(), Some(disk), &namespace))
}

/// Opens the process-wide memory store of `namespace` (shared by all worker threads).
#[napi]
pub fn open_shared(namespace: Buffer, max_entries: Option<f64>, max_bytes: Option<f64>) -> NativeStore {
  let bounds = Bounds {
    max_entries: max_entries.map(|n| n as usize),
    max_bytes: max_bytes.map(|n| n as usize),
  };
  let store = SharedMemory::open(&*namespace, bounds, clock::process());
  NativeStore::new(store, None, &namespace)
}

/// What the hot-path functions need of an open store. Its JS thread's table holds one too.
struct Hot {
  store: Arc<dyn Store>,
  keyspace: Keyspace,
  ns: [u8; 8],
  /// The serialized error of the last claim that ended in another caller's failure.
  failure: Mutex<Option<Vec<u8>>>,
  /// A disk store, and what this handle was told of its failed writes.
  disk: Option<(Arc<DiskStore>, FailureCursor)>,
}

thread_local! {
  /// The stores this JS thread opened, by handle, for the hot-path functions below.
  static HOT: handles::Table<Hot> = const { std::cell::RefCell::new(Vec::new()) };
}

fn hot(handle: u32) -> Result<Arc<Hot>, Code> {
  handles::get(&HOT, handle)
}

impl Hot {
  /// Reads the entry of the digest in `io`, copying its payload into `scratch` when it fits.
  /// Returns the payload length (larger than `scratch`: nothing copied, call `getBuffer`), or -1.
  fn read_into(&self, io: &mut [u8], scratch: &mut [u8]) -> Result<i64, Code> {
    let d = digest_of(io)?;
    let now = now_ms();
    let mut len = -1i64;
    self
      .store
      .read(self.ns, &d, &mut |t, p| len = copy_found(io, scratch, now, t, p))
      .map_err(coded)?;
    Ok(len)
  }

  /// This handle's writes that failed (after they were queued) since it last asked.
  fn new_failures(&self) -> u64 {
    self.disk.as_ref().map_or(0, |(d, c)| d.take_failures(c))
  }

  /// Waits until every write issued before is durable (`sync`: on stable storage); fails when
  /// one issued since this handle's previous flush could not be applied.
  fn flush(&self, sync: bool) -> CoreResult<()> {
    match &self.disk {
      Some((d, c)) => d.flush_reporting(sync, c),
      None => self.store.flush(sync),
    }
  }

  /// The result code of a claim for JS (see `lockAndRead`); `len` is the length of a value found.
  fn claimed_code(&self, claimed: Claimed, len: i64) -> i64 {
    let state = match claimed {
      Claimed::Value => return len,
      Claimed::Acquired => ClaimState::Acquired,
      Claimed::TimedOut => ClaimState::TimedOut,
      Claimed::Settled(None) => ClaimState::Settled,
      Claimed::Settled(Some(e)) => {
        *self.failure.lock() = Some(e);
        ClaimState::Failed
      }
    };
    state as i64
  }
}

/// Hashes `key` into `io`, then reads its entry into `scratch`: returns the payload length,
/// or -1 on a miss. A length above `scratch.length` means nothing was copied: call `getBuffer`.
/// `io` also receives whether the entry is stale and when it was created.
pub(crate) fn store_get(handle: u32, key: &[u8], io: &mut [u8], scratch: &mut [u8]) -> Result<i64, Code> {
  let h = hot(handle)?;
  hash_into(&h.keyspace, key, io)?;
  h.read_into(io, scratch)
}

/// Like `storeGet`, for the digest already in `io`.
pub(crate) fn store_get_hashed(handle: u32, io: &mut [u8], scratch: &mut [u8]) -> Result<i64, Code> {
  hot(handle)?.read_into(io, scratch)
}

/// `storeGet`, and on a miss `lockAndRead`, in one call (a sync function's whole path to its
/// computation). Returns what `lockAndRead` returns; a payload length is a hit, or a value
/// another caller stored while this one waited when `io[IO_WAITED]` is 1.
pub(crate) fn store_read_or_lock(
  handle: u32,
  key: &[u8],
  io: &mut [u8],
  scratch: &mut [u8],
  owner: u32,
  timeout_ms: f64,
) -> Result<i64, Code> {
  let h = hot(handle)?;
  hash_into(&h.keyspace, key, io)?;
  let d = digest_of(io)?;
  let now = now_ms();
  let timeout = Duration::from_millis(timeout_ms.max(0.0) as u64);
  let mut len = -1i64;
  let r = h
    .store
    .read_or_lock(h.ns, &d, u64::from(owner), timeout, now, &mut |t, p| {
      len = copy_found(io, scratch, now, t, p)
    })
    .map_err(coded)?;
  io[WAITED_AT] = u8::from(matches!(r, ReadOrLock::Claimed(Claimed::Value)));
  Ok(match r {
    ReadOrLock::Hit => len,
    ReadOrLock::Claimed(c) => h.claimed_code(c, len),
  })
}

/// Stores `payload` for the digest in `io` (write-behind on disk); with `owner`, also releases
/// the lock that owner took. Returns how many of this handle's earlier writes failed after
/// they were queued (a full disk) since it last said.
pub(crate) fn store_put(
  handle: u32,
  io: &[u8],
  payload: &[u8],
  (stale_at_ms, expires_ms, now_ms): (f64, f64, f64),
  owner: Option<u32>,
) -> Result<u64, Code> {
  let h = hot(handle)?;
  let d = digest_of(io)?;
  let t = times(stale_at_ms, expires_ms, now_ms);
  match owner {
    Some(o) => h.store.put_and_release(h.ns, &d, payload, t, u64::from(o)),
    None => h.store.put(h.ns, &d, payload, t),
  }
  .map_err(coded)?;
  Ok(h.new_failures())
}

/// A store opened for one namespace.
#[napi]
pub struct NativeStore {
  hot: Option<Arc<Hot>>,
  disk: Option<Arc<DiskStore>>,
  slot: handles::Slot,
  /// Set by `close()`: a lock a pending `lockAsync` takes afterwards is released at once.
  closed: Arc<AtomicBool>,
}

impl NativeStore {
  fn new(store: Arc<dyn Store>, disk: Option<Arc<DiskStore>>, namespace: &[u8]) -> Self {
    owners::register(&store);
    let keyspace = Keyspace::new(namespace);
    let ns = keyspace.id();
    NativeStore {
      hot: Some(Arc::new(Hot {
        store,
        keyspace,
        ns,
        failure: Mutex::new(None),
        disk: disk.as_ref().map(|d| (d.clone(), d.failure_cursor(ns))),
      })),
      disk,
      slot: handles::Slot::default(),
      closed: Arc::default(),
    }
  }

  fn hot(&self) -> Result<&Arc<Hot>, Code> {
    self.hot.as_ref().ok_or_else(|| coded(CoreError::Closed))
  }

  fn store(&self) -> Result<&Arc<dyn Store>, Code> {
    Ok(&self.hot()?.store)
  }
}

impl Drop for NativeStore {
  fn drop(&mut self) {
    self.slot.release(&HOT);
  }
}

#[napi]
impl NativeStore {
  /// Hashes the canonical key bytes into `io`'s digest.
  #[napi]
  pub fn hash(&self, key: &[u8], mut io: BufferSlice) -> Result<(), Code> {
    hash_into(&self.hot()?.keyspace, key, &mut io)
  }

  /// This store's handle for the hot-path functions (`storeGet` and the others), valid in this
  /// JS thread until `close()`.
  #[napi]
  pub fn handle(&mut self) -> Result<u32, Code> {
    let hot = self.hot.clone();
    self.slot.handle(&HOT, || hot.ok_or_else(|| coded(CoreError::Closed)))
  }

  /// Reads the entry of the digest in `io` as a new Buffer (payloads too large for `scratch`).
  #[napi]
  pub fn get_buffer(&self, mut io: BufferSlice) -> Result<Option<Buffer>, Code> {
    let d = digest_of(&io)?;
    let h = self.hot()?;
    let e = h.store.get(h.ns, &d).map_err(coded)?;
    Ok(e.map(|e| {
      copy_found(&mut io, &mut [], now_ms(), e.times, &[]);
      e.payload.into()
    }))
  }

  /// Removes the entry of the digest in `io`; true if there was one.
  #[napi]
  pub fn delete(&self, io: &[u8]) -> Result<bool, Code> {
    let d = digest_of(io)?;
    let h = self.hot()?;
    h.store.delete(h.ns, &d).map_err(coded)
  }

  /// Removes every entry of this namespace.
  #[napi]
  pub fn clear(&self) -> Result<(), Code> {
    let h = self.hot()?;
    h.store.clear(h.ns).map_err(coded)
  }

  /// Number of entries of this namespace.
  #[napi]
  pub fn size(&self) -> Result<f64, Code> {
    let h = self.hot()?;
    Ok(h.store.len(h.ns).map_err(coded)? as f64)
  }

  /// Takes the calculation lock of the digest in `io`, blocking up to `timeout_ms`.
  #[napi]
  pub fn lock(&self, io: &[u8], owner: u32, timeout_ms: f64) -> Result<LockResult, Code> {
    let d = digest_of(io)?;
    let o = self
      .store()?
      .lock(&d, u64::from(owner), Duration::from_millis(timeout_ms.max(0.0) as u64))
      .map_err(coded)?;
    Ok(lock_result(o))
  }

  /// The sync miss path in one call: takes the lock of the digest in `io`, then reads the key
  /// again. Returns a payload length (a fresh value is there, copied into `scratch` when it fits;
  /// no lock held) or a [`ClaimState`] below zero (`Failed`: `takeError()` has the error).
  #[napi]
  pub fn lock_and_read(
    &self,
    mut io: BufferSlice,
    mut scratch: BufferSlice,
    owner: u32,
    timeout_ms: f64,
  ) -> Result<i64, Code> {
    let d = digest_of(&io)?;
    let now = now_ms();
    let timeout = Duration::from_millis(timeout_ms.max(0.0) as u64);
    let mut len = -1i64;
    let h = self.hot()?;
    let claimed = h
      .store
      .lock_and_read(h.ns, &d, u64::from(owner), timeout, now, &mut |t, p| {
        len = copy_found(&mut io, &mut scratch, now, t, p)
      })
      .map_err(coded)?;
    Ok(h.claimed_code(claimed, len))
  }

  /// The serialized error of the last `lockAndRead` that returned -4.
  #[napi]
  pub fn take_error(&self) -> Option<Buffer> {
    self.hot.as_ref()?.failure.lock().take().map(Buffer::from)
  }

  /// Like `lock`, without blocking the JS thread (see `blocking::lock`): a lock nobody holds is
  /// taken at once; a contended one is waited for on the core's pool of waiting threads.
  #[napi(ts_return_type = "Promise<LockResult | Failure>")]
  pub fn lock_async<'env>(&self, env: &'env Env, io: &[u8], owner: u32, timeout_ms: f64) -> Result<Object<'env>, Code> {
    let d = digest_of(io)?;
    let store = self.store()?.clone();
    let (deferred, promise) = env.create_deferred().map_err(napi_failure)?;
    let timeout = Duration::from_millis(timeout_ms.max(0.0) as u64);
    blocking::lock(store, d, u64::from(owner), timeout, self.closed.clone(), move |r| {
      deferred.resolve(move |_env| {
        Ok(match r {
          Ok(o) => Either::A(lock_result(o)),
          Err(e) => Either::B(failure(e)),
        })
      })
    });
    Ok(promise)
  }

  /// Releases the lock without a value; `error` (serialized) reaches the waiting threads.
  #[napi]
  pub fn release(&self, io: &[u8], owner: u32, error: Option<&[u8]>) -> Result<(), Code> {
    let d = digest_of(io)?;
    self.store()?.release(&d, u64::from(owner), error.map(<[u8]>::to_vec));
    Ok(())
  }

  /// Resolves once every write issued before the call is durable (`sync`: on stable storage),
  /// with a failure if one issued since this handle's previous flush could not be applied.
  /// The wait runs on the core's pool of waiting threads.
  #[napi(ts_return_type = "Promise<Failure | null>")]
  pub fn flush<'env>(&self, env: &'env Env, sync: bool) -> Result<Object<'env>, Code> {
    let hot = self.hot.clone();
    let (deferred, promise) = env.create_deferred().map_err(napi_failure)?;
    blocking::spawn(move || {
      let r = hot.map_or(Ok(()), |h| h.flush(sync));
      deferred.resolve(move |_env| Ok(r.err().map(failure)));
    });
    Ok(promise)
  }

  /// Blocks until every write issued before the call is durable (as `flush`).
  #[napi]
  pub fn flush_sync(&self, sync: bool) -> Result<(), Code> {
    match &self.hot {
      Some(h) => h.flush(sync).map_err(coded),
      None => Ok(()),
    }
  }

  /// How many of this handle's writes failed after they were queued (a full disk), since it
  /// last said (here or in `storePut`).
  #[napi]
  pub fn take_failures(&self) -> f64 {
    self.hot.as_ref().map_or(0, |h| h.new_failures()) as f64
  }

  /// Why the store's last write that could not be applied failed (`null` if none did).
  #[napi]
  pub fn last_write_error(&self) -> Option<String> {
    let (d, _) = self.hot.as_ref()?.disk.as_ref()?;
    Some(d.last_write_error()).filter(|e| !e.is_empty())
  }

  /// `'owner'` or `'guest'` for a disk store, `'memory'` otherwise.
  #[napi]
  pub fn role(&self) -> &'static str {
    match self.disk.as_ref().map(|d| d.role()) {
      Some(Role::Owner) => "owner",
      Some(Role::Guest) => "guest",
      None => "memory",
    }
  }

  /// Drops this handle; the store closes when its last handle is gone.
  #[napi]
  pub fn close(&mut self) {
    self.closed.store(true, Ordering::SeqCst);
    self.slot.release(&HOT);
    self.hot = None;
    self.disk = None;
  }
}
