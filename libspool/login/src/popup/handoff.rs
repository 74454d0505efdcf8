//! The checkpassword hand-off, as qmail-popup's `doanddie`: a pipe whose read end is fd 3 in
//! the child, fork, exec CHECKPROG SUBPROG ARGS unchanged, write `user\0secret\0timestamp\0`,
//! close, wipe, wait, and report how the child ended.

#![forbid(unsafe_code)]

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;

/// The checkpassword interface's input limit: the whole fd-3 payload is at most this long.
pub const MAX_CHECKPASSWORD_INPUT: usize = 512;

/// How the checkpassword program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckStatus {
    /// Exit 0: the credentials were good and the program it exec'd served the session.
    Served,
    /// Exit 1: bad credentials.
    Rejected,
    /// Exit 2: the checkpassword program says it was misused (bad input or configuration).
    Misuse,
    /// Exit 111 (temporary failure) or any other exit status.
    TempFail(i32),
    /// Killed by this signal.
    Crashed(i32),
    /// It could not even be started (pipe or fork failed; exec failure shows as exit 111).
    SpawnFailed(String),
}

/// Runs the checkpassword program on one payload. A trait so that the state machine is tested
/// without processes.
pub trait Checker {
    /// `payload` is `user\0secret\0timestamp\0`, at most [`MAX_CHECKPASSWORD_INPUT`] bytes.
    fn check(&mut self, payload: &[u8]) -> CheckStatus;
}

/// Why a command line for the checkpassword program is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgvError {
    /// Fewer than CHECKPROG and SUBPROG.
    TooFew,
    /// An argument contains a NUL byte and cannot be passed to exec.
    Nul(usize),
}

impl std::fmt::Display for ArgvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgvError::TooFew => write!(f, "CHECKPROG and SUBPROG are required"),
            ArgvError::Nul(i) => write!(f, "argument {i} of CHECKPROG contains a NUL byte"),
        }
    }
}

/// The real hand-off: fork and exec the checkpassword program.
pub struct ExecChecker {
    argv: Vec<CString>,
    /// The client's descriptors: put back in blocking mode for the child, as qmail-popup's
    /// children expect, and restored afterwards.
    client_fds: [RawFd; 2],
}

impl ExecChecker {
    /// `argv` is CHECKPROG SUBPROG [ARGS...], passed through unchanged.
    pub fn new(argv: Vec<OsString>) -> Result<ExecChecker, ArgvError> {
        if argv.len() < 2 {
            return Err(ArgvError::TooFew);
        }
        let argv = argv
            .into_iter()
            .enumerate()
            .map(|(i, a)| CString::new(a.into_vec()).map_err(|_| ArgvError::Nul(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExecChecker {
            argv,
            client_fds: [0, 1],
        })
    }

    /// The program that will be run, for logs.
    pub fn program(&self) -> String {
        self.argv[0].to_string_lossy().into_owned()
    }
}

/// Clears O_NONBLOCK on `fd`, returning the flags to restore; None if fd is not open.
fn make_blocking(fd: RawFd) -> Option<OFlag> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).ok()?);
    let _ = fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK));
    Some(flags)
}

impl Checker for ExecChecker {
    fn check(&mut self, payload: &[u8]) -> CheckStatus {
        debug_assert!(payload.len() <= MAX_CHECKPASSWORD_INPUT);
        // Close-on-exec, so neither end leaks into the child except as fd 3.
        let (r, w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => return CheckStatus::SpawnFailed(format!("pipe: {e}")),
        };
        let saved: Vec<(RawFd, Option<OFlag>)> = self
            .client_fds
            .iter()
            .map(|&fd| (fd, make_blocking(fd)))
            .collect();
        let restore = || {
            for (fd, flags) in &saved {
                if let Some(f) = flags {
                    let _ = fcntl(*fd, FcntlArg::F_SETFL(*f));
                }
            }
        };

        let child = match crate::sys::spawn_with_fd3(&self.argv, r.as_raw_fd()) {
            Ok(child) => child,
            Err(e) => {
                restore();
                return CheckStatus::SpawnFailed(format!("fork: {e}"));
            }
        };
        drop(r);
        // At most 512 bytes into an empty pipe: one write that cannot block. If the child
        // exits without reading, EPIPE (SIGPIPE is ignored); its exit status tells the rest.
        let mut left = payload;
        while !left.is_empty() {
            match nix::unistd::write(&w, left) {
                Ok(n) => left = &left[n..],
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        drop(w);

        let status = loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    break match code {
                        0 => CheckStatus::Served,
                        1 => CheckStatus::Rejected,
                        2 => CheckStatus::Misuse,
                        c => CheckStatus::TempFail(c),
                    }
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => break CheckStatus::Crashed(sig as i32),
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => break CheckStatus::SpawnFailed(format!("waitpid: {e}")),
            }
        };
        restore();
        status
    }
}

impl From<io::Error> for CheckStatus {
    fn from(e: io::Error) -> CheckStatus {
        CheckStatus::SpawnFailed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sh(script: &str) -> ExecChecker {
        ExecChecker::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
        ])
        .unwrap()
    }

    #[test]
    fn argv_checks() {
        assert!(matches!(ExecChecker::new(vec![]), Err(ArgvError::TooFew)));
        assert!(matches!(
            ExecChecker::new(vec!["a".into()]),
            Err(ArgvError::TooFew)
        ));
        assert!(matches!(
            ExecChecker::new(vec!["a".into(), "b\0c".into()]),
            Err(ArgvError::Nul(1))
        ));
    }

    #[test]
    fn exit_statuses() {
        let cases = [
            ("exit 0", CheckStatus::Served),
            ("exit 1", CheckStatus::Rejected),
            ("exit 2", CheckStatus::Misuse),
            ("exit 111", CheckStatus::TempFail(111)),
            ("exit 7", CheckStatus::TempFail(7)),
            ("kill -KILL $$", CheckStatus::Crashed(libc::SIGKILL)),
        ];
        for (script, want) in cases {
            assert_eq!(sh(script).check(b"u\0p\0<t>\0"), want, "{script}");
        }
    }

    #[test]
    fn exec_failure_is_temporary() {
        let mut c = ExecChecker::new(vec!["/nonexistent/ckpw".into(), "x".into()]).unwrap();
        assert_eq!(c.check(b"u\0p\0<t>\0"), CheckStatus::TempFail(111));
    }

    #[test]
    fn fd3_carries_the_payload_exactly_whatever_fds_pipe_returns() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let script = format!("cat <&3 > '{}'", out.display());
        let payload = b"user\0pass word\0<1.2.3.abc@host>\0";
        // Run once with fd 3 free (the pipe's read end lands on 3 itself) and once with 3
        // taken (the read end is elsewhere and is dup2'd onto 3).
        for occupy in [false, true] {
            let hold = if occupy {
                let f = std::fs::File::open("/dev/null").unwrap();
                Some(f)
            } else {
                None
            };
            let _ = std::fs::remove_file(&out);
            assert_eq!(sh(&script).check(payload), CheckStatus::Served);
            let mut got = Vec::new();
            std::fs::File::open(&out)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, payload);
            drop(hold);
        }
    }

    #[test]
    fn child_that_never_reads_is_fine() {
        assert_eq!(
            sh("exec 3<&-; exit 1").check(&[b'x'; 512]),
            CheckStatus::Rejected
        );
    }

    #[test]
    fn write_end_does_not_reach_the_child() {
        // Were the write end open in the child, reading fd 3 to EOF would never finish.
        assert_eq!(
            sh("cat <&3 >/dev/null; exit 0").check(b"a\0b\0c\0"),
            CheckStatus::Served
        );
    }
}
