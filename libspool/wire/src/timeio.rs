//! Reading and writing the client's descriptors with deadlines.
//!
//! The client is on fds 0 and 1 (a pipe, a socketpair from systemd, or one socket duplicated on
//! both by inetd or tcpserver). Both are switched to non-blocking mode and every read or write
//! waits in `poll` with a deadline, so a client that stops reading or drips bytes can never
//! hold a session past its limits. Nothing here knows about POP3.

#![forbid(unsafe_code)]

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

/// What one timed read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Data(usize),
    Eof,
    TimedOut,
}

/// Where a session's commands come from.
pub trait ClientInput {
    /// Reads what is available into `buf`, waiting at most until `deadline`.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome>;
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(raw, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Milliseconds until `deadline` for poll, saturated, at least 0.
fn poll_timeout(deadline: Instant) -> PollTimeout {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_millis().min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

fn wait_for(fd: BorrowedFd<'_>, what: PollFlags, deadline: Instant) -> io::Result<bool> {
    loop {
        let mut fds = [PollFd::new(fd, what)];
        match poll(&mut fds, poll_timeout(deadline)) {
            Ok(0) => {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A client descriptor read with deadlines.
pub struct FdInput {
    fd: RawFd,
}

impl FdInput {
    /// Takes fd `fd` (normally 0) and makes it non-blocking.
    pub fn new(fd: RawFd) -> io::Result<FdInput> {
        let b = crate::fds::lifelong(fd);
        set_nonblocking(b)?;
        Ok(FdInput { fd })
    }
}

impl ClientInput for FdInput {
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome> {
        let fd = crate::fds::lifelong(self.fd);
        loop {
            match nix::unistd::read(self.fd, buf) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(nix::errno::Errno::EAGAIN) => {
                    if !wait_for(fd, PollFlags::POLLIN, deadline)? {
                        return Ok(ReadOutcome::TimedOut);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // A reset connection is the client going away, not an error of ours.
                Err(nix::errno::Errno::ECONNRESET) => return Ok(ReadOutcome::Eof),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A client descriptor written with a per-write progress deadline: each write must make
/// progress within `timeout`, else the write fails with `TimedOut`.
pub struct FdOutput {
    fd: RawFd,
    timeout: Duration,
}

/// Capacity asked for when the client's output is a pipe (a TLS front such as an UCSPI-TLS
/// program, or a test harness, rather than a socket). Linux's default is 64 KiB, which makes
/// writer and reader wake each other every 64 KiB of a large RETR; with 1 MiB, RETR of every
/// message of the 981 MB benchmark mbox took about 10% less wall time. The kernel allocates
/// the pages only as they fill, and refuses the request (ignored: the default stays) beyond
/// `/proc/sys/fs/pipe-max-size` or the user's `pipe-user-pages-soft` share.
pub const OUTPUT_PIPE_SIZE: i32 = 1 << 20;

impl FdOutput {
    /// Takes fd `fd` (normally 1) and makes it non-blocking; a pipe is grown to
    /// [`OUTPUT_PIPE_SIZE`] when the kernel allows.
    pub fn new(fd: RawFd, timeout: Duration) -> io::Result<FdOutput> {
        let b = crate::fds::lifelong(fd);
        set_nonblocking(b)?;
        let is_pipe =
            nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
        if is_pipe {
            let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_SIZE));
        }
        Ok(FdOutput { fd, timeout })
    }
}

impl Write for FdOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = crate::fds::lifelong(self.fd);
        let deadline = Instant::now() + self.timeout;
        loop {
            match nix::unistd::write(fd, buf) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EAGAIN) => {
                    if !wait_for(fd, PollFlags::POLLOUT, deadline)? {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        ));
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An in-memory client for tests: hands out its script in the given chunk sizes, then EOF
/// (or a timeout, to test timeouts without waiting).
pub struct ScriptedInput {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    end_with_timeout: bool,
}

impl ScriptedInput {
    pub fn new(data: &[u8], chunk: usize) -> ScriptedInput {
        ScriptedInput {
            data: data.to_vec(),
            pos: 0,
            chunk: chunk.max(1),
            end_with_timeout: false,
        }
    }
    /// After the script, report a timeout instead of EOF.
    pub fn then_timeout(mut self) -> ScriptedInput {
        self.end_with_timeout = true;
        self
    }
}

impl ClientInput for ScriptedInput {
    fn read_until(&mut self, buf: &mut [u8], _deadline: Instant) -> io::Result<ReadOutcome> {
        if self.pos >= self.data.len() {
            return Ok(if self.end_with_timeout {
                ReadOutcome::TimedOut
            } else {
                ReadOutcome::Eof
            });
        }
        let n = self.chunk.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(ReadOutcome::Data(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_times_out_on_silent_pipe() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut input = FdInput::new(r.as_raw_fd()).unwrap();
        let mut buf = [0u8; 16];
        let t = Instant::now();
        let out = input
            .read_until(&mut buf, Instant::now() + Duration::from_millis(50))
            .unwrap();
        assert_eq!(out, ReadOutcome::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn read_sees_data_and_eof() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"abc").unwrap();
        drop(w);
        let mut input = FdInput::new(r.as_raw_fd()).unwrap();
        let mut buf = [0u8; 16];
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            input.read_until(&mut buf, far).unwrap(),
            ReadOutcome::Data(3)
        );
        assert_eq!(input.read_until(&mut buf, far).unwrap(), ReadOutcome::Eof);
    }

    #[test]
    fn write_times_out_when_reader_stalls() {
        let (_r, w) = nix::unistd::pipe().unwrap();
        let mut out = FdOutput::new(w.as_raw_fd(), Duration::from_millis(50)).unwrap();
        // More than the grown pipe holds.
        let big = vec![b'x'; 4 * OUTPUT_PIPE_SIZE as usize];
        let err = out.write_all(&big).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn an_output_pipe_is_grown_when_the_kernel_allows() {
        let (_r, w) = nix::unistd::pipe().unwrap();
        let _out = FdOutput::new(w.as_raw_fd(), Duration::from_millis(50)).unwrap();
        let got = fcntl(w.as_raw_fd(), FcntlArg::F_GETPIPE_SZ).unwrap();
        let max: i32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if max >= OUTPUT_PIPE_SIZE {
            assert_eq!(got, OUTPUT_PIPE_SIZE);
        } else {
            assert!(got > 0);
        }
        // A socket is left alone (and the call does not fail).
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        FdOutput::new(a.as_raw_fd(), Duration::from_millis(50)).unwrap();
    }
}
