//! The harness of the remote stores' tests: every test gets a namespace of its own on each real
//! server (the environment's URLs, or the standard local ports), so tests run in parallel threads.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{runtime, Acquired, Lease, RemoteStore, ServerSpec};
use crate::clock::{Clock, ManualClock};
use crate::envelope::Times;
use crate::key::{Digest, Keyspace};

pub fn redis_url() -> String {
  std::env::var("CACHETTE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
pub fn pg_url() -> String {
  std::env::var("CACHETTE_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}
pub fn mysql_url() -> String {
  std::env::var("CACHETTE_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// SQLite (a new file, kept: a pool may still hold it as the test ends), PostgreSQL and MySQL.
pub fn sql_urls() -> Vec<String> {
  let dir = crate::test_dir::TempDir::new();
  let path = dir.path().join("c.db");
  std::mem::forget(dir);
  vec![format!("sqlite://{}", path.display()), pg_url(), mysql_url()]
}

fn every_server() -> Vec<String> {
  let mut urls = vec![redis_url()];
  urls.extend(sql_urls());
  urls
}

/// The operation timeout of the protocol tests: far above any answer of a live server, even on a
/// loaded machine (the timeout itself is tested in `breaker_tests`).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the tests keep their entries on the server of `url`: a key prefix or a table.
pub fn spec(url: &str) -> ServerSpec {
  let prefix = if url.starts_with("redis") {
    "cachette-test:"
  } else {
    "cachette_core_test"
  };
  ServerSpec {
    urls: vec![url.to_owned()],
    cluster: false,
    prefix: prefix.into(),
    timeout: TEST_TIMEOUT,
  }
}

/// The namespace of test `name` in this process.
pub fn keyspace(name: &str) -> Keyspace {
  Keyspace::new(format!("core-test-{name}-{}", std::process::id()))
}

/// Runs `test` on Redis and on every SQL database, each time on the emptied namespace `name`.
pub fn on_every_server<F: Future<Output = ()>>(name: &str, test: impl Fn(Case) -> F) {
  on_each(every_server(), name, test);
}

/// [`on_every_server`] on Redis alone.
pub fn on_redis<F: Future<Output = ()>>(name: &str, test: impl Fn(Case) -> F) {
  on_each(vec![redis_url()], name, test);
}

/// [`on_every_server`] without Redis.
pub fn on_every_sql_database<F: Future<Output = ()>>(name: &str, test: impl Fn(Case) -> F) {
  on_each(sql_urls(), name, test);
}

fn on_each<F: Future<Output = ()>>(urls: Vec<String>, name: &str, test: impl Fn(Case) -> F) {
  for url in urls {
    run(Case::open(&url, name, crate::clock::system()), &test);
  }
}

/// [`on_every_server`] with a store whose clock moves only when `test` advances it. It starts at
/// the system time, so the server's own expiry of an entry that lives minutes never fires.
pub fn on_every_server_at_manual_time<F: Future<Output = ()>>(name: &str, test: impl Fn(Case, ManualClock) -> F) {
  for url in every_server() {
    let clock = ManualClock::new(crate::clock::system().now_ms());
    run(Case::open(&url, name, Arc::new(clock.clone())), |c| test(c, clock));
  }
}

fn run<F: Future<Output = ()>>(case: Case, test: impl FnOnce(Case) -> F) {
  runtime().block_on(async {
    case.clear().await;
    let store = case.store.clone();
    let url = case.url.clone();
    test(case).await;
    store.clear().await.unwrap_or_else(|e| panic!("{url}: clear: {e}"));
  });
}

/// One test's namespace on one server. Its methods panic, naming the server, on a store error.
pub struct Case {
  pub url: String,
  pub ks: Keyspace,
  pub store: Arc<RemoteStore>,
}

impl Case {
  fn open(url: &str, name: &str, clock: Arc<dyn Clock>) -> Case {
    let ks = keyspace(name);
    let store = RemoteStore::open_with_clock(&spec(url), ks.id(), clock).unwrap_or_else(|e| panic!("{url}: {e}"));
    Case {
      url: url.to_owned(),
      ks,
      store: Arc::new(store),
    }
  }

  /// Namespace `name` on the same server, emptied.
  pub async fn beside(&self, name: &str) -> Case {
    let other = Case::open(&self.url, name, self.store.clock.clone());
    other.clear().await;
    other
  }

  pub fn digest(&self, key: &str) -> Digest {
    self.ks.digest_encoded(key.as_bytes())
  }

  /// Times of an entry made now that never goes stale.
  pub fn forever(&self) -> Times {
    Times::forever(self.store.now())
  }

  pub async fn acquire(&self, d: &Digest, lease: Duration, wait: Duration, force: bool) -> Acquired {
    let r = self.store.acquire(d, lease, wait, force).await;
    r.unwrap_or_else(|e| panic!("{}: acquire: {e}", self.url))
  }

  /// Acquires the lease of `d`; panics, naming `what`, if another outcome comes back.
  pub async fn locked(&self, d: &Digest, lease: Duration, wait: Duration, force: bool, what: &str) -> Lease {
    match self.acquire(d, lease, wait, force).await {
      Acquired::Locked(l) => l,
      other => panic!("{}: {what}: expected the lease, got {other:?}", self.url),
    }
  }

  /// An `acquire` on a task of its own: a caller that waits while the test goes on.
  pub fn spawn_acquire(&self, d: &Digest, lease: Duration, wait: Duration) -> tokio::task::JoinHandle<Acquired> {
    let (s, d, url) = (self.store.clone(), *d, self.url.clone());
    tokio::spawn(async move {
      let r = s.acquire(&d, lease, wait, false).await;
      r.unwrap_or_else(|e| panic!("{url}: acquire: {e}"))
    })
  }

  /// How many `acquire` calls on this store have seen a holder and waited for it.
  pub fn waiters(&self) -> usize {
    self.store.waiting.load(Ordering::SeqCst)
  }

  /// Returns once `n` `acquire` calls on this store have seen a holder and wait for it; panics
  /// if they do not within 10 s.
  pub async fn waiting(&self, n: usize) {
    let seen = async {
      while self.waiters() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
      }
    };
    let r = tokio::time::timeout(Duration::from_secs(10), seen).await;
    r.unwrap_or_else(|_| panic!("{}: fewer than {n} waiters", self.url));
  }

  pub async fn commit(&self, lease: Lease, payload: &[u8]) -> bool {
    let r = self.store.commit(lease, payload, self.forever()).await;
    r.unwrap_or_else(|e| panic!("{}: commit: {e}", self.url))
  }

  /// Releases `lease`, leaving `error` for the callers that wait for it (kept 5 s on Redis: far
  /// longer than a woken waiter takes to look again).
  pub async fn abort(&self, lease: Lease, error: Option<&[u8]>) {
    let r = self.store.abort(lease, error, Duration::from_secs(5)).await;
    r.unwrap_or_else(|e| panic!("{}: abort: {e}", self.url));
  }

  pub async fn put(&self, d: &Digest, payload: &[u8], times: Times) {
    let r = self.store.put(d, payload, times).await;
    r.unwrap_or_else(|e| panic!("{}: put: {e}", self.url));
  }

  pub async fn get(&self, d: &Digest) -> Option<(Times, Vec<u8>)> {
    let r = self.store.get(d).await;
    r.unwrap_or_else(|e| panic!("{}: get: {e}", self.url))
  }

  /// The payload stored under `d`, if any.
  pub async fn value(&self, d: &Digest) -> Option<Vec<u8>> {
    self.get(d).await.map(|(_, v)| v)
  }

  pub async fn len(&self) -> u64 {
    let r = self.store.len().await;
    r.unwrap_or_else(|e| panic!("{}: len: {e}", self.url))
  }

  pub async fn clear(&self) {
    let r = self.store.clear().await;
    r.unwrap_or_else(|e| panic!("{}: clear: {e}", self.url));
  }

  pub async fn clear_locks(&self) -> u64 {
    let r = self.store.clear_locks().await;
    r.unwrap_or_else(|e| panic!("{}: clear locks: {e}", self.url))
  }
}
