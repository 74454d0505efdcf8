//! pop-serve's limits through the real binary: timeouts, a message over 100 MB streamed with
//! bounded memory, the session log line, and (as root) a real Debian-style `root:mail 2775`
//! spool where the user can only lock through the setgid `pop-dotlock` helper.

use popspool_tests::gen::{self, Message};
use popspool_tests::pop::Served;
use popspool_tests::{bin, is_root, serve_args, skip};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

fn serve_with(dir: &Path, extra: &[&str], mailbox: &str) -> Served {
    let mut args = serve_args(&dir.join("state"));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(mailbox.to_string());
    Served::spawn(&args, &[("USER", "tester"), ("TCPREMOTEIP", "192.0.2.7")])
}

fn one_message_box(dir: &Path) -> String {
    let p = dir.join("mbox");
    fs::write(&p, gen::mbox_bytes(&gen::varied(1, 3))).unwrap();
    format!("mbox:{}", p.display())
}

#[test]
fn idle_timeout_ends_the_session_without_update() {
    let dir = tempfile::tempdir().unwrap();
    let mb = one_message_box(dir.path());
    let before = fs::read(dir.path().join("mbox")).unwrap();
    let mut s = serve_with(dir.path(), &["--idle-timeout", "1"], &mb);
    s.client.line();
    assert!(s.client.cmd("DELE 1").starts_with("+OK"));
    let t = Instant::now();
    assert_eq!(s.client.line(), "-ERR idle for too long, closing");
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));
    s.finish();
    assert_eq!(fs::read(dir.path().join("mbox")).unwrap(), before);
}

#[test]
fn a_dripping_client_hits_the_line_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mb = one_message_box(dir.path());
    let mut s = serve_with(
        dir.path(),
        &["--line-timeout", "1", "--idle-timeout", "30"],
        &mb,
    );
    s.client.line();
    let t = Instant::now();
    // One byte every 300 ms: each read is quick, but the line never completes in time.
    for b in b"NOOP NOOP NOOP NOOP NOOP" {
        let sent = s.client.w.write_all(&[*b]).and_then(|_| s.client.w.flush());
        if sent.is_err() || t.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        s.client.line(),
        "-ERR command line not completed in time, closing"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    s.finish();
}

#[test]
fn message_over_100_mb_streams_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mbox");
    // 110 MB body of 100-octet lines, some starting with a dot, stored with LF.
    let line: &[u8] =
        b".a line that starts with a dot, long enough to matter in a big message body.........\n";
    let plain: &[u8] =
        b"an ordinary body line of the big message, padded to the same length of octets.......\n";
    let lines = 110 * 1024 * 1024 / plain.len();
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&p).unwrap());
        f.write_all(b"From big@example.org Mon Jan  1 00:00:00 2024\nSubject: big\n\n")
            .unwrap();
        for k in 0..lines {
            f.write_all(if k % 7 == 0 { line } else { plain }).unwrap();
        }
        assert_eq!(line.len(), plain.len());
        f.write_all(b"\n").unwrap();
        let mut small = Message::simple(2);
        small.blank_after = true;
        f.write_all(&small.stored()).unwrap();
    }
    let dots = lines.div_ceil(7);
    let want_size = "Subject: big\r\n\r\n".len() + lines * (plain.len() + 1);
    let mut s = serve_with(dir.path(), &[], &format!("mbox:{}", p.display()));
    s.client.line();
    assert_eq!(s.client.cmd("LIST 1"), format!("+OK 1 {want_size}"));
    assert_eq!(s.client.cmd("RETR 1"), format!("+OK {want_size} octets"));
    let raw = s.client.body_raw();
    assert_eq!(
        raw.len(),
        want_size + dots,
        "wire octets = size + one stuffed dot per dot line"
    );
    assert_eq!(gen::unstuff(&raw).len(), want_size);
    // Peak memory of the server while it streamed: far below the message size.
    let status = fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        hwm_kb < 32 * 1024,
        "pop-serve peak RSS {hwm_kb} kB while sending a 110 MB message"
    );
    assert!(s.client.cmd("RETR 2").starts_with("+OK"));
    assert_eq!(s.client.body(), Message::simple(2).canonical());
    s.client.cmd("QUIT");
    s.finish();
}

#[test]
fn one_summary_line_per_session_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let mb = one_message_box(dir.path());
    let mut args = serve_args(&dir.path().join("state"));
    let at = args.iter().position(|a| a == "none").unwrap();
    args[at] = "stderr".into();
    args.push(mb);
    let mut s = Served::spawn(&args, &[("USER", "tester"), ("TCPREMOTEIP", "192.0.2.7")]);
    s.client.line();
    s.client.cmd("RETR 1");
    s.client.body();
    s.client.cmd("DELE 2");
    s.client.cmd("QUIT");
    let (_, log) = s.finish();
    // Scan warnings (this mailbox has NUL bytes and no final newline) come first; then the
    // one summary line.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" end=")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        !log.contains("Subject"),
        "no message content in logs: {log}"
    );
    let l = lines[0];
    for field in [
        "user=tester",
        "addr=192.0.2.7",
        "messages=3",
        "retrieved=1",
        "deleted=1",
        "left=2",
        "end=quit",
        "duration_ms=",
    ] {
        assert!(l.contains(field), "{field} missing: {l}");
    }
    assert!(!l.contains("Subject"), "no message content in logs: {l}");
}

/// As root: a Debian-style spool (`root:mail 2775`) where the user cannot create
/// `mailbox.lock`; pop-serve, running as the user, locks through the setgid helper, commits,
/// and leaves the mailbox's owner, group and mode as they were.
#[test]
fn root_mail_2775_spool_locks_through_the_setgid_helper() {
    if !is_root() {
        skip(
            "root_mail_2775_spool_locks_through_the_setgid_helper",
            "needs root to build a root:mail spool and run as nobody",
        );
        return;
    }
    let mail_gid = nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail")
        .gid;
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let top = tempfile::tempdir().unwrap();
    fs::set_permissions(top.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let spool = top.path().join("spool");
    let c = spool.join("c");
    fs::create_dir_all(&c).unwrap();
    for d in [&spool, &c] {
        nix::unistd::chown(
            d.as_path(),
            Some(nix::unistd::Uid::from_raw(0)),
            Some(mail_gid),
        )
        .unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o2775)).unwrap();
    }
    let mbox = c.join("claird");
    let msgs = gen::varied(5, 6);
    fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
    nix::unistd::chown(&mbox, Some(nobody.uid), Some(mail_gid)).unwrap();
    fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
    // The setgid helper, installed as scripts/install does.
    let helper = top.path().join("pop-dotlock");
    fs::copy(bin("pop-dotlock"), &helper).unwrap();
    nix::unistd::chown(&helper, Some(nix::unistd::Uid::from_raw(0)), Some(mail_gid)).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o2755)).unwrap();
    let state = top.path().join("state");
    fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nobody.uid), Some(nobody.gid)).unwrap();

    let run = |helper_arg: Option<&Path>, script: &[&str]| -> Vec<String> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(bin("pop-serve"));
        cmd.args(["--log", "none", "--state-dir"])
            .arg(&state)
            .arg("--hash-depth")
            .arg("1");
        cmd.arg("--spool-dir").arg(&spool);
        match helper_arg {
            Some(h) => cmd.arg("--dotlock-helper").arg(h),
            None => cmd.arg("--no-dotlock-helper"),
        };
        cmd.arg("--lock-timeout").arg("2");
        cmd.env_clear()
            .env("USER", "claird")
            .env("HOME", "/nonexistent");
        let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut c = popspool_tests::pop::Client::new(
            child.stdout.take().unwrap(),
            child.stdin.take().unwrap(),
        );
        let mut out = vec![c.line()];
        if out[0].starts_with("+OK") {
            for cmd in script {
                out.push(c.cmd(cmd));
            }
        }
        drop(c);
        child.wait().unwrap();
        out
    };

    // Without the helper the user cannot take the dotlock. Reading needs none (the read lock),
    // so the session opens; the UPDATE, which does, is a clean temporary failure that deletes
    // nothing.
    let before = fs::read(&mbox).unwrap();
    let out = run(None, &["STAT", "DELE 1", "QUIT"]);
    assert_eq!(out[0], "+OK ", "{out:?}");
    assert!(
        out[1].starts_with(&format!("+OK {} ", msgs.len())),
        "{out:?}"
    );
    assert!(out[3].starts_with("-ERR [SYS/TEMP]"), "{out:?}");
    assert_eq!(fs::read(&mbox).unwrap(), before, "nothing was deleted");
    assert!(!c.join("claird.lock").exists());

    // Through the helper: the session works and the UPDATE commits.
    let out = run(Some(&helper), &["STAT", "DELE 1", "DELE 4", "QUIT"]);
    assert_eq!(out[0], "+OK ");
    assert!(out[4].starts_with("+OK"), "{out:?}");
    let kept: Vec<Message> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i != 3)
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(fs::read(&mbox).unwrap(), gen::mbox_bytes(&kept));
    let m = fs::metadata(&mbox).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (nobody.uid.as_raw(), mail_gid.as_raw(), 0o600)
    );
    assert!(!c.join("claird.lock").exists(), "the dotlock was released");
}
