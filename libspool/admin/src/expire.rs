//! `pop-spool expire --days N [USER...|--all] [--dry-run]`: removes messages older than N
//! days, in place, crash-safe.
//!
//! A message's age is the date of its `From ` line (RFC 4155: when it was delivered), read by
//! [`spool_store::mbox::from_line::from_line_time`]; a message whose date cannot be read is kept and reported.
//! Each mailbox is handled under its content lock (MDAs wait; mail they append meanwhile lies
//! after the scanned extent and is kept), after replaying any interrupted update journal, and
//! the expired ranges are removed with `mbox::commit::Compaction`: the journal in the user's state
//! directory makes the removal survive a crash at any point, and the next `pop-serve` session
//! (or expire run) finishes it.
//!
//! A `pop-serve` session that has the mailbox open keeps its view; when it later deletes or
//! retrieves a message that expire removed, it re-verifies the message's digest and answers
//! that the message is gone (or refuses the whole commit as `Changed`): nothing wrong is ever
//! deleted, the client just sees fewer messages next time.

use super::{io_at, lock_and_recover, show, AdminError, Layout, StateDirs, Ui};
use spool_store::canon::CanonOptions;
use spool_store::error::MailboxError;
use spool_store::mailbox::state_paths;
use spool_store::mbox::from_line;
use spool_store::mbox::open_mbox;
use spool_store::mbox::{self, scan::MessageInfo};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest `From ` line read for its date; longer ones are unparsable (and kept).
pub const MAX_FROM_LINE: usize = 1000;
/// Largest `--days`: anything beyond is surely a typo (and would overflow nothing, but expire
/// nothing either).
pub const MAX_DAYS: u64 = 100 * 366;

/// What to expire.
#[derive(Debug, Clone)]
pub struct ExpireOptions {
    pub layout: Layout,
    pub users: Vec<OsString>,
    pub all: bool,
    pub days: u64,
    pub dry_run: bool,
    pub state: StateDirs,
    pub lock_wait: Duration,
    /// "Now" in seconds since the epoch (tests pin it).
    pub now: Option<i64>,
}

/// Counts of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExpireReport {
    pub mailboxes: usize,
    /// Messages removed (or, dry run, that would be).
    pub removed: usize,
    pub bytes: u64,
    /// Messages kept because their date could not be read.
    pub undated: usize,
    pub errors: usize,
}

/// `pop-spool expire`.
pub fn expire(opts: &ExpireOptions, ui: &mut Ui<'_>) -> Result<ExpireReport, AdminError> {
    if opts.days == 0 || opts.days > MAX_DAYS {
        return Err(AdminError::Usage(format!(
            "--days must be between 1 and {MAX_DAYS}"
        )));
    }
    let now = opts.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let cutoff = now - (opts.days as i64) * 86_400;
    let targets = super::select(&opts.layout, &opts.users, opts.all)?;
    let mut report = ExpireReport::default();
    let total = targets.len();
    for (i, (user, path)) in targets.iter().enumerate() {
        ui.tick("expire", i, total);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.len() == 0 => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            _ => {}
        }
        report.mailboxes += 1;
        match expire_one(opts, user, path, cutoff, ui, &mut report) {
            Ok((n, b)) => {
                if n > 0 {
                    let verb = if opts.dry_run {
                        "would remove"
                    } else {
                        "removed"
                    };
                    ui.say(&format!(
                        "{}: {verb} {n} messages, {b} bytes",
                        path.display()
                    ));
                }
            }
            Err(e) => {
                report.errors += 1;
                ui.warn(&format!("{}: {e}", show(user)));
            }
        }
    }
    ui.done();
    Ok(report)
}

fn mbx(path: &Path) -> impl FnOnce(MailboxError) -> AdminError + '_ {
    move |e| AdminError::Mailbox(path.to_path_buf(), e)
}

/// The messages of `scanned` older than `cutoff`; undated ones are counted and warned about.
fn expired(
    file: &File,
    path: &Path,
    msgs: &[MessageInfo],
    cutoff: i64,
    ui: &mut Ui<'_>,
    report: &mut ExpireReport,
) -> Result<Vec<usize>, AdminError> {
    let mut out = Vec::new();
    let mut line = vec![0u8; MAX_FROM_LINE];
    for (i, m) in msgs.iter().enumerate() {
        let len = (m.message_start() - m.from_line_start()).min(MAX_FROM_LINE as u64) as usize;
        file.read_exact_at(&mut line[..len], m.from_line_start())
            .map_err(io_at("read", path))?;
        let mut l = &line[..len];
        while let [rest @ .., b'\n' | b'\r'] = l {
            l = rest;
        }
        match from_line::from_line_time(l) {
            Some(t) if t < cutoff => out.push(i),
            Some(_) => {}
            None => {
                report.undated += 1;
                ui.warn(&format!(
                    "{}: message {} (offset {}): no date in its From line, kept",
                    path.display(),
                    i + 1,
                    m.from_line_start()
                ));
            }
        }
    }
    Ok(out)
}

fn canon() -> CanonOptions {
    CanonOptions {
        quoting: Some(mbox::Quoting::Mboxrd),
        hide_spool_headers: true,
    }
}

/// Expires one mailbox; returns (messages, bytes) removed.
fn expire_one(
    opts: &ExpireOptions,
    user: &[u8],
    path: &Path,
    cutoff: i64,
    ui: &mut Ui<'_>,
    report: &mut ExpireReport,
) -> Result<(usize, u64), AdminError> {
    let state = opts.state.for_user(user)?.ok_or_else(|| {
        AdminError::Usage(format!(
            "no usable home directory for {:?} to keep the update journal in: use --state-dir",
            show(user)
        ))
    })?;
    let journal_path = state_paths(&state.dir, path).journal;
    let file = open_mbox(path).map_err(mbx(path))?;
    if opts.dry_run {
        // Read-only: no lock, no recovery; an exact count is what the real run reports.
        let pending = {
            let _as_user = state.enter()?;
            journal_path.exists()
        };
        if pending {
            ui.warn(&format!(
                "{}: an interrupted update is pending; it would be finished first",
                path.display()
            ));
        }
        let len = file.metadata().map_err(io_at("stat", path))?.len();
        let scanned = mbox::scan::scan(&file, len, canon()).map_err(io_at("read", path))?;
        let del = expired(&file, path, &scanned.messages, cutoff, ui, report)?;
        let ranges = mbox::delete_ranges(&scanned.messages, &del);
        let bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        report.removed += del.len();
        report.bytes += bytes;
        return Ok((del.len(), bytes));
    }
    // Journal and compaction as the user; the mailbox itself only through `file`.
    let (lock, (del, bytes)) = lock_and_recover(
        path,
        &file,
        &state,
        &journal_path,
        opts.lock_wait,
        ui,
        |ui, _| {
            let len = file.metadata().map_err(io_at("stat", path))?.len();
            let scanned = mbox::scan::scan(&file, len, canon()).map_err(io_at("read", path))?;
            let del = expired(&file, path, &scanned.messages, cutoff, ui, report)?;
            let ranges = mbox::delete_ranges(&scanned.messages, &del);
            let bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            if !ranges.is_empty() {
                mbox::commit::Compaction {
                    file: &file,
                    mailbox: path,
                    journal: &journal_path,
                    extent_end: scanned.extent_end,
                    delete: &ranges,
                }
                .remove()
                .map_err(mbx(path))?;
            }
            Ok((del, bytes))
        },
    )?;
    lock.release().map_err(mbx(path))?;
    report.removed += del.len();
    report.bytes += bytes;
    Ok((del.len(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn msg(date: &str, i: usize) -> String {
        format!("From s{i}@x {date}\nSubject: {i}\n\nbody {i}\n\n")
    }

    #[test]
    fn removes_exactly_the_old_ones() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path().join("spool"), 0).unwrap();
        fs::create_dir(&layout.spool).unwrap();
        let now = 1_704_067_200; // 2024-01-01
        let parts = [
            (msg("Mon Jan  1 00:00:00 2018", 0), true),
            (msg("Sun Dec 31 00:00:00 2023", 1), false),
            (msg("whenever", 2), false),
            (msg("Fri Dec  1 00:00:00 2023", 3), true),
            (msg("Fri Dec  1 00:00:00 2023", 4), true),
            (msg("Mon Jan  1 00:00:00 2024", 5), false),
        ];
        let all: String = parts.iter().map(|p| p.0.clone()).collect();
        let kept: String = parts.iter().filter(|p| !p.1).map(|p| p.0.clone()).collect();
        let path = layout.spool.join("u");
        fs::write(&path, &all).unwrap();
        let mut opts = ExpireOptions {
            layout,
            users: vec!["u".into()],
            all: false,
            days: 7,
            dry_run: true,
            state: StateDirs::Fixed(d.path().join("state")),
            lock_wait: Duration::from_secs(2),
            now: Some(now),
        };
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut ui = Ui::new(&mut o, &mut e, false);
        let r = expire(&opts, &mut ui).unwrap();
        assert_eq!((r.removed, r.undated, r.errors), (3, 1, 0));
        assert_eq!(fs::read_to_string(&path).unwrap(), all);
        opts.dry_run = false;
        let r = expire(&opts, &mut ui).unwrap();
        assert_eq!((r.removed, r.errors), (3, 0));
        assert_eq!(r.bytes as usize, all.len() - kept.len());
        assert_eq!(fs::read_to_string(&path).unwrap(), kept);
        // Idempotent.
        let r = expire(&opts, &mut ui).unwrap();
        assert_eq!(r.removed, 0);
        opts.days = 0;
        assert!(matches!(expire(&opts, &mut ui), Err(AdminError::Usage(_))));
        let _ = ui;
        assert!(String::from_utf8(e).unwrap().contains("no date"));
    }
}
