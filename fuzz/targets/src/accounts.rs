//! Account databases: /etc/passwd and /etc/shadow lines and Dovecot passwd-file lines, as
//! the line reader hands them over from any file.
//!
//! Input: a flags byte (bit 0: ignore password aging), then a file. Properties: the line
//! reader yields exactly the file's lines (LF split, one CR stripped); each parser agrees
//! with a field-by-field reading of its format; a passwd line that parses is rebuilt from
//! its fields byte for byte; no policy check panics on any day count.

use spool_login::auth::lines::{scan, MAX_DB_LINE};
use spool_login::auth::passwdfile::{self, expand_home, expand_tilde, parse_secret, Defaults};
use spool_login::auth::system::{parse_passwd, parse_shadow, shadow_policy};
use spool_login::auth::{Denied, Secret};

fn reference_lines(file: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = file.split(|&b| b == b'\n').collect();
    if file.is_empty() || file.ends_with(b"\n") {
        v.pop();
    }
    // The bound counts a CR before the LF too.
    v.into_iter()
        .filter(|l| l.len() <= MAX_DB_LINE)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

fn id(f: &[u8]) -> Option<u32> {
    if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(f).ok()?.parse().ok()
}

fn check_passwd(line: &[u8]) {
    let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
    let want = f.len() == 7 && !f[0].is_empty() && id(f[2]).is_some() && id(f[3]).is_some();
    match parse_passwd(line) {
        None => assert!(!want, "refused a passwd line"),
        Some(p) => {
            assert!(want, "accepted a malformed passwd line");
            assert_eq!(
                (p.name, p.password, p.home, p.shell),
                (f[0], f[1], f[5], f[6])
            );
            assert_eq!((Some(p.uid), Some(p.gid)), (id(f[2]), id(f[3])));
            assert_eq!(f.join(&b':'), line);
        }
    }
}

fn day(f: Option<&&[u8]>) -> Option<Option<i64>> {
    match f {
        None | Some([]) => Some(None),
        Some(v) => {
            let n: i64 = std::str::from_utf8(v).ok()?.parse().ok()?;
            Some((n >= 0).then_some(n))
        }
    }
}

fn check_shadow(line: &[u8], ignore_aging: bool) {
    let f: Vec<&[u8]> = line.splitn(9, |&b| b == b':').collect();
    let days = [day(f.get(2)), day(f.get(4)), day(f.get(6)), day(f.get(7))];
    let want = f.len() >= 2 && !f[0].is_empty() && days.iter().all(Option::is_some);
    match parse_shadow(line) {
        None => assert!(!want, "refused a shadow line"),
        Some(s) => {
            assert!(want, "accepted a malformed shadow line");
            assert_eq!((s.name, s.hash), (f[0], f[1]));
            let got = [s.last_change, s.max_age, s.inactive, s.expire];
            assert_eq!(got.map(Some), days.map(|d| d.unwrap()).map(Some));
            for today in [0, 1, 19_000, i64::MAX, i64::MIN] {
                let v = shadow_policy(&s, ignore_aging, today);
                if ignore_aging {
                    assert!(matches!(v, None | Some(Denied::AccountExpired)));
                }
            }
        }
    }
}

fn check_passwdfile(line: &[u8]) {
    let defaults = Defaults {
        uid: Some(1000),
        gid: None,
        home: Some("/var/vmail/%u"),
    };
    let f: Vec<&[u8]> = line.splitn(8, |&b| b == b':').collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(b"");
    let parsed = passwdfile::parse_line(line, &defaults);
    let uid_ok = get(2).is_empty() || id(get(2)).is_some();
    let gid_ok = get(3).is_empty() || id(get(3)).is_some();
    let home_ok =
        !get(5).is_empty() || !(get(0).contains(&b'/') || get(0) == b"." || get(0) == b"..");
    match parsed {
        Err(_) => assert!(!(uid_ok && gid_ok && home_ok), "refused a passwd-file line"),
        Ok(a) => {
            assert!(uid_ok && gid_ok && home_ok, "accepted a malformed line");
            assert_eq!(a.name, get(0));
            assert_eq!(
                a.uid,
                if get(2).is_empty() {
                    Some(1000)
                } else {
                    id(get(2))
                }
            );
            assert_eq!(a.gid, if get(3).is_empty() { None } else { id(get(3)) });
        }
    }
    // The password field's scheme: plaintext only from {PLAIN}/{CLEARTEXT}, kept verbatim.
    let field = get(1);
    match parse_secret(field) {
        Secret::Plain(p) => {
            let close = field.iter().position(|&b| b == b'}').expect("a scheme");
            let scheme = String::from_utf8_lossy(&field[1..close]).to_ascii_uppercase();
            assert!(scheme == "PLAIN" || scheme == "CLEARTEXT");
            assert_eq!(&p[..], &field[close + 1..]);
        }
        Secret::Empty => {
            assert!(field.is_empty() || field.ends_with(b"}") || field.starts_with(b"{"))
        }
        Secret::Crypt(h) => assert!(field.ends_with(&h)),
        Secret::Locked | Secret::Unsupported(_) => {}
    }
    // `~` expanded to itself changes nothing; a template without `%` is taken as it is.
    assert_eq!(expand_tilde(field, b"~"), field);
    if let Ok(t) = std::str::from_utf8(get(4)) {
        let user = get(0);
        if !t.contains('%') {
            if let Ok(h) = expand_home(t, user) {
                assert_eq!(h, t.as_bytes());
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let mut lines = Vec::new();
    scan(file, &mut |l: &[u8]| {
        lines.push(l.to_vec());
        false
    })
    .expect("reading from memory");
    assert_eq!(lines, reference_lines(file));
    for l in &lines {
        check_passwd(l);
        check_shadow(l, flags & 1 != 0);
        check_passwdfile(l);
    }
}
