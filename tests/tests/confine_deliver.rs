//! pop-deliver's confinement from the outside, through the real binary (see CONFINEMENT in
//! pop-deliver(8)): while it waits for the message it shows `NoNewPrivs: 1` and its
//! `RLIMIT_NOFILE`; the debug build's test-only hooks (`POPSPOOL_TEST_OPEN`,
//! `POPSPOOL_TEST_EXEC`) get EACCES for `/etc/passwd`, another user's mailbox, a file beside a
//! target and exec of `/bin/sh`; the delivery itself still works, into a root:mail 2775 spool
//! as a user too (the lock broker runs the setgid helper). Then Landlock "partial" and "none"
//! (`POPSPOOL_TEST_LANDLOCK_ABI`, debug builds) for pop-deliver and pop-serve: the file rules
//! hold, delivery and service go on, and `--require-sandbox` refuses.

use popspool_tests::hooks::{assert_allowed, assert_denied, kernel_has_landlock};
use popspool_tests::pop::Client;
use popspool_tests::{bin, gen, is_root, skip};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const MESSAGE: &[u8] = b"Subject: confined\n\nbody line\n";

fn join_paths(paths: &[&Path]) -> std::ffi::OsString {
    std::env::join_paths(paths).unwrap()
}

fn proc_field(pid: u32, file: &str, prefix: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {prefix} in /proc/{pid}/{file}"))
}

/// What a pop-deliver run showed: its exit code, its log (stderr), and, read while it waited
/// for the message (after its hooks ran), `NoNewPrivs` and `Max open files` (soft hard).
struct Outcome {
    code: i32,
    log: String,
    no_new_privs: String,
    max_open_files: String,
}

/// Runs pop-deliver (`--log stderr`) with `args`, the hooks in `env`, and `pre` between fork
/// and exec. Once the last hook line (or the `landlock:` line without hooks) is logged, the
/// process is confined and blocked on stdin: /proc is read then, the message sent after.
fn deliver(
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    as_user: Option<(u32, u32)>,
) -> Outcome {
    let mut cmd = Command::new(bin("pop-deliver"));
    cmd.args(["--log", "stderr"])
        .args(args)
        .env_remove("SENDER")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some((uid, gid)) = as_user {
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
    }
    let hooks = env.iter().any(|(k, _)| k.starts_with("POPSPOOL_TEST_"));
    let last = if env.iter().any(|(k, _)| *k == "POPSPOOL_TEST_EXEC") {
        "test-exec"
    } else if hooks {
        "test-open"
    } else {
        "landlock:"
    };
    let mut child: Child = cmd.spawn().expect("spawn pop-deliver");
    let pid = child.id();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let opens = env
        .iter()
        .find(|(k, _)| *k == "POPSPOOL_TEST_OPEN")
        .map_or(0, |(_, v)| std::env::split_paths(v).count());
    let mut seen_opens = 0;
    let (mut nnp, mut nofile) = (String::new(), String::new());
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        log.push_str(&line);
        if line.contains("test-open ") {
            seen_opens += 1;
        }
        let ready = match last {
            "test-open" => seen_opens == opens,
            l => line.contains(l),
        };
        if ready {
            nnp = proc_field(pid, "status", "NoNewPrivs:");
            let v: Vec<String> = proc_field(pid, "limits", "Max open files")
                .split_whitespace()
                .take(2)
                .map(str::to_string)
                .collect();
            nofile = v.join(" ");
            break;
        }
    }
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(MESSAGE);
    }
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    log.push_str(&rest);
    let status = child.wait().unwrap();
    Outcome {
        code: status.code().unwrap_or(-1),
        log,
        no_new_privs: nnp,
        max_open_files: nofile,
    }
}

fn mbox_with(path: &Path, seed: u64) -> Vec<u8> {
    let bytes = gen::mbox_bytes(&gen::varied(seed, 1));
    fs::write(path, &bytes).unwrap();
    bytes
}

/// Any caller: an explicit mbox and an existing Maildir. The mbox's own directory is in
/// reach (its dotlock is made there); the Maildir's parent, /etc/passwd, another user's
/// mailbox and exec are not.
#[test]
fn explicit_targets_are_all_a_delivery_reaches() {
    let top = tempfile::tempdir().unwrap();
    let boxes = top.path().join("boxes");
    fs::create_dir(&boxes).unwrap();
    let mbox = boxes.join("mbox");
    let md = top.path().join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    let beside_md = top.path().join("beside");
    fs::write(&beside_md, b"not mail\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let theirs = other.path().join("alice");
    mbox_with(&theirs, 2);
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o644)).unwrap();
    let state = top.path().join("state");
    fs::create_dir(&state).unwrap();
    let passwd = Path::new("/etc/passwd");
    let opens = join_paths(&[passwd, &theirs, &beside_md, &state]);
    let mb = format!("mbox:{}", mbox.display());
    let mdarg = format!("maildir:{}", md.display());
    let o = deliver(
        &[
            "--no-dotlock-helper",
            "--state-dir",
            state.to_str().unwrap(),
            "--mailbox",
            &mb,
            "--mailbox",
            &mdarg,
        ],
        &[
            ("POPSPOOL_TEST_OPEN", &opens),
            ("POPSPOOL_TEST_EXEC", std::ffi::OsStr::new("/bin/sh")),
        ],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.log);
    assert_eq!(o.no_new_privs, "1", "{}", o.log);
    // DELIVER_MAX_OPEN_FILES + 2 targets × DELIVER_OPEN_FILES_PER_TARGET.
    assert_eq!(o.max_open_files, "36 36", "{}", o.log);
    let got = fs::read(&mbox).unwrap();
    assert!(got.starts_with(b"From MAILER-DAEMON "), "{}", o.log);
    assert!(
        got.ends_with(b"Subject: confined\n\nbody line\n\n"),
        "{}",
        o.log
    );
    assert_eq!(
        fs::read_dir(md.join("new")).unwrap().count(),
        1,
        "{}",
        o.log
    );
    if !kernel_has_landlock() {
        skip(
            "explicit_targets_are_all_a_delivery_reaches",
            "the kernel has no Landlock: access checks not run",
        );
        assert!(o.log.contains("landlock: none"), "{}", o.log);
        return;
    }
    assert!(o.log.contains("landlock: full"), "{}", o.log);
    assert_denied(&o.log, "test-open", passwd);
    assert_denied(&o.log, "test-open", &theirs);
    assert_denied(&o.log, "test-open", &beside_md);
    assert_allowed(&o.log, "test-open", &state);
    assert_denied(&o.log, "test-exec", Path::new("/bin/sh"));
}

/// As root from an MTA: a hashed spool, two users. Each user's hash directory is in reach
/// (mailbox, dotlock), another hash directory's mailbox is not, nor the spool's top, nor
/// /etc/passwd; the hash directory a first delivery needs is made before confinement.
#[test]
fn root_delivery_reaches_only_its_users_hash_directories() {
    let name = "root_delivery_reaches_only_its_users_hash_directories";
    if !is_root() {
        skip(name, "needs root to deliver into a spool for other users");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let spool = top.path().join("spool");
    fs::create_dir_all(spool.join("a")).unwrap();
    let theirs = spool.join("a/alice");
    mbox_with(&theirs, 3);
    let top_file = spool.join("README");
    fs::write(&top_file, b"spool\n").unwrap();
    let state = top.path().join("state");
    let o = deliver(
        &[
            "--no-dotlock-helper",
            "--spool-dir",
            spool.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "nobody",
            "root",
        ],
        &[(
            "POPSPOOL_TEST_OPEN",
            &join_paths(&[Path::new("/etc/passwd"), &theirs, &top_file]),
        )],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.log);
    assert_eq!(o.no_new_privs, "1", "{}", o.log);
    assert_eq!(o.max_open_files, "36 36", "{}", o.log);
    for p in ["n/nobody", "r/root"] {
        let got = fs::read(spool.join(p)).unwrap();
        assert!(got.ends_with(b"body line\n\n"), "{p}: {}", o.log);
    }
    if !kernel_has_landlock() {
        skip(name, "the kernel has no Landlock: access checks not run");
        return;
    }
    assert!(o.log.contains("landlock: full"), "{}", o.log);
    assert_denied(&o.log, "test-open", Path::new("/etc/passwd"));
    assert_denied(&o.log, "test-open", &theirs);
    assert_denied(&o.log, "test-open", &top_file);
}

/// As root: a Debian `root:mail 2775` spool and pop-deliver run as the user (procmail-style,
/// Postfix's mailbox_command). Confined, it may not create the dotlock nor exec the setgid
/// helper, yet the delivery locks and appends: the lock broker ran the helper. Nothing beside
/// the mailbox is in reach, not even a file of the user's own.
#[test]
fn user_delivery_into_root_mail_2775_spool_locks_through_the_broker() {
    let name = "user_delivery_into_root_mail_2775_spool_locks_through_the_broker";
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
    let mbox = spool.join("nobody");
    let before = mbox_with(&mbox, 4);
    own(&mbox, nobody.uid, 0o600);
    let theirs = spool.join("alice");
    mbox_with(&theirs, 2);
    own(&theirs, 0.into(), 0o644);
    let beside = spool.join("nobody.notes");
    fs::write(&beside, b"mine\n").unwrap();
    own(&beside, nobody.uid, 0o600);
    let helper = top.path().join("pop-dotlock");
    fs::copy(bin("pop-dotlock"), &helper).unwrap();
    nix::unistd::chown(&helper, Some(0.into()), Some(mail_gid)).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o2755)).unwrap();
    let state = top.path().join("state");
    fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let opens = join_paths(&[Path::new("/etc/passwd"), &theirs, &beside, &mbox]);
    let o = deliver(
        &[
            "--hash-depth",
            "0",
            "--lock-timeout",
            "5",
            "--spool-dir",
            spool.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--dotlock-helper",
            helper.to_str().unwrap(),
            "nobody",
        ],
        &[
            ("POPSPOOL_TEST_OPEN", &opens),
            ("POPSPOOL_TEST_EXEC", std::ffi::OsStr::new("/bin/sh")),
        ],
        Some((nobody.uid.as_raw(), nobody.gid.as_raw())),
    );
    assert_eq!(o.code, 0, "{}", o.log);
    assert_eq!(o.no_new_privs, "1", "{}", o.log);
    let got = fs::read(&mbox).unwrap();
    assert!(got.starts_with(&before), "{}", o.log);
    assert!(
        got.ends_with(b"Subject: confined\n\nbody line\n\n"),
        "{}",
        o.log
    );
    assert!(!spool.join("nobody.lock").exists(), "dotlock left behind");
    if !kernel_has_landlock() {
        skip(name, "the kernel has no Landlock: access checks not run");
        return;
    }
    assert!(o.log.contains("landlock: full"), "{}", o.log);
    assert_denied(&o.log, "test-open", Path::new("/etc/passwd"));
    assert_denied(&o.log, "test-open", &theirs);
    assert_denied(&o.log, "test-open", &beside);
    assert_allowed(&o.log, "test-open", &mbox);
    assert_denied(&o.log, "test-exec", Path::new("/bin/sh"));
}

/// `POPSPOOL_TEST_LANDLOCK_ABI=3` (an older kernel, as far as the program can tell; debug
/// builds only) and `=0` (none): pop-deliver logs it, still delivers, keeps the file rules of
/// ABI 1 to 3 (no /etc/passwd) under ABI 3, and with `--require-sandbox` refuses with a
/// temporary failure (75; 111 with `--qmail-exit-codes`) and a message that says why.
#[test]
fn deliver_on_an_older_or_no_landlock() {
    if !kernel_has_landlock() {
        skip(
            "deliver_on_an_older_or_no_landlock",
            "the kernel has no Landlock to pretend is older",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let mb = format!("mbox:{}", mbox.display());
    let state = dir.path().join("state");
    let base = [
        "--no-dotlock-helper",
        "--state-dir",
        state.to_str().unwrap(),
        "--mailbox",
        &mb,
    ];
    let passwd = join_paths(&[Path::new("/etc/passwd")]);
    let run = |abi: &str, extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        deliver(
            &args,
            &[
                ("POPSPOOL_TEST_LANDLOCK_ABI", std::ffi::OsStr::new(abi)),
                ("POPSPOOL_TEST_OPEN", &passwd),
            ],
            None,
        )
    };
    let o = run("3", &[]);
    assert_eq!(o.code, 0, "{}", o.log);
    assert!(o.log.contains("landlock: partial (ABI 3)"), "{}", o.log);
    assert_denied(&o.log, "test-open", Path::new("/etc/passwd"));
    assert_eq!(o.no_new_privs, "1");
    let o = run("0", &[]);
    assert_eq!(o.code, 0, "{}", o.log);
    assert!(o.log.contains("landlock: none (ABI 0)"), "{}", o.log);
    assert_eq!(o.no_new_privs, "1");
    assert_eq!(fs::read(&mbox).unwrap().matches_count(), 2);

    for (abi, what) in [("3", "partial (ABI 3)"), ("0", "none (ABI 0)")] {
        let o = run(abi, &["--require-sandbox"]);
        assert_eq!(o.code, 75, "{}", o.log);
        let want = format!("--require-sandbox: landlock: {what}");
        assert!(o.log.contains(&want), "{}", o.log);
        let o = run(abi, &["--require-sandbox", "--qmail-exit-codes"]);
        assert_eq!(o.code, 111, "{}", o.log);
    }
    // Refused before the message was read: nothing more was delivered.
    assert_eq!(fs::read(&mbox).unwrap().matches_count(), 2);
}

trait CountMessages {
    fn matches_count(&self) -> usize;
}

impl CountMessages for Vec<u8> {
    /// `From ` lines at the start of the file or after a newline.
    fn matches_count(&self) -> usize {
        let mut n = usize::from(self.starts_with(b"From "));
        n += self.windows(6).filter(|w| w == b"\nFrom ").count();
        n
    }
}

/// The same for pop-serve: under ABI 3 it logs `landlock: partial (ABI 3)`, refuses
/// /etc/passwd, serves; with `--require-sandbox` it answers `-ERR [SYS/TEMP]` and exits 111.
#[test]
fn serve_on_an_older_or_no_landlock() {
    if !kernel_has_landlock() {
        skip(
            "serve_on_an_older_or_no_landlock",
            "the kernel has no Landlock to pretend is older",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    fs::write(&mbox, gen::mbox_bytes(&gen::varied(9, 3))).unwrap();
    let state = dir.path().join("state");
    let run = |abi: &str, require: bool| -> (String, String, i32, String) {
        let mut cmd = Command::new(bin("pop-serve"));
        cmd.args(["--log", "stderr", "--no-dotlock-helper", "--state-dir"])
            .arg(&state);
        if is_root() {
            cmd.arg("--allow-root");
        }
        if require {
            cmd.arg("--require-sandbox");
        }
        cmd.arg(format!("mbox:{}", mbox.display()))
            .env("USER", "tester")
            .env("POPSPOOL_TEST_LANDLOCK_ABI", abi)
            .env("POPSPOOL_TEST_OPEN", "/etc/passwd")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        let greeting = c.line();
        let stat = if greeting.starts_with("+OK") {
            let s = c.cmd("STAT");
            c.cmd("QUIT");
            s
        } else {
            String::new()
        };
        drop(c);
        let out = child.wait_with_output().unwrap();
        (
            greeting,
            stat,
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (greeting, stat, code, log) = run("3", false);
    assert!(greeting.starts_with("+OK"), "{greeting} {log}");
    assert!(stat.starts_with("+OK 3 "), "{stat} {log}");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("landlock: partial (ABI 3)"), "{log}");
    assert_denied(&log, "test-open", Path::new("/etc/passwd"));
    let (greeting, _, code, log) = run("0", false);
    assert!(greeting.starts_with("+OK"), "{greeting} {log}");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("landlock: none (ABI 0)"), "{log}");
    for abi in ["3", "0"] {
        let (greeting, _, code, log) = run(abi, true);
        assert!(greeting.starts_with("-ERR [SYS/TEMP]"), "{greeting} {log}");
        assert_eq!(code, 111, "{log}");
    }
}
