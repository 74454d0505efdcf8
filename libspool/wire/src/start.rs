//! The entry point of the login chain's programs (`pop-popup`, `pop-checkpassword`,
//! `pop-serve`), which run once per POP3 session, in place of std's `lang_start`.
//!
//! std's runtime start-up finds the main thread's stack bounds for its stack-overflow message
//! with `pthread_getattr_np`, which glibc answers by reading and `sscanf`-parsing all of
//! `/proc/self/maps`: about 100,000 instructions, a sixth of each program's start-up. A program
//! that declares `#![no_main]` and calls [`run`] from its C `main` skips that and keeps the rest
//! of what std's start-up does for it:
//!
//! - descriptors 0, 1 and 2 that are closed are opened on `/dev/null`, so that no descriptor
//!   the program opens later (a mailbox, a lock) can be taken for stdin, stdout or stderr;
//! - `SIGPIPE` is ignored, so a write to a client that has gone fails with `EPIPE` (as before,
//!   the ignored disposition is inherited across exec);
//! - a panic ends the program with status 101, and stdout is flushed at exit.
//!
//! It also does one thing std does not: [`no_core_files`], since these programs hold passwords
//! or other people's mail.
//!
//! What is given up: a stack overflow in the main thread is a plain `SIGSEGV` rather than
//! std's "has overflowed its stack" message first. Command-line arguments are still read by
//! `std::env::args_os` (glibc hands them to std before `main`).

#![forbid(unsafe_code)]

use std::os::raw::c_int;
use std::panic::{self, AssertUnwindSafe};

/// Declares the program's C `main`, which calls [`run`] with `$main` (a `fn() -> u8`). For a
/// crate with `#![no_main]`; left out of test builds, where the test harness has the `main`.
#[macro_export]
macro_rules! lean_main {
    ($main:path) => {
        /// The C entry point: std's start-up minus its costly stack probe (see
        /// `spool_wire::start`).
        #[cfg(not(test))]
        #[no_mangle]
        extern "C" fn main(
            _argc: ::std::os::raw::c_int,
            _argv: *const *const ::std::os::raw::c_char,
        ) -> ::std::os::raw::c_int {
            $crate::start::run($main)
        }
    };
}

/// The exit status of a program whose `main` panicked, as with std's own start-up.
pub const PANIC_STATUS: c_int = 101;

/// Runs `main` the way std's start-up would and exits with its status; never returns.
pub fn run(main: fn() -> u8) -> c_int {
    open_closed_stdio();
    no_core_files();
    crate::fds::ignore_sigpipe();
    let status = match panic::catch_unwind(AssertUnwindSafe(main)) {
        Ok(code) => c_int::from(code),
        Err(_) => PANIC_STATUS,
    };
    // process::exit flushes std's stdout before exiting.
    std::process::exit(status)
}

/// Sets `RLIMIT_CORE` to 0, soft and hard, so that a crash never writes a core file holding
/// a password, a key or someone's mail; the limit is inherited across fork and exec by the
/// rest of the chain. Every toolkit program calls it first. A failure (a seccomp filter that
/// forbids setrlimit) is ignored: the program is not dumpable where that matters
/// (pop-popup, pop-tls) and the kernel's own `suid_dumpable` rules still apply.
pub fn no_core_files() {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed; aborts when that fails,
/// as std's start-up does.
fn open_closed_stdio() {
    for fd in 0..3 {
        // F_GETFD only reads the descriptor's flags; an unused number is EBADF.
        let closed =
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF);
        if !closed {
            continue;
        }
        // open returns the lowest free descriptor, which is `fd` since every lower one is open.
        let got = nix::fcntl::open(
            c"/dev/null",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        );
        if got != Ok(fd) {
            std::process::abort();
        }
    }
}
