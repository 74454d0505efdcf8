//! Turning one command line into a typed command: the one parser every program uses.
//!
//! Lexical rules, chosen once here so that the pre-auth front end and the transaction server
//! can never disagree about what a line means:
//!
//! * Any C0 control byte except tab (NUL, CR, LF, ESC, ...) or DEL anywhere in the line, the
//!   password included, is [`CommandError::BadBytes`]: such bytes only ever come from broken or
//!   hostile clients and would otherwise reach logs and file names.
//! * The verb is case-insensitive. Arguments are separated by one or more spaces; leading and
//!   trailing spaces are ignored (RFC 1939 asks for single spaces, being lenient costs nothing).
//!   Tab is not a separator: outside a password it is a [`CommandError::Syntax`] error.
//! * `PASS` takes the whole rest of the line after the one space that follows the verb, as
//!   qmail-popup does: further spaces, tabs and 8-bit bytes are part of the password (RFC 1939
//!   allows spaces in it, and guessing which ones are "separators" would lock users out).
//! * Numbers are plain decimal digits (no sign, no spaces); leading zeros are allowed. A number
//!   that does not fit its field is [`CommandError::TooLarge`], never wrapped or truncated.

#![forbid(unsafe_code)]

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
    /// `digest` is the 32 hex digits, lower-cased (clients may send either case).
    Apop {
        name: Vec<u8>,
        digest: Vec<u8>,
    },
    /// `AUTH` alone (list mechanisms), or `AUTH mech [initial-response]`.
    /// The mechanism is upper-cased (SASL names are upper case; clients vary). An initial
    /// response of `=` (RFC 5034 §4: empty) is given as an empty vector.
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

impl Command {
    /// The command's verb, without its arguments.
    pub fn kind(&self) -> Verb {
        match self {
            Command::User(_) => Verb::User,
            Command::Pass(_) => Verb::Pass,
            Command::Apop { .. } => Verb::Apop,
            Command::Auth { .. } => Verb::Auth,
            Command::Stls => Verb::Stls,
            Command::Capa => Verb::Capa,
            Command::Quit => Verb::Quit,
            Command::Noop => Verb::Noop,
            Command::Stat => Verb::Stat,
            Command::List(_) => Verb::List,
            Command::Retr(_) => Verb::Retr,
            Command::Dele(_) => Verb::Dele,
            Command::Rset => Verb::Rset,
            Command::Top(..) => Verb::Top,
            Command::Uidl(_) => Verb::Uidl,
            Command::Last => Verb::Last,
        }
    }

    /// The verb, upper case, as on the wire (for logs and state-machine errors).
    pub fn verb(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// Every verb, without arguments: what a state's command table (`pop3::capa`) is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    User,
    Pass,
    Apop,
    Auth,
    Stls,
    Capa,
    Quit,
    Noop,
    Stat,
    List,
    Retr,
    Dele,
    Rset,
    Top,
    Uidl,
    Last,
}

impl Verb {
    /// Every verb, in the order CAPA lists the capabilities they bring.
    pub const ALL: [Verb; 16] = [
        Verb::User,
        Verb::Pass,
        Verb::Apop,
        Verb::Auth,
        Verb::Stls,
        Verb::Capa,
        Verb::Quit,
        Verb::Noop,
        Verb::Stat,
        Verb::List,
        Verb::Retr,
        Verb::Dele,
        Verb::Rset,
        Verb::Top,
        Verb::Uidl,
        Verb::Last,
    ];

    /// A well-formed command line with this verb (without CRLF), for the states' tests that
    /// check each verb against their command table.
    pub fn example(self) -> &'static str {
        match self {
            Verb::User => "USER bob",
            Verb::Pass => "PASS secret",
            Verb::Apop => "APOP bob c4c9334bac560ecc979e58001b3e22fb",
            Verb::Retr => "RETR 1",
            Verb::Dele => "DELE 1",
            Verb::Top => "TOP 1 0",
            Verb::Auth
            | Verb::Stls
            | Verb::Capa
            | Verb::Quit
            | Verb::Noop
            | Verb::Stat
            | Verb::List
            | Verb::Rset
            | Verb::Uidl
            | Verb::Last => self.as_str(),
        }
    }

    /// Upper case, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::User => "USER",
            Verb::Pass => "PASS",
            Verb::Apop => "APOP",
            Verb::Auth => "AUTH",
            Verb::Stls => "STLS",
            Verb::Capa => "CAPA",
            Verb::Quit => "QUIT",
            Verb::Noop => "NOOP",
            Verb::Stat => "STAT",
            Verb::List => "LIST",
            Verb::Retr => "RETR",
            Verb::Dele => "DELE",
            Verb::Rset => "RSET",
            Verb::Top => "TOP",
            Verb::Uidl => "UIDL",
            Verb::Last => "LAST",
        }
    }
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
        match self {
            CommandError::Unknown => "unknown command",
            CommandError::Empty => "empty command",
            CommandError::BadBytes => "control characters in command",
            CommandError::Syntax(text) => text,
            CommandError::Zero => "messages are counted from 1",
            CommandError::TooLarge => "no such message",
        }
    }
}

// The Syntax texts, named so tests and callers can match on them.
/// Extra arguments after a complete command.
pub const TOO_MANY_ARGS: &str = "too many arguments";
/// Tab where a space was expected.
pub const TAB_SEPARATOR: &str = "arguments are separated by spaces";
/// A message number or line count that is not plain decimal digits.
pub const NOT_A_NUMBER: &str = "not a number";
pub const USER_SYNTAX: &str = "usage: USER name";
pub const PASS_SYNTAX: &str = "usage: PASS password";
pub const APOP_SYNTAX: &str = "usage: APOP name digest";
pub const APOP_DIGEST: &str = "digest must be 32 hex digits";
pub const AUTH_SYNTAX: &str = "usage: AUTH [mechanism [initial-response]]";
pub const MSG_MISSING: &str = "message number required";
pub const TOP_SYNTAX: &str = "usage: TOP msg lines";

/// Parses one line (without CRLF). Verbs are case-insensitive; arguments are separated by
/// single or multiple spaces.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    if line.is_empty() {
        return Err(CommandError::Empty);
    }
    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(CommandError::BadBytes);
    }
    let start = line
        .iter()
        .position(|&b| b != b' ')
        .ok_or(CommandError::Empty)?;
    let line = &line[start..];
    let verb_end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let (verb, rest) = line.split_at(verb_end);

    // PASS is the one verb whose argument is not split into words.
    if verb.eq_ignore_ascii_case(b"PASS") {
        return match rest.split_first() {
            Some((b' ', password)) if !password.is_empty() => Ok(Command::Pass(password.to_vec())),
            _ => Err(CommandError::Syntax(PASS_SYNTAX)),
        };
    }

    let kind = shape(verb)?;
    if line.contains(&b'\t') {
        return Err(CommandError::Syntax(TAB_SEPARATOR));
    }
    let mut args = rest.split(|&b| b == b' ').filter(|a| !a.is_empty());
    let a1 = args.next();
    let a2 = args.next();
    let a3 = args.next();

    match kind {
        Shape::User => match (a1, a2) {
            (Some(name), None) => Ok(Command::User(name.to_vec())),
            _ => Err(CommandError::Syntax(USER_SYNTAX)),
        },
        Shape::Apop => match (a1, a2, a3) {
            (Some(name), Some(digest), None) => {
                if digest.len() != 32 || !digest.iter().all(u8::is_ascii_hexdigit) {
                    return Err(CommandError::Syntax(APOP_DIGEST));
                }
                Ok(Command::Apop {
                    name: name.to_vec(),
                    digest: digest.to_ascii_lowercase(),
                })
            }
            _ => Err(CommandError::Syntax(APOP_SYNTAX)),
        },
        Shape::Auth => {
            if a3.is_some() {
                return Err(CommandError::Syntax(AUTH_SYNTAX));
            }
            let initial = a2.map(|r| if r == b"=" { Vec::new() } else { r.to_vec() });
            Ok(Command::Auth {
                mechanism: a1.map(<[u8]>::to_ascii_uppercase),
                initial,
            })
        }
        Shape::Top => match (a1, a2, a3) {
            (Some(msg), Some(lines), None) => {
                let msg = msg_num(msg)?;
                let lines = decimal(lines)?.ok_or(CommandError::TooLarge)?;
                Ok(Command::Top(msg, lines))
            }
            _ => Err(CommandError::Syntax(TOP_SYNTAX)),
        },
        Shape::List | Shape::Uidl => {
            if a2.is_some() {
                return Err(CommandError::Syntax(TOO_MANY_ARGS));
            }
            let n = a1.map(msg_num).transpose()?;
            Ok(if kind == Shape::List {
                Command::List(n)
            } else {
                Command::Uidl(n)
            })
        }
        Shape::Retr | Shape::Dele => match (a1, a2) {
            (None, _) => Err(CommandError::Syntax(MSG_MISSING)),
            (Some(_), Some(_)) => Err(CommandError::Syntax(TOO_MANY_ARGS)),
            (Some(n), None) => {
                let n = msg_num(n)?;
                Ok(if kind == Shape::Retr {
                    Command::Retr(n)
                } else {
                    Command::Dele(n)
                })
            }
        },
        Shape::Bare(cmd) => {
            if a1.is_some() {
                return Err(CommandError::Syntax(TOO_MANY_ARGS));
            }
            Ok(cmd)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    User,
    Apop,
    Auth,
    Top,
    List,
    Uidl,
    Retr,
    Dele,
    /// A command that takes no argument.
    Bare(Command),
}

fn shape(verb: &[u8]) -> Result<Shape, CommandError> {
    if verb.len() > 4 {
        return Err(CommandError::Unknown);
    }
    let mut up = [0u8; 4];
    up[..verb.len()].copy_from_slice(verb);
    up.make_ascii_uppercase();
    Ok(match &up[..verb.len()] {
        b"USER" => Shape::User,
        b"APOP" => Shape::Apop,
        b"AUTH" => Shape::Auth,
        b"TOP" => Shape::Top,
        b"LIST" => Shape::List,
        b"UIDL" => Shape::Uidl,
        b"RETR" => Shape::Retr,
        b"DELE" => Shape::Dele,
        b"STLS" => Shape::Bare(Command::Stls),
        b"CAPA" => Shape::Bare(Command::Capa),
        b"QUIT" => Shape::Bare(Command::Quit),
        b"NOOP" => Shape::Bare(Command::Noop),
        b"STAT" => Shape::Bare(Command::Stat),
        b"RSET" => Shape::Bare(Command::Rset),
        b"LAST" => Shape::Bare(Command::Last),
        _ => return Err(CommandError::Unknown),
    })
}

/// A plain decimal number: `Ok(None)` when it does not fit in u64, `Syntax` when it is not
/// digits only. Overflow is checked, so any number of digits is safe.
fn decimal(arg: &[u8]) -> Result<Option<u64>, CommandError> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::Syntax(NOT_A_NUMBER));
    }
    Ok(arg.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    }))
}

fn msg_num(arg: &[u8]) -> Result<MsgNum, CommandError> {
    match decimal(arg)? {
        Some(0) => Err(CommandError::Zero),
        Some(n) => u32::try_from(n)
            .map(MsgNum)
            .map_err(|_| CommandError::TooLarge),
        None => Err(CommandError::TooLarge),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use CommandError as E;

    fn m(n: u32) -> MsgNum {
        MsgNum(n)
    }

    #[test]
    fn commands() {
        let ok: Vec<(&[u8], Command)> = vec![
            (b"USER bob", Command::User(b"bob".to_vec())),
            (b"user bob", Command::User(b"bob".to_vec())),
            (b"UsEr  bob  ", Command::User(b"bob".to_vec())),
            (b"  USER bob", Command::User(b"bob".to_vec())),
            (b"USER b\xc3\xa9b", Command::User(b"b\xc3\xa9b".to_vec())),
            (b"PASS secret", Command::Pass(b"secret".to_vec())),
            (b"pass secret", Command::Pass(b"secret".to_vec())),
            (
                b"PASS  two spaces ",
                Command::Pass(b" two spaces ".to_vec()),
            ),
            (b"PASS a\tb\xff", Command::Pass(b"a\tb\xff".to_vec())),
            (b"PASS  ", Command::Pass(b" ".to_vec())),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                Command::Apop {
                    name: b"mrose".to_vec(),
                    digest: b"c4c9334bac560ecc979e58001b3e22fb".to_vec(),
                },
            ),
            (
                b"apop mrose C4C9334BAC560ECC979E58001B3E22FB",
                Command::Apop {
                    name: b"mrose".to_vec(),
                    digest: b"c4c9334bac560ecc979e58001b3e22fb".to_vec(),
                },
            ),
            (
                b"AUTH",
                Command::Auth {
                    mechanism: None,
                    initial: None,
                },
            ),
            (
                b"auth plain",
                Command::Auth {
                    mechanism: Some(b"PLAIN".to_vec()),
                    initial: None,
                },
            ),
            (
                b"AUTH PLAIN AGJvYgBzZWNyZXQ=",
                Command::Auth {
                    mechanism: Some(b"PLAIN".to_vec()),
                    initial: Some(b"AGJvYgBzZWNyZXQ=".to_vec()),
                },
            ),
            (
                b"AUTH PLAIN =",
                Command::Auth {
                    mechanism: Some(b"PLAIN".to_vec()),
                    initial: Some(Vec::new()),
                },
            ),
            (b"STLS", Command::Stls),
            (b"CAPA", Command::Capa),
            (b"QUIT", Command::Quit),
            (b"quit ", Command::Quit),
            (b"NOOP", Command::Noop),
            (b"STAT", Command::Stat),
            (b"RSET", Command::Rset),
            (b"LAST", Command::Last),
            (b"LIST", Command::List(None)),
            (b"LIST 1", Command::List(Some(m(1)))),
            (b"list   0007", Command::List(Some(m(7)))),
            (b"UIDL", Command::Uidl(None)),
            (b"UIDL 4294967295", Command::Uidl(Some(m(u32::MAX)))),
            (b"RETR 1", Command::Retr(m(1))),
            (b"DELE 2", Command::Dele(m(2))),
            (b"TOP 1 0", Command::Top(m(1), 0)),
            (b"top 3 10", Command::Top(m(3), 10)),
            (b"TOP 3 18446744073709551615", Command::Top(m(3), u64::MAX)),
        ];
        for (line, want) in ok {
            let got = parse(line);
            assert_eq!(got, Ok(want), "{:?}", String::from_utf8_lossy(line));
            let cmd = got.unwrap();
            let verb = line
                .trim_ascii_start()
                .split(|&b| b == b' ')
                .next()
                .unwrap();
            assert!(verb.eq_ignore_ascii_case(cmd.verb().as_bytes()));
        }
    }

    #[test]
    fn errors() {
        let bad: Vec<(&[u8], CommandError)> = vec![
            (b"", E::Empty),
            (b"   ", E::Empty),
            (b"FOO", E::Unknown),
            (b"STATS", E::Unknown),
            (b"XTND XMIT", E::Unknown),
            (b"\xff", E::Unknown),
            (b"ST\0AT", E::BadBytes),
            (b"STAT\r", E::BadBytes),
            (b"PASS se\rcret", E::BadBytes),
            (b"PASS se\0cret", E::BadBytes),
            (b"PASS \x1b[0m", E::BadBytes),
            (b"USER a\x7f", E::BadBytes),
            (b"STAT\t", E::Syntax(TAB_SEPARATOR)),
            (b"USER\tbob", E::Syntax(TAB_SEPARATOR)),
            (b"USER bob\tx", E::Syntax(TAB_SEPARATOR)),
            (b"PASS\tsecret", E::Syntax(PASS_SYNTAX)),
            (b"PASS", E::Syntax(PASS_SYNTAX)),
            (b"PASS ", E::Syntax(PASS_SYNTAX)),
            (b"USER", E::Syntax(USER_SYNTAX)),
            (b"USER a b", E::Syntax(USER_SYNTAX)),
            (b"APOP bob", E::Syntax(APOP_SYNTAX)),
            (
                b"APOP bob c4c9334bac560ecc979e58001b3e22fb x",
                E::Syntax(APOP_SYNTAX),
            ),
            (
                b"APOP bob c4c9334bac560ecc979e58001b3e22f",
                E::Syntax(APOP_DIGEST),
            ),
            (
                b"APOP bob c4c9334bac560ecc979e58001b3e22fbb",
                E::Syntax(APOP_DIGEST),
            ),
            (
                b"APOP bob g4c9334bac560ecc979e58001b3e22fb",
                E::Syntax(APOP_DIGEST),
            ),
            (b"AUTH PLAIN a b", E::Syntax(AUTH_SYNTAX)),
            (b"STAT 1", E::Syntax(TOO_MANY_ARGS)),
            (b"RSET x", E::Syntax(TOO_MANY_ARGS)),
            (b"NOOP x", E::Syntax(TOO_MANY_ARGS)),
            (b"QUIT x", E::Syntax(TOO_MANY_ARGS)),
            (b"CAPA x", E::Syntax(TOO_MANY_ARGS)),
            (b"LAST x", E::Syntax(TOO_MANY_ARGS)),
            (b"STLS x", E::Syntax(TOO_MANY_ARGS)),
            (b"LIST 1 2", E::Syntax(TOO_MANY_ARGS)),
            (b"UIDL 1 2", E::Syntax(TOO_MANY_ARGS)),
            (b"RETR", E::Syntax(MSG_MISSING)),
            (b"DELE", E::Syntax(MSG_MISSING)),
            (b"RETR 1 2", E::Syntax(TOO_MANY_ARGS)),
            (b"RETR 0", E::Zero),
            (b"DELE 000", E::Zero),
            (b"LIST 0", E::Zero),
            (b"TOP 0 1", E::Zero),
            (b"RETR -1", E::Syntax(NOT_A_NUMBER)),
            (b"RETR +1", E::Syntax(NOT_A_NUMBER)),
            (b"RETR abc", E::Syntax(NOT_A_NUMBER)),
            (b"RETR 1x", E::Syntax(NOT_A_NUMBER)),
            (b"RETR 0x10", E::Syntax(NOT_A_NUMBER)),
            (b"RETR 1.0", E::Syntax(NOT_A_NUMBER)),
            (b"RETR \xd9\xa1", E::Syntax(NOT_A_NUMBER)),
            (b"RETR 4294967296", E::TooLarge),
            (b"UIDL 18446744073709551616", E::TooLarge),
            (b"DELE 123456789012345678901234567890", E::TooLarge),
            (
                b"RETR 123456789012345678901234567890x",
                E::Syntax(NOT_A_NUMBER),
            ),
            (b"TOP 4294967297 1", E::TooLarge),
            (b"TOP 1 18446744073709551616", E::TooLarge),
            (b"TOP 1 -1", E::Syntax(NOT_A_NUMBER)),
            (b"TOP 1", E::Syntax(TOP_SYNTAX)),
            (b"TOP", E::Syntax(TOP_SYNTAX)),
            (b"TOP 1 2 3", E::Syntax(TOP_SYNTAX)),
        ];
        for (line, want) in bad {
            assert_eq!(
                parse(line),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn examples_parse_to_their_verb() {
        for v in Verb::ALL {
            assert_eq!(parse(v.example().as_bytes()).map(|c| c.kind()), Ok(v));
        }
    }

    #[test]
    fn texts() {
        assert_eq!(E::Zero.text(), "messages are counted from 1");
        assert_eq!(E::TooLarge.text(), "no such message");
        assert_eq!(E::Unknown.text(), "unknown command");
        assert_eq!(E::Syntax(USER_SYNTAX).text(), USER_SYNTAX);
        for e in [
            E::Unknown,
            E::Empty,
            E::BadBytes,
            E::Zero,
            E::TooLarge,
            E::Syntax(TOP_SYNTAX),
        ] {
            let t = e.text();
            assert!(!t.is_empty() && t.len() < 100 && t.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn never_panics_on_verbs(
            verb in prop_oneof![Just("USER"), Just("PASS"), Just("APOP"), Just("AUTH"), Just("TOP"),
                                Just("LIST"), Just("UIDL"), Just("RETR"), Just("DELE"), Just("STAT")],
            rest in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'0'), Just(b'9'), any::<u8>()], 0..80),
        ) {
            let line = [verb.as_bytes(), b" ", &rest].concat();
            if let Ok(cmd) = parse(&line) {
                prop_assert_eq!(cmd.verb(), verb);
            }
        }

        #[test]
        fn msg_numbers_round_trip(n in 1u32..=u32::MAX, zeros in 0usize..3) {
            let line = format!("RETR {}{}", "0".repeat(zeros), n);
            prop_assert_eq!(parse(line.as_bytes()), Ok(Command::Retr(MsgNum(n))));
            let line = format!("TOP {n} {n}");
            prop_assert_eq!(parse(line.as_bytes()), Ok(Command::Top(MsgNum(n), u64::from(n))));
        }

        #[test]
        fn big_numbers_are_too_large(n in (u64::from(u32::MAX) + 1)..=u64::MAX, extra in "[0-9]{0,30}") {
            let line = format!("DELE {n}{extra}");
            prop_assert_eq!(parse(line.as_bytes()), Err(E::TooLarge));
            let line = format!("LIST {n}");
            prop_assert_eq!(parse(line.as_bytes()), Err(E::TooLarge));
        }
    }
}
