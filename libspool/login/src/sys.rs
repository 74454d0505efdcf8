//! The login crate's system module: starting the checkpassword program with fork and exec,
//! which no safe wrapper covers. The crypt FFI lives in `auth::crypt`.

use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;
use std::os::fd::RawFd;

/// The fd the checkpassword interface reads from.
const FD3: RawFd = 3;

/// Forks; the child makes `read_end` its fd 3, restores the default `SIGPIPE` and execs
/// `argv` (searched in PATH), or exits 111. Returns the child's pid to the parent.
pub(crate) fn spawn_with_fd3(argv: &[CString], read_end: RawFd) -> nix::Result<Pid> {
    // Built before the fork: the child must not allocate.
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: the child only calls async-signal-safe functions (exec_child) before exec or
    // _exit, which is sound after fork whatever other threads the parent has.
    match unsafe { fork() }? {
        ForkResult::Child => exec_child(read_end, &ptrs),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// In the child, between fork and exec: only async-signal-safe calls (no allocation, no
/// locks), then exec or `_exit(111)`.
fn exec_child(read_end: RawFd, argv: &[*const libc::c_char]) -> ! {
    // SAFETY: plain syscalls on descriptors and signal dispositions of this (child) process;
    // `argv` is a NULL-terminated array of pointers to the CStrings of `spawn_with_fd3`'s
    // caller, alive across the fork, so valid in the child's copy of the address space.
    unsafe {
        let ok = if read_end == FD3 {
            // The pipe was made close-on-exec; fd 3 itself must survive exec.
            libc::fcntl(FD3, libc::F_SETFD, 0) == 0
        } else {
            // dup2 gives fd 3 without close-on-exec; the original closes at exec.
            libc::dup2(read_end, FD3) == FD3
        };
        if ok {
            // Rust ignores SIGPIPE; the checkpassword chain expects the default (qmail-popup's
            // sig_pipedefault).
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execvp(argv[0], argv.as_ptr());
        }
        libc::_exit(111)
    }
}

/// Runs `f` in a forked child that ends with `_exit(f())`, and returns how it ended; for
/// tests that change the whole process.
#[cfg(test)]
pub(crate) fn in_forked_child(f: fn() -> i32) -> nix::sys::wait::WaitStatus {
    // SAFETY: test-only. The child runs `f` (small allocations at most; the test harness's
    // other threads hold no allocator lock at fork time in practice, and a deadlock would show
    // as a hung test) and then _exits without running the harness's destructors.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = f();
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).unwrap(),
    }
}

/// Forks a process that has a single thread, so that the child may allocate and take locks
/// like any program. Refuses when the process has more than one thread (counted in
/// /proc/self/task), since another thread could hold a lock the child would then wait on
/// forever.
pub(crate) fn fork_single_threaded() -> std::io::Result<ForkResult> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(std::io::Error::other(format!(
            "{threads} threads: cannot fork safely"
        )));
    }
    // SAFETY: the process has one thread (checked just above, and nothing started since), so
    // no lock can be held by a thread that does not exist in the child.
    unsafe { fork() }.map_err(std::io::Error::from)
}

/// Takes ownership of a descriptor the kernel just installed for a received `SCM_RIGHTS`
/// message, so it is closed when dropped.
pub(crate) fn own_received(fd: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel installed `fd` in this process's table for the message just
    // received; nothing else refers to it, so this is its only owner.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}
