//! The shipped TLS launchers run as written: the command of scripts/systemd/pop3s@.service under
//! systemd-socket-activate (what pop3s.socket's Accept=yes does), scripts/inetd/xinetd.pop3s
//! and the pop3s line of scripts/inetd/inetd.conf under xinetd, and
//! scripts/daemontools/run-pop3s under tcpserver, each read from its file. Only what a test
//! must change is changed: installed paths become the built binaries and a scratch
//! /etc/popspool/tls, the port becomes a free loopback one, and each program gets the options
//! that point it at a test passwd-file and spool. Clients verify the server against the
//! tests' throwaway CA (tests/tlsca.rs): curl pop3s:// --cacert and Python
//! poplib.POP3_SSL; the shipped ticket-key file resumes sessions, xinetd's per_source holds.
//! The STLS variants (port 110) start the same way; their STLS session runs once pop-popup
//! offers STLS. Issue 11.

use popspool_tests::gen;
use popspool_tests::tlsca::Pki;
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn shipped(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A scratch installation: `tls/` in place of /etc/popspool/tls (a CA-signed certificate for
/// localhost and 127.0.0.1 as cert.pem and key.pem, certs/default.pem, ticket-keys made by
/// pop-tls --rotate-ticket-keys), a passwd-file user `demo` and its mbox.
struct World {
    dir: tempfile::TempDir,
    pki: Pki,
    msgs: Vec<gen::Message>,
}

impl World {
    /// None (with a SKIPPED line) without openssl.
    fn new() -> Option<World> {
        // Pki::new prints the SKIPPED line when openssl is missing.
        let pki = Pki::new()?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The session runs as nobody when root: it must reach the spool and home below.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        let (chain, leaf_key) = pki.leaf("localhost", "p256");
        let tls = d.join("tls");
        fs::create_dir_all(tls.join("certs")).unwrap();
        fs::set_permissions(&tls, fs::Permissions::from_mode(0o700)).unwrap();
        let (cert, key) = (fs::read(&chain).unwrap(), fs::read(&leaf_key).unwrap());
        fs::write(tls.join("cert.pem"), &cert).unwrap();
        fs::write(tls.join("key.pem"), &key).unwrap();
        fs::write(tls.join("certs/default.pem"), [key, cert].concat()).unwrap();
        let out = Command::new(bin("pop-tls"))
            .arg("--rotate-ticket-keys")
            .arg(tls.join("ticket-keys"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");

        let (uid, gid) = if is_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let msgs = gen::varied_rfc5322(95, 3);
        fs::create_dir_all(d.join("spool/d")).unwrap();
        fs::create_dir_all(d.join("home/demo")).unwrap();
        fs::create_dir_all(d.join("slots")).unwrap();
        let mbox = d.join("spool/d/demo");
        fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
        fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            for p in [d.join("spool/d"), d.join("home/demo"), mbox] {
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
        Some(World { dir, pki, msgs })
    }

    fn ca(&self) -> PathBuf {
        self.pki.ca()
    }

    /// The options a test adds right after a program's name: logs to `log` (`stderr` where
    /// descriptor 2 is ours, `none` under (x)inetd, where it is the client), and the test's
    /// passwd-file, spool and slot directory.
    fn opts_for(&self, name: &str, log: &str) -> String {
        let d = self.dir.path().display();
        match name {
            // The default TLS user exists only where scripts/install made it.
            "pop-tls"
                if is_root()
                    && nix::unistd::User::from_name("_poptls")
                        .ok()
                        .flatten()
                        .is_none() =>
            {
                format!("--log {log} --user nobody")
            }
            "pop-tls" => format!("--log {log}"),
            "pop-popup" => format!("--log {log} --fail-delay-ms 10 --slot-dir {d}/slots"),
            "pop-checkpassword" => {
                format!("--log {log} --source passwd-file --passwd-file {d}/users --min-uid 1")
            }
            "pop-serve" => format!("--log {log} --no-dotlock-helper --spool-dir {d}/spool"),
            _ => panic!("unexpected program {name}"),
        }
    }

    /// A shipped command line with installed paths made local: each /usr/local/bin program
    /// becomes the built one followed by its test options, /etc/popspool/tls the scratch one.
    fn localize(&self, text: &str, log: &str) -> String {
        let d = self.dir.path().display().to_string();
        let mut t = text.replace("/etc/popspool/tls/", &format!("{d}/tls/"));
        for name in ["pop-tls", "pop-popup", "pop-checkpassword", "pop-serve"] {
            t = t.replace(
                &format!("/usr/local/bin/{name}"),
                &format!("{} {}", bin(name).display(), self.opts_for(name, log)),
            );
        }
        t.replace("%H", "localhost")
            .replace("mail.example.org", "localhost")
    }

    /// An inetd-style entry: the server's path (the built binary) and its arguments after
    /// argv[0] (the test options first).
    fn server(&self, path: &str, args: &str) -> (String, String) {
        let name = path
            .strip_prefix("/usr/local/bin/")
            .expect("installed path");
        (
            bin(name).display().to_string(),
            format!(
                "{} {}",
                self.opts_for(name, "none"),
                self.localize(args, "none")
            ),
        )
    }
}

/// A launcher running a shipped configuration; killed on drop.
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

fn spawn(mut cmd: Command, port: u16, log: PathBuf) -> Server {
    let out = fs::File::create(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start the launcher");
    let s = Server { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the launcher did not come up: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

/// The ExecStart= command of a unit, continuation lines joined.
fn exec_start(unit: &str) -> String {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Key=value` of a unit (first occurrence).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// Runs a unit's command under systemd-socket-activate --inetd, as its socket would.
fn under_socket_activate(w: &World, service: &str) -> Option<Server> {
    let Some(exe) = which("systemd-socket-activate") else {
        skip(
            service,
            "systemd-socket-activate not installed (package systemd)",
        );
        return None;
    };
    let cmd_line = w.localize(&exec_start(&shipped(service)), "stderr");
    let port = free_port();
    let mut cmd = Command::new(exe);
    cmd.args(["--inetd", "-a", "-l", &format!("127.0.0.1:{port}")])
        .args(cmd_line.split_whitespace());
    Some(spawn(cmd, port, w.dir.path().join("socket-activate.log")))
}

fn xinetd() -> Option<PathBuf> {
    which("xinetd").or_else(|| {
        let p = PathBuf::from("/usr/sbin/xinetd");
        p.is_file().then_some(p)
    })
}

/// Runs a service under a private xinetd, as root (the services run as user root).
/// `attrs` are the service's `name = value` lines; type, port and bind are ours.
fn under_xinetd(w: &World, test: &str, attrs: &[String]) -> Option<Server> {
    let Some(exe) = xinetd() else {
        skip(test, "xinetd not installed (Debian package xinetd)");
        return None;
    };
    if !is_root() {
        skip(test, "needs root (the service runs as user root)");
        return None;
    }
    let port = free_port();
    let mut conf = format!(
        "service popspool-launcher-test\n{{\n\ttype = UNLISTED\n\tport = {port}\n\tbind = 127.0.0.1\n"
    );
    for a in attrs {
        conf.push_str(&format!("\t{a}\n"));
    }
    conf.push_str("}\n");
    let path = w.dir.path().join("xinetd.conf");
    fs::write(&path, conf).unwrap();
    let mut cmd = Command::new(exe);
    cmd.arg("-dontfork")
        .arg("-f")
        .arg(&path)
        .arg("-pidfile")
        .arg(w.dir.path().join("xinetd.pid"));
    Some(spawn(cmd, port, w.dir.path().join("xinetd.log")))
}

/// A shipped xinetd service file, every attribute kept, the server made local.
fn xinetd_file(w: &World, rel: &str) -> Option<Server> {
    let text = shipped(rel);
    let mut attrs = Vec::new();
    let (mut server, mut args) = (None, None);
    for l in text.lines().map(str::trim) {
        if l.starts_with('#') || !l.contains('=') {
            continue;
        }
        let (k, v) = l.split_once('=').unwrap();
        match k.trim() {
            "server" => server = Some(v.trim().to_string()),
            "server_args" => args = Some(v.trim().to_string()),
            _ => attrs.push(l.split_whitespace().collect::<Vec<_>>().join(" ")),
        }
    }
    assert!(attrs.iter().any(|a| a == "instances = 64"), "{rel}");
    assert!(attrs.iter().any(|a| a == "per_source = 8"), "{rel}");
    assert!(attrs.iter().any(|a| a == "flags = NODELAY"), "{rel}");
    assert!(attrs.iter().any(|a| a == "user = root"), "{rel}");
    let (server, args) = w.server(&server.unwrap(), &args.unwrap());
    attrs.push(format!("server = {server}"));
    attrs.push(format!("server_args = {args}"));
    under_xinetd(w, rel, &attrs)
}

/// The inetd.conf line whose service field is `service` (`#pop3` for the commented STLS
/// alternative), run as inetd would (xinetd gives the same descriptors): server path, then
/// argv from argv[0].
fn inetd_line(w: &World, service: &str) -> Option<Server> {
    let text = shipped("scripts/inetd/inetd.conf");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(service))
        .unwrap_or_else(|| panic!("no {service} line"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[1..5], ["stream", "tcp", "nowait", "root"]);
    assert!(
        line.contains("--max-connections 64 --max-per-source 8"),
        "{line}"
    );
    let (server, args) = w.server(f[5], &f[7..].join(" "));
    under_xinetd(
        w,
        &format!("inetd.conf {service}"),
        &[
            "socket_type = stream".into(),
            "protocol = tcp".into(),
            "wait = no".into(),
            "user = root".into(),
            format!("server = {server}"),
            format!("server_args = {args}"),
        ],
    )
}

/// A shipped daemontools run file under sh, listening on a loopback port in place of 0.
fn run_file(w: &World, rel: &str, port_in_file: u16) -> Option<Server> {
    if which("tcpserver").is_none() {
        skip(rel, "tcpserver not installed (Debian package ucspi-tcp)");
        return None;
    }
    let text = shipped(rel);
    let listen = format!(" 0 {port_in_file} ");
    assert!(text.contains(&listen), "{rel} listens on {port_in_file}");
    assert!(text.contains(" -D "), "{rel} uses -D");
    assert!(text.contains("-c 64") && text.contains("--max-per-source 8"));
    let port = free_port();
    let text = w
        .localize(&text, "stderr")
        .replace(&listen, &format!(" 127.0.0.1 {port} "));
    let run = w.dir.path().join("run");
    fs::write(&run, text).unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(&run);
    Some(spawn(cmd, port, w.dir.path().join("run.log")))
}

/// curl pop3s:// with the test CA fetches every message exactly; without it curl refuses.
fn curl_pop3s(w: &World, s: &Server) {
    let Some(curl) = which("curl") else {
        skip("curl pop3s", "curl not installed");
        return;
    };
    for (i, m) in w.msgs.iter().enumerate() {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(w.ca())
            .arg(format!(
                "pop3s://demo:{PASSWORD}@localhost:{}/{}",
                s.port,
                i + 1
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {} {}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        assert_eq!(out.stdout, m.canonical(), "message {}", i + 1);
    }
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "20"])
        .arg(format!("pop3s://demo:{PASSWORD}@localhost:{}/1", s.port))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an untrusted certificate is refused");
}

/// Python's poplib over a verifying context: POP3_SSL, or POP3 then stls().
fn poplib(w: &World, s: &Server, stls: bool) {
    let Some(py) = which("python3") else {
        skip("poplib", "python3 not installed");
        return;
    };
    let script = r#"
import poplib, ssl, sys
port, ca, pw, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if mode == "stls":
    p = poplib.POP3("localhost", port, timeout=20)
    p.stls(context=ctx)
else:
    p = poplib.POP3_SSL("localhost", port, context=ctx, timeout=20)
p.user("demo"); p.pass_(pw)
print("STAT", *p.stat())
print("SUBJECT", [l for l in p.retr(1)[1] if l.startswith(b"Subject:")][0].decode())
p.quit()
"#;
    let out = Command::new(py)
        .args(["-c", script, &s.port.to_string()])
        .arg(w.ca())
        .args([PASSWORD, if stls { "stls" } else { "implicit" }])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "poplib: {text} {} {}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    assert!(
        text.starts_with(&format!("STAT {} ", w.msgs.len())),
        "{text}"
    );
    let subject = w.msgs[0]
        .canonical()
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"Subject:"))
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .unwrap();
    assert!(text.contains(&subject), "{text}");
}

/// The shipped --ticket-keys file makes a second connection (a new pop-tls process) resume
/// the first one's session.
fn resumes(w: &World, s: &Server) {
    let Some(py) = which("python3") else {
        skip("resumption", "python3 not installed");
        return;
    };
    let client = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
sess, out = None, []
for i in range(2):
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10),
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
    let out = Command::new(py)
        .args(["-c", client, &s.port.to_string()])
        .arg(w.ca())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "full reused",
        "{} {}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
}

/// A port-110 STLS launcher: the greeting comes at once in clear text (pop-tls --starttls ran
/// pop-popup); once CAPA lists STLS, curl --ssl-reqd and poplib's stls() log in over TLS.
fn starttls_session(w: &World, s: &Server, test: &str) {
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("+OK "),
        "clear-text greeting: {line:?} {}",
        s.log()
    );
    c.write_all(b"CAPA\r\n").unwrap();
    let mut capa = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 || line == ".\r\n" || line.starts_with("-ERR") {
            break;
        }
        capa.push(line.trim_end().to_string());
    }
    let _ = c.write_all(b"QUIT\r\n");
    if !capa.iter().any(|l| l == "STLS") {
        skip(
            test,
            "pop-popup does not offer STLS (UCSPI-TLS) in this build",
        );
        return;
    }
    if let Some(curl) = which("curl") {
        let out = Command::new(curl)
            .args(["-sS", "--max-time", "20", "--ssl-reqd", "--cacert"])
            .arg(w.ca())
            .arg(format!("pop3://demo:{PASSWORD}@localhost:{}/1", s.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl --ssl-reqd: {} {}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        assert_eq!(out.stdout, w.msgs[0].canonical());
    }
    poplib(w, s, true);
}

#[test]
fn systemd_pop3s_units_as_shipped() {
    let socket = shipped("scripts/systemd/pop3s.socket");
    let plain = shipped("scripts/systemd/pop3.socket");
    assert_eq!(unit_value(&socket, "ListenStream"), Some("995"));
    assert_eq!(unit_value(&socket, "Accept"), Some("yes"));
    assert_eq!(unit_value(&socket, "NoDelay"), Some("true"));
    for k in ["MaxConnections", "MaxConnectionsPerSource"] {
        assert_eq!(unit_value(&socket, k), unit_value(&plain, k), "{k}");
    }
    let cmd = exec_start(&shipped("scripts/systemd/pop3s@.service"));
    assert!(cmd.starts_with("/usr/local/bin/pop-tls --cert "), "{cmd}");
    assert!(!cmd.contains("--starttls"));
    let Some(w) = World::new() else {
        return;
    };
    let Some(s) = under_socket_activate(&w, "scripts/systemd/pop3s@.service") else {
        return;
    };
    curl_pop3s(&w, &s);
    poplib(&w, &s, false);
    resumes(&w, &s);
    assert!(s.log().contains("tls TLSv1.3"), "{}", s.log());
}

#[test]
fn xinetd_pop3s_as_shipped() {
    let Some(w) = World::new() else {
        return;
    };
    let Some(s) = xinetd_file(&w, "scripts/inetd/xinetd.pop3s") else {
        return;
    };
    curl_pop3s(&w, &s);
    poplib(&w, &s, false);
    // per_source = 8: eight live TLS sessions from one address are served, a ninth is not.
    let Some(py) = which("python3") else { return };
    let client = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
held, out = [], []
for i in range(9):
    try:
        t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10),
                            server_hostname="localhost")
        line = t.makefile("rb").readline()
        out.append("ok" if line.startswith(b"+OK") else "closed")
        held.append(t)
    except (ssl.SSLError, OSError):
        out.append("refused")
print(" ".join(out))
"#;
    let out = Command::new(py)
        .args(["-c", client, &s.port.to_string()])
        .arg(w.ca())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let served = text.split_whitespace().filter(|r| *r == "ok").count();
    assert_eq!(served, 8, "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(text.split_whitespace().last(), Some("ok"), "{text}");
}

#[test]
fn inetd_conf_pop3s_line_as_shipped() {
    let Some(w) = World::new() else {
        return;
    };
    let Some(s) = inetd_line(&w, "pop3s") else {
        return;
    };
    curl_pop3s(&w, &s);
    poplib(&w, &s, false);
}

#[test]
fn daemontools_run_pop3s_as_shipped() {
    let Some(w) = World::new() else {
        return;
    };
    let Some(s) = run_file(&w, "scripts/daemontools/run-pop3s", 995) else {
        return;
    };
    curl_pop3s(&w, &s);
    poplib(&w, &s, false);
    resumes(&w, &s);
}

#[test]
fn starttls_launchers_as_shipped() {
    let socket = shipped("scripts/systemd/pop3-starttls.socket");
    assert_eq!(unit_value(&socket, "ListenStream"), Some("110"));
    assert_eq!(unit_value(&socket, "Accept"), Some("yes"));
    assert_eq!(unit_value(&socket, "Conflicts"), Some("pop3.socket"));
    let plain = shipped("scripts/systemd/pop3.socket");
    for k in ["MaxConnections", "MaxConnectionsPerSource"] {
        assert_eq!(unit_value(&socket, k), unit_value(&plain, k), "{k}");
    }
    let cmd = exec_start(&shipped("scripts/systemd/pop3-starttls@.service"));
    assert!(
        cmd.starts_with("/usr/local/bin/pop-tls --starttls "),
        "{cmd}"
    );
    let test = "starttls_launchers_as_shipped";
    let Some(w) = World::new() else { return };
    if let Some(s) = under_socket_activate(&w, "scripts/systemd/pop3-starttls@.service") {
        starttls_session(&w, &s, test);
    }
    drop(w);
    let Some(w) = World::new() else { return };
    if let Some(s) = run_file(&w, "scripts/daemontools/run-pop3-starttls", 110) {
        starttls_session(&w, &s, test);
    }
    drop(w);
    let Some(w) = World::new() else { return };
    if let Some(s) = xinetd_file(&w, "scripts/inetd/xinetd.pop3-starttls") {
        starttls_session(&w, &s, test);
    }
    drop(w);
    let Some(w) = World::new() else { return };
    if let Some(s) = inetd_line(&w, "#pop3") {
        starttls_session(&w, &s, test);
    }
}

/// Every tcpserver command line shipped or documented for pop-tls gives -D (TCP_NODELAY):
/// without it Nagle and delayed ACKs make a TLS session take about 100 ms.
#[test]
fn every_tcpserver_example_uses_nodelay() {
    // Options of tcpserver that take an argument.
    const WITH_ARG: &[&str] = &["-l", "-c", "-b", "-x", "-B", "-g", "-u", "-t", "-C", "-i"];
    let mut files = vec![
        "README.md".to_string(),
        "doc/pop-tls.8".to_string(),
        "scripts/demo".to_string(),
    ];
    for e in fs::read_dir(repo().join("scripts/daemontools"))
        .unwrap()
        .flatten()
    {
        files.push(format!(
            "scripts/daemontools/{}",
            e.file_name().to_string_lossy()
        ));
    }
    let mut seen = 0;
    for f in &files {
        for line in shipped(f).lines() {
            for (at, _) in line.match_indices("tcpserver -") {
                let words: Vec<&str> = line[at..].split_whitespace().skip(1).collect();
                let mut i = 0;
                let mut nodelay = false;
                while i < words.len() && words[i].starts_with('-') {
                    let w = words[i].trim_matches('`');
                    nodelay |= w.starts_with('-') && !w.starts_with("--") && w.contains('D');
                    i += if WITH_ARG.contains(&w) { 2 } else { 1 };
                }
                assert!(nodelay, "{f}: {line}");
                seen += 1;
            }
        }
    }
    assert!(seen >= 4, "{seen} tcpserver command lines checked");
}
