//! Issue 9, finding 4: a symlinked Maildir folder is never followed, whoever runs the program.
//! A user's `Maildir/new`, `cur/`, `tmp/` or the Maildir itself pointing at a directory they
//! do not own: `pop-serve` (as root with `--allow-root`, and as an ordinary uid) refuses the
//! login with `-ERR [SYS/PERM]` and a log line instead of serving a file from there or
//! renaming one out of it at QUIT; `pop-deliver` refuses (exit 77, qmail 100) and writes
//! nothing there, also while a folder is swapped for a symlink during delivery.

use popspool_tests::pop::{Client, Served};
use popspool_tests::{bin, is_root, skip};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const NOBODY: u32 = 65534;
/// What only the outside directory holds; never to be seen by a client.
const SECRET: &str = "ROOT ONLY: not in this mailbox";
/// The message that is really in the user's Maildir.
const MINE: &str = "Subject: mine\n\nthe user's own message\n";

/// A user's Maildir next to a directory outside it that holds one message-like file.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// `owner`: who owns the Maildir and the state directory (the session's uid).
    fn new(owner: Option<u32>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        // Traversable by an ordinary uid; tempdir() makes it 0700.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let s = Setup { dir };
        let out = s.outside();
        // Message-like files at the top (for `new`/`cur` pointing here) and in new/ and cur/
        // (for the Maildir itself pointing here).
        fs::create_dir(&out).unwrap();
        fs::create_dir(out.join("new")).unwrap();
        fs::create_dir(out.join("cur")).unwrap();
        // Root-only when root runs the test; readable (not writable) by `nobody` otherwise, so
        // that the ordinary-uid case shows the folder is refused, not just unreadable.
        let (dmode, fmode) = if owner.is_some() {
            (0o755, 0o644)
        } else {
            (0o700, 0o600)
        };
        for (i, name) in [
            "1600000000.M1P1.outside",
            "new/1600000001.M1P1.outside",
            "cur/1600000002.M1P1.outside:2,",
        ]
        .into_iter()
        .enumerate()
        {
            let f = out.join(name);
            fs::write(&f, format!("Subject: secret {i}\n\n{SECRET}\n")).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(fmode)).unwrap();
        }
        for d in [out.join("new"), out.join("cur"), out.clone()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(dmode)).unwrap();
        }
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(s.md().join(sub)).unwrap();
        }
        fs::write(s.md().join("new/1700000000.M1P1.mine"), MINE).unwrap();
        fs::create_dir(s.state()).unwrap();
        if let Some(uid) = owner {
            for p in [
                s.md(),
                s.md().join("new"),
                s.md().join("cur"),
                s.md().join("tmp"),
                s.md().join("new/1700000000.M1P1.mine"),
                s.state(),
            ] {
                std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
            }
        }
        s
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    fn md(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Replaces `which` (`new`, `cur`, `tmp`, or `Maildir` itself) with a symlink to the
    /// outside directory; the real one is kept aside.
    fn plant(&self, which: &str) {
        let p = if which == "Maildir" {
            self.md()
        } else {
            self.md().join(which)
        };
        fs::rename(&p, p.with_extension("real")).unwrap();
        symlink(self.outside(), &p).unwrap();
    }

    /// Every path under the outside directory with its content (`None` for a directory).
    fn outside_now(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let name = format!("{rel}{}", e.file_name().to_string_lossy());
                if e.file_type().unwrap().is_dir() {
                    out.insert(name.clone(), None);
                    walk(&e.path(), &format!("{name}/"), out);
                } else {
                    out.insert(name, Some(fs::read(e.path()).unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.outside(), "", &mut out);
        out
    }
}

/// pop-serve on pipes, as `uid` when given, logging to stderr, from `cwd`.
fn serve(s: &Setup, mailbox: &str, uid: Option<u32>, cwd: &Path) -> Served {
    let mut cmd = Command::new(bin("pop-serve"));
    cmd.args(["--log", "stderr", "--no-dotlock-helper", "--state-dir"])
        .arg(s.state())
        .arg(mailbox)
        .current_dir(cwd)
        .env("USER", "victim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match uid {
        Some(u) => {
            cmd.uid(u).gid(u);
        }
        None if is_root() => {
            cmd.arg("--allow-root");
        }
        None => {}
    }
    let mut child = cmd.spawn().expect("spawn pop-serve");
    let client = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    Served { child, client }
}

/// One session that retrieves every message it is shown and marks them seen at QUIT.
/// Returns the first line and the session's log; panics if the outside file is served.
fn session(s: &Setup, mailbox: &str, uid: Option<u32>, cwd: &Path) -> (String, String) {
    let mut sv = serve(s, mailbox, uid, cwd);
    let first = sv.client.line();
    if first.starts_with("+OK") {
        let stat = sv.client.cmd("STAT");
        let n: usize = stat
            .split(' ')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        for i in 1..=n {
            let st = sv.client.cmd(&format!("RETR {i}"));
            if st.starts_with("+OK") {
                let body = String::from_utf8_lossy(&sv.client.body()).into_owned();
                assert!(
                    !body.contains(SECRET),
                    "{mailbox}: RETR {i} served the file outside the Maildir"
                );
            }
        }
        assert!(sv.client.cmd("QUIT").starts_with("+OK"));
    }
    let (code, log) = sv.finish();
    assert_eq!(code, 0, "{log}");
    (first, log)
}

/// Every planted folder, served as `uid` (None: the test's own uid, with `--allow-root` when
/// root): refused at login, outside untouched, the real Maildir usable once repaired.
fn refuses_every_planted_folder(uid: Option<u32>) {
    for which in ["new", "cur", "tmp", "Maildir", "Maildir/"] {
        let s = Setup::new(uid);
        s.plant(which.trim_end_matches('/'));
        let before = s.outside_now();
        // qmail-pop3d's `./Maildir/` (trailing slash, relative to the home directory), and
        // the explicit form.
        let mailbox = if which == "Maildir/" {
            "./Maildir/".to_string()
        } else {
            format!("maildir:{}", s.md().display())
        };
        let (first, log) = session(&s, &mailbox, uid, s.dir.path());
        assert_eq!(
            s.outside_now(),
            before,
            "{which}: the outside directory changed"
        );
        if which == "tmp" {
            // Never read or written by pop-serve: the session goes on as usual.
            assert!(first.starts_with("+OK"), "{which}: {first}");
            continue;
        }
        assert_eq!(
            first, "-ERR [SYS/PERM] Maildir folder is a symbolic link",
            "{which}: {log}"
        );
        assert!(log.contains("is a symbolic link"), "{which}: log {log:?}");
        // Nothing was created for the refused session.
        assert_eq!(fs::read_dir(s.state()).unwrap().count(), 0, "{which}");
    }
}

#[test]
fn pop_serve_refuses_symlinked_folders() {
    refuses_every_planted_folder(None);
}

#[test]
fn pop_serve_as_an_ordinary_uid_refuses_symlinked_folders() {
    if !is_root() {
        skip(
            "pop_serve_as_an_ordinary_uid_refuses_symlinked_folders",
            "needs root (chown, running as nobody)",
        );
        return;
    }
    refuses_every_planted_folder(Some(NOBODY));
}

/// The untouched Maildir is still served normally (the refusal is about the symlink only).
#[test]
fn a_real_maildir_with_a_trailing_slash_is_served() {
    let s = Setup::new(None);
    let (first, log) = session(&s, "./Maildir/", None, s.dir.path());
    assert!(first.starts_with("+OK"), "{first} {log}");
    // Retrieved and kept: moved to cur/ with S, inside the Maildir.
    let cur: Vec<_> = fs::read_dir(s.md().join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cur, ["1700000000.M1P1.mine:2,S"]);
}

fn deliver(mailbox: &Path, qmail: bool) -> (i32, String) {
    let mut c = Command::new(bin("pop-deliver"));
    c.args(["--log", "none", "--no-dotlock-helper", "--mailbox"])
        .arg(format!("maildir:{}", mailbox.display()))
        .env_remove("SENDER")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if qmail {
        c.arg("--qmail-exit-codes");
    }
    let mut child = c.spawn().expect("spawn pop-deliver");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: delivered\n\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pop_deliver_refuses_symlinked_folders() {
    for which in ["new", "cur", "tmp", "Maildir"] {
        let s = Setup::new(None);
        s.plant(which);
        let before = s.outside_now();
        for (qmail, want) in [(false, 77), (true, 100)] {
            let (code, err) = deliver(&s.md(), qmail);
            assert_eq!(
                s.outside_now(),
                before,
                "{which}: pop-deliver wrote into the outside directory"
            );
            assert_eq!(code, want, "{which}: {err}");
            assert!(err.contains("symbolic link"), "{which}: {err}");
        }
    }
}

/// Exchanges two directory entries atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> bool {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: both are valid NUL-terminated paths for the duration of the call.
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}

/// A folder swapped for a symlink (and back) while pop-deliver runs: a check by path would
/// pass on the real folder and then write through the symlink. Each delivery either lands
/// in the real Maildir or is refused; the outside directory never changes.
#[test]
fn pop_deliver_never_writes_through_a_folder_swapped_during_delivery() {
    const ROUNDS: usize = 150;
    for which in ["tmp", "new"] {
        let s = Setup::new(None);
        let real = s.md().join(which);
        let swap = s.md().join(format!("{which}.swap"));
        symlink(s.outside(), &swap).unwrap();
        let before = s.outside_now();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = Arc::clone(&stop);
            let (real, swap) = (real.clone(), swap.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if exchange(&real, &swap) {
                        swaps += 1;
                    }
                    std::thread::yield_now();
                }
                // Back to the real folder in place.
                if swaps % 2 == 1 {
                    assert!(exchange(&real, &swap));
                }
                swaps
            })
        };
        let mut codes = BTreeMap::new();
        let mut errors = Vec::new();
        for _ in 0..ROUNDS {
            let (code, err) = deliver(&s.md(), false);
            *codes.entry(code).or_insert(0) += 1;
            if code != 0 {
                errors.push(err);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(fs::symlink_metadata(&real).unwrap().is_dir());
        assert_eq!(
            s.outside_now(),
            before,
            "{which}: a delivery went into the outside directory ({codes:?}, {swaps} swaps)"
        );
        // Refused (never followed), delivered, or, when the entry changed between the open
        // and the look that tells a symlink from a file, a temporary failure the MTA retries.
        // Nothing else.
        assert!(
            codes.keys().all(|&c| c == 0 || c == 75 || c == 77),
            "{which}: {codes:?} {errors:?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.contains("symbolic link") || e.contains("Not a directory")),
            "{which}: {errors:?}"
        );
        // Every delivery that succeeded is in the real new/; tmp/ is left empty.
        let delivered = fs::read_dir(s.md().join("new")).unwrap().count() - 1;
        assert_eq!(delivered, codes.get(&0).copied().unwrap_or(0), "{which}");
        assert_eq!(fs::read_dir(s.md().join("tmp")).unwrap().count(), 0);
        let mode = fs::metadata(s.outside()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
