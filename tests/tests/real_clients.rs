//! Real POP3 clients (curl, Python poplib) against pop-serve behind a test-only authenticator,
//! on loopback under tcpserver (ucspi-tcp) and under systemd-socket-activate --inetd.

use popspool_tests::gen::{self, Message};
use popspool_tests::listen::{self, Launcher, Listener};
use popspool_tests::{bin, serve_args, skip, which};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/test-popup.sh")
}

fn launch(how: Launcher, dir: &Path, mailbox: &str) -> Option<Listener> {
    let mut chain: Vec<String> = vec![
        fixture().display().to_string(),
        bin("pop-serve").display().to_string(),
    ];
    chain.extend(serve_args(&dir.join("state")));
    chain.push(mailbox.to_string());
    listen::start(how, &chain, Stdio::null())
}

fn setup(seed: u64, n: usize) -> (tempfile::TempDir, Vec<Message>, String) {
    let dir = tempfile::tempdir().unwrap();
    let msgs = gen::varied_rfc5322(seed, n);
    let p = dir.path().join("mbox");
    fs::write(&p, gen::mbox_bytes(&msgs)).unwrap();
    (dir, msgs, format!("mbox:{}", p.display()))
}

/// curl's pop3:// client: RETR of every message equals the oracle with CRLF; a listing works.
fn curl_retrieves(how: Launcher) {
    let Some(curl) = which("curl") else {
        skip("curl tests", "curl not installed");
        return;
    };
    let (dir, msgs, mb) = setup(21, 8);
    let Some(l) = launch(how, dir.path(), &mb) else {
        return;
    };
    for (i, m) in msgs.iter().enumerate() {
        let out = Command::new(&curl)
            .args(["-s", "-S", "--max-time", "20"])
            .arg(format!(
                "pop3://tester:secret@127.0.0.1:{}/{}",
                l.port,
                i + 1
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, m.canonical(), "curl RETR {}", i + 1);
    }
    let out = Command::new(&curl)
        .args(["-s", "-S", "--max-time", "20"])
        .arg(format!("pop3://tester:secret@127.0.0.1:{}/", l.port))
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listing.lines().count(), msgs.len(), "{listing}");
    assert!(listing.starts_with(&format!("1 {}", msgs[0].canonical().len())));
}

#[test]
fn curl_under_tcpserver() {
    curl_retrieves(Launcher::Tcpserver);
}

#[test]
fn curl_under_systemd_socket_activate() {
    curl_retrieves(Launcher::SocketActivate);
}

const POPLIB_SCRIPT: &str = r#"
import poplib, sys, json
port, count = int(sys.argv[1]), int(sys.argv[2])
p = poplib.POP3("127.0.0.1", port, timeout=30)
p.user("tester"); p.pass_("secret")
n, size = p.stat()
assert n == count, (n, count)
resp, listing, _ = p.list()
resp, uidls, _ = p.uidl()
out = {"stat": [n, size], "list": [l.decode() for l in listing], "uidl": [u.decode() for u in uidls], "retr": []}
for i in range(1, n + 1):
    resp, lines, octets = p.retr(i)
    out["retr"].append(octets)
p.dele(1); p.dele(n)
p.quit()
print(json.dumps(out))
"#;

fn poplib_session(how: Launcher) {
    let Some(py) = which("python3") else {
        skip("poplib tests", "python3 not installed");
        return;
    };
    let (dir, msgs, mb) = setup(22, 12);
    let Some(l) = launch(how, dir.path(), &mb) else {
        return;
    };
    let out = Command::new(py)
        .args([
            "-c",
            POPLIB_SCRIPT,
            &l.port.to_string(),
            &msgs.len().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "poplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let total: usize = msgs.iter().map(|m| m.canonical().len()).sum();
    assert!(
        text.contains(&format!("\"stat\": [{}, {total}]", msgs.len())),
        "{text}"
    );
    // poplib's octet count for RETR is the wire size, stuffing included; LIST is the canonical.
    for (i, m) in msgs.iter().enumerate() {
        assert!(
            text.contains(&format!("\"{} {}\"", i + 1, m.canonical().len())),
            "{text}"
        );
    }
    drop(l);
    // Messages 1 and n were deleted at QUIT; the rest are byte-exact.
    let kept = &msgs[1..msgs.len() - 1];
    let mut want = gen::mbox_bytes(kept);
    if kept.last().is_some_and(|m| !m.blank_after) && msgs.last().unwrap().no_final_newline {
        want = gen::mbox_bytes(kept);
    }
    assert_eq!(fs::read(dir.path().join("mbox")).unwrap(), want);
}

#[test]
fn poplib_under_tcpserver() {
    poplib_session(Launcher::Tcpserver);
}

#[test]
fn poplib_under_systemd_socket_activate() {
    poplib_session(Launcher::SocketActivate);
}
