//! The process's one subscriber per Redis server: each settle message wakes the waiters of its key
//! here, and every (re)connection wakes all of them, so a lost message only delays a waiter's next look.

use std::time::Duration;

use futures_util::StreamExt;

use super::keys::parse_message;
use crate::store::remote::Wakeups;

/// The process's subscriber: wakes waiters on every settled key, reconnecting with backoff for
/// as long as the server is open. Waiters poll as well, so a lost message only delays them.
/// Connecting and subscribing are bounded by `timeout` (a silent server is retried later).
pub(super) async fn listen(url: String, channel: String, wakeups: std::sync::Weak<Wakeups>, timeout: Duration) {
  let mut backoff = Duration::from_millis(50);
  loop {
    let session = async {
      let client = redis::Client::open(url.as_str())?;
      let mut ps = client.get_async_pubsub().await?;
      ps.subscribe(&channel).await?;
      Ok::<_, redis::RedisError>(ps)
    };
    if let Ok(Ok(ps)) = tokio::time::timeout(timeout, session).await {
      backoff = Duration::from_millis(50);
      // Keys settled while this process was not listening: let every waiter look again.
      if let Some(w) = wakeups.upgrade() {
        w.wake_all();
      }
      let mut stream = ps.into_on_message();
      while let Some(msg) = stream.next().await {
        let Some(w) = wakeups.upgrade() else { return };
        if let Some((ns, key)) = parse_message(msg.get_payload_bytes()) {
          w.wake(ns, key);
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
