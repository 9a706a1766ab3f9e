//! The cache directory's files: the directory and the socket's fallback directory are private
//! to this user (see [`private`](super::private)), and damaged files are set aside, never deleted.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::private::{check_private, private_dir, resolve, restrict_new_files};
use super::unavailable;
use crate::clock::{Clock, SystemClock};
use crate::error::CoreResult;

/// The real path of the cache directory `path`, created 0700 (parents included, umask-proof) if
/// it does not exist, once it is known to be private to this user.
///
/// # Errors
/// `StoreUnavailable` saying what is wrong: a symbolic link of another user on the path, a
/// directory of another user or one others may write in, or one that cannot be created.
pub(super) fn prepare_dir(path: &Path) -> CoreResult<PathBuf> {
  let mut real = resolve(path).map_err(|e| unavailable(path, e))?;
  if fs::symlink_metadata(&real).is_err() {
    fs::DirBuilder::new()
      .recursive(true)
      .mode(0o700)
      .create(&real)
      .map_err(|e| unavailable(path, format!("cannot create the directory: {e}")))?;
    // Resolved again: another process may have made any part of it meanwhile.
    real = resolve(path).map_err(|e| unavailable(path, e))?;
  }
  check_private(&real).map_err(|e| unavailable(path, e))?;
  restrict_new_files(&real);
  Ok(real)
}

/// Where the owner of `dir` listens: `.owner.sock` in it, or, when that path is too long for a
/// Unix socket (about 104 bytes), a socket named by the directory's hash in this user's private
/// directory under the temporary directory.
///
/// # Errors
/// `StoreUnavailable` when that private directory is not this user's alone.
pub(super) fn socket_path(dir: &Path) -> CoreResult<PathBuf> {
  let p = dir.join(".owner.sock");
  if p.as_os_str().len() < 100 {
    return Ok(p);
  }
  let hash = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
  let base = private_dir(&std::env::temp_dir()).map_err(|e| {
    unavailable(
      dir,
      format!("its path is too long for the owner's socket to live in it, and {e}"),
    )
  })?;
  Ok(base.join(format!("{}.sock", &hash[..24])))
}

/// Moves the files of `dir` that `pick` names into a new `.corrupt-<time>` directory beside them.
fn set_aside(dir: &Path, pick: impl Fn(&str) -> bool) -> CoreResult<PathBuf> {
  let aside = dir.join(format!(".corrupt-{}", SystemClock.now_ms()));
  fs::DirBuilder::new()
    .recursive(true)
    .mode(0o700)
    .create(&aside)
    .map_err(|e| unavailable(dir, e))?;
  for entry in fs::read_dir(dir).map_err(|e| unavailable(dir, e))?.flatten() {
    let name = entry.file_name();
    if pick(&name.to_string_lossy()) {
      fs::rename(entry.path(), aside.join(&name)).map_err(|e| unavailable(dir, format!("cannot set aside: {e}")))?;
    }
  }
  Ok(aside)
}

/// Sets the whole database aside, so that a fresh one is created in its place.
pub(super) fn quarantine(dir: &Path) -> CoreResult<()> {
  set_aside(dir, |name| {
    !(name.starts_with(".corrupt-") || name == ".locks" || name == ".owner.sock")
  })
  .map(drop)
}

/// Sets aside one file of the database (RocksDB's `LOCK` when something else took its name).
pub(super) fn set_aside_one(dir: &Path, file: &str) -> CoreResult<()> {
  set_aside(dir, |name| name == file).map(drop)
}
