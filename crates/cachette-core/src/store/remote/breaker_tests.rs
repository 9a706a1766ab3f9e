//! Every operation is bounded by the server's timeout, and its circuit breaker fails operations
//! at once while the server is known down: against a TCP listener that accepts and never answers,
//! a closed port, and a redis-server of this test stopped with SIGSTOP and resumed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::breaker::{FIRST_COOLDOWN, THRESHOLD};
use super::testing::keyspace;
use super::{runtime, RemoteStore, ServerSpec};
use crate::envelope::Times;
use crate::error::CoreError;

const TIMEOUT: Duration = Duration::from_millis(200);
/// Only a guard against a hang: every test ends in a fraction of this when the bounds hold.
const HANG: Duration = Duration::from_secs(60);

fn spec(url: &str) -> ServerSpec {
  ServerSpec {
    urls: vec![url.to_owned()],
    cluster: false,
    prefix: if url.starts_with("redis") {
      "cachette-breaker:".into()
    } else {
      "cachette_breaker".into()
    },
    timeout: TIMEOUT,
  }
}

/// A listener that accepts every connection and never reads or writes: a stalled server.
fn silent_port() -> u16 {
  let l = TcpListener::bind("127.0.0.1:0").expect("bind");
  let port = l.local_addr().expect("addr").port();
  std::thread::spawn(move || {
    let mut kept = vec![];
    for s in l.incoming().flatten() {
      kept.push(s);
    }
  });
  port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
  TcpListener::bind("127.0.0.1:0")
    .and_then(|l| l.local_addr())
    .expect("bind")
    .port()
}

fn urls(port: u16) -> [String; 3] {
  [
    format!("redis://127.0.0.1:{port}"),
    format!("postgres://postgres@127.0.0.1:{port}/test"),
    format!("mysql://root@127.0.0.1:{port}/test"),
  ]
}

/// The reason of a `ServerUnavailable`; panics on any other outcome.
fn unavailable<T: std::fmt::Debug>(r: Result<T, CoreError>, url: &str) -> String {
  match r {
    Err(CoreError::ServerUnavailable { reason, .. }) => reason,
    other => panic!("{url}: expected ServerUnavailable, got {other:?}"),
  }
}

/// `THRESHOLD` operations fail as `first` says, the next ones at once, naming the breaker.
async fn opens_after_the_threshold(url: &str, first: impl Fn(&str) -> bool) {
  let ks = keyspace("breaker");
  let store = RemoteStore::open(&spec(url), ks.id()).expect("open");
  let d = ks.digest_encoded(b"k");
  for i in 0..THRESHOLD {
    let reason = unavailable(store.get(&d).await, url);
    assert!(first(&reason), "{url}: failure {i}: {reason}");
    assert!(!reason.contains("circuit breaker"), "{url}: open after {i} failures");
  }
  for _ in 0..3 {
    let reason = unavailable(store.put(&d, b"v", Times::forever(1)).await, url);
    assert!(reason.contains("circuit breaker opening #1"), "{url}: {reason}");
    assert!(
      reason.contains(&format!("{} ms", FIRST_COOLDOWN.as_millis())),
      "{url}: {reason}"
    );
  }
}

#[test]
fn operations_on_a_server_that_never_answers_end_at_the_timeout_and_five_open_the_breaker() {
  let port = silent_port();
  runtime().block_on(async {
    let all = async {
      for url in urls(port) {
        // PostgreSQL and MySQL may also say that taking a pooled connection timed out.
        opens_after_the_threshold(&url, |r| {
          r.contains("no answer within 200 ms") || r.contains("timed out")
        })
        .await;
      }
    };
    tokio::time::timeout(HANG, all).await.expect("an operation hung");
  });
}

#[test]
fn operations_on_a_closed_port_fail_as_refused_and_five_open_the_breaker() {
  let port = closed_port();
  runtime().block_on(async {
    let all = async {
      for url in urls(port) {
        // Redis says refused at once; sqlx's pool retries a refused connection until the timeout.
        let redis = url.starts_with("redis");
        opens_after_the_threshold(&url, |r| !redis || !r.contains("no answer within")).await;
      }
    };
    tokio::time::timeout(HANG, all).await.expect("an operation hung");
  });
}

/// A redis-server of this test on a free port, killed when dropped.
struct OwnRedis {
  child: Child,
  port: u16,
}

impl OwnRedis {
  fn start() -> OwnRedis {
    let port = closed_port();
    let child = Command::new("redis-server")
      .args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
      ])
      .stdout(Stdio::null())
      .spawn()
      .expect("redis-server on the PATH");
    let redis = OwnRedis { child, port };
    for _ in 0..200 {
      if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return redis;
      }
      std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server on port {port} did not start");
  }

  fn signal(&self, sig: libc::c_int) {
    // SAFETY: a plain kill(2) of the child this test started.
    assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
  }
}

impl Drop for OwnRedis {
  fn drop(&mut self) {
    self.signal(libc::SIGCONT);
    let _ = self.child.kill();
    let _ = self.child.wait();
  }
}

#[test]
fn a_stopped_redis_opens_the_breaker_and_once_resumed_the_first_probe_closes_it() {
  let redis = OwnRedis::start();
  let url = format!("redis://127.0.0.1:{}", redis.port);
  runtime().block_on(async {
    let run = async {
      let ks = keyspace("breaker-sigstop");
      let store = RemoteStore::open(&spec(&url), ks.id()).expect("open");
      let d = ks.digest_encoded(b"k");
      store.put(&d, b"before", Times::forever(1)).await.expect("put");
      redis.signal(libc::SIGSTOP);
      for i in 0..THRESHOLD {
        let reason = unavailable(store.get(&d).await, &url);
        assert!(reason.contains("no answer within 200 ms"), "failure {i}: {reason}");
      }
      let reason = unavailable(store.get(&d).await, &url);
      assert!(reason.contains("circuit breaker opening #1"), "{reason}");
      redis.signal(libc::SIGCONT);
      // Until the cooldown ends, still at once; then the probe, on a new connection, answers.
      tokio::time::sleep(FIRST_COOLDOWN + Duration::from_millis(100)).await;
      let got = store.get(&d).await.expect("the probe answers");
      assert_eq!(got.map(|(_, v)| v), Some(b"before".to_vec()));
      store.put(&d, b"after", Times::forever(1)).await.expect("closed again");
      store.clear().await.expect("clear");
    };
    tokio::time::timeout(HANG, run).await.expect("an operation hung");
  });
}
