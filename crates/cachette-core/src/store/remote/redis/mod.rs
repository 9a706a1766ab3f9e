//! The Redis store (standalone or Redis Cluster), on the `redis` crate.
//!
//! The keys a namespace uses are named in `keys`; each change is one script of `scripts`.
//! Every commit, abort, put, delete and clear publishes the key it settled on channel `Pdone`
//! (`P`: the prefix); one subscriber connection per server and process (`listener`) wakes the
//! waiters of that key.

mod keys;
mod listener;
mod scripts;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ScriptInvocation, Value};
use tokio::sync::OnceCell;

use self::keys::{score, Names};
use self::listener::listen;
use self::scripts::scripts;
use super::{runtime, Attempt, ServerSpec, Token, Wakeups};
use crate::error::{CoreError, CoreResult};
use crate::key::Digest;

#[derive(Clone)]
enum Conn {
  Single(ConnectionManager),
  Cluster(redis::cluster_async::ClusterConnection),
}

/// A Redis server or cluster: one multiplexed, self-reconnecting connection per process,
/// shared by every namespace and worker thread.
pub(crate) struct RedisServer {
  spec: ServerSpec,
  shown: String,
  /// The connection, made by the first operation that needs it; replaced by [`RedisServer::reconnect`].
  conn: Mutex<Arc<OnceCell<Conn>>>,
  wakeups: Arc<Wakeups>,
  channel: String,
  listener: Mutex<tokio::task::AbortHandle>,
}

impl Drop for RedisServer {
  fn drop(&mut self) {
    self.listener.lock().abort();
  }
}

impl RedisServer {
  pub(crate) fn new(spec: &ServerSpec) -> CoreResult<Self> {
    ensure_crypto();
    for u in &spec.urls {
      redis::Client::open(u.as_str()).map_err(|e| CoreError::InvalidConfig {
        reason: format!("{}: {e}", super::redact(u)),
      })?;
    }
    let shown = spec.urls.iter().map(|u| super::redact(u)).collect::<Vec<_>>().join(",");
    let wakeups = Arc::new(Wakeups::default());
    let channel = format!("{}done", spec.prefix);
    let server = RedisServer {
      spec: spec.clone(),
      shown,
      conn: Mutex::default(),
      wakeups,
      channel,
      listener: Mutex::new(runtime().spawn(async {}).abort_handle()),
    };
    server.listen();
    Ok(server)
  }

  /// (Re)starts the subscriber that wakes this process's waiters.
  fn listen(&self) {
    let task = listen(
      self.spec.urls[0].clone(),
      self.channel.clone(),
      Arc::downgrade(&self.wakeups),
      self.spec.timeout,
    );
    let old = std::mem::replace(&mut *self.listener.lock(), runtime().spawn(task).abort_handle());
    old.abort();
  }

  pub(crate) fn wakeups(&self) -> &Wakeups {
    &self.wakeups
  }

  pub(crate) fn shown(&self) -> &str {
    &self.shown
  }

  /// Drops the connections (the breaker opened: they may hang on a socket that never answers);
  /// the next operation connects anew, and the subscriber starts over.
  pub(crate) fn reconnect(&self) {
    *self.conn.lock() = Arc::default();
    self.listen();
  }

  fn unavailable(&self, e: impl std::fmt::Display) -> CoreError {
    CoreError::ServerUnavailable {
      server: self.shown.clone(),
      reason: e.to_string(),
    }
  }

  /// Maps a command error: lost connections and timeouts are `ServerUnavailable`, the rest `Io`.
  fn failed(&self, e: &redis::RedisError) -> CoreError {
    if e.is_io_error()
      || e.is_timeout()
      || e.is_connection_dropped()
      || e.is_connection_refusal()
      || e.is_unrecoverable_error()
    {
      self.unavailable(e)
    } else {
      CoreError::io(format!("redis {}: {e}", self.shown))
    }
  }

  async fn conn(&self) -> CoreResult<Conn> {
    let cell = self.conn.lock().clone();
    // Each operation is bounded by the server's timeout (`Server::bounded`); the client's own
    // timeouts are only a backstop, so the error says which bound it was.
    let timeout = self.spec.timeout * 2;
    let c = cell
      .get_or_try_init(|| async {
        if self.spec.cluster || self.spec.urls.len() > 1 {
          let client = redis::cluster::ClusterClient::builder(self.spec.urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()
            .map_err(|e| self.unavailable(e))?;
          let c = client.get_async_connection().await.map_err(|e| self.unavailable(e))?;
          Ok::<_, CoreError>(Conn::Cluster(c))
        } else {
          let client = redis::Client::open(self.spec.urls[0].as_str()).map_err(|e| self.unavailable(e))?;
          let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // A refused connection fails the operation at once (the next one tries again, and
            // the breaker stops trying for a while): retries with backoff would only make it wait.
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_millis(500));
          let c = ConnectionManager::new_with_config(client, cfg)
            .await
            .map_err(|e| self.unavailable(e))?;
          Ok(Conn::Single(c))
        }
      })
      .await?;
    Ok(c.clone())
  }

  fn base(&self, ns: [u8; 8]) -> String {
    keys::base(&self.spec.prefix, ns)
  }

  fn names(&self, ns: [u8; 8], digest: &Digest) -> Names {
    Names::new(&self.spec.prefix, ns, digest)
  }

  async fn run<T: redis::FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> CoreResult<T> {
    let r = match self.conn().await? {
      Conn::Single(mut c) => inv.invoke_async(&mut c).await,
      Conn::Cluster(mut c) => inv.invoke_async(&mut c).await,
    };
    r.map_err(|e| self.failed(&e))
  }

  async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> CoreResult<T> {
    self.cmd_or(cmd, None).await
  }

  /// [`RedisServer::cmd`], answering `on_wrong_type` if the key is of another type than
  /// cachette gives it (it is someone else's, or damaged: read as absent).
  async fn cmd_or<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, on_wrong_type: Option<T>) -> CoreResult<T> {
    let r = match self.conn().await? {
      Conn::Single(mut c) => cmd.query_async(&mut c).await,
      Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
    };
    match (r, on_wrong_type) {
      (Err(e), Some(v)) if e.code() == Some("WRONGTYPE") => Ok(v),
      (r, _) => r.map_err(|e| self.failed(&e)),
    }
  }

  pub(crate) fn direct_read(&self, ns: [u8; 8]) -> Option<super::DirectRead> {
    (!self.spec.cluster && self.spec.urls.len() == 1).then(|| super::DirectRead::Redis {
      url: self.spec.urls[0].clone(),
      key_prefix: format!("{}v:", self.base(ns)),
    })
  }

  pub(crate) async fn get(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<Option<Vec<u8>>> {
    // Of another type: a miss, which the next commit overwrites.
    self
      .cmd_or(redis::cmd("GET").arg(self.names(ns, digest).value), Some(None))
      .await
  }

  pub(crate) async fn attempt(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    token: &Token,
    lease_ms: u64,
    waited_for: Option<&Token>,
    want_value: bool,
  ) -> CoreResult<Attempt> {
    let n = self.names(ns, digest);
    let err_key = n.error(waited_for);
    let mut inv = scripts().get_or_lock.prepare_invoke();
    inv
      .key(n.value)
      .key(n.lease)
      .key(err_key)
      .key(n.leases)
      .arg(&token[..])
      .arg(lease_ms)
      .arg(if want_value { "1" } else { "0" });
    let v: Vec<Value> = self.run(&inv).await?;
    let int = |v: &Value| match v {
      Value::Int(n) => Some(*n),
      _ => None,
    };
    let bytes = |v: Option<&Value>| match v {
      Some(Value::BulkString(b)) => Some(b.clone()),
      _ => None,
    };
    let bad = || CoreError::io(format!("redis {}: unexpected reply to get-or-lock", self.shown));
    match v.first().and_then(int) {
      Some(1) => Ok(Attempt::Value(bytes(v.get(1)).ok_or_else(bad)?)),
      Some(2) => Ok(Attempt::Locked),
      Some(3) => {
        let h = bytes(v.get(1)).ok_or_else(bad)?;
        let mut holder = [0u8; 16];
        let n = h.len().min(16);
        holder[..n].copy_from_slice(&h[..n]);
        let remaining = v.get(2).and_then(int).unwrap_or(0).max(0) as u64;
        Ok(Attempt::Wait {
          holder,
          remaining_ms: remaining,
        })
      }
      Some(4) => Ok(Attempt::Failed(bytes(v.get(1)).ok_or_else(bad)?)),
      _ => Err(bad()),
    }
  }

  pub(crate) async fn renew(&self, ns: [u8; 8], digest: &Digest, token: &Token, lease_ms: u64) -> CoreResult<bool> {
    let mut inv = scripts().renew.prepare_invoke();
    inv.key(self.names(ns, digest).lease).arg(&token[..]).arg(lease_ms);
    let n: i64 = self.run(&inv).await?;
    Ok(n == 1)
  }

  pub(crate) async fn commit(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    token: &Token,
    envelope: &[u8],
    expires_ms: u64,
    now_ms: u64,
  ) -> CoreResult<bool> {
    let n = self.names(ns, digest);
    let mut inv = scripts().commit.prepare_invoke();
    inv
      .key(&n.value)
      .key(&n.lease)
      .key(&n.index)
      .key(&n.leases)
      .arg(&token[..]);
    self.entry_args(&mut inv, &n, envelope, expires_ms, now_ms);
    let done: i64 = self.run(&inv).await?;
    self.wakeups.wake(ns, n.key);
    Ok(done == 1)
  }

  /// Adds what the scripts that write an entry (commit, put) take after their own arguments: the
  /// envelope, its `PX` and index score, the announcement, and the now that prunes the index.
  fn entry_args(&self, inv: &mut ScriptInvocation<'_>, n: &Names, envelope: &[u8], expires_ms: u64, now_ms: u64) {
    inv
      .arg(envelope)
      .arg(px(expires_ms, now_ms))
      .arg(score(expires_ms))
      .arg(&self.channel)
      .arg(&n.message)
      .arg(now_ms);
  }

  pub(crate) async fn abort(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    token: &Token,
    error: Option<&[u8]>,
    keep_ms: u64,
  ) -> CoreResult<()> {
    let n = self.names(ns, digest);
    let err_key = n.error(Some(token));
    let mut inv = scripts().abort.prepare_invoke();
    inv
      .key(n.lease)
      .key(err_key)
      .key(n.leases)
      .arg(&token[..])
      .arg(if error.is_some() { "1" } else { "0" })
      .arg(error.unwrap_or_default())
      .arg(keep_ms)
      .arg(&self.channel)
      .arg(n.message);
    let _: i64 = self.run(&inv).await?;
    self.wakeups.wake(ns, n.key);
    Ok(())
  }

  pub(crate) async fn put(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    envelope: &[u8],
    expires_ms: u64,
    now_ms: u64,
  ) -> CoreResult<()> {
    let n = self.names(ns, digest);
    let mut inv = scripts().put.prepare_invoke();
    inv.key(&n.value).key(&n.index);
    self.entry_args(&mut inv, &n, envelope, expires_ms, now_ms);
    let _: i64 = self.run(&inv).await?;
    self.wakeups.wake(ns, n.key);
    Ok(())
  }

  pub(crate) async fn delete(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<bool> {
    let n = self.names(ns, digest);
    let mut inv = scripts().delete.prepare_invoke();
    inv
      .key(n.value)
      .key(n.lease)
      .key(n.index)
      .key(n.leases)
      .arg(&self.channel)
      .arg(n.message);
    let removed: i64 = self.run(&inv).await?;
    self.wakeups.wake(ns, n.key);
    Ok(removed > 0)
  }

  pub(crate) async fn clear(&self, ns: [u8; 8]) -> CoreResult<()> {
    let b = self.base(ns);
    loop {
      let mut inv = scripts().clear_some.prepare_invoke();
      inv.key(format!("{b}i")).key(format!("{b}L")).arg(500);
      let n: i64 = self.run(&inv).await?;
      if n == 0 {
        break;
      }
    }
    self.wakeups.wake_all();
    Ok(())
  }

  pub(crate) async fn clear_locks(&self, ns: [u8; 8]) -> CoreResult<u64> {
    let b = self.base(ns);
    let members: Option<Vec<String>> = self
      .cmd_or(redis::cmd("SMEMBERS").arg(format!("{b}L")), Some(None))
      .await?;
    let Some(members) = members else {
      // The lease set is of another type: drop it (the next lease makes it anew).
      let _: u64 = self.cmd(redis::cmd("DEL").arg(format!("{b}L"))).await?;
      self.wakeups.wake_all();
      return Ok(0);
    };
    let mut n = 0u64;
    for chunk in members.chunks(500) {
      let mut del = redis::cmd("DEL");
      for m in chunk {
        del.arg(m);
      }
      let d: u64 = self.cmd(&del).await?;
      n += d;
      let mut srem = redis::cmd("SREM");
      srem.arg(format!("{b}L"));
      for m in chunk {
        srem.arg(m);
      }
      let _: u64 = self.cmd(&srem).await?;
    }
    self.wakeups.wake_all();
    Ok(n)
  }

  pub(crate) async fn len(&self, ns: [u8; 8], now: u64) -> CoreResult<u64> {
    let b = self.base(ns);
    // An index of another type counts nothing; the next write makes it anew.
    self
      .cmd_or(
        redis::cmd("ZCOUNT")
          .arg(format!("{b}i"))
          .arg(format!("({now}"))
          .arg("+inf"),
        Some(0),
      )
      .await
  }
}

/// The `PX` of an entry expiring at `expires_ms`, judged at `now_ms` (0: no expiry).
fn px(expires_ms: u64, now_ms: u64) -> u64 {
  if expires_ms == crate::envelope::NEVER {
    0
  } else {
    expires_ms.saturating_sub(now_ms).max(1)
  }
}

/// `rediss://` needs a TLS crypto provider; install ring's once (unless the host app did).
fn ensure_crypto() {
  static ONCE: std::sync::Once = std::sync::Once::new();
  ONCE.call_once(|| {
    let _ = rustls::crypto::ring::default_provider().install_default();
  });
}
