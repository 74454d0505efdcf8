//! `popspool-bench connections`: complete POP3 sessions per second (connect, greeting, USER,
//! PASS, STAT, QUIT, close) on loopback through three servers started side by side:
//!
//! - *chain*: pop-popup → pop-checkpassword → pop-serve, exec'd per connection by tcpserver;
//! - *Dovecot*: its full daemon (master, pop3-login, auth, pop3) with a private config and a
//!   passwd-file holding the same users and hashes;
//! - *floor*: three trivial static C programs of the chain's shape (bench/floor/*.c, built by
//!   scripts/bench) under the same tcpserver: what three execs and a password check cost.
//!
//! One load client (threads in this process) drives all three, cell by cell, alternating the
//! servers within each concurrency level so that drift on a shared machine hits all alike.
//! Every reply is checked; a session counts only when all of it was right.

use spool_login::auth::crypt;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrency levels of a full run.
pub const LEVELS: &[usize] = &[1, 4, 16, 64];
/// Distinct users: at least the highest level, so no two concurrent sessions share a mailbox
/// (Dovecot limits connections per user and IP; a shared mbox would serialise on its lock).
pub const USERS: usize = 64;
/// Per-thread socket timeout: a session stuck this long counts as an error.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server gets to start listening.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(15);
/// tcpserver's connection limit (`-c`): far above the highest level, so it never queues.
pub(crate) const TCPSERVER_LIMIT: &str = "400";
/// tcpserver's listen backlog (`-b`, default 20): Dovecot listens with a larger one, and a
/// full backlog costs a 1 s SYN retransmit, which would measure the backlog, not the chain.
pub(crate) const TCPSERVER_BACKLOG: &str = "256";
/// Messages in each user's mailbox: STAT must find this many.
pub(crate) const MESSAGES: u64 = 1;
/// Verifications timed per scheme for the per-login hash cost.
const HASH_SAMPLES: u32 = 10;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnOpts {
    /// Work directory (users, spools, configs live under WORK/conn).
    #[arg(long, default_value = "bench-work")]
    pub work: PathBuf,
    /// Seconds per measurement (one server at one concurrency level).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Repetitions per cell; the one with the median rate is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = LEVELS.to_vec())]
    pub clients: Vec<usize>,
    /// Password schemes, comma-separated: plain, sha512-crypt, yescrypt.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "plain,sha512-crypt,yescrypt"
    )]
    pub schemes: Vec<String>,
    /// Directory holding pop-popup, pop-checkpassword, pop-serve (default: beside this program).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Directory holding the floor's front, check and serve (default WORK/floor).
    #[arg(long)]
    pub floor_dir: Option<PathBuf>,
    /// Leave Dovecot out.
    #[arg(long)]
    pub no_dovecot: bool,
    /// Write the report into this Markdown file, replacing its "Connection rate" section or
    /// appending one.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// A note printed with the machine description.
    #[arg(long)]
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Plain,
    Sha512,
    Yescrypt,
}

impl Scheme {
    fn parse(s: &str) -> Result<Scheme, String> {
        match s.to_ascii_lowercase().as_str() {
            "plain" => Ok(Scheme::Plain),
            "sha512-crypt" | "sha512" => Ok(Scheme::Sha512),
            "yescrypt" => Ok(Scheme::Yescrypt),
            o => Err(format!(
                "unknown scheme {o}: plain, sha512-crypt or yescrypt"
            )),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Scheme::Plain => "{PLAIN}",
            Scheme::Sha512 => "{SHA512-CRYPT}",
            Scheme::Yescrypt => "{CRYPT} yescrypt",
        }
    }
    fn dir(self) -> &'static str {
        match self {
            Scheme::Plain => "plain",
            Scheme::Sha512 => "sha512",
            Scheme::Yescrypt => "yescrypt",
        }
    }
    /// The passwd-file password field; both pop-checkpassword and Dovecot read the same file.
    fn field(self, pw: &str) -> Result<String, String> {
        let h = |prefix| {
            crypt::hash_password(pw.as_bytes(), prefix).map_err(|e| format!("hashing: {e:?}"))
        };
        Ok(match self {
            Scheme::Plain => format!("{{PLAIN}}{pw}"),
            Scheme::Sha512 => format!("{{SHA512-CRYPT}}{}", h("$6$")?),
            Scheme::Yescrypt => format!("{{CRYPT}}{}", h("$y$")?),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Srv {
    Chain,
    Dovecot,
    Floor,
}

impl Srv {
    fn name(self) -> &'static str {
        match self {
            Srv::Chain => "chain",
            Srv::Dovecot => "Dovecot",
            Srv::Floor => "floor",
        }
    }
}

pub(crate) fn user(i: usize) -> String {
    format!("u{i:02}")
}
pub(crate) fn password(i: usize) -> String {
    format!("pw-{i:02}-bench")
}

/// One measured cell.
#[derive(Clone, Debug, Default)]
struct Cell {
    sessions: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    /// Median and 99th percentile session latency.
    p50: Duration,
    p99: Duration,
    /// CPU of the server's whole process tree per session (ms), when measurable.
    server_cpu_ms: Option<f64>,
    /// CPU of the load client per session (ms).
    client_cpu_ms: f64,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.sessions as f64 / self.secs
    }
}

/// A server's state in one scheme's run.
enum Slot {
    Up { child: Child, port: u16 },
    Unavailable(String),
}

impl Slot {
    fn port(&self) -> Option<u16> {
        match self {
            Slot::Up { port, .. } => Some(*port),
            Slot::Unavailable(_) => None,
        }
    }
    fn pid(&self) -> Option<u32> {
        match self {
            Slot::Up { child, .. } => Some(child.id()),
            Slot::Unavailable(_) => None,
        }
    }
}

pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) root: bool,
}

pub(crate) fn owner() -> Owner {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        // The same unprivileged account the mailbox bench uses; Debian's nobody is 65534.
        let name = std::ffi::CString::new(crate::UNPRIVILEGED_USER).expect("no NUL");
        // SAFETY: getpwnam gets a valid C string; the result is read at once.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        let (u, g) = if pw.is_null() {
            (65534, 65534)
        } else {
            // SAFETY: non-null pointer to getpwnam's static struct.
            unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
        };
        Owner {
            uid: u,
            gid: g,
            root: true,
        }
    } else {
        Owner {
            uid,
            gid,
            root: false,
        }
    }
}

pub(crate) fn chown(p: &Path, o: &Owner) -> io::Result<()> {
    if o.root {
        std::os::unix::fs::lchown(p, Some(o.uid), Some(o.gid))?;
    }
    Ok(())
}

pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One small message, the same bytes for every user and server.
pub(crate) fn mailbox_text(i: usize) -> String {
    format!(
        "From bench@example.org Mon Jan  1 00:00:00 2024\nFrom: Bench <bench@example.org>\n\
         To: {u}@localhost\nSubject: connection bench\nMessage-ID: <conn-{u}@example.org>\n\n\
         A tiny mailbox: the session is STAT.\n\n",
        u = user(i)
    )
}

/// Builds WORK/conn/SCHEME: the passwd-file, a spool per server, Dovecot's homes.
pub(crate) fn world(dir: &Path, scheme: Scheme, o: &Owner) -> Result<(), String> {
    let e = |p: &Path, err: io::Error| format!("{}: {err}", p.display());
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|err| e(dir, err))?;
    }
    let mut users = String::new();
    for i in 0..USERS {
        let u = user(i);
        let home = dir.join("home").join(&u);
        let _ = writeln!(
            users,
            "{u}:{}:{}:{}::{}::",
            scheme.field(&password(i))?,
            o.uid,
            o.gid,
            home.display()
        );
        fs::create_dir_all(home.join("mail")).map_err(|err| e(&home, err))?;
        chown(&home, o).map_err(|err| e(&home, err))?;
        chown(&home.join("mail"), o).map_err(|err| e(&home, err))?;
        for spool in ["spool-chain", "spool-dovecot", "spool-floor"] {
            let d = dir.join(spool).join(&u[..1]);
            fs::create_dir_all(&d).map_err(|err| e(&d, err))?;
            chown(&d, o).map_err(|err| e(&d, err))?;
            let b = d.join(&u);
            fs::write(&b, mailbox_text(i)).map_err(|err| e(&b, err))?;
            chown(&b, o).map_err(|err| e(&b, err))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&b, fs::Permissions::from_mode(0o600)).map_err(|err| e(&b, err))?;
        }
    }
    // Readable only by the bench's user (root or you): the programs that read it run as that.
    let p = dir.join("users");
    fs::write(&p, users).map_err(|err| e(&p, err))?;
    Ok(())
}

/// Waits until `port` answers with a greeting line.
pub(crate) fn wait_for(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited at start-up ({st})"));
        }
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("+OK") {
                let _ = (&s).write_all(b"QUIT\r\n");
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("no greeting on its port".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tcpserver on 127.0.0.1:`port` running `argv`; `flags` go before the others (the TLS
/// bench adds `-D`, TCP_NODELAY).
pub(crate) fn tcpserver(
    port: u16,
    flags: &[&str],
    argv: &[String],
    log: &Path,
) -> Result<Child, String> {
    let log = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    Command::new("tcpserver")
        .args(flags)
        .args([
            "-q",
            "-R",
            "-H",
            "-l",
            "localhost",
            "-c",
            TCPSERVER_LIMIT,
            "-b",
            TCPSERVER_BACKLOG,
        ])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("tcpserver: {e} (Debian package ucspi-tcp)"))
}

/// The login chain's argv (pop-popup → pop-checkpassword → pop-serve) on DIR's users and
/// DIR/spool-chain.
pub(crate) fn chain_argv(dir: &Path, bins: &Path) -> Result<Vec<String>, String> {
    for b in ["pop-popup", "pop-checkpassword", "pop-serve"] {
        if !bins.join(b).is_file() {
            return Err(format!(
                "{} missing: cargo build --release --workspace --bins",
                bins.join(b).display()
            ));
        }
    }
    let s = |p: PathBuf| p.display().to_string();
    let argv: Vec<String> = vec![
        s(bins.join("pop-popup")),
        "--log".into(),
        "none".into(),
        "bench.popspool.invalid".into(),
        s(bins.join("pop-checkpassword")),
        "--log".into(),
        "none".into(),
        "--source".into(),
        "passwd-file".into(),
        "--passwd-file".into(),
        s(dir.join("users")),
        "--min-uid".into(),
        "1".into(),
        s(bins.join("pop-serve")),
        "--log".into(),
        "none".into(),
        "--no-dotlock-helper".into(),
        "--spool-dir".into(),
        s(dir.join("spool-chain")),
    ];
    Ok(argv)
}

fn start_chain(dir: &Path, bins: &Path) -> Result<(Child, u16), String> {
    let argv = chain_argv(dir, bins)?;
    let port = free_port().map_err(|e| e.to_string())?;
    let mut child = tcpserver(port, &[], &argv, &dir.join("chain.log"))?;
    match wait_for(port, &mut child) {
        Ok(()) => Ok((child, port)),
        Err(e) => {
            stop(&mut child);
            Err(e)
        }
    }
}

fn start_floor(dir: &Path, floor: &Path) -> Result<(Child, u16), String> {
    for b in ["front", "check", "serve"] {
        if !floor.join(b).is_file() {
            return Err(format!(
                "{} missing (scripts/bench builds bench/floor/*.c)",
                floor.join(b).display()
            ));
        }
    }
    let s = |p: PathBuf| p.display().to_string();
    let argv = vec![
        s(floor.join("front")),
        s(floor.join("check")),
        s(dir.join("users")),
        s(floor.join("serve")),
        s(dir.join("spool-floor")),
    ];
    let port = free_port().map_err(|e| e.to_string())?;
    let mut child = tcpserver(port, &[], &argv, &dir.join("floor.log"))?;
    match wait_for(port, &mut child) {
        Ok(()) => Ok((child, port)),
        Err(e) => {
            stop(&mut child);
            Err(e)
        }
    }
}

/// Dovecot's defaults except what a private instance on a test port needs: its own base
/// and log, POP3 only, plaintext logins allowed without TLS, the same passwd-file for passdb
/// and userdb, and an mbox INBOX in the same spool layout the chain reads. No auth cache
/// (the default), so every login verifies its hash, as the chain's does.
/// With `tls` (certificate, key): `ssl = required` and the listener on pop3s (implicit TLS)
/// instead.
pub(crate) fn dovecot_conf(dir: &Path, port: u16, tls: Option<(&Path, &Path)>) -> String {
    let d = dir.display();
    let (plain_port, tls_port, ssl) = match tls {
        None => (port, 0, "ssl = no".to_string()),
        Some((cert, key)) => (
            0,
            port,
            format!(
                "ssl = required\nssl_cert = <{}\nssl_key = <{}",
                cert.display(),
                key.display()
            ),
        ),
    };
    format!(
        "base_dir = {d}/dovecot-base\nstate_dir = {d}/dovecot-state\n\
         log_path = {d}/dovecot.log\ninfo_log_path = {d}/dovecot.log\n\
         listen = 127.0.0.1\nprotocols = pop3\n{ssl}\n\
         disable_plaintext_auth = no\nauth_mechanisms = plain\n\
         first_valid_uid = 1\nfirst_valid_gid = 1\n\
         mail_location = mbox:~/mail:INBOX={d}/spool-dovecot/%1u/%u\n\
         mbox_write_locks = fcntl\npop3_uidl_format = %08Xu%08Xv\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         service pop3-login {{\n  inet_listener pop3 {{\n    port = {plain_port}\n  }}\n  \
         inet_listener pop3s {{\n    port = {tls_port}\n  }}\n}}\n\
         default_internal_user = dovecot\ndefault_login_user = dovenull\n"
    )
}

fn start_dovecot(dir: &Path, o: &Owner) -> Result<(Child, u16), String> {
    start_dovecot_with(dir, o, None, &wait_for)
}

/// Dovecot's daemon on DIR, plaintext or (with `tls`) implicit TLS; `ready` waits for its port.
pub(crate) fn start_dovecot_with(
    dir: &Path,
    o: &Owner,
    tls: Option<(&Path, &Path)>,
    ready: &dyn Fn(u16, &mut Child) -> Result<(), String>,
) -> Result<(Child, u16), String> {
    start_dovecot_conf(dir, o, &|port| dovecot_conf(dir, port, tls), ready)
}

/// Dovecot's daemon on DIR with the configuration `conf` makes for a free port.
pub(crate) fn start_dovecot_conf(
    dir: &Path,
    o: &Owner,
    conf: &dyn Fn(u16) -> String,
    ready: &dyn Fn(u16, &mut Child) -> Result<(), String>,
) -> Result<(Child, u16), String> {
    let dovecot = ["/usr/sbin/dovecot", "dovecot"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .ok_or("dovecot not installed (Debian package dovecot-pop3d)")?;
    if !o.root {
        return Err("needs root (its login and auth processes switch users)".into());
    }
    let port = free_port().map_err(|e| e.to_string())?;
    for sub in ["dovecot-base", "dovecot-state"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let text = conf(port);
    let conf = dir.join("dovecot.conf");
    fs::write(&conf, text).map_err(|e| e.to_string())?;
    let mut child = Command::new(dovecot)
        .arg("-F")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            fs::File::create(dir.join("dovecot.stderr")).map_err(|e| e.to_string())?,
        ))
        .spawn()
        .map_err(|e| format!("{dovecot}: {e}"))?;
    match ready(port, &mut child) {
        Ok(()) => Ok((child, port)),
        Err(e) => {
            stop(&mut child);
            let log = fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default()
                + &fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("{e}; {last}"))
        }
    }
}

/// SIGTERM (tcpserver and Dovecot's master both exit cleanly on it), then reap.
pub(crate) fn stop(child: &mut Child) {
    // SAFETY: kill on our own child's pid, which we have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One complete session; Err says what went wrong.
fn session(addr: &SocketAddr, i: usize, buf: &mut String) -> Result<(), String> {
    let s = TcpStream::connect_timeout(addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(&s);
    let mut w = &s;
    fn expect(r: &mut BufReader<&TcpStream>, buf: &mut String, what: &str) -> Result<(), String> {
        buf.clear();
        r.read_line(buf).map_err(|e| format!("{what}: {e}"))?;
        if buf.starts_with("+OK") {
            Ok(())
        } else if buf.is_empty() {
            Err(format!("{what}: connection closed"))
        } else {
            Err(format!("{what}: {}", buf.trim_end()))
        }
    }
    expect(&mut r, buf, "greeting")?;
    write!(w, "USER {}\r\n", user(i)).map_err(|e| e.to_string())?;
    expect(&mut r, buf, "USER")?;
    write!(w, "PASS {}\r\n", password(i)).map_err(|e| e.to_string())?;
    expect(&mut r, buf, "PASS")?;
    w.write_all(b"STAT\r\n").map_err(|e| e.to_string())?;
    expect(&mut r, buf, "STAT")?;
    let count = buf
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse::<u64>().ok());
    if count != Some(MESSAGES) {
        return Err(format!(
            "STAT: {} (want {MESSAGES} message)",
            buf.trim_end()
        ));
    }
    w.write_all(b"QUIT\r\n").map_err(|e| e.to_string())?;
    expect(&mut r, buf, "QUIT")?;
    // The session ends when the server closes: a rate must not count half-open sessions.
    buf.clear();
    match r.read_line(buf) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("after QUIT: {}", buf.trim_end())),
        Err(e) => Err(format!("waiting for close: {e}")),
    }
}

/// CPU ticks (user+system, own and reaped children) of `root` and all its descendants.
pub(crate) fn tree_ticks(root: u32) -> Option<u64> {
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name, which may hold spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 15 {
            continue;
        }
        let ppid = f[1].parse().unwrap_or(0);
        let ticks: u64 = f[11..15].iter().filter_map(|x| x.parse::<u64>().ok()).sum();
        procs.push((pid, ppid, ticks));
    }
    let mut inside = vec![root];
    let mut total = 0;
    let mut grew = true;
    let mut counted = std::collections::HashSet::new();
    while grew {
        grew = false;
        for &(pid, ppid, t) in &procs {
            if !counted.contains(&pid) && (pid == root || inside.contains(&ppid)) {
                counted.insert(pid);
                inside.push(pid);
                total += t;
                grew = true;
            }
        }
    }
    counted.contains(&root).then_some(total)
}

pub(crate) fn self_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: u is a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Runs `clients` threads against `port` for `secs`; thread t uses users t, t+clients, ….
fn measure(port: u16, pid: Option<u32>, clients: usize, secs: f64) -> Cell {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks0 = pid.and_then(tree_ticks);
    let cpu0 = self_cpu();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut buf = String::new();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let i = (t + k * clients) % USERS;
                    k += 1;
                    let s0 = Instant::now();
                    match session(&addr, i, &mut buf) {
                        Ok(()) => lat.push(s0.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            // A refused connect would otherwise spin the CPU.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut cell = Cell::default();
    for h in handles {
        let (l, e, f) = h.join().unwrap_or_default();
        lat.extend(l);
        cell.errors += e;
        if cell.first_error.is_none() {
            cell.first_error = f;
        }
    }
    // Sessions in flight at the stop finish after it: count the time they took.
    cell.secs = t0.elapsed().as_secs_f64();
    cell.sessions = lat.len() as u64;
    lat.sort();
    if !lat.is_empty() {
        cell.p50 = lat[lat.len() / 2];
        cell.p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    }
    let n = cell.sessions.max(1) as f64;
    cell.client_cpu_ms = (self_cpu() - cpu0).as_secs_f64() * 1e3 / n;
    if let (Some(a), Some(b)) = (ticks0, pid.and_then(tree_ticks)) {
        cell.server_cpu_ms = Some(b.saturating_sub(a) as f64 / hz * 1e3 / n);
    }
    cell
}

/// The repetition with the median rate (errors summed over all, so none hides).
fn median_cell(mut v: Vec<Cell>) -> Option<Cell> {
    if v.is_empty() {
        return None;
    }
    let errors: u64 = v.iter().map(|c| c.errors).sum();
    let first_error = v.iter().find_map(|c| c.first_error.clone());
    v.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut m = v.swap_remove(v.len() / 2);
    m.errors = errors;
    m.first_error = first_error;
    Some(m)
}

/// The cost of one verification in this process (libcrypt, as pop-checkpassword calls it).
fn hash_cost(scheme: Scheme) -> Option<Duration> {
    let prefix = match scheme {
        // The equal-time dummy hash spool-login's auth may spend on logins without a crypt hash.
        Scheme::Plain => {
            let t0 = Instant::now();
            for _ in 0..HASH_SAMPLES {
                crypt::dummy_verify(b"pw");
            }
            return Some(t0.elapsed() / HASH_SAMPLES);
        }
        Scheme::Sha512 => "$6$",
        Scheme::Yescrypt => "$y$",
    };
    let stored = crypt::hash_password(b"pw", prefix).ok()?;
    let t0 = Instant::now();
    for _ in 0..HASH_SAMPLES {
        let _ = crypt::verify(b"pw", stored.as_bytes());
    }
    Some(t0.elapsed() / HASH_SAMPLES)
}

struct SchemeResult {
    scheme: Scheme,
    hash: Option<Duration>,
    unavailable: Vec<(Srv, String)>,
    rows: Vec<(usize, [Option<Cell>; 3])>,
}

fn run_scheme(
    opts: &ConnOpts,
    root: &Path,
    scheme: Scheme,
    bins: &Path,
    floor: &Path,
    o: &Owner,
) -> Result<SchemeResult, String> {
    let dir = root.join(scheme.dir());
    eprintln!("connections: {}: preparing {USERS} users", scheme.name());
    world(&dir, scheme, o)?;
    let mut slots: Vec<(Srv, Slot)> = Vec::new();
    for srv in [Srv::Chain, Srv::Dovecot, Srv::Floor] {
        let started = match srv {
            Srv::Chain => start_chain(&dir, bins),
            Srv::Dovecot if opts.no_dovecot => Err("left out (--no-dovecot)".into()),
            Srv::Dovecot => start_dovecot(&dir, o),
            Srv::Floor => start_floor(&dir, floor),
        };
        let slot = match started {
            Ok((child, port)) => Slot::Up { child, port },
            Err(e) => {
                eprintln!("connections: {} unavailable: {e}", srv.name());
                Slot::Unavailable(e)
            }
        };
        slots.push((srv, slot));
    }
    let result: Result<Vec<_>, String> = (|| {
        // Warm-up: one session per user, so Dovecot's indexes and every page cache exist
        // before anything is measured.
        for (srv, slot) in &slots {
            if let Some(port) = slot.port() {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let mut buf = String::new();
                for i in 0..USERS {
                    session(&addr, i, &mut buf)
                        .map_err(|e| format!("{} warm-up, user {}: {e}", srv.name(), user(i)))?;
                }
            }
        }
        let mut rows = Vec::new();
        for &c in &opts.clients {
            let mut samples: [Vec<Cell>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            // Repetitions outermost, servers alternating within each: drift on a shared
            // machine then hits all three alike.
            for rep in 0..opts.reps {
                for (k, (srv, slot)) in slots.iter().enumerate() {
                    if let Some(port) = slot.port() {
                        let cell = measure(port, slot.pid(), c, opts.seconds);
                        eprintln!(
                            "connections: {} {:>2} clients {:>8} rep {}: {:7.1}/s, {} errors{}",
                            scheme.dir(),
                            c,
                            srv.name(),
                            rep + 1,
                            cell.rate(),
                            cell.errors,
                            cell.first_error
                                .as_deref()
                                .map(|e| format!(" (first: {e})"))
                                .unwrap_or_default()
                        );
                        samples[k].push(cell);
                    }
                }
            }
            rows.push((c, samples.map(median_cell)));
        }
        Ok(rows)
    })();
    let mut unavailable = Vec::new();
    for (srv, slot) in &mut slots {
        match slot {
            Slot::Up { child, .. } => stop(child),
            Slot::Unavailable(e) => unavailable.push((*srv, e.clone())),
        }
    }
    Ok(SchemeResult {
        scheme,
        hash: hash_cost(scheme),
        unavailable,
        rows: result?,
    })
}

fn rate(c: &Option<Cell>) -> String {
    match c {
        Some(c) if c.errors == 0 => format!("{:.0}", c.rate()),
        Some(c) => format!("{:.0} ({} errors)", c.rate(), c.errors),
        None => "—".into(),
    }
}

fn ratio(a: &Option<Cell>, b: &Option<Cell>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.rate() > 0.0 => Some(a.rate() / b.rate()),
        _ => None,
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

fn render(opts: &ConnOpts, results: &[SchemeResult], o: &Owner, static_floor: &str) -> String {
    let mut out = String::new();
    out.push_str("## Connection rate\n\n");
    out.push_str(
        "Produced by `scripts/bench connections` (`popspool-bench connections`). Complete POP3 \
         sessions per second on loopback — connect, greeting, USER, PASS, STAT (checked: 1 \
         message), QUIT, server closes — from one Rust load client (N threads, each looping \
         sessions back to back over 64 distinct users) against three servers started side by \
         side and measured in turn at each concurrency level:\n\n\
         - **chain**: `tcpserver` → `pop-popup` → (fork) `pop-checkpassword` → (exec) `pop-serve`, \
         release build, `--log none`;\n\
         - **Dovecot**: its full daemon (`dovecot -F`, default services: pop3-login, auth, pop3), \
         a private config with `passwd-file` passdb and userdb on the same file, mbox INBOX in \
         the same spool layout, no auth cache (the default);\n\
         - **floor**: three trivial C programs of the same shape (`bench/floor/`: front forks \
         check with the password on fd 3, check verifies with libcrypt and execs serve, serve \
         reads the mailbox and answers STAT/QUIT) under the same `tcpserver`.\n\n",
    );
    let _ = writeln!(
        out,
        "{}- servers' users run as uid {}; {} repetitions of {} s per cell, servers alternating, median rate reported (errors summed); tcpserver `-R -H -l localhost -c {TCPSERVER_LIMIT} -b {TCPSERVER_BACKLOG}` (no DNS or ident lookups); \
         floor binaries: {static_floor}\n- the load client runs on the same 2 cores \
         (its CPU per session is shown)\n- load average at the end: {}",
        crate::report::machine(),
        o.uid,
        opts.reps,
        opts.seconds,
        crate::scenario::loadavg()
    );
    if let Some(n) = &opts.note {
        let _ = writeln!(out, "- note: {n}");
    }
    out.push('\n');
    for r in results {
        let _ = writeln!(out, "### {}\n", r.scheme.name());
        if let Some(h) = r.hash {
            let what = if r.scheme == Scheme::Plain {
                "One `spool_login::auth::crypt::dummy_verify` (the equal-time dummy hash at \
                 `DUMMY_SETTING`, yescrypt) in-process"
            } else {
                "One verification of this hash in-process (libcrypt `crypt_rn`)"
            };
            let _ = writeln!(out, "{what}: {:.2} ms.\n", h.as_secs_f64() * 1e3);
        }
        for (srv, why) in &r.unavailable {
            let _ = writeln!(out, "- **{} unavailable**: {why}", srv.name());
        }
        if !r.unavailable.is_empty() {
            out.push('\n');
        }
        out.push_str(
            "| Clients | chain /s | Dovecot /s | floor /s | chain/Dovecot | chain/floor | \
             p50 / p99 latency (chain · Dovecot · floor) | server CPU ms/session (chain · Dovecot · floor) | client CPU ms/session |\n\
             |--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for (c, cells) in &r.rows {
            let lat = cells
                .iter()
                .map(|c| match c {
                    Some(c) => format!(
                        "{:.1}/{:.1}",
                        c.p50.as_secs_f64() * 1e3,
                        c.p99.as_secs_f64() * 1e3
                    ),
                    None => "—".into(),
                })
                .collect::<Vec<_>>()
                .join(" · ");
            let cpu = cells
                .iter()
                .map(|c| match c.as_ref().and_then(|c| c.server_cpu_ms) {
                    Some(ms) => format!("{ms:.2}"),
                    None => "—".into(),
                })
                .collect::<Vec<_>>()
                .join(" · ");
            let client = cells
                .iter()
                .flatten()
                .map(|c| format!("{:.2}", c.client_cpu_ms))
                .collect::<Vec<_>>()
                .join(" · ");
            let fx = |x: Option<f64>| x.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "—".into());
            let _ = writeln!(
                out,
                "| {c} | {} | {} | {} | {} | {} | {lat} ms | {cpu} | {client} |",
                rate(&cells[0]),
                rate(&cells[1]),
                rate(&cells[2]),
                fx(ratio(&cells[0], &cells[1])),
                fx(ratio(&cells[0], &cells[2])),
            );
        }
        out.push('\n');
        for (c, cells) in &r.rows {
            for (k, cell) in cells.iter().enumerate() {
                if let Some(cell) = cell.as_ref().filter(|c| c.errors > 0) {
                    let name = [Srv::Chain, Srv::Dovecot, Srv::Floor][k].name();
                    let _ = writeln!(
                        out,
                        "- {name} at {c} clients: {} errors, first: {}",
                        cell.errors,
                        cell.first_error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
    }
    out.push_str("### Target check (reported, never asserted)\n\n");
    out.push_str(
        "Chain ≥ 5x Dovecot's sessions/s with the same password scheme, and ≥ 60% of the floor's, \
         at every concurrency level measured:\n\n",
    );
    for r in results {
        let mut dv = Vec::new();
        let mut fl = Vec::new();
        for (c, cells) in &r.rows {
            let clean = cells[0].as_ref().is_some_and(|c| c.errors == 0);
            if let Some(x) = ratio(&cells[0], &cells[1]) {
                dv.push((x >= 5.0 && clean, format!("{c}: {x:.2}x")));
            }
            if let Some(x) = ratio(&cells[0], &cells[2]) {
                fl.push((x >= 0.6 && clean, format!("{c}: {:.0}%", x * 100.0)));
            }
        }
        for (what, v) in [("≥ 5x Dovecot", dv), ("≥ 60% of the floor", fl)] {
            if v.is_empty() {
                let _ = writeln!(out, "- n/a {} {what}: not measured", r.scheme.name());
                continue;
            }
            let ok = v.iter().all(|(ok, _)| *ok);
            let _ = writeln!(
                out,
                "- {} {} {what} (clients: ratio) — {}",
                verdict(ok),
                r.scheme.name(),
                v.iter()
                    .map(|(ok, s)| if *ok { s.clone() } else { format!("**{s}**") })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    out.push('\n');
    out
}

/// This part's section of BENCHMARKS.md replaced in `text`, or appended.
fn splice(text: &str, section: &str) -> String {
    crate::report::splice_section(text, section)
}

fn is_static(p: &Path) -> String {
    match Command::new("file").arg("-L").arg(p).output() {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("statically linked") => {
            "static (`cc -O2 -static`)".into()
        }
        Ok(o) if o.status.success() => "dynamic (no static libc here)".into(),
        _ => "unknown linkage".into(),
    }
}

pub fn run(opts: ConnOpts) -> Result<(), String> {
    let schemes = opts
        .schemes
        .iter()
        .map(|s| Scheme::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if opts.clients.is_empty() || opts.clients.contains(&0) {
        return Err("--clients needs positive counts".into());
    }
    if opts.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if opts.seconds.is_nan() || opts.seconds <= 0.0 {
        return Err("--seconds must be positive".into());
    }
    let bins = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find myself: {e}"))?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("no bin dir")?,
    };
    fs::create_dir_all(&opts.work).map_err(|e| format!("{}: {e}", opts.work.display()))?;
    let work = fs::canonicalize(&opts.work).map_err(|e| e.to_string())?;
    // Absolute: the floor's check chdirs to the user's home before it execs serve.
    let floor = match &opts.floor_dir {
        Some(d) => fs::canonicalize(d).unwrap_or_else(|_| d.clone()),
        None => work.join("floor"),
    };
    let bins = fs::canonicalize(&bins).unwrap_or(bins);
    let root = work.join("conn");
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let o = owner();
    if o.root {
        // The servers' users (nobody) must reach their homes and spools under the work dir.
        use std::os::unix::fs::PermissionsExt;
        for d in [&work, &root] {
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
        }
    }
    let mut results = Vec::new();
    for s in schemes {
        results.push(run_scheme(&opts, &root, s, &bins, &floor, &o)?);
    }
    let text = render(&opts, &results, &o, &is_static(&floor.join("check")));
    println!("{text}");
    if let Some(p) = &opts.markdown {
        let old = fs::read_to_string(p).unwrap_or_default();
        fs::write(p, splice(&old, &text)).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("connection rate written to {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_or_appends() {
        let cases = [
            ("", "## Connection rate\nnew\n", "## Connection rate\nnew\n"),
            (
                "# T\n\n## A\na\n",
                "## Connection rate\nnew\n",
                "# T\n\n## A\na\n\n## Connection rate\nnew\n",
            ),
            (
                "# T\n## Connection rate\nold\n### x\n## B\nb\n",
                "## Connection rate\nnew\n",
                "# T\n## Connection rate\nnew\n## B\nb\n",
            ),
            (
                "# T\n## Connection rate\nold\n",
                "## Connection rate\nnew\n",
                "# T\n## Connection rate\nnew\n",
            ),
        ];
        for (old, sec, want) in cases {
            assert_eq!(splice(old, sec), want, "{old:?}");
        }
    }

    #[test]
    fn schemes_parse() {
        assert_eq!(Scheme::parse("PLAIN"), Ok(Scheme::Plain));
        assert_eq!(Scheme::parse("sha512-crypt"), Ok(Scheme::Sha512));
        assert_eq!(Scheme::parse("yescrypt"), Ok(Scheme::Yescrypt));
        assert!(Scheme::parse("md5").is_err());
    }
}
