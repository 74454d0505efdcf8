//! Maildir: new/ and cur/, UIDL = the unique part of the file name, exact canonical sizes.
//! OWNER: maildir helper.
//!
//! Design decisions (each is why this module looks the way it does):
//!
//! * **Fast path.** A missing directory, or one whose `new/` and `cur/` hold no message file,
//!   is served by [`EmptyMailbox`]: no session lock, nothing created. Most POP3 checks find no
//!   mail, and creating state files for them would litter every home directory.
//! * **One readdir each.** After the session lock, `new/` and `cur/` are each read once; `tmp/`
//!   is never read (files there are still being delivered). Dot-files and anything that is not
//!   a regular file (directories, symlinks, FIFOs) are skipped using `d_type` where the file
//!   system provides it, so no per-entry `stat` is needed for the listing.
//! * **Order.** Oldest first by the leading decimal timestamp of the file name
//!   (`1700000000.M1P2.host`), ties by unique part; no `stat`. A name without a leading number
//!   sorts last (its age is unknown, and [`OpenOptions::max_messages`] presents the oldest).
//! * **UIDL** is the unique part of the file name (everything before the first `:`), exactly as
//!   qmail-pop3d does, so clients moving from qmail-pop3d do not download everything again. It
//!   never changes when flags change. If it is not a valid RFC 1939 UIDL (longer than
//!   [`MAX_UIDL_LEN`] or a byte outside 0x21-0x7E) the UIDL is `sha256:` followed by the hex of
//!   the first [`FALLBACK_HASH_BYTES`] bytes of SHA-256 of the unique part. A real unique part
//!   never contains `:`, so a fallback can never equal another message's plain UIDL. If two
//!   files share a unique part (a concurrent `new/`→`cur/` move seen by both readdirs), the
//!   message is listed once, at its `cur/` name.
//! * **Sizes are exact**: the octets RETR sends (canonical form, CRLF endings). `,W=NNN` in the
//!   name (Dovecot's virtual size, counted with CRLF endings) is used when it is plausible for
//!   the file (`len <= W <= 2*len`, and `,S=` if present equals the file length) and the file
//!   ends with LF: Dovecot does not count a final CRLF that is missing, while RETR adds one, so a
//!   file not ending in LF is measured instead. Without `,W=` the size is computed with
//!   [`canon::measure`] by reading the file. `,S=NNN` is the size as stored (LF endings), never
//!   the POP3 size; it is only a sanity check of `,W=`.
//! * **Size cache.** Every size that took reading the file is kept in the state directory
//!   ([`crate::maildir_index`], at `state_paths(..).index`) and believed at the next session
//!   when `,S=` or an `lstat` shows the stored file unchanged, so a warm session on a Courier,
//!   qmail or procmail Maildir (no `,W=`) opens no message file. It is loaded and rewritten
//!   (only if it changed) under the session lock, right after the scan; a damaged cache is a
//!   warning and a rebuild, never a failed session.
//! * **Vanishing messages.** Another client may delete a message or move it from `new/` to
//!   `cur/` (or change its flags) at any time. A message not found where it was listed is looked
//!   for once in `cur/` by its unique part; still gone, RETR answers a clean `-ERR`
//!   ([`MailboxError::MessageGone`]) and the session goes on.
//! * **Commit.** Deleted messages are unlinked; `ENOENT` means another client got there first
//!   (after one look in `cur/` in case it was only moved). Maildir cannot delete all-or-nothing,
//!   but each unlink is atomic and the next session simply sees what is left, so a partial
//!   deletion loses and duplicates nothing: a failed unlink is reported (QUIT answers
//!   `-ERR [SYS/TEMP]`) after the others were tried. With [`OpenOptions::maildir_mark_seen`],
//!   retrieved messages that are kept are renamed from `new/` to `cur/` with `:2,S` (or get `S`
//!   added to their `cur/` flags, kept in ASCII order). This is safe because a rename within
//!   one Maildir is atomic and the unique part, our UIDL, does not change. Marking seen is
//!   advisory: a failed rename does not fail QUIT. Messages not retrieved stay in `new/`.

use crate::canon::{self, CanonOptions};
use crate::error::{io_err, MailboxError};
use crate::limits::{MAX_MESSAGES, MAX_UIDL_LEN};
use crate::lock::SessionLock;
use crate::mailbox::{
    state_paths, CommitSummary, EmptyMailbox, Mailbox, OpenOptions, RetrieveError, RetrieveSink,
};
use crate::maildir_index::{self, SizeCache};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes of SHA-256 shown (as hex) in a fallback UIDL: 160 bits make an accidental collision
/// impossible in practice, and `sha256:` plus 40 hex digits is well under 70 octets.
pub const FALLBACK_HASH_BYTES: usize = 20;

/// Marks a fallback UIDL; contains `:`, which no real unique part does.
const FALLBACK_PREFIX: &str = "sha256:";

/// One listed message. Kept small: a large Maildir holds one of these per message.
#[derive(Debug)]
struct Entry {
    /// The file name (not valid UTF-8 in general).
    name: Box<[u8]>,
    in_cur: bool,
    /// Canonical size, filled in after listing.
    size: u64,
    /// Set only when the unique part is not itself a valid UIDL.
    fallback_uidl: Option<Box<str>>,
}

impl Entry {
    fn path(&self, root: &Path) -> PathBuf {
        root.join(if self.in_cur { "cur" } else { "new" })
            .join(OsStr::from_bytes(&self.name))
    }

    fn unique(&self) -> &[u8] {
        unique_part(&self.name)
    }
}

/// The unique part of a Maildir file name: everything before the first `:`.
fn unique_part(name: &[u8]) -> &[u8] {
    match memchr::memchr(b':', name) {
        Some(i) => &name[..i],
        None => name,
    }
}

/// The delivery time at the start of a name; unknown (no leading digit) sorts last.
fn leading_timestamp(name: &[u8]) -> u64 {
    let digits = name.iter().take_while(|b| b.is_ascii_digit());
    let mut any = false;
    let mut t: u64 = 0;
    for &d in digits {
        any = true;
        t = t.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    if any {
        t
    } else {
        u64::MAX
    }
}

/// The value of a `,K=digits` field in the unique part (Courier/Dovecot `,S=` and `,W=`).
fn name_field(unique: &[u8], key: u8) -> Option<u64> {
    unique
        .split(|&b| b == b',')
        .skip(1)
        .find_map(|field| match field {
            [k, b'=', digits @ ..] if *k == key && !digits.is_empty() => {
                digits.iter().try_fold(0u64, |acc, &d| {
                    if d.is_ascii_digit() {
                        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                    } else {
                        None
                    }
                })
            }
            _ => None,
        })
}

/// `None` when the unique part is a valid UIDL as is; else the documented fallback.
fn fallback_uidl(unique: &[u8]) -> Option<Box<str>> {
    let valid = !unique.is_empty()
        && unique.len() <= MAX_UIDL_LEN
        && unique.iter().all(|&b| (0x21..=0x7e).contains(&b));
    if valid {
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
fn seen_name(name: &[u8], in_cur: bool) -> Option<Vec<u8>> {
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

/// Opens a message file for reading. `O_NOFOLLOW`: a message is a regular file, never a link
/// out of the Maildir; `O_NONBLOCK`: a FIFO swapped in after readdir cannot hang the session.
fn open_message(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Is this directory entry a message candidate? Uses `d_type` when the file system gives it
/// (std falls back to `lstat` only when it does not).
fn is_message_entry(entry: &fs::DirEntry) -> io::Result<bool> {
    if entry.file_name().as_bytes().first() == Some(&b'.') {
        return Ok(false);
    }
    Ok(entry.file_type()?.is_file())
}

/// Calls `f` for each message entry of `dir`, stopping early when it returns false.
/// A missing directory has no entries.
fn for_each_message(
    dir: &Path,
    mut f: impl FnMut(&fs::DirEntry) -> bool,
) -> Result<(), MailboxError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MailboxError::Io("read the Maildir", e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err("read the Maildir"))?;
        match is_message_entry(&entry) {
            Ok(true) => {
                if !f(&entry) {
                    break;
                }
            }
            Ok(false) => {}
            // Removed between readdir and lstat (file systems without d_type).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(MailboxError::Io("read the Maildir", e)),
        }
    }
    Ok(())
}

fn has_message(dir: &Path) -> Result<bool, MailboxError> {
    let mut found = false;
    for_each_message(dir, |_| {
        found = true;
        false
    })?;
    Ok(found)
}

/// Current file names in `cur/`, keyed by unique part.
type NamesByUnique = HashMap<Box<[u8]>, Box<[u8]>>;

/// One readdir of `cur/` for the current names of messages whose unique parts are `wanted`.
fn find_in_cur(root: &Path, wanted: &[&[u8]]) -> Result<NamesByUnique, MailboxError> {
    // A set: after a mass deletion by another client, `wanted` can be as large as cur/.
    let wanted: HashSet<&[u8]> = wanted.iter().copied().collect();
    let mut found = HashMap::new();
    for_each_message(&root.join("cur"), |entry| {
        let name = entry.file_name();
        let name = name.as_bytes();
        let unique = unique_part(name);
        if wanted.contains(&unique) {
            found.insert(Box::from(unique), Box::from(name));
        }
        true
    })?;
    Ok(found)
}

/// How a message's size was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measured {
    /// From a plausible `,W=`: cheap every time, never cached.
    Named(u64),
    /// By reading the whole file: worth caching.
    Read(maildir_index::Sizes),
}

impl Measured {
    fn size(self) -> u64 {
        match self {
            Measured::Named(s) => s,
            Measured::Read(s) => s.crlf_size,
        }
    }
}

/// The exact canonical size of a message, or `None` if it vanished.
fn measure_entry(root: &Path, e: &Entry) -> Result<Option<Measured>, MailboxError> {
    let mut file = match open_message(&e.path(root)) {
        Ok(f) => f,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(MailboxError::Io("open a message", err)),
    };
    let meta = file.metadata().map_err(io_err("examine a message"))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let len = meta.len();
    let unique = e.unique();
    let stored_ok = !matches!(name_field(unique, b'S'), Some(s) if s != len);
    if let Some(w) = name_field(unique, b'W') {
        if stored_ok && len > 0 && w >= len && w <= len.saturating_mul(2) {
            let mut last = [0u8; 1];
            let n = file
                .read_at(&mut last, len - 1)
                .map_err(io_err("read a message"))?;
            if n == 1 && last[0] == b'\n' {
                return Ok(Some(Measured::Named(w)));
            }
        }
    }
    let size =
        canon::measure(&mut file, len, CanonOptions::PLAIN).map_err(io_err("read a message"))?;
    Ok(Some(Measured::Read(maildir_index::sizes_of(&meta, size))))
}

/// The size of `e` from the cache if it still holds, else measured (and cached when that
/// took a read); `None` if the message vanished.
fn size_entry(root: &Path, e: &Entry, cache: &mut SizeCache) -> Result<Option<u64>, MailboxError> {
    let unique = e.unique();
    let path = e.path(root);
    if let Some(size) = maildir_index::cached_size(cache, unique, name_field(unique, b'S'), &path) {
        return Ok(Some(size));
    }
    let m = measure_entry(root, e)?;
    if let Some(Measured::Read(sizes)) = m {
        cache.insert(unique, sizes);
    }
    Ok(m.map(Measured::size))
}

/// Lets `canon::copy` write into a sink without trait upcasting (MSRV 1.80).
struct SinkWriter<'a>(&'a mut dyn RetrieveSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Fills in every entry's size; one that vanished since the listing is looked for once in
/// `cur/` (another client may have moved it) and dropped if it is gone.
fn size_entries(
    path: &Path,
    entries: &mut Vec<Entry>,
    cache: &mut SizeCache,
) -> Result<(), MailboxError> {
    let mut vanished = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        match size_entry(path, e, cache)? {
            Some(size) => e.size = size,
            None => vanished.push(i),
        }
    }
    if !vanished.is_empty() {
        let wanted: Vec<&[u8]> = vanished.iter().map(|&i| entries[i].unique()).collect();
        let found = find_in_cur(path, &wanted)?;
        let mut gone = vec![false; entries.len()];
        for &i in &vanished {
            let e = &mut entries[i];
            gone[i] = true;
            if let Some(name) = found.get(e.unique()) {
                e.name = name.clone();
                e.in_cur = true;
                if let Some(size) = size_entry(path, e, cache)? {
                    e.size = size;
                    gone[i] = false;
                }
            }
        }
        let mut keep = gone.iter().map(|g| !g);
        entries.retain(|_| keep.next().unwrap_or(true));
    }
    Ok(())
}

/// A Maildir opened for one session, holding its session lock until dropped.
#[derive(Debug)]
struct Maildir {
    root: PathBuf,
    entries: Vec<Entry>,
    mark_seen: bool,
    warnings: Vec<String>,
    _lock: SessionLock,
}

/// Opens a Maildir for a session: fast path when missing or empty (no lock, nothing created).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Mailbox>, MailboxError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(MailboxError::NotAMailbox(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Box::new(EmptyMailbox)),
        Err(e) => return Err(MailboxError::Io("open the Maildir", e)),
    }
    if !has_message(&path.join("new"))? && !has_message(&path.join("cur"))? {
        return Ok(Box::new(EmptyMailbox));
    }
    let paths = state_paths(&opts.state_dir, path);
    let lock = SessionLock::acquire(&paths.session_lock, opts.session_lock_wait)?;

    let mut entries = Vec::new();
    for in_cur in [false, true] {
        let dir = path.join(if in_cur { "cur" } else { "new" });
        for_each_message(&dir, |entry| {
            entries.push(Entry {
                name: Box::from(entry.file_name().as_bytes()),
                in_cur,
                size: 0,
                fallback_uidl: None,
            });
            true
        })?;
    }
    entries.sort_unstable_by(|a, b| {
        leading_timestamp(&a.name)
            .cmp(&leading_timestamp(&b.name))
            .then_with(|| a.unique().cmp(b.unique()))
            .then_with(|| b.in_cur.cmp(&a.in_cur))
            .then_with(|| a.name.cmp(&b.name))
    });
    // Equal unique parts are adjacent with the cur/ copy first: keep that one.
    entries.dedup_by(|later, kept| later.unique() == kept.unique());

    let mut warnings = Vec::new();
    let (mut cache, problem) = SizeCache::load(&paths.index);
    warnings.extend(problem);
    if !cache.is_empty() {
        // Pruned against the whole listing, not the max_messages view: messages not shown
        // this time keep their sizes for the session that shows them.
        let present: HashSet<&[u8]> = entries.iter().map(Entry::unique).collect();
        cache.retain_present(&present);
    }
    entries.truncate(opts.max_messages.unwrap_or(usize::MAX).min(MAX_MESSAGES));

    size_entries(path, &mut entries, &mut cache)?;
    // After the scan, still under the session lock; a failure only costs the next session
    // a read of each message.
    if let Err(e) = cache.write_if_dirty(&paths.index) {
        warnings.push(format!(
            "could not write the Maildir size cache {}: {e}",
            paths.index.display()
        ));
    }
    drop(cache);
    for e in &mut entries {
        e.fallback_uidl = fallback_uidl(e.unique());
    }
    entries.shrink_to_fit();
    Ok(Box::new(Maildir {
        root: path.to_path_buf(),
        entries,
        mark_seen: opts.maildir_mark_seen,
        warnings,
        _lock: lock,
    }))
}

impl Maildir {
    /// Follows message `i` into `cur/` after it vanished from where it was listed.
    fn relocate(&mut self, i: usize) -> Result<bool, MailboxError> {
        let e = &self.entries[i];
        let found = find_in_cur(&self.root, &[e.unique()])?;
        match found.into_values().next() {
            Some(name) => {
                let e = &mut self.entries[i];
                e.name = name;
                e.in_cur = true;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn open_for_retrieve(&mut self, i: usize) -> Result<File, MailboxError> {
        match open_message(&self.entries[i].path(&self.root)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => return other.map_err(io_err("open a message")),
        }
        if !self.relocate(i)? {
            return Err(MailboxError::MessageGone);
        }
        match open_message(&self.entries[i].path(&self.root)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(MailboxError::MessageGone),
            other => other.map_err(io_err("open a message")),
        }
    }

    /// Best effort: see the module documentation.
    fn mark_seen(&self, e: &Entry) -> io::Result<()> {
        let Some(new_name) = seen_name(&e.name, e.in_cur) else {
            return Ok(());
        };
        let to = self.root.join("cur").join(OsStr::from_bytes(&new_name));
        fs::rename(e.path(&self.root), to)
    }
}

impl Mailbox for Maildir {
    fn count(&self) -> usize {
        self.entries.len()
    }

    fn size(&self, i: usize) -> u64 {
        self.entries.get(i).map_or(0, |e| e.size)
    }

    fn uidl(&self, i: usize) -> &str {
        let Some(e) = self.entries.get(i) else {
            return "";
        };
        match &e.fallback_uidl {
            Some(u) => u,
            // Checked at open: the unique part is 0x21-0x7E only, hence UTF-8.
            None => std::str::from_utf8(e.unique()).unwrap_or(""),
        }
    }

    fn retrieve(
        &mut self,
        i: usize,
        body_lines: Option<u64>,
        sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError> {
        if i >= self.entries.len() {
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
        for (i, e) in self
            .entries
            .iter()
            .enumerate()
            .filter(|&(i, _)| is_deleted(i))
        {
            match fs::remove_file(e.path(&self.root)) {
                Ok(()) => {
                    summary.deleted += 1;
                    summary.deleted_bytes += e.size;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => missing.push(i),
                Err(err) => {
                    first_err.get_or_insert(MailboxError::Io("delete a message", err));
                }
            }
        }
        if !missing.is_empty() {
            // Moved to cur/ or re-flagged by another client, or already deleted by one.
            let wanted: Vec<&[u8]> = missing.iter().map(|&i| self.entries[i].unique()).collect();
            match find_in_cur(&self.root, &wanted) {
                Ok(found) => {
                    for &i in &missing {
                        let e = &self.entries[i];
                        let Some(name) = found.get(e.unique()) else {
                            continue;
                        };
                        let path = self.root.join("cur").join(OsStr::from_bytes(name));
                        match fs::remove_file(path) {
                            Ok(()) => {
                                summary.deleted += 1;
                                summary.deleted_bytes += e.size;
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
            for (i, e) in self.entries.iter().enumerate() {
                if retrieved.get(i).copied().unwrap_or(false) && !is_deleted(i) {
                    // Advisory only: the mail is intact either way, and failing QUIT here would
                    // tell the client its deletions failed when they did not.
                    let _ = self.mark_seen(e);
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
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;

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
            ("x.1", u64::MAX),
            ("", u64::MAX),
        ] {
            assert_eq!(leading_timestamp(name.as_bytes()), ts, "{name}");
        }
        assert_eq!(leading_timestamp(&[b'9'; 40]), u64::MAX);
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

    fn entry(name: &str, in_cur: bool) -> Entry {
        Entry {
            name: Box::from(name.as_bytes()),
            in_cur,
            size: 0,
            fallback_uidl: None,
        }
    }

    #[test]
    fn vanished_between_listing_and_sizing_is_followed_or_dropped() {
        // The listing is stale: 2 moved to cur/ with flags, 3 was deleted.
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\n");
        f.put("cur/2.M1.h:2,S", b"bb\n");
        let mut entries = vec![
            entry("1.M1.h", false),
            entry("2.M1.h", false),
            entry("3.M1.h", false),
        ];
        let mut cache = SizeCache::default();
        size_entries(&f.md, &mut entries, &mut cache).expect("size");
        assert_eq!(cache.len(), 2, "both measured by reading");
        let got: Vec<(&[u8], bool, u64)> = entries
            .iter()
            .map(|e| (&*e.name, e.in_cur, e.size))
            .collect();
        assert_eq!(
            got,
            [(&b"1.M1.h"[..], false, 3), (&b"2.M1.h:2,S"[..], true, 4)]
        );
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

    #[test]
    fn a_warm_session_reads_no_message_file() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\nb\n");
        f.put("new/2.M1.h,S=4", b"c\nd\n");
        f.put("cur/3.M1.h:2,S", b"e\nf");
        f.put("new/4.M1.h,S=4,W=6", b"g\nh\n");
        let cold = f.open();
        assert_eq!(sizes(&*cold), [6, 6, 6, 6]);
        assert!(cold.warnings().is_empty(), "{:?}", cold.warnings());
        drop(cold);
        let index = state_paths(&f.state, &f.md).index;
        let text = fs::read_to_string(&index).expect("cache written");
        assert_eq!(text.lines().count(), 5, "header, 3 read, end: {text}");
        assert!(!text.contains("4.M1.h"), "a plausible ,W= is never cached");
        // Same lengths and mtimes, content that measures less: a reader would see it.
        forge(&f.md.join("new/1.M1.h"), b"abc\n");
        forge(&f.md.join("new/2.M1.h,S=4"), b"abc\n");
        forge(&f.md.join("cur/3.M1.h:2,S"), b"ab\n");
        let before = fs::metadata(&index)
            .and_then(|m| m.modified())
            .expect("stat");
        let warm = f.open();
        assert_eq!(sizes(&*warm), [6, 6, 6, 6], "sizes from the cache");
        drop(warm);
        let after = fs::metadata(&index)
            .and_then(|m| m.modified())
            .expect("stat");
        assert_eq!(before, after, "an unchanged cache is not rewritten");
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
    fn a_damaged_cache_is_a_warning_and_rebuilt() {
        let f = Fixture::new();
        f.put("new/1.M1.h", b"a\nb\n");
        let index = state_paths(&f.state, &f.md).index;
        fs::create_dir_all(&f.state).expect("mkdir");
        fs::write(
            &index,
            "popspool-maildir-sizes 1\n1.M1.h 4 0.000000000 99\nend 1 00\n",
        )
        .expect("write");
        let mb = f.open();
        assert_eq!(sizes(&*mb), [6]);
        assert!(mb.warnings()[0].contains("rebuilt"), "{:?}", mb.warnings());
        drop(mb);
        let mb = f.open();
        assert!(mb.warnings().is_empty(), "{:?}", mb.warnings());
        assert_eq!(sizes(&*mb), [6]);
        drop(mb);
        // The cache's name taken by a directory: sizes still right, a warning, no failure.
        fs::remove_file(&index).expect("rm");
        fs::create_dir(&index).expect("mkdir");
        let mb = f.open();
        assert_eq!(sizes(&*mb), [6]);
        assert_eq!(mb.warnings().len(), 2, "{:?}", mb.warnings());
    }

    #[test]
    fn cache_entries_follow_the_listing() {
        let f = Fixture::new();
        for t in 1..=4 {
            f.put(&format!("new/{t}.M1.h"), b"x\n");
        }
        let index = state_paths(&f.state, &f.md).index;
        let mut mb = f.open();
        mb.commit(&[true, false, false, false], &[false; 4])
            .expect("commit");
        drop(mb);
        // max_messages shows two, but the sizes of the others are kept; 1 is gone.
        let mut opts = f.opts();
        opts.max_messages = Some(2);
        assert_eq!(
            uidls(&*open(&f.md, &opts).expect("open")),
            ["2.M1.h", "3.M1.h"]
        );
        let text = fs::read_to_string(&index).expect("read");
        assert!(!text.contains("1.M1.h"), "{text}");
        assert!(text.contains("4.M1.h"), "{text}");
        // Flags and the move to cur/ keep the entry: same unique part.
        fs::rename(f.md.join("new/2.M1.h"), f.md.join("cur/2.M1.h:2,S")).expect("mv");
        forge(&f.md.join("cur/2.M1.h:2,S"), b"y\n");
        assert_eq!(sizes(&*f.open()), [3, 3, 3]);
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
