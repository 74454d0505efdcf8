//! The greeting's timestamp (RFC 1939 §7 APOP): `<pid.seconds.nanoseconds.random@HOSTNAME>`,
//! different for every connection, made only of characters strict clients accept.
//!
//! Uniqueness is what APOP needs (a recorded digest must never be valid again); the pid and
//! clock give it on one host and the random part keeps it even across hosts sharing a name
//! or a clock stepping back. Only `[A-Za-z0-9.@_+/-]` appear between the brackets: mpop, for
//! one, refuses a timestamp with other characters.

#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest HOSTNAME accepted (a full DNS name is at most 253; 128 keeps the fd-3 payload
/// within 512 bytes together with the longest user name and password).
pub const MAX_HOSTNAME_LEN: usize = 128;

/// Random characters in each timestamp: 16 from 62 symbols, about 95 bits.
pub const STAMP_RANDOM_CHARS: usize = 16;

/// Longest timestamp, brackets included: `<` pid (10 digits) `.` seconds (20) `.`
/// nanoseconds (9) `.` random `@` hostname `>`.
pub const MAX_STAMP_LEN: usize =
    1 + 10 + 1 + 20 + 1 + 9 + 1 + STAMP_RANDOM_CHARS + 1 + MAX_HOSTNAME_LEN + 1;

/// Why HOSTNAME was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostnameError {
    Empty,
    TooLong(usize),
    /// The first character outside `[A-Za-z0-9.@_+/-]`.
    BadChar(char),
}

impl fmt::Display for HostnameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostnameError::Empty => write!(f, "HOSTNAME is empty"),
            HostnameError::TooLong(n) => {
                write!(
                    f,
                    "HOSTNAME is {n} bytes, at most {MAX_HOSTNAME_LEN} allowed"
                )
            }
            HostnameError::BadChar(c) => write!(
                f,
                "HOSTNAME contains {c:?}; only letters, digits and . @ _ + / - are allowed"
            ),
        }
    }
}

fn stamp_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".@_+/-".contains(&b)
}

/// Checks HOSTNAME for the greeting.
pub fn validate_hostname(h: &str) -> Result<(), HostnameError> {
    if h.is_empty() {
        return Err(HostnameError::Empty);
    }
    if let Some(c) = h.chars().find(|&c| !c.is_ascii() || !stamp_char(c as u8)) {
        return Err(HostnameError::BadChar(c));
    }
    if h.len() > MAX_HOSTNAME_LEN {
        return Err(HostnameError::TooLong(h.len()));
    }
    Ok(())
}

/// The random source failed: no timestamp is made from a predictable value instead.
#[derive(Debug)]
pub struct RandomError(pub std::io::Error);

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no random bytes (getrandom and /dev/urandom): {}",
            self.0
        )
    }
}

/// Fills `buf` from getrandom(2), falling back to /dev/urandom on kernels without it.
fn random_bytes(buf: &mut [u8]) -> Result<(), RandomError> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        let e = match rustix::rand::getrandom(&mut *rest, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) if n > 0 => {
                filled += n;
                continue;
            }
            Ok(_) => std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            Err(e) => std::io::Error::from(e),
        };
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) => {
                return std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(rest))
                    .map_err(RandomError)
            }
            _ => return Err(RandomError(e)),
        }
    }
    Ok(())
}

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Maps random bytes to `n` characters of [`ALPHABET`] without bias (bytes 248..=255 are
/// rejected, 248 being the largest multiple of 62 that fits in a byte).
fn random_chars(n: usize) -> Result<String, RandomError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        random_bytes(&mut buf)?;
        for &b in &buf {
            if b < 248 && out.len() < n {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

/// One connection's timestamp, `<...>` included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(String);

impl Timestamp {
    /// A fresh timestamp for `hostname` (already validated).
    pub fn generate(hostname: &str) -> Result<Timestamp, RandomError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let random = random_chars(STAMP_RANDOM_CHARS)?;
        Ok(Timestamp(format!(
            "<{}.{}.{:09}.{random}@{hostname}>",
            std::process::id(),
            now.as_secs(),
            now.subsec_nanos()
        )))
    }

    /// A fixed timestamp, for tests.
    pub fn fixed(s: &str) -> Timestamp {
        Timestamp(s.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in [
            "pop.example.org",
            "a",
            "host_1+x/y-z@q",
            &"h".repeat(MAX_HOSTNAME_LEN),
        ] {
            assert_eq!(validate_hostname(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_hostname(""), Err(HostnameError::Empty));
        assert_eq!(
            validate_hostname(&"h".repeat(MAX_HOSTNAME_LEN + 1)),
            Err(HostnameError::TooLong(MAX_HOSTNAME_LEN + 1))
        );
        for (bad, c) in [
            ("a b", ' '),
            ("a>b", '>'),
            ("a<b", '<'),
            ("a\r\nb", '\r'),
            ("a\0", '\0'),
            ("hé", 'é'),
            ("a:b", ':'),
        ] {
            assert_eq!(validate_hostname(bad), Err(HostnameError::BadChar(c)));
        }
    }

    #[test]
    fn stamp_shape_and_uniqueness() {
        let host = "h".repeat(MAX_HOSTNAME_LEN);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let t = Timestamp::generate(&host).unwrap();
            let s = t.as_str();
            assert!(s.len() <= MAX_STAMP_LEN);
            let inner = s.strip_prefix('<').unwrap().strip_suffix('>').unwrap();
            assert!(inner.bytes().all(stamp_char), "{s}");
            let (left, h) = inner.split_once('@').unwrap();
            assert_eq!(h, host);
            let parts: Vec<&str> = left.split('.').collect();
            assert_eq!(parts.len(), 4);
            assert!(parts[..3]
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_digit())));
            assert_eq!(parts[2].len(), 9);
            assert_eq!(parts[3].len(), STAMP_RANDOM_CHARS);
            assert!(parts[3].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(seen.insert(s.to_string()), "repeated {s}");
        }
    }

    #[test]
    fn random_chars_cover_the_alphabet() {
        let s = random_chars(5000).unwrap();
        let distinct: std::collections::HashSet<char> = s.chars().collect();
        assert_eq!(distinct.len(), 62);
    }
}
