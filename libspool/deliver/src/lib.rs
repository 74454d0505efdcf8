//! Local delivery into an mbox or Maildir under the MTAs' lock protocol: what `pop-deliver`
//! does.
//!
//! The flow, and why:
//!
//! 1. stdin is copied into an unlinked temporary file, normalised and checked ([`spool`]),
//!    before any lock is taken: a slow MTA never makes us hold a mailbox lock, bad input is
//!    refused before anything is written, and the size is known up front.
//! 2. Each target (a user's hashed-spool mbox, or an explicit `mbox:`/`maildir:` path) gets
//!    the message from that copy ([`mbox`], [`maildir`]). An mbox append is all or nothing:
//!    under the dotlock + fcntl lock (the same [`ContentLock`](spool_store::lock::ContentLock) as
//!    `pop-serve`), the old size is remembered, the message written, the file fsynced; any
//!    error truncates it back to the old size. A Maildir message is written in `tmp/`,
//!    fsynced, linked into `new/`. Root reaches an explicit path only as [`pinned`] says
//!    (no symlink anywhere in it; as the owner of the directory that holds the mailbox).
//! 3. One exit status for the MTA ([`Report::exit_code`]): sysexits, or qmail's 0/100/111.
//!
//! Everything returned as an error leaves the mailbox as it was.

pub mod confine;
pub mod maildir;
pub mod mbox;
pub mod pinned;
pub mod spool;
mod sys;

pub use sys::install_signal_handlers;

use nix::unistd::{Group, User};
use spool_store::error::MailboxError;
use spool_store::mailbox::MailboxSpec;
use spool_store::userfs::{Account, AsUser};
use spool_wire::log::{Level, Logger};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use spool::{InputRules, Spooled};

/// sysexits.h codes used by `pop-deliver` (the MTA maps them to bounce or retry).
pub const EX_OK: i32 = 0;
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOUSER: i32 = 67;
pub const EX_CANTCREAT: i32 = 73;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_NOPERM: i32 = 77;
/// qmail-local's codes for programs in `.qmail` files.
pub const QMAIL_PERMANENT: i32 = 100;
pub const QMAIL_TEMPORARY: i32 = 111;

/// How long we wait for a mailbox's dotlock + fcntl lock before a temporary failure. Longer
/// than `pop-serve`'s wait: the MTA is not a user watching a client, and a POP3 commit that
/// compacts a large mailbox may hold the lock for a while. Well under Postfix's
/// `command_time_limit` (1000 s) and qmail's lack of one.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);

/// The sender written into the `From ` line when there is none (a bounce), as every MDA does.
pub const NO_SENDER: &str = "MAILER-DAEMON";

/// Default spool directory, hash depth, group and mode of created mailboxes.
pub const DEFAULT_SPOOL_DIR: &str = "/var/spool/mail";
pub const DEFAULT_HASH_DEPTH: u8 = 1;
pub const DEFAULT_GROUP: &str = "mail";
pub const DEFAULT_MODE: u32 = 0o600;
/// Mode of hash directories created as root: group mail may create dotlocks there (the
/// setgid `pop-dotlock`), nobody else; setgid keeps new files in group mail.
pub const HASH_DIR_MODE: u32 = 0o2775;
/// Mode of Maildir directories we create (tmp/, new/, cur/ and the Maildir itself).
pub const MAILDIR_MODE: u32 = 0o700;

/// Why a delivery failed. Each variant has exactly one exit code ([`DeliverError::exit_code`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum DeliverError {
    /// Bad command line.
    Usage(String),
    /// No message bytes (after an envelope line).
    EmptyMessage,
    /// The message does not start with a header field.
    NoHeader,
    /// A NUL byte while `--reject-nul`.
    NulByte,
    /// A line longer than `--max-line-length`.
    LineTooLong { limit: u64 },
    /// No such user (getpwnam), or a name that cannot be a mailbox file name.
    NoUser(String),
    /// The target exists but is not a mailbox of its kind (a directory for an mbox, a FIFO).
    NotAMailbox(PathBuf),
    /// Refused for safety or permission: owned by someone else, hard-linked, a symlink, or
    /// the mailbox cannot be opened for writing. Untouched.
    NotPermitted(PathBuf, String),
    /// A missing mailbox (or hash directory) we are not allowed to create: temporary, so
    /// mail stays queued while the admin pre-creates it (`pop-spool create`).
    CannotCreate(PathBuf, io::Error),
    /// The lock could not be taken within `--lock-timeout`.
    LockTimeout(PathBuf),
    /// The mailbox would grow beyond `--max-mailbox-size`.
    OverQuota { size: u64, add: u64, limit: u64 },
    /// A signal (SIGTERM, SIGINT, SIGHUP, SIGALRM) asked us to stop.
    Interrupted,
    /// An I/O failure (disk full, file size limit, EIO, ...), with what we were doing.
    Io(&'static str, io::Error),
    /// A lock or journal failure from the shared mailbox code.
    Mailbox(MailboxError),
}

impl DeliverError {
    /// Whether trying again later may succeed (the MTA keeps the message queued).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            DeliverError::CannotCreate(..)
                | DeliverError::LockTimeout(_)
                | DeliverError::OverQuota { .. }
                | DeliverError::Interrupted
                | DeliverError::Io(..)
                | DeliverError::Mailbox(_)
        )
    }

    /// The one mapping from an error to the exit status. With `qmail`, permanent failures
    /// are 100 and temporary ones 111, except that a usage error is temporary there: it is
    /// a typo in a `.qmail` file, and mail should wait for the fix rather than bounce.
    pub fn exit_code(&self, qmail: bool) -> i32 {
        let sysexit = match self {
            DeliverError::Usage(_) => EX_USAGE,
            DeliverError::EmptyMessage
            | DeliverError::NoHeader
            | DeliverError::NulByte
            | DeliverError::LineTooLong { .. } => EX_DATAERR,
            DeliverError::NoUser(_) => EX_NOUSER,
            DeliverError::NotAMailbox(_) => EX_CANTCREAT,
            DeliverError::NotPermitted(..) => EX_NOPERM,
            _ => EX_TEMPFAIL,
        };
        if !qmail {
            return sysexit;
        }
        if self.is_temporary() || sysexit == EX_USAGE {
            QMAIL_TEMPORARY
        } else {
            QMAIL_PERMANENT
        }
    }
}

impl fmt::Display for DeliverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliverError::Usage(why) => write!(f, "usage: {why}"),
            DeliverError::EmptyMessage => write!(f, "empty message"),
            DeliverError::NoHeader => write!(f, "message does not start with a header field"),
            DeliverError::NulByte => write!(f, "message contains a NUL byte"),
            DeliverError::LineTooLong { limit } => {
                write!(f, "message has a line longer than {limit} bytes")
            }
            DeliverError::NoUser(u) => write!(f, "no such user: {u}"),
            DeliverError::NotAMailbox(p) => {
                write!(f, "{} exists but is not a mailbox", p.display())
            }
            DeliverError::NotPermitted(p, why) => write!(f, "refusing {}: {why}", p.display()),
            DeliverError::CannotCreate(p, e) => write!(
                f,
                "cannot create {}: {e} (pre-create it with pop-spool create, or run as root)",
                p.display()
            ),
            DeliverError::LockTimeout(p) => write!(f, "mailbox {} is locked", p.display()),
            DeliverError::OverQuota { size, add, limit } => {
                write!(f, "mailbox full: {size} + {add} bytes would exceed {limit}")
            }
            DeliverError::Interrupted => write!(f, "interrupted by a signal"),
            DeliverError::Io(what, e) => write!(f, "unable to {what}: {e}"),
            DeliverError::Mailbox(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DeliverError {}

/// Where one copy of the message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A user's mbox in the hashed spool, looked up with getpwnam.
    User(String),
    /// An explicit mailbox (`mbox:PATH`, `maildir:PATH`).
    Mailbox(MailboxSpec),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(u) => write!(f, "{u}"),
            Target::Mailbox(MailboxSpec::Mbox(p)) => write!(f, "mbox:{}", p.display()),
            Target::Mailbox(MailboxSpec::Maildir(p)) => write!(f, "maildir:{}", p.display()),
        }
    }
}

/// Everything `pop-deliver`'s options decide.
#[derive(Debug, Clone)]
pub struct DeliverOptions {
    pub spool_dir: PathBuf,
    pub hash_depth: u8,
    /// `-f`: the envelope sender (empty: a bounce).
    pub sender: Option<String>,
    /// `$SENDER` as qmail and Postfix set it; used when there is no `-f`.
    pub env_sender: Option<String>,
    pub lock_wait: Duration,
    pub dotlock_helper: Option<PathBuf>,
    /// Group of created mailboxes (`None`: the user's primary group).
    pub group: Option<String>,
    pub mode: u32,
    pub max_mailbox_size: Option<u64>,
    pub rules: InputRules,
    /// Where `pop-serve` keeps the update journal; `None`: `HOME/.popspool` of the user (for
    /// spool users) or of `home` (explicit mailboxes).
    pub state_dir: Option<PathBuf>,
    /// `$HOME` of the caller, for explicit mailboxes.
    pub home: Option<PathBuf>,
    /// Where stdin is spooled (`$TMPDIR` or /tmp).
    pub tmp_dir: PathBuf,
}

impl Default for DeliverOptions {
    fn default() -> Self {
        DeliverOptions {
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            hash_depth: DEFAULT_HASH_DEPTH,
            sender: None,
            env_sender: None,
            lock_wait: DEFAULT_LOCK_WAIT,
            dotlock_helper: None,
            group: Some(DEFAULT_GROUP.into()),
            mode: DEFAULT_MODE,
            max_mailbox_size: None,
            rules: InputRules::default(),
            state_dir: None,
            home: None,
            tmp_dir: PathBuf::from("/tmp"),
        }
    }
}

/// One successful delivery.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub path: PathBuf,
    /// Bytes the mailbox grew by (mbox) or the file's size (Maildir).
    pub bytes: u64,
    /// Warnings worth logging (a stale dotlock broken, a journal replayed).
    pub warnings: Vec<String>,
}

/// The outcome for every target.
#[derive(Debug)]
pub struct Report {
    pub sender: String,
    pub size: u64,
    pub results: Vec<(Target, Result<Delivered, DeliverError>)>,
}

impl Report {
    /// 0 when every target got the message; a temporary failure if any target failed
    /// temporarily (the MTA retries; the targets that succeeded may then get the message
    /// twice, which is why MTAs should be set to one recipient per call); else the first
    /// permanent failure's code.
    pub fn exit_code(&self, qmail: bool) -> i32 {
        let failures = || self.results.iter().filter_map(|(_, r)| r.as_ref().err());
        if let Some(t) = failures().find(|e| e.is_temporary()) {
            return t.exit_code(qmail);
        }
        failures().next().map_or(EX_OK, |e| e.exit_code(qmail))
    }

    /// The one stderr line for the MTA: each failed target and why, or `None`.
    pub fn reason_line(&self) -> Option<String> {
        let parts: Vec<String> = self
            .results
            .iter()
            .filter_map(|(t, r)| r.as_ref().err().map(|e| format!("{t}: {e}")))
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(one_line(&parts.join("; ")))
        }
    }
}

/// Control characters out, so a reason is always one line.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A per-process counter for unique names.
pub(crate) fn unique_counter() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Whether a signal asked us to stop. The one flag is the lock code's, so a lock wait ends too.
pub fn interrupted() -> bool {
    spool_store::lock::stop_requested()
}

/// The envelope sender for the `From ` line: `-f`, else `$SENDER`, else the address of an
/// envelope `From ` line the MTA prepended, else `Return-Path:`, else [`NO_SENDER`]. An empty
/// sender (`<>`, a bounce) is [`NO_SENDER`]. Whitespace and control bytes become `_` so the
/// line stays `From ADDRESS DATE` for every reader; at most [`spool::MAX_SENDER_LEN`] bytes.
pub fn envelope_sender(opts: &DeliverOptions, spooled: &Spooled) -> String {
    let chosen: Option<Vec<u8>> = opts
        .sender
        .as_ref()
        .or(opts.env_sender.as_ref())
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| spooled.envelope_sender.clone())
        .or_else(|| spooled.return_path.clone());
    let raw = chosen.unwrap_or_default();
    let mut s: &[u8] = raw.trim_ascii();
    // A Return-Path is `<addr>`, possibly followed by a comment; take the bracketed part.
    if let Some(rest) = s.strip_prefix(b"<") {
        s = match rest.iter().position(|&b| b == b'>') {
            Some(i) => &rest[..i],
            None => rest,
        };
    }
    let cleaned: Vec<u8> = s
        .iter()
        .take(spool::MAX_SENDER_LEN)
        .map(|&b| {
            if b.is_ascii_whitespace() || b.is_ascii_control() {
                b'_'
            } else {
                b
            }
        })
        .collect();
    if cleaned.is_empty() {
        NO_SENDER.to_string()
    } else {
        String::from_utf8_lossy(&cleaned).into_owned()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Who we are, looked up once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub euid: u32,
}

impl Identity {
    fn current() -> Identity {
        Identity {
            euid: nix::unistd::geteuid().as_raw(),
        }
    }
    pub(crate) fn is_root(self) -> bool {
        self.euid == 0
    }
}

/// Spools `input`, then delivers to every target: [`prepare`] then [`deliver_prepared`].
pub fn run(
    targets: &[Target],
    opts: &DeliverOptions,
    input: &mut dyn Read,
    log: &Logger,
) -> Result<Report, DeliverError> {
    if targets.is_empty() {
        return Err(DeliverError::Usage("no recipient given".into()));
    }
    let tmp = spool::anonymous_file(&opts.tmp_dir)
        .map_err(|e| DeliverError::Io("create a temporary file", e))?;
    deliver_prepared(prepare(targets, opts), tmp, opts, input, log)
}

/// A target with everything looked up that needs the password and group databases, and, as
/// root, an explicit target's directory pinned: what a confined process can no longer do.
#[derive(Debug)]
pub struct Prepared {
    target: Target,
    plan: Result<Plan, DeliverError>,
}

#[derive(Debug)]
enum Plan {
    /// A user's mbox in the hashed spool.
    Spool {
        path: PathBuf,
        uid: u32,
        gid: u32,
        state_dir: PathBuf,
        /// As root: whose file-system identity replays the user's journal.
        state_owner: Option<Account>,
    },
    /// An explicit `mbox:`/`maildir:` target.
    Explicit {
        spec: MailboxSpec,
        /// As root ([`pinned`]).
        pinned: Option<pinned::Pinned>,
        /// `--group`, looked up (`None`: the owner's primary group).
        gid: Option<u32>,
        /// As root, an mbox in a directory of root's: the mailbox file's owner, for its
        /// journal replay.
        known_owner: Option<(u32, Option<Account>)>,
    },
}

impl Prepared {
    /// The target as given.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// Looks up every target's user, groups and directory owner, pins root's explicit targets and
/// makes missing spool hash directories, in that order, before the process confines itself.
/// A target that fails here fails alone, as it would at delivery.
pub fn prepare(targets: &[Target], opts: &DeliverOptions) -> Vec<Prepared> {
    let me = Identity::current();
    targets
        .iter()
        .map(|t| Prepared {
            target: t.clone(),
            plan: plan(t, opts, me),
        })
        .collect()
}

fn plan(target: &Target, opts: &DeliverOptions, me: Identity) -> Result<Plan, DeliverError> {
    match target {
        Target::User(name) => {
            // The name first: one the spool refuses (`X.lock`) has no mailbox, whoever has it.
            let path = spool_store::spoolpath::hashed_path(
                &opts.spool_dir,
                name.as_bytes(),
                opts.hash_depth,
            )
            .map_err(|e| DeliverError::NoUser(format!("{name} ({e})")))?;
            let user = match User::from_name(name) {
                Ok(Some(u)) => u,
                Ok(None) => return Err(DeliverError::NoUser(name.clone())),
                // NSS down (LDAP, NIS): not a verdict on the user; try again later.
                Err(e) => return Err(DeliverError::Io("look up the user", e.into())),
            };
            let gid = group_id(opts.group.as_deref())?.unwrap_or(user.gid.as_raw());
            let state_dir = opts
                .state_dir
                .clone()
                .unwrap_or_else(|| user.dir.join(".popspool"));
            let state_owner = if me.is_root() {
                Some(
                    Account::lookup(&user.name, user.uid.as_raw(), user.gid.as_raw())
                        .map_err(|e| DeliverError::Io("look up the user's groups", e))?,
                )
            } else {
                None
            };
            // Made now, as the delivery would make them, so that the confined delivery needs
            // the right to create directories nowhere. A failure shows again at delivery.
            if fs::symlink_metadata(&path).is_err() {
                let _ = mbox::make_hash_dirs(&opts.spool_dir, parent_of(&path), gid, me);
            }
            Ok(Plan::Spool {
                path,
                uid: user.uid.as_raw(),
                gid,
                state_dir,
                state_owner,
            })
        }
        Target::Mailbox(spec) => {
            let path = match spec {
                MailboxSpec::Mbox(p) | MailboxSpec::Maildir(p) => p.as_path(),
            };
            // Root follows no path component a user controls ([`pinned`]); anyone else has no
            // rights beyond their own to be steered into.
            let pinned = if me.is_root() {
                Some(pinned::pin(path)?)
            } else {
                None
            };
            let gid = group_id(opts.group.as_deref())?;
            let known_owner = match (&pinned, spec) {
                (Some(p), MailboxSpec::Mbox(_)) if p.account.is_none() => {
                    match fs::symlink_metadata(&p.at) {
                        Ok(m) if m.uid() != 0 => Some((
                            m.uid(),
                            Account::of_uid(m.uid())
                                .map_err(|e| DeliverError::Io("look up the mailbox owner", e))?,
                        )),
                        _ => None,
                    }
                }
                _ => None,
            };
            Ok(Plan::Explicit {
                spec: spec.clone(),
                pinned,
                gid,
                known_owner,
            })
        }
    }
}

/// Spools `input` into `tmp` (an empty file from [`spool::anonymous_file`] in
/// `opts.tmp_dir`), then delivers to every prepared target. `Err` only for problems with the
/// input itself (or spooling it), which concern all targets alike. As root, a user's state
/// directory is entered with the user's file-system identity
/// ([`spool_store::userfs::AsUser`], switched for the calling thread only).
pub fn deliver_prepared(
    prepared: Vec<Prepared>,
    tmp: std::fs::File,
    opts: &DeliverOptions,
    input: &mut dyn Read,
    log: &Logger,
) -> Result<Report, DeliverError> {
    if prepared.is_empty() {
        return Err(DeliverError::Usage("no recipient given".into()));
    }
    let spooled = spool::spool_into(tmp, input, opts.rules, &interrupted)?;
    let sender = envelope_sender(opts, &spooled);
    let from_line = format!(
        "From {sender} {}\n",
        spool_store::mbox::from_line::asctime_utc(now_secs())
    );
    let me = Identity::current();
    let mut results = Vec::with_capacity(prepared.len());
    for Prepared { target, plan } in prepared {
        let t = &target;
        let r = plan.and_then(|plan| deliver_one(&plan, &spooled, &from_line, opts, me));
        match &r {
            Ok(d) => {
                for w in &d.warnings {
                    log.log(Level::Warning, &format!("{t}: {w}"));
                }
                log.log(
                    Level::Info,
                    &format!(
                        "delivered from=<{sender}> to={t} mailbox={} size={} bytes={}",
                        d.path.display(),
                        spooled.len,
                        d.bytes
                    ),
                );
            }
            Err(e) => log.log(
                if e.is_temporary() {
                    Level::Warning
                } else {
                    Level::Err
                },
                &format!(
                    "failed from=<{sender}> to={t} size={} {}: {e}",
                    spooled.len,
                    if e.is_temporary() {
                        "deferred"
                    } else {
                        "bounced"
                    }
                ),
            ),
        }
        results.push((target, r));
    }
    Ok(Report {
        sender,
        size: spooled.len,
        results,
    })
}

fn deliver_one(
    plan: &Plan,
    spooled: &Spooled,
    from_line: &str,
    opts: &DeliverOptions,
    me: Identity,
) -> Result<Delivered, DeliverError> {
    let common = mbox::Common {
        helper: opts.dotlock_helper.clone(),
        lock_wait: opts.lock_wait,
        max_size: opts.max_mailbox_size,
        me,
    };
    match plan {
        Plan::Spool {
            path,
            uid,
            gid,
            state_dir,
            state_owner,
        } => {
            let t = mbox::MboxTarget {
                path,
                at: path,
                owner: Some(*uid),
                create: mbox::Creation {
                    uid: *uid,
                    gid: *gid,
                    mode: opts.mode,
                    hash_dirs_under: Some(&opts.spool_dir),
                },
                state_dir: Some(state_dir.clone()),
                state_owner: state_owner.clone(),
                known_owner: None,
            };
            mbox::deliver(&t, spooled, from_line, &common)
        }
        Plan::Explicit {
            spec,
            pinned,
            gid,
            known_owner,
        } => {
            let path = match spec {
                MailboxSpec::Mbox(p) | MailboxSpec::Maildir(p) => p.as_path(),
            };
            let owner = pinned.as_ref().and_then(|p| p.account.as_ref());
            let _as_user = AsUser::enter(owner)
                .map_err(|e| DeliverError::Io("take the user's file-system identity", e))?;
            let (at, common) = match pinned {
                // The directory's user delivers, by the user's rules; root needs no helper.
                Some(p) => (
                    p.at.as_path(),
                    mbox::Common {
                        helper: None,
                        me: owner.map_or(me, |a| Identity { euid: a.uid }),
                        ..common
                    },
                ),
                None => (path, common),
            };
            match spec {
                MailboxSpec::Mbox(_) => {
                    let e = Explicit {
                        gid: *gid,
                        known_owner: known_owner.clone(),
                    };
                    explicit_mbox(path, at, owner, spooled, from_line, opts, &common, e)
                }
                MailboxSpec::Maildir(_) => maildir::deliver(path, at, spooled, &common),
            }
        }
    }
}

/// What [`prepare`] looked up for an explicit mbox.
struct Explicit {
    gid: Option<u32>,
    known_owner: Option<(u32, Option<Account>)>,
}

/// An explicit `mbox:PATH`, reached as `at`, delivered to as `common.me`.
#[allow(clippy::too_many_arguments)]
fn explicit_mbox(
    path: &Path,
    at: &Path,
    owner: Option<&Account>,
    spooled: &Spooled,
    from_line: &str,
    opts: &DeliverOptions,
    common: &mbox::Common,
    looked_up: Explicit,
) -> Result<Delivered, DeliverError> {
    let me = common.me;
    let gid = match looked_up.gid {
        Some(g) => g,
        None => owner.map_or_else(|| nix::unistd::getegid().as_raw(), |a| a.gid),
    };
    let state_dir = explicit_state_dir(opts);
    let t = mbox::MboxTarget {
        path,
        at,
        // Root may deliver into anybody's explicit mailbox; anyone else into their own.
        owner: if me.is_root() { None } else { Some(me.euid) },
        create: mbox::Creation {
            uid: me.euid,
            gid,
            mode: opts.mode,
            hash_dirs_under: None,
        },
        state_dir,
        state_owner: None,
        known_owner: looked_up.known_owner,
    };
    mbox::deliver(&t, spooled, from_line, common)
}

/// The state directory of an explicit mbox: `--state-dir`, else `$HOME/.popspool`.
pub(crate) fn explicit_state_dir(opts: &DeliverOptions) -> Option<PathBuf> {
    opts.state_dir
        .clone()
        .or_else(|| opts.home.as_ref().map(|h| h.join(".popspool")))
}

/// The gid of `--group`, `None` when unset or when no such group exists (then the user's
/// primary group is used: a system without a `mail` group still gets its mail).
fn group_id(name: Option<&str>) -> Result<Option<u32>, DeliverError> {
    let Some(name) = name else {
        return Ok(None);
    };
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Some(n));
    }
    match Group::from_name(name) {
        Ok(g) => Ok(g.map(|g| g.gid.as_raw())),
        Err(e) => Err(DeliverError::Io("look up the group", e.into())),
    }
}

/// The directory part of `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests;
