//! The mbox index through the real pop-serve and pop-spool: a warm session (index present)
//! and a session after new mail or after a deleting session answer exactly what a session
//! without any index answers; a damaged index is rebuilt, never fatal; an unchanged mailbox
//! never rewrites its index.

use popspool_tests::gen::{self, Message};
use popspool_tests::pop::Served;
use popspool_tests::{bin, serve_args};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

fn serve(state: &Path, mbox: &Path) -> Served {
    let mut args = serve_args(state);
    args.push(format!("mbox:{}", mbox.display()));
    Served::spawn(&args, &[("USER", "tester")])
}

/// STAT, LIST, UIDL and every message's RETR, then QUIT after deleting `dele` (1-based).
fn session(state: &Path, mbox: &Path, dele: &[usize]) -> Vec<String> {
    let mut s = serve(state, mbox);
    let c = &mut s.client;
    assert_eq!(c.line(), "+OK ");
    let mut out = vec![c.cmd("STAT")];
    assert!(c.cmd("LIST").starts_with("+OK"));
    out.extend(c.listing());
    assert!(c.cmd("UIDL").starts_with("+OK"));
    out.extend(c.listing());
    let n: usize = out[0].split(' ').nth(1).unwrap().parse().unwrap();
    for i in 1..=n {
        assert!(c.cmd(&format!("RETR {i}")).starts_with("+OK"));
        out.push(String::from_utf8_lossy(&c.body()).into_owned());
    }
    for d in dele {
        let r = c.cmd(&format!("DELE {d}"));
        assert!(r.starts_with("+OK"), "DELE {d} of {n}: {r}");
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (code, err) = s.finish();
    assert_eq!(code, 0, "{err}");
    out
}

fn index_file(state: &Path) -> Option<PathBuf> {
    fs::read_dir(state)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "index"))
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

fn append(p: &Path, msgs: &[Message]) {
    OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap()
        .write_all(&gen::mbox_bytes(msgs))
        .unwrap();
}

/// The same session with no index anywhere: a fresh scan in a fresh state directory.
fn fresh(dir: &Path, mbox: &Path) -> Vec<String> {
    let st = dir.join(format!(
        "fresh-{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let out = session(&st, mbox, &[]);
    fs::remove_dir_all(&st).unwrap();
    out
}

#[test]
fn warm_appended_and_compacted_sessions_match_fresh_scans() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mbox = dir.path().join("mbox");
    let mut msgs = gen::varied(7, 40);
    // Duplicates: their ordinals must survive the index and deletions of earlier twins.
    msgs.push(msgs[3].clone());
    msgs.push(msgs[3].clone());
    fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();

    let cold = session(&state, &mbox, &[]);
    let idx = index_file(&state).expect("index written after the first session");
    let t = mtime(&idx);
    std::thread::sleep(Duration::from_millis(20));
    let warm = session(&state, &mbox, &[]);
    assert_eq!(warm, cold);
    assert_eq!(
        mtime(&idx),
        t,
        "an unchanged mailbox must not rewrite its index"
    );

    append(&mbox, &gen::varied(8, 5));
    append(&mbox, &[msgs[3].clone()]);
    let grown = session(&state, &mbox, &[]);
    assert_eq!(grown, fresh(dir.path(), &mbox));
    // Earlier UIDLs did not move.
    let uidls = |v: &[String], n: usize| -> Vec<String> {
        v.iter()
            .filter(|l| l.len() > 30 && !l.contains('\n'))
            .take(n)
            .cloned()
            .collect()
    };
    assert_eq!(uidls(&grown, 5), uidls(&cold, 5));

    // A deleting session (the first twin among others) updates the index for the new layout.
    session(&state, &mbox, &[1, 4, 5, 20, 41]);
    let after = session(&state, &mbox, &[]);
    assert_eq!(after, fresh(dir.path(), &mbox));

    // A damaged index: rebuilt, the session is unaffected.
    let mut bad = fs::read(&idx).unwrap();
    let k = bad.len() / 2;
    bad[k] ^= 1;
    fs::write(&idx, &bad).unwrap();
    assert_eq!(session(&state, &mbox, &[]), after);
    assert_ne!(fs::read(&idx).unwrap(), bad, "rebuilt");
    // Garbage, or a directory where the index should be: never fatal.
    fs::write(&idx, b"not an index").unwrap();
    assert_eq!(session(&state, &mbox, &[]), after);
    fs::remove_file(&idx).unwrap();
    fs::create_dir(&idx).unwrap();
    assert_eq!(session(&state, &mbox, &[]), after);
}

#[test]
fn pop_spool_index_builds_what_pop_serve_uses() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let state = dir.path().join("state");
    fs::create_dir(&spool).unwrap();
    let mbox = spool.join("tester");
    fs::write(&mbox, gen::mbox_bytes(&gen::varied(3, 30))).unwrap();
    let run = || {
        let o = Command::new(bin("pop-spool"))
            .args(["--spool-dir", spool.to_str().unwrap(), "--hash-depth", "0"])
            .args(["--state-dir", state.to_str().unwrap(), "index", "tester"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    assert!(run().contains("1 built"));
    let idx = index_file(&state).expect("index");
    let t = mtime(&idx);
    std::thread::sleep(Duration::from_millis(20));
    let warm = session(&state, &mbox, &[]);
    assert_eq!(mtime(&idx), t, "pop-serve used pop-spool's index as is");
    assert_eq!(warm, fresh(dir.path(), &mbox));
    assert!(run().contains("1 unchanged"));
    append(&mbox, &[Message::simple(99)]);
    assert!(run().contains("1 refreshed"));
}
