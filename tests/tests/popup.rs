//! pop-popup end to end over pipes and a socketpair, with the test-only checkpassword
//! `tests/fixtures/fake-checkpassword.sh` and a tiny fake server as SUBPROG.

use popspool_tests::pop::Client;
use popspool_tests::{bin, is_root, skip};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Stands in for pop-serve: announces itself (the answer to PASS), answers STAT and QUIT,
/// and reports its capabilities on CAPS.
const FAKE_SERVER: &str = r#"printf '+OK served\r\n'
while IFS= read -r l; do
  l=$(printf '%s' "$l" | tr -d '\r')
  case "$l" in
    STAT) printf '+OK 0 0\r\n' ;;
    CAPS) printf '+OK %s\r\n' "$(grep -E '^Cap(Bnd|Prm|Eff)' /proc/self/status | tr -s '\t\n' '= ')" ;;
    QUIT) printf '+OK bye\r\n'; exit 0 ;;
    *) printf -- '-ERR fake server\r\n' ;;
  esac
done"#;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake-checkpassword.sh")
}

struct Popup {
    child: Child,
    client: Client<ChildStdout, ChildStdin>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn command(extra: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(bin("pop-popup"));
    cmd.args(["--log", "stderr"]);
    if !extra.contains(&"--fail-delay-ms") {
        cmd.args(["--fail-delay-ms", "1"]);
    }
    cmd.args(extra)
        .arg("pop.example")
        .arg(fixture())
        .args(["sh", "-c", FAKE_SERVER])
        .env("FAKE_CKPW_LOG", dir.join("ckpw.log"))
        .stderr(Stdio::piped());
    cmd
}

fn spawn(extra: &[&str]) -> Popup {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(extra, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pop-popup");
    let client = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    Popup {
        child,
        client,
        log: dir.path().join("ckpw.log"),
        _dir: dir,
    }
}

impl Popup {
    /// The greeting's timestamp, `<...>` included.
    fn greeting(&mut self) -> String {
        let g = self.client.line();
        let stamp = g.strip_prefix("+OK ").expect("greeting").to_string();
        assert!(
            stamp.starts_with('<') && stamp.ends_with("@pop.example>"),
            "{g}"
        );
        let inner = &stamp[1..stamp.len() - 1];
        assert!(
            inner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".@_+/-".contains(&b)),
            "{stamp}"
        );
        stamp
    }

    /// Everything still to come on stdout (EOF means pop-popup and every child it started
    /// have closed it), then the exit code (bounded wait) and stderr.
    fn finish(self) -> (Vec<u8>, i32, String) {
        let Popup {
            mut child,
            client,
            _dir,
            ..
        } = self;
        let Client { mut r, w } = client;
        // Closing stdin first: a served fake session waits for commands until EOF.
        drop(w);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (rest, st.code().unwrap_or(-1), err);
            }
            assert!(Instant::now() < deadline, "pop-popup did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The fd-3 payloads the fake checkpassword received, split into (user, secret, stamp).
    fn payloads(&self) -> Vec<(String, String, String)> {
        let Ok(raw) = std::fs::read(&self.log) else {
            return Vec::new();
        };
        assert!(raw.ends_with(b"\0"));
        let f: Vec<String> = raw[..raw.len() - 1]
            .split(|&b| b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        assert_eq!(f.len() % 3, 0, "{raw:?}");
        f.chunks(3)
            .map(|c| (c[0].clone(), c[1].clone(), c[2].clone()))
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn greeting_capa_noop_quit() {
    let mut p = spawn(&["--expire", "never", "--login-delay", "60"]);
    let a = p.greeting();
    assert_eq!(p.client.cmd("CAPA"), "+OK capability list follows");
    assert_eq!(
        p.client.listing(),
        [
            "USER",
            "SASL PLAIN",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "TOP",
            "UIDL",
            "EXPIRE NEVER",
            "LOGIN-DELAY 60",
            "IMPLEMENTATION popspool"
        ]
    );
    assert_eq!(p.client.cmd("NOOP"), "+OK");
    assert_eq!(p.client.cmd("STLS"), "-ERR STLS not available");
    assert_eq!(p.client.cmd("STAT"), "-ERR authorization first");
    assert_eq!(p.client.cmd("QUIT"), "+OK");
    let (rest, code, _) = p.finish();
    assert!(rest.is_empty());
    assert_eq!(code, 0);

    // Every connection gets its own timestamp.
    let mut q = spawn(&[]);
    assert_ne!(q.greeting(), a);
    q.client.send("QUIT");
    assert_eq!(q.finish().1, 0);
}

#[test]
fn user_pass_good_is_served_by_the_child() {
    let mut p = spawn(&[]);
    let stamp = p.greeting();
    assert_eq!(p.client.cmd("USER good"), "+OK");
    assert_eq!(p.client.cmd("PASS secret"), "+OK served");
    assert_eq!(p.client.cmd("STAT"), "+OK 0 0");
    assert_eq!(p.client.cmd("QUIT"), "+OK bye");
    assert_eq!(
        p.payloads(),
        [("good".into(), "secret".into(), stamp.clone())]
    );
    // The exact bytes, as qmail-popup writes them.
    assert_eq!(
        std::fs::read(&p.log).unwrap(),
        format!("good\0secret\0{stamp}\0").into_bytes()
    );
    let (rest, code, err) = p.finish();
    assert!(rest.is_empty(), "{}", text(&rest));
    assert_eq!(code, 0);
    assert!(err.contains("auth user=good mech=USER result=ok"), "{err}");
    assert!(!err.contains("secret"), "password in the log: {err}");
}

#[test]
fn bad_password_retry_then_limit() {
    let mut p = spawn(&["--max-attempts", "3"]);
    p.greeting();
    for pass in ["wrong1", "wrong2"] {
        assert_eq!(p.client.cmd("USER good"), "+OK");
        assert_eq!(
            p.client.cmd(&format!("PASS {pass}")),
            "-ERR [AUTH] authentication failed"
        );
    }
    assert_eq!(p.client.cmd("USER nobody"), "+OK");
    assert_eq!(p.client.cmd("PASS x"), "-ERR [AUTH] too many failures");
    assert_eq!(p.payloads().len(), 3);
    let (rest, code, err) = p.finish();
    assert!(rest.is_empty());
    assert_eq!(code, 0);
    assert_eq!(err.matches("result=fail").count(), 3, "{err}");

    // A retry after a failure can succeed on the same connection.
    let mut p = spawn(&[]);
    p.greeting();
    p.client.cmd("USER good");
    assert_eq!(
        p.client.cmd("PASS nope"),
        "-ERR [AUTH] authentication failed"
    );
    p.client.cmd("USER good");
    assert_eq!(p.client.cmd("PASS secret"), "+OK served");
    p.client.send("QUIT");
    assert_eq!(p.finish().1, 0);
}

#[test]
fn failure_delay_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&["--fail-delay-ms", "150"], dir.path());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    c.line();
    let t = Instant::now();
    c.cmd("USER a");
    assert_eq!(c.cmd("PASS b"), "-ERR [AUTH] authentication failed");
    c.cmd("USER a");
    assert_eq!(c.cmd("PASS b"), "-ERR [AUTH] authentication failed");
    // 150 ms + 300 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    drop(c);
    child.wait().unwrap();
}

fn md5_hex(data: &str) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

#[test]
fn apop_digest_and_exact_fd3_bytes() {
    let mut p = spawn(&[]);
    let stamp = p.greeting();
    let digest = md5_hex(&format!("{stamp}secret"));
    assert_eq!(
        p.client
            .cmd(&format!("APOP good {}", digest.to_uppercase())),
        "+OK served"
    );
    assert_eq!(p.client.cmd("QUIT"), "+OK bye");
    assert_eq!(
        std::fs::read(&p.log).unwrap(),
        format!("good\0{digest}\0{stamp}\0").into_bytes()
    );
    assert_eq!(p.finish().1, 0);

    let mut p = spawn(&[]);
    p.greeting();
    assert_eq!(
        p.client.cmd("APOP good 0123456789abcdef0123456789abcdef"),
        "-ERR [AUTH] authentication failed"
    );
    p.client.send("QUIT");
    p.finish();
}

#[test]
fn no_apop() {
    let mut p = spawn(&["--no-apop"]);
    assert_eq!(p.client.line(), "+OK POP3 server ready");
    assert_eq!(
        p.client.cmd("APOP good 0123456789abcdef0123456789abcdef"),
        "-ERR APOP not available"
    );
    assert_eq!(p.client.cmd("USER good"), "+OK");
    assert_eq!(p.client.cmd("PASS secret"), "+OK served");
    p.client.send("QUIT");
    // The timestamp still goes on fd 3: the interface has three fields.
    let got = p.payloads();
    assert_eq!(got.len(), 1);
    assert!(got[0].2.starts_with('<') && got[0].2.ends_with("@pop.example>"));
    let (rest, code, _) = p.finish();
    assert_eq!(text(&rest), "+OK bye\r\n");
    assert_eq!(code, 0);
}

#[test]
fn auth_plain_with_and_without_initial_response_and_cancel() {
    // "\0good\0secret" and "good\0good\0secret"
    let mut p = spawn(&[]);
    let stamp = p.greeting();
    assert_eq!(p.client.cmd("AUTH"), "+OK");
    assert_eq!(p.client.listing(), ["PLAIN"]);
    assert_eq!(p.client.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(p.client.cmd("*"), "-ERR authentication cancelled");
    assert_eq!(p.client.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(
        p.client.cmd("AGdvb2QAd3Jvbmc="),
        "-ERR [AUTH] authentication failed"
    );
    assert_eq!(p.client.cmd("AUTH PLAIN AGdvb2QAc2VjcmV0"), "+OK served");
    assert_eq!(p.client.cmd("QUIT"), "+OK bye");
    assert_eq!(
        p.payloads(),
        [
            ("good".into(), "wrong".into(), stamp.clone()),
            ("good".into(), "secret".into(), stamp.clone())
        ]
    );
    let (_, code, err) = p.finish();
    assert_eq!(code, 0);
    assert!(err.contains("mech=PLAIN result=ok"), "{err}");

    let mut p = spawn(&[]);
    p.greeting();
    assert_eq!(p.client.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(p.client.cmd("Z29vZABnb29kAHNlY3JldA=="), "+OK served");
    p.client.send("QUIT");
    p.finish();

    let mut p = spawn(&[]);
    p.greeting();
    assert_eq!(
        p.client.cmd("AUTH PLAIN YWRtaW4AZ29vZABzZWNyZXQ="),
        "-ERR [AUTH] authorization identity refused"
    );
    assert_eq!(p.client.cmd("AUTH PLAIN Zm9v!"), "-ERR invalid base64");
    assert_eq!(
        p.client.cmd("AUTH LOGIN"),
        "-ERR unsupported SASL mechanism"
    );
    p.client.send("QUIT");
    p.finish();
}

#[test]
fn checkpassword_temporary_failure_misuse_and_crash() {
    for (user, want) in [
        (
            "temp",
            "-ERR [SYS/TEMP] authentication temporarily unavailable",
        ),
        (
            "crash",
            "-ERR [SYS/TEMP] authentication temporarily unavailable",
        ),
        ("misuse", "-ERR [SYS/PERM] authentication misconfigured"),
    ] {
        let mut p = spawn(&[]);
        p.greeting();
        p.client.cmd(&format!("USER {user}"));
        assert_eq!(p.client.cmd("PASS x"), want, "{user}");
        let (rest, code, err) = p.finish();
        assert!(rest.is_empty(), "{user}: {}", text(&rest));
        assert_eq!(code, 111, "{user}");
        assert!(err.contains(&format!("user={user}")), "{err}");
    }
}

#[test]
fn missing_checkpassword_program_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("pop-popup"))
        .args(["--log", "none", "h", "/nonexistent/checkpassword", "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    c.line();
    c.cmd("USER a");
    assert_eq!(
        c.cmd("PASS b"),
        "-ERR [SYS/TEMP] authentication temporarily unavailable"
    );
    drop(c);
    assert_eq!(child.wait().unwrap().code(), Some(111));
}

#[test]
fn timeout() {
    let mut p = spawn(&["--timeout", "1"]);
    p.greeting();
    let t = Instant::now();
    // Stdin stays open: only the deadline can end this.
    assert_eq!(p.client.line(), "-ERR authorization timed out");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let (rest, code, err) = p.finish();
    assert!(rest.is_empty());
    assert_eq!(code, 0);
    assert!(err.contains("end: authorization timed out"), "{err}");
}

#[test]
fn overlong_lines_and_credentials() {
    let mut p = spawn(&[]);
    p.greeting();
    assert_eq!(p.client.cmd(&"X".repeat(10_000)), "-ERR line too long");
    assert_eq!(p.client.cmd(&format!("USER {}", "u".repeat(200))), "+OK");
    assert_eq!(p.client.cmd("PASS x"), "-ERR [AUTH] credentials too long");
    assert_eq!(p.client.cmd("USER good"), "+OK");
    assert_eq!(
        p.client.cmd(&format!("PASS {}", "p".repeat(193))),
        "-ERR [AUTH] credentials too long"
    );
    assert_eq!(p.client.cmd("NOOP"), "+OK");
    // The checkpassword program was never asked.
    assert!(p.payloads().is_empty());
    p.client.send("QUIT");
    assert_eq!(p.finish().1, 0);
}

#[test]
fn bad_command_limit() {
    let mut p = spawn(&["--max-bad-commands", "3"]);
    p.greeting();
    assert_eq!(p.client.cmd("FOO"), "-ERR unknown command");
    assert_eq!(p.client.cmd("PASS x"), "-ERR USER first");
    assert_eq!(p.client.cmd("RETR 1"), "-ERR too many bad commands");
    let (rest, code, _) = p.finish();
    assert!(rest.is_empty());
    assert_eq!(code, 0);
}

#[test]
fn client_disconnects_mid_login() {
    let mut p = spawn(&[]);
    p.greeting();
    assert_eq!(p.client.cmd("USER good"), "+OK");
    p.client.w.write_all(b"PASS sec").unwrap();
    p.client.w.flush().unwrap();
    // Close our write end: pop-popup sees EOF mid-line.
    let Popup {
        mut child,
        client,
        log,
        _dir,
    } = p;
    let Client { mut r, w } = client;
    drop(w);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!log.exists());
}

#[test]
fn client_disconnects_after_pass_the_child_ends_and_so_do_we() {
    let mut p = spawn(&[]);
    p.greeting();
    p.client.send("USER good");
    p.client.send("PASS secret");
    assert_eq!(p.client.line(), "+OK");
    assert_eq!(p.client.line(), "+OK served");
    // finish() closes stdin; EOF on stdout proves no process still holds it.
    let (rest, code, _) = p.finish();
    assert!(rest.is_empty());
    assert_eq!(code, 0);
}

/// Everything pipelined after PASS reaches the served session, never eaten by pop-popup.
#[test]
fn pipelined_user_pass_stat_in_one_write_over_pipes() {
    let mut p = spawn(&[]);
    p.greeting();
    p.client
        .w
        .write_all(b"USER good\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
        .unwrap();
    p.client.w.flush().unwrap();
    assert_eq!(p.client.line(), "+OK");
    assert_eq!(p.client.line(), "+OK served");
    assert_eq!(p.client.line(), "+OK 0 0");
    assert_eq!(p.client.line(), "+OK bye");
    assert_eq!(p.finish().1, 0);
}

#[test]
fn pipelined_over_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs: OwnedFd = theirs.into();
    let mut child = command(&[], dir.path())
        .stdin(Stdio::from(theirs.try_clone().unwrap()))
        .stdout(Stdio::from(theirs))
        .spawn()
        .unwrap();
    let mut c = Client::new(ours.try_clone().unwrap(), ours);
    assert!(c.line().starts_with("+OK <"));
    // Failed login, retry, success and the session's commands in one write.
    c.w.write_all(
        b"CAPA\r\nUSER good\r\nPASS bad\r\nAUTH PLAIN\r\nAGdvb2QAc2VjcmV0\r\nSTAT\r\nQUIT\r\n",
    )
    .unwrap();
    assert_eq!(c.line(), "+OK capability list follows");
    c.listing();
    assert_eq!(c.line(), "+OK");
    assert_eq!(c.line(), "-ERR [AUTH] authentication failed");
    assert_eq!(c.line(), "+ ");
    assert_eq!(c.line(), "+OK served");
    assert_eq!(c.line(), "+OK 0 0");
    assert_eq!(c.line(), "+OK bye");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn usage_errors_exit_100() {
    for args in [
        vec!["--log", "stderr"],
        vec!["--log", "stderr", "host"],
        vec!["--log", "stderr", "host", "ckpw"],
        vec!["--log", "stderr", "bad host", "ckpw", "sub"],
        vec!["--log", "stderr", "host>", "ckpw", "sub"],
        vec!["--log", "stderr", "--max-attempts", "0", "h", "ckpw", "sub"],
    ] {
        let out = Command::new(bin("pop-popup"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(100), "{args:?}");
        // Nothing goes to the client.
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn args_after_subprog_pass_through_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("pop-popup"))
        .args(["--log", "none", "h"])
        .arg(fixture())
        .args([
            "sh",
            "-c",
            "printf '+OK %s|%s|%s\\r\\n' \"$0\" \"$1\" \"$2\"",
            "--x",
            "-y",
            "a b",
        ])
        .env("FAKE_CKPW_LOG", dir.path().join("l"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    c.line();
    c.cmd("USER good");
    assert_eq!(c.cmd("PASS secret"), "+OK --x|-y|a b");
    drop(c);
    child.wait().unwrap();
}

#[test]
fn capabilities_are_shed() {
    if !is_root() {
        skip("capabilities_are_shed", "needs root");
        return;
    }
    let mut p = spawn(&[]);
    p.greeting();
    // Waiting for a command: read its capability sets.
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let cap = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    // CAP_DAC_READ_SEARCH (2), CAP_SETGID (6), CAP_SETUID (7).
    let kept = (1 << 2) | (1 << 6) | (1 << 7);
    assert_eq!(cap("CapBnd:"), kept, "{status}");
    assert_eq!(cap("CapPrm:"), kept);
    assert_eq!(cap("CapEff:"), 0);
    assert_eq!(cap("CapInh:"), 0);
    assert_eq!(cap("CapAmb:"), 0);
    // The checkpassword chain, exec'd as root, gets exactly the kept set and nothing more.
    p.client.cmd("USER good");
    assert_eq!(p.client.cmd("PASS secret"), "+OK served");
    assert_eq!(
        p.client.cmd("CAPS"),
        "+OK CapPrm:=00000000000000c4 CapEff:=00000000000000c4 CapBnd:=00000000000000c4 "
    );
    p.client.send("QUIT");
    p.finish();
}
