//! The persistent per-mailbox index of an mbox: what a scan found, kept in the state
//! directory so that a session on an unchanged mailbox reads small fixed-size records
//! instead of the whole mbox, and a session after new mail scans only the new bytes.
//!
//! The rule: the index is a cache, never an authority. Anything that does not check out
//! means a full scan and a rewritten index, never a failed session. Format, validation and
//! writing: doc/DESIGN.md, "The mbox index".

#![forbid(unsafe_code)]

use crate::canon::CanonOptions;
use crate::canon::Quoting;
use crate::error::{IndexProblem, MailboxError};
use crate::mbox::scan::{self, MessageInfo, ScanResult, Unterminated};
use crate::mbox::{message, uidl};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The first 8 bytes of every index.
pub const INDEX_MAGIC: &[u8; 8] = b"POPSPIDX";
/// Bumped on any change of layout or meaning: an index of another version is rebuilt.
pub const INDEX_VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 192;
/// Bytes of one record: four u64 words and the 16-byte digest.
pub const RECORD_LEN: usize = 32 + uidl::DIGEST_LEN;
/// Mailbox bytes before the indexed end whose digest must still match: catches a mailbox
/// rewritten or truncated and regrown in place under the same inode.
pub const TAIL_CHECK_LEN: u64 = 4096;
/// Records read or written per system call (bounded memory whatever the count).
pub const INDEX_IO_RECORDS: usize = 1365;
/// Mode of an index: it describes the user's mail.
pub const INDEX_MODE: u32 = 0o600;

const HEADER_SUM_AT: usize = 176;

/// The mailbox as it was indexed: identity, times, the indexed end and a digest of the bytes
/// just before it. Taken under the content lock, right after the scan (or the compaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    end: u64,
    tail_len: u64,
    tail_sha: [u8; 32],
}

impl Stamp {
    /// Stamps `file` (an fstat and one read of at most `TAIL_CHECK_LEN` bytes) for an index
    /// that covers `0..end`.
    pub fn take(file: &File, end: u64) -> io::Result<Stamp> {
        let m = file.metadata()?;
        let (tail_len, tail_sha) = tail_digest(file, end)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            end,
            tail_len,
            tail_sha,
        })
    }
}

fn tail_digest(file: &File, end: u64) -> io::Result<(u64, [u8; 32])> {
    let len = end.min(TAIL_CHECK_LEN);
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, end - len)?;
    Ok((len, Sha256::digest(&buf).into()))
}

/// How the index served this scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Not used (none, or rejected): the whole mailbox was scanned.
    FullScan,
    /// The mailbox was as indexed: nothing of it was scanned.
    Unchanged,
    /// The mailbox grew: only `bytes` (the last indexed message and the new mail) were scanned.
    Extended { bytes: u64 },
}

/// What `open_scan` found: the scan, the stamp to index it under, whether the index needs
/// writing, and notes for the log.
#[derive(Debug)]
pub struct Opened {
    pub scan: ScanResult,
    pub stamp: Stamp,
    pub served: Served,
    /// True when the index on disk does not describe `scan` (write it with `write`).
    pub dirty: bool,
    pub notes: Vec<String>,
}

/// Scans the mbox open as `file` (length `len`, under the content lock) with the help of the
/// index at `index`, unless `use_index` is false (an interrupted update was just finished:
/// the layout moved). Only errors reading the mailbox itself are errors; anything wrong with
/// the index is a note and a full scan.
pub fn open_scan(
    file: &File,
    len: u64,
    index: &Path,
    canon: CanonOptions,
    use_index: bool,
) -> io::Result<Opened> {
    let mut notes = Vec::new();
    if use_index {
        match load(index, file, len, canon) {
            Ok(mut prefix) if prefix.extent_end == len => {
                prefix.finish();
                return Ok(Opened {
                    stamp: Stamp::take(file, len)?,
                    scan: prefix,
                    served: Served::Unchanged,
                    dirty: false,
                    notes,
                });
            }
            Ok(mut prefix) => {
                let from = prefix
                    .messages
                    .last()
                    .map_or(0, MessageInfo::from_line_start);
                prefix.drop_last();
                match scan::scan_from(file, from, len, canon) {
                    Ok(tail) => {
                        prefix.extend_with(tail);
                        prefix.finish();
                        return Ok(Opened {
                            stamp: Stamp::take(file, len)?,
                            scan: prefix,
                            served: Served::Extended { bytes: len - from },
                            dirty: true,
                            notes,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        notes.push(format!("index {}: {e}; full scan", index.display()));
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(IndexProblem::Missing) => {}
            Err(p) => notes.push(format!(
                "index {}: {p}; rebuilt by a full scan",
                index.display()
            )),
        }
    }
    let scan = scan::scan(file, len, canon)?;
    let dirty = !scan.is_empty();
    Ok(Opened {
        stamp: Stamp::take(file, len)?,
        scan,
        served: Served::FullScan,
        dirty,
        notes,
    })
}

fn flags(canon: CanonOptions, unterminated: Unterminated) -> u32 {
    let q = match canon.quoting {
        None => 0,
        Some(Quoting::Mboxrd) => 1,
        Some(Quoting::Mboxo) => 2,
    };
    let u = match unterminated {
        Unterminated::No => 0,
        Unterminated::Message => 1,
        Unterminated::FromLine => 2,
    };
    q | (u32::from(canon.hide_spool_headers) << 2) | (u << 4)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn arr32(b: &[u8], at: usize) -> [u8; 32] {
    let mut w = [0u8; 32];
    w.copy_from_slice(&b[at..at + 32]);
    w
}

/// Reads and validates the index at `path` against the mbox open as `file` (length `len`).
/// The result is not `finish`ed (dup ordinals and warnings come after any tail scan).
pub fn load(
    path: &Path,
    file: &File,
    len: u64,
    canon: CanonOptions,
) -> Result<ScanResult, IndexProblem> {
    let idx = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IndexProblem::Missing),
        Err(e) => return Err(IndexProblem::Unreadable(e)),
    };
    let ilen = match idx.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Err(IndexProblem::Corrupt("not a regular file")),
        Err(e) => return Err(IndexProblem::Unreadable(e)),
    };
    let mut h = [0u8; HEADER_LEN];
    if ilen < HEADER_LEN as u64 {
        return Err(IndexProblem::Corrupt("shorter than its header"));
    }
    idx.read_exact_at(&mut h, 0)
        .map_err(IndexProblem::Unreadable)?;
    if &h[..8] != INDEX_MAGIC {
        return Err(IndexProblem::Corrupt("bad magic"));
    }
    if Sha256::digest(&h[..HEADER_SUM_AT])[..16] != h[HEADER_SUM_AT..HEADER_SUM_AT + 16] {
        return Err(IndexProblem::Corrupt("header checksum"));
    }
    if u32_at(&h, 8) != INDEX_VERSION || u32_at(&h, 12) as usize != RECORD_LEN {
        return Err(IndexProblem::Corrupt("another version"));
    }
    let fl = u32_at(&h, 16);
    let unterminated = match (fl >> 4) & 3 {
        0 => Unterminated::No,
        1 => Unterminated::Message,
        2 => Unterminated::FromLine,
        _ => return Err(IndexProblem::Corrupt("bad flags")),
    };
    if fl & 0xf != flags(canon, Unterminated::No) {
        return Err(IndexProblem::Stale(
            "made with other quoting or header options",
        ));
    }
    let stamp = Stamp {
        dev: u64_at(&h, 24),
        ino: u64_at(&h, 32),
        mtime: (u64_at(&h, 40) as i64, u64_at(&h, 48) as i64),
        ctime: (u64_at(&h, 56) as i64, u64_at(&h, 64) as i64),
        end: u64_at(&h, 72),
        tail_len: u64_at(&h, 104),
        tail_sha: arr32(&h, 112),
    };
    let (preamble_len, nul_at, count) = (u64_at(&h, 80), u64_at(&h, 88), u64_at(&h, 96));
    let records_sha = arr32(&h, 144);
    let want_len = count
        .checked_mul(RECORD_LEN as u64)
        .and_then(|r| r.checked_add(HEADER_LEN as u64));
    if count == 0 || want_len != Some(ilen) {
        return Err(IndexProblem::Corrupt(
            "length does not match the record count",
        ));
    }
    if stamp.tail_len != stamp.end.min(TAIL_CHECK_LEN) || preamble_len >= stamp.end {
        return Err(IndexProblem::Corrupt("bad extent"));
    }
    let meta = file.metadata().map_err(IndexProblem::Unreadable)?;
    if meta.dev() != stamp.dev || meta.ino() != stamp.ino {
        return Err(IndexProblem::Stale("made for another file"));
    }
    if len < stamp.end {
        return Err(IndexProblem::Stale("mailbox is shorter than indexed"));
    }
    if len == stamp.end
        && ((meta.mtime(), meta.mtime_nsec()) != stamp.mtime
            || (meta.ctime(), meta.ctime_nsec()) != stamp.ctime)
    {
        return Err(IndexProblem::Stale("mailbox was modified in place"));
    }
    match tail_digest(file, stamp.end) {
        Ok((_, sha)) if sha == stamp.tail_sha => {}
        Ok(_) => {
            return Err(IndexProblem::Stale(
                "mailbox bytes before the indexed end changed",
            ))
        }
        Err(e) => return Err(IndexProblem::Unreadable(e)),
    }
    let mut res = ScanResult::default();
    res.preamble_len = preamble_len;
    res.extent_end = stamp.end;
    res.nul_at = (nul_at != u64::MAX).then_some(nul_at);
    res.unterminated = unterminated;
    // The length check bounds the count by the index file's own size.
    res.reserve(usize::try_from(count).map_err(|_| IndexProblem::Corrupt("count"))?);
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; INDEX_IO_RECORDS * RECORD_LEN];
    let mut at = HEADER_LEN as u64;
    let mut next = preamble_len;
    while at < ilen {
        let n = ((ilen - at) as usize).min(buf.len());
        idx.read_exact_at(&mut buf[..n], at)
            .map_err(IndexProblem::Unreadable)?;
        at += n as u64;
        sha.update(&buf[..n]);
        for r in buf[..n].chunks_exact(RECORD_LEN) {
            let words = [u64_at(r, 0), u64_at(r, 8), u64_at(r, 16), u64_at(r, 24)];
            let info = MessageInfo::from_words(words).ok_or(IndexProblem::Corrupt("bad record"))?;
            if info.from_line_start() != next || info.next_start() > stamp.end {
                return Err(IndexProblem::Corrupt("records do not tile the mailbox"));
            }
            next = info.next_start();
            let mut d = [0u8; uidl::DIGEST_LEN];
            d.copy_from_slice(&r[32..]);
            res.push_indexed(info, &d);
        }
    }
    if <[u8; 32]>::from(sha.finalize()) != records_sha {
        return Err(IndexProblem::Corrupt("records checksum"));
    }
    if next != stamp.end {
        return Err(IndexProblem::Corrupt(
            "records do not reach the indexed end",
        ));
    }
    for i in [0, res.len() - 1] {
        match message::verify(file, &res.messages[i], res.digest_hex(i)) {
            Ok(()) => {}
            Err(MailboxError::Io(_, e)) => return Err(IndexProblem::Unreadable(e)),
            Err(_) => return Err(IndexProblem::Stale("an indexed message is no longer there")),
        }
    }
    Ok(res)
}

/// What goes into an index besides the records.
struct Head<'a> {
    canon: CanonOptions,
    unterminated: Unterminated,
    stamp: &'a Stamp,
    preamble_len: u64,
    nul_at: Option<u64>,
    count: u64,
}

/// Writes the index of everything `scan` found, stamped `stamp` (taken when `scan` was).
/// The file belongs to whoever creates it: a root caller writing a user's index does so
/// inside [`crate::userfs::AsUser`], never by giving a file away.
pub fn write(path: &Path, scan: &ScanResult, canon: CanonOptions, stamp: &Stamp) -> io::Result<()> {
    if scan.is_empty() || stamp.end != scan.extent_end {
        return remove(path);
    }
    let head = Head {
        canon,
        unterminated: scan.unterminated,
        stamp,
        preamble_len: scan.preamble_len,
        nul_at: scan.nul_at,
        count: scan.len() as u64,
    };
    let mut records = (0..scan.len()).map(|i| {
        let d = scan.digest(i).unwrap_or_default();
        (scan.messages[i], d)
    });
    write_records(path, &head, &mut records)
}

/// Writes the index of the mailbox after `commit::Compaction` removed `deleted` (sorted, disjoint
/// whole-message ranges) from the session's view `scan`: the kept messages, moved back by
/// the bytes removed before them. The index covers up to the last kept message, which is a
/// prefix of the mailbox whatever was appended meanwhile or lies past a `max_messages` view.
/// `stamp` must be taken after the compaction, for that end (see `end_after_commit`).
pub fn write_after_commit(
    path: &Path,
    scan: &ScanResult,
    deleted: &[Range<u64>],
    canon: CanonOptions,
    stamp: &Stamp,
) -> io::Result<()> {
    let Some(end) = end_after_commit(scan, deleted) else {
        return remove(path);
    };
    if stamp.end != end {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "stamp taken for another end",
        ));
    }
    let removed_before = |off: u64| -> u64 {
        deleted
            .iter()
            .take_while(|r| r.start < off)
            .map(|r| r.end.min(off) - r.start)
            .sum()
    };
    let kept = |m: &&MessageInfo| !hit(deleted, m.from_line_start());
    let count = scan.messages.iter().filter(|m| kept(m)).count() as u64;
    let last_kept = scan.messages.iter().rev().find(|m| kept(m));
    let unterminated = match last_kept {
        Some(m) if m.next_start() == scan.extent_end => scan.unterminated,
        _ => Unterminated::No,
    };
    let nul_at = scan
        .nul_at
        .filter(|&n| n < scan.extent_end && !hit(deleted, n))
        .map(|n| n - removed_before(n))
        .filter(|&n| n < end);
    let head = Head {
        canon,
        unterminated,
        stamp,
        preamble_len: scan.preamble_len,
        nul_at,
        count,
    };
    // One pass: ranges and messages are both in file order.
    let mut shift = 0u64;
    let mut r = 0usize;
    let mut records = scan.messages.iter().enumerate().filter_map(|(i, m)| {
        while r < deleted.len() && deleted[r].end <= m.from_line_start() {
            shift += deleted[r].end - deleted[r].start;
            r += 1;
        }
        if r < deleted.len() && deleted[r].contains(&m.from_line_start()) {
            return None;
        }
        Some((m.shifted_back(shift), scan.digest(i).unwrap_or_default()))
    });
    write_records(path, &head, &mut records)
}

/// Where the index written by `write_after_commit` ends: the shifted end of the last kept
/// message; `None` when nothing is kept.
pub fn end_after_commit(scan: &ScanResult, deleted: &[Range<u64>]) -> Option<u64> {
    let m = scan
        .messages
        .iter()
        .rev()
        .find(|m| !hit(deleted, m.from_line_start()))?;
    let removed: u64 = deleted
        .iter()
        .filter(|r| r.end <= m.from_line_start())
        .map(|r| r.end - r.start)
        .sum();
    Some(m.next_start() - removed)
}

/// Whether `off` lies in one of the sorted, disjoint `ranges` (binary search: a commit may
/// delete a hundred thousand messages).
fn hit(ranges: &[Range<u64>], off: u64) -> bool {
    let k = ranges.partition_point(|r| r.end <= off);
    ranges.get(k).is_some_and(|r| r.contains(&off))
}

/// Removes the index (nothing to index); a missing one is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn write_records(
    path: &Path,
    head: &Head<'_>,
    records: &mut dyn Iterator<Item = (MessageInfo, uidl::MessageDigest)>,
) -> io::Result<()> {
    let tmp = tmp_path(path);
    // A stale .tmp (a writer that crashed) is simply replaced; the session lock (or the
    // content lock, for pop-spool) keeps two writers of one index apart in practice, and if
    // not, each rename still installs a whole, self-checking index.
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(INDEX_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    let result = (|| {
        let mut out = io::BufWriter::with_capacity(INDEX_IO_RECORDS * RECORD_LEN, &file);
        out.write_all(&[0u8; HEADER_LEN])?;
        let mut sha = Sha256::new();
        let mut n = 0u64;
        for (info, d) in records {
            let mut r = [0u8; RECORD_LEN];
            for (k, w) in info.to_words().iter().enumerate() {
                r[8 * k..8 * k + 8].copy_from_slice(&w.to_le_bytes());
            }
            r[32..].copy_from_slice(&d);
            sha.update(r);
            out.write_all(&r)?;
            n += 1;
        }
        out.flush()?;
        drop(out);
        if n != head.count {
            return Err(io::Error::other("record count changed while writing"));
        }
        let h = header(head, &sha.finalize().into());
        file.write_all_at(&h, 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn header(head: &Head<'_>, records_sha: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let s = head.stamp;
    h[..8].copy_from_slice(INDEX_MAGIC);
    let mut put = |at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
    put(8, &INDEX_VERSION.to_le_bytes());
    put(12, &(RECORD_LEN as u32).to_le_bytes());
    put(16, &flags(head.canon, head.unterminated).to_le_bytes());
    put(24, &s.dev.to_le_bytes());
    put(32, &s.ino.to_le_bytes());
    put(40, &s.mtime.0.to_le_bytes());
    put(48, &s.mtime.1.to_le_bytes());
    put(56, &s.ctime.0.to_le_bytes());
    put(64, &s.ctime.1.to_le_bytes());
    put(72, &s.end.to_le_bytes());
    put(80, &head.preamble_len.to_le_bytes());
    put(88, &head.nul_at.unwrap_or(u64::MAX).to_le_bytes());
    put(96, &head.count.to_le_bytes());
    put(104, &s.tail_len.to_le_bytes());
    put(112, &s.tail_sha);
    put(144, records_sha);
    let sum = Sha256::digest(&h[..HEADER_SUM_AT]);
    h[HEADER_SUM_AT..HEADER_SUM_AT + 16].copy_from_slice(&sum[..16]);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{state_paths, OpenOptions};
    use crate::mbox;
    use proptest::prelude::*;

    const RD: CanonOptions = CanonOptions {
        quoting: Some(Quoting::Mboxrd),
        hide_spool_headers: true,
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        mbox: PathBuf,
        index: PathBuf,
        opts: OpenOptions,
    }

    fn fixture(data: &[u8]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("mbox");
        std::fs::write(&mbox, data).unwrap();
        let opts = OpenOptions::with_state_dir(dir.path().join("state"));
        let index = state_paths(&opts.state_dir, &mbox).index;
        std::fs::create_dir_all(&opts.state_dir).unwrap();
        Fixture {
            _dir: dir,
            mbox,
            index,
            opts,
        }
    }

    fn rw(p: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap()
    }

    fn append(p: &Path, b: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(p)
            .unwrap()
            .write_all(b)
            .unwrap();
    }

    /// Everything a session sees, to compare the index path with a fresh scan.
    fn view(s: &ScanResult) -> Vec<(MessageInfo, String)> {
        (0..s.len())
            .map(|i| (s.messages[i], s.uidl(i).to_string()))
            .collect()
    }

    /// Opens through the index (writing it when dirty, as a session does) and checks the
    /// result against a fresh full scan.
    fn open_and_check(fx: &Fixture) -> Opened {
        let f = rw(&fx.mbox);
        let len = f.metadata().unwrap().len();
        let o = open_scan(&f, len, &fx.index, RD, true).unwrap();
        let fresh = scan::scan(&f, len, RD).unwrap();
        assert_eq!(view(&o.scan), view(&fresh), "served {:?}", o.served);
        assert_eq!(o.scan.extent_end, fresh.extent_end);
        assert_eq!(o.scan.preamble_len, fresh.preamble_len);
        assert_eq!(o.scan.warnings, fresh.warnings);
        if o.dirty {
            write(&fx.index, &o.scan, RD, &o.stamp).unwrap();
        }
        o
    }

    fn msg(i: usize) -> Vec<u8> {
        format!("From s{i}@x Mon Jan  1 00:00:00 2024\nMessage-ID: <{i}@x>\n\nbody {i}\n\n")
            .into_bytes()
    }

    #[test]
    fn cold_warm_and_appended() {
        let data: Vec<u8> = (0..50).flat_map(msg).collect();
        let fx = fixture(&data);
        assert_eq!(open_and_check(&fx).served, Served::FullScan);
        assert!(fx.index.exists());
        let before = std::fs::metadata(&fx.index).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let o = open_and_check(&fx);
        assert_eq!(o.served, Served::Unchanged);
        assert!(!o.dirty, "an unchanged mailbox never rewrites its index");
        assert_eq!(
            std::fs::metadata(&fx.index).unwrap().modified().unwrap(),
            before
        );
        append(&fx.mbox, &[msg(50), msg(3)].concat());
        let o = open_and_check(&fx);
        let last = msg(49).len() as u64;
        assert_eq!(
            o.served,
            Served::Extended {
                bytes: last + (msg(50).len() + msg(3).len()) as u64
            }
        );
        assert!(o.scan.uidl(51).ends_with("-2"));
        assert_eq!(open_and_check(&fx).served, Served::Unchanged);
    }

    #[test]
    fn an_appended_tail_can_change_the_last_message() {
        // No final newline, then data that is not a separator: the last message grows.
        let fx = fixture(b"From a\nX: 1\n\nFrom b\nX: 2\n\nbody");
        open_and_check(&fx);
        append(&fx.mbox, b"From not a separator\n\n");
        assert!(matches!(
            open_and_check(&fx).served,
            Served::Extended { .. }
        ));
        append(&fx.mbox, b"From c\nX: 3\n\n");
        let o = open_and_check(&fx);
        assert_eq!(o.scan.len(), 3);
        // Preamble and a truncated From line survive the index too.
        let fx = fixture(b"junk\n\0\nFrom a\nX: 1\n\nFrom b");
        open_and_check(&fx);
        assert_eq!(open_and_check(&fx).served, Served::Unchanged);
        append(&fx.mbox, b"\nX: 2\n");
        open_and_check(&fx);
    }

    #[test]
    fn damaged_indexes_are_rebuilt() {
        let data: Vec<u8> = (0..30).flat_map(msg).collect();
        let fx = fixture(&data);
        open_and_check(&fx);
        let good = std::fs::read(&fx.index).unwrap();
        let spots = [
            0,
            9,
            20,
            30,
            75,
            100,
            120,
            150,
            180,
            HEADER_LEN + 3,
            good.len() - 1,
        ];
        for at in spots {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&fx.index, &bad).unwrap();
            let o = open_and_check(&fx);
            assert_eq!(o.served, Served::FullScan, "byte {at}");
            assert_eq!(o.notes.len(), 1, "byte {at}: {:?}", o.notes);
            assert_eq!(std::fs::read(&fx.index).unwrap(), good, "byte {at}");
        }
        for cut in [0, 10, HEADER_LEN, good.len() - 5] {
            std::fs::write(&fx.index, &good[..cut]).unwrap();
            assert_eq!(open_and_check(&fx).served, Served::FullScan, "cut {cut}");
        }
        // A directory in its place: noted, never fatal.
        std::fs::remove_file(&fx.index).unwrap();
        std::fs::create_dir(&fx.index).unwrap();
        let f = rw(&fx.mbox);
        let o = open_scan(&f, data.len() as u64, &fx.index, RD, true).unwrap();
        assert_eq!((o.served, o.notes.len()), (Served::FullScan, 1));
        assert!(write(&fx.index, &o.scan, RD, &o.stamp).is_err());
    }

    #[test]
    fn stale_indexes_are_not_believed() {
        let data: Vec<u8> = (0..30).flat_map(msg).collect();
        let fx = fixture(&data);
        open_and_check(&fx);
        let good = std::fs::read(&fx.index).unwrap();
        type Change = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "same size rewritten in place",
                Box::new(|p: &Path| {
                    let d = std::fs::read(p).unwrap();
                    let s = String::from_utf8(d).unwrap().replace("<3@x>", "<4@x>");
                    rw(p).write_all_at(s.as_bytes(), 0).unwrap();
                }),
            ),
            (
                "replaced",
                Box::new(|p: &Path| {
                    let d = std::fs::read(p).unwrap();
                    let t = p.with_extension("new");
                    std::fs::write(&t, d).unwrap();
                    std::fs::rename(&t, p).unwrap();
                }),
            ),
            (
                "truncated",
                Box::new(|p: &Path| rw(p).set_len(100).unwrap()),
            ),
            (
                "shifted then grown",
                Box::new(|p: &Path| {
                    let d = std::fs::read(p).unwrap();
                    let mut x = d[msg(0).len()..].to_vec();
                    x.extend_from_slice(&msg(99));
                    x.extend_from_slice(&msg(98));
                    rw(p).write_all_at(&x, 0).unwrap();
                }),
            ),
            ("other options", Box::new(|_: &Path| {})),
        ];
        for (what, change) in cases {
            std::fs::write(&fx.mbox, &data).unwrap();
            let f = rw(&fx.mbox);
            let o = open_scan(&f, data.len() as u64, &fx.index, RD, false).unwrap();
            write(&fx.index, &o.scan, RD, &o.stamp).unwrap();
            change(&fx.mbox);
            if what == "other options" {
                let f = rw(&fx.mbox);
                let o =
                    open_scan(&f, data.len() as u64, &fx.index, CanonOptions::PLAIN, true).unwrap();
                assert_eq!(o.served, Served::FullScan);
                continue;
            }
            let o = open_and_check(&fx);
            assert_eq!(o.served, Served::FullScan, "{what}");
            assert!(o.notes[0].contains("stale"), "{what}: {:?}", o.notes);
        }
        let _ = good;
    }

    /// A message for the property test: duplicates on purpose (few distinct headers), LF or
    /// CRLF, bodies with quoted From lines, sometimes no separator blank line.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        (0u8..4, 0u8..3, any::<bool>(), any::<bool>(), 0usize..300).prop_map(
            |(who, subj, crlf, blank, body)| {
                let nl = if crlf { "\r\n" } else { "\n" };
                let mut m = format!(
                    "From u{who}@x Mon Jan  1 00:00:00 2024{nl}Subject: {subj}{nl}Status: RO{nl}{nl}"
                );
                for k in 0..body / 40 {
                    m.push_str(if k % 3 == 0 { ">From here" } else { "text line" });
                    m.push_str(nl);
                }
                m.push_str(&"x".repeat(body % 40));
                m.push_str(nl);
                if blank {
                    m.push_str(nl);
                }
                m.into_bytes()
            },
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<Vec<u8>>),
        Delete(Vec<bool>),
        Session,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(message(), 1..4).prop_map(Op::Append),
            proptest::collection::vec(any::<bool>(), 0..12).prop_map(Op::Delete),
            Just(Op::Session),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Sizes, UIDLs and offsets from the index equal a fresh scan's after any sequence of
        /// deliveries and sessions that delete (through the real commit and its index update).
        #[test]
        fn index_equals_fresh_scan(
            first in proptest::collection::vec(message(), 1..10),
            ops in proptest::collection::vec(op(), 1..8),
            max in proptest::option::of(1usize..6),
        ) {
            let fx = fixture(&first.concat());
            let mut opts = fx.opts.clone();
            opts.max_messages = max;
            for op in ops {
                match op {
                    Op::Append(ms) => append(&fx.mbox, &ms.concat()),
                    Op::Session => {
                        let mut m = mbox::open(&fx.mbox, &opts).unwrap();
                        let del = vec![false; m.count()];
                        m.commit(&del, &[]).unwrap();
                    }
                    Op::Delete(mask) => {
                        let mut m = mbox::open(&fx.mbox, &opts).unwrap();
                        let n = m.count();
                        let del: Vec<bool> = (0..n).map(|i| mask.get(i).copied().unwrap_or(false)).collect();
                        m.commit(&del, &[]).unwrap();
                    }
                }
                let f = rw(&fx.mbox);
                let len = f.metadata().unwrap().len();
                let fresh = scan::scan(&f, len, RD).unwrap();
                if len == 0 { continue; }
                // What the index holds right now (written by the last session's open or commit).
                let indexed = fx.index.exists();
                let o = open_scan(&f, len, &fx.index, RD, true).unwrap();
                prop_assert!(o.notes.is_empty(), "{:?}", o.notes);
                if indexed {
                    prop_assert!(o.served != Served::FullScan, "the index was not used");
                }
                prop_assert_eq!(view(&o.scan), view(&fresh));
                prop_assert_eq!(&o.scan.warnings, &fresh.warnings);
            }
        }
    }
}
