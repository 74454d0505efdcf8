//! The streaming line machine that implements the canonical form (see the definition in
//! [`super`]); every caller (`measure`, `copy`, the wire path, the mbox scanner and the
//! pre-send digest check) runs this one machine, so sizes cannot drift from what RETR sends.

use super::bulk::{Lfs, Spare, OVERCOPY};
use super::headers::{field_decision, quoted_from, Field, FROM_, PEND_CAP, SPOOL_HEADERS};
use super::options::{CanonOptions, Quoting};
use super::sink::{Sink, WireParts};
use crate::mbox::uidl::{self, UidlHasher};
use memchr::{memchr, memmem, memrchr};
use std::io;

pub(super) fn emit_gts<S: Sink>(out: &mut S, mut n: u64) -> io::Result<()> {
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

    /// Continues a header line: shown unless it belongs to a spool field and those are
    /// hidden; hashed when a UIDL is computed and [`uidl::feeds_digest`] says it counts.
    fn pass_header(&mut self, spool_field: bool) {
        self.line = Line::Pass {
            emit: !(spool_field && self.hide),
            hash: self.hasher.is_some() && uidl::feeds_digest(spool_field),
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
        // A `>` line in the header block starts a field of its own, never a spool field.
        self.gt_hash = self.in_header && self.hasher.is_some() && uidl::feeds_digest(false);
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
