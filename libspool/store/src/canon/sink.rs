//! Where the line machine puts canonical bytes: the wire (byte-stuffed into the session's
//! buffer), a counter (sizes), or a writer.

#![forbid(unsafe_code)]

use std::io::{self, Write};

/// Read size of `measure` and `copy`, and the output staging buffer of `copy`.
pub const COPY_BUF: usize = 64 * 1024;

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
    pub(super) buf: &'a mut Vec<u8>,
    pub(super) line_start: &'a mut bool,
    pub(super) written: &'a mut u64,
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
pub(super) struct WriteSink<'a> {
    pub(super) out: &'a mut dyn Write,
    pub(super) buf: Vec<u8>,
    pub(super) written: u64,
}

impl WriteSink<'_> {
    pub(super) fn flush(&mut self) -> io::Result<()> {
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
