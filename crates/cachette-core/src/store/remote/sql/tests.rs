use super::super::testing::{locked, mysql_url, pg_url, waiting};
use super::super::{Acquired, DirectRead, RemoteStore, Server, ServerSpec};
use super::valid_table;
use crate::envelope::Times;
use crate::key::Keyspace;
use std::time::Duration;

#[test]
fn table_names_are_checked_before_any_ddl() {
  assert!(valid_table("cachette"));
  assert!(valid_table("_c1"));
  for bad in ["", "1x", "a-b", "a b", "x\"; DROP TABLE t; --", "t`", &"a".repeat(49)] {
    assert!(!valid_table(bad), "{bad}");
    let spec = ServerSpec {
      urls: vec!["sqlite:///tmp/never-created.db".into()],
      cluster: false,
      prefix: bad.to_owned(),
    };
    assert_eq!(
      RemoteStore::open(&spec, [0; 8]).err().map(|e| e.code()),
      Some("ERR_INVALID_OPTION")
    );
  }
}

fn urls() -> Vec<String> {
  let dir = crate::test_dir::TempDir::new();
  let path = dir.path().join("c.db");
  // Kept: the pool may still hold the file while the test ends.
  std::mem::forget(dir);
  vec![format!("sqlite://{}", path.display()), pg_url(), mysql_url()]
}

#[test]
fn lease_protocol_on_every_database() {
  for url in urls() {
    super::super::runtime().block_on(async {
      let ks = Keyspace::new(&format!("core-sql-{}", std::process::id()));
      let spec = ServerSpec {
        urls: vec![url.clone()],
        cluster: false,
        prefix: "cachette_core_test".into(),
      };
      let s = std::sync::Arc::new(RemoteStore::open(&spec, ks.id()).expect("open"));
      s.clear().await.unwrap_or_else(|e| panic!("{url}: {e}"));
      let d = ks.digest_encoded(b"k");
      let lease = Duration::from_millis(600);
      let l = locked(&s, &d, lease, Duration::from_secs(1), false, &format!("{url}: lease")).await;
      // Renewed from Rust: still held after two lease lengths.
      let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.acquire(&d, lease, Duration::from_millis(1500), false).await })
      };
      let r = waiter.await.expect("join").expect("acquire");
      assert!(matches!(r, Acquired::TimedOut), "{url}: {r:?}");
      let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.acquire(&d, lease, Duration::from_secs(5), false).await })
      };
      // The first waiter above counted once; abort only once this one waits too (a caller that
      // reaches the server after the abort takes the lease instead, as it should).
      waiting(&s, 2).await;
      s.abort(l, Some(b"boom"), lease).await.expect("abort");
      let r = waiter.await.expect("join").expect("acquire");
      assert!(matches!(&r, Acquired::Failed(e) if e == b"boom"), "{url}: {r:?}");
      assert!(s.get(&d).await.expect("get").is_none());

      let l = locked(
        &s,
        &d,
        lease,
        Duration::from_secs(1),
        false,
        &format!("{url}: recompute"),
      )
      .await;
      // The holder stops renewing (it died): a waiter polling meanwhile takes the lease over once
      // it expires (polling must not extend it), and the old holder's commit is refused.
      l.stop_renewing();
      let started = std::time::Instant::now();
      let l2 = locked(
        &s,
        &d,
        lease,
        Duration::from_secs(3),
        false,
        &format!("{url}: takeover"),
      )
      .await;
      assert!(
        // A lease extended by polling would never be taken over (the 3 s wait above fails);
        // the slack is for a loaded 2-core CI machine, where 1.13 s was seen.
        started.elapsed() < lease + Duration::from_millis(1500),
        "{url}: {:?}",
        started.elapsed()
      );
      assert!(s
        .commit(l2, b"v2", Times::forever(crate::clock::system().now_ms()))
        .await
        .expect("commit"));
      assert!(
        !s.commit(l, b"stale", Times::forever(crate::clock::system().now_ms()))
          .await
          .expect("commit"),
        "{url}"
      );
      let r = s
        .acquire(&d, lease, Duration::from_secs(1), false)
        .await
        .expect("acquire");
      assert!(matches!(&r, Acquired::Value(_, v) if v == b"v2"), "{url}: {r:?}");
      assert_eq!(s.len().await.expect("len"), 1);

      // Expired rows are reclaimed.
      let d2 = ks.digest_encoded(b"old");
      let now = crate::clock::system().now_ms();
      let t = Times {
        created_ms: now - 10,
        stale_at_ms: now - 5,
        expires_ms: now - 1,
      };
      s.put(&d2, b"gone", t).await.expect("put");
      assert!(
        s.get(&d2).await.expect("get").is_none(),
        "{url}: expired reads as a miss"
      );
      let Server::Sql(server) = &*s.server else { panic!() };
      assert!(server.reap().await.expect("reap") >= 1, "{url}");
      s.clear().await.expect("clear");
      assert_eq!(s.len().await.expect("len"), 0);
    });
  }
}

#[test]
fn direct_reads_on_postgres_only() {
  use sqlx::Row;
  let [sqlite, pg, mysql] = <[String; 3]>::try_from(urls()).expect("three urls");
  let ks = Keyspace::new(&format!("core-sql-direct-{}", std::process::id()));
  let open = |url: &str| {
    let spec = ServerSpec {
      urls: vec![url.to_owned()],
      cluster: false,
      prefix: "cachette_core_test".into(),
    };
    RemoteStore::open(&spec, ks.id()).expect("open")
  };
  assert_eq!(open(&sqlite).direct_read(), None);
  assert_eq!(open(&mysql).direct_read(), None);
  let s = open(&pg);
  super::super::runtime().block_on(async {
    let d = ks.digest_encoded(b"direct");
    s.put(&d, b"payload", Times::forever(crate::clock::system().now_ms()))
      .await
      .expect("put");
    let Some(DirectRead::Postgres { url, query, ns }) = s.direct_read() else {
      panic!("PostgreSQL reads directly")
    };
    assert_eq!(ns, ks.id());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    let raw: Vec<u8> = sqlx::query(&query)
      .bind(&ns[..])
      .bind(&d[..16])
      .fetch_one(&pool)
      .await
      .expect("select")
      .try_get(0)
      .expect("bytes");
    let (_, range) = s.open_read(&d, &raw).expect("an entry of this digest");
    assert_eq!(&raw[range], b"payload");
    s.clear().await.expect("clear");
  });
}
