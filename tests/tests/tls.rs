//! pop-tls on loopback under tcpserver, with certificate verification on against a CA made
//! here with the openssl command: implicit TLS to small programs and to the whole login chain
//! (curl pop3s://, Python poplib.POP3_SSL), UCSPI-TLS delayed TLS with a small UCSPI-TLS
//! program, SNI, and bad clients (untrusting, plaintext, silent, garbage). Issue 11.

use popspool_tests::gen;
use popspool_tests::tlsca::Pki;
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Descriptors this test process leaves open across exec (from whatever started the tests):
/// every program inherits them, so the programs leave them out of their reports.
fn inherited_fds() -> String {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fd > 2 && flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            v.push(fd.to_string());
        }
    }
    v.join(",")
}

/// tcpserver on a free loopback port running `argv`; killed on drop.
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

/// The real interpreter (not a wrapper script such as a pyenv shim, whose shell leaves its
/// own descriptors to the program).
fn python() -> Option<PathBuf> {
    let Some(p) = which("python3") else {
        skip("tls", "python3 not installed");
        return None;
    };
    let out = Command::new(p)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// pop-tls options every test uses: logs to stderr, and as root the network process becomes
/// nobody (the default TLS user, _poptls, exists only where scripts/install made it).
fn tls_argv(extra: &[&str]) -> Vec<String> {
    let mut v = vec![bin("pop-tls").display().to_string()];
    v.extend(["--log", "stderr"].map(String::from));
    if is_root() {
        v.extend(["--user", "nobody"].map(String::from));
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn serve(argv: &[String], dir: &Path) -> Option<Server> {
    serve_with(false, argv, dir)
}

/// Under tcpserver, or with `socket_activate` under `systemd-socket-activate --inetd` (what a
/// socket unit with Accept=yes does).
fn serve_with(socket_activate: bool, argv: &[String], dir: &Path) -> Option<Server> {
    let launcher = if socket_activate {
        "systemd-socket-activate"
    } else {
        "tcpserver"
    };
    let Some(exe) = which(launcher) else {
        skip("tls", &format!("{launcher} not installed"));
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join(format!("server-{port}.log"));
    let mut cmd = Command::new(exe);
    if socket_activate {
        cmd.args(["--inetd", "-a", "-l", &format!("127.0.0.1:{port}")]);
    } else {
        cmd.args([
            "-D",
            "-q",
            "-R",
            "-H",
            "-l",
            "localhost",
            "127.0.0.1",
            &port.to_string(),
        ]);
    }
    let child = cmd
        .args(argv)
        // A stale value must never reach the program as if TLS were on.
        .env("SSL_PROTOCOL", "stale")
        .env("INHERITED_FDS", inherited_fds())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let s = Server { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tcpserver did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(s)
}

const IMPLICIT_PROG: &str = r#"
import os, sys
def kinds():
    out = []
    for f in sorted(os.listdir('/proc/self/fd'), key=int):
        if f in os.environ.get('INHERITED_FDS', '').split(','):
            continue
        try:
            t = os.readlink('/proc/self/fd/' + f)
        except OSError:
            continue
        out.append(f + ':' + ('socket' if t.startswith('socket:') else 'pipe' if t.startswith('pipe:') else 'other'))
    return ','.join(out)
e = os.environ
os.write(1, ("+OK implicit %s %s sni=%s ucspi=%s uid=%d ip=%s fds=%s\r\n" % (
    e.get('SSL_PROTOCOL'), e.get('SSL_CIPHER'), e.get('SSL_TLS_SNI_SERVERNAME', '-'),
    e.get('SSLCTLFD', '-'), os.getuid(), e.get('TCPREMOTEIP', '-'), kinds())).encode())
for line in sys.stdin.buffer:
    os.write(1, b"+OK got " + line.strip() + b"\r\n")
    if line.strip() == b"QUIT":
        break
"#;

/// A UCSPI-TLS program: greets in clear, waits for STLS, discards whatever else it read with
/// it, answers +OK, writes Y on SSLCTLFD, reads the SSL_* block, then echoes lines over TLS.
const UCSPI_PROG: &str = r#"
import os, sys
ctl, rfd, wfd = (int(os.environ[n]) for n in ('SSLCTLFD', 'SSLREADFD', 'SSLWRITEFD'))
def kinds():
    out = []
    for f in sorted(os.listdir('/proc/self/fd'), key=int):
        if f in os.environ.get('INHERITED_FDS', '').split(','):
            continue
        try:
            t = os.readlink('/proc/self/fd/' + f)
        except OSError:
            continue
        out.append(f + ':' + ('socket' if t.startswith('socket:') else 'pipe' if t.startswith('pipe:') else 'other'))
    return ','.join(out)
os.write(1, ("+OK ucspi-tls test ssl=%s fds=%s\r\n" % (os.environ.get('SSL_PROTOCOL', '-'), kinds())).encode())
buf = b""
while b"\n" not in buf:
    d = os.read(0, 4096)
    if not d:
        sys.exit(0)
    buf += d
line, _, rest = buf.partition(b"\n")
if line.strip() != b"STLS":
    os.write(1, b"-ERR say STLS\r\n")
    sys.exit(0)
# Bytes read together with the STLS line came in clear: they are dropped, never executed.
os.write(1, b"+OK begin TLS\r\n")
command = sys.argv[1].encode() if len(sys.argv) > 1 else b"Y"
os.write(ctl, command)
info = b""
while command == b"Y" and not info.endswith(b"\0\0"):
    d = os.read(ctl, 1024)
    if not d:
        sys.exit(3)
    info += d
env = dict(kv.split("=", 1) for kv in info[:-2].decode().split("\0") if kv)
os.write(wfd, ("+OK tls %s %s sni=%s discarded=%d\r\n" % (
    env.get("SSL_PROTOCOL"), env.get("SSL_CIPHER"), env.get("SSL_TLS_SNI_SERVERNAME", "-"),
    len(rest))).encode())
buf = b""
while True:
    d = os.read(rfd, 4096)
    if not d:
        break
    buf += d
    while b"\n" in buf:
        line, _, buf = buf.partition(b"\n")
        os.write(wfd, b"+OK got " + line.strip() + b"\r\n")
        if line.strip() == b"QUIT":
            sys.exit(0)
"#;

/// A verifying Python client: `implicit` (TLS at once) or `stls` / `stls-inject` (clear
/// text, STLS, then TLS); prints every line it gets, then the negotiated version.
const CLIENT: &str = r#"
import socket, ssl, sys
port, ca, sni, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca if ca != "-" else None)
s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rb")
if mode.startswith("stls"):
    print(f.readline().decode().strip())
    s.sendall(b"STLS\r\nUSER injected\r\n" if mode == "stls-inject" else b"STLS\r\n")
    print(f.readline().decode().strip())
try:
    t = ctx.wrap_socket(s, server_hostname=sni)
except (ssl.SSLError, OSError) as e:
    print("HANDSHAKE-FAILED", type(e).__name__, e)
    sys.exit(0)
tf = t.makefile("rb")
print(tf.readline().decode().strip())
for cmd in (b"CAPA", b"QUIT"):
    t.sendall(cmd + b"\r\n")
    print(tf.readline().decode().strip())
print("VERSION", t.version(), t.cipher()[0])
"#;

struct Fixture {
    pki: Pki,
    py: PathBuf,
    work: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        let pki = Pki::new()?;
        let py = python()?;
        let work = tempfile::tempdir().unwrap();
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for (n, body) in [
            ("implicit.py", IMPLICIT_PROG),
            ("ucspi.py", UCSPI_PROG),
            ("client.py", CLIENT),
        ] {
            fs::write(work.path().join(n), body).unwrap();
        }
        Some(Fixture { pki, py, work })
    }

    fn script(&self, n: &str) -> String {
        self.work.path().join(n).display().to_string()
    }

    fn client(&self, port: u16, ca: &str, sni: &str, mode: &str) -> String {
        let out = Command::new(&self.py)
            .arg(self.script("client.py"))
            .args([&port.to_string(), ca, sni, mode])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "client: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

#[test]
fn implicit_tls_with_each_key_type() {
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    for alg in ["p256", "p384", "rsa", "ed25519"] {
        let (cert, key) = fx.pki.leaf("localhost", alg);
        let mut argv = tls_argv(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
        argv.extend([fx.py.display().to_string(), fx.script("implicit.py")]);
        let Some(srv) = serve(&argv, fx.work.path()) else {
            return;
        };
        let out = fx.client(srv.port, &ca, "localhost", "implicit");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("+OK implicit TLSv1.3 TLS_") && lines[0].contains("sni=localhost"),
            "{alg}: {out} {}",
            srv.log()
        );
        // No UCSPI-TLS descriptors, no socket, no key channel in the program: fds 0 and 1
        // are pipes, 2 is the log.
        assert!(lines[0].contains("ucspi=-"), "{out}");
        assert!(
            lines[0].ends_with("fds=0:pipe,1:pipe,2:other"),
            "{alg}: {out}"
        );
        if is_root() {
            assert!(
                lines[0].contains("uid=0"),
                "the program starts as root: {out}"
            );
        }
        assert_eq!(lines[1], "+OK got CAPA");
        assert_eq!(lines[2], "+OK got QUIT");
        assert!(lines[3].starts_with("VERSION TLSv1.3"), "{out}");
        // Ed25519 is not offered by Python's default TLS 1.2 list; the other keys must also
        // work over TLS 1.2, checked with openssl s_client below.
        if alg != "ed25519" {
            let s = s_client(
                srv.port,
                &ca,
                &["-tls1_2", "-servername", "localhost"],
                b"QUIT\r\n",
            );
            assert!(
                s.contains("+OK implicit TLSv1.2 ECDHE-"),
                "{alg} TLS 1.2: {s} {}",
                srv.log()
            );
        }
        drop(srv);
    }
}

/// `openssl s_client` with verification errors fatal; returns stdout and stderr together.
fn s_client(port: u16, ca: &str, extra: &[&str], send: &[u8]) -> String {
    let mut c = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile", ca])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let send = send.to_vec();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let _ = stdin.write_all(&send);
        std::thread::sleep(Duration::from_millis(500));
    });
    let out = wait_output(c, Duration::from_secs(15));
    writer.join().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for a child with a deadline (killed after it), so a hang fails instead of blocking.
fn wait_output(mut c: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if c.try_wait().unwrap().is_some() {
            return c.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!(
                "client hung: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn starttls_through_ucspi_tls() {
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let mut argv = tls_argv(&[
        "--starttls",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([fx.py.display().to_string(), fx.script("ucspi.py")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    let out = fx.client(srv.port, &ca, "localhost", "stls");
    let lines: Vec<&str> = out.lines().collect();
    // In clear: fd 0/1 are the client's socket, 6 the control socket, 7 and 8 the pipes;
    // nothing else (no key channel), and no SSL_PROTOCOL before TLS.
    assert_eq!(
        lines[0],
        "+OK ucspi-tls test ssl=- fds=0:socket,1:socket,2:other,6:socket,7:pipe,8:pipe",
        "{out} {}",
        srv.log()
    );
    assert_eq!(lines[1], "+OK begin TLS");
    assert!(
        lines[2].starts_with("+OK tls TLSv1.3 TLS_")
            && lines[2].ends_with("sni=localhost discarded=0"),
        "{out} {}",
        srv.log()
    );
    assert_eq!(lines[3], "+OK got CAPA");
    assert_eq!(lines[4], "+OK got QUIT");
    drop(srv);

    // "y": TLS without the information block; the control socket just ends.
    let mut argv = tls_argv(&[
        "--starttls",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([
        fx.py.display().to_string(),
        fx.script("ucspi.py"),
        "y".into(),
    ]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    let out = fx.client(srv.port, &ca, "localhost", "stls");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[2],
        "+OK tls None None sni=- discarded=0",
        "{out} {}",
        srv.log()
    );
    assert_eq!(lines[4], "+OK got QUIT");
}

#[test]
fn commands_pipelined_after_stls_are_never_executed() {
    // CVE-2011-0411: "STLS\r\nUSER injected\r\n" in one packet. Whatever the program read
    // with the STLS line it discards; whatever is still in the socket reaches the TLS engine
    // as a (bad) record. Either way "USER injected" is never answered inside TLS.
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let mut argv = tls_argv(&[
        "--starttls",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([fx.py.display().to_string(), fx.script("ucspi.py")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    for _ in 0..5 {
        let out = fx.client(srv.port, &ca, "localhost", "stls-inject");
        assert!(!out.contains("injected"), "{out}");
        assert!(
            out.contains("HANDSHAKE-FAILED") || out.contains("discarded=15"),
            "{out} {}",
            srv.log()
        );
    }
}

#[test]
fn sni_picks_the_certificate_and_untrusting_clients_fail() {
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let dir = fx.work.path().join("certs");
    fs::create_dir(&dir).unwrap();
    fx.pki.combined(&dir, "a.test", "a.test", "p256");
    fx.pki.combined(&dir, "b.test", "b.test", "rsa");
    fx.pki.combined(&dir, "default", "default.test", "p384");
    let mut argv = tls_argv(&["--cert-dir", dir.to_str().unwrap()]);
    argv.extend([fx.py.display().to_string(), fx.script("implicit.py")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    // Python checks the name against the certificate: each name gets its own.
    for name in ["a.test", "b.test"] {
        let out = fx.client(srv.port, &ca, name, "implicit");
        assert!(out.contains(&format!("sni={name}")), "{out} {}", srv.log());
    }
    // An unknown name and no SNI at all get default.pem.
    let s = s_client(srv.port, &ca, &["-servername", "other.test"], b"QUIT\r\n");
    assert!(
        s.contains("CN = default.test") && s.contains("+OK got QUIT"),
        "{s}"
    );
    let s = s_client(srv.port, &ca, &["-noservername"], b"QUIT\r\n");
    assert!(
        s.contains("CN = default.test") && s.contains("sni=-"),
        "{s}"
    );
    // Names are looked up in lower case; a name that is no plain DNS name is never a path:
    // it gets the default.
    let s = s_client(srv.port, &ca, &["-servername", "A.TEST"], b"QUIT\r\n");
    assert!(
        s.contains("CN = a.test") && s.contains("+OK got QUIT"),
        "{s}"
    );
    let s = s_client(srv.port, &ca, &["-servername", "x_y.test"], b"QUIT\r\n");
    assert!(
        s.contains("CN = default.test") && s.contains("+OK got QUIT"),
        "{s}"
    );
    // Files are read for every connection: a renewed certificate applies to the next one
    // without a restart (here a.test.pem is replaced by b.test's pair).
    fs::copy(dir.join("b.test.pem"), dir.join("a.test.pem")).unwrap();
    let s = s_client(srv.port, &ca, &["-servername", "a.test"], b"QUIT\r\n");
    assert!(
        s.contains("CN = b.test") && s.contains("+OK got QUIT"),
        "{s}"
    );
    fx.pki.combined(&dir, "a.test", "a.test", "p256");
    // ALPN: pop3 is accepted; a client that offers only another protocol is refused.
    let s = s_client(
        srv.port,
        &ca,
        &["-servername", "a.test", "-alpn", "pop3"],
        b"QUIT\r\n",
    );
    assert!(s.contains("+OK got QUIT"), "{s}");
    assert!(srv.log().contains("alpn=pop3"), "{}", srv.log());
    let s = s_client(
        srv.port,
        &ca,
        &["-servername", "a.test", "-alpn", "imap"],
        b"QUIT\r\n",
    );
    assert!(!s.contains("+OK"), "{s}");
    // A client without the test CA refuses the server; so does one expecting another name.
    let out = fx.client(srv.port, "-", "a.test", "implicit");
    assert!(out.contains("HANDSHAKE-FAILED"), "{out}");
    let out = fx.client(srv.port, &ca, "c.test", "implicit");
    assert!(out.contains("HANDSHAKE-FAILED"), "{out}");
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
}

/// Sends `bytes` and reads until the server closes; returns what came back and how long the
/// server took to close. Fails after 10 s (a hang).
fn poke(port: u16, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).unwrap();
    }
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no close after {:?}: {e}", start.elapsed()),
        }
    }
    (got, start.elapsed())
}

#[test]
fn bad_clients_are_dropped_without_hang() {
    let Some(fx) = Fixture::new() else { return };
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let mut argv = tls_argv(&[
        "--handshake-timeout",
        "1",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([fx.py.display().to_string(), fx.script("implicit.py")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    // Plaintext POP3 to the TLS port: an alert at most, never a greeting.
    let (got, t) = poke(srv.port, b"USER demo\r\nPASS secret\r\n");
    assert!(!got.windows(3).any(|w| w == b"+OK"), "{got:?}");
    assert!(t < Duration::from_secs(2), "{t:?}");
    // A silent client, and one that stops in the middle of its ClientHello: dropped at the
    // one-second deadline.
    for partial in [
        &b""[..],
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
    ] {
        let (got, t) = poke(srv.port, partial);
        assert!(!got.windows(3).any(|w| w == b"+OK"));
        assert!(
            t >= Duration::from_millis(900) && t < Duration::from_secs(4),
            "{t:?}"
        );
    }
    // Garbage records: a bogus handshake record, an oversized record, an unknown type.
    for junk in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        &b"\x17\x03\x03\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00"[..],
        &b"\x99\x03\x03\x00\x01\x00"[..],
        &[0u8; 64][..],
    ] {
        let (got, t) = poke(srv.port, junk);
        assert!(!got.windows(3).any(|w| w == b"+OK"), "{junk:?}");
        assert!(t < Duration::from_secs(2), "{junk:?} {t:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = srv.log();
    assert!(log.contains("handshake deadline passed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains("+OK implicit"),
        "the program never ran: {log}"
    );
}

/// pop-tls run directly on one accepted connection (not under tcpserver), so the test sees
/// its exit status; the client is `openssl s_client`.
fn one_connection(argv: &[String], ca: &Path) -> (i32, String, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(ca)
        .args([
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sock, _) = l.accept().unwrap();
    let dup = sock.try_clone().unwrap();
    let tls = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(sock)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(dup)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = wait_output(tls, Duration::from_secs(15));
    let c = wait_output(client, Duration::from_secs(15));
    (
        t.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&t.stderr).into_owned(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        ),
    )
}

#[test]
fn unusable_certificates_close_the_connection_with_111() {
    let Some(fx) = Fixture::new() else { return };
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let (_, other_key) = fx.pki.leaf("other", "p256");
    let missing = fx.work.path().join("missing.pem");
    let empty = fx.work.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let cases: [(&Path, &Path, &str); 4] = [
        (&missing, &key, "cannot open"),
        (&cert, &missing, "cannot open"),
        (&empty, &key, "no certificate"),
        (&cert, &other_key, "does not match"),
    ];
    for (c, k, why) in cases {
        let mut argv = tls_argv(&["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()]);
        argv.extend([fx.py.display().to_string(), fx.script("implicit.py")]);
        let (code, log, client) = one_connection(&argv, &fx.pki.ca());
        assert_eq!(code, 111, "{why}: {log}");
        assert!(log.contains(why), "{why}: {log}");
        assert_eq!(log.lines().count(), 1, "one line: {log}");
        assert!(!client.contains("+OK"), "no plaintext fallback: {client}");
    }
    // Usage errors: 100, and nothing on stderr (it may be the client's socket) unless asked.
    let out = Command::new(bin("pop-tls"))
        .args(["--log", "stderr", "prog"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cert"));
    let out = Command::new(bin("pop-tls"))
        .args(["--no-such-option", "prog"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    assert!(out.stderr.is_empty() && out.stdout.is_empty());
}

#[test]
fn the_network_process_is_confined() {
    if !is_root() {
        skip(
            "the_network_process_is_confined",
            "needs root (the drop to nobody)",
        );
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let mut argv = tls_argv(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    // The program reports on its parent, the network process, while the session is open:
    // PROC uid no_new_privs nofile-soft nofile-hard fd..., then that process's children.
    fs::write(
        fx.work.path().join("ps.sh"),
        "read line\np=/proc/$PPID\n\
         echo PROC $(awk '/^Uid:/ {print $2}' $p/status) $(awk '/^NoNewPrivs:/ {print $2}' $p/status) \
         $(awk '/^Max open files/ {print $4, $5}' $p/limits) $(ls $p/fd | sort -n | tr '\\n' ' ')\n\
         for q in /proc/[0-9]*; do\n  \
         [ \"$(awk '{print $4}' $q/stat 2>/dev/null)\" = \"$PPID\" ] && echo CHILD $(cat $q/comm)\n\
         done\n",
    )
    .unwrap();
    argv.extend(["/bin/sh".to_string(), fx.script("ps.sh")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    let s = s_client(srv.port, &ca, &["-servername", "localhost"], b"go\r\n");
    // The key process has exited after the handshake: the program is the only child. The
    // network process runs as nobody, with no_new_privs, and an open-files limit equal to its
    // descriptor count.
    assert!(!s.contains("CHILD pop-tls"), "{s}");
    let procs: Vec<Vec<&str>> = s
        .lines()
        .filter(|l| l.starts_with("PROC "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(procs.len(), 1, "{s} {}", srv.log());
    let p = &procs[0];
    assert_eq!(&p[1..3], ["65534", "1"], "uid nobody, no_new_privs: {s}");
    assert_eq!(p[3], p[4], "soft = hard: {s}");
    // Exactly the numbers below the limit are open: none free, none above (inherited
    // descriptors of the launcher are closed too).
    let limit: usize = p[3].parse().unwrap();
    let fds: Vec<usize> = p[5..].iter().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fds, (0..limit).collect::<Vec<_>>(), "{s}");
    assert!(srv.log().contains("landlock"), "{}", srv.log());
}

/// The whole chain behind pop-tls: tcpserver -> pop-tls -> pop-popup -> pop-checkpassword ->
/// pop-serve, with a passwd-file user, as in tests/tests/chain.rs.
struct Chain {
    fx: Fixture,
    srv: Server,
    msgs: Vec<gen::Message>,
}

const PASSWORD: &str = "s3cret";

fn chain(n: usize) -> Option<Chain> {
    chain_of(gen::varied_rfc5322(11, n))
}

fn chain_of(msgs: Vec<gen::Message>) -> Option<Chain> {
    let fx = Fixture::new()?;
    let (uid, gid) = if is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let d = fx.work.path();
    fs::create_dir_all(d.join("spool/d")).unwrap();
    fs::create_dir_all(d.join("home/demo")).unwrap();
    let mbox = d.join("spool/d/demo");
    fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
    fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        for p in [d.join("spool/d"), d.join("home/demo"), mbox.clone()] {
            nix::unistd::chown(
                &p,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .unwrap();
        }
    }
    fs::write(
        d.join("users"),
        format!(
            "demo:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}/home/demo::\n",
            d.display()
        ),
    )
    .unwrap();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let mut argv = tls_argv(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.push(bin("pop-popup").display().to_string());
    argv.extend(["--log", "stderr", "--fail-delay-ms", "10", "localhost"].map(String::from));
    argv.push(bin("pop-checkpassword").display().to_string());
    argv.extend(
        [
            "--log",
            "stderr",
            "--source",
            "passwd-file",
            "--min-uid",
            "1",
            "--passwd-file",
        ]
        .map(String::from),
    );
    argv.push(d.join("users").display().to_string());
    argv.push(bin("pop-serve").display().to_string());
    argv.extend(["--log", "stderr", "--no-dotlock-helper", "--spool-dir"].map(String::from));
    argv.push(d.join("spool").display().to_string());
    let srv = serve(&argv, d)?;
    Some(Chain { fx, srv, msgs })
}

#[test]
fn curl_pop3s_through_the_chain() {
    let Some(curl) = which("curl") else {
        skip("curl_pop3s_through_the_chain", "curl not installed");
        return;
    };
    let Some(c) = chain(6) else { return };
    let ca = c.fx.pki.ca();
    for (i, m) in c.msgs.iter().enumerate() {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .arg(format!(
                "pop3s://demo:{PASSWORD}@localhost:{}/{}",
                c.srv.port,
                i + 1
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {} {}",
            String::from_utf8_lossy(&out.stderr),
            c.srv.log()
        );
        assert_eq!(out.stdout, m.canonical(), "message {}", i + 1);
    }
    // Without the CA curl refuses the server.
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "20"])
        .arg(format!(
            "pop3s://demo:{PASSWORD}@localhost:{}/1",
            c.srv.port
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(c.srv.log().contains("tls TLSv1.3"), "{}", c.srv.log());
}

#[test]
fn poplib_pop3_ssl_through_the_chain() {
    let Some(c) = chain(4) else { return };
    let script = r#"
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
p = poplib.POP3_SSL("localhost", int(sys.argv[1]), context=ctx, timeout=20)
p.user("demo"); p.pass_(sys.argv[3])
n, size = p.stat()
print("STAT", n, size)
for i in range(1, n + 1):
    sys.stdout.buffer.write(b"\n".join(p.retr(i)[1]) + b"\n--\n")
p.quit()
"#;
    let out = Command::new(&c.fx.py)
        .args(["-c", script, &c.srv.port.to_string()])
        .arg(c.fx.pki.ca())
        .arg(PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stderr),
        c.srv.log()
    );
    let text = out.stdout;
    assert!(text.starts_with(format!("STAT {} ", c.msgs.len()).as_bytes()));
    for m in &c.msgs {
        // poplib strips CRLF and the dot-stuffing; compare the first body line.
        let canon = m.canonical();
        let first = canon.split(|&b| b == b'\n').next().unwrap();
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        assert!(
            text.windows(first.len()).any(|w| w == first),
            "missing {:?}",
            String::from_utf8_lossy(first)
        );
    }
}

#[test]
fn large_transfers_both_ways_arrive_intact() {
    // Larger than every buffer on the way (relay 256 KiB, pipes 1 MiB, rustls records):
    // 6 MB up, then 24 MB down, the way a big APPEND-less POP3 session never does but a RETR
    // of a large message does downwards.
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let big = fx.work.path().join("big");
    let mut data = Vec::with_capacity(24 << 20);
    let mut rng = gen::Rng::new(7);
    while data.len() < 24 << 20 {
        data.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    fs::write(&big, &data).unwrap();
    let prog = format!(
        "import hashlib, os, sys\nh = hashlib.sha256(); n = 0\n\
         while n < 6000000:\n    d = os.read(0, min(65536, 6000000 - n))\n    \
         if not d: sys.exit(1)\n    h.update(d); n += len(d)\n\
         os.write(1, (h.hexdigest() + '\\n').encode())\n\
         with open('{}', 'rb') as f:\n    while True:\n        d = f.read(1 << 20)\n        \
         if not d: break\n        sys.stdout.buffer.write(d)\n",
        big.display()
    );
    fs::write(fx.work.path().join("big.py"), prog).unwrap();
    let client = r#"
import hashlib, os, socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30),
                    server_hostname="localhost")
up = os.urandom(6000000)
t.sendall(up)
parts = []
while True:
    d = t.recv(1 << 20)
    if not d:
        break
    parts.append(d)
got = b"".join(parts)
line, _, rest = got.partition(b"\n")
print(line.decode() == hashlib.sha256(up).hexdigest(), len(rest), rest == open(sys.argv[3], "rb").read())
"#;
    let mut argv = tls_argv(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([fx.py.display().to_string(), fx.script("big.py")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    let out = Command::new(&fx.py)
        .args(["-c", client, &srv.port.to_string(), &ca])
        .arg(&big)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("True {} True", data.len()),
        "{} {}",
        String::from_utf8_lossy(&out.stderr),
        srv.log()
    );
    assert!(srv.log().contains("program=0"), "{}", srv.log());
}

#[test]
fn resumption_across_connections_through_the_ticket_key_file() {
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let keys = fx.work.path().join("ticket-keys");
    let rotate = || {
        let out = Command::new(bin("pop-tls"))
            .arg("--rotate-ticket-keys")
            .arg(&keys)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rotate();
    assert_eq!(
        fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut argv = tls_argv(&[
        "--ticket-keys",
        keys.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([fx.py.display().to_string(), fx.script("implicit.py")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    // Each connection is a new process: only the file's key can make the ticket usable.
    let client = r#"
import socket, ssl, sys
port, ca, ver, rounds = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
if ver == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
sess = None
out = []
for i in range(rounds):
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="localhost", session=sess)
    f = t.makefile("rb")
    f.readline()
    t.sendall(b"QUIT\r\n")
    f.readline()
    out.append("reused" if t.session_reused else "full")
    sess = t.session
    t.close()
print(" ".join(out))
"#;
    let run = |ver: &str| {
        let out = Command::new(&fx.py)
            .args(["-c", client, &srv.port.to_string(), &ca, ver, "3"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run("1.3"), "full reused reused", "{}", srv.log());
    assert_eq!(run("1.2"), "full reused reused", "{}", srv.log());
    assert!(srv.log().contains("TLSv1.3 TLS_AES_256_GCM_SHA384 resumed"));
    // A key file others can read is refused with a log line; service goes on without tickets.
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(run("1.3"), "full full full");
    assert!(srv.log().contains("tickets off"), "{}", srv.log());
}

#[test]
fn implicit_tls_under_systemd_socket_activate() {
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let mut argv = tls_argv(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([fx.py.display().to_string(), fx.script("implicit.py")]);
    let Some(srv) = serve_with(true, &argv, fx.work.path()) else {
        return;
    };
    let out = fx.client(srv.port, &ca, "localhost", "implicit");
    assert!(
        out.starts_with("+OK implicit TLSv1.3"),
        "{out} {}",
        srv.log()
    );
    assert!(out.contains("+OK got QUIT"), "{out}");
}

#[test]
fn starttls_without_stls_and_with_a_failed_switch() {
    let Some(fx) = Fixture::new() else { return };
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let mut argv = tls_argv(&[
        "--starttls",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend([fx.py.display().to_string(), fx.script("ucspi.py")]);
    let Some(srv) = serve(&argv, fx.work.path()) else {
        return;
    };
    let greeting = |s: &mut TcpStream| {
        let mut b = [0u8; 256];
        let n = s.read(&mut b).unwrap();
        assert!(b[..n].starts_with(b"+OK ucspi-tls"), "{:?}", &b[..n]);
    };
    // No STLS: the program alone talks in clear and the session ends when it does.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    greeting(&mut s);
    s.write_all(b"QUIT\r\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"-ERR say STLS\r\n");
    // STLS, then no ClientHello but clear text: the handshake fails and the connection ends
    // for both sides; nothing more in clear.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    greeting(&mut s);
    s.write_all(b"STLS\r\n").unwrap();
    let mut b = [0u8; 64];
    let n = s.read(&mut b).unwrap();
    assert_eq!(&b[..n], b"+OK begin TLS\r\n");
    s.write_all(b"USER demo\r\nPASS secret\r\n").unwrap();
    let (got, t) = {
        let start = Instant::now();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        (got, start.elapsed())
    };
    assert!(!got.windows(3).any(|w| w == b"+OK"), "{got:?}");
    assert!(t < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(srv.log().contains("handshake failed"), "{}", srv.log());
    assert!(!srv.log().contains("tls TLSv"), "{}", srv.log());
}

#[test]
fn a_client_that_stops_reading_is_dropped_at_the_write_timeout() {
    let Some(fx) = Fixture::new() else { return };
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    // 64 MB, more than the socket buffers, the pipe and the relay buffer together.
    let big = fx.work.path().join("zeros");
    fs::File::create(&big).unwrap().set_len(64 << 20).unwrap();
    let mut argv = tls_argv(&[
        "--write-timeout",
        "1",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    argv.extend(
        [
            "/bin/sh",
            "-c",
            &format!("read x; exec cat {}", big.display()),
        ]
        .map(String::from),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let client = Command::new(&fx.py)
        .args([
            "-c",
            "import socket, ssl, sys, time\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             t = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))),\n\
             \x20   server_hostname='localhost')\n\
             t.sendall(b'go\\n')\n\
             t.recv(100)\n\
             time.sleep(20)\n",
            &port.to_string(),
        ])
        .arg(fx.pki.ca())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (sock, _) = l.accept().unwrap();
    let dup = sock.try_clone().unwrap();
    let start = Instant::now();
    let tls = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(sock)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(dup)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(tls, Duration::from_secs(15));
    let took = start.elapsed();
    let mut client = client;
    let _ = client.kill();
    let _ = client.wait();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("client stopped reading for 1 s"), "{log}");
    assert!(!log.contains("killed"), "{log}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn a_client_gone_mid_retr_commits_nothing() {
    // DELE 1, then RETR of a 12 MB message, and the client vanishes (reset) in the middle:
    // pop-serve must see the end of its output pipe and leave the mailbox as it was.
    let mut big = gen::Message::simple(2);
    big.body = Some(
        (0..200_000)
            .map(|i| format!("{i:059}").into_bytes())
            .collect(),
    );
    let msgs = vec![gen::Message::simple(1), big, gen::Message::simple(3)];
    let Some(c) = chain_of(msgs) else { return };
    let mbox = c.fx.work.path().join("spool/d/demo");
    let before = fs::read(&mbox).unwrap();
    let script = r#"
import socket, ssl, struct, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
t = ctx.wrap_socket(raw, server_hostname="localhost")
f = t.makefile("rb")
def cmd(c):
    t.sendall(c + b"\r\n")
    return f.readline()
f.readline()
assert cmd(b"USER demo").startswith(b"+OK")
assert cmd(b"PASS " + sys.argv[3].encode()).startswith(b"+OK")
assert cmd(b"DELE 1").startswith(b"+OK")
assert cmd(b"RETR 2").startswith(b"+OK")
got = len(f.read(100000))
t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
f.close()
t.close()
print("read", got)
"#;
    let out = Command::new(&c.fx.py)
        .args(["-c", script, &c.srv.port.to_string()])
        .arg(c.fx.pki.ca())
        .arg(PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stderr),
        c.srv.log()
    );
    // The session ends on its own (no hang): wait for the end line, then compare.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.srv.log().contains("end: in=") {
        assert!(Instant::now() < deadline, "{}", c.srv.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read(&mbox).unwrap(), before, "{}", c.srv.log());
    assert!(c.srv.log().contains("client gone"), "{}", c.srv.log());
    // And the next session still sees three messages.
    let script = r#"
import poplib, ssl, sys
p = poplib.POP3_SSL("localhost", int(sys.argv[1]), context=ssl.create_default_context(cafile=sys.argv[2]), timeout=20)
p.user("demo"); p.pass_(sys.argv[3]); print(p.stat()[0]); p.quit()
"#;
    let out = Command::new(&c.fx.py)
        .args(["-c", script, &c.srv.port.to_string()])
        .arg(c.fx.pki.ca())
        .arg(PASSWORD)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3",
        "{}",
        c.srv.log()
    );
}

#[test]
fn implicit_tls_under_xinetd() {
    // Under (x)inetd descriptor 2 is the client's socket too: pop-tls must log elsewhere.
    let Some(xinetd) = which("xinetd").or_else(|| {
        let p = PathBuf::from("/usr/sbin/xinetd");
        p.is_file().then_some(p)
    }) else {
        skip("implicit_tls_under_xinetd", "xinetd not installed");
        return;
    };
    if !is_root() {
        skip(
            "implicit_tls_under_xinetd",
            "needs root (the service runs as root)",
        );
        return;
    }
    let Some(fx) = Fixture::new() else { return };
    let ca = fx.pki.ca().display().to_string();
    let (cert, key) = fx.pki.leaf("localhost", "p256");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = fx.work.path().join("xinetd.conf");
    fs::write(
        &conf,
        format!(
            "service popspool-tls-test\n{{\n\ttype = UNLISTED\n\tport = {port}\n\tbind = 127.0.0.1\n\
             \tsocket_type = stream\n\tprotocol = tcp\n\twait = no\n\tuser = root\n\
             \tserver = {}\n\tserver_args = --log none --user nobody --cert {} --key {} {} {}\n\
             \tinstances = 8\n}}\n",
            bin("pop-tls").display(),
            cert.display(),
            key.display(),
            fx.py.display(),
            fx.script("implicit.py"),
        ),
    )
    .unwrap();
    let mut child = Command::new(xinetd)
        .arg("-dontfork")
        .arg("-f")
        .arg(&conf)
        .arg("-pidfile")
        .arg(fx.work.path().join("xinetd.pid"))
        .env("INHERITED_FDS", inherited_fds())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "xinetd did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = fx.client(port, &ca, "localhost", "implicit");
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.starts_with("+OK implicit TLSv1.3"), "{out}");
    assert!(out.contains("+OK got QUIT"), "{out}");
    // No variable named the client: the program gets TCPREMOTEIP from the socket's peer.
    assert!(out.contains(" ip=127.0.0.1 "), "{out}");
    // Descriptor 2 was the socket: the program gets /dev/null there, never the raw socket.
    assert!(
        out.contains("fds=0:pipe,1:pipe,2:other\r") || out.contains("fds=0:pipe,1:pipe,2:other\n"),
        "{out}"
    );
}
