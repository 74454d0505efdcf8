//! Moving bytes: the handshake under a deadline, then the relay between the client (TLS
//! records) and the program's pipes (plaintext), in one poll loop without threads.
//!
//! Memory is bounded whatever the message size: one [`RELAY_BUF`] buffer each way, plus what
//! rustls holds for at most two buffers' worth of records. The program's output is read only
//! while less than one buffer's worth of records waits for the socket, and the client is read
//! only when the program has taken the previous plaintext.

use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Bytes moved per read in each direction. Large, so that a RETR of a big message costs few
/// system calls and full-sized records (16 KiB each) go out together.
pub const RELAY_BUF: usize = 256 << 10;

/// Pipes to and from the program are grown to this size where the kernel allows it
/// (`/proc/sys/fs/pipe-max-size`, 1 MiB by default), as pop-serve grows its output.
pub const PIPE_SIZE: i32 = 1 << 20;

/// The client's side: a socket (read and written with MSG_DONTWAIT, so the descriptor's own
/// flags, shared with other processes, are never changed) or, in tests, a pair of pipes made
/// non-blocking.
#[derive(Debug, Clone, Copy)]
pub struct ClientIo {
    pub rfd: RawFd,
    pub wfd: RawFd,
    pub socket: bool,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

impl ClientIo {
    /// fd 0 and 1; `socket` when fd 0 is one.
    pub fn stdio() -> ClientIo {
        // SAFETY: fstat fills a zeroed stat for fd 0.
        let socket = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(0, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
        };
        ClientIo {
            rfd: 0,
            wfd: 1,
            socket,
        }
    }

    pub fn make_nonblocking(&self) {
        if !self.socket {
            set_nonblocking(self.rfd);
            set_nonblocking(self.wfd);
        }
    }

    /// Half-close towards the client (a socket only).
    pub fn shutdown_write(&self) {
        if self.socket {
            // SAFETY: shutdown on a descriptor number; no memory involved.
            unsafe { libc::shutdown(self.wfd, libc::SHUT_WR) };
        }
    }

    /// Ends the connection both ways, so no one can go on talking in clear on it.
    pub fn shutdown_both(&self) {
        if self.socket {
            // SAFETY: as above.
            unsafe { libc::shutdown(self.rfd, libc::SHUT_RDWR) };
        }
    }
}

/// Sets O_NONBLOCK on a descriptor this process owns alone (our pipe ends).
pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor number with integer arguments.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

impl Read for ClientIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe {
            if self.socket {
                libc::recv(
                    self.rfd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            } else {
                libc::read(self.rfd, buf.as_mut_ptr().cast(), buf.len())
            }
        };
        if n < 0 {
            Err(last_err())
        } else {
            Ok(n as usize)
        }
    }
}

impl Write for ClientIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = if self.socket {
            // SAFETY: msghdr points at the caller's IoSlices (ABI-compatible with iovec) for
            // the duration of the call; no name, no control data.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = bufs.len().min(1024) as _;
                libc::sendmsg(self.wfd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            }
        } else {
            // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive the call.
            unsafe {
                libc::writev(
                    self.wfd,
                    bufs.as_ptr() as *const libc::iovec,
                    bufs.len().min(1024) as i32,
                )
            }
        };
        if n < 0 {
            Err(last_err())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits for `events` on `fd` until `deadline` (None: forever). False on timeout.
pub fn wait(fd: RawFd, events: i16, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(true);
        }
    }
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The deadline passed first.
    Timeout,
    /// The client closed the connection.
    Closed,
    /// The client broke the protocol (or no certificate could be chosen).
    Tls(rustls::Error),
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Timeout => write!(f, "handshake deadline passed"),
            HandshakeError::Closed => {
                write!(f, "client closed the connection during the handshake")
            }
            HandshakeError::Tls(e) => write!(f, "handshake failed: {e}"),
            HandshakeError::Io(e) => write!(f, "handshake: {e}"),
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Runs the handshake to its end or the deadline. On a protocol error the alert rustls
/// queued is sent (best effort) before returning.
pub fn handshake(
    conn: &mut ServerConnection,
    io: &mut ClientIo,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    loop {
        while conn.wants_write() {
            match conn.write_tls(io) {
                Ok(_) => {}
                Err(e) if would_block(&e) => {
                    if !wait(io.wfd, libc::POLLOUT, Some(deadline)).map_err(HandshakeError::Io)? {
                        return Err(HandshakeError::Timeout);
                    }
                }
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        if !wait(io.rfd, libc::POLLIN, Some(deadline)).map_err(HandshakeError::Io)? {
            return Err(HandshakeError::Timeout);
        }
        match conn.read_tls(io) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(e) if would_block(&e) => continue,
            Err(e) => return Err(HandshakeError::Io(e)),
        }
        if let Err(e) = conn.process_new_packets() {
            let _ = conn.write_tls(io);
            return Err(HandshakeError::Tls(e));
        }
    }
}

/// Default for `--write-timeout`: output to the client that makes no progress for this long
/// ends the relay, as pop-serve's own write timeout does on a plain socket. Without it a client
/// that stops reading would hold the network process forever once the program gave up.
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(600);

/// How the relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The program closed its output; everything reached the client, then close_notify and a
    /// half-close.
    ProgramDone,
    /// The client went away (reset or a failed write).
    ClientGone,
    /// The client stopped reading for the write timeout.
    Stalled,
    /// The client sent a bad record.
    Tls(rustls::Error),
    Io(io::Error),
}

/// Byte counts of one relay, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub from_client: u64,
    pub to_client: u64,
}

/// The program's ends of the plaintext pipes, seen from this process: `to_prog` is written
/// (the program reads it), `from_prog` is read. Both non-blocking. `retire` replaces a
/// finished descriptor with a harmless one so the number stays busy (see sandbox).
pub struct ProgPipes {
    pub to_prog: RawFd,
    pub from_prog: RawFd,
    pub retire: RawFd,
}

fn retire(fd: RawFd, with: RawFd) {
    // SAFETY: dup2 over our own descriptor: closes the pipe end, keeps the number.
    unsafe { libc::dup2(with, fd) };
}

/// Relays until the program is done or the client is gone.
pub fn relay(
    conn: &mut ServerConnection,
    io: &mut ClientIo,
    p: &ProgPipes,
    write_stall: Duration,
) -> (RelayEnd, Counts) {
    let mut progress = Instant::now();
    // Plaintext handed to rustls and not yet known to be on the socket (an upper bound: the
    // records written count against it byte for byte).
    let mut unflushed = 0usize;
    let mut counts = Counts::default();
    let mut to_prog = vec![0u8; RELAY_BUF];
    let (mut tp_off, mut tp_len) = (0usize, 0usize);
    let mut from_prog = vec![0u8; RELAY_BUF];
    let mut to_prog_open = true;
    let mut client_eof = false;
    let mut sock_eof = false;
    let mut prog_eof = false;
    let mut close_sent = false;
    let end = loop {
        // Plaintext from the client, when the program took the previous batch.
        if tp_off == tp_len && !client_eof {
            match conn.reader().read(&mut to_prog) {
                Ok(0) => client_eof = true,
                Ok(n) => {
                    counts.from_client += n as u64;
                    if to_prog_open {
                        (tp_off, tp_len) = (0, n);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => client_eof = true,
            }
        }
        if client_eof && tp_off == tp_len && to_prog_open {
            retire(p.to_prog, p.retire);
            to_prog_open = false;
        }
        // Flush what rustls holds.
        let before = counts.to_client;
        if flush(conn, io, &mut counts).is_err() {
            break RelayEnd::ClientGone;
        }
        if counts.to_client != before || !conn.wants_write() {
            progress = Instant::now();
        }
        unflushed = if conn.wants_write() {
            unflushed.saturating_sub((counts.to_client - before) as usize)
        } else {
            0
        };
        if prog_eof && !conn.wants_write() {
            if !close_sent {
                conn.send_close_notify();
                close_sent = true;
                continue;
            }
            io.shutdown_write();
            break RelayEnd::ProgramDone;
        }

        let mut fds: [libc::pollfd; 4] = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 4];
        if !sock_eof && !client_eof && tp_off == tp_len && conn.wants_read() {
            fds[0] = libc::pollfd {
                fd: io.rfd,
                events: libc::POLLIN,
                revents: 0,
            };
        }
        if conn.wants_write() {
            fds[1] = libc::pollfd {
                fd: io.wfd,
                events: libc::POLLOUT,
                revents: 0,
            };
        }
        if tp_off < tp_len {
            fds[2] = libc::pollfd {
                fd: p.to_prog,
                events: libc::POLLOUT,
                revents: 0,
            };
        }
        // One more batch may be read and encrypted while the previous one drains, so the
        // socket and the encryption overlap; never more than that.
        if !prog_eof && unflushed < RELAY_BUF {
            fds[3] = libc::pollfd {
                fd: p.from_prog,
                events: libc::POLLIN,
                revents: 0,
            };
        }
        if fds.iter().all(|f| f.fd < 0) {
            // Nothing can move: the client stopped reading and writing with the program done.
            break RelayEnd::ClientGone;
        }
        let timeout = if conn.wants_write() {
            let left = (progress + write_stall).saturating_duration_since(Instant::now());
            if left.is_zero() {
                break RelayEnd::Stalled;
            }
            left.as_millis().clamp(1, i32::MAX as u128) as i32
        } else {
            -1
        };
        // SAFETY: four valid pollfds; negative fds are ignored by poll.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 4, timeout) };
        if r < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break RelayEnd::Io(e);
        }
        if fds[0].revents != 0 {
            match conn.read_tls(io) {
                // rustls notes the end; the reader reports it once the plaintext is taken.
                Ok(0) => sock_eof = true,
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        let _ = conn.write_tls(io);
                        break RelayEnd::Tls(e);
                    }
                }
                Err(e) if would_block(&e) => {}
                Err(_) => {
                    sock_eof = true;
                    client_eof = true;
                }
            }
        }
        if fds[2].revents != 0 {
            // SAFETY: the slice is within to_prog.
            let n = unsafe {
                libc::write(
                    p.to_prog,
                    to_prog[tp_off..tp_len].as_ptr().cast(),
                    tp_len - tp_off,
                )
            };
            if n > 0 {
                tp_off += n as usize;
            } else if n < 0 && !would_block(&last_err()) {
                // The program stopped reading: what the client sends next goes nowhere.
                tp_off = tp_len;
                retire(p.to_prog, p.retire);
                to_prog_open = false;
            }
        }
        if fds[3].revents != 0 {
            // SAFETY: from_prog is valid for its length.
            let n =
                unsafe { libc::read(p.from_prog, from_prog.as_mut_ptr().cast(), from_prog.len()) };
            if n > 0 {
                unflushed += n as usize;
                if conn.writer().write_all(&from_prog[..n as usize]).is_err() {
                    break RelayEnd::Io(io::Error::other("TLS writer refused data"));
                }
            } else if n == 0 || !would_block(&last_err()) {
                prog_eof = true;
            }
        }
        // fds[1] (socket writable) is handled by the flush at the top of the loop.
    };
    (end, counts)
}

/// Writes what rustls holds until the socket would block. Err when the client is gone.
fn flush(conn: &mut ServerConnection, io: &mut ClientIo, counts: &mut Counts) -> Result<(), ()> {
    while conn.wants_write() {
        match conn.write_tls(io) {
            Ok(n) => counts.to_client += n as u64,
            Err(e) if would_block(&e) => return Ok(()),
            Err(_) => return Err(()),
        }
    }
    Ok(())
}
