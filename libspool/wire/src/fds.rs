//! Closing the descriptors a program inherited but does not own. Every program calls
//! [`close_inherited`] first thing in `main`, before it reads input or execs, so nothing a
//! superserver, an MTA or a hostile caller left open (a listening socket, a file of another
//! user, a pipe) reaches the next program in the chain.
//!
//! The rule a caller must not break: call it before anything in the process has opened a
//! descriptor of its own (a log socket, a lock), because everything from `first` up is closed.
//! Descriptors 0, 1 and 2 are the client (tcpserver and systemd `Accept=yes` pass it on 0 and
//! 1, inetd and xinetd on 0, 1 and 2) and are never touched. None of the programs takes
//! sockets by systemd's `LISTEN_FDS` protocol (a socket unit with `Accept=yes` hands the
//! connection on 0/1), so nothing above 2 is owed to anyone except fd 3 of
//! `pop-checkpassword`, which the checkpassword interface defines.
//!
//! This is also the crate's one system module: the calls that no safe wrapper covers
//! (`close_range`, the `SIGPIPE` disposition, borrowing a descriptor that the process's
//! contract keeps open) live here, and every other module forbids `unsafe`.

use std::os::fd::{BorrowedFd, RawFd};

/// The first descriptor a program that owns nothing above stdio closes.
pub const FIRST_INHERITED: RawFd = 3;

/// Where `pop-checkpassword` starts closing: fd 3 carries the credentials
/// (`auth::checkpw::CHECKPW_FD`) and is closed by the reader once consumed.
pub const FIRST_INHERITED_CHECKPASSWORD: RawFd = 4;

/// The fallback's bound when neither `close_range(2)` (Linux 5.9) nor `/proc/self/fd` is
/// there: descriptors up to the soft `RLIMIT_NOFILE`, at most this many.
const MAX_FALLBACK_FDS: u64 = 65_536;

/// Closes every descriptor numbered `first` or above. Never fails: a descriptor that cannot be
/// closed was not open.
pub fn close_inherited(first: RawFd) {
    let first = first.max(FIRST_INHERITED);
    // SAFETY: close_range takes two integers and a flag word and touches no memory of ours.
    // Nothing in this process holds a descriptor at or above `first` yet (the module's rule),
    // so no owned descriptor is closed behind its owner's back.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if r == 0 {
        return;
    }
    if close_listed(first).is_none() {
        close_up_to_limit(first);
    }
}

/// The descriptors `/proc/self/fd` lists at or above `first`, closed once the listing (whose
/// own descriptor is among them) is finished. None when `/proc` is not mounted.
fn close_listed(first: RawFd) -> Option<()> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first)
        .collect();
    for fd in fds {
        // The listing's own descriptor is already closed by now: EBADF, ignored.
        let _ = nix::unistd::close(fd);
    }
    Some(())
}

fn close_up_to_limit(first: RawFd) {
    // No soft limit (RLIM_INFINITY) means the bound alone.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(MAX_FALLBACK_FDS, |cur| cur.min(MAX_FALLBACK_FDS));
    for fd in first..limit as RawFd {
        let _ = nix::unistd::close(fd);
    }
}

/// As [`close_inherited`], but the descriptors in `keep` stay open: those a TLS front names
/// for `pop-popup` (UCSPI-TLS `SSLCTLFD`, `SSLREADFD`, `SSLWRITEFD`, or tlswrapper's fd 5),
/// validated by the caller. Numbers below `first` in `keep` are ignored.
pub fn close_inherited_except(first: RawFd, keep: &[RawFd]) {
    let first = first.max(FIRST_INHERITED);
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= first).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = first;
    for k in keep {
        for fd in lo..k {
            // Few and small numbers (the caller bounds them): one close each.
            let _ = nix::unistd::close(fd);
        }
        lo = k + 1;
    }
    close_inherited(lo);
}

/// Borrows `fd`, a descriptor the process's contract keeps open for its whole life: the
/// client's 0 and 1, a TLS front's descriptors (checked open at start-up), or
/// `pop-checkpassword`'s fd 3 until its reader closes it.
pub fn lifelong(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: every caller passes a descriptor of the kinds listed above, which nothing in the
    // process closes while the borrow is in use (fd 3 is closed only after its last read).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Ignores `SIGPIPE`, so a write to a client that has gone fails with `EPIPE`; the ignored
/// disposition is inherited across exec.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN is a valid disposition for SIGPIPE; no handler code is installed.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// The descriptors this process has open, from `/proc/self/fd` (for tests and diagnostics).
pub fn open_descriptors() -> Vec<RawFd> {
    let mut v: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;
    use std::sync::Mutex;

    /// The tests close every descriptor above a number in this one process: one at a time,
    /// or `close_up_to_limit(800)` closes what `kept_descriptors_survive` just made at 900.
    static PROCESS_FDS: Mutex<()> = Mutex::new(());

    #[test]
    fn kept_descriptors_survive() {
        let _one = PROCESS_FDS.lock().unwrap_or_else(|e| e.into_inner());
        let f = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        for fd in [900, 903, 905, 907] {
            nix::unistd::dup2(f, fd).unwrap();
        }
        let _ = nix::unistd::close(f);
        close_inherited_except(900, &[903, 907]);
        let left: Vec<_> = open_descriptors()
            .into_iter()
            .filter(|&fd| (900..1000).contains(&fd))
            .collect();
        assert_eq!(left, vec![903, 907]);
        for fd in left {
            let _ = nix::unistd::close(fd);
        }
    }

    #[test]
    fn the_fallbacks_close_what_close_range_would() {
        let _one = PROCESS_FDS.lock().unwrap_or_else(|e| e.into_inner());
        // Each path on descriptors made for it, far above what the test harness uses.
        for (base, path) in [(700, 0), (800, 1)] {
            let f = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
            for k in 0..3 {
                nix::unistd::dup2(f, base + k * 7).unwrap();
            }
            let _ = nix::unistd::close(f);
            if path == 0 {
                close_listed(base).unwrap();
            } else {
                close_up_to_limit(base);
            }
            let left: Vec<_> = open_descriptors()
                .into_iter()
                .filter(|&fd| fd >= base && fd < base + 100)
                .collect();
            assert!(left.is_empty(), "path {path}: still open {left:?}");
        }
    }
}
