//! Turning one command line into a typed command: the one parser every program uses.
//! OWNER: pop3 helper. Interface fixed by the skeleton.

/// A message number as the client wrote it: 1-based, already checked to be a decimal number
/// without sign that fits in u32 and is not 0. Range and deletion are checked by the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgNum(pub u32);

/// Every command of RFC 1939, 2449, 2595 and 5034, in any state. Which are legal where is the
/// state machine's business (the popup or the session), not the parser's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    // AUTHORIZATION
    User(Vec<u8>),
    /// The rest of the line after `PASS `, spaces included (RFC 1939 allows them).
    Pass(Vec<u8>),
    Apop {
        name: Vec<u8>,
        digest: Vec<u8>,
    },
    /// `AUTH` alone (list mechanisms), or `AUTH mech [initial-response]`.
    Auth {
        mechanism: Option<Vec<u8>>,
        initial: Option<Vec<u8>>,
    },
    Stls,
    // any state
    Capa,
    Quit,
    Noop,
    // TRANSACTION
    Stat,
    List(Option<MsgNum>),
    Retr(MsgNum),
    Dele(MsgNum),
    Rset,
    Top(MsgNum, u64),
    Uidl(Option<MsgNum>),
    Last,
}

/// Why a line is not a command. Each maps to one `-ERR` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Not a command we know (the verb is echoed back, truncated and sanitised, by the caller).
    Unknown,
    /// Empty line.
    Empty,
    /// Bytes that never belong in a command line (NUL, a bare CR, other controls but tab).
    BadBytes,
    /// Wrong number of arguments or a malformed one.
    Syntax(&'static str),
    /// A message number of 0 ("messages are counted from 1").
    Zero,
    /// A number too large for its field (never wraps onto message 1).
    TooLarge,
}

impl CommandError {
    /// The `-ERR` text for this error.
    pub fn text(&self) -> &'static str {
        todo!()
    }
}

/// Parses one line (without CRLF). Verbs are case-insensitive; arguments are separated by
/// single or multiple spaces.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let _ = line;
    todo!()
}
