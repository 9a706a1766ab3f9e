//! What only the SQL store does: table names checked before any statement, direct reads on
//! PostgreSQL only, and the reaping of expired rows. The lease protocol is in `protocol_tests`.

use super::super::testing::{keyspace, on_every_sql_database, spec, sql_urls, TEST_TIMEOUT};
use super::super::{runtime, DirectRead, Ops, RemoteStore, ServerSpec};
use super::valid_table;
use crate::envelope::Times;

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
      timeout: TEST_TIMEOUT,
    };
    assert_eq!(
      RemoteStore::open(&spec, [0; 8]).err().map(|e| e.code()),
      Some("ERR_INVALID_OPTION")
    );
  }
}

#[test]
fn an_expired_row_reads_as_a_miss_and_is_reaped() {
  on_every_sql_database("sql-reap", |c| async move {
    let d = c.digest("old");
    let now = c.store.now();
    let t = Times {
      created_ms: now - 10,
      stale_at_ms: now - 5,
      expires_ms: now - 1,
    };
    c.put(&d, b"gone", t).await;
    assert_eq!(c.get(&d).await, None, "{}: an expired row read as an entry", c.url);
    let Ops::Sql(server) = &c.store.server.ops else {
      panic!()
    };
    server.reap().await.expect("reap");
    // Gone from the table itself (this reap, or the reaper's first round, deleted it).
    let row = server.get(c.ks.id(), &d).await.expect("get");
    assert_eq!(row, None, "{}: the expired row is still there", c.url);
  });
}

#[test]
fn direct_reads_on_postgres_only() {
  use sqlx::Row;
  let [sqlite, pg, mysql] = <[String; 3]>::try_from(sql_urls()).expect("three urls");
  let ks = keyspace("sql-direct");
  let open = |url: &str| RemoteStore::open(&spec(url), ks.id()).expect("open");
  assert_eq!(open(&sqlite).direct_read(), None);
  assert_eq!(open(&mysql).direct_read(), None);
  let s = open(&pg);
  runtime().block_on(async {
    let d = ks.digest_encoded(b"direct");
    s.put(&d, b"payload", Times::forever(s.now())).await.expect("put");
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
