//! Regression tests for issue 9, findings 2 and 3, through the real binaries.
//!
//! Finding 2: a user named `X.lock` would have their mailbox where user `X`'s dotlock lives,
//! and a stale-lock break (`pop-deliver`, `pop-dotlock`, `pop-spool check --fix`) would delete
//! it. The spool refuses such names in every tool, and nothing that cannot be a dotlock is ever
//! broken as one.
//!
//! Finding 3: the stale-lock check read an existing dotlock following symlinks, without a
//! size limit and with a blocking open (`mbox.lock -> /dev/zero`, a FIFO), and SIGTERM did not
//! end the wait. Now such a file is respected as somebody else's, the wait ends with exit 75
//! at the lock timeout or at once on SIGTERM, and memory stays small.

use popspool_tests::{bin, is_root, serve_args, skip};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The user named like the lock (`secrevm.lock`) and the user `secrevm`: uids no account has.
const LOCK_NAMED_UID: u32 = 4291;
const VICTIM_UID: u32 = 4292;
const NOBODY: u32 = 65534;
/// Older than the stale-lock age (600 s), as in the report.
const OLD: Duration = Duration::from_secs(700);
/// The mail of the user whose name ends in `.lock`: what must never be lost.
const MAIL: &[u8] = b"From someone@example.org Thu Dec  3 14:25:28 2026\nSubject: keep me\n\
Message-ID: <keep@example.org>\n\nThis mailbox must survive.\n\n";

fn backdate(p: &Path, by: Duration) {
    File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(SystemTime::now() - by)
        .unwrap();
}

fn chown(p: &Path, uid: u32, gid: Option<u32>) {
    std::os::unix::fs::chown(p, Some(uid), gid).unwrap();
}

fn mail_gid() -> Option<u32> {
    nix::unistd::Group::from_name("mail")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Exit code (None: killed by a signal), stderr, and how long it ran.
struct Ran {
    code: Option<i32>,
    err: String,
    took: Duration,
    /// Largest VmHWM seen while it ran, in KiB.
    hwm_kb: u64,
}

fn hwm_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for `child` at most `limit` (then kills it), sampling its peak memory.
fn wait_bounded(mut child: Child, start: Instant, limit: Duration) -> Ran {
    let mut peak = 0;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if let Some(kb) = hwm_kb(child.id()) {
            peak = peak.max(kb);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    Ran {
        code: status.and_then(|s| s.code()),
        err,
        took,
        hwm_kb: peak,
    }
}

/// pop-deliver with a message on stdin (closed at once), its address space capped so that a
/// read without a limit fails instead of eating the machine.
fn deliver_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(bin("pop-deliver"));
    c.args(["--log", "none", "--no-dotlock-helper"])
        .args(args)
        .env_remove("SENDER")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(|| {
            let cap: libc::rlim_t = 512 << 20;
            let r = libc::rlimit {
                rlim_cur: cap,
                rlim_max: cap,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn spawn_with_input(mut c: Command) -> (Child, Instant) {
    let mut child = c.spawn().expect("spawn");
    let start = Instant::now();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: test\n\nbody\n").unwrap();
    drop(stdin);
    (child, start)
}

fn deliver(args: &[&str], limit: Duration) -> Ran {
    let (child, start) = spawn_with_input(deliver_cmd(args));
    wait_bounded(child, start, limit)
}

fn spool_cmd(spool: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin("pop-spool"))
        .arg("--spool-dir")
        .arg(spool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pop-spool");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A root:mail 2775 spool of depth 1 in a directory every uid may traverse.
struct Spool {
    _dir: tempfile::TempDir,
    root: PathBuf,
    spool: PathBuf,
    gid: u32,
}

impl Spool {
    fn new(gid: u32) -> Spool {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir(&spool).unwrap();
        for h in ["s", "n"] {
            let d = spool.join(h);
            fs::create_dir(&d).unwrap();
            chown(&d, 0, Some(gid));
            fs::set_permissions(&d, fs::Permissions::from_mode(0o2775)).unwrap();
        }
        Spool {
            root: dir.path().to_path_buf(),
            _dir: dir,
            spool,
            gid,
        }
    }

    /// A mailbox file `uid:mail 0600` with `content`, last changed `OLD` ago.
    fn mailbox(&self, rel: &str, uid: u32, content: &[u8]) -> PathBuf {
        let p = self.spool.join(rel);
        fs::write(&p, content).unwrap();
        chown(&p, uid, Some(self.gid));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        backdate(&p, OLD);
        p
    }

    /// pop-dotlock installed as scripts/install does (root:mail 2755).
    fn dotlock_helper(&self) -> PathBuf {
        let h = self.root.join("pop-dotlock");
        if !h.exists() {
            fs::copy(bin("pop-dotlock"), &h).unwrap();
            chown(&h, 0, Some(self.gid));
            fs::set_permissions(&h, fs::Permissions::from_mode(0o2755)).unwrap();
        }
        h
    }

    /// `pop-dotlock lock MAILBOX` as `uid`: (exit code, stderr).
    fn dotlock_as(&self, uid: u32, mailbox: &Path) -> (Option<i32>, String) {
        let helper = self.dotlock_helper();
        // The copy's write descriptor can live on for a moment in a child that another test
        // thread forked before it was closed (close-on-exec acts only at that child's exec):
        // exec then fails with ETXTBSY until that child has exec'd.
        let mut tries = 0;
        let out = loop {
            match Command::new(&helper)
                .arg("lock")
                .arg(mailbox)
                .uid(uid)
                .gid(uid)
                .stdin(Stdio::null())
                .output()
            {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r.unwrap(),
            }
        };
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn root_with_mail_group(test: &str) -> Option<u32> {
    if !is_root() {
        skip(
            test,
            "needs root (chown, a root:mail 2775 spool, running as other uids)",
        );
        return None;
    }
    let g = mail_gid();
    if g.is_none() {
        skip(test, "no group mail");
    }
    g
}

/// The spool's name rule in every tool: `secrevm.lock` has no mailbox path.
#[test]
fn names_ending_in_lock_are_refused_by_every_tool() {
    let Some(gid) = root_with_mail_group("names_ending_in_lock_are_refused_by_every_tool") else {
        return;
    };
    let sp = Spool::new(gid);
    let s = sp.spool.to_str().unwrap();

    let (code, out) = spool_cmd(&sp.spool, &["path", "secrevm.lock"]);
    assert_eq!(code, Some(100), "{out}");
    assert!(out.contains("dotlock"), "{out}");

    let (code, out) = spool_cmd(&sp.spool, &["create", "secrevm.lock"]);
    assert_eq!(code, Some(100), "{out}");
    assert!(out.contains("dotlock"), "{out}");
    assert!(!sp.spool.join("s/secrevm.lock").exists());

    let state = sp.root.join("state");
    let st = state.to_str().unwrap();
    let r = deliver(
        &["--spool-dir", s, "--state-dir", st, "secrevm.lock"],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(67), "{}", r.err);
    assert!(r.err.contains("dotlock"), "{}", r.err);
    assert!(!sp.spool.join("s/secrevm.lock").exists());

    // pop-serve's default path for $USER secrevm.lock, with a file there: not served.
    sp.mailbox("s/secrevm.lock", 0, MAIL);
    let mut args: Vec<String> = serve_args(&state)
        .into_iter()
        .map(|a| if a == "none" { "stderr".into() } else { a })
        .collect();
    args.extend(["--spool-dir".to_string(), s.to_string()]);
    let mut served = popspool_tests::pop::Served::spawn(
        &args,
        &[
            ("USER", "secrevm.lock"),
            ("HOME", sp.root.to_str().unwrap()),
        ],
    );
    let greeting = served.client.line();
    assert!(greeting.starts_with("-ERR"), "{greeting}");
    let (_, err) = served.finish();
    assert!(err.contains("dotlock"), "{err}");
    assert_eq!(fs::read(sp.spool.join("s/secrevm.lock")).unwrap(), MAIL);

    // migrate from a flat spool skips such a name instead of making it a mailbox.
    let flat = sp.root.join("flat");
    fs::create_dir(&flat).unwrap();
    fs::write(flat.join("other.lock"), MAIL).unwrap();
    let (code, out) = spool_cmd(&sp.spool, &["migrate", "--from", flat.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(fs::read(flat.join("other.lock")).unwrap(), MAIL);
    assert!(!sp.spool.join("o").exists());
}

/// The reproduction of the report: the mailbox of user `secrevm.lock` sits where user
/// `secrevm`'s dotlock goes; both 700 s old. Nothing removes it: not root's pop-deliver, not
/// pop-dotlock run by `secrevm`, not `pop-spool check --fix`.
#[test]
fn a_mailbox_at_a_dotlock_name_is_never_broken() {
    let Some(gid) = root_with_mail_group("a_mailbox_at_a_dotlock_name_is_never_broken") else {
        return;
    };
    let sp = Spool::new(gid);
    let s = sp.spool.to_str().unwrap();
    let state = sp.root.join("state");
    let st = state.to_str().unwrap();
    let lockbox = sp.mailbox("s/secrevm.lock", LOCK_NAMED_UID, MAIL);
    let victim = sp.mailbox("s/secrevm", VICTIM_UID, MAIL);
    backdate(&lockbox, OLD);
    let intact = |p: &Path| {
        let m = fs::symlink_metadata(p).expect("the mailbox is gone");
        assert_eq!(m.uid(), LOCK_NAMED_UID, "replaced");
        assert_eq!(fs::read(p).unwrap(), MAIL, "changed");
    };

    // Root delivering to secrevm (an explicit mailbox: no account is needed).
    let spec = format!("mbox:{}", victim.display());
    let r = deliver(
        &["--mailbox", &spec, "--state-dir", st, "--lock-timeout", "1"],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(75), "{}", r.err);
    assert!(r.err.contains("not a dotlock"), "{}", r.err);
    intact(&lockbox);

    // The same through the spool path of a real account (nobody, whose `nobody.lock` holds
    // another user's mail).
    sp.mailbox("n/nobody", NOBODY, b"");
    let other = sp.mailbox("n/nobody.lock", LOCK_NAMED_UID, MAIL);
    let r = deliver(
        &[
            "--spool-dir",
            s,
            "--state-dir",
            st,
            "--lock-timeout",
            "1",
            "nobody",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(75), "{}", r.err);
    intact(&other);

    // secrevm asks pop-dotlock for its own dotlock: refused, nothing removed or created.
    backdate(&victim, OLD);
    backdate(&lockbox, OLD);
    let (code, err) = sp.dotlock_as(VICTIM_UID, &victim);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("never broken"), "{err}");
    intact(&lockbox);

    // The user secrevm.lock may not make secrevm.lock.lock (a future user's mailbox).
    let (code, err) = sp.dotlock_as(LOCK_NAMED_UID, &lockbox);
    assert_eq!(code, Some(100), "{err}");
    assert!(err.contains("not a mailbox name"), "{err}");
    assert!(!sp.spool.join("s/secrevm.lock.lock").exists());

    // pop-spool check --fix reports it and leaves it.
    backdate(&victim, OLD);
    backdate(&lockbox, OLD);
    let (code, out) = spool_cmd(
        &sp.spool,
        &[
            "--state-dir",
            st,
            "--lock-timeout",
            "1",
            "check",
            "--fix",
            "--all",
        ],
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("not a dotlock"), "{out}");
    intact(&lockbox);
    intact(&other);
}

/// A dotlock that is a symlink to /dev/zero, a FIFO, or a symlink to a FIFO (an attacker who
/// can write the mailbox's directory): pop-deliver neither reads it without limit nor blocks
/// on it; it waits for the lock timeout and fails temporarily (75), saying why.
#[test]
fn hostile_files_at_the_lock_name_neither_hang_nor_grow() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let lock = dir.path().join("mbox.lock");
    let spec = format!("mbox:{}", mbox.display());
    let args = ["--mailbox", spec.as_str(), "--lock-timeout", "2"];
    assert_eq!(deliver(&args, Duration::from_secs(20)).code, Some(0));
    let before = fs::read(&mbox).unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let cases: [(&str, &dyn Fn()); 3] = [
        ("symlink to /dev/zero", &|| {
            std::os::unix::fs::symlink("/dev/zero", &lock).unwrap()
        }),
        ("FIFO", &|| {
            nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
        }),
        ("symlink to a FIFO", &|| {
            std::os::unix::fs::symlink(&fifo, &lock).unwrap()
        }),
    ];
    for (what, make) in cases {
        make();
        let r = deliver(&args, Duration::from_secs(15));
        eprintln!(
            "{what}: exit {:?} after {:.2} s, peak RSS {} KiB",
            r.code,
            r.took.as_secs_f64(),
            r.hwm_kb
        );
        assert_eq!(r.code, Some(75), "{what}: {}", r.err);
        assert!(r.err.contains("not a dotlock"), "{what}: {}", r.err);
        assert!(r.took < Duration::from_secs(6), "{what}: {:?}", r.took);
        assert!(r.hwm_kb < 64 * 1024, "{what}: {} KiB", r.hwm_kb);
        assert_eq!(fs::read(&mbox).unwrap(), before, "{what}");
        fs::remove_file(&lock).unwrap();
    }
}

/// SIGTERM while pop-deliver waits for a lock (a live process's dotlock, a FIFO in its place):
/// exit 75 at once, the mailbox unchanged.
#[test]
fn sigterm_ends_a_lock_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let lock = dir.path().join("mbox.lock");
    let spec = format!("mbox:{}", mbox.display());
    let args = ["--mailbox", spec.as_str(), "--lock-timeout", "60"];
    assert_eq!(deliver(&args, Duration::from_secs(20)).code, Some(0));
    let before = fs::read(&mbox).unwrap();
    let cases: [(&str, &dyn Fn()); 2] = [
        ("live dotlock", &|| {
            fs::write(&lock, format!("{}\n", std::process::id())).unwrap()
        }),
        ("FIFO", &|| {
            nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
        }),
    ];
    for (what, make) in cases {
        make();
        let (child, _) = spawn_with_input(deliver_cmd(&args));
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            hwm_kb(child.id()).is_some(),
            "{what}: exited before SIGTERM"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let r = wait_bounded(child, Instant::now(), Duration::from_secs(10));
        eprintln!(
            "{what}: exit {:?} {:.3} s after SIGTERM",
            r.code,
            r.took.as_secs_f64()
        );
        assert_eq!(r.code, Some(75), "{what}: {}", r.err);
        assert!(r.took < Duration::from_secs(1), "{what}: {:?}", r.took);
        assert!(r.err.contains("signal"), "{what}: {}", r.err);
        assert_eq!(fs::read(&mbox).unwrap(), before, "{what}");
        fs::remove_file(&lock).unwrap();
    }
}
