//! `integrityKey` on Redis and every SQL database: entries written with the key carry its MAC,
//! and a keyed store reads forged, swapped and unkeyed entries as counted misses, then takes the
//! lease and overwrites them.

use std::time::Duration;

use super::testing::{on_every_server, spec, Case};
use super::{Acquired, RemoteStore};
use crate::integrity::{IntegrityKey, TAG_LEN};

fn keyed(c: &Case, secret: &str) -> RemoteStore {
  let key = IntegrityKey::derive(format!("{secret:<32}").as_bytes()).expect("key");
  RemoteStore::open(&spec(&c.url), c.ks.id())
    .expect("open")
    .with_integrity(Some(key))
}

#[test]
fn a_keyed_store_reads_its_own_entries_and_rejects_unkeyed_forged_and_swapped_ones() {
  on_every_server("integrity-rejects", |c| async move {
    let s = keyed(&c, "the key");
    let (a, b) = (c.digest("a"), c.digest("b"));
    s.put(&a, b"a's value", c.forever()).await.expect("put");
    assert_eq!(
      s.get(&a).await.expect("get").map(|e| e.1),
      Some(b"a's value".to_vec()),
      "{}",
      c.url
    );
    assert_eq!(
      c.value(&a).await.map(|v| v.len()),
      Some(9 + TAG_LEN),
      "{}: the tag is stored",
      c.url
    );
    assert_eq!(s.take_rejected(), 0);

    c.put(&a, b"unkeyed", c.forever()).await;
    assert_eq!(
      s.get(&a).await.expect("get"),
      None,
      "{}: written without the key",
      c.url
    );
    keyed(&c, "another key")
      .put(&a, b"forged", c.forever())
      .await
      .expect("put");
    assert_eq!(
      s.get(&a).await.expect("get"),
      None,
      "{}: signed with another key",
      c.url
    );
    s.put(&b, b"b's value", c.forever()).await.expect("put");
    let (times, b_payload) = c.get(&b).await.expect("b's entry");
    c.put(&a, &b_payload, times).await;
    assert_eq!(
      s.get(&a).await.expect("get"),
      None,
      "{}: b's entry copied under a",
      c.url
    );
    assert_eq!(s.take_rejected(), 3, "{}", c.url);
  });
}

#[test]
fn acquire_on_a_forged_entry_takes_the_lease_and_the_commit_overwrites_it() {
  on_every_server("integrity-acquire", |c| async move {
    let s = keyed(&c, "the key");
    let d = c.digest("k");
    c.put(&d, b"forged", c.forever()).await;
    let lease = match s
      .acquire(&d, Duration::from_secs(5), Duration::from_secs(5), false)
      .await
    {
      Ok(Acquired::Locked(l)) => l,
      other => panic!("{}: expected the lease, got {other:?}", c.url),
    };
    assert!(s.take_rejected() >= 1, "{}", c.url);
    assert!(s.commit(lease, b"computed", c.forever()).await.expect("commit"));
    assert_eq!(
      s.get(&d).await.expect("get").map(|e| e.1),
      Some(b"computed".to_vec()),
      "{}",
      c.url
    );
  });
}

#[test]
fn a_direct_read_is_checked_for_the_mac_too() {
  on_every_server("integrity-direct", |c| async move {
    let s = keyed(&c, "the key");
    let d = c.digest("k");
    s.put(&d, b"value", c.forever()).await.expect("put");
    let (times, payload) = c.get(&d).await.expect("entry");
    let raw = crate::envelope::seal(&d, times, &payload);
    let (_, range) = s.open_read(&d, &raw).expect("a keyed entry");
    assert_eq!(&raw[range], b"value");
    let unkeyed = crate::envelope::seal(&d, times, b"value");
    assert!(s.open_read(&d, &unkeyed).is_none(), "{}", c.url);
  });
}
