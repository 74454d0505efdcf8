//! pop-serve over pipes: every generated message arrives byte-exact, sizes agree with RETR,
//! UIDLs are stable, UPDATE removes exactly what was deleted, bad input never hurts.

use popspool_tests::gen::{self, Message};
use popspool_tests::pop::Served;
use popspool_tests::serve_args;
use std::collections::HashSet;
use std::fs;
use std::path::Path;

fn serve(dir: &Path, mailbox: &str) -> Served {
    let mut args = serve_args(&dir.join("state"));
    args.push(mailbox.to_string());
    Served::spawn(&args, &[("USER", "tester")])
}

fn write_mbox(dir: &Path, msgs: &[Message]) -> String {
    let p = dir.join("mbox");
    fs::write(&p, gen::mbox_bytes(msgs)).unwrap();
    format!("mbox:{}", p.display())
}

/// STAT, LIST, UIDL, then RETR and TOP of every message, checked against the oracle.
fn check_all(s: &mut Served, msgs: &[Message]) -> Vec<String> {
    let c = &mut s.client;
    let total: usize = msgs.iter().map(|m| m.canonical().len()).sum();
    assert_eq!(c.cmd("STAT"), format!("+OK {} {}", msgs.len(), total));
    assert!(c.cmd("LIST").starts_with("+OK"));
    let list = c.listing();
    assert_eq!(list.len(), msgs.len());
    for (i, (line, m)) in list.iter().zip(msgs).enumerate() {
        assert_eq!(
            line,
            &format!("{} {}", i + 1, m.canonical().len()),
            "LIST of message {}",
            i + 1
        );
    }
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let uidls: Vec<String> = c
        .listing()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (n, u) = l.split_once(' ').unwrap();
            assert_eq!(n, (i + 1).to_string());
            assert!(!u.is_empty() && u.len() <= 70, "UIDL length: {u:?}");
            assert!(
                u.bytes().all(|b| (0x21..=0x7e).contains(&b)),
                "UIDL chars: {u:?}"
            );
            u.to_string()
        })
        .collect();
    assert_eq!(
        uidls.iter().collect::<HashSet<_>>().len(),
        uidls.len(),
        "UIDLs are unique"
    );
    for (i, m) in msgs.iter().enumerate() {
        let want = m.canonical();
        assert_eq!(
            c.cmd(&format!("RETR {}", i + 1)),
            format!("+OK {} octets", want.len())
        );
        let got = c.body();
        assert_eq!(
            got,
            want,
            "RETR {} differs:\n got {:?}\nwant {:?}",
            i + 1,
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        for n in [0usize, 1, 3] {
            assert!(c.cmd(&format!("TOP {} {n}", i + 1)).starts_with("+OK"));
            assert_eq!(c.body(), m.canonical_top(n), "TOP {} {n}", i + 1);
        }
    }
    uidls
}

#[test]
fn every_generated_message_is_byte_exact() {
    for seed in 1..=6 {
        let dir = tempfile::tempdir().unwrap();
        let msgs = gen::varied(seed, 60);
        let mb = write_mbox(dir.path(), &msgs);
        let mut s = serve(dir.path(), &mb);
        assert_eq!(s.client.line(), "+OK ");
        check_all(&mut s, &msgs);
        assert!(s.client.cmd("QUIT").starts_with("+OK"));
        let (code, _) = s.finish();
        assert_eq!(code, 0);
        assert_eq!(
            fs::read(dir.path().join("mbox")).unwrap(),
            gen::mbox_bytes(&msgs),
            "read-only session changed the mbox"
        );
    }
}

#[test]
fn dele_quit_removes_exactly_the_deleted_and_uidls_stay() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(42, 40);
    let mb = write_mbox(dir.path(), &msgs);
    let mut s = serve(dir.path(), &mb);
    s.client.line();
    let uidls = check_all(&mut s, &msgs);
    let gone: Vec<usize> = vec![0, 5, 6, 7, 20, 39];
    for &i in &gone {
        assert!(s.client.cmd(&format!("DELE {}", i + 1)).starts_with("+OK"));
    }
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    s.finish();

    let kept: Vec<Message> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, m)| m.clone())
        .collect();
    let mut want_file = gen::mbox_bytes(&kept);
    let got_file = fs::read(dir.path().join("mbox")).unwrap();
    if msgs.last().unwrap().no_final_newline && gone.contains(&39) {
        // The new last message kept its separator line: nothing to adjust.
        want_file = gen::mbox_bytes(&kept);
    }
    assert_eq!(got_file, want_file, "mbox after UPDATE");

    // New mail arrives; the old messages keep their UIDLs.
    let mut more = kept.clone();
    if more.last().unwrap().no_final_newline {
        // Appending after a message without final newline is the MDA's business; keep it clean.
        return;
    }
    let extra = Message::simple(1000);
    more.push(extra);
    fs::write(dir.path().join("mbox"), gen::mbox_bytes(&more)).unwrap();
    let mut s = serve(dir.path(), &mb);
    s.client.line();
    let uidls2 = check_all(&mut s, &more);
    let kept_uidls: Vec<&String> = uidls
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, u)| u)
        .collect();
    assert_eq!(uidls2[..kept.len()].iter().collect::<Vec<_>>(), kept_uidls);
    s.client.cmd("QUIT");
    s.finish();
}

#[test]
fn dropped_connection_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(7, 10);
    let mb = write_mbox(dir.path(), &msgs);
    let mut s = serve(dir.path(), &mb);
    s.client.line();
    for i in 1..=10 {
        s.client.cmd(&format!("DELE {i}"));
    }
    let (code, _) = s.finish(); // closes stdin without QUIT
    assert_eq!(code, 0);
    assert_eq!(
        fs::read(dir.path().join("mbox")).unwrap(),
        gen::mbox_bytes(&msgs)
    );
}

#[test]
fn missing_and_empty_mailbox_fast_path_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (name, create) in [("missing", false), ("empty", true)] {
        let p = dir.path().join(name);
        if create {
            fs::write(&p, b"").unwrap();
        }
        let mut s = serve(dir.path(), &format!("mbox:{}", p.display()));
        assert_eq!(s.client.line(), "+OK ");
        assert_eq!(s.client.cmd("STAT"), "+OK 0 0");
        assert!(s.client.cmd("LIST").starts_with("+OK"));
        assert!(s.client.listing().is_empty());
        assert!(s.client.cmd("RETR 1").starts_with("-ERR"));
        assert!(s.client.cmd("QUIT").starts_with("+OK"));
        s.finish();
        assert_eq!(
            p.exists(),
            create,
            "{name}: the mailbox must not be created"
        );
        assert!(!dir.path().join(format!("{}.lock", p.display())).exists());
        assert!(
            !dir.path().join("state").exists(),
            "{name}: no lock, no state directory"
        );
    }
}

#[test]
fn second_session_gets_in_use_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(3, 5);
    let mb = write_mbox(dir.path(), &msgs);
    let mut a = serve(dir.path(), &mb);
    assert_eq!(a.client.line(), "+OK ");
    let t = std::time::Instant::now();
    let mut b = serve(dir.path(), &mb);
    let l = b.client.line();
    assert!(l.starts_with("-ERR [IN-USE]"), "{l}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    b.finish();
    a.client.cmd("QUIT");
    a.finish();
    // The lock died with the first session.
    let mut c = serve(dir.path(), &mb);
    assert_eq!(c.client.line(), "+OK ");
    c.client.cmd("QUIT");
    c.finish();
}

#[test]
fn bad_input_gets_err_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(9, 5);
    let mb = write_mbox(dir.path(), &msgs);
    let mut s = serve(dir.path(), &mb);
    s.client.line();
    use std::io::Write;
    let w = &mut s.client.w;
    w.write_all(b"RETR \x001\r\n").unwrap();
    w.write_all(b"STAT\rNOOP\r\n").unwrap();
    w.write_all(b"\xff\xfe\xfd\r\n").unwrap();
    w.write_all(&vec![b'A'; 1 << 20]).unwrap();
    w.write_all(b"\r\n").unwrap();
    w.write_all(
        b"DELE 0\r\nDELE 6\r\nDELE 18446744073709551617\r\nLIST -1\r\nTOP 1 -1\r\nNOOP\r\n",
    )
    .unwrap();
    w.flush().unwrap();
    for _ in 0..9 {
        let l = s.client.line();
        assert!(l.starts_with("-ERR"), "{l}");
    }
    assert_eq!(s.client.line(), "+OK");
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    let rest = s.client.rest();
    assert!(rest.is_empty(), "{rest:?}");
    let _ = s.child.wait();
    assert_eq!(
        fs::read(dir.path().join("mbox")).unwrap(),
        gen::mbox_bytes(&msgs)
    );
}

#[test]
fn pipelined_commands_answer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(5, 20);
    let mb = write_mbox(dir.path(), &msgs);
    let mut s = serve(dir.path(), &mb);
    s.client.line();
    let mut batch = String::new();
    for i in 1..=20 {
        batch.push_str(&format!("LIST {i}\r\nUIDL {i}\r\n"));
    }
    use std::io::Write;
    s.client.w.write_all(batch.as_bytes()).unwrap();
    s.client.w.flush().unwrap();
    for i in 1..=20 {
        assert_eq!(
            s.client.line(),
            format!("+OK {i} {}", msgs[i - 1].canonical().len())
        );
        assert!(s.client.line().starts_with(&format!("+OK {i} ")));
    }
    s.client.cmd("QUIT");
    s.finish();
}

#[test]
fn leading_garbage_is_kept_and_not_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(11, 4);
    let mut bytes = b"this is not a message\nnor this\n\n".to_vec();
    bytes.extend_from_slice(&gen::mbox_bytes(&msgs));
    let p = dir.path().join("mbox");
    fs::write(&p, &bytes).unwrap();
    let mut s = serve(dir.path(), &format!("mbox:{}", p.display()));
    s.client.line();
    check_all(&mut s, &msgs);
    s.client.cmd("DELE 1");
    s.client.cmd("QUIT");
    s.finish();
    let mut want = b"this is not a message\nnor this\n\n".to_vec();
    want.extend_from_slice(&gen::mbox_bytes(&msgs[1..]));
    assert_eq!(fs::read(&p).unwrap(), want);
}

#[test]
fn maildir_qmail_style_argument() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    fs::write(
        md.join("new/1700000001.M1P1.host,S=30"),
        b"Subject: a\n\n.dot\nbody\n",
    )
    .unwrap();
    fs::write(
        md.join("cur/1700000000.M2P2.host:2,S"),
        b"Subject: b\n\nno newline",
    )
    .unwrap();
    let mut args = serve_args(&dir.path().join("state"));
    args.push("./Maildir/".into());
    let mut cmd = std::process::Command::new(popspool_tests::bin("pop-serve"));
    cmd.args(&args).current_dir(dir.path());
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut c =
        popspool_tests::pop::Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    assert_eq!(c.line(), "+OK ");
    assert_eq!(c.cmd("STAT"), format!("+OK 2 {}", 26 + 26));
    assert!(c.cmd("UIDL").starts_with("+OK"));
    assert_eq!(
        c.listing(),
        vec!["1 1700000000.M2P2.host", "2 1700000001.M1P1.host,S=30"]
    );
    assert!(c.cmd("RETR 1").starts_with("+OK 26 octets"));
    assert_eq!(c.body(), b"Subject: b\r\n\r\nno newline\r\n");
    assert!(c.cmd("RETR 2").starts_with("+OK"));
    assert_eq!(c.body(), b"Subject: a\r\n\r\n.dot\r\nbody\r\n");
    c.cmd("DELE 1");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    drop(c);
    child.wait().unwrap();
    assert!(!md.join("cur/1700000000.M2P2.host:2,S").exists());
    assert!(
        md.join("cur/1700000001.M1P1.host,S=30:2,S").exists(),
        "retrieved message marked seen"
    );
}

#[test]
fn refuses_root_without_allow_root() {
    if !popspool_tests::is_root() {
        popspool_tests::skip(
            "refuses_root_without_allow_root",
            "needs root to run pop-serve as uid 0",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Served::spawn(
        &[
            "--log".into(),
            "none".into(),
            format!("mbox:{}", dir.path().join("x").display()),
        ],
        &[],
    );
    let mut s = s;
    let l = s.client.line();
    assert!(l.starts_with("-ERR [SYS/PERM]"), "{l}");
    s.finish();
}

#[test]
fn quit_reports_a_failed_update_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(13, 6);
    let mb = write_mbox(dir.path(), &msgs);
    let mut args = serve_args(&dir.path().join("state"));
    args.extend(["--lock-timeout".to_string(), "1".to_string(), mb]);
    let mut s = Served::spawn(&args, &[("USER", "tester")]);
    assert_eq!(s.client.line(), "+OK ");
    // An MDA (a live process: this test) holds the dotlock when the client quits.
    let lock = dir.path().join("mbox.lock");
    fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    s.client.cmd("DELE 1");
    s.client.cmd("DELE 2");
    let l = s.client.cmd("QUIT");
    assert!(
        l.starts_with("-ERR [SYS/TEMP]") && l.ends_with("no messages were deleted"),
        "{l}"
    );
    s.finish();
    assert_eq!(
        fs::read(dir.path().join("mbox")).unwrap(),
        gen::mbox_bytes(&msgs)
    );
    assert!(lock.exists(), "somebody else's dotlock is never removed");
}

/// `--max-messages N`: each session sees only the oldest N messages, so a client can drain a
/// huge box in batches; the rest stay untouched until their turn.
#[test]
fn max_messages_drains_a_box_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied(17, 10);
    let mb = write_mbox(dir.path(), &msgs);
    let mut args = serve_args(&dir.path().join("state"));
    args.extend(["--max-messages".to_string(), "4".to_string(), mb]);
    let mut seen = Vec::new();
    for batch in [4usize, 4, 2, 0] {
        let mut s = Served::spawn(&args, &[("USER", "tester")]);
        assert_eq!(s.client.line(), "+OK ");
        let stat = s.client.cmd("STAT");
        assert!(stat.starts_with(&format!("+OK {batch} ")), "{stat}");
        for i in 1..=batch {
            assert!(s.client.cmd(&format!("RETR {i}")).starts_with("+OK"));
            seen.push(s.client.body());
            assert!(s.client.cmd(&format!("DELE {i}")).starts_with("+OK"));
        }
        assert!(s
            .client
            .cmd(&format!("RETR {}", batch + 1))
            .starts_with("-ERR"));
        assert!(s.client.cmd("QUIT").starts_with("+OK"));
        s.finish();
    }
    let want: Vec<Vec<u8>> = msgs.iter().map(|m| m.canonical()).collect();
    assert_eq!(seen, want, "every message once, oldest first");
}
