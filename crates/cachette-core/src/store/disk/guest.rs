//! The guest's side of the socket: a guest counts as joined only once the owner answered it,
//! and a broken connection is always `StoreUnavailable`, the error that makes it elect again.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use super::ipc;
use super::peer::foreign_peer;
use super::{Conn, Inner};
use crate::error::{CoreError, CoreResult};

/// Joins the owner of `dir`. Returns once the owner has answered a first request: by then it
/// takes byte-range locks for its own claims too (see [`Inner::share_locks`]). `None` when no
/// owner answers.
///
/// # Errors
/// `StoreUnavailable` when the socket's listener is another user's process: this one's entries
/// are never sent to it.
pub(super) fn guest(inner: &Inner) -> CoreResult<Option<Conn>> {
  inner.shared_locks.store(true, Ordering::SeqCst);
  let Ok(stream) = UnixStream::connect(&inner.socket) else {
    return Ok(None);
  };
  if let Some(why) = foreign_peer(&stream) {
    return Err(CoreError::StoreUnavailable {
      path: inner.path.clone(),
      reason: format!("refusing the owner's socket {}: {why}", inner.socket.display()),
    });
  }
  let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
  let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
  let stream = Mutex::new(stream);
  if request(&stream, &probe()).is_err() {
    return Ok(None);
  }
  Ok(Some(Conn::Guest { stream }))
}

/// A request that only checks the owner answers: the size of namespace 0, which no function uses.
pub(super) fn probe() -> Vec<u8> {
  let mut body = vec![ipc::OP_COUNT];
  body.extend_from_slice(&[0u8; 8]);
  body
}

/// One request/response round trip to the owner. A broken connection is `StoreUnavailable`.
pub(super) fn request(stream: &Mutex<UnixStream>, body: &[u8]) -> CoreResult<Vec<u8>> {
  let mut s = stream.lock();
  let lost = |e: std::io::Error| CoreError::StoreUnavailable {
    path: PathBuf::from("owner"),
    reason: e.to_string(),
  };
  ipc::write_frame(&mut *s, body).map_err(lost)?;
  match ipc::read_frame(&mut *s).map_err(lost)? {
    Some(r) => Ok(r),
    None => Err(CoreError::StoreUnavailable {
      path: PathBuf::from("owner"),
      reason: "the owner closed the connection".into(),
    }),
  }
}
