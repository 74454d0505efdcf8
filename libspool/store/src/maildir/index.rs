//! The index of a Maildir in the state directory: the last session's listing of `new/` and
//! `cur/` with the exact POP3 size of every message, so that a warm session reads no
//! directory and opens no message file.
//!
//! * **Listing validity.** The index records, for `new/` and `cur/`, the identity (device,
//!   inode) and mtime and ctime of the directory as `stat` saw them *before* it was read, and
//!   the wall-clock time the scan started. A later session believes the recorded listing of a
//!   folder, and does not read it, only when its `stat` is identical **and** the recorded
//!   timestamps are older than the scan start by more than [`RACY_WINDOW`]. The second
//!   condition is git's "racily clean" rule: a file delivered in the same timestamp tick as
//!   the recorded `stat`, but after the folder was read, leaves the folder's mtime unchanged;
//!   such a folder is read again at the next session (which then records a safe stamp). Any
//!   rename into or out of a folder and any deletion changes its mtime, so new mail, another
//!   client's moves and deletions are always seen. A message that another client moves while
//!   a session runs is followed at RETR and QUIT by the caller (`relocate`).
//! * **Merge, not hash.** A folder that changed is read again and sorted; the index, sorted
//!   the same way (by leading timestamp, then unique part), is streamed alongside it and each
//!   message keeps its size when its unique part is found, with no hash table and no second
//!   copy of the index in memory.
//! * **Format** (little-endian): [`INDEX_MAGIC`]; scan start (`i64` seconds, `u32` ns); two
//!   folder stamps (`new/`, `cur/`: `u8` present, `u64` dev, `u64` ino, mtime and ctime as
//!   `i64`+`u32`); `u64` record count; the records in listing order, each `u8` flags
//!   ([`F_CUR`], [`F_SIZED`], [`F_STAT`]), `u16` name length, the name, then with `F_SIZED`
//!   the `u64` POP3 size, then with `F_STAT` the `u64` stored length and the mtime
//!   (`i64`+`u32`); last the SHA-256 of every byte before it. A sized record without
//!   `F_STAT` is valid only while its name's `,S=` is a plausible stored length for its size.
//!   Anything that does not parse exactly (bad magic, truncation, a bad checksum, trailing
//!   bytes, an implausible size): the whole index is ignored with a warning and rebuilt,
//!   never a failed session. The text cache of earlier versions is recognised and replaced
//!   silently.
//! * **Writing.** Only when the session's scan changed something (a folder read again, a size
//!   measured, the index unusable), under the session lock, as `NAME.tmp` (mode 0600,
//!   `O_NOFOLLOW`), fsynced and renamed over `NAME`: a reader sees the old or the new index.

#![forbid(unsafe_code)]

use super::listing::{nsec, Listing, Sizes, StatKey, F_CUR, F_SIZED, F_STAT, MAX_RECORD_SIZE};
use super::names::{cmp_unique, leading_timestamp, name_field, unique_part};
use crate::error::IndexProblem;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First bytes of an index; the last byte is the format version.
pub const INDEX_MAGIC: &[u8; 8] = b"POPSPMD\x02";

/// First line of the text size cache of earlier versions: replaced without a warning.
pub const OLD_TEXT_CACHE_HEADER: &[u8] = b"popspool-maildir-sizes 1\n";

/// A folder whose recorded mtime or ctime is this close to (or after) the scan start is read
/// again next time: covers the coarse kernel clock (a few ms), one-second (ext3, NFSv2) and
/// two-second (FAT) timestamps, and a little clock skew with a file server.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Mode of an index: it describes the user's mail.
pub const INDEX_MODE: u32 = 0o600;

/// Read and write buffer of the index: few system calls, small transient memory.
pub const INDEX_BUF_LEN: usize = 256 * 1024;

const DISK_FLAGS: u8 = F_CUR | F_SIZED | F_STAT;

const STAMP_LEN: usize = 1 + 8 + 8 + 12 + 12;

const HEADER_LEN: usize = 8 + 12 + 2 * STAMP_LEN + 8;

/// Can a stored length `lf` have the POP3 size `crlf`? Canonical form only adds bytes (a CR
/// before each LF, a final CRLF), so at most doubling.
fn plausible(lf: u64, crlf: u64) -> bool {
    crlf >= lf && crlf <= lf.saturating_mul(2).saturating_add(2) && crlf <= MAX_RECORD_SIZE
}

/// Identity and timestamps of a folder, as `stat` saw them before it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    pub dev: u64,
    pub ino: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

impl DirStamp {
    /// The stamp of a folder from the `fstat` of its open descriptor (taken before it is
    /// read: a change after this is a change of stamp).
    pub fn from_stat(st: &rustix::fs::Stat) -> DirStamp {
        DirStamp {
            dev: st.st_dev,
            ino: st.st_ino,
            mtime: (st.st_mtime, nsec(st.st_mtime_nsec)),
            ctime: (st.st_ctime, nsec(st.st_ctime_nsec)),
        }
    }

    /// Not racy: both timestamps older than `scan_start - RACY_WINDOW`.
    pub fn settled(&self, scan_start: (i64, u32)) -> bool {
        let window = i64::try_from(RACY_WINDOW.as_secs()).unwrap_or(i64::MAX);
        let limit = (scan_start.0.saturating_sub(window), scan_start.1);
        self.mtime < limit && self.ctime < limit
    }
}

/// Seconds and nanoseconds since the epoch (negative clocks are treated as the epoch).
pub fn timestamp(t: SystemTime) -> (i64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// What an index records about the folders it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub scan_start: (i64, u32),
    /// `new/`, `cur/`.
    pub stamps: [Option<DirStamp>; 2],
}

impl IndexHeader {
    /// May the recorded listing of folder `d` (0 `new/`, 1 `cur/`) be used instead of reading
    /// it, given what `stat` shows now?
    pub fn folder_valid(&self, d: usize, now: Option<DirStamp>) -> bool {
        match (self.stamps[d], now) {
            (Some(rec), Some(now)) => rec == now && rec.settled(self.scan_start),
            _ => false,
        }
    }
}

/// One record of an index being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldRec<'a> {
    pub name: &'a [u8],
    pub in_cur: bool,
    pub size: Option<u64>,
    /// For sizes validated by `lstat`.
    pub stat: Option<StatKey>,
}

/// Streams an index: the header at open, then the records one at a time; the checksum is
/// verified after the last record, so a caller must be ready to discard what it took.
#[derive(Debug)]
pub struct IndexReader {
    file: File,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Bytes of the file not yet in `buf`.
    unread: u64,
    sha: Sha256,
    pub header: IndexHeader,
    left: u64,
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_i64(b: &[u8]) -> i64 {
    le_u64(b) as i64
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn parse_time(b: &[u8]) -> Result<(i64, u32), IndexProblem> {
    let t = (le_i64(b), le_u32(&b[8..]));
    if t.1 >= 1_000_000_000 {
        return Err(IndexProblem::Corrupt("bad timestamp"));
    }
    Ok(t)
}

fn parse_stamp(b: &[u8]) -> Result<Option<DirStamp>, IndexProblem> {
    match b[0] {
        0 => Ok(None),
        1 => Ok(Some(DirStamp {
            dev: le_u64(&b[1..]),
            ino: le_u64(&b[9..]),
            mtime: parse_time(&b[17..])?,
            ctime: parse_time(&b[29..])?,
        })),
        _ => Err(IndexProblem::Corrupt("bad folder stamp")),
    }
}

impl IndexReader {
    /// Opens the index at `path` and reads its header; `Ok(None)` when there is none.
    pub fn open(path: &Path) -> Result<Option<IndexReader>, IndexProblem> {
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IndexProblem::Unreadable(e)),
        };
        let meta = file.metadata().map_err(IndexProblem::Unreadable)?;
        if !meta.is_file() {
            return Err(IndexProblem::Corrupt("not a regular file"));
        }
        let mut r = IndexReader {
            file,
            buf: vec![0u8; INDEX_BUF_LEN],
            pos: 0,
            end: 0,
            unread: meta.len(),
            sha: Sha256::new(),
            header: IndexHeader {
                scan_start: (0, 0),
                stamps: [None, None],
            },
            left: 0,
        };
        if meta.len() >= OLD_TEXT_CACHE_HEADER.len() as u64 {
            r.fill(OLD_TEXT_CACHE_HEADER.len())?;
            if r.buf[..OLD_TEXT_CACHE_HEADER.len()] == *OLD_TEXT_CACHE_HEADER {
                return Err(IndexProblem::OldFormat);
            }
        }
        let h = r.take(HEADER_LEN)?;
        if h[..8] != INDEX_MAGIC[..] {
            return Err(IndexProblem::Corrupt("bad magic"));
        }
        let header = IndexHeader {
            scan_start: parse_time(&h[8..])?,
            stamps: [
                parse_stamp(&h[20..20 + STAMP_LEN])?,
                parse_stamp(&h[20 + STAMP_LEN..20 + 2 * STAMP_LEN])?,
            ],
        };
        let left = le_u64(&h[20 + 2 * STAMP_LEN..]);
        r.header = header;
        r.left = left;
        Ok(Some(r))
    }

    /// Makes at least `n` bytes available at `pos` (n <= the buffer).
    fn fill(&mut self, n: usize) -> Result<(), IndexProblem> {
        if self.end - self.pos >= n {
            return Ok(());
        }
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        while self.end < n {
            if self.unread == 0 {
                return Err(IndexProblem::Corrupt("truncated"));
            }
            let got = self
                .file
                .read(&mut self.buf[self.end..])
                .map_err(IndexProblem::Unreadable)?;
            if got == 0 {
                return Err(IndexProblem::Corrupt("truncated"));
            }
            self.end += got;
            self.unread = self.unread.saturating_sub(got as u64);
        }
        Ok(())
    }

    /// The next `n` bytes, hashed.
    fn take(&mut self, n: usize) -> Result<&[u8], IndexProblem> {
        self.fill(n)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.sha.update(s);
        self.pos += n;
        Ok(s)
    }

    /// The next record; `Ok(None)` after the last one, once the checksum and the end of the
    /// file have been verified.
    pub fn next_rec(&mut self) -> Result<Option<OldRec<'_>>, IndexProblem> {
        if self.left == 0 {
            self.fill(32)?;
            let digest = self.sha.clone().finalize();
            if self.buf[self.pos..self.pos + 32] != digest[..] {
                return Err(IndexProblem::Corrupt("checksum mismatch"));
            }
            if self.end - self.pos != 32 || self.unread != 0 {
                return Err(IndexProblem::Corrupt("data after the checksum"));
            }
            self.pos += 32;
            return Ok(None);
        }
        self.left -= 1;
        self.fill(3)?;
        let flags = self.buf[self.pos];
        let len = usize::from(u16::from_le_bytes([
            self.buf[self.pos + 1],
            self.buf[self.pos + 2],
        ]));
        if flags & !DISK_FLAGS != 0 || (flags & F_STAT != 0 && flags & F_SIZED == 0) {
            return Err(IndexProblem::Corrupt("bad record flags"));
        }
        let tail =
            if flags & F_SIZED != 0 { 8 } else { 0 } + if flags & F_STAT != 0 { 20 } else { 0 };
        let total = 3 + len + tail;
        let rec = self.take(total)?;
        let name = &rec[3..3 + len];
        if name.is_empty() || name[0] == b'.' || name.contains(&b'/') || name.contains(&0) {
            return Err(IndexProblem::Corrupt("bad name"));
        }
        let mut size = None;
        let mut stat = None;
        if flags & F_SIZED != 0 {
            let crlf = le_u64(&rec[3 + len..]);
            let lf = if flags & F_STAT != 0 {
                let key = StatKey {
                    lf_len: le_u64(&rec[11 + len..]),
                    mtime: parse_time(&rec[19 + len..])?,
                };
                stat = Some(key);
                Some(key.lf_len)
            } else {
                name_field(unique_part(name), b'S')
            };
            if !lf.is_some_and(|lf| plausible(lf, crlf)) {
                return Err(IndexProblem::Corrupt("implausible size"));
            }
            size = Some(crlf);
        }
        Ok(Some(OldRec {
            name,
            in_cur: flags & F_CUR != 0,
            size,
            stat,
        }))
    }
}

/// Hashes everything written through it.
struct HashWriter<'a> {
    file: &'a File,
    sha: Sha256,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn put_time(out: &mut Vec<u8>, t: (i64, u32)) {
    out.extend_from_slice(&t.0.to_le_bytes());
    out.extend_from_slice(&t.1.to_le_bytes());
}

pub(super) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes the index of `listing` (every record, in listing order) atomically.
pub fn write_index(path: &Path, header: &IndexHeader, listing: &mut Listing) -> io::Result<()> {
    listing.sort_stats();
    let tmp = tmp_path(path);
    // A stale .tmp (a writer that crashed) is replaced; the session lock keeps writers apart.
    let _ = fs::remove_file(&tmp);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(INDEX_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    let result = (|| {
        let mut out = io::BufWriter::with_capacity(
            INDEX_BUF_LEN,
            HashWriter {
                file: &file,
                sha: Sha256::new(),
            },
        );
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(INDEX_MAGIC);
        put_time(&mut h, header.scan_start);
        for s in &header.stamps {
            match s {
                Some(s) => {
                    h.push(1);
                    h.extend_from_slice(&s.dev.to_le_bytes());
                    h.extend_from_slice(&s.ino.to_le_bytes());
                    put_time(&mut h, s.mtime);
                    put_time(&mut h, s.ctime);
                }
                None => h.extend_from_slice(&[0u8; STAMP_LEN]),
            }
        }
        h.extend_from_slice(&(listing.recs.len() as u64).to_le_bytes());
        out.write_all(&h)?;
        let mut rec = Vec::with_capacity(64);
        for r in &listing.recs {
            let name = listing.name(r);
            let mut flags = r.flags & DISK_FLAGS;
            let stat = if r.by_stat() {
                listing
                    .stats
                    .binary_search_by_key(&r.off, |s| s.0)
                    .ok()
                    .map(|j| listing.stats[j].1)
            } else {
                None
            };
            if r.by_stat() && stat.is_none() {
                flags &= !(F_SIZED | F_STAT);
            }
            rec.clear();
            rec.push(flags);
            rec.extend_from_slice(&r.len.to_le_bytes());
            rec.extend_from_slice(name);
            if flags & F_SIZED != 0 {
                rec.extend_from_slice(&r.size().to_le_bytes());
            }
            if let Some(s) = stat.filter(|_| flags & F_STAT != 0) {
                rec.extend_from_slice(&s.lf_len.to_le_bytes());
                put_time(&mut rec, s.mtime);
            }
            out.write_all(&rec)?;
        }
        out.flush()?;
        let w = out.into_inner().map_err(|e| e.into_error())?;
        let digest = w.sha.finalize();
        (&file).write_all(&digest)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// How a folder's part of the listing was obtained (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanReport {
    /// Folders (`new/`, `cur/`) taken from the index without reading them.
    pub from_index: [bool; 2],
    /// Folders whose listing is exactly what the index holds (read or not).
    pub unchanged: [bool; 2],
}

/// Builds the listing of a Maildir from what `read_folder` returns for folders that must be
/// read and from the index for the others; sizes of re-read folders are carried over from
/// the index by unique part. `now`: the stamps `stat` shows (taken before reading). On an
/// index error the partial work is discarded and the caller retries without the index.
pub fn build_listing(
    index: Option<&mut IndexReader>,
    now: [Option<DirStamp>; 2],
    mut read_folder: impl FnMut(usize, &mut Listing) -> io::Result<()>,
) -> Result<(Listing, ScanReport), BuildError> {
    let mut listing = Listing::default();
    let valid = match &index {
        Some(ix) => [
            ix.header.folder_valid(0, now[0]),
            ix.header.folder_valid(1, now[1]),
        ],
        None => [false, false],
    };
    for (d, &v) in valid.iter().enumerate() {
        if !v {
            read_folder(d, &mut listing).map_err(BuildError::Folder)?;
        }
    }
    let fresh = listing.recs.len();
    let mut fresh_n = [0usize; 2];
    for r in &listing.recs {
        fresh_n[usize::from(r.in_cur())] += 1;
    }
    let mut old_n = [0usize; 2];
    let mut exact = [0usize; 2];
    listing.sort_from(0);
    let had_index = index.is_some();
    if let Some(ix) = index {
        let mut j = 0;
        while let Some(old) = ix.next_rec().map_err(BuildError::Index)? {
            let d = usize::from(old.in_cur);
            old_n[d] += 1;
            if valid[d] {
                let i = listing
                    .push(old.name, old.in_cur)
                    .map_err(|_| BuildError::Full)?;
                if let Some(size) = old.size {
                    carry(&mut listing, i, size, old.stat);
                }
                continue;
            }
            let old_ts = leading_timestamp(old.name);
            // Both lists are in listing order: advance to the first fresh name not before
            // this one; an equal unique part gets the size, and so does the copy of it in the
            // other folder right after it (seen by both reads during a move).
            while j < fresh {
                let r = listing.recs[j];
                let ord =
                    r.ts.cmp(&old_ts)
                        .then_with(|| cmp_unique(listing.name(&r), old.name));
                match ord {
                    std::cmp::Ordering::Less => j += 1,
                    std::cmp::Ordering::Greater => break,
                    std::cmp::Ordering::Equal => {
                        let mut k = j;
                        while k < fresh {
                            let r = listing.recs[k];
                            let name = listing.name(&r);
                            if r.ts != old_ts || !cmp_unique(name, old.name).is_eq() {
                                break;
                            }
                            if r.in_cur() == old.in_cur && name == old.name {
                                exact[d] += 1;
                            }
                            if let Some(size) = old.size {
                                carry(&mut listing, k, size, old.stat);
                            }
                            k += 1;
                        }
                        break;
                    }
                }
            }
        }
    }
    // Two sorted runs when folders came from both sources: cheap for pattern-defeating sort.
    listing.sort_dedup();
    listing.shrink();
    let unchanged =
        [0, 1].map(|d| valid[d] || (had_index && old_n[d] == fresh_n[d] && exact[d] == fresh_n[d]));
    Ok((
        listing,
        ScanReport {
            from_index: valid,
            unchanged,
        },
    ))
}

fn carry(listing: &mut Listing, i: usize, size: u64, stat: Option<StatKey>) {
    match stat {
        Some(stat) => {
            listing.set_sizes(
                i,
                Sizes {
                    crlf_size: size,
                    stat,
                },
            );
            // set_sizes chose by-name if ,S= matches the stat length; either is valid.
        }
        None => {
            listing.recs[i].set_size(size);
            listing.recs[i].flags &= !F_STAT;
        }
    }
}

/// Why a listing could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The index is unusable: retry without it.
    Index(IndexProblem),
    /// Reading a folder failed.
    Folder(io::Error),
    /// More names than [`MAX_ARENA_LEN`] holds.
    Full,
}

#[cfg(test)]
mod tests {
    use super::super::listing::*;
    use super::super::names::*;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn stamp(ino: u64, m: i64, c: i64) -> DirStamp {
        DirStamp {
            dev: 1,
            ino,
            mtime: (m, 5),
            ctime: (c, 7),
        }
    }

    fn sizes(crlf: u64, lf: u64) -> Sizes {
        Sizes {
            crlf_size: crlf,
            stat: StatKey {
                lf_len: lf,
                mtime: (1_700_000_000, 123),
            },
        }
    }

    fn names(l: &Listing) -> Vec<String> {
        l.recs
            .iter()
            .map(|r| String::from_utf8_lossy(l.name(r)).into_owned())
            .collect()
    }

    #[test]
    fn a_record_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 16);
    }

    #[test]
    fn listing_order_dedup_and_sizes() {
        let mut l = Listing::default();
        for (name, cur) in [
            ("1700000002.M1P1.h", false),
            ("1700000001.M5P1.h:2,RS", true),
            ("junk", true),
            ("1700000001.M0P1.h", false),
            ("999.M1.h", false),
            ("1700000001.M5P1.h", false),
        ] {
            l.push(name.as_bytes(), cur).expect("push");
        }
        l.sort_dedup();
        assert_eq!(
            names(&l),
            [
                "999.M1.h",
                "1700000001.M0P1.h",
                "1700000001.M5P1.h:2,RS",
                "1700000002.M1P1.h",
                "junk"
            ]
        );
        assert!(l.recs[2].in_cur());
        // By name: ,S= equals the measured length.
        let mut l = Listing::default();
        l.push(b"1.M1.h,S=4", false).expect("push");
        l.push(b"2.M1.h,S=5", false).expect("push");
        l.push(b"3.M1.h", true).expect("push");
        assert!(l.set_sizes(0, sizes(6, 4)));
        assert!(l.set_sizes(1, sizes(6, 4)));
        assert!(l.set_sizes(2, sizes(1 << 39, 1 << 38)));
        assert!(!l.set_sizes(2, sizes(MAX_RECORD_SIZE + 1, 1 << 40)));
        assert!(l.recs[0].sized() && !l.recs[0].by_stat());
        assert!(l.recs[1].by_stat() && l.recs[2].by_stat());
        assert_eq!(l.stat_key(1), Some(sizes(6, 4).stat));
        assert_eq!(l.recs[2].size(), 1 << 39);
        // A newer measurement replaces the key, sorted or not yet.
        assert!(l.set_sizes(2, sizes(9, 8)));
        assert_eq!(l.stat_key(2), Some(sizes(9, 8).stat));
        assert!(l.set_sizes(2, sizes(10, 9)));
        assert!(l.set_sizes(2, sizes(11, 10)));
        assert_eq!(l.stat_key(2), Some(sizes(11, 10).stat));
        assert!(l.set_sizes(1, sizes(7, 5)));
        assert!(!l.recs[1].by_stat(), "now ,S= matches");
        l.unsize(2);
        assert!(!l.recs[2].sized() && !l.recs[2].by_stat());
        assert_eq!(l.push(&vec![b'x'; 70_000], false), Err(ListingFull));
    }

    #[test]
    fn folder_validity_and_racy_stamps() {
        let t = 1_700_000_000;
        let now = stamp(9, t - 10, t - 10);
        let h = |stamps| IndexHeader {
            scan_start: (t, 0),
            stamps,
        };
        let cases: &[(Option<DirStamp>, Option<DirStamp>, bool)] = &[
            (Some(now), Some(now), true),
            // Changed mtime, ctime or inode.
            (Some(now), Some(stamp(9, t - 9, t - 10)), false),
            (Some(now), Some(stamp(9, t - 10, t - 9)), false),
            (Some(now), Some(stamp(8, t - 10, t - 10)), false),
            (None, Some(now), false),
            (Some(now), None, false),
            // Identical, but modified within RACY_WINDOW of the scan (or after it).
            (
                Some(stamp(9, t - 1, t - 10)),
                Some(stamp(9, t - 1, t - 10)),
                false,
            ),
            (
                Some(stamp(9, t - 10, t - 2)),
                Some(stamp(9, t - 10, t - 2)),
                false,
            ),
            (
                Some(stamp(9, t + 5, t + 5)),
                Some(stamp(9, t + 5, t + 5)),
                false,
            ),
            (
                Some(stamp(9, t - 3, t - 3)),
                Some(stamp(9, t - 3, t - 3)),
                true,
            ),
        ];
        for (i, &(rec, cur, want)) in cases.iter().enumerate() {
            assert_eq!(h([rec, None]).folder_valid(0, cur), want, "case {i}");
            assert_eq!(h([None, rec]).folder_valid(1, cur), want, "case {i}");
        }
    }

    fn sample(dir: &Path) -> (PathBuf, IndexHeader, Listing) {
        let p = dir.join("x.index");
        let header = IndexHeader {
            scan_start: (1_700_000_100, 42),
            stamps: [Some(stamp(3, 1_700_000_000, 1_700_000_001)), None],
        };
        let mut l = Listing::default();
        l.push(b"1.M1.h,S=4", false).expect("push");
        l.push(b"2.M1.h:2,S", true).expect("push");
        l.push(b"3.M1.h", false).expect("push");
        l.set_sizes(0, sizes(6, 4));
        l.set_sizes(1, sizes(9, 8));
        (p, header, l)
    }

    fn read_all(p: &Path) -> Result<(IndexHeader, Vec<OldRec<'static>>), IndexProblem> {
        let mut r = IndexReader::open(p)?.expect("exists");
        let mut out = Vec::new();
        while let Some(rec) = r.next_rec()? {
            let name: &'static [u8] = Box::leak(rec.name.to_vec().into_boxed_slice());
            out.push(OldRec { name, ..rec });
        }
        Ok((r.header, out))
    }

    #[test]
    fn index_round_trip() {
        let d = tempfile::tempdir().expect("tempdir");
        let (p, header, mut l) = sample(d.path());
        write_index(&p, &header, &mut l).expect("write");
        assert_eq!(fs::metadata(&p).expect("stat").mode() & 0o777, INDEX_MODE);
        assert!(!tmp_path(&p).exists());
        let (h, recs) = read_all(&p).expect("valid");
        assert_eq!(h, header);
        assert_eq!(
            recs,
            [
                OldRec {
                    name: b"1.M1.h,S=4",
                    in_cur: false,
                    size: Some(6),
                    stat: None
                },
                OldRec {
                    name: b"2.M1.h:2,S",
                    in_cur: true,
                    size: Some(9),
                    stat: Some(sizes(9, 8).stat)
                },
                OldRec {
                    name: b"3.M1.h",
                    in_cur: false,
                    size: None,
                    stat: None
                },
            ]
        );
        assert!(IndexReader::open(&d.path().join("none"))
            .expect("missing is fine")
            .is_none());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let d = tempfile::tempdir().expect("tempdir");
        let (p, header, mut l) = sample(d.path());
        write_index(&p, &header, &mut l).expect("write");
        let good = fs::read(&p).expect("read");
        let bad = d.path().join("bad.index");
        for cut in 0..good.len() {
            fs::write(&bad, &good[..cut]).expect("write");
            assert!(read_all(&bad).is_err(), "cut at {cut}");
        }
        for at in 0..good.len() {
            let mut b = good.clone();
            b[at] ^= 0x10;
            fs::write(&bad, &b).expect("write");
            assert!(read_all(&bad).is_err(), "flip at {at}");
        }
        fs::write(&bad, [&good[..], b"x"].concat()).expect("write");
        assert!(read_all(&bad).is_err(), "trailing byte");
        fs::write(&bad, b"popspool-maildir-sizes 1\nend 0 x\n").expect("write");
        assert!(matches!(read_all(&bad), Err(IndexProblem::OldFormat)));
        fs::remove_file(&bad).expect("rm");
        fs::create_dir(&bad).expect("mkdir");
        assert!(matches!(read_all(&bad), Err(IndexProblem::Corrupt(_))));
    }

    /// An index for `recs` (name, in_cur, size, lf) with the given stamps.
    fn index_of(p: &Path, recs: &[(&str, bool, Option<u64>)], stamps: [Option<DirStamp>; 2]) {
        let mut l = Listing::default();
        for (i, &(name, cur, size)) in recs.iter().enumerate() {
            l.push(name.as_bytes(), cur).expect("push");
            if let Some(s) = size {
                l.set_sizes(i, sizes(s, s - 1));
            }
        }
        l.sort_dedup();
        let header = IndexHeader {
            scan_start: (1_700_000_100, 0),
            stamps,
        };
        write_index(p, &header, &mut l).expect("write");
    }

    #[test]
    fn build_merges_sizes_and_keeps_unchanged_folders() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("m.index");
        let (sn, sc) = (
            stamp(1, 1_700_000_000, 1_700_000_000),
            stamp(2, 1_700_000_000, 1_700_000_000),
        );
        index_of(
            &p,
            &[
                ("10.A", false, Some(11)),
                ("20.B", false, Some(21)),
                ("30.C", false, None),
                ("5.D:2,S", true, Some(6)),
            ],
            [Some(sn), Some(sc)],
        );
        // new/ changed: B moved to... no, cur/ is unchanged, so new/ lost A and gained E.
        let mut ix = IndexReader::open(&p).expect("ok");
        let new_now = stamp(1, 1_700_000_050, 1_700_000_050);
        let mut reads = Vec::new();
        let (l, report) = build_listing(ix.as_mut(), [Some(new_now), Some(sc)], |d, l| {
            reads.push(d);
            for n in ["40.E", "20.B", "30.C"] {
                l.push(n.as_bytes(), false).expect("push");
            }
            Ok(())
        })
        .expect("build");
        assert_eq!(reads, [0]);
        assert_eq!(report.from_index, [false, true]);
        assert_eq!(report.unchanged, [false, true]);
        assert_eq!(names(&l), ["5.D:2,S", "20.B", "30.C", "40.E"]);
        let got: Vec<Option<u64>> = l.recs.iter().map(|r| r.sized().then(|| r.size())).collect();
        assert_eq!(got, [Some(6), Some(21), None, None]);

        // Both folders changed: B was moved to cur/ and keeps its size; a copy left in new/
        // (seen by both reads) is listed once, at its cur/ name.
        let mut ix = IndexReader::open(&p).expect("ok");
        let (l, report) = build_listing(ix.as_mut(), [Some(new_now), None], |d, l| {
            let names: &[&str] = if d == 0 {
                &["20.B"]
            } else {
                &["20.B:2,S", "10.A:2,"]
            };
            for n in names {
                l.push(n.as_bytes(), d == 1).expect("push");
            }
            Ok(())
        })
        .expect("build");
        assert_eq!(report.from_index, [false, false]);
        assert_eq!(report.unchanged, [false, false]);
        assert_eq!(names(&l), ["10.A:2,", "20.B:2,S"]);
        let got: Vec<(bool, u64)> = l.recs.iter().map(|r| (r.in_cur(), r.size())).collect();
        assert_eq!(got, [(true, 11), (true, 21)]);

        // A damaged index is reported, not half-used.
        let mut bytes = fs::read(&p).expect("read");
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        fs::write(&p, &bytes).expect("write");
        let mut ix = IndexReader::open(&p).expect("header ok");
        let r = build_listing(ix.as_mut(), [Some(sn), Some(sc)], |_, _| Ok(()));
        assert!(matches!(
            r,
            Err(BuildError::Index(IndexProblem::Corrupt(_)))
        ));
    }

    proptest::proptest! {
        #[test]
        fn cmp_unique_is_comparing_unique_parts(
            a in proptest::collection::vec(proptest::sample::select(b"12:,.aS=".to_vec()), 0..12),
            b in proptest::collection::vec(proptest::sample::select(b"12:,.aS=".to_vec()), 0..12),
        ) {
            proptest::prop_assert_eq!(cmp_unique(&a, &b), unique_part(&a).cmp(unique_part(&b)));
        }

        #[test]
        fn any_bytes_read_without_panic(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            magic in proptest::prelude::any::<bool>(),
        ) {
            let d = tempfile::tempdir().expect("tempdir");
            let p = d.path().join("r.index");
            let bytes = if magic { [&INDEX_MAGIC[..], &tail].concat() } else { tail };
            fs::write(&p, &bytes).expect("write");
            let _ = read_all(&p);
        }

        #[test]
        fn round_trips(entries in proptest::collection::btree_map(
            "[0-9]{1,12}\\.[!-.0-9;-~]{1,30}(:2,[A-Z]{0,4})?",
            (proptest::prelude::any::<bool>(), proptest::option::of(0u64..1 << 40), 0u64..3),
            0..30)) {
            let d = tempfile::tempdir().expect("tempdir");
            let p = d.path().join("c.index");
            let mut l = Listing::default();
            for (i, (name, &(cur, size, extra))) in entries.iter().enumerate() {
                l.push(name.as_bytes(), cur).expect("push");
                if let Some(lf) = size {
                    l.set_sizes(i, Sizes {
                        crlf_size: lf + extra,
                        stat: StatKey { lf_len: lf, mtime: (i as i64 - 3, 999_999_999) },
                    });
                }
            }
            let header = IndexHeader { scan_start: (-1, 0), stamps: [None, None] };
            write_index(&p, &header, &mut l).expect("write");
            let (h, recs) = read_all(&p).expect("valid");
            proptest::prop_assert_eq!(h, header);
            proptest::prop_assert_eq!(recs.len(), l.recs.len());
            for (i, old) in recs.iter().enumerate() {
                let r = l.recs[i];
                proptest::prop_assert_eq!(old.name, l.name(&r));
                proptest::prop_assert_eq!(old.in_cur, r.in_cur());
                proptest::prop_assert_eq!(old.size, r.sized().then(|| r.size()));
                if r.by_stat() {
                    proptest::prop_assert_eq!(old.stat, l.stat_key(i));
                }
            }
        }
    }
}
