//! One connection, from start to exit: the process layout and its order.
//!
//! ```text
//! pop-tls (root, fd 0/1 = client)
//!   fork -> key process: reads certificates and keys, signs once, exits (stays root)
//!   fork -> program process: execs PROG as root (implicit mode: after the handshake, with
//!           SSL_* set; --starttls: at once, with SSLCTLFD/SSLREADFD/SSLWRITEFD)
//!   then, itself: drop to the TLS user, not dumpable, no_new_privs, Landlock (no files, no
//!           TCP), RLIMIT_NOFILE at its own descriptor count: the network process that parses
//!           TLS records, holding no key and no root
//! ```
//!
//! Rule: every fork happens before the drop, and the network process opens nothing after it.
//! The program process reads at most one short, strictly parsed block from the network
//! process (implicit mode) and nothing else.

use crate::env;
use crate::keys::{self, KeyClient, KeySource, Resolver};
use crate::log::{self, Level, LogTarget};
use crate::sandbox;
use crate::session::{self, ClientIo, HandshakeError, ProgPipes, RelayEnd};
use crate::tickets::{self, FileTicketer};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use rustls::server::{NoServerSessionStorage, ServerConfig, ServerConnection};
use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Handshake deadline unless `--handshake-timeout` says otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A client whose TCP connection goes silent is dropped about this long after its last sign
/// of life, unless `--tcp-keepalive` says otherwise: keepalive probes start after half of it,
/// [`TCP_KEEPALIVE_PROBES`] of them fit in the other half, and `TCP_USER_TIMEOUT` (which also
/// ends a connection whose sent data stays unacknowledged) is all of it. For 120 s:
/// `TCP_KEEPIDLE` 60 s, `TCP_KEEPINTVL` 10 s, `TCP_KEEPCNT` 6, `TCP_USER_TIMEOUT` 120 s, the
/// same values the login chain's programs set.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(120);
/// Keepalive probes sent before a silent client is given up (`TCP_KEEPCNT`).
pub const TCP_KEEPALIVE_PROBES: u32 = 6;
/// The TLS user unless `--user` says otherwise.
pub const DEFAULT_USER: &str = "_poptls";
/// The ALPN protocol id for POP3 (RFC 8314 registers `pop3`).
pub const ALPN_POP3: &[u8] = b"pop3";
/// Descriptors the program gets under `--starttls`: control socket, reading pipe, writing
/// pipe, announced in SSLCTLFD, SSLREADFD, SSLWRITEFD. Above 5, so that fd 3 (checkpassword)
/// and fd 5 (tlswrapper -n) stay free.
pub const STARTTLS_FDS: [RawFd; 3] = [6, 7, 8];

/// Exit status: the client failed or abandoned the handshake, or broke TLS afterwards.
pub const EXIT_CLIENT: u8 = 1;
/// Exit status: usage error.
pub const EXIT_USAGE: u8 = 100;
/// Exit status: a system or configuration failure (certificate, key, user, fork, exec).
pub const EXIT_SYSTEM: u8 = 111;

/// Implicit TLS (port 995) or UCSPI-TLS delayed TLS (STLS on port 110).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Implicit,
    StartTls,
}

/// A validated command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub keys: KeySource,
    pub handshake_timeout: Duration,
    /// Output to the client that makes no progress for this long ends the session.
    pub write_timeout: Duration,
    /// See [`DEFAULT_TCP_KEEPALIVE`]; zero leaves the socket's keepalive as it is.
    pub tcp_keepalive: Duration,
    pub user: String,
    pub log: LogTarget,
    /// `--ticket-keys`: resumption across connections (see [`crate::tickets`]).
    pub ticket_keys: Option<std::path::PathBuf>,
    pub program: Vec<OsString>,
}

/// The client's address for log lines: TCPREMOTEIP (tcpserver), REMOTE_ADDR (systemd), else
/// the socket's peer (inetd), else "-".
pub fn client_address() -> String {
    for var in ["TCPREMOTEIP", "REMOTE_ADDR"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    peer_address().unwrap_or_else(|| "-".into())
}

/// The peer of descriptor 0 when it is an IP socket.
fn peer_address() -> Option<String> {
    nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(0)
        .ok()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| s.ip().to_string())
                .or_else(|| a.as_sockaddr_in6().map(|s| s.ip().to_string()))
        })
}

/// Under inetd no variable names the client, and in implicit mode the program's descriptor 0
/// is a pipe it cannot ask: it gets TCPREMOTEIP, as tcpserver would have set it.
fn remote_ip_for_program() -> Option<(&'static str, String)> {
    if ["TCPREMOTEIP", "REMOTE_ADDR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    {
        return None;
    }
    peer_address().map(|a| ("TCPREMOTEIP", a))
}

fn fatal(msg: &str) -> u8 {
    log::log(Level::Err, msg);
    EXIT_SYSTEM
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn grow_pipe(fd: RawFd) {
    // SAFETY: fcntl with integer arguments; failure (limit) is harmless.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, session::PIPE_SIZE) };
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: valid pointer to an int of the given size; ENOTSOCK on a pipe is ignored.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Keepalive on the client's TCP socket (see [`DEFAULT_TCP_KEEPALIVE`]); a Unix socket or a
/// pipe is left alone, and a failure costs only the early end of a vanished client's
/// session, so it is logged at debug level.
fn set_keepalive(fd: RawFd, dead_after: Duration) {
    use nix::sys::socket::{getsockname, getsockopt, setsockopt, sockopt};
    use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage};
    let secs = dead_after.as_secs();
    if secs == 0 {
        return;
    }
    // SAFETY: fd 0 and 1 stay open for the whole life of the process.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let tcp = matches!(getsockopt(&b, sockopt::SockType), Ok(SockType::Stream))
        && getsockname::<SockaddrStorage>(fd)
            .is_ok_and(|a| matches!(a.family(), Some(AddressFamily::Inet | AddressFamily::Inet6)));
    if !tcp {
        return;
    }
    // Linux caps TCP_KEEPIDLE and TCP_KEEPINTVL at 32767 s.
    let idle = (secs / 2).clamp(1, 32767) as u32;
    let interval = (secs / (2 * u64::from(TCP_KEEPALIVE_PROBES))).clamp(1, 32767) as u32;
    let user_ms = secs.saturating_mul(1000).min(u64::from(u32::MAX)) as u32;
    let r = setsockopt(&b, sockopt::TcpKeepIdle, &idle)
        .and_then(|()| setsockopt(&b, sockopt::TcpKeepInterval, &interval))
        .and_then(|()| setsockopt(&b, sockopt::TcpKeepCount, &TCP_KEEPALIVE_PROBES))
        .and_then(|()| setsockopt(&b, sockopt::TcpUserTimeout, &user_ms))
        .and_then(|()| setsockopt(&b, sockopt::KeepAlive, &true));
    if let Err(e) = r {
        log::log(Level::Debug, &format!("tcp keepalive on fd {fd}: {e}"));
    }
}

/// Places `from[i]` on descriptor `to[i]` without close-on-exec, whatever the overlaps.
fn place(from: &[RawFd], to: &[RawFd]) -> Result<(), String> {
    let mut high = Vec::new();
    for &f in from {
        // SAFETY: fcntl F_DUPFD_CLOEXEC on our own descriptor.
        let h = unsafe { libc::fcntl(f, libc::F_DUPFD_CLOEXEC, 64) };
        if h < 0 {
            return Err(format!("dup: {}", std::io::Error::last_os_error()));
        }
        high.push(h);
    }
    for (&h, &t) in high.iter().zip(to) {
        // SAFETY: dup2 between our descriptors; the target loses close-on-exec.
        if unsafe { libc::dup2(h, t) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    for h in high {
        // SAFETY: closing our own temporary copy.
        unsafe { libc::close(h) };
    }
    Ok(())
}

/// In the program process: environment, descriptors, default SIGPIPE, exec. Never returns.
fn exec_program(program: &[OsString], set: &[(&str, String)], remove: &[&str]) -> ! {
    let mut envp: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        let ks = k.to_string_lossy();
        if remove.iter().any(|r| *r == ks) {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if let Ok(c) = CString::new(kv) {
            envp.push(c);
        }
    }
    for (k, v) in set {
        if let Ok(c) = CString::new(format!("{k}={v}")) {
            envp.push(c);
        }
    }
    let argv: Vec<CString> = program
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    // SAFETY: restoring the default disposition before exec (Rust ignores SIGPIPE).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let e = nix::unistd::execvpe(&argv[0], &argv, &envp).unwrap_err();
    log::log(
        Level::Err,
        &format!("cannot run {}: {e}", program[0].to_string_lossy()),
    );
    // SAFETY: leaving the forked child without running the parent's destructors.
    unsafe { libc::_exit(EXIT_SYSTEM as i32) }
}

/// Waits for the program; a death by signal is 111 (logged when `warn`: after the client went
/// away, SIGPIPE is expected).
fn exit_code_of(pid: Pid, warn: bool) -> u8 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => return c as u8,
            Ok(WaitStatus::Signaled(_, s, _)) => {
                if warn {
                    log::log(Level::Warning, &format!("program killed by {s:?}"));
                }
                return EXIT_SYSTEM;
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return EXIT_SYSTEM,
        }
    }
}

fn tls_config(
    client: &Arc<KeyClient>,
    ticketer: Option<FileTicketer>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver {
            client: client.clone(),
        }));
    sc.alpn_protocols = vec![ALPN_POP3.to_vec()];
    sc.max_early_data_size = 0;
    // Every connection is a new process: a session cache or tickets without a shared key
    // would never be used again.
    sc.session_storage = Arc::new(NoServerSessionStorage {});
    sc.send_tls13_tickets = 0;
    if let Some(t) = ticketer {
        sc.ticketer = Arc::new(t);
        sc.send_tls13_tickets = tickets::TLS13_TICKETS;
    }
    Ok(Arc::new(sc))
}

/// Runs one connection; returns the exit status.
pub fn run(cfg: Config) -> u8 {
    log::init(cfg.log, format!("addr={}", client_address()));
    let mut io = ClientIo::stdio();
    if io.socket {
        set_nodelay(io.rfd);
        set_keepalive(io.rfd, cfg.tcp_keepalive);
        if io.wfd != io.rfd {
            set_nodelay(io.wfd);
            set_keepalive(io.wfd, cfg.tcp_keepalive);
        }
    }
    let user = match sandbox::lookup_user(&cfg.user) {
        Ok(u) => u,
        Err(e) => return fatal(&e),
    };
    // Read while the file can still be opened; a bad file costs resumption, not service.
    let ticketer = cfg.ticket_keys.as_deref().and_then(|p| {
        FileTicketer::load(p)
            .map_err(|e| log::log(Level::Warning, &format!("tickets off: {e}")))
            .ok()
    });
    let devnull = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(f) => OwnedFd::from(f),
        Err(e) => return fatal(&format!("cannot open /dev/null: {e}")),
    };

    // The key process.
    let (key_net, key_side) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return fatal(&format!("socketpair: {e}")),
    };
    // SAFETY: single-threaded here; the child only runs our code and exits.
    let key_pid = match unsafe { fork() } {
        Err(e) => return fatal(&format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(key_net);
            // The key process has no business with the client, nor with anything inherited.
            let _ = nix::unistd::dup2(devnull.as_raw_fd(), 0);
            let _ = nix::unistd::dup2(devnull.as_raw_fd(), 1);
            let mut keep = vec![0, 1, 2, key_side.as_raw_fd()];
            keep.extend(log::syslog_fd());
            sandbox::close_all_but(&keep);
            // devnull's number is closed now: forget it rather than close it twice.
            std::mem::forget(devnull);
            let _ = sandbox::no_dumps();
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let code = match keys::serve(key_side, &cfg.keys) {
                Ok(()) => 0,
                Err(_) => EXIT_SYSTEM as i32,
            };
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(key_side);

    // Plaintext pipes to and from the program, and the channel that tells it about TLS.
    let (prog_r, net_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fatal(&e),
    };
    let (net_r, prog_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fatal(&e),
    };
    grow_pipe(net_w.as_raw_fd());
    grow_pipe(net_r.as_raw_fd());
    // Implicit: a pipe carrying the SSL_* block. StartTLS: the UCSPI-TLS control socket.
    let (ctl_net, ctl_prog): (OwnedFd, OwnedFd) = match cfg.mode {
        Mode::Implicit => match pipe() {
            Ok((r, w)) => (w, r),
            Err(e) => return fatal(&e),
        },
        Mode::StartTls => match UnixStream::pair() {
            Ok((a, b)) => (OwnedFd::from(a), OwnedFd::from(b)),
            Err(e) => return fatal(&format!("socketpair: {e}")),
        },
    };

    // SAFETY: single-threaded here; the child execs or exits.
    let prog_pid = match unsafe { fork() } {
        Err(e) => return fatal(&format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop((net_w, net_r, ctl_net, key_net, devnull));
            program_process(&cfg, prog_r, prog_w, ctl_prog)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop((prog_r, prog_w, ctl_prog));

    // Now the network process: drop, confine, then talk TLS.
    let dropped = user.is_some();
    if let Some(u) = &user {
        if let Err(e) = sandbox::drop_to(u) {
            return fatal(&e);
        }
    }
    if let Err(e) = sandbox::no_dumps() {
        return fatal(&e);
    }
    let landlock = match sandbox::landlock_nothing() {
        Ok(s) => s,
        Err(e) => return fatal(&e),
    };
    let mut kept = vec![
        0,
        1,
        2,
        devnull.as_raw_fd(),
        key_net.as_raw_fd(),
        net_w.as_raw_fd(),
        net_r.as_raw_fd(),
        ctl_net.as_raw_fd(),
    ];
    kept.extend(log::syslog_fd());
    if let Err(e) = sandbox::close_the_doors(&kept, devnull.as_raw_fd(), dropped) {
        return fatal(&e);
    }
    session::set_nonblocking(net_w.as_raw_fd());
    session::set_nonblocking(net_r.as_raw_fd());

    let client = KeyClient::new(key_net, key_pid);
    let config = match tls_config(&client, ticketer) {
        Ok(c) => c,
        Err(e) => return fatal(&e),
    };
    let pipes = ProgPipes {
        to_prog: net_w.as_raw_fd(),
        from_prog: net_r.as_raw_fd(),
        retire: devnull.as_raw_fd(),
    };
    let who = match &user {
        Some(u) => format!("user={}", u.name),
        None => "user=unchanged".to_string(),
    };
    let sandbox_note = format!("{who} {landlock}");

    let code = match cfg.mode {
        Mode::Implicit => {
            let mut ctl = std::fs::File::from(ctl_net);
            match start_tls(
                &config,
                &client,
                &mut io,
                cfg.handshake_timeout,
                &sandbox_note,
            ) {
                Ok((conn, vars)) => {
                    let sent = ctl.write_all(&env::encode(&vars));
                    retire(ctl.into_raw_fd(), devnull.as_raw_fd());
                    if let Err(e) = sent {
                        log::log(Level::Err, &format!("cannot start the program: {e}"));
                        EXIT_SYSTEM
                    } else {
                        finish(conn, &mut io, &pipes, prog_pid, cfg.write_timeout)
                    }
                }
                Err(code) => {
                    retire(ctl.into_raw_fd(), devnull.as_raw_fd());
                    let _ = exit_code_of(prog_pid, false);
                    code
                }
            }
        }
        Mode::StartTls => {
            let mut ctl = UnixStream::from(ctl_net);
            starttls(
                &config,
                &client,
                &mut io,
                &mut ctl,
                &cfg,
                &pipes,
                prog_pid,
                &sandbox_note,
            )
        }
    };
    client.close();
    code
}

/// Closes a descriptor by putting a copy of `with` on its number: the sandbox leaves no free
/// number, and this keeps it so.
fn retire(fd: RawFd, with: RawFd) {
    // SAFETY: dup2 over a descriptor this process owns and no longer uses.
    unsafe { libc::dup2(with, fd) };
}

/// Handshake, log line, and the SSL_* variables; on failure the exit status.
fn start_tls(
    config: &Arc<ServerConfig>,
    client: &Arc<KeyClient>,
    io: &mut ClientIo,
    timeout: Duration,
    note: &str,
) -> Result<(ServerConnection, env::Vars), u8> {
    io.make_nonblocking();
    let mut conn = match ServerConnection::new(config.clone()) {
        Ok(c) => c,
        Err(e) => return Err(fatal(&format!("TLS: {e}"))),
    };
    // The relay bounds what it hands rustls (at most two RELAY_BUF reads waiting for the
    // socket), so rustls's own limit would only split writes.
    conn.set_buffer_limit(None);
    let res = session::handshake(&mut conn, io, Instant::now() + timeout);
    // The key has done its work (one signature at most): let the key process go.
    client.close();
    if let Err(e) = res {
        if let Some(k) = client.error() {
            // A configuration problem: the client gets an alert and a closed connection.
            return Err(fatal(&format!("certificate: {k}")));
        }
        let level = match e {
            HandshakeError::Io(_) => Level::Warning,
            _ => Level::Info,
        };
        log::log(level, &e.to_string());
        return Err(EXIT_CLIENT);
    }
    let (Some(proto), Some(suite)) = (conn.protocol_version(), conn.negotiated_cipher_suite())
    else {
        return Err(fatal("TLS: handshake ended without a version or suite"));
    };
    let vars = env::vars(proto, suite.suite(), conn.server_name());
    let alpn = conn
        .alpn_protocol()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_else(|| "-".into());
    log::log(
        Level::Info,
        &format!(
            "tls {} {} {} sni={} alpn={alpn} {note}",
            vars[0].1,
            vars[1].1,
            match conn.handshake_kind() {
                Some(rustls::HandshakeKind::Resumed) => "resumed",
                _ => "full",
            },
            conn.server_name().unwrap_or("-"),
        ),
    );
    Ok((conn, vars))
}

/// Relay, then wait for the program.
fn finish(
    mut conn: ServerConnection,
    io: &mut ClientIo,
    pipes: &ProgPipes,
    prog: Pid,
    write_stall: Duration,
) -> u8 {
    let (end, counts) = session::relay(&mut conn, io, pipes, write_stall);
    // Whatever the end, the program sees end of file on its input and its output goes
    // nowhere: it finishes on its own.
    retire(pipes.to_prog, pipes.retire);
    retire(pipes.from_prog, pipes.retire);
    let code = exit_code_of(prog, matches!(end, RelayEnd::ProgramDone));
    let summary = format!(
        "end: in={} out={} program={code}",
        counts.from_client, counts.to_client
    );
    match end {
        RelayEnd::ProgramDone => {
            log::log(Level::Info, &summary);
            code
        }
        RelayEnd::ClientGone => {
            log::log(Level::Info, &format!("{summary} client gone"));
            EXIT_CLIENT
        }
        RelayEnd::Stalled => {
            log::log(
                Level::Info,
                &format!(
                    "{summary} client stopped reading for {} s",
                    write_stall.as_secs()
                ),
            );
            EXIT_CLIENT
        }
        RelayEnd::Tls(e) => {
            log::log(Level::Info, &format!("{summary} client broke TLS: {e}"));
            EXIT_CLIENT
        }
        RelayEnd::Io(e) => {
            log::log(Level::Warning, &format!("{summary} relay: {e}"));
            EXIT_SYSTEM
        }
    }
}

/// --starttls: wait for the program's command, then handshake and relay.
#[allow(clippy::too_many_arguments)]
fn starttls(
    config: &Arc<ServerConfig>,
    client: &Arc<KeyClient>,
    io: &mut ClientIo,
    ctl: &mut UnixStream,
    cfg: &Config,
    pipes: &ProgPipes,
    prog: Pid,
    note: &str,
) -> u8 {
    // Plaintext phase: the program talks to the client itself on fd 0/1; this process does
    // not touch the socket until told to.
    let mut cmd = [0u8; 1];
    let want_info = loop {
        match ctl.read(&mut cmd) {
            Ok(0) | Err(_) => {
                // The program is done (or closed the control socket): no TLS this time.
                client.close();
                return exit_code_of(prog, true);
            }
            Ok(_) if cmd[0] == b'Y' => break true,
            Ok(_) if cmd[0] == b'y' => break false,
            Ok(_) => {
                log::log(
                    Level::Warning,
                    &format!("unknown UCSPI-TLS command byte {:#04x} ignored", cmd[0]),
                );
            }
        }
    };
    match start_tls(config, client, io, cfg.handshake_timeout, note) {
        Ok((conn, vars)) => {
            if want_info {
                let _ = ctl.write_all(&env::encode(&vars));
            }
            let _ = ctl.shutdown(std::net::Shutdown::Both);
            finish(conn, io, pipes, prog, cfg.write_timeout)
        }
        Err(code) => {
            // No clear text after a failed switch: the connection ends for everyone.
            let _ = ctl.shutdown(std::net::Shutdown::Both);
            io.shutdown_both();
            retire(pipes.to_prog, pipes.retire);
            retire(pipes.from_prog, pipes.retire);
            let _ = exit_code_of(prog, false);
            code
        }
    }
}

/// True when descriptors `a` and `b` are the same open socket or file (fstat identity).
fn same_file(a: RawFd, b: RawFd) -> bool {
    // SAFETY: fstat fills zeroed stat buffers.
    unsafe {
        let mut x: libc::stat = std::mem::zeroed();
        let mut y: libc::stat = std::mem::zeroed();
        libc::fstat(a, &mut x) == 0
            && libc::fstat(b, &mut y) == 0
            && x.st_dev == y.st_dev
            && x.st_ino == y.st_ino
    }
}

/// The program process (root, forked before the drop). Never returns.
fn program_process(cfg: &Config, prog_r: OwnedFd, prog_w: OwnedFd, ctl: OwnedFd) -> ! {
    // Under inetd descriptor 2 is the client's socket: anything the program wrote there would
    // bypass TLS. It gets /dev/null instead (its logs belong in syslog there anyway).
    if same_file(0, 2) {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2(f.as_raw_fd(), 2);
        }
    }
    let mut remove: Vec<&str> = env::NAMES.to_vec();
    remove.extend(env::UCSPI_TLS_NAMES);
    match cfg.mode {
        Mode::Implicit => {
            // Wait for the handshake: one short block, or end of file if it failed.
            let mut block = Vec::new();
            let mut f = std::fs::File::from(ctl);
            let _ = (&mut f)
                .take(env::MAX_BLOCK as u64 + 1)
                .read_to_end(&mut block);
            drop(f);
            if block.is_empty() {
                // SAFETY: leaving the forked child: the handshake did not complete.
                unsafe { libc::_exit(0) }
            }
            let Some(vars) = env::parse(&block) else {
                log::log(
                    Level::Err,
                    "malformed TLS information from the network process",
                );
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(EXIT_SYSTEM as i32) }
            };
            let mut vars = vars;
            vars.extend(remote_ip_for_program());
            if let Err(e) = place(&[prog_r.as_raw_fd(), prog_w.as_raw_fd()], &[0, 1]) {
                log::log(Level::Err, &e);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(EXIT_SYSTEM as i32) }
            }
            exec_program(&cfg.program, &vars, &remove)
        }
        Mode::StartTls => {
            let from = [ctl.as_raw_fd(), prog_r.as_raw_fd(), prog_w.as_raw_fd()];
            if let Err(e) = place(&from, &STARTTLS_FDS) {
                log::log(Level::Err, &e);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(EXIT_SYSTEM as i32) }
            }
            let set: Vec<(&str, String)> = env::UCSPI_TLS_NAMES
                .iter()
                .zip(STARTTLS_FDS)
                .map(|(n, fd)| (*n, fd.to_string()))
                .collect();
            // The originals are close-on-exec; the placed copies are not.
            let _ = (
                ctl.into_raw_fd(),
                prog_r.into_raw_fd(),
                prog_w.into_raw_fd(),
            );
            exec_program(&cfg.program, &set, &remove)
        }
    }
}
