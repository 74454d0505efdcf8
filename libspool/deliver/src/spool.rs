//! Reading the message from the MTA: stdin is copied once into an unlinked temporary file,
//! normalised and checked on the way, before any mailbox is locked.
//!
//! Why a temporary copy: the MTA may feed stdin slowly (a busy queue, a content filter in
//! between), and a lock held while waiting for it would stall `pop-serve` sessions and other
//! deliveries to the same mailbox. With the copy the content lock is only held for a local
//! file-to-file copy. It also lets us know the exact size before touching the mailbox (for
//! `--max-mailbox-size`), reject bad input before anything is written, and deliver to several
//! recipients from one reading. Memory stays bounded: the message is streamed in
//! [`SPOOL_CHUNK`] pieces, whatever its size or its longest line.
//!
//! Normalisation (the stored form; `pop-serve` derives the same canonical form from it as
//! from the input, see the tests):
//!
//! - A CR right before an LF is dropped (CRLF stored as LF, the Unix mailbox convention),
//!   unless that CR itself follows a CR: `a\r\r\n` is kept as is, so that the canonical form
//!   (which keeps an existing CRLF and treats any other CR as content) of the stored line is
//!   still `a\r\r\n`. Every other CR is content and kept.
//! - A first line starting with `From ` is an envelope line some MTAs prepend (Postfix
//!   `pipe` flag `F`, sendmail): it is dropped, its address remembered as a sender candidate.
//!   (procmail does the same.)
//! - Nothing else changes here; mbox `From ` quoting is applied while copying into an mbox.
//!
//! Checks (each an `EX_DATAERR`): no bytes at all (after an envelope line); a first line that
//! is not a header field (`name:` with a printable name, optionally spaces before the colon,
//! RFC 5322 obsolete syntax), so a message without headers; with `--reject-nul`, a NUL byte;
//! with `--max-line-length`, a longer line. NUL bytes are accepted by default: mbox and Maildir
//! store any byte, `pop-serve` sends them as they are, and bouncing mail for one odd byte
//! loses more than it protects.

#![forbid(unsafe_code)]

use super::DeliverError;
use memchr::memchr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Bytes read from stdin at a time and the temporary file's write buffer.
pub const SPOOL_CHUNK: usize = 1 << 20;

/// Longest sender address kept from an envelope line or a `Return-Path:` (RFC 5321 paths are
/// at most 256 octets; the margin is for broken but harmless senders). Longer ones are cut.
pub const MAX_SENDER_LEN: usize = 512;

/// Longest header field name accepted on the first line (RFC 5322 line limit).
pub const MAX_FIELD_NAME: usize = 998;

/// What the input checks require.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputRules {
    /// Longest line in bytes, without its line ending. `None`: unlimited.
    pub max_line_length: Option<u64>,
    /// Refuse NUL bytes instead of storing them.
    pub reject_nul: bool,
}

/// The normalised message in an unlinked temporary file, and what was learnt reading it.
#[derive(Debug)]
pub struct Spooled {
    pub(crate) file: File,
    /// Bytes in `file`.
    pub len: u64,
    /// Lines matching `^>*From ` (each gets one more `>` in an mbox).
    pub from_lines: u64,
    /// The stored message ends with an LF.
    pub ends_with_newline: bool,
    /// The address of a dropped leading `From ` envelope line.
    pub envelope_sender: Option<Vec<u8>>,
    /// The first `Return-Path:` header's value (raw, trimmed, at most [`MAX_SENDER_LEN`]).
    pub return_path: Option<Vec<u8>>,
    /// NUL bytes seen (stored; for the log).
    pub nul_bytes: u64,
}

impl Spooled {
    /// The temporary file, for reading from offset 0 (use `read_at`; shared between targets).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes an mbox grows by for this message, apart from the separator needed before it
    /// and the `From ` line: quoting, a missing final newline, the blank separator line.
    pub fn mbox_body_len(&self) -> u64 {
        self.len + self.from_lines + u64::from(!self.ends_with_newline) + 1
    }

    /// Bytes of the Maildir file (a missing final newline is added).
    pub fn maildir_len(&self) -> u64 {
        self.len + u64::from(!self.ends_with_newline)
    }
}

/// Opens an anonymous file in `dir`: `O_TMPFILE` where the file system supports it (nothing
/// to clean up even after SIGKILL), else a private name unlinked at once.
pub fn anonymous_file(dir: &Path) -> io::Result<File> {
    let tmpfile = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match tmpfile {
        Ok(f) => return Ok(f),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) => {}
        Err(e) => return Err(e),
    }
    for attempt in 0u32..100 {
        let name = dir.join(format!(
            ".pop-deliver.{}.{}.{attempt}",
            std::process::id(),
            super::unique_counter()
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&name)
        {
            Ok(f) => {
                std::fs::remove_file(&name)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free temporary file name"))
}

/// Reads all of `input` into an anonymous file in `tmp_dir`, normalising and checking it.
/// `interrupted` is polled between reads (a signal asked us to stop).
pub fn spool(
    input: &mut dyn Read,
    tmp_dir: &Path,
    rules: InputRules,
    interrupted: &dyn Fn() -> bool,
) -> Result<Spooled, DeliverError> {
    let file =
        anonymous_file(tmp_dir).map_err(|e| DeliverError::Io("create a temporary file", e))?;
    spool_into(file, input, rules, interrupted)
}

/// [`spool`] into `file`, an empty anonymous file made by [`anonymous_file`] (before a
/// confined process loses the right to create one).
pub fn spool_into(
    file: File,
    input: &mut dyn Read,
    rules: InputRules,
    interrupted: &dyn Fn() -> bool,
) -> Result<Spooled, DeliverError> {
    let mut out = BufWriter::with_capacity(SPOOL_CHUNK, &file);
    let mut norm = Normalizer::new(rules);
    let mut buf = vec![0u8; SPOOL_CHUNK];
    let mut staged = Vec::with_capacity(SPOOL_CHUNK + 8);
    loop {
        if interrupted() {
            return Err(DeliverError::Interrupted);
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DeliverError::Io("read the message", e)),
        };
        staged.clear();
        norm.feed(&buf[..n], &mut staged)?;
        out.write_all(&staged)
            .map_err(|e| DeliverError::Io("write the temporary file", e))?;
    }
    staged.clear();
    norm.finish(&mut staged)?;
    out.write_all(&staged)
        .and_then(|()| out.flush())
        .map_err(|e| DeliverError::Io("write the temporary file", e))?;
    drop(out);
    Ok(Spooled {
        file,
        len: norm.out_len,
        from_lines: norm.from_lines,
        ends_with_newline: norm.last_out == Some(b'\n'),
        envelope_sender: norm.envelope_sender,
        return_path: norm.return_path,
        nul_bytes: norm.nul_bytes,
    })
}

/// Decides whether a line is `^>*From ` byte by byte, so a line split across reads (or a
/// megabyte of `>`) needs no buffering. Shared with the mbox copy, which must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FromMatch {
    /// Inside the `>` run, or `k` bytes of `From ` matched after it.
    Open(u8),
    Yes,
    No,
}

impl FromMatch {
    pub(crate) const START: FromMatch = FromMatch::Open(0);

    /// Feeds the next byte of the line (never the LF).
    pub(crate) fn step(self, b: u8) -> FromMatch {
        const FROM_: &[u8; 5] = b"From ";
        match self {
            FromMatch::Open(0) if b == b'>' => FromMatch::Open(0),
            FromMatch::Open(k) if FROM_[usize::from(k)] == b => {
                if k == 4 {
                    FromMatch::Yes
                } else {
                    FromMatch::Open(k + 1)
                }
            }
            FromMatch::Open(_) => FromMatch::No,
            done => done,
        }
    }

    /// Feeds bytes until decided; returns how many were consumed.
    pub(crate) fn run(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while let (FromMatch::Open(_), Some(&b)) = (*self, bytes.get(i)) {
            *self = self.step(b);
            i += 1;
        }
        i
    }
}

/// Where in the message the current line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The very first line: an envelope `From ` line or the first header.
    First,
    /// Dropping the envelope line.
    Envelope,
    /// Header block (the first kept line is checked to be a field).
    Headers,
    Body,
}

/// How the first kept line is checked to be a header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldCheck {
    Name(usize),
    Space,
    Ok,
}

const RETURN_PATH: &[u8] = b"return-path:";

/// The streaming normaliser and checker (see the module documentation).
struct Normalizer {
    rules: InputRules,
    /// Input: the previous byte was a CR we have not output yet.
    held_cr: bool,
    /// Input: the byte before the held CR was a CR too.
    held_cr_after_cr: bool,
    /// Input: the last byte seen.
    prev_in: Option<u8>,
    part: Part,
    /// Bytes of the first line held until we know whether it is an envelope line.
    first: Vec<u8>,
    field: FieldCheck,
    /// The current (normalised) line: length so far, `From ` match, header prefix.
    line_len: u64,
    from: FromMatch,
    head: Vec<u8>,
    capture_rp: bool,
    out_len: u64,
    last_out: Option<u8>,
    from_lines: u64,
    nul_bytes: u64,
    envelope_sender: Option<Vec<u8>>,
    return_path: Option<Vec<u8>>,
}

impl Normalizer {
    fn new(rules: InputRules) -> Normalizer {
        Normalizer {
            rules,
            held_cr: false,
            held_cr_after_cr: false,
            prev_in: None,
            part: Part::First,
            first: Vec::new(),
            field: FieldCheck::Name(0),
            line_len: 0,
            from: FromMatch::START,
            head: Vec::with_capacity(RETURN_PATH.len()),
            capture_rp: false,
            out_len: 0,
            last_out: None,
            from_lines: 0,
            nul_bytes: 0,
            envelope_sender: None,
            return_path: None,
        }
    }

    /// Stage one: the CR rule. Passes normalised runs to `lines`.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DeliverError> {
        let mut rest = input;
        if self.held_cr {
            let Some(&next) = rest.first() else {
                return Ok(());
            };
            self.held_cr = false;
            if next != b'\n' || self.held_cr_after_cr {
                self.lines(b"\r", out)?;
            }
        }
        while !rest.is_empty() {
            let Some(i) = memchr(b'\r', rest) else {
                self.lines(rest, out)?;
                self.prev_in = rest.last().copied();
                break;
            };
            self.lines(&rest[..i], out)?;
            let before = if i > 0 {
                Some(rest[i - 1])
            } else {
                self.prev_in
            };
            match rest.get(i + 1) {
                None => {
                    self.held_cr = true;
                    self.held_cr_after_cr = before == Some(b'\r');
                    self.prev_in = Some(b'\r');
                    return Ok(());
                }
                Some(&b'\n') if before != Some(b'\r') => {}
                Some(_) => self.lines(b"\r", out)?,
            }
            self.prev_in = Some(b'\r');
            rest = &rest[i + 1..];
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DeliverError> {
        if self.held_cr {
            self.held_cr = false;
            self.lines(b"\r", out)?;
        }
        if self.part == Part::First {
            // A one-line message without a newline: decide on what we have.
            let held = std::mem::take(&mut self.first);
            self.part = Part::Headers;
            self.kept(&held, out)?;
        }
        if self.out_len == 0 {
            return Err(DeliverError::EmptyMessage);
        }
        // An unterminated last line is quoted like any other.
        if self.line_len > 0 && self.from == FromMatch::Yes {
            self.from_lines += 1;
        }
        if self.field != FieldCheck::Ok {
            return Err(DeliverError::NoHeader);
        }
        Ok(())
    }

    /// Stage two: normalised bytes, split into lines.
    fn lines(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), DeliverError> {
        while !bytes.is_empty() {
            match self.part {
                Part::First => {
                    let k = bytes.len().min(5 - self.first.len());
                    let take = match memchr(b'\n', &bytes[..k]) {
                        Some(i) => i + 1,
                        None => k,
                    };
                    self.first.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.first == b"From " && self.envelope_sender.is_none() {
                        self.first.clear();
                        self.part = Part::Envelope;
                        self.envelope_sender = Some(Vec::new());
                    } else if self.first.len() == 5 || self.first.last() == Some(&b'\n') {
                        let held = std::mem::take(&mut self.first);
                        self.part = Part::Headers;
                        self.kept(&held, out)?;
                    }
                }
                Part::Envelope => {
                    let end = memchr(b'\n', bytes);
                    let seg = &bytes[..end.unwrap_or(bytes.len())];
                    if let Some(s) = self.envelope_sender.as_mut() {
                        // Only the first word (the address) is kept; bounded.
                        let room = (MAX_SENDER_LEN + 1).saturating_sub(s.len());
                        s.extend_from_slice(&seg[..seg.len().min(room)]);
                    }
                    match end {
                        Some(i) => {
                            bytes = &bytes[i + 1..];
                            if let Some(s) = self.envelope_sender.as_mut() {
                                let word: Vec<u8> = s
                                    .split(|b| b.is_ascii_whitespace())
                                    .find(|w| !w.is_empty())
                                    .unwrap_or_default()
                                    .iter()
                                    .take(MAX_SENDER_LEN)
                                    .copied()
                                    .collect();
                                *s = word;
                            }
                            self.part = Part::First;
                        }
                        None => bytes = &[],
                    }
                }
                Part::Headers | Part::Body => {
                    let n = bytes.len();
                    self.kept(bytes, out)?;
                    bytes = &bytes[n..];
                }
            }
        }
        Ok(())
    }

    /// Bytes that are part of the stored message.
    fn kept(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), DeliverError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let nuls = count_nul(bytes);
        if nuls > 0 && self.rules.reject_nul {
            return Err(DeliverError::NulByte);
        }
        self.nul_bytes += nuls;
        out.extend_from_slice(bytes);
        self.out_len += bytes.len() as u64;
        self.last_out = bytes.last().copied();
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = memchr(b'\n', rest);
            let seg = &rest[..end.unwrap_or(rest.len())];
            self.line_bytes(seg)?;
            match end {
                Some(i) => {
                    self.line_end()?;
                    rest = &rest[i + 1..];
                }
                None => rest = &[],
            }
        }
        Ok(())
    }

    fn line_bytes(&mut self, seg: &[u8]) -> Result<(), DeliverError> {
        if seg.is_empty() {
            return Ok(());
        }
        let was_empty = self.line_len == 0;
        self.line_len += seg.len() as u64;
        if let Some(max) = self.rules.max_line_length {
            if self.line_len > max {
                return Err(DeliverError::LineTooLong { limit: max });
            }
        }
        self.from.run(seg);
        if self.field != FieldCheck::Ok {
            self.check_field(seg)?;
        }
        if self.part == Part::Headers {
            if was_empty {
                self.head.clear();
                self.capture_rp = false;
            }
            if self.head.len() < RETURN_PATH.len() {
                let k = seg.len().min(RETURN_PATH.len() - self.head.len());
                self.head.extend_from_slice(&seg[..k]);
                if self.head.len() == RETURN_PATH.len()
                    && self.head.eq_ignore_ascii_case(RETURN_PATH)
                    && self.return_path.is_none()
                {
                    self.capture_rp = true;
                    self.return_path = Some(Vec::new());
                    self.capture(&seg[k..]);
                }
            } else if self.capture_rp {
                self.capture(seg);
            }
        }
        Ok(())
    }

    fn capture(&mut self, seg: &[u8]) {
        if let Some(rp) = self.return_path.as_mut() {
            let room = MAX_SENDER_LEN.saturating_sub(rp.len());
            rp.extend_from_slice(&seg[..seg.len().min(room)]);
        }
    }

    fn check_field(&mut self, seg: &[u8]) -> Result<(), DeliverError> {
        for &b in seg {
            self.field = match (self.field, b) {
                (FieldCheck::Ok, _) => return Ok(()),
                (FieldCheck::Name(n), b':') if n > 0 => FieldCheck::Ok,
                (FieldCheck::Space, b':') => FieldCheck::Ok,
                (FieldCheck::Name(n), b' ' | b'\t') if n > 0 => FieldCheck::Space,
                (FieldCheck::Space, b' ' | b'\t') => FieldCheck::Space,
                (FieldCheck::Name(n), 33..=126) if b != b':' && n < MAX_FIELD_NAME => {
                    FieldCheck::Name(n + 1)
                }
                _ => return Err(DeliverError::NoHeader),
            };
        }
        Ok(())
    }

    fn line_end(&mut self) -> Result<(), DeliverError> {
        if self.field != FieldCheck::Ok {
            // The first kept line ended before its colon (or was empty): no header.
            return Err(DeliverError::NoHeader);
        }
        if self.from == FromMatch::Yes {
            self.from_lines += 1;
        }
        if self.part == Part::Headers && self.line_len == 0 {
            self.part = Part::Body;
        }
        if self.capture_rp {
            self.capture_rp = false;
        }
        self.line_len = 0;
        self.from = FromMatch::START;
        self.head.clear();
        Ok(())
    }
}

fn count_nul(bytes: &[u8]) -> u64 {
    if memchr(0, bytes).is_none() {
        return 0;
    }
    bytes.iter().filter(|&&b| b == 0).count() as u64
}

/// Whether a line of the stored message (without LF) gets a `>` in an mbox.
#[cfg(test)]
pub(crate) fn needs_quote(line: &[u8]) -> bool {
    let mut m = FromMatch::START;
    m.run(line);
    m == FromMatch::Yes
}
