//! The update journal that makes in-place mbox compaction survive SIGKILL and power loss. Any
//! toolkit program replays it, under the content lock, before touching the mailbox.
//! OWNER: locking helper.
//!
//! # Format (version 2, all integers little-endian)
//!
//! ```text
//! off  len  field
//!   0    8  magic "POPSPJNL"
//!   8    4  version = 2
//!  12    4  flags = 0 (reserved)
//!  16    8  st_dev of the mailbox
//!  24    8  st_ino of the mailbox
//!  32    8  p0: first byte that moves (start of the first deleted message)
//!  40    8  S_old: mailbox size when the journal was written
//!  48    8  tail_len: bytes that end up at [p0, p0 + tail_len)
//!  56   32  sha256 of the tail
//!  88   32  "stale digest" of the OLD bytes [p0 + tail_len, S_old): see `stale_digest`
//! 120   32  sha256 of bytes 0..120 (header checksum)
//! 152    …  the tail, exactly tail_len bytes; the file is exactly 152 + tail_len long
//! ```
//!
//! # Protocol
//!
//! The journal is written as `JOURNAL.tmp`, fsynced, renamed to `JOURNAL`, and the directory
//! fsynced, *before* the mailbox is touched. So a `JOURNAL` that exists is complete, and a
//! `.tmp` is always garbage. Replay copies the tail to `p0` (which only writes inside
//! `[p0, p0 + tail_len)`), then truncates to `p0 + tail_len`. The stale region
//! `[p0 + tail_len, S_old)` is never written by the copy, so while its old bytes are still
//! there the truncation has not happened and the whole replay can be redone; once they are
//! gone, the tail digest at `p0` proves the replay finished. Bytes a foreign MDA appended
//! (after breaking our stale dotlock) are folded into a new journal first, so moving them is
//! as crash-safe as the rest.

use crate::error::{io_err, MailboxError};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// First bytes of every journal.
pub const JOURNAL_MAGIC: [u8; 8] = *b"POPSPJNL";
/// The one format version this code writes and reads.
pub const JOURNAL_VERSION: u32 = 2;

/// How much of each end of the stale region its digest covers.
pub const STALE_SAMPLE: u64 = 64 * 1024;
/// Size of the fixed header before the tail bytes.
pub const JOURNAL_HEADER_LEN: u64 = 152;
/// Bytes moved per read/write while journalling and copying: memory stays bounded whatever
/// the mailbox size, and large enough that a multi-GB tail is not syscall-bound.
pub const COPY_CHUNK: usize = 1 << 20;

const CHECKSUM_OFF: usize = 120;
const HEADER: usize = JOURNAL_HEADER_LEN as usize;

/// A decoded, checksum-verified journal header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub dev: u64,
    pub ino: u64,
    pub p0: u64,
    pub s_old: u64,
    pub tail_len: u64,
    pub tail_sha: [u8; 32],
    pub stale_sha: [u8; 32],
}

impl Header {
    fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..8].copy_from_slice(&JOURNAL_MAGIC);
        b[8..12].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
        // 12..16: flags, zero.
        b[16..24].copy_from_slice(&self.dev.to_le_bytes());
        b[24..32].copy_from_slice(&self.ino.to_le_bytes());
        b[32..40].copy_from_slice(&self.p0.to_le_bytes());
        b[40..48].copy_from_slice(&self.s_old.to_le_bytes());
        b[48..56].copy_from_slice(&self.tail_len.to_le_bytes());
        b[56..88].copy_from_slice(&self.tail_sha);
        b[88..120].copy_from_slice(&self.stale_sha);
        let sum: [u8; 32] = Sha256::digest(&b[..CHECKSUM_OFF]).into();
        b[CHECKSUM_OFF..].copy_from_slice(&sum);
        b
    }

    /// Checks magic, version, checksum and the invariants replay relies on.
    fn decode(b: &[u8; HEADER]) -> Result<Header, String> {
        if b[0..8] != JOURNAL_MAGIC {
            return Err("bad magic".into());
        }
        let sum: [u8; 32] = Sha256::digest(&b[..CHECKSUM_OFF]).into();
        if b[CHECKSUM_OFF..] != sum {
            return Err("header checksum mismatch".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(8) != JOURNAL_VERSION || u32_at(12) != 0 {
            return Err(format!(
                "unknown version {} flags {}",
                u32_at(8),
                u32_at(12)
            ));
        }
        let mut tail_sha = [0u8; 32];
        tail_sha.copy_from_slice(&b[56..88]);
        let mut stale_sha = [0u8; 32];
        stale_sha.copy_from_slice(&b[88..120]);
        let h = Header {
            dev: u64_at(16),
            ino: u64_at(24),
            p0: u64_at(32),
            s_old: u64_at(40),
            tail_len: u64_at(48),
            tail_sha,
            stale_sha,
        };
        // The stale region must be non-empty: an empty one would "match" forever and make a
        // finished replay look unfinished.
        match h.p0.checked_add(h.tail_len) {
            Some(end) if end < h.s_old => Ok(h),
            _ => Err("inconsistent offsets".into()),
        }
    }

    fn new_end(&self) -> u64 {
        self.p0 + self.tail_len
    }
}

/// `JOURNAL.tmp`: where a journal is built before it is renamed into place.
pub(crate) fn tmp_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Where a journal that cannot be used is moved, unique so that nothing is ever overwritten.
fn aside_path(journal: &Path, why: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut s = journal.as_os_str().to_os_string();
    s.push(format!(".{why}-{secs}-{}", std::process::id()));
    PathBuf::from(s)
}

/// fsyncs the directory holding `path`, so a rename or unlink in it is durable.
pub(crate) fn sync_parent(path: &Path) -> Result<(), MailboxError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync the journal directory"))
}

/// Reads exactly `buf.len()` bytes at `off`; a file shorter than that means someone changed
/// it under the lock.
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> Result<(), MailboxError> {
    f.read_exact_at(buf, off).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            MailboxError::Changed("file shorter than expected".into())
        } else {
            MailboxError::Io("read the mailbox", e)
        }
    })
}

/// Feeds the bytes of `range` of `f` to `sink`, one bounded chunk at a time.
fn stream(
    f: &File,
    range: std::ops::Range<u64>,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), MailboxError>,
) -> Result<(), MailboxError> {
    let mut off = range.start;
    while off < range.end {
        let n = usize::try_from(range.end - off)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        read_exact_at(f, &mut buf[..n], off)?;
        sink(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// The digest that tells whether the truncate of a compaction has happened: SHA-256 of the
/// stale region's length and of its first and last `STALE_SAMPLE` bytes (the whole region when
/// it is shorter than two samples).
///
/// Version 1 hashed the whole region, which for "delete everything" is the whole mailbox: half
/// of a DELE-all UPDATE's time on a 1 GB mbox went there. The digest only has to tell old bytes
/// from what replaced them after a truncate, which is either nothing (the file is shorter than
/// the region's end, and the size check decides) or mail an MDA appended after breaking a
/// crashed session's dotlock. Appended mail starts with its own `From ` line, dated at its
/// delivery; for it to pass as the old region it would have to equal, at the very same
/// offsets, both the first and the last 64 KiB of the deleted mail, From line date included.
fn stale_digest(
    f: &File,
    range: std::ops::Range<u64>,
    buf: &mut [u8],
) -> Result<[u8; 32], MailboxError> {
    let len = range.end.saturating_sub(range.start);
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    let mut feed = |r: std::ops::Range<u64>| {
        stream(f, r, buf, |c| {
            h.update(c);
            Ok(())
        })
    };
    if len <= 2 * STALE_SAMPLE {
        feed(range)?;
    } else {
        feed(range.start..range.start + STALE_SAMPLE)?;
        feed(range.end - STALE_SAMPLE..range.end)?;
    }
    Ok(h.finalize().into())
}

fn digest_range(
    f: &File,
    range: std::ops::Range<u64>,
    buf: &mut [u8],
) -> Result<[u8; 32], MailboxError> {
    let mut h = Sha256::new();
    stream(f, range, buf, |c| {
        h.update(c);
        Ok(())
    })?;
    Ok(h.finalize().into())
}

/// Where a simulated crash stops the work (tests only ever pass anything but `None`).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    None,
    /// After this many tail bytes were written to `JOURNAL.tmp`.
    JournalWrite(u64),
    /// With `JOURNAL.tmp` complete and fsynced, before the rename.
    BeforeRename,
    /// With the journal durable, before the mailbox is touched.
    AfterRename,
    /// After this many tail bytes were copied into the mailbox.
    MidCopy(u64),
    /// After the copy, before the truncate.
    AfterCopy,
    /// After the truncate, before the journal is removed.
    AfterTruncate,
    /// After folding foreign appended bytes into a new journal.
    AfterRejournal,
}

/// How far a (possibly crash-simulated) run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    Done,
    Crashed,
}

/// One source of tail bytes: a byte range of an open file.
pub(crate) type Piece<'a> = (&'a File, std::ops::Range<u64>);

/// Writes a complete journal: tail from `pieces`, stale digest over `stale` of `mbox`, header;
/// then fsync, rename into place, fsync the directory. On error no journal is left behind.
pub(crate) fn write(
    journal: &Path,
    mbox: &File,
    p0: u64,
    s_old: u64,
    pieces: &[Piece<'_>],
    crash: Crash,
) -> Result<Reached, MailboxError> {
    let tmp = tmp_path(journal);
    let result = write_tmp(&tmp, mbox, p0, s_old, pieces, crash);
    match result {
        Ok(Reached::Done) => {}
        Ok(Reached::Crashed) => return Ok(Reached::Crashed),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    if crash == Crash::BeforeRename {
        return Ok(Reached::Crashed);
    }
    if let Err(e) = fs::rename(&tmp, journal) {
        let _ = fs::remove_file(&tmp);
        return Err(MailboxError::Io("install the journal", e));
    }
    // If this fsync fails the journal may or may not survive a power loss. The mailbox has
    // not been touched: withdraw the journal so that the error really means "unchanged".
    if let Err(e) = sync_parent(journal) {
        let _ = fs::remove_file(journal);
        return Err(e);
    }
    Ok(Reached::Done)
}

fn write_tmp(
    tmp: &Path,
    mbox: &File,
    p0: u64,
    s_old: u64,
    pieces: &[Piece<'_>],
    crash: Crash,
) -> Result<Reached, MailboxError> {
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(io_err("create the journal"))?;
    let meta = mbox.metadata().map_err(io_err("stat the mailbox"))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut h = Sha256::new();
    let mut off = JOURNAL_HEADER_LEN;
    let limit = match crash {
        Crash::JournalWrite(n) => Some(n),
        _ => None,
    };
    for (f, range) in pieces {
        let mut crashed = false;
        stream(f, range.clone(), &mut buf, |chunk| {
            let mut chunk = chunk;
            if let Some(l) = limit {
                let room = (l + JOURNAL_HEADER_LEN).saturating_sub(off);
                if room < chunk.len() as u64 {
                    chunk = &chunk[..room as usize];
                    crashed = true;
                }
            }
            h.update(chunk);
            out.write_all_at(chunk, off)
                .map_err(io_err("write the journal"))?;
            off += chunk.len() as u64;
            if crashed {
                return Err(MailboxError::Journal("simulated crash".into()));
            }
            Ok(())
        })
        .or_else(|e| if crashed { Ok(()) } else { Err(e) })?;
        if crashed {
            return Ok(Reached::Crashed);
        }
    }
    let tail_len = off - JOURNAL_HEADER_LEN;
    let end = p0
        .checked_add(tail_len)
        .filter(|&e| e < s_old)
        .ok_or_else(|| MailboxError::Journal("nothing to remove".into()))?;
    let stale_sha = stale_digest(mbox, end..s_old, &mut buf)?;
    let header = Header {
        dev: meta.dev(),
        ino: meta.ino(),
        p0,
        s_old,
        tail_len,
        tail_sha: h.finalize().into(),
        stale_sha,
    };
    out.write_all_at(&header.encode(), 0)
        .map_err(io_err("write the journal"))?;
    out.sync_all().map_err(io_err("sync the journal"))?;
    Ok(Reached::Done)
}

/// Opens and fully verifies `journal`: `Ok(None)` when there is none.
fn open_verified(journal: &Path) -> Result<Option<(File, Header)>, MailboxError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(journal)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MailboxError::Io("open the journal", e)),
    };
    match verify(&f) {
        Ok(h) => Ok(Some((f, h))),
        Err(Verify::Io(e)) => Err(e),
        Err(Verify::Corrupt(why)) => {
            // A journal under its final name was complete and fsynced when installed, so
            // this is storage failure or tampering: keep the evidence, never guess.
            let aside = aside_path(journal, "corrupt");
            fs::rename(journal, &aside).map_err(io_err("move a corrupt journal aside"))?;
            sync_parent(journal)?;
            Err(MailboxError::Journal(format!(
                "{} is corrupt ({why}); moved to {}",
                journal.display(),
                aside.display()
            )))
        }
    }
}

enum Verify {
    Corrupt(String),
    Io(MailboxError),
}

fn verify(f: &File) -> Result<Header, Verify> {
    let len = f
        .metadata()
        .map_err(|e| Verify::Io(MailboxError::Io("stat the journal", e)))?
        .len();
    let mut hb = [0u8; HEADER];
    if len < JOURNAL_HEADER_LEN {
        return Err(Verify::Corrupt(format!("only {len} bytes")));
    }
    f.read_exact_at(&mut hb, 0)
        .map_err(|e| Verify::Io(MailboxError::Io("read the journal", e)))?;
    let h = Header::decode(&hb).map_err(Verify::Corrupt)?;
    if len.checked_sub(JOURNAL_HEADER_LEN) != Some(h.tail_len) {
        return Err(Verify::Corrupt(format!(
            "{} tail bytes, header says {}",
            len - JOURNAL_HEADER_LEN,
            h.tail_len
        )));
    }
    let mut buf = vec![0u8; COPY_CHUNK];
    let sum = digest_range(f, JOURNAL_HEADER_LEN..len, &mut buf).map_err(Verify::Io)?;
    if sum != h.tail_sha {
        return Err(Verify::Corrupt("tail digest mismatch".into()));
    }
    Ok(h)
}

pub(crate) fn read_header(f: &File) -> Result<Header, MailboxError> {
    let mut hb = [0u8; HEADER];
    f.read_exact_at(&mut hb, 0)
        .map_err(io_err("read the journal"))?;
    Header::decode(&hb).map_err(MailboxError::Journal)
}

/// Removes the journal: the last step of every replay. The directory fsync after it is best
/// effort: a journal that reappears after a power loss finds the mailbox truncated, checks
/// the tail digest and is removed again, so failing the commit for it would be wrong.
fn remove(journal: &Path) -> Result<(), MailboxError> {
    match fs::remove_file(journal) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MailboxError::Io("remove the journal", e)),
    }
    let _ = sync_parent(journal);
    Ok(())
}

/// Brings `mbox` to the state `journal` describes, from whatever state a crash left it in,
/// then removes the journal. `jf` is the open, verified journal with header `h`.
pub(crate) fn replay(
    journal: &Path,
    mut jf: File,
    mut h: Header,
    mbox: &File,
    crash: Crash,
) -> Result<Reached, MailboxError> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let size = mbox.metadata().map_err(io_err("stat the mailbox"))?.len();
    let unfinished =
        size >= h.s_old && stale_digest(mbox, h.new_end()..h.s_old, &mut buf)? == h.stale_sha;
    if !unfinished {
        // The truncate happened (anything past the new end is mail appended since): only
        // confirm that the tail really is in place before forgetting the journal.
        let ok =
            size >= h.new_end() && digest_range(mbox, h.p0..h.new_end(), &mut buf)? == h.tail_sha;
        if !ok {
            return Err(MailboxError::Journal(format!(
                "mailbox does not match {} (size {size}, journal expects {} tail bytes at {}); \
                 left in place for the administrator",
                journal.display(),
                h.tail_len,
                h.p0
            )));
        }
        if crash == Crash::AfterTruncate {
            return Ok(Reached::Crashed);
        }
        remove(journal)?;
        return Ok(Reached::Done);
    }
    if size > h.s_old {
        // A foreign MDA appended after breaking our stale dotlock. Moving those bytes down
        // destroys both them and the stale region, so first make a journal whose tail is
        // the old tail plus the appended bytes; the stale region becomes the file's last
        // bytes, which the copy does not touch either.
        let pieces: [Piece<'_>; 2] = [
            (&jf, JOURNAL_HEADER_LEN..JOURNAL_HEADER_LEN + h.tail_len),
            (mbox, h.s_old..size),
        ];
        let wcrash = match crash {
            Crash::JournalWrite(_) | Crash::BeforeRename => crash,
            _ => Crash::None,
        };
        if write(journal, mbox, h.p0, size, &pieces, wcrash)? == Reached::Crashed {
            return Ok(Reached::Crashed);
        }
        jf = File::open(journal).map_err(io_err("reopen the journal"))?;
        h = read_header(&jf)?;
        if crash == Crash::AfterRejournal {
            return Ok(Reached::Crashed);
        }
    }
    // Copy the tail from the journal to p0. Only [p0, p0 + tail_len) is written.
    let limit = match crash {
        Crash::MidCopy(n) => n.min(h.tail_len),
        _ => h.tail_len,
    };
    let mut done = 0u64;
    stream(
        &jf,
        JOURNAL_HEADER_LEN..JOURNAL_HEADER_LEN + limit,
        &mut buf,
        |chunk| {
            mbox.write_all_at(chunk, h.p0 + done)
                .map_err(io_err("write the mailbox"))?;
            done += chunk.len() as u64;
            Ok(())
        },
    )?;
    if matches!(crash, Crash::MidCopy(_)) {
        return Ok(Reached::Crashed);
    }
    mbox.sync_data().map_err(io_err("sync the mailbox"))?;
    if crash == Crash::AfterCopy {
        return Ok(Reached::Crashed);
    }
    mbox.set_len(h.new_end())
        .map_err(io_err("truncate the mailbox"))?;
    mbox.sync_all().map_err(io_err("sync the mailbox"))?;
    if crash == Crash::AfterTruncate {
        return Ok(Reached::Crashed);
    }
    remove(journal)?;
    Ok(Reached::Done)
}

/// Finishes an interrupted compaction recorded in `journal`, if any; removes a journal that
/// was never completed (the mailbox was not touched yet). The caller holds the content lock.
/// Returns true when a journal was replayed.
///
/// A journal for another inode (the mailbox was replaced) or one that fails its checksums is
/// moved aside (`JOURNAL.orphan-…` / `JOURNAL.corrupt-…`) and reported as
/// `MailboxError::Journal`, so it is logged once and the next open proceeds. A valid journal
/// the mailbox contents contradict is left in place and reported: never guessed at.
pub fn recover(journal: &Path, mailbox_path: &Path, file: &File) -> Result<bool, MailboxError> {
    recover_inner(journal, mailbox_path, file, Crash::None).map(|r| r.is_some())
}

pub(crate) fn recover_inner(
    journal: &Path,
    mailbox_path: &Path,
    file: &File,
    crash: Crash,
) -> Result<Option<Reached>, MailboxError> {
    // A .tmp is a journal whose writing never finished: the mailbox was not touched.
    match fs::remove_file(tmp_path(journal)) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(MailboxError::Io("remove an incomplete journal", e)),
    }
    let Some((jf, h)) = open_verified(journal)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(io_err("stat the mailbox"))?;
    // Only the inode number is compared: st_dev of device-mapper and NFS volumes can change
    // across the reboot that typically precedes a recovery, and the digests below catch
    // anything an inode-number coincidence could let through.
    if meta.ino() != h.ino {
        let aside = aside_path(journal, "orphan");
        fs::rename(journal, &aside).map_err(io_err("move an orphan journal aside"))?;
        sync_parent(journal)?;
        return Err(MailboxError::Journal(format!(
            "{} belongs to inode {}, but {} is now inode {} (mailbox replaced); moved to {}",
            journal.display(),
            h.ino,
            mailbox_path.display(),
            meta.ino(),
            aside.display()
        )));
    }
    replay(journal, jf, h, file, crash).map(Some)
}

/// Whether a path exists without following a symlink (a dangling symlink exists).
pub(crate) fn exists(p: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
