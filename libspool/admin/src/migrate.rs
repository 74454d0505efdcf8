//! `pop-spool migrate`: moves a flat spool (`/var/mail/USER`) into the hashed layout while
//! mail keeps arriving, losing and duplicating nothing, resumable after a crash at any point.
//!
//! The rule: at every instant each message is in the old mailbox, or in the new one, or
//! (during a merge) in both with a `.USER.migrate` record that says so; a rerun turns the last
//! case into the second. The protocol (rename, or a recorded append under both locks) and
//! what it does not protect against: doc/DESIGN.md, "Migrating a flat spool".

use super::create::{ensure_hash_dirs, Want};
use super::{
    io_at, lock_options, parent_of, show, still_names, sync_dir, AdminError, Layout, StateDir,
    StateDirs, Ui, COPY_CHUNK,
};
use sha2::{Digest, Sha256};
use spool_store::error::MailboxError;
use spool_store::lock::{ContentLock, DOTLOCK_SUFFIX};
use spool_store::mailbox::state_paths;
use spool_store::mbox::journal::{self, Recovered, Then};
use spool_store::mbox::open_mbox;
use spool_store::spoolpath;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many times a mailbox is retried when it was renamed or removed between our open and
/// our lock (another migrate run, an MUA): more would mean something keeps replacing it.
pub const MAX_REOPEN: usize = 3;
/// Suffix of the record (see the module documentation).
pub const RECORD_SUFFIX: &str = ".migrate";
/// First word of a record, with its format version.
const RECORD_MAGIC: &str = "popspool-migrate-1";

/// What to migrate and how.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The flat spool.
    pub from: PathBuf,
    /// The hashed spool.
    pub to: Layout,
    pub dry_run: bool,
    /// Where the users' update journals live (replayed before a mailbox is moved).
    pub state: StateDirs,
    /// Bounded wait for each content lock.
    pub lock_wait: Duration,
}

/// Counts of a run (the report).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Renamed into place, or copied to a new mailbox that did not exist.
    pub moved: usize,
    /// Appended to a new mailbox that already existed (stragglers, resumed merges).
    pub merged: usize,
    /// Entries that are not mailboxes, or vanished meanwhile.
    pub skipped: usize,
    pub errors: usize,
    /// Bytes moved, copied or appended.
    pub bytes: u64,
}

/// What happened to one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    Renamed(u64),
    Copied(u64),
    Merged(u64),
    /// An empty old file next to an existing new mailbox: removed.
    EmptyRemoved,
    /// Gone before we could lock it (another run took it).
    Vanished,
    /// Dry run: what would be done, whether it is a merge, and how many bytes.
    Would(String, bool, u64),
}

/// `pop-spool migrate`.
pub fn migrate(opts: &MigrateOptions, ui: &mut Ui<'_>) -> Result<MigrateReport, AdminError> {
    let from = fs::canonicalize(&opts.from).map_err(io_at("open spool", &opts.from))?;
    let to = fs::canonicalize(&opts.to.spool).map_err(io_at("open spool", &opts.to.spool))?;
    if from == to && opts.to.depth == 0 {
        return Err(AdminError::Usage(
            "--from and --to are the same flat spool: nothing to do".into(),
        ));
    }
    let mut names: Vec<OsString> = Vec::new();
    for e in fs::read_dir(&opts.from).map_err(io_at("read directory", &opts.from))? {
        names.push(e.map_err(io_at("read directory", &opts.from))?.file_name());
    }
    names.sort();
    let mut report = MigrateReport::default();
    let total = names.len();
    for (i, name) in names.iter().enumerate() {
        ui.tick("migrate", i, total);
        let old = opts.from.join(name);
        let user = name.as_bytes();
        if let Some(why) = not_a_mailbox(&old, user, opts.to.depth)? {
            if !why.is_empty() {
                ui.warn(&format!("skipping {}: {why}", old.display()));
            }
            report.skipped += 1;
            continue;
        }
        match migrate_one(opts, user, &old, ui) {
            Ok(m) => {
                let new = opts.to.mailbox(user)?;
                let (o, n) = (old.display(), new.display());
                match m {
                    Moved::Renamed(b) => {
                        report.moved += 1;
                        report.bytes += b;
                        ui.say(&format!("moved   {o} -> {n} ({b} bytes, renamed)"));
                    }
                    Moved::Copied(b) => {
                        report.moved += 1;
                        report.bytes += b;
                        ui.say(&format!("moved   {o} -> {n} ({b} bytes, copied)"));
                    }
                    Moved::Merged(b) => {
                        report.merged += 1;
                        report.bytes += b;
                        ui.say(&format!("merged  {o} -> {n} ({b} bytes appended)"));
                    }
                    Moved::EmptyRemoved => {
                        report.merged += 1;
                        ui.say(&format!("removed {o} (empty; {n} exists)"));
                    }
                    Moved::Vanished => {
                        report.skipped += 1;
                        ui.warn(&format!("skipping {o}: vanished while we locked it"));
                    }
                    Moved::Would(what, merge, b) => {
                        if merge {
                            report.merged += 1;
                        } else {
                            report.moved += 1;
                        }
                        report.bytes += b;
                        ui.say(&format!("would {what}: {o} -> {n}"));
                    }
                }
            }
            Err(e) => {
                report.errors += 1;
                ui.warn(&format!("{}: {e}", show(user)));
            }
        }
    }
    ui.done();
    if !opts.dry_run {
        sweep_records(opts, ui);
    }
    Ok(report)
}

/// Why a flat-spool entry is not migrated (`Some("")`: skip silently), `None` for a mailbox.
fn not_a_mailbox(path: &Path, user: &[u8], depth: u8) -> Result<Option<String>, AdminError> {
    if user.ends_with(DOTLOCK_SUFFIX.as_bytes()) {
        return Ok(Some("a dotlock".into()));
    }
    if let Err(e) = spoolpath::hashed_path(Path::new("/"), user, depth) {
        return Ok(Some(format!("not a mailbox name ({e})")));
    }
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(String::new())),
        Err(e) => return Err(io_at("stat", path)(e)),
    };
    if m.is_dir() {
        return Ok(Some("a directory".into()));
    }
    if !m.is_file() {
        return Ok(Some("not a regular file".into()));
    }
    Ok(None)
}

/// The record's path next to the new mailbox: a dot name, which no user name can have.
pub fn record_path(new: &Path) -> PathBuf {
    let name = new.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    let mut r = Vec::with_capacity(name.len() + 10);
    r.push(b'.');
    // Names near NAME_MAX would not fit with the affixes: a digest keeps them unique.
    if name.len() + 1 + RECORD_SUFFIX.len() > spoolpath::NAME_MAX {
        let d = Sha256::digest(name);
        r.extend_from_slice(&name[..200]);
        r.push(b'-');
        for b in &d[..8] {
            r.extend_from_slice(format!("{b:02x}").as_bytes());
        }
    } else {
        r.extend_from_slice(name);
    }
    r.extend_from_slice(RECORD_SUFFIX.as_bytes());
    parent_of(new).join(OsString::from_vec(r))
}

/// The state of an append in progress (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub old_dev: u64,
    pub old_ino: u64,
    pub start: u64,
    pub end: u64,
    pub new_ino: u64,
    pub new_before: u64,
    pub sha: String,
}

impl Record {
    fn encode(&self) -> String {
        format!(
            "{RECORD_MAGIC} {} {} {} {} {} {} {}\n",
            self.old_dev,
            self.old_ino,
            self.start,
            self.end,
            self.new_ino,
            self.new_before,
            self.sha
        )
    }

    /// `None` for anything but a complete record (a partial write ends before the newline).
    fn decode(b: &[u8]) -> Option<Record> {
        let s = std::str::from_utf8(b).ok()?.strip_suffix('\n')?;
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() != 8 || f[0] != RECORD_MAGIC {
            return None;
        }
        let n = |i: usize| f[i].parse::<u64>().ok();
        let sha = f[7];
        if sha.len() != 64 || !sha.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let r = Record {
            old_dev: n(1)?,
            old_ino: n(2)?,
            start: n(3)?,
            end: n(4)?,
            new_ino: n(5)?,
            new_before: n(6)?,
            sha: sha.into(),
        };
        (r.start <= r.end).then_some(r)
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_record(path: &Path) -> Result<Option<Option<Record>>, AdminError> {
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => {
            let mut b = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(&f, 4096), &mut b)
                .map_err(io_at("read", path))?;
            Ok(Some(Record::decode(&b)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at("open", path)(e)),
    }
}

fn write_record(path: &Path, r: &Record) -> Result<(), AdminError> {
    remove_if_exists(path)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_at("create", path))?;
    f.write_all(r.encode().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_at("write", path))?;
    sync_dir(parent_of(path))
}

fn remove_if_exists(path: &Path) -> Result<(), AdminError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at("remove", path)(e)),
    }
}

fn mbx(path: &Path) -> impl FnOnce(MailboxError) -> AdminError + '_ {
    move |e| AdminError::Mailbox(path.to_path_buf(), e)
}

/// A user's state directory and the path of a mailbox's journal in it.
type StateJournal = (StateDir, PathBuf);

/// The content lock on `path` open as `file` (`None`: `path` no longer names `file`), then the
/// replay of `pop-serve`'s interrupted update of it, if its state directory is known, as the
/// directory's owner. Returns the lock and the directory with the journal's path in it.
fn lock_and_recover(
    opts: &MigrateOptions,
    user: &[u8],
    path: &Path,
    file: &File,
    ui: &mut Ui<'_>,
) -> Result<Option<(ContentLock, Option<StateJournal>)>, AdminError> {
    let r = journal::lock_and_replay(
        path,
        path,
        file,
        &lock_options(opts.lock_wait),
        |_, e| mbx(path)(e),
        |lock| {
            for w in lock.warnings() {
                ui.warn(w);
            }
            if !still_names(path, file).map_err(io_at("stat", path))? {
                return Ok(Then::Reopen);
            }
            let Some(state) = opts.state.for_user(user)? else {
                return Ok(Then::Skip((None, None)));
            };
            let journal = state_paths(&state.dir, path).journal;
            let as_user = state.enter()?;
            Ok(Then::Replay {
                journal: journal.clone(),
                guard: (Some(as_user), Some((state, journal))),
            })
        },
    )?;
    let Some(Recovered {
        lock,
        replayed,
        guard: (as_user, state),
    }) = r
    else {
        return Ok(None);
    };
    drop(as_user);
    if let (true, Some((_, j))) = (replayed, &state) {
        ui.warn(&format!(
            "{}: finished an interrupted update from {}",
            path.display(),
            j.display()
        ));
    }
    Ok(Some((lock, state)))
}

/// Moves one mailbox (see the module documentation for the protocol).
pub fn migrate_one(
    opts: &MigrateOptions,
    user: &[u8],
    old: &Path,
    ui: &mut Ui<'_>,
) -> Result<Moved, AdminError> {
    let new = opts.to.mailbox(user)?;
    let rec = record_path(&new);
    if opts.dry_run {
        return dry_run(old, &new, &rec);
    }
    for _ in 0..MAX_REOPEN {
        let old_file = match open_mbox(old) {
            Ok(f) => f,
            Err(MailboxError::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Moved::Vanished)
            }
            Err(e) => return Err(mbx(old)(e)),
        };
        let Some((old_lock, _)) = lock_and_recover(opts, user, old, &old_file, ui)? else {
            continue;
        };
        let root = super::is_root();
        let gid = if root {
            super::lookup_group(super::MAIL_GROUP)?
        } else {
            nix::unistd::getegid().as_raw()
        };
        ensure_hash_dirs(&opts.to, user, Want::dir(gid), false, root)?;
        let moved = locked_move(opts, user, old, &old_file, &new, &rec, ui)?;
        old_lock.release().map_err(mbx(old))?;
        return Ok(moved);
    }
    Err(AdminError::Io(
        format!("lock {}", old.display()),
        io::Error::other("kept being replaced while we locked it"),
    ))
}

fn dry_run(old: &Path, new: &Path, rec: &Path) -> Result<Moved, AdminError> {
    let om = fs::symlink_metadata(old).map_err(io_at("stat", old))?;
    let resume = if rec.exists() {
        "resume an interrupted merge and "
    } else {
        ""
    };
    let n = om.len();
    Ok(match fs::symlink_metadata(new) {
        Ok(nm) if nm.dev() == om.dev() && nm.ino() == om.ino() => Moved::Would(
            format!("{resume}remove the second name of the moved mailbox"),
            false,
            0,
        ),
        Ok(_) if n == 0 => Moved::Would(format!("{resume}remove the empty old file"), true, 0),
        Ok(_) => Moved::Would(
            format!("{resume}merge {n} bytes into the existing mailbox"),
            true,
            n,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir_dev = new
                .ancestors()
                .skip(1)
                .find_map(|d| fs::metadata(d).ok())
                .map(|m| m.dev());
            let how = if dir_dev == Some(om.dev()) {
                "rename"
            } else {
                "copy"
            };
            Moved::Would(format!("move {n} bytes ({how})"), false, n)
        }
        Err(e) => return Err(io_at("stat", new)(e)),
    })
}

/// The move proper, under the old mailbox's content lock.
fn locked_move(
    opts: &MigrateOptions,
    user: &[u8],
    old: &Path,
    old_file: &File,
    new: &Path,
    rec: &Path,
    ui: &mut Ui<'_>,
) -> Result<Moved, AdminError> {
    let om = old_file.metadata().map_err(io_at("stat", old))?;
    let have_record = fs::symlink_metadata(rec).is_ok();
    match fs::symlink_metadata(new) {
        Ok(nm) if nm.dev() == om.dev() && nm.ino() == om.ino() => {
            // A link()-based move (no renameat2) died before its unlink: one file, two names.
            remove_old(old)?;
            remove_if_exists(rec)?;
            return Ok(Moved::Renamed(om.len()));
        }
        Ok(nm) if !nm.is_file() => {
            return Err(AdminError::Io(
                format!("new mailbox {}", new.display()),
                io::Error::other("exists and is not a regular file (or is a symlink)"),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if have_record {
                // Records are written only once the new mailbox exists: if it vanished,
                // someone removed it; what the record describes cannot be checked.
                return Err(AdminError::Io(
                    format!("record {}", rec.display()),
                    io::Error::other("its new mailbox is gone; resolve by hand"),
                ));
            }
            match rename_noreplace(old, new) {
                Ok(()) => {
                    sync_dir(parent_of(new))?;
                    sync_dir(parent_of(old))?;
                    return Ok(Moved::Renamed(om.len()));
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {} // merge below
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    create_like(new, &om)?;
                }
                Err(e) => return Err(io_at("rename to", new)(e)),
            }
        }
        Err(e) => return Err(io_at("stat", new)(e)),
    }
    let fresh = fs::symlink_metadata(new)
        .map(|m| m.len() == 0)
        .unwrap_or(false)
        && !have_record;
    let appended = merge(opts, user, old, old_file, new, rec, ui)?;
    Ok(match appended {
        None => Moved::EmptyRemoved,
        Some(b) if fresh => Moved::Copied(b),
        Some(b) => Moved::Merged(b),
    })
}

/// `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the file system lacks it (a
/// crash between the two leaves one file with two names, which the next run recognises).
fn rename_noreplace(old: &Path, new: &Path) -> io::Result<()> {
    let r = nix::fcntl::renameat2(
        None,
        old,
        None,
        new,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    );
    let e = match r {
        Ok(()) => return Ok(()),
        Err(errno) => io::Error::from(errno),
    };
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => {
            fs::hard_link(old, new)?;
            fs::remove_file(old)
        }
        _ => Err(e),
    }
}

/// An empty new mailbox with the old one's owner, group and mode.
fn create_like(new: &Path, om: &fs::Metadata) -> Result<(), AdminError> {
    let f = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(new)
    {
        Ok(f) => f,
        // Appeared meanwhile: merge into it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_at("create", new)(e)),
    };
    Want {
        uid: om.uid(),
        gid: om.gid(),
        mode: om.mode() & 0o7777,
    }
    .apply(&f)
    .map_err(io_at("set owner and mode of", new))?;
    f.sync_all().map_err(io_at("sync", new))?;
    sync_dir(parent_of(new))
}

fn remove_old(old: &Path) -> Result<(), AdminError> {
    remove_if_exists(old)?;
    sync_dir(parent_of(old))
}

/// Appends the old mailbox to the existing new one under both locks, resuming a record.
/// `None`: the old file was empty and was removed.
fn merge(
    opts: &MigrateOptions,
    user: &[u8],
    old: &Path,
    old_file: &File,
    new: &Path,
    rec: &Path,
    ui: &mut Ui<'_>,
) -> Result<Option<u64>, AdminError> {
    let new_file = open_mbox(new).map_err(mbx(new))?;
    let Some((new_lock, journal)) = lock_and_recover(opts, user, new, &new_file, ui)? else {
        return Err(AdminError::Io(
            format!("lock {}", new.display()),
            io::Error::other("replaced while we locked it; run again"),
        ));
    };
    let start = resolve_record(rec, old_file, new, &new_file, journal.as_ref())?;
    let old_len = old_file.metadata().map_err(io_at("stat", old))?.len();
    if start == 0 && old_len == 0 {
        remove_old(old)?;
        remove_if_exists(rec)?;
        new_lock.release().map_err(mbx(new))?;
        return Ok(None);
    }
    let copied = if start < old_len {
        append(old, old_file, start..old_len, new, &new_file, rec)?;
        old_len - start
    } else {
        0
    };
    // Only now, with every old byte durably in the new mailbox, does the old one go.
    remove_old(old)?;
    remove_if_exists(rec)?;
    sync_dir(parent_of(rec))?;
    new_lock.release().map_err(mbx(new))?;
    Ok(Some(copied))
}

/// Decides what an existing record means; returns where copying the old file must resume.
fn resolve_record(
    rec: &Path,
    old_file: &File,
    new: &Path,
    new_file: &File,
    journal: Option<&(StateDir, PathBuf)>,
) -> Result<u64, AdminError> {
    let r = match read_record(rec)? {
        None => return Ok(0),
        Some(None) => {
            // Torn while being written: the append it announces never started.
            remove_if_exists(rec)?;
            return Ok(0);
        }
        Some(Some(r)) => r,
    };
    let om = old_file.metadata().map_err(io_at("stat", rec))?;
    let mismatch = |why: &str| {
        AdminError::Io(
            format!("record {}", rec.display()),
            io::Error::other(format!("{why}; left in place, resolve by hand")),
        )
    };
    let mut buf = vec![0u8; COPY_CHUNK];
    let same_old = om.ino() == r.old_ino
        && om.len() >= r.end
        && hex(&digest(old_file, r.start..r.end, &mut buf).map_err(io_at("read", rec))?) == r.sha;
    if !same_old {
        if om.ino() == r.old_ino {
            return Err(mismatch(
                "the old mailbox no longer holds the bytes it records",
            ));
        }
        // The recorded old file was unlinked, which happens only after a complete append.
        remove_if_exists(rec)?;
        return Ok(0);
    }
    let nm = new_file.metadata().map_err(io_at("stat", new))?;
    if nm.ino() != r.new_ino || nm.len() < r.new_before {
        return Err(mismatch("the new mailbox was replaced or shortened"));
    }
    let want = r.end - r.start;
    let p = common_prefix(new_file, r.new_before, old_file, r.start..r.end, &mut buf)
        .map_err(io_at("compare", new))?;
    if p == want {
        return Ok(r.end);
    }
    // A partial append: take it out again, then copy the range anew. When an MDA appended
    // behind it after the crash, its message may share a prefix with the copied range (both
    // start with "From "), so the common prefix can overshoot: the partial append ends at the
    // last "From " within it (what the MDA wrote begins with one). Taking the latest such point keeps every byte an MDA wrote unless it delivered a
    // byte-identical copy (From line and its timestamp included) of a message being merged.
    if nm.len() == r.new_before + p {
        new_file
            .set_len(r.new_before)
            .and_then(|()| new_file.sync_all())
            .map_err(io_at("truncate", new))?;
    } else if let Some(c) =
        last_from(new_file, r.new_before, r.new_before + p).map_err(io_at("read", new))?
    {
        let p = c - r.new_before;
        let (state, j) = journal.ok_or_else(|| {
            mismatch("an MDA appended after a partial merge and no state directory is known for the journal (use --state-dir)")
        })?;
        let as_user = state.enter()?;
        super::ensure_state_dir(&state.dir, &as_user)?;
        spool_store::mbox::commit::Compaction {
            file: new_file,
            mailbox: new,
            journal: j,
            extent_end: nm.len(),
            delete: std::slice::from_ref(&(r.new_before..r.new_before + p)),
        }
        .remove()
        .map_err(mbx(new))?;
    }
    remove_if_exists(rec)?;
    Ok(r.start)
}

fn digest(f: &File, range: std::ops::Range<u64>, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut off = range.start;
    while off < range.end {
        let n = usize::try_from(range.end - off)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        f.read_exact_at(&mut buf[..n], off)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize().into())
}

/// The greatest offset `o` in `(lo, hi]` where `From ` begins, searched backwards in
/// bounded chunks. Not only at line starts: a partial append can end mid-line, and an MDA
/// appends its From line right there.
fn last_from(f: &File, lo: u64, hi: u64) -> io::Result<Option<u64>> {
    const PAT: &[u8] = b"From ";
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; COPY_CHUNK];
    let floor = lo + 1;
    let mut end = (hi + PAT.len() as u64).min(len);
    while end >= floor + PAT.len() as u64 {
        let start = end.saturating_sub(buf.len() as u64).max(floor);
        let n = (end - start) as usize;
        f.read_exact_at(&mut buf[..n], start)?;
        if let Some(k) = memchr::memmem::rfind(&buf[..n], PAT) {
            let o = start + k as u64;
            if o <= hi {
                return Ok(Some(o));
            }
            end = o + PAT.len() as u64 - 1;
            continue;
        }
        if start == floor {
            break;
        }
        // Overlap by the pattern length less one so a match across the boundary is found.
        end = start + PAT.len() as u64 - 1;
    }
    Ok(None)
}

/// Length of the longest common prefix of `a[a_off..]` and `b[range]`.
fn common_prefix(
    a: &File,
    a_off: u64,
    b: &File,
    range: std::ops::Range<u64>,
    buf: &mut [u8],
) -> io::Result<u64> {
    let a_len = a.metadata()?.len().saturating_sub(a_off);
    let total = a_len.min(range.end - range.start);
    let half = buf.len() / 2;
    let (ba, bb) = buf.split_at_mut(half);
    let mut done = 0u64;
    while done < total {
        let n = usize::try_from(total - done)
            .unwrap_or(usize::MAX)
            .min(half);
        a.read_exact_at(&mut ba[..n], a_off + done)?;
        b.read_exact_at(&mut bb[..n], range.start + done)?;
        if let Some(k) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(done + k as u64);
        }
        done += n as u64;
    }
    Ok(total)
}

/// Appends `range` of the old mailbox to the new one, announced by a record first.
fn append(
    old: &Path,
    old_file: &File,
    range: std::ops::Range<u64>,
    new: &Path,
    new_file: &File,
    rec: &Path,
) -> Result<(), AdminError> {
    let mut new_before = new_file.metadata().map_err(io_at("stat", new))?.len();
    if new_before > 0 {
        // Bytes before the old mailbox's first From line would become the tail of the new
        // mailbox's last message: refuse rather than change a message.
        let mut head = [0u8; 5];
        if old_file.read_exact_at(&mut head, range.start).is_err() || &head != b"From " {
            return Err(AdminError::Io(
                format!("merge {}", old.display()),
                io::Error::other(format!(
                    "no From line at byte {} (see `pop-spool check`): not merged",
                    range.start
                )),
            ));
        }
        // The old mailbox's first From line must start a line of the new one.
        let mut last = [0u8; 1];
        new_file
            .read_exact_at(&mut last, new_before - 1)
            .map_err(io_at("read", new))?;
        if last[0] != b'\n' {
            new_file
                .write_all_at(b"\n", new_before)
                .and_then(|()| new_file.sync_data())
                .map_err(io_at("write", new))?;
            new_before += 1;
        }
    }
    let mut buf = vec![0u8; COPY_CHUNK];
    let om = old_file.metadata().map_err(io_at("stat", old))?;
    let nm = new_file.metadata().map_err(io_at("stat", new))?;
    let r = Record {
        old_dev: om.dev(),
        old_ino: om.ino(),
        start: range.start,
        end: range.end,
        new_ino: nm.ino(),
        new_before,
        sha: hex(&digest(old_file, range.clone(), &mut buf).map_err(io_at("read", old))?),
    };
    write_record(rec, &r)?;
    let mut off = range.start;
    let mut at = new_before;
    while off < range.end {
        let n = usize::try_from(range.end - off)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        old_file
            .read_exact_at(&mut buf[..n], off)
            .map_err(io_at("read", old))?;
        new_file
            .write_all_at(&buf[..n], at)
            .map_err(io_at("write", new))?;
        off += n as u64;
        at += n as u64;
    }
    new_file.sync_all().map_err(io_at("sync", new))
}

/// Removes records whose old mailbox is gone (the run died after unlinking it): finished
/// business by the invariant. Problems here are only warnings: the mail is safe either way.
fn sweep_records(opts: &MigrateOptions, ui: &mut Ui<'_>) {
    let Ok(w) = super::walk(&opts.to) else {
        return;
    };
    for p in w.dotfiles {
        let name = p
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let Some(user) = name
            .strip_prefix(b".")
            .and_then(|n| n.strip_suffix(RECORD_SUFFIX.as_bytes()))
        else {
            continue;
        };
        if opts.to.mailbox(user).ok().map(|m| record_path(&m)) != Some(p.clone()) {
            continue;
        }
        let old = opts.from.join(std::ffi::OsStr::from_bytes(user));
        if fs::symlink_metadata(&old).is_err() {
            match fs::remove_file(&p) {
                Ok(()) => ui.warn(&format!("removed finished record {}", p.display())),
                Err(e) => ui.warn(&format!("cannot remove {}: {e}", p.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Vec<u8> {
        format!("From s{i}@x Mon Jan  1 00:00:00 2024\nSubject: {i}\n\nbody {i}\n\n").into_bytes()
    }

    struct Env {
        _d: tempfile::TempDir,
        opts: MigrateOptions,
    }

    fn env(depth: u8) -> Env {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("flat");
        let to = d.path().join("hashed");
        fs::create_dir(&from).unwrap();
        fs::create_dir(&to).unwrap();
        let opts = MigrateOptions {
            from,
            to: Layout::new(to, depth).unwrap(),
            dry_run: false,
            state: StateDirs::Fixed(d.path().join("state")),
            lock_wait: Duration::from_secs(2),
        };
        Env { _d: d, opts }
    }

    fn run(opts: &MigrateOptions) -> (MigrateReport, String, String) {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut ui = Ui::new(&mut o, &mut e, false);
        let r = migrate(opts, &mut ui).unwrap();
        let _ = ui;
        (
            r,
            String::from_utf8(o).unwrap(),
            String::from_utf8(e).unwrap(),
        )
    }

    #[test]
    fn moves_skips_and_merges_stragglers() {
        let e = env(1);
        let f = &e.opts.from;
        fs::write(f.join("alice"), msg(1)).unwrap();
        fs::write(f.join("bob"), b"").unwrap();
        fs::write(f.join("carol.lock"), b"1\n").unwrap();
        fs::write(f.join(".hidden"), b"").unwrap();
        fs::create_dir(f.join("dir")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", f.join("link")).unwrap();
        let (r, out, err) = run(&e.opts);
        assert_eq!(
            (r.moved, r.merged, r.skipped, r.errors),
            (2, 0, 4, 0),
            "{out}{err}"
        );
        let t = &e.opts.to.spool;
        assert_eq!(fs::read(t.join("a/alice")).unwrap(), msg(1));
        assert_eq!(fs::read(t.join("b/bob")).unwrap(), b"");
        assert!(!f.join("alice").exists());
        assert!(
            err.contains("a dotlock") && err.contains("a directory"),
            "{err}"
        );
        // A straggler arrives at the old path; the rerun appends it.
        fs::write(f.join("alice"), msg(2)).unwrap();
        fs::write(f.join("bob"), b"").unwrap();
        let (r, out, _) = run(&e.opts);
        assert_eq!((r.moved, r.merged, r.errors), (0, 2, 0), "{out}");
        assert_eq!(
            fs::read(t.join("a/alice")).unwrap(),
            [msg(1), msg(2)].concat()
        );
        assert!(!f.join("alice").exists() && !f.join("bob").exists());
        assert!(!record_path(&t.join("a/alice")).exists());
        // Nothing left: a third run is a no-op.
        let (r, _, _) = run(&e.opts);
        assert_eq!((r.moved, r.merged, r.errors), (0, 0, 0));
    }

    #[test]
    fn missing_final_newline_gets_one_before_the_append() {
        let e = env(0);
        let t = &e.opts.to.spool;
        fs::write(
            t.join("u"),
            b"From a Mon Jan  1 00:00:00 2024\n\nno newline",
        )
        .unwrap();
        fs::write(e.opts.from.join("u"), msg(3)).unwrap();
        run(&e.opts);
        let got = fs::read(t.join("u")).unwrap();
        assert_eq!(
            got,
            [
                &b"From a Mon Jan  1 00:00:00 2024\n\nno newline\n"[..],
                &msg(3)
            ]
            .concat()
        );
    }

    #[test]
    fn garbage_before_the_first_from_is_not_merged() {
        let e = env(0);
        let t = &e.opts.to.spool;
        fs::write(t.join("u"), msg(0)).unwrap();
        let bad = [&b"garbage\n"[..], &msg(1)].concat();
        fs::write(e.opts.from.join("u"), &bad).unwrap();
        let (r, _, err) = run(&e.opts);
        assert_eq!(r.errors, 1);
        assert!(err.contains("no From line at byte 0"), "{err}");
        assert_eq!(fs::read(t.join("u")).unwrap(), msg(0));
        assert_eq!(fs::read(e.opts.from.join("u")).unwrap(), bad);
        assert!(!record_path(&t.join("u")).exists());
    }

    #[test]
    fn dry_run_changes_nothing() {
        let e = env(1);
        fs::write(e.opts.from.join("alice"), msg(1)).unwrap();
        let mut o = e.opts.clone();
        o.dry_run = true;
        let (r, out, _) = run(&o);
        assert!(out.contains("would move"), "{out}");
        assert_eq!((r.moved, r.errors, r.bytes), (1, 0, msg(1).len() as u64));
        assert!(e.opts.from.join("alice").exists());
        assert!(!e.opts.to.spool.join("a").exists());
    }

    /// Every state a run can die in during a merge, built by hand, resolves to exactly one
    /// copy of every message.
    #[test]
    fn resumes_every_partial_merge() {
        let old_bytes = [msg(1), msg(2), msg(3)].concat();
        let new_bytes = msg(0);
        let late = msg(9);
        // (bytes of the partial append, torn record, mail an MDA appended to new after the crash)
        let mut cases = Vec::new();
        let first = msg(1).len();
        for cut in [
            0,
            1,
            4,
            5,
            30,
            first,
            first + 3,
            old_bytes.len() - 1,
            old_bytes.len(),
        ] {
            for torn in [false, true] {
                for mda in [false, true] {
                    cases.push((cut, torn, mda));
                }
            }
        }
        for (cut, torn, mda) in cases {
            let e = env(0);
            let old = e.opts.from.join("u");
            let new = e.opts.to.spool.join("u");
            fs::write(&old, &old_bytes).unwrap();
            fs::write(&new, &new_bytes).unwrap();
            let of = File::open(&old).unwrap();
            let nf = File::open(&new).unwrap();
            let r = Record {
                old_dev: of.metadata().unwrap().dev(),
                old_ino: of.metadata().unwrap().ino(),
                start: 0,
                end: old_bytes.len() as u64,
                new_ino: nf.metadata().unwrap().ino(),
                new_before: new_bytes.len() as u64,
                sha: hex(&Sha256::digest(&old_bytes)),
            };
            let rec = record_path(&new);
            let mut text = r.encode().into_bytes();
            if torn {
                text.truncate(text.len() - 3);
            }
            fs::write(&rec, &text).unwrap();
            // A torn record means the append never started.
            let cut = if torn { 0 } else { cut };
            let mut content = [&new_bytes[..], &old_bytes[..cut]].concat();
            if mda {
                content.extend_from_slice(&late);
            }
            fs::write(&new, &content).unwrap();
            let (rep, out, err) = run(&e.opts);
            if mda && (1..5).contains(&cut) {
                // Fewer bytes than "From " before the MDA's mail: compact cannot take them
                // out (no From line there), so it is reported and nothing is touched.
                assert_eq!(rep.errors, 1, "{out}{err}");
                assert_eq!(fs::read(&old).unwrap(), old_bytes);
                assert_eq!(fs::read(&new).unwrap(), content);
                assert!(rec.exists());
                continue;
            }
            assert_eq!(rep.errors, 0, "cut {cut} torn {torn} mda {mda}: {out}{err}");
            let got = fs::read(&new).unwrap();
            let mut want = new_bytes.clone();
            if mda && cut == old_bytes.len() {
                want.extend_from_slice(&old_bytes);
                want.extend_from_slice(&late);
            } else {
                if mda {
                    want.extend_from_slice(&late);
                }
                want.extend_from_slice(&old_bytes);
            }
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "cut {cut} torn {torn} mda {mda}"
            );
            assert!(!old.exists() && !rec.exists());
        }
    }

    #[test]
    fn record_of_an_unlinked_old_file_is_finished_business() {
        let e = env(0);
        let new = e.opts.to.spool.join("u");
        fs::write(&new, msg(1)).unwrap();
        let r = Record {
            old_dev: 1,
            old_ino: 1,
            start: 0,
            end: 5,
            new_ino: 2,
            new_before: 0,
            sha: "0".repeat(64),
        };
        fs::write(record_path(&new), r.encode()).unwrap();
        // Old is gone: the sweep removes the record.
        run(&e.opts);
        assert!(!record_path(&new).exists());
        assert_eq!(Record::decode(r.encode().as_bytes()), Some(r));
    }

    #[test]
    fn long_names_get_short_records() {
        let name = "a".repeat(255);
        let p = record_path(&Path::new("/s").join(&name));
        assert!(p.file_name().unwrap().len() <= 255);
        assert!(p.file_name().unwrap().as_bytes().starts_with(b"."));
        assert_eq!(
            record_path(Path::new("/s/u")),
            PathBuf::from("/s/.u.migrate")
        );
    }
}
