//! Writing responses: status lines with RFC 2449/3206 response codes, and byte-stuffed
//! multi-line bodies. OWNER: pop3 helper. Interface fixed by the skeleton.

use std::io::{self, Write};

/// RFC 2449 §8 and RFC 3206 extended response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    InUse,
    LoginDelay,
    SysTemp,
    SysPerm,
    Auth,
}

impl RespCode {
    /// The code as written inside the brackets: `IN-USE`, `LOGIN-DELAY`, `SYS/TEMP`,
    /// `SYS/PERM`, `AUTH`.
    pub fn as_str(self) -> &'static str {
        todo!()
    }
}

/// Writes `+OK text\r\n` (`+OK\r\n` when text is empty).
pub fn ok(out: &mut dyn Write, text: &str) -> io::Result<()> {
    let _ = (out, text);
    todo!()
}

/// Writes `-ERR [CODE] text\r\n` (no brackets when `code` is None).
pub fn err(out: &mut dyn Write, code: Option<RespCode>, text: &str) -> io::Result<()> {
    let _ = (out, code, text);
    todo!()
}

/// Byte-stuffs a multi-line body: every line starting with `.` gets another `.` in front.
/// The input is canonical (CRLF line endings); `finish` writes the terminating `.\r\n`,
/// adding a CRLF first if the body did not end with one. Works in bulk (memchr), never byte
/// at a time, and keeps no more than a constant amount of state.
pub struct DotStuffer<W: Write> {
    inner: W,
}

impl<W: Write> DotStuffer<W> {
    pub fn new(inner: W) -> DotStuffer<W> {
        DotStuffer { inner }
    }
    /// Writes the terminator and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        todo!()
    }
    /// The inner writer, for writing around the body.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for DotStuffer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = buf;
        todo!()
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
