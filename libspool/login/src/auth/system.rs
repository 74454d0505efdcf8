//! System accounts from /etc/passwd and /etc/shadow, read directly rather than through NSS so
//! that the files are explicit (and tests can point at their own) and so that a missing user
//! and an unreadable database are told apart (NSS's getpwnam cannot say which).
//!
//! Policy, in shadow-utils' and pam_unix's terms (days since the epoch, as /etc/shadow counts):
//! - hash `!...` or `*...` (in shadow, or in passwd's own field) is locked; an empty hash is
//!   refused (it means "no password"); passwd field `x` with no shadow line is locked;
//! - field 8 (account expiry) > 0 and today >= it: expired;
//! - unless aging is ignored: field 3 (last change) = 0 means the admin forced a change, which
//!   POP cannot carry out, so refused; with field 5 (max age) set and below 10000, today >=
//!   last change + max is an expired password, and past field 7 (inactivity) days more the
//!   account is inactive; both refused, since POP cannot change a password either;
//! - a shell whose name is `nologin` or `false` refuses logins unless allowed; with a shells
//!   file given, the shell must be listed in it. An empty shell field is `/bin/sh` (passwd(5)).
//!
//! The first line with the user's name wins, as with getpwnam; the whole file is still read.
//! A malformed line for the user asked about is a temporary failure (the database is broken);
//! malformed lines for others are ignored.

#![forbid(unsafe_code)]

use super::crypt::estimated_cost_ns;
use super::lines::{fields, for_each_line};
use super::{Account, AuthError, Denied, Groups, Secret};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Maximum password age at or above which the password never expires (shadow-utils' rule:
/// `passwd -x 99999` means "no aging").
pub const NO_AGING_MAX: i64 = 10_000;

/// The files a system lookup reads.
#[derive(Clone, Copy)]
pub struct Paths<'a> {
    pub passwd: &'a Path,
    pub shadow: &'a Path,
    pub valid_shells: Option<&'a Path>,
}

/// Policy knobs and the current day.
pub struct Policy {
    pub allow_nologin_shell: bool,
    pub ignore_password_aging: bool,
    pub today: i64,
}

/// One /etc/passwd line.
#[derive(Debug, PartialEq, Eq)]
pub struct PasswdLine<'a> {
    pub name: &'a [u8],
    pub password: &'a [u8],
    pub uid: u32,
    pub gid: u32,
    pub home: &'a [u8],
    pub shell: &'a [u8],
}

/// Parses one /etc/passwd line; `None` if malformed.
pub fn parse_passwd(line: &[u8]) -> Option<PasswdLine<'_>> {
    let f = fields(line, 7);
    if f.len() != 7 || f[0].is_empty() || f[6].contains(&b':') {
        return None;
    }
    Some(PasswdLine {
        name: f[0],
        password: f[1],
        uid: parse_id(f[2])?,
        gid: parse_id(f[3])?,
        home: f[5],
        shell: f[6],
    })
}

/// One /etc/shadow line; day fields are `None` when empty.
#[derive(Debug, PartialEq, Eq)]
pub struct ShadowLine<'a> {
    pub name: &'a [u8],
    pub hash: &'a [u8],
    pub last_change: Option<i64>,
    pub max_age: Option<i64>,
    pub inactive: Option<i64>,
    pub expire: Option<i64>,
}

/// Parses one /etc/shadow line; `None` if malformed. Trailing fields may be missing.
pub fn parse_shadow(line: &[u8]) -> Option<ShadowLine<'_>> {
    let f = fields(line, 9);
    if f.len() < 2 || f[0].is_empty() {
        return None;
    }
    let day = |i: usize| -> Option<Option<i64>> {
        match f.get(i) {
            None => Some(None),
            Some([]) => Some(None),
            Some(v) => {
                let s = std::str::from_utf8(v).ok()?;
                // shadow-utils writes -1 for "unset" in some versions.
                let n: i64 = s.parse().ok()?;
                Some(if n < 0 { None } else { Some(n) })
            }
        }
    };
    Some(ShadowLine {
        name: f[0],
        hash: f[1],
        last_change: day(2)?,
        max_age: day(4)?,
        inactive: day(6)?,
        expire: day(7)?,
    })
}

fn parse_id(f: &[u8]) -> Option<u32> {
    if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(f).ok()?.parse().ok()
}

/// A stored crypt hash as a [`Secret`], by the locked/empty conventions.
pub fn classify_hash(hash: &[u8]) -> Secret {
    match hash.first() {
        None => Secret::Empty,
        Some(b'!') | Some(b'*') => Secret::Locked,
        Some(_) => Secret::Crypt(hash.to_vec()),
    }
}

/// The shadow verdict for today, if the account is refused.
pub fn shadow_policy(s: &ShadowLine<'_>, ignore_aging: bool, today: i64) -> Option<Denied> {
    if let Some(exp) = s.expire {
        if exp > 0 && today >= exp {
            return Some(Denied::AccountExpired);
        }
    }
    if ignore_aging {
        return None;
    }
    let last = s.last_change?;
    if last == 0 {
        return Some(Denied::PasswordMustChange);
    }
    let max = s.max_age?;
    if max >= NO_AGING_MAX {
        return None;
    }
    let expires = last.saturating_add(max);
    if let Some(inact) = s.inactive {
        if today >= expires.saturating_add(inact) {
            return Some(Denied::AccountInactive);
        }
    }
    if today >= expires {
        return Some(Denied::PasswordExpired);
    }
    None
}

/// Shells that exist to refuse logins.
pub fn is_nologin_shell(shell: &Path) -> bool {
    matches!(
        shell.file_name().and_then(|n| n.to_str()),
        Some("nologin") | Some("false")
    )
}

/// Whether `shell` is listed in a shells(5) file (comments and blank lines skipped).
pub fn shell_listed(shells_file: &Path, shell: &Path) -> Result<bool, AuthError> {
    let mut found = false;
    for_each_line(shells_file, |l| {
        let l = l.trim_ascii();
        if !l.starts_with(b"#") && l == shell.as_os_str().as_bytes() {
            found = true;
        }
        found
    })?;
    Ok(found)
}

/// Looks `user` up. `Ok(None)`: no such user.
pub fn lookup(
    user: &[u8],
    paths: &Paths<'_>,
    policy: &Policy,
) -> Result<Option<Account>, AuthError> {
    // uid, gid, password field, home, shell of the first line for `user`.
    type Entry = (u32, u32, Vec<u8>, Vec<u8>, Vec<u8>);
    let mut entry: Option<Entry> = None;
    let mut malformed = false;
    for_each_line(paths.passwd, |l| {
        if entry.is_some() || malformed || !name_is(l, user) {
            return false;
        }
        match parse_passwd(l) {
            Some(p) => {
                entry = Some((
                    p.uid,
                    p.gid,
                    p.password.to_vec(),
                    p.home.to_vec(),
                    p.shell.to_vec(),
                ))
            }
            None => malformed = true,
        }
        false
    })?;
    let name = String::from_utf8_lossy(user);
    if malformed {
        return Err(AuthError::Temporary(format!(
            "malformed line for {name} in {}",
            paths.passwd.display()
        )));
    }
    let Some((uid, gid, pw_field, home, shell)) = entry else {
        return Ok(None);
    };

    let mut refused = None;
    let secret = if pw_field == b"x" {
        let mut shadow: Option<(Secret, Option<Denied>)> = None;
        let mut bad = false;
        for_each_line(paths.shadow, |l| {
            if shadow.is_some() || bad || !name_is(l, user) {
                return false;
            }
            match parse_shadow(l) {
                Some(s) => {
                    let verdict = shadow_policy(&s, policy.ignore_password_aging, policy.today);
                    shadow = Some((classify_hash(s.hash), verdict));
                }
                None => bad = true,
            }
            false
        })?;
        if bad {
            return Err(AuthError::Temporary(format!(
                "malformed line for {name} in {}",
                paths.shadow.display()
            )));
        }
        match shadow {
            Some((secret, verdict)) => {
                refused = verdict;
                secret
            }
            None => Secret::Locked,
        }
    } else {
        classify_hash(&pw_field)
    };

    let shell = if shell.is_empty() {
        PathBuf::from("/bin/sh")
    } else {
        PathBuf::from(OsStr::from_bytes(&shell))
    };
    if refused.is_none() && !policy.allow_nologin_shell && is_nologin_shell(&shell) {
        refused = Some(Denied::NologinShell(shell.display().to_string()));
    }
    if refused.is_none() {
        if let Some(file) = paths.valid_shells {
            if !shell_listed(file, &shell)? {
                refused = Some(Denied::ShellNotListed(shell.display().to_string()));
            }
        }
    }
    Ok(Some(Account {
        name: user.to_vec(),
        uid: Some(uid),
        gid: Some(gid),
        home: (!home.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(&home))),
        shell: Some(shell),
        mail: None,
        groups: Groups::Init,
        secret,
        refused,
    }))
}

/// Whether a database line is for `user` (its first field, exactly).
pub fn name_is(line: &[u8], user: &[u8]) -> bool {
    line.len() > user.len() && line.starts_with(user) && line[user.len()] == b':'
}

/// The shadow file's most expensive hash by [`estimated_cost_ns`], when it costs more than
/// `floor` (the yescrypt default every failure pays anyway): a failure for any name must cost
/// what a wrong password for the costliest account costs. None when nothing costs more or the
/// file cannot be read (a lookup that needs it reports that).
pub fn reference_hash(shadow: &Path, floor: &[u8]) -> Option<Vec<u8>> {
    let mut most = (estimated_cost_ns(floor), None);
    for_each_line(shadow, |l| {
        if let Some(Secret::Crypt(h)) = parse_shadow(l).map(|s| classify_hash(s.hash)) {
            let cost = estimated_cost_ns(&h);
            if cost > most.0 {
                most = (cost, Some(h));
            }
        }
        false
    })
    .ok()?;
    most.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_reference_is_the_costliest_hash_above_the_floor() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("shadow");
        let floor = b"$y$j9T$F5Jx5fExrKuPp53xLKQ..1$";
        std::fs::write(&p, "a:$6$s$h:1::::::\nb:!$y$jFT$s$h:1::::::\nc:*:1::::::\n").unwrap();
        assert_eq!(reference_hash(&p, floor), None);
        std::fs::write(
            &p,
            "a:$6$s$h:1::::::\nb:$y$jBT$s$h:1::::::\nc:$6$rounds=900000$s$h:1::::::\n",
        )
        .unwrap();
        assert_eq!(
            reference_hash(&p, floor).as_deref(),
            Some(&b"$6$rounds=900000$s$h"[..])
        );
        assert_eq!(reference_hash(&d.path().join("missing"), floor), None);
    }

    use std::io::Write;

    #[test]
    fn passwd_table() {
        let ok = |l: &'static [u8]| parse_passwd(l).is_some();
        assert_eq!(
            parse_passwd(b"alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash"),
            Some(PasswdLine {
                name: b"alice",
                password: b"x",
                uid: 1000,
                gid: 1000,
                home: b"/home/alice",
                shell: b"/bin/bash"
            })
        );
        assert!(ok(b"a:x:0:0:::"));
        assert!(!ok(b"a:x:1000:1000::/home/a"));
        assert!(!ok(b"a:x:1000:1000::/home/a:/bin/sh:extra"));
        assert!(!ok(b"a:x:-1:1000::/h:/bin/sh"));
        assert!(!ok(b"a:x:99999999999:1::/h:/bin/sh"));
        assert!(!ok(b"a:x:1x:1::/h:/bin/sh"));
        assert!(!ok(b":x:1:1::/h:/bin/sh"));
        assert!(!ok(b""));
    }

    #[test]
    fn shadow_table() {
        let s = parse_shadow(b"alice:$6$s$h:19000:0:99999:7:::").unwrap();
        assert_eq!(s.hash, b"$6$s$h");
        assert_eq!(
            (s.last_change, s.max_age, s.inactive, s.expire),
            (Some(19000), Some(99999), None, None)
        );
        assert!(parse_shadow(b"alice:!").is_some());
        assert!(parse_shadow(b"alice:h:abc").is_none());
        assert!(parse_shadow(b"alice").is_none());
        let s = parse_shadow(b"a:h:-1::-1::-1:-1:").unwrap();
        assert_eq!((s.last_change, s.max_age, s.expire), (None, None, None));
    }

    #[test]
    fn policy_table() {
        let line = |last, max, inact, exp| ShadowLine {
            name: b"u",
            hash: b"h",
            last_change: last,
            max_age: max,
            inactive: inact,
            expire: exp,
        };
        let today = 20_000;
        let cases = [
            (line(Some(19_000), Some(99_999), None, None), false, None),
            (line(None, None, None, None), false, None),
            (line(Some(19_000), None, None, Some(20_001)), false, None),
            (
                line(Some(19_000), None, None, Some(20_000)),
                false,
                Some(Denied::AccountExpired),
            ),
            (
                line(Some(19_000), None, None, Some(20_000)),
                true,
                Some(Denied::AccountExpired),
            ),
            // 0 is "no expiry" to shadow-utils.
            (line(Some(19_000), None, None, Some(0)), false, None),
            (
                line(Some(0), None, None, None),
                false,
                Some(Denied::PasswordMustChange),
            ),
            (line(Some(0), None, None, None), true, None),
            (
                line(Some(19_900), Some(100), None, None),
                false,
                Some(Denied::PasswordExpired),
            ),
            (line(Some(19_901), Some(100), None, None), false, None),
            (line(Some(19_900), Some(100), None, None), true, None),
            (
                line(Some(19_800), Some(100), Some(100), None),
                false,
                Some(Denied::AccountInactive),
            ),
            (
                line(Some(19_850), Some(100), Some(100), None),
                false,
                Some(Denied::PasswordExpired),
            ),
            (line(Some(1), Some(NO_AGING_MAX), None, None), false, None),
        ];
        for (l, ignore, want) in cases {
            assert_eq!(
                shadow_policy(&l, ignore, today),
                want,
                "{l:?} ignore={ignore}"
            );
        }
    }

    #[test]
    fn hash_classes() {
        assert!(matches!(classify_hash(b""), Secret::Empty));
        assert!(matches!(classify_hash(b"!$6$x"), Secret::Locked));
        assert!(matches!(classify_hash(b"*"), Secret::Locked));
        assert!(matches!(classify_hash(b"!!"), Secret::Locked));
        assert!(matches!(classify_hash(b"$6$x"), Secret::Crypt(_)));
    }

    #[test]
    fn nologin_shells() {
        for (s, want) in [
            ("/usr/sbin/nologin", true),
            ("/sbin/nologin", true),
            ("/bin/false", true),
            ("/usr/bin/false", true),
            ("/bin/bash", false),
            ("/bin/sh", false),
        ] {
            assert_eq!(is_nologin_shell(Path::new(s)), want, "{s}");
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn lookup_end_to_end() {
        let d = tempfile::tempdir().unwrap();
        let passwd = write(
            d.path(),
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\n\
             alice:x:1000:1000::/home/alice:/bin/bash\n\
             alice:x:2000:2000::/elsewhere:/bin/bash\n\
             nol:x:1001:1001::/home/nol:/usr/sbin/nologin\n\
             old:$1$abc$def:1002:1002::/home/old:\n\
             noshadow:x:1003:1003::/home/noshadow:/bin/sh\n\
             broken:x:1004\n",
        );
        let shadow = write(
            d.path(),
            "shadow",
            "alice:$6$salt$hash:19000:0:99999:7:::\nnol:$6$s$h:19000::::::\n",
        );
        let shells = write(d.path(), "shells", "# comment\n/bin/bash\n");
        let paths = Paths {
            passwd: &passwd,
            shadow: &shadow,
            valid_shells: None,
        };
        let policy = Policy {
            allow_nologin_shell: false,
            ignore_password_aging: false,
            today: 20_000,
        };
        let a = lookup(b"alice", &paths, &policy).unwrap().unwrap();
        assert_eq!((a.uid, a.gid), (Some(1000), Some(1000)));
        assert_eq!(a.home.as_deref(), Some(Path::new("/home/alice")));
        assert!(matches!(a.secret, Secret::Crypt(ref h) if h == b"$6$salt$hash"));
        assert!(a.refused.is_none());
        assert!(lookup(b"nobody", &paths, &policy).unwrap().is_none());
        assert!(lookup(b"alic", &paths, &policy).unwrap().is_none());
        assert!(lookup(b"", &paths, &policy).unwrap().is_none());
        let n = lookup(b"nol", &paths, &policy).unwrap().unwrap();
        assert!(matches!(n.refused, Some(Denied::NologinShell(_))));
        let allow = Policy {
            allow_nologin_shell: true,
            ..policy
        };
        assert!(lookup(b"nol", &paths, &allow)
            .unwrap()
            .unwrap()
            .refused
            .is_none());
        let o = lookup(b"old", &paths, &allow).unwrap().unwrap();
        assert_eq!(o.shell.as_deref(), Some(Path::new("/bin/sh")));
        assert!(matches!(o.secret, Secret::Crypt(_)));
        assert!(matches!(
            lookup(b"noshadow", &paths, &allow).unwrap().unwrap().secret,
            Secret::Locked
        ));
        assert!(matches!(
            lookup(b"broken", &paths, &allow),
            Err(AuthError::Temporary(_))
        ));
        let listed = Paths {
            valid_shells: Some(&shells),
            ..paths
        };
        assert!(lookup(b"alice", &listed, &allow)
            .unwrap()
            .unwrap()
            .refused
            .is_none());
        assert!(matches!(
            lookup(b"old", &listed, &allow).unwrap().unwrap().refused,
            Some(Denied::ShellNotListed(_))
        ));
        let missing = Paths {
            shadow: Path::new("/nonexistent/shadow"),
            ..paths
        };
        assert!(matches!(
            lookup(b"alice", &missing, &allow),
            Err(AuthError::Temporary(_))
        ));
    }
}
