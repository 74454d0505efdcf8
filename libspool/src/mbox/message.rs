//! Streaming one mbox message in canonical form (CRLF, unquoted, spool headers hidden), in
//! bulk and with bounded memory. OWNER: mbox helper.
//!
//! Before the first byte (and so before the client sees `+OK`) the message is checked to be
//! still where and what the scan found: the file still reaches its end, its `From ` line is
//! still at its offset, and the UIDL digest of its `From ` line and header block still
//! matches. Only the session lock is held during a session (the content lock is not, so that
//! mail delivery is never blocked by a slow client), so a local MUA may have rewritten the
//! mbox meanwhile; the check makes sure we never send one message under another's number.

use crate::canon::{self, CanonOptions};
use crate::error::MailboxError;
use crate::mailbox::{RetrieveError, RetrieveSink};
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

/// Sends one message (all of it, or TOP's part with `body_lines`) into `sink`.
pub fn retrieve(
    file: &File,
    info: &MessageInfo,
    digest_hex: &str,
    opts: CanonOptions,
    body_lines: Option<u64>,
    sink: &mut dyn RetrieveSink,
) -> Result<(), RetrieveError> {
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
