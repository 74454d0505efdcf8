//! Real POP3 clients (curl, Python poplib) against pop-serve behind a test-only authenticator,
//! on loopback under tcpserver (ucspi-tcp) and under systemd-socket-activate --inetd.

use popspool_tests::gen::{self, Message};
use popspool_tests::{bin, serve_args, skip, which};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Listener {
    child: Child,
    port: u16,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/test-popup.sh")
}

#[derive(Clone, Copy)]
enum Launcher {
    Tcpserver,
    SocketActivate,
}

fn launch(how: Launcher, dir: &Path, mailbox: &str) -> Option<Listener> {
    let mut chain: Vec<String> = vec![
        fixture().display().to_string(),
        bin("pop-serve").display().to_string(),
    ];
    chain.extend(serve_args(&dir.join("state")));
    chain.push(mailbox.to_string());
    let port = free_port();
    let mut cmd = match how {
        Launcher::Tcpserver => {
            let Some(t) = which("tcpserver") else {
                skip(
                    "tcpserver tests",
                    "tcpserver not installed (Debian package ucspi-tcp)",
                );
                return None;
            };
            let mut c = Command::new(t);
            c.args(["-q", "-R", "-H", "127.0.0.1", &port.to_string()]);
            c
        }
        Launcher::SocketActivate => {
            let Some(t) = which("systemd-socket-activate") else {
                skip(
                    "systemd-socket-activate tests",
                    "systemd-socket-activate not installed (package systemd)",
                );
                return None;
            };
            let mut c = Command::new(t);
            c.args(["--inetd", "-a", "-l", &format!("127.0.0.1:{port}")]);
            c
        }
    };
    cmd.args(&chain)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("start listener");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "listener did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // That probe connection ran one session that ended at once; give it a moment to finish.
    std::thread::sleep(Duration::from_millis(200));
    Some(Listener { child, port })
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
