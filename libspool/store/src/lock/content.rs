//! The content lock: the dotlock (ourselves or through `pop-dotlock`), then an fcntl lock,
//! the MTAs' order; held only while reading the extent and while committing.

#![forbid(unsafe_code)]

use super::dotlock::{HELPER_EXIT_BUSY, HELPER_EXIT_OK};
use super::file::{dead_owner, dotlock_path, inspect_dotlock, publish_at, DotlockFile};
use super::file::{fstatat_nofollow, open_dir};
use super::wait::{
    age, deadline_after, fcntl_until, pause, set_fcntl, DOTLOCK_BACKOFF_MAX, LOCK_POLL_INTERVAL,
};
use crate::error::{io_err, MailboxError};
use nix::errno::Errno;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How the content lock is taken.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// The setgid helper (`pop-dotlock`) used when we may not create `PATH.lock` ourselves.
    pub helper: Option<PathBuf>,
    /// Bounded wait for both the dotlock and the fcntl lock.
    pub wait: Duration,
    /// Dotlocks older than this, with the mailbox unchanged as long, are broken and logged.
    pub stale_age: Duration,
}

/// A dotlock we created, identified by inode so that we never remove somebody else's.
#[derive(Debug)]
struct Dotlock {
    path: PathBuf,
    mailbox: PathBuf,
    dev: u64,
    ino: u64,
    /// Created through the helper: removed through it too.
    helper: Option<PathBuf>,
    /// Created through the lock broker (see `crate::broker`): it holds the broker's pid, which
    /// the broker checks before removing it; a confined process may not read it.
    brokered: bool,
}

/// The content lock: `PATH.lock` created atomically, then an fcntl write lock on `file`.
/// Released by `release` or on drop, on every path.
#[derive(Debug)]
pub struct ContentLock {
    /// A duplicate of the caller's descriptor, through which the fcntl lock is taken and
    /// dropped: it keeps naming the same file even if the caller's descriptor is closed.
    fcntl: Option<File>,
    dotlock: Option<Dotlock>,
    warnings: Vec<String>,
}

enum Attempt {
    Locked { dev: u64, ino: u64 },
    Busy,
    Denied(io::Error),
}

impl ContentLock {
    /// `file` must be the caller's only open descriptor of the mailbox, opened read-write
    /// (fcntl locks vanish when any descriptor of the file is closed by the process).
    pub fn acquire(
        mailbox_path: &Path,
        file: &File,
        opts: &LockOptions,
    ) -> Result<ContentLock, MailboxError> {
        Self::acquire_inner(mailbox_path, file, opts, false)
    }

    pub(super) fn acquire_inner(
        mailbox_path: &Path,
        file: &File,
        opts: &LockOptions,
        helper_first: bool,
    ) -> Result<ContentLock, MailboxError> {
        let deadline = deadline_after(opts.wait);
        // The helper insists on an absolute path; we use the same one for both ways.
        let mailbox =
            std::path::absolute(mailbox_path).map_err(io_err("resolve the mailbox path"))?;
        let mut lock = ContentLock {
            fcntl: None,
            dotlock: None,
            warnings: Vec::new(),
        };
        let dotlock = take_dotlock(
            &mailbox,
            file,
            opts,
            deadline,
            helper_first,
            &mut lock.warnings,
        )?;
        lock.dotlock = Some(dotlock);
        // From here every early return drops `lock`, which removes the dotlock again.
        let dup = file
            .try_clone()
            .map_err(io_err("duplicate the mailbox descriptor"))?;
        if !fcntl_until(&dup, libc::F_WRLCK, deadline, "lock the mailbox")? {
            return Err(MailboxError::LockTimeout(mailbox));
        }
        lock.fcntl = Some(dup);
        Ok(lock)
    }

    /// Things worth logging that happened while locking (a stale dotlock was broken).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn release(mut self) -> Result<(), MailboxError> {
        self.release_inner()
    }

    /// fcntl first, then the dotlock: the reverse of taking them, as the MDAs do.
    fn release_inner(&mut self) -> Result<(), MailboxError> {
        let mut result = Ok(());
        if let Some(f) = self.fcntl.take() {
            if let Err(e) = set_fcntl(&f, libc::F_UNLCK) {
                result = Err(MailboxError::Io("unlock the mailbox", e.into()));
            }
        }
        if let Some(d) = self.dotlock.take() {
            let r = remove_dotlock(&d);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for ContentLock {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

fn is_denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

fn take_dotlock(
    mailbox: &Path,
    file: &File,
    opts: &LockOptions,
    deadline: Instant,
    helper_first: bool,
    warnings: &mut Vec<String>,
) -> Result<Dotlock, MailboxError> {
    let path = dotlock_path(mailbox);
    let mut via_helper = helper_first && opts.helper.is_some();
    let brokered = crate::broker::pid_for(mailbox).is_some();
    let mut warned: Option<(u64, u64)> = None;
    let mut backoff = LOCK_POLL_INTERVAL;
    loop {
        // Why the file at the dotlock's name is not a lock, when that is what we wait for.
        let foreign: Option<String>;
        let attempt = match (&opts.helper, via_helper) {
            (Some(h), true) => helper_lock(h, mailbox, &path)?,
            _ => create_dotlock(&path)?,
        };
        match attempt {
            Attempt::Locked { dev, ino } => {
                return Ok(Dotlock {
                    path,
                    mailbox: mailbox.to_path_buf(),
                    dev,
                    ino,
                    helper: if via_helper {
                        opts.helper.clone()
                    } else {
                        None
                    },
                    brokered: via_helper && brokered,
                })
            }
            Attempt::Denied(e) => {
                if opts.helper.is_some() && !via_helper {
                    via_helper = true;
                    continue;
                }
                return Err(MailboxError::Io(
                    "create the dotlock (no dotlock helper set)",
                    e,
                ));
            }
            Attempt::Busy => {
                // Through the broker the helper has applied the stale rule already, and a
                // confined process may not read the dotlock.
                let verdict = if via_helper && brokered {
                    Verdict::Live
                } else {
                    stale(&path, file, opts.stale_age)?
                };
                foreign = match &verdict {
                    Verdict::NotALock(why) => Some(why.clone()),
                    _ => None,
                };
                if let Verdict::Stale(StaleLock {
                    dev,
                    ino,
                    lock_age,
                    box_age,
                    gone,
                }) = verdict
                {
                    if warned != Some((dev, ino)) {
                        warned = Some((dev, ino));
                        warnings.push(match gone {
                            Some(pid) => format!(
                                "breaking stale dotlock {}: its creator, pid {pid}, is gone",
                                path.display()
                            ),
                            None => format!(
                                "breaking stale dotlock {}: {}s old, mailbox unchanged for {}s",
                                path.display(),
                                lock_age.as_secs(),
                                box_age.as_secs()
                            ),
                        });
                    }
                    match unlink_if_same(&path, dev, ino) {
                        Ok(()) => continue,
                        Err(e) if is_denied(&e) => {
                            // The helper applies the same rule (with STALE_DOTLOCK_AGE).
                            if opts.helper.is_some() && !via_helper {
                                via_helper = true;
                                continue;
                            }
                        }
                        Err(e) => return Err(MailboxError::Io("break a stale dotlock", e)),
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(match foreign {
                // Waiting longer would not help: say what is in the way.
                Some(why) => MailboxError::Io(
                    "lock the mailbox",
                    io::Error::other(format!(
                        "{} is not a dotlock ({why}), so it is never broken: move it away",
                        path.display()
                    )),
                ),
                None => MailboxError::LockTimeout(mailbox.to_path_buf()),
            });
        }
        pause(backoff.min(deadline - now))?;
        backoff = (backoff * 2).min(DOTLOCK_BACKOFF_MAX);
    }
}

fn create_dotlock(path: &Path) -> Result<Attempt, MailboxError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(MailboxError::BadPath(format!(
            "{} has no directory",
            path.display()
        )));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let dir_file = match open_dir(dir) {
        Ok(f) => f,
        // A confined session may not open the directory: the helper's job, as below.
        Err(e) if is_denied(&e) => return Ok(Attempt::Denied(e)),
        Err(e) => return Err(MailboxError::Io("open the mailbox's directory", e)),
    };
    match publish_at(dir_file.as_fd(), name, our_dotlock_content().as_bytes()) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(Attempt::Busy),
        Err(e @ (Errno::EACCES | Errno::EPERM | Errno::EROFS)) => {
            return Ok(Attempt::Denied(e.into()))
        }
        Err(e) => return Err(MailboxError::Io("create the dotlock", e.into())),
    }
    let st = fstatat_nofollow(dir_file.as_fd(), &name.to_os_string())
        .map_err(|e| MailboxError::Io("stat the dotlock", e.into()))?;
    Ok(Attempt::Locked {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// A dotlock the stale rule says may be broken, and why.
struct StaleLock {
    dev: u64,
    ino: u64,
    lock_age: Duration,
    box_age: Duration,
    /// The dead creator's pid, when that is the reason.
    gone: Option<i32>,
}

/// What the stale rule says about the file at a dotlock's name.
enum Verdict {
    /// Nothing there (any more), or a lock in force.
    Live,
    Stale(StaleLock),
    /// Not a dotlock at all: respected, never broken.
    NotALock(String),
}

/// The stale rule for the existing dotlock of the mailbox open as `file`.
fn stale(path: &Path, file: &File, stale_age: Duration) -> Result<Verdict, MailboxError> {
    let lock = match inspect_dotlock(path) {
        Ok(DotlockFile::Lock(l)) => l,
        Ok(DotlockFile::Missing) => return Ok(Verdict::Live),
        Ok(DotlockFile::NotALock(why)) => return Ok(Verdict::NotALock(why)),
        Err(e) => return Err(MailboxError::Io("inspect the dotlock", e)),
    };
    let bm = file.metadata().map_err(io_err("stat the mailbox"))?;
    let Ok(bt) = bm.modified() else {
        return Ok(Verdict::Live);
    };
    let now = SystemTime::now();
    let (lock_age, box_age) = (age(now, lock.modified), age(now, bt));
    let gone = dead_owner(&lock.content);
    if (lock_age >= stale_age && box_age >= stale_age) || gone.is_some() {
        Ok(Verdict::Stale(StaleLock {
            dev: lock.dev,
            ino: lock.ino,
            lock_age,
            box_age,
            gone,
        }))
    } else {
        Ok(Verdict::Live)
    }
}

/// Unlinks `path` only if it still is the file we looked at. A tiny window remains between
/// the check and the unlink (POSIX has no unlink-if-inode); every MDA shares it.
fn unlink_if_same(path: &Path, dev: u64, ino: u64) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.dev() == dev && m.ino() == ino => match fs::remove_file(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            r => r,
        },
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What every dotlock we make (directly or through the helper) contains.
pub(super) fn our_dotlock_content() -> String {
    format!("{}\n", std::process::id())
}

/// Whether `d` is still the dotlock we made. Filesystems reuse a freed inode number at
/// once, so a dotlock that somebody broke and re-created can have ours: the pid inside
/// tells them apart.
fn still_ours(d: &Dotlock) -> Result<bool, MailboxError> {
    match fs::symlink_metadata(&d.path) {
        Ok(m) if m.dev() == d.dev && m.ino() == d.ino && m.is_file() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(MailboxError::Io("stat the dotlock", e)),
    }
    if d.brokered {
        // The broker compares the content with its pid before it removes the dotlock.
        return Ok(true);
    }
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&d.path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(MailboxError::Io("read the dotlock", e)),
    };
    let want = our_dotlock_content();
    let mut buf = Vec::with_capacity(want.len() + 1);
    io::Read::take(&f, want.len() as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("read the dotlock"))?;
    let m = f.metadata().map_err(io_err("stat the dotlock"))?;
    Ok(m.dev() == d.dev && m.ino() == d.ino && buf == want.as_bytes())
}

fn remove_dotlock(d: &Dotlock) -> Result<(), MailboxError> {
    // Gone or replaced: someone broke ours; theirs is not ours to remove.
    if !still_ours(d)? {
        return Ok(());
    }
    match &d.helper {
        Some(h) => match run_helper(h, "unlock", &d.mailbox)? {
            HELPER_EXIT_OK => Ok(()),
            code => Err(helper_failed(h, "unlock", code, String::new())),
        },
        None => match fs::remove_file(&d.path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(MailboxError::Io("remove the dotlock", e))
            }
            _ => Ok(()),
        },
    }
}

fn helper_failed(helper: &Path, verb: &str, code: i32, why: String) -> MailboxError {
    MailboxError::Io(
        "run the dotlock helper",
        io::Error::other(format!("{} {verb}: exit {code} {why}", helper.display())),
    )
}

/// Runs `HELPER VERB MAILBOX` with an empty environment; returns its exit status. Its one
/// stderr line goes into the error, never to our stderr.
fn run_helper(helper: &Path, verb: &str, mailbox: &Path) -> Result<i32, MailboxError> {
    if let Some(r) = crate::broker::request(helper, verb, mailbox) {
        let (code, line) = r.map_err(io_err("run the dotlock helper"))?;
        return match code {
            HELPER_EXIT_OK | HELPER_EXIT_BUSY => Ok(code),
            _ => Err(helper_failed(helper, verb, code, line)),
        };
    }
    let out = Command::new(helper)
        .arg(verb)
        .arg(mailbox)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(io_err("run the dotlock helper"))?;
    match out.status.code() {
        Some(c @ (HELPER_EXIT_OK | HELPER_EXIT_BUSY)) => Ok(c),
        code => {
            let msg = String::from_utf8_lossy(&out.stderr);
            let line = msg.lines().next().unwrap_or("").trim().to_string();
            Err(helper_failed(helper, verb, code.unwrap_or(-1), line))
        }
    }
}

fn helper_lock(helper: &Path, mailbox: &Path, path: &Path) -> Result<Attempt, MailboxError> {
    match run_helper(helper, "lock", mailbox)? {
        HELPER_EXIT_OK => match fs::symlink_metadata(path) {
            Ok(m) => Ok(Attempt::Locked {
                dev: m.dev(),
                ino: m.ino(),
            }),
            Err(e) => {
                let _ = run_helper(helper, "unlock", mailbox);
                Err(MailboxError::Io("stat the dotlock the helper made", e))
            }
        },
        _ => Ok(Attempt::Busy),
    }
}
