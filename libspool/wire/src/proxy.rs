//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a load
//! balancer in TCP mode sends before its client's first byte, naming the client and the
//! address the client connected to.
//!
//! The reader takes from the descriptor exactly the header's bytes and not one more, so what
//! follows (a TLS ClientHello, a POP3 command) stays in the socket for the next reader: a v1
//! header is read one byte at a time up to its CRLF, a v2 header as its 16 fixed bytes and
//! then the length they announce. The whole header must arrive before one deadline.
//!
//! Version 1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`, at most
//! [`PROXY_V1_MAX_LINE`] bytes. Version 2: the 12-byte signature, version and command (LOCAL
//! or PROXY), family and transport, a 16-bit length, then the addresses and TLVs. AF_INET and
//! AF_INET6 over STREAM carry addresses; AF_UNIX and AF_UNSPEC carry none the chain can use
//! ("no address"); TLVs are skipped, bounded by [`PROXY_V2_MAX_HEADER`]. A LOCAL header (the
//! proxy's own health check) and a v1 UNKNOWN carry no address either.

#![forbid(unsafe_code)]

use crate::limits::{PROXY_V1_MAX_LINE, PROXY_V2_MAX_HEADER};
use crate::timeio::{ClientInput, FdInput, ReadOutcome};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of a v2 header: signature, version and command, family and transport,
/// length.
pub const V2_FIXED: usize = 16;

/// The start of every v1 header.
pub const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version of the protocol a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A v2 header's command; a v1 header is always `Proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The proxy's own connection (a health check): the connection's addresses stand.
    Local,
    /// A relayed connection.
    Proxy,
}

/// The client's address and the address it connected to, of the same family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// One parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    pub command: Command,
    /// None for LOCAL, v1 UNKNOWN, and v2 AF_UNSPEC or AF_UNIX.
    pub addrs: Option<Addresses>,
}

/// Why no header was accepted.
#[derive(Debug)]
pub enum ProxyError {
    /// The peer closed at once, or its first bytes are not a PROXY header.
    Missing,
    /// A header, but not a valid one; the text says what is wrong.
    Malformed(&'static str),
    /// A v1 line longer than [`PROXY_V1_MAX_LINE`], or a v2 header announcing more than
    /// [`PROXY_V2_MAX_HEADER`].
    TooLong,
    /// The header was not complete by the deadline.
    Timeout,
    /// Reading the descriptor failed.
    Io(io::Error),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Missing => write!(f, "no PROXY header"),
            ProxyError::Malformed(what) => write!(f, "malformed PROXY header: {what}"),
            ProxyError::TooLong => write!(f, "PROXY header too long"),
            ProxyError::Timeout => write!(f, "PROXY header not received in time"),
            ProxyError::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Reads exactly `buf.len()` bytes. `at_start` says whether nothing of the header has been
/// read yet (an EOF there is a missing header, later a truncated one).
fn read_exact<I: ClientInput + ?Sized>(
    input: &mut I,
    buf: &mut [u8],
    deadline: Instant,
    at_start: bool,
) -> Result<(), ProxyError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read_until(&mut buf[filled..], deadline) {
            Ok(ReadOutcome::Data(n)) => filled += n,
            Ok(ReadOutcome::Eof) if at_start && filled == 0 => return Err(ProxyError::Missing),
            Ok(ReadOutcome::Eof) => return Err(ProxyError::Malformed("truncated")),
            Ok(ReadOutcome::TimedOut) => return Err(ProxyError::Timeout),
            Err(e) => return Err(ProxyError::Io(e)),
        }
    }
    Ok(())
}

/// Reads one header from `input`, taking exactly its bytes, before `deadline`. Returns the
/// header and how many bytes it took.
pub fn read_header<I: ClientInput + ?Sized>(
    input: &mut I,
    deadline: Instant,
) -> Result<(Header, usize), ProxyError> {
    let mut first = [0u8; 1];
    read_exact(input, &mut first, deadline, true)?;
    match first[0] {
        b'P' => read_v1(input, deadline),
        b'\r' => read_v2(input, deadline),
        _ => Err(ProxyError::Missing),
    }
}

fn read_v1<I: ClientInput + ?Sized>(
    input: &mut I,
    deadline: Instant,
) -> Result<(Header, usize), ProxyError> {
    let mut line = Vec::with_capacity(PROXY_V1_MAX_LINE);
    line.push(b'P');
    loop {
        if line.len() >= PROXY_V1_MAX_LINE {
            return Err(ProxyError::TooLong);
        }
        let mut b = [0u8; 1];
        read_exact(input, &mut b, deadline, false)?;
        line.push(b[0]);
        if line.len() <= V1_PREFIX.len() && line[..] != V1_PREFIX[..line.len()] {
            return Err(ProxyError::Missing);
        }
        if b[0] == b'\n' {
            break;
        }
    }
    let n = line.len();
    if n < 2 || line[n - 2] != b'\r' {
        return Err(ProxyError::Malformed("LF without CR"));
    }
    let header = parse_v1(&line[..n - 2])?;
    Ok((header, n))
}

/// A v1 line without its CRLF.
pub fn parse_v1(line: &[u8]) -> Result<Header, ProxyError> {
    let rest = line.strip_prefix(V1_PREFIX).ok_or(ProxyError::Missing)?;
    if rest.starts_with(b"UNKNOWN") && (rest.len() == 7 || rest[7] == b' ') {
        // The proxy does not know the addresses; whatever follows is ignored, as the
        // protocol asks.
        return Ok(Header {
            version: Version::V1,
            command: Command::Proxy,
            addrs: None,
        });
    }
    let text = std::str::from_utf8(rest).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    let proto = fields[0];
    if proto != "TCP4" && proto != "TCP6" {
        return Err(ProxyError::Malformed("protocol not TCP4, TCP6 or UNKNOWN"));
    }
    let [_, src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("not five fields after PROXY"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(v4(src).ok_or(ProxyError::Malformed("source address"))?),
            IpAddr::V4(v4(dst).ok_or(ProxyError::Malformed("destination address"))?),
        ),
        // TCP6, the only other protocol let through above.
        _ => (
            IpAddr::V6(v6(src).ok_or(ProxyError::Malformed("source address"))?),
            IpAddr::V6(v6(dst).ok_or(ProxyError::Malformed("destination address"))?),
        ),
    };
    let sport = port(sport).ok_or(ProxyError::Malformed("source port"))?;
    let dport = port(dport).ok_or(ProxyError::Malformed("destination port"))?;
    Ok(Header {
        version: Version::V1,
        command: Command::Proxy,
        addrs: Some(Addresses {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        }),
    })
}

fn v4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

fn v6(s: &str) -> Option<Ipv6Addr> {
    s.parse().ok()
}

/// A decimal port, 0 to 65535, without sign or leading zero.
fn port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn read_v2<I: ClientInput + ?Sized>(
    input: &mut I,
    deadline: Instant,
) -> Result<(Header, usize), ProxyError> {
    let mut fixed = [0u8; V2_FIXED];
    fixed[0] = b'\r';
    // Every v2 header has its 16 fixed bytes, so reading them all cannot overrun.
    read_exact(input, &mut fixed[1..], deadline, false)?;
    if fixed[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if V2_FIXED + len > PROXY_V2_MAX_HEADER {
        return Err(ProxyError::TooLong);
    }
    let mut body = vec![0u8; len];
    read_exact(input, &mut body, deadline, false)?;
    let header = parse_v2(fixed[12], fixed[13], &body)?;
    Ok((header, V2_FIXED + len))
}

/// A v2 header from its version-and-command byte, its family-and-transport byte and the
/// bytes after the fixed part.
pub fn parse_v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Result<Header, ProxyError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version not 2"));
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(ProxyError::Malformed("command not LOCAL or PROXY")),
    };
    let none = Header {
        version: Version::V2,
        command,
        addrs: None,
    };
    if command == Command::Local {
        // Family and addresses are to be ignored: the connection is the proxy's own.
        return Ok(none);
    }
    let transport = fam & 0x0f;
    if transport > 2 {
        return Err(ProxyError::Malformed(
            "transport not UNSPEC, STREAM or DGRAM",
        ));
    }
    let addrs = match fam >> 4 {
        0 | 3 => return Ok(none),
        1 => {
            stream(transport)?;
            let b = body
                .get(..12)
                .ok_or(ProxyError::Malformed("address block too short"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]));
            Addresses {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([b[8], b[9]])),
                destination: SocketAddr::new(ip(4), u16::from_be_bytes([b[10], b[11]])),
            }
        }
        2 => {
            stream(transport)?;
            let b = body
                .get(..36)
                .ok_or(ProxyError::Malformed("address block too short"))?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            Addresses {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([b[32], b[33]])),
                destination: SocketAddr::new(ip(16), u16::from_be_bytes([b[34], b[35]])),
            }
        }
        _ => return Err(ProxyError::Malformed("address family unknown")),
    };
    Ok(Header {
        addrs: Some(addrs),
        ..none
    })
}

fn stream(transport: u8) -> Result<(), ProxyError> {
    if transport == 1 {
        Ok(())
    } else {
        Err(ProxyError::Malformed("transport not STREAM"))
    }
}

/// Reads one header from descriptor `fd` within `timeout`, taking exactly its bytes. The
/// descriptor's file status flags are as they were when this returns.
pub fn read_from_fd(fd: RawFd, timeout: Duration) -> Result<Header, ProxyError> {
    use nix::fcntl::{fcntl, FcntlArg};
    let deadline = Instant::now() + timeout;
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| ProxyError::Io(e.into()))?;
    let mut input = FdInput::new(fd).map_err(ProxyError::Io)?;
    let got = read_header(&mut input, deadline).map(|(h, _)| h);
    let restored = fcntl(
        fd,
        FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_truncate(flags)),
    );
    match (got, restored) {
        (Ok(_), Err(e)) => Err(ProxyError::Io(e.into())),
        (got, _) => got,
    }
}

/// The variables that name the connection's two ends, as tcpserver sets them.
pub const ADDRESS_VARS: [&str; 4] = ["TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT"];

/// Variables that describe the proxy rather than the client once a header names the client:
/// tcpserver's reverse DNS and ident lookups of its peer, and the peer's address as systemd
/// (`Accept=yes`) sets it.
pub const PROXY_ONLY_VARS: [&str; 4] = [
    "TCPREMOTEHOST",
    "TCPREMOTEINFO",
    "REMOTE_ADDR",
    "REMOTE_PORT",
];

/// An address as the chain's variables and logs spell it: an IPv4-mapped IPv6 address as
/// IPv4, as for a socket's peer.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl Header {
    /// The environment changes for the rest of the chain: with addresses, the four TCP
    /// variables set (value `Some`) and the [`PROXY_ONLY_VARS`] removed (`None`); without,
    /// none (the launcher's values stand).
    pub fn environment(&self) -> Vec<(&'static str, Option<String>)> {
        let Some(a) = self.addrs else {
            return Vec::new();
        };
        vec![
            (ADDRESS_VARS[0], Some(ip_text(a.source.ip()))),
            (ADDRESS_VARS[1], Some(a.source.port().to_string())),
            (ADDRESS_VARS[2], Some(ip_text(a.destination.ip()))),
            (ADDRESS_VARS[3], Some(a.destination.port().to_string())),
        ]
        .into_iter()
        .chain(PROXY_ONLY_VARS.iter().map(|v| (*v, None)))
        .collect()
    }

    /// A short description for a log line: `v2 PROXY 192.0.2.1:5000 -> 10.0.0.1:110`.
    pub fn describe(&self) -> String {
        let v = match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        match (self.command, self.addrs) {
            (Command::Local, _) => format!("{v} LOCAL"),
            (Command::Proxy, None) => format!("{v} PROXY without address"),
            (Command::Proxy, Some(a)) => format!("{v} PROXY {} -> {}", a.source, a.destination),
        }
    }
}

/// The v1 line for `addrs` (`PROXY UNKNOWN` for None). Both addresses must be of one family.
pub fn encode_v1(addrs: Option<Addresses>) -> Vec<u8> {
    let line = match addrs {
        None => "PROXY UNKNOWN\r\n".to_string(),
        Some(a) => {
            let proto = if a.source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {proto} {} {} {} {}\r\n",
                a.source.ip(),
                a.destination.ip(),
                a.source.port(),
                a.destination.port()
            )
        }
    };
    line.into_bytes()
}

/// The v2 header for `command` and `addrs` (AF_UNSPEC for None), followed by `tlvs` (bytes
/// placed after the addresses and counted in the length). Both addresses must be of one
/// family.
pub fn encode_v2(command: Command, addrs: Option<Addresses>, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(match command {
        Command::Local => 0x20,
        Command::Proxy => 0x21,
    });
    let mut body = Vec::new();
    let fam = match addrs {
        None => 0x00,
        Some(a) => {
            match (a.source.ip(), a.destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    body.extend_from_slice(&to_v6(s).octets());
                    body.extend_from_slice(&to_v6(d).octets());
                }
            }
            body.extend_from_slice(&a.source.port().to_be_bytes());
            body.extend_from_slice(&a.destination.port().to_be_bytes());
            if a.source.is_ipv4() && a.destination.is_ipv4() {
                0x11
            } else {
                0x21
            }
        }
    };
    out.push(fam);
    body.extend_from_slice(tlvs);
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(len)]);
    out
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeio::ScriptedInput;
    use proptest::prelude::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Parses `bytes` handed out `chunk` bytes at a time; returns the header and how many
    /// bytes it consumed.
    fn parse(bytes: &[u8], chunk: usize) -> Result<(Header, usize), ProxyError> {
        let mut input = ScriptedInput::new(bytes, chunk);
        read_header(&mut input, far())
    }

    fn a4(s: &str, d: &str) -> Option<Addresses> {
        Some(Addresses {
            source: s.parse().unwrap(),
            destination: d.parse().unwrap(),
        })
    }

    #[test]
    fn v1_tcp4_and_what_follows_is_left() {
        let mut data = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\n".to_vec();
        let n = data.len();
        data.extend_from_slice(b"USER bob\r\n");
        let (h, used) = parse(&data, 64).unwrap();
        assert_eq!(used, n);
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.addrs, a4("192.0.2.1:56324", "198.51.100.2:110"));
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n", 1).unwrap();
        assert_eq!(h.addrs, a4("[2001:db8::1]:1", "[::1]:65535"));
        let (h, n) = parse(b"PROXY UNKNOWN\r\nX", 3).unwrap();
        assert_eq!((h.addrs, n), (None, 15));
        let (h, _) = parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n", 3).unwrap();
        assert_eq!(h.addrs, None);
    }

    #[test]
    fn v1_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "not five fields"),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "not five fields"),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "source address"),
            (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "destination address"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "source port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 02\r\n", "destination port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", "destination port"),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
            (b"PROXY UNKNOWNX\r\n", "protocol"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", "truncated"),
        ];
        for (input, want) in cases {
            match parse(input, 5) {
                Err(ProxyError::Malformed(w)) => {
                    assert!(
                        w.contains(want),
                        "{:?}: {w}",
                        String::from_utf8_lossy(input)
                    )
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn v1_at_the_length_limit() {
        // The protocol's worst case is exactly the limit.
        let long = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {long} {long} 65535 65535\r\n");
        assert_eq!(line.len(), PROXY_V1_MAX_LINE);
        assert!(parse(line.as_bytes(), 1).is_ok());
        let line = format!("PROXY TCP6 {long} {long} 65535 65535\r\n");
        assert!(parse(line.as_bytes(), 1).is_ok());
        let mut over = format!("PROXY UNKNOWN {}", "x".repeat(PROXY_V1_MAX_LINE - 16)).into_bytes();
        assert_eq!(over.len(), PROXY_V1_MAX_LINE - 2);
        over.extend_from_slice(b"\r\n");
        assert!(parse(&over, 1).is_ok());
        over.insert(20, b'x');
        let mut input = ScriptedInput::new(&over, 1);
        assert!(matches!(
            read_header(&mut input, far()),
            Err(ProxyError::TooLong)
        ));
    }

    #[test]
    fn missing_header() {
        for input in [
            &b""[..],
            b"USER bob\r\n",
            b"PASS x\r\n",
            b"\r\n\r\nQUIT\r\nxxxxxxxx",
        ] {
            assert!(
                matches!(parse(input, 1), Err(ProxyError::Missing)),
                "{input:?}"
            );
        }
    }

    #[test]
    fn timeout_inside_the_header() {
        let mut input = ScriptedInput::new(b"PROXY TCP4 1.2", 4).then_timeout();
        assert!(matches!(
            read_header(&mut input, far()),
            Err(ProxyError::Timeout)
        ));
        let mut input = ScriptedInput::new(b"", 4).then_timeout();
        assert!(matches!(
            read_header(&mut input, far()),
            Err(ProxyError::Timeout)
        ));
    }

    #[test]
    fn v2_proxy_local_unspec_unix_and_tlvs() {
        let a = a4("192.0.2.1:40000", "10.0.0.1:995");
        let mut data = encode_v2(Command::Proxy, a, &[0x04, 0x00, 0x01, 0x2a]);
        let n = data.len();
        data.extend_from_slice(b"\x16\x03\x01");
        let (h, used) = parse(&data, 7).unwrap();
        assert_eq!(
            (h.version, h.command, h.addrs, used),
            (Version::V2, Command::Proxy, a, n)
        );

        let (h, used) = parse(&encode_v2(Command::Local, a, b""), 1).unwrap();
        assert_eq!((h.command, h.addrs, used), (Command::Local, None, 28));

        let (h, _) = parse(&encode_v2(Command::Proxy, None, b""), 1).unwrap();
        assert_eq!(h.addrs, None);

        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
        unix.extend_from_slice(&[b'/'; 216]);
        let (h, used) = parse(&unix, 50).unwrap();
        assert_eq!((h.addrs, used), (None, 232));
    }

    #[test]
    fn v2_errors() {
        let sig = V2_SIGNATURE.to_vec();
        let with = |tail: &[u8]| {
            let mut v = sig.clone();
            v.extend_from_slice(tail);
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with(&[0x11, 0x11, 0, 12]), "version"),
            (with(&[0x22, 0x11, 0, 12]), "command"),
            (with(&[0x21, 0x12, 0, 12]), "not STREAM"),
            (with(&[0x21, 0x13, 0, 0]), "transport"),
            (with(&[0x21, 0x41, 0, 0]), "family"),
            (with(&[0x21, 0x11, 0, 11]), "too short"),
            (with(&[0x21, 0x21, 0, 12]), "too short"),
            (with(&[0x21, 0x11, 0, 12, 1, 2]), "truncated"),
            (with(&[0x21]), "truncated"),
        ];
        for (input, want) in cases {
            let mut padded = input.clone();
            if want != "truncated" {
                padded.resize(input.len() + usize::from(input[15]), 0);
            }
            match parse(&padded, 3) {
                Err(ProxyError::Malformed(w)) => assert!(w.contains(want), "{input:?}: {w}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
        let len = (PROXY_V2_MAX_HEADER - V2_FIXED + 1) as u16;
        let mut big = with(&[0x21, 0x11]);
        big.extend_from_slice(&len.to_be_bytes());
        assert!(matches!(parse(&big, 16), Err(ProxyError::TooLong)));
        // At the limit: accepted.
        let tlvs = vec![0u8; PROXY_V2_MAX_HEADER - V2_FIXED - 12];
        let ok = encode_v2(Command::Proxy, a4("1.1.1.1:1", "2.2.2.2:2"), &tlvs);
        assert_eq!(ok.len(), PROXY_V2_MAX_HEADER);
        assert!(parse(&ok, 100).is_ok());
    }

    #[test]
    fn environment_for_the_chain() {
        let h = Header {
            version: Version::V2,
            command: Command::Proxy,
            addrs: a4("[::ffff:192.0.2.7]:5000", "[2001:db8::2]:110"),
        };
        let env = h.environment();
        assert_eq!(
            env,
            vec![
                ("TCPREMOTEIP", Some("192.0.2.7".to_string())),
                ("TCPREMOTEPORT", Some("5000".to_string())),
                ("TCPLOCALIP", Some("2001:db8::2".to_string())),
                ("TCPLOCALPORT", Some("110".to_string())),
                ("TCPREMOTEHOST", None),
                ("TCPREMOTEINFO", None),
                ("REMOTE_ADDR", None),
                ("REMOTE_PORT", None),
            ]
        );
        let local = Header {
            command: Command::Local,
            addrs: None,
            ..h
        };
        assert!(local.environment().is_empty());
    }

    #[test]
    fn reads_a_descriptor_byte_exactly_and_restores_its_flags() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n+OK next\r\n")
            .unwrap();
        let h = read_from_fd(b.as_raw_fd(), Duration::from_secs(5)).unwrap();
        assert_eq!(h.addrs, a4("192.0.2.1:1", "192.0.2.2:2"));
        let flags = nix::fcntl::fcntl(b.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        let mut rest = [0u8; 10];
        b.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"+OK next\r\n");

        a.write_all(&encode_v2(
            Command::Proxy,
            a4("1.2.3.4:5", "6.7.8.9:10"),
            b"",
        ))
        .unwrap();
        a.write_all(b"rest").unwrap();
        let h = read_from_fd(b.as_raw_fd(), Duration::from_secs(5)).unwrap();
        assert_eq!(h.addrs, a4("1.2.3.4:5", "6.7.8.9:10"));
        let mut rest = [0u8; 4];
        b.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest");

        // Nothing sent: the deadline.
        let t = read_from_fd(b.as_raw_fd(), Duration::from_millis(50));
        assert!(matches!(t, Err(ProxyError::Timeout)), "{t:?}");
    }

    fn any_addrs() -> impl Strategy<Value = Option<Addresses>> {
        prop_oneof![
            Just(None),
            (
                any::<[u8; 4]>(),
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(s, d, sp, dp)| Some(Addresses {
                    source: SocketAddr::new(IpAddr::from(s), sp),
                    destination: SocketAddr::new(IpAddr::from(d), dp),
                })),
            (
                any::<[u8; 16]>(),
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(s, d, sp, dp)| Some(Addresses {
                    source: SocketAddr::new(IpAddr::from(s), sp),
                    destination: SocketAddr::new(IpAddr::from(d), dp),
                })),
        ]
    }

    proptest! {
        #[test]
        fn v1_round_trip(addrs in any_addrs(), chunk in 1usize..40, tail in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut data = encode_v1(addrs);
            let n = data.len();
            prop_assert!(n <= PROXY_V1_MAX_LINE);
            data.extend_from_slice(&tail);
            let (h, used) = parse(&data, chunk).unwrap();
            prop_assert_eq!(used, n);
            prop_assert_eq!(h, Header { version: Version::V1, command: Command::Proxy, addrs });
        }

        #[test]
        fn v2_round_trip(
            addrs in any_addrs(),
            local in any::<bool>(),
            tlvs in proptest::collection::vec(any::<u8>(), 0..600),
            chunk in 1usize..64,
            tail in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let command = if local { Command::Local } else { Command::Proxy };
            let mut data = encode_v2(command, addrs, &tlvs);
            let n = data.len();
            data.extend_from_slice(&tail);
            let (h, used) = parse(&data, chunk).unwrap();
            prop_assert_eq!(used, n);
            let addrs = if local { None } else { addrs };
            prop_assert_eq!(h, Header { version: Version::V2, command, addrs });
        }

        #[test]
        fn never_reads_past_what_it_returns(data in proptest::collection::vec(any::<u8>(), 0..300), chunk in 1usize..32) {
            let mut input = Counting { inner: ScriptedInput::new(&data, chunk), taken: 0 };
            if let Ok((_, used)) = read_header(&mut input, far()) {
                prop_assert_eq!(input.taken, used);
            }
            prop_assert!(input.taken <= PROXY_V2_MAX_HEADER);
        }
    }

    /// Counts the bytes handed out.
    struct Counting {
        inner: ScriptedInput,
        taken: usize,
    }

    impl ClientInput for Counting {
        fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome> {
            let r = self.inner.read_until(buf, deadline)?;
            if let ReadOutcome::Data(n) = r {
                self.taken += n;
            }
            Ok(r)
        }
    }
}
