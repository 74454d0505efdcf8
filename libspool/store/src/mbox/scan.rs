//! Finding messages in an mbox: `From ` separators found with memchr-class search over large
//! buffered reads (or pread), never byte at a time, never mmap.
//!
//! The format as read here (RFC 4155 leaves these choices to the reader):
//!
//! - A separator is any line that begins with `From ` (at offset 0 or right after an LF),
//!   whatever follows. The `From ` line itself is not part of the message.
//! - The one empty line (`LF` or `CRLF`) right before the next separator, or before the end
//!   of the scanned extent, is the mbox's separator blank line and not part of the message;
//!   when there is none (a writer that omits it), nothing is stripped.
//! - Data before the first `From ` line is not a message: it is kept untouched and reported
//!   as a warning. A last message without a final newline is reported too, and gets a CRLF
//!   in its canonical form.
//! - Works the same on LF- and CRLF-stored files, and on any bytes (NUL included).
//!
//! Speed: the file is read with 1 MiB `pread`s; separators are found with one
//! `memmem` search for `\nFrom ` per buffer; each message's header block goes through the
//! canonical line machine (which also feeds the UIDL hasher); bodies are only counted with
//! SIMD LF/CRLF counts. A separator, a line or a header may straddle a buffer boundary: the
//! few bytes that could still start a separator are carried into the next buffer, and the
//! line machine is streaming.

#![forbid(unsafe_code)]

use crate::canon::{Canon, CanonOptions, Counter};
use crate::mbox::uidl::{self, UidlHasher, UIDL_HEX_LEN};
use memchr::{memchr, memmem};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes read per `pread` while scanning.
pub const SCAN_BUF: usize = 1 << 20;

/// `\nFrom ` less one byte: how many bytes at a buffer's end may still start a separator.
const CARRY: usize = 5;

const SEP_SHIFT: u32 = 62;
const END_MASK: u64 = (1 << SEP_SHIFT) - 1;

/// Where one message lies in the mbox, and its canonical size. 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo {
    from_start: u64,
    message_start: u64,
    /// `message_end` in the low 62 bits, the separator blank line's length (0-2) above.
    end_sep: u64,
    size: u64,
}

impl MessageInfo {
    fn new(from_start: u64, message_start: u64, message_end: u64, sep: u8, size: u64) -> Self {
        MessageInfo {
            from_start,
            message_start,
            end_sep: (message_end & END_MASK) | (u64::from(sep) << SEP_SHIFT),
            size,
        }
    }
    /// Offset of the `From ` line.
    pub fn from_line_start(&self) -> u64 {
        self.from_start
    }
    /// Offset of the first byte after the `From ` line.
    pub fn message_start(&self) -> u64 {
        self.message_start
    }
    /// End of the message's bytes, excluding the separator blank line.
    pub fn message_end(&self) -> u64 {
        self.end_sep & END_MASK
    }
    /// Where the next message's `From ` line starts (or the scanned extent ends).
    pub fn next_start(&self) -> u64 {
        self.message_end() + (self.end_sep >> SEP_SHIFT)
    }
    /// Raw bytes of the message (`message_start..message_end`).
    pub fn raw_len(&self) -> u64 {
        self.message_end() - self.message_start
    }
    /// Octets of the canonical form.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The four stored words (`from_line_start`, `message_start`, end and separator length
    /// packed, `size`): the index's on-disk record.
    pub fn to_words(&self) -> [u64; 4] {
        [self.from_start, self.message_start, self.end_sep, self.size]
    }
    /// The inverse of `to_words`, `None` unless the words describe a well-formed message:
    /// `From ` line before the message, the separator blank line 0-2 bytes, and a canonical
    /// size that the raw bytes can produce (at most every byte an LF doubled, plus a final
    /// CRLF). An index is checked record by record with this before it is believed.
    pub fn from_words(w: [u64; 4]) -> Option<MessageInfo> {
        let [from_start, message_start, end_sep, size] = w;
        let end = end_sep & END_MASK;
        let sep = end_sep >> SEP_SHIFT;
        let plausible = from_start < message_start
            && message_start <= end
            && sep <= 2
            && size <= (end - message_start).saturating_mul(2).saturating_add(2);
        plausible.then_some(MessageInfo {
            from_start,
            message_start,
            end_sep,
            size,
        })
    }
    /// The same message `delta` bytes earlier in the file (after a compaction removed
    /// `delta` bytes before it).
    pub fn shifted_back(&self, delta: u64) -> MessageInfo {
        let sep = self.end_sep >> SEP_SHIFT;
        MessageInfo::new(
            self.from_start - delta,
            self.message_start - delta,
            self.message_end() - delta,
            sep as u8,
            self.size,
        )
    }
}

/// A last message that lacks its final newline (reported, and given a CRLF when sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unterminated {
    #[default]
    No,
    /// The last message's last line has no LF.
    Message,
    /// The last `From ` line itself has no LF: an empty message.
    FromLine,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    pub messages: Vec<MessageInfo>,
    /// 32 hex characters per message, in order: one allocation instead of one per message.
    uidl_hex: String,
    /// The full UIDLs of messages whose digest repeats an earlier one's (sorted by index).
    dups: Vec<(usize, String)>,
    /// Human-readable findings for the log (offsets and counts, never message content).
    pub warnings: Vec<String>,
    /// Bytes before the first `From ` line (kept untouched, never a message).
    pub preamble_len: u64,
    /// The end of the scanned extent.
    pub extent_end: u64,
    /// Offset of the first NUL byte seen, if any.
    pub nul_at: Option<u64>,
    /// Whether the last message lacks its final newline.
    pub unterminated: Unterminated,
}

impl ScanResult {
    pub fn len(&self) -> usize {
        self.messages.len()
    }
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
    /// The UIDL of message `i`.
    pub fn uidl(&self, i: usize) -> &str {
        if let Ok(k) = self.dups.binary_search_by_key(&i, |d| d.0) {
            return &self.dups[k].1;
        }
        self.digest_hex(i)
    }
    /// The 32 hex characters of message `i`'s digest (its UIDL without a duplicate suffix).
    pub fn digest_hex(&self, i: usize) -> &str {
        self.uidl_hex
            .get(i * UIDL_HEX_LEN..(i + 1) * UIDL_HEX_LEN)
            .unwrap_or("")
    }
    /// Message `i`'s digest, decoded from its hex (for the index).
    pub fn digest(&self, i: usize) -> Option<uidl::MessageDigest> {
        let hex = self.digest_hex(i).as_bytes();
        if hex.len() != UIDL_HEX_LEN {
            return None;
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut d = [0u8; uidl::DIGEST_LEN];
        for (k, out) in d.iter_mut().enumerate() {
            *out = (nib(hex[2 * k])? << 4) | nib(hex[2 * k + 1])?;
        }
        Some(d)
    }
    /// Appends one message as read back from the index. `finish` must follow the last push.
    pub fn push_indexed(&mut self, info: MessageInfo, digest: &uidl::MessageDigest) {
        uidl::push_hex(&mut self.uidl_hex, digest);
        self.messages.push(info);
    }
    /// Reserves room for `n` more messages (the index knows its count up front).
    pub fn reserve(&mut self, n: usize) {
        self.messages.reserve_exact(n);
        self.uidl_hex.reserve_exact(n * UIDL_HEX_LEN);
    }
    /// Forgets the last message (it is about to be scanned again with what follows it).
    pub fn drop_last(&mut self) {
        if self.messages.pop().is_some() {
            self.uidl_hex.truncate(self.messages.len() * UIDL_HEX_LEN);
        }
    }
    /// Appends the messages of `tail`, a scan that starts at the `From ` line right after
    /// this result's last message (`scan_from`), and takes its extent end and findings.
    /// `finish` must follow.
    pub fn extend_with(&mut self, tail: ScanResult) {
        self.messages.extend_from_slice(&tail.messages);
        self.uidl_hex.push_str(&tail.uidl_hex);
        self.extent_end = tail.extent_end;
        self.nul_at = self.nul_at.or(tail.nul_at);
        self.unterminated = tail.unterminated;
    }
    /// Derives what depends on the whole list: duplicate ordinals (a UIDL is a pure function
    /// of the message bytes and of the equal digests before it, so a list pieced together
    /// from the index and a scan gets exactly the UIDLs a full scan gives) and the warnings.
    pub fn finish(&mut self) {
        self.dups = uidl::dup_ordinals(&self.uidl_hex, self.messages.len())
            .into_iter()
            .filter_map(|(i, ord)| {
                let hex = self
                    .uidl_hex
                    .get(i * UIDL_HEX_LEN..(i + 1) * UIDL_HEX_LEN)?;
                Some((i, format!("{hex}-{}", u64::from(ord) + 1)))
            })
            .collect();
        self.warnings = self.findings();
        // The session keeps these for its whole life: give back the growth slack.
        self.messages.shrink_to_fit();
        self.uidl_hex.shrink_to_fit();
    }
    /// The log lines for what the scan found (offsets and counts, never message content).
    fn findings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(at) = self.nul_at {
            w.push(format!(
                "mailbox contains NUL bytes (first at offset {at}); they are passed through"
            ));
        }
        if let Some(last) = self.messages.last() {
            let (n, start) = (self.messages.len(), last.from_line_start());
            match self.unterminated {
                Unterminated::No => {}
                Unterminated::FromLine => w.push(format!(
                    "last From line (offset {start}) has no final newline: an empty message"
                )),
                Unterminated::Message => w.push(format!(
                    "last message ({n}, offset {start}) has no final newline: a CRLF is added when sending"
                )),
            }
        }
        if self.messages.is_empty() && self.extent_end > 0 {
            w.push(format!(
                "no From line in {} bytes: not an mbox message, left untouched",
                self.extent_end
            ));
        } else if self.preamble_len > 0 && self.preamble_len < self.extent_end {
            w.push(format!(
                "{} bytes before the first From line are not a message: left untouched",
                self.preamble_len
            ));
        }
        w
    }
    /// Keeps only the first `n` messages (the oldest). Their UIDLs do not change: duplicate
    /// ordinals count earlier messages only.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.messages.len() {
            return;
        }
        self.messages.truncate(n);
        self.messages.shrink_to_fit();
        self.uidl_hex.truncate(n * UIDL_HEX_LEN);
        self.uidl_hex.shrink_to_fit();
        self.dups.retain(|d| d.0 < n);
    }
    /// Heap bytes held per message (for the memory budget and its test).
    pub fn heap_bytes(&self) -> usize {
        self.messages.capacity() * std::mem::size_of::<MessageInfo>()
            + self.uidl_hex.capacity()
            + self
                .dups
                .iter()
                .map(|d| d.1.capacity() + std::mem::size_of::<(usize, String)>())
                .sum::<usize>()
    }
}

enum State {
    Preamble,
    FromLine {
        start: u64,
        hasher: UidlHasher,
    },
    Message {
        start: u64,
        message_start: u64,
        canon: Canon,
        size: Counter,
    },
}

/// Scans `file` from 0 to `extent_end`. Sizes follow `opts`; UIDLs do not depend on it.
/// An `UnexpectedEof` error means the file became shorter than `extent_end` meanwhile.
pub fn scan(file: &File, extent_end: u64, opts: CanonOptions) -> io::Result<ScanResult> {
    let mut res = scan_range(file, 0, extent_end, opts, SCAN_BUF)?;
    res.finish();
    Ok(res)
}

/// Scans `start..extent_end`, where `start` is where a `From ` line begins (a message
/// boundary a full scan found): the same messages a full scan finds from there on, with
/// absolute offsets. Not `finish`ed: it is meant for `ScanResult::extend_with`.
/// `InvalidData` when `start` is not a `From ` line after all.
pub fn scan_from(
    file: &File,
    start: u64,
    extent_end: u64,
    opts: CanonOptions,
) -> io::Result<ScanResult> {
    let res = scan_range(file, start, extent_end, opts, SCAN_BUF)?;
    if res.preamble_len != start || res.messages.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no From line where the index said a message starts",
        ));
    }
    Ok(res)
}

/// `scan` with a chosen read size (tests and the fuzz targets use tiny ones to cross every
/// boundary case).
#[doc(hidden)]
pub fn scan_buf(
    file: &File,
    extent_end: u64,
    opts: CanonOptions,
    read_size: usize,
) -> io::Result<ScanResult> {
    let mut res = scan_range(file, 0, extent_end, opts, read_size)?;
    res.finish();
    Ok(res)
}

/// Scans `start..extent_end` in reads of `read_size`. Since a separator is an LF followed by
/// `From `, the scan starting at a `From ` line finds exactly what a scan from 0 finds there.
fn scan_range(
    file: &File,
    start: u64,
    extent_end: u64,
    opts: CanonOptions,
    read_size: usize,
) -> io::Result<ScanResult> {
    let finder = memmem::Finder::new(b"\nFrom ");
    let mut res = ScanResult {
        extent_end,
        preamble_len: start,
        ..ScanResult::default()
    };
    let cap = usize::try_from(extent_end.saturating_sub(start))
        .unwrap_or(usize::MAX)
        .min(read_size.max(1))
        + CARRY;
    let mut buf = vec![0u8; cap];
    let mut len = 0usize; // valid bytes in buf
    let mut base = start; // file offset of buf[0]
    let mut fed = 0usize; // bytes of buf already consumed by the current state
    let mut search = 0usize; // first index where a "\nFrom " match may still start
    let mut first = true;
    let mut nul_seen = false;
    let mut state = State::Preamble;

    loop {
        // Fill the buffer (several reads if the kernel returns short ones).
        let fill_from = len;
        while len < buf.len() && base + (len as u64) < extent_end {
            let want = usize::try_from(extent_end - base - len as u64)
                .unwrap_or(usize::MAX)
                .min(buf.len() - len);
            match file.read_at(&mut buf[len..len + want], base + len as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "mailbox became shorter while being scanned",
                    ))
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let eof = base + len as u64 >= extent_end;
        if !nul_seen {
            if let Some(i) = memchr(0, &buf[fill_from..len]) {
                nul_seen = true;
                res.nul_at = Some(base + (fill_from + i) as u64);
            }
        }

        // Consume as much of the buffer as can be decided.
        loop {
            match &mut state {
                State::Preamble => {
                    let at = if first && buf[..len].starts_with(b"From ") {
                        Some(0)
                    } else {
                        finder.find(&buf[search..len]).map(|i| search + i + 1)
                    };
                    first = false;
                    match at {
                        Some(f) => {
                            res.preamble_len = base + f as u64;
                            fed = f;
                            state = State::FromLine {
                                start: base + f as u64,
                                hasher: UidlHasher::new(),
                            };
                        }
                        None => {
                            fed = len;
                            search = len.saturating_sub(CARRY);
                            break;
                        }
                    }
                }
                State::FromLine { start, hasher } => match memchr(b'\n', &buf[fed..len]) {
                    Some(i) => {
                        hasher.line_bytes(&buf[fed..fed + i]);
                        hasher.end_line();
                        let hasher = std::mem::take(hasher);
                        let start = *start;
                        search = fed + i;
                        fed += i + 1;
                        state = State::Message {
                            start,
                            message_start: base + fed as u64,
                            canon: Canon::new(opts, None, Some(hasher)),
                            size: Counter::default(),
                        };
                    }
                    None => {
                        hasher.line_bytes(&buf[fed..len]);
                        fed = len;
                        search = len;
                        break;
                    }
                },
                State::Message {
                    start,
                    message_start,
                    canon,
                    size,
                } => match finder.find(&buf[search..len]) {
                    Some(i) => {
                        let lf = search + i;
                        if fed <= lf {
                            canon.feed(&buf[fed..=lf], size)?;
                        }
                        fed = lf + 1;
                        search = fed;
                        let (from, ms) = (*start, *message_start);
                        push_message(&mut res, from, ms, base + fed as u64, canon, size)?;
                        state = State::FromLine {
                            start: base + fed as u64,
                            hasher: UidlHasher::new(),
                        };
                    }
                    None => {
                        let safe = if eof {
                            len
                        } else {
                            len.saturating_sub(CARRY).max(fed)
                        };
                        canon.feed(&buf[fed..safe], size)?;
                        fed = safe;
                        search = search.max(len.saturating_sub(CARRY));
                        break;
                    }
                },
            }
        }

        if eof {
            break;
        }
        // Carry the undecided tail (at most CARRY bytes) to the front of the buffer.
        let keep_from = fed.min(search).min(len);
        buf.copy_within(keep_from..len, 0);
        len -= keep_from;
        base += keep_from as u64;
        fed -= keep_from;
        search -= keep_from;
    }

    match state {
        State::Preamble => {
            res.preamble_len = extent_end;
        }
        State::FromLine { start, mut hasher } => {
            hasher.end_line();
            res.unterminated = Unterminated::FromLine;
            let mut canon = Canon::new(opts, None, Some(hasher));
            let mut size = Counter::default();
            push_message(
                &mut res, start, extent_end, extent_end, &mut canon, &mut size,
            )?;
        }
        State::Message {
            start,
            message_start,
            mut canon,
            mut size,
        } => {
            if !canon.at_line_start() {
                res.unterminated = Unterminated::Message;
            }
            push_message(
                &mut res,
                start,
                message_start,
                extent_end,
                &mut canon,
                &mut size,
            )?;
        }
    }
    Ok(res)
}

/// Ends a message whose raw bytes (with a possible separator blank line) end at `raw_end`.
fn push_message(
    res: &mut ScanResult,
    from_start: u64,
    message_start: u64,
    raw_end: u64,
    canon: &mut Canon,
    size: &mut Counter,
) -> io::Result<()> {
    canon.finish(size)?;
    let (mut end, mut bytes, mut sep) = (raw_end, size.0, 0u8);
    // The separator blank line: every empty line counts 2 canonical octets (CRLF).
    if canon.last_empty > 0 && raw_end - message_start >= u64::from(canon.last_empty) {
        sep = canon.last_empty;
        end -= u64::from(sep);
        bytes -= 2;
    }
    let digest = canon.hasher.take().unwrap_or_default().finish();
    uidl::push_hex(&mut res.uidl_hex, &digest);
    res.messages
        .push(MessageInfo::new(from_start, message_start, end, sep, bytes));
    Ok(())
}

/// Read size of [`digest_at`].
const DIGEST_READ: usize = 8 * 1024;

/// The digest of the message whose `From ` line starts at `info.from_line_start()`, read back
/// with `pread`: From line and header block only. Used to make sure a message is still the
/// one the scan saw before it is sent or deleted.
pub fn digest_at(file: &File, info: &MessageInfo) -> io::Result<uidl::MessageDigest> {
    digest_with(file, info, &[])
}

/// [`digest_at`] when the caller already holds `head`: the file's bytes from
/// `info.from_line_start()` on, as many as it read (any number, none included). Only what
/// `head` lacks of the From line and header block is read from the file.
pub fn digest_with(
    file: &File,
    info: &MessageInfo,
    head: &[u8],
) -> io::Result<uidl::MessageDigest> {
    let mut hasher = UidlHasher::new();
    let base = info.from_line_start();
    let mut from = HeadThenFile {
        head,
        base,
        inner: PreadReader::new(file, base, info.message_start()),
    };
    // Header blocks are mostly a few KiB: reading the message in small pieces until the
    // header ends keeps this check from reading (and, with a large buffer, zeroing) the
    // whole message again before every RETR.
    let mut chunk = [0u8; DIGEST_READ];
    loop {
        let got = from.next(&mut chunk)?;
        if got.is_empty() {
            if from.inner.pos < from.inner.end {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            break;
        }
        // The From line's own LF (the first LF, so its last byte when present) is not content.
        let got = if from.inner.pos == from.inner.end {
            got.strip_suffix(b"\n").unwrap_or(got)
        } else {
            got
        };
        hasher.line_bytes(got);
    }
    hasher.end_line();
    let mut canon = Canon::new(CanonOptions::PLAIN, Some(0), Some(hasher));
    let mut src = HeadThenFile {
        head,
        base,
        inner: PreadReader::new(file, info.message_start(), info.message_end()),
    };
    let mut null = Counter::default();
    loop {
        let got = src.next(&mut chunk)?;
        if got.is_empty() {
            if src.inner.pos < src.inner.end {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            canon.finish(&mut null)?;
            break;
        }
        if canon.feed(got, &mut null)? || !canon.in_header() {
            break;
        }
    }
    Ok(canon.hasher.take().unwrap_or_default().finish())
}

/// Serves a range of a file from `head` (the file's bytes from `base` on) where it can, and
/// with `pread` past it.
struct HeadThenFile<'h, 'f> {
    head: &'h [u8],
    base: u64,
    inner: PreadReader<'f>,
}

impl<'h> HeadThenFile<'h, '_> {
    /// The next bytes of the range (empty at its end or at a short file).
    fn next<'a>(&mut self, chunk: &'a mut [u8]) -> io::Result<&'a [u8]>
    where
        'h: 'a,
    {
        let r = &mut self.inner;
        if let Some(rel) = r.pos.checked_sub(self.base) {
            let rel = usize::try_from(rel).unwrap_or(usize::MAX);
            if rel < self.head.len() {
                let want = usize::try_from(r.end - r.pos).unwrap_or(usize::MAX);
                let got = &self.head[rel..self.head.len().min(rel.saturating_add(want))];
                r.pos += got.len() as u64;
                return Ok(got);
            }
        }
        let n = io::Read::read(r, chunk)?;
        Ok(&chunk[..n])
    }
}

/// Reads `pos..end` of a file with `pread`: no shared cursor to get confused by.
#[derive(Debug)]
pub struct PreadReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> PreadReader<'a> {
    pub fn new(file: &'a File, pos: u64, end: u64) -> Self {
        PreadReader { file, pos, end }
    }
}

impl io::Read for PreadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.end.saturating_sub(self.pos))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::{self, reference_canon};
    use crate::mbox::Quoting;
    use proptest::prelude::*;
    use std::io::Write;

    const RD: CanonOptions = CanonOptions {
        quoting: Some(Quoting::Mboxrd),
        hide_spool_headers: true,
    };

    fn file_with(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    /// Scans with several read sizes and checks every message's bytes, size and canonical
    /// form agree with canon::measure/copy and the reference; returns the 1 MiB-read result.
    fn scan_all(data: &[u8], opts: CanonOptions) -> ScanResult {
        let f = file_with(data);
        let full = scan(&f, data.len() as u64, opts).unwrap();
        for rs in [1, 2, 3, 5, 6, 7, 13, 64] {
            let r = scan_buf(&f, data.len() as u64, opts, rs).unwrap();
            assert_eq!(r.messages, full.messages, "read size {rs}");
            assert_eq!(r.uidl_hex, full.uidl_hex, "read size {rs}");
            assert_eq!(r.dups, full.dups);
            assert_eq!(r.preamble_len, full.preamble_len);
        }
        for m in &full.messages {
            let raw = &data[m.message_start() as usize..m.message_end() as usize];
            assert_eq!(
                canon::measure(&mut &raw[..], raw.len() as u64, opts).unwrap(),
                m.size()
            );
            assert_eq!(reference_canon(raw, opts, None).len() as u64, m.size());
            assert!(data[m.from_line_start() as usize..].starts_with(b"From "));
            assert!(
                m.from_line_start() < m.message_start() || m.message_start() == data.len() as u64
            );
            assert!(m.message_end() <= m.next_start() && m.next_start() - m.message_end() <= 2);
            let digest = digest_at(&f, m).unwrap();
            let mut hex = String::new();
            uidl::push_hex(&mut hex, &digest);
            let i = full.messages.iter().position(|x| x == m).unwrap();
            assert_eq!(hex, full.digest_hex(i));
        }
        // The ranges tile the file after the preamble.
        let mut at = full.preamble_len;
        for m in &full.messages {
            assert_eq!(m.from_line_start(), at);
            at = m.next_start();
        }
        assert_eq!(at, data.len() as u64);
        full
    }

    fn bodies<'a>(data: &'a [u8], r: &ScanResult) -> Vec<&'a [u8]> {
        r.messages
            .iter()
            .map(|m| &data[m.message_start() as usize..m.message_end() as usize])
            .collect()
    }

    #[test]
    fn table() {
        /// (mailbox, message bytes, preamble length, warning count)
        type Case<'a> = (&'a [u8], &'a [&'a [u8]], u64, usize);
        let cases: &[Case] = &[
            // (mailbox, message bytes, preamble, warnings)
            (b"", &[], 0, 0),
            (
                b"From a\nS: 1\n\nb\n\nFrom b\nS: 2\n\n..\n.x\n\n",
                &[b"S: 1\n\nb\n", b"S: 2\n\n..\n.x\n"],
                0,
                0,
            ),
            (
                b"From a\nS: 1\n\nb\nFrom b\nS: 2\n",
                &[b"S: 1\n\nb\n", b"S: 2\n"],
                0,
                0,
            ),
            (b"From a\nS: 1\n\nb", &[b"S: 1\n\nb"], 0, 1),
            (b"From a\n\nFrom b\n", &[b"", b""], 0, 0),
            (
                b"From a\nH: x\n\nFrom b\nH: y\n\n\n\n",
                &[b"H: x\n", b"H: y\n\n\n"],
                0,
                0,
            ),
            (
                b"From a\r\nS: 1\r\n\r\nb\r\n\r\nFrom b\r\nS: 2\r\n\r\n",
                &[b"S: 1\r\n\r\nb\r\n", b"S: 2\r\n"],
                0,
                0,
            ),
            (
                b"From a\nS: 1\r\n\nb\n\r\nFrom b\r\nS\n",
                &[b"S: 1\r\n\nb\n", b"S\n"],
                0,
                0,
            ),
            (b"garbage\n\nFrom a\nX: y\n", &[b"X: y\n"], 9, 1),
            (b"no from here\n", &[], 13, 1),
            (b"From a\nX: \0\n\n\0\n", &[b"X: \0\n\n\0\n"], 0, 1),
            (
                b"From a\nS: x\n\n>From q\n>>From r\nFrom: not a separator\n",
                &[b"S: x\n\n>From q\n>>From r\nFrom: not a separator\n"],
                0,
                0,
            ),
            (
                b"From a\nS: x\n\nFrom b\nFrom c\n\n",
                &[b"S: x\n", b"", b""],
                0,
                0,
            ),
            (b"From a", &[b""], 0, 1),
            (b"Fro", &[], 3, 1),
            (
                b"From a\nSubject: \xc3\xa9t\xe9\n\n\xff\n",
                &[b"Subject: \xc3\xa9t\xe9\n\n\xff\n"],
                0,
                0,
            ),
        ];
        for (i, (data, want, pre, warn)) in cases.iter().enumerate() {
            let r = scan_all(data, RD);
            assert_eq!(bodies(data, &r), *want, "case {i}");
            assert_eq!(r.preamble_len, *pre, "case {i}");
            assert_eq!(r.warnings.len(), *warn, "case {i}: {:?}", r.warnings);
        }
    }

    #[test]
    fn sizes_follow_options() {
        let data = b"From a\nStatus: RO\nX-Keywords: a\n  b\nSubject: s\n\n>From x\n";
        let r = scan_all(data, RD);
        // "Subject: s\r\n\r\nFrom x\r\n"
        assert_eq!(r.messages[0].size(), 22);
        let o = CanonOptions {
            quoting: Some(Quoting::Mboxo),
            hide_spool_headers: false,
        };
        let r2 = scan_all(data, o);
        assert_eq!(r2.messages[0].size(), (data.len() - 7 + 6) as u64);
        assert_eq!(r.uidl(0), r2.uidl(0));
    }

    #[test]
    fn uidls() {
        let a = b"From x@y Mon Jan  1 00:00:00 2024\nMessage-ID: <1@y>\n\nbody\n\n";
        let a_status = b"From x@y Mon Jan  1 00:00:00 2024\nStatus: RO\nMessage-ID: <1@y>\nX-UID: 5\n\nbody changed\n\n";
        let a_crlf = b"From x@y Mon Jan  1 00:00:00 2024\r\nMessage-ID: <1@y>\r\n\r\nbody\r\n\r\n";
        let b = b"From x@y Mon Jan  1 00:00:00 2024\nMessage-ID: <2@y>\n\nbody\n\n";
        let data = [&a[..], b, a_status, a_crlf, b].concat();
        let r = scan_all(&data, RD);
        let h = r.digest_hex(0).to_string();
        assert_eq!(h.len(), 32);
        assert!(h
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        let u: Vec<&str> = (0..5).map(|i| r.uidl(i)).collect();
        assert_eq!(u[0], h);
        assert_eq!(u[2], format!("{h}-2"));
        assert_eq!(u[3], format!("{h}-3"));
        assert_eq!(u[4], format!("{}-2", u[1]));
        // Independent of the options.
        let r2 = scan_all(&data, CanonOptions::PLAIN);
        assert_eq!((0..5).map(|i| r2.uidl(i)).collect::<Vec<_>>(), u);
        // An X-UIDL header is just a header.
        let forged = [&b"From z\nX-UIDL: "[..], h.as_bytes(), b"\n\n"].concat();
        let r3 = scan_all(&[&a[..], &forged].concat(), RD);
        assert_ne!(r3.uidl(0), r3.uidl(1));
    }

    #[test]
    fn uidls_survive_deletion_and_appends() {
        let msgs: Vec<Vec<u8>> = (0..8)
            .map(|i| format!("From u{i}\nMessage-ID: <{i}>\n\nb{i}\n\n").into_bytes())
            .collect();
        let whole = msgs.concat();
        let r = scan_all(&whole, RD);
        for k in 0..msgs.len() {
            let mut rest = msgs.clone();
            rest.remove(k);
            rest.push(b"From new\nMessage-ID: <new>\n\nx\n".to_vec());
            let r2 = scan_all(&rest.concat(), RD);
            let want: Vec<&str> = (0..msgs.len())
                .filter(|&i| i != k)
                .map(|i| r.uidl(i))
                .collect();
            let got: Vec<&str> = (0..msgs.len() - 1).map(|i| r2.uidl(i)).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn separators_straddle_the_real_buffer_boundary() {
        // The first read is SCAN_BUF + CARRY bytes; later reads restart after the carry.
        for pos in SCAN_BUF - 8..SCAN_BUF + 2 * CARRY + 4 {
            let pad = pos - 12;
            let mut data = b"From a\nA: b\n".to_vec();
            data.extend(std::iter::repeat_n(b'x', pad - 1));
            data.extend_from_slice(b"\n");
            assert_eq!(data.len(), pos);
            data.extend_from_slice(b"From b\nC: d\n");
            let f = file_with(&data);
            let r = scan(&f, data.len() as u64, RD).unwrap();
            assert_eq!(r.len(), 2, "separator at {pos}");
            assert_eq!(r.messages[1].from_line_start(), pos as u64);
            assert_eq!(r.messages[0].size(), (pad + 6 + 1) as u64);
        }
    }

    /// Scan speed on a real file: `MBOX_BENCH=/path cargo test -p libspool --release -- \
    /// --ignored scan_speed --nocapture`.
    #[test]
    #[ignore]
    fn scan_speed() {
        let Some(path) = std::env::var_os("MBOX_BENCH") else {
            return;
        };
        let f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let r = scan(&f, len, RD).unwrap();
            let dt = t.elapsed();
            eprintln!(
                "{} messages, {len} bytes in {dt:?} ({:.0} MB/s), {} heap bytes/message",
                r.len(),
                len as f64 / dt.as_secs_f64() / 1e6,
                r.heap_bytes() / r.len().max(1)
            );
        }
    }

    #[test]
    fn shrunk_file_is_an_error() {
        let f = file_with(b"From a\nX: y\n");
        let e = scan(&f, 100, RD).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn truncate_keeps_oldest() {
        let data = b"From a\nX: 1\n\nFrom a\nX: 1\n\nFrom b\nX: 2\n";
        let mut r = scan_all(data, RD);
        let u1 = r.uidl(1).to_string();
        r.truncate(2);
        assert_eq!(r.len(), 2);
        assert_eq!(r.uidl(1), u1);
        assert!(u1.ends_with("-2"));
    }

    #[test]
    fn memory_per_message() {
        assert_eq!(std::mem::size_of::<MessageInfo>(), 32);
        let data: Vec<u8> = (0..1000)
            .flat_map(|i| format!("From a\nM: {i}\n\nb\n\n").into_bytes())
            .collect();
        let f = file_with(&data);
        let r = scan(&f, data.len() as u64, RD).unwrap();
        assert!(r.heap_bytes() <= 64 * 1000, "{}", r.heap_bytes());
    }

    /// A random message as an mboxrd writer would store it: no line starts with `From `,
    /// `>*From ` lines quoted, ending with LF (or empty).
    fn message_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"From ".to_vec()),
            Just(b">From ".to_vec()),
            Just(b"Status: RO".to_vec()),
            Just(b"X-UID: 7".to_vec()),
            Just(b" cont".to_vec()),
            Just(b"Subject: y".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n\n".to_vec()),
            Just(b".".to_vec()),
            Just(b"\0\xff".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| {
            let raw = v.concat();
            let mut out = Vec::new();
            for line in raw.split_inclusive(|&b| b == b'\n') {
                let gts = line.iter().take_while(|&&c| c == b'>').count();
                if line[gts..].starts_with(b"From ") {
                    out.push(b'>');
                }
                out.extend_from_slice(line);
            }
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out
        })
    }

    proptest! {
        #[test]
        fn finds_exactly_the_messages(
            msgs in proptest::collection::vec(message_strategy(), 0..6),
            crlf_sep in any::<bool>(),
            truncate_last in any::<bool>(),
            read_size in 1usize..40,
        ) {
            let mut data = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                data.extend_from_slice(format!("From sender{i} Mon Jan  1 00:00:00 2024").as_bytes());
                data.extend_from_slice(if crlf_sep { b"\r\n" } else { b"\n" });
                data.extend_from_slice(m);
                if !(truncate_last && i + 1 == msgs.len()) {
                    data.extend_from_slice(if crlf_sep { b"\r\n" } else { b"\n" });
                }
            }
            let f = file_with(&data);
            let r = scan_buf(&f, data.len() as u64, RD, read_size).unwrap();
            let full = scan(&f, data.len() as u64, RD).unwrap();
            prop_assert_eq!(&r.messages, &full.messages);
            prop_assert_eq!(&r.uidl_hex, &full.uidl_hex);
            prop_assert_eq!(r.len(), msgs.len());
            for (i, m) in r.messages.iter().enumerate() {
                let raw = &data[m.message_start() as usize..m.message_end() as usize];
                // Without its separator blank line, a last message that ends with an empty
                // line loses that line instead (the format cannot tell them apart).
                let mut want: &[u8] = &msgs[i];
                if truncate_last && i + 1 == msgs.len() {
                    for blank in [&b"\r\n"[..], b"\n"] {
                        if let Some(w) = want.strip_suffix(blank) {
                            if w.is_empty() || w.ends_with(b"\n") {
                                want = w;
                                break;
                            }
                        }
                    }
                }
                prop_assert_eq!(raw, want);
                prop_assert_eq!(m.size(), reference_canon(raw, RD, None).len() as u64);
                let mut out = Vec::new();
                canon::copy(&mut PreadReader::new(&f, m.message_start(), m.message_end()), m.raw_len(), RD, None, &mut out).unwrap();
                prop_assert_eq!(out, reference_canon(raw, RD, None));
            }
        }
    }
}
