//! Virtual servers: one passwd-file (the format of [`super::passwdfile`]) per server, in one
//! directory, chosen per connection by what the launcher and the TLS front exported before
//! any client input was read:
//!
//! 1. the TLS server name the client asked for, `SSL_TLS_SNI_SERVERNAME` (pop-tls, s6-tlsd),
//!    lower-cased and without a trailing dot, when a file of that name exists; a name that
//!    is an IP address or `default` is ignored, so the name the client chooses can reach only
//!    files named by host names;
//! 2. else the local address the client connected to, `TCPLOCALIP` (tcpserver, s6), in its
//!    normal spelling (`127.0.0.2`, `2001:db8::1`; an IPv4-mapped IPv6 address as IPv4), when
//!    a file of that name exists;
//! 3. else the file [`DEFAULT_NAME`], when it exists;
//! 4. else the login fails as a *temporary* failure (exit 111): no account can be looked up
//!    for an address the site did not configure, which is the site's error and not the
//!    client's, and a client told "wrong password" would drop a password that is right.
//!
//! Names are checked before use ([`valid_name`]: no `/`, no `..`, no leading dot, at most
//! [`MAX_VHOST_NAME`] bytes of letters, digits, `.`, `-`, `_`, `:`); a name that fails is
//! treated as absent. Each file is opened through a descriptor of the directory with
//! `O_NOFOLLOW`: a symlink in the directory is refused (temporary failure), as is anything
//! but a regular file.
//!
//! Namespaces never meet: an account exists only in its server's file, so a user of one
//! virtual server cannot log in through another, and the user the next program sees (`USER`,
//! `LOGNAME`) is `NAME@SERVER`, so pop-serve's default mailbox (the hashed spool path of
//! `$USER`) differs between `bob` of two servers. The home always comes from the
//! `--virtual-home` template, which must contain both `%u` (user) and `%v` (server): a line
//! whose home field names another directory is refused (temporary failure), so homes (and
//! everything under them: a Maildir, the `~` of `userdb_mail=`, pop-serve's state) differ
//! between servers too.

#![forbid(unsafe_code)]

use super::passwdfile::{self, Defaults};
use super::{Account, AuthError};
use rustix::fs::{Mode, OFlags};
use std::ffi::OsString;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The variable the TLS front exports the requested server name in.
pub const SNI_ENV: &str = "SSL_TLS_SNI_SERVERNAME";
/// The variable the launcher exports the local address in.
pub const LOCAL_IP_ENV: &str = "TCPLOCALIP";
/// The file used when neither the server name nor the local address has one.
pub const DEFAULT_NAME: &str = "default";
/// Longest server name looked up (a DNS name's limit).
pub const MAX_VHOST_NAME: usize = 253;

/// Whether `name` may name a file in the directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_VHOST_NAME
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// A TLS server name as a file name: lower case, one trailing dot removed. None if invalid,
/// and for a name that is an IP address or [`DEFAULT_NAME`]: the client chooses the server
/// name, so it may only choose among files named by host names, never an address's file or
/// the default.
pub fn server_name(raw: &str) -> Option<String> {
    let n = raw.to_ascii_lowercase();
    let n = n.strip_suffix('.').unwrap_or(&n).to_string();
    let usable = valid_name(&n) && n != DEFAULT_NAME && n.parse::<IpAddr>().is_err();
    usable.then_some(n)
}

/// A local address in its normal spelling. None if it is not an IP address.
pub fn local_address(raw: &str) -> Option<String> {
    let ip: IpAddr = raw.trim().parse().ok()?;
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let n = ip.to_string();
    valid_name(&n).then_some(n)
}

/// The file names to try, in order, from the environment `env` gives.
pub fn candidates(env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut v = Vec::with_capacity(3);
    if let Some(n) = env(SNI_ENV).as_deref().and_then(server_name) {
        v.push(n);
    }
    if let Some(n) = env(LOCAL_IP_ENV).as_deref().and_then(local_address) {
        if !v.contains(&n) {
            v.push(n);
        }
    }
    if !v.iter().any(|n| n == DEFAULT_NAME) {
        v.push(DEFAULT_NAME.to_string());
    }
    v
}

/// The chosen server: its name and its passwd-file, open.
#[derive(Debug)]
pub struct Selected {
    pub name: String,
    pub file: File,
}

/// Chooses the server's file in `dir` from the process environment.
pub fn select(dir: &Path) -> Result<Selected, AuthError> {
    select_from(dir, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// [`select`] with the environment given.
pub fn select_from(
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Selected, AuthError> {
    let dirfd: OwnedFd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| AuthError::Temporary(format!("cannot open {}: {e}", dir.display())))?;
    let tried = candidates(env);
    for name in &tried {
        let fd = match rustix::fs::openat(
            &dirfd,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(rustix::io::Errno::LOOP) => {
                return Err(AuthError::Temporary(format!(
                    "{}/{name} is a symlink: refused",
                    dir.display()
                )))
            }
            Err(e) => {
                return Err(AuthError::Temporary(format!(
                    "cannot open {}/{name}: {e}",
                    dir.display()
                )))
            }
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| {
            AuthError::Temporary(format!("cannot stat {}/{name}: {e}", dir.display()))
        })?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(AuthError::Temporary(format!(
                "{}/{name} is not a regular file",
                dir.display()
            )));
        }
        return Ok(Selected {
            name: name.clone(),
            file: File::from(fd),
        });
    }
    Err(AuthError::Temporary(format!(
        "no virtual server in {} for this connection (tried {})",
        dir.display(),
        tried.join(", ")
    )))
}

/// Checks a `--virtual-home` template for virtual servers: it must use both `%u` and `%v`.
pub fn check_home_template(t: &str) -> Result<(), String> {
    let (mut u, mut v) = (false, false);
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match b.get(i + 1) {
                Some(b'u') => u = true,
                Some(b'v') => v = true,
                _ => {}
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    if u && v {
        Ok(())
    } else {
        Err(format!(
            "--virtual-home {t:?} must contain %u (user) and %v (virtual server)"
        ))
    }
}

/// The template with `%v` replaced by `server` (`%%` and `%u` left for the passwd-file
/// expansion).
pub fn with_server(template: &str, server: &str) -> String {
    let mut out = String::with_capacity(template.len() + server.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('v') => out.push_str(server),
            Some(n) => {
                out.push('%');
                out.push(n);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The settings of the source.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Checked by [`check_home_template`].
    pub home: &'a str,
}

/// Looks `user` up in the selected server's file: the account (named `user@server`, with the
/// home the template gives) and the file's reference hash, as
/// [`passwdfile::lookup_with_reference`].
pub fn lookup(
    user: &[u8],
    sel: Selected,
    dir: &Path,
    s: &Settings<'_>,
) -> Result<(Option<Account>, Option<Vec<u8>>), AuthError> {
    check_home_template(s.home).map_err(AuthError::Temporary)?;
    let template = with_server(s.home, &sel.name);
    let defaults = Defaults {
        uid: s.uid,
        gid: s.gid,
        home: Some(&template),
    };
    let what = dir.join(&sel.name).display().to_string();
    let (found, reference) =
        passwdfile::lookup_with_reference_of(user, sel.file, &what, &defaults)?;
    let Some(mut account) = found else {
        return Ok((None, reference));
    };
    let want = PathBuf::from(OsString::from_vec(passwdfile::expand_home(
        &template,
        &account.name,
    )?));
    if account.home.as_deref() != Some(want.as_path()) {
        return Err(AuthError::Temporary(format!(
            "{what}: the line of {} names a home; virtual servers take it from --virtual-home",
            String::from_utf8_lossy(&account.name)
        )));
    }
    account.name.push(b'@');
    account.name.extend_from_slice(sel.name.as_bytes());
    Ok((Some(account), reference))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn name_table() {
        for ok in ["a.example", "127.0.0.2", "::1", "default", "x_y-z"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "a".repeat(MAX_VHOST_NAME + 1);
        for bad in ["", ".hidden", "a/b", "..", "a..b", "a b", "é", &long] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(
            server_name("Mail.Example.ORG.").as_deref(),
            Some("mail.example.org")
        );
        assert_eq!(server_name("../etc"), None);
        assert_eq!(server_name("127.0.0.3"), None);
        assert_eq!(server_name("::1"), None);
        assert_eq!(server_name("Default"), None);
        assert_eq!(local_address("127.0.0.2").as_deref(), Some("127.0.0.2"));
        assert_eq!(
            local_address("::ffff:127.0.0.3").as_deref(),
            Some("127.0.0.3")
        );
        assert_eq!(
            local_address("2001:DB8:0::1").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(local_address("0127.0.0.1"), None);
        assert_eq!(local_address("fe80::1%eth0"), None);
    }

    #[test]
    fn candidate_order() {
        assert_eq!(
            candidates(env(&[(SNI_ENV, "A.example"), (LOCAL_IP_ENV, "127.0.0.2")])),
            ["a.example", "127.0.0.2", "default"]
        );
        assert_eq!(
            candidates(env(&[(SNI_ENV, "../x"), (LOCAL_IP_ENV, "junk")])),
            ["default"]
        );
        assert_eq!(candidates(env(&[])), ["default"]);
    }

    #[test]
    fn sources_list_what_they_read() {
        let v = super::super::Source::Vhost {
            dir: PathBuf::from("/etc/popspool/vhosts"),
            default_uid: None,
            default_gid: None,
            home: "/v/%v/%u".into(),
        };
        assert_eq!(v.paths(), [PathBuf::from("/etc/popspool/vhosts")]);
        let s = super::super::Source::System {
            passwd: "/p".into(),
            shadow: "/s".into(),
            allow_nologin_shell: false,
            valid_shells: Some("/sh".into()),
            ignore_password_aging: false,
        };
        assert_eq!(
            s.paths(),
            [Path::new("/p"), Path::new("/s"), Path::new("/sh")]
        );
    }

    #[test]
    fn templates() {
        assert!(check_home_template("/v/%v/%u").is_ok());
        assert!(check_home_template("/v/%u").is_err());
        assert!(check_home_template("/v/%%v/%u").is_err());
        assert_eq!(with_server("/v/%v/%u/%%v%", "a"), "/v/a/%u/%%v%");
    }

    #[test]
    fn selection_and_namespaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("127.0.0.2"), "bob:{PLAIN}two\n").unwrap();
        std::fs::write(
            p.join("a.example"),
            "bob:{PLAIN}a\nhomed:{PLAIN}h:1:1::/elsewhere\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(p.join("127.0.0.2"), p.join("127.0.0.9")).unwrap();
        std::fs::create_dir(p.join("127.0.0.8")).unwrap();
        let s = Settings {
            uid: Some(5000),
            gid: Some(5000),
            home: "/v/%v/%u",
        };
        let sel = select_from(p, env(&[(LOCAL_IP_ENV, "127.0.0.2")])).unwrap();
        assert_eq!(sel.name, "127.0.0.2");
        let (a, _) = lookup(b"bob", sel, p, &s).unwrap();
        let a = a.unwrap();
        assert_eq!(a.name, b"bob@127.0.0.2");
        assert_eq!(a.home.as_deref(), Some(Path::new("/v/127.0.0.2/bob")));

        let sel = select_from(
            p,
            env(&[(SNI_ENV, "A.EXAMPLE"), (LOCAL_IP_ENV, "127.0.0.2")]),
        )
        .unwrap();
        assert_eq!(sel.name, "a.example");
        let (a, _) = lookup(b"bob", sel, p, &s).unwrap();
        assert_eq!(
            a.unwrap().home.as_deref(),
            Some(Path::new("/v/a.example/bob"))
        );
        let sel = select_from(p, env(&[(SNI_ENV, "a.example")])).unwrap();
        assert!(matches!(
            lookup(b"homed", sel, p, &s),
            Err(AuthError::Temporary(_))
        ));

        // An unknown SNI name falls back to the address.
        let sel = select_from(
            p,
            env(&[(SNI_ENV, "b.example"), (LOCAL_IP_ENV, "127.0.0.2")]),
        )
        .unwrap();
        assert_eq!(sel.name, "127.0.0.2");
        for bad in ["127.0.0.9", "127.0.0.8", "127.0.0.7"] {
            let got = select_from(p, env(&[(LOCAL_IP_ENV, bad)]));
            assert!(
                matches!(got, Err(AuthError::Temporary(_))),
                "{bad}: {got:?}"
            );
        }
        std::fs::write(p.join("default"), "carol:{PLAIN}c\n").unwrap();
        assert_eq!(
            select_from(p, env(&[(LOCAL_IP_ENV, "127.0.0.7")]))
                .unwrap()
                .name,
            "default"
        );
    }
}
