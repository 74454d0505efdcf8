//! Writing responses: status lines with RFC 2449/3206 response codes, and byte-stuffed
//! multi-line bodies.

#![forbid(unsafe_code)]

use std::io::{self, Write};

use memchr::memmem;

/// RFC 2449 §4: a response line is at most 512 octets including the CRLF. Status texts are
/// cut (at a character boundary) to keep every status line within it.
pub const MAX_RESPONSE_LINE: usize = 512;

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
        match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
        }
    }
}

/// Writes `+OK text\r\n` (`+OK\r\n` when text is empty).
///
/// Control characters in `text` become `?`, so no text can end the line early or inject a
/// second response; the line is written with one `write_all`.
pub fn ok(out: &mut dyn Write, text: &str) -> io::Result<()> {
    status(out, "+OK", None, text)
}

/// Writes `-ERR [CODE] text\r\n` (no brackets when `code` is None).
///
/// Same sanitising and length limit as [`ok`].
pub fn err(out: &mut dyn Write, code: Option<RespCode>, text: &str) -> io::Result<()> {
    status(out, "-ERR", code, text)
}

fn status(
    out: &mut dyn Write,
    indicator: &str,
    code: Option<RespCode>,
    text: &str,
) -> io::Result<()> {
    let mut line = Vec::with_capacity(indicator.len() + text.len() + 16);
    line.extend_from_slice(indicator.as_bytes());
    if let Some(code) = code {
        line.extend_from_slice(b" [");
        line.extend_from_slice(code.as_str().as_bytes());
        line.push(b']');
    }
    if !text.is_empty() {
        line.push(b' ');
        let room = MAX_RESPONSE_LINE.saturating_sub(line.len() + 2);
        let mut cut = text.len().min(room);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        line.extend(text.as_bytes()[..cut].iter().map(|&b| {
            if b < 0x20 || b == 0x7f {
                b'?'
            } else {
                b
            }
        }));
    }
    line.extend_from_slice(b"\r\n");
    out.write_all(&line)
}

/// Byte-stuffs a multi-line body: every line starting with `.` gets another `.` in front.
/// The input is canonical (CRLF line endings); `finish` writes the terminating `.\r\n`,
/// adding a CRLF first if the body did not end with one. Works in bulk (memchr), never byte
/// at a time, and keeps no more than a constant amount of state.
///
/// A `.` after a bare LF is stuffed too: canonical input has none, and for input that does, a
/// client splitting lines on LF alone must still never see an early terminator.
///
/// After a write error the stuffer refuses further writes: part of a buffer may have reached
/// the client, and carrying on would send a corrupt body. The caller ends the session.
pub struct DotStuffer<W: Write> {
    inner: W,
    /// The next byte starts a line (nothing written yet, or the last byte was LF).
    line_start: bool,
    /// The last byte written was CR.
    last_cr: bool,
    /// The body so far is non-empty and ends with CRLF.
    ends_crlf: bool,
    empty: bool,
    failed: bool,
}

/// The `\n.` searcher, built once: a RETR answered through the mailbox's wire path creates
/// a stuffer it never uses, and building a searcher allocates.
fn lf_dot() -> &'static memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(b"\n."))
}

impl<W: Write> DotStuffer<W> {
    pub fn new(inner: W) -> DotStuffer<W> {
        DotStuffer {
            inner,
            line_start: true,
            last_cr: false,
            ends_crlf: false,
            empty: true,
            failed: false,
        }
    }
    /// Writes the terminator and returns the inner writer. It does not flush: the caller
    /// decides when the response leaves (and may have more pipelined answers to add).
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        if !self.empty && !self.ends_crlf {
            self.inner.write_all(b"\r\n.\r\n")?;
        } else {
            self.inner.write_all(b".\r\n")?;
        }
        Ok(self.inner)
    }
    /// The inner writer, for writing around the body.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn check(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier write of this body failed"));
        }
        Ok(())
    }

    fn stuff(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut from = 0;
        if self.line_start && buf[0] == b'.' {
            self.inner.write_all(b".")?;
        }
        for lf in lf_dot().find_iter(buf) {
            // Through the LF, then the extra dot; the line's own dot starts the next segment.
            self.inner.write_all(&buf[from..=lf])?;
            self.inner.write_all(b".")?;
            from = lf + 1;
        }
        self.inner.write_all(&buf[from..])
    }
}

impl<W: Write> Write for DotStuffer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let Some(&last) = buf.last() else {
            return Ok(0);
        };
        if let Err(e) = self.stuff(buf) {
            self.failed = true;
            return Err(e);
        }
        self.ends_crlf = last == b'\n'
            && match buf.len() {
                1 => self.last_cr,
                n => buf[n - 2] == b'\r',
            };
        self.line_start = last == b'\n';
        self.last_cr = last == b'\r';
        self.empty = false;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuff_chunks(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::new(Vec::new());
        for c in chunks {
            s.write_all(c).unwrap();
        }
        s.finish().unwrap()
    }

    #[test]
    fn status_lines() {
        let mut v = Vec::new();
        ok(&mut v, "").unwrap();
        ok(&mut v, "2 320").unwrap();
        err(&mut v, None, "no such message").unwrap();
        err(&mut v, Some(RespCode::SysTemp), "mailbox locked").unwrap();
        err(&mut v, Some(RespCode::InUse), "").unwrap();
        err(&mut v, None, "").unwrap();
        err(&mut v, None, "a\r\nb\0c").unwrap();
        assert_eq!(
            v,
            b"+OK\r\n+OK 2 320\r\n-ERR no such message\r\n-ERR [SYS/TEMP] mailbox locked\r\n\
              -ERR [IN-USE]\r\n-ERR\r\n-ERR a??b?c\r\n"
        );
    }

    #[test]
    fn codes() {
        let all = [
            (RespCode::InUse, "IN-USE"),
            (RespCode::LoginDelay, "LOGIN-DELAY"),
            (RespCode::SysTemp, "SYS/TEMP"),
            (RespCode::SysPerm, "SYS/PERM"),
            (RespCode::Auth, "AUTH"),
        ];
        for (c, s) in all {
            assert_eq!(c.as_str(), s);
        }
    }

    #[test]
    fn long_text_is_cut_within_limit() {
        let mut v = Vec::new();
        let text = "é".repeat(400);
        err(&mut v, Some(RespCode::LoginDelay), &text).unwrap();
        assert!(v.len() <= MAX_RESPONSE_LINE);
        assert!(v.ends_with(b"\r\n"));
        assert!(std::str::from_utf8(&v).is_ok());
        assert!(v.len() >= MAX_RESPONSE_LINE - 1);
    }

    #[test]
    fn stuffing_exact_bytes() {
        let cases: Vec<(Vec<&[u8]>, &[u8])> = vec![
            (vec![], b".\r\n"),
            (vec![b""], b".\r\n"),
            (vec![b"a\r\n"], b"a\r\n.\r\n"),
            (vec![b"a"], b"a\r\n.\r\n"),
            (vec![b"a\r"], b"a\r\r\n.\r\n"),
            (vec![b"."], b"..\r\n.\r\n"),
            (vec![b".\r\n"], b"..\r\n.\r\n"),
            (vec![b"\r\n"], b"\r\n.\r\n"),
            (
                vec![b"a\r\n.\r\n..b\r\nc.d\r\n"],
                b"a\r\n..\r\n...b\r\nc.d\r\n.\r\n",
            ),
            (vec![b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
            (vec![b"a\r", b"\n", b".", b"b\r\n"], b"a\r\n..b\r\n.\r\n"),
            (vec![b"a\r", b"\n.b"], b"a\r\n..b\r\n.\r\n"),
            (vec![b"a\r\n", b"", b".b"], b"a\r\n..b\r\n.\r\n"),
            (vec![b"a.", b".\r\n"], b"a..\r\n.\r\n"),
            (vec![b"a\r\n", b"\r\n"], b"a\r\n\r\n.\r\n"),
            (vec![b"a\n.b\n"], b"a\n..b\n\r\n.\r\n"),
        ];
        for (chunks, want) in cases {
            assert_eq!(stuff_chunks(&chunks), want, "{chunks:?}");
        }
    }

    /// Counts write calls, to check that bodies go through in bulk.
    struct Counting(Vec<u8>, usize);
    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1 += 1;
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bulk_writes() {
        let body = b"line of text without dots at the start\r\n".repeat(10_000);
        let mut s = DotStuffer::new(Counting(Vec::new(), 0));
        s.write_all(&body).unwrap();
        assert_eq!(s.get_mut().1, 1);
        let out = s.finish().unwrap();
        assert_eq!(out.1, 2);
        assert_eq!(&out.0[..body.len()], &body[..]);
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_write_poisons() {
        let mut s = DotStuffer::new(Failing);
        assert!(s.write_all(b"abc").is_err());
        assert!(s.write(b"def").is_err());
        assert!(s.finish().is_err());
    }

    fn unstuff(out: &[u8]) -> Vec<u8> {
        let body = out.strip_suffix(b".\r\n").expect("terminator");
        let mut v = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b"..") {
                v.extend_from_slice(&line[1..]);
            } else {
                assert!(!line.starts_with(b"."), "unstuffed dot line {line:?}");
                v.extend_from_slice(line);
            }
        }
        v
    }

    fn crlf_body() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'a'), Just(b'\r'), any::<u8>()],
                0..12
            ),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
        ]
        .prop_map(|l: Vec<u8>| l.into_iter().filter(|&b| b != b'\n').collect::<Vec<u8>>())
        .prop_filter("no trailing CR", |l| l.last() != Some(&b'\r'));
        proptest::collection::vec(line, 0..20).prop_map(|ls| {
            ls.into_iter()
                .flat_map(|mut l| {
                    l.extend_from_slice(b"\r\n");
                    l
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn unstuffing_gives_the_body_back(body in crlf_body(), cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts {
                chunks.push(&body[prev..c]);
                prev = c;
            }
            chunks.push(&body[prev..]);
            let out = stuff_chunks(&chunks);
            // No line of the output is a lone dot except the terminator.
            let without_term = &out[..out.len() - 3];
            prop_assert!(!without_term.split(|&b| b == b'\n').any(|l| l == b".\r"));
            prop_assert!(!without_term.starts_with(b".\r\n"));
            prop_assert_eq!(unstuff(&out), body.clone());
            // Every single-byte chunking too.
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            prop_assert_eq!(&stuff_chunks(&bytes), &out);
        }
    }
}
