//! Virtual servers through the real chain: two `tcpserver -D` launchers bound to 127.0.0.2
//! and 127.0.0.3 run pop-popup, pop-checkpassword `--source vhost` and pop-serve; each address
//! has its own passwd-file with a user `bob`. Each bob logs in only through his own address
//! and reads only his own mailbox; a user of one server is unknown on the other; the logs name
//! the server.

use popspool_tests::pop::Client;
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tcpserver -D` on `ip`:a free port running `chain`; waits for a greeting.
fn tcpserver(ip: &str, chain: &[String], log: &Path) -> (Server, u16) {
    let port = TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(which("tcpserver").unwrap())
        .args([
            "-q",
            "-D",
            "-R",
            "-H",
            "-l",
            "localhost",
            ip,
            &port.to_string(),
        ])
        .args(chain)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        ))
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect((ip, port)) {
            let mut b = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let n = s.read(&mut b).unwrap_or(0);
            if b[..n].starts_with(b"+OK") {
                return (server, port);
            }
        }
        assert!(
            Instant::now() < deadline,
            "tcpserver on {ip} did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn chown(p: &Path, id: u32) {
    let id = Some(id);
    nix::unistd::chown(
        p,
        id.map(nix::unistd::Uid::from_raw),
        id.map(nix::unistd::Gid::from_raw),
    )
    .unwrap();
}

/// Logs in as `user`/`pass` on ip:port; Some(first message) on success, None on -ERR.
fn fetch(ip: &str, port: u16, user: &str, pass: &str) -> Option<String> {
    let s = TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client::new(s.try_clone().unwrap(), s);
    assert!(c.line().starts_with("+OK"));
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {pass}"));
    if !r.starts_with("+OK") {
        return None;
    }
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    let body = String::from_utf8(c.body()).unwrap();
    c.cmd("QUIT");
    Some(body)
}

#[test]
fn two_addresses_two_namespaces() {
    if !is_root() {
        return skip(
            "two_addresses_two_namespaces",
            "needs root (users map to nobody)",
        );
    }
    if which("tcpserver").is_none() {
        return skip(
            "two_addresses_two_namespaces",
            "tcpserver not installed (ucspi-tcp)",
        );
    }
    let nobody = 65534;
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
    let vdir = w.join("vhosts");
    fs::create_dir(&vdir).unwrap();
    fs::write(
        vdir.join("127.0.0.2"),
        "bob:{PLAIN}pass-two\ncarol:{PLAIN}carol-pw\n",
    )
    .unwrap();
    fs::write(vdir.join("127.0.0.3"), "bob:{PLAIN}pass-three\n").unwrap();
    for (server, subject) in [
        ("127.0.0.2", "for-bob-on-two"),
        ("127.0.0.3", "for-bob-on-three"),
    ] {
        let home = w.join("home").join(server).join("bob");
        fs::create_dir_all(&home).unwrap();
        chown(&home, nobody);
        let spool = w.join("spool/b");
        fs::create_dir_all(&spool).unwrap();
        chown(&spool, nobody);
        let mbox = spool.join(format!("bob@{server}"));
        fs::write(
            &mbox,
            format!("From x@example Thu Jan  1 00:00:00 2026\nSubject: {subject}\n\nhello\n\n"),
        )
        .unwrap();
        chown(&mbox, nobody);
        fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let log = w.join("chain.log");
    let chain: Vec<String> = [
        bin("pop-popup").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--fail-delay-ms".into(),
        "10".into(),
        "popspool.test".into(),
        bin("pop-checkpassword").display().to_string(),
        "--source".into(),
        "vhost".into(),
        "--vhost-dir".into(),
        vdir.display().to_string(),
        "--virtual-uid".into(),
        nobody.to_string(),
        "--virtual-gid".into(),
        nobody.to_string(),
        "--virtual-home".into(),
        format!("{}/home/%v/%u", w.display()),
        "--min-uid".into(),
        "1".into(),
        "--log".into(),
        "stderr".into(),
        bin("pop-serve").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--no-dotlock-helper".into(),
        "--spool-dir".into(),
        w.join("spool").display().to_string(),
    ]
    .into();
    let (_two, p2) = tcpserver("127.0.0.2", &chain, &log);
    let (_three, p3) = tcpserver("127.0.0.3", &chain, &log);

    let got = fetch("127.0.0.2", p2, "bob", "pass-two").expect("bob on .2");
    assert!(got.contains("for-bob-on-two"), "{got}");
    let got = fetch("127.0.0.3", p3, "bob", "pass-three").expect("bob on .3");
    assert!(got.contains("for-bob-on-three"), "{got}");
    assert_eq!(
        fetch("127.0.0.3", p3, "bob", "pass-two"),
        None,
        ".2's password on .3"
    );
    assert_eq!(
        fetch("127.0.0.2", p2, "bob", "pass-three"),
        None,
        ".3's password on .2"
    );
    assert_eq!(
        fetch("127.0.0.3", p3, "carol", "carol-pw"),
        None,
        ".2's user on .3"
    );

    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("user=bob client=127.0.0.1 vhost=127.0.0.2 login ok"),
        "{text}"
    );
    assert!(
        text.contains("user=carol client=127.0.0.1 vhost=127.0.0.3 refused: unknown user"),
        "{text}"
    );
    // pop-serve names the qualified user.
    assert!(text.contains("bob@127.0.0.3"), "{text}");
}

#[test]
fn no_file_for_the_address_is_a_temporary_failure() {
    if !is_root() {
        return skip(
            "no_file_for_the_address_is_a_temporary_failure",
            "needs root",
        );
    }
    let d = tempfile::tempdir().unwrap();
    let vdir = d.path().join("vhosts");
    fs::create_dir(&vdir).unwrap();
    fs::write(vdir.join("127.0.0.2"), "bob:{PLAIN}pw\n").unwrap();
    std::os::unix::fs::symlink(vdir.join("127.0.0.2"), vdir.join("127.0.0.4")).unwrap();
    let run = |ip: &str, extra: &[&str]| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#"exec 3< <(printf 'bob\0pw\0\0'); exec "$@""#)
            .arg("bash")
            .arg(bin("pop-checkpassword"))
            .args(["--source", "vhost", "--vhost-dir"])
            .arg(&vdir)
            .args(["--virtual-uid", "65534", "--virtual-gid", "65534"])
            .args(["--virtual-home", "/nonexistent/%v/%u", "--log", "stderr"])
            .args(extra)
            .arg("/bin/true")
            .env("TCPLOCALIP", ip)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("127.0.0.9", &[]);
    assert_eq!(code, Some(111), "{err}");
    assert!(err.contains("no virtual server"), "{err}");
    let (code, err) = run("127.0.0.4", &[]);
    assert_eq!(code, Some(111), "{err}");
    assert!(err.contains("symlink"), "{err}");
    // The right server and password get as far as the home, which does not exist.
    let (code, err) = run("127.0.0.2", &[]);
    assert_eq!(code, Some(111), "{err}");
    assert!(err.contains("/nonexistent/127.0.0.2/bob"), "{err}");
    let (code, err) = Command::new(bin("pop-checkpassword"))
        .args([
            "--source",
            "vhost",
            "--vhost-dir",
            "/x",
            "--virtual-home",
            "/v/%u",
        ])
        .args(["--log", "stderr", "/bin/true"])
        .output()
        .map(|o| {
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("%v"), "{err}");
}

/// The same through pop-tls with two certificates by SNI: curl asks for a.test or b.test,
/// verifies the certificate against the test CA, and reaches that name's bob.
#[test]
fn two_tls_server_names_two_namespaces() {
    if !is_root() {
        return skip("two_tls_server_names_two_namespaces", "needs root");
    }
    if which("tcpserver").is_none() || which("curl").is_none() {
        return skip(
            "two_tls_server_names_two_namespaces",
            "tcpserver or curl missing",
        );
    }
    let Some(pki) = popspool_tests::tlsca::Pki::new() else {
        return;
    };
    let nobody = 65534;
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
    let certs = w.join("certs");
    fs::create_dir(&certs).unwrap();
    pki.combined(&certs, "a.test", "a.test", "p256");
    pki.combined(&certs, "b.test", "b.test", "p256");
    pki.combined(&certs, "default", "default.test", "p256");
    let vdir = w.join("vhosts");
    fs::create_dir(&vdir).unwrap();
    fs::write(vdir.join("a.test"), "bob:{PLAIN}pass-a\n").unwrap();
    fs::write(vdir.join("b.test"), "bob:{PLAIN}pass-b\n").unwrap();
    let spool = w.join("spool/b");
    fs::create_dir_all(&spool).unwrap();
    chown(&spool, nobody);
    for server in ["a.test", "b.test"] {
        let home = w.join("home").join(server).join("bob");
        fs::create_dir_all(&home).unwrap();
        chown(&home, nobody);
        let mbox = spool.join(format!("bob@{server}"));
        fs::write(
            &mbox,
            format!(
                "From x@example Thu Jan  1 00:00:00 2026\nSubject: for-bob-at-{server}\n\nhi\n\n"
            ),
        )
        .unwrap();
        chown(&mbox, nobody);
        fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let chain: Vec<String> = [
        bin("pop-tls").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--user".into(),
        "nobody".into(),
        "--cert-dir".into(),
        certs.display().to_string(),
        bin("pop-popup").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--fail-delay-ms".into(),
        "10".into(),
        "popspool.test".into(),
        bin("pop-checkpassword").display().to_string(),
        "--source".into(),
        "vhost".into(),
        "--vhost-dir".into(),
        vdir.display().to_string(),
        "--virtual-uid".into(),
        nobody.to_string(),
        "--virtual-gid".into(),
        nobody.to_string(),
        "--virtual-home".into(),
        format!("{}/home/%v/%u", w.display()),
        "--min-uid".into(),
        "1".into(),
        "--log".into(),
        "stderr".into(),
        bin("pop-serve").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--no-dotlock-helper".into(),
        "--spool-dir".into(),
        w.join("spool").display().to_string(),
    ]
    .into();
    let log = w.join("tls.log");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(which("tcpserver").unwrap())
            .args([
                "-q",
                "-D",
                "-R",
                "-H",
                "-l",
                "localhost",
                "127.0.0.1",
                &port.to_string(),
            ])
            .args(&chain)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let curl = |name: &str, pass: &str| -> (Option<i32>, String) {
        let mut last = (None, String::new());
        // The listener may still be coming up: retry a refused connection (curl exit 7).
        for _ in 0..100 {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "20", "--cacert"])
                .arg(pki.ca())
                .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
                .args(["-u", &format!("bob:{pass}")])
                .arg(format!("pop3s://{name}:{port}/1"))
                .output()
                .unwrap();
            last = (
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
            if out.status.code() != Some(7) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        last
    };
    let (code, out) = curl("a.test", "pass-a");
    assert_eq!(code, Some(0), "{out} {}", fs::read_to_string(&log).unwrap());
    assert!(out.contains("for-bob-at-a.test"), "{out}");
    let (code, out) = curl("b.test", "pass-b");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("for-bob-at-b.test"), "{out}");
    // a.test's password through b.test's name: refused (curl: login denied, 67).
    let (code, out) = curl("b.test", "pass-a");
    assert_eq!(code, Some(67), "{out}");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("vhost=a.test login ok"), "{text}");
    assert!(
        text.contains("vhost=b.test refused: wrong password"),
        "{text}"
    );
}
