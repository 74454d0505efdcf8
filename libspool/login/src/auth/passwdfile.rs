//! Virtual users from a Dovecot passwd-file:
//! `user:password:uid:gid:gecos:home:shell:extra fields` — `#` comments, blank lines, and
//! missing trailing fields allowed; the extra fields (space-separated `key=value`) keep any
//! colons of their own.
//!
//! Password field: `{SCHEME}secret`, scheme case-insensitive, or a bare crypt hash (scheme
//! CRYPT). Accepted: `{PLAIN}` and `{CLEARTEXT}` (plaintext, the only ones APOP can use),
//! `{CRYPT}` (any crypt format libcrypt knows, DES only when allowed), and the crypt schemes
//! tied to one format, whose hash must have that format: `{SHA512-CRYPT}` `$6$`,
//! `{SHA256-CRYPT}` `$5$`, `{BLF-CRYPT}` `$2a$`/`$2b$`/`$2y$`, `{MD5-CRYPT}` `$1$`. Any other
//! scheme refuses the user (logged by name). An empty field, which Dovecot reads as "any
//! password", is refused.
//!
//! Empty uid/gid/home fields take the `--virtual-uid`/`--virtual-gid`/`--virtual-home`
//! defaults; uid and gid must be numeric. `userdb_mail=VALUE` among the extra fields becomes
//! `MAIL` for the next program, with `~` (at the start or after a `:`, followed by `/` or the
//! end) replaced by the home: Dovecot's `maildir:~/Maildir` becomes `maildir:/home/u/Maildir`,
//! which is also pop-serve's MAILBOX syntax. Other extra fields are ignored. User names match
//! exactly (no case folding).

#![forbid(unsafe_code)]

use super::crypt::{estimated_cost_ns, Format};
use super::lines::{fields, for_each_line, for_each_line_of};
use super::system::{classify_hash, name_is};
use super::{Account, AuthError, Groups, Secret};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Defaults for empty fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults<'a> {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `%u` is replaced by the user name, `%%` by `%`.
    pub home: Option<&'a str>,
}

/// The extra field that sets `MAIL`.
pub const MAIL_FIELD: &[u8] = b"userdb_mail=";

/// A stored password field as a [`Secret`].
pub fn parse_secret(field: &[u8]) -> Secret {
    if field.is_empty() {
        return Secret::Empty;
    }
    let (scheme, rest) = match (field.first(), memchr::memchr(b'}', field)) {
        (Some(b'{'), Some(end)) => (&field[1..end], &field[end + 1..]),
        _ => (&b"CRYPT"[..], field),
    };
    let scheme = String::from_utf8_lossy(scheme).to_ascii_uppercase();
    let want: &[Format] = match scheme.as_str() {
        "PLAIN" | "CLEARTEXT" => {
            return if rest.is_empty() {
                Secret::Empty
            } else {
                Secret::Plain(Zeroizing::new(rest.to_vec()))
            }
        }
        "CRYPT" => &[],
        "SHA512-CRYPT" => &[Format::Sha512],
        "SHA256-CRYPT" => &[Format::Sha256],
        "BLF-CRYPT" => &[Format::Bcrypt],
        "MD5-CRYPT" => &[Format::Md5],
        _ => return Secret::Unsupported(format!("{{{scheme}}}")),
    };
    match classify_hash(rest) {
        Secret::Crypt(h) if !want.is_empty() && !want.contains(&Format::of(&h)) => {
            Secret::Unsupported(format!("{{{scheme}}} with a hash of another format"))
        }
        s => s,
    }
}

/// Replaces `~` at the start or after `:` (and before `/` or the end) with `home`.
pub fn expand_tilde(value: &[u8], home: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + home.len());
    for (i, &c) in value.iter().enumerate() {
        let at_start = i == 0 || value[i - 1] == b':';
        let before_end = i + 1 == value.len() || value[i + 1] == b'/';
        if c == b'~' && at_start && before_end {
            out.extend_from_slice(home);
        } else {
            out.push(c);
        }
    }
    out
}

/// Expands a `--virtual-home` template for `user`.
pub fn expand_home(template: &str, user: &[u8]) -> Result<Vec<u8>, AuthError> {
    if user.contains(&b'/') || user == b"." || user == b".." {
        return Err(AuthError::Temporary(format!(
            "user name {:?} cannot name a home directory",
            String::from_utf8_lossy(user)
        )));
    }
    let t = template.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        match (t[i], t.get(i + 1)) {
            (b'%', Some(b'u')) => {
                out.extend_from_slice(user);
                i += 2;
            }
            (b'%', Some(b'%')) => {
                out.push(b'%');
                i += 2;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn parse_id(f: &[u8], default: Option<u32>) -> Result<Option<u32>, ()> {
    if f.is_empty() {
        return Ok(default);
    }
    if !f.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    std::str::from_utf8(f)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or(())
}

/// Parses the line of `user` (already known to start with `user:`). `Err` if malformed.
pub fn parse_line(line: &[u8], defaults: &Defaults<'_>) -> Result<Account, AuthError> {
    let f = fields(line, 8);
    let get = |i: usize| f.get(i).copied().unwrap_or(b"");
    let name = get(0);
    let bad = |what: &str| {
        AuthError::Temporary(format!(
            "passwd-file line for {}: bad {what}",
            String::from_utf8_lossy(name)
        ))
    };
    let uid = parse_id(get(2), defaults.uid).map_err(|_| bad("uid"))?;
    let gid = parse_id(get(3), defaults.gid).map_err(|_| bad("gid"))?;
    let home = match (get(5), defaults.home) {
        (h, _) if !h.is_empty() => Some(h.to_vec()),
        (_, Some(t)) => Some(expand_home(t, name)?),
        (_, None) => None,
    };
    let shell = Some(get(6))
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(OsStr::from_bytes(s)));
    let mail = get(7)
        .split(|&c| c == b' ' || c == b'\t')
        .filter_map(|kv| kv.strip_prefix(MAIL_FIELD))
        .next_back()
        .map(|v| OsString::from_vec(expand_tilde(v, home.as_deref().unwrap_or(b"~"))));
    Ok(Account {
        name: name.to_vec(),
        uid,
        gid,
        home: home.map(|h| PathBuf::from(OsString::from_vec(h))),
        shell,
        mail,
        groups: Groups::OnlyPrimary,
        secret: parse_secret(get(1)),
        refused: None,
    })
}

/// Looks `user` up in the passwd-file at `path`. `Ok(None)`: no such user. The first line for
/// the user wins; the whole file is read regardless.
pub fn lookup(
    user: &[u8],
    path: &Path,
    defaults: &Defaults<'_>,
) -> Result<Option<Account>, AuthError> {
    lookup_with_reference(user, path, defaults).map(|(a, _)| a)
}

/// [`lookup`], plus the file's *reference hash*: its most expensive crypt hash by
/// [`estimated_cost_ns`] (format and cost parameters; the first of equals), which every failed
/// attempt must cost (None: every entry is plaintext, so a known user costs a comparison and
/// an unknown one must cost no more).
///
/// Estimated rather than measured: a measurement per distinct setting would cost every login
/// the sum of them all, and the file is read afresh for each login.
pub fn lookup_with_reference(
    user: &[u8],
    path: &Path,
    defaults: &Defaults<'_>,
) -> Result<(Option<Account>, Option<Vec<u8>>), AuthError> {
    lookup_in(user, defaults, |f| for_each_line(path, f))
}

/// [`lookup_with_reference`] on a file already opened; `what` names it in errors.
pub fn lookup_with_reference_of(
    user: &[u8],
    file: std::fs::File,
    what: &str,
    defaults: &Defaults<'_>,
) -> Result<(Option<Account>, Option<Vec<u8>>), AuthError> {
    lookup_in(user, defaults, |f| for_each_line_of(file, what, f))
}

type Found = (Option<Account>, Option<Vec<u8>>);

fn lookup_in(
    user: &[u8],
    defaults: &Defaults<'_>,
    each_line: impl FnOnce(&mut dyn FnMut(&[u8]) -> bool) -> Result<(), AuthError>,
) -> Result<Found, AuthError> {
    let mut found: Option<Result<Account, AuthError>> = None;
    let mut reference: Option<(u64, Vec<u8>)> = None;
    each_line(&mut |l: &[u8]| {
        if l.starts_with(b"#") {
            return false;
        }
        if found.is_none() && name_is(l, user) {
            found = Some(parse_line(l, defaults));
        }
        if let Some(field) = l.split(|&b| b == b':').nth(1) {
            if let Secret::Crypt(h) = parse_secret(field) {
                let cost = estimated_cost_ns(&h);
                if reference.as_ref().is_none_or(|(most, _)| cost > *most) {
                    reference = Some((cost, h));
                }
            }
        }
        false
    })?;
    Ok((found.transpose()?, reference.map(|(_, h)| h)))
}

#[cfg(test)]
mod tests {

    #[test]
    fn reference_hash_is_the_most_expensive_crypt_entry_or_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        let defaults = Defaults {
            uid: None,
            gid: None,
            home: None,
        };
        std::fs::write(
            &p,
            "# comment\na:{PLAIN}x:1:1::/h::\nb:{CLEARTEXT}y:1:1::/h::\n",
        )
        .unwrap();
        let (acct, reference) = lookup_with_reference(b"nobody-here", &p, &defaults).unwrap();
        assert!(acct.is_none());
        assert_eq!(
            reference, None,
            "a plaintext-only file has no reference hash"
        );
        std::fs::write(
            &p,
            "a:{PLAIN}x:1:1::/h::\nb:{SHA512-CRYPT}$6$s$h:1:1::/h::\nc:$5$t$u:1:1::/h::\n\
             d:$6$rounds=200000$s$h:1:1::/h::\ne:$1$s$h:1:1::/h::\nf:$5$rounds=150000$s$h\n\
             # g:$6$rounds=900000$s$h\n",
        )
        .unwrap();
        let (acct, reference) = lookup_with_reference(b"a", &p, &defaults).unwrap();
        assert!(acct.is_some());
        assert_eq!(reference.as_deref(), Some(&b"$6$rounds=200000$s$h"[..]));
    }
    use super::*;
    use proptest::prelude::*;

    fn kind(s: &Secret) -> String {
        match s {
            Secret::Crypt(h) => format!("crypt:{}", String::from_utf8_lossy(h)),
            Secret::Plain(p) => format!("plain:{}", String::from_utf8_lossy(p)),
            Secret::Locked => "locked".into(),
            Secret::Empty => "empty".into(),
            Secret::Unsupported(s) => format!("unsupported:{s}"),
        }
    }

    #[test]
    fn secret_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"{PLAIN}pw", "plain:pw"),
            (b"{plain}pw:x", "plain:pw:x"),
            (b"{CLEARTEXT}}x", "plain:}x"),
            (b"{PLAIN}", "empty"),
            (b"", "empty"),
            (b"$6$s$h", "crypt:$6$s$h"),
            (b"{CRYPT}$y$j9T$s$h", "crypt:$y$j9T$s$h"),
            (b"{CRYPT}!$6$s$h", "locked"),
            (b"{SHA512-CRYPT}$6$s$h", "crypt:$6$s$h"),
            (
                b"{SHA512-CRYPT}$5$s$h",
                "unsupported:{SHA512-CRYPT} with a hash of another format",
            ),
            (b"{SHA256-CRYPT}$5$s$h", "crypt:$5$s$h"),
            (b"{BLF-CRYPT}$2y$05$abc", "crypt:$2y$05$abc"),
            (b"{MD5-CRYPT}$1$s$h", "crypt:$1$s$h"),
            (b"{SSHA}abc", "unsupported:{SSHA}"),
            (b"{ARGON2ID}x", "unsupported:{ARGON2ID}"),
            (b"{PLAIN.B64}cHc=", "unsupported:{PLAIN.B64}"),
            (b"{nobrace", "crypt:{nobrace"),
            (b"*", "locked"),
        ];
        for (f, want) in cases {
            assert_eq!(
                kind(&parse_secret(f)),
                *want,
                "{:?}",
                String::from_utf8_lossy(f)
            );
        }
    }

    #[test]
    fn tilde_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"maildir:~/Maildir", b"maildir:/h/u/Maildir"),
            (b"~/Maildir/", b"/h/u/Maildir/"),
            (b"~", b"/h/u"),
            (b"mbox:~", b"mbox:/h/u"),
            (b"mbox:/var/mail/~x", b"mbox:/var/mail/~x"),
            (b"a~/b", b"a~/b"),
        ];
        for (v, want) in cases {
            assert_eq!(expand_tilde(v, b"/h/u"), want.to_vec());
        }
    }

    #[test]
    fn line_table() {
        let d = Defaults {
            uid: Some(5000),
            gid: Some(5001),
            home: Some("/var/vmail/%u%%"),
        };
        let a = parse_line(
            b"bob:{PLAIN}pw:1234:1235::/home/bob:/bin/sh:userdb_mail=maildir:~/Maildir quota=1G",
            &d,
        )
        .unwrap();
        assert_eq!((a.uid, a.gid), (Some(1234), Some(1235)));
        assert_eq!(a.home.as_deref(), Some(Path::new("/home/bob")));
        assert_eq!(a.shell.as_deref(), Some(Path::new("/bin/sh")));
        assert_eq!(
            a.mail.as_deref(),
            Some(OsStr::new("maildir:/home/bob/Maildir"))
        );
        assert_eq!(a.groups, Groups::OnlyPrimary);

        let a = parse_line(b"bob:{PLAIN}pw", &d).unwrap();
        assert_eq!((a.uid, a.gid), (Some(5000), Some(5001)));
        assert_eq!(a.home.as_deref(), Some(Path::new("/var/vmail/bob%")));
        assert_eq!((a.shell, a.mail), (None, None));

        let none = Defaults::default();
        let a = parse_line(b"bob:{PLAIN}pw::::::", &none).unwrap();
        assert_eq!((a.uid, a.gid, a.home), (None, None, None));

        assert!(parse_line(b"bob:{PLAIN}pw:vmail:1", &d).is_err());
        assert!(parse_line(b"bob:{PLAIN}pw:1:-2", &d).is_err());
        assert!(parse_line(b"..:{PLAIN}pw", &d).is_err());
        assert!(parse_line(b"..x:{PLAIN}pw", &d).is_ok());
        assert!(parse_line(b"a/b:{PLAIN}pw", &d).is_err());
    }

    #[test]
    fn lookup_skips_comments_and_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        std::fs::write(
            &p,
            "# bob:{PLAIN}commented\n\n#bob:{PLAIN}x\nbob:{PLAIN}first:1:1::/h\nbob:{PLAIN}second:2:2::/h\nbad:{PLAIN}x:zz\n",
        )
        .unwrap();
        let a = lookup(b"bob", &p, &Defaults::default()).unwrap().unwrap();
        assert_eq!(kind(&a.secret), "plain:first");
        assert!(lookup(b"#bob", &p, &Defaults::default()).unwrap().is_none());
        assert!(lookup(b"carol", &p, &Defaults::default())
            .unwrap()
            .is_none());
        assert!(lookup(b"bad", &p, &Defaults::default()).is_err());
        assert!(matches!(
            lookup(
                b"bob",
                Path::new("/nonexistent/users"),
                &Defaults::default()
            ),
            Err(AuthError::Temporary(_))
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300),
                               user in proptest::collection::vec(any::<u8>(), 0..10)) {
            let d = Defaults { uid: Some(1), gid: None, home: Some("/v/%u") };
            let _ = parse_line(&line, &d);
            let _ = parse_secret(&line);
            let _ = expand_tilde(&line, b"/h");
            let _ = name_is(&line, &user);
            let _ = super::super::system::parse_passwd(&line);
            let _ = super::super::system::parse_shadow(&line);
        }
    }
}
