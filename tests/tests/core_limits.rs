//! No core files where a password or mail passes: pop-popup, pop-serve and pop-deliver, caught
//! while they wait for input, run with RLIMIT_CORE 0 (soft and hard), read from the outside in
//! /proc/PID/limits, whatever limit they were started with.

use popspool_tests::gen;
use popspool_tests::pop::Served;
use popspool_tests::{bin, serve_args};
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The "Max core file size" soft and hard values of a running process.
fn core_limit(pid: u32) -> Option<(String, String)> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max core file size"))?;
    let mut f = line["Max core file size".len()..].split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

/// Waits until `ready` says the program is running, then for its core limit to read 0 0.
fn raise_then_check(child: &Child, ready: impl FnOnce()) {
    ready();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = core_limit(child.id()).expect("read /proc/PID/limits");
        if got == ("0".to_string(), "0".to_string()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {}: core limit {got:?}, want 0 0",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tests themselves run with whatever core limit the shell gave; what matters is that the
/// programs set 0 whatever they inherit. Start them from a shell that raises its soft limit to
/// the hard one first.
fn shell(prog: &str, args: &[String]) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg("ulimit -c \"$(ulimit -H -c)\" 2>/dev/null; exec \"$@\"")
        .arg("sh")
        .arg(bin(prog))
        .args(args);
    c
}

#[test]
fn pop_popup_runs_without_core_files() {
    let mut child = shell(
        "pop-popup",
        &["pop.test".into(), "/bin/false".into(), "/bin/true".into()],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    raise_then_check(&child, || {
        let mut greeting = String::new();
        out.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("+OK"), "{greeting:?}");
    });
    drop(child.stdin.take());
    let _ = child.wait();
}

#[test]
fn pop_serve_runs_without_core_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mbox");
    fs::write(&p, gen::mbox_bytes(&gen::varied(2, 1))).unwrap();
    let mut args = serve_args(&dir.path().join("state"));
    args.push(format!("mbox:{}", p.display()));
    let mut s = Served::spawn(&args, &[("USER", "tester")]);
    let pid = s.child.id();
    assert!(s.client.line().starts_with("+OK"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while core_limit(pid) != Some(("0".into(), "0".into())) {
        assert!(Instant::now() < deadline, "{:?}", core_limit(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    s.finish();
}

#[test]
fn pop_deliver_runs_without_core_files() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("mbox:{}", dir.path().join("mbox").display());
    let mut child = shell("pop-deliver", &["--mailbox".into(), target])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // pop-deliver waits for the message on stdin, held open here.
    raise_then_check(&child, || {});
    drop(child.stdin.take());
    let _ = child.wait();
}
