//! The cache directory's files: the directory and the socket's fallback directory are private
//! to this user (0700), and a damaged database is set aside, never deleted.

use std::fs;
use std::path::{Path, PathBuf};

use super::unavailable;
use crate::clock::{Clock, SystemClock};
use crate::error::CoreResult;

/// Creates the directory 0700 (umask-proof) if it does not exist.
pub(super) fn prepare_dir(path: &Path) -> CoreResult<PathBuf> {
  if !path.exists() {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
      use std::os::unix::fs::DirBuilderExt;
      // Every directory created here, parents included, is private to this user.
      builder.mode(0o700);
    }
    builder
      .create(path)
      .map_err(|e| unavailable(path, format!("cannot create the directory: {e}")))?;
    #[cfg(unix)]
    {
      use std::os::unix::fs::PermissionsExt;
      fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|e| unavailable(path, e))?;
    }
  }
  let real = fs::canonicalize(path).map_err(|e| unavailable(path, e))?;
  if !real.is_dir() {
    return Err(unavailable(path, "not a directory"));
  }
  Ok(real)
}

pub(super) fn socket_path(dir: &Path) -> PathBuf {
  let p = dir.join(".owner.sock");
  if p.as_os_str().len() < 100 {
    return p;
  }
  // Unix socket paths are limited to ~104 bytes: use a short per-user directory instead.
  let hash = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
  let base = std::env::temp_dir().join(format!("cachette-{}", unsafe { libc::getuid() }));
  let _ = fs::create_dir_all(&base);
  #[cfg(unix)]
  {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o700));
  }
  base.join(format!("{}.sock", &hash[..24]))
}

pub(super) fn quarantine(dir: &Path) -> CoreResult<()> {
  let stamp = SystemClock.now_ms();
  let aside = dir.join(format!(".corrupt-{stamp}"));
  fs::create_dir_all(&aside).map_err(|e| unavailable(dir, e))?;
  for entry in fs::read_dir(dir).map_err(|e| unavailable(dir, e))?.flatten() {
    let name = entry.file_name();
    let s = name.to_string_lossy();
    if s.starts_with(".corrupt-") || s == ".locks" || s == ".owner.sock" {
      continue;
    }
    let _ = fs::rename(entry.path(), aside.join(&name));
  }
  Ok(())
}
