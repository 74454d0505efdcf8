//! `popspool-bench tls`: POP3 over TLS, on the same files with the same load client (rustls,
//! verifying against a CA made in the work directory), ECDSA P-256, `{PLAIN}` users:
//!
//! - complete sessions per second (connect, full handshake, greeting, USER, PASS, STAT, QUIT)
//!   and server CPU per session at one concurrency level, for the chain in plaintext (the
//!   reference), pop-tls in front of the chain, pop-tls with a ticket key file and a client that
//!   resumes, Dovecot with `ssl = required`, Debian's tlswrapper in front of the chain, and
//!   stunnel4's daemon forwarding to the chain under tcpserver;
//! - RETR of every message of one generated mbox through pop-tls, in plaintext, through
//!   Dovecot over TLS and through the other two fronts, in MB/s, and the pop-tls network
//!   process's peak RSS.
//!
//! Every tcpserver runs with `-D` (TCP_NODELAY): without it Nagle and delayed ACKs hold each
//! handshake flight for tens of milliseconds.

use crate::connections::{self as conn, Owner, Scheme, USERS};
use crate::gen::{self, Corpus};
use memchr::memmem;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server name in the bench's certificate, sent as SNI and verified.
const SERVER_NAME: &str = "pop.bench.invalid";
/// Concurrent clients of the session rows.
const CLIENTS: usize = 16;
/// The mbox of the RETR rows in a full run (the size of a real 976 MB spool), and in --quick.
const FULL_MESSAGES: usize = 144_524;
const QUICK_MESSAGES: usize = 1_000;
/// Seconds per session cell and repetitions in --quick.
const QUICK_SECONDS: f64 = 0.5;
/// RETR commands in flight: enough to keep the server busy, far below any socket buffer.
const RETR_WINDOW: usize = 64;
/// Reply buffer of the RETR reader; grows only for a larger single reply.
const READ_BUF: usize = 1 << 20;
/// Socket timeout of the RETR sessions: their STAT may index the whole mbox first (Dovecot).
const RETR_TIMEOUT: Duration = Duration::from_secs(300);
/// The user whose mailbox the RETR rows replace with the generated mbox.
const RETR_USER: usize = 0;
/// The pop-tls user when `_poptls` (made by scripts/install) does not exist.
const FALLBACK_TLS_USER: &str = "nobody";

#[derive(clap::Args, Debug, Clone)]
pub struct TlsOpts {
    /// Work directory (certificates, users, spools, configs live under WORK/tls).
    #[arg(long, default_value = "bench-work")]
    pub work: PathBuf,
    /// Seconds per session measurement (one server).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Repetitions (session cells and RETR runs); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Concurrent clients of the session rows.
    #[arg(long, default_value_t = CLIENTS)]
    pub clients: usize,
    /// Messages in the RETR mbox (default 144524; 1000 with --quick).
    #[arg(long)]
    pub messages: Option<usize>,
    /// Smoke run: 0.5 s per cell, one repetition, the 1,000-message mbox, a warm-up of one
    /// session per client.
    #[arg(long)]
    pub quick: bool,
    /// Directory holding pop-tls, pop-popup, pop-checkpassword, pop-serve (default: beside
    /// this program).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Leave Dovecot out.
    #[arg(long)]
    pub no_dovecot: bool,
    /// Write the report into this Markdown file, replacing its "TLS" section or appending one.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// A note printed with the machine description.
    #[arg(long)]
    pub note: Option<String>,
}

/// The rows, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    Plain,
    PopTls,
    PopTlsResumed,
    Dovecot,
    Tlswrapper,
    Stunnel,
}

impl Row {
    const ALL: [Row; 6] = [
        Row::Plain,
        Row::PopTls,
        Row::PopTlsResumed,
        Row::Dovecot,
        Row::Tlswrapper,
        Row::Stunnel,
    ];
    fn name(self) -> &'static str {
        match self {
            Row::Plain => "our chain, plaintext (reference)",
            Row::PopTls => "pop-tls + our chain (tcpserver -D)",
            Row::PopTlsResumed => "pop-tls + our chain, resumed (ticket key file)",
            Row::Dovecot => "Dovecot, `ssl = required` (pop3s)",
            Row::Tlswrapper => "Debian tlswrapper + our chain (tcpserver -D)",
            Row::Stunnel => "stunnel4 daemon → our chain (tcpserver -D)",
        }
    }
    fn tls(self) -> bool {
        self != Row::Plain
    }
}

/// A started server: its port and the process trees whose CPU it spends.
struct Up {
    port: u16,
    children: Vec<Child>,
    /// The tcpserver running pop-tls, for the network process's RSS.
    front_root: Option<u32>,
}

impl Up {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

/// One measured session cell.
#[derive(Clone, Debug, Default)]
struct Cell {
    sessions: u64,
    resumed: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    server_cpu_ms: Option<f64>,
    client_cpu_ms: f64,
    /// Negotiated protocol and cipher suite, as the client saw them.
    suite: Option<String>,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.sessions as f64 / self.secs
    }
}

/// One RETR-all run.
#[derive(Clone, Debug, Default)]
struct Retr {
    bytes: u64,
    secs: f64,
    /// Peak RSS of the pop-tls network process in that session, bytes.
    front_rss: Option<u64>,
}

impl Retr {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

/// The TLS certificate files made for the run.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Key then certificate in one file (tlswrapper's `-f`).
    both: PathBuf,
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl: {e} (Debian package openssl)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A throwaway CA and an ECDSA P-256 server certificate for [`SERVER_NAME`] signed by it.
fn make_certs(dir: &Path) -> Result<Certs, String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let p = |n: &str| dir.join(n).display().to_string();
    let (ca_key, ca, key, csr, cert, ext) = (
        p("ca.key"),
        p("ca.pem"),
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("server.ext"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec![
        "req",
        "-x509",
        "-days",
        "30",
        "-subj",
        "/CN=popspool bench CA",
    ];
    a.extend(ec);
    a.extend(["-keyout", &ca_key, "-out", &ca]);
    openssl(&a)?;
    let mut a = vec!["req", "-subj", "/CN=pop.bench.invalid"];
    a.extend(ec);
    a.extend(["-keyout", &key, "-out", &csr]);
    openssl(&a)?;
    fs::write(
        &ext,
        format!("subjectAltName=DNS:{SERVER_NAME}\nbasicConstraints=CA:FALSE\n"),
    )
    .map_err(|e| e.to_string())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ])?;
    let both = dir.join("server-both.pem");
    let text = fs::read_to_string(&key).map_err(|e| e.to_string())?
        + &fs::read_to_string(&cert).map_err(|e| e.to_string())?;
    fs::write(&both, text).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    for f in [&key, &both.display().to_string()] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    Ok(Certs {
        ca: ca.into(),
        cert: cert.into(),
        key: key.into(),
        both,
    })
}

/// The load client's configuration: TLS 1.3 and 1.2, the bench CA only; resumption only when
/// asked (every other row pays a full handshake per session).
fn client_config(ca: &Path, resume: bool) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(cfg))
}

/// A client connection, plaintext or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    fn connect(addr: &SocketAddr, tls: Option<&Arc<ClientConfig>>) -> Result<Stream, String> {
        Stream::connect_for(addr, tls, conn::IO_TIMEOUT)
    }
    fn connect_for(
        addr: &SocketAddr,
        tls: Option<&Arc<ClientConfig>>,
        timeout: Duration,
    ) -> Result<Stream, String> {
        let s = TcpStream::connect_timeout(addr, conn::IO_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(match tls {
            None => Stream::Plain(s),
            Some(cfg) => {
                let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
                let c = ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
                Stream::Tls(Box::new(StreamOwned::new(c, s)))
            }
        })
    }
    fn resumed(&self) -> bool {
        matches!(self, Stream::Tls(s)
            if s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
    }
    fn suite(&self) -> Option<String> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(format!(
                "{:?} {:?}",
                s.conn.protocol_version()?,
                s.conn.negotiated_cipher_suite()?.suite()
            )),
        }
    }
}

/// Reads POP3 replies over a big buffer: lines, and multi-line replies found by their
/// terminator with memmem.
struct Replies {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scan: usize,
    term: memmem::Finder<'static>,
}

impl Replies {
    fn new() -> Replies {
        Replies {
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            scan: 0,
            term: memmem::Finder::new(b"\r\n.\r\n"),
        }
    }

    fn fill(&mut self, s: &mut Stream) -> Result<(), String> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scan -= self.start.min(self.scan);
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match s.read(&mut self.buf[self.end..]) {
            Ok(0) => Err("connection closed".into()),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// One `+OK` line; returns it without its line end.
    fn ok_line(&mut self, s: &mut Stream, what: &str) -> Result<String, String> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + i])
                    .trim_end()
                    .to_string();
                self.start += i + 1;
                self.scan = self.start;
                return if line.starts_with("+OK") {
                    Ok(line)
                } else {
                    Err(format!("{what}: {line}"))
                };
            }
            self.fill(s).map_err(|e| format!("{what}: {e}"))?;
        }
    }

    /// One `+OK` multi-line reply; returns its length on the wire.
    fn multi(&mut self, s: &mut Stream, what: &str) -> Result<u64, String> {
        loop {
            let from = self.scan.max(self.start);
            if let Some(t) = self.term.find(&self.buf[from..self.end]) {
                let end = from + t + 5;
                if !self.buf[self.start..end].starts_with(b"+OK") {
                    let l = &self.buf[self.start..end.min(self.start + 80)];
                    return Err(format!("{what}: {}", String::from_utf8_lossy(l).trim_end()));
                }
                let n = (end - self.start) as u64;
                self.start = end;
                self.scan = end;
                return Ok(n);
            }
            self.scan = self.end.saturating_sub(4).max(self.start);
            self.fill(s).map_err(|e| format!("{what}: {e}"))?;
        }
    }
}

/// Greeting, USER, PASS for user `i`.
fn login(s: &mut Stream, r: &mut Replies, i: usize) -> Result<(), String> {
    r.ok_line(s, "greeting")?;
    write!(s, "USER {}\r\n", conn::user(i)).map_err(|e| e.to_string())?;
    r.ok_line(s, "USER")?;
    write!(s, "PASS {}\r\n", conn::password(i)).map_err(|e| e.to_string())?;
    r.ok_line(s, "PASS")?;
    Ok(())
}

/// QUIT, then the server's close (close_notify, or a plain end of stream).
fn quit(s: &mut Stream, r: &mut Replies) -> Result<(), String> {
    s.write_all(b"QUIT\r\n").map_err(|e| e.to_string())?;
    r.ok_line(s, "QUIT")?;
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err("bytes after QUIT".into()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(format!("waiting for close: {e}")),
    }
}

/// One complete session; Ok(whether the handshake was resumed, the suite).
fn session(
    addr: &SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    i: usize,
) -> Result<(bool, Option<String>), String> {
    let mut s = Stream::connect(addr, tls)?;
    let mut r = Replies::new_small();
    login(&mut s, &mut r, i)?;
    s.write_all(b"STAT\r\n").map_err(|e| e.to_string())?;
    let stat = r.ok_line(&mut s, "STAT")?;
    if stat.split_whitespace().nth(1) != Some(&conn::MESSAGES.to_string()) {
        return Err(format!("STAT: {stat} (want {} message)", conn::MESSAGES));
    }
    let resumed = s.resumed();
    let suite = s.suite();
    quit(&mut s, &mut r)?;
    Ok((resumed, suite))
}

impl Replies {
    /// A small buffer for the short sessions (their replies are lines).
    fn new_small() -> Replies {
        let mut r = Replies::new();
        r.buf = vec![0; 4096];
        r
    }
}

/// Waits until `port` completes a TLS (or plaintext) greeting.
fn wait_ready(port: u16, child: &mut Child, tls: Option<&Arc<ClientConfig>>) -> Result<(), String> {
    let deadline = Instant::now() + conn::START_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited at start-up ({st})"));
        }
        let last = match Stream::connect(&addr, tls) {
            Ok(mut s) => match Replies::new_small().ok_line(&mut s, "greeting") {
                Ok(_) => {
                    let _ = s.write_all(b"QUIT\r\n");
                    return Ok(());
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!("no greeting on its port ({last})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `clients` threads looping sessions against `port` for `secs`; CPU of the `pids` trees.
/// Thread t speaks TLS with `tls[t % tls.len()]` (plaintext when `tls` is empty).
fn measure(port: u16, pids: &[u32], clients: usize, secs: f64, tls: &[Arc<ClientConfig>]) -> Cell {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = || -> Option<u64> { pids.iter().map(|&p| conn::tree_ticks(p)).sum() };
    let ticks0 = ticks();
    let cpu0 = conn::self_cpu();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let stop = stop.clone();
            let tls = (!tls.is_empty()).then(|| tls[t % tls.len()].clone());
            std::thread::spawn(move || {
                let mut c = Cell::default();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let i = (t + k * clients) % USERS;
                    k += 1;
                    match session(&addr, tls.as_ref(), i) {
                        Ok((resumed, suite)) => {
                            c.sessions += 1;
                            c.resumed += u64::from(resumed);
                            if c.suite.is_none() {
                                c.suite = suite;
                            }
                        }
                        Err(e) => {
                            c.errors += 1;
                            c.first_error.get_or_insert(e);
                            // A refused connect would otherwise spin the CPU.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                c
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut cell = Cell::default();
    for h in handles {
        let c = h.join().unwrap_or_default();
        cell.sessions += c.sessions;
        cell.resumed += c.resumed;
        cell.errors += c.errors;
        if cell.first_error.is_none() {
            cell.first_error = c.first_error;
        }
        if cell.suite.is_none() {
            cell.suite = c.suite;
        }
    }
    // Sessions in flight at the stop finish after it: count the time they took.
    cell.secs = t0.elapsed().as_secs_f64();
    let n = cell.sessions.max(1) as f64;
    cell.client_cpu_ms = (conn::self_cpu() - cpu0).as_secs_f64() * 1e3 / n;
    if let (Some(a), Some(b)) = (ticks0, ticks()) {
        cell.server_cpu_ms = Some(b.saturating_sub(a) as f64 / hz * 1e3 / n);
    }
    cell
}

/// (pid, ppid, comm) of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let mut v = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(a), Some(b)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[b + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        v.push((pid, ppid, stat[a + 1..b].to_string()));
    }
    v
}

/// Peak RSS (VmHWM) of the pop-tls processes under `root` (after the handshake only the
/// network process still runs as pop-tls: the key process has exited, the program process has
/// exec'd pop-popup), bytes.
fn front_rss(root: u32) -> Option<u64> {
    let procs = processes();
    let mut inside = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid, _) in &procs {
            if inside.contains(ppid) && !inside.contains(pid) {
                inside.push(*pid);
                grew = true;
            }
        }
    }
    procs
        .iter()
        .filter(|(pid, _, comm)| comm == "pop-tls" && inside.contains(pid))
        .filter_map(|(pid, _, _)| {
            let st = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let l = st.lines().find(|l| l.starts_with("VmHWM:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .max()
        .map(|kb| kb * 1024)
}

/// RETR of every message of the [`RETR_USER`]'s mailbox, `RETR_WINDOW` commands in flight;
/// the time runs from the first RETR to the last reply.
fn retr_all(
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
    n: usize,
    front: Option<u32>,
) -> Result<Retr, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = Stream::connect_for(&addr, tls, RETR_TIMEOUT)?;
    let mut r = Replies::new();
    login(&mut s, &mut r, RETR_USER)?;
    s.write_all(b"STAT\r\n").map_err(|e| e.to_string())?;
    let stat = r.ok_line(&mut s, "STAT")?;
    if stat.split_whitespace().nth(1) != Some(&n.to_string()) {
        return Err(format!("STAT: {stat} (want {n} messages)"));
    }
    let t0 = Instant::now();
    let (mut sent, mut got, mut bytes) = (0, 0, 0u64);
    let mut cmds = String::new();
    while got < n {
        if sent - got <= RETR_WINDOW / 2 && sent < n {
            cmds.clear();
            while sent < n && sent - got < RETR_WINDOW {
                sent += 1;
                let _ = write!(cmds, "RETR {sent}\r\n");
            }
            s.write_all(cmds.as_bytes()).map_err(|e| e.to_string())?;
        }
        bytes += r.multi(&mut s, "RETR")?;
        got += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let front_rss = front.and_then(front_rss);
    quit(&mut s, &mut r)?;
    Ok(Retr {
        bytes,
        secs,
        front_rss,
    })
}

fn tool(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        if n.starts_with('/') {
            Path::new(n).is_file().then(|| n.to_string())
        } else {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(n))
                    .find(|f| f.is_file())
                    .map(|f| f.display().to_string())
            })
        }
    })
}

fn user_exists(name: &str) -> bool {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: getpwnam gets a valid C string; only the null check reads the result.
    !unsafe { libc::getpwnam(c.as_ptr()) }.is_null()
}

struct Setup<'a> {
    dir: &'a Path,
    bins: &'a Path,
    certs: &'a Certs,
    o: &'a Owner,
    tls_user: &'a str,
    full: Arc<ClientConfig>,
}

impl Setup<'_> {
    fn under_tcpserver(
        &self,
        name: &str,
        argv: Vec<String>,
        tls: bool,
    ) -> Result<(Child, u16), String> {
        let port = conn::free_port().map_err(|e| e.to_string())?;
        let log = self.dir.join(format!("{name}.log"));
        let mut child = conn::tcpserver(port, &["-D"], &argv, &log)?;
        match wait_ready(port, &mut child, tls.then_some(&self.full)) {
            Ok(()) => Ok((child, port)),
            Err(e) => {
                conn::stop(&mut child);
                let last = fs::read_to_string(&log).unwrap_or_default();
                let last = last.lines().rev().find(|l| !l.trim().is_empty());
                Err(format!(
                    "{e}{}",
                    last.map(|l| format!("; {l}")).unwrap_or_default()
                ))
            }
        }
    }

    fn pop_tls_argv(&self, tickets: Option<&Path>) -> Result<Vec<String>, String> {
        let b = self.bins.join("pop-tls");
        if !b.is_file() {
            return Err(format!(
                "{} missing: cargo build --release --workspace --bins",
                b.display()
            ));
        }
        let mut v = vec![
            b.display().to_string(),
            "--log".into(),
            "none".into(),
            "--user".into(),
            self.tls_user.into(),
            "--cert".into(),
            self.certs.cert.display().to_string(),
            "--key".into(),
            self.certs.key.display().to_string(),
        ];
        if let Some(t) = tickets {
            v.extend(["--ticket-keys".into(), t.display().to_string()]);
        }
        v.extend(conn::chain_argv(self.dir, self.bins)?);
        Ok(v)
    }

    fn start(&self, row: Row, plain_port: Option<u16>) -> Result<Up, String> {
        let one = |(child, port): (Child, u16), front: bool| Up {
            port,
            front_root: front.then(|| child.id()),
            children: vec![child],
        };
        match row {
            Row::Plain => Ok(one(
                self.under_tcpserver("plain", conn::chain_argv(self.dir, self.bins)?, false)?,
                false,
            )),
            Row::PopTls => Ok(one(
                self.under_tcpserver("pop-tls", self.pop_tls_argv(None)?, true)?,
                true,
            )),
            Row::PopTlsResumed => {
                let keys = self.dir.join("ticket-keys");
                let _ = fs::remove_file(&keys);
                let st = Command::new(self.bins.join("pop-tls"))
                    .arg("--rotate-ticket-keys")
                    .arg(&keys)
                    .status()
                    .map_err(|e| format!("pop-tls --rotate-ticket-keys: {e}"))?;
                if !st.success() {
                    return Err(format!("pop-tls --rotate-ticket-keys: {st}"));
                }
                Ok(one(
                    self.under_tcpserver("pop-tls-tickets", self.pop_tls_argv(Some(&keys))?, true)?,
                    true,
                ))
            }
            Row::Dovecot => {
                let full = self.full.clone();
                let ready = move |port: u16, c: &mut Child| wait_ready(port, c, Some(&full));
                let (child, port) = conn::start_dovecot_with(
                    self.dir,
                    self.o,
                    Some((&self.certs.cert, &self.certs.key)),
                    &ready,
                )?;
                Ok(one((child, port), false))
            }
            Row::Tlswrapper => {
                let t = tool(&["tlswrapper"])
                    .ok_or("tlswrapper not installed (Debian package tlswrapper)")?;
                let mut argv = vec![
                    t,
                    "-q".into(),
                    "-f".into(),
                    self.certs.both.display().to_string(),
                ];
                argv.extend(conn::chain_argv(self.dir, self.bins)?);
                Ok(one(self.under_tcpserver("tlswrapper", argv, true)?, false))
            }
            Row::Stunnel => {
                let t = tool(&["stunnel4", "stunnel"])
                    .ok_or("stunnel4 not installed (Debian package stunnel4)")?;
                let chain = plain_port.ok_or("needs the plaintext chain, which did not start")?;
                let port = conn::free_port().map_err(|e| e.to_string())?;
                let conf = self.dir.join("stunnel.conf");
                fs::write(
                    &conf,
                    format!(
                        "foreground = yes\npid =\nsyslog = no\noutput = {log}\ndebug = 3\n\
                         [pop3s]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{chain}\n\
                         cert = {cert}\nkey = {key}\n\
                         socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
                        log = self.dir.join("stunnel.log").display(),
                        cert = self.certs.cert.display(),
                        key = self.certs.key.display(),
                    ),
                )
                .map_err(|e| e.to_string())?;
                let mut child = Command::new(&t)
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("{t}: {e}"))?;
                match wait_ready(port, &mut child, Some(&self.full)) {
                    Ok(()) => Ok(Up {
                        port,
                        children: vec![child],
                        front_root: None,
                    }),
                    Err(e) => {
                        conn::stop(&mut child);
                        Err(e)
                    }
                }
            }
        }
    }
}

/// The measured results of the run.
struct Results {
    clients: usize,
    sessions: Vec<(Row, Result<Cell, String>)>,
    messages: usize,
    mbox_bytes: u64,
    retr: Vec<(Row, Result<Retr, String>)>,
    /// The pop-tls network process's peak RSS in a STAT session.
    small_rss: Option<u64>,
    tls_user: String,
}

fn median_by<T: Clone>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    Some(v[v.len() / 2].clone())
}

/// Puts a fresh copy of `mbox` as the RETR user's mailbox in `spools`.
fn install_mbox(dir: &Path, mbox: &Path, o: &Owner, spools: &[&str]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let u = conn::user(RETR_USER);
    for spool in spools {
        let b = dir.join(spool).join(&u[..1]).join(&u);
        fs::copy(mbox, &b).map_err(|e| format!("{}: {e}", b.display()))?;
        conn::chown(&b, o).map_err(|e| e.to_string())?;
        fs::set_permissions(&b, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Puts the one-message mailbox back for the session rows.
fn restore_small(dir: &Path, o: &Owner) -> Result<(), String> {
    // Rebuild the world's mailbox text for this user: the same bytes `world` wrote.
    let tmp = dir.join("small.mbox");
    let u = conn::user(RETR_USER);
    fs::copy(dir.join("spool-floor").join(&u[..1]).join(&u), &tmp).map_err(|e| e.to_string())?;
    install_mbox(dir, &tmp, o, &["spool-chain", "spool-dovecot"])?;
    fs::remove_file(&tmp).map_err(|e| e.to_string())
}

fn run_inner(opts: &TlsOpts, bins: &Path, work: &Path) -> Result<Results, String> {
    let o = conn::owner();
    let root = work.join("tls");
    let dir = root.join("plain");
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    if o.root {
        use std::os::unix::fs::PermissionsExt;
        for d in [work, &root] {
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
        }
    }
    eprintln!("tls: preparing {USERS} users, a CA and an ECDSA P-256 certificate");
    conn::world(&dir, Scheme::Plain, &o)?;
    let certs = make_certs(&root.join("certs"))?;
    if o.root {
        // Dovecot reads its certificate as root; the rest needs nothing more.
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(root.join("certs"), fs::Permissions::from_mode(0o700));
    }
    let tls_user = if user_exists("_poptls") || !o.root {
        "_poptls"
    } else {
        FALLBACK_TLS_USER
    };
    let full = client_config(&certs.ca, false)?;
    // One resuming configuration (and so one ticket store) per client thread: each resumes
    // from its own previous connection, as a mail client does, and never waits for another
    // thread's ticket.
    let resume = (0..opts.clients)
        .map(|_| client_config(&certs.ca, true))
        .collect::<Result<Vec<_>, _>>()?;
    let full = vec![full];
    let setup = Setup {
        dir: &dir,
        bins,
        certs: &certs,
        o: &o,
        tls_user,
        full: full[0].clone(),
    };
    let mut ups: Vec<(Row, Result<Up, String>)> = Vec::new();
    let mut plain_port = None;
    for row in Row::ALL {
        let up = if row == Row::Dovecot && opts.no_dovecot {
            Err("left out (--no-dovecot)".into())
        } else if row == Row::Dovecot && !o.root {
            Err("needs root (its login and auth processes switch users)".into())
        } else {
            setup.start(row, plain_port)
        };
        match &up {
            Ok(u) if row == Row::Plain => plain_port = Some(u.port),
            Ok(_) => {}
            Err(e) => eprintln!("tls: {} unavailable: {e}", row.name()),
        }
        ups.push((row, up));
    }
    let result = (|| -> Result<Results, String> {
        let cfgs_for = |row: Row| -> &[Arc<ClientConfig>] {
            match row {
                Row::Plain => &[],
                Row::PopTlsResumed => &resume,
                _ => &full,
            }
        };
        let cfg_for = |row: Row| cfgs_for(row).first();
        // Warm-up: one session per user, as many threads as clients (thread t takes users t,
        // t+clients, …, with the configuration it is measured with), so page caches,
        // Dovecot's indexes and every resuming thread's ticket exist before anything is
        // measured. --quick warms one user per thread only.
        let warm_users = if opts.quick {
            opts.clients.min(USERS)
        } else {
            USERS
        };
        for (row, up) in &ups {
            if let Ok(u) = up {
                let addr = SocketAddr::from(([127, 0, 0, 1], u.port));
                let cfgs = cfgs_for(*row);
                std::thread::scope(|sc| {
                    let hs: Vec<_> = (0..opts.clients.min(USERS))
                        .map(|t| {
                            let cfg = (!cfgs.is_empty()).then(|| &cfgs[t % cfgs.len()]);
                            sc.spawn(move || {
                                for i in (t..warm_users).step_by(opts.clients) {
                                    session(&addr, cfg, i).map_err(|e| {
                                        format!("{} warm-up, {}: {e}", row.name(), conn::user(i))
                                    })?;
                                }
                                Ok::<(), String>(())
                            })
                        })
                        .collect();
                    hs.into_iter()
                        .try_for_each(|h| h.join().unwrap_or(Err("warm-up thread panicked".into())))
                })?;
            }
        }
        let mut samples: Vec<Vec<Cell>> = vec![Vec::new(); ups.len()];
        for rep in 0..opts.reps {
            for (k, (row, up)) in ups.iter().enumerate() {
                let Ok(u) = up else { continue };
                let mut pids = u.pids();
                if *row == Row::Stunnel {
                    // stunnel's connections end in the plaintext chain's tcpserver.
                    if let Some(Ok(p)) = ups.first().map(|(_, u)| u) {
                        pids.extend(p.pids());
                    }
                }
                let cell = measure(u.port, &pids, opts.clients, opts.seconds, cfgs_for(*row));
                eprintln!(
                    "tls: {:<48} rep {}: {:7.1}/s, {} resumed, {} errors{}",
                    row.name(),
                    rep + 1,
                    cell.rate(),
                    cell.resumed,
                    cell.errors,
                    cell.first_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                );
                samples[k].push(cell);
            }
        }
        let sessions = ups
            .iter()
            .zip(samples)
            .map(|((row, up), s)| {
                let errors: u64 = s.iter().map(|c| c.errors).sum();
                let first = s.iter().find_map(|c| c.first_error.clone());
                let cell = match up {
                    Err(e) => Err(e.clone()),
                    Ok(_) => median_by(s, Cell::rate)
                        .map(|mut c| {
                            c.errors = errors;
                            c.first_error = first;
                            c
                        })
                        .ok_or_else(|| "not measured".to_string()),
                };
                (*row, cell)
            })
            .collect();
        // The front's memory in a short session, for comparison with the RETR session's.
        let small_rss = ups.iter().find_map(|(row, up)| match (row, up) {
            (Row::PopTls, Ok(u)) => small_session_rss(u, &full[0]),
            _ => None,
        });
        // RETR of the whole generated mbox: pop-tls, plaintext, Dovecot over TLS, and the
        // other fronts in front of the same chain.
        let n = opts.messages.unwrap_or(if opts.quick {
            QUICK_MESSAGES
        } else {
            FULL_MESSAGES
        });
        let data = work.join("data");
        // Reuse the mailbox bench's corpus as it was generated (with or without its Maildir).
        let stamp = fs::read_to_string(data.join(format!("real-{n}.stamp"))).unwrap_or_default();
        let owner = o.root.then_some((o.uid, o.gid));
        eprintln!("tls: generating {n} messages (reused if already there)");
        let g = gen::generate(
            &data,
            Corpus::Realistic,
            n,
            stamp.contains("maildir=true"),
            owner,
        )
        .map_err(|e| format!("generating the mbox: {e}"))?;
        let mut retr = Vec::new();
        for row in [
            Row::PopTls,
            Row::Plain,
            Row::Dovecot,
            Row::Tlswrapper,
            Row::Stunnel,
        ] {
            let Some((_, up)) = ups.iter().find(|(r, _)| *r == row) else {
                continue;
            };
            let u = match up {
                Ok(u) => u,
                Err(e) => {
                    retr.push((row, Err(e.clone())));
                    continue;
                }
            };
            let mut runs = Vec::new();
            let mut err = None;
            for rep in 0..opts.reps {
                let spool = if row == Row::Dovecot {
                    "spool-dovecot"
                } else {
                    "spool-chain"
                };
                install_mbox(&dir, &g.mbox, &o, &[spool])?;
                // A STAT session first: Dovecot builds its index, both read the file once.
                let addr = SocketAddr::from(([127, 0, 0, 1], u.port));
                let warm = (|| {
                    let mut s = Stream::connect_for(&addr, cfg_for(row), RETR_TIMEOUT)?;
                    let mut r = Replies::new_small();
                    login(&mut s, &mut r, RETR_USER)?;
                    quit(&mut s, &mut r)
                })();
                let res = warm.and_then(|()| retr_all(u.port, cfg_for(row), n, u.front_root));
                match res {
                    Ok(x) => {
                        eprintln!(
                            "tls: RETR x{n} {:<40} rep {}: {:7.1} MB/s{}",
                            row.name(),
                            rep + 1,
                            x.mbps(),
                            x.front_rss
                                .map(|b| format!(", pop-tls peak RSS {:.1} MB", b as f64 / 1e6))
                                .unwrap_or_default()
                        );
                        runs.push(x);
                    }
                    Err(e) => {
                        eprintln!("tls: RETR x{n} {}: {e}", row.name());
                        err = Some(e);
                        break;
                    }
                }
            }
            let r = match err {
                Some(e) => Err(e),
                None => median_by(runs, Retr::mbps).ok_or_else(|| "not measured".into()),
            };
            retr.push((row, r));
        }
        restore_small(&dir, &o)?;
        Ok(Results {
            clients: opts.clients,
            sessions,
            messages: n,
            mbox_bytes: g.mbox_bytes,
            retr,
            small_rss,
            tls_user: tls_user.into(),
        })
    })();
    for (_, up) in &mut ups {
        if let Ok(u) = up {
            for c in &mut u.children {
                conn::stop(c);
            }
        }
    }
    result
}

/// Peak RSS of the pop-tls network process in a STAT session, read before QUIT.
fn small_session_rss(u: &Up, cfg: &Arc<ClientConfig>) -> Option<u64> {
    let addr = SocketAddr::from(([127, 0, 0, 1], u.port));
    let mut s = Stream::connect(&addr, Some(cfg)).ok()?;
    let mut r = Replies::new_small();
    login(&mut s, &mut r, 1).ok()?;
    s.write_all(b"STAT\r\n").ok()?;
    r.ok_line(&mut s, "STAT").ok()?;
    let rss = u.front_root.and_then(front_rss);
    quit(&mut s, &mut r).ok()?;
    rss
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

fn render(opts: &TlsOpts, r: &Results) -> String {
    let mut out = String::new();
    out.push_str("## TLS\n\n");
    let _ = writeln!(
        out,
        "Produced by `scripts/bench` (`popspool-bench tls{}`). One Rust load client (rustls, \
         verifying against a CA made in the work directory, SNI `{SERVER_NAME}`, TLS 1.3 and \
         1.2 offered) against every server on the same users and files: ECDSA P-256 \
         certificate, `{{PLAIN}}` passwd-file, {} clients, every session a new connection with \
         a full handshake (except the resumed row: the client resumes with a ticket from an \
         earlier connection), greeting, USER, PASS, STAT (checked), QUIT, server close. Every \
         tcpserver runs with `-D`; pop-tls runs its network process as `{}`. Server CPU is the \
         whole process tree of the server (for stunnel: stunnel plus the chain's tcpserver).\n",
        if opts.quick { " --quick" } else { "" },
        r.clients,
        r.tls_user
    );
    let _ = writeln!(
        out,
        "{}- repetitions: {} of {} s per row, rows alternating, median reported\n\
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
        "| server | sessions/s | server CPU ms/session | client CPU ms/session | resumed | protocol, cipher |\n\
         |---|--:|--:|--:|--:|---|\n",
    );
    for (row, cell) in &r.sessions {
        match cell {
            Ok(c) => {
                let rate = if c.errors == 0 {
                    format!("{:.0}", c.rate())
                } else {
                    format!("{:.0} ({} errors)", c.rate(), c.errors)
                };
                let _ = writeln!(
                    out,
                    "| {} | {rate} | {} | {:.2} | {} | {} |",
                    row.name(),
                    c.server_cpu_ms
                        .map(|m| format!("{m:.2}"))
                        .unwrap_or_else(|| "—".into()),
                    c.client_cpu_ms,
                    if row.tls() {
                        format!("{}/{}", c.resumed, c.sessions)
                    } else {
                        "—".into()
                    },
                    c.suite.as_deref().unwrap_or("plaintext"),
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {} | skipped: {e} | | | | |", row.name());
            }
        }
    }
    for (row, cell) in &r.sessions {
        if let Ok(c) = cell.as_ref() {
            if let Some(e) = c.first_error.as_ref().filter(|_| c.errors > 0) {
                let _ = write!(out, "\n- {}: {} errors, first: {e}", row.name(), c.errors);
            }
        }
    }
    let _ = writeln!(
        out,
        "\nRETR of every message of the {}-message mbox ({}), {RETR_WINDOW} commands in flight, \
         one session, time from the first RETR to the last reply, median of {}:\n",
        r.messages,
        mb(r.mbox_bytes),
        opts.reps
    );
    out.push_str(
        "| server | MB/s | bytes on the wire (plaintext) | pop-tls peak RSS |\n|---|--:|--:|--:|\n",
    );
    for (row, x) in &r.retr {
        let name = match row {
            Row::PopTls => "pop-tls + our chain",
            Row::Plain => "our chain, plaintext",
            Row::Dovecot => "Dovecot over TLS",
            Row::Tlswrapper => "tlswrapper + our chain",
            Row::Stunnel => "stunnel4 → our chain",
            _ => row.name(),
        };
        match x {
            Ok(x) => {
                let _ = writeln!(
                    out,
                    "| {name} | {:.0} | {} | {} |",
                    x.mbps(),
                    mb(x.bytes),
                    x.front_rss.map(mb).unwrap_or_else(|| "—".into())
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {name} | skipped: {e} | | |");
            }
        }
    }
    if let Some(b) = r.small_rss {
        let _ = writeln!(
            out,
            "\npop-tls network process peak RSS in a STAT session: {} (per connection; \
             compare the RETR session's above).",
            mb(b)
        );
    }
    // Targets (issue 11), reported, never asserted.
    let rate = |row: Row| {
        r.sessions
            .iter()
            .find(|(x, _)| *x == row)
            .and_then(|(_, c)| c.as_ref().ok())
            .filter(|c| c.errors == 0)
            .map(Cell::rate)
    };
    let mbps = |row: Row| {
        r.retr
            .iter()
            .find(|(x, _)| *x == row)
            .and_then(|(_, c)| c.as_ref().ok())
            .map(Retr::mbps)
    };
    out.push_str("\n### TLS target check (reported, never asserted)\n\n");
    let mut check = |what: &str, v: Option<(f64, bool)>| {
        let _ = match v {
            Some((x, ok)) => writeln!(out, "- {} {what}: {x:.2}x", verdict(ok)),
            None => writeln!(out, "- n/a {what}: not measured"),
        };
    };
    let tls = rate(Row::PopTls);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let x = ratio(tls, rate(Row::Dovecot));
    check(
        "pop-tls sessions/s ≥ 3x Dovecot's",
        x.map(|x| (x, x >= 3.0)),
    );
    let best_front = [Row::Tlswrapper, Row::Stunnel]
        .into_iter()
        .filter_map(rate)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let x = ratio(tls, best_front);
    check(
        "pop-tls sessions/s > the best other front's (tlswrapper, stunnel)",
        x.map(|x| (x, x > 1.0)),
    );
    let x = ratio(mbps(Row::PopTls), mbps(Row::Plain));
    check(
        "RETR over pop-tls ≥ 0.5x the plaintext session",
        x.map(|x| (x, x >= 0.5)),
    );
    let x = ratio(mbps(Row::PopTls), mbps(Row::Dovecot));
    check(
        "RETR over pop-tls ≥ 5x Dovecot over TLS",
        x.map(|x| (x, x >= 5.0)),
    );
    out.push('\n');
    out
}

/// This part's section of BENCHMARKS.md replaced in `text`, or appended.
fn splice(text: &str, section: &str) -> String {
    crate::report::splice_section(text, section)
}

pub fn run(mut opts: TlsOpts) -> Result<(), String> {
    if opts.quick {
        opts.seconds = opts.seconds.min(QUICK_SECONDS);
        opts.reps = 1;
    }
    if opts.clients == 0 {
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
    let results = run_inner(&opts, &bins, &work)?;
    eprintln!("tls: done in {:.1} s", t0.elapsed().as_secs_f64());
    let text = render(&opts, &results);
    println!("{text}");
    if let Some(p) = &opts.markdown {
        let old = fs::read_to_string(p).unwrap_or_default();
        fs::write(p, splice(&old, &text)).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("TLS figures written to {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_or_appends() {
        assert_eq!(splice("# T\n", "## TLS\nnew\n"), "# T\n\n## TLS\nnew\n");
        assert_eq!(
            splice("# T\n## TLS\nold\n### x\n## B\nb\n", "## TLS\nnew\n"),
            "# T\n## TLS\nnew\n## B\nb\n"
        );
        assert_eq!(splice("## TLS\nold\n", "## TLS\nnew\n"), "## TLS\nnew\n");
    }
}
