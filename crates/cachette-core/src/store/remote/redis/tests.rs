//! What only the Redis store keeps: every waiter of an aborted holder gets its error, and entries
//! a client outside the core reads directly, on a single server only. The rest of the lease
//! protocol is tested on every server, in `protocol_tests`.

use std::time::Duration;

use super::super::testing::{keyspace, on_redis, redis_url, spec};
use super::super::{runtime, Acquired, DirectRead, RemoteStore, ServerSpec};
use crate::envelope::Times;

/// Redis only: on SQL the look for the holder's error and the take of its expired lease are two
/// statements, so a waiter whose poll straddles the abort takes the lease and clears the error.
#[test]
fn every_waiter_gets_the_error_of_the_holder_that_aborted() {
  on_redis("waiters-get-error", |c| async move {
    let (d, lease, patience) = (c.digest("k"), Duration::from_millis(600), Duration::from_secs(10));
    let l = c.locked(&d, lease, patience, false, "holder").await;
    let waiters: Vec<_> = (0..4).map(|_| c.spawn_acquire(&d, lease, patience)).collect();
    // Abort only once all four wait: a caller arriving after the abort takes the lease instead.
    c.waiting(4).await;
    c.abort(l, Some(b"boom")).await;
    for w in waiters {
      let r = w.await.expect("join");
      assert!(matches!(&r, Acquired::Failed(e) if e == b"boom"), "{r:?}");
    }
  });
}

#[test]
fn direct_reads_get_the_value_key_of_a_single_server_only() {
  runtime().block_on(async {
    let ks = keyspace("redis-direct");
    let s = RemoteStore::open(&spec(&redis_url()), ks.id()).expect("open");
    let d = ks.digest_encoded(b"k");
    s.put(&d, b"payload", Times::forever(s.now())).await.expect("put");
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

    let cluster = ServerSpec {
      cluster: true,
      ..spec(&redis_url())
    };
    assert_eq!(RemoteStore::open(&cluster, ks.id()).expect("open").direct_read(), None);
  });
}

#[test]
fn keys_of_another_type_read_as_absent_and_the_next_write_overwrites_them() {
  on_redis("wrong-type", |c| async move {
    let client = redis::Client::open(c.url.as_str()).expect("client");
    let raw = client.get_multiplexed_async_connection().await.expect("connect");
    // Someone replaces a key of cachette's by a list.
    let junk = |k: String| {
      let mut raw = raw.clone();
      async move {
        let _: () = redis::cmd("DEL").arg(&k).query_async(&mut raw).await.expect("DEL");
        let _: () = redis::cmd("LPUSH")
          .arg(&k)
          .arg("junk")
          .query_async(&mut raw)
          .await
          .expect("LPUSH");
      }
    };
    let type_of = |k: String| {
      let mut raw = raw.clone();
      async move {
        redis::cmd("TYPE")
          .arg(&k)
          .query_async::<String>(&mut raw)
          .await
          .expect("TYPE")
      }
    };
    let (d, lease, patience) = (c.digest("k"), Duration::from_millis(600), Duration::from_secs(10));
    let n = super::keys::Names::new(&spec(&c.url).prefix, c.ks.id(), &d);
    for k in [&n.value, &n.lease, &n.index, &n.leases] {
      junk(k.clone()).await;
    }
    assert_eq!(c.get(&d).await, None, "an entry of another type is a miss");
    assert_eq!(c.len().await, 0, "an index of another type counts nothing");
    let l = c
      .locked(&d, lease, patience, false, "a lease of another type is free")
      .await;
    assert!(c.commit(l, b"mine").await, "the commit overwrites");
    assert_eq!(c.value(&d).await.as_deref(), Some(&b"mine"[..]));
    assert_eq!(c.len().await, 1, "the index is cachette's again");
    assert_eq!(
      [type_of(n.value.clone()).await, type_of(n.index.clone()).await],
      ["string", "zset"]
    );
    // A lease set of another type: clearLocks() finds no lease, and leases work again after it.
    junk(n.leases.clone()).await;
    assert_eq!(c.clear_locks().await, 0);
    let _l = c.locked(&c.digest("other"), lease, patience, false, "after").await;
    assert_eq!(c.clear_locks().await, 1);
    // put() over an entry of another type; delete() and clear() beside keys of another type.
    junk(n.value.clone()).await;
    c.put(&d, b"put", c.forever()).await;
    assert_eq!(c.value(&d).await.as_deref(), Some(&b"put"[..]));
    junk(n.index.clone()).await;
    assert!(
      c.store.delete(&d).await.expect("delete"),
      "delete() beside an index of another type"
    );
    assert_eq!(c.value(&d).await, None);
    junk(n.lease.clone()).await;
    junk(n.index.clone()).await;
    c.clear().await;
    c.locked(&d, lease, Duration::ZERO, false, "after clear()").await;
  });
}
