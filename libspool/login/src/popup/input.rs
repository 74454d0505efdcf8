//! Reading the client without ever reading past the end of a line.
//!
//! Whatever the client pipelined after the line that starts the hand-off (`PASS`, `APOP`,
//! `AUTH`) belongs to the program the checkpassword program execs, which reads fd 0 itself.
//! Bytes cannot be pushed back into a socket or pipe, so they must never be taken out in the
//! first place: on a socket we `recv(MSG_PEEK)` and then consume exactly through the first LF;
//! on anything else (a pipe from a TLS front end) we read one byte at a time. The
//! AUTHORIZATION state is a few short lines, so neither costs anything that matters.

#![forbid(unsafe_code)]

use memchr::memchr;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};
use nix::sys::stat::{fstat, SFlag};
use spool_wire::timeio::{ClientInput, ReadOutcome};
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// A client descriptor read up to the next LF at most, with deadlines.
pub struct ExactLineInput {
    fd: RawFd,
    socket: bool,
}

impl ExactLineInput {
    /// Takes fd `fd` (normally 0). Its blocking mode is left alone: every read first waits in
    /// poll, and a socket is read with MSG_DONTWAIT.
    pub fn new(fd: RawFd) -> io::Result<ExactLineInput> {
        let st = fstat(fd).map_err(io::Error::from)?;
        let socket = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK;
        Ok(ExactLineInput { fd, socket })
    }

    /// True when fd 0 is a socket (peeked), false when it is read byte by byte. A socket
    /// replaced by a pipe on the same number is noticed at the next read.
    pub fn is_socket(&self) -> bool {
        self.socket
    }

    /// Waits until the descriptor is readable; false on timeout.
    fn wait(&self, deadline: Instant) -> io::Result<bool> {
        // The caller of `new` keeps the descriptor open for the life of self.
        let fd = spool_wire::fds::lifelong(self.fd);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn read_socket(&self, buf: &mut [u8]) -> nix::Result<usize> {
        let n = recv(self.fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)?;
        if n == 0 {
            return Ok(0);
        }
        let take = memchr(b'\n', &buf[..n]).map_or(n, |i| i + 1);
        // We are the only reader, so the peeked bytes are still there to take.
        recv(self.fd, &mut buf[..take], MsgFlags::MSG_DONTWAIT)
    }
}

impl ClientInput for ExactLineInput {
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome> {
        if buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty buffer"));
        }
        loop {
            if !self.wait(deadline)? {
                return Ok(ReadOutcome::TimedOut);
            }
            let r = if self.socket {
                self.read_socket(buf)
            } else {
                nix::unistd::read(self.fd, &mut buf[..1])
            };
            match r {
                // After STLS the client may be a pipe where a socket was (a UCSPI-TLS
                // front's pipes put on fd 0): read it byte by byte from then on.
                Err(Errno::ENOTSOCK) if self.socket => {
                    self.socket = false;
                    continue;
                }
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                // A reset connection is the client going away, not an error of ours.
                Err(Errno::ECONNRESET) => return Ok(ReadOutcome::Eof),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Reads lines one read at a time and returns what was consumed.
    fn take_lines(input: &mut ExactLineInput, lines: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.iter().filter(|&&b| b == b'\n').count() < lines {
            match input.read_until(&mut buf, far()).unwrap() {
                ReadOutcome::Data(n) => {
                    let lf = buf[..n].iter().position(|&b| b == b'\n');
                    assert!(lf.is_none_or(|i| i + 1 == n));
                    got.extend_from_slice(&buf[..n]);
                }
                other => panic!("{other:?}"),
            }
        }
        got
    }

    #[test]
    fn socket_is_never_read_past_a_line() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        nix::unistd::write(&b, b"USER x\r\nPASS y\r\nSTAT\r\n").unwrap();
        let mut input = ExactLineInput::new(a.as_raw_fd()).unwrap();
        assert!(input.is_socket());
        assert_eq!(take_lines(&mut input, 2), b"USER x\r\nPASS y\r\n");
        let mut rest = [0u8; 64];
        let n = nix::unistd::read(a.as_raw_fd(), &mut rest).unwrap();
        assert_eq!(&rest[..n], b"STAT\r\n");
    }

    #[test]
    fn pipe_is_never_read_past_a_line() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"USER x\r\nPASS y\r\nSTAT\r\n").unwrap();
        let mut input = ExactLineInput::new(r.as_raw_fd()).unwrap();
        assert!(!input.is_socket());
        assert_eq!(take_lines(&mut input, 2), b"USER x\r\nPASS y\r\n");
        drop(w);
        let mut rest = [0u8; 64];
        let n = nix::unistd::read(r.as_raw_fd(), &mut rest).unwrap();
        assert_eq!(&rest[..n], b"STAT\r\n");
    }

    #[test]
    fn timeout_and_eof() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut input = ExactLineInput::new(r.as_raw_fd()).unwrap();
        let mut buf = [0u8; 8];
        let t = Instant::now();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            input.read_until(&mut buf, soon).unwrap(),
            ReadOutcome::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(w);
        assert_eq!(input.read_until(&mut buf, far()).unwrap(), ReadOutcome::Eof);

        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        let mut input = ExactLineInput::new(a.as_raw_fd()).unwrap();
        drop(b);
        assert_eq!(input.read_until(&mut buf, far()).unwrap(), ReadOutcome::Eof);
    }

    #[test]
    fn long_line_on_socket_comes_in_buffer_sized_pieces() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        let line = [vec![b'x'; 150], b"\r\nNOOP\r\n".to_vec()].concat();
        nix::unistd::write(&b, &line).unwrap();
        let mut input = ExactLineInput::new(a.as_raw_fd()).unwrap();
        let mut buf = [0u8; 64];
        let mut total = 0;
        loop {
            let ReadOutcome::Data(n) = input.read_until(&mut buf, far()).unwrap() else {
                panic!()
            };
            total += n;
            if buf[n - 1] == b'\n' {
                break;
            }
        }
        assert_eq!(total, 152);
    }
}
