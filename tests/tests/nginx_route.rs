//! pop-route, the routing service for nginx's mail proxy, and the token source of
//! pop-checkpassword (`--token-key`): over pipes with crafted `auth_http` requests, and with the
//! real nginx in front of three backend chains under `tcpserver -D`, using the configuration
//! in scripts/nginx/popspool-mail.conf verbatim (the one the README shows).

use popspool_tests::{bin, is_root, skip, which};
use spool_login::auth::token::Key;
use spool_route::backend;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "popspool test key: 32 bytes at least, kept root-only";

/// The ids the test accounts map to: nobody as root, else the invoking user.
fn ids() -> (u32, u32) {
    if is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }
}

fn chown(p: &Path) {
    if is_root() {
        let (u, g) = ids();
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(u)),
            Some(nix::unistd::Gid::from_raw(g)),
        )
        .unwrap();
    }
}

fn password(user: &str) -> String {
    format!("pw of {user}")
}

/// A scratch directory with the key, a passwd-file of `users` ({PLAIN} secrets, so APOP works)
/// and a home for each.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(users: &[String]) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let s = Scratch { dir };
        fs::write(s.key(), KEY).unwrap();
        fs::set_permissions(s.key(), fs::Permissions::from_mode(0o600)).unwrap();
        let (uid, gid) = ids();
        let mut lines = String::new();
        for u in users {
            let home = s.path("home").join(u);
            fs::create_dir_all(&home).unwrap();
            chown(&home);
            lines.push_str(&format!(
                "{u}:{{PLAIN}}{}:{uid}:{gid}::{}::\n",
                password(u),
                home.display()
            ));
        }
        fs::write(s.path("users"), lines).unwrap();
        s
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn key(&self) -> PathBuf {
        self.path("key")
    }
    /// pop-checkpassword's arguments for the test accounts, before PROG.
    fn checkpassword(&self, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            bin("pop-checkpassword").display().to_string(),
            "--source".into(),
            "passwd-file".into(),
            "--passwd-file".into(),
            self.path("users").display().to_string(),
            "--min-uid".into(),
            "1".into(),
            "--log".into(),
            "stderr".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

fn request(method: &str, user: &str, pass: &str, attempt: u32, extra: &str) -> String {
    let esc = |s: &str| s.replace('%', "%25").replace(' ', "%20");
    format!(
        "GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: {method}\r\nAuth-User: {}\r\n\
         Auth-Pass: {}\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: {attempt}\r\n\
         Client-IP: 192.0.2.7\r\n{extra}\r\n",
        esc(user),
        esc(pass)
    )
}

/// Runs pop-route over pipes on `input`; returns (exit code, answer, stderr).
fn route(s: &Scratch, args: &[&str], check: &[String], input: &[u8]) -> (i32, String, String) {
    let mut c = Command::new(bin("pop-route"));
    c.args(["--log", "stderr", "--token-key"])
        .arg(s.key())
        .args(args)
        .args(check)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    // Keep stdin open: pop-route must answer on the head alone, as nginx expects.
    let out = wait_output(child, Duration::from_secs(20));
    drop(stdin);
    out
}

fn wait_output(mut child: Child, limit: Duration) -> (i32, String, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut o = String::new();
            let mut e = String::new();
            child.stdout.take().unwrap().read_to_string(&mut o).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            return (st.code().unwrap_or(-1), o, e);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pop-route did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer
        .split("\r\n")
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn route_over_pipes() {
    let users: Vec<String> = vec!["alice".into(), "bob".into()];
    let s = Scratch::new(&users);
    let check = s.checkpassword(&["/bin/true"]);
    let backends: Vec<SocketAddr> = ["127.0.3.1:110", "127.0.3.2:110", "127.0.3.3:1110"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    fs::write(
        s.path("backends"),
        backends
            .iter()
            .map(|b| format!("{b}\n"))
            .collect::<String>(),
    )
    .unwrap();
    fs::write(s.path("map"), "# moved\nbob 127.0.9.9:1100\n").unwrap();
    let bfile = s.path("backends").display().to_string();
    let mfile = s.path("map").display().to_string();
    let args = ["--backends", &bfile, "--map", &mfile];

    // Good password: the hashed backend, and a token the backends' key accepts.
    let (code, out, err) = route(
        &s,
        &args,
        &check,
        request("plain", "alice", &password("alice"), 1, "").as_bytes(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(header(&out, "Auth-Status"), Some("OK"), "{out}\n{err}");
    let want = backend::rendezvous(&backends, b"alice").unwrap();
    assert_eq!(header(&out, "Auth-Server"), Some(&*want.ip().to_string()));
    assert_eq!(header(&out, "Auth-Port"), Some(&*want.port().to_string()));
    let tok = header(&out, "Auth-Pass").unwrap();
    let key = Key::load(&s.key()).unwrap();
    assert_eq!(
        key.verify(b"alice", tok.as_bytes(), spool_login::auth::token::now()),
        Ok(())
    );
    assert!(!err.contains("pw of"), "no password in logs: {err}");
    assert!(
        err.contains("pop-checkpassword") && err.contains("client=192.0.2.7 login ok"),
        "checkpassword logs nginx's Client-IP: {err}"
    );

    // A mapped user goes where the map says.
    let (_, out, _) = route(
        &s,
        &args,
        &check,
        request("plain", "bob", &password("bob"), 1, "").as_bytes(),
    );
    assert_eq!(header(&out, "Auth-Server"), Some("127.0.9.9"), "{out}");
    assert_eq!(header(&out, "Auth-Port"), Some("1100"));

    // APOP: the digest and the salt go to checkpassword, which has the plaintext secret.
    let salt = "<1234.5678@popspool.test>";
    let digest = spool_login::auth::apop::digest(salt.as_bytes(), password("alice").as_bytes());
    let (_, out, err) = route(
        &s,
        &args,
        &check,
        request(
            "apop",
            "alice",
            std::str::from_utf8(&digest).unwrap(),
            1,
            &format!("Auth-Salt: {salt}\r\n"),
        )
        .as_bytes(),
    );
    assert_eq!(header(&out, "Auth-Status"), Some("OK"), "{out}\n{err}");

    // Wrong passwords: refused with a growing Auth-Wait, then without (nginx closes).
    for (attempt, wait) in [(1, Some("1")), (2, Some("2")), (3, Some("4")), (5, None)] {
        let (code, out, _) = route(
            &s,
            &args,
            &check,
            request("plain", "alice", "wrong", attempt, "").as_bytes(),
        );
        assert_eq!(code, 0);
        assert_eq!(
            header(&out, "Auth-Status"),
            Some("Invalid login or password")
        );
        assert_eq!(header(&out, "Auth-Wait"), wait, "attempt {attempt}: {out}");
        assert_eq!(header(&out, "Auth-Pass"), None);
    }

    // Malformed, too long, too many headers, too slow: an HTTP error and exit 2.
    let (code, out, _) = route(&s, &args, &check, b"EHLO there\r\n\r\n");
    assert_eq!(code, 2);
    assert!(out.starts_with("HTTP/1.0 400 "), "{out}");
    let (code, out, _) = route(
        &s,
        &args,
        &check,
        b"GET /auth HTTP/1.0\r\nAuth-Method: plain\r\n\r\n",
    );
    assert_eq!(code, 2);
    assert!(out.starts_with("HTTP/1.0 400 "), "{out}");
    let mut long = request("plain", "alice", "x", 1, "").into_bytes();
    long.truncate(long.len() - 2);
    long.extend(
        format!(
            "X-Pad: {}\r\n\r\n",
            "p".repeat(spool_route::http::MAX_HEAD_BYTES)
        )
        .bytes(),
    );
    let (code, out, _) = route(&s, &args, &check, &long);
    assert_eq!(code, 2);
    assert!(out.starts_with("HTTP/1.0 431 "), "{out}");
    let mut slow_args = args.to_vec();
    slow_args.extend(["--read-timeout", "1"]);
    let t0 = Instant::now();
    let (code, out, _) = route(&s, &slow_args, &check, b"GET /auth HTTP/1.0\r\nAuth-");
    assert_eq!(code, 2);
    assert!(out.starts_with("HTTP/1.0 408 "), "{out}");
    assert!(t0.elapsed() >= Duration::from_secs(1));

    // A checkpassword temporary failure, and a key others can read: temporary errors.
    let failing = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        "exit 111".into(),
        "sh".into(),
    ];
    let (code, out, _) = route(
        &s,
        &args,
        &failing,
        request("plain", "alice", "x", 1, "").as_bytes(),
    );
    assert_eq!(code, 111);
    assert_eq!(
        header(&out, "Auth-Status"),
        Some("Temporary server problem, try again later")
    );
    assert_eq!(header(&out, "Auth-Wait"), Some("1"));
    fs::set_permissions(s.key(), fs::Permissions::from_mode(0o640)).unwrap();
    let (code, out, err) = route(
        &s,
        &args,
        &check,
        request("plain", "alice", &password("alice"), 1, "").as_bytes(),
    );
    assert_eq!(code, 111, "{out}");
    assert!(err.contains("lets group or others read it"), "{err}");
    fs::set_permissions(s.key(), fs::Permissions::from_mode(0o600)).unwrap();

    // Usage: no backends at all.
    let (code, _, _) = route(&s, &[], &check, b"");
    assert_eq!(code, 100);
}

/// Runs pop-checkpassword --token-key with `payload` on fd 3; returns its exit code and log.
fn check_token(s: &Scratch, key: &Path, payload: &[u8]) -> (i32, String) {
    let mut args = s.checkpassword(&["--token-key", &key.display().to_string()]);
    args.push("/bin/true".into());
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" 3<&0")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn checkpassword_token_source() {
    let users: Vec<String> = vec!["alice".into(), "bob".into()];
    let s = Scratch::new(&users);
    let key = Key::load(&s.key()).unwrap();
    let now = spool_login::auth::token::now();
    let creds = |user: &str, tok: &str| format!("{user}\0{tok}\0<1.2@x>\0").into_bytes();
    let cases = [
        ("valid", creds("alice", &key.issue(b"alice", now)), 0, ""),
        (
            "skewed within the window",
            creds("alice", &key.issue(b"alice", now + 30)),
            0,
            "",
        ),
        (
            "expired",
            creds("alice", &key.issue(b"alice", now - 120)),
            1,
            "s ago",
        ),
        (
            "future",
            creds("alice", &key.issue(b"alice", now + 120)),
            1,
            "in the future",
        ),
        (
            "forged",
            creds(
                "alice",
                &Key::from_bytes(&[b'z'; 40]).unwrap().issue(b"alice", now),
            ),
            1,
            "MAC does not match",
        ),
        (
            "another user's",
            creds("alice", &key.issue(b"bob", now)),
            1,
            "MAC does not match",
        ),
        (
            "the password itself",
            creds("alice", &password("alice")),
            1,
            "malformed token",
        ),
        (
            "unknown user",
            creds("carol", &key.issue(b"carol", now)),
            1,
            "unknown user",
        ),
    ];
    for (what, payload, want, log) in cases {
        let (code, err) = check_token(&s, &s.key(), &payload);
        assert_eq!(code, want, "{what}: {err}");
        assert!(err.contains(log), "{what}: {err}");
        println!("token {what}: exit {code}");
    }
    // A key group or others can read is refused: temporary failure, nothing accepted.
    fs::set_permissions(s.key(), fs::Permissions::from_mode(0o604)).unwrap();
    let (code, err) = check_token(&s, &s.key(), &creds("alice", &key.issue(b"alice", now)));
    assert_eq!(code, 111, "{err}");
    assert!(err.contains("mode 0604"), "{err}");
}

#[test]
fn rendezvous_spread_of_200_users() {
    let users: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    let addrs = |n: usize| -> Vec<SocketAddr> {
        (0..n)
            .map(|i| format!("127.0.110.{}:110", 11 + i).parse().unwrap())
            .collect()
    };
    for n in [3usize, 4] {
        let (a, b) = (addrs(n), addrs(n + 1));
        let moved = users
            .iter()
            .filter(|u| {
                let x = backend::rendezvous(&a, u.as_bytes()).unwrap();
                let y = backend::rendezvous(&b, u.as_bytes()).unwrap();
                assert!(x == y || y == b[n], "{u} moved between old backends");
                x != y
            })
            .count();
        println!(
            "rendezvous: adding backend {} to {n} moves {moved} of 200 users (ideal {:.0})",
            n + 1,
            200.0 / (n + 1) as f64
        );
        let ideal = 200.0 / (n + 1) as f64;
        assert!((moved as f64) > ideal * 0.6 && (moved as f64) < ideal * 1.4);
    }
}

#[test]
fn readme_shows_the_nginx_config_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let conf = fs::read_to_string(root.join("scripts/nginx/popspool-mail.conf")).unwrap();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("### nginx mail proxy")
        .nth(1)
        .expect("README has ### nginx mail proxy");
    let block = section
        .split("```nginx\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```nginx block in that section");
    assert_eq!(block, conf, "README's nginx block differs from the file");
}

// ---- With the real nginx ----

/// Where the configuration puts nginx and pop-route (scripts/nginx/popspool-mail.conf).
const NGINX_LISTEN: &str = "127.0.110.1:11110";
const ROUTE_LISTEN: (&str, &str) = ("127.0.110.2", "8110");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx's master process: stopped with SIGTERM, so that it stops its workers before it exits
/// (SIGKILL would leave them serving the test's address).
struct Nginx(Child);
impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the backend at `addr`, which wants a PROXY protocol header first (as nginx's
/// `proxy_protocol on` sends it), greets a connection that sends `PROXY UNKNOWN`.
fn wait_up_proxied(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut b = [0u8; 3];
            if s.write_all(b"PROXY UNKNOWN\r\n").is_ok()
                && s.read_exact(&mut b).is_ok()
                && &b == b"+OK"
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `addr` accepts connections (and, with `greets`, says +OK).
fn wait_up(addr: &str, greets: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            if !greets {
                return;
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut b = [0u8; 3];
            if s.read_exact(&mut b).is_ok() && &b == b"+OK" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tcpserver(ip: &str, port: &str, argv: &[String], log: &Path) -> Proc {
    let child = Command::new(which("tcpserver").unwrap())
        .args([
            "-q",
            "-D",
            "-R",
            "-H",
            "-l",
            "localhost",
            "-c",
            "100",
            ip,
            port,
        ])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    Proc(child)
}

/// A scripted POP3 client.
struct Pop {
    r: BufReader<TcpStream>,
    w: TcpStream,
    greeting: String,
}

impl Pop {
    fn connect(addr: &str) -> Pop {
        Pop::over(TcpStream::connect(addr).unwrap())
    }
    /// A session from `source`, a loopback address of the test's choosing.
    fn connect_from(source: &str, addr: &str) -> Pop {
        Pop::over(
            popspool_tests::connect_from(source.parse().unwrap(), addr.parse().unwrap()).unwrap(),
        )
    }
    fn over(s: TcpStream) -> Pop {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut p = Pop {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            greeting: String::new(),
        };
        p.greeting = p.line();
        p
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }
    fn cmd(&mut self, c: &str) -> String {
        self.w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        self.line()
    }
    /// RETR 1's Subject line.
    fn subject(&mut self) -> String {
        let first = self.cmd("RETR 1");
        assert!(first.starts_with("+OK"), "RETR: {first}");
        let mut subject = String::new();
        loop {
            let l = self.line();
            if l == "." {
                return subject;
            }
            if let Some(s) = l.strip_prefix("Subject: ") {
                subject = s.to_string();
            }
        }
    }
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Logs in by USER/PASS, AUTH PLAIN or APOP; returns the reply to the last step.
fn login(p: &mut Pop, how: &str, user: &str, pass: &str) -> String {
    match how {
        "user" => {
            let r = p.cmd(&format!("USER {user}"));
            assert!(r.starts_with("+OK"), "USER: {r}");
            p.cmd(&format!("PASS {pass}"))
        }
        "plain" => {
            let r = p.cmd("AUTH PLAIN");
            assert!(r.starts_with('+'), "AUTH PLAIN: {r}");
            p.cmd(&b64(format!("\0{user}\0{pass}").as_bytes()))
        }
        "apop" => {
            let stamp = &p.greeting[p.greeting.find('<').unwrap()..=p.greeting.find('>').unwrap()];
            let d = spool_login::auth::apop::digest(stamp.as_bytes(), pass.as_bytes());
            p.cmd(&format!("APOP {user} {}", std::str::from_utf8(&d).unwrap()))
        }
        _ => unreachable!(),
    }
}

/// Starts backend chain number `b` under `tcpserver -D` on a free loopback port: pop-popup,
/// pop-checkpassword taking tokens, pop-serve on a spool of its own in which every user's one
/// message says `backend B`.
fn backend_chain(s: &Scratch, users: &[String], b: usize) -> (Proc, SocketAddr) {
    let spool = s.path(&format!("spool{b}"));
    fs::create_dir_all(spool.join("u")).unwrap();
    chown(&spool.join("u"));
    for u in users {
        let mbox = spool.join("u").join(u);
        fs::write(
            &mbox,
            format!("From x Thu Jan  1 00:00:00 1970\nSubject: backend {b}\n\nfor {u}\n"),
        )
        .unwrap();
        chown(&mbox);
        fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut argv = vec![
        bin("pop-popup").display().to_string(),
        "--proxy-protocol".into(),
        "--log".into(),
        "stderr".into(),
        "--fail-delay-ms".into(),
        "10".into(),
        "popspool.test".into(),
    ];
    argv.extend(s.checkpassword(&["--token-key", &s.key().display().to_string()]));
    argv.extend([
        bin("pop-serve").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--no-dotlock-helper".into(),
        "--spool-dir".into(),
        spool.display().to_string(),
    ]);
    let log = s.path(&format!("backend{b}.log"));
    let chain = tcpserver("127.0.0.1", &port.to_string(), &argv, &log);
    wait_up_proxied(&addr.to_string());
    (chain, addr)
}

/// Which backend serves `user` through nginx now (by USER/PASS), from its message's Subject.
fn served_by(user: &str) -> String {
    let mut p = Pop::connect(NGINX_LISTEN);
    let r = login(&mut p, "user", user, &password(user));
    assert!(r.starts_with("+OK"), "{user}: {r}");
    let got = p.subject();
    let _ = p.cmd("QUIT");
    got
}

#[test]
fn nginx_in_front_of_three_backends() {
    let name = "nginx_in_front_of_three_backends";
    if !is_root() {
        skip(
            name,
            "needs root (the chains drop to the users, nginx runs as root)",
        );
        return;
    }
    let nginx = PathBuf::from("/usr/sbin/nginx");
    let module = Path::new("/usr/lib/nginx/modules/ngx_mail_module.so");
    if !nginx.is_file() || !module.is_file() {
        skip(
            name,
            "nginx or its mail module not installed (nginx-light, libnginx-mod-mail)",
        );
        return;
    }
    if which("tcpserver").is_none() {
        skip(name, "tcpserver not installed (ucspi-tcp)");
        return;
    }
    let users: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    let s = Scratch::new(&users);

    // Three backend chains, each with its own spool holding every user's mailbox, whose one
    // message names the backend: what RETR returns tells which backend served.
    let mut backends = Vec::new();
    let mut chains = Vec::new();
    for b in 0..3 {
        let (chain, addr) = backend_chain(&s, &users, b);
        chains.push(Some(chain));
        backends.push(addr);
    }
    fs::write(
        s.path("backends"),
        backends
            .iter()
            .map(|b| format!("{b}\n"))
            .collect::<String>(),
    )
    .unwrap();

    // The router, per connection under tcpserver, checking passwords with pop-checkpassword.
    let mut argv = vec![
        bin("pop-route").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--backends".into(),
        s.path("backends").display().to_string(),
        "--map".into(),
        s.path("map").display().to_string(),
        "--token-key".into(),
        s.key().display().to_string(),
    ];
    fs::write(s.path("map"), "# USER IP:PORT\n").unwrap();
    argv.extend(s.checkpassword(&["/bin/true"]));
    let _router = tcpserver(ROUTE_LISTEN.0, ROUTE_LISTEN.1, &argv, &s.path("route.log"));
    wait_up(&format!("{}:{}", ROUTE_LISTEN.0, ROUTE_LISTEN.1), false);

    // nginx with the repository's configuration, included verbatim.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let conf = s.path("nginx.conf");
    fs::write(
        &conf,
        format!(
            "load_module {};\npid {};\nerror_log {} info;\ndaemon off;\nuser root;\n\
             events {{ worker_connections 512; }}\ninclude {};\n",
            module.display(),
            s.path("nginx.pid").display(),
            s.path("nginx.err").display(),
            root.join("scripts/nginx/popspool-mail.conf").display()
        ),
    )
    .unwrap();
    let _nginx = Nginx(
        Command::new(&nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(s.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(s.path("nginx.out")).unwrap()))
            .spawn()
            .unwrap(),
    );
    wait_up(NGINX_LISTEN, true);
    let logs = || {
        let mut all = String::new();
        for f in [
            "route.log",
            "nginx.err",
            "nginx.out",
            "backend0.log",
            "backend1.log",
            "backend2.log",
        ] {
            let t = fs::read_to_string(s.path(f)).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(15).collect();
            all.push_str(&format!("--- {f}\n"));
            for l in tail.into_iter().rev() {
                all.push_str(l);
                all.push('\n');
            }
        }
        all
    };
    let expected = |u: &str| {
        let b = backend::rendezvous(&backends, u.as_bytes()).unwrap();
        backends.iter().position(|x| *x == b).unwrap()
    };
    let mut per_backend = [0usize; 3];
    for u in &users {
        per_backend[expected(u)] += 1;
    }
    println!("200 users over 3 backends: {per_backend:?}");

    // 200 users, 10 rounds each, over four client threads; every login lands on the user's
    // backend, whichever of USER/PASS, AUTH PLAIN and APOP it uses.
    let rounds = 10;
    std::thread::scope(|sc| {
        for t in 0..4 {
            let users = &users;
            let expected = &expected;
            let logs = &logs;
            sc.spawn(move || {
                for round in 0..rounds {
                    for (i, u) in users.iter().enumerate().skip(t).step_by(4) {
                        let how = ["user", "plain", "apop"][(i + round) % 3];
                        let mut p = Pop::connect(NGINX_LISTEN);
                        let r = login(&mut p, how, u, &password(u));
                        assert!(
                            r.starts_with("+OK"),
                            "{u} {how} round {round}: {r}\n{}",
                            logs()
                        );
                        let got = p.subject();
                        assert_eq!(got, format!("backend {}", expected(u)), "{u} round {round}");
                        assert!(p.cmd("QUIT").starts_with("+OK"));
                    }
                }
            });
        }
    });
    println!(
        "{} sessions through nginx, each on its user's backend",
        users.len() * rounds
    );
    let route_log = fs::read_to_string(s.path("route.log")).unwrap();
    assert!(
        !route_log.contains("pw of"),
        "no password in the router's log"
    );

    // A wrong password: nginx answers with the router's status after the Auth-Wait (1 s).
    let mut p = Pop::connect(NGINX_LISTEN);
    let t0 = Instant::now();
    let r = login(&mut p, "user", "u000", "wrong");
    let waited = t0.elapsed();
    assert!(r.starts_with("-ERR"), "{r}");
    assert!(r.contains("Invalid login or password"), "{r}");
    assert!(
        waited >= Duration::from_secs(1),
        "answered after {waited:?}"
    );
    println!("wrong password: {r:?} after {waited:?}");
    // The same connection may try again, and succeed.
    let r = login(&mut p, "user", "u000", &password("u000"));
    assert!(r.starts_with("+OK"), "{r}");
    drop(p);

    // nginx opens each backend connection with a PROXY v1 header (`proxy_protocol on`), and
    // the backend's pop-popup (`--proxy-protocol`) logs the client, not nginx.
    let mut p = Pop::connect_from("127.0.0.99", NGINX_LISTEN);
    let r = login(&mut p, "user", "u001", &password("u001"));
    assert!(r.starts_with("+OK"), "{r}\n{}", logs());
    let _ = p.cmd("QUIT");
    drop(p);
    let b = expected("u001");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = fs::read_to_string(s.path(&format!("backend{b}.log"))).unwrap_or_default();
        if log.contains("addr=127.0.0.99") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend {b} never logged the client 127.0.0.99\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("backend {b} logged the client 127.0.0.99 from nginx's PROXY header");

    // curl through nginx, USER/PASS and AUTH PLAIN.
    if let Some(curl) = which("curl") {
        for opts in [None, Some("AUTH=PLAIN")] {
            let u = "u007";
            let mut c = Command::new(&curl);
            c.args(["-sS", "--max-time", "20"]);
            if let Some(o) = opts {
                c.args(["--login-options", o]);
            }
            let out = c
                .arg(format!(
                    "pop3://{u}:{}@{NGINX_LISTEN}/1",
                    password(u).replace(' ', "%20")
                ))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "curl {opts:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                logs()
            );
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(
                body.contains(&format!("Subject: backend {}", expected(u))),
                "{body}"
            );
        }
    } else {
        skip("nginx curl", "curl not installed");
    }

    // fetchmail (USER/PASS) and mpop (USER/PASS and AUTH PLAIN) through nginx.
    let (host, port) = NGINX_LISTEN.split_once(':').unwrap();
    if let Some(fm) = which("fetchmail") {
        let u = "u011";
        let rc = s.path("fetchmailrc");
        let out = s.path("fetched");
        fs::write(
            &rc,
            format!(
                "set no syslog\npoll {host} service {port} protocol pop3 auth password\n  \
                 user {u} password \"{}\" is root here sslproto \"\"\n  \
                 mda \"/bin/sh -c 'cat >> {}'\"\n",
                password(u),
                out.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&rc, fs::Permissions::from_mode(0o600)).unwrap();
        let o = Command::new(&fm)
            .arg("-f")
            .arg(&rc)
            .arg("--idfile")
            .arg(s.path("fetchids"))
            .arg("--pidfile")
            .arg(s.path("fetchmail.pid"))
            .arg("--keep")
            .env("HOME", s.dir.path())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "fetchmail: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            logs()
        );
        let got = fs::read_to_string(&out).unwrap();
        assert!(
            got.contains(&format!("Subject: backend {}", expected(u))),
            "{got}"
        );
    } else {
        skip("nginx fetchmail", "fetchmail not installed");
    }
    if let Some(mpop) = which("mpop") {
        for auth in ["user", "plain"] {
            let u = "u012";
            let out = s.path(&format!("mpop-{auth}.mbox"));
            fs::write(&out, b"").unwrap();
            let o = Command::new(&mpop)
                .arg(format!("--host={host}"))
                .arg(format!("--port={port}"))
                .args(["--tls=off", "--keep=on", "--quiet"])
                .arg(format!("--auth={auth}"))
                .arg(format!("--user={u}"))
                .arg(format!("--passwordeval=echo '{}'", password(u)))
                .arg(format!(
                    "--uidls-file={}",
                    s.path(&format!("uidls-{auth}")).display()
                ))
                .arg(format!("--delivery=mbox,{}", out.display()))
                .env("HOME", s.dir.path())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "mpop --auth={auth}: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                logs()
            );
            let got = fs::read_to_string(&out).unwrap();
            assert!(
                got.contains(&format!("Subject: backend {}", expected(u))),
                "mpop --auth={auth}: {got}"
            );
        }
    } else {
        skip("nginx mpop", "mpop not installed");
    }

    // Moving a user: a map line sends u000 to another backend from the next login on.
    let home = expected("u000");
    let away = (home + 1) % 3;
    fs::write(s.path("map"), format!("u000 {}\n", backends[away])).unwrap();
    assert_eq!(served_by("u000"), format!("backend {away}"));
    assert_eq!(served_by("u001"), format!("backend {}", expected("u001")));
    fs::write(s.path("map"), "").unwrap();
    assert_eq!(served_by("u000"), format!("backend {home}"));

    // A fourth backend added to the list: about a quarter of the users move, all onto it, and
    // nobody else; the router sees the edited list on the next login.
    let (fourth, addr4) = backend_chain(&s, &users, 3);
    let mut four = backends.clone();
    four.push(addr4);
    let list = |l: &[SocketAddr]| l.iter().map(|b| format!("{b}\n")).collect::<String>();
    fs::write(s.path("backends"), list(&four)).unwrap();
    let mut moved = 0;
    for u in &users {
        let now = served_by(u);
        if now == format!("backend {}", expected(u)) {
            continue;
        }
        assert_eq!(now, "backend 3", "{u} moved elsewhere than the new backend");
        assert_eq!(backend::rendezvous(&four, u.as_bytes()), Some(addr4));
        moved += 1;
    }
    println!("a fourth backend added through nginx: {moved} of 200 users moved to it (ideal 50)");
    assert!((30..=70).contains(&moved), "{moved}");
    fs::write(s.path("backends"), list(&backends)).unwrap();
    drop(fourth);

    // Stop one backend: its users get a temporary error from nginx, the others still work.
    let down = 1;
    chains[down] = None;
    std::thread::sleep(Duration::from_millis(200));
    let mut failed = 0;
    let mut refusal = String::new();
    for u in users.iter().take(30) {
        let mut p = Pop::connect(NGINX_LISTEN);
        let r = login(&mut p, "user", u, &password(u));
        if expected(u) == down {
            assert!(r.starts_with("-ERR"), "{u} on the stopped backend: {r}");
            failed += 1;
            refusal = r;
        } else {
            assert!(r.starts_with("+OK"), "{u}: {r}\n{}", logs());
            assert_eq!(p.subject(), format!("backend {}", expected(u)));
        }
    }
    assert!(
        failed > 0,
        "some of the first 30 users live on backend {down}"
    );
    println!("backend {down} stopped: {failed} of 30 users refused ({refusal:?}), the rest served");
}

/// The shipped pop-route@.service's command, localized to the scratch files, run over pipes
/// with the unit's capability bounding set, no_new_privs and no network (what of the sandbox
/// can be reproduced without a systemd): it still checks the password as the user and answers.
#[test]
fn route_unit_command_works_within_its_capabilities() {
    let name = "route_unit_command_works_within_its_capabilities";
    if !is_root() {
        skip(
            name,
            "needs root (capability bounding set, network namespace)",
        );
        return;
    }
    let (Some(unshare), Some(setpriv)) = (which("unshare"), which("setpriv")) else {
        skip(name, "needs unshare and setpriv (util-linux)");
        return;
    };
    let ok = Command::new(&unshare)
        .args(["--net", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(name, "cannot make a network namespace here");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let unit = fs::read_to_string(root.join("scripts/systemd/pop-route@.service")).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= in the unit"))
            .to_string()
    };
    let users: Vec<String> = vec!["carol".into()];
    let s = Scratch::new(&users);
    fs::write(s.path("backends"), "127.0.3.1:110\n").unwrap();
    let target = bin("pop-route").parent().unwrap().display().to_string();
    let cmd = value("ExecStart")
        .replace("/usr/local/bin/", &format!("{target}/"))
        .replace(
            "/etc/popspool/backends",
            &s.path("backends").display().to_string(),
        )
        .replace("/etc/popspool/token.key", &s.key().display().to_string())
        .replace(
            "/pop-checkpassword ",
            &format!(
                "/pop-checkpassword --log stderr --source passwd-file --passwd-file {} --min-uid 1 ",
                s.path("users").display()
            ),
        );
    let mut bounding = String::from("-all");
    for cap in value("CapabilityBoundingSet").split_whitespace() {
        bounding.push_str(",+");
        bounding.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    assert_eq!(value("NoNewPrivileges"), "yes");
    let mut child = Command::new(&unshare)
        .args(["--net", "--"])
        .arg(&setpriv)
        .arg(format!("--bounding-set={bounding}"))
        .args(["--no-new-privs", "--", "/bin/sh", "-c"])
        .arg(format!(
            "umask {} && exec {cmd} --log stderr",
            value("UMask")
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(request("plain", "carol", &password("carol"), 1, "").as_bytes())
        .unwrap();
    let (code, out, err) = wait_output(child, Duration::from_secs(20));
    drop(stdin);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(header(&out, "Auth-Status"), Some("OK"), "{out}\n{err}");
    assert!(err.contains("login ok uid=65534"), "{err}");
}

/// pop-route parses the request only in its confined child: that process logs
/// no_new_privs, no capability and the parser user's uid, while the parent, which runs the
/// checkpassword program, holds only the three capabilities that program needs (privs::KEPT),
/// none effective; the login still succeeds through that program. A bad request is
/// answered by the parser too.
#[test]
fn route_parses_the_request_in_the_confined_child() {
    let name = "route_parses_the_request_in_the_confined_child";
    if !is_root() {
        skip(name, "needs root (capabilities to shed, a user to become)");
        return;
    }
    let users: Vec<String> = vec!["dave".into()];
    let s = Scratch::new(&users);
    let run = |input: &[u8]| {
        let mut child = Command::new(bin("pop-route"))
            .args([
                "--log",
                "stderr",
                "--backend",
                "127.0.3.1:110",
                "--token-key",
            ])
            .arg(s.key())
            .args(s.checkpassword(&["/bin/true"]))
            .env("POPSPOOL_TEST_SELF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        let out = wait_output(child, Duration::from_secs(20));
        drop(stdin);
        (pid, out)
    };
    let parser_line = |err: &str, parent: u32| {
        let line = err
            .lines()
            .find(|l| l.contains("test-parsed auth-request by test-self"))
            .unwrap_or_else(|| panic!("no test-parsed line in {err}"))
            .to_string();
        assert!(line.starts_with("pop-route["), "{line}");
        assert!(!line.starts_with(&format!("pop-route[{parent}]")), "{line}");
        assert!(line.contains(" uid=65534 nnp=1 "), "{line}");
        assert!(line.ends_with(" capeff=0x0 capprm=0x0"), "{line}");
    };
    let (pid, (code, out, err)) =
        run(request("plain", "dave", &password("dave"), 1, "").as_bytes());
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(header(&out, "Auth-Status"), Some("OK"), "{out}\n{err}");
    parser_line(&err, pid);
    let kept = spool_login::popup::privs::kept_mask();
    let parent = format!("pop-route[{pid}]: info: test-self uid=0 nnp=0 ");
    let line = err
        .lines()
        .find(|l| l.starts_with(&parent))
        .unwrap_or_else(|| panic!("no {parent} in {err}"));
    assert!(
        line.ends_with(&format!(" capeff=0x0 capprm={kept:#x}")),
        "{line}"
    );

    let (pid, (code, out, err)) = run(b"NOT HTTP\r\n\r\n");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.starts_with("HTTP/1.0 400 "), "{out}");
    parser_line(&err, pid);
}

/// The parser reaches no file and can exec nothing; `--require-sandbox` gives a temporary
/// answer and exit 111 when its Landlock is only partly enforced (a debug build acting as
/// on a kernel with Landlock ABI 1), and answers normally when it is fully enforced.
#[test]
fn route_parser_sandbox_and_require_sandbox() {
    let name = "route_parser_sandbox_and_require_sandbox";
    let full = spool_wire::sandbox::kernel_abi() >= 2;
    if !full {
        skip(name, "needs a kernel with Landlock ABI 2 or later");
        return;
    }
    let users: Vec<String> = vec!["erin".into()];
    let s = Scratch::new(&users);
    let req = request("plain", "erin", &password("erin"), 2, "");
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(bin("pop-route"));
        c.args([
            "--log",
            "stderr",
            "--require-sandbox",
            "--backend",
            "127.0.3.1:110",
        ])
        .arg("--token-key")
        .arg(s.key())
        .args(s.checkpassword(&["/bin/true"]))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(req.as_bytes()).unwrap();
        let out = wait_output(child, Duration::from_secs(20));
        drop(stdin);
        (pid, out)
    };
    let (pid, (code, out, err)) = run(&[
        ("POPSPOOL_TEST_OPEN", "/etc/passwd"),
        ("POPSPOOL_TEST_EXEC", "/bin/sh"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(header(&out, "Auth-Status"), Some("OK"), "{out}\n{err}");
    for hook in [
        "test-open /etc/passwd: errno 13",
        "test-exec /bin/sh: errno 13",
    ] {
        let refused = err
            .lines()
            .any(|l| !l.starts_with(&format!("pop-route[{pid}]")) && l.contains(hook));
        assert!(refused, "{hook} by the parser in {err}");
    }

    let (_, (code, out, err)) = run(&[("POPSPOOL_TEST_LANDLOCK_ABI", "1")]);
    assert_eq!(code, 111, "{out}\n{err}");
    assert_eq!(
        header(&out, "Auth-Status"),
        Some(spool_route::STATUS_TEMPORARY),
        "{out}\n{err}"
    );
    assert!(
        err.contains("--require-sandbox: parser landlock: partial (ABI 1)"),
        "{err}"
    );
}
