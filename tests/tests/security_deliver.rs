//! Issue 9: root's `pop-deliver` with an explicit target (`--mailbox maildir:PATH`,
//! `--mailbox mbox:PATH`) follows no path component a user controls, and delivers into a
//! user's directory as that user; and a spool user name leaves room for its dotlock.
//!
//! The layout of every test: a scratch directory (root, 0755) holding `home/` (owned by
//! `nobody`, the user) and `outside/` (root, 0700: what `/etc` is to the attack). The user
//! swaps `home/mail` for a symlink to `outside/`, once or in a loop during deliveries; nothing
//! may ever appear in `outside/`, and each delivery is either made into the real directory or
//! refused with the documented code (77, qmail 100).

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

/// The user: `nobody`, present on every system.
const USER: u32 = 65534;
/// What pop-deliver exits with when it refuses a target (EX_NOPERM; qmail: permanent).
const REFUSED: i32 = 77;
const REFUSED_QMAIL: i32 = 100;
/// Deliveries raced against the swapping thread, per format.
const ROUNDS: usize = 150;
/// The documented limits (pop-spool(8)): a file name is at most 255 bytes, a user name 250,
/// so that `NAME.lock` is one.
const NAME_MAX: usize = 255;
const MAX_USER_NAME: usize = 250;

struct Setup {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let s = Setup { _tmp: tmp, base };
        for (d, uid, mode) in [
            (s.home(), USER, 0o755),
            (s.home().join("mail"), USER, 0o700),
            (s.outside(), 0, 0o700),
        ] {
            fs::create_dir(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
        }
        s
    }

    fn home(&self) -> PathBuf {
        self.base.join("home")
    }

    fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    /// `home/mail` becomes a symlink to `outside/` (the real one kept as `mail.real`).
    fn swap_in_symlink(&self) {
        fs::rename(self.home().join("mail"), self.home().join("mail.real")).unwrap();
        symlink(self.outside(), self.home().join("mail")).unwrap();
    }

    /// Every name in `outside/`, recursively: must stay empty.
    fn outside_now(&self) -> Vec<String> {
        fn walk(d: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                out.push(e.path().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.outside(), &mut v);
        v
    }
}

/// Runs root's `pop-deliver --mailbox TARGET`; returns the exit code and stderr.
fn deliver(target: &str, qmail: bool) -> (i32, String) {
    let mut c = Command::new(bin("pop-deliver"));
    c.args(["--log", "none", "--mailbox", target])
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

fn targets(s: &Setup) -> [(&'static str, String); 2] {
    let mail = s.home().join("mail");
    [
        (
            "maildir",
            format!("maildir:{}", mail.join("Maildir").display()),
        ),
        ("mbox", format!("mbox:{}", mail.join("mbox").display())),
    ]
}

fn needs_root(test: &str) -> bool {
    if !is_root() {
        skip(test, "needs root (pop-deliver as root, chown to nobody)");
        return false;
    }
    true
}

/// `home/mail -> outside/`: refused with 77 (qmail 100), naming the symlink; nothing created
/// or written outside.
#[test]
fn a_symlinked_directory_in_the_path_is_refused() {
    if !needs_root("a_symlinked_directory_in_the_path_is_refused") {
        return;
    }
    let s = Setup::new();
    s.swap_in_symlink();
    for (kind, target) in targets(&s) {
        for (qmail, want) in [(false, REFUSED), (true, REFUSED_QMAIL)] {
            let (code, err) = deliver(&target, qmail);
            assert_eq!(code, want, "{kind}: {err}");
            assert!(
                err.contains("symbolic link") && err.contains("home/mail"),
                "{kind}: {err}"
            );
            assert_eq!(s.outside_now(), Vec::<String>::new(), "{kind}");
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

/// A thread swaps `home/mail` between the real directory and a symlink to `outside/` while
/// root delivers: every delivery is made into the real directory or refused, never anything
/// else, and nothing ever appears outside.
#[test]
fn a_directory_swapped_during_deliveries_never_redirects_root() {
    if !needs_root("a_directory_swapped_during_deliveries_never_redirects_root") {
        return;
    }
    for kind in ["maildir", "mbox"] {
        let s = Setup::new();
        let (real, swap) = (s.home().join("mail"), s.home().join("mail.swap"));
        symlink(s.outside(), &swap).unwrap();
        let target = targets(&s).into_iter().find(|(k, _)| *k == kind).unwrap().1;
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
                if swaps % 2 == 1 {
                    assert!(exchange(&real, &swap));
                }
                swaps
            })
        };
        let mut codes = BTreeMap::new();
        let mut errors = Vec::new();
        for _ in 0..ROUNDS {
            let (code, err) = deliver(&target, false);
            *codes.entry(code).or_insert(0usize) += 1;
            if code != 0 {
                errors.push(err);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(fs::symlink_metadata(&real).unwrap().is_dir());
        assert_eq!(
            s.outside_now(),
            Vec::<String>::new(),
            "{kind}: root wrote outside ({codes:?}, {swaps} swaps)"
        );
        assert!(
            codes.keys().all(|&c| c == 0 || c == REFUSED),
            "{kind}: {codes:?} {errors:?}"
        );
        assert!(
            errors.iter().all(|e| e.contains("symbolic link")),
            "{kind}: {errors:?}"
        );
        let delivered = codes.get(&0).copied().unwrap_or(0);
        let found = match kind {
            "maildir" => fs::read_dir(real.join("Maildir/new")).map_or(0, |d| d.count()),
            _ => fs::read(real.join("mbox")).map_or(0, |b| {
                b.split(|&c| c == b'\n')
                    .filter(|l| l.starts_with(b"From "))
                    .count()
            }),
        };
        assert_eq!(found, delivered, "{kind}: {codes:?}, {swaps} swaps");
        eprintln!("{kind}: {codes:?} in {ROUNDS} deliveries, {swaps} swaps");
    }
}

/// Reads `path` as the user: what a `pop-serve` running as them could do.
fn read_as_user(path: &Path) -> bool {
    Command::new("cat")
        .arg(path)
        .uid(USER)
        .gid(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Root delivering into a directory the user owns creates the user's files, which the user
/// can read; the mbox's dotlock is gone afterwards.
#[test]
fn root_delivers_into_a_users_directory_as_the_user() {
    if !needs_root("root_delivers_into_a_users_directory_as_the_user") {
        return;
    }
    let s = Setup::new();
    let mail = s.home().join("mail");
    for (kind, target) in targets(&s) {
        let (code, err) = deliver(&target, false);
        assert_eq!(code, 0, "{kind}: {err}");
    }
    let md = mail.join("Maildir");
    let mut owned: Vec<PathBuf> = ["", "tmp", "new", "cur"]
        .iter()
        .map(|d| md.join(d))
        .collect();
    let msgs: Vec<PathBuf> = fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(msgs.len(), 1);
    owned.extend(msgs.iter().cloned());
    owned.push(mail.join("mbox"));
    for p in &owned {
        let m = fs::symlink_metadata(p).unwrap();
        assert_eq!(m.uid(), USER, "{} is not the user's", p.display());
    }
    assert!(read_as_user(&msgs[0]), "the user cannot read the message");
    assert!(
        read_as_user(&mail.join("mbox")),
        "the user cannot read the mbox"
    );
    assert_eq!(
        fs::metadata(mail.join("mbox")).unwrap().mode() & 0o777,
        0o600
    );
    assert!(!mail.join("mbox.lock").exists());
    // A second delivery appends to the user's mbox.
    let (code, err) = deliver(&targets(&s)[1].1, false);
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(mail.join("mbox")).unwrap();
    assert_eq!(text.matches("\nhello\n").count(), 2, "{text}");
    // Root's own directory: root's files, as before.
    let (code, err) = deliver(
        &format!("mbox:{}", s.outside().join("box").display()),
        false,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::metadata(s.outside().join("box")).unwrap().uid(), 0);
}

/// A mailbox of root's in the user's directory: the user could not append to it, and neither
/// does root on their behalf (refused, untouched).
#[test]
fn a_foreign_mailbox_in_a_users_directory_is_refused() {
    if !needs_root("a_foreign_mailbox_in_a_users_directory_is_refused") {
        return;
    }
    let s = Setup::new();
    let mbox = s.home().join("mail/mbox");
    fs::write(&mbox, b"").unwrap();
    let (code, err) = deliver(&format!("mbox:{}", mbox.display()), false);
    assert_eq!(code, REFUSED, "{err}");
    assert_eq!(fs::metadata(&mbox).unwrap().len(), 0);
}

fn pop_spool(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Command::new(bin("pop-spool"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A spool user name is at most `MAX_USER_NAME` (250) bytes, so that `NAME.lock` is a file
/// name: 251 to 255 bytes are refused by every tool with a message saying why, and a mailbox
/// named by 250 bytes is created, locked and delivered to.
#[test]
fn a_user_name_leaves_room_for_its_dotlock() {
    let d = tempfile::tempdir().unwrap();
    let spool = d.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let name = |n: usize| "u".repeat(n);
    let sd = spool.as_os_str();
    for n in [MAX_USER_NAME + 1, NAME_MAX] {
        let user = name(n);
        let (code, out) = pop_spool(&["--spool-dir".as_ref(), sd, "path".as_ref(), user.as_ref()]);
        assert_eq!(code, 100, "{n} bytes: {out}");
        assert!(out.contains("longer than 250 bytes"), "{n} bytes: {out}");
        if is_root() {
            let (code, out) =
                pop_spool(&["--spool-dir".as_ref(), sd, "create".as_ref(), user.as_ref()]);
            assert_eq!(code, 100, "{n} bytes: {out}");
            assert!(out.contains("longer than 250 bytes"), "{n} bytes: {out}");
        }
        let mut child = Command::new(bin("pop-deliver"))
            .args(["--log", "none", "--spool-dir"])
            .arg(&spool)
            .arg(&user)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(b"Subject: x\n\nhello\n").unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(67), "{n} bytes: {err}");
        assert!(err.contains("longer than 250 bytes"), "{n} bytes: {err}");
    }
    let user = name(MAX_USER_NAME);
    let (code, out) = pop_spool(&["--spool-dir".as_ref(), sd, "path".as_ref(), user.as_ref()]);
    assert_eq!(code, 0, "{out}");
    // Such a mailbox can be created and locked (its dotlock is exactly NAME_MAX bytes long).
    let mbox = d.path().join(&user);
    let (code, err) = deliver(&format!("mbox:{}", mbox.display()), false);
    assert_eq!(code, 0, "{err}");
    assert!(fs::read_to_string(&mbox).unwrap().contains("\nhello\n"));
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2, "leftovers");
}
