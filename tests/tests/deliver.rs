//! pop-deliver through the real binaries: what it stores reads back byte-exact through
//! pop-serve; parallel deliveries racing POP3 sessions lose and duplicate nothing, also next
//! to procmail and dovecot-lda writing the same mbox; bad input, full disks, foreign owners
//! and locks get the documented exit codes and leave the mailbox as it was.

use popspool_tests::pop::Served;
use popspool_tests::{bin, is_root, serve_args, skip};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn deliver_cmd(args: &[String]) -> Command {
    let mut c = Command::new(bin("pop-deliver"));
    c.args(["--log", "none", "--no-dotlock-helper"])
        .args(args)
        .env_remove("SENDER")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Runs a prepared pop-deliver with `input` on stdin: (exit code, stderr).
fn run(mut c: Command, input: &[u8]) -> (i32, String) {
    let mut child = c.spawn().expect("spawn pop-deliver");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn deliver(args: &[String], input: &[u8]) -> (i32, String) {
    run(deliver_cmd(args), input)
}

fn mbox_arg(p: &Path) -> Vec<String> {
    vec!["--mailbox".into(), format!("mbox:{}", p.display())]
}

/// A message as logical lines: what to feed pop-deliver, and (independently of the library crates)
/// the octets RETR must return.
struct Msg {
    lines: Vec<Vec<u8>>,
    crlf: bool,
    final_newline: bool,
}

impl Msg {
    fn new(lines: &[&str]) -> Msg {
        Msg {
            lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
            crlf: false,
            final_newline: true,
        }
    }
    fn input(&self) -> Vec<u8> {
        let nl: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let mut v = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            v.extend_from_slice(l);
            if i + 1 < self.lines.len() || self.final_newline {
                v.extend_from_slice(nl);
            }
        }
        v
    }
    fn canonical(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for l in &self.lines {
            v.extend_from_slice(l);
            v.extend_from_slice(b"\r\n");
        }
        v
    }
}

fn serve(spec: &str, state: &Path) -> Served {
    let mut args = serve_args(state);
    args.extend([
        "--lock-timeout".to_string(),
        "30".to_string(),
        spec.to_string(),
    ]);
    Served::spawn(&args, &[("USER", "tester")])
}

/// Every message of the mailbox: (UIDL, LIST size, RETR octets). No deletion.
fn read_all(spec: &str, state: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut s = serve(spec, state);
    assert!(s.client.line().starts_with("+OK"), "greeting");
    assert!(s.client.cmd("UIDL").starts_with("+OK"));
    let uidls = s.client.listing();
    assert!(s.client.cmd("LIST").starts_with("+OK"));
    let sizes = s.client.listing();
    let mut out = Vec::new();
    for (u, l) in uidls.iter().zip(&sizes) {
        let (n, uidl) = u.split_once(' ').unwrap();
        let size: u64 = l.split_once(' ').unwrap().1.parse().unwrap();
        assert!(s.client.cmd(&format!("RETR {n}")).starts_with("+OK"));
        out.push((uidl.to_string(), size, s.client.body()));
    }
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    s.finish();
    out
}

fn test_messages() -> Vec<Msg> {
    let mut v = vec![
        Msg::new(&["Subject: plain", "", "hello"]),
        Msg::new(&[
            "Subject: from lines",
            "",
            "From the start of a line",
            ">From quoted once",
            ">>From quoted twice",
            "not From here",
        ]),
        Msg::new(&["Subject: dots", "", ".", "..", ".leading dot", "end."]),
        Msg::new(&["Subject: blank lines at the end", "", "x", "", ""]),
        Msg::new(&["Subject: headers only"]),
    ];
    let mut m = Msg::new(&["Subject: no final newline", "", "last line"]);
    m.final_newline = false;
    v.push(m);
    let mut m = Msg::new(&["Subject: crlf", "X-Other: y", "", "From crlf", "line"]);
    m.crlf = true;
    v.push(m);
    let mut m = Msg::new(&["Subject: crlf without final", "", "tail"]);
    m.crlf = true;
    m.final_newline = false;
    v.push(m);
    v
}

#[test]
fn mbox_and_maildir_read_back_byte_exact_with_stable_uidls() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for spec in [
        format!("mbox:{}", dir.path().join("mbox").display()),
        format!("maildir:{}", dir.path().join("Maildir").display()),
    ] {
        let msgs = test_messages();
        for m in &msgs {
            let (code, err) = deliver(&["--mailbox".into(), spec.clone()], &m.input());
            assert_eq!(code, 0, "{spec}: {err}");
        }
        let got = read_all(&spec, &state);
        assert_eq!(got.len(), msgs.len(), "{spec}");
        let mut want: Vec<Vec<u8>> = msgs.iter().map(Msg::canonical).collect();
        let mut have: Vec<Vec<u8>> = got.iter().map(|g| g.2.clone()).collect();
        for g in &got {
            assert_eq!(g.1, g.2.len() as u64, "{spec}: LIST size differs from RETR");
        }
        if spec.starts_with("maildir:") {
            want.sort();
            have.sort();
        }
        for (h, w) in have.iter().zip(&want) {
            assert_eq!(
                String::from_utf8_lossy(h),
                String::from_utf8_lossy(w),
                "{spec}"
            );
        }
        // More mail: the old UIDLs do not move.
        let (code, _) = deliver(
            &["--mailbox".into(), spec.clone()],
            &Msg::new(&["Subject: later", "", "x"]).input(),
        );
        assert_eq!(code, 0);
        let again = read_all(&spec, &state);
        assert_eq!(again.len(), msgs.len() + 1);
        let old: Vec<&String> = got.iter().map(|g| &g.0).collect();
        let mut new: Vec<&String> = again.iter().map(|g| &g.0).collect();
        if spec.starts_with("maildir:") {
            new.retain(|u| old.contains(u));
            assert_eq!(new.len(), old.len());
        } else {
            assert_eq!(&new[..old.len()], &old[..]);
        }
    }
}

#[test]
fn envelope_sender_and_from_line() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let m = b"Return-Path: <rp@example.org>\nSubject: s\n\nbody\n";
    let mut a = mbox_arg(&mbox);
    assert_eq!(deliver(&a, m).0, 0);
    a.extend(["-f".into(), "f@example.org".into()]);
    assert_eq!(deliver(&a, m).0, 0);
    let mut c = deliver_cmd(&mbox_arg(&mbox));
    c.env("SENDER", "");
    assert_eq!(run(c, m).0, 0);
    let text = String::from_utf8(fs::read(&mbox).unwrap()).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("From ")).collect();
    assert_eq!(froms.len(), 3, "{text}");
    assert!(froms[0].starts_with("From rp@example.org "));
    assert!(froms[1].starts_with("From f@example.org "));
    assert!(froms[2].starts_with("From MAILER-DAEMON "));
    // asctime: `From x Www Mmm dd hh:mm:ss yyyy`.
    let date: Vec<&str> = froms[0]
        .split(' ')
        .skip(2)
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(date.len(), 5, "{}", froms[0]);
    assert_eq!(date[3].len(), 8);
}

/// Everything a session sees: Message-IDs, as a multiset.
fn message_ids(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .map(|s| s.to_string())
}

/// POP3 sessions in a loop until `stop`: RETR+DELE all, QUIT. Counts only what a successful
/// QUIT deleted. Also a last draining session after `stop`.
fn drain_loop(
    spec: String,
    state: PathBuf,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, u32>>>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sessions = 0;
        loop {
            let last = stop.load(Ordering::SeqCst);
            let mut s = serve(&spec, &state);
            let greeting = s.client.line();
            if greeting.starts_with("+OK") {
                let stat = s.client.cmd("STAT");
                let n: usize = stat.split(' ').nth(1).unwrap().parse().unwrap();
                let mut got = Vec::new();
                for i in 1..=n {
                    // An MDA that rewrote spool headers in place since the scan (Dovecot)
                    // moved the message: -ERR, and it stays for the next session.
                    let r = s.client.cmd(&format!("RETR {i}"));
                    if r.starts_with("-ERR") {
                        continue;
                    }
                    assert!(r.starts_with("+OK"), "RETR {i}: {r}");
                    let body = s.client.body();
                    got.push(message_ids(&body).expect("Message-ID"));
                    assert!(s.client.cmd(&format!("DELE {i}")).starts_with("+OK"));
                }
                if s.client.cmd("QUIT").starts_with("+OK") {
                    let mut seen = seen.lock().unwrap();
                    for id in got {
                        *seen.entry(id).or_default() += 1;
                    }
                }
                sessions += 1;
            }
            s.finish();
            if last {
                return sessions;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn parallel_deliveries_racing_sessions_lose_and_duplicate_nothing() {
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let spec = format!("mbox:{}", mbox.display());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let drainer = drain_loop(spec, dir.path().join("state"), stop.clone(), seen.clone());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mbox = mbox.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let m = format!(
                        "Message-ID: <w{w}-{i}@test>\nSubject: {w}/{i}\n\nFrom writer {w}\n{}\n",
                        "x".repeat(i * 97)
                    );
                    let (code, err) = deliver(&mbox_arg(&mbox), m.as_bytes());
                    assert_eq!(code, 0, "{err}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let sessions = drainer.join().unwrap();
    let seen = seen.lock().unwrap();
    for w in 0..WRITERS {
        for i in 0..EACH {
            let id = format!("<w{w}-{i}@test>");
            assert_eq!(
                seen.get(&id),
                Some(&1),
                "{id} delivered {:?} times",
                seen.get(&id)
            );
        }
    }
    assert_eq!(seen.len(), WRITERS * EACH);
    assert!(sessions >= 2, "sessions {sessions}");
    eprintln!("{} messages, {sessions} sessions", WRITERS * EACH);
}

fn rcfile(dir: &Path, mbox: &Path) -> PathBuf {
    // procmail refuses an rcfile in a world-writable directory.
    let etc = dir.join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).unwrap();
    let rc = etc.join("procmailrc");
    fs::write(
        &rc,
        format!(
            "LOGFILE=/dev/null\nVERBOSE=no\nLOCKSLEEP=1\n:0:\n{}\n",
            mbox.display()
        ),
    )
    .unwrap();
    rc
}

fn dovecot_conf(dir: &Path, mbox: &Path) -> PathBuf {
    let conf = dir.join("dovecot.conf");
    fs::create_dir_all(dir.join("dovecot-mail")).unwrap();
    // dovecot-lda runs as nobody and keeps its mail directory's state there.
    fs::set_permissions(dir.join("dovecot-mail"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(
        &conf,
        format!(
            "mail_location = mbox:{d}/dovecot-mail:INBOX={m}:INDEX=MEMORY\n\
             mbox_write_locks = dotlock fcntl\n\
             mbox_read_locks = dotlock fcntl\n\
             mbox_lock_timeout = 60s\n\
             log_path = {d}/dovecot.log\n\
             postmaster_address = postmaster@example.org\n\
             ssl = no\n",
            d = dir.display(),
            m = mbox.display()
        ),
    )
    .unwrap();
    conf
}

/// procmail and dovecot-lda append to the same mbox as pop-deliver, while sessions drain it.
#[test]
fn interop_with_procmail_and_dovecot_lda() {
    const EACH: usize = 15;
    if !is_root() {
        skip(
            "interop_with_procmail_and_dovecot_lda",
            "needs root (dovecot-lda runs as nobody)",
        );
        return;
    }
    let lda = Path::new("/usr/lib/dovecot/dovecot-lda");
    let procmail = popspool_tests::which("procmail");
    if procmail.is_none() || !lda.is_file() {
        skip(
            "interop_with_procmail_and_dovecot_lda",
            "procmail or dovecot-lda missing (apt-get install procmail dovecot-core)",
        );
        return;
    }
    let procmail = procmail.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // nobody (dovecot-lda) must create the dotlock beside the mailbox and own the mailbox.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let mbox = dir.path().join("mbox");
    fs::write(&mbox, b"").unwrap();
    std::os::unix::fs::chown(&mbox, Some(NOBODY), Some(NOBODY)).unwrap();
    let rc = rcfile(dir.path(), &mbox);
    let conf = dovecot_conf(dir.path(), &mbox);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let drainer = drain_loop(
        format!("mbox:{}", mbox.display()),
        dir.path().join("state"),
        stop.clone(),
        seen.clone(),
    );
    let slowest = Arc::new(Mutex::new((Duration::ZERO, "")));
    let mut writers = Vec::new();
    for kind in ["pop-deliver", "pop-deliver2", "procmail", "dovecot"] {
        let (mbox, rc, conf, procmail) = (mbox.clone(), rc.clone(), conf.clone(), procmail.clone());
        let dir = dir.path().to_path_buf();
        let slowest = slowest.clone();
        writers.push(std::thread::spawn(move || {
            for i in 0..EACH {
                // No `From ` lines in bodies: procmail quotes mboxo-style and Dovecot not at
                // all (it relies on Content-Length), which mboxrd readers cannot undo.
                let body = format!(
                    "Message-ID: <{kind}-{i}@test>\nSubject: {kind} {i}\n\nline one\n{}\n",
                    "y".repeat(i * 131)
                );
                let (cmd, input) = match kind {
                    "procmail" => {
                        let mut c = Command::new(&procmail);
                        c.arg("-m").arg(&rc);
                        let input = format!("From {kind}@test Mon Jan  1 00:00:00 2024\n{body}");
                        (c, input)
                    }
                    "dovecot" => {
                        let mut c = Command::new("/usr/lib/dovecot/dovecot-lda");
                        c.arg("-c").arg(&conf).args(["-f", "dovecot@test"]);
                        c.uid(NOBODY).gid(NOBODY).env("HOME", "/tmp");
                        (c, body)
                    }
                    _ => {
                        let mut c = deliver_cmd(&mbox_arg(&mbox));
                        c.args(["--lock-timeout", "60"]);
                        (c, body)
                    }
                };
                let mut cmd = cmd;
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let t = Instant::now();
                let (code, err) = run(cmd, input.as_bytes());
                let took = t.elapsed();
                let log = fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
                assert_eq!(code, 0, "{kind} {i}: {err}\ndovecot.log:\n{log}");
                let mut s = slowest.lock().unwrap();
                if took > s.0 {
                    *s = (took, kind);
                }
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    drainer.join().unwrap();
    let seen = seen.lock().unwrap();
    for kind in ["pop-deliver", "pop-deliver2", "procmail", "dovecot"] {
        for i in 0..EACH {
            let id = format!("<{kind}-{i}@test>");
            assert_eq!(seen.get(&id), Some(&1), "{id}: {:?}", seen.get(&id));
        }
    }
    assert_eq!(seen.len(), 4 * EACH, "{seen:?}");
    let (slowest, who) = *slowest.lock().unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "a {who} delivery took {slowest:?}"
    );
    eprintln!("slowest delivery {slowest:?} ({who})");
}

#[test]
fn bad_input_gets_dataerr_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let a = mbox_arg(&mbox);
    assert_eq!(deliver(&a, b"Subject: first\n\nx\n").0, 0);
    let before = fs::read(&mbox).unwrap();
    let cases: &[(&[u8], &[&str])] = &[
        (b"", &[]),
        (b"From x Mon Jan  1 00:00:00 2024\n", &[]),
        (b"\nno headers\n", &[]),
        (b"not a header line\n\nbody\n", &[]),
        (b"Subject: nul\n\n\0\n", &["--reject-nul"]),
        (
            b"Subject: long\n\n0123456789abcdef\n",
            &["--max-line-length", "10"],
        ),
    ];
    for (input, extra) in cases {
        let mut args = a.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (code, err) = deliver(&args, input);
        assert_eq!(code, 65, "{input:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        let mut q = args.clone();
        q.push("--qmail-exit-codes".into());
        assert_eq!(deliver(&q, input).0, 100, "{input:?}");
    }
    assert_eq!(fs::read(&mbox).unwrap(), before);
    // NUL bytes are stored by default and come back as they are.
    assert_eq!(deliver(&a, b"Subject: nul\n\na\0b\n").0, 0);
    let got = read_all(
        &format!("mbox:{}", mbox.display()),
        &dir.path().join("state"),
    );
    assert_eq!(got[1].2, b"Subject: nul\r\n\r\na\0b\r\n");
}

#[test]
fn ten_megabyte_line_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let line = "z".repeat(10 << 20);
    let m = Msg::new(&["Subject: long line", "", &line, "end"]);
    let (code, err) = deliver(&mbox_arg(&mbox), &m.input());
    assert_eq!(code, 0, "{err}");
    let got = read_all(
        &format!("mbox:{}", mbox.display()),
        &dir.path().join("state"),
    );
    assert_eq!(got.len(), 1);
    assert!(got[0].2 == m.canonical(), "10 MB line differs");
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn two_hundred_megabyte_message_in_bounded_memory() {
    const LINES: usize = 2_000_000; // 100 bytes each: 200 MB
    const MAX_RSS_KB: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let mut c = deliver_cmd(&mbox_arg(&mbox));
    c.args(["--tmp-dir", &dir.path().display().to_string()]);
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        stdin.write_all(b"Subject: big\r\n\r\n").unwrap();
        let mut chunk = Vec::with_capacity(1 << 20);
        for i in 0..LINES {
            // Every 1000th line is a `From ` line, quoted on the way in.
            if i % 1000 == 0 {
                chunk.extend_from_slice(format!("From {i:093}\r\n").as_bytes());
            } else {
                chunk.extend_from_slice(format!("{i:098}\r\n").as_bytes());
            }
            if chunk.len() >= 1 << 20 {
                stdin.write_all(&chunk).unwrap();
                chunk.clear();
            }
        }
        stdin.write_all(&chunk).unwrap();
    });
    let mut hwm = 0;
    loop {
        if let Some(k) = vm_hwm_kb(pid) {
            hwm = hwm.max(k);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(hwm > 0 && hwm < MAX_RSS_KB, "VmHWM {hwm} kB");
    // Stored as LF, one `>` per `From ` line, plus the From_ line and the blank line.
    let body: u64 = "Subject: big\n\n".len() as u64 + (LINES as u64) * 99 + (LINES / 1000) as u64;
    let size = fs::metadata(&mbox).unwrap().len();
    let from_line = fs::read(&mbox)
        .map(|b| b.iter().position(|&c| c == b'\n').unwrap() as u64 + 1)
        .unwrap();
    assert_eq!(size, from_line + body + 1);
    // pop-serve's LIST: the CRLF form, quoting undone.
    let mut s = serve(
        &format!("mbox:{}", mbox.display()),
        &dir.path().join("state"),
    );
    assert!(s.client.line().starts_with("+OK"));
    let list = s.client.cmd("LIST 1");
    let want = "Subject: big\r\n\r\n".len() + LINES * 100;
    assert_eq!(list, format!("+OK 1 {want}"));
    s.client.cmd("QUIT");
    s.finish();
    eprintln!("200 MB message: VmHWM {hwm} kB");
}

#[test]
fn unknown_user_is_67_or_100() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let args = vec![
        "--spool-dir".to_string(),
        spool.display().to_string(),
        "no-such-user-popspool".to_string(),
    ];
    let (code, err) = deliver(&args, b"Subject: x\n");
    assert_eq!(code, 67, "{err}");
    assert!(err.contains("no such user"), "{err}");
    let mut q = args.clone();
    q.push("--qmail-exit-codes".into());
    assert_eq!(deliver(&q, b"Subject: x\n").0, 100);
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0);
}

#[test]
fn usage_errors() {
    assert_eq!(deliver(&[], b"Subject: x\n").0, 64);
    assert_eq!(
        deliver(&["--mailbox".into(), "/no/prefix".into()], b"Subject: x\n").0,
        64
    );
    assert_eq!(deliver(&["--bogus".into()], b"").0, 64);
    assert_eq!(
        deliver(&["--bogus".into(), "--qmail-exit-codes".into()], b"").0,
        111
    );
}

#[test]
fn full_disk_is_temporary_and_truncated_back() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let big = format!("Subject: old\n\n{}\n", "o".repeat(100_000));
    assert_eq!(deliver(&mbox_arg(&mbox), big.as_bytes()).0, 0);
    let before = fs::read(&mbox).unwrap();
    let msg = format!("Subject: new\n\n{}\n", "n".repeat(60_000));
    for qmail in [false, true] {
        let mut args = mbox_arg(&mbox);
        args.extend(["--tmp-dir".to_string(), dir.path().display().to_string()]);
        if qmail {
            args.push("--qmail-exit-codes".into());
        }
        let mut c = deliver_cmd(&args);
        let limit = before.len() as u64 + 30_000;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (code, err) = run(c, msg.as_bytes());
        assert_eq!(code, if qmail { 111 } else { 75 }, "{err}");
        assert!(err.contains("File too large"), "{err}");
        assert_eq!(fs::read(&mbox).unwrap(), before, "mailbox changed");
    }
    // The quota option: the same answer, checked before writing.
    let mut args = mbox_arg(&mbox);
    args.extend([
        "--max-mailbox-size".to_string(),
        (before.len() + 1000).to_string(),
    ]);
    let (code, err) = deliver(&args, msg.as_bytes());
    assert_eq!(code, 75, "{err}");
    assert_eq!(fs::read(&mbox).unwrap(), before);
}

#[test]
fn lock_held_by_another_mda_times_out_temporarily() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    assert_eq!(deliver(&mbox_arg(&mbox), b"Subject: a\n").0, 0);
    let before = fs::read(&mbox).unwrap();
    // A dotlock of a live process (ourselves): respected until the timeout.
    let lock = dir.path().join("mbox.lock");
    fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let mut args = mbox_arg(&mbox);
    args.extend(["--lock-timeout".to_string(), "1".to_string()]);
    let t = Instant::now();
    let (code, err) = deliver(&args, b"Subject: b\n");
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("locked"), "{err}");
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(fs::read(&mbox).unwrap(), before);
    assert!(lock.exists(), "somebody else's dotlock removed");
    fs::remove_file(&lock).unwrap();
    // A dotlock of a dead process is broken at once.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    fs::write(&lock, format!("{dead}\n")).unwrap();
    assert_eq!(deliver(&args, b"Subject: c\n").0, 0);
    assert!(!lock.exists());
}

#[test]
fn sigterm_while_reading_stdin_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    assert_eq!(deliver(&mbox_arg(&mbox), b"Subject: a\n").0, 0);
    let before = fs::read(&mbox).unwrap();
    let mut child = deliver_cmd(&mbox_arg(&mbox)).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: slow\n\npartial").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(fs::read(&mbox).unwrap(), before);
}

/// Spool users as root: created with the right owner, group and modes; foreign owners and
/// unwritable mailboxes refused untouched; a user without a mailbox in a root:mail spool
/// gets a temporary failure that names the fix.
#[test]
fn spool_users_ownership_and_permissions() {
    if !is_root() {
        skip(
            "spool_users_ownership_and_permissions",
            "needs root (chown, running as nobody)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let base = vec![
        "--spool-dir".to_string(),
        spool.display().to_string(),
        "--state-dir".to_string(),
        dir.path().join("state").display().to_string(),
    ];
    let with = |user: &str| {
        let mut a = base.clone();
        a.push(user.to_string());
        a
    };
    // Created for nobody: spool/n/nobody, nobody:mail 0600, spool/n root:mail 2775.
    let (code, err) = deliver(&with("nobody"), b"Subject: for nobody\n\nhi\n");
    assert_eq!(code, 0, "{err}");
    let boxp = spool.join("n/nobody");
    let m = fs::metadata(&boxp).unwrap();
    let mail_gid = nix::unistd::Group::from_name("mail")
        .unwrap()
        .map(|g| g.gid.as_raw());
    assert_eq!(m.uid(), NOBODY);
    if let Some(g) = mail_gid {
        assert_eq!(m.gid(), g);
        assert_eq!(fs::metadata(spool.join("n")).unwrap().gid(), g);
    }
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(
        fs::metadata(spool.join("n")).unwrap().mode() & 0o7777,
        0o2775
    );
    let got = read_all(
        &format!("mbox:{}", boxp.display()),
        &dir.path().join("state"),
    );
    assert_eq!(got[0].2, b"Subject: for nobody\r\n\r\nhi\r\n");

    // Owned by someone else: 77, untouched.
    std::os::unix::fs::chown(&boxp, Some(0), None).unwrap();
    let before = fs::read(&boxp).unwrap();
    let (code, err) = deliver(&with("nobody"), b"Subject: x\n");
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("owned by"), "{err}");
    assert_eq!(fs::read(&boxp).unwrap(), before);

    // nobody delivering into a mailbox it cannot write: 77, untouched.
    let mut c = deliver_cmd(&mbox_arg(&boxp));
    c.uid(NOBODY).gid(NOBODY);
    let (code, err) = run(c, b"Subject: x\n");
    assert_eq!(code, 77, "{err}");
    assert_eq!(fs::read(&boxp).unwrap(), before);

    // nobody's own mailbox missing in a root:mail 2775 hash directory: temporary.
    fs::remove_file(&boxp).unwrap();
    let mut c = deliver_cmd(&with("nobody"));
    c.uid(NOBODY).gid(NOBODY);
    let (code, err) = run(c, b"Subject: x\n");
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("pop-spool create"), "{err}");
    assert!(!boxp.exists());

    // Pre-created (as pop-spool create does): nobody delivers to itself, taking the dotlock
    // in the root:mail 2775 directory through the setgid helper (installed as
    // scripts/install does).
    fs::write(&boxp, b"").unwrap();
    std::os::unix::fs::chown(&boxp, Some(NOBODY), mail_gid).unwrap();
    let helper = dir.path().join("pop-dotlock");
    fs::copy(bin("pop-dotlock"), &helper).unwrap();
    std::os::unix::fs::chown(&helper, Some(0), mail_gid).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o2755)).unwrap();
    let mut c = Command::new(bin("pop-deliver"));
    c.args(["--log", "none", "--dotlock-helper"])
        .arg(&helper)
        .args(with("nobody"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .uid(NOBODY)
        .gid(NOBODY);
    let (code, err) = run(c, b"Subject: self\n");
    assert_eq!(code, 0, "{err}");
    assert!(!spool.join("n/nobody.lock").exists());
    assert_eq!(fs::metadata(&boxp).unwrap().uid(), NOBODY);
}

#[test]
fn several_users_one_exit_status() {
    if !is_root() {
        skip(
            "several_users_one_exit_status",
            "needs root to write other users' mailboxes",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let args: Vec<String> = vec![
        "--spool-dir".into(),
        spool.display().to_string(),
        "--hash-depth".into(),
        "2".into(),
        "root".into(),
        "no-such-user-popspool".into(),
        "nobody".into(),
    ];
    let (code, err) = deliver(&args, b"Subject: many\n\nx\n");
    assert_eq!(code, 67, "{err}");
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("no-such-user-popspool"), "{err}");
    assert!(spool.join("r/ro/root").is_file());
    assert!(spool.join("n/no/nobody").is_file());
    // A temporary failure for one recipient wins: the MTA must retry.
    fs::write(
        spool.join("r/ro/root.lock"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let mut a = args.clone();
    a.extend(["--lock-timeout".into(), "1".into()]);
    let (code, err) = deliver(&a, b"Subject: many\n\nx\n");
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("root: mailbox") && err.contains("no such user"),
        "{err}"
    );
    let mut buf = String::new();
    fs::File::open(spool.join("n/no/nobody"))
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert_eq!(buf.matches("Subject: many").count(), 2);
}
