//! Bounded waits: the fcntl record lock retried until a deadline, and the stop flag a
//! program's signal handler sets to end every wait at once.

#![forbid(unsafe_code)]

use crate::error::MailboxError;
use nix::errno::Errno;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often a busy fcntl lock (session or content) is retried.
pub const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The dotlock is retried with exponential backoff from `LOCK_POLL_INTERVAL` up to this, so
/// a long wait does not hammer a (possibly NFS) spool directory.
pub const DOTLOCK_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Longest sleep of a lock wait between two looks at the stop flag: the signal that sets it
/// also cuts the sleep short, and this bounds the delay when it lands just before a sleep.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Set by a program's signal handler through [`request_stop`]; polled by every lock wait.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every lock wait of this process to give up with [`MailboxError::Interrupted`]. Only an
/// atomic store: safe to call from a signal handler.
pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Sleeps for `d`, or less if a stop is requested: `Err(Interrupted)` then. One `nanosleep` per
/// slice, which a caught signal without `SA_RESTART` ends early (`std::thread::sleep` would
/// resume it).
pub(super) fn pause(d: Duration) -> Result<(), MailboxError> {
    let end = Instant::now() + d;
    loop {
        if stop_requested() {
            return Err(MailboxError::Interrupted);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        let slice = (end - now).min(STOP_CHECK_INTERVAL);
        let ts = rustix::thread::Timespec {
            tv_sec: 0,
            // Below one second (STOP_CHECK_INTERVAL), so it fits every platform's c_long.
            tv_nsec: slice.subsec_nanos().into(),
        };
        // EINTR is the point (we look at the flag again); nothing else can go wrong.
        let _ = rustix::thread::nanosleep(&ts);
    }
}

pub(super) fn lock_record(kind: libc::c_int) -> libc::flock {
    // Zero l_start/l_len with SEEK_SET means the whole file.
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Non-blocking whole-file POSIX record lock (the kind procmail, Postfix and mail.local take).
pub(super) fn set_fcntl(file: &File, kind: libc::c_int) -> Result<(), Errno> {
    let fl = lock_record(kind);
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&fl)).map(drop)
}

/// Retries a non-blocking fcntl lock of `kind` (`F_WRLCK` or `F_RDLCK`) until `deadline`.
/// `Ok(false)` when still busy.
pub(super) fn fcntl_until(
    file: &File,
    kind: libc::c_int,
    deadline: Instant,
    what: &'static str,
) -> Result<bool, MailboxError> {
    loop {
        match set_fcntl(file, kind) {
            Ok(()) => return Ok(true),
            Err(Errno::EINTR) => pause(Duration::ZERO)?,
            Err(Errno::EAGAIN | Errno::EACCES) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                pause(LOCK_POLL_INTERVAL.min(deadline - now))?;
            }
            Err(e) => return Err(MailboxError::Io(what, e.into())),
        }
    }
}

pub(super) fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}

pub(super) fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}
