//! How long a session may live, through the real binaries: pop-serve's whole-session limit
//! over pipes, the keepalive options that pop-serve, pop-popup and pop-tls set on a client's
//! TCP socket (read from outside: `ss` shows the keepalive timer, and the server's own
//! descriptor, borrowed with pidfd_getfd, shows each value), and, as root, a client that
//! vanishes behind a veth pair in a network namespace.

use popspool_tests::gen;
use popspool_tests::pop::Served;
use popspool_tests::tlsca::Pki;
use popspool_tests::{bin, is_root, serve_args, skip, which};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn one_message_box(dir: &Path) -> (PathBuf, String) {
    let p = dir.join("mbox");
    fs::write(&p, gen::mbox_bytes(&gen::varied(2, 5))).unwrap();
    let spec = format!("mbox:{}", p.display());
    (p, spec)
}

/// `serve_args` with the log on stderr, where the tests read the summary line.
fn logged_serve_args(dir: &Path) -> Vec<String> {
    let mut args = serve_args(&dir.join("state"));
    let at = args.iter().position(|a| a == "--log").unwrap();
    args[at + 1] = "stderr".into();
    args
}

#[test]
fn max_session_time_ends_a_busy_session_without_update() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mb) = one_message_box(dir.path());
    let before = fs::read(&path).unwrap();
    let mut args = logged_serve_args(dir.path());
    args.extend(["--max-session-time", "2", &mb].map(String::from));
    let mut s = Served::spawn(&args, &[("USER", "tester"), ("TCPREMOTEIP", "192.0.2.7")]);
    s.client.line();
    assert!(s.client.cmd("DELE 1").starts_with("+OK"));
    let t = Instant::now();
    // A NOOP every 0.5 s: never idle, never a slow line; only the session limit ends it.
    let end = loop {
        // The session may have ended while we slept: its -ERR is then already waiting.
        let _ = s.client.w.write_all(b"NOOP\r\n");
        let l = s.client.line();
        if !l.starts_with("+OK") {
            break l;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "a busy session was never cut"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        end,
        "-ERR session time limit reached, closing; nothing deleted"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert!(s.client.rest().is_empty());
    let (code, log) = s.finish();
    assert_eq!(code, 0);
    assert!(
        log.contains("deleted=0 ") && log.contains(" end=session time limit"),
        "{log}"
    );
    assert_eq!(fs::read(&path).unwrap(), before, "DELE committed");
}

#[test]
fn max_session_time_ends_a_client_dripping_noop() {
    // The client: NOOP a byte at a time, each line complete well within the line
    // deadline, so neither the idle nor the line timeout ever fires.
    let dir = tempfile::tempdir().unwrap();
    let (path, mb) = one_message_box(dir.path());
    let before = fs::read(&path).unwrap();
    let mut args = logged_serve_args(dir.path());
    args.extend(["--max-session-time", "2", "--line-timeout", "30", &mb].map(String::from));
    let mut s = Served::spawn(&args, &[("USER", "tester")]);
    s.client.line();
    assert!(s.client.cmd("DELE 1").starts_with("+OK"));
    let t = Instant::now();
    let mut answers = Vec::new();
    'drip: loop {
        for b in b"NOOP\r\n" {
            if s.client.w.write_all(&[*b]).is_err() {
                break 'drip;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "a dripping session was never cut"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
        let l = s.client.line();
        let done = !l.starts_with("+OK");
        answers.push(l);
        if done {
            break;
        }
    }
    if answers.last().is_none_or(|l| l.starts_with("+OK")) {
        answers.push(s.client.line());
    }
    assert!(answers.len() >= 2, "{answers:?}");
    assert_eq!(
        answers.last().unwrap(),
        "-ERR session time limit reached, closing; nothing deleted"
    );
    let (_, log) = s.finish();
    assert!(log.contains(" end=session time limit"), "{log}");
    assert_eq!(fs::read(&path).unwrap(), before, "DELE committed");
}

#[test]
fn max_session_time_does_not_cut_a_retr_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mbox");
    // One 8 MB message, read slowly: the limit passes in the middle of the RETR.
    let mut big = gen::Message::simple(1);
    big.body = Some(vec![
        b"a line of the big body, long enough to make eight megabytes quickly.".to_vec();
        120_000
    ]);
    fs::write(&p, gen::mbox_bytes(std::slice::from_ref(&big))).unwrap();
    let mut args = serve_args(&dir.path().join("state"));
    args.extend(["--max-session-time", "1"].map(String::from));
    args.push(format!("mbox:{}", p.display()));
    let mut s = Served::spawn(&args, &[("USER", "tester")]);
    s.client.line();
    assert!(s.client.cmd("RETR 1").starts_with("+OK"));
    // The server is blocked mid-message on a full pipe when the limit passes.
    std::thread::sleep(Duration::from_millis(1500));
    let got = s.client.body_raw();
    assert_eq!(gen::unstuff(&got), big.canonical());
    // The limit has passed: the first read after the RETR ends the session.
    assert_eq!(
        s.client.line(),
        "-ERR session time limit reached, closing; nothing deleted"
    );
    s.finish();
}

/// A launcher (tcpserver) on a free port of `ip` running `argv`, its stderr in `log`;
/// killed on drop.
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
    fn start(ip: &str, argv: &[String], log: PathBuf) -> Option<Server> {
        let Some(exe) = which("tcpserver") else {
            skip(
                "session_life under tcpserver",
                "tcpserver not installed (Debian package ucspi-tcp)",
            );
            return None;
        };
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .args([
                "-D",
                "-q",
                "-R",
                "-H",
                "-l",
                "localhost",
                ip,
                &port.to_string(),
            ])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let s = Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < deadline, "tcpserver did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(s)
    }
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `ss`'s line for the server side of the established connection on local port `port`,
/// with timers (-o) and owning processes (-p).
fn ss_line(port: u16) -> Option<String> {
    let out = Command::new(which("ss")?)
        .args(["-tnopH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The keepalive settings of a socket as the kernel holds them.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    on: bool,
    idle: u32,
    interval: u32,
    probes: u32,
    user_timeout_ms: u32,
}

/// Borrows descriptor `fd` of process `pid` (pidfd_getfd: root, or an ancestor under Yama's
/// default) and reads its keepalive settings; None where the kernel refuses.
fn seen_in(pid: i32, fd: i32) -> Option<Seen> {
    use nix::sys::socket::{getsockopt, sockopt};
    // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: pidfd was just returned to us and is owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd on our pidfd; the result is a new descriptor or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return None;
    }
    // SAFETY: a new descriptor, ours alone.
    let s = unsafe { OwnedFd::from_raw_fd(got as i32) };
    Some(Seen {
        on: getsockopt(&s, sockopt::KeepAlive).ok()?,
        idle: getsockopt(&s, sockopt::TcpKeepIdle).ok()?,
        interval: getsockopt(&s, sockopt::TcpKeepInterval).ok()?,
        probes: getsockopt(&s, sockopt::TcpKeepCount).ok()?,
        user_timeout_ms: getsockopt(&s, sockopt::TcpUserTimeout).ok()?,
    })
}

/// The first `pid=N,fd=M` of an ss line.
fn owner(line: &str) -> Option<(i32, i32)> {
    let at = line.find("pid=")?;
    let rest = &line[at + 4..];
    let (pid, rest) = rest.split_once(",fd=")?;
    let fd: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((pid.parse().ok()?, fd.parse().ok()?))
}

/// Connects to `port`, reads the first line, and checks the server side of the connection:
/// `want` None means keepalive must be off. Returns false (after a SKIPPED line) without ss.
fn check_keepalive(test: &str, srv: &Server, want: Option<Seen>) -> bool {
    if which("ss").is_none() {
        skip(test, "ss not installed (Debian package iproute2)");
        return false;
    }
    let c = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("+OK"), "{greeting:?} {}", srv.log());
    // Once the greeting is acknowledged the only timer left is keepalive's, if it is on.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let line = ss_line(srv.port).unwrap_or_default();
        let settled = !line.contains("timer:(on") && line.contains("pid=");
        if (settled && (want.is_none() || line.contains("timer:(keepalive")))
            || Instant::now() > deadline
        {
            break line;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("pid="), "ss shows no server socket: {line:?}");
    match &want {
        Some(_) => assert!(line.contains("timer:(keepalive,"), "{line}"),
        None => assert!(!line.contains("keepalive"), "{line}"),
    }
    let (pid, fd) = owner(&line).expect("owner in the ss line");
    match seen_in(pid, fd) {
        Some(seen) => match want {
            Some(w) => assert_eq!(seen, w, "{line}"),
            None => assert!(!seen.on, "{seen:?}"),
        },
        None => skip(
            test,
            "pidfd_getfd refused: the values themselves are not checked",
        ),
    }
    drop(c);
    true
}

fn keepalive_of(idle: u32, interval: u32, user_timeout_s: u32) -> Option<Seen> {
    Some(Seen {
        on: true,
        idle,
        interval,
        probes: spool_wire::limits::TCP_KEEPALIVE_PROBES,
        user_timeout_ms: user_timeout_s * 1000,
    })
}

fn pop_serve_argv(dir: &Path, extra: &[&str]) -> Vec<String> {
    let (_, mb) = one_message_box(dir);
    let mut argv = vec![bin("pop-serve").display().to_string()];
    argv.extend(logged_serve_args(dir));
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.push(mb);
    argv
}

#[test]
fn pop_serve_sets_keepalive_on_its_tcp_socket() {
    let dir = tempfile::tempdir().unwrap();
    let argv = pop_serve_argv(dir.path(), &["--tcp-keepalive", "30"]);
    let Some(srv) = Server::start("127.0.0.1", &argv, dir.path().join("log")) else {
        return;
    };
    check_keepalive(
        "pop_serve_sets_keepalive_on_its_tcp_socket",
        &srv,
        keepalive_of(15, 2, 30),
    );
}

#[test]
fn pop_serve_tcp_keepalive_zero_leaves_the_socket_alone() {
    let dir = tempfile::tempdir().unwrap();
    let argv = pop_serve_argv(dir.path(), &["--tcp-keepalive", "0"]);
    let Some(srv) = Server::start("127.0.0.1", &argv, dir.path().join("log")) else {
        return;
    };
    check_keepalive(
        "pop_serve_tcp_keepalive_zero_leaves_the_socket_alone",
        &srv,
        None,
    );
}

/// A front end that turns keepalive on with its own values, then execs the rest of its
/// arguments on the same socket (as pop-popup does before the chain reaches pop-serve).
const KEEPALIVE_FRONT: &str = "import os, socket, sys
s = socket.socket(fileno=0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 7)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
s.detach()
os.execv(sys.argv[1], sys.argv[1:])
";

#[test]
fn pop_serve_keeps_a_front_ends_keepalive_unless_told() {
    const TEST: &str = "pop_serve_keeps_a_front_ends_keepalive_unless_told";
    let Some(py) = which("python3") else {
        skip(TEST, "python3 not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let front = |extra: &[&str]| {
        let mut argv = vec![
            py.display().to_string(),
            "-c".into(),
            KEEPALIVE_FRONT.into(),
        ];
        argv.extend(pop_serve_argv(dir.path(), extra));
        argv
    };
    let theirs = Some(Seen {
        on: true,
        idle: 77,
        interval: 7,
        probes: 3,
        user_timeout_ms: 0,
    });
    for (extra, want) in [
        (&[][..], theirs),
        (&["--tcp-keepalive", "30"][..], keepalive_of(15, 2, 30)),
    ] {
        let Some(srv) = Server::start("127.0.0.1", &front(extra), dir.path().join("log")) else {
            return;
        };
        check_keepalive(TEST, &srv, want);
    }
}

#[test]
fn pop_popup_sets_the_default_keepalive_for_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let argv: Vec<String> = [
        bin("pop-popup").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--slot-dir".into(),
        dir.path().join("slots").display().to_string(),
        "popspool.test".into(),
        "/bin/false".into(),
        "/bin/true".into(),
    ]
    .into();
    let Some(srv) = Server::start("127.0.0.1", &argv, dir.path().join("log")) else {
        return;
    };
    // The defaults: TCP_KEEPIDLE 60, TCP_KEEPINTVL 10, TCP_KEEPCNT 6, TCP_USER_TIMEOUT 120 s.
    check_keepalive(
        "pop_popup_sets_the_default_keepalive_for_the_chain",
        &srv,
        keepalive_of(60, 10, 120),
    );
}

#[test]
fn pop_tls_sets_keepalive_on_the_network_socket() {
    let Some(pki) = Pki::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (cert, key) = pki.leaf("localhost", "p256");
    let argv = |extra: &[&str]| {
        let mut argv = vec![bin("pop-tls").display().to_string()];
        argv.extend(["--log", "stderr"].map(String::from));
        if is_root() {
            argv.extend(["--user", "nobody"].map(String::from));
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.extend([
            "--starttls".into(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "/bin/sh".into(),
            "-c".into(),
            "echo '+OK clear'; sleep 20".into(),
        ]);
        argv
    };
    // In clear text under --starttls the program's line reaches the client at once; the
    // network socket belongs to pop-tls's network process. Its own defaults first (the same
    // values as the login chain's), then its own arithmetic for another value.
    for (extra, want) in [
        (&[][..], keepalive_of(60, 10, 120)),
        (&["--tcp-keepalive", "24"][..], keepalive_of(12, 2, 24)),
    ] {
        let Some(srv) = Server::start("127.0.0.1", &argv(extra), dir.path().join("log")) else {
            return;
        };
        check_keepalive("pop_tls_sets_keepalive_on_the_network_socket", &srv, want);
    }
}

/// A network namespace holding one end of a veth pair; `ip` is the root side's address,
/// `peer_ip` the namespace side's. Deleted (with the pair) on drop.
struct Netns {
    name: String,
    here_if: String,
    peer_if: String,
    ip: String,
    peer_ip: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    fn new() -> Option<Netns> {
        let id = std::process::id() % 100_000;
        let name = format!("popspool-life-{id}");
        let here = format!("plh{id}");
        let peer_if = format!("plp{id}");
        // 198.18.0.0/15 is for benchmarks (RFC 2544): never routed anywhere real.
        let net = format!("198.19.{}", id % 250);
        let n = Netns {
            name: name.clone(),
            here_if: here.clone(),
            peer_if: peer_if.clone(),
            ip: format!("{net}.1"),
            peer_ip: format!("{net}.2"),
        };
        let ok = ip(&["netns", "add", &name])
            && ip(&[
                "link", "add", &here, "type", "veth", "peer", "name", &peer_if, "netns", &name,
            ])
            && ip(&["addr", "add", &format!("{}/30", n.ip), "dev", &here])
            && ip(&["link", "set", &here, "up"])
            && ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/30", n.peer_ip),
                "dev",
                &peer_if,
            ])
            && ip(&["-n", &name, "link", "set", &peer_if, "up"])
            && ip(&["-n", &name, "link", "set", "lo", "up"]);
        ok.then_some(n)
    }
    /// The client's side goes silent: no answer, no reset, as when a phone leaves the network.
    fn cut(&self) -> bool {
        ip(&["-n", &self.name, "link", "set", &self.peer_if, "down"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The pair goes with either end; the namespace itself lingers in the kernel only
        // while the killed client's socket still holds it.
        ip(&["link", "del", &self.here_if]);
        ip(&["netns", "del", &self.name]);
    }
}

/// A client in the namespace: reads the greeting, sends DELE 1, prints both answers, then
/// waits silently.
const VANISHING_CLIENT: &str = "import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
f = s.makefile('rb')
print(f.readline().decode().strip(), flush=True)
s.sendall(b'DELE 1\\r\\n')
print(f.readline().decode().strip(), flush=True)
time.sleep(600)
";

#[test]
fn a_vanished_client_frees_the_mailbox_within_the_keepalive_time() {
    const TEST: &str = "a_vanished_client_frees_the_mailbox_within_the_keepalive_time";
    if !is_root() {
        skip(TEST, "needs root (a network namespace and a veth pair)");
        return;
    }
    let Some(py) = which("python3") else {
        skip(TEST, "python3 not installed");
        return;
    };
    let Some(ns) = Netns::new() else {
        skip(
            TEST,
            "cannot make a network namespace with a veth pair here",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = one_message_box(dir.path());
    let before = fs::read(&path).unwrap();
    // A 4 s keepalive (idle 2 s, probes every 1 s, TCP_USER_TIMEOUT 4 s), an idle timeout
    // far beyond it.
    let argv = pop_serve_argv(
        dir.path(),
        &["--tcp-keepalive", "4", "--idle-timeout", "300"],
    );
    let Some(srv) = Server::start(&ns.ip, &argv, dir.path().join("log")) else {
        return;
    };
    let mut client = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&py)
        .args(["-c", VANISHING_CLIENT, &ns.ip, &srv.port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert!(l.starts_with("+OK"), "{l:?} {}", srv.log());
    l.clear();
    out.read_line(&mut l).unwrap();
    assert!(l.starts_with("+OK"), "DELE: {l:?}");
    // The probe connection of Server::start has logged its own summary line already.
    let ended = |log: &str| log.matches(" end=").count() >= 2;
    assert!(!ended(&srv.log()));
    assert!(ns.cut());
    let t = Instant::now();
    while !ended(&srv.log()) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "session still alive after 120 s: {}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    eprintln!(
        "{TEST}: the session of a vanished client ended {:.1} s after the cut (--tcp-keepalive 4)",
        took.as_secs_f64()
    );
    let log = srv.log();
    let last = log.lines().rfind(|l| l.contains(" end=")).unwrap();
    eprintln!("{TEST}: {last}");
    assert!(last.contains("deleted=0 "), "{last}");
    assert_eq!(fs::read(&path).unwrap(), before, "DELE committed");
    let _ = client.kill();
    let _ = client.wait();
    let _ = std::io::stderr().flush();
}
