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
  crate::clock::system().now_ms()
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
      .arg(format!("{key_prefix}{}", super::keys::hex(&d[..16])))
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
