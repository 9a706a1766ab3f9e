//! Cross-process calculation locks: kernel byte-range locks on one file in the cache directory,
//! one byte per key. The kernel drops a lock when its holder dies, so a killed process never
//! leaves a stale lock behind. Linux uses open-file-description locks (`F_OFD_SETLK`); other
//! Unix systems use classic `fcntl` locks, which are per process — safe here because the
//! in-process single flight admits one claimant per key, and the descriptor stays open for
//! the life of the store. Elsewhere locks are granted locally only (no cross-process dedupe).

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{CoreError, CoreResult};
use crate::key::Digest;

/// The lock file of one cache directory.
pub struct FileLocks {
  #[cfg_attr(not(unix), allow(dead_code))]
  file: File,
}

/// Offset of `digest`'s lock byte: 62 bits of the digest, so offsets stay valid `off_t`s.
pub fn offset_of(digest: &Digest) -> i64 {
  let mut b = [0u8; 8];
  b.copy_from_slice(&digest[..8]);
  (u64::from_be_bytes(b) & 0x3fff_ffff_ffff_ffff) as i64
}

impl FileLocks {
  /// Opens (creating 0600) the lock file at `path`.
  ///
  /// # Errors
  /// `StoreUnavailable` when the file cannot be opened.
  pub fn open(path: &Path) -> CoreResult<Self> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
      use std::os::unix::fs::OpenOptionsExt;
      o.mode(0o600).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW);
    }
    let file = o.open(path).map_err(|e| CoreError::StoreUnavailable {
      path: path.to_owned(),
      reason: format!("lock file: {e}"),
    })?;
    Ok(FileLocks { file })
  }

  /// Tries to take the lock byte of `digest` without blocking. `Ok(false)`: another process holds it.
  ///
  /// # Errors
  /// `Io` when the kernel refuses for another reason than contention.
  pub fn try_lock(&self, digest: &Digest) -> CoreResult<bool> {
    self.op(offset_of(digest), true)
  }

  /// Releases the lock byte of `digest`.
  pub fn unlock(&self, digest: &Digest) {
    let _ = self.op(offset_of(digest), false);
  }

  /// Tries to take the lock byte at `offset` (offsets from 2^62 up are free for other uses).
  ///
  /// # Errors
  /// `Io` when the kernel refuses for another reason than contention.
  pub fn try_lock_at(&self, offset: i64) -> CoreResult<bool> {
    self.op(offset, true)
  }

  /// Releases the lock byte at `offset`.
  pub fn unlock_at(&self, offset: i64) {
    let _ = self.op(offset, false);
  }

  #[cfg(unix)]
  fn op(&self, offset: i64, lock: bool) -> CoreResult<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock is plain old data; zeroed is a valid value before the fields are set.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = offset as _;
    fl.l_len = 1;
    #[cfg(target_os = "linux")]
    let cmd = libc::F_OFD_SETLK;
    #[cfg(not(target_os = "linux"))]
    let cmd = libc::F_SETLK;
    // SAFETY: the descriptor is open for our lifetime and `fl` is a valid flock.
    let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &mut fl) };
    if rc == 0 {
      return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
      Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
      _ => Err(CoreError::io(format!("byte-range lock: {err}"))),
    }
  }

  #[cfg(not(unix))]
  fn op(&self, _offset: i64, _lock: bool) -> CoreResult<bool> {
    Ok(true)
  }
}

#[cfg(all(test, unix))]
mod tests {
  use super::*;

  #[test]
  fn a_lock_byte_is_exclusive_between_descriptors_and_released_on_unlock() {
    let dir = crate::test_dir::TempDir::new();
    let p = dir.path().join("locks");
    let a = FileLocks::open(&p).unwrap();
    let b = FileLocks::open(&p).unwrap();
    let k1 = [1u8; 32];
    let k2 = [2u8; 32];
    assert!(a.try_lock(&k1).unwrap());
    #[cfg(target_os = "linux")]
    assert!(!b.try_lock(&k1).unwrap(), "second descriptor got a held lock");
    assert!(b.try_lock(&k2).unwrap(), "an unrelated key was blocked");
    a.unlock(&k1);
    assert!(b.try_lock(&k1).unwrap());
  }

  #[cfg(target_os = "linux")]
  #[test]
  fn closing_the_holder_releases_its_locks() {
    let dir = crate::test_dir::TempDir::new();
    let p = dir.path().join("locks");
    let a = FileLocks::open(&p).unwrap();
    let b = FileLocks::open(&p).unwrap();
    assert!(a.try_lock(&[5u8; 32]).unwrap());
    assert!(!b.try_lock(&[5u8; 32]).unwrap());
    drop(a);
    assert!(b.try_lock(&[5u8; 32]).unwrap());
  }
}
