//! `pop-checkpassword` in two processes. The untrusted fd-3 payload is read and parsed, and
//! the password checked, in a confined *verifier* child; the parent, which never reads a
//! byte of fd 3, gets the verdict over a pipe and then does what needs privilege and exec:
//! it becomes the user and execs the next program, unconfined, as the chain needs (pop-serve
//! gains the `mail` group from the setgid `pop-dotlock` before it sets `no_new_privs` itself,
//! so `no_new_privs` must not be set here; and Landlock rules would be inherited by every
//! later link).
//!
//! The verifier, in this order: closes descriptors 0 and 1 (the client's connection); keeps
//! of its capabilities only CAP_DAC_READ_SEARCH (to read a shadow file it does not own);
//! sets `RLIMIT_NOFILE` to [`VERIFIER_MAX_OPEN_FILES`]; sets `no_new_privs` and a Landlock
//! ruleset that grants reading exactly the files its account source names
//! ([`Source::reads`]) and nothing else: no other file, no exec, no TCP bind or connect,
//! signals and abstract sockets scoped. Only then does it read fd 3. The system source reads
//! `/etc/passwd` and `/etc/shadow` (and the shells file) itself, not through NSS, so the
//! verifier needs no NSS module; `initgroups`, which does go through NSS, runs in the parent
//! after the verdict. `RLIMIT_CORE` is 0 in both (set at start).
//!
//! The verdict is one message of at most [`VERDICT_MAX`] bytes, parsed in one place
//! ([`Verdict::decode`]), which checks every length; anything malformed, a verifier that
//! dies, or one that says nothing is a temporary failure (exit 111). The parent also applies
//! the uid policy (`--min-uid`, `--allow-root`) again to what it is told, so a subverted
//! verifier can at worst name another ordinary account, never root or a system uid.

use super::{checkpw, drop, exec, AuthError, Config, Groups, Verified};
use spool_wire::log::{Level, Logger};
use spool_wire::sandbox::{self, Enforced, Sandbox};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The verdict message's size limit.
pub const VERDICT_MAX: usize = 16 * 1024;

/// The verifier's `RLIMIT_NOFILE`: stdio, fd 3, the verdict pipe, the log socket and the one
/// account file open at a time, with room to spare.
pub const VERIFIER_MAX_OPEN_FILES: u64 = 16;

/// How long the parent waits for the verdict beyond `--fd3-timeout` (the password checks
/// themselves take well under a second).
pub const VERDICT_SLACK: Duration = Duration::from_secs(60);

/// What the verifier tells the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials were good: become this account. `user` is the name as sent on fd 3.
    Verified { user: Vec<u8>, account: Verified },
    /// Refused or failed, with the exit code (1, 2 or 111) and the text for the log; `user`
    /// when fd 3 was read far enough to name one.
    Refused {
        user: Option<Vec<u8>>,
        code: u8,
        text: String,
    },
}

impl PartialEq for Verified {
    fn eq(&self, o: &Verified) -> bool {
        self.name == o.name
            && self.uid == o.uid
            && self.gid == o.gid
            && self.home == o.home
            && self.shell == o.shell
            && self.mail == o.mail
            && self.groups == o.groups
    }
}
impl Eq for Verified {}

const KIND_VERIFIED: u8 = 0;

fn put(out: &mut Vec<u8>, field: &[u8]) -> Result<(), String> {
    let len = u16::try_from(field.len()).map_err(|_| "a verdict field is too long")?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

fn put_opt(out: &mut Vec<u8>, field: Option<&[u8]>) -> Result<(), String> {
    out.push(u8::from(field.is_some()));
    put(out, field.unwrap_or_default())
}

/// A cursor over a verdict message that checks every length.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("verdict truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn field(&mut self) -> Result<&'a [u8], String> {
        let b = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        self.take(n)
    }
    fn opt(&mut self) -> Result<Option<&'a [u8]>, String> {
        let present = self.byte()?;
        let f = self.field()?;
        match present {
            0 if f.is_empty() => Ok(None),
            1 => Ok(Some(f)),
            _ => Err("bad optional field in the verdict".into()),
        }
    }
}

impl Verdict {
    /// The message: a kind byte (0 verified, else the exit code 1, 2 or 111), then
    /// length-prefixed fields (u16, big-endian) and fixed-size numbers; at most
    /// [`VERDICT_MAX`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match self {
            Verdict::Verified { user, account } => {
                out.push(KIND_VERIFIED);
                put(&mut out, user)?;
                put(&mut out, &account.name)?;
                out.extend_from_slice(&account.uid.to_be_bytes());
                out.extend_from_slice(&account.gid.to_be_bytes());
                put(&mut out, account.home.as_os_str().as_bytes())?;
                put_opt(
                    &mut out,
                    account.shell.as_ref().map(|s| s.as_os_str().as_bytes()),
                )?;
                put_opt(&mut out, account.mail.as_ref().map(|m| m.as_bytes()))?;
                out.push(match account.groups {
                    Groups::Init => 0,
                    Groups::OnlyPrimary => 1,
                });
            }
            Verdict::Refused { user, code, text } => {
                if !matches!(code, 1 | 2 | 111) {
                    return Err(format!("exit code {code} is not a refusal"));
                }
                out.push(*code);
                put_opt(&mut out, user.as_deref())?;
                put(&mut out, text.as_bytes())?;
            }
        }
        if out.len() > VERDICT_MAX {
            return Err(format!("verdict of {} bytes is too long", out.len()));
        }
        Ok(out)
    }

    /// Parses a message of [`Verdict::encode`]'s format; the only parser of the verifier's
    /// bytes. Anything else (too long, truncated, trailing bytes, an unknown kind) is an error.
    pub fn decode(msg: &[u8]) -> Result<Verdict, String> {
        if msg.len() > VERDICT_MAX {
            return Err("verdict too long".into());
        }
        let mut c = Cursor(msg);
        let v = match c.byte()? {
            KIND_VERIFIED => {
                let user = c.field()?.to_vec();
                let name = c.field()?.to_vec();
                let uid = c.u32()?;
                let gid = c.u32()?;
                let home = PathBuf::from(OsStr::from_bytes(c.field()?));
                let shell = c.opt()?.map(|s| PathBuf::from(OsStr::from_bytes(s)));
                let mail = c.opt()?.map(|m| OsStr::from_bytes(m).to_os_string());
                let groups = match c.byte()? {
                    0 => Groups::Init,
                    1 => Groups::OnlyPrimary,
                    _ => return Err("bad groups kind in the verdict".into()),
                };
                if name.is_empty() || name.contains(&0) || home.as_os_str().is_empty() {
                    return Err("bad account in the verdict".into());
                }
                Verdict::Verified {
                    user,
                    account: Verified {
                        name,
                        uid,
                        gid,
                        home,
                        shell,
                        mail,
                        groups,
                    },
                }
            }
            code @ (1 | 2 | 111) => {
                let user = c.opt()?.map(<[u8]>::to_vec);
                let text = String::from_utf8(c.field()?.to_vec())
                    .map_err(|_| "verdict text is not UTF-8".to_string())?;
                Verdict::Refused { user, code, text }
            }
            k => return Err(format!("unknown verdict kind {k}")),
        };
        if !c.0.is_empty() {
            return Err("trailing bytes after the verdict".into());
        }
        Ok(v)
    }
}

fn refused(user: Option<&[u8]>, e: &AuthError) -> Verdict {
    Verdict::Refused {
        user: user.map(<[u8]>::to_vec),
        code: e.exit_code(),
        text: e.to_string(),
    }
}

/// Keeps CAP_DAC_READ_SEARCH alone (when the process holds it) in Effective and Permitted,
/// and clears Inheritable and Ambient. The Bounding set stays: no exec is possible anyway.
fn keep_only_read_search() -> Result<(), String> {
    use caps::{CapSet, Capability, CapsHashSet};
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    let keep: CapsHashSet = permitted
        .into_iter()
        .filter(|c| *c == Capability::CAP_DAC_READ_SEARCH)
        .collect();
    for set in [CapSet::Ambient, CapSet::Inheritable] {
        caps::clear(None, set).map_err(|e| e.to_string())?;
    }
    caps::set(None, CapSet::Effective, &keep).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| e.to_string())
}

/// Every file the verifier reads: its account source's ([`Source::paths`]) and the login
/// token key, when there is one. The verifier's whole reach.
pub fn reads(cfg: &Config) -> Vec<PathBuf> {
    let mut v = cfg.source.paths();
    v.extend(cfg.token_key.iter().cloned());
    v
}

/// Confines the verifier (see the module documentation); what Landlock enforced comes back.
pub fn confine_verifier(cfg: &Config) -> Result<sandbox::Status, String> {
    keep_only_read_search().map_err(|e| format!("capabilities: {e}"))?;
    sandbox::max_open_files(VERIFIER_MAX_OPEN_FILES).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let mut sb = Sandbox::new();
    for p in reads(cfg) {
        sb = sb.allow(p, sandbox::read());
    }
    sb.restrict().map_err(|e| format!("no_new_privs: {e}"))
}

/// The verifier's whole life, in the child: confine, read fd 3, verify.
fn verifier(cfg: &Config, require_sandbox: bool, log: &Logger) -> Verdict {
    // The client's connection is the parent's business.
    let _ = nix::unistd::close(0);
    let _ = nix::unistd::close(1);
    match confine_verifier(cfg) {
        Ok(s) if s.landlock == Enforced::Full => log.log(Level::Debug, &format!("verifier {s}")),
        Ok(s) if require_sandbox => {
            return refused(
                None,
                &AuthError::Temporary(format!("--require-sandbox: {s}")),
            )
        }
        Ok(s) => log.log(Level::Info, &format!("verifier {s}")),
        Err(e) => {
            return refused(
                None,
                &AuthError::Temporary(format!("cannot confine the verifier: {e}")),
            )
        }
    }
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(log);
    let creds = match checkpw::read_credentials(cfg.fd3_timeout) {
        Ok(c) => c,
        Err(e) => return refused(None, &e),
    };
    let user = creds.user().to_vec();
    let selected = match cfg.source.select() {
        Ok(s) => s,
        Err(e) => return refused(Some(&user), &e),
    };
    // A refusal names the virtual server, as the parent's lines do for an accepted login.
    let server = selected.as_ref().map(|s| s.name.clone());
    let verified = super::authenticate_in(cfg, selected, &creds, super::today());
    // The password is no longer needed.
    std::mem::drop(creds);
    match (verified, server) {
        (Ok(account), _) => Verdict::Verified { user, account },
        (Err(e), None) => refused(Some(&user), &e),
        (Err(e), Some(server)) => Verdict::Refused {
            user: Some(user),
            code: e.exit_code(),
            text: format!("vhost={server} {e}"),
        },
    }
}

/// Starts the verifier; returns the read end of its verdict pipe and its pid.
fn spawn_verifier(
    cfg: &Config,
    require_sandbox: bool,
    log: &Logger,
) -> Result<(OwnedFd, nix::unistd::Pid), String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    match crate::sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            std::mem::drop(r);
            let verdict = verifier(cfg, require_sandbox, log);
            let msg = verdict.encode().or_else(|e| {
                refused(None, &AuthError::Temporary(format!("verifier: {e}"))).encode()
            });
            let ok = match msg {
                Ok(m) => std::fs::File::from(w).write_all(&m).is_ok(),
                Err(_) => false,
            };
            std::process::exit(if ok { 0 } else { 111 })
        }
        nix::unistd::ForkResult::Parent { child } => Ok((r, child)),
    }
}

/// Reads the verdict (at most [`VERDICT_MAX`] bytes, by `deadline`) and reaps the verifier.
fn receive(r: OwnedFd, child: nix::unistd::Pid, deadline: Instant) -> Result<Verdict, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::wait::{waitpid, WaitStatus};
    let mut msg = Vec::new();
    let mut f = std::fs::File::from(r);
    let mut buf = [0u8; 4096];
    let read = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            break Err("no verdict in time".to_string());
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => break Err(format!("poll: {e}")),
        }
        match f.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) if msg.len() + n > VERDICT_MAX => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                break Err("verdict too long".into());
            }
            Ok(n) => msg.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(format!("reading the verdict: {e}")),
        }
    };
    let status = loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    read?;
    match status {
        Ok(WaitStatus::Exited(_, 0)) => Verdict::decode(&msg),
        Ok(s) => Err(format!("verifier ended with {s:?}")),
        Err(e) => Err(format!("waitpid: {e}")),
    }
}

/// The whole of `pop-checkpassword`, separated: the verifier reads fd 3 and checks the
/// password confined; this process drops to the verified user, chdirs home and execs `prog`.
/// Returns the exit code on failure, having logged it.
pub fn run(cfg: &Config, prog: &[OsString], require_sandbox: bool, log: &Logger) -> u8 {
    let client = spool_wire::log::client_address();
    if prog.is_empty() {
        let e = AuthError::Misuse("no program to run".into());
        log.log(Level::Err, &format!("{e}"));
        return e.exit_code();
    }
    let temp = |what: String| {
        let e = AuthError::Temporary(what);
        log.log(Level::Err, &format!("client={client} {e}"));
        e.exit_code()
    };
    // Asked before the pipe is made: when fd 3 is not open, the pipe may get its number.
    let fd3_open = nix::fcntl::fcntl(checkpw::CHECKPW_FD, nix::fcntl::FcntlArg::F_GETFD).is_ok();
    let (r, child) = match spawn_verifier(cfg, require_sandbox, log) {
        Ok(x) => x,
        Err(e) => return temp(format!("cannot start the verifier: {e}")),
    };
    // fd 3 belongs to the verifier; the next program must not inherit it.
    if fd3_open {
        let _ = nix::unistd::close(checkpw::CHECKPW_FD);
    }
    let deadline = Instant::now() + cfg.fd3_timeout + VERDICT_SLACK;
    let (user, account) = match receive(r, child, deadline) {
        Err(e) => return temp(format!("verifier: {e}")),
        Ok(Verdict::Refused { user, code, text }) => {
            let level = if code == super::EXIT_BAD_CREDENTIALS {
                Level::Info
            } else {
                Level::Err
            };
            match user {
                Some(u) => log.log(
                    level,
                    &format!(
                        "user={} client={client} {text}",
                        String::from_utf8_lossy(&u)
                    ),
                ),
                None => log.log(level, &format!("client={client} {text}")),
            }
            return code;
        }
        Ok(Verdict::Verified { user, account }) => {
            (String::from_utf8_lossy(&user).into_owned(), account)
        }
    };
    // A virtual server's account is USER@SERVER (see `vhost`): every line from here on names
    // the server.
    let client = match (&cfg.source, account.name.strip_prefix(user.as_bytes())) {
        (super::Source::Vhost { .. }, Some([b'@', server @ ..])) => {
            format!("{client} vhost={}", String::from_utf8_lossy(server))
        }
        _ => client,
    };
    let fail = |e: AuthError| {
        let level = match e {
            AuthError::BadCredentials(_) => Level::Info,
            _ => Level::Err,
        };
        log.log(level, &format!("user={user} client={client} {e}"));
        e.exit_code()
    };
    // The verifier applied this policy already; a subverted one must not get around it.
    if account.uid == 0 && !cfg.allow_root {
        return fail(AuthError::BadCredentials(super::Denied::Root));
    }
    if account.uid < cfg.min_uid {
        return fail(AuthError::BadCredentials(super::Denied::UidBelowMin(
            account.uid,
        )));
    }
    if let Err(e) = drop::become_user(&account) {
        return fail(e);
    }
    if let Err(e) = std::env::set_current_dir(&account.home) {
        return fail(AuthError::Temporary(format!(
            "cannot chdir to {}: {e}",
            account.home.display()
        )));
    }
    let env = exec::environment(&account, std::env::vars_os(), &cfg.keep_env);
    log.log(
        Level::Info,
        &format!(
            "user={user} client={client} login ok uid={} gid={}",
            account.uid, account.gid
        ),
    );
    fail(exec::exec(prog, env))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn account(shell: Option<&str>, mail: Option<&str>, groups: Groups) -> Verified {
        Verified {
            name: b"alice".to_vec(),
            uid: 1000,
            gid: 100,
            home: PathBuf::from("/home/alice"),
            shell: shell.map(PathBuf::from),
            mail: mail.map(OsString::from),
            groups,
        }
    }

    #[test]
    fn verdicts_round_trip() {
        let cases = [
            Verdict::Verified {
                user: b"alice".to_vec(),
                account: account(Some("/bin/sh"), None, Groups::Init),
            },
            Verdict::Verified {
                user: b"Alice".to_vec(),
                account: account(None, Some("maildir:~/M"), Groups::OnlyPrimary),
            },
            Verdict::Verified {
                user: b"alice".to_vec(),
                account: account(Some(""), Some(""), Groups::Init),
            },
            Verdict::Refused {
                user: None,
                code: 2,
                text: "misuse: fd 3 is not open".into(),
            },
            Verdict::Refused {
                user: Some(b"bob".to_vec()),
                code: 1,
                text: "refused: wrong password".into(),
            },
            Verdict::Refused {
                user: Some(Vec::new()),
                code: 111,
                text: String::new(),
            },
        ];
        for v in cases {
            let m = v.encode().unwrap();
            assert_eq!(Verdict::decode(&m).unwrap(), v);
            // Every proper prefix is truncated, and a byte more is trailing garbage.
            for n in 0..m.len() {
                assert!(Verdict::decode(&m[..n]).is_err(), "{v:?} cut at {n}");
            }
            let mut longer = m.clone();
            longer.push(0);
            assert!(Verdict::decode(&longer).is_err());
        }
    }

    #[test]
    fn limits_and_bad_kinds() {
        let huge = Verdict::Refused {
            user: None,
            code: 111,
            text: "x".repeat(VERDICT_MAX),
        };
        assert!(huge.encode().is_err());
        let not_a_refusal = Verdict::Refused {
            user: None,
            code: 0,
            text: String::new(),
        };
        assert!(not_a_refusal.encode().is_err());
        assert!(Verdict::decode(&[7, 0, 0, 0]).is_err());
        assert!(Verdict::decode(&vec![1u8; VERDICT_MAX + 1]).is_err());
        // An optional field marked absent must be empty.
        assert!(Verdict::decode(&[1, 0, 0, 1, b'x', 0, 0]).is_err());
    }

    #[test]
    fn each_source_reads_its_files() {
        let system = crate::auth::Source::System {
            passwd: "/p".into(),
            shadow: "/s".into(),
            allow_nologin_shell: false,
            valid_shells: Some("/shells".into()),
            ignore_password_aging: false,
        };
        assert_eq!(
            system.paths(),
            [PathBuf::from("/p"), "/s".into(), "/shells".into()]
        );
        let file = crate::auth::Source::PasswdFile {
            path: "/users".into(),
            default_uid: None,
            default_gid: None,
            default_home: None,
        };
        assert_eq!(file.paths(), [PathBuf::from("/users")]);
    }

    proptest! {
        #[test]
        fn decoder_never_panics_and_reencodes(msg in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(v) = Verdict::decode(&msg) {
                prop_assert_eq!(v.encode().unwrap(), msg);
            }
        }
    }
}
