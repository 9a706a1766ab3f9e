//! A cache directory is this user's alone: directories others may write in or another user owns
//! are refused, so are other users' symbolic links and socket directories, and what the store
//! creates is 0600 (directories 0700). The tests run as root, and make files of uid 65534.

use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use super::{digest, NS};
use crate::envelope::Times;
use crate::error::CoreError;
use crate::store::disk::private::{private_dir, restrict_files};
use crate::store::disk::{Conn, DiskStore, Role};
use crate::store::Store;

const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
  fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
  fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// The reason of a refusal, which must be `StoreUnavailable`.
fn refusal(r: Result<std::sync::Arc<DiskStore>, CoreError>) -> String {
  match r {
    Err(CoreError::StoreUnavailable { reason, .. }) => reason,
    Err(e) => panic!("refused with {e:?}"),
    Ok(_) => panic!("opened"),
  }
}

fn root_only() -> bool {
  // SAFETY: geteuid has no preconditions.
  let root = unsafe { libc::geteuid() } == 0;
  if !root {
    eprintln!("skipped: needs root to make files of another user");
  }
  root
}

#[test]
fn a_directory_others_may_write_in_is_refused_and_one_they_may_only_read_is_made_private() {
  let dir = crate::test_dir::TempDir::new();
  let open = dir.path().join("open");
  fs::create_dir(&open).unwrap();
  chmod(&open, 0o777);
  let why = refusal(DiskStore::open(&open));
  assert!(why.contains("mode 0777") && why.contains("chmod 700"), "{why}");
  assert!(
    fs::read_dir(&open).unwrap().next().is_none(),
    "a file was created in it"
  );
  chmod(&open, 0o770);
  refusal(DiskStore::open(&open));
  let readable = dir.path().join("readable");
  fs::create_dir(&readable).unwrap();
  chmod(&readable, 0o755);
  DiskStore::open(&readable).unwrap();
  assert_eq!(mode(&readable), 0o700);
}

#[test]
fn a_directory_of_another_user_is_refused() {
  if !root_only() {
    return;
  }
  let dir = crate::test_dir::TempDir::new();
  let theirs = dir.path().join("theirs");
  fs::create_dir(&theirs).unwrap();
  chmod(&theirs, 0o700);
  lchown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
  let why = refusal(DiskStore::open(&theirs));
  assert!(why.contains("uid 65534"), "{why}");
  assert!(
    fs::read_dir(&theirs).unwrap().next().is_none(),
    "a file was created in it"
  );
}

#[test]
fn a_symbolic_link_of_ours_is_followed_and_one_of_another_user_is_refused() {
  if !root_only() {
    return;
  }
  let dir = crate::test_dir::TempDir::new();
  let target = dir.path().join("target");
  fs::create_dir(&target).unwrap();
  let ours = dir.path().join("ours");
  symlink(&target, &ours).unwrap();
  let s = DiskStore::open(&ours.join("cache")).unwrap();
  assert_eq!(s.path(), fs::canonicalize(&target).unwrap().join("cache"));
  s.close();
  drop(s);
  // Another user's link, here or further up the path, could point anywhere: nothing is written.
  let elsewhere = dir.path().join("elsewhere");
  fs::create_dir(&elsewhere).unwrap();
  let theirs = dir.path().join("theirs");
  symlink(&elsewhere, &theirs).unwrap();
  lchown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
  let why = refusal(DiskStore::open(&theirs));
  assert!(why.contains("symbolic link") && why.contains("uid 65534"), "{why}");
  refusal(DiskStore::open(&theirs.join("deeper").join("cache")));
  // A link of ours to theirs is refused too: every link on the way is checked.
  let chained = dir.path().join("chained");
  symlink(&theirs, &chained).unwrap();
  refusal(DiskStore::open(&chained));
  assert!(
    fs::read_dir(&elsewhere).unwrap().next().is_none(),
    "a file was written through the link"
  );
}

#[test]
fn the_database_files_the_directories_and_the_socket_are_private() {
  let dir = crate::test_dir::TempDir::new();
  let path = dir.path().join("cache");
  {
    let s = DiskStore::open(&path).unwrap();
    for i in 0..2000 {
      s.put(NS, &digest(i), &[7u8; 100], Times::forever(1)).unwrap();
    }
    s.flush(true).unwrap();
    // Files RocksDB creates later (SST files of a flush) are private too.
    match &*s.inner.conn.read() {
      Some(Conn::Owner { db, .. }) => db.flush().unwrap(),
      _ => panic!("not the owner"),
    }
    let mut seen = 0;
    for entry in fs::read_dir(&path).unwrap().flatten() {
      let m = mode(&entry.path());
      let want = if entry.file_type().unwrap().is_dir() {
        0o700
      } else {
        0o600
      };
      assert_eq!(m, want, "{:?} is {m:04o}", entry.file_name());
      seen += 1;
    }
    assert!(seen >= 8, "only {seen} files");
    assert_eq!(mode(&path.join(".owner.sock")), 0o600);
    assert!(path.join(".owner.sock").exists());
  }
  assert_eq!(mode(&path), 0o700);
}

#[test]
fn files_left_open_to_others_are_made_private_when_a_process_owns_the_directory() {
  let dir = crate::test_dir::TempDir::new();
  let path = dir.path().join("cache");
  DiskStore::open(&path).unwrap().close();
  let current = path.join("CURRENT");
  chmod(&current, 0o644);
  fs::create_dir(path.join(".corrupt-1")).unwrap();
  chmod(&path.join(".corrupt-1"), 0o755);
  let s = DiskStore::open(&path).unwrap();
  assert_eq!(s.role(), Role::Owner);
  assert_eq!(mode(&current), 0o600);
  assert_eq!(mode(&path.join(".corrupt-1")), 0o700);
  // The sweep itself: files and directories, at any depth, and never through a link.
  let loose = dir.path().join("loose");
  fs::create_dir_all(loose.join("lost")).unwrap();
  fs::write(loose.join("lost").join("000001.sst"), b"x").unwrap();
  chmod(&loose.join("lost").join("000001.sst"), 0o666);
  let outside = dir.path().join("outside");
  fs::write(&outside, b"x").unwrap();
  chmod(&outside, 0o644);
  symlink(&outside, loose.join("link")).unwrap();
  restrict_files(&loose);
  assert_eq!(mode(&loose.join("lost").join("000001.sst")), 0o600);
  assert_eq!(mode(&outside), 0o644, "a link was followed");
}

#[test]
fn the_socket_directory_is_refused_unless_it_is_a_directory_of_ours_that_no_one_else_may_enter() {
  let base = crate::test_dir::TempDir::new();
  // SAFETY: geteuid has no preconditions.
  let name = format!("cachette-{}", unsafe { libc::geteuid() });
  let made = private_dir(base.path()).unwrap();
  assert_eq!(made, base.path().join(&name));
  assert_eq!(mode(&made), 0o700);
  chmod(&made, 0o777);
  let why = private_dir(base.path()).unwrap_err();
  assert!(why.contains("mode 0777"), "{why}");
  chmod(&made, 0o701);
  private_dir(base.path()).unwrap_err();
  fs::remove_dir(&made).unwrap();
  let real = base.path().join("real");
  fs::create_dir(&real).unwrap();
  chmod(&real, 0o700);
  symlink(&real, &made).unwrap();
  let why = private_dir(base.path()).unwrap_err();
  assert!(why.contains("symbolic link"), "{why}");
  if root_only() {
    fs::remove_file(&made).unwrap();
    fs::create_dir(&made).unwrap();
    chmod(&made, 0o700);
    lchown(&made, Some(NOBODY), Some(NOBODY)).unwrap();
    let why = private_dir(base.path()).unwrap_err();
    assert!(why.contains("uid 65534"), "{why}");
  }
}

#[test]
fn a_guest_refuses_an_owner_socket_of_another_user_and_sends_it_nothing() {
  if !root_only() {
    return;
  }
  let dir = crate::test_dir::TempDir::new();
  let owner = DiskStore::open(dir.path()).unwrap();
  let real = fs::canonicalize(dir.path()).unwrap();
  // A listener of another user in the owner's place (only root, or this user, could put it there).
  let squat = crate::test_dir::TempDir::new();
  chmod(squat.path(), 0o777);
  let child = std::process::Command::new("python3")
    .args([
      "-c",
      "import socket,sys,os;s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen(8);print('up',flush=True);\
       c,_=s.accept();d=c.recv(65536);print(len(d),flush=True)",
    ])
    .arg(squat.path().join("s.sock"))
    .uid(NOBODY)
    .stdout(std::process::Stdio::piped())
    .spawn();
  let Ok(mut child) = child else {
    eprintln!("skipped: no python3");
    return;
  };
  use std::io::BufRead;
  let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
  let mut line = String::new();
  out.read_line(&mut line).unwrap();
  assert_eq!(line.trim(), "up");
  fs::rename(squat.path().join("s.sock"), real.join(".owner.sock")).unwrap();
  let guest = DiskStore::start(real.clone(), crate::clock::system());
  let why = match guest {
    Err(CoreError::StoreUnavailable { reason, .. }) => reason,
    Err(e) => panic!("{e:?}"),
    Ok(_) => panic!("joined another user's socket"),
  };
  assert!(why.contains("uid 65534"), "{why}");
  line.clear();
  out.read_line(&mut line).unwrap();
  assert_eq!(line.trim(), "0", "bytes the other user's listener received");
  let _ = child.wait();
  drop(owner);
}

#[test]
fn an_owner_serves_no_process_of_another_user() {
  if !root_only() {
    return;
  }
  let dir = crate::test_dir::TempDir::new();
  let owner = DiskStore::open(dir.path()).unwrap();
  let socket = fs::canonicalize(dir.path()).unwrap().join(".owner.sock");
  // Another user reaches the owner's socket through a link to it (only root could make one).
  let door = crate::test_dir::TempDir::new();
  chmod(door.path(), 0o755);
  fs::hard_link(&socket, door.path().join("s.sock")).unwrap();
  chmod(&socket, 0o666);
  let out = std::process::Command::new("python3")
    .args([
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ntry:\n  \
       s.sendall(bytes([0,0,0,9,3,0,0,0,0,0,0,0,0]))\n  n=len(s.recv(64))\nexcept OSError:\n  n=0\nprint(n)",
    ])
    .arg(door.path().join("s.sock"))
    .uid(NOBODY)
    .output();
  chmod(&socket, 0o600);
  let Ok(out) = out else {
    eprintln!("skipped: no python3");
    return;
  };
  // The request is a probe (the size of namespace 0); an answer would be 13 bytes.
  assert_eq!(
    String::from_utf8_lossy(&out.stdout).trim(),
    "0",
    "{}",
    String::from_utf8_lossy(&out.stderr)
  );
  assert_eq!(owner.role(), Role::Owner);
}
