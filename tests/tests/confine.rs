//! pop-serve's confinement from the outside, through the real binary: no_new_privs in
//! /proc/PID/status, and (through the debug build's test-only hooks `POPSPOOL_TEST_OPEN` and
//! `POPSPOOL_TEST_EXEC`, see pop-serve(8)) EACCES for `/etc/passwd`, another user's mailbox, a
//! file beside the mailbox and exec of `/bin/sh`; the mailbox and the state directory stay
//! usable, and (as root) a Debian `root:mail 2775` spool still locks through the setgid
//! helper, now run by the lock broker.

use popspool_tests::gen;
use popspool_tests::hooks::{assert_allowed, assert_denied, kernel_has_landlock};
use popspool_tests::pop::{Client, Served};
use popspool_tests::{bin, is_root, skip};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn join_paths(paths: &[&Path]) -> std::ffi::OsString {
    std::env::join_paths(paths).unwrap()
}

/// `NoNewPrivs:` of a running process.
fn no_new_privs(pid: u32) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:"))
        .map(|v| v.trim().to_string())
        .expect("NoNewPrivs line")
}

/// Soft and hard `Max open files` of a running process.
fn max_open_files(pid: u32) -> String {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let v: Vec<&str> = line.split_whitespace().collect();
    format!("{} {}", v[3], v[4])
}

fn serve(mailbox: &str, state: &Path, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Served {
    let mut args: Vec<String> = vec!["--log".into(), "stderr".into(), "--state-dir".into()];
    args.push(state.display().to_string());
    args.push("--no-dotlock-helper".into());
    if is_root() {
        args.push("--allow-root".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(mailbox.into());
    let mut cmd = Command::new(bin("pop-serve"));
    cmd.args(&args)
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn pop-serve");
    let client = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    Served { child, client }
}

#[test]
fn mbox_session_is_confined_to_its_mailbox_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let msgs = gen::varied(3, 4);
    fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
    let theirs = other.path().join("alice");
    fs::write(&theirs, gen::mbox_bytes(&gen::varied(4, 1))).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o644)).unwrap();
    let state = dir.path().join("state");
    let passwd = Path::new("/etc/passwd");
    let sh = Path::new("/bin/sh");
    let opens = join_paths(&[passwd, &theirs, &mbox]);
    let mut s = serve(
        &format!("mbox:{}", mbox.display()),
        &state,
        &[],
        &[
            ("POPSPOOL_TEST_OPEN", &opens),
            ("POPSPOOL_TEST_EXEC", sh.as_os_str()),
        ],
    );
    assert!(s.client.line().starts_with("+OK"));
    assert_eq!(no_new_privs(s.child.id()), "1");
    assert_eq!(max_open_files(s.child.id()), "64 64");
    assert!(s
        .client
        .cmd("STAT")
        .starts_with(&format!("+OK {} ", msgs.len())));
    assert!(s.client.cmd("DELE 2").starts_with("+OK"));
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    let (code, log) = s.finish();
    assert_eq!(code, 0, "{log}");
    let kept: Vec<_> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(fs::read(&mbox).unwrap(), gen::mbox_bytes(&kept), "{log}");
    assert!(!dir.path().join("mbox.lock").exists());
    if !kernel_has_landlock() {
        skip(
            "mbox_session_is_confined_to_its_mailbox_and_state",
            "the kernel has no Landlock: access checks not run",
        );
        assert!(log.contains("landlock: none"), "{log}");
        return;
    }
    assert!(log.contains("landlock: full"), "{log}");
    assert_denied(&log, "test-open", passwd);
    assert_denied(&log, "test-open", &theirs);
    assert_allowed(&log, "test-open", &mbox);
    assert_denied(&log, "test-exec", sh);
}

#[test]
fn maildir_session_is_confined_and_still_moves_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    fs::write(md.join("new/1700000000.M1P1.host"), b"Subject: a\n\none\n").unwrap();
    fs::write(md.join("new/1700000001.M2P1.host"), b"Subject: b\n\ntwo\n").unwrap();
    let state = dir.path().join("state");
    let passwd = Path::new("/etc/passwd");
    let beside = dir.path().join("beside");
    fs::write(&beside, b"not mail\n").unwrap();
    let opens = join_paths(&[passwd, &beside]);
    let mut s = serve(
        &format!("maildir:{}", md.display()),
        &state,
        &[],
        &[("POPSPOOL_TEST_OPEN", &opens)],
    );
    assert!(s.client.line().starts_with("+OK"));
    assert_eq!(no_new_privs(s.child.id()), "1");
    assert!(s.client.cmd("STAT").starts_with("+OK 2 "));
    assert!(s.client.cmd("RETR 1").starts_with("+OK"));
    let _ = s.client.body();
    assert!(s.client.cmd("DELE 2").starts_with("+OK"));
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    let (code, log) = s.finish();
    assert_eq!(code, 0, "{log}");
    let names = |sub: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(md.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(names("new").is_empty(), "{:?} {log}", names("new"));
    assert_eq!(names("cur").len(), 1, "{log}");
    assert!(names("cur")[0].starts_with("1700000000.M1P1.host"), "{log}");
    if !kernel_has_landlock() {
        skip(
            "maildir_session_is_confined_and_still_moves_and_deletes",
            "the kernel has no Landlock: access checks not run",
        );
        return;
    }
    assert!(log.contains("landlock: full"), "{log}");
    assert_denied(&log, "test-open", passwd);
    assert_denied(&log, "test-open", &beside);
}

/// `--require-sandbox` serves when the kernel enforces Landlock fully; when it has none (a
/// seccomp filter makes the Landlock system calls fail with ENOSYS, as on a kernel without
/// Landlock), it refuses with `-ERR [SYS/TEMP]` and exit 111, and without the option the
/// session is served and the log says `landlock: none`.
#[test]
fn require_sandbox_refuses_an_unconfined_session() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    fs::write(&mbox, gen::mbox_bytes(&gen::varied(5, 2))).unwrap();
    let state = dir.path().join("state");
    let mb = format!("mbox:{}", mbox.display());

    if kernel_has_landlock() {
        let mut s = serve(&mb, &state, &["--require-sandbox"], &[]);
        assert!(s.client.line().starts_with("+OK"));
        assert!(s.client.cmd("QUIT").starts_with("+OK"));
        let (code, log) = s.finish();
        assert_eq!(code, 0, "{log}");
    }

    let run = |require: bool| -> (String, i32, String) {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin("pop-serve"));
        cmd.args(["--log", "stderr", "--no-dotlock-helper", "--state-dir"])
            .arg(&state);
        if is_root() {
            cmd.arg("--allow-root");
        }
        if require {
            cmd.arg("--require-sandbox");
        }
        cmd.arg(&mb)
            .env("USER", "tester")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (prctl) between fork and exec.
        unsafe {
            cmd.pre_exec(no_landlock_filter);
        }
        let mut child = cmd.spawn().unwrap();
        let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        let greeting = c.line();
        if greeting.starts_with("+OK") {
            c.cmd("QUIT");
        }
        drop(c);
        let out = child.wait_with_output().unwrap();
        (
            greeting,
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (greeting, code, log) = run(true);
    assert!(greeting.starts_with("-ERR [SYS/TEMP]"), "{greeting} {log}");
    assert_eq!(code, 111, "{log}");
    assert!(log.contains("landlock: none (ABI 0)"), "{log}");
    let (greeting, code, log) = run(false);
    assert!(greeting.starts_with("+OK"), "{greeting} {log}");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("landlock: none (ABI 0)"), "{log}");
}

/// A seccomp filter (x86_64 and aarch64 numbers, which are the same for these calls) that
/// answers the three Landlock system calls with ENOSYS: a kernel without Landlock, as far as
/// the program can tell.
fn no_landlock_filter() -> std::io::Result<()> {
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf: 0,
        k,
    };
    let filter = [
        // seccomp_data.nr is at offset 0.
        stmt((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 0),
        jeq(libc::SYS_landlock_create_ruleset as u32, 3),
        jeq(libc::SYS_landlock_add_rule as u32, 2),
        jeq(libc::SYS_landlock_restrict_self as u32, 1),
        stmt((libc::BPF_RET | libc::BPF_K) as u16, RET_ALLOW),
        stmt((libc::BPF_RET | libc::BPF_K) as u16, enosys),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments, then with a pointer to a filter that outlives
    // the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// As root: a Debian `root:mail 2775` spool, pop-serve as nobody. Confined, it may not create
/// the dotlock or exec anything, yet the UPDATE commits: the broker ran the setgid helper. It
/// may read its own mailbox and nothing beside it, not even a file of its own user.
#[test]
fn root_mail_2775_spool_confined_session_locks_through_the_broker() {
    let name = "root_mail_2775_spool_confined_session_locks_through_the_broker";
    if !is_root() {
        skip(
            name,
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
    fs::create_dir(&spool).unwrap();
    nix::unistd::chown(&spool, Some(0.into()), Some(mail_gid)).unwrap();
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o2775)).unwrap();
    let own = |p: &PathBuf, uid: nix::unistd::Uid, mode: u32| {
        nix::unistd::chown(p, Some(uid), Some(mail_gid)).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let mbox = spool.join("claird");
    let msgs = gen::varied(7, 5);
    fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
    own(&mbox, nobody.uid, 0o600);
    // Another user's mailbox, readable to everyone by its mode: only Landlock keeps it out.
    let theirs = spool.join("alice");
    fs::write(&theirs, gen::mbox_bytes(&gen::varied(8, 1))).unwrap();
    own(&theirs, 0.into(), 0o644);
    // A file of the user's own beside the mailbox.
    let beside = spool.join("claird.notes");
    fs::write(&beside, b"mine\n").unwrap();
    own(&beside, nobody.uid, 0o600);
    let helper = top.path().join("pop-dotlock");
    fs::copy(bin("pop-dotlock"), &helper).unwrap();
    nix::unistd::chown(&helper, Some(0.into()), Some(mail_gid)).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o2755)).unwrap();
    let state = top.path().join("state");
    fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nobody.uid), Some(nobody.gid)).unwrap();

    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin("pop-serve"));
    cmd.args([
        "--log",
        "stderr",
        "--hash-depth",
        "0",
        "--lock-timeout",
        "5",
    ])
    .arg("--state-dir")
    .arg(&state)
    .arg("--spool-dir")
    .arg(&spool)
    .arg("--dotlock-helper")
    .arg(&helper)
    .env_clear()
    .env("USER", "claird")
    .env("HOME", "/nonexistent")
    .env(
        "POPSPOOL_TEST_OPEN",
        join_paths(&[Path::new("/etc/passwd"), &theirs, &beside, &mbox]),
    )
    .env("POPSPOOL_TEST_EXEC", "/bin/sh")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
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
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let greeting = c.line();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert_eq!(no_new_privs(pid), "1");
    assert!(c.cmd("STAT").starts_with(&format!("+OK {} ", msgs.len())));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("DELE 3").starts_with("+OK"));
    let quit = c.cmd("QUIT");
    drop(c);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(quit.starts_with("+OK"), "{quit} {log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    let kept: Vec<_> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i != 2)
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(fs::read(&mbox).unwrap(), gen::mbox_bytes(&kept), "{log}");
    assert!(!spool.join("claird.lock").exists(), "dotlock left behind");
    if !kernel_has_landlock() {
        skip(name, "the kernel has no Landlock: access checks not run");
        return;
    }
    assert!(log.contains("landlock: full"), "{log}");
    assert_denied(&log, "test-open", Path::new("/etc/passwd"));
    assert_denied(&log, "test-open", &theirs);
    assert_denied(&log, "test-open", &beside);
    assert_allowed(&log, "test-open", &mbox);
    assert_denied(&log, "test-exec", Path::new("/bin/sh"));
}
