//! The measuring spawner: `popspool-bench __spawn UID GID PROGRAM ARGS...`, run by the bench
//! with the server's stdin/stdout and a report pipe on fd 3.
//!
//! Why a separate process: Linux counts a forked child's copy of its parent's resident pages
//! in the child's `ru_maxrss` (exec folds the old mm's high-water mark in). Forked straight
//! from the bench, every server would be charged for the bench's buffers (several MiB, the same
//! for both servers, hiding the real difference). This spawner is freshly exec'd and touches
//! almost nothing before it forks, so the floor it adds is small, and it is measured
//! (`/bin/true` through the same path) and printed with the results.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

/// The fd the spawner writes its report to: `wall_ns max_rss_kb status`.
pub const REPORT_FD: libc::c_int = 3;
/// The hidden first argument that selects spawner mode.
pub const SPAWN_ARG: &str = "__spawn";

fn fail(msg: &str) -> ! {
    eprintln!("popspool-bench spawner: {msg}");
    std::process::exit(111);
}

/// Spawner mode: never returns.
pub fn main(args: &[std::ffi::OsString]) -> ! {
    if args.len() < 3 {
        fail("usage: __spawn UID GID PROGRAM [ARGS...]");
    }
    let ids = |s: &std::ffi::OsStr| -> Option<u32> {
        let s = s.to_str()?;
        if s == "-" {
            None
        } else {
            Some(s.parse().unwrap_or_else(|_| fail("bad uid/gid")))
        }
    };
    let uid = ids(&args[0]);
    let gid = ids(&args[1]);
    let cargs: Vec<CString> = args[2..]
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| fail("NUL in argument")))
        .collect();
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut t0 = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t0 is a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0) };
    // SAFETY: this process is single-threaded here (nothing has spawned a thread), so the
    // child may run anything; it only makes system calls and execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("fork failed");
    }
    if pid == 0 {
        // SAFETY: in the child: plain system calls on valid pointers (argv is
        // NUL-terminated, its strings outlive the call), then exec or _exit.
        unsafe {
            libc::close(REPORT_FD);
            if let Some(g) = gid {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(g) != 0 {
                    libc::_exit(126);
                }
            }
            if let Some(u) = uid {
                if libc::setuid(u) != 0 {
                    libc::_exit(126);
                }
            }
            libc::execv(argv[0], argv.as_ptr());
            libc::_exit(127);
        }
    }
    // The server alone holds the pipes now: EOF on its stdout is its own exit.
    // SAFETY: closing our copies of stdin/stdout; nothing here uses them again.
    unsafe {
        libc::close(0);
        libc::close(1);
    }
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and usage are live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let mut t1 = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t1 is a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t1) };
    if r != pid {
        fail("wait4 failed");
    }
    let ns = (t1.tv_sec - t0.tv_sec) as i128 * 1_000_000_000 + (t1.tv_nsec - t0.tv_nsec) as i128;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let report = format!("{ns} {} {code}\n", usage.ru_maxrss);
    // SAFETY: writing a live buffer to the report fd the bench gave us.
    unsafe { libc::write(REPORT_FD, report.as_ptr().cast(), report.len()) };
    std::process::exit(0);
}
