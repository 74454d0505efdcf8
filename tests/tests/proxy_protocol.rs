//! `--proxy-protocol` through the real binaries: pop-popup over a socketpair and pop-tls under
//! tcpserver with crafted v1 and v2 headers (valid, LOCAL and UNKNOWN, malformed, missing,
//! too long, too slow), the environment the rest of the chain sees, and the real HAProxy
//! (`send-proxy-v2`, the configuration in scripts/haproxy/popspool.cfg, which README.md
//! quotes) in front of two tcpserver hosts running the whole chain, and in front of pop-tls.

use popspool_tests::gen;
use popspool_tests::pop::Client;
use popspool_tests::tlsca::Pki;
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The proxy's address as the launcher names it.
const PROXY_IP: &str = "127.0.0.9";

/// The variables the program after pop-popup (or pop-tls) reports.
const VARS: [&str; 7] = [
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "TCPREMOTEHOST",
    "TCPREMOTEINFO",
    "REMOTE_ADDR",
];

/// Prints each of [`VARS`] as `NAME=value` or `NAME unset`, one CRLF line each, after a
/// `+OK` line, then waits for one line and ends.
fn env_printer(greeting: &str) -> String {
    let mut s = format!("printf '{greeting}\\r\\n'\n");
    for v in VARS {
        s.push_str(&format!(
            "if [ -n \"${{{v}+x}}\" ]; then printf '{v}=%s\\r\\n' \"${v}\"; else printf '{v} unset\\r\\n'; fi\n"
        ));
    }
    s.push_str("read -r l\n");
    s
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake-checkpassword.sh")
}

/// pop-popup --proxy-protocol on one end of a socketpair, as tcpserver would start it for a
/// connection from the proxy at [`PROXY_IP`].
fn popup(extra: &[&str]) -> (Child, UnixStream) {
    popup_with(extra, &[])
}

/// [`popup`] with more environment variables.
fn popup_with(extra: &[&str], env: &[(&str, &str)]) -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let out = OwnedFd::from(theirs.try_clone().unwrap());
    let child = Command::new(bin("pop-popup"))
        .args([
            "--log",
            "stderr",
            "--fail-delay-ms",
            "1",
            "--proxy-protocol",
        ])
        .args(extra)
        .arg("pop.example")
        .arg(fixture())
        .args(["sh", "-c", &env_printer("+OK served")])
        .env("TCPREMOTEIP", PROXY_IP)
        .env("TCPREMOTEPORT", "33333")
        .env("TCPLOCALIP", "127.0.0.1")
        .env("TCPLOCALPORT", "110")
        .env("TCPREMOTEHOST", "proxy.example")
        .env("TCPREMOTEINFO", "ident")
        .env("REMOTE_ADDR", PROXY_IP)
        .envs(env.iter().copied())
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(out))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pop-popup");
    ours.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    (child, ours)
}

/// Waits (bounded) for the child; its exit code and stderr.
fn finish(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code().unwrap_or(-1), err);
        }
        assert!(Instant::now() < deadline, "no exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `NAME=value` / `NAME unset` lines as (name, Some(value) or None).
fn env_of(text: &str) -> Vec<(String, Option<String>)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_end_matches('\r');
            if let Some((k, v)) = l.split_once('=') {
                VARS.contains(&k)
                    .then(|| (k.to_string(), Some(v.to_string())))
            } else {
                let k = l.strip_suffix(" unset")?;
                VARS.contains(&k).then(|| (k.to_string(), None))
            }
        })
        .collect()
}

fn value(env: &[(String, Option<String>)], name: &str) -> Option<String> {
    env.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("{name} not reported: {env:?}"))
        .1
        .clone()
}

/// Sends `header`, logs in through the fake checkpassword, and returns what the program
/// after it reports and pop-popup's log.
fn login_after(header: &[u8]) -> (Vec<(String, Option<String>)>, String) {
    let (child, mut sock) = popup(&[]);
    sock.write_all(header).unwrap();
    let mut c = Client::new(sock.try_clone().unwrap(), sock);
    let g = c.line();
    assert!(g.starts_with("+OK "), "{g}");
    assert!(c.cmd("USER good").starts_with("+OK"));
    assert_eq!(c.cmd("PASS secret"), "+OK served");
    let mut rest = String::new();
    for _ in VARS {
        rest.push_str(&c.line());
        rest.push('\n');
    }
    c.send("QUIT");
    let (code, log) = finish(child);
    assert_eq!(code, 0, "{log}");
    (env_of(&rest), log)
}

/// A hand-written v2 header: PROXY, TCP over IPv4, 192.0.2.10:40000 -> 198.51.100.1:110,
/// followed by a NOOP TLV of 3 bytes.
const V2_TCP4: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x12\
    \xc0\x00\x02\x0a\xc6\x33\x64\x01\x9c\x40\x00\x6e\
    \x04\x00\x03abc";

fn assert_client_env(env: &[(String, Option<String>)], ip: &str, port: &str, lip: &str) {
    assert_eq!(value(env, "TCPREMOTEIP").as_deref(), Some(ip), "{env:?}");
    assert_eq!(
        value(env, "TCPREMOTEPORT").as_deref(),
        Some(port),
        "{env:?}"
    );
    assert_eq!(value(env, "TCPLOCALIP").as_deref(), Some(lip), "{env:?}");
    assert_eq!(
        value(env, "TCPLOCALPORT").as_deref(),
        Some("110"),
        "{env:?}"
    );
    // What tcpserver and systemd said about the proxy is gone.
    assert_eq!(value(env, "TCPREMOTEHOST"), None, "{env:?}");
    assert_eq!(value(env, "TCPREMOTEINFO"), None, "{env:?}");
    assert_eq!(value(env, "REMOTE_ADDR"), None, "{env:?}");
}

#[test]
fn popup_v1_header_names_the_client_to_the_chain_and_the_log() {
    let (env, log) = login_after(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 110\r\n");
    assert_client_env(&env, "192.0.2.10", "40000", "198.51.100.1");
    assert!(log.contains("addr=192.0.2.10 "), "{log}");
    assert!(!log.contains(&format!("addr={PROXY_IP}")), "{log}");

    let (env, log) = login_after(b"PROXY TCP6 2001:db8::10 2001:db8::1 40001 110\r\n");
    assert_client_env(&env, "2001:db8::10", "40001", "2001:db8::1");
    assert!(log.contains("addr=2001:db8::10 "), "{log}");
}

#[test]
fn popup_v2_header_with_a_tlv_names_the_client() {
    let (env, log) = login_after(V2_TCP4);
    assert_client_env(&env, "192.0.2.10", "40000", "198.51.100.1");
    assert!(log.contains("addr=192.0.2.10 "), "{log}");

    // IPv6, with an IPv4-mapped client as a dual-stack proxy reports it.
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    h.extend_from_slice(
        &"::ffff:192.0.2.11"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(&[0x9c, 0x41, 0x00, 0x6e]);
    let (env, _) = login_after(&h);
    assert_client_env(&env, "192.0.2.11", "40001", "2001:db8::1");
}

#[test]
fn popup_local_and_unknown_keep_the_launchers_values() {
    for header in [
        &b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"[..],
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n",
        // PROXY over AF_UNSPEC and AF_UNIX: no address the chain can use.
        b"\r\n\r\n\0\r\nQUIT\n\x21\x00\x00\x00",
    ] {
        let (env, log) = login_after(header);
        assert_eq!(value(&env, "TCPREMOTEIP").as_deref(), Some(PROXY_IP));
        assert_eq!(value(&env, "TCPREMOTEPORT").as_deref(), Some("33333"));
        assert_eq!(
            value(&env, "TCPREMOTEHOST").as_deref(),
            Some("proxy.example")
        );
        assert!(log.contains(&format!("addr={PROXY_IP} ")), "{log}");
    }
}

/// Sends `bytes` (then holds the connection open, or closes its sending side when `close`)
/// and expects pop-popup to refuse: nothing sent, one log line naming the proxy and `why`.
fn popup_refuses(bytes: &[u8], close: bool, why: &str) {
    let (child, mut sock) = popup(&[]);
    sock.write_all(bytes).unwrap();
    if close {
        sock.shutdown(Shutdown::Write).unwrap();
    }
    // Bytes left unread make the close a reset: what matters is that nothing came.
    let mut got = Vec::new();
    let _ = sock.read_to_end(&mut got);
    let (code, log) = finish(child);
    assert!(got.is_empty(), "{bytes:?}: sent {got:?}");
    assert_eq!(code, 0, "{log}");
    let want = format!("proxy={PROXY_IP} refused: {why}");
    assert!(log.contains(&want), "{bytes:?}: want {want:?} in {log}");
    assert_eq!(log.lines().count(), 1, "{log}");
    // The checkpassword program never ran.
    assert!(!log.contains("served"), "{log}");
}

#[test]
fn popup_refuses_a_connection_without_a_valid_header() {
    popup_refuses(b"", true, "no PROXY header");
    popup_refuses(b"CAPA\r\n", false, "no PROXY header");
    popup_refuses(b"\r\n\r\nQUIT\r\n\r\n\r\n\r\n", false, "no PROXY header");
    popup_refuses(
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
        false,
        "malformed PROXY header: not five fields",
    );
    popup_refuses(
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",
        false,
        "malformed PROXY header: LF without CR",
    );
    popup_refuses(
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2",
        true,
        "malformed PROXY header: truncated",
    );
    popup_refuses(
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c000000000000",
        false,
        "malformed PROXY header: version not 2",
    );
    popup_refuses(
        b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c000000000000",
        false,
        "malformed PROXY header: transport not STREAM",
    );
    // PROXY_V1_MAX_LINE is 107 bytes with the CRLF.
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(120, b'x');
    popup_refuses(&long, false, "PROXY header too long");
    // PROXY_V2_MAX_HEADER is 2048 bytes: a larger announced length is refused unread.
    popup_refuses(
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x07\xf1",
        false,
        "PROXY header too long",
    );
}

#[test]
fn popup_refuses_a_header_slower_than_the_deadline() {
    // PROXY_HEADER_TIMEOUT (5 s): half a header, then silence.
    popup_refuses(
        b"PROXY TCP4 192.0",
        false,
        "PROXY header not received in time",
    );
    popup_refuses(b"", false, "PROXY header not received in time");
}

/// The `test-parsed proxy-header` line of `log` (debug builds, POPSPOOL_TEST_SELF=1), checked
/// to come from a confined process other than pop-popup's parent `parent`.
fn parsed_by_the_dialogue(log: &str, parent: u32) {
    let line = log
        .lines()
        .find(|l| l.contains("test-parsed proxy-header by test-self "))
        .unwrap_or_else(|| panic!("no test-parsed line in {log}"));
    assert!(line.starts_with("pop-popup["), "{line}");
    assert!(
        !line.starts_with(&format!("pop-popup[{parent}]")),
        "parsed by the parent: {line}"
    );
    // No capability in any set, no_new_privs, the dialogue's RLIMIT_NOFILE.
    assert!(line.contains(" nnp=1 nofile=16 "), "{line}");
    assert!(line.ends_with(" capeff=0x0 capprm=0x0"), "{line}");
    if is_root() {
        assert!(!line.contains(" uid=0 "), "{line}");
    }
}

#[test]
fn popup_parses_the_header_in_the_confined_dialogue() {
    let self_hook = [("POPSPOOL_TEST_SELF", "1")];
    let (child, mut sock) = popup_with(&[], &self_hook);
    let parent = child.id();
    sock.write_all(b"PROXY TCP4 192.0.2.30 198.51.100.1 40000 110\r\n")
        .unwrap();
    let mut c = Client::new(sock.try_clone().unwrap(), sock);
    assert!(c.line().starts_with("+OK "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (code, log) = finish(child);
    assert_eq!(code, 0, "{log}");
    parsed_by_the_dialogue(&log, parent);
    // The parent learnt the client from the dialogue.
    let want = format!("pop-popup[{parent}]: debug: addr=192.0.2.30 proxy={PROXY_IP} v1 PROXY");
    assert!(log.contains(&want), "{want} in {log}");

    // A refused header too: parsed by the dialogue, refused in the parent's log.
    let (child, mut sock) = popup_with(&[], &self_hook);
    let parent = child.id();
    sock.write_all(b"CAPA\r\n").unwrap();
    let mut got = Vec::new();
    let _ = sock.read_to_end(&mut got);
    let (code, log) = finish(child);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(code, 0, "{log}");
    parsed_by_the_dialogue(&log, parent);
    let want = format!("pop-popup[{parent}]: warning: proxy={PROXY_IP} refused: no PROXY header");
    assert!(log.contains(&want), "{want} in {log}");
}

#[test]
fn popup_per_source_limit_counts_the_client_not_the_proxy() {
    let slots = tempfile::tempdir().unwrap();
    let dir = slots.path().join("slots");
    let args = ["--max-per-source", "1", "--slot-dir", dir.to_str().unwrap()];
    // Two live sessions through the same proxy from two clients: both served.
    let (c1, mut s1) = popup(&args);
    s1.write_all(b"PROXY TCP4 192.0.2.21 192.0.2.1 1000 110\r\n")
        .unwrap();
    let mut a = Client::new(s1.try_clone().unwrap(), s1);
    assert!(a.line().starts_with("+OK "));
    let (c2, mut s2) = popup(&args);
    s2.write_all(b"PROXY TCP4 192.0.2.22 192.0.2.1 1000 110\r\n")
        .unwrap();
    let mut b = Client::new(s2.try_clone().unwrap(), s2);
    assert!(b.line().starts_with("+OK "));
    // A second session of the first client is over its limit.
    let (c3, mut s3) = popup(&args);
    s3.write_all(b"PROXY TCP4 192.0.2.21 192.0.2.1 1001 110\r\n")
        .unwrap();
    let mut c = Client::new(s3.try_clone().unwrap(), s3);
    assert!(c.line().starts_with("-ERR [SYS/TEMP]"));
    let (_, log3) = finish(c3);
    assert!(log3.contains("addr=192.0.2.21 refused"), "{log3}");
    for (mut cl, ch) in [(a, c1), (b, c2)] {
        assert!(cl.cmd("QUIT").starts_with("+OK"));
        finish(ch);
    }
}

// ---- pop-tls ---------------------------------------------------------------------------

/// A server launched by tcpserver on a free loopback port; killed on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tcpserver -D` on 127.0.0.1 running `argv`, its stderr in `dir`.
fn tcpserver(argv: &[String], dir: &Path, name: &str) -> Option<Server> {
    let Some(exe) = which("tcpserver") else {
        skip(
            "proxy_protocol",
            "tcpserver not installed (package ucspi-tcp)",
        );
        return None;
    };
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(exe)
        .args(["-D", "-q", "-R", "-H", "-l", "localhost", "127.0.0.1"])
        .arg(port.to_string())
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tcpserver did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server { child, port, log })
}

/// A TCP connection to `to` from `source` (a loopback address of the test's choosing).
fn connect_from(source: IpAddr, to: SocketAddr) -> TcpStream {
    try_connect_from(source, to).unwrap()
}

fn try_connect_from(source: IpAddr, to: SocketAddr) -> nix::Result<TcpStream> {
    let (IpAddr::V4(src), SocketAddr::V4(to)) = (source, to) else {
        panic!("IPv4 only")
    };
    popspool_tests::connect_from(src, to)
}

/// A one-connection relay on a free loopback port: it accepts, connects to `to` (from
/// `source` when given), sends `header` first when given, then copies both ways.
fn relay(to: SocketAddr, source: Option<IpAddr>, header: Option<Vec<u8>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (down, _) = l.accept().unwrap();
        let mut up = match source {
            Some(s) => connect_from(s, to),
            None => TcpStream::connect(to).unwrap(),
        };
        if let Some(h) = header {
            up.write_all(&h).unwrap();
        }
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            })
        };
        let a = pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
        let b = pipe(up, down);
        let _ = a.join();
        let _ = b.join();
    });
    port
}

/// `openssl s_client` to 127.0.0.1:`port` verifying against `ca` as `localhost`; sends
/// `send` once connected; returns stdout and stderr together.
fn s_client(port: u16, ca: &Path, send: &[u8]) -> String {
    let mut c = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(ca)
        .args(["-servername", "localhost", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let send = send.to_vec();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        let _ = stdin.write_all(&send);
        std::thread::sleep(Duration::from_millis(300));
    });
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = c.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = c.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct TlsFixture {
    pki: Pki,
    work: tempfile::TempDir,
}

impl TlsFixture {
    fn new() -> Option<TlsFixture> {
        let pki = Pki::new()?;
        let work = tempfile::tempdir().unwrap();
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Some(TlsFixture { pki, work })
    }

    /// `pop-tls --proxy-protocol` running the environment printer.
    fn argv(&self) -> Vec<String> {
        let (cert, key) = self.pki.leaf("localhost", "p256");
        let mut v = vec![bin("pop-tls").display().to_string()];
        v.extend(["--log", "stderr", "--proxy-protocol"].map(String::from));
        if is_root() {
            v.extend(["--user", "nobody"].map(String::from));
        }
        v.extend([
            "--cert".to_string(),
            cert.display().to_string(),
            "--key".to_string(),
            key.display().to_string(),
            "sh".to_string(),
            "-c".to_string(),
            env_printer("+OK tls"),
        ]);
        v
    }
}

#[test]
fn pop_tls_reads_the_header_before_the_handshake() {
    let Some(fx) = TlsFixture::new() else { return };
    let Some(srv) = tcpserver(&fx.argv(), fx.work.path(), "pop-tls") else {
        return;
    };
    let to: SocketAddr = ([127, 0, 0, 1], srv.port).into();
    let ca = fx.pki.ca();
    for header in [
        b"PROXY TCP4 192.0.2.30 198.51.100.1 40000 110\r\n".to_vec(),
        V2_TCP4.to_vec(),
    ] {
        let port = relay(to, None, Some(header.clone()));
        let out = s_client(port, &ca, b"QUIT\r\n");
        assert!(out.contains("+OK tls"), "{out}\n{}", srv.log());
        let env = env_of(&out);
        let ip = if header.starts_with(b"PROXY") {
            "192.0.2.30"
        } else {
            "192.0.2.10"
        };
        assert_eq!(value(&env, "TCPREMOTEIP").as_deref(), Some(ip), "{out}");
        assert_eq!(value(&env, "TCPLOCALIP").as_deref(), Some("198.51.100.1"));
        assert_eq!(value(&env, "TCPLOCALPORT").as_deref(), Some("110"));
        assert_eq!(value(&env, "TCPREMOTEHOST"), None);
    }
    let log = srv.log();
    assert!(log.contains("addr=192.0.2.30"), "{log}");
    assert!(log.contains("addr=192.0.2.10"), "{log}");
}

#[test]
fn pop_tls_parses_the_header_in_a_confined_child() {
    let Some(fx) = TlsFixture::new() else { return };
    let mut argv = vec!["env".to_string(), "POPSPOOL_TEST_SELF=1".to_string()];
    argv.extend(fx.argv());
    let Some(srv) = tcpserver(&argv, fx.work.path(), "pop-tls") else {
        return;
    };
    let to: SocketAddr = ([127, 0, 0, 1], srv.port).into();
    let port = relay(
        to,
        None,
        Some(b"PROXY TCP4 192.0.2.31 198.51.100.1 40000 110\r\n".to_vec()),
    );
    let out = s_client(port, &fx.pki.ca(), b"QUIT\r\n");
    assert!(out.contains("+OK tls"), "{out}\n{}", srv.log());
    assert_eq!(
        value(&env_of(&out), "TCPREMOTEIP").as_deref(),
        Some("192.0.2.31")
    );
    let log = srv.log();
    let line = log
        .lines()
        .find(|l| l.contains("test-parsed proxy-header by test-self "))
        .unwrap_or_else(|| panic!("no test-parsed line in {log}"));
    // No capability, no_new_privs, and not root when started as root.
    assert!(line.contains(" nnp=1 "), "{line}");
    assert!(line.ends_with(" capeff=0x0 capprm=0x0"), "{line}");
    if is_root() {
        assert!(!line.contains(" uid=0 "), "{line}");
    }
}

#[test]
fn pop_tls_refuses_without_a_valid_header() {
    let Some(fx) = TlsFixture::new() else { return };
    let Some(srv) = tcpserver(&fx.argv(), fx.work.path(), "pop-tls") else {
        return;
    };
    let to: SocketAddr = ([127, 0, 0, 1], srv.port).into();
    let ca = fx.pki.ca();
    // A TLS client straight to pop-tls: its ClientHello is no header.
    let out = s_client(srv.port, &ca, b"QUIT\r\n");
    assert!(!out.contains("+OK"), "{out}");
    // A malformed header in front of a good handshake.
    let port = relay(
        to,
        None,
        Some(b"PROXY TCP9 192.0.2.1 192.0.2.2 1 2\r\n".to_vec()),
    );
    let out = s_client(port, &ca, b"QUIT\r\n");
    assert!(!out.contains("+OK"), "{out}");
    // Nothing at all: the peer gets nothing back either (checked with a plain read).
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n").unwrap();
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = srv.log();
        if [
            "no PROXY header",
            "malformed PROXY header: protocol",
            "malformed PROXY header: LF without CR",
        ]
        .iter()
        .all(|why| log.contains(&format!("pop-tls: proxy=127.0.0.1 refused: {why}")))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- HAProxy -----------------------------------------------------------------------------

/// The configuration file README.md quotes, with its example addresses.
fn haproxy_cfg() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/haproxy/popspool.cfg");
    fs::read_to_string(p).unwrap()
}

#[test]
fn readme_quotes_the_haproxy_configuration_verbatim() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = readme
        .split("### HAProxy and the PROXY protocol")
        .nth(1)
        .expect("README section ### HAProxy and the PROXY protocol");
    let block = section
        .split("```haproxy\n")
        .nth(1)
        .and_then(|b| b.split("```\n").next())
        .expect("a ```haproxy block in the section");
    assert_eq!(block, haproxy_cfg());
}

const PASSWORD: &str = "s3cret pass";

/// One backend host: its own spool with a mailbox for `demo`, and the whole chain
/// (pop-popup --proxy-protocol, pop-checkpassword, pop-serve) under tcpserver.
struct Host {
    server: Server,
    msgs: Vec<gen::Message>,
    _dir: tempfile::TempDir,
}

fn chown(p: &Path, uid: u32, gid: u32) {
    if is_root() {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
    }
}

fn host(seed: u64) -> Option<Host> {
    let (uid, gid) = if is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(d.join("home/demo")).unwrap();
    fs::create_dir_all(d.join("spool/d")).unwrap();
    chown(&d.join("home/demo"), uid, gid);
    chown(&d.join("spool/d"), uid, gid);
    fs::write(
        d.join("users"),
        format!(
            "demo:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}/home/demo::\n",
            d.display()
        ),
    )
    .unwrap();
    let msgs = gen::varied_rfc5322(seed, 2);
    let mbox = d.join("spool/d/demo");
    fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
    chown(&mbox, uid, gid);
    fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
    let s = |x: &str| x.to_string();
    let p = |x: &Path| x.display().to_string();
    let argv = vec![
        p(&bin("pop-popup")),
        s("--log"),
        s("stderr"),
        s("--proxy-protocol"),
        s("popspool.test"),
        p(&bin("pop-checkpassword")),
        s("--source"),
        s("passwd-file"),
        s("--min-uid"),
        s("1"),
        s("--log"),
        s("stderr"),
        s("--passwd-file"),
        p(&d.join("users")),
        p(&bin("pop-serve")),
        s("--log"),
        s("stderr"),
        s("--no-dotlock-helper"),
        s("--spool-dir"),
        p(&d.join("spool")),
    ];
    let server = tcpserver(&argv, d, "host")?;
    Some(Host {
        server,
        msgs,
        _dir: dir,
    })
}

/// A running HAProxy; killed on drop.
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy with scripts/haproxy/popspool.cfg, its example addresses replaced by `subst`;
/// waits until `front` accepts.
fn haproxy(subst: &[(&str, String)], fronts: &[u16]) -> Option<Haproxy> {
    let exe = which("haproxy").or_else(|| {
        let p = PathBuf::from("/usr/sbin/haproxy");
        p.is_file().then_some(p)
    });
    let Some(exe) = exe else {
        skip(
            "proxy_protocol haproxy",
            "haproxy not installed (package haproxy)",
        );
        return None;
    };
    let mut cfg = haproxy_cfg();
    for (from, to) in subst {
        assert!(cfg.contains(from), "{from} not in the configuration");
        cfg = cfg.replace(from, to);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    fs::write(&path, cfg).unwrap();
    let check = Command::new(&exe)
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(&exe)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            fs::File::create(dir.path().join("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let h = Haproxy { child, _dir: dir };
    // Probed from an address of its own, so the hosts' logs of the probe stand apart.
    let deadline = Instant::now() + Duration::from_secs(10);
    for &port in fronts {
        while try_connect_from(IpAddr::from(PROBE_IP), ([127, 0, 0, 1], port).into()).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Some(h)
}

/// The client's own loopback address, distinct from HAProxy's 127.0.0.1.
const CLIENT_IP: [u8; 4] = [127, 0, 0, 77];

/// Where the test checks that HAProxy is up from.
const PROBE_IP: [u8; 4] = [127, 0, 0, 78];

#[test]
fn haproxy_send_proxy_v2_in_front_of_two_hosts() {
    let (Some(h1), Some(h2)) = (host(41), host(42)) else {
        return;
    };
    let front = free_port();
    let front_tls = free_port();
    let Some(_hap) = haproxy(
        &[
            ("203.0.113.10:110", format!("127.0.0.1:{front}")),
            ("203.0.113.10:995", format!("127.0.0.1:{front_tls}")),
            ("10.0.0.11:110", format!("127.0.0.1:{}", h1.server.port)),
            ("10.0.0.12:110", format!("127.0.0.1:{}", h2.server.port)),
            // No TLS host in this test: any closed port.
            ("10.0.0.11:995", format!("127.0.0.1:{}", free_port())),
            ("10.0.0.12:995", format!("127.0.0.1:{}", free_port())),
        ],
        &[front],
    ) else {
        return;
    };
    // Round robin: sessions until both hosts have served one (HAProxy alternates, but the
    // readiness probe and its threads make the first host unknown), each RETRing its host's
    // first message.
    let mine = [h1.msgs[0].canonical(), h2.msgs[0].canonical()];
    let mut seen = [0, 0];
    for _ in 0..8 {
        let s = connect_from(IpAddr::from(CLIENT_IP), ([127, 0, 0, 1], front).into());
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client::new(s.try_clone().unwrap(), s);
        let g = c.line();
        assert!(g.starts_with("+OK "), "{g}");
        assert!(c.cmd("USER demo").starts_with("+OK"));
        assert!(c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"));
        assert!(c.cmd("RETR 1").starts_with("+OK"));
        let got = c.body();
        let which = mine
            .iter()
            .position(|m| *m == got)
            .expect("a host's message");
        seen[which] += 1;
        assert!(c.cmd("QUIT").starts_with("+OK"));
        if seen.iter().all(|&n| n > 0) {
            break;
        }
    }
    eprintln!("sessions served by host 1, host 2: {seen:?}");
    assert!(seen.iter().all(|&n| n > 0), "each host served: {seen:?}");
    // Straight to a host, bypassing HAProxy: no header, and a malformed one.
    for (bytes, why) in [
        (&b"CAPA\r\n"[..], "no PROXY header"),
        (b"PROXY TCP4 127.0.0.77 x 1 2\r\n", "malformed PROXY header"),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", h1.server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(bytes).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty(), "{why}: {got:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !h1
            .server
            .log()
            .contains(&format!("proxy=127.0.0.1 refused: {why}"))
        {
            assert!(Instant::now() < deadline, "{}", h1.server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for h in [&h1, &h2] {
        let log = h.server.log();
        let popup: Vec<&str> = log.lines().filter(|l| l.contains("pop-popup")).collect();
        assert!(
            popup.iter().any(|l| l.contains("addr=127.0.0.77 ")),
            "the host logs the client: {log}"
        );
        assert!(
            !popup.iter().any(|l| l.contains("addr=127.0.0.1 ")),
            "never HAProxy's address as the client: {log}"
        );
        let serve: Vec<&str> = log.lines().filter(|l| l.contains("pop-serve")).collect();
        assert!(!serve.is_empty(), "{log}");
        assert!(
            serve.iter().all(|l| !l.contains("127.0.0.1 ")),
            "pop-serve logs the client: {log}"
        );
    }
}

#[test]
fn haproxy_passes_tls_through_to_pop_tls() {
    let Some(fx) = TlsFixture::new() else { return };
    let Some(srv) = tcpserver(&fx.argv(), fx.work.path(), "pop-tls") else {
        return;
    };
    let front = free_port();
    let front_tls = free_port();
    let Some(_hap) = haproxy(
        &[
            ("203.0.113.10:110", format!("127.0.0.1:{front}")),
            ("203.0.113.10:995", format!("127.0.0.1:{front_tls}")),
            ("10.0.0.11:110", format!("127.0.0.1:{}", free_port())),
            ("10.0.0.12:110", format!("127.0.0.1:{}", free_port())),
            ("10.0.0.11:995", format!("127.0.0.1:{}", srv.port)),
            ("10.0.0.12:995", format!("127.0.0.1:{}", srv.port)),
        ],
        &[front_tls],
    ) else {
        return;
    };
    // openssl s_client cannot choose its source address: a plain relay connects from
    // 127.0.0.77 for it.
    let port = relay(
        ([127, 0, 0, 1], front_tls).into(),
        Some(IpAddr::from(CLIENT_IP)),
        None,
    );
    let out = s_client(port, &fx.pki.ca(), b"QUIT\r\n");
    assert!(out.contains("+OK tls"), "{out}\n{}", srv.log());
    let env = env_of(&out);
    assert_eq!(
        value(&env, "TCPREMOTEIP").as_deref(),
        Some("127.0.0.77"),
        "{out}"
    );
    assert_eq!(value(&env, "TCPLOCALIP").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        value(&env, "TCPLOCALPORT"),
        Some(front_tls.to_string()),
        "the address the client connected to"
    );
    let log = srv.log();
    assert!(log.contains("addr=127.0.0.77"), "{log}");
}
