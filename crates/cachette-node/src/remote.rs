//! Binding of the Redis and SQL stores. Every operation runs on the core's runtime and reports
//! back through one persistent thread-safe function per JS thread ([`remote_completions`]),
//! called with the request id the JS side chose; failures arrive as `Failure` objects. One
//! completion function for all requests avoids creating a promise handle (a thread-safe function
//! and a cleanup hook) per call, and lets the JS thread drain many completions per wake-up.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Env;
use napi_derive::napi;

use crate::handles;
use cachette_core::clock;
use cachette_core::envelope::Freshness;
use cachette_core::integrity::IntegrityKey;
use cachette_core::key::Keyspace;
use cachette_core::store::remote::{runtime, Acquired, DirectRead, HeldLeases, RemoteStore, ServerSpec};
use cachette_core::{CoreError, CoreResult};

use crate::{coded, digest_of, failure, hash_into, invalid, napi_failure, now_ms, times, ClaimState, Code, Failure};
use crate::{CREATED_AT, FRESHNESS_AT, START_AT};

/// What a request resolves with.
pub enum Done {
  Found(Option<Found>),
  Acquire(Acquire),
  Bool(bool),
  Number(f64),
  Nothing,
  Failed(Failure),
}

impl ToNapiValue for Done {
  unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> Result<napi::sys::napi_value> {
    match val {
      Done::Found(f) => Option::<Found>::to_napi_value(env, f),
      Done::Acquire(a) => Acquire::to_napi_value(env, a),
      Done::Bool(b) => bool::to_napi_value(env, b),
      Done::Number(n) => f64::to_napi_value(env, n),
      Done::Nothing => Null::to_napi_value(env, Null),
      Done::Failed(f) => Failure::to_napi_value(env, f),
    }
  }
}

type Completions = ThreadsafeFunction<(u32, Done), (), (u32, Done), Status, false, true, 0>;

thread_local! {
  /// This JS thread's completion function (see [`remote_completions`]).
  static COMPLETIONS: RefCell<Option<Arc<Completions>>> = const { RefCell::new(None) };
}

/// Registers this JS thread's completion callback `([id, result]) => void`. It does not keep the
/// event loop alive by itself: [`remote_ref`] holds it while requests are pending.
#[napi(ts_args_type = "callback: (done: [id: number, result: unknown]) => void")]
pub fn remote_completions(callback: Function<(u32, Done), ()>) -> Result<(), Code> {
  let tsfn: Completions = callback
    .build_threadsafe_function::<(u32, Done)>()
    .callee_handled::<false>()
    .weak::<true>()
    .build()
    .map_err(napi_failure)?;
  COMPLETIONS.with(|c| *c.borrow_mut() = Some(Arc::new(tsfn)));
  Ok(())
}

/// Keeps the event loop alive (`true`) while requests of this thread are pending, or lets it go.
#[napi]
pub fn remote_ref(env: Env, hold: bool) -> Result<(), Code> {
  COMPLETIONS.with(|c| {
    let Some(t) = c.borrow().clone() else { return Ok(()) };
    // SAFETY: called on the JS thread that created the function, which is still alive.
    let status = unsafe {
      if hold {
        napi::sys::napi_ref_threadsafe_function(env.raw(), t.raw())
      } else {
        napi::sys::napi_unref_threadsafe_function(env.raw(), t.raw())
      }
    };
    if status == napi::sys::Status::napi_ok {
      Ok(())
    } else {
      Err(napi_failure(Error::new(
        Status::from(status),
        "cannot (un)ref the completion function",
      )))
    }
  })
}

/// Runs `fut` on the core's runtime; its result (through `done`), or a `Failure`, is reported
/// as request `id`.
fn settle<T: Send + 'static>(
  id: u32,
  fut: impl Future<Output = CoreResult<T>> + Send + 'static,
  done: impl FnOnce(T) -> Done + Send + 'static,
) -> Result<(), Code> {
  let tsfn = COMPLETIONS
    .with(|c| c.borrow().clone())
    .ok_or_else(|| invalid("remoteCompletions() was not called on this thread"))?;
  runtime().spawn(async move {
    let r = match fut.await {
      Ok(v) => done(v),
      Err(e) => Done::Failed(failure(e)),
    };
    tsfn.call((id, r), ThreadsafeFunctionCallMode::NonBlocking);
  });
  Ok(())
}

/// What `acquire` found.
#[napi(object)]
pub struct Acquire {
  /// A [`ClaimState`]: `Value` (`payload`), `Acquired` (the caller holds the lease, `lease`),
  /// `Failed` (the computation waited for failed, `error`) or `TimedOut`.
  pub state: i32,
  pub payload: Option<Buffer>,
  pub fresh: Option<bool>,
  pub created: Option<f64>,
  pub lease: Option<u32>,
  pub error: Option<Buffer>,
}

/// An entry read by `get`.
#[napi(object)]
pub struct Found {
  pub payload: Buffer,
  pub fresh: bool,
  pub created: f64,
}

/// One namespace on a Redis server or cluster, or an SQL database, and the leases its callers
/// hold (kept in the core, named by number).
#[napi]
pub struct NativeRemote {
  held: Option<Arc<HeldLeases>>,
  keyspace: Keyspace,
  slot: handles::Slot,
}

/// What the hit path needs of an open namespace.
struct RemoteHot {
  held: Arc<HeldLeases>,
  keyspace: Keyspace,
}

thread_local! {
  /// The namespaces this JS thread opened, by handle, for `remoteHash` and `remoteGet`.
  static HOT: handles::Table<RemoteHot> = const { std::cell::RefCell::new(Vec::new()) };
}

fn hot(handle: u32) -> Result<Arc<RemoteHot>, Code> {
  handles::get(&HOT, handle)
}

/// Hashes an encoded argument list into `io` (the digest fills bytes 0–31); `remoteHash` in raw.rs.
pub(crate) fn remote_hash(handle: u32, key: &[u8], io: &mut [u8]) -> Result<(), Code> {
  hash_into(&hot(handle)?.keyspace, key, io)
}

/// Reads the entry of the digest in `io`: request `id` completes with it, or `null` when absent.
#[napi]
pub fn remote_get(handle: u32, id: u32, io: &[u8]) -> Result<(), Code> {
  let d = digest_of(io)?;
  let h = hot(handle)?.held.clone();
  settle(id, async move { h.store().get(&d).await }, |found| {
    Done::Found(found.map(|(t, payload)| Found {
      fresh: t.freshness(now_ms()) == Freshness::Fresh,
      created: t.created_ms as f64,
      payload: payload.into(),
    }))
  })
}

/// Checks `bytes`, an entry read directly (see `directRead()`) for the digest in `io`. Returns
/// where its payload ends, with its start, freshness and creation time in `io`; or -1 when the
/// bytes are no entry of this key (a miss). `remoteOpen` in raw.rs.
pub(crate) fn remote_open(handle: u32, io: &mut [u8], bytes: &[u8]) -> Result<i64, Code> {
  let d = digest_of(io)?;
  if io.len() < CREATED_AT + 8 {
    return Err(invalid("io buffer too small"));
  }
  let Some((t, range)) = hot(handle)?.held.store().open_read(&d, bytes) else {
    return Ok(-1);
  };
  io[FRESHNESS_AT] = u8::from(t.freshness(now_ms()) != Freshness::Fresh);
  io[START_AT..START_AT + 4].copy_from_slice(&(range.start as u32).to_le_bytes());
  io[CREATED_AT..CREATED_AT + 8].copy_from_slice(&(t.created_ms as f64).to_le_bytes());
  Ok(range.end as i64)
}

/// How the JS thread may read this namespace's entries itself: `GET keyPrefix + hex(digest[0..16])`
/// on Redis, or `query` with (`ns`, digest[0..16]) on PostgreSQL.
#[napi(object)]
pub struct Direct {
  pub kind: String,
  pub url: String,
  pub key_prefix: Option<String>,
  pub query: Option<String>,
  pub ns: Option<Buffer>,
}

impl Drop for NativeRemote {
  fn drop(&mut self) {
    self.slot.release(&HOT);
  }
}

/// The JS view of an acquire.
fn acquired(a: Acquired<u32>) -> Acquire {
  let none = Acquire {
    state: ClaimState::TimedOut as i32,
    payload: None,
    fresh: None,
    created: None,
    lease: None,
    error: None,
  };
  match a {
    Acquired::Value(t, payload) => Acquire {
      state: ClaimState::Value as i32,
      fresh: Some(t.freshness(now_ms()) == Freshness::Fresh),
      created: Some(t.created_ms as f64),
      payload: Some(payload.into()),
      ..none
    },
    Acquired::Locked(id) => Acquire {
      state: ClaimState::Acquired as i32,
      lease: Some(id),
      ..none
    },
    Acquired::Failed(e) => Acquire {
      state: ClaimState::Failed as i32,
      error: Some(e.into()),
      ..none
    },
    Acquired::TimedOut => none,
  }
}

/// Opens `namespace` on the server of `urls` (several: a Redis Cluster). `prefix` is the Redis
/// key prefix or the SQL table; `backend_timeout_ms` bounds each operation on the server; with
/// `integrity_key`, entries are signed and checked with that secret. Nothing is contacted until
/// the first operation.
#[napi]
pub fn open_remote(
  urls: Vec<String>,
  cluster: bool,
  prefix: String,
  namespace: Buffer,
  backend_timeout_ms: f64,
  integrity_key: Option<&[u8]>,
) -> Result<NativeRemote, Code> {
  let keyspace = Keyspace::new(&*namespace);
  let spec = ServerSpec {
    urls,
    cluster,
    prefix,
    timeout: ms(backend_timeout_ms),
  };
  let key = integrity_key.map(IntegrityKey::derive).transpose().map_err(coded)?;
  let store = RemoteStore::open_with_clock(&spec, keyspace.id(), clock::process())
    .map_err(coded)?
    .with_integrity(key);
  Ok(NativeRemote {
    held: Some(Arc::new(HeldLeases::new(store))),
    keyspace,
    slot: handles::Slot::default(),
  })
}

fn ms(x: f64) -> Duration {
  Duration::from_millis(if x.is_finite() { x.max(0.0) as u64 } else { u64::MAX / 4 })
}

#[napi]
impl NativeRemote {
  fn held(&self) -> Result<Arc<HeldLeases>, Code> {
    self.held.clone().ok_or_else(|| coded(CoreError::Closed))
  }

  /// This namespace's handle for `remoteHash` and `remoteGet`, valid in this JS thread until
  /// `close()`.
  #[napi]
  pub fn handle(&mut self) -> Result<u32, Code> {
    let held = self.held.clone();
    let keyspace = self.keyspace.clone();
    self.slot.handle(&HOT, || {
      Ok(Arc::new(RemoteHot {
        held: held.ok_or_else(|| coded(CoreError::Closed))?,
        keyspace,
      }))
    })
  }

  /// How entries may be read from the JS thread, or `null` (only through the core).
  #[napi]
  pub fn direct_read(&self) -> Result<Option<Direct>, Code> {
    Ok(self.held()?.store().direct_read().map(|d| match d {
      DirectRead::Redis { url, key_prefix } => Direct {
        kind: "redis".into(),
        url,
        key_prefix: Some(key_prefix),
        query: None,
        ns: None,
      },
      DirectRead::Postgres { url, query, ns } => Direct {
        kind: "postgres".into(),
        url,
        key_prefix: None,
        query: Some(query),
        ns: Some(ns.to_vec().into()),
      },
    }))
  }

  /// A direct read of this namespace that the server left unanswered (`reason`): counted by the
  /// server's circuit breaker as the core's own failures are (nothing once closed).
  #[napi]
  pub fn unavailable(&self, reason: String) {
    if let Some(h) = &self.held {
      h.store().report_unavailable(&reason);
    }
  }

  /// The miss path: the entry, or the key's lease (by number), or the error of the computation
  /// waited for.
  #[napi]
  pub fn acquire(&self, id: u32, io: &[u8], lease_ms: f64, timeout_ms: f64, force: bool) -> Result<(), Code> {
    let d = digest_of(io)?;
    let h = self.held()?;
    let (lease, timeout) = (ms(lease_ms), ms(timeout_ms));
    let store = h.clone();
    settle(
      id,
      async move { store.store().acquire(&d, lease, timeout, force).await },
      move |a| Done::Acquire(acquired(h.hold(a))),
    )
  }

  /// Stores the computed payload if lease `lease` still owns the key; resolves whether it did.
  #[napi]
  pub fn commit(
    &self,
    id: u32,
    lease: u32,
    payload: Buffer,
    stale_at_ms: f64,
    expires_ms: f64,
    now: f64,
  ) -> Result<(), Code> {
    let h = self.held()?;
    let l = h.take(lease);
    let t = times(stale_at_ms, expires_ms, now);
    let payload = payload.to_vec();
    settle(id, async move { h.commit(l, &payload, t).await }, Done::Bool)
  }

  /// Releases lease `lease` without a value; `error` (serialized) reaches the callers waiting for it.
  #[napi]
  pub fn abort(&self, id: u32, lease: u32, error: Option<Buffer>, lease_ms: f64) -> Result<(), Code> {
    let h = self.held()?;
    let l = h.take(lease);
    let error = error.map(|e| e.to_vec());
    let keep = ms(lease_ms);
    settle(id, async move { h.abort(l, error.as_deref(), keep).await }, |()| {
      Done::Nothing
    })
  }

  /// Stores a payload without a lease.
  #[napi]
  pub fn put(
    &self,
    id: u32,
    io: &[u8],
    payload: Buffer,
    stale_at_ms: f64,
    expires_ms: f64,
    now: f64,
  ) -> Result<(), Code> {
    let d = digest_of(io)?;
    let h = self.held()?;
    let t = times(stale_at_ms, expires_ms, now);
    let payload = payload.to_vec();
    settle(id, async move { h.store().put(&d, &payload, t).await }, |()| {
      Done::Nothing
    })
  }

  /// Removes the entry (and lease) of the digest in `io`; resolves whether an entry was there.
  #[napi]
  pub fn delete(&self, id: u32, io: &[u8]) -> Result<(), Code> {
    let d = digest_of(io)?;
    let h = self.held()?;
    settle(id, async move { h.store().delete(&d).await }, Done::Bool)
  }

  /// Removes every entry and lease of the namespace.
  #[napi]
  pub fn clear(&self, id: u32) -> Result<(), Code> {
    let h = self.held()?;
    settle(id, async move { h.store().clear().await }, |()| Done::Nothing)
  }

  /// Removes every lease of the namespace; resolves how many there were.
  #[napi]
  pub fn clear_locks(&self, id: u32) -> Result<(), Code> {
    let h = self.held()?;
    settle(id, async move { h.store().clear_locks().await }, |n| {
      Done::Number(n as f64)
    })
  }

  /// Entries of the namespace that have not expired.
  #[napi]
  pub fn size(&self, id: u32) -> Result<(), Code> {
    let h = self.held()?;
    settle(id, async move { h.store().len().await }, |n| Done::Number(n as f64))
  }

  /// Reads that found an entry failing its integrity check since the last call (0 without an
  /// integrity key, and after `close()`).
  #[napi]
  pub fn take_integrity_failures(&self) -> f64 {
    self.held.as_ref().map_or(0.0, |h| h.store().take_rejected() as f64)
  }

  /// Closes this handle: leases still held are released (their callers' commits are refused),
  /// and the server's connections close once no namespace uses them.
  #[napi]
  pub fn close(&mut self) {
    self.slot.release(&HOT);
    if let Some(h) = self.held.take() {
      h.release_all();
    }
  }
}
