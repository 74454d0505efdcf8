//! STLS (RFC 2595) without TLS code: the TLS front end that started pop-popup does the TLS,
//! and this module only finds it, keeps its descriptors, and asks it to switch.
//!
//! Two fronts are understood:
//! - UCSPI-TLS (ucspi-ssl `sslserver -n`, s6-ucspitlsd, `pop-tls --starttls`): the environment
//!   names a control socket (`SSLCTLFD`) and two pipes (`SSLREADFD`, `SSLWRITEFD`); fd 0/1 are
//!   the client in clear. To switch, the program writes `Y` to the control socket, reads back
//!   the TLS facts (`VAR=value\0` ... `\0`), and from then on talks through the two pipes. Here
//!   the pipes are put on fd 0 and 1, so the rest of the chain (the checkpassword program and
//!   pop-serve) talks through them without knowing.
//! - tlswrapper `-n` (Debian's `tlswrapper`, delayed encryption): fd 0/1 are pipes to
//!   tlswrapper from the start; fd 5 is its control pipe. To switch, the program writes the
//!   `+OK` line to fd 5 instead of fd 1 and closes fd 5; tlswrapper sends that line in clear,
//!   then starts TLS on the same pipes. Nothing in the environment names fd 5, so this mode is
//!   chosen by the administrator (`--tlswrapper`), never guessed from an open descriptor.
//!
//! Whatever the client sent after the STLS line is discarded before the `+OK` (the STARTTLS
//! command-injection class, CVE-2011-0411): pop-popup never reads past a line, so those bytes
//! are still in fd 0 and are read and dropped there. With a UCSPI-TLS front the socket is
//! then left to the front; with tlswrapper, bytes the client sends after that point and before
//! tlswrapper switches can still reach the pipe in clear (see pop-popup(8)).

#![forbid(unsafe_code)]

use super::TlsFront;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fmt;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::time::Instant;

/// The UCSPI-TLS variables: control socket, reading pipe, writing pipe.
pub const UCSPI_TLS_VARS: [&str; 3] = ["SSLCTLFD", "SSLREADFD", "SSLWRITEFD"];

/// Highest descriptor number accepted from `SSLCTLFD`, `SSLREADFD` and `SSLWRITEFD`
/// (fronts use small numbers: pop-tls 6 to 8).
pub const MAX_UCSPI_FD: RawFd = 1023;

/// tlswrapper `-n`'s control pipe.
pub const TLSWRAPPER_CONTROL_FD: RawFd = 5;

/// Longest TLS-facts block read back after `Y` (ucspi-ssl may include certificates).
pub const MAX_TLS_INFO: usize = 16 * 1024;

/// Bytes the client may have pipelined after STLS that are read and dropped; more ends the
/// session (no honest client sends anything between STLS and the `+OK`).
pub const MAX_STLS_DISCARD: usize = 16 * 1024;

/// Longest protocol or cipher name shown in logs.
const MAX_TAG_PART: usize = 64;

/// The `+OK` of a successful STLS (RFC 2595 §4's example text).
pub const STLS_OK: &[u8] = b"+OK Begin TLS negotiation\r\n";

/// The TLS situation found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Front {
    /// No TLS front: plaintext, STLS refused (the behaviour without any front).
    Plain,
    /// TLS is already on (implicit TLS): `PROTOCOL/CIPHER` for logs.
    On(String),
    /// A UCSPI-TLS front; TLS not yet on.
    Ucspi {
        ctl: RawFd,
        read: RawFd,
        write: RawFd,
    },
    /// tlswrapper `-n`: its control pipe on fd 5; TLS not yet on.
    Tlswrapper,
}

/// Why the environment or the descriptors do not describe a usable front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontError(pub String);

impl fmt::Display for FrontError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A descriptor number from the environment: decimal, 0 to [`MAX_UCSPI_FD`].
fn fd_number(name: &str, value: Option<&str>) -> Result<RawFd, FrontError> {
    let v = value.ok_or_else(|| FrontError(format!("SSLCTLFD is set but {name} is not")))?;
    if v.is_empty() || v.len() > 4 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrontError(format!(
            "{name}={v:?} is not a descriptor number"
        )));
    }
    let n: RawFd = v
        .parse()
        .map_err(|_| FrontError(format!("{name}={v:?} is not a descriptor number")))?;
    if n > MAX_UCSPI_FD {
        return Err(FrontError(format!("{name}={n} is above {MAX_UCSPI_FD}")));
    }
    Ok(n)
}

/// `PROTOCOL/CIPHER` from the variables a TLS front sets, with anything but letters, digits
/// and `. _ -` replaced, for log lines.
pub fn tag(protocol: &str, cipher: Option<&str>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .take(MAX_TAG_PART)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    };
    format!("{}/{}", clean(protocol), clean(cipher.unwrap_or("-")))
}

impl Front {
    /// Reads the situation from variables (`get`) and, for tlswrapper, the administrator's
    /// `--tlswrapper`. Only numbers are checked here; [`Front::check_open`] checks the
    /// descriptors once inherited ones have been closed.
    ///
    /// `SSLCTLFD` means a UCSPI-TLS front, TLS not on yet, whatever else is set (a front
    /// that offers the switch has not made it: a stale `SSL_PROTOCOL` must not lift the
    /// refusal of logins in clear). Otherwise `SSL_PROTOCOL` (set by pop-tls in implicit
    /// mode, s6-tlsd, ucspi-ssl with `-s`) means TLS is on.
    pub fn from_vars(
        get: &dyn Fn(&str) -> Option<String>,
        tlswrapper: bool,
    ) -> Result<Front, FrontError> {
        if let Some(ctl) = get("SSLCTLFD") {
            if tlswrapper {
                return Err(FrontError(
                    "--tlswrapper given but SSLCTLFD is set (a UCSPI-TLS front)".into(),
                ));
            }
            let ctl = fd_number("SSLCTLFD", Some(&ctl))?;
            let read = fd_number("SSLREADFD", get("SSLREADFD").as_deref())?;
            let write = fd_number("SSLWRITEFD", get("SSLWRITEFD").as_deref())?;
            if ctl <= 2 {
                return Err(FrontError(format!(
                    "SSLCTLFD={ctl} is one of the client's descriptors"
                )));
            }
            return Ok(Front::Ucspi { ctl, read, write });
        }
        if tlswrapper {
            return Ok(Front::Tlswrapper);
        }
        if let Some(p) = get("SSL_PROTOCOL").filter(|p| !p.is_empty()) {
            return Ok(Front::On(tag(&p, get("SSL_CIPHER").as_deref())));
        }
        Ok(Front::Plain)
    }

    /// From the process environment.
    pub fn from_env(tlswrapper: bool) -> Result<Front, FrontError> {
        Front::from_vars(&|k| std::env::var(k).ok(), tlswrapper)
    }

    /// The inherited descriptors above 2 that belong to the front and must survive
    /// `close_inherited`.
    pub fn keep(&self) -> Vec<RawFd> {
        let mut v = match self {
            Front::Ucspi { ctl, read, write } => vec![*ctl, *read, *write],
            Front::Tlswrapper => vec![TLSWRAPPER_CONTROL_FD],
            Front::Plain | Front::On(_) => vec![],
        };
        v.retain(|&fd| fd > 2);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Checks that the front's descriptors are open and marks them close-on-exec, so none
    /// reaches the checkpassword program or pop-serve; removes the UCSPI-TLS variables from
    /// the environment for the same reason.
    pub fn check_open(&self) -> Result<(), FrontError> {
        for name in UCSPI_TLS_VARS {
            std::env::remove_var(name);
        }
        if matches!(self, Front::Ucspi { .. } | Front::Tlswrapper) {
            // TLS is not on: any SSL_* inherited is stale, and must not reach the chain as if
            // it were (after STLS the front's own facts are set).
            let stale: Vec<_> = std::env::vars_os()
                .filter_map(|(k, _)| {
                    k.to_str()
                        .filter(|k| k.starts_with("SSL_"))
                        .map(String::from)
                })
                .collect();
            for k in stale {
                std::env::remove_var(k);
            }
        }
        for fd in self.keep() {
            let flags = fcntl(fd, FcntlArg::F_GETFD)
                .map_err(|e| FrontError(format!("TLS front descriptor {fd}: {e}")))?;
            let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
            let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
        }
        if let Front::Ucspi { read, write, .. } = self {
            for fd in [*read, *write] {
                fcntl(fd, FcntlArg::F_GETFD)
                    .map_err(|e| FrontError(format!("TLS front descriptor {fd}: {e}")))?;
            }
        }
        Ok(())
    }

    /// `tls=...` for log lines.
    pub fn log_tag(&self) -> String {
        match self {
            Front::On(t) => format!("tls={t}"),
            _ => "tls=no".into(),
        }
    }
}

/// A switch done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// How TLS is described in logs: `PROTOCOL/CIPHER`, or `on` when the front tells nothing.
    pub tag: String,
    /// Bytes the client sent after the STLS line, dropped.
    pub dropped: usize,
}

/// Why a switch failed; the session ends.
#[derive(Debug)]
pub enum StartError {
    /// The client kept sending after STLS (more than [`MAX_STLS_DISCARD`] bytes).
    Flood,
    /// The front closed the control socket without the TLS facts: the handshake failed.
    Handshake,
    /// The TLS facts were malformed or too long.
    BadInfo,
    TimedOut,
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Flood => write!(f, "client kept sending after STLS"),
            StartError::Handshake => write!(f, "TLS handshake failed"),
            StartError::BadInfo => write!(f, "malformed TLS information from the front"),
            StartError::TimedOut => write!(f, "TLS handshake timed out"),
            StartError::Io(e) => write!(f, "TLS hand-over: {e}"),
        }
    }
}

impl From<Errno> for StartError {
    fn from(e: Errno) -> StartError {
        StartError::Io(e.into())
    }
}

/// Parses the block sent back after `Y`: `VAR=value\0` ... then one more `\0`. Only names
/// `SSL_` followed by capitals, digits and `_` are accepted; None on anything else.
pub fn parse_info(block: &[u8]) -> Option<Vec<(String, String)>> {
    if block.len() < 2 || !block.ends_with(&[0, 0]) {
        return None;
    }
    let body = &block[..block.len() - 1];
    if body == [0] {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for item in body[..body.len() - 1].split(|&b| b == 0) {
        let eq = item.iter().position(|&b| b == b'=')?;
        let (k, v) = (&item[..eq], &item[eq + 1..]);
        let name_ok = k.len() > 4
            && k.starts_with(b"SSL_")
            && k[4..]
                .iter()
                .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return None;
        }
        out.push((
            String::from_utf8(k.to_vec()).ok()?,
            String::from_utf8(v.to_vec()).ok()?,
        ));
    }
    Some(out)
}

/// Waits until `fd` is ready for `what`; false when `deadline` passed (a zero wait when
/// `deadline` is None).
fn ready(fd: RawFd, what: PollFlags, deadline: Option<Instant>) -> Result<bool, StartError> {
    // The descriptors polled here are the front's, open for the process's life (checked by
    // Front::check_open) or fd 0.
    let b = spool_wire::fds::lifelong(fd);
    loop {
        let ms = match deadline {
            None => 0,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
            }
        };
        let mut fds = [PollFd::new(b, what)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) if deadline.is_none() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads and drops whatever the client has already sent on fd `fd`, without waiting.
pub fn discard_pending(fd: RawFd) -> Result<usize, StartError> {
    let mut buf = [0u8; 1024];
    let mut dropped = 0;
    while ready(fd, PollFlags::POLLIN, None)? {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => dropped += n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(Errno::ECONNRESET) => break,
            Err(e) => return Err(e.into()),
        }
        if dropped > MAX_STLS_DISCARD {
            return Err(StartError::Flood);
        }
    }
    buf.fill(0);
    Ok(dropped)
}

/// Reads the TLS facts block from the control socket, up to its closing `\0\0`. With
/// `exact` (the convention allows the control socket to be the reading descriptor too) one
/// byte at a time, so that none of the client's first bytes after it is taken.
pub fn read_info(ctl: RawFd, exact: bool, deadline: Instant) -> Result<Vec<u8>, StartError> {
    let mut block = Vec::new();
    let mut buf = [0u8; 512];
    let want = if exact { 1 } else { buf.len() };
    while block.len() < 2 || !block.ends_with(&[0, 0]) {
        if !ready(ctl, PollFlags::POLLIN, Some(deadline))? {
            return Err(StartError::TimedOut);
        }
        match nix::unistd::read(ctl, &mut buf[..want]) {
            Ok(0) => return Err(StartError::Handshake),
            Ok(n) => block.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(Errno::ECONNRESET) => return Err(StartError::Handshake),
            Err(e) => return Err(e.into()),
        }
        if block.len() > MAX_TLS_INFO {
            return Err(StartError::BadInfo);
        }
    }
    Ok(block)
}

/// Writes all of `data` to `fd` (blocking or not) before `deadline`.
fn write_all(fd: RawFd, mut data: &[u8], deadline: Instant) -> Result<(), StartError> {
    // As in `ready`.
    let b = spool_wire::fds::lifelong(fd);
    while !data.is_empty() {
        match nix::unistd::write(b, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                if !ready(fd, PollFlags::POLLOUT, Some(deadline))? {
                    return Err(StartError::TimedOut);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The real front: the descriptors found at start, and whether TLS is on.
pub struct FdFront {
    front: Front,
    /// After a switch: `PROTOCOL/CIPHER` or `on` when the front tells nothing.
    switched: Option<String>,
}

impl FdFront {
    pub fn new(front: Front) -> FdFront {
        FdFront {
            front,
            switched: None,
        }
    }

    /// `tls=...` for log lines, as of now.
    pub fn log_tag(&self) -> String {
        match &self.switched {
            Some(t) => format!("tls={t}"),
            None => self.front.log_tag(),
        }
    }

    /// UCSPI-TLS: `+OK` in clear on fd 1, `Y`, the facts, then the pipes onto fd 0 and 1.
    fn ucspi(
        &mut self,
        out: &mut dyn Write,
        ctl: RawFd,
        read: RawFd,
        write: RawFd,
        deadline: Instant,
    ) -> Result<String, StartError> {
        out.write_all(STLS_OK)
            .and_then(|()| out.flush())
            .map_err(StartError::Io)?;
        write_all(ctl, b"Y", deadline)?;
        let block = read_info(ctl, ctl == read, deadline)?;
        let vars = parse_info(&block).ok_or(StartError::BadInfo)?;
        // The front's pipes become the client: everything after this, the checkpassword
        // program and pop-serve included, reads fd 0 and writes fd 1 as before.
        nix::unistd::dup2(read, 0)?;
        nix::unistd::dup2(write, 1)?;
        for fd in [ctl, read, write] {
            if fd > 2 {
                let _ = nix::unistd::close(fd);
            }
        }
        // fd 1 is written with deadlines (FdOutput): non-blocking, as at start.
        let fl = OFlag::from_bits_truncate(fcntl(1, FcntlArg::F_GETFL)?);
        fcntl(1, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
        // The rest of the chain learns about TLS from the environment, as from ucspi-ssl.
        for (k, v) in &vars {
            std::env::set_var(k, v);
        }
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        Ok(match get("SSL_PROTOCOL") {
            Some(p) => tag(p, get("SSL_CIPHER")),
            None => "on".into(),
        })
    }
}

impl TlsFront for FdFront {
    fn offers_stls(&self) -> bool {
        self.switched.is_none() && matches!(self.front, Front::Ucspi { .. } | Front::Tlswrapper)
    }

    fn is_on(&self) -> bool {
        self.switched.is_some() || matches!(self.front, Front::On(_))
    }

    fn start(&mut self, out: &mut dyn Write, deadline: Instant) -> Result<Switched, StartError> {
        let dropped = discard_pending(0)?;
        let tag = match self.front.clone() {
            Front::Ucspi { ctl, read, write } => self.ucspi(out, ctl, read, write, deadline)?,
            Front::Tlswrapper => {
                // The +OK goes to the control pipe, not fd 1; closing it starts TLS.
                write_all(TLSWRAPPER_CONTROL_FD, STLS_OK, deadline)?;
                nix::unistd::close(TLSWRAPPER_CONTROL_FD)?;
                "on".into()
            }
            Front::Plain | Front::On(_) => {
                return Err(StartError::Io(io::Error::other("no TLS front")))
            }
        };
        self.switched = Some(tag.clone());
        Ok(Switched { tag, dropped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn front(vars: &[(&str, &str)], tlswrapper: bool) -> Result<Front, FrontError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Front::from_vars(&|k| m.get(k).cloned(), tlswrapper)
    }

    #[test]
    fn environment_decides_the_front() {
        assert_eq!(front(&[], false).unwrap(), Front::Plain);
        assert_eq!(front(&[], true).unwrap(), Front::Tlswrapper);
        assert_eq!(
            front(
                &[
                    ("SSL_PROTOCOL", "TLSv1.3"),
                    ("SSL_CIPHER", "TLS_AES_128_GCM_SHA256")
                ],
                false
            )
            .unwrap(),
            Front::On("TLSv1.3/TLS_AES_128_GCM_SHA256".into())
        );
        assert_eq!(
            front(
                &[("SSLCTLFD", "6"), ("SSLREADFD", "7"), ("SSLWRITEFD", "8")],
                false
            )
            .unwrap(),
            Front::Ucspi {
                ctl: 6,
                read: 7,
                write: 8
            }
        );
        // A stale SSL_PROTOCOL beside a UCSPI-TLS front: TLS is not on.
        assert!(matches!(
            front(
                &[
                    ("SSL_PROTOCOL", "TLSv1.3"),
                    ("SSLCTLFD", "6"),
                    ("SSLREADFD", "7"),
                    ("SSLWRITEFD", "8")
                ],
                false
            )
            .unwrap(),
            Front::Ucspi { .. }
        ));
        assert_eq!(
            front(&[("SSL_PROTOCOL", "TLSv1.3")], true).unwrap(),
            Front::Tlswrapper
        );
        assert_eq!(
            front(&[("SSL_PROTOCOL", "a b\n")], false).unwrap(),
            Front::On("a?b?/-".into())
        );
    }

    #[test]
    fn bad_descriptor_numbers_are_refused() {
        for vars in [
            &[("SSLCTLFD", "6")][..],
            &[("SSLCTLFD", "x"), ("SSLREADFD", "7"), ("SSLWRITEFD", "8")],
            &[("SSLCTLFD", "-1"), ("SSLREADFD", "7"), ("SSLWRITEFD", "8")],
            &[("SSLCTLFD", "1"), ("SSLREADFD", "7"), ("SSLWRITEFD", "8")],
            &[
                ("SSLCTLFD", "6"),
                ("SSLREADFD", "99999"),
                ("SSLWRITEFD", "8"),
            ],
            &[("SSLCTLFD", "6"), ("SSLREADFD", "7"), ("SSLWRITEFD", "")],
        ] {
            assert!(front(vars, false).is_err(), "{vars:?}");
        }
        assert!(front(
            &[("SSLCTLFD", "6"), ("SSLREADFD", "7"), ("SSLWRITEFD", "8")],
            true
        )
        .is_err());
    }

    #[test]
    fn info_block() {
        assert_eq!(parse_info(b"\0\0").unwrap(), vec![]);
        let v = parse_info(b"SSL_PROTOCOL=TLSv1.3\0SSL_CIPHER=X\0\0").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], ("SSL_PROTOCOL".into(), "TLSv1.3".into()));
        for bad in [
            &b"LD_PRELOAD=x\0\0"[..],
            b"SSL_PROTOCOL=x\0",
            b"SSL_=x\0\0",
            b"SSL_protocol=x\0\0",
            b"SSL_PROTOCOL\0\0",
            b"",
        ] {
            assert!(parse_info(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn info_read_stops_at_the_block_end_when_the_socket_carries_data_too() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        nix::unistd::write(&b, b"SSL_PROTOCOL=TLSv1.2\0\0CAPA\r\n").unwrap();
        let far = Instant::now() + std::time::Duration::from_secs(5);
        let block = read_info(a.as_raw_fd(), true, far).unwrap();
        assert_eq!(block, b"SSL_PROTOCOL=TLSv1.2\0\0");
        let mut rest = [0u8; 16];
        let n = nix::unistd::read(a.as_raw_fd(), &mut rest).unwrap();
        assert_eq!(&rest[..n], b"CAPA\r\n");
        // A front that closes instead: the handshake failed.
        drop(b);
        assert!(matches!(
            read_info(a.as_raw_fd(), true, far),
            Err(StartError::Handshake)
        ));
    }

    #[test]
    fn keep_lists_only_descriptors_above_stdio() {
        let f = Front::Ucspi {
            ctl: 6,
            read: 0,
            write: 1,
        };
        assert_eq!(f.keep(), vec![6]);
        assert_eq!(Front::Tlswrapper.keep(), vec![5]);
        assert!(Front::Plain.keep().is_empty());
    }

    #[test]
    fn pending_bytes_are_dropped_without_waiting() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"USER x\r\nPASS y\r\n").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(discard_pending(r.as_raw_fd()).unwrap(), 16);
        assert_eq!(discard_pending(r.as_raw_fd()).unwrap(), 0);
    }
}
