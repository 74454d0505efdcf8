//! The canonical form of a message: exactly what RETR sends before byte-stuffing. CRLF line
//! endings (a lone LF becomes CRLF, an existing CRLF is kept, a lone CR is content), mboxrd
//! unquoting when asked, spool headers hidden when asked, and a final CRLF when the stored
//! message lacks one (an empty message stays empty). Used by mbox and Maildir alike.
//! OWNER: mbox helper. `measure` and `copy` must agree on every input: `copy` writes exactly
//! `measure` octets when `body_lines` is None.
//!
//! The definition, line by line (a line is the bytes up to and including an LF; an
//! unterminated last line is treated exactly as if an LF followed it):
//!
//! - Line endings: a line ending in CRLF is kept; a line ending in a bare LF gets a CR
//!   inserted. Any other CR is content and passes through unchanged.
//! - Header block: the lines before the first empty line (`LF` or `CRLF` alone); the whole
//!   message when there is none. With `hide_spool_headers`, a header line whose field name
//!   is one of Status, X-Status, X-UID, X-IMAP, X-IMAPbase, X-Keywords, Content-Length
//!   (ASCII case-insensitive), followed by at most [`MAX_WSP_BEFORE_COLON`] spaces or tabs
//!   and a colon, is dropped with its line ending, and so are the continuation lines (those
//!   starting with a space or tab) that follow it. Nothing outside the header block is
//!   hidden. The whitespace bound keeps the look-ahead, and so memory, bounded.
//! - Quoting: with mboxrd, a line matching `^>+From ` (in the header block or the body)
//!   loses its first `>`. The run of `>` may be of any length.
//! - TOP n: the header block, the empty line, and the first n body lines; when the message
//!   has no empty line, the whole header block (the whole message). This is a prefix of the
//!   RETR output by construction: the same machine simply stops at a line boundary.
//!
//! One streaming line machine implements all of it and is shared by `measure`, `copy`, the
//! mbox scanner (which also feeds header lines to the UIDL hasher), and the pre-send digest
//! check, so the sizes in STAT/LIST cannot drift from what RETR sends. Bodies are handled in
//! bulk: `copy` moves whole lines with one `memchr` each; `Wire` (RETR/TOP's path) also
//! byte-stuffs as it goes, since the machine knows every line start, and copies body lines
//! found 64 bytes at a time by a vector compare; and counting (`measure`, the scan) uses SIMD
//! counts of LFs and CRLFs over whole buffers, only visiting lines that start with `>`.

use crate::mbox::uidl::UidlHasher;
use crate::mbox::Quoting;
use memchr::{memchr, memmem, memrchr};
use std::io::{self, Read, Write};

/// Read size of `measure` and `copy`, and the output staging buffer of `copy`.
pub const COPY_BUF: usize = 64 * 1024;
/// Most spaces/tabs accepted between a spool header's field name and its colon (RFC 5322's
/// obsolete syntax allows some; real spool writers use none).
pub const MAX_WSP_BEFORE_COLON: usize = 16;

/// The spool-internal header fields hidden from clients and always left out of UIDL digests.
pub const SPOOL_HEADERS: [&[u8]; 7] = [
    b"status",
    b"x-status",
    b"x-uid",
    b"x-imap",
    b"x-imapbase",
    b"x-keywords",
    b"content-length",
];
const LONGEST_SPOOL_HEADER: usize = 14;
const PEND_CAP: usize = LONGEST_SPOOL_HEADER + MAX_WSP_BEFORE_COLON + 1;
const FROM_: &[u8; 5] = b"From ";

/// What to undo or hide while canonicalising.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonOptions {
    /// `Some(Mboxrd)`: remove one `>` from `>+From ` lines. `Some(Mboxo)` or `None`: no change.
    pub quoting: Option<Quoting>,
    /// Drop Status, X-Status, X-UID, X-IMAP, X-IMAPbase, X-Keywords and Content-Length header
    /// fields (with their continuation lines) from the header block.
    pub hide_spool_headers: bool,
}

impl CanonOptions {
    /// Maildir: nothing to unquote, nothing to hide.
    pub const PLAIN: CanonOptions = CanonOptions {
        quoting: None,
        hide_spool_headers: false,
    };
}

/// Size of the canonical form of the `len` raw bytes read from `src`.
pub fn measure(src: &mut dyn Read, len: u64, opts: CanonOptions) -> io::Result<u64> {
    let mut canon = Canon::new(opts, None, None);
    let mut count = Counter(0);
    pump(src, len, &mut canon, &mut count)?;
    Ok(count.0)
}

/// Writes the canonical form of the `len` raw bytes read from `src` to `out`; with
/// `body_lines = Some(n)`, only the header block, the blank line and n body lines (TOP).
/// Returns the octets written. Bounded memory, bulk operations.
pub fn copy(
    src: &mut dyn Read,
    len: u64,
    opts: CanonOptions,
    body_lines: Option<u64>,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let mut canon = Canon::new(opts, body_lines, None);
    let mut pooled = Pooled::take(OUT_BUF, 0);
    pooled.v.clear();
    pooled.v.reserve(COPY_BUF);
    let mut sink = WriteSink {
        out,
        buf: std::mem::take(&mut pooled.v),
        written: 0,
    };
    let result = pump(src, len, &mut canon, &mut sink).and_then(|()| sink.flush());
    pooled.v = std::mem::take(&mut sink.buf);
    result?;
    Ok(sink.written)
}

/// Streams raw message bytes into their wire form (canonical, then byte-stuffed: exactly
/// what goes between the `+OK` line and the terminating `.` line), appended to the caller's
/// buffer chunk by chunk. The caller decides when staged bytes may leave, which is what lets
/// RETR check a message's header block (with the UIDL hasher on) in the same pass that
/// produces its output, and send nothing until the check has passed.
#[derive(Debug)]
pub(crate) struct Wire {
    canon: Canon,
    line_start: bool,
    written: u64,
}

impl Wire {
    pub(crate) fn new(
        opts: CanonOptions,
        body_lines: Option<u64>,
        hasher: Option<UidlHasher>,
    ) -> Wire {
        Wire {
            canon: Canon::new(opts, body_lines, hasher),
            line_start: true,
            written: 0,
        }
    }

    /// Appends the wire form of `data` to `buf`. Returns true once TOP has all it needs.
    pub(crate) fn feed(&mut self, data: &[u8], buf: &mut Vec<u8>) -> io::Result<bool> {
        let mut sink = WireSink {
            buf,
            line_start: self.line_start,
            written: self.written,
        };
        let r = self.canon.feed(data, &mut sink);
        self.line_start = sink.line_start;
        self.written = sink.written;
        r
    }

    /// The input ended: an unterminated last line gets its CRLF.
    pub(crate) fn finish(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut sink = WireSink {
            buf,
            line_start: self.line_start,
            written: self.written,
        };
        let r = self.canon.finish(&mut sink);
        self.line_start = sink.line_start;
        self.written = sink.written;
        r
    }

    /// Still inside the header block: the UIDL digest is not complete yet.
    pub(crate) fn in_header(&self) -> bool {
        self.canon.in_header()
    }

    pub(crate) fn hasher_mut(&mut self) -> Option<&mut UidlHasher> {
        self.canon.hasher.as_mut()
    }

    pub(crate) fn take_hasher(&mut self) -> Option<UidlHasher> {
        self.canon.hasher.take()
    }

    /// Canonical octets produced so far (stuffing dots not counted): LIST's size for RETR.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Nothing is pending and every line output so far is complete: the wire form ends
    /// with CRLF or is empty, so the terminator is `.` CRLF alone.
    pub(crate) fn at_line_start(&self) -> bool {
        self.line_start
    }
}

/// Read size of [`send_wire`]: large reads for large messages, one read for most.
pub const WIRE_READ: usize = 128 * 1024;

/// How [`send_wire`] failed.
#[derive(Debug)]
pub(crate) enum WireError {
    /// Nothing left the sink (the staged status line was dropped): a clean `-ERR` is possible.
    BeforeStart(io::Error),
    /// Part of the response may have left.
    During(io::Error),
}

/// Streams the `len` raw bytes of `src` in wire form into `w` (status line first), letting
/// them leave as they come: for sources with nothing to check before sending (a Maildir
/// message, immutable by convention and opened a moment ago). One copy in user space, as for
/// mbox. Returns the canonical octets written (LIST's size for RETR).
pub(crate) fn send_wire(
    src: &mut dyn Read,
    len: u64,
    opts: CanonOptions,
    body_lines: Option<u64>,
    w: &mut dyn crate::mailbox::WireOut,
) -> Result<u64, WireError> {
    let mut wire = Wire::new(opts, body_lines, None);
    let mark = w.start();
    let cap = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .clamp(1, WIRE_READ);
    let mut pooled = Pooled::take(IN_BUF, cap);
    let buf = &mut pooled.v[..cap];
    let mut left = len;
    let mut spilled = false;
    let fail = |spilled: bool, w: &mut dyn crate::mailbox::WireOut, e: io::Error| {
        if spilled {
            WireError::During(e)
        } else {
            w.cancel(mark);
            WireError::BeforeStart(e)
        }
    };
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "message ended early (changed while being read?)",
                );
                return Err(fail(spilled, w, e));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(spilled, w, e)),
        };
        left -= n as u64;
        let done = wire.feed(&buf[..n], w.buf()).map_err(WireError::During)?;
        w.spill().map_err(WireError::During)?;
        spilled = true;
        if done {
            return Ok(wire.written());
        }
    }
    wire.finish(w.buf()).map_err(WireError::During)?;
    w.spill().map_err(WireError::During)?;
    Ok(wire.written())
}

/// Which per-thread buffer a [`Pooled`] borrows.
pub(crate) const IN_BUF: usize = 0;
const OUT_BUF: usize = 1;

thread_local! {
    /// One read and one write buffer per thread, reused by every `copy` and `measure`: a
    /// RETR of every message of a 144,524-message mailbox must not allocate and zero 64 KiB
    /// per message (measured: 8% of RETR-all in memset alone).
    static POOL: std::cell::RefCell<[Vec<u8>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// A per-thread buffer, given back on drop (also on error paths).
pub(crate) struct Pooled {
    pub(crate) v: Vec<u8>,
    which: usize,
}

impl Pooled {
    /// Borrows buffer `which`, at least `min_len` bytes long.
    pub(crate) fn take(which: usize, min_len: usize) -> Pooled {
        let mut v = POOL.with(|p| std::mem::take(&mut p.borrow_mut()[which]));
        if v.len() < min_len {
            v.resize(min_len, 0);
        }
        Pooled { v, which }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.v);
        POOL.with(|p| p.borrow_mut()[self.which] = v);
    }
}

/// Reads exactly `len` bytes (fewer when TOP is satisfied early) through `canon`.
fn pump<S: Sink>(src: &mut dyn Read, len: u64, canon: &mut Canon, sink: &mut S) -> io::Result<()> {
    let cap = usize::try_from(len).unwrap_or(usize::MAX).min(COPY_BUF);
    let mut pooled = Pooled::take(IN_BUF, cap);
    let buf = &mut pooled.v[..cap];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "message ended early (changed while being read?)",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        left -= n as u64;
        if canon.feed(&buf[..n], sink)? {
            return Ok(());
        }
    }
    canon.finish(sink)
}

/// Where the line machine puts canonical bytes.
pub(crate) trait Sink {
    /// Only the number of octets matters: enables the bulk counting path for bodies.
    const COUNT_ONLY: bool;
    /// The sink is a [`WireSink`]: enables the bulk copy path for bodies.
    const WIRE: bool = false;
    fn emit(&mut self, b: &[u8]) -> io::Result<()>;
    /// Adds `n` octets without their content; only called when `COUNT_ONLY`.
    fn add_count(&mut self, n: u64);
    /// A [`WireSink`]'s buffer, line-start flag and octet count; only called when `WIRE`.
    fn wire_parts(&mut self) -> WireParts<'_> {
        unreachable!("wire_parts is only used by wire sinks")
    }
}

/// Appends the byte-stuffed canonical form (the octets on the wire between the status line
/// and the terminating `.` line) to a buffer. Stuffing here, where every line start is
/// known, instead of in a second pass over the output saves a scan and a copy of every
/// byte sent: canonical output has an LF only at the end of a line, so a line starts
/// exactly after an emitted LF.
#[derive(Debug)]
pub(crate) struct WireSink<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
    /// The next emitted byte starts a line.
    pub(crate) line_start: bool,
    /// Canonical octets emitted (stuffing dots not counted).
    pub(crate) written: u64,
}

/// The fields of a [`WireSink`] the bulk body copy updates.
pub(crate) struct WireParts<'a> {
    buf: &'a mut Vec<u8>,
    line_start: &'a mut bool,
    written: &'a mut u64,
}

impl Sink for WireSink<'_> {
    const COUNT_ONLY: bool = false;
    const WIRE: bool = true;
    fn emit(&mut self, b: &[u8]) -> io::Result<()> {
        let Some(&last) = b.last() else {
            return Ok(());
        };
        if self.line_start && b[0] == b'.' {
            self.buf.push(b'.');
        }
        self.buf.extend_from_slice(b);
        self.written += b.len() as u64;
        self.line_start = last == b'\n';
        Ok(())
    }
    fn add_count(&mut self, _n: u64) {
        unreachable!("add_count is only used by counting sinks")
    }
    fn wire_parts(&mut self) -> WireParts<'_> {
        WireParts {
            buf: self.buf,
            line_start: &mut self.line_start,
            written: &mut self.written,
        }
    }
}

/// Counts canonical octets.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub u64);

impl Sink for Counter {
    const COUNT_ONLY: bool = true;
    fn emit(&mut self, b: &[u8]) -> io::Result<()> {
        self.0 += b.len() as u64;
        Ok(())
    }
    fn add_count(&mut self, n: u64) {
        self.0 += n;
    }
}

/// Stages output so the many small pieces (line ends) become few writes.
struct WriteSink<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    written: u64,
}

impl WriteSink<'_> {
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Sink for WriteSink<'_> {
    const COUNT_ONLY: bool = false;
    fn emit(&mut self, b: &[u8]) -> io::Result<()> {
        if self.buf.len() + b.len() > COPY_BUF {
            self.flush()?;
        }
        if b.len() >= COPY_BUF {
            self.out.write_all(b)?;
        } else {
            self.buf.extend_from_slice(b);
        }
        self.written += b.len() as u64;
        Ok(())
    }
    fn add_count(&mut self, _n: u64) {
        unreachable!("add_count is only used by counting sinks")
    }
}

fn emit_gts<S: Sink>(out: &mut S, mut n: u64) -> io::Result<()> {
    const GTS: [u8; 64] = [b'>'; 64];
    while n > 0 {
        let k = n.min(GTS.len() as u64) as usize;
        out.emit(&GTS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Where the machine is inside the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of the line seen yet.
    Start,
    /// Header block, the line began with CR: an empty CRLF line if LF comes next.
    HeaderCr,
    /// Header block, matching a spool header name; the bytes are held in `pend`.
    FieldName,
    /// A `>` run (`gt_run` long, then `from_matched` bytes of `From `) whose first `>` may
    /// have to be removed; the bytes are held back as counts.
    Gt,
    /// The rest of the line: output when `emit`, hashed when `hash`.
    Pass { emit: bool, hash: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Hidden,
    Shown,
    Undecided,
}

/// Decides whether the header line starting with `p` is a spool header, as soon as possible.
fn field_decision(p: &[u8]) -> Field {
    let k = p.iter().position(|&c| c == b':' || c == b' ' || c == b'\t');
    let Some(k) = k else {
        let prefix_of_any = p.len() <= LONGEST_SPOOL_HEADER
            && SPOOL_HEADERS
                .iter()
                .any(|n| n.len() >= p.len() && n[..p.len()].eq_ignore_ascii_case(p));
        return if prefix_of_any {
            Field::Undecided
        } else {
            Field::Shown
        };
    };
    if !SPOOL_HEADERS
        .iter()
        .any(|n| n.eq_ignore_ascii_case(&p[..k]))
    {
        return Field::Shown;
    }
    let rest = &p[k..];
    let wsp = rest
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    if wsp > MAX_WSP_BEFORE_COLON {
        Field::Shown
    } else if wsp == rest.len() {
        Field::Undecided
    } else if rest[wsp] == b':' {
        Field::Hidden
    } else {
        Field::Shown
    }
}

/// `line` starts with `>`: is it `>+From `? `line` must contain the line's LF or all of the
/// `>` run and five more bytes.
fn quoted_from(line: &[u8]) -> bool {
    let k = line.iter().position(|&c| c != b'>').unwrap_or(line.len());
    line[k..].starts_with(FROM_)
}

/// The streaming line machine. Feed raw message bytes in chunks of any size, then `finish`.
#[derive(Debug)]
pub(crate) struct Canon {
    unquote: bool,
    hide: bool,
    /// Receives the header lines that count for the UIDL (scan and pre-send check only).
    pub(crate) hasher: Option<UidlHasher>,
    in_header: bool,
    body_lines_left: Option<u64>,
    done: bool,
    line: Line,
    /// The current header field is a spool header: its continuation lines are too.
    hidden_field: bool,
    /// The last byte of the current line seen so far is a CR.
    prev_cr: bool,
    /// Raw bytes of the current line seen so far, without the LF.
    line_len: u64,
    /// After a line ended at an LF: 1 if it was `LF` alone, 2 if `CRLF` alone, else 0.
    pub(crate) last_empty: u8,
    pend: [u8; PEND_CAP],
    pend_len: usize,
    gt_run: u64,
    from_matched: usize,
    gt_hash: bool,
}

impl Canon {
    pub(crate) fn new(
        opts: CanonOptions,
        body_lines: Option<u64>,
        hasher: Option<UidlHasher>,
    ) -> Canon {
        Canon {
            unquote: opts.quoting == Some(Quoting::Mboxrd),
            hide: opts.hide_spool_headers,
            hasher,
            in_header: true,
            body_lines_left: body_lines,
            done: false,
            line: Line::Start,
            hidden_field: false,
            prev_cr: false,
            line_len: 0,
            last_empty: 0,
            pend: [0; PEND_CAP],
            pend_len: 0,
            gt_run: 0,
            from_matched: 0,
            gt_hash: false,
        }
    }

    /// Still inside the header block (no empty line seen yet).
    pub(crate) fn in_header(&self) -> bool {
        self.in_header
    }

    /// At a line boundary (nothing of an unterminated line pending).
    pub(crate) fn at_line_start(&self) -> bool {
        self.line == Line::Start
    }

    fn pass_header(&mut self, hidden: bool) {
        self.line = Line::Pass {
            emit: !(hidden && self.hide),
            hash: !hidden && self.hasher.is_some(),
        };
    }

    /// Feeds raw bytes. Returns true once TOP has all it needs (the caller may stop reading).
    pub(crate) fn feed<S: Sink>(&mut self, mut data: &[u8], out: &mut S) -> io::Result<bool> {
        while let Some(&b) = data.first() {
            if self.done {
                break;
            }
            match self.line {
                Line::Start if self.in_header => match b {
                    b'\n' => {
                        data = &data[1..];
                        self.header_end(1, out)?;
                    }
                    b'\r' => {
                        data = &data[1..];
                        self.line = Line::HeaderCr;
                    }
                    b' ' | b'\t' => self.pass_header(self.hidden_field),
                    b'>' if self.unquote => {
                        self.hidden_field = false;
                        self.start_gt();
                    }
                    _ => {
                        self.hidden_field = false;
                        if !(self.hide || self.hasher.is_some())
                            || !SPOOL_HEADERS.iter().any(|n| n[0] == b.to_ascii_lowercase())
                        {
                            self.pass_header(false);
                        } else if let Some(i) = memchr(b'\n', data) {
                            // The whole line is here: decide at once. `field_decision` is
                            // monotone (a decided prefix stays decided the same way), and a
                            // line still undecided at its end is shown, as in `FieldName`.
                            let hidden = field_decision(&data[..i]) == Field::Hidden;
                            self.hidden_field = hidden;
                            self.pass_header(hidden);
                        } else {
                            self.line = Line::FieldName;
                            self.pend_len = 0;
                        }
                    }
                },
                Line::Start => {
                    if self.body_lines_left == Some(0) {
                        self.done = true;
                        break;
                    }
                    if b == b'>' && self.unquote {
                        self.start_gt();
                    } else {
                        self.line = Line::Pass {
                            emit: true,
                            hash: false,
                        };
                    }
                }
                Line::HeaderCr => {
                    if b == b'\n' {
                        data = &data[1..];
                        self.header_end(2, out)?;
                    } else {
                        self.hidden_field = false;
                        self.pass_header(false);
                        self.pass_seg(b"\r", out)?;
                    }
                }
                Line::FieldName => {
                    if b == b'\n' {
                        self.flush_field(Field::Shown, out)?;
                        continue;
                    }
                    self.pend[self.pend_len] = b;
                    self.pend_len += 1;
                    data = &data[1..];
                    match field_decision(&self.pend[..self.pend_len]) {
                        Field::Undecided => {}
                        d => self.flush_field(d, out)?,
                    }
                }
                Line::Gt => {
                    if self.from_matched == 0 {
                        let n = data.iter().position(|&c| c != b'>').unwrap_or(data.len());
                        if n > 0 {
                            if self.gt_hash {
                                if let Some(h) = self.hasher.as_mut() {
                                    h.line_bytes(&data[..n]);
                                }
                            }
                            self.gt_run += n as u64;
                            data = &data[n..];
                            continue;
                        }
                    }
                    if b == FROM_[self.from_matched] {
                        if self.gt_hash {
                            if let Some(h) = self.hasher.as_mut() {
                                h.line_bytes(&data[..1]);
                            }
                        }
                        data = &data[1..];
                        self.from_matched += 1;
                        if self.from_matched == FROM_.len() {
                            self.flush_gt(true, out)?;
                        }
                    } else {
                        self.flush_gt(false, out)?;
                    }
                }
                Line::Pass { emit, hash } => {
                    if S::COUNT_ONLY
                        && !self.in_header
                        && self.body_lines_left.is_none()
                        && emit
                        && !hash
                    {
                        let n = self.bulk(data, out);
                        data = &data[n..];
                        if n > 0 {
                            continue;
                        }
                    }
                    if S::WIRE && !self.in_header && emit && !hash {
                        let n = self.bulk_wire(data, out.wire_parts());
                        data = &data[n..];
                        if n > 0 || self.line != (Line::Pass { emit, hash }) {
                            continue;
                        }
                    }
                    match memchr(b'\n', data) {
                        Some(i) => {
                            self.pass_seg(&data[..i], out)?;
                            data = &data[i + 1..];
                            self.end_line(out)?;
                        }
                        None => {
                            self.pass_seg(data, out)?;
                            data = &[];
                        }
                    }
                }
            }
        }
        Ok(self.done)
    }

    /// The input ended: an unterminated last line is finished as if an LF followed it.
    pub(crate) fn finish<S: Sink>(&mut self, out: &mut S) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        match self.line {
            Line::Start => return Ok(()),
            Line::HeaderCr => self.header_end(0, out)?,
            Line::FieldName => {
                self.flush_field(Field::Shown, out)?;
                self.end_line(out)?;
            }
            Line::Gt => {
                self.flush_gt(false, out)?;
                self.end_line(out)?;
            }
            Line::Pass { .. } => self.end_line(out)?,
        }
        // Not an LF-terminated line: never an mbox separator blank line.
        self.last_empty = 0;
        Ok(())
    }

    fn start_gt(&mut self) {
        self.line = Line::Gt;
        self.gt_run = 0;
        self.from_matched = 0;
        self.gt_hash = self.in_header && self.hasher.is_some();
    }

    /// The `>` run is decided: emit it (less one `>` when `matched`) and continue the line.
    fn flush_gt<S: Sink>(&mut self, matched: bool, out: &mut S) -> io::Result<()> {
        emit_gts(out, self.gt_run - u64::from(matched))?;
        out.emit(&FROM_[..self.from_matched])?;
        self.line_len += self.gt_run + self.from_matched as u64;
        self.prev_cr = false;
        self.line = Line::Pass {
            emit: true,
            hash: self.gt_hash,
        };
        Ok(())
    }

    fn flush_field<S: Sink>(&mut self, d: Field, out: &mut S) -> io::Result<()> {
        let hidden = d == Field::Hidden;
        self.hidden_field = hidden;
        self.pass_header(hidden);
        let pend = self.pend;
        let n = self.pend_len;
        self.pend_len = 0;
        self.pass_seg(&pend[..n], out)
    }

    fn pass_seg<S: Sink>(&mut self, seg: &[u8], out: &mut S) -> io::Result<()> {
        let Some(&last) = seg.last() else {
            return Ok(());
        };
        let Line::Pass { emit, hash } = self.line else {
            unreachable!("pass_seg outside Pass")
        };
        if emit {
            out.emit(seg)?;
        }
        if hash {
            if let Some(h) = self.hasher.as_mut() {
                h.line_bytes(seg);
            }
        }
        self.line_len += seg.len() as u64;
        self.prev_cr = last == b'\r';
        Ok(())
    }

    fn end_line<S: Sink>(&mut self, out: &mut S) -> io::Result<()> {
        let Line::Pass { emit, hash } = self.line else {
            unreachable!("end_line outside Pass")
        };
        if emit {
            out.emit(if self.prev_cr { b"\n" } else { b"\r\n" })?;
        }
        if hash {
            if let Some(h) = self.hasher.as_mut() {
                h.end_line();
            }
        }
        self.last_empty = match (self.line_len, self.prev_cr) {
            (0, _) => 1,
            (1, true) => 2,
            _ => 0,
        };
        if !self.in_header {
            if let Some(n) = self.body_lines_left.as_mut() {
                *n = n.saturating_sub(1);
            }
        }
        self.line = Line::Start;
        self.line_len = 0;
        self.prev_cr = false;
        Ok(())
    }

    fn header_end<S: Sink>(&mut self, raw_len: u8, out: &mut S) -> io::Result<()> {
        out.emit(b"\r\n")?;
        self.in_header = false;
        self.hidden_field = false;
        self.last_empty = raw_len;
        self.line = Line::Start;
        self.line_len = 0;
        self.prev_cr = false;
        Ok(())
    }

    /// Copies a body stretch into a wire sink in bulk: the LFs of 64 bytes at a time found
    /// with one vector compare, then per line one append of its content and one of its line
    /// ending; no per-line state transitions and no per-line search call (lines average
    /// well under 100 octets, where a `memchr` call costs more than the scan itself).
    /// Returns the bytes consumed; stops (with `self.line` back at `Start`) at a line start
    /// the full machine must see: a `>` line with mboxrd whose `>+From ` question `data`
    /// cannot answer, or the end of TOP's lines.
    fn bulk_wire(&mut self, data: &[u8], w: WireParts<'_>) -> usize {
        let buf = w.buf;
        // Every input byte gives at most two output bytes (an LF gains a CR; a line's
        // leading dot is doubled), plus room for the fixed-size over-copy of short lines.
        buf.reserve(2 * data.len() + OVERCOPY);
        let before = buf.len();
        let mut out = Spare {
            spare: buf.spare_capacity_mut(),
            len: 0,
        };
        let mut stuffed = 0u64;
        // The first segment continues the line the machine is in; a line start there has
        // passed the machine's checks already.
        if *w.line_start && data.first() == Some(&b'.') {
            out.put(b'.');
            stuffed += 1;
        }
        let (mut line_len, mut prev_cr) = (self.line_len, self.prev_cr);
        let mut seg = 0;
        let mut stopped = false;
        for lf in Lfs::new(data, 0) {
            let k = lf - seg;
            let cr = if k > 0 {
                data[lf - 1] == b'\r'
            } else {
                prev_cr
            };
            out.copy(data, seg, lf);
            if !cr {
                out.put(b'\r');
            }
            out.put(b'\n');
            line_len += k as u64;
            self.last_empty = match (line_len, cr) {
                (0, _) => 1,
                (1, true) => 2,
                _ => 0,
            };
            if let Some(n) = self.body_lines_left.as_mut() {
                *n = n.saturating_sub(1);
            }
            line_len = 0;
            prev_cr = false;
            seg = lf + 1;
            // A new line: the checks the machine's `Line::Start` would make.
            let rest = &data[seg..];
            let Some(&b) = rest.first() else { break };
            if self.body_lines_left == Some(0) {
                stopped = true;
                break;
            }
            match b {
                b'.' => {
                    out.put(b'.');
                    stuffed += 1;
                }
                b'>' if self.unquote => {
                    let k = rest.iter().position(|&c| c != b'>').unwrap_or(rest.len());
                    if rest.len() >= k + FROM_.len() {
                        if rest[k..].starts_with(FROM_) {
                            // `>+From `: the line loses its first `>`; it starts with `>`
                            // or `F` after that, so there is nothing to stuff.
                            seg += 1;
                            line_len = 1;
                        }
                    } else if memchr(b'\n', &rest[k..]).is_none() {
                        stopped = true;
                        break;
                    }
                }
                _ => {}
            }
        }
        let line_start;
        if stopped || seg == data.len() {
            line_start = true;
            self.line = Line::Start;
        } else {
            out.copy(data, seg, data.len());
            line_len += (data.len() - seg) as u64;
            prev_cr = data[data.len() - 1] == b'\r';
            seg = data.len();
            line_start = false;
        }
        let n = out.len;
        // SAFETY: `Spare` wrote every byte of `spare[..n]` (each append initialises the
        // bytes it counts), and `spare` is `buf`'s spare capacity from `before` on.
        unsafe { buf.set_len(before + n) };
        self.line_len = line_len;
        self.prev_cr = prev_cr;
        *w.line_start = line_start;
        *w.written += n as u64 - stuffed;
        seg
    }

    /// Counts a body stretch in bulk; returns the bytes consumed (0: let the line machine
    /// handle a line start that begins with `>` and is not complete in `data`).
    fn bulk<S: Sink>(&mut self, data: &[u8], out: &mut S) -> usize {
        let at_start = self.line == Line::Start;
        let last_lf = memrchr(b'\n', data);
        let mut cut = data.len();
        if self.unquote {
            match last_lf {
                Some(l) if data.get(l + 1) == Some(&b'>') => cut = l + 1,
                None if at_start && data.first() == Some(&b'>') => cut = 0,
                _ => {}
            }
        }
        if cut == 0 {
            return 0;
        }
        let s = &data[..cut];
        let lf = memchr::memchr_iter(b'\n', s).count() as u64;
        let mut crlf = if memchr(b'\r', s).is_some() {
            memmem::find_iter(s, b"\r\n").count() as u64
        } else {
            0
        };
        if self.prev_cr && s[0] == b'\n' {
            crlf += 1;
        }
        let mut n = s.len() as u64 + lf - crlf;
        if self.unquote {
            if at_start && s[0] == b'>' && quoted_from(s) {
                n -= 1;
            }
            for i in memmem::find_iter(s, b"\n>") {
                if quoted_from(&s[i + 1..]) {
                    n -= 1;
                }
            }
        }
        out.add_count(n);
        let last = s[s.len() - 1];
        if last == b'\n' {
            let body = &s[..s.len() - 1];
            let (content_len, cr) = match memrchr(b'\n', body) {
                Some(j) => (
                    (body.len() - j - 1) as u64,
                    body.len() - j > 1 && body[body.len() - 1] == b'\r',
                ),
                None => match body.last() {
                    Some(&c) => (self.line_len + body.len() as u64, c == b'\r'),
                    None => (self.line_len, self.prev_cr),
                },
            };
            self.last_empty = match (content_len, cr) {
                (0, _) => 1,
                (1, true) => 2,
                _ => 0,
            };
            self.line = Line::Start;
            self.line_len = 0;
            self.prev_cr = false;
        } else {
            self.line = Line::Pass {
                emit: true,
                hash: false,
            };
            self.line_len = match memrchr(b'\n', s) {
                Some(j) => (s.len() - j - 1) as u64,
                None => self.line_len + s.len() as u64,
            };
            self.prev_cr = last == b'\r';
        }
        cut
    }
}

/// Bytes [`Spare::copy`] may write past the end of a short line (the source line and the
/// destination both have that much room): a fixed-size copy is a few vector moves where an
/// exact one is a `memcpy` call, and most lines are shorter than this.
const OVERCOPY: usize = 64;

/// Appends into a `Vec`'s spare capacity: bounds-checked, but without the per-append
/// capacity and length bookkeeping of `push`/`extend_from_slice`. `spare[..len]` is
/// always fully written; bytes after it may hold over-copy garbage, never exposed.
struct Spare<'a> {
    spare: &'a mut [std::mem::MaybeUninit<u8>],
    len: usize,
}

impl Spare<'_> {
    #[inline]
    fn put(&mut self, b: u8) {
        self.spare[self.len].write(b);
        self.len += 1;
    }

    /// Appends `data[from..to]`.
    #[inline]
    fn copy(&mut self, data: &[u8], from: usize, to: usize) {
        let k = to - from;
        match data[from..].first_chunk::<OVERCOPY>() {
            Some(src) if k <= OVERCOPY => {
                let dst = &mut self.spare[self.len..self.len + OVERCOPY];
                for (d, &s) in dst.iter_mut().zip(src) {
                    d.write(s);
                }
            }
            _ => {
                let dst = &mut self.spare[self.len..self.len + k];
                for (d, &s) in dst.iter_mut().zip(&data[from..to]) {
                    d.write(s);
                }
            }
        }
        self.len += k;
    }
}

/// The positions of the LFs in `data` from `from` on, found 64 bytes at a time.
struct Lfs<'a> {
    data: &'a [u8],
    /// Start of the block `mask` describes.
    block: usize,
    /// Bit i set: `data[block + i]` is an LF not yet returned.
    mask: u64,
}

impl<'a> Lfs<'a> {
    fn new(data: &'a [u8], from: usize) -> Lfs<'a> {
        Lfs {
            data,
            block: from,
            mask: lf_mask(&data[from.min(data.len())..]),
        }
    }
}

impl Iterator for Lfs<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.block += 64;
            if self.block >= self.data.len() {
                return None;
            }
            self.mask = lf_mask(&self.data[self.block..]);
        }
        let i = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.block + i)
    }
}

/// Bit i set when `b[i]` is an LF, for the first 64 bytes of `b`.
#[inline]
fn lf_mask(b: &[u8]) -> u64 {
    if let Some(block) = b.first_chunk::<64>() {
        lf_mask64(block)
    } else {
        b.iter()
            .enumerate()
            .fold(0, |m, (i, &c)| m | (u64::from(c == b'\n') << i))
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn lf_mask64(b: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let p = b.as_ptr().cast::<__m128i>();
    let mut m = 0u64;
    for k in 0..4 {
        // SAFETY: SSE2 is part of the x86_64 baseline (always enabled), and the unaligned
        // load reads bytes 16k..16k+16 of the 64-byte array.
        let bits = unsafe {
            let v = _mm_loadu_si128(p.add(k));
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)))
        };
        m |= u64::from(bits as u16) << (16 * k);
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn lf_mask64(b: &[u8; 64]) -> u64 {
    b.iter()
        .enumerate()
        .fold(0, |m, (i, &c)| m | (u64::from(c == b'\n') << i))
}

/// An obviously-correct (slow, whole-message) implementation of the definition above, to
/// test the streaming machine against.
#[cfg(test)]
pub(crate) fn reference_canon(raw: &[u8], opts: CanonOptions, top: Option<u64>) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
    if raw.is_empty() || raw.ends_with(b"\n") {
        lines.pop();
    }
    let is_spool_field = |l: &[u8]| {
        let k = l
            .iter()
            .position(|&c| c == b':' || c == b' ' || c == b'\t')
            .unwrap_or(l.len());
        let wsp = l[k..]
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        SPOOL_HEADERS
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&l[..k]))
            && wsp <= MAX_WSP_BEFORE_COLON
            && l.get(k + wsp) == Some(&b':')
    };
    let (mut out, mut in_header, mut hidden, mut body) = (Vec::new(), true, false, 0u64);
    for line in lines {
        let content = line.strip_suffix(b"\r").unwrap_or(line);
        if in_header && content.is_empty() {
            out.extend_from_slice(b"\r\n");
            in_header = false;
            continue;
        }
        if in_header {
            if !(line.starts_with(b" ") || line.starts_with(b"\t")) {
                hidden = is_spool_field(line);
            }
            if hidden && opts.hide_spool_headers {
                continue;
            }
        } else {
            if top.is_some_and(|n| body >= n) {
                break;
            }
            body += 1;
        }
        let gts = content.iter().take_while(|&&c| c == b'>').count();
        let c = if opts.quoting == Some(Quoting::Mboxrd)
            && gts > 0
            && content[gts..].starts_with(FROM_)
        {
            &content[1..]
        } else {
            content
        };
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RD: CanonOptions = CanonOptions {
        quoting: Some(Quoting::Mboxrd),
        hide_spool_headers: true,
    };
    const O: CanonOptions = CanonOptions {
        quoting: Some(Quoting::Mboxo),
        hide_spool_headers: false,
    };

    /// A reader that returns at most `chunks[i % len]` bytes per call.
    struct Chunky<'a> {
        data: &'a [u8],
        chunks: Vec<usize>,
        i: usize,
    }

    impl Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let c = self
                .chunks
                .get(self.i % self.chunks.len().max(1))
                .copied()
                .unwrap_or(usize::MAX)
                .max(1);
            self.i += 1;
            let n = c.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn canon(raw: &[u8], opts: CanonOptions, top: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        let n = copy(&mut &raw[..], raw.len() as u64, opts, top, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    fn size(raw: &[u8], opts: CanonOptions) -> u64 {
        measure(&mut &raw[..], raw.len() as u64, opts).unwrap()
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], CanonOptions, &[u8])] = &[
            (b"", RD, b""),
            (b"a", RD, b"a\r\n"),
            (b"a\n", RD, b"a\r\n"),
            (b"a\r\n", RD, b"a\r\n"),
            (b"a\r", RD, b"a\r\n"),
            (b"a\rb\n", RD, b"a\rb\r\n"),
            (b"a\r\r\n", RD, b"a\r\r\n"),
            (b"S: x\n\n>From a\n>>From b\n> From c\n>Fromage\n", RD, b"S: x\r\n\r\nFrom a\r\n>From b\r\n> From c\r\n>Fromage\r\n"),
            (b"S: x\n\n>From a\n>>From b\n", O, b"S: x\r\n\r\n>From a\r\n>>From b\r\n"),
            (b">From hdr\n\nb\n", RD, b"From hdr\r\n\r\nb\r\n"),
            (
                b"Status: RO\nX-Keywords: a\n b\nSubject: s\nstatus :x\nContent-Length: 5\n\nStatus: body\n",
                RD,
                b"Subject: s\r\n\r\nStatus: body\r\n",
            ),
            (
                b"Status: RO\nX-Keywords: a\n b\nSubject: s\n\n",
                O,
                b"Status: RO\r\nX-Keywords: a\r\n b\r\nSubject: s\r\n\r\n",
            ),
            (b"X-IMAPbase: 1 2\nX-IMAPx: 3\nStatus\n", RD, b"X-IMAPx: 3\r\nStatus\r\n"),
            (b"Status: R", RD, b""),
            (b"\r\nbody", RD, b"\r\nbody\r\n"),
            (b"\rX: y\n", RD, b"\rX: y\r\n"),
            (b"A: b\n\r", RD, b"A: b\r\n\r\n"),
            (b"A: \0b\n\n\0", RD, b"A: \0b\r\n\r\n\0\r\n"),
            (b".\n..\n", RD, b".\r\n..\r\n"),
        ];
        for (i, (raw, opts, want)) in cases.iter().enumerate() {
            let got = canon(raw, *opts, None);
            assert_eq!(got, *want, "case {i}: {:?}", String::from_utf8_lossy(raw));
            assert_eq!(size(raw, *opts), want.len() as u64, "case {i}");
            assert_eq!(
                reference_canon(raw, *opts, None),
                *want,
                "reference, case {i}"
            );
        }
    }

    #[test]
    fn top() {
        let raw = b"Status: O\nA: b\n\nl1\nl2\nl3";
        assert_eq!(canon(raw, RD, Some(0)), b"A: b\r\n\r\n");
        assert_eq!(canon(raw, RD, Some(2)), b"A: b\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(canon(raw, RD, Some(9)), b"A: b\r\n\r\nl1\r\nl2\r\nl3\r\n");
        assert_eq!(canon(b"A: b\nC: d", RD, Some(0)), b"A: b\r\nC: d\r\n");
    }

    #[test]
    fn long_gt_run_and_long_lines() {
        let mut raw = b"H: x\n\n".to_vec();
        raw.extend(std::iter::repeat_n(b'>', 3 * COPY_BUF));
        raw.extend_from_slice(b"From x\n");
        raw.extend(std::iter::repeat_n(b'y', 3 * COPY_BUF));
        let out = canon(&raw, RD, None);
        // Three LFs gain a CR, the last line gains CRLF, one `>` goes.
        assert_eq!(out.len(), raw.len() + 3 + 2 - 1);
        assert_eq!(size(&raw, RD), out.len() as u64);
    }

    #[test]
    fn short_source_is_an_error() {
        let e = measure(&mut &b"abc"[..], 10, RD).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"From ".to_vec()),
            Just(b">From ".to_vec()),
            Just(b">>From x".to_vec()),
            Just(b"Status: RO".to_vec()),
            Just(b"x-keywords :".to_vec()),
            Just(b"Content-Length: 3".to_vec()),
            Just(b"Subject: y".to_vec()),
            Just(b" cont".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\0".to_vec()),
            Just(b".".to_vec()),
            Just(b">".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..20),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    fn opts_strategy() -> impl Strategy<Value = CanonOptions> {
        (
            prop_oneof![
                Just(None),
                Just(Some(Quoting::Mboxrd)),
                Just(Some(Quoting::Mboxo))
            ],
            any::<bool>(),
        )
            .prop_map(|(quoting, hide_spool_headers)| CanonOptions {
                quoting,
                hide_spool_headers,
            })
    }

    /// The wire form the old two-stage path produced: canonical bytes through the stuffer.
    fn stuffed(canonical: &[u8]) -> Vec<u8> {
        let mut s = crate::pop3::response::DotStuffer::new(Vec::new());
        s.write_all(canonical).unwrap();
        let mut v = s.finish().unwrap();
        v.truncate(v.len() - 3);
        v
    }

    /// Feeds `raw` to a `Wire` in pieces cut at `cuts`; returns the output, the canonical
    /// octet count and the header digest.
    fn wire(
        raw: &[u8],
        opts: CanonOptions,
        top: Option<u64>,
        cuts: &[usize],
    ) -> (Vec<u8>, u64, crate::mbox::uidl::MessageDigest) {
        let mut w = Wire::new(opts, top, Some(UidlHasher::new()));
        let mut out = b"+OK\r\n".to_vec();
        let mut prev = 0;
        let mut done = false;
        for &c in cuts.iter().chain(std::iter::once(&raw.len())) {
            let c = c.clamp(prev, raw.len());
            if w.feed(&raw[prev..c], &mut out).unwrap() {
                done = true;
                break;
            }
            prev = c;
        }
        if !done {
            w.finish(&mut out).unwrap();
        }
        assert!(w.at_line_start());
        let d = w.take_hasher().unwrap().finish();
        (out[5..].to_vec(), w.written(), d)
    }

    #[test]
    fn wire_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b".", b"..\r\n"),
            (
                b"A: b\n\n.\n..\n.x\r\n",
                b"A: b\r\n\r\n..\r\n...\r\n..x\r\n",
            ),
            (
                b".A: b\n\n>From a\n>>From b\n",
                b"..A: b\r\n\r\nFrom a\r\n>From b\r\n",
            ),
            (b"A: b\n\n>.x\n>Fro\n>", b"A: b\r\n\r\n>.x\r\n>Fro\r\n>\r\n"),
        ];
        for (raw, want) in cases {
            for cut in 0..raw.len() {
                let (got, n, _) = wire(raw, RD, None, &[cut]);
                assert_eq!(
                    got,
                    *want,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(raw)
                );
                assert_eq!(n, size(raw, RD));
            }
        }
    }

    /// A `WireOut` like the session's: staged bytes leave at every spill.
    #[derive(Default)]
    struct Spilling {
        sent: Vec<u8>,
        buf: Vec<u8>,
        spills: usize,
    }

    impl crate::mailbox::WireOut for Spilling {
        fn start(&mut self) -> usize {
            let m = self.buf.len();
            self.buf.extend_from_slice(b"+OK\r\n");
            m
        }
        fn buf(&mut self) -> &mut Vec<u8> {
            &mut self.buf
        }
        fn spill(&mut self) -> io::Result<()> {
            self.spills += 1;
            self.sent.append(&mut self.buf);
            Ok(())
        }
        fn cancel(&mut self, mark: usize) {
            assert!(self.sent.is_empty(), "cancel after bytes left");
            self.buf.truncate(mark);
        }
    }

    /// Serves `data` in pieces of at most `piece` bytes, then EOF.
    struct Pieces<'a> {
        data: &'a [u8],
        piece: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(buf.len()).min(self.piece);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn send_wire_refuses_cleanly_before_anything_left_and_ends_after() {
        // The source is empty though 5 bytes were promised: nothing was spilled, so the
        // staged status line is dropped and the error is BeforeStart.
        let mut w = Spilling::default();
        let mut src = Pieces {
            data: b"",
            piece: 9,
        };
        let e = send_wire(&mut src, 5, CanonOptions::PLAIN, None, &mut w).unwrap_err();
        assert!(matches!(e, WireError::BeforeStart(_)));
        assert!(w.sent.is_empty() && w.buf.is_empty());
        // Short after the first read: part of the message may have left.
        let mut w = Spilling::default();
        let mut src = Pieces {
            data: b"abc\n",
            piece: 2,
        };
        let e = send_wire(&mut src, 9, CanonOptions::PLAIN, None, &mut w).unwrap_err();
        assert!(matches!(e, WireError::During(_)));
    }

    proptest! {
        #[test]
        fn lfs_finds_every_lf(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..400),
            from in 0usize..400,
        ) {
            let from = from.min(data.len());
            let want: Vec<usize> = memchr::memchr_iter(b'\n', &data[from..]).map(|i| i + from).collect();
            prop_assert_eq!(Lfs::new(&data, from).collect::<Vec<_>>(), want);
        }

        #[test]
        fn wire_is_the_stuffed_canonical_form(
            raw in line_strategy(),
            opts in opts_strategy(),
            cuts in proptest::collection::vec(0usize..300, 0..10),
            top in proptest::option::of(0u64..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (out, n, digest) = wire(&raw, opts, top, &cuts);
            let canonical = reference_canon(&raw, opts, top);
            prop_assert_eq!(&out, &stuffed(&canonical));
            prop_assert_eq!(n, canonical.len() as u64);
            // Byte at a time too.
            let ones: Vec<usize> = (1..raw.len()).collect();
            prop_assert_eq!(&wire(&raw, opts, top, &ones).0, &out);
            // The header digest is the one the scan's machine computes, whatever the options.
            let (_, _, plain) = wire(&raw, CanonOptions::PLAIN, None, &[]);
            prop_assert_eq!(digest, plain);
        }

        #[test]
        fn send_wire_is_the_stuffed_canonical_form(
            raw in line_strategy(),
            opts in opts_strategy(),
            piece in 1usize..64,
            top in proptest::option::of(0u64..6),
        ) {
            let mut w = Spilling::default();
            let mut src = Pieces { data: &raw, piece };
            let n = send_wire(&mut src, raw.len() as u64, opts, top, &mut w).unwrap();
            let canonical = reference_canon(&raw, opts, top);
            let mut want = b"+OK\r\n".to_vec();
            want.extend_from_slice(&stuffed(&canonical));
            w.sent.append(&mut w.buf);
            prop_assert_eq!(w.sent, want);
            prop_assert_eq!(n, canonical.len() as u64);
        }

        #[test]
        fn copy_writes_measure_octets(
            raw in line_strategy(),
            opts in opts_strategy(),
            chunks in proptest::collection::vec(prop_oneof![1usize..9, Just(usize::MAX)], 1..5),
            chunks2 in proptest::collection::vec(prop_oneof![1usize..9, Just(usize::MAX)], 1..5),
            top in 0u64..6,
        ) {
            let want = size(&raw, opts);
            prop_assert_eq!(&canon(&raw, opts, None), &reference_canon(&raw, opts, None));
            prop_assert_eq!(&canon(&raw, opts, Some(top)), &reference_canon(&raw, opts, Some(top)));
            let mut src = Chunky { data: &raw, chunks: chunks.clone(), i: 0 };
            prop_assert_eq!(measure(&mut src, raw.len() as u64, opts).unwrap(), want);
            let mut out = Vec::new();
            let mut src = Chunky { data: &raw, chunks: chunks2, i: 0 };
            let n = copy(&mut src, raw.len() as u64, opts, None, &mut out).unwrap();
            prop_assert_eq!(n, want);
            prop_assert_eq!(out.len() as u64, want);
            // Every line ends in CRLF, and it ends with one unless empty.
            prop_assert!(out.is_empty() || out.ends_with(b"\r\n"));
            prop_assert_eq!(memchr::memchr_iter(b'\n', &out).count(), memmem::find_iter(&out, b"\r\n").count());
            let mut topped = Vec::new();
            let mut src = Chunky { data: &raw, chunks, i: 0 };
            copy(&mut src, raw.len() as u64, opts, Some(top), &mut topped).unwrap();
            prop_assert!(out.starts_with(&topped));
        }
    }
}
