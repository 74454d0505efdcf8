//! TCP keepalive on the client's descriptors, so a client that vanished (a phone that changed
//! network, a peer powered off) ends its session within a bounded time instead of holding the
//! mailbox lock until the idle timeout.
//!
//! Two kernel mechanisms together: keepalive probes find a peer gone while the connection is
//! idle (the server waiting for a command), and `TCP_USER_TIMEOUT` ends a connection whose
//! sent data stays unacknowledged (a RETR written to a peer gone), which Linux would otherwise
//! retransmit for about 15 minutes. With keepalive on, `TCP_USER_TIMEOUT` also decides when the
//! unanswered probes end the connection (tcp(7)). The session then reads EOF or an error and
//! ends without UPDATE.
//!
//! Only TCP sockets are touched: pipes, Unix sockets and terminals are left alone.

#![forbid(unsafe_code)]

use crate::limits::TCP_KEEPALIVE_PROBES;
use nix::sys::socket::{getsockname, getsockopt, setsockopt, sockopt, AddressFamily};
use nix::sys::socket::{SockType, SockaddrLike, SockaddrStorage};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// The keepalive settings of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub idle: Duration,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Duration,
    /// Unanswered probes before the connection ends (`TCP_KEEPCNT`).
    pub probes: u32,
    /// Longest time sent data or probes may stay unacknowledged (`TCP_USER_TIMEOUT`).
    pub user_timeout: Duration,
}

/// Largest value Linux accepts for `TCP_KEEPIDLE` and `TCP_KEEPINTVL`, in seconds.
const MAX_KEEPALIVE_SECS: u64 = 32767;

impl KeepAlive {
    /// Settings under which a vanished peer's connection ends about `dead_after` after the
    /// last sign of life: probes start at half of it, [`TCP_KEEPALIVE_PROBES`] of them fit in
    /// the other half, and `TCP_USER_TIMEOUT` is `dead_after`. `None` for zero (off). For the
    /// default 120 s: idle 60 s, interval 10 s, 6 probes, user timeout 120 s.
    pub fn within(dead_after: Duration) -> Option<KeepAlive> {
        let secs = dead_after.as_secs();
        if secs == 0 {
            return None;
        }
        let idle = (secs / 2).clamp(1, MAX_KEEPALIVE_SECS);
        let interval = (secs / (2 * u64::from(TCP_KEEPALIVE_PROBES))).clamp(1, MAX_KEEPALIVE_SECS);
        Some(KeepAlive {
            idle: Duration::from_secs(idle),
            interval: Duration::from_secs(interval),
            probes: TCP_KEEPALIVE_PROBES,
            user_timeout: Duration::from_secs(secs.min(u64::from(u32::MAX / 1000))),
        })
    }
}

/// Whether `fd` is a TCP socket (a stream socket of the IPv4 or IPv6 family).
pub fn is_tcp(fd: BorrowedFd<'_>) -> bool {
    let stream = matches!(getsockopt(&fd, sockopt::SockType), Ok(SockType::Stream));
    stream
        && getsockname::<SockaddrStorage>(fd.as_raw_fd())
            .is_ok_and(|a| matches!(a.family(), Some(AddressFamily::Inet | AddressFamily::Inet6)))
}

/// Sets `ka` on `fd` when it is a TCP socket. `Ok(true)` when set, `Ok(false)` when `fd` is
/// not a TCP socket (nothing done).
pub fn set_keepalive(fd: BorrowedFd<'_>, ka: &KeepAlive) -> nix::Result<bool> {
    if !is_tcp(fd) {
        return Ok(false);
    }
    let secs = |d: Duration| d.as_secs().min(MAX_KEEPALIVE_SECS) as u32;
    setsockopt(&fd, sockopt::TcpKeepIdle, &secs(ka.idle).max(1))?;
    setsockopt(&fd, sockopt::TcpKeepInterval, &secs(ka.interval).max(1))?;
    setsockopt(&fd, sockopt::TcpKeepCount, &ka.probes.max(1))?;
    let ms = ka.user_timeout.as_millis().min(u128::from(u32::MAX)) as u32;
    setsockopt(&fd, sockopt::TcpUserTimeout, &ms)?;
    setsockopt(&fd, sockopt::KeepAlive, &true)?;
    Ok(true)
}

/// Whether keepalive is on for `fd` already (set by a front end before us).
pub fn keepalive_is_on(fd: BorrowedFd<'_>) -> bool {
    getsockopt(&fd, sockopt::KeepAlive).unwrap_or(false)
}

/// Whose settings win on a socket that has keepalive on already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Ours: the value was asked for explicitly.
    Replace,
    /// Theirs: ours is only a default, and a front end chose before us.
    Keep,
}

/// Sets `ka` on the client's descriptors 0 and 1 (once when they are the same socket) where
/// they are TCP sockets (with
/// [`Existing::Keep`], only where keepalive is still off). Returns how many were set, or the
/// first failure as text for a debug log line; the session goes on either way (it still has
/// its idle timeout).
pub fn keepalive_client(ka: &KeepAlive, existing: Existing) -> Result<usize, String> {
    let mut set = 0;
    // inetd and tcpserver put one socket on both: set it once.
    let same = |a: RawFd, b: RawFd| match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(x), Ok(y)) => (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino),
        _ => false,
    };
    let fds: &[RawFd] = if same(0, 1) { &[0] } else { &[0, 1] };
    for &fd in fds {
        let b = crate::fds::lifelong(fd);
        if existing == Existing::Keep && keepalive_is_on(b) {
            continue;
        }
        match set_keepalive(b, ka) {
            Ok(true) => set += 1,
            Ok(false) => {}
            Err(e) => return Err(format!("tcp keepalive on fd {fd}: {e}")),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn default_settings_end_a_dead_peer_in_two_minutes() {
        let ka = KeepAlive::within(crate::limits::DEFAULT_TCP_KEEPALIVE).unwrap();
        assert_eq!(
            ka,
            KeepAlive {
                idle: Duration::from_secs(60),
                interval: Duration::from_secs(10),
                probes: 6,
                user_timeout: Duration::from_secs(120),
            }
        );
        assert_eq!(KeepAlive::within(Duration::ZERO), None);
        let small = KeepAlive::within(Duration::from_secs(1)).unwrap();
        assert_eq!(small.idle, Duration::from_secs(1));
        assert_eq!(small.interval, Duration::from_secs(1));
        let huge = KeepAlive::within(Duration::from_secs(u64::MAX)).unwrap();
        assert_eq!(huge.idle.as_secs(), MAX_KEEPALIVE_SECS);
    }

    #[test]
    fn set_on_tcp_and_read_back() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let ka = KeepAlive::within(Duration::from_secs(30)).unwrap();
        assert_eq!(set_keepalive(s.as_fd(), &ka), Ok(true));
        assert!(getsockopt(&s, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&s, sockopt::TcpKeepIdle).unwrap(), 15);
        assert_eq!(getsockopt(&s, sockopt::TcpKeepInterval).unwrap(), 2);
        assert_eq!(getsockopt(&s, sockopt::TcpKeepCount).unwrap(), 6);
        assert_eq!(getsockopt(&s, sockopt::TcpUserTimeout).unwrap(), 30_000);
        drop(c);
    }

    #[test]
    fn keepalive_is_on_after_set() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(!keepalive_is_on(s.as_fd()));
        let ka = KeepAlive::within(Duration::from_secs(30)).unwrap();
        set_keepalive(s.as_fd(), &ka).unwrap();
        assert!(keepalive_is_on(s.as_fd()));
    }

    #[test]
    fn pipes_and_unix_sockets_are_left_alone() {
        let ka = KeepAlive::within(Duration::from_secs(30)).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(set_keepalive(a.as_fd(), &ka), Ok(false));
        assert!(!getsockopt(&a, sockopt::KeepAlive).unwrap());
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(set_keepalive(r.as_fd(), &ka), Ok(false));
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(set_keepalive(u.as_fd(), &ka), Ok(false));
    }
}
