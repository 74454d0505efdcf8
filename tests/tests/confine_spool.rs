//! pop-spool's confinement from the outside, through the real binary (see CONFINEMENT in
//! pop-spool(8)): each subcommand reaches the trees it names and, where it works on mail,
//! the state directories, nothing else. The debug build's test-only hooks show EACCES for
//! `/etc/passwd`, a file beside the spool, the state directory where the subcommand has no
//! business, and exec of `/bin/sh`, and `no_new_privs` set; as root, state work done as the
//! user (fsuid) still succeeds; Landlock "partial" and "none" (`POPSPOOL_TEST_LANDLOCK_ABI`)
//! are said on stderr, the file rules of ABI 1-3 hold, and `--require-sandbox` refuses
//! (exit 111).

use popspool_tests::hooks::{assert_allowed, assert_denied, kernel_has_landlock};
use popspool_tests::{bin, gen, is_root, skip};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs pop-spool with `args` and `env`: (exit code, stdout, stderr).
fn spool(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin("pop-spool"));
    cmd.args(args)
        .env("POPSPOOL_TEST_NNP", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

struct Tree {
    _top: tempfile::TempDir,
    spool: std::path::PathBuf,
    state: std::path::PathBuf,
    mbox: std::path::PathBuf,
    beside: std::path::PathBuf,
    state_file: std::path::PathBuf,
}

/// A spool (depth 1) with one mailbox, a state directory with a file, a file beside the spool.
fn tree() -> Tree {
    let top = tempfile::tempdir().unwrap();
    let spool = top.path().join("spool");
    fs::create_dir_all(spool.join("c")).unwrap();
    let mbox = spool.join("c/claird");
    fs::write(&mbox, gen::mbox_bytes(&gen::varied(5, 3))).unwrap();
    let state = top.path().join("state");
    fs::create_dir(&state).unwrap();
    let state_file = state.join("notes");
    fs::write(&state_file, b"x\n").unwrap();
    let beside = top.path().join("beside");
    fs::write(&beside, b"not mail\n").unwrap();
    Tree {
        spool,
        state,
        mbox,
        beside,
        state_file,
        _top: top,
    }
}

/// recover reaches the spool and the state directory; stats the spool only; path nothing.
#[test]
fn each_subcommand_reaches_what_it_names() {
    if !kernel_has_landlock() {
        skip(
            "each_subcommand_reaches_what_it_names",
            "the kernel has no Landlock: access checks not run",
        );
        return;
    }
    let t = tree();
    let passwd = Path::new("/etc/passwd");
    let opens = std::env::join_paths([passwd, &t.beside, &t.mbox, &t.state_file]).unwrap();
    let env: [(&str, &std::ffi::OsStr); 2] = [
        ("POPSPOOL_TEST_OPEN", &opens),
        ("POPSPOOL_TEST_EXEC", std::ffi::OsStr::new("/bin/sh")),
    ];
    let common = [
        "--spool-dir",
        t.spool.to_str().unwrap(),
        "--state-dir",
        t.state.to_str().unwrap(),
    ];
    let with = |sub: &[&str]| {
        let mut a = common.to_vec();
        a.extend_from_slice(sub);
        spool(&a, &env)
    };

    let (code, out, log) = with(&["recover", "--all"]);
    assert_eq!(code, 0, "{out}{log}");
    assert!(out.contains("recover: 1 mailboxes"), "{out}{log}");
    assert!(log.contains("test-no-new-privs: 1"), "{log}");
    // SPOOL_MAX_OPEN_FILES.
    assert!(log.contains("test-nofile: 64 64"), "{log}");
    assert!(!log.contains("landlock:"), "not fully enforced: {log}");
    assert_denied(&log, "test-open", passwd);
    assert_denied(&log, "test-open", &t.beside);
    assert_allowed(&log, "test-open", &t.mbox);
    assert_allowed(&log, "test-open", &t.state_file);
    assert_denied(&log, "test-exec", Path::new("/bin/sh"));

    let (code, out, log) = with(&["stats"]);
    assert_eq!(code, 0, "{out}{log}");
    assert_allowed(&log, "test-open", &t.mbox);
    assert_denied(&log, "test-open", &t.state_file);
    assert_denied(&log, "test-open", &t.beside);

    let (code, out, log) = with(&["path", "claird"]);
    assert_eq!(code, 0, "{out}{log}");
    assert_eq!(out.trim(), t.mbox.to_str().unwrap());
    assert_denied(&log, "test-open", &t.mbox);
    assert_denied(&log, "test-open", passwd);
}

/// As root, `index` for a user writes the index in the user's state directory with the
/// user's file-system identity, confined as it is: the file is the user's.
#[test]
fn root_index_writes_as_the_user_while_confined() {
    let name = "root_index_writes_as_the_user_while_confined";
    if !is_root() {
        skip(name, "needs root to work for another user");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let t = tree();
    let mbox = t.spool.join("n/nobody");
    fs::create_dir_all(mbox.parent().unwrap()).unwrap();
    fs::write(&mbox, gen::mbox_bytes(&gen::varied(6, 4))).unwrap();
    nix::unistd::chown(&mbox, Some(nobody.uid), None).unwrap();
    nix::unistd::chown(&t.state, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let (code, out, log) = spool(
        &[
            "--spool-dir",
            t.spool.to_str().unwrap(),
            "--state-dir",
            t.state.to_str().unwrap(),
            "index",
            "nobody",
        ],
        &[("POPSPOOL_TEST_OPEN", std::ffi::OsStr::new("/etc/passwd"))],
    );
    assert_eq!(code, 0, "{out}{log}");
    assert!(out.contains("1 built"), "{out}{log}");
    assert!(log.contains("test-no-new-privs: 1"), "{log}");
    let made: Vec<_> = fs::read_dir(&t.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &t.state_file)
        .collect();
    assert!(!made.is_empty(), "no index written: {log}");
    for p in &made {
        assert_eq!(fs::metadata(p).unwrap().uid(), nobody.uid.as_raw(), "{p:?}");
    }
    if kernel_has_landlock() {
        assert_denied(&log, "test-open", Path::new("/etc/passwd"));
    }
}

/// `POPSPOOL_TEST_LANDLOCK_ABI=3` and `=0`: said on stderr, the run goes on (ABI 3 still
/// keeps /etc/passwd out); with `--require-sandbox` it refuses, exit 111, before any work.
#[test]
fn spool_on_an_older_or_no_landlock() {
    if !kernel_has_landlock() {
        skip(
            "spool_on_an_older_or_no_landlock",
            "the kernel has no Landlock to pretend is older",
        );
        return;
    }
    let t = tree();
    let run = |abi: &str, require: bool| {
        let mut a = vec![
            "--spool-dir",
            t.spool.to_str().unwrap(),
            "--state-dir",
            t.state.to_str().unwrap(),
        ];
        if require {
            a.push("--require-sandbox");
        }
        a.extend_from_slice(&["recover", "--all"]);
        spool(
            &a,
            &[
                ("POPSPOOL_TEST_LANDLOCK_ABI", std::ffi::OsStr::new(abi)),
                ("POPSPOOL_TEST_OPEN", std::ffi::OsStr::new("/etc/passwd")),
            ],
        )
    };
    let (code, out, log) = run("3", false);
    assert_eq!(code, 0, "{out}{log}");
    assert!(out.contains("recover: 1 mailboxes"), "{out}{log}");
    assert!(log.contains("landlock: partial (ABI 3)"), "{log}");
    assert_denied(&log, "test-open", Path::new("/etc/passwd"));
    let (code, out, log) = run("0", false);
    assert_eq!(code, 0, "{out}{log}");
    assert!(log.contains("landlock: none (ABI 0)"), "{log}");
    for (abi, what) in [("3", "partial (ABI 3)"), ("0", "none (ABI 0)")] {
        let (code, out, log) = run(abi, true);
        assert_eq!(code, 111, "{out}{log}");
        assert!(
            log.contains(&format!("--require-sandbox: landlock: {what}")),
            "{log}"
        );
        assert!(!out.contains("recover:"), "{out}");
    }
}
