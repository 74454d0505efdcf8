//! The update journal that makes in-place mbox compaction survive SIGKILL and power loss. Any
//! toolkit program replays it, under the content lock, before touching the mailbox.
//!
//! The rule: a `JOURNAL` that exists is complete (it is written as `JOURNAL.tmp`, synced and
//! renamed before the mailbox is touched), a round's record is durable before the round after
//! it starts, and the stamp is durable before the end record. Records are chained and their
//! extents known, so only the last one can be torn; anything else that does not check out is
//! refused and left for the administrator. Why that suffices, every crash point, and the
//! format: doc/DESIGN.md, "The update journal".

#![forbid(unsafe_code)]

use crate::error::{io_err, MailboxError};
use crate::lock::{ContentLock, LockOptions};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// First bytes of every journal.
pub const JOURNAL_MAGIC: [u8; 8] = *b"POPSPJNL";
/// The one format version this code writes and reads.
pub const JOURNAL_VERSION: u32 = 4;
/// The previous version: recognised only to be refused with a message saying so.
pub const JOURNAL_VERSION_OLD: u32 = 3;
/// How much of each end of the stale region (and of the new tail) its digest covers.
pub const STALE_SAMPLE: u64 = 64 * 1024;
/// Size of the fixed header before the pieces table.
pub const JOURNAL_HEADER_LEN: u64 = 176;
/// Length of the journal's nonce, and at most of the stamp written with it at the start of
/// the stale region before the truncate (shorter when the stale region is).
pub const STAMP_LEN: u64 = 16;
/// Bytes moved per read/write while copying: memory stays bounded whatever the mailbox
/// size, and large enough that a multi-GB tail is not syscall-bound.
pub const COPY_CHUNK: usize = 1 << 20;
/// The shortest round of the copy (see the module documentation): a round overwrites at most
/// this much of its own sources, which then go to the journal first. Larger means fewer
/// syncs when little was deleted; smaller means less journalled when much was.
pub const MIN_ROUND: u64 = 16 << 20;

const CHECKSUM_OFF: usize = 160;
const HEADER: usize = JOURNAL_HEADER_LEN as usize;
const PIECE_LEN: u64 = 16;
const ROUND_MAGIC: [u8; 8] = *b"POPSPRND";
const END_MAGIC: [u8; 8] = *b"POPSPEND";
const ROUND_LEN: usize = 96;
const END_LEN: usize = 64;

/// A decoded, checksum-verified journal header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub dev: u64,
    pub ino: u64,
    pub p0: u64,
    pub s_old: u64,
    pub tail_len: u64,
    pub pieces: u64,
    pub stale_sha: [u8; 32],
    pub pieces_sha: [u8; 32],
    /// Random, first byte 0: stamps the stale region and seeds the records' chain.
    pub nonce: [u8; 16],
    /// The shortest round: with it every record's extent is known before it is read.
    pub min_round: u64,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn sha_at(b: &[u8], o: usize) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[o..o + 32]);
    a
}

fn sum16(b: &[u8]) -> [u8; 16] {
    let d: [u8; 32] = Sha256::digest(b).into();
    let mut a = [0u8; 16];
    a.copy_from_slice(&d[..16]);
    a
}

impl Header {
    fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..8].copy_from_slice(&JOURNAL_MAGIC);
        b[8..12].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
        // 12..16: flags, zero.
        for (o, v) in [
            (16, self.dev),
            (24, self.ino),
            (32, self.p0),
            (40, self.s_old),
            (48, self.tail_len),
            (56, self.pieces),
        ] {
            b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[64..96].copy_from_slice(&self.stale_sha);
        b[96..128].copy_from_slice(&self.pieces_sha);
        b[128..144].copy_from_slice(&self.nonce);
        b[144..152].copy_from_slice(&self.min_round.to_le_bytes());
        // 152..160: reserved, zero.
        let sum = sum16(&b[..CHECKSUM_OFF]);
        b[CHECKSUM_OFF..].copy_from_slice(&sum);
        b
    }

    /// Checks magic, version, checksum and the invariants replay relies on.
    fn decode(b: &[u8; HEADER]) -> Result<Header, String> {
        if b[0..8] != JOURNAL_MAGIC {
            return Err("bad magic".into());
        }
        if b[CHECKSUM_OFF..] != sum16(&b[..CHECKSUM_OFF]) {
            return Err("header checksum mismatch".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if u32_at(8) != JOURNAL_VERSION || u32_at(12) != 0 || u64_at(b, 152) != 0 {
            return Err(format!(
                "unknown version {} flags {}",
                u32_at(8),
                u32_at(12)
            ));
        }
        let h = Header {
            dev: u64_at(b, 16),
            ino: u64_at(b, 24),
            p0: u64_at(b, 32),
            s_old: u64_at(b, 40),
            tail_len: u64_at(b, 48),
            pieces: u64_at(b, 56),
            stale_sha: sha_at(b, 64),
            pieces_sha: sha_at(b, 96),
            nonce: b[128..144].try_into().expect("16 bytes"),
            min_round: u64_at(b, 144),
        };
        if h.nonce[0] != 0 || h.min_round == 0 {
            return Err("bad nonce or round length".into());
        }
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

    /// The stamp's length: `STAMP_LEN`, or the whole stale region when it is shorter.
    fn stamp_len(&self) -> u64 {
        (self.s_old - self.new_end()).min(STAMP_LEN)
    }

    /// The part of the stale region its digest covers: all of it but the stamp's place.
    fn stale_checked(&self) -> Range<u64> {
        self.new_end() + self.stamp_len()..self.s_old
    }

    /// Where the chain of records starts: the nonce, so that no record of another journal
    /// (nor one forged from mail, whose sender cannot know the nonce) links into this one.
    fn chain_seed(&self) -> [u8; 16] {
        self.nonce
    }
}

/// A fresh nonce: 16 random bytes, the first set to 0. A stamp therefore starts with a NUL,
/// which no delivery appended to an mbox starts with (a `From ` line, or the newline before
/// one), so even a one-byte stamp is never taken for appended mail.
fn new_nonce() -> Result<[u8; 16], MailboxError> {
    let mut n = [0u8; 16];
    let mut filled = 0;
    while filled < n.len() {
        match rustix::rand::getrandom(&mut n[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) if k > 0 => filled += k,
            Ok(_) => {
                return Err(MailboxError::Io(
                    "get random bytes for the journal",
                    io::Error::from(ErrorKind::UnexpectedEof),
                ))
            }
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(e) => {
                return Err(MailboxError::Io(
                    "get random bytes for the journal",
                    e.into(),
                ))
            }
        }
    }
    n[0] = 0;
    Ok(n)
}

/// The kept byte ranges `(source offset, length)` in the order they are written from `p0`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pieces(Vec<(u64, u64)>);

impl Pieces {
    /// Kept ranges after `p0` of a file of `s_old` bytes from which `delete` (sorted,
    /// disjoint, non-empty, the first starting at `p0`) is cut.
    pub(crate) fn between(delete: &[Range<u64>], s_old: u64) -> Pieces {
        let mut v = Vec::with_capacity(delete.len());
        let mut cursor = delete.first().map_or(s_old, |r| r.start);
        for r in delete {
            if cursor < r.start {
                v.push((cursor, r.start - cursor));
            }
            cursor = r.end;
        }
        if cursor < s_old {
            v.push((cursor, s_old - cursor));
        }
        Pieces(v)
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|p| p.1).sum()
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.0.len() * PIECE_LEN as usize);
        for &(s, l) in &self.0 {
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
        }
        b
    }

    /// Every piece non-empty, in order, never moving forward, inside `[p0, s_old)`, adding up
    /// to `T`.
    fn check(&self, h: &Header) -> Result<(), String> {
        let mut dst = h.p0;
        let mut prev_end = h.p0;
        for &(s, l) in &self.0 {
            let end = s.checked_add(l).ok_or("piece overflows")?;
            if l == 0 || s < prev_end || s < dst || end > h.s_old {
                return Err(format!("bad piece {s}+{l}"));
            }
            prev_end = end;
            dst += l;
        }
        if dst != h.new_end() {
            return Err("pieces do not add up to the tail".into());
        }
        Ok(())
    }
}

/// A position in the stream of kept bytes: stream offset `t`, inside piece `j` at `o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    t: u64,
    j: usize,
    o: u64,
}

impl Cursor {
    const START: Cursor = Cursor { t: 0, j: 0, o: 0 };

    /// Source offset of the byte at the cursor (`None` at the end of the stream).
    fn src(&self, p: &Pieces) -> Option<u64> {
        p.0.get(self.j).map(|&(s, _)| s + self.o)
    }

    fn advance(&mut self, p: &Pieces, mut n: u64) {
        self.t += n;
        while n > 0 {
            let Some(&(_, l)) = p.0.get(self.j) else {
                return;
            };
            let k = (l - self.o).min(n);
            self.o += k;
            n -= k;
            if self.o == l {
                self.j += 1;
                self.o = 0;
            }
        }
    }

    /// Moves to stream offset `t` (forward only).
    fn seek(&mut self, p: &Pieces, t: u64) {
        if t > self.t {
            self.advance(p, t - self.t);
        }
    }
}

/// One round: stream range `[t, t_end)`; the old file bytes `save` are in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Round {
    k: u64,
    t: u64,
    t_end: u64,
    save: Range<u64>,
    save_sha: [u8; 32],
    /// Offset in the journal of the saved bytes.
    data_at: u64,
    /// Offset in the journal just past this record.
    end_at: u64,
    /// The record's link in the chain: its checksum over the previous one and its own bytes.
    check: [u8; 16],
}

/// Plans the round starting at stream offset `c.t`: at least the gap there and `min_round`.
fn plan_round(h: &Header, p: &Pieces, c: Cursor, k: u64, min_round: u64) -> Option<Round> {
    let src = c.src(p)?;
    let dst = h.p0 + c.t;
    let gap = src - dst;
    let len = gap.max(min_round.max(1)).min(h.tail_len - c.t);
    let mut save_end = dst + len;
    if c.t + len == h.tail_len {
        // The last round also saves its sources under the stamp's place, which the stamp
        // overwrites before the end record: a repeat of the round must not read them there.
        save_end = save_end.max(h.new_end() + h.stamp_len());
    }
    let save = if save_end > src {
        src..save_end
    } else {
        src..src
    };
    Some(Round {
        k,
        t: c.t,
        t_end: c.t + len,
        save,
        save_sha: [0; 32],
        data_at: 0,
        end_at: 0,
        check: [0; 16],
    })
}

/// First 16 bytes of the sha256 of the previous link and a record's own checked bytes.
fn link(prev: &[u8; 16], own: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(own);
    let d: [u8; 32] = h.finalize().into();
    d[..16].try_into().expect("16 bytes")
}

fn encode_round(r: &Round, prev: &[u8; 16]) -> [u8; ROUND_LEN] {
    let mut b = [0u8; ROUND_LEN];
    b[0..8].copy_from_slice(&ROUND_MAGIC);
    for (o, v) in [
        (8, r.k),
        (16, r.t),
        (24, r.t_end),
        (32, r.save.start),
        (40, r.save.end - r.save.start),
    ] {
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    b[48..80].copy_from_slice(&r.save_sha);
    let s = link(prev, &b[..80]);
    b[80..96].copy_from_slice(&s);
    b
}

/// The end record: its sequence number `k` (the number of rounds) and the new tail's digest.
fn encode_end(k: u64, final_sha: &[u8; 32], prev: &[u8; 16]) -> [u8; END_LEN] {
    let mut b = [0u8; END_LEN];
    b[0..8].copy_from_slice(&END_MAGIC);
    b[8..16].copy_from_slice(&k.to_le_bytes());
    b[16..48].copy_from_slice(final_sha);
    let s = link(prev, &b[..48]);
    b[48..64].copy_from_slice(&s);
    b
}

/// `JOURNAL.tmp`: where a journal is built before it is renamed into place.
pub fn tmp_path(journal: &Path) -> PathBuf {
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
pub fn sync_parent(path: &Path) -> Result<(), MailboxError> {
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
pub(crate) fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> Result<(), MailboxError> {
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
    range: Range<u64>,
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

/// SHA-256 of a region's length and of its first and last `STALE_SAMPLE` bytes (the whole
/// region when it is shorter than two samples).
///
/// For the stale region (without the stamp's place) it confirms, while the copy is
/// unfinished, that the bytes no round writes are still the ones the journal was made for;
/// whether the truncate happened is told by the stamp, not by it. For the new tail it
/// confirms, before a finished journal is forgotten, that the mailbox is the one the journal
/// finished (version 1 hashed whole regions: half of a DELE-all UPDATE's time on a 1 GB mbox
/// went there).
fn sampled_digest(f: &File, range: Range<u64>, buf: &mut [u8]) -> Result<[u8; 32], MailboxError> {
    let len = range.end.saturating_sub(range.start);
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    let mut feed = |r: Range<u64>| {
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

/// Where a simulated crash stops the work (tests, and the fuzz targets that make journals
/// of interrupted updates, are the only callers that pass anything but `None`).
#[doc(hidden)]
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    None,
    /// After this many bytes of `JOURNAL.tmp` were written.
    JournalWrite(u64),
    /// With `JOURNAL.tmp` complete and fsynced, before the rename.
    BeforeRename,
    /// With the journal durable, before the mailbox is touched.
    AfterRename,
    /// After this many bytes were copied into the mailbox (over all rounds).
    MidCopy(u64),
    /// With the record of round k (k >= 1) durable, before its copy.
    AfterRecord(u64),
    /// With half of the record of round k (k >= 1) appended: a torn write.
    TornRecord(u64),
    /// After the copy, before the stamp.
    AfterCopy,
    /// With the stamp durable, before the end record.
    AfterStamp,
    /// After the end record, before the truncate.
    BeforeTruncate,
    /// After the truncate, before the journal is removed.
    AfterTruncate,
    /// After foreign appended mail was handed to a new journal.
    AfterRejournal,
}

/// How far a (possibly crash-simulated) run got.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    Done,
    Crashed,
}

/// A parsed journal: header, pieces, the valid records, and where the log ends.
struct Journal {
    f: File,
    h: Header,
    pieces: Pieces,
    last: Option<Round>,
    done: Option<[u8; 32]>,
    /// End of the last valid record: appends go here (a torn record is cut off).
    log_end: u64,
    /// The link of the last valid record (the header's checksum before the first).
    chain: [u8; 16],
}

/// What the bytes of a journal say (or why they cannot be used).
enum Parse {
    Ok(Box<Journal>),
    /// Damaged where no crash can leave it: moved aside (the mailbox was not touched).
    Corrupt(String),
    /// Not to be replayed, nor to be moved out of the way: the mailbox may be torn, so the
    /// journal stays where every toolkit program sees it and refuses, until an administrator
    /// acts.
    Refuse(String),
}

fn parse(f: File) -> Result<Parse, MailboxError> {
    let len = f.metadata().map_err(io_err("stat the journal"))?.len();
    let mut hb = [0u8; HEADER];
    let mut vb = [0u8; 12];
    if len >= 12 {
        f.read_exact_at(&mut vb, 0)
            .map_err(io_err("read the journal"))?;
        if vb[0..8] == JOURNAL_MAGIC && vb[8..12] == JOURNAL_VERSION_OLD.to_le_bytes() {
            return Ok(Parse::Refuse(format!(
                "is of format version {JOURNAL_VERSION_OLD}, written by an older release, which \
                 this one does not replay: finish it with that release's `pop-spool recover`, \
                 or restore the mailbox from a backup and remove the journal"
            )));
        }
    }
    if len < JOURNAL_HEADER_LEN {
        return Ok(Parse::Corrupt(format!("only {len} bytes")));
    }
    f.read_exact_at(&mut hb, 0)
        .map_err(io_err("read the journal"))?;
    let h = match Header::decode(&hb) {
        Ok(h) => h,
        Err(why) => return Ok(Parse::Corrupt(why)),
    };
    let table = h.pieces.checked_mul(PIECE_LEN);
    let Some(records_start) = table
        .and_then(|t| t.checked_add(JOURNAL_HEADER_LEN))
        .filter(|&e| e <= len)
    else {
        return Ok(Parse::Corrupt(format!("{} pieces do not fit", h.pieces)));
    };
    // Read in bounded pieces: the table is 16 bytes per kept range, megabytes for a big
    // mailbox, and this runs inside a session already holding its whole message list.
    let mut pieces = Pieces(Vec::with_capacity(h.pieces.min(len / PIECE_LEN) as usize));
    let mut sha = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    stream(&f, JOURNAL_HEADER_LEN..records_start, &mut chunk, |b| {
        sha.update(b);
        pieces.0.extend(
            b.chunks_exact(PIECE_LEN as usize)
                .map(|c| (u64_at(c, 0), u64_at(c, 8))),
        );
        Ok(())
    })?;
    drop(chunk);
    let sum: [u8; 32] = sha.finalize().into();
    if sum != h.pieces_sha {
        return Ok(Parse::Corrupt("pieces digest mismatch".into()));
    }
    if let Err(why) = pieces.check(&h) {
        return Ok(Parse::Corrupt(why));
    }
    let chain = h.chain_seed();
    let mut j = Journal {
        f,
        h,
        pieces,
        last: None,
        done: None,
        log_end: records_start,
        chain,
    };
    if let Err(why) = read_records(&mut j, len)? {
        return Ok(Parse::Refuse(why));
    }
    Ok(Parse::Ok(Box::new(j)))
}

/// Reads the records after the pieces table. Each record is the one `plan_round` makes next
/// (the header fixes the round length), so its extent is known before it is read, and its
/// link must follow from the previous one. A record that does not check out is the torn end
/// of the log only if nothing lies beyond its extent (an append is always at the end: the log
/// is cut back to its last good record first); with bytes beyond it, it is damage, reported
/// as `Err` (the inner one).
fn read_records(j: &mut Journal, len: u64) -> Result<Result<(), String>, MailboxError> {
    let mut at = j.log_end;
    let mut c = Cursor::START;
    let mut buf = vec![0u8; COPY_CHUNK];
    let damaged = |what: String, at: u64, extent: u64| {
        Err(format!(
            "is damaged: {what} at offset {at} does not check out, and {} more bytes \
             follow it (a torn append is always the last thing in the log)",
            len - at - extent
        ))
    };
    loop {
        if at == len {
            return Ok(Ok(()));
        }
        let k = j.last.as_ref().map_or(0, |r| r.k + 1);
        let Some(plan) = plan_round(&j.h, &j.pieces, c, k, j.h.min_round) else {
            // Every round is there: the end record (two copies of it, so that no single
            // damaged byte makes it look torn), or its torn beginning.
            let extent = 2 * END_LEN as u64;
            if len - at < END_LEN as u64 {
                return Ok(Ok(()));
            }
            let mut e = [0u8; 2 * END_LEN];
            let have = (len - at).min(extent) as usize;
            j.f.read_exact_at(&mut e[..have], at)
                .map_err(io_err("read the journal"))?;
            let valid = |e: &[u8]| {
                e[0..8] == END_MAGIC && u64_at(e, 8) == k && e[48..64] == link(&j.chain, &e[..48])
            };
            let good = if valid(&e[..END_LEN]) {
                Some(&e[..END_LEN])
            } else if have == 2 * END_LEN && valid(&e[END_LEN..]) {
                Some(&e[END_LEN..])
            } else {
                None
            };
            let Some(e) = good else {
                if len - at <= extent {
                    return Ok(Ok(()));
                }
                return Ok(damaged("the end record".into(), at, extent));
            };
            if len - at > extent {
                return Ok(Err(format!(
                    "is damaged: {} bytes follow the end record at offset {at}",
                    len - at - extent
                )));
            }
            // A valid end record tells the truth even if its append was cut short: the
            // rounds and the stamp were durable before it was written.
            j.done = Some(sha_at(e, 16));
            j.chain = e[48..64].try_into().expect("16 bytes");
            j.log_end = len;
            return Ok(Ok(()));
        };
        let save_len = plan.save.end - plan.save.start;
        let extent = ROUND_LEN as u64 + save_len;
        if len - at < extent {
            return Ok(Ok(()));
        }
        let mut rb = [0u8; ROUND_LEN];
        j.f.read_exact_at(&mut rb, at)
            .map_err(io_err("read the journal"))?;
        let head_ok = rb[0..8] == ROUND_MAGIC
            && rb[80..96] == link(&j.chain, &rb[..80])
            && u64_at(&rb, 8) == k
            && u64_at(&rb, 16) == plan.t
            && u64_at(&rb, 24) == plan.t_end
            && u64_at(&rb, 32) == plan.save.start
            && u64_at(&rb, 40) == save_len;
        let data_at = at + ROUND_LEN as u64;
        let end_at = at + extent;
        let mut sha = [0u8; 32];
        if head_ok {
            let mut h = Sha256::new();
            stream(&j.f, data_at..end_at, &mut buf, |b| {
                h.update(b);
                Ok(())
            })?;
            sha = h.finalize().into();
        }
        if !head_ok || sha != sha_at(&rb, 48) {
            if len - at == extent {
                return Ok(Ok(()));
            }
            return Ok(damaged(format!("the record of round {k}"), at, extent));
        }
        j.chain = rb[80..96].try_into().expect("16 bytes");
        c.advance(&j.pieces, plan.t_end - plan.t);
        j.last = Some(Round {
            save_sha: sha,
            data_at,
            end_at,
            check: j.chain,
            ..plan
        });
        j.log_end = end_at;
        at = end_at;
    }
}

/// Writes `b` at `*off` of `f`, counting against a simulated-crash `limit` of total bytes.
/// Returns false when the limit cut the write short (the caller stops as if killed).
fn put(f: &File, b: &[u8], off: &mut u64, limit: &mut Option<u64>) -> Result<bool, MailboxError> {
    let (b, cut) = match limit {
        Some(l) if (*l as usize) < b.len() => (&b[..*l as usize], true),
        _ => (b, false),
    };
    f.write_all_at(b, *off)
        .map_err(io_err("write the journal"))?;
    *off += b.len() as u64;
    if let Some(l) = limit {
        *l -= b.len() as u64;
    }
    Ok(!cut)
}

/// Copies the old mailbox bytes `r.save` to the journal at `*off` and fills in the record's
/// digest, offsets and link (after `prev`); the record header goes in front of them.
fn put_round(
    jf: &File,
    mbox: &File,
    r: &mut Round,
    prev: &[u8; 16],
    off: &mut u64,
    limit: &mut Option<u64>,
    buf: &mut [u8],
) -> Result<bool, MailboxError> {
    let head_at = *off;
    let mut at = head_at + ROUND_LEN as u64;
    r.data_at = at;
    let mut h = Sha256::new();
    let mut whole = true;
    stream(mbox, r.save.clone(), buf, |b| {
        if !whole {
            return Ok(());
        }
        h.update(b);
        whole = put(jf, b, &mut at, limit)?;
        Ok(())
    })?;
    if !whole {
        return Ok(false);
    }
    r.save_sha = h.finalize().into();
    r.end_at = at;
    let head = encode_round(r, prev);
    r.check = head[80..96].try_into().expect("16 bytes");
    let mut hoff = head_at;
    if !put(jf, &head, &mut hoff, limit)? {
        return Ok(false);
    }
    *off = at;
    Ok(true)
}

/// Writes a complete journal for cutting everything but `pieces` out of `[p0, s_old)` of
/// `mbox` (header, pieces, round 0), fsyncs it, renames it into place and fsyncs the
/// directory. On error no journal is left behind. Returns the journal, open, ready to run
/// (`None` after a simulated crash).
fn create(
    journal: &Path,
    mbox: &File,
    p0: u64,
    s_old: u64,
    pieces: Pieces,
    min_round: u64,
    crash: Crash,
) -> Result<Option<Journal>, MailboxError> {
    let tmp = tmp_path(journal);
    let j = match create_tmp(&tmp, mbox, p0, s_old, pieces, min_round, crash) {
        Ok(Some(j)) => j,
        Ok(None) => return Ok(None),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if crash == Crash::BeforeRename {
        return Ok(None);
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
    Ok(Some(j))
}

fn create_tmp(
    tmp: &Path,
    mbox: &File,
    p0: u64,
    s_old: u64,
    pieces: Pieces,
    min_round: u64,
    crash: Crash,
) -> Result<Option<Journal>, MailboxError> {
    // A leftover `.tmp` is garbage (see the protocol). The new one is created exclusively,
    // never through a symlink and never by truncating a file that is already there (a hard
    // link to something else); the directory is entered with its owner's rights by any
    // privileged caller (`crate::userfs`).
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(MailboxError::Io("remove an incomplete journal", e))
        }
        _ => {}
    }
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .map_err(io_err("create the journal"))?;
    let meta = mbox.metadata().map_err(io_err("stat the mailbox"))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let tail_len = pieces.total();
    let end = p0
        .checked_add(tail_len)
        .filter(|&e| e < s_old)
        .ok_or_else(|| MailboxError::Journal("nothing to remove".into()))?;
    let table = pieces.encode();
    let mut header = Header {
        dev: meta.dev(),
        ino: meta.ino(),
        p0,
        s_old,
        tail_len,
        pieces: pieces.0.len() as u64,
        stale_sha: [0; 32],
        pieces_sha: Sha256::digest(&table).into(),
        nonce: new_nonce()?,
        min_round: min_round.max(1),
    };
    debug_assert_eq!(header.new_end(), end);
    header.stale_sha = sampled_digest(mbox, header.stale_checked(), &mut buf)?;
    let chain = header.chain_seed();
    let mut limit = match crash {
        Crash::JournalWrite(n) => Some(n),
        _ => None,
    };
    let mut off = 0;
    if !put(&out, &header.encode(), &mut off, &mut limit)?
        || !put(&out, &table, &mut off, &mut limit)?
    {
        return Ok(None);
    }
    drop(table);
    let mut last = None;
    if let Some(mut r) = plan_round(&header, &pieces, Cursor::START, 0, header.min_round) {
        if !put_round(&out, mbox, &mut r, &chain, &mut off, &mut limit, &mut buf)? {
            return Ok(None);
        }
        last = Some(r);
    }
    let chain = last.as_ref().map_or(chain, |r| r.check);
    if limit.is_some() {
        // The whole journal fit in the simulated crash's budget: it was still not synced.
        return Ok(None);
    }
    out.sync_all().map_err(io_err("sync the journal"))?;
    Ok(Some(Journal {
        f: out,
        h: header,
        pieces,
        last,
        done: None,
        log_end: off,
        chain,
    }))
}

/// Copies round `r` into the mailbox: sources below `r.save.end` from the journal's saved
/// bytes, the others from the mailbox. Writes only `[p0 + r.t, p0 + r.t_end)`. `c` is at
/// `r.t` and is left at `r.t_end` (or where a simulated crash stopped).
fn copy_round(
    j: &Journal,
    mbox: &File,
    r: &Round,
    c: &mut Cursor,
    budget: &mut Option<u64>,
    buf: &mut [u8],
) -> Result<bool, MailboxError> {
    debug_assert_eq!(c.t, r.t);
    let mut dst = j.h.p0 + r.t;
    let mut fill = 0usize;
    let mut left = r.t_end - r.t;
    while left > 0 {
        let Some(src) = c.src(&j.pieces) else {
            return Err(MailboxError::Journal("pieces end before the round".into()));
        };
        let in_piece = j.pieces.0[c.j].1 - c.o;
        let mut n = in_piece.min(left).min((buf.len() - fill) as u64);
        // Never let one read straddle the end of the saved bytes.
        if src < r.save.end {
            n = n.min(r.save.end - src);
            let at = r.data_at + (src - r.save.start);
            read_exact_at(&j.f, &mut buf[fill..fill + n as usize], at)?;
        } else {
            read_exact_at(mbox, &mut buf[fill..fill + n as usize], src)?;
        }
        fill += n as usize;
        left -= n;
        c.advance(&j.pieces, n);
        if fill == buf.len() || left == 0 {
            let mut k = fill;
            let mut whole = true;
            if let Some(b) = budget.as_mut() {
                if (*b as usize) < k {
                    k = *b as usize;
                    whole = false;
                }
                *b -= k as u64;
            }
            mbox.write_all_at(&buf[..k], dst)
                .map_err(io_err("write the mailbox"))?;
            dst += k as u64;
            fill = 0;
            if !whole {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Appends the end record: every round is durable, and this is what the new tail must look
/// like once the stale region is gone.
fn put_end(j: &mut Journal, mbox: &File, buf: &mut [u8]) -> Result<(), MailboxError> {
    let fin = sampled_digest(mbox, j.h.p0..j.h.new_end(), buf)?;
    j.f.set_len(j.log_end)
        .map_err(io_err("write the journal"))?;
    let k = j.last.as_ref().map_or(0, |r| r.k + 1);
    let e = encode_end(k, &fin, &j.chain);
    j.f.write_all_at(&[e, e].concat(), j.log_end)
        .map_err(io_err("write the journal"))?;
    j.f.sync_data().map_err(io_err("sync the journal"))?;
    j.log_end += 2 * END_LEN as u64;
    j.chain = e[48..64].try_into().expect("16 bytes");
    j.done = Some(fin);
    Ok(())
}

/// Removes the journal: the last step of every replay. The directory fsync after it is best
/// effort: a journal that reappears after a power loss finds the mailbox truncated, checks
/// the end record and is removed again, so failing the commit for it would be wrong.
fn remove(journal: &Path) -> Result<(), MailboxError> {
    match fs::remove_file(journal) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MailboxError::Io("remove the journal", e)),
    }
    let _ = sync_parent(journal);
    Ok(())
}

/// Brings `mbox` to the state journal `j` describes, from whatever state a crash left it in
/// (or from the start: a fresh journal is carried out by the same steps as a recovery),
/// then removes the journal.
fn run(
    journal: &Path,
    mut j: Journal,
    mbox: &File,
    crash: Crash,
    min_round: u64,
) -> Result<Reached, MailboxError> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let h = j.h;
    let size = mbox.metadata().map_err(io_err("stat the mailbox"))?.len();
    let refuse = |why: &str| {
        MailboxError::Journal(format!(
            "mailbox does not match {} (size {size}, journal expects {} tail bytes at {}): \
             {why}; left in place for the administrator",
            journal.display(),
            h.tail_len,
            h.p0,
        ))
    };
    if let Some(want) = j.done {
        // The stamp was durable before the end record was written: whether it is still there
        // tells whether the truncate happened.
        let l = h.stamp_len() as usize;
        let mut stamp = [0u8; STAMP_LEN as usize];
        let stamped = size >= h.new_end() + l as u64 && {
            read_exact_at(mbox, &mut stamp[..l], h.new_end())?;
            stamp[..l] == h.nonce[..l]
        };
        if !stamped {
            // The truncate happened (anything past the new end is mail appended since): only
            // confirm that the tail really is the one this journal finished before forgetting
            // it.
            if size < h.new_end() || sampled_digest(mbox, h.p0..h.new_end(), &mut buf)? != want {
                return Err(refuse("its new tail is not the one the journal finished"));
            }
            if crash == Crash::AfterTruncate {
                return Ok(Reached::Crashed);
            }
            remove(journal)?;
            return Ok(Reached::Done);
        }
        if size < h.s_old {
            return Err(refuse("the stamped stale region was cut short"));
        }
    } else {
        // The copy is unfinished, so the truncate never happened: the stale region, which no
        // round writes, must be whole (but for the stamp's place).
        if size < h.s_old || sampled_digest(mbox, h.stale_checked(), &mut buf)? != h.stale_sha {
            return Err(refuse(
                "its copy never finished and the bytes no round writes have changed",
            ));
        }
        let mut budget = match crash {
            Crash::MidCopy(n) => Some(n),
            _ => None,
        };
        // One cursor walks the kept ranges once, round after round.
        let mut c = Cursor::START;
        // The last recorded round may have been cut short: it is repeatable until the next
        // record is durable, and nothing later was started.
        if let Some(r) = j.last.clone() {
            c.seek(&j.pieces, r.t);
            if !copy_round(&j, mbox, &r, &mut c, &mut budget, &mut buf)? {
                return Ok(Reached::Crashed);
            }
            mbox.sync_data().map_err(io_err("sync the mailbox"))?;
        }
        loop {
            if c.t >= h.tail_len {
                break;
            }
            let k = j.last.as_ref().map_or(0, |r| r.k + 1);
            let Some(mut r) = plan_round(&h, &j.pieces, c, k, h.min_round) else {
                return Err(MailboxError::Journal("pieces end before the tail".into()));
            };
            // Cut off a torn record before appending.
            j.f.set_len(j.log_end)
                .map_err(io_err("write the journal"))?;
            let mut off = j.log_end;
            let torn = crash == Crash::TornRecord(k);
            let mut limit = torn.then_some((ROUND_LEN / 2) as u64);
            let prev = j.chain;
            if !put_round(&j.f, mbox, &mut r, &prev, &mut off, &mut limit, &mut buf)? || torn {
                return Ok(Reached::Crashed);
            }
            j.f.sync_data().map_err(io_err("sync the journal"))?;
            j.log_end = off;
            j.chain = r.check;
            j.last = Some(r.clone());
            if crash == Crash::AfterRecord(k) {
                return Ok(Reached::Crashed);
            }
            if !copy_round(&j, mbox, &r, &mut c, &mut budget, &mut buf)? {
                return Ok(Reached::Crashed);
            }
            mbox.sync_data().map_err(io_err("sync the mailbox"))?;
        }
        if crash == Crash::AfterCopy {
            return Ok(Reached::Crashed);
        }
    }
    if size > h.s_old {
        // A foreign MDA appended after breaking our stale dotlock. The rounds never write at
        // or above the new end, so that mail is intact behind the stale region: a new
        // journal cuts the stale region out in front of it, replacing this one at its rename.
        let pieces = Pieces(vec![(h.s_old, size - h.s_old)]);
        let wcrash = match crash {
            Crash::JournalWrite(_) | Crash::BeforeRename => crash,
            _ => Crash::None,
        };
        drop(buf);
        let Some(j2) = create(journal, mbox, h.new_end(), size, pieces, min_round, wcrash)? else {
            return Ok(Reached::Crashed);
        };
        if crash == Crash::AfterRejournal {
            return Ok(Reached::Crashed);
        }
        let rest = match crash {
            Crash::MidCopy(_)
            | Crash::AfterCopy
            | Crash::AfterStamp
            | Crash::BeforeTruncate
            | Crash::AfterTruncate => crash,
            _ => Crash::None,
        };
        return run(journal, j2, mbox, rest, min_round);
    }
    if j.done.is_none() {
        // The stamp: the start of the stale region (garbage from now on) gets the nonce,
        // durably, before the end record says the copy is over. Once the end record exists,
        // a stale region that does not start with the stamp has been truncated.
        let l = h.stamp_len() as usize;
        mbox.write_all_at(&h.nonce[..l], h.new_end())
            .map_err(io_err("write the mailbox"))?;
        mbox.sync_data().map_err(io_err("sync the mailbox"))?;
        if crash == Crash::AfterStamp {
            return Ok(Reached::Crashed);
        }
        put_end(&mut j, mbox, &mut buf)?;
    }
    if crash == Crash::BeforeTruncate {
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

/// Opens and fully verifies `journal`: `Ok(None)` when there is none.
fn open_verified(journal: &Path) -> Result<Option<Journal>, MailboxError> {
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(journal)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MailboxError::Io("open the journal", e)),
    };
    let why = match parse(f)? {
        // Round 0 was in the journal before it got its name: without it, it is damaged.
        Parse::Ok(j) if j.last.is_none() && j.done.is_none() && j.h.tail_len > 0 => {
            "round 0 is missing or damaged".to_string()
        }
        Parse::Ok(j) => return Ok(Some(*j)),
        Parse::Corrupt(why) => why,
        Parse::Refuse(why) => {
            return Err(MailboxError::JournalRefused(format!(
                "{} {why}; neither it nor the mailbox was touched: replaying it could \
                 corrupt the mailbox, and moving it away would leave a half-compacted \
                 mailbox in use. Check the mailbox (pop-spool check), restore or repair it, \
                 then move the journal away",
                journal.display()
            )))
        }
    };
    // A journal under its final name was complete and fsynced when installed, so this is
    // storage failure or tampering: keep the evidence, never guess.
    let aside = aside_path(journal, "corrupt");
    fs::rename(journal, &aside).map_err(io_err("move a corrupt journal aside"))?;
    sync_parent(journal)?;
    Err(MailboxError::Journal(format!(
        "{} is corrupt ({why}); moved to {}",
        journal.display(),
        aside.display()
    )))
}

/// Cuts `delete` (sorted, disjoint, non-empty ranges) out of `mbox`, whose size is `s_old`,
/// through a new journal at `journal` (which must not exist). The caller holds the content
/// lock and has checked the ranges. Public (hidden) for the fuzz targets, which make the
/// journals of interrupted updates with it.
#[doc(hidden)]
pub fn compact(
    journal: &Path,
    mbox: &File,
    delete: &[Range<u64>],
    s_old: u64,
    min_round: u64,
    crash: Crash,
) -> Result<Reached, MailboxError> {
    let Some(p0) = delete.first().map(|r| r.start) else {
        return Ok(Reached::Done);
    };
    let pieces = Pieces::between(delete, s_old);
    let Some(j) = create(journal, mbox, p0, s_old, pieces, min_round, crash)? else {
        return Ok(Reached::Crashed);
    };
    if crash == Crash::AfterRename {
        return Ok(Reached::Crashed);
    }
    run(journal, j, mbox, crash, min_round)
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
    recover_inner(journal, mailbox_path, file, Crash::None, MIN_ROUND).map(|r| r.is_some())
}

/// Whether `journal` (or the temporary file of one being written) exists: an update to finish
/// or clean away under the content lock. Never follows a symlink.
pub fn pending(journal: &Path) -> Result<bool, MailboxError> {
    for p in [journal.to_path_buf(), tmp_path(journal)] {
        match fs::symlink_metadata(&p) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(MailboxError::Io("look for the journal", e)),
        }
    }
    Ok(false)
}

/// What the caller of [`lock_and_replay`] decided, under the content lock, before the replay.
pub enum Then<G> {
    /// Replay `journal` while `guard` is held (e.g. a [`crate::userfs::AsUser`] for a journal
    /// in the user's home); the guard is handed back with the lock.
    Replay { journal: PathBuf, guard: G },
    /// Nothing to replay (no journal is known, or none is there).
    Skip(G),
    /// The lock is on the wrong file (the path was renamed over or removed while we waited):
    /// the lock is given back and the caller opens the mailbox again.
    Reopen,
}

/// Which step of [`lock_and_replay`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Lock,
    Replay,
}

/// The content lock, whether a journal was replayed under it, and the guard of [`Then`].
pub struct Recovered<G> {
    pub lock: ContentLock,
    pub replayed: bool,
    pub guard: G,
}

/// Takes the content lock on the mailbox at `path` open as `file`, runs `between` (a check
/// that `path` still names `file`, entering the state directory owner's identity...), then
/// replays the journal it names (see [`recover`]; `named` is the mailbox's path in its
/// messages). `None`: `between` asked for [`Then::Reopen`]. Errors of the lock and the replay
/// go through `err`.
pub fn lock_and_replay<G, E>(
    path: &Path,
    named: &Path,
    file: &File,
    opts: &LockOptions,
    err: impl Fn(Step, MailboxError) -> E,
    between: impl FnOnce(&ContentLock) -> Result<Then<G>, E>,
) -> Result<Option<Recovered<G>>, E> {
    let lock = ContentLock::acquire(path, file, opts).map_err(|e| err(Step::Lock, e))?;
    let (replayed, guard) = match between(&lock)? {
        Then::Reopen => return Ok(None),
        Then::Skip(guard) => (false, guard),
        Then::Replay { journal, guard } => {
            let r = recover(&journal, named, file).map_err(|e| err(Step::Replay, e))?;
            (r, guard)
        }
    };
    Ok(Some(Recovered {
        lock,
        replayed,
        guard,
    }))
}

pub(crate) fn recover_inner(
    journal: &Path,
    mailbox_path: &Path,
    file: &File,
    crash: Crash,
    min_round: u64,
) -> Result<Option<Reached>, MailboxError> {
    // A .tmp is a journal whose writing never finished: the mailbox was not touched.
    match fs::remove_file(tmp_path(journal)) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(MailboxError::Io("remove an incomplete journal", e)),
    }
    let Some(j) = open_verified(journal)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(io_err("stat the mailbox"))?;
    // Only the inode number is compared: st_dev of device-mapper and NFS volumes can change
    // across the reboot that typically precedes a recovery, and the digests below catch
    // anything an inode-number coincidence could let through.
    if meta.ino() != j.h.ino {
        let aside = aside_path(journal, "orphan");
        fs::rename(journal, &aside).map_err(io_err("move an orphan journal aside"))?;
        sync_parent(journal)?;
        return Err(MailboxError::Journal(format!(
            "{} belongs to inode {}, but {} is now inode {} (mailbox replaced); moved to {}",
            journal.display(),
            j.h.ino,
            mailbox_path.display(),
            meta.ino(),
            aside.display()
        )));
    }
    run(journal, j, file, crash, min_round).map(Some)
}

/// Whether a path exists without following a symlink (a dangling symlink exists).
pub(crate) fn exists(p: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBOX: &[u8] = b"From a@example.org Thu Jan  1 00:00:00 1970\nSubject: one\n\nbody\n\nFrom b@example.org Thu Jan  1 00:00:00 1970\nSubject: two\n\nline\n";

    fn setup(dir: &Path) -> (PathBuf, PathBuf, File) {
        let (m, j) = (dir.join("mbox"), dir.join("mbox.journal"));
        fs::write(&m, MBOX).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&m).unwrap();
        (m, j, f)
    }

    fn cut(r: Range<usize>) -> Vec<u8> {
        [&MBOX[..r.start], &MBOX[r.end..]].concat()
    }

    /// A journal of the previous format is refused, and it and the mailbox stay as they are.
    #[test]
    fn a_version_3_journal_is_refused_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (m, j, f) = setup(dir.path());
        let len = MBOX.len() as u64;
        let r = compact(
            &j,
            &f,
            std::slice::from_ref(&(3..20)),
            len,
            1,
            Crash::AfterRecord(1),
        )
        .unwrap();
        assert_eq!(r, Reached::Crashed);
        let mut b = fs::read(&j).unwrap();
        b[8..12].copy_from_slice(&JOURNAL_VERSION_OLD.to_le_bytes());
        fs::write(&j, &b).unwrap();
        let before = fs::read(&m).unwrap();
        let e = recover(&j, &m, &f).unwrap_err();
        assert!(matches!(e, MailboxError::JournalRefused(_)), "{e}");
        assert!(e.to_string().contains("format version 3"), "{e}");
        assert_eq!(fs::read(&j).unwrap(), b);
        assert_eq!(fs::read(&m).unwrap(), before);
        let (code, _) = e.response();
        assert_eq!(code, Some(spool_wire::pop3::response::RespCode::SysTemp));
    }

    /// Any one damaged byte of the end record (either copy) still reads as the end.
    #[test]
    fn one_damaged_end_record_copy_is_enough() {
        for copy in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let (m, j, f) = setup(dir.path());
            let len = MBOX.len() as u64;
            let r = compact(
                &j,
                &f,
                std::slice::from_ref(&(3..20)),
                len,
                1,
                Crash::AfterTruncate,
            )
            .unwrap();
            assert_eq!(r, Reached::Crashed);
            let mut b = fs::read(&j).unwrap();
            let at = b.len() - 2 * END_LEN + copy * END_LEN + 20;
            b[at] ^= 4;
            fs::write(&j, &b).unwrap();
            assert!(recover(&j, &m, &f).unwrap());
            assert_eq!(fs::read(&m).unwrap(), cut(3..20));
            assert!(!j.exists());
        }
    }

    /// A stale region shorter than the stamp: the stamp is that short, and mail appended after
    /// the truncate is kept whatever its first bytes.
    #[test]
    fn a_stale_region_shorter_than_the_stamp() {
        for (del, stop) in [
            (5..6usize, Crash::AfterStamp),
            (5..6, Crash::BeforeTruncate),
            (5..9, Crash::AfterTruncate),
            (MBOX.len() - 3..MBOX.len(), Crash::AfterTruncate),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (m, j, f) = setup(dir.path());
            let len = MBOX.len() as u64;
            let d = del.start as u64..del.end as u64;
            let r = compact(&j, &f, &[d], len, 1, stop).unwrap();
            assert_eq!(r, Reached::Crashed);
            let mut want = cut(del.clone());
            if stop == Crash::AfterTruncate {
                // The very bytes that were cut, delivered again.
                let late = &MBOX[want.len()..];
                let mut a = OpenOptions::new().append(true).open(&m).unwrap();
                io::Write::write_all(&mut a, late).unwrap();
                want.extend_from_slice(late);
            }
            assert!(recover(&j, &m, &f).unwrap());
            assert_eq!(fs::read(&m).unwrap(), want, "{del:?} {stop:?}");
        }
    }

    /// Bytes after the end record cannot come from a crash: refused, left in place.
    #[test]
    fn bytes_after_the_end_record_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (m, j, f) = setup(dir.path());
        let len = MBOX.len() as u64;
        let r = compact(
            &j,
            &f,
            std::slice::from_ref(&(3..20)),
            len,
            1,
            Crash::BeforeTruncate,
        )
        .unwrap();
        assert_eq!(r, Reached::Crashed);
        let mut b = fs::read(&j).unwrap();
        b.push(0);
        fs::write(&j, &b).unwrap();
        let e = recover(&j, &m, &f).unwrap_err();
        assert!(matches!(e, MailboxError::JournalRefused(_)), "{e}");
        assert!(j.exists());
    }
}
