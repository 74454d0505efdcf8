//! Streaming one mbox message in canonical form (CRLF, unquoted, spool headers hidden), in
//! bulk and with bounded memory. OWNER: mbox helper.
//!
//! Before the first byte (and so before the client sees `+OK`) the message is checked to be
//! still where and what the scan found: the file still reaches its end, its `From ` line is
//! still at its offset, and the UIDL digest of its `From ` line and header block still
//! matches. Only the session lock is held during a session (the content lock is not, so that
//! mail delivery is never blocked by a slow client), so a local MUA may have rewritten the
//! mbox meanwhile; the check makes sure we never send one message under another's number.

use crate::canon::{self, CanonOptions, Pooled, Wire};
use crate::error::MailboxError;
use crate::mailbox::{RetrieveError, RetrieveSink, WireOut};
use crate::mbox::scan::{digest_at, MessageInfo, PreadReader};
use crate::mbox::uidl;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

/// Checks that `info` still describes the message whose digest is `digest_hex` in `file`.
pub fn verify(file: &File, info: &MessageInfo, digest_hex: &str) -> Result<(), MailboxError> {
    let len = file
        .metadata()
        .map_err(crate::error::io_err("stat the mailbox"))?
        .len();
    if len < info.next_start() {
        return Err(MailboxError::Changed(format!(
            "mailbox is {len} bytes, shorter than the {} bytes scanned",
            info.next_start()
        )));
    }
    let start = info.from_line_start();
    let (at, want): (u64, &[u8]) = if start == 0 {
        (0, b"From ")
    } else {
        (start - 1, b"\nFrom ")
    };
    let mut got = [0u8; 6];
    let got = &mut got[..want.len()];
    file.read_exact_at(got, at)
        .map_err(crate::error::io_err("read the mailbox"))?;
    if got != want {
        return Err(MailboxError::MessageGone);
    }
    let d = digest_at(file, info).map_err(crate::error::io_err("read the mailbox"))?;
    let mut hex = String::with_capacity(uidl::UIDL_HEX_LEN);
    uidl::push_hex(&mut hex, &d);
    if hex != digest_hex {
        return Err(MailboxError::MessageGone);
    }
    Ok(())
}

/// Bytes asked of each `pread` while sending: a typical message, its `From ` line and the
/// separator after it in one read; large messages in few large reads.
pub const SEND_READ: usize = 128 * 1024;
/// TOP's first read: most header blocks fit, and a large body is not read for nothing.
pub const TOP_FIRST_READ: usize = 16 * 1024;
/// Most octets of a response held back while its header block is checked. A header block
/// longer than this (rare: a few KiB is typical) falls back to the separate check pass, so
/// the memory held stays bounded.
pub const MAX_HELD: usize = 1024 * 1024;

/// Sends one message (all of it, or TOP's part with `body_lines`) into `sink`.
///
/// With a [`WireOut`] sink the check and the send are one pass: see [`send_wire`].
pub fn retrieve(
    file: &File,
    info: &MessageInfo,
    digest_hex: &str,
    opts: CanonOptions,
    body_lines: Option<u64>,
    sink: &mut dyn RetrieveSink,
) -> Result<(), RetrieveError> {
    if let Some(w) = sink.wire() {
        match send_wire(file, info, digest_hex, opts, body_lines, w)? {
            Wired::Sent => return Ok(()),
            Wired::HeaderTooLong => {}
        }
    }
    verify(file, info, digest_hex).map_err(RetrieveError::BeforeStart)?;
    sink.begin()
        .map_err(|e| RetrieveError::BeforeStart(MailboxError::Io("send the message", e)))?;
    let mut src = Tagged {
        inner: PreadReader::new(file, info.message_start(), info.message_end()),
        failed: false,
    };
    let mut out = SinkWriter(sink);
    let written = match canon::copy(&mut src, info.raw_len(), opts, body_lines, &mut out) {
        Ok(n) => n,
        Err(e) if src.failed && e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(RetrieveError::During(MailboxError::Changed(
                "message became shorter while being sent".into(),
            )))
        }
        Err(e) if src.failed => {
            return Err(RetrieveError::During(MailboxError::Io(
                "read the mailbox",
                e,
            )))
        }
        Err(e) => {
            return Err(RetrieveError::During(MailboxError::Io(
                "send the message",
                e,
            )))
        }
    };
    if body_lines.is_none() && written != info.size() {
        return Err(RetrieveError::During(MailboxError::Changed(format!(
            "sent {written} octets of a message listed as {}",
            info.size()
        ))));
    }
    Ok(())
}

/// Remembers whether an error came from reading (the mailbox) rather than writing (the client).
struct Tagged<'a> {
    inner: PreadReader<'a>,
    failed: bool,
}

impl Read for Tagged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                // `copy` asks only for bytes that should exist: a 0 is a short file.
                self.failed = true;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

/// `&mut dyn RetrieveSink` as a plain `Write`.
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

/// How [`send_wire`] ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Wired {
    /// The whole response is in the sink.
    Sent,
    /// The header block was too long to hold back: nothing was staged, use the two passes.
    HeaderTooLong,
}

/// The one-pass RETR/TOP: reads the `From ` line and the message with large `pread`s, runs
/// them through the canonical line machine with the UIDL hasher on, and appends the wire form
/// (after the staged status line) to the sink's buffer. Nothing leaves until the header block
/// has ended and its digest matched the scan's; so the check costs neither a second read nor
/// a second pass over the header, and a changed message still gets a clean `-ERR`.
///
/// The checks are those of [`verify`]: the `From ` line is still at its offset (the LF before
/// it too), the digest matches, and the file still reaches the next message (proved by the
/// first read itself when it covers the whole message, else by `fstat`).
fn send_wire(
    file: &File,
    info: &MessageInfo,
    digest_hex: &str,
    opts: CanonOptions,
    body_lines: Option<u64>,
    w: &mut dyn WireOut,
) -> Result<Wired, RetrieveError> {
    let from = info.from_line_start();
    let at = from.saturating_sub(1);
    let msg_start = info.message_start();
    let msg_end = info.message_end();
    let first = if body_lines.is_some() {
        TOP_FIRST_READ
    } else {
        SEND_READ
    };
    let mut pooled = Pooled::take(canon::IN_BUF, SEND_READ);
    let mut wire = Wire::new(opts, body_lines, Some(uidl::UidlHasher::new()));
    let mark = w.start();
    let mut checked = false;
    // The file still reaches the next message's `From ` line.
    let mut len_proved = false;
    let mut pos = at;
    let mut want = first;
    // The first read also takes the separator, so a full read proves the file's length.
    let mut end = info.next_start();
    let gone = |w: &mut dyn WireOut, e: MailboxError| {
        w.cancel(mark);
        Err(RetrieveError::BeforeStart(e))
    };
    loop {
        let len = usize::try_from(end - pos).unwrap_or(usize::MAX).min(want);
        if len == 0 {
            break;
        }
        let buf = &mut pooled.v[..len];
        let n = match read_full(file, buf, pos) {
            Ok(n) => n,
            Err(e) if !checked => return gone(w, MailboxError::Io("read the mailbox", e)),
            Err(e) => {
                return Err(RetrieveError::During(MailboxError::Io(
                    "read the mailbox",
                    e,
                )))
            }
        };
        if n < len {
            let e = MailboxError::Changed(format!(
                "mailbox ends at {}, before the end of the message scanned at {from}",
                pos + n as u64
            ));
            return if checked {
                Err(RetrieveError::During(e))
            } else {
                gone(w, e)
            };
        }
        let chunk = &buf[..n];
        if pos == at {
            let head: &[u8] = if from == 0 { b"From " } else { b"\nFrom " };
            if !chunk.starts_with(head) {
                return gone(w, MailboxError::MessageGone);
            }
        }
        // The `From ` line, without its LF, goes to the hasher only.
        let c_from = pos.max(from);
        let c_msg = (pos + n as u64).min(msg_start);
        if c_from < c_msg {
            let mut seg = &chunk[(c_from - pos) as usize..(c_msg - pos) as usize];
            if c_msg == msg_start {
                seg = seg.strip_suffix(b"\n").unwrap_or(seg);
            }
            if let Some(h) = wire.hasher_mut() {
                h.line_bytes(seg);
                if c_msg == msg_start {
                    h.end_line();
                }
            }
        }
        let m_from = pos.max(msg_start);
        let m_to = (pos + n as u64).min(msg_end);
        let mut done = false;
        if m_from < m_to {
            let seg = &chunk[(m_from - pos) as usize..(m_to - pos) as usize];
            done = wire
                .feed(seg, w.buf())
                .map_err(|e| RetrieveError::During(MailboxError::Io("stage the message", e)))?;
        }
        pos += n as u64;
        len_proved |= pos >= info.next_start();
        if pos >= msg_end && !done {
            wire.finish(w.buf())
                .map_err(|e| RetrieveError::During(MailboxError::Io("stage the message", e)))?;
            done = true;
        }
        if !checked {
            if wire.in_header() && !done {
                if w.buf().len() - mark > MAX_HELD {
                    w.cancel(mark);
                    return Ok(Wired::HeaderTooLong);
                }
            } else {
                let d = wire.take_hasher().unwrap_or_default().finish();
                let mut hex = String::with_capacity(uidl::UIDL_HEX_LEN);
                uidl::push_hex(&mut hex, &d);
                if hex != digest_hex {
                    return gone(w, MailboxError::MessageGone);
                }
                if !len_proved {
                    // Not proved by the first read: the message and its separator must
                    // still be in the file.
                    let len = match file.metadata() {
                        Ok(m) => m.len(),
                        Err(e) => return gone(w, MailboxError::Io("stat the mailbox", e)),
                    };
                    if len < info.next_start() {
                        return gone(
                            w,
                            MailboxError::Changed(format!(
                                "mailbox is {len} bytes, shorter than the {} bytes scanned",
                                info.next_start()
                            )),
                        );
                    }
                }
                checked = true;
            }
        }
        if checked {
            w.spill()
                .map_err(|e| RetrieveError::During(MailboxError::Io("send the message", e)))?;
        }
        if done {
            break;
        }
        end = msg_end;
        want = SEND_READ;
    }
    if !checked {
        // Only when the message ended inside a read that was never processed: impossible,
        // but never send unchecked.
        return gone(w, MailboxError::MessageGone);
    }
    if body_lines.is_none() && wire.written() != info.size() {
        return Err(RetrieveError::During(MailboxError::Changed(format!(
            "sent {} octets of a message listed as {}",
            wire.written(),
            info.size()
        ))));
    }
    debug_assert!(wire.at_line_start());
    Ok(Wired::Sent)
}

/// `pread`s until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &File, buf: &mut [u8], mut pos: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], pos) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
