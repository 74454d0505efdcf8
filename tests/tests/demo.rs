//! The README's first command stays true: scripts/demo builds, serves the demo mailbox through
//! the whole chain on loopback, answers a real client in clear text and over implicit TLS
//! (verified against the demo's throwaway CA, with the curl line it prints), and stops cleanly.

use popspool_tests::{skip, which};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn scripts_demo_serves_and_stops_cleanly() {
    let Some(curl) = which("curl") else {
        skip(
            "scripts_demo_serves_and_stops_cleanly",
            "curl not installed",
        );
        return;
    };
    if which("tcpserver").is_none() && which("systemd-socket-activate").is_none() {
        skip(
            "scripts_demo_serves_and_stops_cleanly",
            "neither tcpserver nor systemd-socket-activate",
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut demo = Command::new(root.join("scripts/demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let (mut port, mut scratch, mut tls_curl) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut line = String::new();
    // The banner ends with the line about logs; everything it names comes before.
    while !line.starts_with("Logs of every program") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "demo ended early");
        if let Some(rest) = line.split("127.0.0.1:").nth(1) {
            port = port.or_else(|| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .map(str::to_string)
            });
        }
        // curl --cacert DIR/ca.pem pop3s://demo:demo@localhost:PORT/1
        if let Some(at) = line.find("curl --cacert ") {
            let words: Vec<String> = line[at..]
                .split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect();
            assert!(
                words.len() == 3 && words[2].starts_with("pop3s://"),
                "{line}"
            );
            tls_curl = Some(words);
        }
        if let Some(at) = line
            .find("passwd-file in ")
            .or_else(|| line.find("virtual user in "))
        {
            let p = line[at..]
                .split_whitespace()
                .nth(3)
                .unwrap()
                .trim_end_matches(')');
            scratch = Some(Path::new(p).parent().unwrap().to_path_buf());
        }
        assert!(Instant::now() < deadline);
    }
    assert!(
        port.is_some() && scratch.is_some(),
        "demo banner incomplete"
    );
    let tls_wanted = which("openssl").is_some();
    assert!(
        !tls_wanted || tls_curl.is_some(),
        "openssl is installed, yet the demo offers no TLS port"
    );
    let port = port.unwrap();
    let got = Command::new(&curl)
        .args(["-sS", "--max-time", "20"])
        .arg(format!("pop3://demo:demo@127.0.0.1:{port}/1"))
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(String::from_utf8_lossy(&got.stdout).contains("Subject: popspool demo message 1"));
    let bad = Command::new(&curl)
        .args(["-sS", "--max-time", "20"])
        .arg(format!("pop3://demo:nope@127.0.0.1:{port}/1"))
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a wrong password is refused");
    if let Some(args) = &tls_curl {
        let got = Command::new(&curl)
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            got.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(String::from_utf8_lossy(&got.stdout).contains("Subject: popspool demo message 1"));
        // The same URL without the demo's CA: the certificate is not trusted.
        let untrusted = Command::new(&curl)
            .args(["-sS", "--max-time", "20"])
            .arg(&args[2])
            .output()
            .unwrap();
        assert!(!untrusted.status.success(), "verification is on");
    } else {
        skip(
            "scripts_demo_serves_and_stops_cleanly (TLS part)",
            "openssl not installed",
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = demo.wait().unwrap();
    assert!(st.success(), "demo exit: {st:?}");
    let scratch = scratch.unwrap();
    assert!(!scratch.exists(), "{} removed", scratch.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err(),
        "listener stopped"
    );
}
