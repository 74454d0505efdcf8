//! `popspool-bench proxy`: complete POP3 sessions per second (connect, greeting, USER, PASS,
//! STAT, RETR 1, QUIT, close; every reply checked) through a proxy in front of several backends
//! against the same job straight to one backend, with the same load client and users:
//!
//! - our chain straight to one backend: tcpserver → pop-popup → pop-checkpassword (passwd-file)
//!   → pop-serve;
//! - nginx's mail proxy (Debian nginx-light + libnginx-mod-mail) asking `pop-route` (under
//!   tcpserver, checking the password through pop-checkpassword) for each login, which answers
//!   with one of three backend chains (rendezvous hashing) and a login token that the
//!   backend's `pop-checkpassword --token-key` accepts instead of the password;
//! - Dovecot's own proxying as the anchor: a Dovecot instance whose passdb answers `proxy=y`
//!   with `host=` and `port=` (it checks the password and passes it on) in front of three
//!   Dovecot POP3 backends, each with its own base directory, configuration and users, once
//!   with Dovecot's default login processes (one per connection) and once with the
//!   high-performance mode of Dovecot's login-process documentation (`service_count = 0`);
//! - Dovecot straight to one backend.
//!
//! Server CPU per session is summed over every process tree of the path (nginx, pop-route's
//! tcpserver and the backends' tcpservers; Dovecot's proxy and backend masters). The hop's
//! cost is the proxied path's CPU per session minus the direct one's.

use crate::connections::{self as conn, Owner, Scheme, USERS};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent clients in a full run (as the TLS part) and in --quick.
const CLIENTS: usize = 16;
const QUICK_CLIENTS: usize = 4;
/// Seconds per cell in --quick (one repetition).
const QUICK_SECONDS: f64 = 0.5;
/// Backends behind each proxy.
const BACKENDS: usize = 3;
/// Target: the proxied path through nginx and pop-route at least this many times Dovecot's
/// proxied path's sessions/s.
const TARGET: f64 = 2.0;
/// Where Debian's libnginx-mod-mail installs the mail module.
const NGINX_MAIL_MODULE: &str = "/usr/lib/nginx/modules/ngx_mail_module.so";
/// The longest RETR reply read (the messages are a few hundred bytes).
const MAX_REPLY: usize = 64 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyOpts {
    /// Work directory (users, spools, configs live under WORK/proxy).
    #[arg(long, default_value = "bench-work")]
    pub work: PathBuf,
    /// Seconds per measurement (one path).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Repetitions, paths alternating; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Concurrent clients (default 16; 4 with --quick).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Smoke run: 4 clients, 0.5 s per cell, one repetition, a warm-up of one session per client.
    #[arg(long)]
    pub quick: bool,
    /// Directory holding pop-popup, pop-checkpassword, pop-serve, pop-route (default: beside
    /// this program).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    pub nginx: String,
    /// nginx's mail module, loaded with `load_module`.
    #[arg(long, default_value = NGINX_MAIL_MODULE)]
    pub nginx_mail_module: PathBuf,
    /// Leave Dovecot out.
    #[arg(long)]
    pub no_dovecot: bool,
    /// Write the report into this Markdown file, replacing its "Proxy" section or appending one.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// A note printed with the machine description.
    #[arg(long)]
    pub note: Option<String>,
}

/// The rows, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    Direct,
    Nginx,
    DovecotProxy,
    DovecotProxyTuned,
    DovecotDirect,
}

impl Row {
    const ALL: [Row; 5] = [
        Row::Direct,
        Row::Nginx,
        Row::DovecotProxy,
        Row::DovecotProxyTuned,
        Row::DovecotDirect,
    ];
    fn name(self) -> &'static str {
        match self {
            Row::Direct => "our chain, straight to one backend",
            Row::Nginx => "nginx mail proxy + pop-route → 3 backend chains (token)",
            Row::DovecotProxy => "Dovecot proxy (`proxy=y`) → 3 Dovecot backends",
            Row::DovecotProxyTuned => {
                "Dovecot proxy, login `service_count = 0` → the same 3 backends"
            }
            Row::DovecotDirect => "Dovecot, straight to one backend",
        }
    }
    /// The direct row a proxied row's hop is measured against.
    fn direct(self) -> Option<Row> {
        match self {
            Row::Nginx => Some(Row::Direct),
            Row::DovecotProxy | Row::DovecotProxyTuned => Some(Row::DovecotDirect),
            _ => None,
        }
    }
    fn dovecot(self) -> bool {
        matches!(
            self,
            Row::DovecotProxy | Row::DovecotProxyTuned | Row::DovecotDirect
        )
    }
}

/// A started path: the port clients connect to and every process tree it spends CPU in.
struct Up {
    port: u16,
    /// The backends' ports, for a second front on the same backends.
    backends: Vec<u16>,
    /// Each process tree with what it is, for the CPU breakdown.
    children: Vec<(Child, &'static str)>,
}

impl Up {
    fn one(child: Child, port: u16, what: &'static str) -> Up {
        Up {
            port,
            backends: Vec::new(),
            children: vec![(child, what)],
        }
    }
    fn pids(&self) -> Vec<(u32, &'static str)> {
        self.children.iter().map(|(c, w)| (c.id(), *w)).collect()
    }
    fn stop(&mut self) {
        for (c, _) in &mut self.children {
            conn::stop(c);
        }
    }
}

/// One measured cell.
#[derive(Clone, Debug, Default)]
struct Cell {
    sessions: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    p50: Duration,
    server_cpu_ms: Option<f64>,
    /// Server CPU ms/session per part of the path, in the path's order.
    parts: Vec<(&'static str, f64)>,
    client_cpu_ms: f64,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.sessions as f64 / self.secs
    }
}

fn connect(addr: &SocketAddr) -> Result<TcpStream, String> {
    let s =
        TcpStream::connect_timeout(addr, conn::IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(conn::IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(conn::IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Reads one reply line; Err unless it is `+OK`.
fn ok_line(r: &mut BufReader<&TcpStream>, buf: &mut String, what: &str) -> Result<(), String> {
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

/// One complete session for user `i`: greeting, USER, PASS, STAT (one message), RETR 1 (that
/// user's message), QUIT, and the server's close.
fn session(addr: &SocketAddr, i: usize, buf: &mut String) -> Result<(), String> {
    let s = connect(addr)?;
    let mut r = BufReader::new(&s);
    let mut w = &s;
    let u = conn::user(i);
    ok_line(&mut r, buf, "greeting")?;
    write!(w, "USER {u}\r\n").map_err(|e| e.to_string())?;
    ok_line(&mut r, buf, "USER")?;
    write!(w, "PASS {}\r\n", conn::password(i)).map_err(|e| e.to_string())?;
    ok_line(&mut r, buf, "PASS")?;
    w.write_all(b"STAT\r\n").map_err(|e| e.to_string())?;
    ok_line(&mut r, buf, "STAT")?;
    if buf.split_whitespace().nth(1) != Some(&conn::MESSAGES.to_string()) {
        return Err(format!(
            "STAT: {} (want {} message)",
            buf.trim_end(),
            conn::MESSAGES
        ));
    }
    w.write_all(b"RETR 1\r\n").map_err(|e| e.to_string())?;
    ok_line(&mut r, buf, "RETR")?;
    // The message, dot-terminated; it must be this user's.
    buf.clear();
    loop {
        let n = r.read_line(buf).map_err(|e| format!("RETR: {e}"))?;
        if n == 0 {
            return Err("RETR: connection closed".into());
        }
        if buf.ends_with("\r\n.\r\n") || buf == ".\r\n" {
            break;
        }
        if buf.len() > MAX_REPLY {
            return Err("RETR: no end of message".into());
        }
    }
    let want = format!("Message-ID: <conn-{u}@example.org>\r\n");
    if !buf.contains(&want) || !buf.contains("A tiny mailbox: the session is STAT.\r\n") {
        return Err(format!("RETR: not {u}'s message"));
    }
    w.write_all(b"QUIT\r\n").map_err(|e| e.to_string())?;
    ok_line(&mut r, buf, "QUIT")?;
    // The session ends when the server closes: a rate must not count half-open sessions.
    let mut b = [0u8; 64];
    match r.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err("bytes after QUIT".into()),
        Err(e) => Err(format!("waiting for close: {e}")),
    }
}

/// `clients` threads looping sessions against `port` for `secs`; CPU of the `pids` trees.
fn measure(port: u16, pids: &[(u32, &'static str)], clients: usize, secs: f64) -> Cell {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = || -> Option<Vec<u64>> { pids.iter().map(|&(p, _)| conn::tree_ticks(p)).collect() };
    let ticks0 = ticks();
    let cpu0 = conn::self_cpu();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let (mut errors, mut first) = (0u64, None);
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
                            first.get_or_insert(e);
                            // A refused connect would otherwise spin the CPU.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut cell = Cell::default();
    let mut lat = Vec::new();
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
    }
    let n = cell.sessions.max(1) as f64;
    cell.client_cpu_ms = (conn::self_cpu() - cpu0).as_secs_f64() * 1e3 / n;
    if let (Some(a), Some(b)) = (ticks0, ticks()) {
        let ms = |t: u64| t as f64 / hz * 1e3 / n;
        for ((&(_, what), a), b) in pids.iter().zip(a).zip(b) {
            let t = ms(b.saturating_sub(a));
            match cell.parts.iter_mut().find(|(w, _)| *w == what) {
                Some((_, x)) => *x += t,
                None => cell.parts.push((what, t)),
            }
        }
        cell.server_cpu_ms = Some(cell.parts.iter().map(|(_, t)| t).sum());
    }
    cell
}

/// The repetition with the median rate, errors summed over all so none hides.
fn median_cell(mut v: Vec<Cell>) -> Option<Cell> {
    if v.is_empty() {
        return None;
    }
    let errors: u64 = v.iter().map(|c| c.errors).sum();
    let first = v.iter().find_map(|c| c.first_error.clone());
    v.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut m = v.swap_remove(v.len() / 2);
    m.errors = errors;
    m.first_error = first;
    Some(m)
}

/// The path of `name` on PATH (or `name` itself when it holds a slash and exists).
fn on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|f| f.is_file())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The key shared by pop-route and the backends' pop-checkpassword: 64 random hex digits,
/// mode 0600.
fn make_key(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{hex}\n").as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The chain's argv on DIR with `--token-key KEY` given to pop-checkpassword.
fn token_chain_argv(dir: &Path, bins: &Path, key: &Path) -> Result<Vec<String>, String> {
    let mut argv = conn::chain_argv(dir, bins)?;
    let at = argv
        .iter()
        .position(|a| a.ends_with("/pop-checkpassword"))
        .ok_or("no pop-checkpassword in the chain")?;
    argv.splice(at + 1..at + 1, ["--token-key".into(), s(key)]);
    Ok(argv)
}

fn under_tcpserver(dir: &Path, name: &str, argv: &[String]) -> Result<(Child, u16), String> {
    let port = conn::free_port().map_err(|e| e.to_string())?;
    let log = dir.join(format!("{name}.log"));
    let mut child = conn::tcpserver(port, &["-D"], argv, &log)?;
    match conn::wait_for(port, &mut child) {
        Ok(()) => Ok((child, port)),
        Err(e) => {
            conn::stop(&mut child);
            let last = fs::read_to_string(&log).unwrap_or_default();
            let last = last.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!(
                "{name}: {e}{}",
                last.map(|l| format!("; {l}")).unwrap_or_default()
            ))
        }
    }
}

/// tcpserver for a program that does not greet (pop-route speaks HTTP): waits until the port
/// accepts a connection.
fn under_tcpserver_quiet(dir: &Path, name: &str, argv: &[String]) -> Result<(Child, u16), String> {
    let port = conn::free_port().map_err(|e| e.to_string())?;
    let log = dir.join(format!("{name}.log"));
    let mut child = conn::tcpserver(port, &["-D"], argv, &log)?;
    let deadline = Instant::now() + conn::START_TIMEOUT;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("{name}: tcpserver exited at start-up ({st})"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((child, port));
        }
        if Instant::now() > deadline {
            conn::stop(&mut child);
            return Err(format!("{name}: nothing listens on its port"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The nginx configuration: the mail module, one POP3 server asking `auth_port` over
/// `auth_http` for each login (USER/PASS, passed on to the backend it names).
fn nginx_conf(dir: &Path, module: &Path, port: u16, auth_port: u16, root: bool) -> String {
    let d = dir.display();
    let user = if root { "user nobody nogroup;\n" } else { "" };
    format!(
        "load_module {module};\n{user}daemon off;\nmaster_process on;\nworker_processes auto;\n\
         pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{\n    worker_connections 1024;\n}}\n\
         mail {{\n    server_name bench.popspool.invalid;\n    \
         auth_http 127.0.0.1:{auth_port}/auth;\n    proxy_pass_error_message on;\n    \
         server {{\n        listen 127.0.0.1:{port};\n        protocol pop3;\n        \
         pop3_auth plain;\n    }}\n}}\n",
        module = module.display()
    )
}

/// The Dovecot proxy's passdb: every user's password (checked here, then passed on) and the
/// backend that holds the user, `i % BACKENDS`.
fn dovecot_proxy_users(ports: &[u16]) -> String {
    let mut t = String::new();
    for i in 0..USERS {
        let _ = writeln!(
            t,
            "{}:{{PLAIN}}{}::::::proxy=y host=127.0.0.1 port={}",
            conn::user(i),
            conn::password(i),
            ports[i % ports.len()]
        );
    }
    t
}

struct Paths<'a> {
    root: &'a Path,
    bins: &'a Path,
    o: &'a Owner,
    opts: &'a ProxyOpts,
}

impl Paths<'_> {
    /// A backend's (or the proxy's) directory: users, homes and spools of its own.
    fn world(&self, name: &str) -> Result<PathBuf, String> {
        let d = self.root.join(name);
        conn::world(&d, Scheme::Plain, self.o)?;
        Ok(d)
    }

    /// A Dovecot proxy instance in front of the backends on `ports`; `tuned`: its login
    /// processes in high-performance mode (`service_count = 0`, each serving many
    /// connections), the high-performance mode of Dovecot's login-process documentation.
    fn start_dovecot_proxy(
        &self,
        name: &str,
        ports: &[u16],
        tuned: bool,
    ) -> Result<(Child, u16), String> {
        let d = self.world(name)?;
        // No mailboxes here: a session the proxy served itself would fail its STAT.
        let spool = d.join("spool-dovecot");
        fs::remove_dir_all(&spool).map_err(|e| format!("{}: {e}", spool.display()))?;
        let passdb = d.join("proxy-users");
        fs::write(&passdb, dovecot_proxy_users(ports)).map_err(|e| e.to_string())?;
        let users = format!("args = {}/users\n}}\nuserdb", d.display());
        let proxied = format!("args = {}\n}}\nuserdb", passdb.display());
        let login = "service pop3-login {\n";
        let fast = "service pop3-login {\n  service_count = 0\n  process_min_avail = 2\n";
        let conf = |port| {
            let c = conn::dovecot_conf(&d, port, None).replacen(&users, &proxied, 1);
            if tuned {
                c.replacen(login, fast, 1)
            } else {
                c
            }
        };
        let c = conf(0);
        if !c.contains(&proxied) || (tuned && !c.contains(fast)) {
            return Err(
                "the Dovecot configuration has no passwd-file passdb or login service".into(),
            );
        }
        conn::start_dovecot_conf(&d, self.o, &conf, &conn::wait_for)
    }

    /// Starts `row`; `earlier` are the rows started before it (a second front reuses the
    /// backends of the first).
    fn start(&self, row: Row, earlier: &[(Row, Result<Up, String>)]) -> Result<Up, String> {
        match row {
            Row::Direct => {
                let d = self.world("direct")?;
                let (c, port) = under_tcpserver(&d, "chain", &conn::chain_argv(&d, self.bins)?)?;
                Ok(Up::one(c, port, "chain"))
            }
            Row::Nginx => self.start_nginx(),
            Row::DovecotProxyTuned => {
                if self.opts.no_dovecot {
                    return Err("left out (--no-dovecot)".into());
                }
                let ports = match earlier.iter().find(|(r, _)| *r == Row::DovecotProxy) {
                    Some((_, Ok(u))) => u.backends.clone(),
                    _ => return Err("needs the Dovecot backends, which did not start".into()),
                };
                let (c, port) = self.start_dovecot_proxy("dovecot-proxy-tuned", &ports, true)?;
                Ok(Up::one(c, port, "Dovecot proxy"))
            }
            Row::DovecotDirect => {
                if self.opts.no_dovecot {
                    return Err("left out (--no-dovecot)".into());
                }
                let d = self.world("dovecot-direct")?;
                let (c, port) = conn::start_dovecot_with(&d, self.o, None, &conn::wait_for)?;
                Ok(Up::one(c, port, "Dovecot"))
            }
            Row::DovecotProxy => {
                if self.opts.no_dovecot {
                    return Err("left out (--no-dovecot)".into());
                }
                let mut up = Up {
                    port: 0,
                    backends: Vec::new(),
                    children: Vec::new(),
                };
                let r = (|| {
                    let mut ports = Vec::new();
                    for k in 0..BACKENDS {
                        let d = self.world(&format!("dovecot-b{k}"))?;
                        let (c, port) =
                            conn::start_dovecot_with(&d, self.o, None, &conn::wait_for)?;
                        up.children.push((c, "backends"));
                        ports.push(port);
                    }
                    let (c, port) = self.start_dovecot_proxy("dovecot-proxy", &ports, false)?;
                    up.children.push((c, "Dovecot proxy"));
                    up.port = port;
                    up.backends = ports;
                    Ok(())
                })();
                match r {
                    Ok(()) => Ok(up),
                    Err(e) => {
                        up.stop();
                        Err(e)
                    }
                }
            }
        }
    }

    fn start_nginx(&self) -> Result<Up, String> {
        let nginx = on_path(&self.opts.nginx).ok_or_else(|| {
            format!(
                "{} not installed (Debian packages nginx-light, libnginx-mod-mail)",
                self.opts.nginx
            )
        })?;
        if !self.opts.nginx_mail_module.is_file() {
            return Err(format!(
                "nginx's mail module {} not installed (Debian package libnginx-mod-mail)",
                self.opts.nginx_mail_module.display()
            ));
        }
        let route = self.bins.join("pop-route");
        if !route.is_file() {
            return Err(format!(
                "{} missing: cargo build --release --workspace --bins",
                route.display()
            ));
        }
        let mut up = Up {
            port: 0,
            backends: Vec::new(),
            children: Vec::new(),
        };
        let r = (|| {
            let key = self.root.join("token.key");
            make_key(&key)?;
            let mut backends = Vec::new();
            for k in 0..BACKENDS {
                let d = self.world(&format!("b{k}"))?;
                let (c, port) =
                    under_tcpserver(&d, "chain-token", &token_chain_argv(&d, self.bins, &key)?)?;
                up.children.push((c, "backends"));
                backends.push(port);
            }
            // pop-route checks the password against the front's users (the same passwords).
            let d = self.world("nginx")?;
            let mut argv = vec![
                s(&route),
                "--log".into(),
                "none".into(),
                "--token-key".into(),
                s(&key),
            ];
            for p in &backends {
                argv.extend(["--backend".into(), format!("127.0.0.1:{p}")]);
            }
            argv.extend([
                s(&self.bins.join("pop-checkpassword")),
                "--log".into(),
                "none".into(),
                "--source".into(),
                "passwd-file".into(),
                "--passwd-file".into(),
                s(&d.join("users")),
                "--min-uid".into(),
                "1".into(),
                "/bin/true".into(),
            ]);
            let (c, auth_port) = under_tcpserver_quiet(&d, "pop-route", &argv)?;
            up.children.push((c, "pop-route"));
            let port = conn::free_port().map_err(|e| e.to_string())?;
            let conf = d.join("nginx.conf");
            fs::write(
                &conf,
                nginx_conf(
                    &d,
                    &self.opts.nginx_mail_module,
                    port,
                    auth_port,
                    self.o.root,
                ),
            )
            .map_err(|e| e.to_string())?;
            let stderr = d.join("nginx.stderr");
            let mut child = Command::new(&nginx)
                .arg("-p")
                .arg(&d)
                .arg("-e")
                .arg(d.join("nginx-error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    fs::File::create(&stderr).map_err(|e| e.to_string())?,
                ))
                .spawn()
                .map_err(|e| format!("{}: {e}", nginx.display()))?;
            let ready = conn::wait_for(port, &mut child);
            up.children.push((child, "nginx"));
            up.port = port;
            ready.map_err(|e| {
                let log = fs::read_to_string(&stderr).unwrap_or_default()
                    + &fs::read_to_string(d.join("nginx-error.log")).unwrap_or_default();
                let last = log.lines().rev().find(|l| !l.trim().is_empty());
                format!(
                    "nginx: {e}{}",
                    last.map(|l| format!("; {l}")).unwrap_or_default()
                )
            })
        })();
        match r {
            Ok(()) => Ok(up),
            Err(e) => {
                up.stop();
                Err(e)
            }
        }
    }
}

/// What the run measured.
struct Results {
    clients: usize,
    rows: Vec<(Row, Result<Cell, String>)>,
}

impl Results {
    fn cell(&self, row: Row) -> Option<&Cell> {
        self.rows
            .iter()
            .find(|(r, _)| *r == row)
            .and_then(|(_, c)| c.as_ref().ok())
    }
    /// A clean cell's rate: one with errors measures nothing fair.
    fn rate(&self, row: Row) -> Option<f64> {
        self.cell(row).filter(|c| c.errors == 0).map(Cell::rate)
    }
    /// The hop's server CPU per session, ms: the proxied path's minus the straight one's.
    fn hop_ms(&self, row: Row) -> Option<f64> {
        let d = self.cell(row.direct()?)?.server_cpu_ms?;
        Some(self.cell(row)?.server_cpu_ms? - d)
    }
    /// The hop's cost in median latency, ms.
    fn hop_p50_ms(&self, row: Row) -> Option<f64> {
        let d = self.cell(row.direct()?)?.p50;
        Some((self.cell(row)?.p50.as_secs_f64() - d.as_secs_f64()) * 1e3)
    }
    /// Whether a path that started failed its warm-up or every session.
    fn failed(&self) -> bool {
        self.rows
            .iter()
            .any(|(_, c)| matches!(c, Err(e) if e.starts_with("FAILED")))
    }
}

fn run_inner(
    opts: &ProxyOpts,
    clients: usize,
    bins: &Path,
    work: &Path,
) -> Result<Results, String> {
    let o = conn::owner();
    let root = work.join("proxy");
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    if o.root {
        // The servers' users (nobody) must reach their homes and spools under the work dir.
        use std::os::unix::fs::PermissionsExt;
        for d in [work, &root] {
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
        }
    }
    let paths = Paths {
        root: &root,
        bins,
        o: &o,
        opts,
    };
    eprintln!("proxy: preparing {USERS} users per instance, starting every path");
    let mut ups: Vec<(Row, Result<Up, String>)> = Vec::new();
    for row in Row::ALL {
        let up = if row.dovecot() && !opts.no_dovecot && !o.root {
            Err("needs root (its login and auth processes switch users)".into())
        } else {
            paths.start(row, &ups)
        };
        if let Err(e) = &up {
            eprintln!("proxy: {} skipped: {e}", row.name());
        }
        ups.push((row, up));
    }
    // Warm-up: one session per user (per client with --quick), so page caches, Dovecot's
    // indexes and nginx's workers exist before anything is measured. A path that fails it is
    // reported as failed, not measured.
    let warm = if opts.quick {
        clients.min(USERS)
    } else {
        USERS
    };
    let mut broken: Vec<Option<String>> = vec![None; ups.len()];
    for (k, (row, up)) in ups.iter().enumerate() {
        let Ok(u) = up else { continue };
        let addr = SocketAddr::from(([127, 0, 0, 1], u.port));
        let mut buf = String::new();
        for i in 0..warm {
            if let Err(e) = session(&addr, i, &mut buf) {
                eprintln!("proxy: {} warm-up, {}: {e}", row.name(), conn::user(i));
                broken[k] = Some(format!("FAILED warm-up, {}: {e}", conn::user(i)));
                break;
            }
        }
    }
    let mut samples: Vec<Vec<Cell>> = vec![Vec::new(); ups.len()];
    for rep in 0..opts.reps {
        // Paths alternate within each repetition: drift on a shared machine hits all alike.
        for (k, (row, up)) in ups.iter().enumerate() {
            let Ok(u) = up else { continue };
            if broken[k].is_some() {
                continue;
            }
            let mut pids = u.pids();
            if *row == Row::DovecotProxyTuned {
                // Its sessions end in the other proxy's backends.
                if let Some((_, Ok(p))) = ups.iter().find(|(r, _)| *r == Row::DovecotProxy) {
                    pids.extend(p.pids().into_iter().filter(|(_, w)| *w == "backends"));
                }
            }
            let cell = measure(u.port, &pids, clients, opts.seconds);
            eprintln!(
                "proxy: {:<56} rep {}: {:7.1}/s, {} errors{}",
                row.name(),
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
    let mut rows = Vec::new();
    for ((row, up), (s, b)) in ups.iter_mut().zip(samples.into_iter().zip(broken)) {
        let cell = match (up, b) {
            (Err(e), _) => Err(format!("skipped: {e}")),
            (Ok(u), b) => {
                u.stop();
                match b {
                    Some(e) => Err(e),
                    None => match median_cell(s) {
                        Some(c) if c.sessions == 0 => Err(format!(
                            "FAILED: no session completed ({})",
                            c.first_error.unwrap_or_default()
                        )),
                        Some(c) => Ok(c),
                        None => Err("not measured".into()),
                    },
                }
            }
        };
        rows.push((*row, cell));
    }
    Ok(Results { clients, rows })
}

fn nginx_version(nginx: &str) -> Option<String> {
    let out = Command::new(on_path(nginx)?).arg("-v").output().ok()?;
    let t = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Some(t.rsplit(": ").next().unwrap_or(&t).to_string())
}

fn render(opts: &ProxyOpts, r: &Results) -> String {
    let mut out = String::new();
    out.push_str("## Proxy\n\n");
    let _ = writeln!(
        out,
        "Produced by `scripts/bench proxy` (`popspool-bench proxy{}`). One Rust load client, \
         {} clients, {USERS} `{{PLAIN}}` users with one message each; every session a new \
         connection: greeting, USER, PASS, STAT (checked: 1 message), RETR 1 (checked: that \
         user's message), QUIT, server close. Paths:\n\n\
         - **our chain, straight**: `tcpserver -D` → `pop-popup` → `pop-checkpassword \
         --source passwd-file` → `pop-serve`;\n\
         - **nginx**: nginx's mail proxy ({}, `pop3_auth plain`, `auth_http` per login) → \
         `pop-route` under `tcpserver -D` (checks the password with `pop-checkpassword`, picks \
         one of {BACKENDS} backends by rendezvous hashing, answers with a login token) → the \
         backend's chain, whose `pop-checkpassword --token-key` accepts the token instead of \
         the password; each backend its own users file and spool;\n\
         - **Dovecot proxy**: a Dovecot instance whose passwd-file passdb answers `proxy=y \
         host=127.0.0.1 port=…` (it checks the password and passes it on) → {BACKENDS} Dovecot \
         POP3 backends (user i on backend i mod {BACKENDS}), each with its own base directory, \
         configuration, users and mbox spool, all with the defaults of the other Dovecot runs;\n\
         - **Dovecot proxy, `service_count = 0`**: a second proxy instance in front of the same \
         backends with its login processes in the high-performance mode of Dovecot's login-process \
         documentation (each serves many connections; `process_min_avail = 2`);\n\
         - **Dovecot, straight**: one such backend alone.\n\n\
         Server CPU per session is summed over every process of the path (nginx's master and \
         workers, pop-route's tcpserver and what it ran, every backend's tcpserver and what it \
         ran; Dovecot's proxy and backend instances, every process). The hop's cost is the \
         proxied path's server CPU per session minus the straight path's.\n",
        if opts.quick { " --quick" } else { "" },
        r.clients,
        nginx_version(&opts.nginx).unwrap_or_else(|| "nginx".into()),
    );
    let _ = writeln!(
        out,
        "{}- repetitions: {} of {} s per path, paths alternating, median reported\n\
         - load average at the end: {}",
        crate::report::machine(),
        opts.reps,
        opts.seconds,
        crate::scenario::loadavg()
    );
    if let Some(n) = &opts.note {
        let _ = writeln!(out, "- note: {n}");
    }
    out.push('\n');
    out.push_str(
        "| path | sessions/s | p50 latency | server CPU ms/session | hop's cost: CPU ms/session · p50 ms | client CPU ms/session |\n\
         |---|--:|--:|--:|--:|--:|\n",
    );
    for (row, cell) in &r.rows {
        match cell {
            Ok(c) => {
                let rate = if c.errors == 0 {
                    format!("{:.0}", c.rate())
                } else {
                    format!("{:.0} ({} errors)", c.rate(), c.errors)
                };
                let _ = writeln!(
                    out,
                    "| {} | {rate} | {:.1} ms | {} | {} | {:.2} |",
                    row.name(),
                    c.p50.as_secs_f64() * 1e3,
                    c.server_cpu_ms
                        .map(|m| format!("{m:.2}"))
                        .unwrap_or_else(|| "—".into()),
                    r.hop_ms(*row)
                        .zip(r.hop_p50_ms(*row))
                        .map(|(m, l)| format!("{m:+.2} · {l:+.1}"))
                        .unwrap_or_else(|| "—".into()),
                    c.client_cpu_ms,
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {} | {e} | | | | |", row.name());
            }
        }
    }
    out.push('\n');
    for (row, cell) in &r.rows {
        if let Some(c) = cell.as_ref().ok().filter(|c| c.parts.len() > 1) {
            let _ = writeln!(
                out,
                "- {}, server CPU ms/session by part: {}",
                row.name(),
                c.parts
                    .iter()
                    .map(|(w, t)| format!("{w} {t:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for (row, cell) in &r.rows {
        if let Ok(c) = cell {
            if let Some(e) = c.first_error.as_ref().filter(|_| c.errors > 0) {
                let _ = writeln!(out, "- {}: {} errors, first: {e}", row.name(), c.errors);
            }
        }
    }
    out.push_str("\n### Proxy target check (reported, never asserted)\n\n");
    match (r.rate(Row::Nginx), r.rate(Row::DovecotProxy)) {
        (Some(a), Some(b)) if b > 0.0 => {
            let x = a / b;
            let by = if x >= TARGET {
                format!("{:.0}% above the target", (x / TARGET - 1.0) * 100.0)
            } else {
                format!(
                    "{:.0}% short: needs {:.0} sessions/s more",
                    (1.0 - x / TARGET) * 100.0,
                    TARGET * b - a
                )
            };
            let _ = writeln!(
                out,
                "- {} proxied sessions/s through nginx + pop-route ≥ {TARGET}x Dovecot's proxy: \
                 {x:.2}x ({a:.0}/s vs {b:.0}/s; {by})",
                if x >= TARGET { "MET" } else { "MISSED" }
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "- n/a proxied sessions/s through nginx + pop-route ≥ {TARGET}x Dovecot's proxy: \
                 not measured (a path skipped, failed or had errors)"
            );
        }
    }
    if let (Some(a), Some(b)) = (r.rate(Row::Nginx), r.rate(Row::DovecotProxyTuned)) {
        let x = a / b;
        let _ = writeln!(
            out,
            "- {} the same against Dovecot's proxy with high-performance login processes: \
             {x:.2}x ({a:.0}/s vs {b:.0}/s)",
            if x >= TARGET { "MET" } else { "MISSED" }
        );
    }
    let cpu = |row| r.cell(row).and_then(|c| c.server_cpu_ms);
    for other in [Row::DovecotProxy, Row::DovecotProxyTuned] {
        if let (Some(a), Some(b)) = (cpu(Row::Nginx), cpu(other)) {
            let _ = writeln!(
                out,
                "- server CPU per proxied session, {} over the nginx path: {:.2}x \
                 ({b:.2} ms vs {a:.2} ms)",
                other.name(),
                b / a
            );
        }
    }
    for row in [Row::Nginx, Row::DovecotProxy, Row::DovecotProxyTuned] {
        if let (Some(p), Some(d)) = (r.rate(row), row.direct().and_then(|d| r.rate(d))) {
            let _ = writeln!(
                out,
                "- {}: {:.0}% of the straight path's sessions/s",
                row.name(),
                p / d * 100.0
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

pub fn run(mut opts: ProxyOpts) -> Result<(), String> {
    if opts.quick {
        opts.seconds = opts.seconds.min(QUICK_SECONDS);
        opts.reps = 1;
    }
    let clients = opts
        .clients
        .unwrap_or(if opts.quick { QUICK_CLIENTS } else { CLIENTS });
    if clients == 0 {
        return Err("--clients must be at least 1".into());
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
    let bins = fs::canonicalize(&bins).unwrap_or(bins);
    fs::create_dir_all(&opts.work).map_err(|e| format!("{}: {e}", opts.work.display()))?;
    let work = fs::canonicalize(&opts.work).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let results = run_inner(&opts, clients, &bins, &work)?;
    eprintln!("proxy: done in {:.1} s", t0.elapsed().as_secs_f64());
    let text = render(&opts, &results);
    println!("{text}");
    if let Some(p) = &opts.markdown {
        let old = fs::read_to_string(p).unwrap_or_default();
        fs::write(p, splice(&old, &text)).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("proxy figures written to {}", p.display());
    }
    if results.failed() {
        return Err("a path that started failed its sessions (see the table)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_or_appends() {
        assert_eq!(splice("# T\n", "## Proxy\nnew\n"), "# T\n\n## Proxy\nnew\n");
        assert_eq!(
            splice("# T\n## Proxy\nold\n### x\n## B\nb\n", "## Proxy\nnew\n"),
            "# T\n## Proxy\nnew\n## B\nb\n"
        );
        assert_eq!(
            splice("## Proxy\nold\n", "## Proxy\nnew\n"),
            "## Proxy\nnew\n"
        );
    }

    #[test]
    fn nginx_conf_loads_the_mail_module_and_asks_the_router() {
        let c = nginx_conf(Path::new("/w"), Path::new("/m.so"), 1100, 1200, true);
        assert!(c.starts_with("load_module /m.so;\nuser nobody nogroup;\ndaemon off;\n"));
        assert!(c.contains("auth_http 127.0.0.1:1200/auth;"));
        assert!(c.contains("listen 127.0.0.1:1100;"));
        assert!(c.contains("protocol pop3;"));
        assert!(!nginx_conf(Path::new("/w"), Path::new("/m.so"), 1, 2, false).contains("user "));
    }

    #[test]
    fn dovecot_passdb_spreads_users() {
        let t = dovecot_proxy_users(&[1, 2, 3]);
        assert_eq!(t.lines().count(), USERS);
        assert!(t.starts_with("u00:{PLAIN}pw-00-bench::::::proxy=y host=127.0.0.1 port=1\n"));
        assert!(t.contains("\nu04:{PLAIN}pw-04-bench::::::proxy=y host=127.0.0.1 port=2\n"));
    }
}
