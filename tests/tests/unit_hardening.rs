//! The shipped systemd units are sandboxed, and the sandbox leaves the chain working.
//!
//! 1. `systemd-analyze security --offline=yes` rates every scripts/systemd/*.service at 4.0 or
//!    below (the "Overall exposure level" line, and `--threshold=40`'s exit status).
//! 2. Without systemd as PID 1 the units cannot be started for real, so the settings that can
//!    be reproduced outside systemd are: each unit's command runs (as root) with exactly the
//!    unit's CapabilityBoundingSet= (setpriv), in a private network namespace (unshare --net,
//!    for PrivateNetwork=), with the unit's UMask=, and NoNewPrivileges= when the unit sets it,
//!    under strace; every system call the programs made must be one the unit's
//!    SystemCallFilter= allows (its groups expanded by `systemd-analyze syscall-filter`). The
//!    plain unit serves a root:mail 2775 spool through the setgid pop-dotlock, the TLS units
//!    serve curl through systemd-socket-activate, the rotation unit rotates a key file.

use popspool_tests::gen;
use popspool_tests::tlsca::Pki;
use popspool_tests::{bin, is_root, skip, which};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret";
/// The bar for every shipped unit.
const MAX_EXPOSURE: f64 = 4.0;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn shipped(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every .service file in scripts/systemd, sorted.
fn services() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(repo().join("scripts/systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    v.sort();
    v
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

/// Every value of `Key=` in a unit, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit_values(unit, key).pop()
}

/// "Overall exposure level for NAME: 1.7 OK" -> 1.7
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn every_shipped_service_rates_at_most_4() {
    let Some(analyze) = which("systemd-analyze") else {
        skip(
            "every_shipped_service_rates_at_most_4",
            "systemd-analyze not installed (package systemd)",
        );
        return;
    };
    let units = services();
    assert!(units.len() >= 4, "the shipped services: {units:?}");
    for unit in units {
        // --offline=yes reads the file alone: no running systemd, no installed binaries.
        let out = Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let level = exposure(&report).unwrap_or_else(|| {
            panic!(
                "{}: no exposure level in\n{report}\n{}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        eprintln!("{}: exposure {level}", unit.display());
        assert!(
            level <= MAX_EXPOSURE,
            "{}: exposure {level} > {MAX_EXPOSURE}:\n{report}",
            unit.display()
        );
        // The same bar through systemd-analyze's own check (the threshold is in tenths).
        let status = Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager", "--threshold=40"])
            .arg(&unit)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{}: --threshold=40 fails", unit.display());
    }
}

#[test]
fn exposure_line_parses() {
    let r = "✗ UMask=  x  0.1\n\n→ Overall exposure level for pop3@i.service: 9.4 UNSAFE 😨\n";
    assert_eq!(exposure(r), Some(9.4));
    assert_eq!(exposure("nothing"), None);
}

/// The system calls a group or name stands for, groups expanded recursively.
fn expand(analyze: &Path, item: &str, out: &mut BTreeSet<String>) {
    if !item.starts_with('@') {
        out.insert(item.to_string());
        return;
    }
    let o = Command::new(analyze)
        .args(["syscall-filter", "--no-pager", item])
        .output()
        .unwrap();
    assert!(o.status.success(), "syscall-filter {item}: {o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    for line in text.lines().skip(1) {
        let word = line.split('#').next().unwrap_or("").trim();
        if !word.is_empty() {
            expand(analyze, word, out);
        }
    }
}

/// What a unit's SystemCallFilter= lines allow: the allow list, less every `~` deny list.
fn allowed_syscalls(analyze: &Path, unit: &str) -> BTreeSet<String> {
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    for v in unit_values(unit, "SystemCallFilter") {
        let (set, items) = match v.strip_prefix('~') {
            Some(rest) => (&mut deny, rest),
            None => (&mut allow, v),
        };
        for item in items.split_whitespace() {
            expand(analyze, item, set);
        }
    }
    assert!(!allow.is_empty(), "the unit has an allow list");
    allow.difference(&deny).cloned().collect()
}

/// The system calls in an `strace -f` log made by the programs under test: a process counts
/// from its execve of a program in one of `dirs`, and so do the processes it forks. The wrappers
/// (unshare, setpriv, the launcher) are not counted.
fn syscalls_of(trace: &str, dirs: &[&Path]) -> BTreeSet<String> {
    let mut ours: BTreeSet<String> = BTreeSet::new();
    let mut used = BTreeSet::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let name: String = match rest.strip_prefix("<... ") {
            Some(r) => r.chars().take_while(|c| *c != ' ').collect(),
            None => rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        };
        if name.is_empty() || !(rest.starts_with("<... ") || rest[name.len()..].starts_with('(')) {
            continue;
        }
        let program = rest.strip_prefix("execve(\"").unwrap_or("");
        if !program.is_empty()
            && dirs
                .iter()
                .any(|d| program.starts_with(&*d.to_string_lossy()))
        {
            ours.insert(pid.to_string());
        }
        if !ours.contains(pid) {
            continue;
        }
        used.insert(name.clone());
        if matches!(name.as_str(), "clone" | "clone3" | "fork" | "vfork") {
            if let Some((_, ret)) = rest.rsplit_once(" = ") {
                let child: String = ret.chars().take_while(char::is_ascii_digit).collect();
                if !child.is_empty() && child != "0" {
                    ours.insert(child);
                }
            }
        }
    }
    used
}

#[test]
fn trace_parsing_follows_forks_of_our_programs_only() {
    let t = "10 execve(\"/usr/bin/setpriv\", [..]) = 0\n\
             10 unshare(CLONE_NEWNET) = 0\n\
             10 execve(\"/x/target/pop-popup\", [..] <unfinished ...>\n\
             10 <... execve resumed>) = 0\n\
             10 clone3({flags=CLONE_VM}, 88 <unfinished ...>\n\
             10 <... clone3 resumed>) = 11\n\
             11 setresuid(1, 1, 1) = 0\n\
             12 mount(\"a\", \"b\") = 0\n\
             10 +++ exited with 0 +++\n";
    let got = syscalls_of(t, &[Path::new("/x/target")]);
    let want: BTreeSet<String> = ["execve", "clone3", "setresuid"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}

/// What the sandbox check needs, or None with a SKIPPED line.
struct Tools {
    analyze: PathBuf,
    strace: PathBuf,
    unshare: PathBuf,
    setpriv: PathBuf,
}

fn tools(test: &str) -> Option<Tools> {
    if !is_root() {
        skip(
            test,
            "needs root (capability bounding set, network namespace, setgid helper)",
        );
        return None;
    }
    let find = |p: &str| {
        which(p).or_else(|| Some(PathBuf::from(format!("/usr/bin/{p}"))).filter(|p| p.is_file()))
    };
    match (
        find("systemd-analyze"),
        find("strace"),
        find("unshare"),
        find("setpriv"),
    ) {
        (Some(analyze), Some(strace), Some(unshare), Some(setpriv)) => Some(Tools {
            analyze,
            strace,
            unshare,
            setpriv,
        }),
        _ => {
            skip(
                test,
                "needs systemd-analyze, strace, unshare and setpriv (packages systemd, strace, util-linux)",
            );
            None
        }
    }
}

/// `CAP_SETUID CAP_SETGID` -> `-all,+setuid,+setgid` (empty: `-all`).
fn bounding_for_setpriv(unit: &str) -> String {
    let set = unit_value(unit, "CapabilityBoundingSet").expect("CapabilityBoundingSet=");
    let mut s = String::from("-all");
    for cap in set.split_whitespace() {
        let name = cap.strip_prefix("CAP_").expect("CAP_ name").to_lowercase();
        s.push_str(",+");
        s.push_str(&name);
    }
    s
}

/// The unit's sandbox as far as it is reproducible here, in front of its command: strace
/// (writing `trace`) runs unshare --net, which runs setpriv with the unit's bounding set (and
/// no_new_privs when the unit asks for it). strace is outside so that it keeps
/// CAP_SYS_PTRACE, without which the kernel would run the setgid pop-dotlock unprivileged.
fn sandboxed(t: &Tools, unit: &str, trace: &Path, cmd: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        t.strace.display().to_string(),
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        trace.display().to_string(),
        t.unshare.display().to_string(),
        "--net".into(),
        "--".into(),
        t.setpriv.display().to_string(),
        format!("--bounding-set={}", bounding_for_setpriv(unit)),
    ];
    if unit_value(unit, "NoNewPrivileges") == Some("yes") {
        v.push("--no-new-privs".into());
    }
    v.push("--".into());
    v.extend(cmd.iter().cloned());
    v
}

/// Runs `argv` with the unit's UMask= (sh's umask, then exec).
fn with_umask(unit: &str, argv: &[String]) -> Command {
    let umask = unit_value(unit, "UMask").unwrap_or("0022");
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .args(argv);
    c
}

fn check_syscalls(t: &Tools, name: &str, unit: &str, trace: &Path, dirs: &[&Path]) {
    let text = fs::read_to_string(trace).unwrap();
    let used = syscalls_of(&text, dirs);
    assert!(
        used.contains("execve") && used.len() > 20,
        "{name}: the trace shows the programs ({used:?})"
    );
    let allowed = allowed_syscalls(&t.analyze, unit);
    let outside: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "{name}: system calls outside SystemCallFilter=: {outside:?}"
    );
    eprintln!(
        "{name}: {} distinct system calls, all allowed by SystemCallFilter=",
        used.len()
    );
}

/// A scratch system: a root:mail 2775 spool with the user's mbox (owned by nobody, mode 0600,
/// so only pop-dotlock may lock it), a copy of pop-dotlock root:mail 2755, a passwd-file.
struct World {
    dir: tempfile::TempDir,
    msgs: Vec<gen::Message>,
}

fn mail_gid() -> nix::unistd::Gid {
    nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail")
        .gid
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        let (nobody, nogroup) = (
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        );
        let mail = Some(mail_gid());
        fs::create_dir_all(d.join("spool/d")).unwrap();
        fs::create_dir_all(d.join("home/demo")).unwrap();
        for s in [d.join("spool"), d.join("spool/d")] {
            nix::unistd::chown(&s, Some(nix::unistd::Uid::from_raw(0)), mail).unwrap();
            fs::set_permissions(&s, fs::Permissions::from_mode(0o2775)).unwrap();
        }
        let msgs = gen::varied_rfc5322(7, 3);
        let mbox = d.join("spool/d/demo");
        fs::write(&mbox, gen::mbox_bytes(&msgs)).unwrap();
        fs::set_permissions(&mbox, fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&mbox, nobody, nogroup).unwrap();
        nix::unistd::chown(&d.join("home/demo"), nobody, nogroup).unwrap();
        let helper = d.join("pop-dotlock");
        fs::copy(bin("pop-dotlock"), &helper).unwrap();
        nix::unistd::chown(&helper, Some(nix::unistd::Uid::from_raw(0)), mail).unwrap();
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o2755)).unwrap();
        fs::write(
            d.join("users"),
            format!(
                "demo:{{PLAIN}}{PASSWORD}:65534:65534::{}/home/demo::\n",
                d.display()
            ),
        )
        .unwrap();
        World { dir, msgs }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The unit's command with the installed programs replaced by the built ones and their
    /// test options (the scratch passwd-file, spool and helper; logs on stderr).
    fn localize(&self, unit: &str) -> Vec<String> {
        let d = self.path().display().to_string();
        let opts = |name: &str| -> String {
            match name {
                "pop-tls" => "--log stderr --user nobody".into(),
                "pop-popup" => "--log stderr --fail-delay-ms 10".into(),
                "pop-checkpassword" => {
                    format!("--log stderr --source passwd-file --passwd-file {d}/users --min-uid 1")
                }
                "pop-serve" => {
                    format!("--log stderr --spool-dir {d}/spool --dotlock-helper {d}/pop-dotlock")
                }
                _ => panic!("unexpected program {name}"),
            }
        };
        let mut t = exec_start(unit).replace("/etc/popspool/tls/", &format!("{d}/tls/"));
        for name in ["pop-tls", "pop-popup", "pop-checkpassword", "pop-serve"] {
            t = t.replace(
                &format!("/usr/local/bin/{name}"),
                &format!("{} {}", bin(name).display(), opts(name)),
            );
        }
        t.replace("%H", "localhost")
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    fn mbox_len(&self) -> u64 {
        fs::metadata(self.path().join("spool/d/demo"))
            .unwrap()
            .len()
    }
}

fn target_dir() -> PathBuf {
    bin("pop-serve").parent().unwrap().to_path_buf()
}

#[test]
fn pop3_unit_sandbox_serves_a_2775_spool_within_its_filter() {
    let test = "pop3_unit_sandbox_serves_a_2775_spool_within_its_filter";
    let Some(t) = tools(test) else { return };
    let unit = shipped("scripts/systemd/pop3@.service");
    let w = World::new();
    let before = w.mbox_len();
    let trace = w.path().join("trace");
    let argv = sandboxed(&t, &unit, &trace, &w.localize(&unit));
    let mut child = with_umask(&unit, &argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!("USER demo\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("+OK {} ", w.msgs.len()))
            && stdout.contains("+OK popspool signing off"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" octets\r\n"), "message 1 served: {stdout}");
    assert!(w.mbox_len() < before, "DELE 1 was committed: {stderr}");
    // The lock went through the setgid helper: the user cannot write the 2775 directory.
    let text = fs::read_to_string(&trace).unwrap();
    assert!(
        text.contains(&format!("{}/pop-dotlock\", [", w.path().display())),
        "pop-serve ran pop-dotlock"
    );
    assert!(
        !w.path().join("spool/d/demo.lock").exists(),
        "the dotlock is gone"
    );
    check_syscalls(
        &t,
        "pop3@.service",
        &unit,
        &trace,
        &[&target_dir(), w.path()],
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tls_unit_sandboxes_serve_curl_within_their_filter() {
    let test = "tls_unit_sandboxes_serve_curl_within_their_filter";
    let Some(t) = tools(test) else { return };
    let (Some(sa), Some(curl)) = (which("systemd-socket-activate"), which("curl")) else {
        skip(test, "needs systemd-socket-activate and curl");
        return;
    };
    let Some(pki) = Pki::new() else { return };
    for (service, scheme) in [
        ("scripts/systemd/pop3s@.service", "pop3s"),
        ("scripts/systemd/pop3-starttls@.service", "pop3"),
    ] {
        let unit = shipped(service);
        let w = World::new();
        let tls = w.path().join("tls");
        fs::create_dir(&tls).unwrap();
        fs::set_permissions(&tls, fs::Permissions::from_mode(0o700)).unwrap();
        let (chain, key) = pki.leaf("localhost", "p256");
        fs::copy(chain, tls.join("cert.pem")).unwrap();
        fs::copy(key, tls.join("key.pem")).unwrap();
        let st = Command::new(bin("pop-tls"))
            .arg("--rotate-ticket-keys")
            .arg(tls.join("ticket-keys"))
            .status()
            .unwrap();
        assert!(st.success());

        let trace = w.path().join("trace");
        let port = free_port();
        let mut argv = vec![
            sa.display().to_string(),
            "--inetd".into(),
            "-a".into(),
            "-l".into(),
            format!("127.0.0.1:{port}"),
        ];
        argv.extend(sandboxed(&t, &unit, &trace, &w.localize(&unit)));
        let log = fs::File::create(w.path().join("launcher.log")).unwrap();
        let mut launcher = with_umask(&unit, &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{service}: launcher not up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut c = Command::new(&curl);
        c.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(pki.ca())
            .arg(format!("{scheme}://demo:{PASSWORD}@localhost:{port}/1"));
        if scheme == "pop3" {
            c.arg("--ssl-reqd");
        }
        let out = c.output().unwrap();
        // The session's last process has exited once the launcher's log shows pop-tls's end.
        let deadline = Instant::now() + Duration::from_secs(10);
        let launcher_log = || fs::read_to_string(w.path().join("launcher.log")).unwrap_or_default();
        while !launcher_log().contains("pop-tls: addr=") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = launcher.kill();
        let _ = launcher.wait();
        assert!(
            out.status.success(),
            "{service}: curl: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            launcher_log()
        );
        assert_eq!(out.stdout, w.msgs[0].canonical(), "{service}: message 1");
        let name = service.rsplit('/').next().unwrap();
        check_syscalls(&t, name, &unit, &trace, &[&target_dir(), w.path()]);
    }
}

#[test]
fn rotate_unit_sandbox_rotates_within_its_filter() {
    let test = "rotate_unit_sandbox_rotates_within_its_filter";
    let Some(t) = tools(test) else { return };
    let unit = shipped("scripts/systemd/pop-tls-rotate.service");
    let d = tempfile::tempdir().unwrap();
    let tls = d.path().join("tls");
    fs::create_dir(&tls).unwrap();
    fs::set_permissions(&tls, fs::Permissions::from_mode(0o700)).unwrap();
    let keys = tls.join("ticket-keys");
    let cmd: Vec<String> = exec_start(&unit)
        .replace(
            "/usr/local/bin/pop-tls",
            &bin("pop-tls").display().to_string(),
        )
        .replace("/etc/popspool/tls/", &format!("{}/", tls.display()))
        .split_whitespace()
        .map(String::from)
        .collect();
    let trace = d.path().join("trace");
    let mut sizes = Vec::new();
    // Twice: the first makes the file, the second keeps the old key behind a new one. Root
    // with no capability at all owns both the file and its directory.
    for _ in 0..2 {
        let out = with_umask(&unit, &sandboxed(&t, &unit, &trace, &cmd))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let m = fs::metadata(&keys).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        sizes.push(m.len());
    }
    assert!(sizes[1] > sizes[0], "the previous key is kept: {sizes:?}");
    check_syscalls(
        &t,
        "pop-tls-rotate.service",
        &unit,
        &trace,
        &[&target_dir()],
    );
}
