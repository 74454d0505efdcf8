//! The mbox format (RFC 4155): scanning, canonical messages, stable UIDLs, and the session's
//! open/commit flow: `scan` finds messages, `message` streams one, `uidl` names them, `index`
//! remembers a scan, `commit` and `journal` remove deleted messages crash-safely.

#![forbid(unsafe_code)]

pub mod commit;
pub mod from_line;
pub mod index;
pub mod journal;
pub mod message;
pub mod scan;
pub mod uidl;

use crate::canon::CanonOptions;
use crate::error::{io_err, MailboxError};
use crate::lock::{LockOptions, ReadLock, SessionLock, READ_LOCK_ATTEMPTS};
use crate::mailbox::{
    state_paths, CommitSummary, EmptyMailbox, Mailbox, OpenOptions, RetrieveError, RetrieveSink,
    StatePaths,
};
use journal::{Recovered, Then};
use scan::{MessageInfo, ScanResult};
use spool_wire::limits;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How `>From ` lines are read (defined with the canonical form, which undoes the quoting).
pub use crate::canon::Quoting;

/// Opens an mbox for a session: fast path when missing or empty; otherwise the session lock,
/// then the scan under the read lock (no journal pending: an fcntl read lock and no dotlock,
/// see [`ReadLock`]), or journal recovery and the scan under the content lock; the lock is
/// released before the first command is read.
///
/// The content lock is held only while the journal is replayed and the extent scanned, and
/// again during commit, never while the client reads: delivery (which appends past the
/// scanned extent) is never held up by a slow client. The session lock keeps other POP3
/// sessions out for the whole session.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Mailbox>, MailboxError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Box::new(EmptyMailbox)),
        Err(e) => return Err(MailboxError::Io("stat the mailbox", e)),
        Ok(m) if m.file_type().is_file() && m.len() == 0 => return Ok(Box::new(EmptyMailbox)),
        Ok(m) if !m.file_type().is_file() => return Err(MailboxError::NotAMailbox(path.into())),
        Ok(_) => {}
    }
    let paths = state_paths(&opts.state_dir, path);
    let session = SessionLock::acquire(&paths.session_lock, opts.session_lock_wait)?;
    let file = open_mbox(path)?;
    let lock_opts = LockOptions {
        helper: opts.dotlock_helper.clone(),
        wait: opts.content_lock_wait,
        stale_age: limits::STALE_DOTLOCK_AGE,
    };
    let canon = canon_options(opts);
    let started = Instant::now();
    let (meta, opened, lock_notes) =
        match read_under_read_lock(path, &file, &lock_opts, &paths, canon)? {
            Some((meta, opened)) => (meta, opened, Vec::new()),
            None => {
                // The content lock gets what is left of the one wait.
                let rest = LockOptions {
                    wait: lock_opts.wait.saturating_sub(started.elapsed()),
                    ..lock_opts.clone()
                };
                let Recovered { lock, replayed, .. } =
                    replay_under_lock(path, &file, &rest, &paths.journal)?;
                let meta = file.metadata().map_err(io_err("stat the mailbox"))?;
                // After a replayed journal the layout moved: the index is not even looked at.
                let opened = index::open_scan(&file, meta.len(), &paths.index, canon, !replayed)
                    .map_err(scan_err)?;
                let mut notes = lock.warnings().to_vec();
                if replayed {
                    notes.push("finished an interrupted update from its journal".into());
                }
                lock.release()?;
                (meta, opened, notes)
            }
        };
    let mut scanned = opened.scan;
    scanned.warnings.extend(opened.notes);
    scanned.warnings.extend(lock_notes);
    // Written after the lock is released (delivery never waits for our fsync), from the full
    // list before any max_messages cut, and only when it changed.
    if opened.dirty {
        if let Err(e) = index::write(&paths.index, &scanned, canon, &opened.stamp) {
            scanned.warnings.push(format!(
                "could not write the index {}: {e}",
                paths.index.display()
            ));
        }
    }
    if scanned.extent_end == 0 {
        return Ok(Box::new(EmptyMailbox));
    }
    let mut mbox = MboxMailbox::new(path, file, &meta, scanned, canon, opts.max_messages);
    mbox.locking = Some(Locking {
        _session: session,
        journal: paths.journal,
        index: paths.index,
        opts: lock_opts,
    });
    Ok(Box::new(mbox))
}

/// The content lock, then the replay of `journal`, with nothing between: `pop-serve` runs as
/// the mailbox's user, whose state directory it is.
fn replay_under_lock(
    path: &Path,
    file: &File,
    opts: &LockOptions,
    journal: &Path,
) -> Result<Recovered<()>, MailboxError> {
    let then = Then::Replay {
        journal: journal.to_path_buf(),
        guard: (),
    };
    // `between` never asks to reopen: `None` cannot come back.
    journal::lock_and_replay(path, path, file, opts, |_, e| e, |_| Ok(then))?
        .ok_or_else(|| MailboxError::Changed("replaced while we locked it".into()))
}

/// The extent read under the read lock (no dotlock; see [`crate::lock::ReadLock`]) when there
/// is no journal to replay. `None`: a journal is pending, or the read lock could not be had
/// or the mailbox changed under it [`READ_LOCK_ATTEMPTS`] times; the caller takes the content
/// lock. The index is used as under the content lock.
fn read_under_read_lock(
    path: &Path,
    file: &File,
    opts: &LockOptions,
    paths: &StatePaths,
    canon: CanonOptions,
) -> Result<Option<(std::fs::Metadata, index::Opened)>, MailboxError> {
    let deadline = Instant::now() + opts.wait;
    for _ in 0..READ_LOCK_ATTEMPTS {
        if journal::pending(&paths.journal)? {
            return Ok(None);
        }
        let Some(lock) = ReadLock::acquire(path, file, deadline)? else {
            return Ok(None);
        };
        // A journal cannot appear while the read lock is held (it is written under the
        // content lock, whose fcntl write lock conflicts), but one may have been written
        // between the look above and the lock.
        if journal::pending(&paths.journal)? {
            return Ok(None);
        }
        let meta = file.metadata().map_err(io_err("stat the mailbox"))?;
        let opened =
            index::open_scan(file, lock.size(), &paths.index, canon, true).map_err(scan_err)?;
        if lock.still_consistent()? {
            lock.release()?;
            return Ok(Some((meta, opened)));
        }
    }
    Ok(None)
}

fn canon_options(opts: &OpenOptions) -> CanonOptions {
    CanonOptions {
        quoting: Some(opts.quoting),
        hide_spool_headers: opts.hide_spool_headers,
    }
}

fn scan_err(e: io::Error) -> MailboxError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        MailboxError::Changed("mailbox became shorter while being scanned".into())
    } else {
        MailboxError::Io("read the mailbox", e)
    }
}

/// Read-write (fcntl write locks need it), close-on-exec, never through a symlink (a user who
/// can write the spool directory must not make us lock and rewrite another file), and
/// non-blocking so a FIFO put in the mailbox's place cannot hang the open.
///
/// Also `O_NOATIME` where the kernel allows it (the caller owns the file, as a session's user
/// does): reading the mailbox leaves its access time alone. procmail, after appending to a
/// mailbox whose access time is not older than its modification time, sleeps a second so that
/// "new mail" checks (atime < mtime: shells, biff, mutt) still see the new message; a session
/// that had just read the mailbox cost every such delivery that second.
pub fn open_mbox(path: &Path) -> Result<File, MailboxError> {
    let open = |extra: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | extra)
            .open(path)
    };
    let file = match open(libc::O_NOATIME) {
        // EPERM: not the owner (root's admin tools on a user's mailbox without CAP_FOWNER).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENXIO) | Some(libc::EISDIR) => {
            MailboxError::NotAMailbox(path.into())
        }
        _ => MailboxError::Io("open the mailbox", e),
    })?;
    let meta = file.metadata().map_err(io_err("stat the mailbox"))?;
    if !meta.file_type().is_file() {
        return Err(MailboxError::NotAMailbox(path.into()));
    }
    Ok(file)
}

/// What a locked session keeps for commit.
#[derive(Debug)]
struct Locking {
    _session: SessionLock,
    journal: PathBuf,
    index: PathBuf,
    opts: LockOptions,
}

/// An mbox opened for one session: the scanned view of `0..extent_end`.
#[derive(Debug)]
pub struct MboxMailbox {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    scan: ScanResult,
    canon: CanonOptions,
    /// None only for unit tests built with `from_file_unlocked`.
    locking: Option<Locking>,
}

impl MboxMailbox {
    fn new(
        path: &Path,
        file: File,
        meta: &std::fs::Metadata,
        mut scan: ScanResult,
        canon: CanonOptions,
        max_messages: Option<usize>,
    ) -> MboxMailbox {
        // Present only the oldest N: the rest stay in the file, after the deleted ranges.
        scan.truncate(max_messages.unwrap_or(usize::MAX).min(limits::MAX_MESSAGES));
        MboxMailbox {
            path: path.to_path_buf(),
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            scan,
            canon,
            locking: None,
        }
    }

    /// Scans `path` without session lock, content lock or journal: for tests and for tools
    /// that already hold the locks. `commit` then skips locking too.
    pub fn from_file_unlocked(
        path: &Path,
        opts: &OpenOptions,
    ) -> Result<MboxMailbox, MailboxError> {
        let file = open_mbox(path)?;
        let meta = file.metadata().map_err(io_err("stat the mailbox"))?;
        let canon = canon_options(opts);
        let scanned = scan::scan(&file, meta.len(), canon).map_err(scan_err)?;
        Ok(MboxMailbox::new(
            path,
            file,
            &meta,
            scanned,
            canon,
            opts.max_messages,
        ))
    }

    /// What the scan found worth logging (leading garbage, a truncated last message, NUL
    /// bytes). Never printed here: under inetd, stderr is the client's socket.
    pub fn warnings(&self) -> &[String] {
        &self.scan.warnings
    }

    /// The scanned byte ranges, for tools and tests.
    pub fn messages(&self) -> &[MessageInfo] {
        &self.scan.messages
    }

    /// The end of the extent the session saw; mail appended later lies after it.
    pub fn extent_end(&self) -> u64 {
        self.scan.extent_end
    }

    /// Checks, under the content lock, that deleting `ranges` still deletes what the client
    /// saw: same file, not shorter, every deleted message still where and what it was.
    fn verify_for_commit(&self, deleted: &[usize]) -> Result<(), MailboxError> {
        let now = std::fs::symlink_metadata(&self.path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                MailboxError::Changed("mailbox was removed".into())
            } else {
                MailboxError::Io("stat the mailbox", e)
            }
        })?;
        if now.dev() != self.dev || now.ino() != self.ino {
            return Err(MailboxError::Changed(
                "mailbox was replaced by another file".into(),
            ));
        }
        let len = self
            .file
            .metadata()
            .map_err(io_err("stat the mailbox"))?
            .len();
        if len < self.scan.extent_end {
            return Err(MailboxError::Changed(format!(
                "mailbox is {len} bytes, shorter than the {} bytes scanned",
                self.scan.extent_end
            )));
        }
        // One read per deleted message covers, for all but large messages, the LF before its
        // `From ` line, its header block and the next message's `From ` line; the UIDL digest
        // then proves it is the message the client deleted and the `From ` line after it
        // proves where it ends, so `Compaction::remove_prechecked` need not read either boundary again.
        let mut buf = vec![0u8; COMMIT_CHECK_READ];
        let end = self.scan.extent_end;
        for &i in deleted {
            let info = &self.scan.messages[i];
            let gone = || {
                MailboxError::Changed(format!(
                    "message {} is no longer where the session found it",
                    i + 1
                ))
            };
            let start = info.from_line_start();
            let lead = u64::from(start > 0);
            let at = start - lead;
            let want = (info.next_start() + FROM_.len() as u64).min(len) - at;
            let n = usize::try_from(want).unwrap_or(usize::MAX).min(buf.len());
            journal::read_exact_at(&self.file, &mut buf[..n], at)?;
            let (lf, head) = buf[..n].split_at(lead as usize);
            if lf.iter().any(|&c| c != b'\n') || !head.starts_with(FROM_) {
                return Err(gone());
            }
            let d =
                scan::digest_with(&self.file, info, head).map_err(io_err("read the mailbox"))?;
            if !message::hex_is(self.scan.digest_hex(i), &d) {
                return Err(gone());
            }
            let next = info.next_start();
            if next != end || next == start {
                let rel = (next - start) as usize;
                let mut five = [0u8; FROM_.len()];
                let have = match head.get(rel..rel + FROM_.len()) {
                    Some(b) => b,
                    None => {
                        journal::read_exact_at(&self.file, &mut five, next)?;
                        &five[..]
                    }
                };
                if have != FROM_ {
                    return Err(gone());
                }
            } else if len > end {
                // The extent's last message, and the file grew since the scan: what follows
                // must be appended mail, a `From ` line (after a blank line of the writer's
                // own when the extent did not end with one). A message whose spool headers
                // were written in place (Dovecot's `X-IMAPbase`, `X-UID`) also has its `From `
                // line and digest, but its end moved past `end`: cutting the scanned range
                // would leave its tail at the front of the next message.
                let mut six = [0u8; 6];
                let n = usize::try_from(len - end).unwrap_or(6).min(6);
                journal::read_exact_at(&self.file, &mut six[..n], end)?;
                let ends_line =
                    end == 0 || head.get((end - start - 1) as usize) == Some(&b'\n') || {
                        let mut b = [0u8; 1];
                        journal::read_exact_at(&self.file, &mut b, end - 1)?;
                        b[0] == b'\n'
                    };
                let got = &six[..n];
                let ok = if ends_line {
                    got.starts_with(FROM_) || got == b"\n" || got.starts_with(b"\nFrom ")
                } else {
                    got.starts_with(b"\nFrom ")
                };
                let short_from = n < FROM_.len() && FROM_.starts_with(got);
                if !ok && !short_from {
                    return Err(gone());
                }
            }
        }
        Ok(())
    }
}

/// Bytes read per deleted message when checking it before a commit: its `From ` line, header
/// block and the next `From ` line in one `pread` for all but the largest messages.
pub const COMMIT_CHECK_READ: usize = 16 * 1024;
const FROM_: &[u8] = b"From ";

/// Whole-message ranges `[From line, next From line)` of `deleted`, sorted, adjacent ones
/// merged (fewer, larger moves for the compaction).
pub fn delete_ranges(messages: &[MessageInfo], deleted: &[usize]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for &i in deleted {
        let r = messages[i].from_line_start()..messages[i].next_start();
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

impl Mailbox for MboxMailbox {
    fn count(&self) -> usize {
        self.scan.len()
    }
    fn warnings(&self) -> Vec<String> {
        self.scan.warnings.clone()
    }

    fn size(&self, i: usize) -> u64 {
        self.scan.messages.get(i).map_or(0, MessageInfo::size)
    }

    fn uidl(&self, i: usize) -> &str {
        self.scan.uidl(i)
    }

    fn retrieve(
        &mut self,
        i: usize,
        body_lines: Option<u64>,
        sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError> {
        let Some(info) = self.scan.messages.get(i) else {
            return Err(RetrieveError::BeforeStart(MailboxError::MessageGone));
        };
        message::retrieve(
            &self.file,
            info,
            self.scan.digest_hex(i),
            self.canon,
            body_lines,
            sink,
        )
    }

    /// Deletes the `deleted` messages in place under the content lock (through the journal,
    /// see `commit::Compaction`). With nothing deleted, nothing is locked or written: an mbox
    /// is never rewritten after a read-only session.
    ///
    /// `retrieved` is ignored: we do not write `Status: RO` headers. Doing so would mean
    /// rewriting (moving) the whole mbox after every download just to record "seen", with
    /// the content lock held and the crash risk of a rewrite, for a flag only local MUAs
    /// read; and it would change those messages' sizes under other readers. UIDLs never
    /// depend on Status, so leaving it alone costs clients nothing.
    fn commit(
        &mut self,
        deleted: &[bool],
        _retrieved: &[bool],
    ) -> Result<CommitSummary, MailboxError> {
        let del: Vec<usize> = deleted
            .iter()
            .take(self.scan.len())
            .enumerate()
            .filter_map(|(i, &d)| d.then_some(i))
            .collect();
        if del.is_empty() {
            return Ok(CommitSummary::default());
        }
        let summary = CommitSummary {
            deleted: del.len(),
            deleted_bytes: del.iter().map(|&i| self.scan.messages[i].size()).sum(),
        };
        let ranges = delete_ranges(&self.scan.messages, &del);
        match &self.locking {
            Some(l) => {
                let Recovered { lock, replayed, .. } =
                    replay_under_lock(&self.path, &self.file, &l.opts, &l.journal)?;
                if replayed {
                    return Err(MailboxError::Changed(
                        "an interrupted update was finished first; the session's view is stale"
                            .into(),
                    ));
                }
                self.verify_for_commit(&del)?;
                commit::Compaction {
                    file: &self.file,
                    mailbox: &self.path,
                    journal: &l.journal,
                    extent_end: self.scan.extent_end,
                    delete: &ranges,
                }
                .remove_prechecked()?;
                // Stamped under the lock (the bytes are ours until release), written after.
                let stamp = index::end_after_commit(&self.scan, &ranges)
                    .map(|end| index::Stamp::take(&self.file, end));
                lock.release()?;
                let written = match stamp {
                    None => index::remove(&l.index),
                    Some(Ok(stamp)) => {
                        index::write_after_commit(&l.index, &self.scan, &ranges, self.canon, &stamp)
                    }
                    Some(Err(e)) => Err(e),
                };
                if let Err(e) = written {
                    // The mail is committed; a stale index is only found stale next time.
                    // Dropping it makes that certain and costs one full scan.
                    let _ = index::remove(&l.index);
                    self.scan.warnings.push(format!(
                        "could not update the index {}: {e}",
                        l.index.display()
                    ));
                }
            }
            None => {
                self.verify_for_commit(&del)?;
                let journal = self.path.with_extension("popspool-journal");
                commit::Compaction {
                    file: &self.file,
                    mailbox: &self.path,
                    journal: &journal,
                    extent_end: self.scan.extent_end,
                    delete: &ranges,
                }
                .remove_prechecked()?;
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::mailbox::VecSink;

    fn sink() -> VecSink {
        VecSink::default()
    }

    fn mbox_with(data: &[u8]) -> (tempfile::TempDir, PathBuf, OpenOptions) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        std::fs::write(&path, data).unwrap();
        let opts = OpenOptions::with_state_dir(dir.path().join("state"));
        (dir, path, opts)
    }

    const DATA: &[u8] =
        b"junk\nFrom a\nStatus: RO\nSubject: one\n\nl1\n>From x\n\nFrom b\nSubject: two\n\nb";

    #[test]
    fn missing_or_empty_is_the_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions::with_state_dir(dir.path().join("state"));
        let missing = dir.path().join("none");
        assert_eq!(open(&missing, &opts).unwrap().count(), 0);
        assert!(!missing.exists());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(open(&empty, &opts).unwrap().count(), 0);
        assert!(
            !dir.path().join("state").exists(),
            "no state written for the fast path"
        );
    }

    #[test]
    fn not_a_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions::with_state_dir(dir.path().join("state"));
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            open(&sub, &opts),
            Err(MailboxError::NotAMailbox(_))
        ));
        let target = dir.path().join("t");
        std::fs::write(&target, b"From a\n\n").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            open(&link, &opts),
            Err(MailboxError::NotAMailbox(_))
        ));
        assert!(matches!(
            MboxMailbox::from_file_unlocked(&link, &opts),
            Err(MailboxError::NotAMailbox(_))
        ));
    }

    #[test]
    fn retrieve_and_top() {
        let (_d, path, opts) = mbox_with(DATA);
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        assert_eq!(m.count(), 2);
        assert_eq!(m.warnings().len(), 2, "{:?}", m.warnings());
        let mut s = sink();
        m.retrieve(0, None, &mut s).unwrap();
        assert_eq!(s.out, b"Subject: one\r\n\r\nl1\r\nFrom x\r\n");
        assert_eq!(m.size(0), s.out.len() as u64);
        let mut s = sink();
        m.retrieve(1, None, &mut s).unwrap();
        assert_eq!(s.out, b"Subject: two\r\n\r\nb\r\n");
        assert_eq!(m.size(1), s.out.len() as u64);
        let mut s = sink();
        m.retrieve(0, Some(1), &mut s).unwrap();
        assert_eq!(s.out, b"Subject: one\r\n\r\nl1\r\n");
        assert!(matches!(
            m.retrieve(2, None, &mut sink()),
            Err(RetrieveError::BeforeStart(_))
        ));
        assert_ne!(m.uidl(0), m.uidl(1));
    }

    #[test]
    fn max_messages_presents_the_oldest() {
        let (_d, path, mut opts) = mbox_with(DATA);
        opts.max_messages = Some(1);
        let m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        assert_eq!(m.count(), 1);
    }

    #[test]
    fn retrieve_refuses_a_changed_message() {
        let (_d, path, opts) = mbox_with(DATA);
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        // Same length, different header: the digest check catches it before +OK.
        let changed = String::from_utf8(DATA.to_vec())
            .unwrap()
            .replace("Subject: two", "Subject: 2wo");
        std::fs::write(&path, changed).unwrap();
        let mut s = sink();
        assert!(matches!(
            m.retrieve(1, None, &mut s),
            Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
        ));
        assert!(!s.began);
        // Shifted: the From line is gone from its offset.
        std::fs::write(&path, [&b"x"[..], DATA].concat()).unwrap();
        assert!(matches!(
            m.retrieve(0, None, &mut sink()),
            Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
        ));
        // Truncated.
        std::fs::write(&path, &DATA[..20]).unwrap();
        assert!(matches!(
            m.retrieve(1, None, &mut sink()),
            Err(RetrieveError::BeforeStart(MailboxError::Changed(_)))
        ));
    }

    #[test]
    fn commit_without_deletions_writes_nothing() {
        let (_d, path, opts) = mbox_with(DATA);
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            m.commit(&[false, false], &[true, true]).unwrap(),
            CommitSummary::default()
        );
        assert_eq!(m.commit(&[], &[]).unwrap(), CommitSummary::default());
        assert_eq!(std::fs::read(&path).unwrap(), DATA);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
    }

    #[test]
    fn commit_refuses_a_changed_mailbox() {
        let (_d, path, opts) = mbox_with(DATA);
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        std::fs::write(&path, &DATA[..20]).unwrap();
        assert!(matches!(
            m.commit(&[true, false], &[]),
            Err(MailboxError::Changed(_))
        ));
        // Replaced by another file at the same path.
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, DATA).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(matches!(
            m.commit(&[true], &[]),
            Err(MailboxError::Changed(_))
        ));
        // A rewritten message at the same offset.
        std::fs::write(&path, DATA).unwrap();
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        let changed = String::from_utf8(DATA.to_vec())
            .unwrap()
            .replace("Subject: one", "Subject: 1ne");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(changed.as_bytes())
            .unwrap();
        assert!(matches!(
            m.commit(&[true, false], &[]),
            Err(MailboxError::Changed(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), changed.as_bytes());
    }

    #[test]
    fn commit_refuses_a_last_message_grown_in_place() {
        let one = "From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody of one, long enough\n\n";
        let (_d, path, opts) = mbox_with(one.as_bytes());
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        // What Dovecot's LDA does: spool headers into the message, then its own mail after it.
        let grown = one.replace(
            "Subject: one\n",
            "Subject: one\nX-IMAPbase: 1796339407 0000000002\nX-UID: 1       \n",
        ) + "From d@test Thu Dec 03 23:10:07 2026\nSubject: d\n\nhi\n\n";
        std::fs::write(&path, &grown).unwrap();
        assert!(matches!(
            m.commit(&[true], &[]),
            Err(MailboxError::Changed(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), grown.as_bytes());
        // Mail merely appended after the extent: the commit goes ahead.
        std::fs::write(&path, one).unwrap();
        let mut m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        let appended = format!("{one}From d@test Thu Dec 03 23:10:07 2026\nSubject: d\n\nhi\n\n");
        std::fs::write(&path, &appended).unwrap();
        m.commit(&[true], &[]).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            &appended.as_bytes()[one.len()..]
        );
    }

    #[test]
    fn ranges_merge() {
        let data = b"From a\n\nFrom b\n\nFrom c\n\nFrom d\n";
        let (_d, path, opts) = mbox_with(data);
        let m = MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
        assert_eq!(delete_ranges(m.messages(), &[0, 1, 3]), vec![0..16, 24..31]);
        assert_eq!(m.extent_end(), 31);
    }
}
