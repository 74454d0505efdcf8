//! Splitting untrusted input into command lines, with a hard length limit.
//! See the tests for the contract.
//!
//! The limit counts every octet of the line including its terminator, as RFC 2449 §4 does: with
//! `max` = 255, a 253-byte command plus CRLF (255 octets) is accepted, a 254-byte one is not; a
//! 254-byte command ended by a bare LF (255 octets) is accepted.
//!
//! Overlong lines are never buffered: as soon as the bytes of an unfinished line reach `max`
//! the line can no longer fit (it still needs at least its LF), so it is reported as
//! [`Line::TooLong`] at once and everything up to and including its LF is dropped as it
//! arrives, however many pushes that takes.

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use memchr::memchr;

/// One result of [`LineBuffer::next_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete command line, CRLF or bare LF removed (a CR before the LF is removed, a lone
    /// CR elsewhere is kept and the command parser rejects it).
    Complete(Vec<u8>),
    /// A line longer than the limit (the limit counts the CRLF). Its bytes were discarded up to
    /// and including the next LF; the caller answers `-ERR` once for it.
    TooLong,
}

/// Accumulates bytes read from the client and yields bounded lines. Memory is bounded by the
/// line limit whatever the client sends.
///
/// Precisely: the unfinished line is at most `max` bytes, and complete lines wait in the buffer
/// only until [`next_line`](LineBuffer::next_line) takes them, so a caller that drains every
/// available line after each `push` of a bounded read never holds more than `max` plus one read.
#[derive(Debug)]
pub struct LineBuffer {
    max: usize,
    /// `buf[..pos]` is consumed, `buf[pos..tail]` holds complete lines (each with its LF, each at
    /// most `max` bytes), `buf[tail..]` is the unfinished line (fewer than `max` bytes).
    buf: Vec<u8>,
    pos: usize,
    tail: usize,
    /// Dropping the rest of an overlong line, up to and including its LF.
    discarding: bool,
    /// Complete lines accepted so far and taken so far; a [`Line::TooLong`] is recorded as the
    /// number of complete lines accepted before it, so it comes out in the order it arrived.
    accepted: u64,
    taken: u64,
    too_long: VecDeque<u64>,
}

/// After the buffer empties, a capacity above this (and above a few lines) is given back: one
/// large pipelined read should not pin memory for the whole session.
const SHRINK_ABOVE: usize = 64 * 1024;

impl LineBuffer {
    /// `max` counts the line terminator, as RFC 2449 does (255 for POP3).
    pub fn new(max: usize) -> LineBuffer {
        LineBuffer {
            max,
            buf: Vec::with_capacity(max),
            pos: 0,
            tail: 0,
            discarding: false,
            accepted: 0,
            taken: 0,
            too_long: VecDeque::new(),
        }
    }

    /// Appends bytes just read from the client.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        let mut data = data;
        while !data.is_empty() {
            if self.discarding {
                match memchr(b'\n', data) {
                    Some(i) => {
                        self.discarding = false;
                        data = &data[i + 1..];
                    }
                    None => return,
                }
                continue;
            }
            let partial = self.buf.len() - self.tail;
            match memchr(b'\n', data) {
                Some(i) => {
                    if partial + i < self.max {
                        // partial + i + 1 octets including the LF: within the limit.
                        self.buf.extend_from_slice(&data[..=i]);
                        self.tail = self.buf.len();
                        self.accepted += 1;
                    } else {
                        self.reject_partial();
                    }
                    data = &data[i + 1..];
                }
                None => {
                    if partial + data.len() < self.max {
                        self.buf.extend_from_slice(data);
                    } else {
                        // The line already has `max` bytes and still lacks its LF.
                        self.reject_partial();
                        self.discarding = true;
                    }
                    return;
                }
            }
        }
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        if self.too_long.front() == Some(&self.taken) {
            self.too_long.pop_front();
            return Some(Line::TooLong);
        }
        if self.pos == self.tail {
            return None;
        }
        let rest = &self.buf[self.pos..self.tail];
        // Every byte range between pos and tail ends with an LF (invariant), so this finds one.
        let lf = memchr(b'\n', rest)?;
        let mut end = lf;
        if end > 0 && rest[end - 1] == b'\r' {
            end -= 1;
        }
        let line = rest[..end].to_vec();
        self.pos += lf + 1;
        self.taken += 1;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            self.tail = 0;
            if self.buf.capacity() > SHRINK_ABOVE.max(4 * self.max) {
                self.buf.shrink_to(self.max);
            }
        }
        Some(Line::Complete(line))
    }

    /// Overwrites every byte the buffer holds that is not still waiting to be taken: lines
    /// already returned (a PASS line, say) and stale copies left by compaction, including the
    /// vector's spare capacity. The front end calls it after each line so a password does not
    /// linger here once it has been handed on. (A copy made by an earlier reallocation is out
    /// of reach; lines are short and the buffer rarely grows during authorization.)
    pub fn wipe_taken(&mut self) {
        // buf[pos..] is what is still to come (complete lines, then the unfinished one).
        let pos = self.pos;
        self.buf[..pos].fill(0);
        for b in self.buf.spare_capacity_mut() {
            b.write(0);
        }
    }

    /// True when part of a line has arrived (the line deadline is running).
    ///
    /// Also true while the rest of an overlong line is being discarded: that line is still
    /// unfinished, and a client must not escape the line deadline by making its line too long.
    pub fn has_partial(&self) -> bool {
        self.discarding || self.tail < self.buf.len()
    }

    /// Bytes held right now (complete lines not yet taken plus the unfinished line). After every
    /// available line has been taken this is less than the limit.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drops the unfinished line and records a [`Line::TooLong`] in its place.
    fn reject_partial(&mut self) {
        self.buf.truncate(self.tail);
        self.too_long.push_back(self.accepted);
    }

    /// Moves unconsumed bytes to the front, only when that is cheap: when nothing but the
    /// unfinished line (under `max` bytes) remains, or when at least half the buffer is
    /// consumed, so each byte is moved a bounded number of times overall.
    fn compact(&mut self) {
        if self.pos > 0 && (self.pos == self.tail || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.tail -= self.pos;
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn wipe_taken_leaves_no_copy_of_a_taken_line() {
        let mut lb = LineBuffer::new(255);
        lb.push(b"PASS hunter2-secret\r\nSTAT\r\nNOO");
        assert_eq!(
            lb.next_line(),
            Some(Line::Complete(b"PASS hunter2-secret".to_vec()))
        );
        lb.wipe_taken();
        assert!(
            !lb.buf.windows(7).any(|w| w == b"hunter2"),
            "password still buffered"
        );
        assert_eq!(lb.next_line(), Some(Line::Complete(b"STAT".to_vec())));
        lb.push(b"P\r\n");
        assert_eq!(lb.next_line(), Some(Line::Complete(b"NOOP".to_vec())));
    }
    use super::*;
    use crate::limits::MAX_COMMAND_LINE;
    use proptest::prelude::*;

    fn c(s: &[u8]) -> Line {
        Line::Complete(s.to_vec())
    }

    fn drain(lb: &mut LineBuffer) -> Vec<Line> {
        let mut out = Vec::new();
        while let Some(l) = lb.next_line() {
            out.push(l);
        }
        out
    }

    fn whole(max: usize, input: &[u8]) -> Vec<Line> {
        let mut lb = LineBuffer::new(max);
        lb.push(input);
        drain(&mut lb)
    }

    fn chunked(max: usize, input: &[u8], size: usize) -> Vec<Line> {
        let mut lb = LineBuffer::new(max);
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            lb.push(chunk);
            out.extend(drain(&mut lb));
            assert!(
                lb.buffered() < max.max(1),
                "holding {} bytes",
                lb.buffered()
            );
        }
        out
    }

    #[test]
    fn table() {
        let a253 = vec![b'a'; 253];
        let a254 = vec![b'a'; 254];
        let a255 = vec![b'a'; 255];
        let cases: Vec<(Vec<u8>, Vec<Line>)> = vec![
            (b"".to_vec(), vec![]),
            (b"STAT".to_vec(), vec![]),
            (b"STAT\r\n".to_vec(), vec![c(b"STAT")]),
            (b"STAT\n".to_vec(), vec![c(b"STAT")]),
            (b"\r\n".to_vec(), vec![c(b"")]),
            (b"\n".to_vec(), vec![c(b"")]),
            (b"A\r\r\n".to_vec(), vec![c(b"A\r")]),
            (b"A\rB\r\n".to_vec(), vec![c(b"A\rB")]),
            (b"\r".to_vec(), vec![]),
            (b"US\0ER x\r\n".to_vec(), vec![c(b"US\0ER x")]),
            (
                b"USER a\r\nPASS b\r\nSTAT\r\nQUIT\r\n".to_vec(),
                vec![c(b"USER a"), c(b"PASS b"), c(b"STAT"), c(b"QUIT")],
            ),
            ([&a253[..], b"\r\n"].concat(), vec![c(&a253)]),
            ([&a254[..], b"\r\n"].concat(), vec![Line::TooLong]),
            ([&a254[..], b"\n"].concat(), vec![c(&a254)]),
            ([&a255[..], b"\n"].concat(), vec![Line::TooLong]),
            (
                [&a255[..], b"\r\nNOOP\r\n"].concat(),
                vec![Line::TooLong, c(b"NOOP")],
            ),
            (
                [b"NOOP\r\n", &a255[..], b"\r\n", &a255[..], b"\r\nQUIT\r\n"].concat(),
                vec![c(b"NOOP"), Line::TooLong, Line::TooLong, c(b"QUIT")],
            ),
            // The rest of an overlong line is dropped even when it looks like a command.
            (
                [&a255[..], b"\rQUIT\r\nSTAT\n"].concat(),
                vec![Line::TooLong, c(b"STAT")],
            ),
        ];
        for (input, want) in &cases {
            assert_eq!(
                &whole(MAX_COMMAND_LINE, input),
                want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
            for size in 1..=8 {
                assert_eq!(
                    &chunked(MAX_COMMAND_LINE, input, size),
                    want,
                    "chunk {size}"
                );
            }
        }
    }

    #[test]
    fn too_long_reported_before_lf_arrives() {
        let mut lb = LineBuffer::new(MAX_COMMAND_LINE);
        lb.push(&[b'x'; 254]);
        assert_eq!(lb.next_line(), None);
        assert!(lb.has_partial());
        lb.push(b"x");
        assert_eq!(lb.next_line(), Some(Line::TooLong));
        assert_eq!(lb.next_line(), None);
        // Discarding: the line deadline keeps running.
        assert!(lb.has_partial());
        lb.push(&[b'x'; 10_000]);
        assert_eq!(lb.next_line(), None);
        assert_eq!(lb.buffered(), 0);
        lb.push(b"\r\n");
        assert!(!lb.has_partial());
        lb.push(b"QUIT\r\n");
        assert_eq!(lb.next_line(), Some(c(b"QUIT")));
        assert_eq!(lb.next_line(), None);
    }

    #[test]
    fn one_megabyte_line_is_one_too_long_and_never_buffered() {
        let mut lb = LineBuffer::new(MAX_COMMAND_LINE);
        let chunk = vec![b'A'; 4096];
        let mut seen = Vec::new();
        for _ in 0..256 {
            lb.push(&chunk);
            assert!(lb.buffered() < MAX_COMMAND_LINE);
            assert!(lb.buf.capacity() <= 2 * MAX_COMMAND_LINE);
            seen.extend(drain(&mut lb));
        }
        lb.push(b"\r\nNOOP\r\n");
        seen.extend(drain(&mut lb));
        assert_eq!(seen, vec![Line::TooLong, c(b"NOOP")]);

        let big = [vec![b'B'; 1 << 20], b"\nQUIT\n".to_vec()].concat();
        assert_eq!(
            whole(MAX_COMMAND_LINE, &big),
            vec![Line::TooLong, c(b"QUIT")]
        );
    }

    #[test]
    fn has_partial() {
        let mut lb = LineBuffer::new(MAX_COMMAND_LINE);
        assert!(!lb.has_partial());
        lb.push(b"ST");
        assert!(lb.has_partial());
        lb.push(b"AT\r\nNO");
        assert!(lb.has_partial());
        assert_eq!(lb.next_line(), Some(c(b"STAT")));
        assert!(lb.has_partial());
        lb.push(b"OP\r\n");
        assert!(!lb.has_partial());
        assert_eq!(lb.next_line(), Some(c(b"NOOP")));
        lb.push(b"\r");
        assert!(lb.has_partial());
    }

    #[test]
    fn tiny_limits() {
        // max 0: not even an empty line fits.
        assert_eq!(whole(0, b"\nA\n"), vec![Line::TooLong, Line::TooLong]);
        assert_eq!(
            whole(1, b"\n\r\nA\n"),
            vec![c(b""), Line::TooLong, Line::TooLong]
        );
        assert_eq!(
            whole(2, b"\r\nA\nAB\n"),
            vec![c(b""), c(b"A"), Line::TooLong]
        );
    }

    #[test]
    fn many_pipelined_lines_linear() {
        let input: Vec<u8> = b"NOOP\r\n".repeat(200_000);
        let mut lb = LineBuffer::new(MAX_COMMAND_LINE);
        lb.push(&input);
        let mut n = 0;
        while let Some(l) = lb.next_line() {
            assert_eq!(l, c(b"NOOP"));
            n += 1;
        }
        assert_eq!(n, 200_000);
        assert_eq!(lb.buffered(), 0);
        assert!(lb.buf.capacity() <= SHRINK_ABOVE);
    }

    fn input_strategy() -> impl Strategy<Value = Vec<u8>> {
        // Lines of assorted lengths around the limit, with CR, LF and NUL mixed in.
        let piece = prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(vec![0u8]),
            proptest::collection::vec(any::<u8>(), 0..40),
            (0usize..600).prop_map(|n| vec![b'a'; n]),
        ];
        proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn chunking_does_not_matter(input in input_strategy(), max in prop_oneof![Just(MAX_COMMAND_LINE), 0usize..20]) {
            let want = whole(max, &input);
            for size in 1..=512 {
                prop_assert_eq!(&chunked(max, &input, size), &want, "chunk size {}", size);
            }
            for l in &want {
                if let Line::Complete(b) = l {
                    prop_assert!(b.len() < max);
                    prop_assert!(!b.contains(&b'\n'));
                }
            }
        }
    }
}
