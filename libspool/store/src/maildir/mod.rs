//! Maildir: new/ and cur/, UIDL = the unique part of the file name, exact canonical sizes.
//!
//! The rule: the Maildir and its folders are opened once without following a symlink, and
//! everything after goes through those descriptors by one name, never by path
//! ([`crate::maildir::dirent`]). The design decisions (fast path, one read of each folder,
//! order, UIDL, sizes, index, vanishing messages, commit): doc/DESIGN.md, "Maildir".

#![forbid(unsafe_code)]

pub mod dirent;
pub mod index;
pub mod listing;
pub mod names;

use crate::canon::{self, CanonOptions};
use crate::error::{io_err, IndexProblem, MailboxError};
use crate::lock::SessionLock;
use crate::mailbox::{
    state_paths, CommitSummary, EmptyMailbox, Mailbox, OpenOptions, RetrieveError, RetrieveSink,
    SinkWriter,
};
use crate::maildir::dirent::{Dir, Opened, DIRENT_BUF_LEN, PROBE_BUF_LEN};
use crate::maildir::index::{
    build_listing, BuildError, DirStamp, IndexHeader, IndexReader, ScanReport,
};
use crate::maildir::listing::{Listing, Sizes, F_FALLBACK};
use sha2::{Digest, Sha256};
use spool_wire::limits::MAX_MESSAGES;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use crate::maildir::names::{name_field, unique_part};

/// Bytes of SHA-256 shown (as hex) in a fallback UIDL: 160 bits make an accidental collision
/// impossible in practice, and `sha256:` plus 40 hex digits is well under 70 octets.
pub const FALLBACK_HASH_BYTES: usize = 20;

/// Marks a fallback UIDL; contains `:`, which no real unique part does.
const FALLBACK_PREFIX: &str = "sha256:";

/// `None` when the unique part is a valid UIDL as is; else the documented fallback.
/// Public (hidden) for the fuzz targets.
#[doc(hidden)]
pub fn fallback_uidl(unique: &[u8]) -> Option<Box<str>> {
    if names::plain_uidl(unique) {
        return None;
    }
    let digest = Sha256::digest(unique);
    let mut s = String::with_capacity(FALLBACK_PREFIX.len() + 2 * FALLBACK_HASH_BYTES);
    s.push_str(FALLBACK_PREFIX);
    for b in &digest[..FALLBACK_HASH_BYTES] {
        s.push_str(&format!("{b:02x}"));
    }
    Some(s.into_boxed_str())
}

/// The name a kept, retrieved message gets in `cur/`, or `None` when nothing should change
/// (already seen in `cur/`, or an info part other than `2,` whose meaning we do not know).
/// Public (hidden) for the fuzz targets.
#[doc(hidden)]
pub fn seen_name(name: &[u8], in_cur: bool) -> Option<Vec<u8>> {
    let Some(colon) = memchr::memchr(b':', name) else {
        let mut n = name.to_vec();
        n.extend_from_slice(b":2,S");
        return Some(n);
    };
    let flags = name[colon + 1..].strip_prefix(b"2,")?;
    if flags.contains(&b'S') {
        return if in_cur { None } else { Some(name.to_vec()) };
    }
    // Flags must stay in ASCII order (the Maildir spec), so S goes before the first greater one.
    let at = colon + 3 + flags.iter().position(|&f| f > b'S').unwrap_or(flags.len());
    let mut n = Vec::with_capacity(name.len() + 1);
    n.extend_from_slice(&name[..at]);
    n.push(b'S');
    n.extend_from_slice(&name[at..]);
    Some(n)
}

/// `new/` and `cur/` of a Maildir, opened once without following a symlink and kept open for
/// the session: every later file operation resolves one name relative to them (`openat`,
/// `fstatat`, `unlinkat`, `renameat`), never a path.
#[derive(Debug)]
struct Folders {
    /// `new/`, `cur/`; `None` if missing.
    dirs: [Option<Dir>; 2],
}

/// The names of the folders a session reads, in `Folders::dirs` order.
const FOLDER_NAMES: [&str; 2] = ["new", "cur"];

impl Folders {
    /// Opens `new/` and `cur/` of the Maildir at `path`, neither through a symlink; `None`
    /// when the Maildir itself is missing.
    fn open(path: &Path) -> Result<Option<Folders>, MailboxError> {
        let root = match Dir::open(path).map_err(io_err("open the Maildir"))? {
            Opened::Dir(d) => d,
            Opened::Missing => return Ok(None),
            Opened::Symlink => return Err(MailboxError::SymlinkedFolder(path.to_path_buf())),
            Opened::NotADir => return Err(MailboxError::NotAMailbox(path.to_path_buf())),
        };
        let mut dirs = [None, None];
        for (slot, name) in dirs.iter_mut().zip(FOLDER_NAMES) {
            *slot = match root
                .open_dir(name.as_bytes())
                .map_err(io_err("open the Maildir"))?
            {
                Opened::Dir(d) => Some(d),
                Opened::Missing => None,
                Opened::Symlink => return Err(MailboxError::SymlinkedFolder(path.join(name))),
                Opened::NotADir => return Err(MailboxError::NotAMailbox(path.join(name))),
            };
        }
        Ok(Some(Folders { dirs }))
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl Folders {
    fn dir(&self, in_cur: bool) -> io::Result<&Dir> {
        self.dirs[usize::from(in_cur)]
            .as_ref()
            .ok_or_else(not_found)
    }

    /// Current file names in `cur/`, keyed by unique part, of the messages in `wanted`: one
    /// read of `cur/` however many are looked for.
    fn find_in_cur(&self, wanted: &[&[u8]]) -> Result<NamesByUnique, MailboxError> {
        // A set: after a mass move by another client, `wanted` can be as large as cur/.
        let wanted: HashSet<&[u8]> = wanted.iter().copied().collect();
        let mut found = HashMap::new();
        // The session's own cur/, read again from the start: whatever is found there is
        // then opened, renamed or unlinked through the same descriptor.
        let Some(cur) = &self.dirs[1] else {
            return Ok(found);
        };
        cur.for_each_file(DIRENT_BUF_LEN, |name| {
            let unique = unique_part(name);
            if wanted.contains(&unique) {
                found.insert(Box::from(unique), Box::from(name));
            }
            true
        })
        .map_err(io_err("read the Maildir"))?;
        Ok(found)
    }
}

/// Current file names in `cur/`, keyed by unique part.
type NamesByUnique = HashMap<Box<[u8]>, Box<[u8]>>;

/// The exact canonical size of a message, with what validates it next time, or `None` if it
/// vanished. A plausible `,W=` saves reading the whole file but still costs an open, so its
/// result is kept in the index like a measured size.
fn measure(dir: &Dir, name: &[u8]) -> Result<Option<Sizes>, MailboxError> {
    let mut file = match dir.open_file(name) {
        Ok(f) => f,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(MailboxError::Io("open a message", err)),
    };
    let meta = file.metadata().map_err(io_err("examine a message"))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let len = meta.len();
    let unique = unique_part(name);
    let stored_ok = !matches!(name_field(unique, b'S'), Some(s) if s != len);
    if let Some(w) = name_field(unique, b'W') {
        if stored_ok && len > 0 && w >= len && w <= len.saturating_mul(2) {
            let mut last = [0u8; 1];
            let n = file
                .read_at(&mut last, len - 1)
                .map_err(io_err("read a message"))?;
            if n == 1 && last[0] == b'\n' {
                return Ok(Some(listing::sizes_of(&meta, w)));
            }
        }
    }
    let size =
        canon::measure(&mut file, len, CanonOptions::PLAIN).map_err(io_err("read a message"))?;
    Ok(Some(listing::sizes_of(&meta, size)))
}

/// Does `lstat` still show the file as it was measured?
fn stat_matches(dir: &Dir, name: &[u8], key: &listing::StatKey) -> bool {
    match dir.lstat(name) {
        Ok(st) => {
            st.st_mode & libc::S_IFMT == libc::S_IFREG
                && u64::try_from(st.st_size).ok() == Some(key.lf_len)
                && (st.st_mtime, u32::try_from(st.st_mtime_nsec).unwrap_or(0)) == key.mtime
        }
        Err(_) => false,
    }
}

/// Makes sure the first `view` messages are sized: believed from the index when still valid,
/// else measured. A message that vanished since the listing is looked for once in `cur/`
/// (another client may have moved it) and dropped if it is gone. Returns whether anything
/// changed that the index should record, and the new `view`.
fn size_view(
    f: &Folders,
    listing: &mut Listing,
    view: usize,
    moved: &mut HashMap<u32, Box<[u8]>>,
    warnings: &mut Vec<String>,
) -> Result<(bool, usize), MailboxError> {
    let mut changed = false;
    let mut vanished = Vec::new();
    let mut gone = Vec::new();
    let mut todo: Vec<u32> = Vec::new();
    for i in 0..view {
        let r = listing.recs[i];
        if r.sized() && !r.by_stat() {
            continue;
        }
        if r.sized() {
            let still = match (listing.stat_key(i), f.dir(r.in_cur())) {
                (Some(key), Ok(dir)) => stat_matches(dir, listing.name(&r), &key),
                _ => false,
            };
            if still {
                continue;
            }
            listing.unsize(i);
            changed = true;
        }
        // `view` is at most MAX_MESSAGES, a u32.
        todo.push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    for batch in todo.chunks(MEASURE_BATCH) {
        for (i, sizes) in measure_batch(f, listing, batch)? {
            let i = i as usize;
            match sizes {
                Some(s) => {
                    changed = true;
                    if !listing.set_sizes(i, s) {
                        warnings.push(too_large(listing.name(&listing.recs[i])));
                        gone.push(i);
                    }
                }
                None => vanished.push(i),
            }
        }
    }
    if !vanished.is_empty() {
        changed = true;
        let wanted: Vec<&[u8]> = vanished
            .iter()
            .map(|&i| listing.unique(&listing.recs[i]))
            .collect();
        let found = f.find_in_cur(&wanted)?;
        for &i in &vanished {
            let r = listing.recs[i];
            let sized = match (found.get(listing.unique(&r)), f.dir(true)) {
                (Some(name), Ok(cur)) => match measure(cur, name)? {
                    Some(s) => {
                        moved.insert(r.key(), name.clone());
                        if listing.set_sizes(i, s) {
                            true
                        } else {
                            warnings.push(too_large(name));
                            false
                        }
                    }
                    None => false,
                },
                _ => false,
            };
            if !sized {
                gone.push(i);
            }
        }
    }
    if gone.is_empty() {
        return Ok((changed, view));
    }
    gone.sort_unstable();
    let mut pos = 0;
    let mut at = 0;
    listing.recs.retain(|_| {
        let drop = gone.get(pos) == Some(&at);
        if drop {
            pos += 1;
        }
        at += 1;
        !drop
    });
    Ok((true, view - gone.len()))
}

/// Messages measured per batch: bounds the results held at once (about 100 KiB).
pub const MEASURE_BATCH: usize = 4096;
/// Threads that measure a cold Maildir: reading every message is CPU work (counting line
/// ends) plus open/fstat/close, and it parallelises; more than a few only contend.
pub const MAX_MEASURE_THREADS: usize = 4;
/// Below this many messages to measure, threads cost more than they save.
pub const PARALLEL_MEASURE_MIN: usize = 256;

/// Measures the messages `batch` (listing indices) names, on up to [`MAX_MEASURE_THREADS`]
/// threads; results in `batch` order. The first error wins, as in a sequential loop.
fn measure_batch(
    f: &Folders,
    listing: &Listing,
    batch: &[u32],
) -> Result<Vec<(u32, Option<Sizes>)>, MailboxError> {
    let one = |i: u32| -> Result<(u32, Option<Sizes>), MailboxError> {
        let r = &listing.recs[i as usize];
        let sizes = match f.dir(r.in_cur()) {
            Ok(dir) => measure(dir, listing.name(r))?,
            Err(_) => None,
        };
        Ok((i, sizes))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_MEASURE_THREADS);
    if threads < 2 || batch.len() < PARALLEL_MEASURE_MIN {
        return batch.iter().map(|&i| one(i)).collect();
    }
    let per = batch.len().div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = batch
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|&i| one(i)).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for w in workers {
            // A panicking worker is a bug, never input-driven; fail the session cleanly.
            let part = w.join().map_err(|_| {
                MailboxError::Io("measure messages", io::Error::other("worker failed"))
            })?;
            for r in part {
                out.push(r?);
            }
        }
        Ok(out)
    })
}

fn too_large(name: &[u8]) -> String {
    format!(
        "Maildir message {} is larger than {} octets: not listed",
        String::from_utf8_lossy(name),
        listing::MAX_RECORD_SIZE
    )
}

/// A Maildir opened for one session, holding its session lock until dropped.
#[derive(Debug)]
struct Maildir {
    folders: Folders,
    /// Every message of both folders in listing order; the session presents `recs[..view]`.
    listing: Listing,
    view: usize,
    /// Fallback UIDLs by `Rec::key`, sorted (rare: only odd or over-long unique parts).
    fallbacks: Vec<(u32, Box<str>)>,
    /// Messages found in `cur/` under another name after the listing, by `Rec::key`.
    moved: HashMap<u32, Box<[u8]>>,
    mark_seen: bool,
    warnings: Vec<String>,
    _lock: SessionLock,
}

fn has_message(dir: Option<&Dir>) -> Result<bool, MailboxError> {
    let Some(dir) = dir else {
        return Ok(false);
    };
    let finished = dir
        .for_each_file(PROBE_BUF_LEN, |_| false)
        .map_err(io_err("read the Maildir"))?;
    Ok(!finished)
}

/// Opens a Maildir for a session: fast path when missing or empty (no lock, nothing created).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Mailbox>, MailboxError> {
    open_at(path, opts, SystemTime::now()).map(|(mb, _)| mb)
}

/// [`open`] with the scan's start time given (before any folder is examined), so that tests
/// can make a listing old enough to be believed; also says which folders were not read.
fn open_at(
    path: &Path,
    opts: &OpenOptions,
    now: SystemTime,
) -> Result<(Box<dyn Mailbox>, ScanReport), MailboxError> {
    let Some(folders) = Folders::open(path)? else {
        return Ok((Box::new(EmptyMailbox), ScanReport::default()));
    };
    if !has_message(folders.dirs[0].as_ref())? && !has_message(folders.dirs[1].as_ref())? {
        return Ok((Box::new(EmptyMailbox), ScanReport::default()));
    }
    let paths = state_paths(&opts.state_dir, path);
    let lock = SessionLock::acquire(&paths.session_lock, opts.session_lock_wait)?;

    let scan_start = index::timestamp(now);
    // Stamped before they are read: a change after this is a change of stamp.
    let mut stamps = [None, None];
    for (stamp, dir) in stamps.iter_mut().zip(&folders.dirs) {
        if let Some(dir) = dir {
            let st = dir.stat().map_err(io_err("examine the Maildir"))?;
            *stamp = Some(DirStamp::from_stat(&st));
        }
    }
    let mut warnings = Vec::new();
    let index_warning =
        |e: &IndexProblem| format!("Maildir index {}: {e}; rebuilt", paths.index.display());
    let mut index = match IndexReader::open(&paths.index) {
        Ok(ix) => ix,
        Err(IndexProblem::OldFormat) => None,
        Err(e) => {
            warnings.push(index_warning(&e));
            None
        }
    };
    let mut had_index = index.is_some();
    let read_folder = |d: usize, listing: &mut Listing| -> io::Result<()> {
        let Some(dir) = &folders.dirs[d] else {
            return Ok(());
        };
        let mut full = false;
        dir.for_each_file(DIRENT_BUF_LEN, |name| {
            full = listing.push(name, d == 1).is_err();
            !full
        })?;
        if full {
            return Err(io::Error::other("too many messages"));
        }
        Ok(())
    };
    let (mut listing, report) = loop {
        match build_listing(index.as_mut(), stamps, read_folder) {
            Ok(built) => break built,
            Err(BuildError::Index(e)) => {
                warnings.push(index_warning(&e));
                index = None;
                had_index = false;
            }
            Err(BuildError::Folder(e)) => return Err(MailboxError::Io("read the Maildir", e)),
            Err(BuildError::Full) => {
                return Err(MailboxError::Io(
                    "read the Maildir",
                    io::Error::other("too many messages"),
                ))
            }
        }
    };
    drop(index);

    let view = listing
        .recs
        .len()
        .min(opts.max_messages.unwrap_or(usize::MAX))
        .min(MAX_MESSAGES);
    let mut moved = HashMap::new();
    let (changed, view) = size_view(&folders, &mut listing, view, &mut moved, &mut warnings)?;
    // Rewritten when it holds something new, or when a folder read again has settled since
    // it was recorded (the next session then need not read it); a folder still racy would
    // be read again next time whatever the index says.
    let settles =
        (0..2).any(|d| !report.from_index[d] && stamps[d].is_some_and(|s| s.settled(scan_start)));
    if changed || !had_index || report.unchanged != [true, true] || settles {
        let header = IndexHeader { scan_start, stamps };
        // Still under the session lock; a failure only costs the next session a full scan.
        if let Err(e) = index::write_index(&paths.index, &header, &mut listing) {
            warnings.push(format!(
                "could not write the Maildir index {}: {e}",
                paths.index.display()
            ));
        }
    }
    let mut fallbacks = Vec::new();
    for i in 0..view {
        let r = listing.recs[i];
        if r.flags & F_FALLBACK != 0 {
            if let Some(u) = fallback_uidl(listing.unique(&r)) {
                fallbacks.push((r.key(), u));
            }
        }
    }
    fallbacks.sort_unstable_by_key(|f| f.0);
    Ok((
        Box::new(Maildir {
            folders,
            listing,
            view,
            fallbacks,
            moved,
            mark_seen: opts.maildir_mark_seen,
            warnings,
            _lock: lock,
        }),
        report,
    ))
}

impl Maildir {
    /// Message `i`'s current name and whether it is in `cur/`.
    fn current(&self, i: usize) -> (&[u8], bool) {
        let r = &self.listing.recs[i];
        match self.moved.get(&r.key()) {
            Some(name) => (name, true),
            None => (self.listing.name(r), r.in_cur()),
        }
    }

    /// Follows message `i` into `cur/` after it vanished from where it was listed.
    fn relocate(&mut self, i: usize) -> Result<bool, MailboxError> {
        let r = self.listing.recs[i];
        let found = self.folders.find_in_cur(&[self.listing.unique(&r)])?;
        match found.into_values().next() {
            Some(name) => {
                self.moved.insert(r.key(), name);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn open_current(&self, i: usize) -> io::Result<File> {
        let (name, in_cur) = self.current(i);
        self.folders.dir(in_cur)?.open_file(name)
    }

    fn open_for_retrieve(&mut self, i: usize) -> Result<File, MailboxError> {
        match self.open_current(i) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => return other.map_err(io_err("open a message")),
        }
        if !self.relocate(i)? {
            return Err(MailboxError::MessageGone);
        }
        match self.open_current(i) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(MailboxError::MessageGone),
            other => other.map_err(io_err("open a message")),
        }
    }

    /// Best effort: see the module documentation.
    fn mark_seen(&self, i: usize) -> io::Result<()> {
        let (name, in_cur) = self.current(i);
        let Some(new_name) = seen_name(name, in_cur) else {
            return Ok(());
        };
        let from = self.folders.dir(in_cur)?;
        from.rename_to(name, self.folders.dir(true)?, &new_name)
    }
}

impl Mailbox for Maildir {
    fn count(&self) -> usize {
        self.view
    }

    fn size(&self, i: usize) -> u64 {
        if i < self.view {
            self.listing.recs[i].size()
        } else {
            0
        }
    }

    fn uidl(&self, i: usize) -> &str {
        if i >= self.view {
            return "";
        }
        let r = &self.listing.recs[i];
        if r.flags & F_FALLBACK != 0 {
            return match self.fallbacks.binary_search_by_key(&r.key(), |f| f.0) {
                Ok(j) => &self.fallbacks[j].1,
                Err(_) => "",
            };
        }
        // Checked at open: the unique part is 0x21-0x7E only, hence UTF-8.
        std::str::from_utf8(self.listing.unique(r)).unwrap_or("")
    }

    fn retrieve(
        &mut self,
        i: usize,
        body_lines: Option<u64>,
        sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError> {
        if i >= self.view {
            return Err(RetrieveError::BeforeStart(MailboxError::MessageGone));
        }
        let mut file = self
            .open_for_retrieve(i)
            .map_err(RetrieveError::BeforeStart)?;
        let meta = file
            .metadata()
            .map_err(|e| RetrieveError::BeforeStart(MailboxError::Io("examine a message", e)))?;
        if !meta.is_file() {
            return Err(RetrieveError::BeforeStart(MailboxError::MessageGone));
        }
        if let Some(w) = sink.wire() {
            return match canon::send_wire(&mut file, meta.len(), CanonOptions::PLAIN, body_lines, w)
            {
                Ok(_) => Ok(()),
                Err(canon::WireError::BeforeStart(e)) => Err(RetrieveError::BeforeStart(
                    MailboxError::Io("read a message", e),
                )),
                Err(canon::WireError::During(e)) => {
                    Err(RetrieveError::During(MailboxError::Io("send a message", e)))
                }
            };
        }
        // Once begin() is called the client may have seen +OK: every later failure is During.
        sink.begin()
            .map_err(|e| RetrieveError::During(MailboxError::Io("send a message", e)))?;
        canon::copy(
            &mut file,
            meta.len(),
            CanonOptions::PLAIN,
            body_lines,
            &mut SinkWriter(sink),
        )
        .map_err(|e| RetrieveError::During(MailboxError::Io("send a message", e)))?;
        Ok(())
    }

    fn commit(
        &mut self,
        deleted: &[bool],
        retrieved: &[bool],
    ) -> Result<CommitSummary, MailboxError> {
        let is_deleted = |i: usize| deleted.get(i).copied().unwrap_or(false);
        let mut summary = CommitSummary::default();
        let mut first_err: Option<MailboxError> = None;
        let mut missing = Vec::new();
        for i in (0..self.view).filter(|&i| is_deleted(i)) {
            let (name, in_cur) = self.current(i);
            match self.folders.dir(in_cur).and_then(|d| d.unlink(name)) {
                Ok(()) => {
                    summary.deleted += 1;
                    summary.deleted_bytes += self.listing.recs[i].size();
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => missing.push(i),
                Err(err) => {
                    first_err.get_or_insert(MailboxError::Io("delete a message", err));
                }
            }
        }
        if !missing.is_empty() {
            // Moved to cur/ or re-flagged by another client, or already deleted by one.
            let wanted: Vec<&[u8]> = missing
                .iter()
                .map(|&i| self.listing.unique(&self.listing.recs[i]))
                .collect();
            match self.folders.find_in_cur(&wanted) {
                Ok(found) => {
                    for &i in &missing {
                        let r = &self.listing.recs[i];
                        let Some(name) = found.get(self.listing.unique(r)) else {
                            continue;
                        };
                        match self.folders.dir(true).and_then(|d| d.unlink(name)) {
                            Ok(()) => {
                                summary.deleted += 1;
                                summary.deleted_bytes += r.size();
                            }
                            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                            Err(err) => {
                                first_err.get_or_insert(MailboxError::Io("delete a message", err));
                            }
                        }
                    }
                }
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_err {
            return Err(err);
        }
        if self.mark_seen {
            for i in 0..self.view {
                if retrieved.get(i).copied().unwrap_or(false) && !is_deleted(i) {
                    // Advisory only: the mail is intact either way, and failing QUIT here would
                    // tell the client its deletions failed when they did not.
                    let _ = self.mark_seen(i);
                }
            }
        }
        Ok(summary)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maildir::names::leading_timestamp;
    use spool_wire::limits::MAX_UIDL_LEN;
    use std::collections::BTreeSet;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::mailbox::VecSink;

    struct Fixture {
        _tmp: tempfile::TempDir,
        md: PathBuf,
        state: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().expect("tempdir");
            let md = tmp.path().join("Maildir");
            for sub in ["new", "cur", "tmp"] {
                fs::create_dir_all(md.join(sub)).expect("mkdir");
            }
            let state = tmp.path().join("state");
            Fixture {
                _tmp: tmp,
                md,
                state,
            }
        }
        fn put(&self, rel: &str, content: &[u8]) {
            fs::write(self.md.join(rel), content).expect("write");
        }
        fn opts(&self) -> OpenOptions {
            OpenOptions::with_state_dir(self.state.clone())
        }
        fn open(&self) -> Box<dyn Mailbox> {
            open(&self.md, &self.opts()).expect("open")
        }
        /// A session late enough that every folder stamp of earlier ones is settled.
        fn open_later(&self) -> (Box<dyn Mailbox>, ScanReport) {
            let later = SystemTime::now() + Duration::from_secs(3600);
            open_at(&self.md, &self.opts(), later).expect("open")
        }
        /// Gives a folder an mtime far in the past, so that any change to it is a new mtime
        /// whatever the timestamp granularity.
        fn age(&self, sub: &str) {
            let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            File::open(self.md.join(sub))
                .and_then(|d| d.set_modified(old))
                .expect("utime");
        }
        fn ls(&self, sub: &str) -> BTreeSet<String> {
            fs::read_dir(self.md.join(sub))
                .expect("readdir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        }
    }

    fn uidls(mb: &dyn Mailbox) -> Vec<String> {
        (0..mb.count()).map(|i| mb.uidl(i).to_owned()).collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn name_helpers() {
        assert_eq!(unique_part(b"1.M2.h:2,S"), b"1.M2.h");
        assert_eq!(unique_part(b"1.M2.h"), b"1.M2.h");
        assert_eq!(unique_part(b":2,S"), b"");
        for (name, ts) in [
            ("1700000000.M1P2.h", 1_700_000_000),
            ("0004294967294.M1", u32::MAX - 1),
            ("4294967295.M1", u32::MAX - 1),
            ("x.1", u32::MAX),
            ("", u32::MAX),
        ] {
            assert_eq!(leading_timestamp(name.as_bytes()), ts, "{name}");
        }
        // Saturated: after 2106 or not a time, but still before names without one.
        assert_eq!(leading_timestamp(&[b'9'; 40]), u32::MAX - 1);
        let fields: &[(&str, u8, Option<u64>)] = &[
            ("1.M2.h,S=1234,W=1260", b'S', Some(1234)),
            ("1.M2.h,S=1234,W=1260", b'W', Some(1260)),
            ("1.M2.h,S=12a", b'S', None),
            ("1.M2.h,S=", b'S', None),
            ("S=5.M2.h", b'S', None),
            ("1.M2.h,S=99999999999999999999999", b'S', None),
            ("1.M2.h,W=7,S=3", b'S', Some(3)),
        ];
        for &(u, k, want) in fields {
            assert_eq!(name_field(u.as_bytes(), k), want, "{u} {}", k as char);
        }
    }

    #[test]
    fn seen_names() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("1.M2.h", false, Some("1.M2.h:2,S")),
            ("1.M2.h:2,", false, Some("1.M2.h:2,S")),
            ("1.M2.h:2,S", false, Some("1.M2.h:2,S")),
            ("1.M2.h:2,S", true, None),
            ("1.M2.h:2,RS", true, None),
            ("1.M2.h:2,FR", true, Some("1.M2.h:2,FRS")),
            ("1.M2.h:2,T", true, Some("1.M2.h:2,ST")),
            ("1.M2.h:2,DFRTa", true, Some("1.M2.h:2,DFRSTa")),
            ("1.M2.h:1,x", true, None),
            ("1.M2.h", true, Some("1.M2.h:2,S")),
        ];
        for &(name, in_cur, want) in cases {
            let got = seen_name(name.as_bytes(), in_cur);
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{name} {in_cur}");
        }
    }

    #[test]
    fn missing_or_empty_maildir_is_fast_and_creates_nothing() {
        let f = Fixture::new();
        let missing = f.md.with_file_name("nope");
        assert_eq!(open(&missing, &f.opts()).expect("open").count(), 0);
        assert!(!missing.exists());
        assert_eq!(f.open().count(), 0);
        // Only things that are not messages: still the fast path.
        f.put("new/.hidden", b"x\n");
        f.put("tmp/1.M1.h", b"being delivered\n");
        fs::create_dir(f.md.join("cur/subdir")).expect("mkdir");
        symlink("/etc/passwd", f.md.join("new/1.M9.h")).expect("symlink");
        let mut mb = f.open();
        assert_eq!(mb.count(), 0);
        assert_eq!(
            mb.commit(&[], &[]).expect("commit"),
            CommitSummary::default()
        );
        assert!(
            !f.state.exists(),
            "the fast path must not create the state directory"
        );
        assert_eq!(f.ls("new"), set(&[".hidden", "1.M9.h"]));
    }

    #[test]
    fn a_file_is_not_a_maildir() {
        let f = Fixture::new();
        let file = f.md.join("new/afile");
        fs::write(&file, b"x").expect("write");
        assert!(matches!(
            open(&file, &f.opts()),
            Err(MailboxError::NotAMailbox(_))
        ));
    }

    #[test]
    fn a_symlinked_maildir_or_folder_is_refused_not_followed() {
        for which in ["new", "cur", "", "/"] {
            let f = Fixture::new();
            f.put("new/1.M1.h", b"a\n");
            let outside = f.md.with_file_name("outside");
            fs::create_dir_all(outside.join("new")).expect("mkdir");
            fs::write(outside.join("2.M1.h"), b"secret\n").expect("write");
            fs::write(outside.join("new/3.M1.h"), b"secret\n").expect("write");
            let planted = if which.len() > 1 {
                f.md.join(which)
            } else {
                f.md.clone()
            };
            fs::rename(&planted, planted.with_extension("real")).expect("mv");
            symlink(&outside, &planted).expect("symlink");
            // qmail-pop3d's `./Maildir/`: the trailing slash must not make it followed.
            let mailbox = if which == "/" {
                PathBuf::from(format!("{}/", f.md.display()))
            } else {
                f.md.clone()
            };
            match open(&mailbox, &f.opts()) {
                Err(MailboxError::SymlinkedFolder(p)) => assert_eq!(p, planted, "{which:?}"),
                Err(other) => panic!("{which:?}: {other:?}"),
                Ok(mb) => panic!("{which:?}: opened, {} messages", mb.count()),
            }
            assert!(!f.state.exists(), "{which:?}: nothing created");
        }
        let (code, text) = MailboxError::SymlinkedFolder(PathBuf::from("/m/new")).response();
        assert_eq!(code, Some(spool_wire::pop3::response::RespCode::SysPerm));
        assert_eq!(text, "Maildir folder is a symbolic link");
        // A file in a folder's place is not a Maildir.
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        fs::remove_dir(f.md.join("cur")).expect("rmdir");
        f.put("cur", b"x");
        assert!(matches!(
            open(&f.md, &f.opts()),
            Err(MailboxError::NotAMailbox(_))
        ));
    }

    #[test]
    fn a_folder_swapped_for_a_symlink_during_the_session_redirects_nothing() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"mine\n");
        f.put("new/2.M1.h", b"mine too\n");
        let mut mb = f.open();
        let outside = f.md.with_file_name("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("1.M1.h"), b"secret\n").expect("write");
        fs::write(outside.join("2.M1.h"), b"secret\n").expect("write");
        for sub in ["new", "cur"] {
            fs::rename(f.md.join(sub), f.md.join(format!("{sub}.real"))).expect("mv");
            symlink(&outside, f.md.join(sub)).expect("symlink");
        }
        let mut sink = VecSink::default();
        mb.retrieve(0, None, &mut sink).expect("retr");
        assert_eq!(sink.out, b"mine\r\n");
        mb.commit(&[false, true], &[true, false]).expect("commit");
        let ls = |d: &Path| -> BTreeSet<String> {
            fs::read_dir(d)
                .expect("readdir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(ls(&outside), set(&["1.M1.h", "2.M1.h"]));
        assert_eq!(ls(&f.md.join("new.real")), set(&[]));
        assert_eq!(ls(&f.md.join("cur.real")), set(&["1.M1.h:2,S"]));
    }

    #[test]
    fn lists_new_and_cur_oldest_first_and_takes_the_session_lock() {
        let f = Fixture::new();
        f.put("new/1700000002.M1P1.h", b"c\n");
        f.put("cur/1700000001.M5P1.h:2,RS", b"b\n");
        f.put("new/1700000001.M0P1.h", b"a\n");
        f.put("cur/junk", b"z\n");
        f.put("new/999.M1.h", b"old\n");
        f.put("new/.dotfile", b"no\n");
        f.put("tmp/1.M1.h", b"no\n");
        fs::create_dir(f.md.join("new/1600000000.dir")).expect("mkdir");
        let mb = f.open();
        assert_eq!(
            uidls(&*mb),
            [
                "999.M1.h",
                "1700000001.M0P1.h",
                "1700000001.M5P1.h",
                "1700000002.M1P1.h",
                "junk"
            ]
        );
        assert!(state_paths(&f.state, &f.md).session_lock.exists());
    }

    #[test]
    fn same_unique_part_in_new_and_cur_is_listed_once() {
        let f = Fixture::new();
        f.put("new/1700000001.M1.h", b"a\n");
        f.put("cur/1700000001.M1.h:2,S", b"a\n");
        let mut mb = f.open();
        assert_eq!(uidls(&*mb), ["1700000001.M1.h"]);
        mb.commit(&[true], &[true]).expect("commit");
        assert_eq!(f.ls("cur"), set(&[]));
        assert_eq!(f.ls("new"), set(&["1700000001.M1.h"]));
    }

    #[test]
    fn sizes_are_exact() {
        let f = Fixture::new();
        // Plain: measured. "a\nb\n" is 6 octets with CRLF endings.
        f.put("new/1.M1.h", b"a\nb\n");
        // Stored with CRLF already: unchanged.
        f.put("new/2.M1.h", b"a\r\nb\r\n");
        // No final newline: RETR adds CRLF.
        f.put("new/3.M1.h", b"a\nb");
        // ,S= is the stored size, never the POP3 size.
        f.put("new/4.M1.h,S=4", b"a\nb\n");
        // A plausible ,W= is trusted without reading the file (deliberately off by one here).
        f.put("new/5.M1.h,S=4,W=7:2,", b"a\nb\n");
        // Implausible ,W= (above twice the length): measured.
        f.put("new/6.M1.h,W=100", b"a\nb\n");
        // ,S= disagrees with the file: ,W= not trusted.
        f.put("new/7.M1.h,S=5,W=7", b"a\nb\n");
        // ,W= without a final LF: Dovecot omits the CRLF RETR adds, so measured.
        f.put("new/8.M1.h,W=4", b"a\nb");
        // Correct ,W= from Dovecot.
        f.put("new/9.M1.h,S=4,W=6", b"a\nb\n");
        // Empty message stays empty.
        f.put("new/10.M1.h,W=0", b"");
        let mb = f.open();
        let sizes: Vec<u64> = (0..mb.count()).map(|i| mb.size(i)).collect();
        assert_eq!(sizes, [6, 6, 6, 6, 7, 6, 6, 6, 6, 0]);
    }

    #[test]
    fn retrieve_and_top_send_the_canonical_form() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"Subject: x\n\nl1\nl2\n");
        let mut mb = f.open();
        let mut sink = VecSink::default();
        mb.retrieve(0, None, &mut sink).expect("retr");
        assert_eq!(sink.out, b"Subject: x\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(sink.out.len() as u64, mb.size(0));
        let mut sink = VecSink::default();
        mb.retrieve(0, Some(1), &mut sink).expect("top");
        assert_eq!(sink.out, b"Subject: x\r\n\r\nl1\r\n");
        let mut sink = VecSink::default();
        assert!(matches!(
            mb.retrieve(1, None, &mut sink),
            Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
        ));
    }

    #[test]
    fn message_deleted_under_us_is_a_clean_error() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.put("new/2.M1.h", b"b\n");
        let mut mb = f.open();
        fs::remove_file(f.md.join("new/1.M1.h")).expect("rm");
        let mut sink = VecSink::default();
        assert!(matches!(
            mb.retrieve(0, None, &mut sink),
            Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
        ));
        assert!(!sink.began, "no +OK for a vanished message");
        // Deleting it at QUIT is fine: someone else already did.
        let summary = mb.commit(&[true, false], &[false, false]).expect("commit");
        assert_eq!(summary.deleted, 0);
        assert_eq!(f.ls("new"), set(&["2.M1.h"]));
    }

    #[test]
    fn message_moved_to_cur_under_us_is_followed() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.put("new/2.M1.h", b"b\n");
        f.put("cur/3.M1.h:2,", b"c\n");
        let mut mb = f.open();
        // Another client marks 1 seen and flags 3; both keep their unique part.
        fs::rename(f.md.join("new/1.M1.h"), f.md.join("cur/1.M1.h:2,S")).expect("mv");
        fs::rename(f.md.join("new/2.M1.h"), f.md.join("cur/2.M1.h:2,F")).expect("mv");
        fs::rename(f.md.join("cur/3.M1.h:2,"), f.md.join("cur/3.M1.h:2,R")).expect("mv");
        let mut sink = VecSink::default();
        mb.retrieve(0, None, &mut sink)
            .expect("retr follows the move");
        assert_eq!(sink.out, b"a\r\n");
        // 2 is deleted without having been retrieved here: found in cur/ at commit.
        let summary = mb
            .commit(&[true, true, false], &[true, false, false])
            .expect("commit");
        assert_eq!(
            summary,
            CommitSummary {
                deleted: 2,
                deleted_bytes: 6
            }
        );
        assert_eq!(f.ls("cur"), set(&["3.M1.h:2,R"]));
    }

    #[test]
    fn vanished_between_listing_and_sizing_is_followed_or_dropped() {
        // The listing is stale: 2 moved to cur/ with flags, 3 was deleted.
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.put("cur/2.M1.h:2,S", b"bb\n");
        let mut listing = Listing::default();
        for name in ["1.M1.h", "2.M1.h", "3.M1.h"] {
            listing.push(name.as_bytes(), false).expect("push");
        }
        let folders = Folders::open(&f.md).expect("open").expect("exists");
        let mut moved = HashMap::new();
        let mut warnings = Vec::new();
        let (changed, view) =
            size_view(&folders, &mut listing, 3, &mut moved, &mut warnings).expect("size");
        assert!(changed && warnings.is_empty());
        assert_eq!(view, 2);
        let got: Vec<(&[u8], u64)> = listing
            .recs
            .iter()
            .map(|r| (listing.name(r), r.size()))
            .collect();
        assert_eq!(got, [(&b"1.M1.h"[..], 3), (&b"2.M1.h"[..], 4)]);
        let key = listing.recs[1].key();
        assert_eq!(moved.get(&key).map(|n| &**n), Some(&b"2.M1.h:2,S"[..]));
    }

    #[test]
    fn uidl_fallback_for_long_or_odd_unique_parts() {
        let f = Fixture::new();
        let long = format!("1.{}", "x".repeat(80));
        f.put(&format!("new/{long}"), b"a\n");
        fs::write(
            f.md.join("new").join(OsStr::from_bytes(b"2.M\xff.h:2,")),
            b"b\n",
        )
        .expect("w");
        f.put("new/3.M1 space.h", b"c\n");
        let seventy = format!("4.{}", "y".repeat(68));
        f.put(&format!("new/{seventy}"), b"d\n");
        let mb = f.open();
        let u = uidls(&*mb);
        assert_eq!(u.len(), 4);
        for uidl in &u[..3] {
            assert!(uidl.starts_with("sha256:"), "{uidl}");
            assert_eq!(uidl.len(), 7 + 2 * FALLBACK_HASH_BYTES);
            assert!(uidl.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        }
        assert_eq!(u[3], seventy);
        let distinct: BTreeSet<_> = u.iter().collect();
        assert_eq!(distinct.len(), 4);
        // Stable across sessions.
        drop(mb);
        assert_eq!(uidls(&*f.open()), u);
        assert_eq!(
            fallback_uidl(long.as_bytes()),
            fallback_uidl(long.as_bytes())
        );
        assert_eq!(
            fallback_uidl(b""),
            Some(Box::from("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4"))
        );
    }

    #[test]
    fn commit_deletes_and_marks_seen() {
        let f = Fixture::new();
        f.put("new/1.M1.h,S=2", b"a\n");
        f.put("new/2.M1.h", b"b\n");
        f.put("new/3.M1.h", b"c\n");
        f.put("cur/4.M1.h:2,RT", b"d\n");
        f.put("cur/5.M1.h:2,S", b"e\n");
        f.put("cur/6.M1.h", b"f\n");
        let mut mb = f.open();
        let deleted = [true, false, false, false, false, false];
        let retrieved = [true, true, false, true, true, true];
        let summary = mb.commit(&deleted, &retrieved).expect("commit");
        assert_eq!(
            summary,
            CommitSummary {
                deleted: 1,
                deleted_bytes: 3
            }
        );
        assert_eq!(f.ls("new"), set(&["3.M1.h"]));
        assert_eq!(
            f.ls("cur"),
            set(&["2.M1.h:2,S", "4.M1.h:2,RST", "5.M1.h:2,S", "6.M1.h:2,S"])
        );
        drop(mb);
        // Same UIDLs after the renames.
        assert_eq!(
            uidls(&*f.open()),
            ["2.M1.h", "3.M1.h", "4.M1.h", "5.M1.h", "6.M1.h"]
        );
    }

    #[test]
    fn commit_without_mark_seen_only_deletes() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.put("new/2.M1.h", b"b\n");
        let mut opts = f.opts();
        opts.maildir_mark_seen = false;
        let mut mb = open(&f.md, &opts).expect("open");
        mb.commit(&[false, true], &[true, true]).expect("commit");
        assert_eq!(f.ls("new"), set(&["1.M1.h"]));
        assert_eq!(f.ls("cur"), set(&[]));
    }

    #[test]
    fn failed_unlink_is_reported_after_trying_the_rest() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.put("new/2.M1.h", b"b\n");
        let mut mb = f.open();
        // A directory in place of the message: unlink fails with EISDIR, even for root.
        fs::remove_file(f.md.join("new/1.M1.h")).expect("rm");
        fs::create_dir(f.md.join("new/1.M1.h")).expect("mkdir");
        let err = mb
            .commit(&[true, true], &[true, true])
            .expect_err("unlink must fail");
        assert!(matches!(err, MailboxError::Io(_, _)), "{err:?}");
        assert_eq!(f.ls("new"), set(&["1.M1.h"]));
        assert_eq!(
            f.ls("cur"),
            set(&[]),
            "nothing marked seen after a failed commit"
        );
    }

    #[test]
    fn max_messages_presents_the_oldest() {
        let f = Fixture::new();
        for t in [5, 3, 9, 1, 7] {
            f.put(&format!("new/{t}.M1.h"), b"x\n");
        }
        let mut opts = f.opts();
        opts.max_messages = Some(2);
        let mut mb = open(&f.md, &opts).expect("open");
        assert_eq!(uidls(&*mb), ["1.M1.h", "3.M1.h"]);
        mb.commit(&[true, true], &[true, true]).expect("commit");
        assert_eq!(f.ls("new"), set(&["5.M1.h", "7.M1.h", "9.M1.h"]));
    }

    fn sizes(mb: &dyn Mailbox) -> Vec<u64> {
        (0..mb.count()).map(|i| mb.size(i)).collect()
    }

    /// Replaces a message's content, keeping its name and mtime: only a reader notices.
    fn forge(path: &Path, content: &[u8]) {
        let mtime = fs::metadata(path).and_then(|m| m.modified()).expect("stat");
        fs::write(path, content).expect("write");
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(mtime))
            .expect("utime");
    }

    /// The records of the index, as (name, in_cur, size).
    fn index_records(f: &Fixture) -> Vec<(String, bool, Option<u64>)> {
        let index = state_paths(&f.state, &f.md).index;
        let mut r = IndexReader::open(&index).expect("valid").expect("exists");
        let mut out = Vec::new();
        while let Some(rec) = r.next_rec().expect("valid") {
            out.push((
                String::from_utf8_lossy(rec.name).into_owned(),
                rec.in_cur,
                rec.size,
            ));
        }
        out
    }

    #[test]
    fn a_warm_session_reads_no_message_file() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\nb\n");
        f.put("new/2.M1.h,S=4", b"c\nd\n");
        f.put("cur/3.M1.h:2,S", b"e\nf");
        f.put("new/4.M1.h,S=4,W=6", b"g\nh\n");
        let (cold, report) = f.open_later();
        assert_eq!(report.from_index, [false, false]);
        assert_eq!(sizes(&*cold), [6, 6, 6, 6]);
        assert!(cold.warnings().is_empty(), "{:?}", cold.warnings());
        drop(cold);
        let index = state_paths(&f.state, &f.md).index;
        assert_eq!(
            index_records(&f),
            [
                ("1.M1.h".to_owned(), false, Some(6)),
                ("2.M1.h,S=4".to_owned(), false, Some(6)),
                ("3.M1.h:2,S".to_owned(), true, Some(6)),
                // A plausible ,W= still cost an open: kept too.
                ("4.M1.h,S=4,W=6".to_owned(), false, Some(6)),
            ]
        );
        // Same lengths and mtimes, content that measures less: a reader would see it.
        forge(&f.md.join("new/1.M1.h"), b"abc\n");
        forge(&f.md.join("new/2.M1.h,S=4"), b"abc\n");
        forge(&f.md.join("cur/3.M1.h:2,S"), b"ab\n");
        forge(&f.md.join("new/4.M1.h,S=4,W=6"), b"abc\n");
        let before = fs::metadata(&index)
            .and_then(|m| m.modified())
            .expect("stat");
        let (warm, report) = f.open_later();
        assert_eq!(report.from_index, [true, true], "no folder read");
        assert_eq!(sizes(&*warm), [6, 6, 6, 6], "sizes from the index");
        assert_eq!(
            uidls(&*warm),
            ["1.M1.h", "2.M1.h,S=4", "3.M1.h", "4.M1.h,S=4,W=6"]
        );
        drop(warm);
        let after = fs::metadata(&index)
            .and_then(|m| m.modified())
            .expect("stat");
        assert_eq!(before, after, "an unchanged index is not rewritten");
    }

    #[test]
    fn new_mail_moves_and_deletions_are_always_seen() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.put("new/2.M1.h", b"b\n");
        f.put("cur/3.M1.h:2,S", b"c\n");
        f.age("new");
        f.age("cur");
        assert_eq!(f.open_later().0.count(), 3);
        assert_eq!(f.open_later().1.from_index, [true, true]);
        // Delivered in the very tick the index was written: new/'s mtime changes anyway,
        // because it was aged; only new/ is read again, cur/ still comes from the index.
        f.put("new/4.M1.h", b"dd\n");
        let (mb, report) = f.open_later();
        assert_eq!(report.from_index, [false, true]);
        assert_eq!(uidls(&*mb), ["1.M1.h", "2.M1.h", "3.M1.h", "4.M1.h"]);
        assert_eq!(sizes(&*mb), [3, 3, 3, 4]);
        drop(mb);
        // Another client marks 1 seen and deletes 3.
        f.age("new");
        f.age("cur");
        let (mb, _) = f.open_later();
        drop(mb);
        fs::rename(f.md.join("new/1.M1.h"), f.md.join("cur/1.M1.h:2,S")).expect("mv");
        fs::remove_file(f.md.join("cur/3.M1.h:2,S")).expect("rm");
        let (mb, report) = f.open_later();
        assert_eq!(report.from_index, [false, false]);
        assert_eq!(uidls(&*mb), ["1.M1.h", "2.M1.h", "4.M1.h"]);
        let mut sink = VecSink::default();
        let mut mb = mb;
        mb.retrieve(0, None, &mut sink).expect("retr");
        assert_eq!(sink.out, b"a\r\n");
    }

    #[test]
    fn a_racy_listing_is_read_again() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        // Sessions at the real time: the folders changed within RACY_WINDOW of the scan, so a
        // delivery in the same timestamp tick could hide behind an unchanged mtime.
        let (mb, report) = open_at(&f.md, &f.opts(), SystemTime::now()).expect("open");
        assert_eq!((mb.count(), report.from_index), (1, [false, false]));
        drop(mb);
        let index = state_paths(&f.state, &f.md).index;
        let ino = |p: &Path| fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let first = ino(&index).expect("written");
        let (_, report) = open_at(&f.md, &f.opts(), SystemTime::now()).expect("open");
        assert_eq!(report.from_index, [false, false], "racy: read again");
        assert_eq!(report.unchanged, [true, true]);
        assert_eq!(
            ino(&index).expect("kept"),
            first,
            "same listing, still racy: not rewritten"
        );
        // Once a session ran long enough after the last change, the next one trusts it.
        let (_, report) = f.open_later();
        assert_eq!(report.from_index, [false, false], "stamped at a racy time");
        let (_, report) = f.open_later();
        assert_eq!(report.from_index, [true, true]);
    }

    #[test]
    fn a_replaced_folder_is_read_again() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.age("new");
        f.age("cur");
        drop(f.open_later());
        // Another folder with the same mtime: the inode differs.
        fs::rename(f.md.join("new"), f.md.join("old-new")).expect("mv");
        fs::create_dir(f.md.join("new")).expect("mkdir");
        f.put("new/2.M1.h", b"b\n");
        f.age("new");
        let (mb, report) = f.open_later();
        assert_eq!(report.from_index, [false, true]);
        assert_eq!(uidls(&*mb), ["2.M1.h"]);
    }

    #[test]
    fn a_changed_file_is_measured_again() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\nb\n");
        f.put("new/2.M1.h", b"a\nb\n");
        f.put("new/3.M1.h,S=4", b"a\nb\n");
        assert_eq!(sizes(&*f.open()), [6, 6, 6]);
        // 1: another length. 2: same length, another mtime.
        f.put("new/1.M1.h", b"a\nb\nc\n");
        f.put("new/2.M1.h", b"abc\n");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(f.md.join("new/2.M1.h"))
            .and_then(|fh| fh.set_modified(old))
            .expect("utime");
        // 3: ,S= is trusted without a stat (Maildir files are immutable): an edit in place
        // keeping its name is not seen, by design.
        f.put("new/3.M1.h,S=4", b"a\nb\nc\nd\n");
        assert_eq!(sizes(&*f.open()), [9, 5, 6]);
        // And the cache now holds the new sizes.
        assert_eq!(sizes(&*f.open()), [9, 5, 6]);
    }

    #[test]
    fn cached_sizes_equal_measured_sizes() {
        let f = Fixture::new();
        let bodies: [&[u8]; 6] = [
            b"",
            b"x",
            b"a\r\nb\n",
            b"\n\n\n",
            b"a\rb\r\n\r\n.\n",
            b"no nl",
        ];
        for i in 0..60 {
            let body = bodies[i % bodies.len()].repeat(i % 7 + 1);
            let name = if i % 2 == 0 {
                format!("new/{}.M{i}P1.h,S={}", 1_700_000_000 + i, body.len())
            } else {
                format!("cur/{}.M{i}P1.h:2,S", 1_700_000_000 + i)
            };
            f.put(&name, &body);
        }
        let measured = sizes(&*f.open());
        let warm = sizes(&*f.open());
        assert_eq!(measured, warm);
        fs::remove_file(state_paths(&f.state, &f.md).index).expect("rm");
        assert_eq!(sizes(&*f.open()), measured);
    }

    #[test]
    fn parallel_measurement_matches_each_file() {
        let f = Fixture::new();
        let n = PARALLEL_MEASURE_MIN * 3 + 7;
        let mut want = Vec::new();
        for i in 0..n {
            let body = b"l\n\r\nx".repeat(i % 13);
            let sub = if i % 4 == 0 { "cur" } else { "new" };
            f.put(&format!("{sub}/{}.M{i}.h", 1_700_000_000 + i), &body);
            let mut src: &[u8] = &body;
            want.push(
                canon::measure(&mut src, body.len() as u64, CanonOptions::PLAIN).expect("measure"),
            );
        }
        // One vanishes between the listing and the measurement: dropped, order kept.
        let mut listing = Listing::default();
        for i in 0..n {
            let sub_cur = i % 4 == 0;
            let name = format!("{}.M{i}.h", 1_700_000_000 + i);
            listing.push(name.as_bytes(), sub_cur).expect("push");
        }
        fs::remove_file(f.md.join(format!("new/{}.M1.h", 1_700_000_001))).expect("rm");
        want.remove(1);
        let folders = Folders::open(&f.md).expect("open").expect("exists");
        let (changed, view) = size_view(
            &folders,
            &mut listing,
            n,
            &mut HashMap::new(),
            &mut Vec::new(),
        )
        .expect("size");
        assert!(changed);
        assert_eq!(view, n - 1);
        let got: Vec<u64> = listing.recs.iter().map(|r| r.size()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_damaged_index_is_a_warning_and_rebuilt() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\nb\n");
        let index = state_paths(&f.state, &f.md).index;
        fs::create_dir_all(&f.state).expect("mkdir");
        fs::write(&index, b"POPSPMD\x02 truncated garbage").expect("write");
        let mb = f.open();
        assert_eq!(sizes(&*mb), [6]);
        assert!(mb.warnings()[0].contains("rebuilt"), "{:?}", mb.warnings());
        drop(mb);
        let mb = f.open();
        assert!(mb.warnings().is_empty(), "{:?}", mb.warnings());
        assert_eq!(sizes(&*mb), [6]);
        drop(mb);
        // A valid index whose last byte is damaged: found only after the records were
        // streamed, and the session starts over without it.
        let mut bytes = fs::read(&index).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&index, &bytes).expect("write");
        let (mb, _) = f.open_later();
        assert_eq!(sizes(&*mb), [6]);
        assert_eq!(mb.warnings().len(), 1, "{:?}", mb.warnings());
        drop(mb);
        // The text cache of the earlier version: replaced silently.
        fs::write(
            &index,
            "popspool-maildir-sizes 1\n1.M1.h 4 0.000000000 99\nend 1 00\n",
        )
        .expect("write");
        let mb = f.open();
        assert_eq!(sizes(&*mb), [6]);
        assert!(mb.warnings().is_empty(), "{:?}", mb.warnings());
        drop(mb);
        assert_eq!(index_records(&f).len(), 1);
        // The index's name taken by a directory: sizes still right, a warning, no failure.
        fs::remove_file(&index).expect("rm");
        fs::create_dir(&index).expect("mkdir");
        let mb = f.open();
        assert_eq!(sizes(&*mb), [6]);
        assert_eq!(mb.warnings().len(), 2, "{:?}", mb.warnings());
    }

    #[test]
    fn index_entries_follow_the_listing() {
        let f = Fixture::new();
        for t in 1..=4 {
            f.put(&format!("new/{t}.M1.h"), b"x\n");
        }
        let mut mb = f.open();
        mb.commit(&[true, false, false, false], &[false; 4])
            .expect("commit");
        drop(mb);
        // max_messages shows two, but the others stay listed with their sizes; 1 is gone.
        let mut opts = f.opts();
        opts.max_messages = Some(2);
        assert_eq!(
            uidls(&*open(&f.md, &opts).expect("open")),
            ["2.M1.h", "3.M1.h"]
        );
        let names: Vec<(String, bool, Option<u64>)> = index_records(&f);
        assert_eq!(
            names,
            [
                ("2.M1.h".to_owned(), false, Some(3)),
                ("3.M1.h".to_owned(), false, Some(3)),
                ("4.M1.h".to_owned(), false, Some(3)),
            ]
        );
        // Flags and the move to cur/ keep the size: same unique part.
        fs::rename(f.md.join("new/2.M1.h"), f.md.join("cur/2.M1.h:2,S")).expect("mv");
        forge(&f.md.join("cur/2.M1.h:2,S"), b"y\n");
        assert_eq!(sizes(&*f.open()), [3, 3, 3]);
    }

    #[test]
    fn a_message_not_listed_beyond_max_messages_is_sized_when_shown() {
        let f = Fixture::new();
        for t in 1..=3 {
            f.put(&format!("new/{t}.M1.h"), b"x\n");
        }
        let mut opts = f.opts();
        opts.max_messages = Some(1);
        let later = SystemTime::now() + Duration::from_secs(3600);
        f.age("new");
        f.age("cur");
        drop(open_at(&f.md, &opts, later).expect("open"));
        assert_eq!(
            index_records(&f).iter().map(|r| r.2).collect::<Vec<_>>(),
            [Some(3), None, None]
        );
        let (mb, report) = f.open_later();
        assert_eq!(report.from_index, [true, true]);
        assert_eq!(sizes(&*mb), [3, 3, 3]);
    }

    proptest::proptest! {
        #[test]
        fn seen_name_keeps_the_uidl_and_sets_s(
            name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            in_cur in proptest::prelude::any::<bool>(),
        ) {
            let _ = name_field(&name, b'S');
            let _ = leading_timestamp(&name);
            if let Some(n) = seen_name(&name, in_cur) {
                proptest::prop_assert_eq!(unique_part(&n), unique_part(&name));
                let colon = memchr::memchr(b':', &n).expect("info part");
                proptest::prop_assert!(n[colon + 1..].starts_with(b"2,"));
                proptest::prop_assert!(n[colon + 3..].contains(&b'S'));
                proptest::prop_assert!(n.len() <= name.len() + 4);
            }
        }

        #[test]
        fn fallback_uidl_is_always_valid(unique in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let uidl = fallback_uidl(&unique);
            let u: &[u8] = uidl.as_deref().map_or(&unique, str::as_bytes);
            proptest::prop_assert!(!u.is_empty() && u.len() <= MAX_UIDL_LEN);
            proptest::prop_assert!(u.iter().all(|b| (0x21..=0x7e).contains(b)));
        }
    }
}
