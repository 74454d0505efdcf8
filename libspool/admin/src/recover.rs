//! `pop-spool recover [USER...]`: finishes every update journal an interrupted mbox UPDATE
//! left, so the mailbox file is whole again before anything but the toolkit reads it (a local
//! MUA, a backup). Without users, every mailbox of the spool ([`super::walk`]).
//!
//! Until a journal is finished the mbox file itself is torn: a `pop-serve` killed in the middle
//! of its compaction leaves some kept messages twice and one cut in two. Every toolkit program
//! replays the journal before it reads the mailbox, so sessions never see that; other readers
//! do, until the next toolkit program opens the mailbox. This subcommand (and the boot unit
//! `pop-spool-recover.service` that runs it) closes that window without waiting for mail.
//!
//! A mailbox is only locked when its state directory holds a journal (or the `.tmp` of one
//! whose writing never finished): one without leaves the mailbox, its lock files and the state
//! directory untouched, so a run with nothing pending changes nothing. A pending journal is
//! replayed exactly as a session's open replays it, through [`super::lock_and_recover`] and
//! [`spool_store::mbox::journal::lock_and_replay`]: under the content lock (dotlock, then
//! fcntl) that MDAs and sessions take, so running this while mail is delivered and served is
//! safe. The state directory is only looked into as its owner ([`super::StateDir::enter`]).
//!
//! A Maildir leaves nothing pending: its UPDATE unlinks (and renames) one file at a time, each
//! step atomic, with no journal.

use super::{io_at, lock_and_recover, show, AdminError, Layout, StateDirs, Ui};
use spool_store::mailbox::state_paths;
use spool_store::mbox::journal;
use spool_store::mbox::open_mbox;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// What to recover.
#[derive(Debug, Clone)]
pub struct RecoverOptions {
    pub layout: Layout,
    /// Users to recover; empty: every mailbox of the spool.
    pub users: Vec<OsString>,
    pub state: StateDirs,
    pub lock_wait: Duration,
}

/// What happened to one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No journal: nothing was locked or written.
    Nothing,
    /// The user has no mailbox file.
    NoMailbox,
    /// The user has no state directory recover can find (no passwd entry or no usable home
    /// without `--state-dir`): no journal can be pending where `pop-serve` would look.
    NoStateDir,
    /// A journal was finished; the mailbox went from `before` to `after` bytes.
    Replayed { before: u64, after: u64 },
    /// Only the `.tmp` of a journal whose writing never finished was there (the mailbox was
    /// never touched): it was removed.
    Discarded,
    /// The mailbox or its journal could not be recovered.
    Failed(String),
}

/// Counts of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    pub mailboxes: usize,
    pub replayed: usize,
    pub discarded: usize,
    pub nothing: usize,
    pub failed: usize,
}

/// `pop-spool recover`: one report line per mailbox, on `ui.out`, or `ui.err` for a failure.
pub fn recover(opts: &RecoverOptions, ui: &mut Ui<'_>) -> Result<RecoverReport, AdminError> {
    let targets = super::select(&opts.layout, &opts.users, opts.users.is_empty())?;
    let mut report = RecoverReport::default();
    let total = targets.len();
    for (i, (user, path)) in targets.iter().enumerate() {
        ui.tick("recover", i, total);
        report.mailboxes += 1;
        let outcome = match recover_one(opts, user, path, ui) {
            Ok(o) => o,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let what = match &outcome {
            Outcome::Nothing => {
                report.nothing += 1;
                "nothing pending".to_string()
            }
            Outcome::NoMailbox => {
                report.nothing += 1;
                "no mailbox, nothing pending".to_string()
            }
            Outcome::NoStateDir => {
                report.nothing += 1;
                "no state directory (no passwd entry or usable home; see --state-dir), nothing pending".to_string()
            }
            Outcome::Replayed { before, after } => {
                report.replayed += 1;
                format!("replayed an interrupted update ({before} -> {after} bytes)")
            }
            Outcome::Discarded => {
                report.discarded += 1;
                "removed an incomplete journal (the mailbox was never touched)".to_string()
            }
            Outcome::Failed(why) => {
                report.failed += 1;
                format!("failed: {why}")
            }
        };
        let line = format!("{} {}: {what}", show(user), path.display());
        if matches!(outcome, Outcome::Failed(_)) {
            ui.warn(&line);
        } else {
            ui.say(&line);
        }
    }
    ui.done();
    Ok(report)
}

fn recover_one(
    opts: &RecoverOptions,
    user: &[u8],
    path: &Path,
    ui: &mut Ui<'_>,
) -> Result<Outcome, AdminError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(AdminError::Usage(format!(
                "{} is not a regular file (a hashed spool holds mbox files)",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::NoMailbox),
        Err(e) => return Err(io_at("stat", path)(e)),
    }
    let Some(state) = opts.state.for_user(user)? else {
        return Ok(Outcome::NoStateDir);
    };
    let paths = state_paths(&state.dir, path);
    let tmp = journal::tmp_path(&paths.journal);
    // Looked at as the directory's owner: a symlink the user put there leads nowhere the user
    // could not go. Nothing is created: a run with nothing pending changes nothing.
    let (dir, journal, partial) = {
        let _as_user = state.enter()?;
        let Some(dir) = dir_identity(&state.dir)? else {
            return Ok(Outcome::Nothing);
        };
        (
            dir,
            exists(&paths.journal).map_err(io_at("stat", &paths.journal))?,
            exists(&tmp).map_err(io_at("stat", &tmp))?,
        )
    };
    if !journal && !partial {
        return Ok(Outcome::Nothing);
    }
    let mbx = |e| AdminError::Mailbox(path.to_path_buf(), e);
    let file = open_mbox(path).map_err(mbx)?;
    let before = file.metadata().map_err(io_at("stat", path))?.len();
    let (lock, (replayed, after, same_dir)) = lock_and_recover(
        path,
        &file,
        &state,
        &paths.journal,
        opts.lock_wait,
        ui,
        |_, replayed| {
            // Still as the user. The report must be about the directory the journal was seen
            // in, not one the user put in its place meanwhile (nothing errs out here: the
            // lock is released below as root, without the user's identity).
            let same_dir = matches!(dir_identity(&state.dir), Ok(Some(d)) if d == dir);
            let after = file.metadata().map_err(io_at("stat", path))?.len();
            Ok((replayed, after, same_dir))
        },
    )?;
    lock.release().map_err(mbx)?;
    if !same_dir {
        return Err(AdminError::Io(
            format!("state directory {}", state.dir.display()),
            io::Error::other("replaced while recovering; run again"),
        ));
    }
    Ok(if replayed {
        Outcome::Replayed { before, after }
    } else if journal {
        // A session finished (or discarded) it while we waited for the lock.
        Outcome::Nothing
    } else {
        Outcome::Discarded
    })
}

/// Device and inode of the directory `dir` (not followed if a symlink), `None` when there is
/// none; anything else in its place is an error.
fn dir_identity(dir: &Path) -> Result<Option<(u64, u64)>, AdminError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(Some((m.dev(), m.ino()))),
        Ok(_) => Err(AdminError::Io(
            format!("state directory {}", dir.display()),
            io::Error::other("exists and is not a directory"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at("stat", dir)(e)),
    }
}

/// Whether a path exists, without following a symlink.
fn exists(p: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opts: &RecoverOptions) -> (RecoverReport, String, String) {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut ui = Ui::new(&mut o, &mut e, false);
        let r = recover(opts, &mut ui).unwrap();
        let _ = ui;
        (
            r,
            String::from_utf8(o).unwrap(),
            String::from_utf8(e).unwrap(),
        )
    }

    #[test]
    fn reports_each_mailbox_and_touches_only_pending_ones() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path().join("spool"), 0).unwrap();
        fs::create_dir(&layout.spool).unwrap();
        let state = d.path().join("state");
        let m = "From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n\nb\n\n";
        for u in ["ann", "ben", "cid"] {
            fs::write(layout.spool.join(u), m).unwrap();
        }
        let opts = RecoverOptions {
            layout: layout.clone(),
            users: vec![],
            state: StateDirs::Fixed(state.clone()),
            lock_wait: Duration::from_secs(2),
        };
        let (r, out, err) = run(&opts);
        assert_eq!((r.mailboxes, r.nothing, r.failed), (3, 3, 0), "{out}{err}");
        assert!(!state.exists(), "nothing pending: no state directory made");

        // ben: an incomplete journal (.tmp only); cid: a corrupt one.
        fs::create_dir(&state).unwrap();
        let ben = state_paths(&state, &layout.spool.join("ben")).journal;
        fs::write(journal::tmp_path(&ben), b"half").unwrap();
        let cid = state_paths(&state, &layout.spool.join("cid")).journal;
        fs::write(&cid, b"not a journal").unwrap();
        let (r, out, err) = run(&opts);
        assert_eq!((r.nothing, r.discarded, r.failed), (1, 1, 1), "{out}{err}");
        assert!(out.contains("ben ") && out.contains("removed an incomplete journal"));
        assert!(err.contains("cid ") && err.contains("failed:"), "{err}");
        assert!(!journal::tmp_path(&ben).exists());
        for u in ["ann", "ben", "cid"] {
            assert_eq!(fs::read(layout.spool.join(u)).unwrap(), m.as_bytes());
        }
        // Named users only; a missing mailbox is no failure.
        let opts = RecoverOptions {
            users: vec!["ann".into(), "zed".into()],
            ..opts
        };
        let (r, out, _) = run(&opts);
        assert_eq!((r.mailboxes, r.nothing, r.failed), (2, 2, 0));
        assert!(out.contains("zed ") && out.contains("no mailbox"), "{out}");
    }
}
