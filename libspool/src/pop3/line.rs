//! Splitting untrusted input into command lines, with a hard length limit.
//! OWNER: pop3 helper. Interface fixed by the skeleton; see the tests for the contract.

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
#[derive(Debug)]
pub struct LineBuffer {
    _todo: (),
}

impl LineBuffer {
    /// `max` counts the line terminator, as RFC 2449 does (255 for POP3).
    pub fn new(max: usize) -> LineBuffer {
        let _ = max;
        todo!()
    }
    /// Appends bytes just read from the client.
    pub fn push(&mut self, data: &[u8]) {
        let _ = data;
        todo!()
    }
    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        todo!()
    }
    /// True when part of a line has arrived (the line deadline is running).
    pub fn has_partial(&self) -> bool {
        todo!()
    }
}
