//! Verifying credentials handed over the checkpassword interface and becoming the user:
//! everything `pop-checkpassword` does. Never touches mailboxes.
//!
//! The steps, each in its own module: [`checkpw`] reads fd 3; [`system`] or [`passwdfile`]
//! looks the user up and applies account policy; [`crypt`] (libcrypt) and [`apop`] check the
//! secret in constant time; [`drop`] becomes the user for good; [`exec`] scrubs the environment
//! and execs the next program. [`verify::run`] chains them in two processes (the fd-3 payload
//! parsed and the password checked in a confined child); every failure is one [`AuthError`], whose
//! [`AuthError::exit_code`] is the only place exit codes are chosen.

pub mod apop;
pub mod checkpw;
pub mod constant_time;
pub mod crypt;
pub mod drop;
pub mod exec;
pub mod lines;
pub mod passwdfile;
pub mod system;
pub mod token;
pub mod verify;
pub mod vhost;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

/// Exit code: the credentials were not accepted (interface: "1 if the password was wrong").
pub const EXIT_BAD_CREDENTIALS: u8 = 1;
/// Exit code: the program was misused (no fd 3, malformed fd-3 data, no program to exec).
pub const EXIT_MISUSE: u8 = 2;
/// Exit code: temporary failure (database unreadable, chdir or exec failed, ...).
pub const EXIT_TEMPORARY: u8 = 111;

/// Why credentials were refused. Only ever logged: the client learns nothing but "failed".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// The fd-3 data exceeded [`checkpw::FD3_MAX`].
    Oversized,
    /// The user field was empty.
    EmptyUser,
    /// No such user in the database.
    UnknownUser,
    /// The password (or APOP digest) did not match.
    WrongPassword,
    /// The hash starts with `!` or `*` (passwd -l, system accounts), or there is no shadow entry.
    Locked,
    /// The stored hash is empty: "no password", which we never accept over the network.
    NoPassword,
    /// The stored secret uses a scheme or hash format we refuse (named here).
    UnsupportedHash(String),
    /// Shadow field 8: the account expired on that day.
    AccountExpired,
    /// Shadow fields 3/5: the password is older than its maximum age.
    PasswordExpired,
    /// Shadow fields 3/5/7: expired and past the inactivity period too.
    AccountInactive,
    /// Shadow field 3 is 0: the admin forced a change, which POP cannot do.
    PasswordMustChange,
    /// The account's uid is below `--min-uid`.
    UidBelowMin(u32),
    /// The account is uid 0 and `--allow-root` was not given.
    Root,
    /// The shell is a nologin/false shell.
    NologinShell(String),
    /// `--require-valid-shell` and the shell is not in the shells file.
    ShellNotListed(String),
    /// Not running as root and the account is not the invoking user.
    NeedsRoot(u32),
    /// `--token-key`: the password field is not a valid token for this user now.
    BadToken(token::TokenError),
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Oversized => write!(f, "more than {} bytes on fd 3", checkpw::FD3_MAX),
            Denied::EmptyUser => write!(f, "empty user name"),
            Denied::UnknownUser => write!(f, "unknown user"),
            Denied::WrongPassword => write!(f, "wrong password"),
            Denied::Locked => write!(f, "account locked"),
            Denied::NoPassword => write!(f, "account has an empty password hash"),
            Denied::UnsupportedHash(s) => write!(f, "unsupported password scheme {s}"),
            Denied::AccountExpired => write!(f, "account expired"),
            Denied::PasswordExpired => write!(f, "password expired"),
            Denied::AccountInactive => write!(f, "password expired and account inactive"),
            Denied::PasswordMustChange => write!(f, "password must be changed first"),
            Denied::UidBelowMin(u) => write!(f, "uid {u} below --min-uid"),
            Denied::Root => write!(f, "uid 0 refused (no --allow-root)"),
            Denied::NologinShell(s) => write!(f, "login shell {s} refuses logins"),
            Denied::ShellNotListed(s) => write!(f, "login shell {s} not in the shells file"),
            Denied::NeedsRoot(u) => write!(
                f,
                "uid {u} is not the invoking user; serving other users needs root"
            ),
            Denied::BadToken(e) => write!(f, "{e}"),
        }
    }
}

/// Every way `pop-checkpassword` can fail, by the interface's three outcomes.
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthError {
    /// Credentials not accepted: exit 1.
    BadCredentials(Denied),
    /// The caller broke the interface (fd 3, its format, the arguments): exit 2.
    Misuse(String),
    /// Something outside the credentials failed (database, chdir, exec): exit 111.
    Temporary(String),
}

impl AuthError {
    /// The one mapping from an error to the process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            AuthError::BadCredentials(_) => EXIT_BAD_CREDENTIALS,
            AuthError::Misuse(_) => EXIT_MISUSE,
            AuthError::Temporary(_) => EXIT_TEMPORARY,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::BadCredentials(d) => write!(f, "refused: {d}"),
            AuthError::Misuse(s) => write!(f, "misuse: {s}"),
            AuthError::Temporary(s) => write!(f, "temporary failure: {s}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Where accounts come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// /etc/passwd + /etc/shadow, parsed directly (not NSS).
    System {
        passwd: PathBuf,
        shadow: PathBuf,
        /// Shells that refuse logins are refused unless this is set.
        allow_nologin_shell: bool,
        /// `--require-valid-shell`: the shells file the login shell must be listed in.
        valid_shells: Option<PathBuf>,
        /// Skip shadow fields 3/5/7 (password aging); field 8 (account expiry) always applies.
        ignore_password_aging: bool,
    },
    /// A Dovecot passwd-file of virtual users.
    PasswdFile {
        path: PathBuf,
        /// uid/gid for lines whose fields are empty.
        default_uid: Option<u32>,
        default_gid: Option<u32>,
        /// Home for lines whose field is empty; `%u` is the user name, `%%` a `%`.
        default_home: Option<String>,
    },
    /// A directory of passwd-files, one per virtual server ([`vhost`]).
    Vhost {
        dir: PathBuf,
        default_uid: Option<u32>,
        default_gid: Option<u32>,
        /// The home template: `%u` the user, `%v` the server, `%%` a `%` (both required).
        home: String,
    },
}

impl Source {
    /// Every path the source reads (a directory: the files directly in it), so a confined
    /// reader can be allowed exactly these.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Source::System {
                passwd,
                shadow,
                valid_shells,
                ..
            } => {
                let mut v = vec![passwd.clone(), shadow.clone()];
                v.extend(valid_shells.iter().cloned());
                v
            }
            Source::PasswdFile { path, .. } => vec![path.clone()],
            Source::Vhost { dir, .. } => vec![dir.clone()],
        }
    }

    /// The virtual server of this connection, chosen from the environment; None for sources
    /// without virtual servers.
    pub fn select(&self) -> Result<Option<vhost::Selected>, AuthError> {
        match self {
            Source::Vhost { dir, .. } => vhost::select(dir).map(Some),
            _ => Ok(None),
        }
    }
}

/// Everything [`verify::run`] needs, validated by the binary.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    /// Accounts with a smaller uid are refused (uid 0 also needs `allow_root`).
    pub min_uid: u32,
    pub allow_root: bool,
    /// Accept traditional DES hashes (8-character passwords): off by default.
    pub allow_des: bool,
    /// Extra environment variables passed through to the program, beyond [`exec::KEPT_ENV`].
    pub keep_env: Vec<String>,
    /// Bound on reading fd 3.
    pub fd3_timeout: Duration,
    /// `--token-key`: the password field must be a router's token ([`token`]) made with the key
    /// in this file; the source is used only to find the account, its secret is not checked
    /// (a locked account is still refused).
    pub token_key: Option<PathBuf>,
}

/// The stored secret of an account.
pub enum Secret {
    /// A crypt(3) hash string.
    Crypt(Vec<u8>),
    /// A plaintext secret (`{PLAIN}`/`{CLEARTEXT}`): the only kind APOP can use.
    Plain(Zeroizing<Vec<u8>>),
    /// Locked: no password can match.
    Locked,
    /// Empty hash: never accepted.
    Empty,
    /// A scheme we refuse, by name.
    Unsupported(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Crypt(_) => write!(f, "Crypt(..)"),
            Secret::Plain(_) => write!(f, "Plain(..)"),
            Secret::Locked => write!(f, "Locked"),
            Secret::Empty => write!(f, "Empty"),
            Secret::Unsupported(s) => write!(f, "Unsupported({s})"),
        }
    }
}

/// How supplementary groups are set on the way down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Groups {
    /// A system user: `initgroups(name, gid)` (the user's groups from /etc/group).
    Init,
    /// A virtual user: exactly the primary gid.
    OnlyPrimary,
}

/// An account found in a database, with the policy verdict that does not depend on the
/// password (so it can be applied after the password has been checked, at the same cost).
#[derive(Debug)]
pub struct Account {
    pub name: Vec<u8>,
    /// None when a virtual user's line and the defaults give none: temporary failure on login.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: Option<PathBuf>,
    /// None for virtual users without one: SHELL is then not set.
    pub shell: Option<PathBuf>,
    /// `MAIL` for the next program (from a passwd-file `userdb_mail=`), `~` already expanded.
    pub mail: Option<OsString>,
    pub groups: Groups,
    pub secret: Secret,
    /// Refusal by account policy (locked, expired, shell), if any.
    pub refused: Option<Denied>,
}

/// An account that passed every check, with its ids settled.
#[derive(Debug, Clone)]
pub struct Verified {
    pub name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: Option<PathBuf>,
    pub mail: Option<OsString>,
    pub groups: Groups,
}

/// Days since the epoch, as /etc/shadow counts them.
pub fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i64
}

/// Looks the user up and checks the password. Every failure costs the database's reference
/// hash ([`crypt::Dummy`]): unknown users, locked and plaintext accounts pay one verification
/// of it, accounts with a cheaper hash pay their own plus the difference, so no failure tells
/// by its timing which scheme the named user's secret is stored in. A success costs what the
/// user's own secret costs.
pub fn authenticate_in(
    cfg: &Config,
    selected: Option<vhost::Selected>,
    creds: &checkpw::Credentials,
    today: i64,
) -> Result<Verified, AuthError> {
    let user = creds.user();
    let password = creds.password();
    // Token mode: the token is checked first (one HMAC, the same for every user), and decides
    // alone; the account source then only finds the account.
    let token_ok = match &cfg.token_key {
        None => false,
        Some(path) => {
            let key = token::Key::load(path)
                .map_err(|e| AuthError::Temporary(format!("token key {}: {e}", path.display())))?;
            if user.is_empty() {
                return Err(AuthError::BadCredentials(Denied::EmptyUser));
            }
            key.verify(user, password, token::now())
                .map_err(|e| AuthError::BadCredentials(Denied::BadToken(e)))?;
            true
        }
    };
    // What every failure costs: for system accounts, yescrypt at Debian's default (what
    // `passwd` writes) or the shadow file's costliest hash if that costs more; for a
    // passwd-file, its most expensive hash, or nothing if it is all plaintext.
    let mut dummy = crypt::Dummy::Hash(crypt::DUMMY_SETTING.as_bytes().to_vec());
    let found = if user.is_empty() {
        None
    } else {
        match &cfg.source {
            Source::System {
                passwd,
                shadow,
                allow_nologin_shell,
                valid_shells,
                ignore_password_aging,
            } => {
                if let Some(h) = system::reference_hash(shadow, crypt::DUMMY_SETTING.as_bytes()) {
                    dummy = crypt::Dummy::Hash(h);
                }
                system::lookup(
                    user,
                    &system::Paths {
                        passwd,
                        shadow,
                        valid_shells: valid_shells.as_deref(),
                    },
                    &system::Policy {
                        allow_nologin_shell: *allow_nologin_shell,
                        ignore_password_aging: *ignore_password_aging,
                        today,
                    },
                )?
            }
            Source::PasswdFile {
                path,
                default_uid,
                default_gid,
                default_home,
            } => {
                let (account, reference) = passwdfile::lookup_with_reference(
                    user,
                    path,
                    &passwdfile::Defaults {
                        uid: *default_uid,
                        gid: *default_gid,
                        home: default_home.as_deref(),
                    },
                )?;
                dummy = match reference {
                    Some(h) => crypt::Dummy::Hash(h),
                    None => crypt::Dummy::Nothing,
                };
                account
            }
            Source::Vhost {
                dir,
                default_uid,
                default_gid,
                home,
            } => {
                let Some(sel) = selected else {
                    return Err(AuthError::Temporary("no virtual server chosen".into()));
                };
                let (account, reference) = vhost::lookup(
                    user,
                    sel,
                    dir,
                    &vhost::Settings {
                        uid: *default_uid,
                        gid: *default_gid,
                        home,
                    },
                )?;
                dummy = match reference {
                    Some(h) => crypt::Dummy::Hash(h),
                    None => crypt::Dummy::Nothing,
                };
                account
            }
        }
    };
    let Some(account) = found else {
        if !token_ok {
            dummy.spend(password);
        }
        let why = if user.is_empty() {
            Denied::EmptyUser
        } else {
            Denied::UnknownUser
        };
        return Err(AuthError::BadCredentials(why));
    };

    let matched = match &account.secret {
        Secret::Locked if token_ok => {
            return Err(AuthError::BadCredentials(Denied::Locked));
        }
        _ if token_ok => true,
        Secret::Crypt(hash) => {
            let format = crypt::Format::of(hash);
            if !format.acceptable(cfg.allow_des) {
                dummy.spend(password);
                return Err(AuthError::BadCredentials(Denied::UnsupportedHash(format!(
                    "{format:?}"
                ))));
            }
            // An empty password is checked like any other: refusing it early would be faster.
            match crypt::verify(password, hash) {
                Ok(true) => true,
                Ok(false) => {
                    dummy.spend_rest(password, hash);
                    false
                }
                Err(_) => {
                    dummy.spend(password);
                    return Err(AuthError::BadCredentials(Denied::UnsupportedHash(
                        "unusable crypt hash".into(),
                    )));
                }
            }
        }
        Secret::Plain(secret) => {
            // A plaintext secret costs a comparison. A wrong one costs the reference like any
            // failure (nothing in a plaintext-only file); a right one stays cheap, which tells
            // nothing to someone who already has the password.
            let ok = !secret.is_empty() && apop::check_plain(password, creds.timestamp(), secret);
            if !ok {
                dummy.spend(password);
            }
            ok
        }
        Secret::Locked => {
            dummy.spend(password);
            return Err(AuthError::BadCredentials(Denied::Locked));
        }
        Secret::Empty => {
            dummy.spend(password);
            return Err(AuthError::BadCredentials(Denied::NoPassword));
        }
        Secret::Unsupported(s) => {
            dummy.spend(password);
            return Err(AuthError::BadCredentials(Denied::UnsupportedHash(
                s.clone(),
            )));
        }
    };
    if !matched {
        return Err(AuthError::BadCredentials(Denied::WrongPassword));
    }
    if let Some(why) = account.refused {
        return Err(AuthError::BadCredentials(why));
    }
    let name = String::from_utf8_lossy(&account.name);
    let (Some(uid), Some(gid)) = (account.uid, account.gid) else {
        return Err(AuthError::Temporary(format!(
            "no uid/gid for {name} (empty fields and no --virtual-uid/--virtual-gid)"
        )));
    };
    let Some(home) = account.home else {
        return Err(AuthError::Temporary(format!(
            "no home for {name} (empty field and no --virtual-home)"
        )));
    };
    if uid == 0 && !cfg.allow_root {
        return Err(AuthError::BadCredentials(Denied::Root));
    }
    if uid < cfg.min_uid {
        return Err(AuthError::BadCredentials(Denied::UidBelowMin(uid)));
    }
    Ok(Verified {
        name: account.name,
        uid,
        gid,
        home,
        shell: account.shell,
        mail: account.mail,
        groups: account.groups,
    })
}
