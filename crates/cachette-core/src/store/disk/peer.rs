//! Who is at the other end of the owner's socket. Both sides ask the kernel (`SO_PEERCRED`,
//! `getpeereid`) and talk only to a process of their own user: a guest never sends its entries
//! to a listener of another user, and the owner never serves one. That holds even if the socket
//! file itself was replaced, wherever it lives.

use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

use super::private::euid;

/// The effective user id of the process at the other end of `stream` (as of its connect or listen).
///
/// # Errors
/// The kernel's, when the socket cannot tell.
pub(super) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
  #[cfg(any(target_os = "linux", target_os = "android"))]
  {
    // SAFETY: ucred is plain old data; the kernel fills at most `len` bytes of it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the descriptor is open for the borrow of `stream`, `cred` and `len` are valid.
    let rc = unsafe {
      libc::getsockopt(
        stream.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_PEERCRED,
        std::ptr::from_mut(&mut cred).cast(),
        &mut len,
      )
    };
    if rc != 0 {
      return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
  }
  #[cfg(not(any(target_os = "linux", target_os = "android")))]
  {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: the descriptor is open for the borrow of `stream`; uid and gid are valid.
    if unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) } != 0 {
      return Err(io::Error::last_os_error());
    }
    Ok(uid)
  }
}

/// `None` when the process at the other end of `stream` is of this user, else why not.
pub(super) fn foreign_peer(stream: &UnixStream) -> Option<String> {
  match peer_uid(stream) {
    Ok(uid) if uid == euid() => None,
    Ok(uid) => Some(format!(
      "its process runs as uid {uid}, not as this user (uid {})",
      euid()
    )),
    Err(e) => Some(format!("its user cannot be checked: {e}")),
  }
}
