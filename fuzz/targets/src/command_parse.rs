//! POP3 command lines: `parse` never panics, and whatever it accepts starts with the verb of
//! the command it returns (case-insensitively, after any leading spaces), followed by a space
//! or the end; message numbers are at least 1, passwords non-empty, APOP digests 32 octets.

use spool_wire::pop3::command::{parse, Command};

pub fn run(line: &[u8]) {
    let Ok(cmd) = parse(line) else { return };
    let start = line
        .iter()
        .position(|&b| b != b' ')
        .expect("accepted a blank line");
    let verb = cmd.verb().as_bytes();
    let written = line[start..]
        .get(..verb.len())
        .expect("accepted a line shorter than its verb");
    assert!(written.eq_ignore_ascii_case(verb));
    assert!(matches!(
        line[start + verb.len()..].first(),
        None | Some(b' ')
    ));
    match cmd {
        Command::Retr(n) | Command::Dele(n) | Command::Top(n, _) => assert!(n.0 >= 1),
        Command::List(Some(n)) | Command::Uidl(Some(n)) => assert!(n.0 >= 1),
        Command::Pass(p) => assert!(!p.is_empty()),
        Command::Apop { digest, .. } => assert_eq!(digest.len(), 32),
        _ => {}
    }
}
