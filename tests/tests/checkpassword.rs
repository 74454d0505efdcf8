//! pop-checkpassword black-boxed through fd 3, by exit code (1 bad credentials, 2 misuse,
//! 111 temporary failure, otherwise the exec'd program's), with the exec'd program reporting the
//! environment and ids it was given. Hashes of every format are made at test time through
//! libcrypt (spool_login::auth::crypt), so no extra package is needed.

use popspool_tests::{bin, is_root, skip};
use spool_login::auth::apop;
use spool_login::auth::crypt::hash_password;
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// uid/gid the test accounts get when the tests run as root (any unused ids will do: the
/// accounts live only in the test's own files).
const TEST_UID: u32 = 4242;
const TEST_GID: u32 = 4243;

/// The program exec'd on success: ids, supplementary groups, cwd and environment.
const REPORT: &str = "echo uid=$(id -u) gid=$(id -g); \
    grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo cwd=$(pwd); env";

struct Fixture {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

struct Run {
    code: i32,
    out: String,
    took: Duration,
}

impl Run {
    fn env(&self) -> BTreeMap<String, String> {
        self.out
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| {
                k.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (uid, gid) = if is_root() {
        (TEST_UID, TEST_GID)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    if is_root() {
        nix::unistd::chown(
            &home,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    Fixture {
        dir,
        uid,
        gid,
        home,
    }
}

fn hash(pw: &str, prefix: &str) -> String {
    hash_password(pw.as_bytes(), prefix).unwrap_or_else(|e| panic!("{prefix}: {e:?}"))
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p.display().to_string()
    }

    /// /etc/passwd and /etc/shadow look-alikes. Returns the source arguments.
    fn system(&self) -> Vec<String> {
        let (u, g, h) = (self.uid, self.gid, self.home.display());
        let mut passwd = String::new();
        let mut shadow = String::new();
        let mut add = |name: &str, uid: u32, shell: &str, sh: &str| {
            passwd.push_str(&format!("{name}:x:{uid}:{g}:{name}:{h}:{shell}\n"));
            shadow.push_str(&format!("{name}:{sh}\n"));
        };
        let y = hash("alicepw", "$y$");
        add("alice", u, "/bin/sh", &format!("{y}:19000:0:99999:7:::"));
        for (user, prefix) in [
            ("u_y", "$y$"),
            ("u_6", "$6$"),
            ("u_5", "$5$"),
            ("u_2b", "$2b$"),
            ("u_1", "$1$"),
        ] {
            add(
                user,
                u,
                "/bin/sh",
                &format!("{}:19000::::::", hash(&format!("pw-{user}"), prefix)),
            );
        }
        add("locked", u, "/bin/sh", &format!("!{y}:19000::::::"));
        add("star", u, "/bin/sh", "*:19000::::::");
        add("empty", u, "/bin/sh", ":19000::::::");
        add("expired", u, "/bin/sh", &format!("{y}:19000:::::1:"));
        add("pwexpired", u, "/bin/sh", &format!("{y}:100:0:10:7:::"));
        add("mustchange", u, "/bin/sh", &format!("{y}:0::::::"));
        add("nolog", u, "/usr/sbin/nologin", &format!("{y}:19000::::::"));
        add("falsesh", u, "/bin/false", &format!("{y}:19000::::::"));
        add("des", u, "/bin/sh", "abJnggxhB/yWI:19000::::::"); // crypt("password", "ab")
        add("lowuid", 500, "/bin/sh", &format!("{y}:19000::::::"));
        add("toor", 0, "/bin/sh", &format!("{y}:19000::::::"));
        passwd.push_str(&format!("nohome:x:{u}:{g}::{h}/missing:/bin/sh\n"));
        shadow.push_str(&format!("nohome:{y}:19000::::::\n"));
        vec![
            "--passwd".into(),
            self.write("passwd", &passwd),
            "--shadow".into(),
            self.write("shadow", &shadow),
        ]
    }

    /// A Dovecot passwd-file. Returns the source arguments.
    fn passwd_file(&self) -> Vec<String> {
        let (u, g, h) = (self.uid, self.gid, self.home.display());
        let text = format!(
            "# virtual users\n\
             \n\
             vbob:{{PLAIN}}bobpw:{u}:{g}::{h}::userdb_mail=maildir:~/Maildir\n\
             vclear:{{CLEARTEXT}}clearpw:{u}:{g}::{h}\n\
             vcarol:{{SHA512-CRYPT}}{}\n\
             vbare:{}:{u}:{g}::{h}\n\
             vssha:{{SSHA}}bm90IGEgcmVhbCBoYXNo:{u}:{g}::{h}\n\
             vroot:{{PLAIN}}rootpw:0:0::{h}\n\
             vnoid:{{PLAIN}}noidpw\n",
            hash("carolpw", "$6$"),
            hash("barepw", "$y$"),
        );
        vec![
            "--source".into(),
            "passwd-file".into(),
            "--passwd-file".into(),
            self.write("users", &text),
        ]
    }
}

/// Runs pop-checkpassword with `fd3` on fd 3 (None: fd 3 closed) and `args` before PROG.
fn run_with(
    args: &[String],
    fd3: Option<&[u8]>,
    env: &[(&str, &str)],
    prog: &[&str],
    as_nobody: bool,
) -> Run {
    let mut cmd = Command::new(bin("pop-checkpassword"));
    cmd.args(["--log", "none"])
        .args(args)
        .args(prog)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Both ends close-on-exec: only the dup onto fd 3 reaches the child, so it sees EOF once
    // the writer thread is done, and no other test's child holds the pipe open.
    let (read_end, write_end): (Option<OwnedFd>, Option<OwnedFd>) = match fd3 {
        Some(_) => {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let raw = read_end.as_ref().map(|r| r.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (dup2, fcntl, close, setgroups, setgid, setuid) on descriptors and ids it owns.
    unsafe {
        cmd.pre_exec(move || {
            match raw {
                Some(3) => {
                    if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Some(fd) => {
                    if libc::dup2(fd, 3) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                None => {
                    libc::close(3);
                }
            }
            if as_nobody {
                let g: libc::gid_t = 65534;
                if libc::setgroups(1, &g) == -1
                    || libc::setgid(65534) == -1
                    || libc::setuid(65534) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = cmd.spawn().unwrap();
    drop(read_end);
    // Written from a thread: more than a pipe's worth of data would block before the child reads.
    let writer = write_end.map(|w| {
        let data = fd3.unwrap_or_default().to_vec();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(w);
            // The child may stop reading early (oversized input): EPIPE is expected then.
            let _ = std::io::Write::write_all(&mut f, &data);
        })
    });
    let out: Output = child.wait_with_output().unwrap();
    let took = start.elapsed();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
        took,
    }
}

fn run(args: &[String], fd3: &[u8]) -> Run {
    run_with(args, Some(fd3), &[], &["/bin/sh", "-c", REPORT], false)
}

fn creds(user: &str, pw: &str, ts: &str) -> Vec<u8> {
    format!("{user}\0{pw}\0{ts}\0").into_bytes()
}

fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    base.extend(extra.iter().map(|s| s.to_string()));
    base
}

fn assert_code(r: &Run, want: i32, what: &str) {
    assert_eq!(r.code, want, "{what}: output:\n{}", r.out);
}

#[test]
fn good_login_sets_ids_env_and_cwd() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    let r = run(&args, &creds("alice", "alicepw", ""));
    assert_code(&r, 0, "alice");
    let env = r.env();
    assert_eq!(env["USER"], "alice");
    assert_eq!(env["LOGNAME"], "alice");
    assert_eq!(env["HOME"], f.home.display().to_string());
    assert_eq!(env["SHELL"], "/bin/sh");
    assert!(!env.contains_key("MAIL"));
    assert!(
        r.out.contains(&format!("cwd={}", f.home.display())),
        "{}",
        r.out
    );
    assert!(
        r.out.contains(&format!("uid={} gid={}", f.uid, f.gid)),
        "{}",
        r.out
    );
    if is_root() {
        let (u, g) = (f.uid, f.gid);
        assert!(
            r.out.contains(&format!("Uid:\t{u}\t{u}\t{u}\t{u}")),
            "{}",
            r.out
        );
        assert!(
            r.out.contains(&format!("Gid:\t{g}\t{g}\t{g}\t{g}")),
            "{}",
            r.out
        );
        // initgroups for a user in no /etc/group entry: the primary group only.
        let groups = r.out.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert_eq!(
            groups.split_whitespace().skip(1).collect::<Vec<_>>(),
            vec![g.to_string()]
        );
    } else {
        skip("good_login_sets_ids_env_and_cwd (id change)", "needs root");
    }
}

#[test]
fn bad_unknown_and_empty_credentials_exit_1() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    for (c, what) in [
        (creds("alice", "wrong", ""), "wrong password"),
        (
            creds("alice", "alicepw ", ""),
            "password with a trailing space",
        ),
        (creds("nosuchuser", "alicepw", ""), "unknown user"),
        (creds("", "alicepw", ""), "empty user"),
        (creds("alice", "", ""), "empty password"),
        (creds("", "", ""), "all empty"),
        (creds("alice:x", "alicepw", ""), "user with a colon"),
    ] {
        assert_code(&run(&args, &c), 1, what);
    }
}

#[test]
fn malformed_fd3_is_misuse_and_oversize_is_refused() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    for (data, what) in [
        (&b""[..], "nothing"),
        (b"alice", "no NUL"),
        (b"alice\0", "no password"),
        (b"alice\0alicepw", "password without NUL"),
        (b"alice\0alicepw\0<ts>", "timestamp without NUL"),
    ] {
        assert_code(&run(&args, data), 2, what);
    }
    // No timestamp at all is accepted, as DJB's checkpassword does.
    assert_code(&run(&args, b"alice\0alicepw\0"), 0, "no timestamp");

    let mut at_limit = b"alice\0alicepw\0".to_vec();
    at_limit.resize(511, b'x');
    at_limit.push(0);
    assert_eq!(at_limit.len(), 512);
    assert_code(&run(&args, &at_limit), 0, "512 bytes");
    let mut over = at_limit.clone();
    over.insert(20, b'x');
    assert_eq!(over.len(), 513);
    assert_code(&run(&args, &over), 1, "513 bytes");
    assert_code(&run(&args, &vec![b'a'; 100_000]), 1, "100000 bytes");

    let r = run_with(&args, None, &[], &["/bin/true"], false);
    assert_code(&r, 2, "fd 3 closed");
}

#[test]
fn usage_errors_are_misuse() {
    let f = fixture();
    let mut c = Command::new(bin("pop-checkpassword"));
    let st = c
        .args(["--log", "none"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2), "no PROG");
    let st = Command::new(bin("pop-checkpassword"))
        .args(["--log", "none", "--source", "passwd-file", "/bin/true"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2), "passwd-file without a path");
    let args = with(f.system(), &["--no-such-option"]);
    assert_code(
        &run(&args, &creds("alice", "alicepw", "")),
        2,
        "unknown option",
    );
}

#[test]
fn every_debian_hash_format() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    for user in ["u_y", "u_6", "u_5", "u_2b", "u_1"] {
        assert_code(
            &run(&args, &creds(user, &format!("pw-{user}"), "")),
            0,
            user,
        );
        assert_code(&run(&args, &creds(user, "pw-wrong", "")), 1, user);
    }
    // DES only with --allow-des; an empty hash never.
    assert_code(&run(&args, &creds("des", "password", "")), 1, "des refused");
    let des = with(args.clone(), &["--allow-des"]);
    assert_code(&run(&des, &creds("des", "password", "")), 0, "des allowed");
    assert_code(&run(&des, &creds("des", "passwore", "")), 1, "des wrong");
    assert_code(
        &run(&des, &creds("empty", "", "")),
        1,
        "empty hash, empty password",
    );
    assert_code(&run(&des, &creds("empty", "x", "")), 1, "empty hash");
}

#[test]
fn locked_expired_and_shell_policy() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    for user in [
        "locked",
        "star",
        "expired",
        "pwexpired",
        "mustchange",
        "nolog",
        "falsesh",
    ] {
        assert_code(&run(&args, &creds(user, "alicepw", "")), 1, user);
    }
    let aging = with(args.clone(), &["--ignore-password-aging"]);
    assert_code(
        &run(&aging, &creds("pwexpired", "alicepw", "")),
        0,
        "aging ignored",
    );
    assert_code(
        &run(&aging, &creds("mustchange", "alicepw", "")),
        0,
        "aging ignored",
    );
    assert_code(
        &run(&aging, &creds("expired", "alicepw", "")),
        1,
        "expiry still applies",
    );
    let nologin = with(args.clone(), &["--allow-nologin-shell"]);
    assert_code(
        &run(&nologin, &creds("nolog", "alicepw", "")),
        0,
        "nologin allowed",
    );
    assert_code(
        &run(&nologin, &creds("locked", "alicepw", "")),
        1,
        "still locked",
    );

    let only_bash = f.write("shells-bash", "# /etc/shells\n/bin/bash\n");
    let with_sh = f.write("shells-sh", "/bin/bash\n/bin/sh\n");
    let req = |file: &str| with(args.clone(), &["--require-valid-shell", "--shells", file]);
    assert_code(
        &run(&req(&only_bash), &creds("alice", "alicepw", "")),
        1,
        "shell not listed",
    );
    assert_code(
        &run(&req(&with_sh), &creds("alice", "alicepw", "")),
        0,
        "shell listed",
    );
    assert_code(
        &run(&req("/nonexistent/shells"), &creds("alice", "alicepw", "")),
        111,
        "no shells file",
    );
}

#[test]
fn uid_policy_and_root() {
    let f = fixture();
    let sys = f.system();
    // Default --min-uid 1000.
    assert_code(
        &run(&sys, &creds("lowuid", "alicepw", "")),
        1,
        "uid 500 < 1000",
    );
    assert_code(
        &run(
            &with(sys.clone(), &["--min-uid", "0"]),
            &creds("toor", "alicepw", ""),
        ),
        1,
        "uid 0",
    );
    assert_code(
        &run(
            &with(sys.clone(), &["--allow-root"]),
            &creds("toor", "alicepw", ""),
        ),
        1,
        "uid 0 < min-uid",
    );
    let pf = with(f.passwd_file(), &["--min-uid", "0"]);
    assert_code(&run(&pf, &creds("vroot", "rootpw", "")), 1, "virtual uid 0");
    if is_root() {
        let r = run(
            &with(sys.clone(), &["--allow-root", "--min-uid", "0"]),
            &creds("toor", "alicepw", ""),
        );
        assert_code(&r, 0, "root allowed");
        assert!(r.out.contains("uid=0 gid="), "{}", r.out);
        if f.uid >= 1000 {
            assert_code(
                &run(&sys, &creds("alice", "alicepw", "")),
                0,
                "default min-uid",
            );
        }
    } else {
        skip("uid_policy_and_root (root allowed)", "needs root");
    }
}

#[test]
fn passwd_file_plain_apop_and_crypt() {
    let f = fixture();
    let args = with(f.passwd_file(), &["--min-uid", "1"]);
    let ts = "<1896.697170952@dbc.mtview.ca.us>";
    let r = run(&args, &creds("vbob", "bobpw", ts));
    assert_code(
        &r,
        0,
        "plain with a timestamp (USER/PASS through qmail-popup)",
    );
    let env = r.env();
    assert_eq!(env["USER"], "vbob");
    assert_eq!(env["MAIL"], format!("maildir:{}/Maildir", f.home.display()));
    assert!(!env.contains_key("SHELL"), "{}", r.out);
    if is_root() {
        assert!(
            r.out.contains(&format!("uid={} gid={}", f.uid, f.gid)),
            "{}",
            r.out
        );
        let groups = r.out.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert_eq!(
            groups.split_whitespace().skip(1).collect::<Vec<_>>(),
            vec![f.gid.to_string()]
        );
    }
    assert_code(&run(&args, &creds("vbob", "bobpw", "")), 0, "plain");
    assert_code(&run(&args, &creds("vbob", "bobpX", ts)), 1, "plain wrong");
    assert_code(&run(&args, &creds("vclear", "clearpw", "")), 0, "cleartext");

    let digest = String::from_utf8(apop::digest(ts.as_bytes(), b"bobpw").to_vec()).unwrap();
    assert_code(&run(&args, &creds("vbob", &digest, ts)), 0, "APOP right");
    assert_code(
        &run(&args, &creds("vbob", &digest.to_uppercase(), ts)),
        0,
        "APOP upper-case hex",
    );
    assert_code(
        &run(&args, &creds("vbob", &digest, "<other@ts>")),
        1,
        "APOP other timestamp",
    );
    assert_code(
        &run(&args, &creds("vbob", &digest, "")),
        1,
        "digest without timestamp",
    );
    let wrong = String::from_utf8(apop::digest(ts.as_bytes(), b"bobpX").to_vec()).unwrap();
    assert_code(&run(&args, &creds("vbob", &wrong, ts)), 1, "APOP wrong");
    // A crypt-stored secret cannot do APOP; its password still works with a timestamp.
    let cdig = String::from_utf8(apop::digest(ts.as_bytes(), b"carolpw").to_vec()).unwrap();
    let virt = with(
        args.clone(),
        &[
            "--virtual-uid",
            &f.uid.to_string(),
            "--virtual-gid",
            &f.gid.to_string(),
            "--virtual-home",
            &f.home.display().to_string(),
        ],
    );
    assert_code(
        &run(&virt, &creds("vcarol", &cdig, ts)),
        1,
        "APOP against crypt",
    );
    let r = run(&virt, &creds("vcarol", "carolpw", ts));
    assert_code(&r, 0, "SHA512-CRYPT with defaults");
    assert!(
        r.out.contains(&format!("cwd={}", f.home.display())),
        "{}",
        r.out
    );
    assert_code(
        &run(&args, &creds("vbare", "barepw", "")),
        0,
        "bare crypt hash",
    );
    assert_code(
        &run(&args, &creds("vssha", "anything", "")),
        1,
        "unsupported scheme",
    );
    assert_code(&run(&args, &creds("nobody", "bobpw", "")), 1, "unknown");
    assert_code(&run(&args, &creds("#", "x", "")), 1, "comment is no user");
    // Right password but no uid/gid anywhere: the database is incomplete, not the credentials.
    assert_code(&run(&args, &creds("vnoid", "noidpw", "")), 111, "no uid");
    assert_code(
        &run(&args, &creds("vnoid", "wrong", "")),
        1,
        "no uid, wrong password",
    );
}

#[test]
fn environment_is_scrubbed() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1", "--keep-env", "POPKEEP"]);
    let r = run_with(
        &args,
        Some(&creds("alice", "alicepw", "")),
        &[
            ("TCPREMOTEIP", "192.0.2.7"),
            ("PROTO", "TCP"),
            ("LD_LIBRARY_PATH", "/tmp/evil"),
            ("USER", "root"),
            ("HOME", "/root"),
            ("MAIL", "/var/mail/root"),
            ("RANDOMVAR", "1"),
            ("POPKEEP", "kept"),
        ],
        &["/bin/sh", "-c", REPORT],
        false,
    );
    assert_code(&r, 0, "alice");
    let env = r.env();
    assert_eq!(env["TCPREMOTEIP"], "192.0.2.7");
    assert_eq!(env["PROTO"], "TCP");
    assert_eq!(env["POPKEEP"], "kept");
    assert_eq!(env["USER"], "alice");
    assert_eq!(env["HOME"], f.home.display().to_string());
    assert_eq!(env["PATH"], "/usr/bin:/bin");
    for gone in ["LD_LIBRARY_PATH", "MAIL", "RANDOMVAR"] {
        assert!(!env.contains_key(gone), "{gone} leaked: {}", r.out);
    }
}

#[test]
fn temporary_failures_exit_111() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    assert_code(
        &run(&args, &creds("nohome", "alicepw", "")),
        111,
        "missing home",
    );
    let r = run_with(
        &args,
        Some(&creds("alice", "alicepw", "")),
        &[],
        &["/nonexistent/prog"],
        false,
    );
    assert_code(&r, 111, "exec failure");
    let broken = vec![
        "--min-uid".to_string(),
        "1".into(),
        "--passwd".into(),
        f.path("passwd").display().to_string(),
        "--shadow".into(),
        "/nonexistent/shadow".into(),
    ];
    assert_code(
        &run(&broken, &creds("alice", "alicepw", "")),
        111,
        "unreadable shadow",
    );
    let missing = vec!["--passwd".to_string(), "/nonexistent/passwd".into()];
    assert_code(
        &run(&missing, &creds("alice", "alicepw", "")),
        111,
        "unreadable passwd",
    );
}

#[test]
fn exec_status_is_the_programs() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    let r = run_with(
        &args,
        Some(&creds("alice", "alicepw", "")),
        &[],
        &["sh", "-c", "exit 7"],
        false,
    );
    assert_code(&r, 7, "PROG's status, PROG found on PATH");
}

#[test]
fn unprivileged_serves_only_the_invoking_user() {
    if !is_root() {
        skip(
            "unprivileged_serves_only_the_invoking_user",
            "needs root to become nobody",
        );
        return;
    }
    let f = fixture();
    let y = hash("nobodypw", "$y$");
    let passwd = f.write(
        "passwd-nobody",
        &format!(
            "nobody:x:65534:65534::{h}:/bin/sh\nalice:x:{u}:{g}::{h}:/bin/sh\n",
            h = f.dir.path().display(),
            u = f.uid,
            g = f.gid
        ),
    );
    let shadow = f.write(
        "shadow-nobody",
        &format!("nobody:{y}:19000::::::\nalice:{y}:19000::::::\n"),
    );
    let args = vec![
        "--min-uid".to_string(),
        "1".into(),
        "--passwd".into(),
        passwd,
        "--shadow".into(),
        shadow,
    ];
    let prog = ["/bin/sh", "-c", REPORT];
    let r = run_with(
        &args,
        Some(&creds("nobody", "nobodypw", "")),
        &[],
        &prog,
        true,
    );
    assert_code(&r, 0, "own account");
    assert!(r.out.contains("uid=65534"), "{}", r.out);
    let r = run_with(
        &args,
        Some(&creds("alice", "nobodypw", "")),
        &[],
        &prog,
        true,
    );
    assert_code(&r, 1, "someone else's account needs root");
}

#[test]
fn unknown_users_cost_as_much_as_wrong_passwords() {
    let f = fixture();
    let args = with(f.system(), &["--min-uid", "1"]);
    let rounds = 6;
    let (mut known, mut unknown, mut locked) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let r = run(&args, &creds("alice", "wrongpw", ""));
        assert_code(&r, 1, "known");
        known += r.took;
        let r = run(&args, &creds("nosuchuser", "wrongpw", ""));
        assert_code(&r, 1, "unknown");
        unknown += r.took;
        let r = run(&args, &creds("locked", "wrongpw", ""));
        assert_code(&r, 1, "locked");
        locked += r.took;
    }
    for (what, t) in [("unknown", unknown), ("locked", locked)] {
        let ratio = t.as_secs_f64() / known.as_secs_f64();
        assert!(
            (1.0 / 3.0..=3.0).contains(&ratio),
            "{what} {t:?} vs known-user wrong password {known:?} over {rounds} rounds"
        );
    }
}

#[test]
fn test_hashes_use_libcrypt_formats() {
    // Sanity for the fixture itself: a yescrypt hash from libcrypt looks like passwd(1)'s.
    let h = hash("x", "$y$");
    assert!(h.starts_with("$y$j9T$"), "{h}");
    assert!(Path::new("/bin/sh").exists());
}
