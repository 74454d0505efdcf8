//! `pop-dotlock`'s side: the setgid-mail helper that creates or removes the dotlock of the
//! caller's own mailbox where the caller may not (Debian's root:mail 2775 spool).

#![forbid(unsafe_code)]

use super::file::{
    dead_owner, fstatat_nofollow, inspect_dotlock_at, is_regular, mtime, publish_at, DotlockFile,
    DOTLOCK_SUFFIX,
};
use super::wait::age;
use nix::errno::Errno;
use nix::sys::stat::{FileStat, Mode};
use spool_wire::limits::STALE_DOTLOCK_AGE;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

/// `pop-dotlock` exit status: locked / unlocked.
pub const HELPER_EXIT_OK: i32 = 0;

/// `pop-dotlock lock` exit status: somebody else holds the dotlock.
pub const HELPER_EXIT_BUSY: i32 = 1;

/// `pop-dotlock` exit status: misuse or refused (not the caller's own mailbox, ...).
pub const HELPER_EXIT_REFUSED: i32 = 100;

/// `pop-dotlock` exit status: a system error; trying again later may work.
pub const HELPER_EXIT_SYSTEM: i32 = 111;

/// What `pop-dotlock` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperAction {
    Lock,
    Unlock,
}

/// What `pop-dotlock` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperOutcome {
    Locked,
    Busy,
    Unlocked,
}

impl HelperOutcome {
    pub fn exit_code(self) -> i32 {
        match self {
            HelperOutcome::Locked | HelperOutcome::Unlocked => HELPER_EXIT_OK,
            HelperOutcome::Busy => HELPER_EXIT_BUSY,
        }
    }
}

/// Why `pop-dotlock` did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperError {
    /// Misuse or not the caller's own mailbox: exit 100.
    Refused(String),
    /// A system call failed: exit 111.
    System(String),
}

impl HelperError {
    pub fn exit_code(&self) -> i32 {
        match self {
            HelperError::Refused(_) => HELPER_EXIT_REFUSED,
            HelperError::System(_) => HELPER_EXIT_SYSTEM,
        }
    }
}

impl fmt::Display for HelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelperError::Refused(why) => write!(f, "refused: {why}"),
            HelperError::System(why) => write!(f, "{why}"),
        }
    }
}

pub(super) fn sys(what: &str, e: Errno) -> HelperError {
    HelperError::System(format!("unable to {what}: {}", e.desc()))
}

/// Creates `name` in `dir` exclusively; the pid of our caller (the program that wanted the
/// lock) goes inside for admins.
fn create_at(dir: BorrowedFd<'_>, name: &OsString) -> Result<(), Errno> {
    publish_at(
        dir,
        name,
        format!("{}\n", nix::unistd::getppid()).as_bytes(),
    )
}

/// The work of `pop-dotlock lock|unlock MAILBOX` for the user `real_uid`, with the stale rule
/// fixed at `limits::STALE_DOTLOCK_AGE` (never caller-controlled).
///
/// Security: the helper's only power is group mail, i.e. creating and removing files in the
/// spool directories. It uses it only for `MAILBOX.lock` next to a regular file that the
/// real uid owns (checked with lstat, not following a final symlink), whose name the spool
/// accepts as a user name (`spoolpath::check_user`): so never for `X.lock.lock`, and the
/// dotlock it makes can never be the mailbox of a present or future user. Every check and action
/// happens relative to one open descriptor of the mailbox's directory, so swapping a
/// directory symlink between the check and the action cannot redirect it. `unlock` removes
/// only a regular file owned by the real uid: the user cannot remove an MDA's (root- or
/// mail-owned) dotlock through it; breaking stale ones follows the MDAs' own rule.
pub fn dotlock_helper(
    action: HelperAction,
    mailbox: &Path,
    real_uid: u32,
) -> Result<HelperOutcome, HelperError> {
    if !mailbox.is_absolute() {
        return Err(HelperError::Refused(
            "mailbox must be an absolute path".into(),
        ));
    }
    let (Some(name), Some(parent)) = (mailbox.file_name(), mailbox.parent()) else {
        return Err(HelperError::Refused("mailbox path has no file name".into()));
    };
    if let Err(e) = crate::spoolpath::check_user(name.as_bytes()) {
        return Err(HelperError::Refused(format!(
            "{:?} is not a mailbox name: {e}",
            name.to_string_lossy()
        )));
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(parent)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => {
                HelperError::Refused("no such mailbox directory".into())
            }
            _ => HelperError::System(format!("unable to open the mailbox directory: {e}")),
        })?;
    let dfd = dir.as_fd();
    let name = name.to_os_string();
    let st = match fstatat_nofollow(dfd, &name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Err(HelperError::Refused("no such mailbox".into())),
        Err(e) => return Err(sys("stat the mailbox", e)),
    };
    if !is_regular(&st) {
        return Err(HelperError::Refused("mailbox is not a regular file".into()));
    }
    if st.st_uid != real_uid {
        return Err(HelperError::Refused(
            "mailbox is not owned by the caller".into(),
        ));
    }
    let mut lock_name = name.clone();
    lock_name.push(DOTLOCK_SUFFIX);
    match action {
        HelperAction::Lock => helper_lock_at(dfd, &lock_name, &st),
        HelperAction::Unlock => helper_unlock_at(dfd, &lock_name, real_uid),
    }
}

fn helper_lock_at(
    dfd: BorrowedFd<'_>,
    lock: &OsString,
    mbox: &FileStat,
) -> Result<HelperOutcome, HelperError> {
    match create_at(dfd, lock) {
        Ok(()) => return Ok(HelperOutcome::Locked),
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(sys("create the dotlock", e)),
    }
    let found = match inspect_dotlock_at(dfd, lock) {
        Ok(DotlockFile::Lock(l)) => l,
        Ok(DotlockFile::Missing) => return retry_once(dfd, lock),
        Ok(DotlockFile::NotALock(why)) => {
            return Err(HelperError::Refused(format!(
                "the dotlock's name is taken by something else ({why}); never broken"
            )))
        }
        Err(e) => {
            return Err(HelperError::System(format!(
                "unable to inspect the dotlock: {e}"
            )))
        }
    };
    let now = SystemTime::now();
    let young =
        age(now, found.modified) < STALE_DOTLOCK_AGE || age(now, mtime(mbox)) < STALE_DOTLOCK_AGE;
    if young && dead_owner(&found.content).is_none() {
        return Ok(HelperOutcome::Busy);
    }
    match fstatat_nofollow(dfd, lock) {
        Ok(again) if again.st_dev == found.dev && again.st_ino == found.ino => {
            match nix::unistd::unlinkat(
                Some(dfd.as_raw_fd()),
                lock.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(sys("break the stale dotlock", e)),
            }
        }
        Ok(_) => return Ok(HelperOutcome::Busy),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(sys("stat the dotlock", e)),
    }
    retry_once(dfd, lock)
}

fn retry_once(dfd: BorrowedFd<'_>, lock: &OsString) -> Result<HelperOutcome, HelperError> {
    match create_at(dfd, lock) {
        Ok(()) => Ok(HelperOutcome::Locked),
        Err(Errno::EEXIST) => Ok(HelperOutcome::Busy),
        Err(e) => Err(sys("create the dotlock", e)),
    }
}

fn helper_unlock_at(
    dfd: BorrowedFd<'_>,
    lock: &OsString,
    real_uid: u32,
) -> Result<HelperOutcome, HelperError> {
    let lst = match fstatat_nofollow(dfd, lock) {
        Ok(s) => s,
        Err(Errno::ENOENT) => return Ok(HelperOutcome::Unlocked),
        Err(e) => return Err(sys("stat the dotlock", e)),
    };
    if !is_regular(&lst) {
        return Err(HelperError::Refused("dotlock is not a regular file".into()));
    }
    if lst.st_uid != real_uid {
        return Err(HelperError::Refused("dotlock is not the caller's".into()));
    }
    match nix::unistd::unlinkat(
        Some(dfd.as_raw_fd()),
        lock.as_os_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => Ok(HelperOutcome::Unlocked),
        Err(e) => Err(sys("remove the dotlock", e)),
    }
}

/// First thing a setgid program does: distrust everything inherited. Makes sure descriptors
/// 0-2 are open (so a file we open can never become "stderr"), empties the environment and
/// sets a sane umask. Call it first in `main`, before any thread exists (the environment is
/// not thread-safe to modify).
pub fn harden_setgid_process() {
    for fd in 0..=2 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(Errno::EBADF) {
            // Opening /dev/null takes the lowest free descriptor, which is `fd`.
            if let Ok(f) = File::options().read(true).write(true).open("/dev/null") {
                if f.as_raw_fd() == fd {
                    std::mem::forget(f);
                }
            }
        }
    }
    let keys: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in keys {
        std::env::remove_var(k);
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
}

/// `pop-dotlock`'s whole job after argument parsing: refuses a setuid install (files it made
/// would not be owned by the caller, and unlock would refuse them), runs `dotlock_helper` for
/// the real uid, writes at most one line on stderr, returns the exit status.
pub fn dotlock_helper_main(action: HelperAction, mailbox: &Path) -> i32 {
    let (ruid, euid) = (nix::unistd::getuid(), nix::unistd::geteuid());
    let result = if ruid != euid {
        Err(HelperError::Refused(
            "must be installed setgid mail, not setuid".into(),
        ))
    } else {
        dotlock_helper(action, mailbox, ruid.as_raw())
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            let _ = writeln!(io::stderr(), "pop-dotlock: {e}");
            e.exit_code()
        }
    }
}
