//! What a dotlock file is: its name, its content, how one is made exclusively with its
//! content in place, and how a file at a dotlock's name is inspected (never followed, never
//! read past [`MAX_DOTLOCK_SIZE`] bytes) before anyone may break it.

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, Mode, SFlag};
use rustix::fs as rfs;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use std::time::{Duration, UNIX_EPOCH};

/// Appended to the mailbox path to name its dotlock, as every MDA does.
pub const DOTLOCK_SUFFIX: &str = ".lock";

/// Mode of the dotlocks we create (liblockfile's): the pid inside is for anyone to read.
pub const DOTLOCK_MODE: u32 = 0o644;

/// The largest file that can be a dotlock, in bytes, and all that is ever read of one. We and
/// liblockfile write a pid line (`12345\n`, liblockfile `0\n` without a pid, and it reads
/// back at most 16 bytes), procmail, Postfix, Dovecot and mutt_dotlock an empty file. A larger
/// file at a dotlock's name is somebody's data, never a stale lock.
pub const MAX_DOTLOCK_SIZE: u64 = 64;

/// How a mailbox starts; a file at a dotlock's name that starts so is a mailbox, never a lock.
const MAILBOX_START: &[u8] = b"From ";

/// The path of `mailbox`'s dotlock.
pub fn dotlock_path(mailbox: &Path) -> PathBuf {
    let mut s = mailbox.as_os_str().to_os_string();
    s.push(DOTLOCK_SUFFIX);
    PathBuf::from(s)
}

/// Creates `name` in directory `dir` exclusively, with `content` already in it when the name
/// appears: an unnamed `O_TMPFILE` is written, then linked into place (`linkat` fails with
/// EEXIST if the name exists, like `O_EXCL`). So a process killed at any moment never leaves an
/// empty dotlock, whose missing pid would make it look alive for `STALE_DOTLOCK_AGE`, nor a
/// temporary file in the spool. File systems without `O_TMPFILE` (or without /proc) get
/// `O_CREAT|O_EXCL` and then the write, with that small window.
pub(super) fn publish_at(
    dir: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    content: &[u8],
) -> Result<(), Errno> {
    let mode = Mode::from_bits_truncate(DOTLOCK_MODE as nix::libc::mode_t);
    let rmode = rfs::Mode::from_raw_mode(DOTLOCK_MODE);
    match rfs::openat(
        dir,
        ".",
        rfs::OFlags::TMPFILE | rfs::OFlags::WRONLY | rfs::OFlags::CLOEXEC,
        rmode,
    )
    .map_err(nix_errno)
    {
        Ok(fd) => {
            let mut f = File::from(fd);
            let fd = f.as_raw_fd();
            // An empty dotlock (disk full) still locks: the pid is a help, not the lock.
            let _ = f.write_all(content);
            // The umask must not make a dotlock unreadable to the MDAs that check its pid.
            let _ = nix::sys::stat::fchmod(fd, mode);
            let proc_path = format!("/proc/self/fd/{fd}");
            match nix::unistd::linkat(
                None,
                std::path::Path::new(&proc_path),
                Some(dir.as_raw_fd()),
                std::path::Path::new(name),
                AtFlags::AT_SYMLINK_FOLLOW,
            ) {
                Ok(()) => return Ok(()),
                // No /proc: fall back below.
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
        Err(e) => return Err(e),
    }
    use rfs::OFlags;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
    let fd = rfs::openat(dir, name, flags | OFlags::CLOEXEC, rmode).map_err(nix_errno)?;
    let mut f = File::from(fd);
    let _ = f.write_all(content);
    Ok(())
}

/// What is at a dotlock's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DotlockFile {
    Missing,
    /// A file that can be a dotlock; the stale rule applies to it.
    Lock(LockFile),
    /// Something no MDA writes as a dotlock, and why: never broken.
    NotALock(String),
}

/// A file that can be a dotlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFile {
    pub dev: u64,
    pub ino: u64,
    pub modified: SystemTime,
    /// At most [`MAX_DOTLOCK_SIZE`] bytes; empty when it may not be read (Postfix's are mode 0).
    pub content: Vec<u8>,
}

/// Looks at the file at dotlock `path` without following a symlink, without blocking on a
/// FIFO or device, and reading at most [`MAX_DOTLOCK_SIZE`] bytes: a dotlock is a regular file
/// of at most that size that does not start like a mailbox (`From `).
pub fn inspect_dotlock(path: &Path) -> io::Result<DotlockFile> {
    let (dir, name) = split_path(path)?;
    let dir_file = open_dir(dir)?;
    inspect_dotlock_at(dir_file.as_fd(), name)
}

/// `path`'s directory (`.` for a bare name) and file name.
fn split_path(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        ));
    };
    Ok((
        if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        },
        name,
    ))
}

/// [`inspect_dotlock`] relative to the directory descriptor `dfd`.
pub(super) fn inspect_dotlock_at(dfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<DotlockFile> {
    let st =
        match nix::sys::stat::fstatat(Some(dfd.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(DotlockFile::Missing),
            Err(e) => return Err(e.into()),
        };
    if let Some(why) = not_a_lock(&st) {
        return Ok(DotlockFile::NotALock(why));
    }
    use rfs::OFlags;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rfs::openat(dfd, name, flags | OFlags::CLOEXEC, rfs::Mode::empty())
        .map_err(nix_errno)
    {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(DotlockFile::Missing),
        // Unreadable to us: judged by what lstat showed, with no pid.
        Err(Errno::EACCES | Errno::EPERM) => {
            return Ok(DotlockFile::Lock(lock_file(&st, Vec::new())))
        }
        // Replaced by a symlink or a socket since the lstat.
        Err(Errno::ELOOP) => return Ok(DotlockFile::NotALock("a symbolic link".into())),
        Err(Errno::ENXIO) => return Ok(DotlockFile::NotALock("a socket".into())),
        Err(e) => return Err(e.into()),
    };
    let f = File::from(fd);
    // What we opened, which may not be what we looked at.
    let st = nix::sys::stat::fstat(f.as_raw_fd())?;
    if let Some(why) = not_a_lock(&st) {
        return Ok(DotlockFile::NotALock(why));
    }
    let mut content = Vec::with_capacity(MAX_DOTLOCK_SIZE as usize);
    io::Read::take(&f, MAX_DOTLOCK_SIZE).read_to_end(&mut content)?;
    if content.starts_with(MAILBOX_START) {
        return Ok(DotlockFile::NotALock(format!(
            "{} bytes starting with \"From \": a mailbox",
            st.st_size
        )));
    }
    Ok(DotlockFile::Lock(lock_file(&st, content)))
}

fn lock_file(st: &FileStat, content: Vec<u8>) -> LockFile {
    LockFile {
        dev: st.st_dev,
        ino: st.st_ino,
        modified: mtime(st),
        content,
    }
}

/// Why a file with status `st` cannot be a dotlock, if it cannot.
fn not_a_lock(st: &FileStat) -> Option<String> {
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let what = match kind {
        SFlag::S_IFREG => {
            let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
            if size > MAX_DOTLOCK_SIZE {
                return Some(format!(
                    "{size} bytes, more than a dotlock's {MAX_DOTLOCK_SIZE}"
                ));
            }
            return None;
        }
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        _ => "not a regular file",
    };
    Some(what.into())
}

/// The pid recorded in a dotlock, when that process no longer exists on this host. Like
/// liblockfile, a dotlock whose creator is gone is stale at once: a killed session (or MDA)
/// must not lock its mailbox for `STALE_DOTLOCK_AGE`. An empty or non-numeric dotlock (procmail
/// writes none) falls back to the age rule; a live or unknown pid (EPERM: another user's
/// process) is respected. Assumes the spool is local, as its locking already does.
pub fn dead_owner(content: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(content).ok()?.trim();
    let pid: i32 = text.parse().ok()?;
    if pid <= 1 {
        return None;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => Some(pid),
        _ => None,
    }
}

pub(super) fn stat_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0).min(999_999_999);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => UNIX_EPOCH,
    }
}

pub(super) fn mtime(st: &FileStat) -> SystemTime {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    stat_time(i64::from(st.st_mtime), i64::from(st.st_mtime_nsec))
}

pub(super) fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

pub(super) fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &OsString) -> Result<FileStat, Errno> {
    nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// Opens the directory `dir` (read-only, close-on-exec) as a descriptor to work relative to.
pub(super) fn open_dir(dir: &Path) -> io::Result<File> {
    use rfs::OFlags;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(File::from(rfs::open(dir, flags, rfs::Mode::empty())?))
}

/// rustix's error as nix's, for the callers that match on nix's.
fn nix_errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}
