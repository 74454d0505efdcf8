//! Short-lived login tokens: what a router (`pop-route`) hands a backend instead of the user's
//! password, so that backends never need the users' passwords.
//!
//! A token is `v1.SECONDS.MAC`: the format version, the issue time in seconds since the epoch
//! (decimal), and HMAC-SHA256 under a key shared by router and backends over
//! `popspool-token v1 NUL user NUL SECONDS`, in lowercase hex. It is accepted for
//! [`VALIDITY`] either side of the verifier's clock (clock skew between hosts both ways), so a
//! token seen on the wire can be replayed for that user within that window and not after.
//! The MAC is compared in constant time.
//!
//! The key file holds at least [`MIN_KEY_LEN`] bytes (surrounding whitespace ignored), is a
//! regular file owned by root or the running user, and is neither group- nor world-accessible:
//! anything else is refused before it is read.

#![forbid(unsafe_code)]

use super::constant_time;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// The version tag every token starts with; a new format gets a new tag.
pub const VERSION: &str = "v1";

/// How far a token's time may be from the verifier's clock, in the past or the future.
pub const VALIDITY: Duration = Duration::from_secs(60);

/// Shortest key accepted: 256 bits, the HMAC-SHA256 block's worth of strength.
pub const MIN_KEY_LEN: usize = 32;

/// Longest key file read.
pub const MAX_KEY_LEN: usize = 4096;

/// Length of a token: `v1.` + up to 20 digits + `.` + 64 hex digits.
pub const MAX_TOKEN_LEN: usize = 3 + 20 + 1 + 64;

/// What the MAC covers before the user name: binds the MAC to this format and purpose.
const DOMAIN: &[u8] = b"popspool-token v1\0";

/// A loaded key.
pub struct Key(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(..)")
    }
}

/// Why a key file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Opening or reading failed.
    Io(String),
    /// Not a regular file (a symbolic link as the last component counts as this).
    NotRegular,
    /// Owned by someone other than root or the running user.
    Owner(u32),
    /// Group or other permission bits are set (the mode is given).
    Mode(u32),
    /// Fewer than [`MIN_KEY_LEN`] bytes of key, or more than [`MAX_KEY_LEN`].
    Length(usize),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Io(e) => write!(f, "{e}"),
            KeyError::NotRegular => write!(f, "not a regular file"),
            KeyError::Owner(u) => write!(f, "owned by uid {u}, not root or the running user"),
            KeyError::Mode(m) => write!(
                f,
                "mode {m:04o} lets group or others read it (chmod 600 and keep it root's)"
            ),
            KeyError::Length(n) => write!(
                f,
                "{n} bytes of key: between {MIN_KEY_LEN} and {MAX_KEY_LEN} are needed"
            ),
        }
    }
}

impl Key {
    /// A key from bytes (for tests and for callers that read the file themselves).
    pub fn from_bytes(b: &[u8]) -> Result<Key, KeyError> {
        let t = b.trim_ascii();
        if t.len() < MIN_KEY_LEN || t.len() > MAX_KEY_LEN {
            return Err(KeyError::Length(t.len()));
        }
        Ok(Key(Zeroizing::new(t.to_vec())))
    }

    /// Reads and checks the key file (see the module comment).
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let mut f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    KeyError::NotRegular
                } else {
                    KeyError::Io(e.to_string())
                }
            })?;
        let meta = f.metadata().map_err(|e| KeyError::Io(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(KeyError::NotRegular);
        }
        let euid = rustix::process::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(KeyError::Owner(meta.uid()));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(KeyError::Mode(meta.mode() & 0o7777));
        }
        let mut buf = Zeroizing::new(Vec::new());
        (&mut f)
            .take(MAX_KEY_LEN as u64 + 64)
            .read_to_end(&mut buf)
            .map_err(|e| KeyError::Io(e.to_string()))?;
        Key::from_bytes(&buf)
    }

    fn mac_hex(&self, user: &[u8], secs: u64) -> Zeroizing<Vec<u8>> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        m.update(DOMAIN);
        m.update(user);
        m.update(b"\0");
        m.update(secs.to_string().as_bytes());
        let tag = m.finalize().into_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        for b in tag.iter() {
            out.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        out
    }

    /// The token for `user` issued at `secs` (seconds since the epoch).
    pub fn issue(&self, user: &[u8], secs: u64) -> String {
        let mac = self.mac_hex(user, secs);
        format!(
            "{VERSION}.{secs}.{}",
            std::str::from_utf8(&mac).expect("hex")
        )
    }

    /// Checks `token` for `user` against the clock reading `now`.
    pub fn verify(&self, user: &[u8], token: &[u8], now: u64) -> Result<(), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.splitn(3, |&b| b == b'.');
        let (Some(v), Some(t), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        if v != VERSION.as_bytes() {
            return Err(TokenError::Version);
        }
        if t.is_empty() || t.len() > 20 || !t.iter().all(u8::is_ascii_digit) {
            return Err(TokenError::Malformed);
        }
        let secs: u64 = std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(TokenError::Malformed)?;
        // The MAC first, so that a forged token is told apart from an old one only by the key
        // holder's log, and every well-formed token costs one HMAC.
        let want = self.mac_hex(user, secs);
        if !constant_time::eq(&want, mac) {
            return Err(TokenError::Forged);
        }
        let w = VALIDITY.as_secs();
        if secs + w < now {
            return Err(TokenError::Expired(now - secs));
        }
        if secs > now + w {
            return Err(TokenError::Future(secs - now));
        }
        Ok(())
    }
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not `VERSION.SECONDS.MAC`.
    Malformed,
    /// A version tag this program does not know.
    Version,
    /// The MAC does not match (wrong key, wrong user, or altered).
    Forged,
    /// Issued this many seconds ago, more than [`VALIDITY`].
    Expired(u64),
    /// Issued this many seconds in the future, more than [`VALIDITY`].
    Future(u64),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = VALIDITY.as_secs();
        match self {
            TokenError::Malformed => write!(f, "malformed token"),
            TokenError::Version => write!(f, "unknown token version"),
            TokenError::Forged => write!(f, "token MAC does not match"),
            TokenError::Expired(s) => write!(f, "token issued {s} s ago (valid {w} s)"),
            TokenError::Future(s) => write!(f, "token issued {s} s in the future (valid {w} s)"),
        }
    }
}

/// Seconds since the epoch now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> Key {
        Key::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn round_trip_and_window() {
        let k = key();
        let t = k.issue(b"alice", 1_000_000);
        assert!(t.starts_with("v1.1000000."));
        assert!(t.len() <= MAX_TOKEN_LEN);
        assert_eq!(k.verify(b"alice", t.as_bytes(), 1_000_000), Ok(()));
        assert_eq!(k.verify(b"alice", t.as_bytes(), 1_000_060), Ok(()));
        assert_eq!(k.verify(b"alice", t.as_bytes(), 999_940), Ok(()));
        assert_eq!(
            k.verify(b"alice", t.as_bytes(), 1_000_061),
            Err(TokenError::Expired(61))
        );
        assert_eq!(
            k.verify(b"alice", t.as_bytes(), 999_939),
            Err(TokenError::Future(61))
        );
    }

    #[test]
    fn forged_wrong_user_wrong_key_malformed() {
        let k = key();
        let t = k.issue(b"alice", 5000);
        assert_eq!(
            k.verify(b"bob", t.as_bytes(), 5000),
            Err(TokenError::Forged)
        );
        let other = Key::from_bytes(&[b'x'; 40]).unwrap();
        assert_eq!(
            other.verify(b"alice", t.as_bytes(), 5000),
            Err(TokenError::Forged)
        );
        let mut bad = t.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.verify(b"alice", &bad, 5000), Err(TokenError::Forged));
        // A changed time invalidates the MAC too.
        let moved = t.replacen("5000", "5001", 1);
        assert_eq!(
            k.verify(b"alice", moved.as_bytes(), 5000),
            Err(TokenError::Forged)
        );
        for m in ["", "v1", "v1.5000", "v1..abc", "v1.-5.ab", "password"] {
            assert_eq!(
                k.verify(b"alice", m.as_bytes(), 5000),
                Err(TokenError::Malformed),
                "{m}"
            );
        }
        let v2 = t.replacen("v1", "v2", 1);
        assert_eq!(
            k.verify(b"alice", v2.as_bytes(), 5000),
            Err(TokenError::Version)
        );
    }

    #[test]
    fn key_file_rules() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key");
        std::fs::write(&p, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Key::load(&p).is_ok());
        for mode in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(Key::load(&p).unwrap_err(), KeyError::Mode(mode));
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert_eq!(Key::load(&l).unwrap_err(), KeyError::NotRegular);
        assert_eq!(Key::load(d.path()).unwrap_err(), KeyError::NotRegular);
        let short = d.path().join("short");
        std::fs::write(&short, "too short").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Key::load(&short).unwrap_err(), KeyError::Length(9));
    }
}
