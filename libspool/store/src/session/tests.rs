//! Whole sessions against an in-memory mailbox, over scripted input in every chunk size.

#![forbid(unsafe_code)]

use super::*;
use crate::mailbox::CommitSummary;
use spool_wire::timeio::ScriptedInput;

/// An in-memory mailbox whose messages are already canonical.
struct FakeBox {
    msgs: Vec<(Vec<u8>, String)>,
    commits: Vec<Vec<bool>>,
    fail_commit: bool,
    /// Message index whose retrieve fails after `+OK`.
    break_during: Option<usize>,
    gone: Option<usize>,
}

impl FakeBox {
    fn new(n: usize) -> FakeBox {
        let msgs = (1..=n)
            .map(|i| {
                let body = format!("Subject: m{i}\r\n\r\n.dot line\r\nbody {i}\r\n").into_bytes();
                (body, format!("uid{i}"))
            })
            .collect();
        FakeBox {
            msgs,
            commits: vec![],
            fail_commit: false,
            break_during: None,
            gone: None,
        }
    }
}

impl Mailbox for FakeBox {
    fn count(&self) -> usize {
        self.msgs.len()
    }
    fn size(&self, i: usize) -> u64 {
        self.msgs[i].0.len() as u64
    }
    fn uidl(&self, i: usize) -> &str {
        &self.msgs[i].1
    }
    fn retrieve(
        &mut self,
        i: usize,
        body_lines: Option<u64>,
        sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError> {
        if self.gone == Some(i) {
            return Err(RetrieveError::BeforeStart(MailboxError::MessageGone));
        }
        sink.begin()
            .map_err(|e| RetrieveError::During(MailboxError::Io("write", e)))?;
        if self.break_during == Some(i) {
            return Err(RetrieveError::During(MailboxError::MessageGone));
        }
        let m = &self.msgs[i].0;
        let data: &[u8] = match body_lines {
            None => m,
            Some(0) => &m[..m.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4],
            Some(_) => m,
        };
        sink.write_all(data)
            .map_err(|e| RetrieveError::During(MailboxError::Io("write", e)))
    }
    fn commit(&mut self, deleted: &[bool], _r: &[bool]) -> Result<CommitSummary, MailboxError> {
        if self.fail_commit {
            return Err(MailboxError::LockTimeout("/x".into()));
        }
        self.commits.push(deleted.to_vec());
        Ok(CommitSummary::default())
    }
}

fn session(mbox: &mut FakeBox, script: &str, chunk: usize) -> (String, SessionReport) {
    let mut input = ScriptedInput::new(script.as_bytes(), chunk);
    let mut out = Vec::new();
    let report = run(mbox, &mut input, &mut out, &SessionConfig::default());
    (String::from_utf8(out).unwrap(), report)
}

#[test]
fn greeting_is_qmail_pop3d_ok() {
    let (out, r) = session(&mut FakeBox::new(0), "", 1);
    assert_eq!(out, "+OK \r\n");
    assert!(matches!(r.end, EndReason::ClientClosed));
}

#[test]
fn stat_list_uidl_and_sizes_agree_with_retr() {
    let mut b = FakeBox::new(3);
    let (out, _) = session(&mut b, "STAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nQUIT\r\n", 512);
    let size = b.msgs[0].0.len();
    assert!(out.contains(&format!("+OK 3 {}\r\n", size * 3)));
    assert!(out.contains(&format!(
        "+OK 3 messages ({} octets)\r\n1 {size}\r\n2 {size}\r\n3 {size}\r\n.\r\n",
        size * 3
    )));
    assert!(out.contains("+OK 2 uid2\r\n"));
    // Byte-stuffed line, terminator.
    assert!(out.contains(&format!(
        "+OK {size} octets\r\nSubject: m1\r\n\r\n..dot line\r\nbody 1\r\n.\r\n"
    )));
    assert!(out.ends_with("+OK popspool signing off (3 messages left)\r\n"));
    // Retrieved messages reach commit (Maildir marks them seen) but nothing is deleted.
    assert!(
        b.commits.iter().flatten().all(|d| !d),
        "nothing deleted: {:?}",
        b.commits
    );
}

#[test]
fn same_output_whatever_the_chunking() {
    let script =
        "capa\r\nStAt\r\nlist\r\nuidl\r\nretr 2\r\ntop 1 0\r\ndele 1\r\nlist 1\r\nrset\r\n\
                  bogus\r\nlist 0\r\nlist -1\r\nlist 99999999999999999999\r\nnoop\nquit\r\n";
    let (whole, _) = session(&mut FakeBox::new(3), script, 4096);
    for chunk in 1..=512 {
        let (got, _) = session(&mut FakeBox::new(3), script, chunk);
        assert_eq!(got, whole, "chunk size {chunk}");
    }
}

#[test]
fn message_numbers_never_wrap() {
    let mut b = FakeBox::new(2);
    let (out, _) = session(
        &mut b,
        "RETR 0\r\nRETR 3\r\nRETR 4294967297\r\nRETR -1\r\nRETR x\r\nDELE 1\r\nRETR 1\r\nQUIT\r\n",
        7,
    );
    let errs: Vec<&str> = out.lines().filter(|l| l.starts_with("-ERR")).collect();
    assert_eq!(errs.len(), 6, "{out}");
    assert!(
        !out.contains("Subject: m1"),
        "nothing of message 1 may be sent: {out}"
    );
    assert_eq!(b.commits, vec![vec![true, false]]);
}

#[test]
fn deleted_messages_are_invisible() {
    let mut b = FakeBox::new(3);
    let size = b.msgs[0].0.len();
    let (out, _) = session(
        &mut b,
        "DELE 2\r\nSTAT\r\nLIST\r\nUIDL\r\nLIST 2\r\nUIDL 2\r\nDELE 2\r\n",
        3,
    );
    assert!(out.contains(&format!("+OK 2 {}\r\n", size * 2)));
    assert!(out.contains(&format!("1 {size}\r\n3 {size}\r\n.\r\n")));
    assert!(out.contains("1 uid1\r\n3 uid3\r\n.\r\n"));
    assert_eq!(out.matches("-ERR message is deleted").count(), 3);
}

#[test]
fn no_quit_no_update() {
    let mut b = FakeBox::new(2);
    let (_, r) = session(&mut b, "DELE 1\r\nDELE 2\r\n", 1);
    assert!(b.commits.is_empty());
    assert_eq!(r.deleted, 0);
    assert!(matches!(r.end, EndReason::ClientClosed));
}

#[test]
fn timeout_means_no_update() {
    let mut b = FakeBox::new(2);
    let mut input = ScriptedInput::new(b"DELE 1\r\n", 100).then_timeout();
    let mut out = Vec::new();
    let r = run(&mut b, &mut input, &mut out, &SessionConfig::default());
    assert!(matches!(r.end, EndReason::IdleTimeout));
    assert!(b.commits.is_empty());
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("-ERR idle for too long, closing\r\n"));
}

#[test]
fn session_limit_ends_at_the_next_command_without_update() {
    let mut b = FakeBox::new(2);
    let cfg = SessionConfig {
        max_session: Some(Duration::ZERO),
        ..SessionConfig::default()
    };
    let mut input = ScriptedInput::new(b"DELE 1\r\nQUIT\r\n", 512);
    let mut out = Vec::new();
    let r = run(&mut b, &mut input, &mut out, &cfg);
    assert!(matches!(r.end, EndReason::SessionLimit), "{:?}", r.end);
    assert!(b.commits.is_empty());
    assert_eq!(r.deleted, 0);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("+OK \r\n-ERR {SESSION_LIMIT_TEXT}\r\n")
    );
}

#[test]
fn session_limit_ends_a_waiting_session() {
    let mut b = FakeBox::new(2);
    let cfg = SessionConfig {
        max_session: Some(Duration::ZERO),
        ..SessionConfig::default()
    };
    let mut input = ScriptedInput::new(b"", 512).then_timeout();
    let mut out = Vec::new();
    let r = run(&mut b, &mut input, &mut out, &cfg);
    assert!(matches!(r.end, EndReason::SessionLimit), "{:?}", r.end);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with(&format!("-ERR {SESSION_LIMIT_TEXT}\r\n")));
}

#[test]
fn no_session_limit_when_off() {
    let mut b = FakeBox::new(2);
    let cfg = SessionConfig {
        max_session: None,
        ..SessionConfig::default()
    };
    let mut input = ScriptedInput::new(b"DELE 1\r\nQUIT\r\n", 512);
    let mut out = Vec::new();
    let r = run(&mut b, &mut input, &mut out, &cfg);
    assert!(matches!(r.end, EndReason::Quit), "{:?}", r.end);
    assert_eq!(b.commits.len(), 1);
}

#[test]
fn quit_commits_and_reports_failure() {
    let mut b = FakeBox::new(2);
    let (out, r) = session(&mut b, "DELE 1\r\nQUIT\r\n", 64);
    assert_eq!(b.commits, vec![vec![true, false]]);
    assert_eq!(r.deleted, 1);
    assert!(out.ends_with("+OK popspool signing off (1 messages left)\r\n"));

    let mut b = FakeBox::new(2);
    b.fail_commit = true;
    let (out, r) = session(&mut b, "DELE 1\r\nQUIT\r\n", 64);
    assert!(out.ends_with("no messages were deleted\r\n"), "{out}");
    assert!(out.contains("-ERR [SYS/TEMP]"));
    assert_eq!(r.deleted, 0);
}

#[test]
fn rset_undeletes() {
    let mut b = FakeBox::new(2);
    session(&mut b, "DELE 1\r\nRSET\r\nQUIT\r\n", 64);
    assert!(b.commits.is_empty());
}

#[test]
fn too_many_bad_commands_disconnects() {
    let script = "x\r\n".repeat(spool_wire::limits::DEFAULT_MAX_BAD_COMMANDS as usize + 5);
    let (out, r) = session(&mut FakeBox::new(1), &script, 512);
    assert!(matches!(r.end, EndReason::TooManyBadCommands));
    assert_eq!(
        out.matches("-ERR").count(),
        spool_wire::limits::DEFAULT_MAX_BAD_COMMANDS as usize + 1
    );
}

#[test]
fn good_commands_reset_the_bad_count() {
    let script = "x\r\nNOOP\r\n".repeat(50) + "QUIT\r\n";
    let (_, r) = session(&mut FakeBox::new(1), &script, 512);
    assert!(matches!(r.end, EndReason::Quit));
}

#[test]
fn overlong_line_is_one_error_and_session_stays_in_step() {
    let script = format!("NOOP {}\r\nSTAT\r\nQUIT\r\n", "a".repeat(1 << 20));
    let (out, _) = session(&mut FakeBox::new(1), &script, 4096);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(lines[0], "+OK ");
    assert!(lines[1].starts_with("-ERR"), "{out}");
    assert!(lines[2].starts_with("+OK 1 "), "{out}");
}

#[test]
fn auth_commands_are_refused_after_login() {
    let (out, _) = session(&mut FakeBox::new(1), "USER x\r\nPASS y\r\nQUIT\r\n", 512);
    assert_eq!(out.matches("-ERR already authenticated").count(), 2);
}

#[test]
fn dispatch_follows_the_command_table() {
    for v in Verb::ALL {
        let (out, _) = session(&mut FakeBox::new(1), &format!("{}\r\n", v.example()), 512);
        let first = out.lines().nth(1).unwrap_or("");
        let refused = first == "-ERR already authenticated";
        assert_eq!(refused, !transaction(v).serves(), "{v:?}: {first}");
    }
}

/// The same answer as the AUTHORIZATION state's (pop-popup), from the parser's text.
#[test]
fn unknown_commands_are_answered_like_before_login() {
    let (out, _) = session(&mut FakeBox::new(1), "bogus\r\nXTND XMIT\r\n", 512);
    assert_eq!(
        out,
        "+OK \r\n-ERR unknown command\r\n-ERR unknown command\r\n"
    );
}

#[test]
fn vanished_message_is_a_clean_err() {
    let mut b = FakeBox::new(2);
    b.gone = Some(0);
    let (out, r) = session(&mut b, "RETR 1\r\nRETR 2\r\nQUIT\r\n", 512);
    assert!(out.contains("-ERR message was removed by another client\r\n"));
    assert!(matches!(r.end, EndReason::Quit));
}

#[test]
fn failure_mid_message_ends_without_update() {
    let mut b = FakeBox::new(2);
    b.break_during = Some(1);
    let (_, r) = session(&mut b, "DELE 1\r\nRETR 2\r\nQUIT\r\n", 512);
    assert!(matches!(r.end, EndReason::RetrieveFailed(_)));
    assert!(b.commits.is_empty());
}

#[test]
fn capa_advertises_policies() {
    let cfg = SessionConfig {
        expire: Some(Expire::Days(30)),
        login_delay: Some(900),
        ..SessionConfig::default()
    };
    let mut input = ScriptedInput::new(b"CAPA\r\n", 512);
    let mut out = Vec::new();
    run(&mut FakeBox::new(0), &mut input, &mut out, &cfg);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        "+OK \r\n+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n\
         EXPIRE 30\r\nLOGIN-DELAY 900\r\nIMPLEMENTATION popspool\r\n.\r\n"
    );
    for c in [
        "TOP",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "EXPIRE 30",
        "LOGIN-DELAY 900",
    ] {
        assert!(
            out.contains(&format!("\r\n{c}\r\n")),
            "{c} missing in {out}"
        );
    }
}

#[test]
fn last_tracks_highest_accessed() {
    let (out, _) = session(
        &mut FakeBox::new(3),
        "LAST\r\nRETR 2\r\nLAST\r\nRSET\r\nLAST\r\n",
        512,
    );
    let lasts: Vec<&str> = out
        .lines()
        .filter(|l| *l == "+OK 0" || *l == "+OK 2")
        .collect();
    assert_eq!(lasts, vec!["+OK 0", "+OK 2", "+OK 0"]);
}

/// Hides the wire fast path from a mailbox: it must then use `begin` and `Write`.
struct NoWire<'a>(&'a mut dyn RetrieveSink);

impl Write for NoWire<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl RetrieveSink for NoWire<'_> {
    fn begin(&mut self) -> io::Result<()> {
        self.0.begin()
    }
}

/// A mailbox served through the classic path only.
struct Classic(Box<dyn Mailbox>);

impl Mailbox for Classic {
    fn count(&self) -> usize {
        self.0.count()
    }
    fn size(&self, i: usize) -> u64 {
        self.0.size(i)
    }
    fn uidl(&self, i: usize) -> &str {
        self.0.uidl(i)
    }
    fn retrieve(
        &mut self,
        i: usize,
        body_lines: Option<u64>,
        sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError> {
        self.0.retrieve(i, body_lines, &mut NoWire(sink))
    }
    fn commit(&mut self, d: &[bool], r: &[bool]) -> Result<CommitSummary, MailboxError> {
        self.0.commit(d, r)
    }
}

fn mbox_session(mbox: &mut dyn Mailbox, script: &[u8], chunk: usize) -> (Vec<u8>, SessionReport) {
    let mut input = ScriptedInput::new(script, chunk);
    let mut out = Vec::new();
    let report = run(mbox, &mut input, &mut out, &SessionConfig::default());
    (out, report)
}

/// An mbox with small messages, dot lines, quoted `From ` lines and one message larger
/// than the session's output buffer.
fn test_mbox() -> Vec<u8> {
    let mut d = Vec::new();
    for i in 0..40 {
        d.extend_from_slice(
            format!("From a{i}\nStatus: RO\nSubject: m{i}\n\n.dot\n>From q\nbody {i}\n\n")
                .as_bytes(),
        );
    }
    d.extend_from_slice(b"From big\nSubject: big\n\n");
    for i in 0..40_000 {
        d.extend_from_slice(format!(".{i} a line of the large message\n").as_bytes());
    }
    d.extend_from_slice(b"\nFrom last\nSubject: unterminated");
    d
}

#[test]
fn wire_path_sessions_match_the_classic_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    std::fs::write(&path, test_mbox()).unwrap();
    let opts = crate::mailbox::OpenOptions::with_state_dir(dir.path().join("state"));
    let open = || crate::mbox::MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
    let mut script = b"STAT\r\nLIST\r\nUIDL\r\n".to_vec();
    for i in 1..=42 {
        script.extend_from_slice(format!("RETR {i}\r\nTOP {i} 1\r\nLIST {i}\r\n").as_bytes());
    }
    script.extend_from_slice(b"TOP 41 0\r\nRETR 43\r\nbogus\r\nQUIT\r\n");
    let (want, _) = mbox_session(&mut Classic(Box::new(open())), &script, 4096);
    assert!(want.len() > 2 * OUT_CHUNK);
    for chunk in [1, 7, 100, 4096] {
        let (got, r) = mbox_session(&mut open(), &script, chunk);
        assert!(got == want, "chunk {chunk}: outputs differ");
        assert!(matches!(r.end, EndReason::Quit));
        assert_eq!(r.retrieved, 42);
    }
}

#[test]
fn changed_mbox_message_is_a_clean_err_with_no_staged_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    let data = test_mbox();
    std::fs::write(&path, &data).unwrap();
    let opts = crate::mailbox::OpenOptions::with_state_dir(dir.path().join("state"));
    let mut m = crate::mbox::MboxMailbox::from_file_unlocked(&path, &opts).unwrap();
    // Same length, one header byte changed in message 2.
    let at = data
        .windows(13)
        .position(|w| w == b"Subject: m1\n\n")
        .unwrap();
    let mut changed = data.clone();
    changed[at] = b's';
    std::fs::write(&path, &changed).unwrap();
    let (out, r) = mbox_session(&mut m, b"RETR 1\r\nRETR 2\r\nNOOP\r\nQUIT\r\n", 4096);
    let out = String::from_utf8(out).unwrap();
    let second = out.split("\r\n.\r\n").nth(1).unwrap();
    assert_eq!(
        second,
        "-ERR message was removed by another client\r\n+OK\r\n+OK popspool signing off (42 messages left)\r\n"
    );
    assert!(matches!(r.end, EndReason::Quit));
}

/// A mailbox that stages a response, then fails its check without cancelling.
struct ForgetsToCancel;

impl Mailbox for ForgetsToCancel {
    fn count(&self) -> usize {
        1
    }
    fn size(&self, _i: usize) -> u64 {
        3
    }
    fn uidl(&self, _i: usize) -> &str {
        "u"
    }
    fn retrieve(
        &mut self,
        _i: usize,
        _n: Option<u64>,
        sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError> {
        let w = sink.wire().unwrap();
        w.start();
        w.buf().extend_from_slice(b"x\r\n");
        Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
    }
    fn commit(&mut self, _d: &[bool], _r: &[bool]) -> Result<CommitSummary, MailboxError> {
        Ok(CommitSummary::default())
    }
}

#[test]
fn a_failed_check_never_lets_a_staged_ok_out() {
    let (out, _) = mbox_session(&mut ForgetsToCancel, b"RETR 1\r\nQUIT\r\n", 4096);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "+OK \r\n-ERR message was removed by another client\r\n+OK popspool signing off (1 messages left)\r\n"
    );
}
