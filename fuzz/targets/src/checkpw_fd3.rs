//! The checkpassword fd-3 payload, `user\0password\0timestamp\0`, from any bytes: parsed
//! exactly as the interface and DJB's reference read it (see `auth::checkpw`), whether it
//! arrives at once, through a reader in small pieces, or on a descriptor through the bounded
//! reader `pop-checkpassword` uses (a socket pair standing in for fd 3).

use spool_login::auth::checkpw::{parse_reader, read_bounded, Credentials, FD3_MAX};
use spool_login::auth::{AuthError, Denied};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A reader that returns at most `step` bytes a call.
struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What the payload means, computed directly: `Ok((user, password, timestamp))`, or the
/// exit code of the failure (1 bad credentials, 2 misuse).
/// User, password and timestamp.
type Fields<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn reference(data: &[u8]) -> Result<Fields<'_>, u8> {
    if data.len() > FD3_MAX {
        return Err(1);
    }
    if data.is_empty() {
        return Err(2);
    }
    let mut fields = data.split(|&b| b == 0);
    let user = fields.next().ok_or(2)?;
    // A field without its NUL is the last piece of the split.
    let nuls = data.iter().filter(|&&b| b == 0).count();
    if nuls < 2 {
        return Err(2);
    }
    let password = fields.next().ok_or(2)?;
    let rest = &data[user.len() + password.len() + 2..];
    if rest.is_empty() {
        return Ok((user, password, rest));
    }
    match rest.iter().position(|&b| b == 0) {
        Some(n) => Ok((user, password, &rest[..n])),
        None => Err(2),
    }
}

fn check(data: &[u8], got: Result<Credentials, AuthError>) {
    match (reference(data), got) {
        (Ok((u, p, t)), Ok(c)) => {
            assert_eq!(c.user(), u);
            assert_eq!(c.password(), p);
            assert_eq!(c.timestamp(), t);
        }
        (Err(1), Err(e @ AuthError::BadCredentials(Denied::Oversized))) => {
            assert_eq!(e.exit_code(), 1)
        }
        (Err(2), Err(e @ AuthError::Misuse(_))) => assert_eq!(e.exit_code(), 2),
        (want, got) => panic!("reference {want:?}, parser {got:?}"),
    }
}

pub fn run(data: &[u8]) {
    check(data, Credentials::parse(data));
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    check(data, parse_reader(Dribble { data, step }));

    let (mut front, ours) = UnixStream::pair().expect("socketpair");
    front.write_all(data).expect("write fd 3");
    drop(front);
    let read = read_bounded(ours.as_fd(), Duration::from_secs(60));
    check(data, read.and_then(|bytes| Credentials::parse(&bytes)));
}
