//! The two locks: a session lock (one POP3 session per mailbox, dies with the process) and the
//! content lock (dotlock then fcntl, the MTAs' order), held only while reading the extent and
//! while committing. OWNER: locking helper.
//!
//! Also the logic of `pop-dotlock`, the setgid-mail helper that creates the dotlock where the
//! user may not (Debian's root:mail 2775 spool directories).
//!
//! Dotlocks are created with `O_CREAT|O_EXCL|O_NOFOLLOW` and hold the creator's pid, as
//! liblockfile, procmail and Postfix do: atomic on local filesystems and NFSv3+ (NFSv2, where
//! only the link()-based scheme is safe, is not supported). That keeps a crash from leaving
//! extra temporary files in the spool.

use crate::error::{io_err, MailboxError};
use crate::limits::STALE_DOTLOCK_AGE;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a busy fcntl lock (session or content) is retried.
pub const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The dotlock is retried with exponential backoff from `LOCK_POLL_INTERVAL` up to this, so
/// a long wait does not hammer a (possibly NFS) spool directory.
pub const DOTLOCK_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Appended to the mailbox path to name its dotlock, as every MDA does.
pub const DOTLOCK_SUFFIX: &str = ".lock";
/// Mode of the dotlocks we create (liblockfile's): the pid inside is for anyone to read.
pub const DOTLOCK_MODE: u32 = 0o644;
/// Mode of the state directory and of the session lock file: private to the user.
pub const STATE_DIR_MODE: u32 = 0o700;
pub const SESSION_LOCK_MODE: u32 = 0o600;

/// `pop-dotlock` exit status: locked / unlocked.
pub const HELPER_EXIT_OK: i32 = 0;
/// `pop-dotlock lock` exit status: somebody else holds the dotlock.
pub const HELPER_EXIT_BUSY: i32 = 1;
/// `pop-dotlock` exit status: misuse or refused (not the caller's own mailbox, ...).
pub const HELPER_EXIT_REFUSED: i32 = 100;
/// `pop-dotlock` exit status: a system error; trying again later may work.
pub const HELPER_EXIT_SYSTEM: i32 = 111;

fn lock_record(kind: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers (plus platform padding fields);
    // all-zero is a valid value, and zero l_start/l_len with SEEK_SET means the whole file.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// Non-blocking whole-file POSIX record lock (the kind procmail, Postfix and mail.local take).
fn set_fcntl(file: &File, kind: libc::c_int) -> Result<(), Errno> {
    let fl = lock_record(kind);
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&fl)).map(drop)
}

/// Retries a non-blocking fcntl write lock until `deadline`. `Ok(false)` when still busy.
fn fcntl_until(file: &File, deadline: Instant) -> Result<bool, Errno> {
    loop {
        match set_fcntl(file, libc::F_WRLCK) {
            Ok(()) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN | Errno::EACCES) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(LOCK_POLL_INTERVAL.min(deadline - now));
            }
            Err(e) => return Err(e),
        }
    }
}

fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// Held for a whole session: an fcntl write lock on a small file in the state directory.
#[derive(Debug)]
pub struct SessionLock {
    _file: File,
}

impl SessionLock {
    /// Creates the state directory (0700) and the lock file if needed, then retries a
    /// non-blocking fcntl lock until `wait` has passed: `MailboxError::InUse` after that.
    /// The lock vanishes with the process, so it can never be stale.
    pub fn acquire(path: &Path, wait: Duration) -> Result<SessionLock, MailboxError> {
        let deadline = deadline_after(wait);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(STATE_DIR_MODE)
                .create(dir)
                .map_err(io_err("create the state directory"))?;
        }
        // No truncation before we hold the lock: the pid in it belongs to the holder.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(SESSION_LOCK_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err("open the session lock"))?;
        match fcntl_until(&file, deadline) {
            Ok(true) => {}
            Ok(false) => return Err(MailboxError::InUse),
            Err(e) => return Err(MailboxError::Io("lock the session lock", e.into())),
        }
        // The pid is only a hint for admins: failing to write it must not fail the session.
        let _ = file.set_len(0);
        let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
        Ok(SessionLock { _file: file })
    }
}

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

/// The path of `mailbox`'s dotlock.
pub fn dotlock_path(mailbox: &Path) -> PathBuf {
    let mut s = mailbox.as_os_str().to_os_string();
    s.push(DOTLOCK_SUFFIX);
    PathBuf::from(s)
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

    fn acquire_inner(
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
        match fcntl_until(&dup, deadline) {
            Ok(true) => {}
            Ok(false) => return Err(MailboxError::LockTimeout(mailbox)),
            Err(e) => return Err(MailboxError::Io("lock the mailbox", e.into())),
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
    let mut warned: Option<(u64, u64)> = None;
    let mut backoff = LOCK_POLL_INTERVAL;
    loop {
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
                if let Some(StaleLock {
                    dev,
                    ino,
                    lock_age,
                    box_age,
                    gone,
                }) = stale(&path, file, opts.stale_age)?
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
            return Err(MailboxError::LockTimeout(mailbox.to_path_buf()));
        }
        std::thread::sleep(backoff.min(deadline - now));
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
    let dfd = match nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return Err(MailboxError::Io("open the mailbox's directory", e.into())),
    };
    // SAFETY: `dfd` was just returned by open and is owned by nothing else.
    let dir_file = unsafe { File::from_raw_fd(dfd) };
    match publish_at(dir_file.as_raw_fd(), name, our_dotlock_content().as_bytes()) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(Attempt::Busy),
        Err(e @ (Errno::EACCES | Errno::EPERM | Errno::EROFS)) => {
            return Ok(Attempt::Denied(e.into()))
        }
        Err(e) => return Err(MailboxError::Io("create the dotlock", e.into())),
    }
    let st = fstatat_nofollow(dir_file.as_raw_fd(), &name.to_os_string())
        .map_err(|e| MailboxError::Io("stat the dotlock", e.into()))?;
    Ok(Attempt::Locked {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Creates `name` in directory `dir` exclusively, with `content` already in it when the name
/// appears: an unnamed `O_TMPFILE` is written, then linked into place (`linkat` fails with
/// EEXIST if the name exists, like `O_EXCL`). So a process killed at any moment never leaves an
/// empty dotlock, whose missing pid would make it look alive for `STALE_DOTLOCK_AGE`, nor a
/// temporary file in the spool. File systems without `O_TMPFILE` (or without /proc) get
/// `O_CREAT|O_EXCL` and then the write, with that small window.
fn publish_at(dir: RawFd, name: &std::ffi::OsStr, content: &[u8]) -> Result<(), Errno> {
    let mode = Mode::from_bits_truncate(DOTLOCK_MODE as nix::libc::mode_t);
    match nix::fcntl::openat(
        Some(dir),
        ".",
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        mode,
    ) {
        Ok(fd) => {
            // SAFETY: `fd` was just returned by openat and is owned by nothing else.
            let mut f = unsafe { File::from_raw_fd(fd) };
            // An empty dotlock (disk full) still locks: the pid is a help, not the lock.
            let _ = f.write_all(content);
            // The umask must not make a dotlock unreadable to the MDAs that check its pid.
            let _ = nix::sys::stat::fchmod(fd, mode);
            let proc_path = format!("/proc/self/fd/{fd}");
            match nix::unistd::linkat(
                None,
                std::path::Path::new(&proc_path),
                Some(dir),
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
    let fd = nix::fcntl::openat(
        Some(dir),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )?;
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let _ = f.write_all(content);
    Ok(())
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

/// The existing dotlock, if the stale rule says it may be broken.
fn stale(path: &Path, file: &File, stale_age: Duration) -> Result<Option<StaleLock>, MailboxError> {
    let lm = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MailboxError::Io("stat the dotlock", e)),
    };
    let bm = file.metadata().map_err(io_err("stat the mailbox"))?;
    let now = SystemTime::now();
    let (Ok(lt), Ok(bt)) = (lm.modified(), bm.modified()) else {
        return Ok(None);
    };
    let (lock_age, box_age) = (age(now, lt), age(now, bt));
    let gone = fs::read(path).ok().and_then(|c| dead_owner(&c));
    if (lock_age >= stale_age && box_age >= stale_age) || gone.is_some() {
        Ok(Some(StaleLock {
            dev: lm.dev(),
            ino: lm.ino(),
            lock_age,
            box_age,
            gone,
        }))
    } else {
        Ok(None)
    }
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
fn our_dotlock_content() -> String {
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
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
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

// ---------------------------------------------------------------------------------------
// pop-dotlock: the setgid helper.

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

fn sys(what: &str, e: Errno) -> HelperError {
    HelperError::System(format!("unable to {what}: {}", e.desc()))
}

fn stat_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0).min(999_999_999);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => UNIX_EPOCH,
    }
}

fn mtime(st: &FileStat) -> SystemTime {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    stat_time(i64::from(st.st_mtime), i64::from(st.st_mtime_nsec))
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn fstatat_nofollow(dir: RawFd, name: &OsString) -> Result<FileStat, Errno> {
    nix::sys::stat::fstatat(Some(dir), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Creates `name` in `dir` exclusively; the pid of our caller (the program that wanted the
/// lock) goes inside for admins.
fn create_at(dir: RawFd, name: &OsString) -> Result<(), Errno> {
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
/// real uid owns (checked with lstat, not following a final symlink). Every check and action
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
    let dfd = dir.as_raw_fd();
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
    dfd: RawFd,
    lock: &OsString,
    mbox: &FileStat,
) -> Result<HelperOutcome, HelperError> {
    match create_at(dfd, lock) {
        Ok(()) => return Ok(HelperOutcome::Locked),
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(sys("create the dotlock", e)),
    }
    let lst = match fstatat_nofollow(dfd, lock) {
        Ok(s) => s,
        Err(Errno::ENOENT) => return retry_once(dfd, lock),
        Err(e) => return Err(sys("stat the dotlock", e)),
    };
    if !is_regular(&lst) {
        return Err(HelperError::Refused("dotlock is not a regular file".into()));
    }
    let now = SystemTime::now();
    let young =
        age(now, mtime(&lst)) < STALE_DOTLOCK_AGE || age(now, mtime(mbox)) < STALE_DOTLOCK_AGE;
    if young && !lock_owner_gone_at(dfd, lock) {
        return Ok(HelperOutcome::Busy);
    }
    match fstatat_nofollow(dfd, lock) {
        Ok(again) if again.st_dev == lst.st_dev && again.st_ino == lst.st_ino => {
            match nix::unistd::unlinkat(
                Some(dfd),
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

/// The helper's view of [`dead_owner`]: reads the dotlock through the directory descriptor.
fn lock_owner_gone_at(dfd: RawFd, lock: &OsString) -> bool {
    let Ok(fd) = nix::fcntl::openat(
        Some(dfd),
        lock.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) else {
        return false;
    };
    let mut buf = [0u8; 32];
    let n = nix::unistd::read(fd, &mut buf).unwrap_or(0);
    let _ = nix::unistd::close(fd);
    dead_owner(&buf[..n]).is_some()
}

fn retry_once(dfd: RawFd, lock: &OsString) -> Result<HelperOutcome, HelperError> {
    match create_at(dfd, lock) {
        Ok(()) => Ok(HelperOutcome::Locked),
        Err(Errno::EEXIST) => Ok(HelperOutcome::Busy),
        Err(e) => Err(sys("create the dotlock", e)),
    }
}

fn helper_unlock_at(
    dfd: RawFd,
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
        Some(dfd),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SHORT: Duration = Duration::from_millis(200);

    fn opts(wait: Duration) -> LockOptions {
        LockOptions {
            helper: None,
            wait,
            stale_age: STALE_DOTLOCK_AGE,
        }
    }

    fn mailbox() -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claird");
        fs::write(&path, b"From a Mon Jan  1 00:00:00 2024\n\nx\n\n").unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, path, f)
    }

    /// Another process's lock, as seen from here: an open-file-description lock conflicts
    /// with our POSIX locks even inside one process (Linux).
    fn foreign_lock(path: &Path) -> Option<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let fl = lock_record(libc::F_WRLCK);
        match nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => Some(f),
            Err(_) => None,
        }
    }

    fn backdate(path: &Path, by: Duration) {
        let t = SystemTime::now() - by;
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn session_lock_creates_private_dir_and_excludes_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state/x.lock");
        let l = SessionLock::acquire(&path, SHORT).unwrap();
        let dm = fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dm.permissions().mode() & 0o777, STATE_DIR_MODE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            SESSION_LOCK_MODE
        );
        // (Reading the file here would open and close a descriptor of it, which drops
        // every POSIX lock this process has on it.)
        assert!(foreign_lock(&path).is_none(), "session lock not held");
        drop(l);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        let other = foreign_lock(&path).expect("released on drop");
        let t = Instant::now();
        assert!(matches!(
            SessionLock::acquire(&path, SHORT),
            Err(MailboxError::InUse)
        ));
        assert!(t.elapsed() >= SHORT);
        drop(other);
        SessionLock::acquire(&path, SHORT).unwrap();
    }

    #[test]
    fn session_lock_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"").unwrap();
        let path = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(
            SessionLock::acquire(&path, SHORT),
            Err(MailboxError::Io(..))
        ));
    }

    #[test]
    fn content_lock_takes_dotlock_then_fcntl_and_releases_both() {
        let (_d, path, f) = mailbox();
        let lp = dotlock_path(&path);
        let l = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap();
        assert!(l.warnings().is_empty());
        assert_eq!(
            fs::read_to_string(&lp).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert!(foreign_lock(&path).is_none(), "fcntl lock not held");
        l.release().unwrap();
        assert!(!lp.exists());
        assert!(foreign_lock(&path).is_some());
        // Drop releases too.
        let l = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap();
        drop(l);
        assert!(!lp.exists());
        assert!(foreign_lock(&path).is_some());
    }

    #[test]
    fn relative_mailbox_path_locks_the_same_file() {
        let (d, path, f) = mailbox();
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(&path, &cwd);
        let l = ContentLock::acquire(&rel, &f, &opts(SHORT)).unwrap();
        assert!(dotlock_path(&path).exists());
        drop(l);
        assert!(!dotlock_path(&path).exists());
        drop(d);
    }

    fn pathdiff(path: &Path, base: &Path) -> PathBuf {
        let up: PathBuf = base.components().skip(1).map(|_| "..").collect();
        up.join(path.strip_prefix("/").unwrap())
    }

    #[test]
    fn busy_fresh_dotlock_times_out_and_is_left_alone() {
        let (_d, path, f) = mailbox();
        let lp = dotlock_path(&path);
        fs::write(&lp, b"1\n").unwrap();
        let t = Instant::now();
        let e = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap_err();
        assert!(matches!(e, MailboxError::LockTimeout(_)), "{e}");
        assert!(t.elapsed() >= SHORT);
        assert_eq!(fs::read(&lp).unwrap(), b"1\n");
    }

    #[test]
    fn stale_rule_needs_both_old_lock_and_quiet_mailbox() {
        let hour = Duration::from_secs(3600);
        // (lock age, mailbox age, broken?)
        let table = [
            (hour, hour, true),
            (hour, Duration::ZERO, false),
            (Duration::ZERO, hour, false),
        ];
        for (lock_age, box_age, broken) in table {
            let (_d, path, f) = mailbox();
            let lp = dotlock_path(&path);
            fs::write(&lp, b"1\n").unwrap();
            backdate(&lp, lock_age);
            backdate(&path, box_age);
            let r = ContentLock::acquire(&path, &f, &opts(SHORT));
            assert_eq!(r.is_ok(), broken, "{lock_age:?} {box_age:?}");
            if let Ok(l) = r {
                assert_eq!(l.warnings().len(), 1);
                assert!(l.warnings()[0].contains("stale dotlock"));
                drop(l);
                assert!(!lp.exists());
            } else {
                assert_eq!(fs::read(&lp).unwrap(), b"1\n");
            }
        }
    }

    #[test]
    fn dotlock_appears_with_its_pid_and_nothing_else_is_left() {
        let (d, path, file) = mailbox();
        let before: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let l = ContentLock::acquire(&path, &file, &opts(SHORT)).unwrap();
        let lp = dotlock_path(&path);
        assert_eq!(
            fs::read(&lp).unwrap(),
            format!("{}\n", std::process::id()).into_bytes()
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&lp).unwrap().permissions().mode() & 0o777,
            DOTLOCK_MODE
        );
        let during: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            during.len(),
            before.len() + 1,
            "only the dotlock was added: {during:?}"
        );
        l.release().unwrap();
        assert!(!lp.exists());
    }

    #[test]
    fn dotlock_of_a_dead_process_is_broken_at_once() {
        let (_d, path, file) = mailbox();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        fs::write(dotlock_path(&path), format!("{pid}\n")).unwrap();
        let l = ContentLock::acquire(&path, &file, &opts(Duration::from_millis(300))).unwrap();
        assert!(l.warnings()[0].contains("is gone"), "{:?}", l.warnings());
        l.release().unwrap();
        // A live creator (ourselves) and a lock without a pid are respected.
        fs::write(dotlock_path(&path), format!("{}\n", std::process::id())).unwrap();
        assert!(ContentLock::acquire(&path, &file, &opts(Duration::from_millis(200))).is_err());
        fs::write(dotlock_path(&path), b"").unwrap();
        assert!(ContentLock::acquire(&path, &file, &opts(Duration::from_millis(200))).is_err());
        assert_eq!(dead_owner(b"1\n"), None);
        assert_eq!(dead_owner(b"abc"), None);
    }

    #[test]
    fn fcntl_busy_times_out_and_removes_our_dotlock() {
        let (_d, path, f) = mailbox();
        let _other = foreign_lock(&path).unwrap();
        let e = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap_err();
        assert!(matches!(e, MailboxError::LockTimeout(_)), "{e}");
        assert!(!dotlock_path(&path).exists());
    }

    #[test]
    fn release_never_removes_somebody_elses_dotlock() {
        let (_d, path, f) = mailbox();
        let lp = dotlock_path(&path);
        let l = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap();
        // Someone broke ours and took their own.
        fs::remove_file(&lp).unwrap();
        fs::write(&lp, b"other\n").unwrap();
        l.release().unwrap();
        assert_eq!(fs::read(&lp).unwrap(), b"other\n");
    }

    /// A stand-in for pop-dotlock that logs its calls; only builtins and absolute paths,
    /// as it runs with an empty environment.
    fn fake_helper(dir: &Path) -> (PathBuf, PathBuf) {
        let log = dir.join("helper.log");
        let script = dir.join("helper.sh");
        let text = format!(
            "#!/bin/sh\necho \"$1 $2 ${{HOME:-noenv}}\" >> '{}'\n\
             case $1 in\n  lock) set -C; (echo $PPID > \"$2.lock\") 2>/dev/null && exit 0; exit 1;;\n  \
             unlock) /bin/rm -f \"$2.lock\"; exit 0;;\n  *) echo 'bad usage' >&2; exit 100;;\nesac\n",
            log.display()
        );
        fs::write(&script, text).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        (script, log)
    }

    #[test]
    fn helper_path_locks_and_unlocks_through_the_helper() {
        let (d, path, f) = mailbox();
        let (helper, log) = fake_helper(d.path());
        let o = LockOptions {
            helper: Some(helper),
            ..opts(SHORT)
        };
        let l = ContentLock::acquire_inner(&path, &f, &o, true).unwrap();
        assert_eq!(
            fs::read_to_string(dotlock_path(&path)).unwrap(),
            our_dotlock_content()
        );
        assert!(foreign_lock(&path).is_none());
        l.release().unwrap();
        assert!(!dotlock_path(&path).exists());
        let calls = fs::read_to_string(&log).unwrap();
        let want = format!("lock {p} noenv\nunlock {p} noenv\n", p = path.display());
        assert_eq!(calls, want);
        // Busy through the helper: a timeout, and the holder's lock stays.
        fs::write(dotlock_path(&path), b"1\n").unwrap();
        let e = ContentLock::acquire_inner(&path, &f, &o, true).unwrap_err();
        assert!(matches!(e, MailboxError::LockTimeout(_)), "{e}");
        assert_eq!(fs::read(dotlock_path(&path)).unwrap(), b"1\n");
    }

    #[test]
    fn helper_failure_is_an_error_with_its_message() {
        let (d, path, f) = mailbox();
        let (helper, _log) = fake_helper(d.path());
        let bad = d.path().join("bad.sh");
        fs::write(&bad, "#!/bin/sh\necho 'refused: not yours' >&2\nexit 100\n").unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
        for h in [bad, d.path().join("missing")] {
            let o = LockOptions {
                helper: Some(h),
                ..opts(SHORT)
            };
            let e = ContentLock::acquire_inner(&path, &f, &o, true).unwrap_err();
            assert!(matches!(e, MailboxError::Io(..)), "{e}");
        }
        drop(helper);
        assert!(!dotlock_path(&path).exists());
    }

    #[test]
    fn denied_without_helper_is_an_error() {
        // Root ignores directory permissions; the EACCES branch is exercised by CI as a user.
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let (d, path, f) = mailbox();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o555)).unwrap();
        let e = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap_err();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(e, MailboxError::Io(..)), "{e}");
    }

    fn me() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn refused(r: Result<HelperOutcome, HelperError>) -> bool {
        matches!(r, Err(HelperError::Refused(_)))
    }

    #[test]
    fn helper_locks_only_the_callers_own_regular_mailbox() {
        let (d, path, _f) = mailbox();
        let sub = d.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let cases: Vec<(PathBuf, u32, &str)> = vec![
            (PathBuf::from("relative/box"), me(), "relative"),
            (PathBuf::from("/"), me(), "root dir"),
            (d.path().join("nobox"), me(), "missing"),
            (d.path().join("nodir/box"), me(), "missing dir"),
            (sub.clone(), me(), "directory"),
            (link.clone(), me(), "symlink"),
            (path.clone(), me().wrapping_add(1), "other owner"),
        ];
        for (p, uid, what) in cases {
            for action in [HelperAction::Lock, HelperAction::Unlock] {
                let r = dotlock_helper(action, &p, uid);
                assert!(refused(r.clone()), "{what} {action:?}: {r:?}");
                assert_eq!(r.unwrap_err().exit_code(), HELPER_EXIT_REFUSED);
            }
        }
        assert!(!dotlock_path(&link).exists());
        assert!(!dotlock_path(&path).exists());
    }

    #[test]
    fn helper_lock_busy_unlock_cycle() {
        let (_d, path, _f) = mailbox();
        let lp = dotlock_path(&path);
        let lock = |a| dotlock_helper(a, &path, me());
        assert_eq!(lock(HelperAction::Lock), Ok(HelperOutcome::Locked));
        assert_eq!(
            fs::read_to_string(&lp).unwrap(),
            format!("{}\n", nix::unistd::getppid())
        );
        assert_eq!(
            fs::metadata(&lp).unwrap().permissions().mode() & 0o777,
            DOTLOCK_MODE
        );
        assert_eq!(lock(HelperAction::Lock), Ok(HelperOutcome::Busy));
        assert_eq!(HelperOutcome::Busy.exit_code(), HELPER_EXIT_BUSY);
        assert_eq!(lock(HelperAction::Unlock), Ok(HelperOutcome::Unlocked));
        assert!(!lp.exists());
        // Unlocking what is not there is fine (idempotent release).
        assert_eq!(lock(HelperAction::Unlock), Ok(HelperOutcome::Unlocked));
    }

    #[test]
    fn helper_applies_the_fixed_stale_rule() {
        let old = STALE_DOTLOCK_AGE + Duration::from_secs(60);
        let table = [
            (old, old, HelperOutcome::Locked),
            (old, Duration::ZERO, HelperOutcome::Busy),
            (Duration::ZERO, old, HelperOutcome::Busy),
        ];
        for (lock_age, box_age, want) in table {
            let (_d, path, _f) = mailbox();
            let lp = dotlock_path(&path);
            fs::write(&lp, b"1\n").unwrap();
            backdate(&lp, lock_age);
            backdate(&path, box_age);
            assert_eq!(dotlock_helper(HelperAction::Lock, &path, me()), Ok(want));
        }
    }

    #[test]
    fn helper_unlock_removes_only_a_regular_file_of_the_caller() {
        let (d, path, _f) = mailbox();
        let lp = dotlock_path(&path);
        let target = d.path().join("precious");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, &lp).unwrap();
        assert!(refused(dotlock_helper(HelperAction::Unlock, &path, me())));
        assert!(refused(dotlock_helper(HelperAction::Lock, &path, me())));
        assert!(fs::symlink_metadata(&lp).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        fs::remove_file(&lp).unwrap();
        fs::create_dir(&lp).unwrap();
        assert!(refused(dotlock_helper(HelperAction::Unlock, &path, me())));
        fs::remove_dir(&lp).unwrap();
        // An MDA's dotlock (another owner) cannot be removed by the user: needs root to set up.
        if nix::unistd::geteuid().is_root() {
            fs::write(&lp, b"1\n").unwrap();
            let other = nix::unistd::Uid::from_raw(4242);
            nix::unistd::chown(&path, Some(other), None).unwrap();
            assert!(refused(dotlock_helper(HelperAction::Unlock, &path, 4242)));
            assert!(lp.exists());
            nix::unistd::chown(&lp, Some(other), None).unwrap();
            assert_eq!(
                dotlock_helper(HelperAction::Unlock, &path, 4242),
                Ok(HelperOutcome::Unlocked)
            );
        }
    }
}
