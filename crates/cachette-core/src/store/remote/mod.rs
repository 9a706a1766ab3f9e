//! Stores on a server that several processes and machines share: Redis and SQL.
//!
//! Both speak the lease protocol of `docs/locks.md`:
//! * **get-or-lock** is one atomic step on the server: it returns the value, or takes the key's
//!   lease (a random owner token with an expiry judged by the server), or names the holder;
//! * a held lease is **renewed from Rust** (a tokio task, every third of the lease), so a busy
//!   JS event loop cannot lose it; a dead process stops renewing and its lease expires;
//! * the **commit is fenced**: the value is written only while the token still owns the lease,
//!   so a holder whose lease was taken over (or cleared) cannot overwrite a newer value;
//! * an **abort** removes the lease and leaves the serialized error under the holder's token for
//!   a while, so every caller that waited for that holder gets the original error;
//! * **waiters** are woken by a notification (Redis pub/sub) and otherwise poll with backoff.
//!
//! Everything runs on one tokio runtime owned by the core ([`runtime`]), shared by every worker
//! thread of the process; connection pools are shared per URL.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::envelope::{self, Freshness, Times};
use crate::error::{CoreError, CoreResult};
use crate::integrity::{Checker, IntegrityKey};
use crate::key::Digest;

pub use crate::runtime::runtime;

/// The part of a digest remote keys are named by (128 bits; the entry keeps all 256 and is
/// compared on read).
pub(crate) fn key_part(digest: &Digest) -> [u8; 16] {
  let mut k = [0u8; 16];
  k.copy_from_slice(&digest[..16]);
  k
}

/// A read that a client outside the core may make for the hit path; see
/// [`RemoteStore::direct_read`]. The bytes it returns are an entry envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectRead {
  /// `GET <key_prefix><hex of the digest's first 16 bytes>` on the server of `url` (not a cluster).
  Redis { url: String, key_prefix: String },
  /// The one-row `query` with the parameters `$1` = `ns` and `$2` = the digest's first 16 bytes,
  /// both `bytea`, on the PostgreSQL database of `url`; its one column is the envelope.
  Postgres { url: String, query: String, ns: [u8; 8] },
}

/// One try of the atomic get-or-lock on the server.
#[derive(Debug)]
pub(crate) enum Attempt {
  /// The entry is there (an envelope, not yet checked).
  Value(Vec<u8>),
  /// The caller's token now holds the lease.
  Locked,
  /// Another token holds the lease for about `remaining_ms` more.
  Wait { holder: Token, remaining_ms: u64 },
  /// The holder the caller waited for failed with this serialized error.
  Failed(Vec<u8>),
}

/// How [`RemoteStore::acquire`] ended (`L`: how the lease held is named; [`HeldLeases`] names it
/// by number).
#[derive(Debug)]
pub enum Acquired<L = Lease> {
  /// A stored entry (fresh or stale; expired entries are misses).
  Value(Times, Vec<u8>),
  /// The caller holds the key's lease: compute, then [`RemoteStore::commit`] or [`RemoteStore::abort`].
  Locked(L),
  /// The computation this caller waited for failed with this serialized error.
  Failed(Vec<u8>),
  /// `timeout` passed while another caller held the lease.
  TimedOut,
}

/// First and last polling interval of a waiter that gets no notification.
const POLL_FIRST: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(500);

/// The operations of one server, by kind.
pub(crate) enum Ops {
  Redis(redis::RedisServer),
  Sql(Box<sql::SqlServer>),
}

/// One server; every namespace on it shares its connections, its timeout and its breaker.
pub(crate) struct Server {
  ops: Ops,
  breaker: Breaker,
  /// The longest wait for one operation (`backendTimeout`).
  timeout: Duration,
}

/// `$body` with `$s` the server's [`Ops`], unbounded: for what is no round trip.
macro_rules! on_ops {
  ($server:expr, $s:ident => $body:expr) => {
    match &$server.ops {
      $crate::store::remote::Ops::Redis($s) => $body,
      $crate::store::remote::Ops::Sql($s) => $body,
    }
  };
}

/// One operation on the server (`$body`, with `$s` its [`Ops`]), bounded by the server's
/// timeout and refused at once while its breaker is open (see [`Server::bounded`]).
/// `bulk`: an operation whose work grows with the namespace (`clear`, `clear_locks`, `len`),
/// bounded by [`BULK_TIMEOUT`] when that is longer.
macro_rules! on_server {
  (bulk $server:expr, $s:ident => $body:expr) => {{
    let server: &$crate::store::remote::Server = $server;
    server.bounded(server.timeout.max($crate::store::remote::BULK_TIMEOUT), async { on_ops!(server, $s => $body) }).await
  }};
  ($server:expr, $s:ident => $body:expr) => {{
    let server: &$crate::store::remote::Server = $server;
    server.bounded(server.timeout, async { on_ops!(server, $s => $body) }).await
  }};
}

/// The bound of the operations whose work grows with the namespace: emptying a large one may
/// take longer than a lookup is allowed to.
const BULK_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
  /// What the server's errors name it by (no password).
  fn shown(&self) -> &str {
    on_ops!(self, s => s.shown())
  }

  /// Runs one operation: at once `ServerUnavailable` while the breaker is open; else bounded by
  /// the timeout (its expiry is `ServerUnavailable` too), the outcome reported to the breaker.
  /// When a failure opens the breaker, the connections are dropped: the probe makes new ones.
  async fn bounded<T>(&self, limit: Duration, op: impl std::future::Future<Output = CoreResult<T>>) -> CoreResult<T> {
    let permit = self.breaker.admit().map_err(|open| CoreError::ServerUnavailable {
      server: self.shown().to_owned(),
      reason: format!(
        "{} operations in a row failed (the last: {}); skipped until it answers again, tried once \
         after {} ms, then less often while it stays silent (circuit breaker opening #{})",
        breaker::THRESHOLD,
        open.last,
        breaker::FIRST_COOLDOWN.as_millis(),
        open.opening
      ),
    })?;
    let started = Instant::now();
    let r = tokio::time::timeout(limit, op).await;
    // Unavailable after the whole timeout (ours, or the client's own when a busy runtime polled
    // the operation first): the server left it unanswered, whatever the client called it.
    let silent = match &r {
      Err(_) => true,
      Ok(Err(CoreError::ServerUnavailable { .. })) => started.elapsed() >= limit,
      Ok(_) => false,
    };
    let r = match r {
      Ok(r) if !silent => r,
      _ => Err(CoreError::ServerUnavailable {
        server: self.shown().to_owned(),
        reason: format!("no answer within {} ms (backendTimeout)", limit.as_millis()),
      }),
    };
    match &r {
      Err(CoreError::ServerUnavailable { reason, .. }) => {
        if permit.failed(reason, silent) {
          on_ops!(self, s => s.reconnect());
        }
      }
      _ => permit.succeeded(),
    }
    r
  }
}

mod breaker;
#[cfg(test)]
mod breaker_tests;
#[cfg(test)]
mod clock_tests;
mod held;
#[cfg(test)]
mod integrity_tests;
mod lease;
#[cfg(test)]
mod protocol_tests;
pub mod redis;
pub mod sql;
#[cfg(test)]
pub(crate) mod testing;
mod wakeups;

use breaker::Breaker;
pub use held::HeldLeases;
use lease::new_token;
pub use lease::{Lease, Token};
pub(crate) use wakeups::Wakeups;

/// One namespace on a shared server.
pub struct RemoteStore {
  server: Arc<Server>,
  ns: [u8; 8],
  clock: Arc<dyn Clock>,
  /// With an `integrityKey`: entries carry its MAC, and reads reject those without it.
  integrity: Option<Checker>,
  /// Reads that found an entry failing the MAC check (see [`RemoteStore::take_rejected`]).
  rejected: std::sync::atomic::AtomicU64,
  /// How many `acquire` calls have seen a holder and wait for it: lets a test act only once its
  /// waiters are known to wait, instead of sleeping and hoping.
  #[cfg(test)]
  waiting: std::sync::atomic::AtomicUsize,
}

impl RemoteStore {
  /// Opens namespace `ns` (a [`crate::key::Keyspace`] id) on the Redis or SQL server of `url`.
  /// Nothing is contacted yet: the first operation connects, and each later one retries.
  ///
  /// # Errors
  /// `InvalidConfig` for a URL of no known scheme, or an invalid table name.
  pub fn open(spec: &ServerSpec, ns: [u8; 8]) -> CoreResult<Self> {
    Self::open_with_clock(spec, ns, crate::clock::system())
  }

  /// [`RemoteStore::open`] with the clock that judges entries' times (freshness, expiry, the
  /// server-side ttl of a write). Leases are timed by the server, never by this clock.
  ///
  /// # Errors
  /// As [`RemoteStore::open`].
  pub fn open_with_clock(spec: &ServerSpec, ns: [u8; 8], clock: Arc<dyn Clock>) -> CoreResult<Self> {
    let server = open_server(spec)?;
    Ok(RemoteStore {
      server,
      ns,
      clock,
      integrity: None,
      rejected: std::sync::atomic::AtomicU64::new(0),
      #[cfg(test)]
      waiting: std::sync::atomic::AtomicUsize::new(0),
    })
  }

  /// This store with entries signed and checked with `key` ([`crate::integrity`]): an entry
  /// whose MAC is missing or wrong reads as a miss, counted by [`RemoteStore::take_rejected`].
  pub fn with_integrity(mut self, key: Option<IntegrityKey>) -> Self {
    self.integrity = key.map(Checker::new);
    self
  }

  /// Reads that found an entry whose MAC was missing or wrong since the last call (and resets
  /// the count).
  pub fn take_rejected(&self) -> u64 {
    self.rejected.swap(0, std::sync::atomic::Ordering::Relaxed)
  }

  /// The range of `bytes[range]`, a payload read for `digest`, that holds the value: all of
  /// it without an integrity key, the value before a valid MAC with one, else `None` (counted).
  fn checked(
    &self,
    digest: &Digest,
    times: Times,
    bytes: &[u8],
    range: std::ops::Range<usize>,
  ) -> Option<std::ops::Range<usize>> {
    let Some(key) = &self.integrity else { return Some(range) };
    match key.verify(self.ns, digest, times, &bytes[range.clone()]) {
      Some(value) => Some(range.start..range.start + value.len()),
      None => {
        self.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
      }
    }
  }

  /// The payload to store for `value` (signed with an integrity key).
  fn sealed(&self, digest: &Digest, times: Times, value: &[u8]) -> Vec<u8> {
    match &self.integrity {
      Some(key) => envelope::seal(digest, times, &key.sign(self.ns, digest, times, value)),
      None => envelope::seal(digest, times, value),
    }
  }

  fn now(&self) -> u64 {
    self.clock.now_ms()
  }

  /// Reads an entry; `None` when absent, expired, foreign or corrupted.
  pub async fn get(&self, digest: &Digest) -> CoreResult<Option<(Times, Vec<u8>)>> {
    let raw = on_server!(&*self.server, s => s.get(self.ns, digest).await)?;
    Ok(raw.and_then(|b| self.open_entry(digest, &b)))
  }

  fn open_entry(&self, digest: &Digest, bytes: &[u8]) -> Option<(Times, Vec<u8>)> {
    let (times, range) = self.open_read(digest, bytes)?;
    Some((times, bytes[range].to_vec()))
  }

  /// How a client on the caller's own thread can read entries of this namespace (the hit path
  /// without a thread hand-off), or `None` when only the core's connections can (Redis Cluster,
  /// SQLite, MySQL). What it reads is checked with [`RemoteStore::open_read`].
  pub fn direct_read(&self) -> Option<DirectRead> {
    on_ops!(&*self.server, s => s.direct_read(self.ns))
  }

  /// Counts a failure of the server seen outside the core (a direct read it left unanswered for
  /// the timeout, `reason`) as its breaker counts the core's own operations.
  pub fn report_unavailable(&self, reason: &str) {
    if let Ok(permit) = self.server.breaker.admit() {
      if permit.failed(reason, true) {
        on_ops!(&*self.server, s => s.reconnect());
      }
    }
  }

  /// Checks an entry read directly for `digest`: its times and the byte range of its payload in
  /// `bytes`, or `None` when it is expired, foreign or corrupted (a miss, as in [`RemoteStore::get`]).
  pub fn open_read(&self, digest: &Digest, bytes: &[u8]) -> Option<(Times, std::ops::Range<usize>)> {
    let (times, range) = envelope::open_range(digest, bytes)?;
    if times.freshness(self.now()) == Freshness::Expired {
      return None;
    }
    Some((times, self.checked(digest, times, bytes, range)?))
  }

  /// The miss path: returns the entry if there is one (`force`: ignore it), or takes the key's
  /// lease, or waits for its holder (at most `timeout`) and tries again.
  pub async fn acquire(
    &self,
    digest: &Digest,
    lease: Duration,
    timeout: Duration,
    force: bool,
  ) -> CoreResult<Acquired> {
    let deadline = Instant::now() + timeout;
    let token = new_token();
    let key = key_part(digest);
    let wakeups = on_ops!(&*self.server, s => s.wakeups());
    let notify = wakeups.register(self.ns, key);
    let lease_ms = lease.as_millis().max(1) as u64;
    let mut holder: Option<Token> = None;
    let mut want_value = !force;
    let mut poll = POLL_FIRST;
    loop {
      let notified = notify.notified();
      tokio::pin!(notified);
      notified.as_mut().enable();
      let attempt = on_server!(&*self.server, s => s.attempt(self.ns, digest, &token, lease_ms, holder.as_ref(), want_value).await)?;
      match attempt {
        Attempt::Value(bytes) => match self.open_entry(digest, &bytes) {
          Some((times, payload)) => return Ok(Acquired::Value(times, payload)),
          // Expired, foreign or damaged: treat it as absent.
          None => want_value = false,
        },
        Attempt::Locked => return Ok(Acquired::Locked(Lease::hold(self, digest, token, lease))),
        Attempt::Failed(e) => return Ok(Acquired::Failed(e)),
        Attempt::Wait {
          holder: h,
          remaining_ms,
        } => {
          if holder != Some(h) {
            poll = POLL_FIRST;
          }
          #[cfg(test)]
          if holder.is_none() {
            self.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
          }
          holder = Some(h);
          let now = Instant::now();
          if now >= deadline {
            return Ok(Acquired::TimedOut);
          }
          let until_expiry = Duration::from_millis(remaining_ms.saturating_add(2));
          let wait = poll.min(deadline - now).min(until_expiry);
          tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
          }
          poll = (poll * 2).min(POLL_MAX);
          // A waiter that finds the value after the holder finished reads it.
          want_value = !force || holder.is_some();
        }
      }
    }
  }

  /// Stores the computed entry if `lease` still owns the key, releases it and wakes the waiters.
  /// False when the lease was lost (taken over after expiry, or cleared): nothing is written.
  pub async fn commit(&self, lease: Lease, payload: &[u8], times: Times) -> CoreResult<bool> {
    lease.stop_renewing();
    let env = self.sealed(&lease.digest, times, payload);
    on_server!(&*self.server, s => s.commit(self.ns, &lease.digest, &lease.token, &env, times.expires_ms, self.now()).await)
  }

  /// Releases `lease` without a value. `error` (serialized) reaches every caller that waited for it.
  pub async fn abort(&self, lease: Lease, error: Option<&[u8]>, lease_len: Duration) -> CoreResult<()> {
    lease.stop_renewing();
    let keep = lease_len.as_millis().max(1000) as u64;
    on_server!(&*self.server, s => s.abort(self.ns, &lease.digest, &lease.token, error, keep).await)
  }

  /// Stores an entry without a lease (`set()`, or a caller that gave up waiting).
  pub async fn put(&self, digest: &Digest, payload: &[u8], times: Times) -> CoreResult<()> {
    let env = self.sealed(digest, times, payload);
    on_server!(&*self.server, s => s.put(self.ns, digest, &env, times.expires_ms, self.now()).await)
  }

  /// Removes an entry and its lease (a computation in flight will not store it); true if the
  /// entry was there.
  pub async fn delete(&self, digest: &Digest) -> CoreResult<bool> {
    on_server!(&*self.server, s => s.delete(self.ns, digest).await)
  }

  /// Removes every entry and lease of the namespace.
  pub async fn clear(&self) -> CoreResult<()> {
    on_server!(bulk &*self.server, s => s.clear(self.ns).await)
  }

  /// Removes every lease of the namespace, so waiters stop waiting; returns how many.
  pub async fn clear_locks(&self) -> CoreResult<u64> {
    on_server!(bulk &*self.server, s => s.clear_locks(self.ns).await)
  }

  /// Entries of the namespace that have not expired.
  pub async fn len(&self) -> CoreResult<u64> {
    on_server!(bulk &*self.server, s => s.len(self.ns, self.now()).await)
  }
}

/// Where a remote store lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSpec {
  /// One URL, or several nodes of a Redis Cluster.
  pub urls: Vec<String>,
  /// Redis: connect in cluster mode (implied by several URLs).
  pub cluster: bool,
  /// Redis key prefix, or the SQL table name.
  pub prefix: String,
  /// The longest wait for one operation on the server: connecting, a command or query, taking
  /// a pooled connection (`backendTimeout`). Servers of one URL with other timeouts are others.
  pub timeout: Duration,
}

/// The default of [`ServerSpec::timeout`] (the `backendTimeout` option's): a call's path holds
/// at most two round trips before its computation, so a server that stalls costs a call at most
/// about a second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

fn open_server(spec: &ServerSpec) -> CoreResult<Arc<Server>> {
  static OPEN: OnceLock<Mutex<HashMap<ServerSpec, Weak<Server>>>> = OnceLock::new();
  let mut open = OPEN.get_or_init(Default::default).lock();
  if let Some(s) = open.get(spec).and_then(Weak::upgrade) {
    return Ok(s);
  }
  let first = spec.urls.first().ok_or_else(|| CoreError::InvalidConfig {
    reason: "no server URL given".into(),
  })?;
  let scheme = first.split("://").next().unwrap_or_default().to_ascii_lowercase();
  if spec.timeout.is_zero() {
    return Err(CoreError::InvalidConfig {
      reason: "backendTimeout must be greater than 0".into(),
    });
  }
  let ops = match scheme.as_str() {
    "redis" | "rediss" | "valkey" | "valkeys" => Ops::Redis(redis::RedisServer::new(spec)?),
    "postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite" => Ops::Sql(Box::new(sql::SqlServer::new(spec)?)),
    _ => {
      return Err(CoreError::InvalidConfig {
        reason: format!(
          "unknown URL scheme in {}; expected redis://, rediss://, postgres://, mysql:// or sqlite://",
          redact(first)
        ),
      })
    }
  };
  let server = Arc::new(Server {
    ops,
    breaker: Breaker::default(),
    timeout: spec.timeout,
  });
  open.retain(|_, w| w.strong_count() > 0);
  open.insert(spec.clone(), Arc::downgrade(&server));
  Ok(server)
}

/// A URL with its password replaced, for error messages.
pub fn redact(url: &str) -> String {
  let Some((scheme, rest)) = url.split_once("://") else {
    return url.to_owned();
  };
  let (auth, host) = match rest.rfind('@') {
    Some(i) => (&rest[..i], &rest[i + 1..]),
    None => return url.to_owned(),
  };
  match auth.split_once(':') {
    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
    None => url.to_owned(),
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn redact_hides_passwords_only() {
    assert_eq!(redact("redis://u:secret@h:1/2"), "redis://u:***@h:1/2");
    assert_eq!(redact("redis://h:1"), "redis://h:1");
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
  }

  #[test]
  fn unknown_scheme_is_a_config_error() {
    let spec = ServerSpec {
      urls: vec!["ftp://x".into()],
      cluster: false,
      prefix: "p".into(),
      timeout: DEFAULT_TIMEOUT,
    };
    let err = RemoteStore::open(&spec, [0; 8]).err().expect("refused");
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
  }
}
