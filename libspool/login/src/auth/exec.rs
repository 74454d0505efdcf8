//! The environment the next program gets, and the exec.
//!
//! The environment is rebuilt, not inherited: whatever ran before us (a network-facing front
//! end) must not be able to steer the user's session through variables. Kept from ours: the
//! names in [`KEPT_ENV`], those starting with a prefix in [`KEPT_ENV_PREFIXES`] (connection
//! facts from tcpserver, s6 and systemd, and TLS facts from s6-tlsd), and any named with
//! `--keep-env`. Set by us: `USER`, `LOGNAME`, `HOME`, `SHELL` (when the account has one) and
//! `MAIL` (when a passwd-file `userdb_mail=` gave one; informational — pop-serve takes its
//! mailbox on its command line). `PATH` defaults to [`DEFAULT_PATH`].

#![forbid(unsafe_code)]

use super::{AuthError, Verified};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Variables passed through by exact name.
/// `POPRELAYFD` names the POP-before-SMTP login pipe (pop-relay-record, pop-relay-ok); the
/// program's `main` keeps it only when it names a pipe open for writing and unsets it otherwise.
pub const KEPT_ENV: &[&str] = &["PATH", "TZ", "LANG", "PROTO", spool_relay::RELAY_FD_ENV];

/// Variables passed through by prefix: `TCP` (TCPREMOTEIP, TCPLOCALPORT, TCP6..., tcpserver and
/// s6-tcpserver), `REMOTE_` (systemd socket activation), `SSL_` (s6-tlsd), `LC_` (locale).
pub const KEPT_ENV_PREFIXES: &[&str] = &["TCP", "REMOTE_", "SSL_", "LC_"];

/// Variables we set ourselves, never inherited.
pub const SET_ENV: &[&str] = &["USER", "LOGNAME", "HOME", "SHELL", "MAIL"];

/// `PATH` when none was inherited.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn kept(name: &OsStr, extra: &[String]) -> bool {
    let n = name.as_bytes();
    if SET_ENV.iter().any(|s| s.as_bytes() == n) {
        return false;
    }
    KEPT_ENV.iter().any(|k| k.as_bytes() == n)
        || KEPT_ENV_PREFIXES
            .iter()
            .any(|p| n.starts_with(p.as_bytes()))
        || extra.iter().any(|k| k.as_bytes() == n)
}

/// The next program's complete environment.
pub fn environment(
    v: &Verified,
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    keep: &[String],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = inherited
        .into_iter()
        .filter(|(k, _)| kept(k, keep))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let name = OsStr::from_bytes(&v.name).to_os_string();
    env.push(("USER".into(), name.clone()));
    env.push(("LOGNAME".into(), name));
    env.push(("HOME".into(), v.home.clone().into_os_string()));
    if let Some(s) = &v.shell {
        env.push(("SHELL".into(), s.clone().into_os_string()));
    }
    if let Some(m) = &v.mail {
        env.push(("MAIL".into(), m.clone()));
    }
    env
}

/// Execs `prog[0]` (looked up in the new `PATH` when it has no `/`) with `prog[1..]` and
/// exactly `env`. Returns only on failure.
pub fn exec(prog: &[OsString], env: Vec<(OsString, OsString)>) -> AuthError {
    let Some((first, rest)) = prog.split_first() else {
        return AuthError::Misuse("no program to run".into());
    };
    let err = Command::new(first).args(rest).env_clear().envs(env).exec();
    AuthError::Temporary(format!("cannot exec {}: {err}", first.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Groups;
    use std::path::PathBuf;

    fn v(shell: Option<&str>, mail: Option<&str>) -> Verified {
        Verified {
            name: b"alice".to_vec(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/home/alice"),
            shell: shell.map(PathBuf::from),
            mail: mail.map(OsString::from),
            groups: Groups::Init,
        }
    }

    fn map(env: &[(OsString, OsString)]) -> std::collections::BTreeMap<String, String> {
        env.iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect()
    }

    #[test]
    fn scrubs_and_sets() {
        let inherited = [
            ("PATH", "/bin"),
            ("TCPREMOTEIP", "192.0.2.1"),
            ("TCP6REMOTEIP", "::1"),
            ("REMOTE_ADDR", "192.0.2.1"),
            ("SSL_PROTOCOL", "TLSv1.3"),
            ("PROTO", "TCP"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("USER", "root"),
            ("HOME", "/root"),
            ("MAIL", "/var/mail/root"),
            ("IFS", "x"),
            ("KEEPME", "1"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = environment(&v(Some("/bin/bash"), None), inherited, &["KEEPME".into()]);
        let m = map(&env);
        assert_eq!(env.len(), m.len(), "no duplicates");
        for (k, want) in [
            ("PATH", "/bin"),
            ("TCPREMOTEIP", "192.0.2.1"),
            ("TCP6REMOTEIP", "::1"),
            ("REMOTE_ADDR", "192.0.2.1"),
            ("SSL_PROTOCOL", "TLSv1.3"),
            ("PROTO", "TCP"),
            ("USER", "alice"),
            ("LOGNAME", "alice"),
            ("HOME", "/home/alice"),
            ("SHELL", "/bin/bash"),
            ("KEEPME", "1"),
        ] {
            assert_eq!(m.get(k).map(String::as_str), Some(want), "{k}");
        }
        for gone in ["LD_PRELOAD", "MAIL", "IFS"] {
            assert!(!m.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn defaults_path_and_sets_mail() {
        let env = environment(&v(None, Some("maildir:/home/alice/M")), [], &[]);
        let m = map(&env);
        assert_eq!(m["PATH"], DEFAULT_PATH);
        assert_eq!(m["MAIL"], "maildir:/home/alice/M");
        assert!(!m.contains_key("SHELL"));
    }
}
