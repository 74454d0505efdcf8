//! POP-before-SMTP through the real chain under `tcpserver`: pop-popup, pop-relay-record,
//! pop-checkpassword, pop-relay-ok, pop-serve. Clients connect from chosen loopback source
//! addresses; a record appears only after a good login, under the launcher's address even
//! when a link running as the user sets TCPREMOTEIP; pop-checkpassword keeps exactly the
//! descriptor POPRELAYFD names, and only a pipe; pop-relay expires and exports the records,
//! checked with `postmap -q`, and with a real Postfix smtpd when it can run.

use popspool_tests::pop::Client;
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const PASSWORD: &str = "relay-pw";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory whose whole path is root's and not writable by others (the relay directory
/// must be), unlike a child of /tmp.
fn private_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A TCP connection to 127.0.0.1:`port` from the source address `src`.
fn connect_from(src: &str, port: u16) -> TcpStream {
    popspool_tests::connect_from(
        src.parse().unwrap(),
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port),
    )
    .unwrap()
}

/// A POP3 login from `src`; true if PASS was accepted.
fn login(src: &str, port: u16, pass: &str) -> bool {
    let s = connect_from(src, port);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client::new(s.try_clone().unwrap(), s);
    assert!(c.line().starts_with("+OK"));
    assert!(c.cmd("USER demo").starts_with("+OK"));
    let ok = c.cmd(&format!("PASS {pass}")).starts_with("+OK");
    c.cmd("QUIT");
    ok
}

/// Waits until `p` exists (the recorder runs detached from the session).
fn appears(p: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

struct World {
    _dir: tempfile::TempDir,
    relay: PathBuf,
    log: PathBuf,
    port: u16,
    _server: Server,
}

/// The chain under tcpserver on 127.0.0.1; `as_user` runs between pop-checkpassword and
/// pop-relay-ok (a link the user could control).
fn world(as_user: &[&str], record_extra: &[&str]) -> World {
    let dir = private_dir();
    let w = dir.path();
    let relay = w.join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    let home = w.join("home");
    fs::create_dir(&home).unwrap();
    nix::unistd::chown(&home, Some(65534.into()), Some(65534.into())).unwrap();
    fs::write(
        w.join("users"),
        format!(
            "demo:{{PLAIN}}{PASSWORD}:65534:65534::{}::\n",
            home.display()
        ),
    )
    .unwrap();
    let state = w.join("state");
    fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(65534.into()), Some(65534.into())).unwrap();
    let mbox = w.join("mbox");
    fs::write(&mbox, "").unwrap();
    nix::unistd::chown(&mbox, Some(65534.into()), Some(65534.into())).unwrap();
    let mut chain: Vec<String> = vec![
        bin("pop-popup").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--fail-delay-ms".into(),
        "10".into(),
        "popspool.test".into(),
        bin("pop-relay-record").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--dir".into(),
        relay.display().to_string(),
    ];
    chain.extend(record_extra.iter().map(|s| s.to_string()));
    chain.extend([
        bin("pop-checkpassword").display().to_string(),
        "--source".into(),
        "passwd-file".into(),
        "--passwd-file".into(),
        w.join("users").display().to_string(),
        "--min-uid".into(),
        "1".into(),
        "--log".into(),
        "stderr".into(),
    ]);
    chain.extend(as_user.iter().map(|s| s.to_string()));
    chain.extend([
        bin("pop-relay-ok").display().to_string(),
        "--log".into(),
        "stderr".into(),
        bin("pop-serve").display().to_string(),
        "--log".into(),
        "stderr".into(),
        "--no-dotlock-helper".into(),
        "--state-dir".into(),
        state.display().to_string(),
        format!("mbox:{}", mbox.display()),
    ]);
    let log = w.join("chain.log");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(which("tcpserver").unwrap())
        .args(["-q", "-D", "-R", "-H", "-l", "localhost", "127.0.0.1"])
        .arg(port.to_string())
        .args(&chain)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let mut b = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let n = s.read(&mut b).unwrap_or(0);
            if b[..n].starts_with(b"+OK") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "tcpserver did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    World {
        _dir: dir,
        relay,
        log,
        port,
        _server: server,
    }
}

fn needs(test: &str) -> bool {
    if !is_root() {
        skip(
            test,
            "needs root (the relay directory is root's; users map to nobody)",
        );
        return false;
    }
    if which("tcpserver").is_none() {
        skip(test, "tcpserver not installed (ucspi-tcp)");
        return false;
    }
    true
}

#[test]
fn records_only_after_a_good_login() {
    if !needs("records_only_after_a_good_login") {
        return;
    }
    let w = world(&[], &[]);
    assert!(
        !login("127.0.0.5", w.port, "wrong"),
        "a wrong password logged in"
    );
    assert!(
        login("127.0.0.6", w.port, PASSWORD),
        "the right password failed"
    );
    assert!(
        appears(&w.relay.join("127.0.0.6")),
        "no record after a good login: {}",
        fs::read_to_string(&w.log).unwrap()
    );
    // The failed login's recorder saw EOF before the good login began: it can no longer
    // record anything.
    let names: Vec<_> = fs::read_dir(&w.relay)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["127.0.0.6"]);
    let st = fs::symlink_metadata(w.relay.join("127.0.0.6")).unwrap();
    assert!(st.file_type().is_file());
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&st),
        0,
        "the record is root's"
    );
    let age = SystemTime::now()
        .duration_since(st.modified().unwrap())
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(600),
        "mtime is not the login time"
    );
    let text = fs::read_to_string(&w.log).unwrap();
    assert!(text.contains("client=127.0.0.6 recorded"), "{text}");
}

#[test]
fn the_address_is_the_launchers_whatever_the_user_sets() {
    if !needs("the_address_is_the_launchers_whatever_the_user_sets") {
        return;
    }
    // A link running as the user between the password check and pop-relay-ok changes every
    // variable that could name an address.
    let w = world(
        &[
            "/usr/bin/env",
            "TCPREMOTEIP=192.0.2.66",
            "REMOTE_ADDR=192.0.2.67",
        ],
        &[],
    );
    assert!(login("127.0.0.7", w.port, PASSWORD));
    assert!(appears(&w.relay.join("127.0.0.7")));
    assert!(!w.relay.join("192.0.2.66").exists());
    assert!(!w.relay.join("192.0.2.67").exists());
}

#[test]
fn a_login_pipe_held_past_the_limit_records_nothing() {
    if !needs("a_login_pipe_held_past_the_limit_records_nothing") {
        return;
    }
    // A link between the password check and pop-relay-ok that takes 5 s, with the recorder's
    // limit at 1 s: the recorder gives up, pop-relay-ok's byte finds no reader, the login
    // itself goes on.
    let w = world(
        &["/bin/sh", "-c", r#"sleep 5; exec "$@""#, "sh"],
        &["--login-timeout", "1"],
    );
    assert!(login("127.0.0.8", w.port, PASSWORD));
    let text = fs::read_to_string(&w.log).unwrap();
    assert!(
        text.contains("client=127.0.0.8 not recorded: no word from the login within 1 s"),
        "{text}"
    );
    assert!(!w.relay.join("127.0.0.8").exists());
    let out = Command::new(bin("pop-relay-record"))
        .args([
            "--log",
            "stderr",
            "--dir",
            "/",
            "--login-timeout",
            "3601",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs pop-checkpassword with credentials on fd 3 and the redirections `redir` (bash
/// syntax), POPRELAYFD=`relay_fd`; the program run as the user prints its open descriptors
/// and POPRELAYFD.
fn fds_after_checkpassword(redir: &str, relay_fd: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let users = d.path().join("users");
    fs::write(
        &users,
        format!("demo:{{PLAIN}}{PASSWORD}:65534:65534::/::\n"),
    )
    .unwrap();
    let script = format!(
        r#"ulimit -n 2048; exec 3< <(printf 'demo\0{PASSWORD}\0\0') {redir}; POPRELAYFD={relay_fd} exec "$@""#
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .arg(bin("pop-checkpassword"))
        .args([
            "--source",
            "passwd-file",
            "--min-uid",
            "1",
            "--log",
            "stderr",
        ])
        .arg("--passwd-file")
        .arg(&users)
        .args([
            "/bin/sh",
            "-c",
            // ls, a child, lists the shell's descriptors while the shell holds nothing else.
            r#"echo relay=$POPRELAYFD; ls /proc/$$/fd"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let relay = lines.next().unwrap_or_default().to_string();
    let mut fds: Vec<i32> = lines.filter_map(|l| l.trim().parse().ok()).collect();
    fds.sort_unstable();
    let fds: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
    format!("fds {} {relay}", fds.join(" "))
}

#[test]
fn checkpassword_keeps_exactly_the_named_pipe() {
    if !is_root() {
        return skip("checkpassword_keeps_exactly_the_named_pipe", "needs root");
    }
    // A pipe's write end on 5, something else on 6: 5 stays, 6 is closed.
    assert_eq!(
        fds_after_checkpassword("5> >(cat >/dev/null) 6>/dev/null", "5"),
        "fds 0 1 2 5 relay=5"
    );
    // Not a pipe: closed, and the variable is gone.
    assert_eq!(
        fds_after_checkpassword("5> >(cat >/dev/null) 6>/dev/null", "6"),
        "fds 0 1 2 relay="
    );
    // A pipe's read end is not the login pipe either.
    assert_eq!(
        fds_after_checkpassword("5< <(sleep 1)", "5"),
        "fds 0 1 2 relay="
    );
    // The highest number accepted, and one above it.
    assert_eq!(
        fds_after_checkpassword("1023> >(cat >/dev/null)", "1023"),
        "fds 0 1 2 1023 relay=1023"
    );
    assert_eq!(
        fds_after_checkpassword("1024> >(cat >/dev/null)", "1024"),
        "fds 0 1 2 relay="
    );
    // fd 3 (the credentials) is never the login pipe.
    assert_eq!(
        fds_after_checkpassword("5> >(cat >/dev/null)", "3"),
        "fds 0 1 2 relay="
    );
}

fn set_age(p: &Path, minutes: u64) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(minutes * 60))
        .unwrap();
}

#[test]
fn expire_and_export_to_a_postfix_map() {
    if !is_root() {
        return skip("expire_and_export_to_a_postfix_map", "needs root");
    }
    let d = private_dir();
    let relay = d.path().join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    for a in ["127.0.0.10", "127.0.0.11", "127.0.0.12", "2001:db8::1"] {
        fs::write(relay.join(a), "").unwrap();
    }
    fs::write(relay.join("not-an-address"), "").unwrap();
    set_age(&relay.join("127.0.0.10"), 10);
    set_age(&relay.join("127.0.0.11"), 31);
    set_age(&relay.join("127.0.0.12"), 90);
    let run = |args: &[&str]| {
        let out = Command::new(bin("pop-relay")).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = relay.display().to_string();
    let map = d.path().join("pop-before-smtp");
    let map_s = map.display().to_string();

    // Export first: only what is fresh at the default age (30 minutes) goes into the map.
    let postmap = which("postmap").or_else(|| {
        let p = PathBuf::from("/usr/sbin/postmap");
        p.is_file().then_some(p)
    });
    let mut export = vec!["export", "--dir", &dir, "--map", &map_s];
    let pm = postmap
        .as_ref()
        .map(|p| format!("--postmap={}", p.display()));
    if let Some(pm) = &pm {
        export.push(pm);
    }
    let (code, err) = run(&export);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fs::read_to_string(&map).unwrap(),
        "127.0.0.10 OK\n2001:db8::1 OK\n"
    );
    match &postmap {
        Some(p) => {
            let q = |key: &str| {
                let o = Command::new(p)
                    .args(["-q", key])
                    .arg(format!("hash:{map_s}"))
                    .output()
                    .unwrap();
                (
                    o.status.code(),
                    String::from_utf8_lossy(&o.stdout).trim().to_string(),
                )
            };
            assert_eq!(q("127.0.0.10"), (Some(0), "OK".to_string()));
            assert_eq!(q("2001:db8::1"), (Some(0), "OK".to_string()));
            assert_eq!(q("127.0.0.11").0, Some(1));
            assert_eq!(q("127.0.0.12").0, Some(1));
        }
        None => skip(
            "expire_and_export_to_a_postfix_map (postmap -q)",
            "postfix not installed",
        ),
    }

    // Expire at 60 minutes: only the 90-minute record goes; junk is left alone.
    let (code, err) = run(&["expire", "--dir", &dir, "--max-age-minutes", "60"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("expired 1 records"), "{err}");
    let mut names: Vec<_> = fs::read_dir(&relay)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["127.0.0.10", "127.0.0.11", "2001:db8::1", "not-an-address"]
    );
    // Default age: the 31-minute record goes too.
    let (code, err) = run(&["expire", "--dir", &dir]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!relay.join("127.0.0.11").exists());

    // Limits and unsafe directories.
    let (code, _) = run(&["expire", "--dir", &dir, "--max-age-minutes", "0"]);
    assert_eq!(code, Some(2));
    let (code, _) = run(&["expire", "--dir", &dir, "--max-age-minutes", "10081"]);
    assert_eq!(code, Some(2));
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = run(&["expire", "--dir", &dir]);
    assert_eq!(code, Some(111), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&relay, &link).unwrap();
    let (code, err) = run(&["expire", "--dir", &link.display().to_string()]);
    assert_eq!(code, Some(111), "{err}");
}

/// A private Postfix instance (its own configuration, queue and log under `dir`) whose smtpd
/// on 127.0.0.1:`port` lets a client relay only if the access map says OK; stopped on drop.
struct Postfix {
    conf: PathBuf,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
    }
}

const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

fn start_postfix(dir: &Path, map: &Path, port: u16) -> Option<Postfix> {
    let conf = dir.join("conf");
    let queue = dir.join("queue");
    let data = dir.join("data");
    for d in [&conf, &queue, &data] {
        fs::create_dir(d).unwrap();
    }
    let pf = nix::unistd::User::from_name("postfix").ok()??;
    nix::unistd::chown(&data, Some(pf.uid), None).unwrap();
    let map = map.display();
    fs::write(
        conf.join("main.cf"),
        format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\n\
             myhostname = relaytest.invalid\nmydestination =\ninet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\nmynetworks = 127.0.0.200/32\n\
             smtpd_client_restrictions = permit_mynetworks, check_client_access hash:{map}, reject\n\
             smtpd_relay_restrictions = permit_mynetworks, check_client_access hash:{map}, \
             reject_unauth_destination\n\
             maillog_file_prefixes = {dir}\nmaillog_file = {dir}/maillog\nsmtputf8_enable = no\n",
            q = queue.display(),
            d = data.display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    fs::write(
        conf.join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}"),
    )
    .unwrap();
    let out = Command::new("postfix")
        .arg("-c")
        .arg(&conf)
        .arg("start")
        .output()
        .unwrap();
    let instance = Postfix { conf };
    if !out.status.success() {
        skip(
            "expire_and_export_to_a_postfix_map (smtpd)",
            &format!(
                "postfix did not start: {}",
                fs::read_to_string(dir.join("maillog")).unwrap_or_default()
            ),
        );
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "postfix smtpd did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(instance)
}

/// An SMTP conversation from `src` up to RCPT; returns the reply to RCPT.
fn smtp_rcpt(src: &str, port: u16) -> String {
    use std::io::{BufRead, BufReader, Write};
    let s = connect_from(src, port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    // The last line of a reply (continuation lines have `-` after the code).
    let mut reply = || loop {
        let mut l = String::new();
        let n = r.read_line(&mut l).unwrap();
        assert!(n > 0, "smtpd closed the connection");
        if l.as_bytes().get(3) != Some(&b'-') {
            return l.trim_end().to_string();
        }
    };
    assert!(reply().starts_with("220"));
    for (cmd, want) in [
        ("HELO client.test", "250"),
        ("MAIL FROM:<a@client.test>", "250"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(want), "{cmd}: {got}");
    }
    w.write_all(b"RCPT TO:<someone@remote.example>\r\n")
        .unwrap();
    let got = reply();
    let _ = w.write_all(b"QUIT\r\n");
    got
}

/// The whole path: a good POP3 login from 127.0.0.20 and a bad one from 127.0.0.21, the map
/// exported, and a real Postfix smtpd that relays for the first and refuses the second.
#[test]
fn a_pop3_login_lets_its_address_relay_through_postfix() {
    let test = "a_pop3_login_lets_its_address_relay_through_postfix";
    if !needs(test) {
        return;
    }
    if which("postfix").is_none() && !Path::new("/usr/sbin/postfix").exists() {
        return skip(test, "postfix not installed (Debian package postfix)");
    }
    let w = world(&[], &[]);
    assert!(login("127.0.0.20", w.port, PASSWORD));
    assert!(!login("127.0.0.21", w.port, "wrong"));
    assert!(appears(&w.relay.join("127.0.0.20")));
    let pfdir = private_dir();
    let map = pfdir.path().join("pop-before-smtp");
    let out = Command::new(bin("pop-relay"))
        .args(["export", "--dir"])
        .arg(&w.relay)
        .arg("--map")
        .arg(&map)
        .arg("--postmap")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&map).unwrap(), "127.0.0.20 OK\n");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(_postfix) = start_postfix(pfdir.path(), &map, port) else {
        return;
    };
    let ok = smtp_rcpt("127.0.0.20", port);
    assert!(ok.starts_with("250"), "recorded address: {ok}");
    let refused = smtp_rcpt("127.0.0.21", port);
    assert!(
        refused.starts_with("554"),
        "failed login's address: {refused}"
    );
    let other = smtp_rcpt("127.0.0.22", port);
    assert!(other.starts_with("554"), "never seen address: {other}");
}

/// The recorder confines itself before it waits for the login: no_new_privs, no file outside
/// the relay directory (/etc/passwd refused), no exec; the debug hooks report it from inside.
/// Recording itself under that sandbox is what the other tests of this file check.
#[test]
fn recorder_is_confined_to_the_relay_directory() {
    let test = "recorder_is_confined_to_the_relay_directory";
    if !is_root() {
        return skip(test, "needs root (a root-owned relay directory)");
    }
    let d = private_dir();
    let relay = d.path().join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    // The chain is `true`: the pipe closes without the login byte, so the recorder logs its
    // hooks, finds EOF, records nothing and exits, closing the stderr it kept.
    let out = Command::new(bin("pop-relay-record"))
        .args(["--log", "stderr", "--dir"])
        .arg(&relay)
        .arg("true")
        .env("TCPREMOTEIP", "192.0.2.9")
        .env("POPSPOOL_TEST_SELF", "1")
        .env("POPSPOOL_TEST_OPEN", "/etc/passwd")
        .env("POPSPOOL_TEST_EXEC", "/bin/true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("test-self uid=0 nnp=1 "), "{err}");
    assert!(err.contains(" capeff=0x0 capprm=0x0"), "{err}");
    let abi = spool_wire::sandbox::kernel_abi();
    if abi < 1 {
        return skip(
            test,
            "the kernel has no Landlock: only no_new_privs checked",
        );
    }
    assert!(err.contains("test-open /etc/passwd: errno 13 "), "{err}");
    assert!(err.contains("test-exec /bin/true: errno 13 "), "{err}");
    assert!(!relay.join("192.0.2.9").exists(), "no login, no record");
}

/// The recorder holds no capability in any set, and still creates a record and refreshes an
/// old one's time: both are rights of the directory's and the records' owner, root.
#[test]
fn recorder_without_capabilities_still_records() {
    let test = "recorder_without_capabilities_still_records";
    if !is_root() {
        return skip(test, "needs root (a root-owned relay directory)");
    }
    let d = private_dir();
    let relay = d.path().join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    let rec = relay.join("192.0.2.11");
    let run = || {
        // The chain says "logged in" at once; the recorder keeps stderr, so output() returns
        // once it has recorded and exited.
        let out = Command::new(bin("pop-relay-record"))
            .args(["--log", "stderr", "--dir"])
            .arg(&relay)
            .args(["sh", "-c", r#"printf + >&"$POPRELAYFD""#])
            .env("TCPREMOTEIP", "192.0.2.11")
            .env("POPSPOOL_TEST_SELF", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("test-self uid=0 nnp=1 ") && err.contains(" capeff=0x0 capprm=0x0"),
            "{err}"
        );
        assert!(err.contains("client=192.0.2.11 recorded"), "{err}");
        err
    };
    run();
    assert!(appears(&rec), "the record is created");
    set_age(&rec, 90);
    run();
    let age = SystemTime::now()
        .duration_since(fs::metadata(&rec).unwrap().modified().unwrap())
        .unwrap_or_default();
    assert!(age < Duration::from_secs(30 * 60), "refreshed: {age:?}");
}

/// `pop-relay expire` confines itself to the relay directory before it removes anything:
/// no_new_privs, /etc/passwd and exec refused (debug hooks), and the old record still goes.
#[test]
fn expire_is_confined_to_the_relay_directory() {
    let test = "expire_is_confined_to_the_relay_directory";
    if !is_root() {
        return skip(test, "needs root (a root-owned relay directory)");
    }
    let d = private_dir();
    let relay = d.path().join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(relay.join("192.0.2.10"), "").unwrap();
    set_age(&relay.join("192.0.2.10"), 90);
    let out = Command::new(bin("pop-relay"))
        .args(["expire", "--log", "stderr", "--dir"])
        .arg(&relay)
        .env("POPSPOOL_TEST_SELF", "1")
        .env("POPSPOOL_TEST_OPEN", "/etc/passwd")
        .env("POPSPOOL_TEST_EXEC", "/bin/true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("test-self uid=0 nnp=1 "), "{err}");
    assert!(err.contains("expired 1 records"), "{err}");
    assert!(!relay.join("192.0.2.10").exists());
    let abi = spool_wire::sandbox::kernel_abi();
    if abi < 1 {
        return skip(
            test,
            "the kernel has no Landlock: only no_new_privs checked",
        );
    }
    assert!(err.contains("test-open /etc/passwd: errno 13 "), "{err}");
    assert!(err.contains("test-exec /bin/true: errno 13 "), "{err}");
}

/// `pop-relay export` writes the map from a confined process: no_new_privs, /etc/passwd, a
/// file in the map's own directory and exec refused (debug hooks), and the map still written;
/// with --postmap the confined child writes the map and the unconfined parent runs postmap,
/// whose map `postmap -q` reads.
#[test]
fn export_is_confined_to_the_relay_and_map_directories() {
    let test = "export_is_confined_to_the_relay_and_map_directories";
    if !is_root() {
        return skip(test, "needs root (root-owned relay and map directories)");
    }
    let d = private_dir();
    let relay = d.path().join("relay");
    let maps = d.path().join("maps");
    for p in [&relay, &maps] {
        fs::create_dir(p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(relay.join("192.0.2.20"), "").unwrap();
    let beside = maps.join("main.cf");
    fs::write(&beside, "secret\n").unwrap();
    let map = maps.join("relay");
    let postmap = which("postmap").or_else(|| {
        let p = PathBuf::from("/usr/sbin/postmap");
        p.exists().then_some(p)
    });
    let mut runs = vec![None];
    if let Some(p) = &postmap {
        runs.push(Some(format!("--postmap={}", p.display())));
    }
    for pm in &runs {
        let out = Command::new(bin("pop-relay"))
            .args(["export", "--log", "stderr", "--dir"])
            .arg(&relay)
            .arg("--map")
            .arg(&map)
            .args(pm.iter())
            .env("POPSPOOL_TEST_SELF", "1")
            .env(
                "POPSPOOL_TEST_OPEN",
                std::env::join_paths([Path::new("/etc/passwd"), &beside]).unwrap(),
            )
            .env("POPSPOOL_TEST_EXEC", "/bin/true")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{pm:?}: {err}");
        assert!(err.contains("test-self uid=0 nnp=1 "), "{err}");
        assert!(err.contains("exported 1 addresses"), "{err}");
        assert_eq!(fs::read_to_string(&map).unwrap(), "192.0.2.20 OK\n");
        let abi = spool_wire::sandbox::kernel_abi();
        if abi >= 1 {
            assert!(err.contains("test-open /etc/passwd: errno 13 "), "{err}");
            let refused = format!("test-open {}: errno 13 ", beside.display());
            assert!(err.contains(&refused), "{err}");
            assert!(err.contains("test-exec /bin/true: errno 13 "), "{err}");
        }
    }
    if runs.len() == 1 {
        return skip(test, "postfix not installed: postmap not checked");
    }
    let o = Command::new(postmap.unwrap())
        .args(["-q", "192.0.2.20"])
        .arg(format!("hash:{}", map.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "OK");
}

/// pop-relay-ok writes its byte to the pipe POPRELAYFD names, closes it and every other
/// inherited descriptor above 2, removes POPRELAYFD, and execs PROG with 0, 1 and 2 alone.
#[test]
fn relay_ok_leaves_its_program_only_the_client_descriptors() {
    let script = format!(
        r#"exec 5>&1 6</etc/hostname 7</dev/null; POPRELAYFD=5 exec {} --log stderr sh -c 'ls /proc/$$/fd; echo relay=$POPRELAYFD'"#,
        bin("pop-relay-ok").display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The pipe is the same as stdout here: the login byte comes first.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "+0\n1\n2\nrelay=\n",
        "{err}"
    );
}

/// `--require-sandbox`: on a kernel whose Landlock is older than the rights asked for
/// (`POPSPOOL_TEST_LANDLOCK_ABI=3`, debug builds) expire and export refuse with exit 111 and
/// change nothing; without the option they run partially confined.
#[test]
fn relay_require_sandbox_refuses_a_partial_sandbox() {
    let test = "relay_require_sandbox_refuses_a_partial_sandbox";
    if !is_root() {
        return skip(test, "needs root (a root-owned relay directory)");
    }
    let d = private_dir();
    let relay = d.path().join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    let rec = relay.join("192.0.2.30");
    fs::write(&rec, "").unwrap();
    set_age(&rec, 90);
    let map = d.path().join("map");
    let run = |args: &[&str], abi: &str| {
        let out = Command::new(bin("pop-relay"))
            .args(args)
            .args(["--log", "stderr", "--dir"])
            .arg(&relay)
            .env("POPSPOOL_TEST_LANDLOCK_ABI", abi)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let map_arg = map.to_str().unwrap();
    let export = ["export", "--max-age-minutes", "120", "--map", map_arg];
    let (code, err) = run(&["export", "--require-sandbox", "--map", map_arg], "3");
    assert_eq!(code, Some(111), "{err}");
    assert!(
        err.contains("--require-sandbox: landlock: partial"),
        "{err}"
    );
    assert!(!map.exists(), "{err}");
    let (code, err) = run(&["expire", "--require-sandbox"], "3");
    assert_eq!(code, Some(111), "{err}");
    assert!(rec.exists(), "{err}");
    let (code, err) = run(&export, "3");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read_to_string(&map).unwrap(), "192.0.2.30 OK\n");
    let (code, err) = run(&["expire"], "3");
    assert_eq!(code, Some(0), "{err}");
    assert!(!rec.exists(), "{err}");
}

/// pop-relay-record `--require-sandbox` on a kernel whose Landlock is older than the rights
/// asked for (`POPSPOOL_TEST_LANDLOCK_ABI=3`, debug builds): the recorder records nothing
/// and says why, and the login goes on (pop-relay-ok's byte meets a closed pipe, which it
/// logs); without the option it records.
#[test]
fn recorder_require_sandbox_records_nothing_when_partial() {
    let test = "recorder_require_sandbox_records_nothing_when_partial";
    if !is_root() {
        return skip(test, "needs root (a root-owned relay directory)");
    }
    let d = private_dir();
    let relay = d.path().join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(bin("pop-relay-record"))
            .args(["--log", "stderr", "--dir"])
            .arg(&relay)
            .args(extra)
            .arg(bin("pop-relay-ok"))
            .args(["--log", "stderr", "true"])
            .env("TCPREMOTEIP", "192.0.2.12")
            .env("POPSPOOL_TEST_LANDLOCK_ABI", "3")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{err}");
        err
    };
    let err = run(&["--require-sandbox"]);
    assert!(
        err.contains("--require-sandbox: landlock: partial"),
        "{err}"
    );
    assert!(!relay.join("192.0.2.12").exists(), "{err}");
    let err = run(&[]);
    assert!(err.contains("client=192.0.2.12 recorded"), "{err}");
    assert!(relay.join("192.0.2.12").exists(), "{err}");
}
