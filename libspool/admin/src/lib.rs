//! Spool administration: paths, creation, migration from a flat spool, checks, stats, expiry:
//! what `pop-spool` does.
//!
//! Every subcommand is a function here taking a [`Ui`] (where reports, warnings and the
//! progress line go) and returning a typed result; `pop-spool` only parses options and maps
//! [`AdminError`] to an exit status once, through [`AdminError::exit_code`].
//!
//! Conventions shared by the subcommands:
//!
//! * Mailboxes are found only through [`spool_store::spoolpath::hashed_path`]; a walk of the spool
//!   ([`walk`]) accepts a file as a mailbox only if that function maps its name back to
//!   exactly where it was found.
//! * Mail content is only ever changed under the content lock ([`spool_store::lock::ContentLock`],
//!   dotlock then fcntl, as every MDA), after replaying any interrupted update journal.
//! * Files are opened with `O_NOFOLLOW` and owners/modes are changed through the open
//!   descriptor (`fchown`/`fchmod`): a user who can write a spool directory cannot make a
//!   root-run `pop-spool` change another file.
//! * A user's state directory (journal, index) is only ever entered as that user
//!   ([`StateDir::enter`], [`spool_store::userfs::AsUser`]): the user owns `$HOME` and can swap
//!   `.popspool` for a symlink at any moment, so root never resolves a path in it.

#![forbid(unsafe_code)]

pub mod check;
pub mod confine;
pub mod create;
pub mod expire;
pub mod index;
pub mod json;
pub mod migrate;
pub mod recover;
pub mod stats;

use spool_store::error::MailboxError;
use spool_store::lock::{ContentLock, LockOptions, DOTLOCK_SUFFIX};
use spool_store::mbox::journal::{self, Recovered, Then};
use spool_store::spoolpath::{self, PathError};
use spool_store::userfs::{Account, AsUser};
use spool_wire::limits;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Success; for `check`: nothing wrong (or everything fixed).
pub const EXIT_OK: i32 = 0;
/// `check`: problems found that are still there.
pub const EXIT_PROBLEMS: i32 = 1;
/// Misuse: bad arguments, a bad user name, not root where root is needed. Retrying the same
/// command will not help (qmail's permanent-failure status).
pub const EXIT_USAGE: i32 = 100;
/// A system error (I/O, a lock that could not be taken, a mailbox that failed): retrying later
/// may work (qmail's temporary-failure status). Nothing was lost.
pub const EXIT_TEMP: i32 = 111;

/// The default spool of hashed mailboxes.
pub const DEFAULT_SPOOL: &str = "/var/spool/mail";
/// The default hash depth (`spool/c/claird`).
pub const DEFAULT_DEPTH: u8 = 1;
/// The group that owns the spool and every mailbox (Debian, Red Hat, the BSDs' MDAs).
pub const MAIL_GROUP: &str = "mail";
/// Mode of a mailbox: the user reads and writes it; MDAs write it as root or setgid mail.
pub const MAILBOX_MODE: u32 = 0o600;
/// Mode of the spool's hash directories (Debian's `/var/mail`): setgid so new files get group
/// mail, group-writable so setgid-mail MDAs and `pop-dotlock` can create dotlocks.
pub const SPOOL_DIR_MODE: u32 = 0o2775;
/// Mode of a state directory `pop-spool` creates for a user (as `pop-serve` does).
pub const STATE_DIR_MODE: u32 = spool_store::lock::STATE_DIR_MODE;
/// How often the progress line is redrawn at most: a spool of 100 000 users must not spend
/// its time writing to the terminal.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Bytes read per `pread` while copying or comparing mailboxes: bounded memory whatever the
/// mailbox size.
pub const COPY_CHUNK: usize = 1 << 20;

/// Why a subcommand failed as a whole (per-mailbox failures are counted in its report).
#[derive(Debug)]
pub enum AdminError {
    /// Bad arguments or a request that cannot be honoured as given.
    Usage(String),
    /// A user name the spool cannot hold.
    BadUser(String, PathError),
    /// The operation changes owners and needs root.
    NeedRoot(&'static str),
    /// Something went wrong with a mailbox.
    Mailbox(PathBuf, MailboxError),
    /// Any other I/O failure, with what we were doing.
    Io(String, io::Error),
    /// The run went through but some mailboxes failed (details already reported).
    Failed(usize),
}

impl AdminError {
    /// The one mapping from an error to `pop-spool`'s exit status.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Usage(_) | AdminError::BadUser(..) | AdminError::NeedRoot(_) => EXIT_USAGE,
            AdminError::Mailbox(..) | AdminError::Io(..) | AdminError::Failed(_) => EXIT_TEMP,
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Usage(s) => f.write_str(s),
            AdminError::BadUser(u, e) => write!(f, "{u:?}: {e}"),
            AdminError::NeedRoot(what) => {
                write!(f, "{what} needs root (owners are set with chown)")
            }
            AdminError::Mailbox(p, e) => write!(f, "{}: {e}", p.display()),
            AdminError::Io(what, e) => write!(f, "{what}: {e}"),
            AdminError::Failed(n) => write!(f, "{n} mailbox(es) failed"),
        }
    }
}

impl std::error::Error for AdminError {}

/// Wraps an I/O error with what we were doing and where.
pub(crate) fn io_at(what: &str, path: &Path) -> impl FnOnce(io::Error) -> AdminError {
    let msg = format!("{what} {}", path.display());
    move |e| AdminError::Io(msg, e)
}

/// Where a spool lives and how it is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub spool: PathBuf,
    pub depth: u8,
}

impl Layout {
    pub fn new(spool: PathBuf, depth: u8) -> Result<Layout, AdminError> {
        if depth > spoolpath::MAX_HASH_DEPTH {
            return Err(AdminError::Usage(PathError::BadDepth.to_string()));
        }
        Ok(Layout { spool, depth })
    }

    /// The mailbox of `user` (bytes of the name, as the spool stores them).
    pub fn mailbox(&self, user: &[u8]) -> Result<PathBuf, AdminError> {
        spoolpath::hashed_path(&self.spool, user, self.depth)
            .map_err(|e| AdminError::BadUser(String::from_utf8_lossy(user).into_owned(), e))
    }

    /// The hash directories of `user`'s mailbox, outermost first (empty at depth 0).
    pub fn hash_dirs(&self, user: &[u8]) -> Result<Vec<PathBuf>, AdminError> {
        let mailbox = self.mailbox(user)?;
        let mut dirs: Vec<PathBuf> = mailbox
            .ancestors()
            .skip(1)
            .take(usize::from(self.depth))
            .map(Path::to_path_buf)
            .collect();
        dirs.reverse();
        Ok(dirs)
    }
}

/// `pop-spool path USER`: the mailbox path, through the one path function.
pub fn path(layout: &Layout, user: &[u8]) -> Result<PathBuf, AdminError> {
    layout.mailbox(user)
}

/// Where reports, warnings and the progress line go.
pub struct Ui<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Draw a `\r` progress line on `err` (only when it is a terminal).
    pub progress: bool,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl<'a> Ui<'a> {
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write, progress: bool) -> Ui<'a> {
        Ui {
            out,
            err,
            progress,
            last_draw: None,
            drawn: false,
        }
    }

    /// Progress only when standard error is a terminal: logs and pipes stay clean.
    pub fn progress_if_tty() -> bool {
        io::stderr().is_terminal()
    }

    /// A line of the report (stdout). A closed stdout must not abort a migration half way:
    /// errors here are ignored.
    pub fn say(&mut self, line: &str) {
        self.clear_progress();
        let _ = writeln!(self.out, "{line}");
    }

    /// A warning (stderr).
    pub fn warn(&mut self, line: &str) {
        self.clear_progress();
        let clean: String = line
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let _ = writeln!(self.err, "pop-spool: {clean}");
    }

    /// `done` of `total` items, redrawn at most every [`PROGRESS_INTERVAL`].
    pub fn tick(&mut self, what: &str, done: usize, total: usize) {
        if !self.progress {
            return;
        }
        let now = Instant::now();
        if done < total && self.last_draw.is_some_and(|t| now - t < PROGRESS_INTERVAL) {
            return;
        }
        self.last_draw = Some(now);
        self.drawn = true;
        let _ = write!(self.err, "\r{what}: {done}/{total} ");
        let _ = self.err.flush();
    }

    fn clear_progress(&mut self) {
        if self.drawn {
            self.drawn = false;
            let _ = write!(self.err, "\r\x1b[K");
        }
    }

    /// Ends the progress line.
    pub fn done(&mut self) {
        self.clear_progress();
    }
}

/// A user from the password database.
#[derive(Debug, Clone)]
pub struct PwUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Answers looked up before the process confined itself ([`prefetch`]): users by name, the
/// groups of each, the mail group.
#[derive(Default)]
struct Looked {
    users: std::collections::HashMap<Vec<u8>, Option<PwUser>>,
    accounts: std::collections::HashMap<String, Account>,
    groups: std::collections::HashMap<String, u32>,
}

static LOOKED: std::sync::Mutex<Option<Looked>> = std::sync::Mutex::new(None);

fn looked<T>(f: impl FnOnce(&mut Looked) -> T) -> T {
    let mut g = LOOKED.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Looked::default))
}

/// Looks up `names` (their password entries and, as root, their groups) and the mail group
/// now, so that a confined `pop-spool`, which may no longer read the databases, has the
/// answers. Failures are not kept: the later lookup reports them.
pub fn prefetch<'a>(names: impl IntoIterator<Item = &'a [u8]>) {
    let _ = lookup_group(MAIL_GROUP);
    for n in names {
        if let Ok(Some(pw)) = lookup_user(n) {
            if is_root() {
                let _ = account_of(&pw);
            }
        }
    }
}

/// The users [`prefetch`] found, for the state directories a confined run may reach.
pub fn prefetched_users() -> Vec<PwUser> {
    looked(|l| l.users.values().flatten().cloned().collect())
}

fn account_of(pw: &PwUser) -> io::Result<Account> {
    if let Some(a) = looked(|l| l.accounts.get(&pw.name).cloned()) {
        return Ok(a);
    }
    let a = Account::lookup(&pw.name, pw.uid, pw.gid)?;
    looked(|l| l.accounts.insert(pw.name.clone(), a.clone()));
    Ok(a)
}

/// `getpwnam`: `Ok(None)` when there is no such user.
pub fn lookup_user(name: &[u8]) -> Result<Option<PwUser>, AdminError> {
    if let Some(u) = looked(|l| l.users.get(name).cloned()) {
        return Ok(u);
    }
    let u = lookup_user_now(name)?;
    looked(|l| l.users.insert(name.to_vec(), u.clone()));
    Ok(u)
}

fn lookup_user_now(name: &[u8]) -> Result<Option<PwUser>, AdminError> {
    let Ok(s) = std::str::from_utf8(name) else {
        return Ok(None);
    };
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(Some(PwUser {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(AdminError::Io(
            format!("look up user {s:?}"),
            io::Error::from(e),
        )),
    }
}

/// `getgrnam(group)`'s gid.
pub fn lookup_group(name: &str) -> Result<u32, AdminError> {
    if let Some(g) = looked(|l| l.groups.get(name).copied()) {
        return Ok(g);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => {
            looked(|l| l.groups.insert(name.to_string(), g.gid.as_raw()));
            Ok(g.gid.as_raw())
        }
        Ok(None) => Err(AdminError::Usage(format!("no group {name:?}"))),
        Err(e) => Err(AdminError::Io(
            format!("look up group {name:?}"),
            io::Error::from(e),
        )),
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// How to find a user's state directory (where `pop-serve` keeps the update journal).
#[derive(Debug, Clone)]
pub enum StateDirs {
    /// `--state-dir`: one directory for every mailbox (`state_paths` keeps them apart).
    Fixed(PathBuf),
    /// The user's home (from the password database) + `/.popspool`, as `pop-serve` defaults.
    Home,
}

/// The name of the per-user state directory under the home, as `pop-serve` uses.
pub const STATE_SUBDIR: &str = ".popspool";

/// A user's state directory and whose it is.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
    /// The user, when the password database knows them.
    pub owner: Option<PwUser>,
    /// The owner's file-system identity, looked up once (root only: nobody else switches).
    account: Option<Account>,
}

impl StateDir {
    fn new(dir: PathBuf, owner: Option<PwUser>) -> Result<StateDir, AdminError> {
        let account =
            match &owner {
                Some(pw) if is_root() => Some(account_of(pw).map_err(|e| {
                    AdminError::Io(format!("look up the groups of {:?}", pw.name), e)
                })?),
                _ => None,
            };
        Ok(StateDir {
            dir,
            owner,
            account,
        })
    }

    /// Takes the owner's file-system identity for work in the directory: everything done
    /// there until the guard drops (looking up, creating, replaying, renaming, removing) is
    /// done with the user's rights, so a symlink the user put in the way leads nowhere the
    /// user could not go, and created files are the user's without a `chown`. Drop the guard
    /// before touching the spool again (releasing the dotlock needs root's rights).
    ///
    /// This is the one way into a user's state directory for a root-run `pop-spool`:
    /// `--state-dir` included, since a directory every user's `pop-serve` can write is one
    /// every user can plant symlinks in. Without a known owner (no passwd entry) the
    /// directory is the administrator's `--state-dir` and nothing is switched.
    pub fn enter(&self) -> Result<AsUser, AdminError> {
        AsUser::enter(self.account.as_ref()).map_err(io_at(
            "take the file-system identity of the owner of",
            &self.dir,
        ))
    }
}

impl StateDirs {
    /// The state directory for `user`, `None` when it cannot be worked out (unknown user, a
    /// home that is `/`, empty or relative: a state file there would not be the user's).
    pub fn for_user(&self, user: &[u8]) -> Result<Option<StateDir>, AdminError> {
        match self {
            StateDirs::Fixed(d) => StateDir::new(d.clone(), lookup_user(user)?).map(Some),
            StateDirs::Home => {
                let Some(pw) = lookup_user(user)? else {
                    return Ok(None);
                };
                if !pw.home.is_absolute() || pw.home == Path::new("/") {
                    return Ok(None);
                }
                match fs::metadata(&pw.home) {
                    Ok(m) if m.is_dir() => {}
                    _ => return Ok(None),
                }
                StateDir::new(pw.home.join(STATE_SUBDIR), Some(pw)).map(Some)
            }
        }
    }
}

/// Creates `dir` (0700) if missing, with whatever identity `_as` holds: inside
/// [`StateDir::enter`] that is the user's, so the directory is theirs from the start (never
/// created by root and given away by path, which would follow a symlink swapped in
/// meanwhile). A symlink or anything else in its place is refused.
pub(crate) fn ensure_state_dir(dir: &Path, _as: &AsUser) -> Result<(), AdminError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(AdminError::Io(
                format!("state directory {}", dir.display()),
                io::Error::other("exists and is not a directory"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at("stat", dir)(e)),
    }
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(STATE_DIR_MODE).create(dir) {
        // A session of the user made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r.map_err(io_at("create", dir)),
    }
}

/// The content-lock options of every admin operation: the toolkit's bounded wait and stale
/// rule; no helper (`pop-spool` runs as root or as a member of group mail).
pub fn lock_options(wait: Duration) -> LockOptions {
    LockOptions {
        helper: None,
        wait,
        stale_age: limits::STALE_DOTLOCK_AGE,
    }
}

/// What every subcommand that reads or changes mail does first, written once: takes the
/// content lock on the mailbox open as `file` (dotlock, then fcntl, as every MDA), checks that
/// `path` still names it, then, with the file-system identity of the state directory's owner,
/// makes sure the directory exists, replays a pending update `journal` (warning when it
/// finished one) and runs `work` (given whether it did). The identity is given up before the
/// lock is returned, so the caller releases the lock as itself.
pub(crate) fn lock_and_recover<T>(
    path: &Path,
    file: &File,
    state: &StateDir,
    journal: &Path,
    lock_wait: Duration,
    ui: &mut Ui<'_>,
    work: impl FnOnce(&mut Ui<'_>, bool) -> Result<T, AdminError>,
) -> Result<(ContentLock, T), AdminError> {
    let mbx = |e| AdminError::Mailbox(path.into(), e);
    let r = journal::lock_and_replay(
        path,
        path,
        file,
        &lock_options(lock_wait),
        |_, e| mbx(e),
        |lock| {
            for w in lock.warnings() {
                ui.warn(w);
            }
            if !still_names(path, file).map_err(io_at("stat", path))? {
                return Err(mbx(MailboxError::Changed(
                    "replaced while we locked it; run again".into(),
                )));
            }
            let as_user = state.enter()?;
            ensure_state_dir(&state.dir, &as_user)?;
            Ok(Then::Replay {
                journal: journal.to_path_buf(),
                guard: as_user,
            })
        },
    )?;
    let Some(Recovered {
        lock,
        replayed,
        guard: as_user,
    }) = r
    else {
        return Err(mbx(MailboxError::Changed(
            "replaced while we locked it; run again".into(),
        )));
    };
    if replayed {
        ui.warn(&format!(
            "{}: finished an interrupted update",
            path.display()
        ));
    }
    let done = work(ui, replayed)?;
    drop(as_user);
    Ok((lock, done))
}

/// Whether `path` still names the file open as `file` (a concurrent rename or unlink moved it
/// while we waited for its lock).
pub(crate) fn still_names(path: &Path, file: &File) -> io::Result<bool> {
    let m = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(p) => Ok(p.dev() == m.dev() && p.ino() == m.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory, so renames and unlinks in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AdminError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at("sync directory", dir))
}

pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// What a walk of a hashed spool found.
#[derive(Debug, Default)]
pub struct Walk {
    /// (user name, mailbox path), sorted by path.
    pub mailboxes: Vec<(Vec<u8>, PathBuf)>,
    /// Hash directories (every level), sorted.
    pub dirs: Vec<PathBuf>,
    /// `PATH.lock` files (whether or not their mailbox exists).
    pub dotlocks: Vec<PathBuf>,
    /// Names starting with `.` (our migration records, editors' and MDAs' temporary files).
    pub dotfiles: Vec<PathBuf>,
    /// Anything else: files at the wrong depth or under the wrong hash directory, symlinks,
    /// sockets. Never touched, only reported.
    pub strays: Vec<PathBuf>,
}

/// Walks `layout`'s spool. Only `layout.depth` levels of directories are entered.
pub fn walk(layout: &Layout) -> Result<Walk, AdminError> {
    let mut w = Walk::default();
    walk_dir(layout, &layout.spool, 0, &mut w)?;
    w.mailboxes.sort_by(|a, b| a.1.cmp(&b.1));
    w.dirs.sort();
    w.dotlocks.sort();
    w.dotfiles.sort();
    w.strays.sort();
    Ok(w)
}

fn walk_dir(layout: &Layout, dir: &Path, level: u8, w: &mut Walk) -> Result<(), AdminError> {
    let rd = fs::read_dir(dir).map_err(io_at("read directory", dir))?;
    for entry in rd {
        let entry = entry.map_err(io_at("read directory", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let ft = entry.file_type().map_err(io_at("stat", &path))?;
        let bytes = name.as_bytes();
        if level < layout.depth {
            if ft.is_dir() && !bytes.starts_with(b".") {
                w.dirs.push(path.clone());
                walk_dir(layout, &path, level + 1, w)?;
            } else if bytes.starts_with(b".") {
                w.dotfiles.push(path);
            } else {
                w.strays.push(path);
            }
            continue;
        }
        if bytes.starts_with(b".") {
            w.dotfiles.push(path);
        } else if bytes.ends_with(DOTLOCK_SUFFIX.as_bytes()) && ft.is_file() {
            w.dotlocks.push(path);
        } else if ft.is_file() && layout.mailbox(bytes).ok().as_deref() == Some(path.as_path()) {
            w.mailboxes.push((bytes.to_vec(), path));
        } else {
            w.strays.push(path);
        }
    }
    Ok(())
}

/// The users to work on: the named ones, or every mailbox of the spool (`--all`).
pub fn select(
    layout: &Layout,
    users: &[OsString],
    all: bool,
) -> Result<Vec<(Vec<u8>, PathBuf)>, AdminError> {
    if all != users.is_empty() {
        return Err(AdminError::Usage(
            "name users or give --all (not both)".into(),
        ));
    }
    if all {
        return Ok(walk(layout)?.mailboxes);
    }
    users
        .iter()
        .map(|u| {
            let b = u.as_bytes().to_vec();
            let p = layout.mailbox(&b)?;
            Ok((b, p))
        })
        .collect()
}

/// A user name for reports: lossy UTF-8 (names are bytes).
pub fn show(user: &[u8]) -> String {
    String::from_utf8_lossy(user).into_owned()
}

/// A path from a user-name argument.
pub fn user_bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_mapped_once() {
        let table: Vec<(AdminError, i32)> = vec![
            (AdminError::Usage("x".into()), EXIT_USAGE),
            (
                AdminError::BadUser("..".into(), PathError::Unsafe),
                EXIT_USAGE,
            ),
            (AdminError::NeedRoot("create"), EXIT_USAGE),
            (AdminError::Io("x".into(), io::Error::other("y")), EXIT_TEMP),
            (
                AdminError::Mailbox("/x".into(), MailboxError::InUse),
                EXIT_TEMP,
            ),
            (AdminError::Failed(2), EXIT_TEMP),
        ];
        for (e, code) in table {
            assert_eq!(e.exit_code(), code, "{e}");
        }
    }

    #[test]
    fn hash_dirs_follow_the_path_function() {
        let l = Layout::new("/s".into(), 2).unwrap();
        assert_eq!(
            l.hash_dirs(b"claird").unwrap(),
            vec![PathBuf::from("/s/c"), PathBuf::from("/s/c/cl")]
        );
        let l0 = Layout::new("/s".into(), 0).unwrap();
        assert!(l0.hash_dirs(b"claird").unwrap().is_empty());
        assert!(Layout::new("/s".into(), 3).is_err());
        assert!(matches!(l.mailbox(b".x"), Err(AdminError::BadUser(..))));
    }

    #[test]
    fn walk_classifies_entries() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().to_path_buf(), 1).unwrap();
        let s = d.path();
        fs::create_dir_all(s.join("a")).unwrap();
        fs::create_dir_all(s.join("b")).unwrap();
        fs::write(s.join("a/alice"), b"").unwrap();
        fs::write(s.join("a/alice.lock"), b"1\n").unwrap();
        fs::write(s.join("a/bob"), b"").unwrap(); // wrong hash directory
        fs::write(s.join("b/.bob.migrate"), b"").unwrap();
        fs::write(s.join("flat"), b"").unwrap(); // wrong depth
        std::os::unix::fs::symlink("/etc/passwd", s.join("b/bob")).unwrap();
        let w = walk(&l).unwrap();
        assert_eq!(w.mailboxes, vec![(b"alice".to_vec(), s.join("a/alice"))]);
        assert_eq!(w.dirs, vec![s.join("a"), s.join("b")]);
        assert_eq!(w.dotlocks, vec![s.join("a/alice.lock")]);
        assert_eq!(w.dotfiles, vec![s.join("b/.bob.migrate")]);
        assert_eq!(
            w.strays,
            vec![s.join("a/bob"), s.join("b/bob"), s.join("flat")]
        );
    }

    #[test]
    fn progress_is_drawn_only_when_asked() {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut ui = Ui::new(&mut o, &mut e, false);
        ui.tick("x", 1, 2);
        ui.say("line");
        let _ = ui;
        assert!(e.is_empty());
        let (mut o2, mut e2) = (Vec::new(), Vec::new());
        let mut ui = Ui::new(&mut o2, &mut e2, true);
        ui.tick("x", 1, 2);
        ui.tick("x", 2, 2);
        ui.done();
        let _ = ui;
        let s = String::from_utf8(e2).unwrap();
        assert!(s.contains("\rx: 1/2") && s.contains("\rx: 2/2"), "{s:?}");
        assert_eq!(o, b"line\n");
    }
}
