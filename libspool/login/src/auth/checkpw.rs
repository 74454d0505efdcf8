//! The checkpassword interface's input (<https://cr.yp.to/checkpwd/interface.html>): fd 3
//! carries `user\0password\0timestamp\0`, at most [`FD3_MAX`] bytes, then EOF.
//!
//! Compatibility decisions, following DJB's reference checkpassword where the interface text is
//! silent:
//! - more than [`FD3_MAX`] bytes is *bad credentials* (exit 1), not misuse: the reference does
//!   so, and the overflow is what a client typing an absurd password causes, so the front end
//!   should answer it like any failed login;
//! - no bytes at all, or a user or password without its terminating NUL, is misuse (exit 2);
//! - nothing after the password's NUL is an empty timestamp (the reference never reads the
//!   timestamp, and some front ends omit it); a timestamp that is present must end in a NUL;
//!   bytes after the timestamp's NUL are ignored.

#![forbid(unsafe_code)]

use super::AuthError;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, Read};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The descriptor the interface passes credentials on.
pub const CHECKPW_FD: i32 = 3;

/// The interface's limit on the fd-3 data.
pub const FD3_MAX: usize = 512;

/// How long the front end may take to write fd 3 and close it. The front end writes all at
/// once, so anything slower is a stuck or hostile caller: temporary failure.
pub const FD3_TIMEOUT: Duration = Duration::from_secs(60);

/// Credentials from fd 3. The buffer is wiped when this is dropped.
pub struct Credentials {
    buf: Zeroizing<Vec<u8>>,
    user: Range<usize>,
    password: Range<usize>,
    timestamp: Range<usize>,
}

impl std::fmt::Debug for Credentials {
    // Never print the password, even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(self.user()))
            .field("timestamp", &String::from_utf8_lossy(self.timestamp()))
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Parses the fd-3 bytes (already bounded by the reader).
    pub fn parse(data: &[u8]) -> Result<Credentials, AuthError> {
        if data.len() > FD3_MAX {
            return Err(AuthError::BadCredentials(super::Denied::Oversized));
        }
        if data.is_empty() {
            return Err(AuthError::Misuse("nothing on fd 3".into()));
        }
        let field = |from: usize, what: &str| -> Result<Range<usize>, AuthError> {
            match memchr::memchr(0, &data[from..]) {
                Some(n) => Ok(from..from + n),
                None => Err(AuthError::Misuse(format!("{what} on fd 3 lacks its NUL"))),
            }
        };
        let user = field(0, "user")?;
        let password = field(user.end + 1, "password")?;
        let ts_start = password.end + 1;
        let timestamp = if ts_start == data.len() {
            ts_start..ts_start
        } else {
            field(ts_start, "timestamp")?
        };
        Ok(Credentials {
            buf: Zeroizing::new(data.to_vec()),
            user,
            password,
            timestamp,
        })
    }

    pub fn user(&self) -> &[u8] {
        &self.buf[self.user.clone()]
    }

    pub fn password(&self) -> &[u8] {
        &self.buf[self.password.clone()]
    }

    pub fn timestamp(&self) -> &[u8] {
        &self.buf[self.timestamp.clone()]
    }
}

/// Reads fd-3 data from `fd` until EOF: at most [`FD3_MAX`] bytes, within `timeout`.
/// One byte more than the limit is enough to know it was exceeded.
pub fn read_bounded(
    fd: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, AuthError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Zeroizing::new(vec![0u8; FD3_MAX + 1]);
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AuthError::Temporary("timed out reading fd 3".into()));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(AuthError::Temporary(format!("poll on fd 3: {e}"))),
        }
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len > FD3_MAX {
                    return Err(AuthError::BadCredentials(super::Denied::Oversized));
                }
            }
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(nix::errno::Errno::EBADF) => {
                return Err(AuthError::Misuse("fd 3 is not open".into()))
            }
            Err(e) => return Err(AuthError::Temporary(format!("reading fd 3: {e}"))),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Reads and parses the credentials on [`CHECKPW_FD`], then closes it so the next program does
/// not inherit it.
pub fn read_credentials(timeout: Duration) -> Result<Credentials, AuthError> {
    // fcntl(F_GETFD) tells "not open" apart before we borrow the descriptor.
    if nix::fcntl::fcntl(CHECKPW_FD, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(AuthError::Misuse("fd 3 is not open".into()));
    }
    // fd 3 is open (checked just above) and by the checkpassword contract belongs to us; it is
    // closed only after the last read.
    let fd = spool_wire::fds::lifelong(CHECKPW_FD);
    let data = read_bounded(fd, timeout);
    // Closing fails only if fd 3 was not open, which was ruled out; nothing to recover anyway.
    let _ = nix::unistd::close(CHECKPW_FD);
    Credentials::parse(&data?)
}

/// Whole-buffer helper for tests and for callers that already hold the bytes.
pub fn parse_reader<R: io::Read>(r: R) -> Result<Credentials, AuthError> {
    let mut data = Zeroizing::new(Vec::with_capacity(FD3_MAX + 1));
    r.take(FD3_MAX as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| AuthError::Temporary(format!("reading credentials: {e}")))?;
    Credentials::parse(&data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Denied;
    use proptest::prelude::*;

    #[derive(Debug)]
    enum Want {
        Ok(&'static [u8], &'static [u8], &'static [u8]),
        Misuse,
    }

    #[test]
    fn parse_table() {
        let cases: &[(&[u8], Want)] = &[
            (
                b"alice\0secret\0<1.2@host>\0",
                Want::Ok(b"alice", b"secret", b"<1.2@host>"),
            ),
            (b"alice\0secret\0\0", Want::Ok(b"alice", b"secret", b"")),
            (b"alice\0secret\0", Want::Ok(b"alice", b"secret", b"")),
            (
                b"alice\0secret\0ts\0trailing",
                Want::Ok(b"alice", b"secret", b"ts"),
            ),
            (b"\0\0\0", Want::Ok(b"", b"", b"")),
            (b"alice\0\0\0", Want::Ok(b"alice", b"", b"")),
            (b"", Want::Misuse),
            (b"alice", Want::Misuse),
            (b"alice\0", Want::Misuse),
            (b"alice\0secret", Want::Misuse),
            (b"alice\0secret\0ts", Want::Misuse),
        ];
        for (input, want) in cases {
            let got = Credentials::parse(input);
            match (want, got) {
                (Want::Ok(u, p, t), Ok(c)) => {
                    assert_eq!((c.user(), c.password(), c.timestamp()), (*u, *p, *t))
                }
                (Want::Misuse, Err(AuthError::Misuse(_))) => {}
                (w, g) => panic!("{input:?}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn size_limit() {
        let mut at_limit = b"u\0".to_vec();
        at_limit.resize(FD3_MAX - 2, b'p');
        at_limit.extend_from_slice(b"\0\0");
        assert_eq!(at_limit.len(), FD3_MAX);
        assert!(parse_reader(&at_limit[..]).is_ok());
        let mut over = at_limit.clone();
        over.insert(3, b'p');
        assert!(matches!(
            parse_reader(&over[..]),
            Err(AuthError::BadCredentials(Denied::Oversized))
        ));
    }

    fn pipe_with(data: &[u8]) -> std::os::fd::OwnedFd {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, data).unwrap();
        drop(w);
        r
    }

    #[test]
    fn reads_a_pipe_to_eof_and_bounds_it() {
        let r = pipe_with(b"bob\0pw\0\0");
        let d = read_bounded(r.as_fd(), Duration::from_secs(5)).unwrap();
        assert_eq!(&d[..], b"bob\0pw\0\0");
        let r = pipe_with(&[b'x'; FD3_MAX + 1]);
        assert!(matches!(
            read_bounded(r.as_fd(), Duration::from_secs(5)),
            Err(AuthError::BadCredentials(Denied::Oversized))
        ));
    }

    #[test]
    fn a_writer_that_never_closes_times_out() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"bob\0").unwrap();
        let got = read_bounded(r.as_fd(), Duration::from_millis(50));
        assert!(matches!(got, Err(AuthError::Temporary(_))), "{got:?}");
        drop(w);
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            match Credentials::parse(&data) {
                Ok(c) => {
                    prop_assert!(!c.user().contains(&0));
                    prop_assert!(!c.password().contains(&0));
                    prop_assert!(!c.timestamp().contains(&0));
                    prop_assert!(data.len() <= FD3_MAX);
                }
                Err(e) => { let _ = e.exit_code(); }
            }
        }
    }
}
