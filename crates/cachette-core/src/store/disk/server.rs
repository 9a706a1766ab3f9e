//! The owner's side of the socket: a guest's writes go through the owner's own queue, so they
//! are ordered with the owner's writes, and locks are shared before a guest's first answer.
//! A guest's write is acknowledged only once it is applied; a closing owner that can no longer
//! apply it hangs up instead of answering, so the guest sends it to the next owner.

use std::fs;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

use super::directory::socket_path;
use super::ipc::{self, Cursor, WriteOp};
use super::layout::StoreKey;
use super::queue::Job;
use super::read::count_local;
use super::{unavailable, Conn, Inner};
use crate::error::{CoreError, CoreResult};

/// The owner's side: accepts guests and answers their requests.
pub(super) struct Server {
  socket: PathBuf,
  stop: Arc<AtomicBool>,
  peers: Arc<Mutex<Vec<UnixStream>>>,
  listener_fd: i32,
}

impl Server {
  pub(super) fn start(inner: &Arc<Inner>) -> CoreResult<Server> {
    let socket = socket_path(&inner.path);
    // We hold the LOCK, so any socket file left here belongs to a dead owner.
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| unavailable(&inner.path, format!("owner socket: {e}")))?;
    #[cfg(unix)]
    {
      use std::os::unix::fs::PermissionsExt;
      let _ = fs::set_permissions(&socket, fs::Permissions::from_mode(0o600));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let peers: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
    // Server threads find the database in the connection at each request, so closing the
    // store, or opening its database again, is never held up by them.
    let weak = Arc::downgrade(inner);
    let (stop2, peers2) = (stop.clone(), peers.clone());
    let listener_fd = {
      use std::os::unix::io::AsRawFd;
      listener.as_raw_fd()
    };
    thread::Builder::new()
      .name("cachette-disk-owner".into())
      .spawn(move || {
        for stream in listener.incoming() {
          if stop2.load(Ordering::SeqCst) {
            break;
          }
          let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10));
            continue;
          };
          if let Ok(clone) = stream.try_clone() {
            peers2.lock().push(clone);
          }
          // Before the guest's first request is answered: from now on it may contend.
          if let Some(inner) = weak.upgrade() {
            inner.share_locks();
          }
          let weak = weak.clone();
          let _ = thread::Builder::new()
            .name("cachette-disk-guest".into())
            .spawn(move || serve(weak, stream));
        }
      })
      .map_err(|e| unavailable(&inner.path, e))?;
    Ok(Server {
      socket,
      stop,
      peers,
      listener_fd,
    })
  }

  /// Stops serving without waiting for the accept thread: it wakes (listener shut down, or a
  /// last connection) and exits on its own. Waiting could hang if the socket file was removed.
  pub(super) fn stop(&self) {
    self.stop.store(true, Ordering::SeqCst);
    // SAFETY: the fd belongs to the listener, which the accept thread owns until it exits;
    // shutdown only makes its blocked accept return.
    unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
    let _ = UnixStream::connect(&self.socket);
    for p in self.peers.lock().drain(..) {
      let _ = p.shutdown(std::net::Shutdown::Both);
    }
    let _ = fs::remove_file(&self.socket);
  }
}

fn serve(inner: Weak<Inner>, mut stream: UnixStream) {
  while let Ok(Some(body)) = ipc::read_frame(&mut stream) {
    let Some(inner) = inner.upgrade() else { break };
    // `None`: this owner is closing and cannot answer; hanging up makes the guest elect the
    // next owner and ask it.
    let Some(resp) = inner.answer(&body) else { break };
    drop(inner);
    if ipc::write_frame(&mut stream, &resp).is_err() {
      break;
    }
  }
  // A malformed frame, or a closing owner, ends the conversation: close it so the guest sees
  // it at once (the owner keeps a clone of every stream for its own shutdown).
  let _ = stream.shutdown(std::net::Shutdown::Both);
}

impl Inner {
  fn answer(&self, body: &[u8]) -> Option<Vec<u8>> {
    match self.try_answer(body) {
      Ok(r) => Some(r),
      Err(CoreError::Closed) => None,
      Err(e) => Some(ipc::error_response(&e)),
    }
  }

  fn try_answer(&self, body: &[u8]) -> CoreResult<Vec<u8>> {
    let mut c = Cursor::new(body);
    let op = c.u8()?;
    if op == ipc::OP_WRITE {
      let (ops, sync) = ipc::decode_write(&mut c)?;
      // Through this owner's own queue, so a guest's writes and clears are ordered with the
      // owner's queued writes (a clear is never undone by an older queued put).
      return self.apply_for_guest(ops, sync).map(|()| vec![ipc::ST_OK]);
    }
    let conn = self.conn.read();
    let Some(Conn::Owner { db, .. }) = &*conn else {
      return Err(CoreError::Closed);
    };
    match op {
      ipc::OP_GET => {
        let key = c.rest();
        let queued = StoreKey::try_from(key).ok().and_then(|k| self.queued_value(&k));
        let found = match queued {
          Some(v) => v.map(|v| v.to_vec()),
          None => db.get(key).map_err(CoreError::io)?,
        };
        Ok(match found {
          Some(v) => {
            let mut r = Vec::with_capacity(v.len() + 1);
            r.push(ipc::ST_FOUND);
            r.extend_from_slice(&v);
            r
          }
          None => vec![ipc::ST_OK],
        })
      }
      ipc::OP_COUNT => {
        let ns: [u8; 8] = c.take(8)?.try_into().map_err(CoreError::io)?;
        let mut r = vec![ipc::ST_OK];
        r.extend_from_slice(&count_local(db, ns).to_be_bytes());
        Ok(r)
      }
      _ => Err(CoreError::io("unknown request")),
    }
  }

  /// Queues a guest's operations behind this owner's own, then waits until they are applied:
  /// `Closed` if this owner is closing and refused some (the guest sends them all again to the
  /// next owner), `Io` if one of them could not be applied.
  fn apply_for_guest(&self, ops: Vec<WriteOp>, sync: bool) -> CoreResult<()> {
    let bad_key = || CoreError::io("malformed key from a guest");
    let first = self.queue.queued.load(Ordering::SeqCst);
    for op in ops {
      match op {
        WriteOp::Put(k, v) => {
          self.enqueue_write(k.as_slice().try_into().map_err(|_| bad_key())?, Some(v.into()), None)?;
        }
        WriteOp::Delete(k) => {
          self.enqueue_write(k.as_slice().try_into().map_err(|_| bad_key())?, None, None)?;
        }
        WriteOp::DeleteRange(from, to) => {
          self.enqueue_range(from, to)?;
        }
      }
    }
    let target = if sync {
      self.send(|seq| Job::Sync { seq })?
    } else {
      self.queue.queued.load(Ordering::SeqCst)
    };
    // The other jobs queued meanwhile (from `first`) count too: a failure among them may fail
    // this request needlessly, never the reverse.
    // The reason alone: the guest says which of its writes it was.
    self.wait_applied(first, target).map_err(CoreError::io)
  }
}
