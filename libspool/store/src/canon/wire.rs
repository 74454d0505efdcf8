//! RETR and TOP's path: raw message bytes to their wire form (canonical, then byte-stuffed)
//! in the session's output buffer, in one pass and one copy in user space.

#![forbid(unsafe_code)]

use super::machine::Canon;
use super::options::CanonOptions;
use super::pool::{Pooled, Slot};
use super::sink::WireSink;
use crate::mbox::uidl::UidlHasher;
use std::io::{self, Read};

/// An output buffer a mailbox appends a whole RETR/TOP response to: the status line, then
/// the message canonical and byte-stuffed; the sink adds the terminating `.` line when the
/// retrieve returns `Ok` (the wire form always ends with CRLF or is empty).
///
/// The protocol keeps the `+OK`-only-when-checked promise of `begin` while letting the check
/// run in the same pass as the output: `start` stages the status line, the mailbox appends
/// and checks, and nothing from the mark on may leave until the mailbox calls `spill`. A
/// failed check calls `cancel(mark)` and returns [`RetrieveError::BeforeStart`]; a mailbox
/// that changes its mind may `cancel` and then use `begin`/`Write` instead.
pub trait WireOut {
    /// Appends the status line; returns the buffer's length before it (the mark).
    fn start(&mut self) -> usize;
    /// The output buffer: append only, and never touch bytes before the mark.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// The message has been checked: staged bytes may leave. Sends them once there are
    /// enough for a large write; call it after every append of a bounded amount, so memory
    /// stays bounded however large the message.
    fn spill(&mut self) -> io::Result<()>;
    /// The check failed or the mailbox falls back to `begin`: drops everything from `mark`.
    fn cancel(&mut self, mark: usize);
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
    w: &mut dyn WireOut,
) -> Result<u64, WireError> {
    let mut wire = Wire::new(opts, body_lines, None);
    let mark = w.start();
    let cap = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .clamp(1, WIRE_READ);
    let mut pooled = Pooled::take(Slot::Read, cap);
    let buf = &mut pooled.v[..cap];
    let mut left = len;
    let mut spilled = false;
    let fail = |spilled: bool, w: &mut dyn WireOut, e: io::Error| {
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
