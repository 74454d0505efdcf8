//! `pop-spool index [USER...|--all]`: builds or refreshes the mbox index of each mailbox
//! offline (after a migration, or before the first session of a huge mailbox), exactly as a
//! session's open does: under the content lock, after replaying any interrupted update
//! journal, validating an existing index and scanning only what it does not cover.
//!
//! Run as root, everything in the state directory (creating it, replaying a journal, reading
//! and writing the index) is done as the user ([`super::StateDir::enter`]), so the index is
//! the user's and `pop-serve`, running as the user, can read and replace it.
//! The session lock is not taken (it would create a lock file we would have to give away
//! too): a session running meanwhile may write its own index, and since each index is
//! installed whole by rename and validated at every open, the last one written wins safely.

use super::{io_at, lock_and_recover, show, AdminError, Layout, StateDirs, Ui};
use spool_store::canon::CanonOptions;
use spool_store::error::MailboxError;
use spool_store::mailbox::state_paths;
use spool_store::mbox::index::{self, Served};
use spool_store::mbox::open_mbox;
use spool_store::mbox::Quoting;
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::Duration;

/// What to index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub layout: Layout,
    pub users: Vec<OsString>,
    pub all: bool,
    pub state: StateDirs,
    pub lock_wait: Duration,
}

/// Counts of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexReport {
    pub mailboxes: usize,
    /// Indexed from a full scan (no usable index before).
    pub built: usize,
    /// An index existed and only new mail was scanned.
    pub refreshed: usize,
    /// Already up to date: nothing written.
    pub unchanged: usize,
    pub messages: usize,
    pub errors: usize,
}

/// The canonical-form options `pop-serve` uses by default: sizes in the index are computed
/// with them (a server run with other options rebuilds its index on its first session).
pub fn serve_canon() -> CanonOptions {
    CanonOptions {
        quoting: Some(Quoting::Mboxrd),
        hide_spool_headers: true,
    }
}

/// `pop-spool index`.
pub fn index(opts: &IndexOptions, ui: &mut Ui<'_>) -> Result<IndexReport, AdminError> {
    let targets = super::select(&opts.layout, &opts.users, opts.all)?;
    let mut report = IndexReport::default();
    let total = targets.len();
    for (i, (user, path)) in targets.iter().enumerate() {
        ui.tick("index", i, total);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.len() == 0 => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            _ => {}
        }
        report.mailboxes += 1;
        if let Err(e) = index_one(opts, user, path, ui, &mut report) {
            report.errors += 1;
            ui.warn(&format!("{}: {e}", show(user)));
        }
    }
    ui.done();
    Ok(report)
}

fn index_one(
    opts: &IndexOptions,
    user: &[u8],
    path: &Path,
    ui: &mut Ui<'_>,
    report: &mut IndexReport,
) -> Result<(), AdminError> {
    let mbx = |e: MailboxError| AdminError::Mailbox(path.to_path_buf(), e);
    let state = opts.state.for_user(user)?.ok_or_else(|| {
        AdminError::Usage(format!(
            "no usable home directory for {:?} to keep the index in: use --state-dir",
            show(user)
        ))
    })?;
    let paths = state_paths(&state.dir, path);
    let file = open_mbox(path).map_err(mbx)?;
    let canon = serve_canon();
    let (lock, opened) = lock_and_recover(
        path,
        &file,
        &state,
        &paths.journal,
        opts.lock_wait,
        ui,
        |_, replayed| {
            let len = file.metadata().map_err(io_at("stat", path))?.len();
            index::open_scan(&file, len, &paths.index, canon, !replayed)
                .map_err(io_at("read", path))
        },
    )?;
    lock.release().map_err(mbx)?;
    for n in &opened.notes {
        ui.warn(&format!("{}: {n}", path.display()));
    }
    report.messages += opened.scan.len();
    match opened.served {
        Served::FullScan => report.built += 1,
        Served::Extended { .. } => report.refreshed += 1,
        Served::Unchanged => report.unchanged += 1,
    }
    if opened.dirty {
        let _as_user = state.enter()?;
        index::write(&paths.index, &opened.scan, canon, &opened.stamp)
            .map_err(io_at("write the index", &paths.index))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    #[test]
    fn builds_refreshes_and_leaves_alone() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path().join("spool"), 0).unwrap();
        fs::create_dir(&layout.spool).unwrap();
        let path = layout.spool.join("u");
        let m = |i: usize| format!("From s{i}@x Mon Jan  1 00:00:00 2024\nSubject: {i}\n\nb\n\n");
        fs::write(&path, (0..20).map(m).collect::<String>()).unwrap();
        fs::write(layout.spool.join("empty"), b"").unwrap();
        let state = d.path().join("state");
        let opts = IndexOptions {
            layout,
            users: vec!["u".into(), "empty".into(), "missing".into()],
            all: false,
            state: StateDirs::Fixed(state.clone()),
            lock_wait: Duration::from_secs(2),
        };
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut ui = Ui::new(&mut o, &mut e, false);
        let r = index(&opts, &mut ui).unwrap();
        assert_eq!((r.mailboxes, r.built, r.messages, r.errors), (1, 1, 20, 0));
        let idx = state_paths(&state, &path).index;
        assert!(idx.exists());
        let r = index(&opts, &mut ui).unwrap();
        assert_eq!((r.unchanged, r.built), (1, 0));
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(m(20).as_bytes())
            .unwrap();
        let r = index(&opts, &mut ui).unwrap();
        assert_eq!((r.refreshed, r.messages), (1, 21));
        // A session then uses it as is.
        let f = open_mbox(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let o2 = index::open_scan(&f, len, &idx, serve_canon(), true).unwrap();
        assert_eq!(o2.served, Served::Unchanged);
    }
}
