//! Wake-ups of the waiters in this process: one `Notify` per namespace and key that someone
//! waits on, dropped with its last waiter, so settling a key wakes exactly that key's waiters.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// A namespace id and a key: what a settled key is announced by.
type KeyOf = ([u8; 8], [u8; 16]);

/// Wake-ups of waiters in this process, by namespace and key.
#[derive(Default)]
pub(crate) struct Wakeups {
  waiting: Mutex<HashMap<KeyOf, Weak<Notify>>>,
}

impl Wakeups {
  pub(super) fn register(&self, ns: [u8; 8], key: [u8; 16]) -> Arc<Notify> {
    let mut w = self.waiting.lock();
    if let Some(n) = w.get(&(ns, key)).and_then(Weak::upgrade) {
      return n;
    }
    if w.len() > 1024 {
      w.retain(|_, n| n.strong_count() > 0);
    }
    let n = Arc::new(Notify::new());
    w.insert((ns, key), Arc::downgrade(&n));
    n
  }

  /// Wakes the waiters of one key (a notification arrived, or this process settled it).
  pub(crate) fn wake(&self, ns: [u8; 8], key: [u8; 16]) {
    let n = self.waiting.lock().get(&(ns, key)).and_then(Weak::upgrade);
    if let Some(n) = n {
      n.notify_waiters();
    }
  }

  /// Wakes every waiter (a clear, or the notification channel was lost and reconnected).
  pub(crate) fn wake_all(&self) {
    let all: Vec<Arc<Notify>> = self.waiting.lock().values().filter_map(Weak::upgrade).collect();
    for n in all {
      n.notify_waiters();
    }
  }
}
