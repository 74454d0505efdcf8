//! The whole login chain on loopback: tcpserver (or systemd-socket-activate --inetd) runs
//! pop-popup, which hands credentials on fd 3 to pop-checkpassword, which drops to the user
//! and execs pop-serve. Driven by real clients: curl, Python poplib (USER/PASS, APOP, AUTH
//! PLAIN), fetchmail and mpop.

use popspool_tests::gen::{self, Message};
use popspool_tests::listen::{self, Launcher, Listener};
use popspool_tests::{bin, is_root, skip, which};
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "s3cret pass";

struct World {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
    port: u16,
    listener: Option<Listener>,
}

impl World {
    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
    fn mbox(&self) -> PathBuf {
        self.spool().join("d/demo")
    }
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("chain.log")).unwrap_or_default()
    }
    fn url(&self, user: &str, path: &str) -> String {
        format!(
            "pop3://{user}:{}@127.0.0.1:{}/{path}",
            PASSWORD.replace(' ', "%20"),
            self.port
        )
    }
    /// Appends messages the way an MTA would: through pop-deliver, as root or as the user.
    fn deliver(&self, msgs: &[Message]) {
        for m in msgs {
            let mut c = Command::new(bin("pop-deliver"));
            c.args(["--log", "none", "--no-dotlock-helper", "--mailbox"])
                .arg(format!("mbox:{}", self.mbox().display()))
                .stdin(Stdio::piped());
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            let stored = m.stored();
            // pop-deliver writes its own From_ line; hand it the message without ours.
            let body = &stored[stored.iter().position(|&b| b == b'\n').unwrap() + 1..];
            let body = body.strip_suffix(b"\n").unwrap_or(body);
            child.stdin.take().unwrap().write_all(body).unwrap();
            assert!(child.wait().unwrap().success());
        }
        chown(&self.mbox(), self.uid, self.gid);
    }
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

/// Builds the scratch world (spool, home, passwd-file, a mailbox of `msgs`) and starts the
/// chain. As root the demo user maps to nobody; otherwise to the invoking user.
fn world(how: Launcher, msgs: &[Message], popup_extra: &[&str]) -> Option<World> {
    // Under (x)inetd fd 2 is the client's socket: every program must log to syslog there.
    let log_to = if matches!(how, Launcher::Xinetd) {
        "syslog"
    } else {
        "stderr"
    };
    let (uid, gid) = if is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    fs::create_dir_all(home.join("demo")).unwrap();
    fs::create_dir_all(dir.path().join("spool/d")).unwrap();
    chown(&home.join("demo"), uid, gid);
    chown(&dir.path().join("spool/d"), uid, gid);
    let crypt = spool_login::auth::crypt::hash_password(PASSWORD.as_bytes(), "$6$").unwrap();
    let users = format!(
        "demo:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{h}/demo::\ncrypted:{{SHA512-CRYPT}}{crypt}:{uid}:{gid}::{h}/demo::\n",
        h = home.display()
    );
    fs::write(dir.path().join("users"), users).unwrap();
    let mut w = World {
        dir,
        uid,
        gid,
        port: 0,
        listener: None,
    };
    fs::write(w.mbox(), gen::mbox_bytes(msgs)).unwrap();
    chown(&w.mbox(), uid, gid);
    fs::set_permissions(w.mbox(), fs::Permissions::from_mode(0o600)).unwrap();

    let mut chain: Vec<String> = vec![bin("pop-popup").display().to_string()];
    chain.extend(["--log", log_to, "--fail-delay-ms", "10"].map(String::from));
    chain.extend(popup_extra.iter().map(|s| s.to_string()));
    chain.push("popspool.test".into());
    chain.push(bin("pop-checkpassword").display().to_string());
    chain.extend(
        [
            "--source",
            "passwd-file",
            "--min-uid",
            "1",
            "--log",
            log_to,
            "--passwd-file",
        ]
        .map(String::from),
    );
    chain.push(w.dir.path().join("users").display().to_string());
    chain.push(bin("pop-serve").display().to_string());
    chain.extend(["--log", log_to, "--no-dotlock-helper", "--spool-dir"].map(String::from));
    chain.push(w.spool().display().to_string());
    let log = fs::File::create(w.dir.path().join("chain.log")).unwrap();
    let l = listen::start(how, &chain, Stdio::from(log))?;
    w.port = l.port;
    w.listener = Some(l);
    Some(w)
}

fn curl_works(how: Launcher) {
    let Some(curl) = which("curl") else {
        skip("chain curl", "curl not installed");
        return;
    };
    let msgs = gen::varied_rfc5322(31, 6);
    let Some(w) = world(how, &msgs, &[]) else {
        return;
    };
    for (i, m) in msgs.iter().enumerate() {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "20"])
            .arg(w.url("demo", &(i + 1).to_string()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {} {}",
            String::from_utf8_lossy(&out.stderr),
            w.log()
        );
        assert_eq!(out.stdout, m.canonical(), "message {}", i + 1);
    }
    // A crypt-stored user (whose own hashed-spool mailbox, c/crypted, does not exist: the
    // empty fast path), and a wrong password.
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "20"])
        .arg(w.url("crypted", ""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", w.log());
    assert!(
        out.stdout.iter().all(|b| b.is_ascii_whitespace()),
        "{:?}",
        out.stdout
    );
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "20"])
        .arg(format!("pop3://demo:wrong@127.0.0.1:{}/", w.port))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong password must fail");
    let log = w.log();
    assert!(
        !log.contains(PASSWORD) && !log.contains("s3cret"),
        "the password never reaches a log:\n{log}"
    );
}

#[test]
fn curl_through_the_chain_under_tcpserver() {
    curl_works(Launcher::Tcpserver);
}

#[test]
fn curl_through_the_chain_under_systemd_socket_activate() {
    curl_works(Launcher::SocketActivate);
}

#[test]
fn curl_through_the_chain_under_xinetd() {
    curl_works(Launcher::Xinetd);
}

const POPLIB: &str = r#"
import poplib, sys, hashlib, base64
port, password, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def fresh():
    return poplib.POP3("127.0.0.1", port, timeout=30)
# USER/PASS, with one failure first on the same connection.
p = fresh()
p.user("demo")
try:
    p.pass_("wrong")
    raise SystemExit("wrong password accepted")
except poplib.error_proto as e:
    assert b"[AUTH]" in e.args[0], e
p.user("demo"); p.pass_(password)
assert p.stat()[0] == n
p.quit()
# APOP with the greeting's timestamp.
p = fresh()
p.apop("demo", password)
assert len(p.uidl()[1]) == n
p.quit()
# SASL PLAIN with an initial response.
p = fresh()
resp = p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0demo\0" + password.encode()).decode())
assert resp.startswith(b"+OK"), resp
caps = p.capa()
assert "TOP" in caps and "UIDL" in caps, caps
assert p.stat()[0] == n
p.quit()
print("ok")
"#;

#[test]
fn poplib_user_pass_apop_and_sasl_plain() {
    let Some(py) = which("python3") else {
        skip("chain poplib", "python3 not installed");
        return;
    };
    let msgs = gen::varied_rfc5322(32, 5);
    let Some(w) = world(Launcher::Tcpserver, &msgs, &[]) else {
        return;
    };
    let out = Command::new(py)
        .args([
            "-c",
            POPLIB,
            &w.port.to_string(),
            PASSWORD,
            &msgs.len().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "poplib: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        w.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn the_session_runs_as_the_user() {
    if !is_root() {
        skip(
            "the_session_runs_as_the_user",
            "needs root to drop to another uid",
        );
        return;
    }
    let msgs = gen::varied_rfc5322(33, 2);
    let Some(w) = world(Launcher::Tcpserver, &msgs, &[]) else {
        return;
    };
    use std::io::{BufRead, BufReader, Write};
    let s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w_ = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    write!(w_, "USER demo\r\nPASS {PASSWORD}\r\n").unwrap();
    for _ in 0..2 {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("+OK"), "{line}");
    }
    // Find our pop-serve by its spool directory and read its ids from /proc.
    let spool = w.spool().display().to_string();
    let mut found = None;
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let c = String::from_utf8_lossy(&cmdline);
        if c.contains("pop-serve")
            && c.contains(&spool)
            && !c.contains("pop-popup")
            && !c.contains("pop-checkpassword")
        {
            found = Some(fs::read_to_string(e.path().join("status")).unwrap());
        }
    }
    let status = found.expect("pop-serve process");
    for key in ["Uid:", "Gid:"] {
        let l = status.lines().find(|l| l.starts_with(key)).unwrap();
        let ids: Vec<&str> = l.split_whitespace().skip(1).collect();
        assert_eq!(ids, vec!["65534"; 4], "{key} of pop-serve: {l}");
    }
    let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(
        caps.ends_with("0000000000000000"),
        "pop-serve holds no capability: {caps}"
    );
    write!(w_, "QUIT\r\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"));
}

#[test]
fn fetchmail_keeps_then_fetches_only_new_then_deletes() {
    let Some(fm) = which("fetchmail") else {
        skip("chain fetchmail", "fetchmail not installed");
        return;
    };
    let msgs = gen::varied_rfc5322(34, 4);
    let Some(w) = world(Launcher::Tcpserver, &msgs, &[]) else {
        return;
    };
    let d = w.dir.path();
    let rc = d.join("fetchmailrc");
    let out = d.join("fetched");
    fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 service {} protocol pop3 auth password uidl\n  user demo password \"{PASSWORD}\" is root here sslproto \"\"\n  mda \"/bin/sh -c 'cat >> {}; echo >> {}'\"\n",
            w.port,
            out.display(),
            out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&rc, fs::Permissions::from_mode(0o600)).unwrap();
    let run = |extra: &[&str]| {
        let o = Command::new(&fm)
            .args(["-f"])
            .arg(&rc)
            .args(["--idfile"])
            .arg(d.join("fetchids"))
            .args(["--pidfile"])
            .arg(d.join("fetchmail.pid"))
            .args(extra)
            .env("HOME", d)
            .output()
            .unwrap();
        // fetchmail exits 1 when there was no new mail.
        let code = o.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "fetchmail {code}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            w.log()
        );
        code
    };
    let count = |p: &Path| {
        String::from_utf8_lossy(&fs::read(p).unwrap_or_default())
            .matches("Message-ID: <")
            .count()
    };
    assert_eq!(run(&["--keep"]), 0);
    assert_eq!(count(&out), 4, "first run fetches everything");
    assert_eq!(run(&["--keep"]), 1, "second run: nothing new");
    assert_eq!(count(&out), 4);
    w.deliver(&[Message::simple(500), Message::simple(501)]);
    assert_eq!(run(&["--keep"]), 0);
    assert_eq!(count(&out), 6, "only the new mail is fetched");
    assert_eq!(run(&["--nokeep", "--all"]), 0);
    assert_eq!(
        fs::metadata(w.mbox()).unwrap().len(),
        0,
        "everything deleted at the end"
    );
}

#[test]
fn mpop_tracks_uidls() {
    let Some(mpop) = which("mpop") else {
        skip("chain mpop", "mpop not installed");
        return;
    };
    let msgs = gen::varied_rfc5322(35, 3);
    let Some(w) = world(Launcher::Tcpserver, &msgs, &[]) else {
        return;
    };
    let d = w.dir.path();
    let out = d.join("mpop.mbox");
    fs::write(&out, b"").unwrap();
    let run = || {
        let o = Command::new(&mpop)
            .args([
                "--host=127.0.0.1",
                "--tls=off",
                "--auth=user",
                "--user=demo",
                "--keep=on",
            ])
            .arg(format!("--port={}", w.port))
            .arg(format!("--passwordeval=echo '{PASSWORD}'"))
            .arg(format!("--uidls-file={}", d.join("uidls").display()))
            .arg(format!("--delivery=mbox,{}", out.display()))
            .arg("--quiet")
            .env("HOME", d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mpop: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            w.log()
        );
    };
    let count = || {
        String::from_utf8_lossy(&fs::read(&out).unwrap())
            .matches("Message-ID: <")
            .count()
    };
    run();
    assert_eq!(count(), 3);
    run();
    assert_eq!(count(), 3, "nothing fetched twice");
    w.deliver(&[Message::simple(600)]);
    run();
    assert_eq!(count(), 4, "only the new message");
}
