//! The UPDATE survives SIGKILL at any moment, and deliveries racing sessions lose nothing.

use popspool_tests::gen::{self, Message, Rng};
use popspool_tests::pop::Served;
use popspool_tests::serve_args;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn big_messages(n: usize, lines: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let mut m = Message::simple(i);
            m.body = Some(
                (0..lines)
                    .map(|k| format!("{i:05} line {k:06} {}", "x".repeat(80)).into_bytes())
                    .collect(),
            );
            m
        })
        .collect()
}

fn serve(dir: &Path) -> Served {
    let mut args = serve_args(&dir.join("state"));
    args.push("--lock-timeout".into());
    args.push("30".into());
    args.push(format!("mbox:{}", dir.join("mbox").display()));
    Served::spawn(&args, &[("USER", "tester")])
}

/// One recovery session: reads the greeting (recovering any journal) and quits. Returns
/// whether it replayed a journal (from its log on stderr).
fn recover(dir: &Path) -> bool {
    let mut args = serve_args(&dir.join("state"));
    let at = args.iter().position(|a| a == "none").unwrap();
    args[at] = "stderr".into();
    args.push(format!("mbox:{}", dir.join("mbox").display()));
    let mut s = Served::spawn(&args, &[("USER", "tester")]);
    let l = s.client.line();
    assert_eq!(l, "+OK ", "recovery session");
    s.client.cmd("QUIT");
    let (_, log) = s.finish();
    log.contains("interrupted update")
}

/// SIGKILLs at random moments of one UPDATE.
const ROUNDS: usize = 40;

#[test]
fn sigkill_during_update_never_loses_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = big_messages(300, 300); // ~28 MB: the compaction takes a while
    let original = gen::mbox_bytes(&msgs);
    let deleted = [0usize, 2, 150, 299];
    let kept: Vec<Message> = msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| !deleted.contains(i))
        .map(|(_, m)| m.clone())
        .collect();
    let committed = gen::mbox_bytes(&kept);

    // How long a whole QUIT takes, to spread the kills over it.
    fs::write(dir.path().join("mbox"), &original).unwrap();
    let mut s = serve(dir.path());
    s.client.line();
    for d in deleted {
        s.client.cmd(&format!("DELE {}", d + 1));
    }
    let t = Instant::now();
    assert!(s.client.cmd("QUIT").starts_with("+OK"));
    let full = t.elapsed();
    s.finish();
    assert_eq!(fs::read(dir.path().join("mbox")).unwrap(), committed);

    let mut rng = Rng::new(99);
    let mut outcomes = BTreeMap::new();
    for round in 0..ROUNDS {
        fs::write(dir.path().join("mbox"), &original).unwrap();
        let mut s = serve(dir.path());
        assert_eq!(s.client.line(), "+OK ");
        for d in deleted {
            s.client.cmd(&format!("DELE {}", d + 1));
        }
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 12 / 10 + 1));
        s.client.send("QUIT");
        std::thread::sleep(delay);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = s.child.wait();
        if recover(dir.path()) {
            *outcomes.entry("replayed a journal").or_insert(0) += 1;
        }
        let now = fs::read(dir.path().join("mbox")).unwrap();
        let which = if now == original {
            "untouched"
        } else if now == committed {
            "committed"
        } else {
            panic!("round {round}: after kill at {delay:?} and recovery the mbox is neither the original nor the committed one ({} bytes)", now.len());
        };
        *outcomes.entry(which).or_insert(0) += 1;
    }
    eprintln!("kill outcomes over {ROUNDS} rounds (full QUIT {full:?}): {outcomes:?}");
}

#[test]
fn deliveries_racing_sessions_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    fs::write(&path, b"").unwrap();
    const N: usize = 150;

    let appender = {
        let path = path.clone();
        std::thread::spawn(move || {
            for k in 0..N {
                let mut m = Message::simple(k);
                m.headers = vec![format!("Subject: seq {k}").into_bytes()];
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                let opts = spool_store::lock::LockOptions {
                    helper: None,
                    wait: Duration::from_secs(30),
                    stale_age: spool_wire::limits::STALE_DOTLOCK_AGE,
                };
                let lock = spool_store::lock::ContentLock::acquire(&path, &f, &opts).expect("lock");
                let mut f2 = &f;
                use std::io::Seek;
                f2.seek(std::io::SeekFrom::End(0)).unwrap();
                f2.write_all(&m.stored()).unwrap();
                f.sync_data().unwrap();
                lock.release().unwrap();
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };

    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut sessions = 0;
    loop {
        let done = appender.is_finished();
        let mut s = serve(dir.path());
        let l = s.client.line();
        if l.starts_with("-ERR") {
            panic!("session refused: {l}");
        }
        let stat = s.client.cmd("STAT");
        let n: usize = stat.split(' ').nth(1).unwrap().parse().unwrap();
        for i in 1..=n {
            assert!(s.client.cmd(&format!("RETR {i}")).starts_with("+OK"));
            let body = String::from_utf8(s.client.body()).unwrap();
            let k: usize = body
                .lines()
                .next()
                .unwrap()
                .strip_prefix("Subject: seq ")
                .unwrap()
                .parse()
                .unwrap();
            *seen.entry(k).or_default() += 1;
            assert!(s.client.cmd(&format!("DELE {i}")).starts_with("+OK"));
        }
        assert!(s.client.cmd("QUIT").starts_with("+OK"));
        s.finish();
        sessions += 1;
        if done {
            break;
        }
    }
    appender.join().unwrap();
    // One last session drains what is left.
    let mut s = serve(dir.path());
    s.client.line();
    let stat = s.client.cmd("STAT");
    assert_eq!(stat, "+OK 0 0", "everything was retrieved and deleted");
    s.client.cmd("QUIT");
    s.finish();
    let keys: Vec<usize> = seen.keys().copied().collect();
    assert_eq!(
        keys,
        (0..N).collect::<Vec<_>>(),
        "every delivered message was retrieved"
    );
    assert!(
        seen.values().all(|&v| v == 1),
        "each message retrieved exactly once: {seen:?}"
    );
    eprintln!("{sessions} sessions raced {N} deliveries");
}
