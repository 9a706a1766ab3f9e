//! What only the SQL store does: table names checked before any statement, direct reads on
//! PostgreSQL only, and the reaping of expired rows. The lease protocol is in `protocol_tests`.

use super::super::testing::{keyspace, on_every_sql_database, spec, sql_urls};
use super::super::{RemoteStore, Server, ServerSpec};
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
    let Server::Sql(server) = &*c.store.server else {
      panic!()
    };
    server.reap().await.expect("reap");
    // Gone from the table itself (this reap, or the reaper's first round, deleted it).
    let row = server.get(c.ks.id(), &d).await.expect("get");
    assert_eq!(row, None, "{}: the expired row is still there", c.url);
  });
}

#[test]
fn no_sql_database_offers_a_direct_read() {
  let ks = keyspace("sql-direct");
  for url in sql_urls() {
    let s = RemoteStore::open(&spec(&url), ks.id()).expect("open");
    assert_eq!(s.direct_read(), None, "{url}");
  }
}
