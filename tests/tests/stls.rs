//! STLS in pop-popup (RFC 2595) behind a TLS front, with the whole chain (pop-popup ->
//! pop-checkpassword with a passwd-file `{PLAIN}` user -> pop-serve) on loopback under
//! tcpserver, and certificate verification on against a CA made here with openssl: pop-tls
//! --starttls (UCSPI-TLS), pop-tls in implicit mode, Debian's tlswrapper with and without
//! `-n`, and no front at all. Clients: openssl s_client -starttls pop3, curl pop3:// with
//! --ssl-reqd, Python poplib stls(). Issue 11.

use popspool_tests::gen;
use popspool_tests::tlsca::Pki;
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret";

/// A throwaway CA and one P-256 certificate for localhost (and 127.0.0.1) in `dir`, from the
/// shared test CA: ca.pem, leaf.crt, leaf.key, and combined.pem (key then chain, as tlswrapper
/// wants it).
fn make_pki(dir: &Path) {
    let pki = Pki::new().expect("openssl is checked for before");
    let (crt, key) = pki.leaf("localhost", "p256");
    fs::copy(pki.ca(), dir.join("ca.pem")).unwrap();
    fs::copy(&crt, dir.join("leaf.crt")).unwrap();
    fs::copy(&key, dir.join("leaf.key")).unwrap();
    let mut pem = fs::read(&key).unwrap();
    pem.extend(fs::read(&crt).unwrap());
    fs::write(dir.join("combined.pem"), pem).unwrap();
}

/// The real interpreter (not a pyenv shim, whose shell would leave descriptors around).
fn python() -> Option<PathBuf> {
    let p = which("python3")?;
    let out = Command::new(p)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Descriptors this test process leaves open across exec: every program inherits them, and
/// the descriptor report leaves them out.
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

/// What stands between tcpserver and pop-popup.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FrontKind {
    /// pop-tls --starttls: UCSPI-TLS.
    PopTlsStarttls,
    /// pop-tls in its default, implicit mode.
    PopTlsImplicit,
    /// tlswrapper -n (delayed encryption, control pipe on fd 5).
    TlswrapperN,
    /// tlswrapper without -n (implicit).
    Tlswrapper,
    /// Nothing: tcpserver runs pop-popup.
    Plain,
}

/// A running chain behind a front; tcpserver killed on drop.
struct Chain {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    py: PathBuf,
    msgs: Vec<gen::Message>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chain {
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Runs a Python client script with the port, the CA and the password as arguments.
    fn py(&self, script: &str) -> String {
        let c = Command::new(&self.py)
            .args(["-c", script, &self.port.to_string()])
            .arg(self.ca())
            .arg(PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(c, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "client: {text} {} server: {}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        text
    }
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

/// Builds the chain behind `front`; `popup_args` go to pop-popup; `checkprog` replaces
/// pop-checkpassword (a Python script) when given. None (with a SKIPPED line) when a needed
/// program is missing.
fn chain(
    test: &str,
    front: FrontKind,
    popup_args: &[&str],
    checkprog: Option<&str>,
) -> Option<Chain> {
    for (prog, pkg) in [
        ("openssl", "openssl"),
        ("tcpserver", "ucspi-tcp"),
        ("python3", "python3"),
    ] {
        if which(prog).is_none() {
            skip(
                test,
                &format!("{prog} not installed (Debian package {pkg})"),
            );
            return None;
        }
    }
    let tlswrapper = which("tlswrapper");
    if matches!(front, FrontKind::TlswrapperN | FrontKind::Tlswrapper) {
        if tlswrapper.is_none() {
            skip(test, "tlswrapper not installed (Debian package tlswrapper)");
            return None;
        }
        if !is_root() {
            skip(test, "tlswrapper jails its processes and needs root");
            return None;
        }
    }
    let py = python()?;
    // No leading dot in any path component: tlswrapper turns "/." into "/:" (see its -f).
    let dir = tempfile::Builder::new().prefix("stls-").tempdir().unwrap();
    let d = dir.path();
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    make_pki(d);
    let (uid, gid) = if is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let msgs = gen::varied_rfc5322(7, 3);
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

    let s = |p: &Path| p.display().to_string();
    let mut argv: Vec<String> = Vec::new();
    match front {
        FrontKind::PopTlsStarttls | FrontKind::PopTlsImplicit => {
            argv.push(s(&bin("pop-tls")));
            argv.extend(["--log", "stderr"].map(String::from));
            if is_root() {
                argv.extend(["--user", "nobody"].map(String::from));
            }
            if front == FrontKind::PopTlsStarttls {
                argv.push("--starttls".into());
            }
            argv.extend([
                "--cert".into(),
                s(&d.join("leaf.crt")),
                "--key".into(),
                s(&d.join("leaf.key")),
            ]);
        }
        FrontKind::TlswrapperN | FrontKind::Tlswrapper => {
            argv.push(s(tlswrapper.as_ref().unwrap()));
            argv.push("-v".into());
            if front == FrontKind::TlswrapperN {
                argv.push("-n".into());
            }
            argv.extend(["-f".into(), s(&d.join("combined.pem"))]);
        }
        FrontKind::Plain => {}
    }
    argv.push(s(&bin("pop-popup")));
    argv.extend(["--log", "stderr", "--fail-delay-ms", "10"].map(String::from));
    if front == FrontKind::TlswrapperN {
        argv.push("--tlswrapper".into());
    }
    argv.extend(popup_args.iter().map(|a| a.to_string()));
    argv.push("localhost".into());
    match checkprog {
        Some(script) => {
            fs::write(d.join("checkprog.py"), script).unwrap();
            argv.push(s(&py));
            argv.push(s(&d.join("checkprog.py")));
        }
        None => {
            argv.push(s(&bin("pop-checkpassword")));
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
            argv.push(s(&d.join("users")));
        }
    }
    argv.push(s(&bin("pop-serve")));
    argv.extend(["--log", "stderr", "--no-dotlock-helper", "--spool-dir"].map(String::from));
    argv.push(s(&d.join("spool")));

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(which("tcpserver").unwrap());
    cmd.env_remove("SSL_PROTOCOL").env_remove("SSLCTLFD");
    if front == FrontKind::TlswrapperN {
        // tlswrapper passes its environment on: a stale value must not lift the refusal of
        // logins in clear, nor reach the chain.
        cmd.env("SSL_PROTOCOL", "stale");
    }
    let child = cmd
        .args(["-D", "-q", "-R", "-H", "-l", "localhost", "127.0.0.1"])
        .arg(port.to_string())
        .args(&argv)
        .env("INHERITED_FDS", inherited_fds())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(d.join("server.log")).unwrap()))
        .spawn()
        .unwrap();
    let c = Chain {
        child,
        port,
        dir,
        py,
        msgs,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tcpserver did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(c)
}

/// poplib before and after stls(): CAPA, refusals, the login, RETR, and STLS where it is
/// refused. Prints one line per step.
const POPLIB_STLS: &str = r#"
import poplib, ssl, sys
port, ca, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3("localhost", port, timeout=20)
def caps():
    return " ".join(sorted(k + ("=" + ",".join(v) if v else "") for k, v in p.capa().items()))
def err(f, *a):
    try:
        return "OK " + repr(f(*a))
    except poplib.error_proto as e:
        return e.args[0].decode()
print("CAPA-BEFORE", caps())
print("USER-BEFORE", err(p.user, "demo"))
print("PASS-BEFORE", err(p.pass_, pw))
print("AUTH-BEFORE", err(p._shortcmd, "AUTH PLAIN"))
print("STLS", p.stls(context=ctx))
print("CAPA-AFTER", caps())
print("STLS-AGAIN", err(p._shortcmd, "STLS"))
p.user("demo")
p.pass_(pw)
n, size = p.stat()
print("STAT", n)
for i in range(1, n + 1):
    sys.stdout.buffer.write(b"RETR " + b"\n".join(p.retr(i)[1]) + b"\n--\n")
print("STLS-AFTER-LOGIN", err(p._shortcmd, "STLS"))
print("QUIT", p.quit())
"#;

fn check_poplib(c: &Chain) {
    let out = c.py(POPLIB_STLS);
    let line = |k: &str| {
        out.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    let before = line("CAPA-BEFORE ");
    assert!(before.contains(" STLS"), "{before}");
    assert!(
        !before.contains("USER") && !before.contains("SASL"),
        "{before}"
    );
    let refused = "-ERR [AUTH] TLS required: use STLS before logging in";
    assert_eq!(line("USER-BEFORE "), format!("USER-BEFORE {refused}"));
    assert_eq!(line("PASS-BEFORE "), format!("PASS-BEFORE {refused}"));
    assert_eq!(line("AUTH-BEFORE "), format!("AUTH-BEFORE {refused}"));
    assert_eq!(line("STLS "), "STLS b'+OK Begin TLS negotiation'");
    let after = line("CAPA-AFTER ");
    assert!(
        after.contains("USER") && after.contains("SASL=PLAIN") && !after.contains("STLS"),
        "{after}"
    );
    assert_eq!(
        line("STLS-AGAIN "),
        "STLS-AGAIN -ERR command not permitted when TLS active"
    );
    assert_eq!(line("STAT "), format!("STAT {}", c.msgs.len()));
    for m in &c.msgs {
        let canon = m.canonical();
        let first = canon.split(|&b| b == b'\n').next().unwrap();
        let first = String::from_utf8_lossy(first.strip_suffix(b"\r").unwrap_or(first));
        assert!(out.contains(first.as_ref()), "missing {first:?} in {out}");
    }
    // After login pop-serve answers: STLS is not one of its commands.
    let after_login = line("STLS-AFTER-LOGIN ");
    assert!(
        after_login.starts_with("STLS-AFTER-LOGIN -ERR"),
        "{after_login}"
    );
    assert!(line("QUIT ").starts_with("QUIT b'+OK"));
}

/// A raw client: greeting, `STLS\r\nUSER x\r\n` in one write, TLS with verification, then
/// CAPA and `PASS`: were the USER executed, PASS would be tried; it must get "USER first".
const INJECT: &str = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
s = socket.create_connection(("127.0.0.1", port), timeout=20)
f = s.makefile("rb")
print("GREETING", f.readline().decode().strip())
s.sendall(b"STLS\r\nUSER demo\r\n")
print("STLS", f.readline().decode().strip())
try:
    t = ctx.wrap_socket(s, server_hostname="localhost")
except (ssl.SSLError, OSError) as e:
    print("HANDSHAKE-FAILED", type(e).__name__)
    sys.exit(0)
tf = t.makefile("rb")
t.sendall(b"PASS " + sys.argv[3].encode() + b"\r\n")
print("PASS", tf.readline().decode().strip())
t.sendall(b"QUIT\r\n")
print("QUIT", tf.readline().decode().strip())
"#;

fn check_injection(c: &Chain, rounds: usize) {
    for _ in 0..rounds {
        let out = c.py(INJECT);
        assert!(out.contains("STLS +OK Begin TLS negotiation"), "{out}");
        // pop-popup dropped the USER line before the +OK, so the handshake goes through and
        // the PASS finds no USER before it.
        assert!(out.contains("PASS -ERR USER first"), "{out} {}", c.log());
        assert!(c.log().contains(" dropped=11"), "{}", c.log());
    }
}

#[test]
fn poplib_stls_through_pop_tls_starttls() {
    let Some(c) = chain(
        "poplib_stls_through_pop_tls_starttls",
        FrontKind::PopTlsStarttls,
        &[],
        None,
    ) else {
        return;
    };
    check_poplib(&c);
    let log = c.log();
    // pop-popup's lines carry the TLS state: tls=no before, PROTOCOL/CIPHER after.
    assert!(log.contains("tls=no"), "{log}");
    assert!(log.contains("stls tls=TLSv1.3/TLS_"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("pop-popup")
            && l.contains("tls=TLSv1.3/")
            && l.contains("auth user=demo")),
        "{log}"
    );
}

#[test]
fn commands_pipelined_after_stls_are_dropped_through_pop_tls() {
    let Some(c) = chain(
        "commands_pipelined_after_stls_are_dropped_through_pop_tls",
        FrontKind::PopTlsStarttls,
        &[],
        None,
    ) else {
        return;
    };
    check_injection(&c, 5);
}

#[test]
fn openssl_s_client_starttls_pop3_login_and_retr() {
    let Some(c) = chain(
        "openssl_s_client_starttls_pop3_login_and_retr",
        FrontKind::PopTlsStarttls,
        &[],
        None,
    ) else {
        return;
    };
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(c.ca())
        .args(["-starttls", "pop3", "-servername", "localhost", "-connect"])
        .arg(format!("127.0.0.1:{}", c.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        let _ = stdin.write_all(
            format!("CAPA\r\nUSER demo\r\nPASS {PASSWORD}\r\nRETR 1\r\nQUIT\r\n").as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(1500));
    });
    let out = wait_output(child, Duration::from_secs(20));
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SASL PLAIN\r\n"), "{text} {}", c.log());
    let canon = c.msgs[0].canonical();
    let first = String::from_utf8_lossy(canon.split(|&b| b == b'\n').next().unwrap());
    assert!(text.contains(first.as_ref()), "{text}");
    assert!(c.log().contains("auth user=demo mech=USER result=ok"));
}

#[test]
fn curl_pop3_ssl_reqd_through_pop_tls_starttls() {
    let Some(curl) = which("curl") else {
        skip(
            "curl_pop3_ssl_reqd_through_pop_tls_starttls",
            "curl not installed",
        );
        return;
    };
    let Some(c) = chain(
        "curl_pop3_ssl_reqd_through_pop_tls_starttls",
        FrontKind::PopTlsStarttls,
        &[],
        None,
    ) else {
        return;
    };
    for (i, m) in c.msgs.iter().enumerate() {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "20", "--ssl-reqd", "--cacert"])
            .arg(c.ca())
            .arg(format!(
                "pop3://demo:{PASSWORD}@localhost:{}/{}",
                c.port,
                i + 1
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {} {}",
            String::from_utf8_lossy(&out.stderr),
            c.log()
        );
        assert_eq!(out.stdout, m.canonical(), "message {}", i + 1);
    }
}

#[test]
fn allow_plaintext_accepts_logins_before_stls() {
    let Some(c) = chain(
        "allow_plaintext_accepts_logins_before_stls",
        FrontKind::PopTlsStarttls,
        &["--allow-plaintext"],
        None,
    ) else {
        return;
    };
    let out = c.py(r#"
import poplib, sys
p = poplib.POP3("localhost", int(sys.argv[1]), timeout=20)
caps = p.capa()
print("CAPA", " ".join(sorted(caps)))
p.user("demo"); p.pass_(sys.argv[3])
print("STAT", p.stat()[0])
p.quit()
"#);
    assert!(
        out.contains(
            "CAPA AUTH-RESP-CODE IMPLEMENTATION PIPELINING RESP-CODES SASL STLS TOP UIDL USER"
        ),
        "{out}"
    );
    assert!(out.contains(&format!("STAT {}", c.msgs.len())), "{out}");
    assert!(
        c.log()
            .contains("tls=no auth user=demo mech=USER result=ok"),
        "{}",
        c.log()
    );
}

#[test]
fn implicit_pop_tls_channel_is_private() {
    let Some(c) = chain(
        "implicit_pop_tls_channel_is_private",
        FrontKind::PopTlsImplicit,
        &[],
        None,
    ) else {
        return;
    };
    let out = c.py(r#"
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
p = poplib.POP3_SSL("localhost", int(sys.argv[1]), context=ctx, timeout=20)
print("CAPA", " ".join(sorted(p.capa())))
try:
    p._shortcmd("STLS")
except poplib.error_proto as e:
    print("STLS", e.args[0].decode())
p.user("demo"); p.pass_(sys.argv[3])
print("STAT", p.stat()[0])
p.quit()
"#);
    assert!(
        out.contains(
            "CAPA AUTH-RESP-CODE IMPLEMENTATION PIPELINING RESP-CODES SASL TOP UIDL USER\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("STLS -ERR command not permitted when TLS active"),
        "{out}"
    );
    assert!(out.contains(&format!("STAT {}", c.msgs.len())), "{out}");
    assert!(
        c.log().contains("tls=TLSv1.3/TLS_")
            && c.log().contains("auth user=demo mech=USER result=ok"),
        "{}",
        c.log()
    );
}

#[test]
fn no_front_stays_plaintext_and_refuses_stls() {
    let Some(c) = chain(
        "no_front_stays_plaintext_and_refuses_stls",
        FrontKind::Plain,
        &[],
        None,
    ) else {
        return;
    };
    let out = c.py(r#"
import poplib, sys
p = poplib.POP3("localhost", int(sys.argv[1]), timeout=20)
print("CAPA", " ".join(sorted(p.capa())))
try:
    p._shortcmd("STLS")
except poplib.error_proto as e:
    print("STLS", e.args[0].decode())
p.user("demo"); p.pass_(sys.argv[3])
print("STAT", p.stat()[0])
p.quit()
"#);
    assert!(
        out.contains(
            "CAPA AUTH-RESP-CODE IMPLEMENTATION PIPELINING RESP-CODES SASL TOP UIDL USER\n"
        ),
        "{out}"
    );
    assert!(out.contains("STLS -ERR STLS not available"), "{out}");
    assert!(out.contains(&format!("STAT {}", c.msgs.len())), "{out}");
    assert!(c.log().contains("tls=no auth user=demo"), "{}", c.log());
}

/// A checkpassword stand-in that reports its descriptors and TLS variables to the client and
/// refuses the login.
const REPORT_CHECKPROG: &str = r#"
import os
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
os.write(1, ("+OK report fds=%s ctl=%s read=%s write=%s proto=%s\r\n" % (
    kinds(), e.get('SSLCTLFD', '-'), e.get('SSLREADFD', '-'), e.get('SSLWRITEFD', '-'),
    e.get('SSL_PROTOCOL', '-'))).encode())
os._exit(1)
"#;

#[test]
fn no_control_descriptor_reaches_the_checkpassword_program() {
    // After STLS: fd 0/1 are the front's pipes, fd 3 the credentials; no 6/7/8.
    let Some(c) = chain(
        "no_control_descriptor_reaches_the_checkpassword_program",
        FrontKind::PopTlsStarttls,
        &[],
        Some(REPORT_CHECKPROG),
    ) else {
        return;
    };
    let out = c.py(r#"
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
p = poplib.POP3("localhost", int(sys.argv[1]), timeout=20)
p.stls(context=ctx)
p.user("demo")
print(p._shortcmd("PASS x").decode())
"#);
    assert!(
        out.contains(
            "+OK report fds=0:pipe,1:pipe,2:other,3:pipe ctl=- read=- write=- proto=TLSv1.3"
        ),
        "{out} {}",
        c.log()
    );
    drop(c);
    // Before STLS, with --allow-plaintext: fd 0/1 the socket, and still nothing of the front.
    let Some(c) = chain(
        "no_control_descriptor_reaches_the_checkpassword_program",
        FrontKind::PopTlsStarttls,
        &["--allow-plaintext"],
        Some(REPORT_CHECKPROG),
    ) else {
        return;
    };
    let out = c.py(r#"
import poplib, sys
p = poplib.POP3("localhost", int(sys.argv[1]), timeout=20)
p.user("demo")
print(p._shortcmd("PASS x").decode())
"#);
    assert!(
        out.contains(
            "+OK report fds=0:socket,1:socket,2:other,3:pipe ctl=- read=- write=- proto=-"
        ),
        "{out} {}",
        c.log()
    );
}

#[test]
fn poplib_stls_behind_tlswrapper_n() {
    let Some(c) = chain(
        "poplib_stls_behind_tlswrapper_n",
        FrontKind::TlswrapperN,
        &[],
        None,
    ) else {
        return;
    };
    check_poplib(&c);
    check_injection(&c, 5);
}

#[test]
fn implicit_tlswrapper_is_no_front_to_pop_popup() {
    // tlswrapper sets no variable that says TLS is on: pop-popup sees no front, offers no
    // STLS and accepts logins, as without any front (the channel is private anyway).
    let Some(c) = chain(
        "implicit_tlswrapper_is_no_front_to_pop_popup",
        FrontKind::Tlswrapper,
        &[],
        None,
    ) else {
        return;
    };
    let out = c.py(r#"
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
p = poplib.POP3_SSL("localhost", int(sys.argv[1]), context=ctx, timeout=20)
print("CAPA", " ".join(sorted(p.capa())))
p.user("demo"); p.pass_(sys.argv[3])
print("STAT", p.stat()[0])
p.quit()
"#);
    assert!(!out.contains("STLS"), "{out}");
    assert!(out.contains(&format!("STAT {}", c.msgs.len())), "{out}");
}

#[test]
fn a_failed_switch_or_a_flood_after_stls_ends_the_session() {
    let Some(c) = chain(
        "a_failed_switch_or_a_flood_after_stls_ends_the_session",
        FrontKind::PopTlsStarttls,
        &[],
        None,
    ) else {
        return;
    };
    let out = c.py(r#"
import socket, sys, time
port = int(sys.argv[1])
def session(after_stls, read_ok):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"STLS\r\n" + after_stls)
    got = f.readline() if read_ok else b""
    if read_ok:
        # No handshake: clear text where a ClientHello should be.
        s.sendall(b"USER demo\r\nPASS x\r\n")
    t = time.time()
    try:
        rest = f.read()
    except ConnectionResetError:
        rest = b"reset"
    # A TLS alert may come back; no POP3 answer must.
    pop3 = b"+OK" in rest or b"-ERR" in rest
    return got.decode().strip(), pop3, round(time.time() - t)
print("CLEAR", session(b"", True))
print("FLOOD", session(b"X" * 20000, False))
"#);
    assert!(
        out.contains("CLEAR ('+OK Begin TLS negotiation', False, 0)"),
        "{out}"
    );
    assert!(out.contains("FLOOD ('', False, 0)"), "{out}");
    let log = c.log();
    assert!(log.contains("end: STLS: TLS handshake failed"), "{log}");
    assert!(
        log.contains("end: STLS: client kept sending after STLS"),
        "{log}"
    );
    assert!(!log.contains("auth user="), "{log}");
}
