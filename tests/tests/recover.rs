//! `pop-spool recover` finishes what a killed UPDATE left: pop-serve is SIGKILLed in the middle
//! of QUIT on a 2,000-message mbox, the mbox file is read as a foreign reader (a MUA, a backup)
//! would read it before any toolkit program runs again, then `pop-spool recover` runs and the
//! file itself must hold every kept message exactly once and none of the deleted ones. With
//! nothing pending, recover changes nothing; run as root it looks into a user's state directory
//! only as that user.

use popspool_tests::gen::{self, Message, Rng};
use popspool_tests::pop::Served;
use popspool_tests::{bin, is_root, serve_args, skip};
use spool_store::mailbox::state_paths;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Messages in the mailbox of the crash tests (the figure).
const MESSAGES: usize = 2_000;
/// Body lines per message: about 9 KB a message, 18 MB a mailbox, so that the compaction
/// lasts long enough for kills to land inside it.
const LINES: usize = 100;
/// A user name no passwd database holds: `--state-dir` is then used without switching.
const USER: &str = "rcvtester";
/// Kills at random moments of QUIT in the measurement (the figure).
const MEASURE_RUNS: usize = 60;

fn messages() -> Vec<Message> {
    (0..MESSAGES)
        .map(|i| {
            let mut m = Message::simple(i);
            m.body = Some(
                (0..LINES)
                    .map(|k| format!("{i:05} line {k:04} {}", "x".repeat(80)).into_bytes())
                    .collect(),
            );
            m
        })
        .collect()
}

/// Deleted by the sessions: the first message (everything moves) and every 16th from the 4th.
fn is_deleted(i: usize) -> bool {
    i == 0 || i % 16 == 3
}

/// One scratch spool (flat) with the mailbox of [`USER`] and a state directory.
struct Scene {
    _dir: tempfile::TempDir,
    spool: PathBuf,
    state: PathBuf,
    mbox: PathBuf,
    msgs: Vec<Message>,
    original: Vec<u8>,
    committed: Vec<u8>,
    /// Stored bytes of each message -> its number.
    by_bytes: HashMap<Vec<u8>, usize>,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let state = dir.path().join("state");
        fs::create_dir(&spool).unwrap();
        let mbox = spool.join(USER);
        let msgs = messages();
        let original = gen::mbox_bytes(&msgs);
        let kept: Vec<Message> = msgs
            .iter()
            .enumerate()
            .filter(|(i, _)| !is_deleted(*i))
            .map(|(_, m)| m.clone())
            .collect();
        let committed = gen::mbox_bytes(&kept);
        let by_bytes = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| (m.stored(), i))
            .collect();
        Scene {
            _dir: dir,
            spool,
            state,
            mbox,
            msgs,
            original,
            committed,
            by_bytes,
        }
    }

    fn journal(&self) -> PathBuf {
        state_paths(&self.state, &self.mbox).journal
    }

    fn serve(&self) -> Served {
        let mut args = serve_args(&self.state);
        args.extend(["--lock-timeout".into(), "30".into()]);
        args.push(format!("mbox:{}", self.mbox.display()));
        Served::spawn(&args, &[("USER", USER)])
    }

    /// A session that deletes the messages of [`is_deleted`] and sends QUIT; returns it with
    /// the moment QUIT was sent.
    fn quit_with_deletions(&self) -> (Served, Instant) {
        let mut s = self.serve();
        assert_eq!(s.client.line(), "+OK ");
        for i in (0..self.msgs.len()).filter(|&i| is_deleted(i)) {
            let r = s.client.cmd(&format!("DELE {}", i + 1));
            assert!(r.starts_with("+OK"), "DELE {}: {r}", i + 1);
        }
        s.client.send("QUIT");
        (s, Instant::now())
    }

    fn recover_cmd(&self, users: &[&str]) -> Output {
        Command::new(bin("pop-spool"))
            .arg("--spool-dir")
            .arg(&self.spool)
            .args(["--hash-depth", "0", "--lock-timeout", "30", "--state-dir"])
            .arg(&self.state)
            .arg("recover")
            .args(users)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What a plain mbox reader finds in a file: messages start at a `From ` line at the start of
/// the file or after an empty line, as mutt and Python's `mailbox.mbox` split them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Reading {
    /// Copies of each original message found intact.
    copies: Vec<usize>,
    /// Pieces that are no intact message (cut, or two run together).
    corrupt: usize,
}

impl Reading {
    fn duplicates(&self) -> usize {
        self.copies.iter().map(|&c| c.saturating_sub(1)).sum()
    }

    /// Deleted messages still there (not yet overwritten by the compaction).
    fn deleted_present(&self) -> usize {
        (0..self.copies.len())
            .filter(|&i| is_deleted(i) && self.copies[i] > 0)
            .count()
    }

    /// Kept messages not found intact anywhere.
    fn kept_missing(&self) -> usize {
        (0..self.copies.len())
            .filter(|&i| !is_deleted(i) && self.copies[i] == 0)
            .count()
    }
}

fn read_plain(scene: &Scene, bytes: &[u8]) -> Reading {
    let mut starts = Vec::new();
    let mut at = 0;
    let mut prev_empty = true;
    while at < bytes.len() {
        let end = bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| at + p + 1);
        let line = &bytes[at..end];
        if prev_empty && line.starts_with(b"From ") {
            starts.push(at);
        }
        prev_empty = line == b"\n";
        at = end;
    }
    let mut r = Reading {
        copies: vec![0; scene.msgs.len()],
        corrupt: usize::from(starts.first().is_some_and(|&s| s > 0)),
    };
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(bytes.len());
        match scene.by_bytes.get(&bytes[s..e]) {
            Some(&i) => r.copies[i] += 1,
            None => r.corrupt += 1,
        }
    }
    r
}

/// The file holds every kept message exactly once, none of the deleted ones, nothing else.
fn assert_committed(scene: &Scene, bytes: &[u8], what: &str) {
    let r = read_plain(scene, bytes);
    assert_eq!(r.corrupt, 0, "{what}: corrupt messages");
    for (i, &c) in r.copies.iter().enumerate() {
        let want = usize::from(!is_deleted(i));
        assert_eq!(c, want, "{what}: message {i} found {c} times");
    }
    assert!(bytes == scene.committed, "{what}: not the committed bytes");
}

/// How a run kills pop-serve.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This long after QUIT was sent.
    AfterQuit(Duration),
    /// This long after the journal appeared (the compaction is under way).
    AfterJournal(Duration),
}

/// What one killed UPDATE left.
#[derive(Debug)]
struct Run {
    /// A journal was pending after the kill.
    pending: bool,
    /// What a plain reader saw right after the kill, when the file was torn (neither the
    /// original nor the committed mailbox).
    torn: Option<Reading>,
    /// How long `pop-spool recover` ran (recorded, never asserted).
    took: Duration,
}

/// Writes the original mailbox, kills a session's UPDATE as `kill` says, reads the file as a
/// foreign reader, runs `pop-spool recover` and checks what it left.
fn crash_and_recover(scene: &Scene, kill: Kill, what: &str) -> Run {
    fs::write(&scene.mbox, &scene.original).unwrap();
    let journal = scene.journal();
    assert!(!journal.exists(), "{what}: a journal is left over");
    let (mut s, quit) = scene.quit_with_deletions();
    match kill {
        Kill::AfterQuit(d) => std::thread::sleep(d.saturating_sub(quit.elapsed())),
        Kill::AfterJournal(d) => {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !journal.exists()
                && s.child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_micros(50));
            }
            std::thread::sleep(d);
        }
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
    let pending = journal.exists();
    // The foreign reader, before any toolkit program runs.
    let seen = fs::read(&scene.mbox).unwrap();
    let torn =
        (seen != scene.original && seen != scene.committed).then(|| read_plain(scene, &seen));
    assert!(
        pending || torn.is_none(),
        "{what}: the file is torn but no journal is pending"
    );
    let t = Instant::now();
    let o = scene.recover_cmd(&[USER]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let after = fs::read(&scene.mbox).unwrap();
    assert!(
        !journal.exists(),
        "{what}: journal still there\n{}",
        text(&o)
    );
    if pending {
        assert!(
            out.contains("replayed an interrupted update"),
            "{what}: {out}"
        );
        assert_committed(scene, &after, what);
    } else {
        assert!(out.contains("nothing pending"), "{what}: {out}");
        assert!(
            after == seen,
            "{what}: recover changed a mailbox with nothing pending"
        );
        assert!(
            after == scene.original || after == scene.committed,
            "{what}: neither the original nor the committed mailbox"
        );
    }
    Run {
        pending,
        torn,
        took,
    }
}

/// How long a whole QUIT takes on this machine, and how long its journal exists.
fn time_quit(scene: &Scene) -> (Duration, Duration) {
    fs::write(&scene.mbox, &scene.original).unwrap();
    let journal = scene.journal();
    let (mut s, quit) = scene.quit_with_deletions();
    let mut first = None;
    let mut last = None;
    while s.child.try_wait().unwrap().is_none() {
        if journal.exists() {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let full = quit.elapsed();
    assert_committed(
        scene,
        &fs::read(&scene.mbox).unwrap(),
        "an uninterrupted QUIT",
    );
    let journal_life = match (first, last) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    (full, journal_life)
}

#[test]
fn recover_finishes_updates_killed_at_several_points() {
    let scene = Scene::new();
    let (full, life) = time_quit(&scene);
    eprintln!("QUIT of {MESSAGES} messages: {full:?}, journal present for {life:?}");
    // Right after the journal is installed (nothing or little copied), then through the
    // copy rounds, then at and beyond the end of the compaction.
    let mut points = vec![Kill::AfterJournal(Duration::ZERO)];
    for tenth in [1u32, 3, 5, 7, 9] {
        points.push(Kill::AfterJournal(life * tenth / 10));
    }
    for tenth in [2u32, 11] {
        points.push(Kill::AfterQuit(full * tenth / 10));
    }
    let (mut pending, mut torn) = (0, 0);
    for (k, kill) in points.iter().enumerate() {
        let what = format!("point {k} ({kill:?})");
        let r = crash_and_recover(&scene, *kill, &what);
        if let Some(t) = &r.torn {
            eprintln!(
                "{what}: torn before recover: {} duplicates, {} corrupt",
                t.duplicates(),
                t.corrupt
            );
            torn += 1;
        }
        pending += usize::from(r.pending);
    }
    eprintln!(
        "{} kill points: {pending} left a journal, {torn} a torn file",
        points.len()
    );
    assert!(
        pending > 0,
        "no kill landed while the journal existed: nothing was recovered"
    );
}

#[test]
fn torn_window_measured_over_random_kills() {
    let scene = Scene::new();
    let (full, _) = time_quit(&scene);
    let mut rng = Rng::new(12);
    let (mut pending, mut torn, mut dups, mut corrupt) = (0, 0, 0, 0);
    let (mut deleted, mut missing) = (0, 0);
    let mut longest = Duration::ZERO;
    for run in 0..MEASURE_RUNS {
        let d = Duration::from_micros(rng.below(full.as_micros() as u64 * 12 / 10 + 1));
        let r = crash_and_recover(&scene, Kill::AfterQuit(d), &format!("run {run} ({d:?})"));
        pending += usize::from(r.pending);
        if r.pending {
            longest = longest.max(r.took);
        }
        if let Some(t) = r.torn {
            torn += 1;
            dups += t.duplicates();
            corrupt += t.corrupt;
            deleted += t.deleted_present();
            missing += t.kept_missing();
        }
    }
    eprintln!(
        "{MEASURE_RUNS} random kills during a {full:?} QUIT of {MESSAGES} messages: \
         {pending} left a journal, {torn} left a torn file ({dups} duplicate copies, \
         {corrupt} corrupt messages, {deleted} deleted messages still there, {missing} kept \
         messages missing, in total, as a plain reader sees them); \
         after pop-spool recover: 0 torn (longest recover run with a journal: {longest:?})"
    );
}

/// mtime with nanoseconds, size, inode and the bytes.
fn fingerprint(p: &Path) -> (i64, i64, u64, u64, Vec<u8>) {
    let m = fs::symlink_metadata(p).unwrap();
    (
        m.mtime(),
        m.mtime_nsec(),
        m.ino(),
        m.len(),
        fs::read(p).unwrap(),
    )
}

fn small_mailbox(n: usize) -> Vec<u8> {
    gen::mbox_bytes(&(0..n).map(Message::simple).collect::<Vec<_>>())
}

#[test]
fn recover_with_nothing_pending_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let state = dir.path().join("state");
    let users = ["alice", "bob", "carol"];
    let mut boxes = Vec::new();
    for (k, u) in users.iter().enumerate() {
        let p = spool_store::spoolpath::hashed_path(&spool, u.as_bytes(), 1).unwrap();
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, small_mailbox(k * 3)).unwrap();
        boxes.push(p);
    }
    let before: Vec<_> = boxes.iter().map(|p| fingerprint(p)).collect();
    let dirs_before: Vec<_> = boxes
        .iter()
        .map(|p| fs::read_dir(p.parent().unwrap()).unwrap().count())
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    // Every mailbox (no USER), then named ones.
    for args in [vec![], vec!["alice", "carol"], vec!["--all"]] {
        let o = Command::new(bin("pop-spool"))
            .arg("--spool-dir")
            .arg(&spool)
            .arg("--state-dir")
            .arg(&state)
            .arg("recover")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let n = if args.len() == 2 { 2 } else { 3 };
        assert_eq!(
            out.matches(": nothing pending").count(),
            n,
            "{args:?}: {out}"
        );
        assert!(
            out.contains(&format!("recover: {n} mailboxes, 0 replayed")),
            "{args:?}: {out}"
        );
        for (p, b) in boxes.iter().zip(&before) {
            assert_eq!(&fingerprint(p), b, "{args:?}: {} changed", p.display());
        }
        assert!(!state.exists(), "{args:?}: the state directory was created");
        let dirs_now: Vec<_> = boxes
            .iter()
            .map(|p| fs::read_dir(p.parent().unwrap()).unwrap().count())
            .collect();
        assert_eq!(dirs_now, dirs_before, "{args:?}: lock files left or made");
    }
    // A user without a mailbox is reported, and is no failure.
    let o = Command::new(bin("pop-spool"))
        .arg("--spool-dir")
        .arg(&spool)
        .arg("--state-dir")
        .arg(&state)
        .args(["recover", "dave"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("dave"),
        "{}",
        text(&o)
    );
    // Users and --all together, a bad user name: usage errors.
    for args in [vec!["--all", "alice"], vec!["../x"]] {
        let o = Command::new(bin("pop-spool"))
            .arg("--spool-dir")
            .arg(&spool)
            .arg("--state-dir")
            .arg(&state)
            .arg("recover")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(100), "{args:?}: {}", text(&o));
    }
}

#[test]
fn recover_reports_a_corrupt_journal_and_fails() {
    let scene = Scene::new();
    let bytes = small_mailbox(5);
    fs::write(&scene.mbox, &bytes).unwrap();
    fs::create_dir(&scene.state).unwrap();
    let journal = scene.journal();
    fs::write(&journal, b"POPSPJNL but nothing a journal holds").unwrap();
    let o = scene.recover_cmd(&[]);
    assert_eq!(o.status.code(), Some(111), "{}", text(&o));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(err.contains("failed:") && err.contains("corrupt"), "{err}");
    assert!(out.contains("1 failed"), "{out}");
    assert!(!journal.exists(), "the corrupt journal was moved aside");
    let aside: Vec<String> = fs::read_dir(&scene.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        aside.iter().any(|n| n.contains(".journal.corrupt")),
        "{aside:?}"
    );
    assert_eq!(
        fs::read(&scene.mbox).unwrap(),
        bytes,
        "the mailbox is untouched"
    );
    // The evidence is kept; the next run has nothing pending.
    let o = scene.recover_cmd(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A throwaway account whose home is under `base`; removed on drop.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl TempUser {
    fn create(base: &Path) -> Option<TempUser> {
        let name = format!("prcv{}", std::process::id() % 100_000);
        let home = base.join(format!("home-{name}"));
        let st = Command::new("useradd")
            .args(["-M", "-U", "-s", "/usr/sbin/nologin", "-d"])
            .arg(&home)
            .arg(&name)
            .stdout(Stdio::null())
            .status()
            .ok()?;
        if !st.success() {
            return None;
        }
        let u = nix::unistd::User::from_name(&name).ok()??;
        let user = TempUser {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home,
        };
        fs::create_dir(&user.home).unwrap();
        user.give(&user.home, 0o700);
        Some(user)
    }

    fn give(&self, p: &Path, mode: u32) {
        std::os::unix::fs::chown(p, Some(self.uid), Some(self.gid)).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

const DECOY: &[u8] = b"root's own file: never to be touched by pop-spool\n";

#[test]
fn recover_as_root_never_follows_a_symlinked_state_dir() {
    let test = "recover_as_root_never_follows_a_symlinked_state_dir";
    if !is_root() {
        skip(
            test,
            "needs root to run pop-spool as root for another account",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    let Some(user) = TempUser::create(&base) else {
        skip(test, "useradd failed");
        return;
    };
    let spool = base.join("spool");
    let mbox = spool_store::spoolpath::hashed_path(&spool, user.name.as_bytes(), 1).unwrap();
    fs::create_dir_all(mbox.parent().unwrap()).unwrap();
    let bytes = small_mailbox(4);
    fs::write(&mbox, &bytes).unwrap();
    user.give(&mbox, 0o600);
    let spool_cmd = || {
        Command::new(bin("pop-spool"))
            .arg("--spool-dir")
            .arg(&spool)
            .args(["--hash-depth", "1", "--lock-timeout", "5", "recover"])
            .arg(&user.name)
            .output()
            .unwrap()
    };
    let state = user.home.join(".popspool");

    // A root-only directory (0700, and 0770 writable by group root) holding decoys named like
    // the journal: `.popspool` points there.
    for mode in [0o700, 0o770] {
        let target = base.join(format!("root{mode:o}"));
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
        let j = state_paths(&target, &mbox).journal;
        let mut tmp = j.clone().into_os_string();
        tmp.push(".tmp");
        let decoys = [j, PathBuf::from(tmp)];
        for d in &decoys {
            fs::write(d, DECOY).unwrap();
        }
        let _ = fs::remove_file(&state);
        std::os::unix::fs::symlink(&target, &state).unwrap();
        let o = spool_cmd();
        let what = format!(".popspool -> root {mode:o}");
        assert!(
            matches!(o.status.code(), Some(0) | Some(111)),
            "{what}: {}",
            text(&o)
        );
        assert!(!text(&o).contains("panicked"), "{what}: {}", text(&o));
        assert!(!text(&o).contains("replayed an"), "{what}: {}", text(&o));
        if o.status.code() == Some(111) {
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("failed:"),
                "{what}: failed without a word\n{}",
                text(&o)
            );
        }
        let mut names: Vec<PathBuf> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        assert_eq!(names, decoys.to_vec(), "{what}: files appeared or vanished");
        for d in &decoys {
            let m = fs::symlink_metadata(d).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "{what}");
            assert_eq!(
                fs::read(d).unwrap(),
                DECOY,
                "{what}: {} rewritten",
                d.display()
            );
        }
        let m = fs::symlink_metadata(&target).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, mode), "{what}");
        assert_eq!(
            fs::read(&mbox).unwrap(),
            bytes,
            "{what}: the mailbox changed"
        );
    }

    // The user's own pending journal (a session of theirs killed mid-UPDATE) is replayed by
    // root as the user: the result is theirs and the state directory stays theirs.
    fs::remove_file(&state).unwrap();
    let big = gen::mbox_bytes(&messages()[..400]);
    fs::write(&mbox, &big).unwrap();
    user.give(&mbox, 0o600);
    let mut pending = false;
    for attempt in 0..20u32 {
        fs::write(&mbox, &big).unwrap();
        let _ = fs::remove_dir_all(&state);
        let mut args = serve_args(&state);
        args.push(format!("mbox:{}", mbox.display()));
        let mut s = Served::spawn(&args, &[("USER", user.name.as_str())]);
        assert_eq!(s.client.line(), "+OK ");
        assert!(s.client.cmd("DELE 1").starts_with("+OK"));
        s.client.send("QUIT");
        let journal = state_paths(&state, &mbox).journal;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !journal.exists()
            && s.child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(20));
        }
        std::thread::sleep(Duration::from_micros(200 * u64::from(attempt)));
        let _ = s.child.kill();
        let _ = s.child.wait();
        if journal.exists() {
            pending = true;
            break;
        }
    }
    if !pending {
        skip(
            test,
            "no kill left a journal pending (the part with a real journal)",
        );
        return;
    }
    // pop-serve ran as root here (--allow-root): hand the state over as the user's session
    // would have left it.
    user.give(&state, 0o700);
    for e in fs::read_dir(&state).unwrap() {
        user.give(&e.unwrap().path(), 0o600);
    }
    // With only the capabilities the boot unit leaves it (and no_new_privs), when setpriv is
    // there to drop the others.
    let o = match popspool_tests::which("setpriv") {
        Some(setpriv) => {
            let caps: Vec<String> = unit_values("CapabilityBoundingSet")
                .iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
                .collect();
            assert!(!caps.is_empty());
            Command::new(setpriv)
                .args(["--no-new-privs", "--bounding-set"])
                .arg(format!("-all,{}", caps.join(",")))
                .arg(bin("pop-spool"))
                .arg("--spool-dir")
                .arg(&spool)
                .args(["--hash-depth", "1", "--lock-timeout", "5", "recover"])
                .arg(&user.name)
                .output()
                .unwrap()
        }
        None => spool_cmd(),
    };
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("replayed an interrupted update"),
        "{}",
        text(&o)
    );
    let want = gen::mbox_bytes(&messages()[1..400]);
    assert!(
        fs::read(&mbox).unwrap() == want,
        "not the committed mailbox"
    );
    let m = fs::symlink_metadata(&state).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.uid(), m.mode() & 0o7777), (user.uid, 0o700));
    for e in fs::read_dir(&state).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(
            fs::symlink_metadata(&p).unwrap().uid(),
            user.uid,
            "{} is not the user's",
            p.display()
        );
    }
    let m = fs::symlink_metadata(&mbox).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (user.uid, user.gid, 0o600)
    );
}

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("scripts/systemd/pop-spool-recover.service")
}

/// The words of every `KEY=` line of the boot unit.
fn unit_values(key: &str) -> Vec<String> {
    fs::read_to_string(unit_path())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

/// The boot unit: a oneshot running `pop-spool recover`, ordered before the three POP3
/// sockets and local logins and after the local file systems and the spool's mount, without
/// the default dependencies that would make that a cycle, and confined.
#[test]
fn recover_unit_runs_before_the_sockets_and_is_confined() {
    let unit = unit_path();
    let values = unit_values;
    assert_eq!(values("Type"), ["oneshot"]);
    assert_eq!(values("DefaultDependencies"), ["no"]);
    let exec = values("ExecStart");
    assert!(
        exec.first().is_some_and(|p| p.ends_with("/pop-spool")),
        "{exec:?}"
    );
    assert_eq!(exec.last().map(String::as_str), Some("recover"), "{exec:?}");
    let before = values("Before");
    for s in [
        "pop3.socket",
        "pop3s.socket",
        "pop3-starttls.socket",
        "sockets.target",
        "systemd-user-sessions.service",
    ] {
        assert!(
            before.contains(&s.to_string()),
            "Before= lacks {s}: {before:?}"
        );
    }
    assert!(values("After").contains(&"local-fs.target".to_string()));
    assert_eq!(values("RequiresMountsFor"), ["/var/spool/mail"]);
    assert_eq!(values("WantedBy"), ["sockets.target"]);
    assert_eq!(values("ProtectSystem"), ["strict"]);
    assert_eq!(values("ReadWritePaths"), ["/var/spool/mail", "-/home"]);
    for (k, v) in [
        ("PrivateTmp", "yes"),
        ("PrivateNetwork", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert_eq!(values(k), [v], "{k}");
    }
    let Some(analyze) = popspool_tests::which("systemd-analyze") else {
        skip(
            "recover_unit_runs_before_the_sockets_and_is_confined",
            "systemd-analyze not installed (Debian package systemd): exposure not rated",
        );
        return;
    };
    let o = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let rating: f64 = out
        .lines()
        .find_map(|l| l.split("exposure level for ").nth(1))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rating in\n{}", text(&o)));
    eprintln!("systemd-analyze security: pop-spool-recover.service {rating}");
    assert!(rating <= 4.0, "exposure {rating} above 4.0\n{out}");
}

/// Recover beside an MDA that takes the locks but knows nothing of journals (as procmail) and
/// beside sessions: after a killed UPDATE left a journal, one message is delivered onto the
/// torn file, then deliveries, recover runs and sessions go on together, each waiting its turn
/// for the mailbox's locks; in the end the file is the committed mailbox followed by every
/// delivered message once, in delivery order.
#[test]
fn recover_runs_safely_beside_deliveries_and_sessions() {
    const DELIVERIES: usize = 100;
    let scene = Scene::new();
    let journal = scene.journal();
    let mut pending = false;
    for attempt in 0..10u32 {
        fs::write(&scene.mbox, &scene.original).unwrap();
        let (mut s, _) = scene.quit_with_deletions();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !journal.exists()
            && s.child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(50));
        }
        std::thread::sleep(Duration::from_millis(u64::from(attempt)));
        let _ = s.child.kill();
        let _ = s.child.wait();
        if journal.exists() {
            pending = true;
            break;
        }
    }
    assert!(pending, "no kill left a journal pending");

    let delivered: Vec<Vec<u8>> = (0..DELIVERIES)
        .map(|k| Message::simple(MESSAGES + k).stored())
        .collect();
    // The first delivery lands on the torn file, before anything replayed the journal.
    deliver_locked(&scene.mbox, &delivered[0]);
    let appender = {
        let path = scene.mbox.clone();
        let delivered = delivered.clone();
        std::thread::spawn(move || {
            for m in &delivered[1..] {
                deliver_locked(&path, m);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let (mut recovers, mut sessions, mut replayed) = (0, 0, 0);
    loop {
        let done = appender.is_finished();
        let o = scene.recover_cmd(&[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        recovers += 1;
        replayed += usize::from(String::from_utf8_lossy(&o.stdout).contains("replayed an"));
        let mut s = scene.serve();
        let l = s.client.line();
        assert!(l.starts_with("+OK"), "session refused: {l}");
        assert!(s.client.cmd("STAT").starts_with("+OK"));
        s.client.cmd("QUIT");
        s.finish();
        sessions += 1;
        if done {
            break;
        }
    }
    appender.join().unwrap();
    eprintln!(
        "{recovers} recover runs ({replayed} replayed) and {sessions} sessions beside {DELIVERIES} deliveries"
    );
    assert!(!journal.exists());
    let mut want = scene.committed.clone();
    for m in &delivered {
        want.extend_from_slice(m);
    }
    let now = fs::read(&scene.mbox).unwrap();
    assert_committed(
        &scene,
        &now[..now.len().min(scene.committed.len())],
        "the mailbox before the deliveries",
    );
    assert!(
        now == want,
        "not the committed mailbox followed by each delivery once"
    );
}

/// Appends `m` under the content lock (dotlock, then fcntl), as an MDA that knows nothing of
/// update journals does.
fn deliver_locked(path: &Path, m: &[u8]) {
    use std::io::{Seek, Write};
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let opts = spool_store::lock::LockOptions {
        helper: None,
        wait: Duration::from_secs(30),
        stale_age: spool_wire::limits::STALE_DOTLOCK_AGE,
    };
    let lock = spool_store::lock::ContentLock::acquire(path, &f, &opts).expect("lock");
    let mut w = &f;
    w.seek(std::io::SeekFrom::End(0)).unwrap();
    w.write_all(m).unwrap();
    f.sync_data().unwrap();
    lock.release().unwrap();
}
