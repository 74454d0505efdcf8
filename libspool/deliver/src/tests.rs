//! Unit tests of the delivery module: normalisation, quoting, the append protocol, and a
//! property test that whatever is delivered reads back through the real mbox and Maildir
//! readers as exactly the input's canonical form.

#![forbid(unsafe_code)]

use super::mbox::{append, Common};
use super::spool::{needs_quote, spool, InputRules, Spooled};
use super::*;
use proptest::prelude::*;
use spool_store::canon::{self, CanonOptions};
use spool_store::mailbox::{Mailbox, OpenOptions, RetrieveSink};
use spool_store::mbox::MboxMailbox;
use spool_wire::log::LogTarget;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

fn sp(input: &[u8]) -> Result<Spooled, DeliverError> {
    sp_rules(input, InputRules::default())
}

fn sp_rules(input: &[u8], rules: InputRules) -> Result<Spooled, DeliverError> {
    spool(&mut &input[..], Path::new("/tmp"), rules, &|| false)
}

fn stored(s: &Spooled) -> Vec<u8> {
    let mut v = vec![0u8; s.len as usize];
    s.file().read_exact_at(&mut v, 0).unwrap();
    v
}

use std::os::unix::fs::FileExt;

/// Feeds `input` in pieces of `k` bytes, to cross every chunk boundary.
struct Dribble<'a>(&'a [u8], usize);
impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn normalisation_table() {
    // (input, stored, from_lines, ends_with_newline)
    let table: &[(&[u8], &[u8], u64, bool)] = &[
        (b"A: b\n\nbody\n", b"A: b\n\nbody\n", 0, true),
        (b"A: b\r\n\r\nbody\r\n", b"A: b\n\nbody\n", 0, true),
        (b"A: b\r\n\r\nx\r\r\n", b"A: b\n\nx\r\r\n", 0, true),
        (b"A: b\r\n\r\nx\ry\r", b"A: b\n\nx\ry\r", 0, false),
        (
            b"A: b\n\nFrom me\n>From you\nno From\n",
            b"A: b\n\nFrom me\n>From you\nno From\n",
            2,
            true,
        ),
        (b"A: b\n\n>>>>From x", b"A: b\n\n>>>>From x", 1, false),
        (b"A: b\n\nFrom", b"A: b\n\nFrom", 0, false),
        (
            b"From sender@x Mon Jan  1 00:00:00 2024\nA: b\n\nhi\n",
            b"A: b\n\nhi\n",
            0,
            true,
        ),
        (b"From sender@x\r\nA: b\r\n", b"A: b\n", 0, true),
        (b"Subject: no newline", b"Subject: no newline", 0, false),
        (b"X-Obs : old syntax\n", b"X-Obs : old syntax\n", 0, true),
        (b"A: \x00nul\n", b"A: \x00nul\n", 0, true),
    ];
    for (input, want, froms, nl) in table {
        for k in [1, 2, 3, 7, 1 << 20] {
            let s = spool(
                &mut Dribble(input, k),
                Path::new("/tmp"),
                InputRules::default(),
                &|| false,
            )
            .unwrap_or_else(|e| panic!("{input:?} by {k}: {e}"));
            assert_eq!(
                stored(&s),
                *want,
                "{:?} by {k}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(s.from_lines, *froms, "{input:?}");
            assert_eq!(s.ends_with_newline, *nl, "{input:?}");
        }
    }
}

#[test]
fn bad_input_table() {
    let long = InputRules {
        max_line_length: Some(10),
        reject_nul: false,
    };
    let nul = InputRules {
        max_line_length: None,
        reject_nul: true,
    };
    let table: &[(&[u8], InputRules, i32)] = &[
        (b"", InputRules::default(), EX_DATAERR),
        (
            b"From x Mon Jan  1 00:00:00 2024\n",
            InputRules::default(),
            EX_DATAERR,
        ),
        (b"\nbody only\n", InputRules::default(), EX_DATAERR),
        (b"\r\nbody only\r\n", InputRules::default(), EX_DATAERR),
        (b"just text\n", InputRules::default(), EX_DATAERR),
        (b": no name\n", InputRules::default(), EX_DATAERR),
        (b"Subj", InputRules::default(), EX_DATAERR),
        (b">From x\nA: b\n", InputRules::default(), EX_DATAERR),
        (b"From a\nFrom b\nA: b\n", InputRules::default(), EX_DATAERR),
        (b"A: b\n\n0123456789x\n", long, EX_DATAERR),
        (b"A: \x00\n", nul, EX_DATAERR),
    ];
    for (input, rules, code) in table {
        let e = sp_rules(input, *rules).unwrap_err();
        assert_eq!(e.exit_code(false), *code, "{input:?}: {e}");
        assert_eq!(e.exit_code(true), QMAIL_PERMANENT, "{input:?}");
    }
    // Exactly at the limit is fine.
    sp_rules(b"A: b\n\n0123456789\n", long).unwrap();
}

#[test]
fn return_path_and_envelope_senders() {
    let opts = DeliverOptions::default();
    let s = sp(b"Return-Path: <bounce@example.org>\nA: b\n\nx\n").unwrap();
    assert_eq!(envelope_sender(&opts, &s), "bounce@example.org");
    let s = sp(b"return-PATH:   <>\nA: b\n").unwrap();
    assert_eq!(envelope_sender(&opts, &s), NO_SENDER);
    let s = sp(b"A: b\nReturn-Path: <late@x>\n\nReturn-Path: <body@x>\n").unwrap();
    assert_eq!(envelope_sender(&opts, &s), "late@x");
    let s = sp(b"From env@x Mon Jan  1 00:00:00 2024\nReturn-Path: <rp@x>\n").unwrap();
    assert_eq!(envelope_sender(&opts, &s), "env@x");
    let mut o = opts.clone();
    o.env_sender = Some("qmail@x".into());
    assert_eq!(envelope_sender(&o, &s), "qmail@x");
    o.sender = Some(String::new());
    assert_eq!(envelope_sender(&o, &s), NO_SENDER);
    o.sender = Some("a b\tc\n@x".into());
    assert_eq!(envelope_sender(&o, &s), "a_b_c_@x");
    let s = sp(b"A: b\n").unwrap();
    assert_eq!(envelope_sender(&opts, &s), NO_SENDER);
    let long = format!("Return-Path: <{}@x>\n", "a".repeat(5000));
    let s = sp(long.as_bytes()).unwrap();
    let cut = envelope_sender(&opts, &s);
    assert!(
        cut.len() <= spool::MAX_SENDER_LEN && cut.len() > 400,
        "{}",
        cut.len()
    );
    assert!(cut.bytes().all(|b| b == b'a'));
}

#[test]
fn quote_matcher() {
    for (line, q) in [
        (&b"From "[..], true),
        (b">From x", true),
        (b">>>>>From ", true),
        (b"From", false),
        (b" From ", false),
        (b">>Frm ", false),
        (b"from ", false),
        (b"", false),
    ] {
        assert_eq!(needs_quote(line), q, "{line:?}");
    }
}

#[test]
fn exit_codes_table() {
    let p = PathBuf::from("/x");
    let e = || io::Error::other("x");
    let table: Vec<(DeliverError, i32, i32)> = vec![
        (DeliverError::Usage("x".into()), EX_USAGE, QMAIL_TEMPORARY),
        (DeliverError::EmptyMessage, EX_DATAERR, QMAIL_PERMANENT),
        (DeliverError::NoUser("x".into()), EX_NOUSER, QMAIL_PERMANENT),
        (
            DeliverError::NotAMailbox(p.clone()),
            EX_CANTCREAT,
            QMAIL_PERMANENT,
        ),
        (
            DeliverError::NotPermitted(p.clone(), "x".into()),
            EX_NOPERM,
            QMAIL_PERMANENT,
        ),
        (
            DeliverError::CannotCreate(p.clone(), e()),
            EX_TEMPFAIL,
            QMAIL_TEMPORARY,
        ),
        (
            DeliverError::LockTimeout(p.clone()),
            EX_TEMPFAIL,
            QMAIL_TEMPORARY,
        ),
        (
            DeliverError::OverQuota {
                size: 1,
                add: 1,
                limit: 1,
            },
            EX_TEMPFAIL,
            QMAIL_TEMPORARY,
        ),
        (DeliverError::Interrupted, EX_TEMPFAIL, QMAIL_TEMPORARY),
        (DeliverError::Io("x", e()), EX_TEMPFAIL, QMAIL_TEMPORARY),
    ];
    for (err, sys, q) in table {
        assert_eq!(err.exit_code(false), sys, "{err}");
        assert_eq!(err.exit_code(true), q, "{err}");
    }
}

#[test]
fn report_prefers_temporary_failures() {
    let ok = || {
        Ok(Delivered {
            path: "/a".into(),
            bytes: 1,
            warnings: vec![],
        })
    };
    let r = |results| Report {
        sender: "s".into(),
        size: 1,
        results,
    };
    let u = |n: &str| Target::User(n.into());
    assert_eq!(r(vec![(u("a"), ok())]).exit_code(false), EX_OK);
    assert!(r(vec![(u("a"), ok())]).reason_line().is_none());
    let rep = r(vec![
        (u("a"), Err(DeliverError::NoUser("a".into()))),
        (u("b"), ok()),
        (u("c"), Err(DeliverError::LockTimeout("/c".into()))),
    ]);
    assert_eq!(rep.exit_code(false), EX_TEMPFAIL);
    assert_eq!(rep.exit_code(true), QMAIL_TEMPORARY);
    let line = rep.reason_line().unwrap();
    assert!(line.contains("a: no such user") && line.contains("c: mailbox /c is locked"));
    assert!(!line.contains('\n'));
    let rep = r(vec![(u("a\nb"), Err(DeliverError::NoUser("a\nb".into())))]);
    assert_eq!(rep.exit_code(false), EX_NOUSER);
    assert!(!rep.reason_line().unwrap().contains('\n'));
}

fn common() -> Common {
    Common {
        helper: None,
        lock_wait: Duration::from_secs(5),
        max_size: None,
        me: Identity::current(),
    }
}

fn opts_for(dir: &Path) -> DeliverOptions {
    DeliverOptions {
        tmp_dir: dir.to_path_buf(),
        state_dir: Some(dir.join("state")),
        sender: Some("s@x".into()),
        ..DeliverOptions::default()
    }
}

fn deliver_to(target: &Target, opts: &DeliverOptions, input: &[u8]) -> Report {
    let log = Logger::new("test", LogTarget::None);
    run(std::slice::from_ref(target), opts, &mut &input[..], &log).unwrap()
}

struct Sink(Vec<u8>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl RetrieveSink for Sink {
    fn begin(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What RETR must send for `input`: its canonical form, nothing hidden or unquoted, minus a
/// leading envelope line.
fn expected(input: &[u8]) -> Vec<u8> {
    let body = if input.starts_with(b"From ") {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => &input[i + 1..],
            None => &input[input.len()..],
        }
    } else {
        input
    };
    let mut out = Vec::new();
    canon::copy(
        &mut &body[..],
        body.len() as u64,
        CanonOptions::PLAIN,
        None,
        &mut out,
    )
    .unwrap();
    out
}

fn read_back(spec: &MailboxSpec, state: &Path) -> Vec<(Vec<u8>, u64, String)> {
    let opts = OpenOptions::with_state_dir(state.to_path_buf());
    let mut mb: Box<dyn Mailbox> = match spec {
        MailboxSpec::Mbox(p) => Box::new(MboxMailbox::from_file_unlocked(p, &opts).unwrap()),
        MailboxSpec::Maildir(_) => spool_store::open(spec, &opts).unwrap(),
    };
    (0..mb.count())
        .map(|i| {
            let mut s = Sink(Vec::new());
            mb.retrieve(i, None, &mut s).unwrap();
            (s.0, mb.size(i), mb.uidl(i).to_string())
        })
        .collect()
}

#[test]
fn mbox_append_separates_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("box");
    let opts = opts_for(dir.path());
    let t = Target::Mailbox(MailboxSpec::Mbox(path.clone()));
    let msgs: [&[u8]; 4] = [
        b"Subject: one\n\nFrom the start\n>From quoted\n.\n",
        b"Subject: two\r\n\r\nno final newline",
        b"Subject: three\n\n\n\n",
        b"From env@x Mon Jan  1 00:00:00 2024\nSubject: four\n\nbody\n",
    ];
    for m in msgs {
        let r = deliver_to(&t, &opts, m);
        assert_eq!(r.exit_code(false), 0, "{:?}", r.reason_line());
    }
    let got = read_back(&MailboxSpec::Mbox(path.clone()), dir.path());
    assert_eq!(got.len(), msgs.len());
    for (m, (retr, size, _)) in msgs.iter().zip(&got) {
        assert_eq!(
            String::from_utf8_lossy(retr),
            String::from_utf8_lossy(&expected(m))
        );
        assert_eq!(*size, retr.len() as u64);
    }
    let text = fs::read(&path).unwrap();
    assert!(text.starts_with(b"From s@x "));
    assert!(text.ends_with(b"body\n\n"));
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, DEFAULT_MODE);
}

#[test]
fn truncated_previous_message_stays_separate() {
    for tail in [
        &b"no newline"[..],
        b"one newline\n",
        b"crlf\r\n",
        b"done\n\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let mut first = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: old\n\n".to_vec();
        first.extend_from_slice(tail);
        fs::write(&path, &first).unwrap();
        let before = read_back(&MailboxSpec::Mbox(path.clone()), dir.path());
        let t = Target::Mailbox(MailboxSpec::Mbox(path.clone()));
        deliver_to(&t, &opts_for(dir.path()), b"Subject: new\n\nx\n");
        let after = read_back(&MailboxSpec::Mbox(path.clone()), dir.path());
        assert_eq!(after.len(), 2, "{tail:?}");
        assert_eq!(after[0], before[0], "{tail:?}: old message changed");
        assert_eq!(after[1].0, b"Subject: new\r\n\r\nx\r\n");
        assert!(fs::read(&path).unwrap().starts_with(&first));
    }
}

#[test]
fn over_quota_and_write_errors_leave_the_mailbox_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("box");
    let original = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: old\n\nkeep\n\n";
    fs::write(&path, original).unwrap();
    let s = sp(b"Subject: x\n\nbody\n").unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let e = append(
        &f,
        &s,
        "From s Mon Jan  1 00:00:00 2024\n",
        Some(60),
        &|| false,
    )
    .unwrap_err();
    assert!(matches!(e, DeliverError::OverQuota { .. }), "{e}");
    assert_eq!(fs::read(&path).unwrap(), original);
    // An interruption in the middle is truncated back.
    let e = append(&f, &s, "From s x\n", None, &|| true).unwrap_err();
    assert!(matches!(e, DeliverError::Interrupted), "{e}");
    assert_eq!(fs::read(&path).unwrap(), original);
    // A descriptor that cannot write: the error, and nothing changed.
    let ro = fs::File::open(&path).unwrap();
    let e = append(&ro, &s, "From s x\n", None, &|| false).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(fs::read(&path).unwrap(), original);
    let n = append(&f, &s, "From s x\n", None, &|| false).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        original.len() as u64 + n
    );
}

#[test]
fn refuses_symlinks_hard_links_and_non_files() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    fs::write(&real, b"").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let hard = dir.path().join("hard");
    fs::hard_link(&real, &hard).unwrap();
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let opts = opts_for(dir.path());
    for (p, code) in [(&link, EX_NOPERM), (&hard, EX_NOPERM), (&sub, EX_CANTCREAT)] {
        let r = deliver_to(
            &Target::Mailbox(MailboxSpec::Mbox(p.clone())),
            &opts,
            b"A: b\n",
        );
        assert_eq!(r.exit_code(false), code, "{p:?}: {:?}", r.reason_line());
    }
    assert_eq!(fs::read(&real).unwrap(), b"");
}

#[test]
fn maildir_names_sizes_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    let opts = opts_for(dir.path());
    let t = Target::Mailbox(MailboxSpec::Maildir(md.clone()));
    let msgs: [&[u8]; 3] = [
        b"Subject: a\r\n\r\nFrom x\r\n.\r\n",
        b"Subject: b\n\nno newline",
        b"Subject: c\n\nx\r\r\n",
    ];
    for m in msgs {
        let r = deliver_to(&t, &opts, m);
        assert_eq!(r.exit_code(false), 0, "{:?}", r.reason_line());
    }
    for sub in ["tmp", "new", "cur"] {
        assert!(md.join(sub).is_dir());
    }
    assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    let mut names: Vec<String> = fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        let content = fs::read(md.join("new").join(n)).unwrap();
        let w =
            canon::measure(&mut &content[..], content.len() as u64, CanonOptions::PLAIN).unwrap();
        assert!(n.ends_with(&format!(",S={},W={w}", content.len())), "{n}");
        assert!(n.contains(&format!("P{}Q", std::process::id())), "{n}");
    }
    let got = read_back(&MailboxSpec::Maildir(md.clone()), dir.path());
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
    let mut have: Vec<Vec<u8>> = got.iter().map(|g| g.0.clone()).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
    // Quota counts what is there.
    let mut o = opts.clone();
    o.max_mailbox_size = Some(10);
    let r = deliver_to(&t, &o, b"Subject: d\n");
    assert_eq!(r.exit_code(false), EX_TEMPFAIL);
    assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 3);
}

#[test]
fn unknown_user_is_nouser() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = opts_for(dir.path());
    opts.spool_dir = dir.path().join("spool");
    let r = deliver_to(
        &Target::User("no-such-user-popspool".into()),
        &opts,
        b"A: b\n",
    );
    assert_eq!(r.exit_code(false), EX_NOUSER);
    assert_eq!(r.exit_code(true), QMAIL_PERMANENT);
}

#[test]
fn hostname_is_a_safe_name_part() {
    let h = maildir::hostname();
    assert!(!h.is_empty());
    assert!(!h.contains(['/', ':', ',']));
}

/// Random messages: header lines, then body lines full of the cases that matter.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let body_line = prop_oneof![
        Just(b"From here".to_vec()),
        Just(b">From there".to_vec()),
        Just(b">>>From x".to_vec()),
        Just(b"From".to_vec()),
        Just(b".".to_vec()),
        Just(b"".to_vec()),
        Just(b"x\r".to_vec()),
        Just(b"\r".to_vec()),
        prop::collection::vec(prop::sample::select(b" aF>mor\r\x00.".to_vec()), 0..12),
    ];
    let ending = prop_oneof![Just(b"\n".to_vec()), Just(b"\r\n".to_vec())];
    (
        prop::bool::ANY,
        prop::collection::vec((body_line, ending.clone()), 0..12),
        prop::bool::ANY,
        ending,
    )
        .prop_map(|(envelope, lines, final_nl, end)| {
            let mut m = Vec::new();
            if envelope {
                m.extend_from_slice(b"From env@x Mon Jan  1 00:00:00 2024\n");
            }
            m.extend_from_slice(b"Subject: t");
            m.extend_from_slice(&end);
            m.extend_from_slice(b"X-Quoted: >From x");
            m.extend_from_slice(&end);
            m.extend_from_slice(&end);
            for (l, e) in lines {
                m.extend_from_slice(&l);
                m.extend_from_slice(&e);
            }
            if !final_nl {
                while matches!(m.last(), Some(b'\n' | b'\r')) {
                    m.pop();
                }
                m.extend_from_slice(b"end");
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn delivered_messages_read_back_exactly(msgs in prop::collection::vec(message(), 1..5)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = opts_for(dir.path());
        for spec in [
            MailboxSpec::Mbox(dir.path().join("box")),
            MailboxSpec::Maildir(dir.path().join("md")),
        ] {
            let t = Target::Mailbox(spec.clone());
            for m in &msgs {
                prop_assert_eq!(deliver_to(&t, &opts, m).exit_code(false), 0);
            }
            let mut got: Vec<Vec<u8>> = read_back(&spec, dir.path()).into_iter().map(|g| {
                assert_eq!(g.1, g.0.len() as u64);
                g.0
            }).collect();
            let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
            if matches!(spec, MailboxSpec::Maildir(_)) {
                got.sort();
                want.sort();
            }
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn uidls_stay_when_more_mail_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("box");
    let opts = opts_for(dir.path());
    let t = Target::Mailbox(MailboxSpec::Mbox(path.clone()));
    deliver_to(&t, &opts, b"Subject: 1\n\na\n");
    deliver_to(&t, &opts, b"Subject: 1\n\na\n");
    let before: Vec<String> = read_back(&MailboxSpec::Mbox(path.clone()), dir.path())
        .into_iter()
        .map(|g| g.2)
        .collect();
    deliver_to(&t, &opts, b"Subject: 2\n\nb\n");
    let after: Vec<String> = read_back(&MailboxSpec::Mbox(path.clone()), dir.path())
        .into_iter()
        .map(|g| g.2)
        .collect();
    assert_eq!(&after[..2], &before[..]);
    assert_ne!(after[0], after[1]);
}

#[test]
fn common_is_usable() {
    // The Maildir deliverer refuses a file where the Maildir should be.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("file");
    fs::write(&f, b"x").unwrap();
    let s = sp(b"A: b\n").unwrap();
    let e = maildir::deliver(&f, &f, &s, &common()).unwrap_err();
    assert_eq!(e.exit_code(false), EX_CANTCREAT, "{e}");
}
