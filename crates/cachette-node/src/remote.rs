//! Binding of the Redis and SQL stores: every operation runs on the core's runtime and settles a
//! promise; failures resolve as `Failure` objects, like the disk store's asynchronous calls.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;
use parking_lot::Mutex;

use cachette_core::envelope::Freshness;
use cachette_core::key::{Keyspace, DIGEST_LEN};
use cachette_core::store::remote::{runtime, Acquired, Lease, RemoteStore, ServerSpec};
use cachette_core::{CoreError, CoreResult};

use crate::{coded, digest_of, failure, invalid, now_ms, times};

/// What `acquire` found.
#[napi(object)]
pub struct Acquire {
  /// 0: a value (`payload`); 1: the caller holds the lease (`lease`); 2: the computation waited
  /// for failed (`error`); 3: `lockTimeout` passed.
  pub state: u32,
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

/// One namespace on a Redis server or cluster, or an SQL database.
#[napi]
pub struct NativeRemote {
  store: Option<Arc<RemoteStore>>,
  keyspace: Keyspace,
  leases: Arc<Mutex<HashMap<u32, Lease>>>,
}

static NEXT_LEASE: AtomicU32 = AtomicU32::new(1);

/// Opens `namespace` on the server of `urls` (several: a Redis Cluster). `prefix` is the Redis
/// key prefix or the SQL table. Nothing is contacted until the first operation.
#[napi]
pub fn open_remote(urls: Vec<String>, cluster: bool, prefix: String, namespace: String) -> Result<NativeRemote> {
  let keyspace = Keyspace::new(&namespace);
  let spec = ServerSpec { urls, cluster, prefix };
  let store = RemoteStore::open(&spec, keyspace.id()).map_err(coded)?;
  Ok(NativeRemote {
    store: Some(Arc::new(store)),
    keyspace,
    leases: Arc::default(),
  })
}

/// Runs `fut` on the core's runtime and settles the returned promise with `done`'s value, or a
/// `Failure`.
fn settle<'env, T, V>(
  env: &'env Env,
  fut: impl Future<Output = CoreResult<T>> + Send + 'static,
  done: impl FnOnce(T) -> V + Send + 'static,
) -> Result<Object<'env>>
where
  T: Send + 'static,
  V: ToNapiValue + 'static,
{
  let (deferred, promise) = env.create_deferred()?;
  runtime().spawn(async move {
    let r = fut.await;
    deferred.resolve(move |_env| {
      Ok(match r {
        Ok(v) => Either::A(done(v)),
        Err(e) => Either::B(failure(e)),
      })
    });
  });
  Ok(promise)
}

fn ms(x: f64) -> Duration {
  Duration::from_millis(if x.is_finite() { x.max(0.0) as u64 } else { u64::MAX / 4 })
}

#[napi]
impl NativeRemote {
  fn store(&self) -> Result<Arc<RemoteStore>> {
    self.store.clone().ok_or_else(|| coded(CoreError::Closed))
  }

  /// Hashes an encoded argument list into `io` (the digest fills bytes 0–31).
  #[napi]
  pub fn hash(&self, key: &[u8], mut io: BufferSlice) -> Result<()> {
    let d = self.keyspace.digest_encoded(key);
    io.get_mut(..DIGEST_LEN)
      .ok_or_else(|| invalid("io buffer too small"))?
      .copy_from_slice(&d);
    Ok(())
  }

  /// Reads the entry of the digest in `io`: `null` when absent.
  #[napi(ts_return_type = "Promise<Found | null | Failure>")]
  pub fn get<'env>(&self, env: &'env Env, io: &[u8]) -> Result<Object<'env>> {
    let d = digest_of(io)?;
    let s = self.store()?;
    settle(env, async move { s.get(&d).await }, |found| {
      found.map(|(t, payload)| Found {
        fresh: t.freshness(now_ms()) == Freshness::Fresh,
        created: t.created_ms as f64,
        payload: payload.into(),
      })
    })
  }

  /// The miss path: the entry, or the key's lease, or the error of the computation waited for.
  #[napi(ts_return_type = "Promise<Acquire | Failure>")]
  pub fn acquire<'env>(&self, env: &'env Env, io: &[u8], lease_ms: f64, timeout_ms: f64, force: bool) -> Result<Object<'env>> {
    let d = digest_of(io)?;
    let s = self.store()?;
    let leases = self.leases.clone();
    let (lease, timeout) = (ms(lease_ms), ms(timeout_ms));
    settle(env, async move { s.acquire(&d, lease, timeout, force).await }, move |a| {
      let none = Acquire {
        state: 3,
        payload: None,
        fresh: None,
        created: None,
        lease: None,
        error: None,
      };
      match a {
        Acquired::Value(t, payload) => Acquire {
          state: 0,
          fresh: Some(t.freshness(now_ms()) == Freshness::Fresh),
          created: Some(t.created_ms as f64),
          payload: Some(payload.into()),
          ..none
        },
        Acquired::Locked(l) => {
          let id = NEXT_LEASE.fetch_add(1, Ordering::Relaxed);
          leases.lock().insert(id, l);
          Acquire {
            state: 1,
            lease: Some(id),
            ..none
          }
        }
        Acquired::Failed(e) => Acquire {
          state: 2,
          error: Some(e.into()),
          ..none
        },
        Acquired::TimedOut => none,
      }
    })
  }

  /// Stores the computed payload if the lease still owns the key; resolves whether it did.
  #[napi(ts_return_type = "Promise<boolean | Failure>")]
  pub fn commit<'env>(
    &self,
    env: &'env Env,
    lease: u32,
    payload: Buffer,
    stale_at_ms: f64,
    expires_ms: f64,
    now: f64,
  ) -> Result<Object<'env>> {
    let s = self.store()?;
    let l = self.leases.lock().remove(&lease);
    let t = times(stale_at_ms, expires_ms, now);
    let payload = payload.to_vec();
    settle(
      env,
      async move {
        match l {
          Some(l) => s.commit(l, &payload, t).await,
          None => Ok(false),
        }
      },
      |b| b,
    )
  }

  /// Releases the lease without a value; `error` (serialized) reaches the callers waiting for it.
  #[napi(ts_return_type = "Promise<null | Failure>")]
  pub fn abort<'env>(&self, env: &'env Env, lease: u32, error: Option<Buffer>, lease_ms: f64) -> Result<Object<'env>> {
    let s = self.store()?;
    let l = self.leases.lock().remove(&lease);
    let error = error.map(|e| e.to_vec());
    let keep = ms(lease_ms);
    settle(
      env,
      async move {
        match l {
          Some(l) => s.abort(l, error.as_deref(), keep).await,
          None => Ok(()),
        }
      },
      |()| Null,
    )
  }

  /// Stores a payload without a lease.
  #[napi(ts_return_type = "Promise<null | Failure>")]
  pub fn put<'env>(
    &self,
    env: &'env Env,
    io: &[u8],
    payload: Buffer,
    stale_at_ms: f64,
    expires_ms: f64,
    now: f64,
  ) -> Result<Object<'env>> {
    let d = digest_of(io)?;
    let s = self.store()?;
    let t = times(stale_at_ms, expires_ms, now);
    let payload = payload.to_vec();
    settle(env, async move { s.put(&d, &payload, t).await }, |()| Null)
  }

  /// Removes the entry (and lease) of the digest in `io`; resolves whether an entry was there.
  #[napi(ts_return_type = "Promise<boolean | Failure>")]
  pub fn delete<'env>(&self, env: &'env Env, io: &[u8]) -> Result<Object<'env>> {
    let d = digest_of(io)?;
    let s = self.store()?;
    settle(env, async move { s.delete(&d).await }, |b| b)
  }

  /// Removes every entry and lease of the namespace.
  #[napi(ts_return_type = "Promise<null | Failure>")]
  pub fn clear<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
    let s = self.store()?;
    settle(env, async move { s.clear().await }, |()| Null)
  }

  /// Removes every lease of the namespace; resolves how many there were.
  #[napi(ts_return_type = "Promise<number | Failure>")]
  pub fn clear_locks<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
    let s = self.store()?;
    settle(env, async move { s.clear_locks().await }, |n| n as f64)
  }

  /// Entries of the namespace that have not expired.
  #[napi(ts_return_type = "Promise<number | Failure>")]
  pub fn size<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
    let s = self.store()?;
    settle(env, async move { s.len().await }, |n| n as f64)
  }

  /// Resolves once the server answers.
  #[napi(ts_return_type = "Promise<null | Failure>")]
  pub fn ping<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
    let s = self.store()?;
    settle(env, async move { s.ping().await }, |()| Null)
  }

  /// Closes this handle: leases still held are released (their callers' commits are refused),
  /// and the server's connections close once no namespace uses them.
  #[napi]
  pub fn close(&mut self) {
    let leases: Vec<Lease> = self.leases.lock().drain().map(|(_, l)| l).collect();
    if let Some(s) = self.store.take() {
      if !leases.is_empty() {
        runtime().spawn(async move {
          for l in leases {
            let _ = s.abort(l, None, Duration::ZERO).await;
          }
        });
      }
    }
  }
}
