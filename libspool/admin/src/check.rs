//! `pop-spool check [USER...|--all] [--fix]`: finds what is wrong in a spool, and with `--fix`
//! repairs what can be repaired without touching mail content.
//!
//! Reported: owners and modes (mailbox `user:mail 0600`, hash directories `root:mail 2775`),
//! stale dotlocks (creator dead, or lock and mailbox both older than `STALE_DOTLOCK_AGE`: the
//! rule of `lock.rs`), files at a dotlock's name that cannot be a dotlock (a mailbox, anything
//! larger than `lock::MAX_DOTLOCK_SIZE`, not a regular file: reported, never removed), pending
//! or half-written update journals, interrupted migrations, what
//! the scanner warns about (data before the first From line, a truncated last message, NUL
//! bytes) and entries of the spool that are not mailboxes.
//!
//! Fixed with `--fix`: owners and modes (through the open descriptor), stale dotlocks (removed
//! only if still the same file), half-written journals (`JOURNAL.tmp`, garbage by the journal
//! protocol, removed under the content lock so a commit in progress is never disturbed).
//! Never fixed: mail content, pending journals (the next `pop-serve` session or
//! `pop-spool expire` replays them), migration records (rerun `pop-spool migrate`), strays.
//!
//! The content is scanned under the content lock, so an MDA's append in progress is not
//! mistaken for a truncated message. Without `--fix` nothing is changed, so a mailbox with a
//! stale dotlock is not scanned (taking the lock would break it).

use super::create::{open_dir, Want};
use super::migrate::record_path;
use super::{
    io_at, lock_options, show, AdminError, Layout, StateDirs, Ui, EXIT_OK, EXIT_PROBLEMS, EXIT_TEMP,
};
use spool_store::lock::{dead_owner, dotlock_path, inspect_dotlock, ContentLock, DotlockFile};
use spool_store::mailbox::state_paths;
use spool_store::mbox;
use spool_store::mbox::open_mbox;
use spool_wire::limits;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub layout: Layout,
    pub users: Vec<OsString>,
    pub all: bool,
    pub fix: bool,
    pub state: StateDirs,
    pub lock_wait: Duration,
}

/// Counts of a check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub mailboxes: usize,
    /// Problems found (fixed ones included).
    pub problems: usize,
    pub fixed: usize,
    /// Mailboxes or entries that could not be checked.
    pub errors: usize,
}

impl CheckReport {
    /// 0 clean (or all fixed), 1 problems remain, 111 something could not be checked.
    pub fn exit_code(&self) -> i32 {
        if self.errors > 0 {
            EXIT_TEMP
        } else if self.problems > self.fixed {
            EXIT_PROBLEMS
        } else {
            EXIT_OK
        }
    }
}

struct Ctx<'u, 'a> {
    ui: &'u mut Ui<'a>,
    report: CheckReport,
    fix: bool,
}

impl Ctx<'_, '_> {
    fn problem(&mut self, path: &Path, what: &str) {
        self.report.problems += 1;
        self.ui.say(&format!("{}: {what}", path.display()));
    }
    /// A problem that `--fix` can repair with `repair`.
    fn fixable(&mut self, path: &Path, what: &str, repair: impl FnOnce() -> io::Result<()>) {
        self.report.problems += 1;
        if !self.fix {
            self.ui.say(&format!("{}: {what}", path.display()));
            return;
        }
        match repair() {
            Ok(()) => {
                self.report.fixed += 1;
                self.ui.say(&format!("{}: {what}: fixed", path.display()));
            }
            Err(e) => {
                self.ui
                    .say(&format!("{}: {what}: cannot fix: {e}", path.display()));
            }
        }
    }
    fn error(&mut self, e: &AdminError) {
        self.report.errors += 1;
        self.ui.warn(&e.to_string());
    }
}

/// `pop-spool check`.
pub fn check(opts: &CheckOptions, ui: &mut Ui<'_>) -> Result<CheckReport, AdminError> {
    let gid = super::lookup_group(super::MAIL_GROUP)?;
    let mut cx = Ctx {
        ui,
        report: CheckReport::default(),
        fix: opts.fix,
    };
    let targets = super::select(&opts.layout, &opts.users, opts.all)?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    if opts.all {
        let w = super::walk(&opts.layout)?;
        dirs = w.dirs;
        for p in &w.strays {
            cx.problem(p, "not a mailbox of this spool (left alone)");
        }
        for p in &w.dotlocks {
            let b = p.as_os_str().as_bytes();
            let mailbox = PathBuf::from(std::ffi::OsStr::from_bytes(
                &b[..b.len() - spool_store::lock::DOTLOCK_SUFFIX.len()],
            ));
            if fs::symlink_metadata(&mailbox).is_err() {
                check_dotlock(&mut cx, p, None);
            }
        }
        for p in &w.dotfiles {
            cx.problem(
                p,
                "leftover file (an interrupted `pop-spool migrate`: run it again)",
            );
        }
    } else {
        for (u, _) in &targets {
            for d in opts.layout.hash_dirs(u)? {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
    }
    for d in &dirs {
        check_dir(&mut cx, d, gid);
    }
    let total = targets.len();
    for (i, (user, path)) in targets.iter().enumerate() {
        cx.ui.tick("check", i, total);
        cx.report.mailboxes += 1;
        if let Err(e) = check_mailbox(&mut cx, opts, user, path, gid) {
            cx.error(&e);
        }
    }
    cx.ui.done();
    Ok(cx.report)
}

fn check_dir(cx: &mut Ctx<'_, '_>, dir: &Path, gid: u32) {
    let want = Want::dir(gid);
    let m = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return cx.error(&io_at("stat", dir)(e)),
    };
    if !m.is_dir() {
        return cx.problem(dir, "hash directory is not a directory (left alone)");
    }
    let diff = want.differences(&m);
    if !diff.is_empty() {
        cx.fixable(dir, &diff.join(", "), || want.apply(&open_dir(dir)?));
    }
}

/// Whether the dotlock at `lock` is stale by `lock.rs`'s rule; `mailbox_age` `None` when the
/// mailbox does not exist (then only the lock's own age and creator count). `Err(why)` when
/// the file there cannot be a dotlock: it is never stale. Reads the file as `lock.rs` does:
/// no symlink followed, no blocking open, at most `lock::MAX_DOTLOCK_SIZE` bytes.
fn stale(found: &spool_store::lock::LockFile, mailbox_age: Option<Duration>) -> Option<String> {
    if let Some(pid) = dead_owner(&found.content) {
        return Some(format!("stale dotlock: its creator, pid {pid}, is gone"));
    }
    let age = SystemTime::now()
        .duration_since(found.modified)
        .unwrap_or(Duration::ZERO);
    let quiet = mailbox_age.is_none_or(|a| a >= limits::STALE_DOTLOCK_AGE);
    if age >= limits::STALE_DOTLOCK_AGE && quiet {
        return Some(format!(
            "stale dotlock: {}s old, mailbox unchanged as long",
            age.as_secs()
        ));
    }
    None
}

/// Reports a stale dotlock and removes it with `--fix` (only if it is still the same file:
/// an MDA may have broken it and made its own meanwhile), and reports a file at the dotlock's
/// name that is no dotlock (left alone). Returns whether either is still there.
fn check_dotlock(cx: &mut Ctx<'_, '_>, lock: &Path, mailbox_age: Option<Duration>) -> bool {
    let found = match inspect_dotlock(lock) {
        Ok(DotlockFile::Lock(l)) => l,
        Ok(DotlockFile::Missing) => return false,
        Ok(DotlockFile::NotALock(why)) => {
            cx.problem(
                lock,
                &format!("not a dotlock ({why}): never removed, move it away by hand"),
            );
            return true;
        }
        Err(e) => {
            cx.error(&io_at("inspect", lock)(e));
            return true;
        }
    };
    match stale(&found, mailbox_age) {
        Some(why) => {
            cx.fixable(lock, &why, || match fs::symlink_metadata(lock) {
                Ok(m) if m.dev() == found.dev && m.ino() == found.ino => fs::remove_file(lock),
                _ => Ok(()),
            });
            fs::symlink_metadata(lock).is_ok()
        }
        None => false, // in use: the lock wait below copes
    }
}

fn check_mailbox(
    cx: &mut Ctx<'_, '_>,
    opts: &CheckOptions,
    user: &[u8],
    path: &Path,
    gid: u32,
) -> Result<(), AdminError> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            cx.problem(path, "no mailbox (`pop-spool create` makes one)");
            return Ok(());
        }
        Err(e) => return Err(io_at("stat", path)(e)),
    };
    if !m.is_file() {
        cx.problem(path, "not a regular file (left alone)");
        return Ok(());
    }
    match super::lookup_user(user)? {
        None => cx.problem(
            path,
            &format!("no user {:?} in the password database", show(user)),
        ),
        Some(pw) => {
            let want = Want::mailbox(&pw, gid);
            let diff = want.differences(&m);
            if !diff.is_empty() {
                cx.fixable(path, &diff.join(", "), || {
                    let f = fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                        .open(path)?;
                    want.apply(&f)
                });
            }
        }
    }
    if record_path(path).exists() {
        cx.problem(
            &record_path(path),
            "interrupted migration (run `pop-spool migrate` again)",
        );
    }
    let box_age = m
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::ZERO);
    if check_dotlock(cx, &dotlock_path(path), Some(box_age)) {
        cx.ui.say(&format!(
            "{}: content not checked while {} is there",
            path.display(),
            dotlock_path(path).display()
        ));
        return Ok(());
    }
    let file = open_mbox(path).map_err(|e| AdminError::Mailbox(path.into(), e))?;
    let lock = ContentLock::acquire(path, &file, &lock_options(opts.lock_wait))
        .map_err(|e| AdminError::Mailbox(path.into(), e))?;
    if let Some(state) = opts.state.for_user(user)? {
        let j = state_paths(&state.dir, path).journal;
        let mut tmp = j.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let pending = {
            // Looked at, and the garbage removed, as the user: it is their directory.
            let _as_user = state.enter()?;
            if tmp.exists() {
                cx.fixable(&tmp, "half-written update journal (garbage)", || {
                    fs::remove_file(&tmp)
                });
            }
            j.exists()
        };
        if pending {
            cx.problem(
                &j,
                "interrupted update pending (replayed by the next session or `pop-spool expire`)",
            );
            return lock
                .release()
                .map_err(|e| AdminError::Mailbox(path.into(), e));
        }
    }
    let len = file.metadata().map_err(io_at("stat", path))?.len();
    let canon = spool_store::canon::CanonOptions {
        quoting: Some(mbox::Quoting::Mboxrd),
        hide_spool_headers: true,
    };
    let scanned = mbox::scan::scan(&file, len, canon).map_err(io_at("read", path))?;
    lock.release()
        .map_err(|e| AdminError::Mailbox(path.into(), e))?;
    for w in &scanned.warnings {
        cx.problem(path, w);
    }
    Ok(())
}
