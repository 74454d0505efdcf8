//! Issue 9, finding 1: root's `pop-spool` must never follow a path its user controls. The user
//! owns `$HOME`, so they can swap `$HOME/.popspool` for a symlink to a root-only directory at
//! any moment; `index`, `expire`, `migrate` and `recover`, run as root, must then either work in
//! the real directory or fail cleanly, and never create, change or remove anything in the root-only one.
//!
//! Each test creates a throwaway account (useradd, removed again) and races `pop-spool`: a
//! thread swaps `.popspool` for a symlink the moment the directory appears, or the moment
//! `pop-spool`'s dotlock on the mailbox appears (the reproduction of the report). Two targets
//! alternate: a `root:root 0700` directory and a `root:root 0770` one (writable through the
//! supplementary group root the test, and so `pop-spool`, runs with). Both hold decoys named
//! like the mailbox's journal and its `.tmp`, which a root that follows the symlink would
//! remove or move aside while replaying; nothing else may appear there.

use popspool_tests::{bin, is_root, skip};
use spool_store::mailbox::state_paths;
use spool_store::spoolpath::hashed_path;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Races per subcommand.
const RUNS: usize = 200;
/// Upper bound on one subcommand's races, whatever the machine's load.
const TIME_BUDGET: Duration = Duration::from_secs(90);
/// Fewer completed races than this within the budget make the test inconclusive: fail.
const MIN_RUNS: usize = 40;
/// Content of the decoys in the root-only directories.
const DECOY: &[u8] = b"root's own file: never to be touched by pop-spool\n";

/// A throwaway account with its home under a scratch directory; removed on drop.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl TempUser {
    fn create(tag: &str, base: &Path) -> Option<TempUser> {
        let name = format!("psec{}{tag}", std::process::id() % 100_000);
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
        std::os::unix::fs::chown(&user.home, Some(user.uid), Some(user.gid)).unwrap();
        fs::set_permissions(&user.home, fs::Permissions::from_mode(0o700)).unwrap();
        Some(user)
    }

    fn state(&self) -> PathBuf {
        self.home.join(".popspool")
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

/// The scratch tree of one test: a world-traversable base (the user must reach their home),
/// the spool, and the two root-only targets with their decoys.
struct Scene {
    _dir: tempfile::TempDir,
    base: PathBuf,
    spool: PathBuf,
    targets: [PathBuf; 2],
    user: TempUser,
}

impl Scene {
    fn new(tag: &str, test: &str) -> Option<Scene> {
        if !is_root() {
            skip(
                test,
                "needs root to run pop-spool as root for another account",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let Some(user) = TempUser::create(tag, &base) else {
            skip(test, "useradd failed");
            return None;
        };
        let spool = base.join("spool");
        fs::create_dir(&spool).unwrap();
        let targets = [base.join("root0700"), base.join("root0770")];
        for (t, mode) in targets.iter().zip([0o700, 0o770]) {
            fs::create_dir(t).unwrap();
            fs::set_permissions(t, fs::Permissions::from_mode(mode)).unwrap();
        }
        Some(Scene {
            _dir: dir,
            base,
            spool,
            targets,
            user,
        })
    }

    fn mailbox(&self) -> PathBuf {
        hashed_path(&self.spool, self.user.name.as_bytes(), 1).unwrap()
    }

    /// Puts decoys named like `mailbox`'s journal (and its `.tmp`) in every target.
    fn plant_decoys(&self, mailbox: &Path) {
        for t in &self.targets {
            let j = state_paths(t, mailbox).journal;
            let mut tmp = j.clone().into_os_string();
            tmp.push(".tmp");
            for p in [j, PathBuf::from(tmp)] {
                fs::write(&p, DECOY).unwrap();
            }
        }
    }

    /// Every target is exactly as planted: root's, its mode, only the decoys, untouched.
    fn assert_targets_untouched(&self, mailbox: &Path, what: &str) {
        for (t, mode) in self.targets.iter().zip([0o700, 0o770]) {
            let m = fs::symlink_metadata(t).unwrap();
            assert_eq!(
                (m.uid(), m.gid(), m.mode() & 0o7777),
                (0, 0, mode),
                "{what}: {} changed owner or mode",
                t.display()
            );
            let mut names: Vec<String> = fs::read_dir(t)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let j = state_paths(t, mailbox).journal;
            let jn = j.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                names,
                vec![jn.clone(), format!("{jn}.tmp")],
                "{what}: files appeared in or vanished from {}",
                t.display()
            );
            for n in &names {
                let p = t.join(n);
                let m = fs::symlink_metadata(&p).unwrap();
                assert_eq!((m.uid(), m.len()), (0, DECOY.len() as u64), "{what}: {n}");
                assert_eq!(fs::read(&p).unwrap(), DECOY, "{what}: {n} rewritten");
            }
        }
    }

    /// Removes whatever the previous race left in the home.
    fn reset_home(&self, precreate: bool) {
        for n in [".popspool", ".popspool.real"] {
            let p = self.user.home.join(n);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p).unwrap(),
                Ok(_) => fs::remove_file(&p).unwrap(),
                Err(_) => {}
            }
        }
        if precreate {
            let s = self.user.state();
            fs::create_dir(&s).unwrap();
            std::os::unix::fs::chown(&s, Some(self.user.uid), Some(self.user.gid)).unwrap();
            fs::set_permissions(&s, fs::Permissions::from_mode(0o700)).unwrap();
        }
    }

    /// Writes `bytes` as the user's mailbox at `path` (user:user 0600).
    fn write_mailbox(&self, path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        std::os::unix::fs::chown(path, Some(self.user.uid), Some(self.user.gid)).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// When the racer swaps the state directory for a symlink.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// As soon as `.popspool` exists as a directory (pop-spool just created it).
    DirAppears,
    /// As soon as the dotlock `PATH.lock` exists (pop-spool holds the mailbox).
    Dotlock,
}

/// One race: runs `cmd` while a thread waits for `trigger`, then renames `.popspool` away
/// and puts a symlink to `target` in its place. Returns the output and whether the swap
/// happened before `pop-spool` exited.
fn race(
    scene: &Scene,
    mut cmd: Command,
    trigger: Trigger,
    lock_of: &Path,
    target: &Path,
) -> (Output, bool) {
    let state = scene.user.state();
    let real = scene.user.home.join(".popspool.real");
    let mut lock = lock_of.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let target = target.to_path_buf();
    let done = Arc::new(AtomicBool::new(false));
    let racer = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let fire = match trigger {
                    Trigger::DirAppears => fs::symlink_metadata(&state).is_ok_and(|m| m.is_dir()),
                    Trigger::Dotlock => fs::symlink_metadata(&lock).is_ok(),
                };
                if fire {
                    let _ = fs::rename(&state, &real);
                    let _ = std::os::unix::fs::symlink(&target, &state);
                    return true;
                }
                std::hint::spin_loop();
            }
            false
        })
    };
    let out = cmd.stdin(Stdio::null()).output().expect("run pop-spool");
    done.store(true, Ordering::Relaxed);
    let swapped = racer.join().unwrap();
    (out, swapped)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// pop-spool either did its work (0) or failed cleanly (111, a temporary failure with a
/// message); never a panic or any other status.
fn assert_clean(o: &Output, what: &str) {
    let t = text(o);
    assert!(
        matches!(o.status.code(), Some(0) | Some(111)),
        "{what}: unexpected status\n{t}"
    );
    assert!(!t.contains("panicked"), "{what}: {t}");
    if o.status.code() == Some(111) {
        assert!(!o.stderr.is_empty(), "{what}: failed without a word\n{t}");
    }
}

/// Where a state file of the user ended up, if anywhere: `.popspool` when it is still a
/// directory, or where the racer moved it.
fn state_file(scene: &Scene, name: &str) -> Option<PathBuf> {
    // Only through a real directory: after a swap `.popspool` is the symlink to a target,
    // whose decoys carry the same names.
    [".popspool", ".popspool.real"]
        .iter()
        .map(|d| scene.user.home.join(d))
        .filter(|d| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        .map(|d| d.join(name))
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
}

/// A mailbox whose first `old` messages are dated 2018 (expired by `--days 30`) and whose
/// other `undated` ones have no date (kept): small, and enough scanning to race against.
fn mailbox_bytes(old: usize, undated: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..old + undated {
        if i < old {
            v.extend_from_slice(b"From old@example.org Mon Jan  1 00:00:00 2018\n");
        } else {
            v.extend_from_slice(b"From someone@example.org sometime\n");
        }
        v.extend_from_slice(
            format!("Message-ID: <{i}@t>\nSubject: {i}\n\nbody of message {i}\n\n").as_bytes(),
        );
    }
    v
}

fn spool_cmd(scene: &Scene, args: &[&str]) -> Command {
    let mut c = Command::new(bin("pop-spool"));
    c.arg("--spool-dir")
        .arg(&scene.spool)
        .args(["--hash-depth", "1", "--lock-timeout", "5"])
        .args(args);
    c
}

/// Counts of a series of races, printed for the record.
#[derive(Default, Debug)]
struct Tally {
    runs: usize,
    swapped: usize,
    ok: usize,
    failed: usize,
}

#[test]
fn index_never_follows_a_swapped_state_dir() {
    let test = "index_never_follows_a_swapped_state_dir";
    let Some(scene) = Scene::new("i", test) else {
        return;
    };
    let mbox = scene.mailbox();
    let bytes = mailbox_bytes(0, 300);
    scene.write_mailbox(&mbox, &bytes);
    scene.plant_decoys(&mbox);
    let index_name = state_paths(Path::new("/"), &mbox)
        .index
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut tally = Tally::default();
    let start = Instant::now();
    for i in 0..RUNS {
        if start.elapsed() > TIME_BUDGET {
            break;
        }
        let trigger = [Trigger::DirAppears, Trigger::Dotlock][i % 2];
        let target = &scene.targets[(i / 2) % 2];
        scene.reset_home(matches!(trigger, Trigger::Dotlock));
        let cmd = spool_cmd(&scene, &["index", &scene.user.name]);
        let (o, swapped) = race(&scene, cmd, trigger, &mbox, target);
        let what = format!("run {i} ({trigger:?}, {})", target.display());
        assert_clean(&o, &what);
        scene.assert_targets_untouched(&mbox, &what);
        if o.status.success() {
            let idx = state_file(&scene, &index_name)
                .unwrap_or_else(|| panic!("{what}: succeeded but no index\n{}", text(&o)));
            assert_eq!(fs::metadata(&idx).unwrap().uid(), scene.user.uid, "{what}");
            tally.ok += 1;
        } else {
            tally.failed += 1;
        }
        assert!(
            fs::read(&mbox).unwrap() == bytes,
            "{what}: the mailbox changed"
        );
        tally.runs += 1;
        tally.swapped += usize::from(swapped);
    }
    eprintln!("{test}: {tally:?}");
    assert!(tally.runs >= MIN_RUNS, "{tally:?}");
    assert!(tally.swapped > 0, "the racer never fired: {tally:?}");
}

#[test]
fn expire_never_follows_a_swapped_state_dir() {
    let test = "expire_never_follows_a_swapped_state_dir";
    let Some(scene) = Scene::new("e", test) else {
        return;
    };
    let mbox = scene.mailbox();
    let before = mailbox_bytes(5, 300);
    // What expiry leaves: everything after the five old messages.
    let cut = mailbox_bytes(5, 0).len();
    scene.plant_decoys(&mbox);
    let mut tally = Tally::default();
    let start = Instant::now();
    for i in 0..RUNS {
        if start.elapsed() > TIME_BUDGET {
            break;
        }
        let trigger = [Trigger::DirAppears, Trigger::Dotlock][i % 2];
        let target = &scene.targets[(i / 2) % 2];
        scene.reset_home(matches!(trigger, Trigger::Dotlock));
        scene.write_mailbox(&mbox, &before);
        let cmd = spool_cmd(&scene, &["expire", "--days", "30", &scene.user.name]);
        let (o, swapped) = race(&scene, cmd, trigger, &mbox, target);
        let what = format!("run {i} ({trigger:?}, {})", target.display());
        assert_clean(&o, &what);
        scene.assert_targets_untouched(&mbox, &what);
        let now = fs::read(&mbox).unwrap();
        if o.status.success() {
            assert!(now == before[cut..], "{what}: not expired\n{}", text(&o));
            tally.ok += 1;
        } else {
            // Failed before the journal was in place (untouched), or after the compaction,
            // removing its journal (done; the journal left behind replays as finished).
            assert!(
                now == before || now == before[cut..],
                "{what}: a failed expire left the mailbox half done\n{}",
                text(&o)
            );
            tally.failed += 1;
        }
        tally.runs += 1;
        tally.swapped += usize::from(swapped);
    }
    eprintln!("{test}: {tally:?}");
    assert!(tally.runs >= MIN_RUNS, "{tally:?}");
    assert!(tally.swapped > 0, "the racer never fired: {tally:?}");
}

#[test]
fn migrate_never_follows_a_swapped_state_dir() {
    let test = "migrate_never_follows_a_swapped_state_dir";
    let Some(scene) = Scene::new("m", test) else {
        return;
    };
    let flat = scene.base.join("flat");
    fs::create_dir(&flat).unwrap();
    let old = flat.join(&scene.user.name);
    let new = scene.mailbox();
    let bytes = mailbox_bytes(0, 300);
    // migrate replays the journal of the OLD mailbox.
    scene.plant_decoys(&old);
    let mut tally = Tally::default();
    let start = Instant::now();
    for i in 0..RUNS {
        if start.elapsed() > TIME_BUDGET {
            break;
        }
        let target = &scene.targets[i % 2];
        // The user used pop-serve before: the state directory exists.
        scene.reset_home(true);
        let _ = fs::remove_file(&new);
        scene.write_mailbox(&old, &bytes);
        let mut cmd = spool_cmd(&scene, &["migrate", "--from"]);
        cmd.arg(&flat);
        let (o, swapped) = race(&scene, cmd, Trigger::Dotlock, &old, target);
        let what = format!("run {i} ({})", target.display());
        assert_clean(&o, &what);
        scene.assert_targets_untouched(&old, &what);
        if o.status.success() {
            assert!(!old.exists(), "{what}: {}", text(&o));
            assert!(fs::read(&new).unwrap() == bytes, "{what}: not moved whole");
            tally.ok += 1;
        } else {
            assert!(
                fs::read(&old).unwrap() == bytes,
                "{what}: the old mailbox changed"
            );
            assert!(!new.exists(), "{what}");
            tally.failed += 1;
        }
        tally.runs += 1;
        tally.swapped += usize::from(swapped);
    }
    eprintln!("{test}: {tally:?}");
    assert!(tally.runs >= MIN_RUNS, "{tally:?}");
    assert!(tally.swapped > 0, "the racer never fired: {tally:?}");
}

#[test]
fn recover_never_follows_a_swapped_state_dir() {
    let test = "recover_never_follows_a_swapped_state_dir";
    let Some(scene) = Scene::new("r", test) else {
        return;
    };
    let mbox = scene.mailbox();
    let bytes = mailbox_bytes(0, 300);
    scene.plant_decoys(&mbox);
    let tmp_name = {
        let j = state_paths(Path::new("/"), &mbox).journal;
        format!("{}.tmp", j.file_name().unwrap().to_string_lossy())
    };
    let mut tally = Tally::default();
    let start = Instant::now();
    for i in 0..RUNS {
        if start.elapsed() > TIME_BUDGET {
            break;
        }
        let target = &scene.targets[i % 2];
        // A session of the user was killed while writing its journal: recover has something
        // pending, so it takes the mailbox's dotlock, which fires the swap.
        scene.reset_home(true);
        let tmp = scene.user.state().join(&tmp_name);
        fs::write(&tmp, b"half a journal").unwrap();
        std::os::unix::fs::chown(&tmp, Some(scene.user.uid), Some(scene.user.gid)).unwrap();
        scene.write_mailbox(&mbox, &bytes);
        let cmd = spool_cmd(&scene, &["recover", &scene.user.name]);
        let (o, swapped) = race(&scene, cmd, Trigger::Dotlock, &mbox, target);
        let what = format!("run {i} ({})", target.display());
        assert_clean(&o, &what);
        scene.assert_targets_untouched(&mbox, &what);
        if o.status.success() {
            assert!(
                state_file(&scene, &tmp_name).is_none(),
                "{what}: succeeded but the user's incomplete journal is still there\n{}",
                text(&o)
            );
            tally.ok += 1;
        } else {
            tally.failed += 1;
        }
        assert!(
            fs::read(&mbox).unwrap() == bytes,
            "{what}: the mailbox changed"
        );
        tally.runs += 1;
        tally.swapped += usize::from(swapped);
    }
    eprintln!("{test}: {tally:?}");
    assert!(tally.runs >= MIN_RUNS, "{tally:?}");
    assert!(tally.swapped > 0, "the racer never fired: {tally:?}");
}
