//! The Redis store (standalone or Redis Cluster), on the `redis` crate.
//!
//! Key layout, for prefix `P` and namespace id `N` (16 hex digits), key `K` (the first 128 bits
//! of the digest, hex) and lease token `T` (hex). The braces are a Redis Cluster hash tag: all of
//! a namespace's keys live in one slot, so every script below runs on one node.
//!
//! | key | type | what |
//! |---|---|---|
//! | `P{N}:v:K` | string | the entry envelope, with `PX` = its expiry |
//! | `P{N}:l:K` | string | the lease: holder token, with `PX` = lease length |
//! | `P{N}:e:T` | string | the serialized error of the holder `T` that failed, kept one lease long |
//! | `P{N}:i` | sorted set | the namespace's entry keys, scored by expiry (for `clear()` and `size`) |
//! | `P{N}:L` | set | the namespace's lease keys (for `clearLocks()`) |
//!
//! Every commit, abort, put, delete and clear publishes `NK` (hex) on channel `Pdone`; one
//! subscriber connection per server and process wakes the waiters of that key.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::OnceCell;

use super::{key_part, runtime, Attempt, ServerSpec, Token, Wakeups};
use crate::error::{CoreError, CoreResult};
use crate::key::Digest;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

const GET_OR_LOCK: &str = r"
-- KEYS: value, lease, error of the holder waited for, lease set
-- ARGV: token, lease ms, '1' to return a value that is there
if ARGV[3] == '1' then
  local v = redis.call('GET', KEYS[1])
  if v then return {1, v} end
end
local h = redis.call('GET', KEYS[2])
if not h then
  local e = redis.call('GET', KEYS[3])
  if e then return {4, e} end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  redis.call('SADD', KEYS[4], KEYS[2])
  return {2}
end
return {3, h, redis.call('PTTL', KEYS[2])}
";

const RENEW: &str = r"
-- KEYS: lease   ARGV: token, lease ms
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

const COMMIT: &str = r"
-- KEYS: value, lease, index, lease set
-- ARGV: token, envelope, ttl ms (0: none), index score, channel, message, now ms
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[4], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[4], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

const PUT: &str = r"
-- KEYS: value, index   ARGV: envelope, ttl ms (0: none), index score, channel, message, now ms
if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

const ABORT: &str = r"
-- KEYS: lease, error key of this token, lease set
-- ARGV: token, '1' if there is an error, error, keep ms, channel, message
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], KEYS[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

const DELETE: &str = r"
-- KEYS: value, lease, index, lease set   ARGV: channel, message
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[4], KEYS[2])
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

const CLEAR_SOME: &str = r"
-- KEYS: index, lease set   ARGV: how many
-- Removes up to ARGV[1] entries and leases per call, so a large namespace never blocks the server long.
local n = 0
local ks = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ks > 0 then
  redis.call('UNLINK', unpack(ks))
  redis.call('ZREM', KEYS[1], unpack(ks))
  n = n + #ks
end
local ls = redis.call('SRANDMEMBER', KEYS[2], tonumber(ARGV[1]))
if #ls > 0 then
  redis.call('UNLINK', unpack(ls))
  redis.call('SREM', KEYS[2], unpack(ls))
  n = n + #ls
end
return n
";

/// Scripts, compiled once (hashing the source) per process.
struct Scripts {
  get_or_lock: Script,
  renew: Script,
  commit: Script,
  put: Script,
  abort: Script,
  delete: Script,
  clear_some: Script,
}

fn scripts() -> &'static Scripts {
  static S: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
  S.get_or_init(|| Scripts {
    get_or_lock: Script::new(GET_OR_LOCK),
    renew: Script::new(RENEW),
    commit: Script::new(COMMIT),
    put: Script::new(PUT),
    abort: Script::new(ABORT),
    delete: Script::new(DELETE),
    clear_some: Script::new(CLEAR_SOME),
  })
}

/// The Redis keys of one cache key, and the message that announces it settled.
struct Names {
  base: String,
  key: [u8; 16],
  value: String,
  lease: String,
  index: String,
  leases: String,
  message: String,
}

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
  conn: OnceCell<Conn>,
  wakeups: Arc<Wakeups>,
  channel: String,
  listener: tokio::task::AbortHandle,
}

impl Drop for RedisServer {
  fn drop(&mut self) {
    self.listener.abort();
  }
}

fn hex(bytes: &[u8]) -> String {
  use std::fmt::Write;
  bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
    let _ = write!(s, "{b:02x}");
    s
  })
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
  if s.len() != N * 2 {
    return None;
  }
  let mut out = [0u8; N];
  for (i, o) in out.iter_mut().enumerate() {
    let d = |c: u8| (c as char).to_digit(16);
    *o = (d(s[2 * i])? * 16 + d(s[2 * i + 1])?) as u8;
  }
  Some(out)
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
    let listener = runtime()
      .spawn(listen(spec.urls[0].clone(), channel.clone(), Arc::downgrade(&wakeups)))
      .abort_handle();
    Ok(RedisServer {
      spec: spec.clone(),
      shown,
      conn: OnceCell::new(),
      wakeups,
      channel,
      listener,
    })
  }

  pub(crate) fn wakeups(&self) -> &Wakeups {
    &self.wakeups
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
    let c = self
      .conn
      .get_or_try_init(|| async {
        if self.spec.cluster || self.spec.urls.len() > 1 {
          let client = redis::cluster::ClusterClient::builder(self.spec.urls.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .build()
            .map_err(|e| self.unavailable(e))?;
          let c = client.get_async_connection().await.map_err(|e| self.unavailable(e))?;
          Ok::<_, CoreError>(Conn::Cluster(c))
        } else {
          let client = redis::Client::open(self.spec.urls[0].as_str()).map_err(|e| self.unavailable(e))?;
          let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
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
    format!("{}{{{}}}:", self.spec.prefix, hex(&ns))
  }

  /// The Redis keys of one cache key (see the table at the top of this file).
  fn names(&self, ns: [u8; 8], digest: &Digest) -> Names {
    let base = self.base(ns);
    let key = key_part(digest);
    let k = hex(&key);
    Names {
      value: format!("{base}v:{k}"),
      lease: format!("{base}l:{k}"),
      index: format!("{base}i"),
      leases: format!("{base}L"),
      message: format!("{}{k}", hex(&ns)),
      base,
      key,
    }
  }

  async fn run<T: redis::FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> CoreResult<T> {
    let r = match self.conn().await? {
      Conn::Single(mut c) => inv.invoke_async(&mut c).await,
      Conn::Cluster(mut c) => inv.invoke_async(&mut c).await,
    };
    r.map_err(|e| self.failed(&e))
  }

  async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> CoreResult<T> {
    let r = match self.conn().await? {
      Conn::Single(mut c) => cmd.query_async(&mut c).await,
      Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
    };
    r.map_err(|e| self.failed(&e))
  }

  pub(crate) fn direct_read(&self, ns: [u8; 8]) -> Option<super::DirectRead> {
    (!self.spec.cluster && self.spec.urls.len() == 1).then(|| super::DirectRead::Redis {
      url: self.spec.urls[0].clone(),
      key_prefix: format!("{}v:", self.base(ns)),
    })
  }

  pub(crate) async fn get(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<Option<Vec<u8>>> {
    self.cmd(redis::cmd("GET").arg(self.names(ns, digest).value)).await
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
    let err_key = format!("{}e:{}", n.base, waited_for.map_or_else(|| "-".to_owned(), |t| hex(t)));
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
    ttl_ms: u64,
    expires_ms: u64,
  ) -> CoreResult<bool> {
    let n = self.names(ns, digest);
    let mut inv = scripts().commit.prepare_invoke();
    inv
      .key(n.value)
      .key(n.lease)
      .key(n.index)
      .key(n.leases)
      .arg(&token[..])
      .arg(envelope)
      .arg(ttl_ms)
      .arg(score(expires_ms))
      .arg(&self.channel)
      .arg(n.message)
      .arg(now_ms());
    let done: i64 = self.run(&inv).await?;
    self.wakeups.wake(ns, n.key);
    Ok(done == 1)
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
    let mut inv = scripts().abort.prepare_invoke();
    inv
      .key(n.lease)
      .key(format!("{}e:{}", n.base, hex(token)))
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
    ttl_ms: u64,
    expires_ms: u64,
  ) -> CoreResult<()> {
    let n = self.names(ns, digest);
    let mut inv = scripts().put.prepare_invoke();
    inv
      .key(n.value)
      .key(n.index)
      .arg(envelope)
      .arg(ttl_ms)
      .arg(score(expires_ms))
      .arg(&self.channel)
      .arg(n.message)
      .arg(now_ms());
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
    let members: Vec<String> = self.cmd(redis::cmd("SMEMBERS").arg(format!("{b}L"))).await?;
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
    self
      .cmd(
        redis::cmd("ZCOUNT")
          .arg(format!("{b}i"))
          .arg(format!("({now}"))
          .arg("+inf"),
      )
      .await
  }
}

fn score(expires_ms: u64) -> String {
  if expires_ms == crate::envelope::NEVER {
    "+inf".into()
  } else {
    expires_ms.to_string()
  }
}

fn now_ms() -> u64 {
  use crate::clock::Clock;
  crate::clock::SystemClock.now_ms()
}

/// `rediss://` needs a TLS crypto provider; install ring's once (unless the host app did).
fn ensure_crypto() {
  static ONCE: std::sync::Once = std::sync::Once::new();
  ONCE.call_once(|| {
    let _ = rustls::crypto::ring::default_provider().install_default();
  });
}

/// The process's subscriber: wakes waiters on every settled key, reconnecting with backoff for
/// as long as the server is open. Waiters poll as well, so a lost message only delays them.
async fn listen(url: String, channel: String, wakeups: std::sync::Weak<Wakeups>) {
  let mut backoff = Duration::from_millis(50);
  loop {
    let session = async {
      let client = redis::Client::open(url.as_str())?;
      let mut ps = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
      ps.subscribe(&channel).await?;
      Ok::<_, redis::RedisError>(ps)
    };
    if let Ok(ps) = session.await {
      backoff = Duration::from_millis(50);
      // Keys settled while this process was not listening: let every waiter look again.
      if let Some(w) = wakeups.upgrade() {
        w.wake_all();
      }
      let mut stream = ps.into_on_message();
      while let Some(msg) = stream.next().await {
        let Some(w) = wakeups.upgrade() else { return };
        let p = msg.get_payload_bytes();
        if p.len() == 48 {
          if let (Some(ns), Some(key)) = (unhex::<8>(&p[..16]), unhex::<16>(&p[16..])) {
            w.wake(ns, key);
          }
        }
      }
    }
    if wakeups.strong_count() == 0 {
      return;
    }
    tokio::time::sleep(backoff).await;
    backoff = (backoff * 2).min(Duration::from_secs(2));
  }
}

#[cfg(test)]
mod tests {
  use super::super::testing::{locked, redis_url, waiting};
  use super::super::{Acquired, DirectRead, RemoteStore, ServerSpec};
  use crate::envelope::Times;
  use crate::key::Keyspace;
  use std::time::Duration;

  fn store(name: &str) -> (RemoteStore, Keyspace) {
    let ks = Keyspace::new(&format!("core-test-{name}-{}", std::process::id()));
    let spec = ServerSpec {
      urls: vec![redis_url()],
      cluster: false,
      prefix: "cachette-test:".into(),
    };
    (RemoteStore::open(&spec, ks.id()).expect("open"), ks)
  }

  fn now() -> u64 {
    super::now_ms()
  }

  #[test]
  fn get_or_lock_commit_and_fencing() {
    super::runtime().block_on(async {
      let (s, ks) = store("fence");
      s.clear().await.expect("clear");
      let d = ks.digest_encoded(b"k1");
      let lease = Duration::from_millis(300);
      let l1 = locked(&s, &d, lease, Duration::from_secs(1), false, "first caller").await;
      // A second caller waits, then times out while the first holds (and renews) the lease.
      let b = s
        .acquire(&d, lease, Duration::from_millis(700), false)
        .await
        .expect("acquire");
      assert!(matches!(b, Acquired::TimedOut), "{b:?}");
      assert!(s.commit(l1, b"v1", Times::forever(now())).await.expect("commit"));
      let got = s.get(&d).await.expect("get").expect("stored");
      assert_eq!(got.1, b"v1");
      assert_eq!(s.len().await.expect("len"), 1);

      // A holder whose lease was cleared cannot overwrite: its commit is refused.
      let l2 = locked(&s, &d, lease, Duration::from_secs(1), true, "refresh takes the lease").await;
      assert_eq!(s.clear_locks().await.expect("clear locks"), 1);
      let l3 = locked(&s, &d, lease, Duration::from_secs(1), true, "lease free again").await;
      assert!(s.commit(l3, b"v3", Times::forever(now())).await.expect("commit"));
      assert!(!s.commit(l2, b"old", Times::forever(now())).await.expect("commit"));
      assert_eq!(s.get(&d).await.expect("get").expect("stored").1, b"v3");
      s.clear().await.expect("clear");
      assert!(s.get(&d).await.expect("get").is_none());
      assert_eq!(s.len().await.expect("len"), 0);
    });
  }

  #[test]
  fn waiters_get_the_value_or_the_error_of_their_holder() {
    let rt = super::runtime();
    rt.block_on(async {
      let (s, ks) = store("wait");
      let s = std::sync::Arc::new(s);
      s.clear().await.expect("clear");
      let d = ks.digest_encoded(b"k2");
      let lease = Duration::from_secs(2);
      let l = locked(&s, &d, lease, Duration::from_secs(1), false, "lease").await;
      let waiters: Vec<_> = (0..4)
        .map(|_| {
          let s = s.clone();
          tokio::spawn(async move { s.acquire(&d, lease, Duration::from_secs(5), false).await })
        })
        .collect();
      waiting(&s, 4).await;
      s.abort(l, Some(b"boom"), lease).await.expect("abort");
      for w in waiters {
        let r = w.await.expect("join").expect("acquire");
        assert!(matches!(&r, Acquired::Failed(e) if e == b"boom"), "{r:?}");
      }
      // Nothing was stored; the next caller computes.
      assert!(s.get(&d).await.expect("get").is_none());
      let l = locked(&s, &d, lease, Duration::from_secs(1), false, "recompute").await;
      let started = std::time::Instant::now();
      let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.acquire(&d, lease, Duration::from_secs(5), false).await })
      };
      // The four above, then this one: it is woken by the commit, not by polling.
      waiting(&s, 5).await;
      assert!(s.commit(l, b"ok", Times::forever(now())).await.expect("commit"));
      let r = waiter.await.expect("join").expect("acquire");
      assert!(matches!(&r, Acquired::Value(_, v) if v == b"ok"), "{r:?}");
      // A did-not-hang bound, not a speed measure: well under the 2 s lease.
      assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
      );
      s.clear().await.expect("clear");
    });
  }

  #[test]
  fn an_abandoned_lease_expires_and_a_waiter_takes_over() {
    super::runtime().block_on(async {
      let (s, ks) = store("expire");
      s.clear().await.expect("clear");
      let d = ks.digest_encoded(b"k3");
      let lease = Duration::from_millis(300);
      let l = locked(&s, &d, lease, Duration::from_secs(1), false, "lease").await;
      // The holder "dies": its renewal stops, nobody releases the lease.
      drop(l);
      let started = std::time::Instant::now();
      let r = s
        .acquire(&d, lease, Duration::from_secs(3), false)
        .await
        .expect("acquire");
      assert!(matches!(r, Acquired::Locked(_)), "{r:?}");
      assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
      );
      s.clear().await.expect("clear");
    });
  }

  #[test]
  fn direct_reads_get_the_value_key_of_a_single_server_only() {
    super::runtime().block_on(async {
      let (s, ks) = store("direct");
      let d = ks.digest_encoded(b"k3");
      s.put(&d, b"payload", Times::forever(now())).await.expect("put");
      let Some(DirectRead::Redis { url, key_prefix }) = s.direct_read() else {
        panic!("a single server reads directly")
      };
      let client = redis::Client::open(url.as_str()).expect("client");
      let mut c = client.get_multiplexed_async_connection().await.expect("connect");
      let raw: Vec<u8> = redis::cmd("GET")
        .arg(format!("{key_prefix}{}", super::hex(&d[..16])))
        .query_async(&mut c)
        .await
        .expect("GET");
      let (_, range) = s.open_read(&d, &raw).expect("an entry of this digest");
      assert_eq!(&raw[range], b"payload");
      // Read for another digest, or damaged: not an entry.
      assert!(s.open_read(&ks.digest_encoded(b"other"), &raw).is_none());
      let mut bad = raw.clone();
      let mid = bad.len() / 2;
      bad[mid] ^= 1;
      assert!(s.open_read(&d, &bad).is_none());
      s.clear().await.expect("clear");

      let spec = ServerSpec {
        urls: vec![redis_url()],
        cluster: true,
        prefix: "cachette-test:".into(),
      };
      assert_eq!(RemoteStore::open(&spec, ks.id()).expect("open").direct_read(), None);
    });
  }
}
