//! The hashed spool path: the one function every tool uses.
//!
//! A spool with tens of thousands of users is slow as one flat directory, so mailboxes live
//! under directories named after the first bytes of the user name:
//!
//! | depth | `claird`                | `x`          |
//! |-------|-------------------------|--------------|
//! | 0     | `spool/claird`          | `spool/x`    |
//! | 1     | `spool/c/claird`        | `spool/x/x`  |
//! | 2     | `spool/c/cl/claird`     | `spool/x/x_/x` |
//!
//! Rules, chosen so every tool (delivery, POP3, migration) computes the same path:
//!
//! * Level `k` (1-based) is the first `k` bytes of the name. A name shorter than the depth is
//!   padded with `_` (`x` at depth 2 gives `x/x_/x`). The padded directory may be shared with
//!   a real name (`x_` also lives under `x/x_/`), which is harmless: the last component is
//!   always the full name, so distinct names never share a path.
//! * Case is kept: Unix user names are case-sensitive, so `Claird` (`C/Cl/Claird`) and
//!   `claird` are two users with two mailboxes. Folding would merge them.
//! * In the directory levels, bytes outside `[A-Za-z0-9_+=-]` are written as `%xx` (lowercase
//!   hex), so a UTF-8 lead byte never leaves a directory named by half a character, and `%`
//!   itself is encoded, which keeps the encoding injective. The last component is the name's
//!   own bytes: that is what `ls` and the MTA show.
//! * Rejected: an empty name, a name longer than [`MAX_USER_NAME`] bytes (250: `NAME_MAX` less
//!   the `.lock` of its dotlock), a name
//!   containing `/`, NUL or any other control byte (0x00-0x1F, 0x7F), and a name starting with
//!   `.` (which covers `.` and `..`, and every temporary or record file the toolkit and the
//!   common MDAs make beside a mailbox under a dot name: `pop-deliver`'s `.NAME.pop-deliver.*`,
//!   `pop-spool migrate`'s `.NAME.migrate`, liblockfile's `.lk*`).
//! * Also rejected: a name ending in one of [`SIDECAR_SUFFIXES`] (`.lock`): `NAME.lock` is the
//!   dotlock of mailbox `NAME`, so a user `NAME.lock` would have their mailbox where every MDA
//!   creates, and breaks, another user's lock. With this rule, the only files a name-derived
//!   path can meet beside a mailbox are that mailbox's own.
//! * Depth 0 is a flat spool (the classic `/var/mail/claird`), used when migrating; depths above
//!   [`MAX_HASH_DEPTH`] are refused.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Deepest supported hashing. Two levels already split a spool of a million users into
/// directories of a few hundred entries; deeper levels would only add lookups and a layout
/// every other tool would have to agree on.
pub const MAX_HASH_DEPTH: u8 = 2;

/// Longest file name, in bytes (`NAME_MAX`) of every Unix file system.
pub const NAME_MAX: usize = 255;

/// Longest user name, in bytes: the name is the mailbox's file name, and its dotlock
/// `NAME.lock` must fit in [`NAME_MAX`] as well, or the mailbox could never be locked. (Dot
/// files made beside a mailbox, such as `pop-deliver`'s `.NAME.pop-deliver.*`, shorten the
/// name part instead.)
pub const MAX_USER_NAME: usize = NAME_MAX - crate::lock::DOTLOCK_SUFFIX.len();

/// Suffixes of the files made beside a mailbox under its own name plus a suffix (not a dot
/// name): only the dotlock (`lock.rs`, and every MDA). A user name ending in one is refused.
pub const SIDECAR_SUFFIXES: &[&str] = &[crate::lock::file::DOTLOCK_SUFFIX];

/// Why a user name cannot name a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    /// Contains `/`, NUL or another control byte, or starts with `.` (so also `.`/`..`).
    Unsafe,
    /// Longer than [`MAX_USER_NAME`] bytes.
    TooLong,
    /// Ends in a [`SIDECAR_SUFFIXES`] entry: the mailbox would be another mailbox's dotlock.
    Sidecar,
    /// Hash depth above [`MAX_HASH_DEPTH`].
    BadDepth,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Empty => f.write_str("empty user name"),
            PathError::Unsafe => {
                f.write_str("user name contains '/', a control byte, or starts with '.'")
            }
            PathError::TooLong => write!(
                f,
                "user name longer than {MAX_USER_NAME} bytes (its dotlock NAME{} must fit in \
                 {NAME_MAX})",
                crate::lock::DOTLOCK_SUFFIX
            ),
            PathError::Sidecar => f.write_str(
                "user name ends in \".lock\": that path is the dotlock of another user's mailbox",
            ),
            PathError::BadDepth => f.write_str("spool hash depth must be 0, 1 or 2"),
        }
    }
}

impl std::error::Error for PathError {}

/// Pads names shorter than the depth; in the safe set so it is never `%`-encoded.
const PAD: u8 = b'_';

/// Bytes written as themselves in the directory levels.
fn is_safe_dir_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'=' | b'-')
}

/// Checks that `user` can be a mailbox file name in the spool (see the module rules).
pub fn check_user(user: &[u8]) -> Result<(), PathError> {
    if user.is_empty() {
        return Err(PathError::Empty);
    }
    if user.len() > MAX_USER_NAME {
        return Err(PathError::TooLong);
    }
    if user[0] == b'.' || user.iter().any(|&b| b == b'/' || b < 0x20 || b == 0x7f) {
        return Err(PathError::Unsafe);
    }
    if SIDECAR_SUFFIXES
        .iter()
        .any(|s| user.ends_with(s.as_bytes()))
    {
        return Err(PathError::Sidecar);
    }
    Ok(())
}

/// `spool/c/claird` (depth 1), `spool/c/cl/claird` (depth 2), `spool/claird` (depth 0).
/// See the module documentation for padding, case and encoding rules.
pub fn hashed_path(spool: &Path, user: &[u8], depth: u8) -> Result<PathBuf, PathError> {
    if depth > MAX_HASH_DEPTH {
        return Err(PathError::BadDepth);
    }
    check_user(user)?;
    let mut path = spool.to_path_buf();
    let mut level = Vec::with_capacity(3 * usize::from(MAX_HASH_DEPTH));
    for k in 0..usize::from(depth) {
        let b = user.get(k).copied().unwrap_or(PAD);
        if is_safe_dir_byte(b) {
            level.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            level.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
        path.push(OsStr::from_bytes(&level));
    }
    path.push(OsStr::from_bytes(user));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    #[test]
    fn table() {
        let ok: &[(&[u8], u8, &str)] = &[
            (b"claird", 0, "/s/claird"),
            (b"claird", 1, "/s/c/claird"),
            (b"claird", 2, "/s/c/cl/claird"),
            (b"x", 1, "/s/x/x"),
            (b"x", 2, "/s/x/x_/x"),
            (b"x_", 2, "/s/x/x_/x_"),
            (b"Claird", 2, "/s/C/Cl/Claird"),
            (b"a.b", 2, "/s/a/a%2e/a.b"),
            (b"a%", 2, "/s/a/a%25/a%"),
            (b"j+x", 2, "/s/j/j+/j+x"),
            (b"-u", 2, "/s/-/-u/-u"),
            ("\u{e9}l\u{e8}ve".as_bytes(), 1, "/s/%c3/\u{e9}l\u{e8}ve"),
            (
                "\u{e9}l\u{e8}ve".as_bytes(),
                2,
                "/s/%c3/%c3%a9/\u{e9}l\u{e8}ve",
            ),
            (b"a b", 2, "/s/a/a%20/a b"),
            (b"a..", 2, "/s/a/a%2e/a.."),
            (b"a.locks", 1, "/s/a/a.locks"),
            (b"lock", 1, "/s/l/lock"),
            (b"a.lock.b", 1, "/s/a/a.lock.b"),
        ];
        for &(user, depth, want) in ok {
            assert_eq!(
                hashed_path(Path::new("/s"), user, depth),
                Ok(PathBuf::from(want)),
                "{user:?} depth {depth}"
            );
        }
        let long = vec![b'a'; 256];
        let bad: &[(&[u8], u8, PathError)] = &[
            (b"", 1, PathError::Empty),
            (b".", 1, PathError::Unsafe),
            (b"..", 1, PathError::Unsafe),
            (b".profile", 0, PathError::Unsafe),
            (b"a/b", 1, PathError::Unsafe),
            (b"a\0b", 1, PathError::Unsafe),
            (b"a\nb", 1, PathError::Unsafe),
            (b"a\x7f", 1, PathError::Unsafe),
            (&long, 1, PathError::TooLong),
            // 251 to 255 bytes: a file name, but `NAME.lock` would not be one.
            (&long[..MAX_USER_NAME + 1], 1, PathError::TooLong),
            (&long[..NAME_MAX], 0, PathError::TooLong),
            (b"secrevm.lock", 1, PathError::Sidecar),
            (b"a.lock", 0, PathError::Sidecar),
            (b"a.lock.lock", 2, PathError::Sidecar),
            (b"claird", 3, PathError::BadDepth),
        ];
        for (user, depth, want) in bad {
            assert_eq!(
                hashed_path(Path::new("/s"), user, *depth).as_ref(),
                Err(want),
                "{user:?}"
            );
        }
        assert!(hashed_path(Path::new("/s"), &long[..MAX_USER_NAME], 2).is_ok());
        // The longest name's dotlock is still a file name.
        assert_eq!(MAX_USER_NAME + crate::lock::DOTLOCK_SUFFIX.len(), NAME_MAX);
    }

    fn check_inside(spool: &Path, p: &Path, depth: u8) {
        assert!(p.starts_with(spool));
        let rest = p.strip_prefix(spool).expect("prefix");
        let comps: Vec<_> = rest.components().collect();
        assert_eq!(comps.len(), usize::from(depth) + 1);
        for c in comps {
            assert!(matches!(c, Component::Normal(_)), "{c:?} in {p:?}");
        }
    }

    /// Mostly printable and high bytes so most names are accepted, with some of anything.
    fn name_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![9 => 0x20u8..=0xff, 1 => any::<u8>()], len)
    }

    proptest! {
        #[test]
        fn accepted_names_stay_inside(
            user in name_bytes(0..300),
            depth in 0u8..=3,
        ) {
            let spool = Path::new("/var/spool/mail");
            if let Ok(p) = hashed_path(spool, &user, depth) {
                check_inside(spool, &p, depth);
                prop_assert_eq!(p.file_name().map(|n| n.as_bytes()), Some(&user[..]));
                prop_assert_eq!(Ok(p), hashed_path(spool, &user, depth));
            }
        }

        #[test]
        fn distinct_names_distinct_paths(
            a in name_bytes(1..8),
            b in name_bytes(1..8),
            depth in 0u8..=2,
        ) {
            let spool = Path::new("/s");
            if let (Ok(pa), Ok(pb)) = (hashed_path(spool, &a, depth), hashed_path(spool, &b, depth)) {
                prop_assert_eq!(a == b, pa == pb);
            }
        }

        #[test]
        fn printable_names_accepted(user in "[a-zA-Z0-9_][a-zA-Z0-9_.+=-]{0,40}", depth in 0u8..=2) {
            prop_assume!(!user.ends_with(".lock"));
            let spool = Path::new("/s");
            let p = hashed_path(spool, user.as_bytes(), depth);
            prop_assert!(p.is_ok());
            check_inside(spool, &p.expect("ok"), depth);
        }
    }
}
