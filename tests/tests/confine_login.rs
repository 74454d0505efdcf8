//! The login chain's confinement from the outside, through the real binaries.
//!
//! pop-checkpassword reads fd 3 and checks the password in a confined verifier child: the
//! debug build's test-only hooks (`POPSPOOL_TEST_OPEN`, `POPSPOOL_TEST_EXEC`, run right after
//! the verifier confines itself) show that it can open its account sources and nothing else,
//! and exec nothing; the parent still becomes the user and execs PROG, without
//! no_new_privs (PROG reports its own /proc status); the exit codes 1, 2 and 111 are those of
//! the interface; `--require-sandbox` refuses (111) unless Landlock is fully enforced; and a
//! login through it under tcpserver still reaches pop-serve.
//!
//! pop-popup talks to the client in a confined dialogue child: /proc shows it with
//! `NoNewPrivs: 1`, no capability in any set, uid nobody and `Max open files` 16, its hooks
//! show EACCES for /etc/passwd and exec of /bin/sh; the parent keeps the three capabilities
//! the checkpassword program needs and runs it; `--require-sandbox` answers
//! `-ERR [SYS/TEMP]` and exits 111 when Landlock is partial.

use popspool_tests::gen;
use popspool_tests::hooks::{assert_allowed, assert_denied};
use popspool_tests::listen::{self, Launcher};
use popspool_tests::pop::Client;
use popspool_tests::{bin, is_root, skip};
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "s3cret pass";

/// True when the running kernel has Landlock enabled (it answers the ABI version query).
fn kernel_abi() -> i64 {
    spool_wire::sandbox::kernel_abi()
}

/// The `test-self` line of the log.
fn self_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("test-self "))
        .unwrap_or_else(|| panic!("no test-self line in the log:\n{log}"))
}

/// `NAME=0x...` of a `test-self` line.
fn field_hex(line: &str, name: &str) -> u64 {
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=0x")))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    u64::from_str_radix(v, 16).unwrap()
}

/// A passwd-file with one account (the invoking user's ids, or 65534 as root) and its home.
struct Accounts {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
}

impl Accounts {
    fn new() -> Accounts {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = if is_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        if is_root() {
            nix::unistd::chown(
                &home,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .unwrap();
        }
        let users = format!(
            "demo:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}::\n",
            home.display()
        );
        fs::write(dir.path().join("users"), users).unwrap();
        fs::write(dir.path().join("beside"), "not an account source\n").unwrap();
        Accounts { dir, uid, gid }
    }

    fn users(&self) -> PathBuf {
        self.dir.path().join("users")
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--log".into(),
            "stderr".into(),
            "--source".into(),
            "passwd-file".into(),
            "--min-uid".into(),
            "1".into(),
            "--passwd-file".into(),
            self.users().display().to_string(),
        ]
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs pop-checkpassword with `fd3` on fd 3 (None: closed), then `prog`.
fn checkpassword(
    args: &[String],
    fd3: Option<&[u8]>,
    env: &[(&str, &std::ffi::OsStr)],
    prog: &[&str],
) -> Run {
    let mut cmd = Command::new(bin("pop-checkpassword"));
    cmd.args(args)
        .args(prog)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (r, w): (Option<OwnedFd>, Option<OwnedFd>) = match fd3 {
        Some(_) => {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let raw = r.as_ref().map(|r| r.as_raw_fd());
    // SAFETY: between fork and exec only fcntl/dup2/close, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            match raw {
                Some(3) => {
                    if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Some(fd) => {
                    if libc::dup2(fd, 3) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                None => {
                    libc::close(3);
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(r);
    if let (Some(w), Some(data)) = (w, fd3) {
        let _ = fs::File::from(w).write_all(data);
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn creds(user: &str, pw: &str) -> Vec<u8> {
    format!("{user}\0{pw}\0<1.2@test>\0").into_bytes()
}

const STATUS: &[&str] = &[
    "/bin/sh",
    "-c",
    "grep -E '^(Uid|NoNewPrivs):' /proc/self/status",
];

#[test]
fn checkpassword_verifier_reaches_only_its_source() {
    if kernel_abi() < 1 {
        skip(
            "checkpassword_verifier_reaches_only_its_source",
            "no Landlock in this kernel",
        );
        return;
    }
    let a = Accounts::new();
    let beside = a.dir.path().join("beside");
    let passwd = Path::new("/etc/passwd");
    let opens = std::env::join_paths([a.users().as_path(), &beside, passwd]).unwrap();
    let r = checkpassword(
        &a.args(),
        Some(&creds("demo", PASSWORD)),
        &[
            ("POPSPOOL_TEST_OPEN", &opens),
            ("POPSPOOL_TEST_EXEC", "/bin/sh".as_ref()),
            ("POPSPOOL_TEST_SELF", "1".as_ref()),
        ],
        STATUS,
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // no_new_privs, RLIMIT_NOFILE 16, and of the capabilities at most CAP_DAC_READ_SEARCH.
    let me = self_line(&r.stderr);
    assert!(me.contains(" nnp=1 nofile=16 "), "{me}");
    let read_search = 1u64 << 2;
    for set in ["capeff", "capprm"] {
        let mask = field_hex(me, set);
        assert_eq!(mask & !read_search, 0, "{set} in {me}");
    }
    assert_allowed(&r.stderr, "test-open", &a.users());
    assert_denied(&r.stderr, "test-open", &beside);
    assert_denied(&r.stderr, "test-open", passwd);
    assert_denied(&r.stderr, "test-exec", Path::new("/bin/sh"));
    // The parent is not confined: PROG runs, as the user, without no_new_privs (pop-serve's
    // lock broker needs the setgid helper).
    assert!(r.stdout.contains("NoNewPrivs:\t0"), "{}", r.stdout);
    let u = a.uid;
    assert!(
        r.stdout.contains(&format!("Uid:\t{u}\t{u}\t{u}\t{u}")),
        "{}",
        r.stdout
    );
    let _ = a.gid;
}

#[test]
fn checkpassword_system_source_reach_is_passwd_shadow_and_shells() {
    if kernel_abi() < 1 {
        skip(
            "checkpassword_system_source_reach_is_passwd_shadow_and_shells",
            "no Landlock in this kernel",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (passwd, shadow, shells) = (
        dir.path().join("passwd"),
        dir.path().join("shadow"),
        dir.path().join("shells"),
    );
    fs::write(&passwd, "x:x:4242:4242::/:/bin/sh\n").unwrap();
    fs::write(&shadow, "x:!:19000::::::\n").unwrap();
    fs::write(&shells, "/bin/sh\n").unwrap();
    let opens = std::env::join_paths([
        passwd.as_path(),
        &shadow,
        &shells,
        Path::new("/etc/group"),
        Path::new("/etc/nsswitch.conf"),
    ])
    .unwrap();
    let args: Vec<String> = vec![
        "--log".into(),
        "stderr".into(),
        "--passwd".into(),
        passwd.display().to_string(),
        "--shadow".into(),
        shadow.display().to_string(),
        "--require-valid-shell".into(),
        "--shells".into(),
        shells.display().to_string(),
    ];
    let r = checkpassword(
        &args,
        Some(&creds("x", "pw")),
        &[("POPSPOOL_TEST_OPEN", &opens)],
        &["/bin/true"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    for p in [&passwd, &shadow, &shells] {
        assert_allowed(&r.stderr, "test-open", p);
    }
    assert_denied(&r.stderr, "test-open", Path::new("/etc/group"));
    assert_denied(&r.stderr, "test-open", Path::new("/etc/nsswitch.conf"));
}

#[test]
fn checkpassword_exit_codes_unchanged() {
    let a = Accounts::new();
    let args = a.args();
    let ok = checkpassword(&args, Some(&creds("demo", PASSWORD)), &[], &["/bin/true"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let wrong = checkpassword(&args, Some(&creds("demo", "nope")), &[], &["/bin/true"]);
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("user=demo"), "{}", wrong.stderr);
    assert!(wrong.stderr.contains("wrong password"), "{}", wrong.stderr);
    let unknown = checkpassword(&args, Some(&creds("nobody-here", "x")), &[], &["/bin/true"]);
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);
    let misuse = checkpassword(&args, Some(b"demo"), &[], &["/bin/true"]);
    assert_eq!(misuse.code, 2, "{}", misuse.stderr);
    let closed = checkpassword(&args, None, &[], &["/bin/true"]);
    assert_eq!(closed.code, 2, "{}", closed.stderr);
    // A source that cannot be read: temporary failure.
    let mut missing = args.clone();
    let n = missing.len();
    missing[n - 1] = a.dir.path().join("absent").display().to_string();
    let temp = checkpassword(
        &missing,
        Some(&creds("demo", PASSWORD)),
        &[],
        &["/bin/true"],
    );
    assert_eq!(temp.code, 111, "{}", temp.stderr);
    // A program that cannot be exec'd: temporary failure too (in the parent).
    let noexec = checkpassword(
        &args,
        Some(&creds("demo", PASSWORD)),
        &[],
        &["/nonexistent/prog"],
    );
    assert_eq!(noexec.code, 111, "{}", noexec.stderr);
}

#[test]
fn checkpassword_require_sandbox() {
    let a = Accounts::new();
    let mut args = a.args();
    args.push("--require-sandbox".into());
    let abi = kernel_abi();
    let r = checkpassword(&args, Some(&creds("demo", PASSWORD)), &[], &["/bin/true"]);
    if abi >= 7 {
        assert_eq!(r.code, 0, "{}", r.stderr);
    } else {
        assert_eq!(r.code, 111, "{}", r.stderr);
    }
    if abi < 4 {
        skip(
            "checkpassword_require_sandbox (partial)",
            "kernel Landlock ABI below 4",
        );
        return;
    }
    // As on an older kernel (debug builds only): partial, refused with --require-sandbox,
    // logged and allowed without it.
    let old: &[(&str, &std::ffi::OsStr)] = &[("POPSPOOL_TEST_LANDLOCK_ABI", "3".as_ref())];
    let r = checkpassword(&args, Some(&creds("demo", PASSWORD)), old, &["/bin/true"]);
    assert_eq!(r.code, 111, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--require-sandbox: landlock: partial (ABI 3)"),
        "{}",
        r.stderr
    );
    let r = checkpassword(
        &a.args(),
        Some(&creds("demo", PASSWORD)),
        old,
        &["/bin/true"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("verifier landlock: partial (ABI 3)"),
        "{}",
        r.stderr
    );
}

/// pop-popup (confined dialogue) → pop-checkpassword (confined verifier, both with
/// `--require-sandbox` when the kernel allows it) → pop-serve under tcpserver on loopback: a
/// wrong password, then USER/PASS with STAT pipelined after PASS, answered by pop-serve.
#[test]
fn login_through_the_confined_verifier_reaches_pop_serve() {
    let a = Accounts::new();
    let spool = a.dir.path().join("spool");
    fs::create_dir_all(spool.join("d")).unwrap();
    let mbox = spool.join("d/demo");
    let msgs = gen::varied(3, 2);
    fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
    if is_root() {
        for p in [spool.join("d"), mbox.clone()] {
            nix::unistd::chown(
                &p,
                Some(nix::unistd::Uid::from_raw(a.uid)),
                Some(nix::unistd::Gid::from_raw(a.gid)),
            )
            .unwrap();
        }
    }
    fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
    let full = kernel_abi() >= 7;
    let mut chain: Vec<String> = vec![bin("pop-popup").display().to_string()];
    chain.extend(["--log", "stderr", "--fail-delay-ms", "10"].map(String::from));
    if full {
        chain.push("--require-sandbox".into());
    }
    chain.push("popspool.test".into());
    chain.push(bin("pop-checkpassword").display().to_string());
    chain.extend(a.args());
    if full {
        chain.push("--require-sandbox".into());
    }
    chain.push(bin("pop-serve").display().to_string());
    chain.extend(["--log", "stderr", "--no-dotlock-helper", "--spool-dir"].map(String::from));
    chain.push(spool.display().to_string());
    let log_path = a.dir.path().join("chain.log");
    let log = fs::File::create(&log_path).unwrap();
    let Some(l) = listen::start(Launcher::Tcpserver, &chain, Stdio::from(log)) else {
        skip(
            "login_through_the_confined_verifier_reaches_pop_serve",
            "tcpserver not installed",
        );
        return;
    };
    let s = TcpStream::connect(("127.0.0.1", l.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut c = Client::new(s.try_clone().unwrap(), s);
    assert!(c.line().starts_with("+OK"));
    assert!(c.cmd("USER demo").starts_with("+OK"));
    let r = c.cmd("PASS wrong");
    assert!(r.starts_with("-ERR"), "{r}");
    assert!(c.cmd("USER demo").starts_with("+OK"));
    // PASS and STAT in one write: the dialogue must leave STAT to pop-serve.
    c.send(&format!("PASS {PASSWORD}\r\nSTAT"));
    let r = c.line();
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    assert!(r.starts_with("+OK"), "{r}\n{}", log());
    let stat = c.line();
    assert!(stat.starts_with(&format!("+OK {} ", msgs.len())), "{stat}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    drop(l);
    let log = log();
    assert!(log.contains("user=demo"), "{log}");
    assert!(log.contains("wrong password"), "{log}");
    assert!(log.contains("login ok"), "{log}");
}

/// pop-popup started on pipes in front of pop-checkpassword (passwd-file `a`) and a SUBPROG
/// that answers `+OK served` and reports its ids and no_new_privs.
fn popup(a: &Accounts, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> std::process::Child {
    let mut cmd = Command::new(bin("pop-popup"));
    cmd.args(["--log", "stderr", "--fail-delay-ms", "10"])
        .args(extra)
        .arg("popspool.test")
        .arg(bin("pop-checkpassword"))
        .args(a.args())
        .args([
            "/bin/sh",
            "-c",
            "printf '+OK served %s\\r\\n' \"$(grep -E '^(Uid|NoNewPrivs):' /proc/self/status | tr '\\t\\n' '  ')\"",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn pop-popup")
}

/// The children of `pid` (the popup's dialogue while no check runs).
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn status_field(pid: u32, name: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn popup_dialogue_is_confined_and_the_parent_still_checks() {
    if !is_root() {
        skip(
            "popup_dialogue_is_confined_and_the_parent_still_checks",
            "needs root (the dialogue drops to nobody)",
        );
        return;
    }
    if kernel_abi() < 1 {
        skip(
            "popup_dialogue_is_confined_and_the_parent_still_checks",
            "no Landlock in this kernel",
        );
        return;
    }
    let a = Accounts::new();
    let mut child = popup(
        &a,
        &[],
        &[
            ("POPSPOOL_TEST_OPEN", "/etc/passwd".as_ref()),
            ("POPSPOOL_TEST_EXEC", "/bin/sh".as_ref()),
            ("POPSPOOL_TEST_SELF", "1".as_ref()),
        ],
    );
    let parent = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    assert!(c.line().starts_with("+OK"), "greeting");
    // Waiting for a command: the dialogue is the parent's only child.
    let kids = children(parent);
    assert_eq!(kids.len(), 1, "{kids:?}");
    let d = kids[0];
    assert_eq!(status_field(d, "NoNewPrivs:"), "1");
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
        assert_eq!(status_field(d, set), "0000000000000000", "{set}");
    }
    let uid = status_field(d, "Uid:");
    assert!(uid.split_whitespace().all(|u| u == "65534"), "Uid: {uid}");
    let limits = fs::read_to_string(format!("/proc/{d}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(nofile.split_whitespace().nth(3) == Some("16"), "{nofile}");
    // The parent keeps exactly what the checkpassword program needs.
    assert_eq!(status_field(parent, "CapBnd:"), "00000000000000c4");
    assert_eq!(status_field(parent, "NoNewPrivs:"), "0");
    // A wrong password, then a good one: the parent runs the chain.
    assert!(c.cmd("USER demo").starts_with("+OK"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    assert!(c.cmd("USER demo").starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PASSWORD}"));
    assert!(r.starts_with("+OK served "), "{r}");
    assert!(r.contains("NoNewPrivs: 0"), "{r}");
    drop(c);
    assert!(child.wait().unwrap().success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    let mine = format!("pop-popup[{d}]");
    let from_dialogue: String = log
        .lines()
        .filter(|l| l.starts_with(&mine))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_denied(&from_dialogue, "test-open", Path::new("/etc/passwd"));
    assert_denied(&from_dialogue, "test-exec", Path::new("/bin/sh"));
    let me = self_line(&from_dialogue);
    assert!(
        me.contains("uid=65534 nnp=1 nofile=16 capeff=0x0 capprm=0x0"),
        "{me}"
    );
    assert!(log.contains("result=fail"), "{log}");
    assert!(log.contains("result=ok"), "{log}");
}

#[test]
fn popup_require_sandbox() {
    let a = Accounts::new();
    let old: &[(&str, &std::ffi::OsStr)] = &[("POPSPOOL_TEST_LANDLOCK_ABI", "3".as_ref())];
    if kernel_abi() < 4 {
        skip("popup_require_sandbox", "kernel Landlock ABI below 4");
        return;
    }
    // As on an older kernel: refused with --require-sandbox, before any greeting.
    let mut child = popup(&a, &["--require-sandbox"], old);
    let out = {
        drop(child.stdin.take());
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut s).unwrap();
        s
    };
    let code = child.wait().unwrap().code();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(out, "-ERR [SYS/TEMP] sandbox unavailable\r\n", "{log}");
    assert_eq!(code, Some(111), "{log}");
    assert!(
        log.contains("--require-sandbox: landlock: partial (ABI 3)"),
        "{log}"
    );
    // Without it: served, and the partial status logged.
    let mut child = popup(&a, &[], old);
    let mut stderr = child.stderr.take().unwrap();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    assert!(c.line().starts_with("+OK"));
    assert!(c.cmd("USER demo").starts_with("+OK"));
    assert!(c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK served"));
    drop(c);
    child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert!(log.contains("dialogue landlock: partial (ABI 3)"), "{log}");
    // The real kernel: --require-sandbox serves when Landlock is full.
    if kernel_abi() >= 7 {
        let mut child = popup(&a, &["--require-sandbox"], &[]);
        let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        assert!(c.line().starts_with("+OK"));
        assert!(c.cmd("USER demo").starts_with("+OK"));
        assert!(c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK served"));
        drop(c);
        assert!(child.wait().unwrap().success());
    }
}

/// The parent has no CAP_KILL, so the kernel's parent-death signal could not reach a
/// dialogue running as nobody: a dialogue left alone ends by the AUTHORIZATION timeout.
#[test]
fn popup_dialogue_without_its_parent_ends_by_the_timeout() {
    let a = Accounts::new();
    let mut child = popup(&a, &["--timeout", "2"], &[]);
    let parent = child.id();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    assert!(c.line().starts_with("+OK"), "greeting");
    let kids = children(parent);
    assert_eq!(kids.len(), 1, "{kids:?}");
    let d = kids[0];
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    };
    let mut waited = 0;
    while !gone(d) && waited < 300 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert!(gone(d), "dialogue {d} outlived its parent and its timeout");
    assert!(c.line().starts_with("-ERR"), "the timeout's answer");
}

/// A malformed request (debug hook `POPSPOOL_TEST_BAD_REQUEST`, standing in for a subverted
/// dialogue) is not answered: the parent logs it, kills the dialogue (as root: though it has
/// no CAP_KILL, by taking the dialogue's uid as its effective uid for the call) and exits 111.
#[test]
fn popup_parent_kills_a_dialogue_that_breaks_the_protocol() {
    let a = Accounts::new();
    let mut child = popup(&a, &[], &[("POPSPOOL_TEST_BAD_REQUEST", "1".as_ref())]);
    let mut stderr = child.stderr.take().unwrap();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    assert!(c.line().starts_with("+OK"), "greeting");
    assert!(c.cmd("USER demo").starts_with("+OK"));
    c.send(&format!("PASS {PASSWORD}"));
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut c.r, &mut rest);
    assert_eq!(rest, "", "the killed dialogue answers nothing");
    let code = child.wait().unwrap().code();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert_eq!(code, Some(111), "{log}");
    assert!(log.contains("dialogue: "), "{log}");
    assert!(!log.contains("result=ok"), "{log}");
}
