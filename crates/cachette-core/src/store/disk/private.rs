//! What keeps a cache directory this user's alone, so that another local user can neither read
//! cached values, nor plant or replace files, nor listen in the owner's place:
//!
//! * every symbolic link on its path belongs to this user or to root (another user's link could
//!   point anywhere, and the cache would write there);
//! * the directory belongs to this user and no one else may write in it (refused otherwise);
//!   one that others may only read or enter is made 0700;
//! * what is created in it is 0600 (directories 0700), whatever mode RocksDB asks for (0644);
//! * the socket's fallback directory is this user's, a real directory, and closed to others.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// This process's effective user id: the owner of every file of its cache directories.
pub(super) fn euid() -> u32 {
  // SAFETY: geteuid cannot fail and has no preconditions.
  unsafe { libc::geteuid() }
}

/// Most symbolic links followed while resolving one path (Linux's own limit).
const MAX_LINKS: u32 = 40;

enum Part {
  Root,
  Parent,
  Name(OsString),
}

/// The parts of `path` in the order they are walked, last first (a stack).
fn stack_of(path: &Path) -> Vec<Part> {
  let mut parts: Vec<Part> = path
    .components()
    .filter_map(|c| match c {
      Component::RootDir | Component::Prefix(_) => Some(Part::Root),
      Component::ParentDir => Some(Part::Parent),
      Component::Normal(n) => Some(Part::Name(n.to_owned())),
      Component::CurDir => None,
    })
    .collect();
  parts.reverse();
  parts
}

/// `path` made absolute with every symbolic link on it resolved, as `canonicalize` does, but
/// refusing a link that belongs to a user other than this one or root. Parts that do not exist
/// yet are kept as they are (the caller creates them, then resolves again).
///
/// # Errors
/// Why the path is refused or could not be read, as a sentence.
pub(super) fn resolve(path: &Path) -> Result<PathBuf, String> {
  let abs = std::path::absolute(path).map_err(|e| e.to_string())?;
  let mut todo = stack_of(&abs);
  let mut real = PathBuf::from("/");
  let mut links = 0;
  while let Some(part) = todo.pop() {
    let name = match part {
      Part::Root => {
        real = PathBuf::from("/");
        continue;
      }
      Part::Parent => {
        // `real` has no links left in it, so its parent is the lexical one.
        real.pop();
        continue;
      }
      Part::Name(n) => n,
    };
    let next = real.join(&name);
    let meta = match fs::symlink_metadata(&next) {
      Ok(m) => m,
      Err(e) if e.kind() == io::ErrorKind::NotFound => {
        real = next;
        continue;
      }
      Err(e) => return Err(format!("cannot read {}: {e}", next.display())),
    };
    if !meta.file_type().is_symlink() {
      real = next;
      continue;
    }
    if meta.uid() != euid() && meta.uid() != 0 {
      return Err(format!(
        "{} is a symbolic link that belongs to uid {}, not to this user (uid {}): its owner could point it at any \
         directory; use the real path, or a link of your own",
        next.display(),
        meta.uid(),
        euid()
      ));
    }
    links += 1;
    if links > MAX_LINKS {
      return Err(format!("too many levels of symbolic links at {}", next.display()));
    }
    let target = fs::read_link(&next).map_err(|e| format!("cannot read the link {}: {e}", next.display()))?;
    // A relative target is relative to the link's directory, which `real` is.
    todo.extend(stack_of(&target));
  }
  Ok(real)
}

/// Checks that `dir` is a directory of this user in which no one else may write; one that others
/// may read or enter is made 0700 (it is this user's, and no one else can use a cache in it).
///
/// # Errors
/// What is wrong and how to fix it, as a sentence.
pub(super) fn check_private(dir: &Path) -> Result<(), String> {
  let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
  if !meta.is_dir() {
    return Err("not a directory".into());
  }
  if meta.uid() != euid() {
    return Err(format!(
      "the directory belongs to uid {}, not to this user (uid {}); a cache directory must be private to the user \
       that uses it: use a directory of your own, or `chown` this one",
      meta.uid(),
      euid()
    ));
  }
  let mode = meta.mode() & 0o7777;
  if mode & 0o022 != 0 {
    return Err(format!(
      "other users may write in the directory (mode {mode:04o}), so they could plant or replace its files; make it \
       private with `chmod 700 {}`, or use a new directory",
      dir.display()
    ));
  }
  if mode & 0o077 != 0 {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
      .map_err(|e| format!("cannot make the directory private (mode {mode:04o} lets others read it): {e}"))?;
  }
  Ok(())
}

/// `base/cachette-<euid>`, created 0700, for the owner's socket when the cache directory's path is
/// too long for one. Refused unless it is a real directory of this user that no one else may even
/// enter: another user who created it first could replace the socket and receive the guests'
/// entries.
///
/// # Errors
/// What is wrong and how to fix it, as a sentence.
pub(super) fn private_dir(base: &Path) -> Result<PathBuf, String> {
  let dir = base.join(format!("cachette-{}", euid()));
  match fs::DirBuilder::new().mode(0o700).create(&dir) {
    Ok(()) => {}
    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
    Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
  }
  let meta = fs::symlink_metadata(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
  let fix = "remove it, or set TMPDIR to a directory of your own, or use a shorter cache path";
  let wrong = if meta.file_type().is_symlink() {
    "is a symbolic link".to_owned()
  } else if !meta.is_dir() {
    "is not a directory".to_owned()
  } else if meta.uid() != euid() {
    format!("belongs to uid {}, not to this user (uid {})", meta.uid(), euid())
  } else if meta.mode() & 0o077 != 0 {
    format!("is open to other users (mode {:04o})", meta.mode() & 0o7777)
  } else {
    return Ok(dir);
  };
  Err(format!(
    "the socket directory {} {wrong}, so another user could take the owner's socket over; {fix}",
    dir.display()
  ))
}

/// Makes every file created in `dir` from now on 0600 and every directory 0700, whatever mode its
/// creator asks for (RocksDB asks 0644) and whatever the umask: a default ACL with no entry for
/// the group or others, which the kernel applies to each new file and inherits to new
/// directories. Best effort: on a file system without ACLs, new files keep RocksDB's mode inside
/// the 0700 directory, and [`restrict_files`] tightens them when a process next owns it.
#[cfg(target_os = "linux")]
pub(super) fn restrict_new_files(dir: &Path) {
  use std::os::unix::ffi::OsStrExt;
  // The value of `system.posix_acl_default` (linux/posix_acl_xattr.h): version 2, then entries
  // of tag (u16), permissions (u16) and id (u32), little-endian: the owner (tag 1) rwx, the
  // owning group (tag 4) nothing, others (tag 0x20) nothing; ids unused (-1).
  const ACL: [u8; 28] = [
    2, 0, 0, 0, //
    1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, //
    4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, //
    0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
  ];
  let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
    return;
  };
  // SAFETY: both strings are NUL-terminated and the value is ACL.len() bytes long.
  unsafe {
    libc::setxattr(
      path.as_ptr(),
      c"system.posix_acl_default".as_ptr(),
      ACL.as_ptr().cast(),
      ACL.len(),
      0,
    )
  };
}

#[cfg(not(target_os = "linux"))]
pub(super) fn restrict_new_files(_dir: &Path) {}

/// Makes what `dir` already holds private: files (and sockets) 0600, directories 0700, down to
/// the directories RocksDB and the quarantine make (`lost`, `.corrupt-*`). Links are not
/// followed and files of other users (only root could have put them there) are left alone.
pub(super) fn restrict_files(dir: &Path) {
  let Ok(entries) = fs::read_dir(dir) else { return };
  for entry in entries.flatten() {
    let Ok(meta) = entry.metadata() else { continue };
    if meta.file_type().is_symlink() || meta.uid() != euid() {
      continue;
    }
    let private = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.mode() & 0o7777 != private {
      let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(private));
    }
    if meta.is_dir() {
      restrict_files(&entry.path());
    }
  }
}
