//! Real POP3 clients over implicit TLS through the whole chain on loopback:
//! `tcpserver -D ... pop-tls --cert --key pop-popup HOST pop-checkpassword --passwd-file ...
//! pop-serve`, every client verifying the server against a CA made in the test (fetchmail
//! `--ssl --sslcertck`, mpop `--tls=on`, getmail6's SSL retriever, `openssl s_client`),
//! clients that do not trust the CA, the chain behind Debian's tlswrapper, pop-tls in front of
//! a checkpassword that is not ours (Debian's checkpw), and bad input through the chain.
//! Issue 11.

use popspool_tests::gen::{self, Message};
use popspool_tests::tlsca::Pki;
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret";

/// tcpserver on a free loopback port running `argv`, stderr to a log file; killed on drop.
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
    fn start(test: &str, argv: &[String], dir: &Path) -> Option<Server> {
        let Some(exe) = which("tcpserver") else {
            skip(test, "tcpserver not installed (Debian package ucspi-tcp)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("server-{port}.log"));
        let child = Command::new(exe)
            .args(["-D", "-q", "-R", "-H", "-l", "localhost", "127.0.0.1"])
            .arg(port.to_string())
            .args(argv)
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

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Prints what each session negotiated (pop-tls's `tls` lines): clients' defaults differ.
    fn report(&self, client: &str) {
        for l in self.log().lines().filter(|l| l.contains(" tls TLSv")) {
            eprintln!("{client}: {l}");
        }
    }

    /// Waits until `n` sessions have written pop-tls's summary line (the chain's last word).
    fn wait_ends(&self, n: usize) {
        self.wait_for("end: in=", n);
    }

    /// Waits until `marker` is in the log `n` times.
    fn wait_for(&self, marker: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches(marker).count() < n {
            assert!(Instant::now() < deadline, "no end line: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// pop-tls with the test certificate, logging to stderr; as root the network process becomes
/// nobody (the default TLS user exists only where scripts/install made it).
fn pop_tls(cert: &Path, key: &Path) -> Vec<String> {
    let mut v = vec![bin("pop-tls").display().to_string()];
    v.extend(["--log", "stderr", "--handshake-timeout", "5"].map(String::from));
    if is_root() {
        v.extend(["--user", "nobody"].map(String::from));
    }
    v.extend(["--cert".into(), cert.display().to_string()]);
    v.extend(["--key".into(), key.display().to_string()]);
    v
}

fn pop_popup() -> Vec<String> {
    let mut v = vec![bin("pop-popup").display().to_string()];
    v.extend(["--log", "stderr", "--fail-delay-ms", "10", "localhost"].map(String::from));
    v
}

/// The scratch world: a CA, a certificate for localhost, the demo user in a passwd-file
/// (nobody as root, else the invoking user) and its mbox in a hashed spool.
struct World {
    pki: Pki,
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
    cert: PathBuf,
    key: PathBuf,
    msgs: Vec<Message>,
}

impl World {
    fn new(msgs: Vec<Message>) -> Option<World> {
        let pki = Pki::new()?;
        let (uid, gid) = if is_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(d.join("spool/d")).unwrap();
        fs::create_dir_all(d.join("home/demo")).unwrap();
        let (cert, key) = pki.leaf("localhost", "p256");
        let w = World {
            pki,
            dir,
            uid,
            gid,
            cert,
            key,
            msgs,
        };
        fs::write(w.mbox(), gen::mbox_bytes(&w.msgs)).unwrap();
        fs::set_permissions(w.mbox(), fs::Permissions::from_mode(0o600)).unwrap();
        for p in [d.join("spool/d"), d.join("home/demo"), w.mbox()] {
            w.chown(&p);
        }
        fs::write(
            d.join("users"),
            format!(
                "demo:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}/home/demo::\n",
                d.display()
            ),
        )
        .unwrap();
        Some(w)
    }

    fn chown(&self, p: &Path) {
        if is_root() {
            std::os::unix::fs::chown(p, Some(self.uid), Some(self.gid)).unwrap();
        }
    }

    fn mbox(&self) -> PathBuf {
        self.dir.path().join("spool/d/demo")
    }

    fn ca(&self) -> PathBuf {
        self.pki.ca()
    }

    /// pop-popup, pop-checkpassword and pop-serve: what runs after the TLS front.
    fn login_chain(&self) -> Vec<String> {
        let d = self.dir.path();
        let mut v = pop_popup();
        v.push(bin("pop-checkpassword").display().to_string());
        v.extend(
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
        v.push(d.join("users").display().to_string());
        v.push(bin("pop-serve").display().to_string());
        v.extend(["--log", "stderr", "--no-dotlock-helper", "--spool-dir"].map(String::from));
        v.push(d.join("spool").display().to_string());
        v
    }

    /// The whole chain behind pop-tls under tcpserver.
    fn serve(&self, test: &str) -> Option<Server> {
        let mut argv = pop_tls(&self.cert, &self.key);
        argv.extend(self.login_chain());
        Server::start(test, &argv, self.dir.path())
    }

    /// Appends messages as an MTA would, through pop-deliver.
    fn deliver(&self, msgs: &[Message]) {
        for m in msgs {
            let mut child = Command::new(bin("pop-deliver"))
                .args(["--log", "none", "--no-dotlock-helper", "--mailbox"])
                .arg(format!("mbox:{}", self.mbox().display()))
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            let stored = m.stored();
            // pop-deliver writes its own From_ line.
            let body = &stored[stored.iter().position(|&b| b == b'\n').unwrap() + 1..];
            let body = body.strip_suffix(b"\n").unwrap_or(body);
            child.stdin.take().unwrap().write_all(body).unwrap();
            assert!(child.wait().unwrap().success());
        }
        self.chown(&self.mbox());
    }
}

/// Waits for a child with a deadline; a child still running then is killed (its status says
/// so), so that a hang fails the caller's assertions, with the server's log, instead of
/// blocking.
fn wait_output(mut c: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    c.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn count_messages(p: &Path) -> usize {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_default())
        .matches("Message-ID: <")
        .count()
}

/// `openssl s_client` verifying against `ca` (errors fatal, name checked), fed `lines` one by
/// one with a pause between them so that each reaches the program meant to read it.
/// `-quiet` implies `-ign_eof`: the client ends when the server closes, after QUIT.
fn s_client(port: u16, ca: &Path, lines: &[&str]) -> Output {
    s_client_with(port, ca, &[], lines)
}

fn s_client_with(port: u16, ca: &Path, extra: &[&str], lines: &[&str]) -> Output {
    let mut c = Command::new("openssl")
        .args(["s_client", "-quiet", "-crlf", "-verify_return_error"])
        .args(extra)
        .args(["-verify_hostname", "localhost", "-servername", "localhost"])
        .arg("-CAfile")
        .arg(ca)
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let writer = std::thread::spawn(move || {
        for l in lines {
            std::thread::sleep(Duration::from_millis(400));
            if stdin.write_all(format!("{l}\n").as_bytes()).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(800));
    });
    let out = wait_output(c, Duration::from_secs(20));
    writer.join().unwrap();
    out
}

/// A run-control file without TLS settings: those come from the command line (`--ssl
/// --sslcertck --sslcertfile CA` or `--sslcertpath DIR`).
fn fetchmail_rc(w: &World, port: u16) -> PathBuf {
    let d = w.dir.path();
    let rc = d.join("fetchmailrc");
    let out = d.join("fetched");
    fs::write(
        &rc,
        format!(
            "set no syslog\npoll localhost service {port} protocol pop3 auth password uidl\n  \
             user demo password \"{PASSWORD}\" is root here\n  \
             mda \"/bin/sh -c 'cat >> {o}; echo >> {o}'\"\n",
            o = out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&rc, fs::Permissions::from_mode(0o600)).unwrap();
    rc
}

/// fetchmail with implicit TLS and certificate checking on, trusting `trust` (`--sslcertfile
/// FILE` or `--sslcertpath DIR`).
fn fetchmail(w: &World, rc: &Path, trust: &[&str], extra: &[&str]) -> Output {
    let d = w.dir.path();
    let c = Command::new(which("fetchmail").unwrap())
        .arg("-f")
        .arg(rc)
        .arg("--idfile")
        .arg(d.join("fetchids"))
        .arg("--pidfile")
        .arg(d.join("fetchmail.pid"))
        .args(["--ssl", "--sslcertck"])
        .args(trust)
        .args(extra)
        .env("HOME", d)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(c, Duration::from_secs(60))
}

#[test]
fn fetchmail_ssl_with_certificate_check() {
    let test = "fetchmail_ssl_with_certificate_check";
    if which("fetchmail").is_none() {
        skip(test, "fetchmail not installed");
        return;
    }
    let Some(w) = World::new(gen::varied_rfc5322(41, 4)) else {
        return;
    };
    let Some(srv) = w.serve(test) else { return };
    let d = w.dir.path();
    let out = d.join("fetched");
    let ca = w.ca().display().to_string();
    let rc = fetchmail_rc(&w, srv.port);
    let certs = d.join("certs");
    let run = |extra: &[&str]| {
        // The last run trusts the CA as a hashed certificate directory.
        let trust = if extra.contains(&"--nokeep") {
            ["--sslcertpath", certs.to_str().unwrap()]
        } else {
            ["--sslcertfile", ca.as_str()]
        };
        let o = fetchmail(&w, &rc, &trust, extra);
        // fetchmail exits 1 when there was no new mail.
        let code = o.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "fetchmail {code}: {}\n{}",
            text(&o),
            srv.log()
        );
        code
    };
    assert_eq!(run(&["--keep"]), 0);
    assert_eq!(count_messages(&out), 4, "first run fetches everything");
    assert_eq!(run(&["--keep"]), 1, "second run: nothing new (UIDL)");
    assert_eq!(count_messages(&out), 4);
    w.deliver(&[Message::simple(700), Message::simple(701)]);
    assert_eq!(run(&["--keep"]), 0);
    assert_eq!(count_messages(&out), 6, "only the new mail is fetched");
    // The same trust as a hashed certificate directory (--sslcertpath).
    fs::create_dir(&certs).unwrap();
    fs::copy(w.ca(), certs.join("ca.pem")).unwrap();
    let rehash = Command::new("openssl")
        .args(["rehash"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(rehash.status.success(), "{}", text(&rehash));
    assert_eq!(run(&["--nokeep", "--all"]), 0);
    assert_eq!(
        count_messages(&out),
        12,
        "everything once more, then deleted"
    );
    assert_eq!(fs::metadata(w.mbox()).unwrap().len(), 0);
    srv.wait_ends(4);
    assert!(srv.log().contains("tls TLSv1.3"), "{}", srv.log());
    srv.report("fetchmail");
}

#[test]
fn mpop_implicit_tls_tracks_uidls() {
    let test = "mpop_implicit_tls_tracks_uidls";
    let Some(mpop) = which("mpop") else {
        skip(test, "mpop not installed");
        return;
    };
    let Some(w) = World::new(gen::varied_rfc5322(42, 3)) else {
        return;
    };
    let Some(srv) = w.serve(test) else { return };
    let d = w.dir.path();
    let out = d.join("mpop.mbox");
    fs::write(&out, b"").unwrap();
    let run = |trust: &Path| {
        let c = Command::new(&mpop)
            .args([
                "--host=localhost",
                "--tls=on",
                "--tls-starttls=off",
                "--auth=user",
                "--user=demo",
                "--keep=on",
                "--quiet",
            ])
            .arg(format!("--port={}", srv.port))
            .arg(format!("--tls-trust-file={}", trust.display()))
            .arg(format!("--passwordeval=echo '{PASSWORD}'"))
            .arg(format!("--uidls-file={}", d.join("uidls").display()))
            .arg(format!("--delivery=mbox,{}", out.display()))
            .env("HOME", d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(c, Duration::from_secs(60))
    };
    let ok = |trust: &Path| {
        let o = run(trust);
        assert!(o.status.success(), "mpop: {}\n{}", text(&o), srv.log());
    };
    ok(&w.ca());
    assert_eq!(count_messages(&out), 3);
    ok(&w.ca());
    assert_eq!(count_messages(&out), 3, "nothing fetched twice");
    w.deliver(&[Message::simple(800)]);
    ok(&w.ca());
    assert_eq!(count_messages(&out), 4, "only the new message");
    srv.report("mpop");
    // Trusting another CA: mpop refuses the server before sending the password.
    let other = Pki::new().unwrap();
    let o = run(&other.ca());
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(count_messages(&out), 4);
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
}

#[test]
fn getmail6_ssl_retriever_with_ca_certs() {
    let test = "getmail6_ssl_retriever_with_ca_certs";
    let Some(getmail) = which("getmail") else {
        skip(
            test,
            "getmail not installed (Debian package getmail6, or pip install getmail6)",
        );
        return;
    };
    let Some(w) = World::new(gen::varied_rfc5322(43, 5)) else {
        return;
    };
    let Some(srv) = w.serve(test) else { return };
    let d = w.dir.path();
    let gm = d.join("getmail");
    fs::create_dir(&gm).unwrap();
    let out = d.join("getmail.mbox");
    fs::write(&out, b"").unwrap();
    // getmail refuses to deliver as root: as root the mbox belongs to nobody, who writes it.
    w.chown(&out);
    let deliver_as = if is_root() { "user = nobody\n" } else { "" };
    let rc = |ca: &Path| {
        let p = gm.join("getmailrc");
        fs::write(
            &p,
            format!(
                "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = localhost\nport = {}\n\
                 username = demo\npassword = {PASSWORD}\nca_certs = {}\n\n\
                 [destination]\ntype = Mboxrd\npath = {}\n{deliver_as}\n\
                 [options]\nread_all = false\ndelete = false\nverbose = 0\n",
                srv.port,
                ca.display(),
                out.display()
            ),
        )
        .unwrap();
    };
    let run = |extra: &[&str]| {
        let c = Command::new(&getmail)
            .arg(format!("--getmaildir={}", gm.display()))
            .arg("--rcfile=getmailrc")
            .args(extra)
            .env("HOME", d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(c, Duration::from_secs(60))
    };
    rc(&w.ca());
    let o = run(&[]);
    assert!(o.status.success(), "getmail: {}\n{}", text(&o), srv.log());
    assert_eq!(count_messages(&out), 5, "{}", text(&o));
    let o = run(&[]);
    assert!(o.status.success(), "getmail: {}", text(&o));
    assert_eq!(count_messages(&out), 5, "only new mail by default (UIDL)");
    let o = run(&["--all", "--delete"]);
    assert!(o.status.success(), "getmail: {}", text(&o));
    assert_eq!(count_messages(&out), 10);
    assert_eq!(fs::metadata(w.mbox()).unwrap().len(), 0, "{}", srv.log());
    srv.report("getmail6");
    // With another CA's certificates getmail refuses the server.
    let other = Pki::new().unwrap();
    rc(&other.ca());
    w.deliver(&[Message::simple(900)]);
    let o = run(&[]);
    assert_eq!(count_messages(&out), 10, "{}", text(&o));
    assert!(
        text(&o).contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        text(&o)
    );
}

#[test]
fn openssl_s_client_user_pass_stat_quit() {
    let test = "openssl_s_client_user_pass_stat_quit";
    let Some(w) = World::new(gen::varied_rfc5322(44, 3)) else {
        return;
    };
    let Some(srv) = w.serve(test) else { return };
    let total: usize = w.msgs.iter().map(|m| m.canonical().len()).sum();
    let o = s_client(
        srv.port,
        &w.ca(),
        &[
            "USER demo",
            &format!("PASS {PASSWORD}"),
            "STAT",
            "RETR 1",
            "QUIT",
        ],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}\n{}", srv.log());
    assert!(t.contains("verify return:1"), "{t}");
    assert!(t.contains(&format!("+OK 3 {total}\r\n")), "{t}");
    let first = String::from_utf8_lossy(&w.msgs[0].canonical()).into_owned();
    let first_line = first.lines().next().unwrap();
    assert!(t.contains(first_line), "{t}");
    srv.wait_ends(1);
    assert!(srv.log().contains("tls TLSv1.3"), "{}", srv.log());
    // TLS 1.2 as well.
    let o = s_client_with(srv.port, &w.ca(), &["-tls1_2"], &["QUIT"]);
    assert!(o.status.success(), "{}", text(&o));
    // pop-popup's greeting, then its answer to QUIT.
    assert!(text(&o).contains("@localhost>\r\n+OK\r\n"), "{}", text(&o));
    srv.wait_ends(2);
    assert!(
        srv.log().contains("tls TLSv1.2 ECDHE-ECDSA-"),
        "{}",
        srv.log()
    );
}

#[test]
fn clients_that_do_not_trust_the_ca_fail_the_handshake() {
    let test = "clients_that_do_not_trust_the_ca_fail_the_handshake";
    let Some(w) = World::new(gen::varied_rfc5322(45, 2)) else {
        return;
    };
    let Some(srv) = w.serve(test) else { return };
    let before = fs::read(w.mbox()).unwrap();
    let other = Pki::new().unwrap();
    let mut tried = Vec::new();
    // openssl s_client with another CA: verification error, nothing but the handshake.
    let o = s_client(srv.port, &other.ca(), &["USER demo", "QUIT"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(!t.contains("+OK"), "{t}");
    assert!(t.contains("verify error"), "{t}");
    tried.push("openssl s_client");
    // curl with the system's trust store, and with another CA.
    if let Some(curl) = which("curl") {
        for ca in [None, Some(other.ca())] {
            let mut c = Command::new(&curl);
            c.args(["-sS", "--max-time", "20"]);
            if let Some(ca) = &ca {
                c.arg("--cacert").arg(ca);
            }
            let o = c
                .arg(format!("pop3s://demo:{PASSWORD}@localhost:{}/1", srv.port))
                .output()
                .unwrap();
            assert!(!o.status.success(), "{}", text(&o));
            // 60: peer certificate cannot be authenticated with given CA certificates.
            assert_eq!(o.status.code(), Some(60), "{}", text(&o));
            assert!(o.stdout.is_empty());
        }
        tried.push("curl");
    } else {
        skip(test, "curl part: curl not installed");
    }
    if which("fetchmail").is_some() {
        let rc = fetchmail_rc(&w, srv.port);
        let other_ca = other.ca().display().to_string();
        let o = fetchmail(&w, &rc, &["--sslcertfile", &other_ca], &["--keep"]);
        // 2: an error opening a connection to the server (the failed verification).
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).to_lowercase().contains("certificate"),
            "{}",
            text(&o)
        );
        assert_eq!(count_messages(&w.dir.path().join("fetched")), 0);
        tried.push("fetchmail");
    } else {
        skip(test, "fetchmail part: fetchmail not installed");
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = srv.log();
    assert!(!log.contains("login"), "nobody logged in: {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(fs::read(w.mbox()).unwrap(), before);
    eprintln!("untrusting clients refused: {}", tried.join(", "));
}

#[test]
fn pop_popup_behind_tlswrapper() {
    let test = "pop_popup_behind_tlswrapper";
    let Some(tlswrapper) = which("tlswrapper") else {
        skip(test, "tlswrapper not installed (Debian package tlswrapper)");
        return;
    };
    let Some(curl) = which("curl") else {
        skip(test, "curl not installed");
        return;
    };
    if !is_root() {
        skip(
            test,
            "needs root (tlswrapper chroots its jail; pop-popup starts as root)",
        );
        return;
    }
    let Some(w) = World::new(gen::varied_rfc5322(46, 3)) else {
        return;
    };
    // tlswrapper -d DIR: DIR/<SNI name> holds the key and the chain in one PEM file.
    // tlswrapper turns a dot after a slash into a colon: no hidden temporary directory.
    let certs_dir = tempfile::Builder::new()
        .prefix("tlswrapper-certs")
        .tempdir()
        .unwrap();
    let certs = certs_dir.path().to_path_buf();
    let mut pem = fs::read(&w.key).unwrap();
    pem.extend(fs::read(&w.cert).unwrap());
    fs::write(certs.join("localhost"), pem).unwrap();
    fs::set_permissions(certs.join("localhost"), fs::Permissions::from_mode(0o600)).unwrap();
    let mut argv = vec![tlswrapper.display().to_string()];
    argv.extend(["-v", "-j", "nobody", "-d"].map(String::from));
    argv.push(certs.display().to_string());
    argv.extend(w.login_chain());
    let Some(srv) = Server::start(test, &argv, w.dir.path()) else {
        return;
    };
    for (i, m) in w.msgs.iter().enumerate() {
        let o = Command::new(&curl)
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(w.ca())
            .arg(format!(
                "pop3s://demo:{PASSWORD}@localhost:{}/{}",
                srv.port,
                i + 1
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "curl: {}\n{}", text(&o), srv.log());
        assert_eq!(o.stdout, m.canonical(), "message {}", i + 1);
    }
    // DELE through curl's custom request (-I: a one-line answer), committed at its QUIT.
    let o = Command::new(&curl)
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(w.ca())
        .args(["-I", "-X", "DELE 1"])
        .arg(format!("pop3s://demo:{PASSWORD}@localhost:{}/", srv.port))
        .output()
        .unwrap();
    assert!(o.status.success(), "curl: {}\n{}", text(&o), srv.log());
    // pop-serve's summary lines: the fourth session is over.
    srv.wait_for(" end=quit", 4);
    assert_eq!(
        fs::read(w.mbox()).unwrap(),
        gen::mbox_bytes(&w.msgs[1..]),
        "{}",
        srv.log()
    );
    // tlswrapper speaks TLS 1.2 only (BearSSL) and prefers ChaCha20 by default.
    assert!(
        srv.log()
            .contains("SSL connection: TLS 1.2, ECDSA + ECDHE + ChaCha20"),
        "{}",
        srv.log()
    );
    // Untrusting curl fails here too.
    let o = Command::new(&curl)
        .args(["-sS", "--max-time", "20"])
        .arg(format!("pop3s://demo:{PASSWORD}@localhost:{}/1", srv.port))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(60), "{}", text(&o));
    // curl logs in with AUTH PLAIN (pop-popup offers SASL PLAIN); USER/PASS by hand too.
    assert!(srv.log().contains("mech=PLAIN result=ok"), "{}", srv.log());
    let o = s_client(
        srv.port,
        &w.ca(),
        &["USER demo", &format!("PASS {PASSWORD}"), "RETR 1", "QUIT"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}\n{}", srv.log());
    let second = String::from_utf8_lossy(&w.msgs[1].canonical()).into_owned();
    assert!(t.contains(second.lines().next().unwrap()), "{t}");
    assert!(t.contains("+OK popspool signing off"), "{t}");
    assert!(srv.log().contains("mech=USER result=ok"), "{}", srv.log());
}

/// A throwaway system account for checkpw, which looks users up in the system's passwd.
struct TempUser {
    name: String,
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn pop_tls_in_front_of_a_foreign_checkpassword() {
    // Debian's checkpw (a checkpassword that checks ~/Maildir/.password) between our
    // pop-popup and pop-serve, which serves ./Maildir/ as qmail-pop3d would.
    let test = "pop_tls_in_front_of_a_foreign_checkpassword";
    let Some(checkpw) = which("checkpw") else {
        skip(test, "checkpw not installed (Debian package checkpw)");
        return;
    };
    if !is_root() {
        skip(test, "needs root (a throwaway account for checkpw)");
        return;
    }
    let Some(curl) = which("curl") else {
        skip(test, "curl not installed");
        return;
    };
    let Some(w) = World::new(Vec::new()) else {
        return;
    };
    let name = format!("ptls{}", std::process::id() % 100_000);
    let home = w.dir.path().join(format!("home-{name}"));
    let st = Command::new("useradd")
        .args(["-M", "-U", "-s", "/usr/sbin/nologin", "-d"])
        .arg(&home)
        .arg(&name)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    if !st.success() {
        skip(test, "useradd failed");
        return;
    }
    let user = TempUser { name };
    let u = nix::unistd::User::from_name(&user.name).unwrap().unwrap();
    let md = home.join("Maildir");
    let msgs: Vec<Message> = (1..=3).map(Message::simple).collect();
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        // A Maildir file is the message with LF line ends.
        let lf: Vec<u8> = m.canonical().into_iter().filter(|&b| b != b'\r').collect();
        fs::write(md.join(format!("new/100{i}.M1P1.test")), lf).unwrap();
    }
    fs::write(md.join(".password"), format!("{PASSWORD}\n")).unwrap();
    fs::set_permissions(md.join(".password"), fs::Permissions::from_mode(0o600)).unwrap();
    let ids = Some(u.uid.as_raw());
    let gid = Some(u.gid.as_raw());
    for e in walk(&home) {
        std::os::unix::fs::chown(&e, ids, gid).unwrap();
    }
    let mut argv = pop_tls(&w.cert, &w.key);
    argv.extend(pop_popup());
    argv.push(checkpw.display().to_string());
    argv.push(bin("pop-serve").display().to_string());
    argv.extend(["--log", "stderr", "--no-dotlock-helper", "./Maildir/"].map(String::from));
    let Some(srv) = Server::start(test, &argv, w.dir.path()) else {
        return;
    };
    let url = |pass: &str, path: &str| {
        format!("pop3s://{}:{pass}@localhost:{}/{path}", user.name, srv.port)
    };
    let mut got = Vec::new();
    for i in 1..=msgs.len() {
        let o = Command::new(&curl)
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(w.ca())
            .arg(url(PASSWORD, &i.to_string()))
            .output()
            .unwrap();
        assert!(o.status.success(), "curl: {}\n{}", text(&o), srv.log());
        got.push(o.stdout);
    }
    // Maildir order is not delivery order: every message came, each once.
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| m.canonical()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // A wrong password: checkpw exits 1 and pop-popup says so.
    let o = Command::new(&curl)
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(w.ca())
        .arg(url("wrong", "1"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(67), "login denied: {}", text(&o));
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = vec![p.to_path_buf()];
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap().flatten() {
            v.extend(walk(&e.path()));
        }
    }
    v
}

/// Sends `bytes` on a raw connection and reads until the server closes; fails after 10 s.
fn poke(port: u16, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
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
fn bad_input_through_the_chain() {
    let test = "bad_input_through_the_chain";
    let Some(w) = World::new(gen::varied_rfc5322(48, 3)) else {
        return;
    };
    let Some(srv) = w.serve(test) else { return };
    let before = fs::read(w.mbox()).unwrap();
    let has_ok = |b: &[u8]| b.windows(3).any(|w| w == b"+OK");
    // Plaintext POP3 to the TLS port: an alert at most, never a greeting, quickly.
    let (got, t) = poke(srv.port, b"USER x\r\n");
    assert!(!has_ok(&got), "{got:?}");
    assert!(t < Duration::from_secs(3), "{t:?}");
    let (got, _) = poke(
        srv.port,
        format!("USER demo\r\nPASS {PASSWORD}\r\nDELE 1\r\nQUIT\r\n").as_bytes(),
    );
    assert!(!has_ok(&got), "{got:?}");
    // Garbage: a bogus handshake record, records longer than TLS allows (2^14 + 2048), with
    // and without their bytes, an unknown content type, zeros.
    let mut oversized = b"\x16\x03\x01\x48\x01".to_vec();
    oversized.extend(vec![0x41; 0x4801]);
    let mut junk: Vec<Vec<u8>> = vec![
        b"\x16\x03\x01\x00\x05hello".to_vec(),
        b"\x16\x03\x03\xff\xff".to_vec(),
        b"\x17\x03\x03\xff\xff\x00\x00\x00\x00".to_vec(),
        oversized,
        b"\x99\x03\x03\x00\x01\x00".to_vec(),
        vec![0u8; 4096],
    ];
    let mut rng = gen::Rng::new(5);
    junk.push((0..100_000).map(|_| rng.next_u64() as u8).collect());
    for j in &junk {
        let (got, t) = poke(srv.port, j);
        assert!(!has_ok(&got), "{:?}", &j[..8.min(j.len())]);
        assert!(t < Duration::from_secs(3), "{:?} {t:?}", &j[..8]);
    }
    // Garbage inside an established session: after login and DELE 1, raw bytes on the socket
    // where a TLS record should be. The session ends, and nothing is committed.
    let script = r#"
import socket, ssl, sys
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
s = socket.socket(fileno=t.fileno())
s.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32 + b"QUIT\r\n")
s.detach()
try:
    rest = t.recv(4096)
except (ssl.SSLError, OSError) as e:
    rest = b""
print("after garbage", rest)
"#;
    let Some(py) = which("python3") else {
        skip(test, "python3 not installed: the in-session part");
        return;
    };
    let o = Command::new(py)
        .args(["-c", script, &srv.port.to_string()])
        .arg(w.ca())
        .arg(PASSWORD)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), srv.log());
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("+OK"),
        "{}",
        text(&o)
    );
    srv.wait_ends(1);
    std::thread::sleep(Duration::from_millis(300));
    let log = srv.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(fs::read(w.mbox()).unwrap(), before, "{log}");
}

#[test]
fn a_client_closing_mid_retr_of_a_large_message_commits_nothing() {
    // openssl s_client logs in, deletes message 1, starts RETR of a 20 MB message 2 and is
    // killed after the first part arrives: the kernel closes its socket. pop-serve sees its
    // output pipe end; the mailbox is unchanged and the next session sees every message.
    let test = "a_client_closing_mid_retr_of_a_large_message_commits_nothing";
    let mut big = Message::simple(2);
    big.body = Some(
        (0..330_000)
            .map(|i| format!("{i:059}").into_bytes())
            .collect(),
    );
    let msgs = vec![Message::simple(1), big, Message::simple(3)];
    let Some(w) = World::new(msgs) else { return };
    let Some(srv) = w.serve(test) else { return };
    let before = fs::read(w.mbox()).unwrap();
    let mut c = Command::new("openssl")
        .args(["s_client", "-quiet", "-crlf", "-verify_return_error"])
        .arg("-CAfile")
        .arg(w.ca())
        .args(["-connect", &format!("127.0.0.1:{}", srv.port)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let mut stdout = c.stdout.take().unwrap();
    for l in ["USER demo", &format!("PASS {PASSWORD}"), "DELE 1", "RETR 2"] {
        std::thread::sleep(Duration::from_millis(400));
        stdin.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    let mut got = Vec::new();
    let mut b = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 1 << 20 {
        assert!(Instant::now() < deadline, "{}", srv.log());
        let n = stdout.read(&mut b).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(
        String::from_utf8_lossy(&got[..200]).contains("+OK"),
        "{:?}",
        String::from_utf8_lossy(&got[..200])
    );
    srv.wait_ends(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read(w.mbox()).unwrap(), before, "{}", srv.log());
    // pop-serve saw the end of its output and did not commit the DELE.
    let log = srv.log();
    assert!(log.contains("deleted=0 "), "{log}");
    assert!(!log.contains("end=quit"), "{log}");
    assert!(log.contains("client gone"), "{log}");
    // The next session sees all three messages.
    let o = s_client(
        srv.port,
        &w.ca(),
        &["USER demo", &format!("PASS {PASSWORD}"), "STAT", "QUIT"],
    );
    let total: usize = w.msgs.iter().map(|m| m.canonical().len()).sum();
    assert!(
        text(&o).contains(&format!("+OK 3 {total}\r\n")),
        "{}\n{}",
        text(&o),
        srv.log()
    );
}
