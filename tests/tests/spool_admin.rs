//! pop-spool through the real binary: paths, create, a migration racing deliveries and
//! SIGKILL, check and --fix, stats, and expire read back through the real pop-serve.

use popspool_tests::gen::{self, Message, Rng};
use popspool_tests::pop::Served;
use popspool_tests::{bin, is_root, serve_args, skip};
use spool_store::lock::{dotlock_path, ContentLock, LockOptions};
use spool_store::spoolpath::hashed_path;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spool(args: &[&str]) -> Output {
    Command::new(bin("pop-spool"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pop-spool")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mail_gid() -> u32 {
    nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail")
        .gid
        .as_raw()
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .expect("user")
        .uid
        .as_raw()
}

#[test]
fn path_for_names_and_depths() {
    for depth in 0u8..=2 {
        for name in ["claird", "x", "Claird", "a.b", "\u{e9}l\u{e8}ve", "j+x"] {
            let d = depth.to_string();
            let o = spool(&["--spool-dir", "/s", "--hash-depth", &d, "path", name]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let want = hashed_path(Path::new("/s"), name.as_bytes(), depth).unwrap();
            assert_eq!(
                String::from_utf8(o.stdout).unwrap(),
                format!("{}\n", want.display())
            );
        }
    }
    // The default layout, bad names and depths are usage errors (100).
    let o = spool(&["path", "claird"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "/var/spool/mail/c/claird\n"
    );
    for bad in [
        &["path", "../x"][..],
        &["path", ".x"],
        &["path", ""],
        &["--hash-depth", "3", "path", "x"],
    ] {
        let o = spool(bad);
        assert_eq!(o.status.code(), Some(100), "{bad:?}: {}", text(&o));
        assert!(o.stdout.is_empty());
    }
    assert_eq!(spool(&["frobnicate"]).status.code(), Some(100));
}

#[test]
fn create_sets_owners_and_modes_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("spool");
    fs::create_dir(&sp).unwrap();
    if !is_root() {
        let o = spool(&["--spool-dir", s(&sp), "create", "daemon"]);
        assert_eq!(o.status.code(), Some(100));
        assert!(text(&o).contains("needs root"), "{}", text(&o));
        return skip("create_sets_owners_and_modes", "chown needs root");
    }
    let o = spool(&[
        "--spool-dir",
        s(&sp),
        "--hash-depth",
        "2",
        "create",
        "daemon",
        "bin",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let gid = mail_gid();
    for d in ["d", "d/da", "b", "b/bi"] {
        let m = fs::metadata(sp.join(d)).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (0, gid, 0o2775),
            "{d}"
        );
    }
    for (u, p) in [("daemon", "d/da/daemon"), ("bin", "b/bi/bin")] {
        let m = fs::metadata(sp.join(p)).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777, m.len()),
            (uid_of(u), gid, 0o600, 0)
        );
    }
    // Idempotent, and a changed mode is reported but left alone without --fix.
    let mb = sp.join("d/da/daemon");
    fs::write(&mb, b"From a Mon Jan  1 00:00:00 2024\n\nx\n\n").unwrap();
    fs::set_permissions(&mb, fs::Permissions::from_mode(0o644)).unwrap();
    let o = spool(&[
        "--spool-dir",
        s(&sp),
        "--hash-depth",
        "2",
        "create",
        "daemon",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("differs"), "{}", text(&o));
    assert_eq!(fs::metadata(&mb).unwrap().mode() & 0o777, 0o644);
    let o = spool(&[
        "--spool-dir",
        s(&sp),
        "--hash-depth",
        "2",
        "create",
        "--fix",
        "daemon",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(fs::metadata(&mb).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        fs::read(&mb).unwrap(),
        b"From a Mon Jan  1 00:00:00 2024\n\nx\n\n"
    );
    // An unknown user is an error for that user only.
    let o = spool(&["--spool-dir", s(&sp), "create", "no-such-user-xq", "daemon"]);
    assert_eq!(o.status.code(), Some(111), "{}", text(&o));
    assert!(sp.join("d/daemon").exists());
}

/// A message whose Message-ID names its user and serial, so every message can be traced.
fn tagged(user: &str, serial: usize) -> Vec<u8> {
    let mut m = Message::simple(serial);
    m.headers = vec![format!("Message-ID: <{user}.{serial}@t>").into_bytes()];
    m.stored()
}

/// Delivers like an MDA: open (create), content lock, re-check the path, append, unlock.
fn deliver(path: &Path, bytes: &[u8]) {
    let opts = LockOptions {
        helper: None,
        wait: Duration::from_secs(30),
        stale_age: Duration::from_secs(600),
    };
    loop {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        let lock = ContentLock::acquire(path, &f, &opts).expect("MDA lock");
        let same = fs::metadata(path)
            .map(|m| m.ino() == f.metadata().unwrap().ino())
            .unwrap_or(false);
        if !same {
            // Renamed away while we waited: as real MDAs, retry on the path.
            drop(lock);
            continue;
        }
        let len = f.metadata().unwrap().len();
        f.write_all_at(bytes, len).unwrap();
        f.sync_data().unwrap();
        lock.release().unwrap();
        return;
    }
}

/// Every Message-ID in the hashed spool, with how often and in which mailbox it appears.
fn census(spool_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stack = vec![spool_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
                continue;
            }
            if name.starts_with('.') || name.ends_with(".lock") {
                continue;
            }
            let data = fs::read(&p).unwrap();
            for line in data.split(|&b| b == b'\n') {
                if let Some(id) = line.strip_prefix(b"Message-ID: <") {
                    let id = String::from_utf8_lossy(id)
                        .trim_end_matches(">")
                        .to_string();
                    out.entry(id).or_default().push(name.clone());
                }
            }
        }
    }
    out
}

fn flat_spool(dir: &Path, users: usize, rng: &mut Rng) -> (Vec<String>, usize) {
    fs::create_dir_all(dir).unwrap();
    let mut total = 0;
    let names: Vec<String> = (0..users).map(|i| format!("user{i:03}")).collect();
    for u in &names {
        let n = rng.below(3) as usize;
        let bytes: Vec<u8> = (0..n).flat_map(|k| tagged(u, k)).collect();
        fs::write(dir.join(u), bytes).unwrap();
        total += n;
    }
    (names, total)
}

/// Every expected message is in exactly one new mailbox, its user's, and the flat spool holds
/// no mailbox any more.
fn assert_invariant(new: &Path, flat: &Path, expected: &BTreeMap<String, String>) {
    let found = census(new);
    for (id, user) in expected {
        let at = found.get(id).cloned().unwrap_or_default();
        assert_eq!(at, vec![user.clone()], "message {id}");
    }
    assert_eq!(found.len(), expected.len(), "no unexpected messages");
    let left: Vec<_> = fs::read_dir(flat)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left in the flat spool: {left:?}");
}

#[test]
fn migration_while_mail_keeps_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("flat");
    let new = dir.path().join("new");
    fs::create_dir(&new).unwrap();
    let mut rng = Rng::new(4);
    let (names, _) = flat_spool(&flat, 300, &mut rng);
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for u in &names {
        for line in fs::read(flat.join(u)).unwrap().split(|&b| b == b'\n') {
            if let Some(id) = line.strip_prefix(b"Message-ID: <") {
                let id = String::from_utf8_lossy(&id[..id.len() - 1]).into_owned();
                expected.insert(id, u.clone());
            }
        }
    }
    // A delivery agent still configured for the flat spool keeps appending to 20 mailboxes.
    let stop = Arc::new(AtomicBool::new(false));
    let mda = {
        let stop = stop.clone();
        let flat = flat.clone();
        let targets: Vec<String> = names.iter().step_by(15).cloned().collect();
        std::thread::spawn(move || {
            let mut sent = Vec::new();
            let mut serial = 100;
            while !stop.load(Ordering::Relaxed) || serial < 140 {
                for u in &targets {
                    deliver(&flat.join(u), &tagged(u, serial));
                    sent.push((format!("{u}.{serial}@t"), u.clone()));
                }
                serial += 1;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let state = dir.path().join("state");
    let run = || {
        spool(&[
            "migrate",
            "--from",
            s(&flat),
            "--to",
            s(&new),
            "--depth",
            "1",
            "--state-dir",
            s(&state),
        ])
    };
    let t = Instant::now();
    let first = run();
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = mda.join().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    // The MTA is "switched": the second run picks up the stragglers.
    let second = run();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let out2 = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(
        out2.contains("merged"),
        "no stragglers merged?\n{}",
        text(&second)
    );
    expected.extend(sent);
    assert_invariant(&new, &flat, &expected);
    eprintln!(
        "migrated 300 mailboxes in {took:?} with {} messages in total",
        expected.len()
    );
    // Nothing left to do.
    let third = run();
    assert!(
        String::from_utf8_lossy(&third.stdout).contains("0 moved, 0 merged"),
        "{}",
        text(&third)
    );
}

#[test]
fn migration_killed_at_random_points_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("flat");
    // Another file system when there is one: the copy path instead of rename.
    let shm = Path::new("/dev/shm");
    let other = if shm.is_dir() {
        tempfile::tempdir_in(shm).ok()
    } else {
        None
    };
    let new = other
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_else(|| dir.path().join("new"));
    fs::create_dir_all(&new).unwrap();
    let mut rng = Rng::new(7);
    let names: Vec<String> = (0..300).map(|i| format!("u{i:03}")).collect();
    fs::create_dir(&flat).unwrap();
    let mut expected = BTreeMap::new();
    let big = "x".repeat(2000);
    for (i, u) in names.iter().enumerate() {
        let mut bytes = Vec::new();
        for k in 0..(5 + rng.below(20) as usize) {
            let mut m = Message::simple(k);
            m.headers = vec![format!("Message-ID: <{u}.{k}@t>").into_bytes()];
            m.body = Some(vec![big.clone().into_bytes(); 10]);
            bytes.extend(m.stored());
            expected.insert(format!("{u}.{k}@t"), u.clone());
        }
        fs::write(flat.join(u), bytes).unwrap();
        // A third of the users already have a new mailbox: those are merged.
        if i % 3 == 0 {
            let p = hashed_path(&new, u.as_bytes(), 1).unwrap();
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, tagged(u, 999)).unwrap();
            expected.insert(format!("{u}.999@t"), u.clone());
        }
    }
    let state = dir.path().join("state");
    let args = [
        "migrate",
        "--from",
        s(&flat),
        "--to",
        s(&new),
        "--depth",
        "1",
        "--state-dir",
        s(&state),
    ];
    // How long an uninterrupted run would take, measured on a copy.
    let mut kills = 0;
    for round in 0..12 {
        let mut child = Command::new(bin("pop-spool"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.below(60 + 20 * round)));
        if child.try_wait().unwrap().is_none() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Between kills, at every moment, no message is lost: each is in the old or new
        // mailbox (a merge in flight may have it in both, with its record).
        let found_new = census(&new);
        for (id, u) in &expected {
            let in_new = found_new.get(id).is_some_and(|v| v.contains(u));
            let old = fs::read(flat.join(u)).unwrap_or_default();
            let needle = format!("Message-ID: <{id}>");
            let in_old = old.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(in_new || in_old, "round {round}: {id} lost");
        }
    }
    // A SIGKILL between creating a dotlock and writing its pid into it leaves an empty
    // dotlock, which every locker (MDAs included) respects for STALE_DOTLOCK_AGE: the test
    // plays the admin who removes it. One holding the killed run's pid is broken at once by
    // the next run (its creator is gone).
    for e in fs::read_dir(&flat).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "lock") && fs::read(&p).unwrap().is_empty() {
            eprintln!("removing empty dotlock {}", p.display());
            fs::remove_file(&p).unwrap();
        }
    }
    let o = spool(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_invariant(&new, &flat, &expected);
    let leftovers: Vec<PathBuf> = fs::read_dir(&new)
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "records left: {leftovers:?}");
    eprintln!("{kills} kills during migration, resumed without loss or duplicates");
}

#[test]
fn check_reports_and_fixes() {
    if !is_root() {
        return skip("check_reports_and_fixes", "owners need root to set up");
    }
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("spool");
    fs::create_dir(&sp).unwrap();
    let state = dir.path().join("state");
    let base = ["--spool-dir", s(&sp), "--state-dir", s(&state)];
    let o = spool(&[&base[..], &["create", "daemon", "bin", "sys"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let good = b"From a Mon Jan  1 00:00:00 2024\n\nx\n\n";
    for u in ["d/daemon", "b/bin", "s/sys"] {
        fs::write(sp.join(u), good).unwrap();
    }
    let clean = spool(&[&base[..], &["check", "--all"]].concat());
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    // Bad mode, wrong owner, a stale dotlock of a dead process, data before the first From,
    // a hash directory with the wrong mode.
    fs::set_permissions(sp.join("d/daemon"), fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(sp.join("b/bin"), Some(uid_of("nobody")), None).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    fs::write(dotlock_path(&sp.join("b/bin")), format!("{dead}\n")).unwrap();
    fs::write(sp.join("s/sys"), [&b"garbage\n"[..], good].concat()).unwrap();
    fs::set_permissions(sp.join("s"), fs::Permissions::from_mode(0o755)).unwrap();
    let o = spool(&[&base[..], &["check", "--all"]].concat());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for want in [
        "mode 0644 (want 0600)",
        "owner uid",
        "stale dotlock",
        "before the first From",
        "mode 0755 (want 2775)",
    ] {
        assert!(t.contains(want), "missing {want:?}:\n{t}");
    }
    // Nothing changed without --fix.
    assert!(dotlock_path(&sp.join("b/bin")).exists());
    assert_eq!(
        fs::metadata(sp.join("d/daemon")).unwrap().mode() & 0o777,
        0o644
    );
    let o = spool(&[&base[..], &["check", "--all", "--fix"]].concat());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "the preamble is never fixed: {t}");
    assert!(t.contains("4 fixed"), "{t}");
    assert!(!dotlock_path(&sp.join("b/bin")).exists());
    assert_eq!(
        fs::metadata(sp.join("d/daemon")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::metadata(sp.join("b/bin")).unwrap().uid(), uid_of("bin"));
    assert_eq!(fs::metadata(sp.join("s")).unwrap().mode() & 0o7777, 0o2775);
    assert_eq!(
        fs::read(sp.join("s/sys")).unwrap(),
        [&b"garbage\n"[..], good].concat()
    );
    // Only the content problem is left; for one user.
    let o = spool(&[&base[..], &["check", "daemon", "bin"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = spool(&[&base[..], &["check", "sys"]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        spool(&[&base[..], &["check"]].concat()).status.code(),
        Some(100)
    );
}

#[test]
fn stats_counts_and_json_parses() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("spool");
    let mut want_total = (0u64, 0u64);
    let mut largest = (0u64, "");
    for (i, u) in ["alice", "bob", "carol", "d\"q"].iter().enumerate() {
        let p = hashed_path(&sp, u.as_bytes(), 1).unwrap();
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let bytes = gen::mbox_bytes(&gen::varied(i as u64, i * 3));
        want_total.0 += (i * 3) as u64;
        want_total.1 += bytes.len() as u64;
        if bytes.len() as u64 > largest.0 {
            largest = (bytes.len() as u64, u);
        }
        fs::write(&p, bytes).unwrap();
    }
    let o = spool(&["--spool-dir", s(&sp), "stats"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains(&format!(
            "total: 4 mailboxes, {} messages, {} bytes",
            want_total.0, want_total.1
        )),
        "{t}"
    );
    let o = spool(&["--spool-dir", s(&sp), "stats", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let Some(py) = popspool_tests::which("python3") else {
        return skip(
            "stats_counts_and_json_parses",
            "no python3 to parse the JSON",
        );
    };
    let mut c = Command::new(py)
        .args([
            "-c",
            "import json,sys; d=json.load(sys.stdin); t=d['total']; \
             print(t['mailboxes'], t['messages'], t['bytes'], d['largest'][0]['user'], \
             sorted(u['user'] for u in d['users'])[-1])",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(c.stdin.as_mut().unwrap(), &o.stdout).unwrap();
    drop(c.stdin.take());
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        line.trim(),
        format!("4 {} {} {} d\"q", want_total.0, want_total.1, largest.1)
    );
}

#[test]
fn expire_removes_exactly_the_old_messages() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("spool");
    let state = dir.path().join("state");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let asctime = |days_ago: u64| {
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", now - days_ago * 86_400),
                "+%a %b %e %H:%M:%S %Y",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut msgs = gen::varied(11, 24);
    let mut kept = Vec::new();
    for (i, m) in msgs.iter_mut().enumerate() {
        let age = [400, 1, 31, 29, 0, 90][i % 6];
        m.from_line = match i % 8 {
            7 => b"From someone@example.org sometime".to_vec(), // undated: kept
            _ => format!("From sender{i}@example.org {}", asctime(age)).into_bytes(),
        };
        if i % 8 == 7 || age < 30 {
            kept.push(m.clone());
        }
    }
    let p = hashed_path(&sp, b"tester", 1).unwrap();
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, gen::mbox_bytes(&msgs)).unwrap();
    let args = [
        "--spool-dir",
        s(&sp),
        "--state-dir",
        s(&state),
        "expire",
        "--days",
        "30",
        "tester",
    ];
    let dry = spool(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert_eq!(fs::read(&p).unwrap(), gen::mbox_bytes(&msgs));
    let o = spool(&args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let removed = msgs.len() - kept.len();
    assert!(t.contains(&format!("{removed} messages removed")), "{t}");
    assert!(t.contains("no date"), "{t}");
    // What is left reads back byte-exact through pop-serve.
    let mut sargs = serve_args(&state);
    sargs.push(format!("mbox:{}", p.display()));
    let mut srv = Served::spawn(&sargs, &[("USER", "tester")]);
    let c = &mut srv.client;
    assert!(c.line().starts_with("+OK"));
    let total: usize = kept.iter().map(|m| m.canonical().len()).sum();
    assert_eq!(c.cmd("STAT"), format!("+OK {} {}", kept.len(), total));
    for (i, m) in kept.iter().enumerate() {
        assert!(c.cmd(&format!("RETR {}", i + 1)).starts_with("+OK"));
        assert_eq!(c.body(), m.canonical(), "message {}", i + 1);
    }
    c.cmd("QUIT");
    srv.finish();
}
