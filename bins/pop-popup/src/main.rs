//! pop-popup: the POP3 AUTHORIZATION state in front of a checkpassword program, a drop-in for
//! qmail-popup. `pop-popup [OPTIONS] HOSTNAME CHECKPROG SUBPROG [ARGS...]`.
//!
//! Two processes after start-up: the client dialogue, confined, and this one, which runs
//! CHECKPROG for each login attempt the dialogue sends it (`spool_login::popup::split`).
//!
//! Exit status: 0 when the session ended normally (served, QUIT, refused login, client gone,
//! timeout); 100 for a usage error; 111 for a system failure (capabilities, random source,
//! client descriptors, or the checkpassword program failing temporarily or crashing).
//! See doc/pop-popup.8.
// Started by spool_wire::start (see `main` below); a test build keeps the harness's main.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use clap::Parser;
use spool_login::popup::starttls::{FdFront, Front};
use spool_login::popup::{
    self, privs, split, Checker, ExactLineInput, ExecChecker, Expire, PopupConfig, Timestamp,
};
use spool_wire::cli;
use spool_wire::log::{client_address, Level, LogTarget, Logger};
use spool_wire::sandbox::Enforced;
use spool_wire::timeio::FdOutput;
use std::cell::RefCell;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::time::Duration;

const PROGRAM: &str = "pop-popup";

#[derive(Parser, Debug)]
#[command(
    name = "pop-popup",
    version,
    about = "POP3 AUTHORIZATION front end: reads credentials, hands them to a checkpassword program"
)]
struct Args {
    /// Refuse APOP and leave the timestamp out of the greeting.
    #[arg(long)]
    no_apop: bool,

    /// Seconds the whole AUTHORIZATION state may last.
    #[arg(long, default_value_t = popup::DEFAULT_AUTH_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// Failed logins allowed on one connection.
    #[arg(long, default_value_t = popup::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,

    /// Delay before answering the first failed login, in milliseconds; doubles per failure
    /// (at most 30 s each).
    #[arg(long, default_value_t = popup::DEFAULT_FAIL_DELAY.as_millis() as u64)]
    fail_delay_ms: u64,

    /// Bad commands allowed before the connection is closed.
    #[arg(long, default_value_t = spool_wire::limits::DEFAULT_MAX_BAD_COMMANDS, value_parser = clap::value_parser!(u32).range(1..))]
    max_bad_commands: u32,

    /// Advertise RFC 2449 EXPIRE in CAPA: a number of days, or `never`.
    #[arg(long)]
    expire: Option<Expire>,

    /// Advertise RFC 2449 LOGIN-DELAY in CAPA, in seconds.
    #[arg(long)]
    login_delay: Option<u64>,

    /// A client whose TCP connection goes silent is dropped about SECS seconds after its
    /// last sign of life (keepalive probes and TCP_USER_TIMEOUT on descriptors 0 and 1 when
    /// they are TCP sockets; set once here for the whole session); 0 leaves the socket as is.
    #[arg(long, value_name = "SECS", default_value_t = spool_wire::limits::DEFAULT_TCP_KEEPALIVE.as_secs(), value_parser = clap::value_parser!(u64).range(0..=86400))]
    tcp_keepalive: u64,

    /// Where logs go: syslog (facility mail), stderr, or none. Under inetd stderr is the
    /// client's socket: use stderr only where it is not.
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// Live sessions allowed from one client source (an IPv4 address, an IPv6 /64); more are
    /// refused at once with `-ERR [SYS/TEMP]`. Off by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_per_source: Option<u32>,

    /// Live sessions allowed in all, counted across every pop-popup sharing --slot-dir.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Directory of the slot files of --max-per-source and --max-connections (created 0700;
    /// must be ours and writable by nobody else).
    #[arg(long, value_name = "DIR", default_value = popup::slots::DEFAULT_SLOT_DIR)]
    slot_dir: std::path::PathBuf,

    /// Accept USER, PASS, APOP and AUTH before STLS where a TLS front offers STLS (by
    /// default they are refused until TLS is on).
    #[arg(long)]
    allow_plaintext: bool,

    /// Run behind `tlswrapper -n`: STLS through its control pipe on fd 5.
    #[arg(long)]
    tlswrapper: bool,

    /// Expect a PROXY protocol header (v1 or v2, as HAProxy's send-proxy and send-proxy-v2
    /// send it) before anything else on the connection; refuse the connection without one.
    /// The client it names is the session's client: logs, --max-per-source, and the TCP*
    /// variables the chain sees.
    #[arg(long)]
    proxy_protocol: bool,

    /// The user the client dialogue runs as when pop-popup is started as root (looked up at
    /// start; must not have uid or gid 0).
    #[arg(long, value_name = "USER", default_value = "nobody")]
    dialogue_user: String,

    /// Refuse the connection (`-ERR [SYS/TEMP]`, exit 111) unless the dialogue's Landlock
    /// sandbox is fully enforced.
    #[arg(long)]
    require_sandbox: bool,

    /// The name in the greeting's timestamp: letters, digits and . @ _ + / - only.
    hostname: String,

    /// CHECKPROG SUBPROG [ARGS...], passed to exec unchanged.
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CHECKPROG SUBPROG [ARGS]"
    )]
    program: Vec<OsString>,
}

/// A usage error: see `spool_wire::log::report_usage_error` (stderr may be the client's socket).
fn usage_error(msg: &str) -> u8 {
    spool_wire::log::report_usage_error(PROGRAM, msg);
    USAGE_STATUS
}

/// pop-popup's exit status for a usage error.
const USAGE_STATUS: u8 = 100;

/// The whole answer to a connection over a limit (or whose slot cannot be checked): a
/// temporary failure the client sees at once, in place of the greeting.
fn refuse_busy() -> u8 {
    if let Ok(mut out) = FdOutput::new(1, popup::AUTH_WRITE_TIMEOUT) {
        let _ = std::io::Write::write_all(
            &mut out,
            b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
        );
        let _ = std::io::Write::flush(&mut out);
    }
    111
}

spool_wire::lean_main!(real_main);

fn real_main() -> u8 {
    // Parsing opens no descriptor; the TLS front's descriptors are known only once
    // --tlswrapper is.
    let usage = cli::Usage {
        program: PROGRAM,
        report: cli::Report::Log,
        status: USAGE_STATUS,
    };
    let mut args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return status,
    };
    // Everything inherited is closed except the descriptors a TLS front names (numbers
    // validated); a front that names unusable ones is a configuration error, reported once
    // logging is up.
    let front = Front::from_env(args.tlswrapper);
    let keep = front.as_ref().map(Front::keep).unwrap_or_default();
    spool_wire::fds::close_inherited_except(spool_wire::fds::FIRST_INHERITED, &keep);
    if let Err(e) = popup::validate_hostname(&args.hostname) {
        return usage_error(&e.to_string());
    }
    let mut checker = match ExecChecker::new(std::mem::take(&mut args.program)) {
        Ok(c) => c,
        Err(e) => return usage_error(&e.to_string()),
    };
    let log = Logger::new(PROGRAM, args.log);
    let addr = client_address();
    let fail = |msg: &str| {
        log.log(Level::Err, &format!("addr={addr} {msg}"));
        111
    };

    let front = match front.and_then(|f| f.check_open().map(|()| f)) {
        Ok(f) => f,
        Err(e) => return fail(&format!("TLS front: {e}")),
    };

    // The dialogue's user, looked up while NSS can still be reached.
    let dialogue_user = match split::lookup_user(&args.dialogue_user) {
        Ok(u) => u,
        Err(e) => return fail(&e),
    };
    if let Err(e) = privs::forbid_core_dumps() {
        return fail(&format!("cannot forbid core dumps: {e}"));
    }

    keepalive(&log, &addr, args.tcp_keepalive);

    // Without --proxy-protocol the peer is the client: its slots are taken before the fork.
    // With it, the dialogue reads the header (confined) and the parent takes the slots of
    // the client it names.
    let mut slots = None;
    if !args.proxy_protocol {
        match take_slots(&args, &log, &addr) {
            Ok(h) => slots = Some(h),
            Err(code) => return code,
        }
    }

    let stamp = match Timestamp::generate(&args.hostname) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let cfg = PopupConfig {
        apop: !args.no_apop,
        timeout: Duration::from_secs(args.timeout),
        max_attempts: args.max_attempts,
        fail_delay: Duration::from_millis(args.fail_delay_ms),
        max_bad_commands: args.max_bad_commands,
        expire: args.expire,
        login_delay: args.login_delay,
        allow_plaintext: args.allow_plaintext,
    };

    // Privilege separation (see spool_login::popup::split): the client dialogue in a
    // confined child, the checkpassword program run from here.
    let (mine, theirs) = match split::channel() {
        Ok(p) => p,
        Err(e) => return fail(&format!("socketpair: {e}")),
    };
    let front_fds = front.keep();
    match split::fork_dialogue() {
        Err(e) => fail(&format!("cannot fork the dialogue: {e}")),
        Ok(None) => {
            drop(mine);
            drop(slots);
            dialogue(Dialogue {
                sock: theirs,
                front,
                stamp: &stamp,
                cfg: &cfg,
                log: &log,
                addr: addr.clone(),
                proxy_protocol: args.proxy_protocol,
                user: dialogue_user,
                require_sandbox: args.require_sandbox,
            })
        }
        Ok(Some(child)) => {
            drop(theirs);
            // The front's descriptors belong to the dialogue: tlswrapper starts TLS only
            // when every copy of its control pipe is closed.
            for fd in front_fds {
                let _ = nix::unistd::close(fd);
            }
            // Before the first request is read.
            if let Err(e) = privs::shed_capabilities().map_err(|e| e.to_string()) {
                split::kill_dialogue(child, dialogue_user);
                split::wait_dialogue(child);
                return fail(&e);
            }
            let mut addr = addr.clone();
            if args.proxy_protocol {
                // The header names the client for everything below: slots, log lines, the
                // chain.
                match client_from_dialogue(&mine, &log, &addr) {
                    Ok(client) => addr = client,
                    Err(code) => {
                        split::kill_dialogue(child, dialogue_user);
                        split::wait_dialogue(child);
                        return code;
                    }
                }
                match take_slots(&args, &log, &addr) {
                    Ok(h) => slots = Some(h),
                    Err(code) => {
                        split::kill_dialogue(child, dialogue_user);
                        split::wait_dialogue(child);
                        return code;
                    }
                }
            }
            if let Err(e) = split::send_go(&mine) {
                log.log(Level::Err, &format!("addr={addr} dialogue: {e}"));
            }
            let code = serve_checks(
                mine,
                &mut checker,
                &stamp,
                &log,
                &addr,
                child,
                dialogue_user,
            );
            drop(slots);
            code
        }
    }
}

/// What the dialogue child is given.
struct Dialogue<'a> {
    sock: std::os::fd::OwnedFd,
    front: Front,
    stamp: &'a Timestamp,
    cfg: &'a PopupConfig,
    log: &'a Logger,
    addr: String,
    /// Read the PROXY header first and report it to the parent.
    proxy_protocol: bool,
    user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    require_sandbox: bool,
}

/// The client dialogue, in the child: confines itself, then runs the AUTHORIZATION state,
/// asking the parent for every check. Returns pop-popup's exit status.
fn dialogue(d: Dialogue<'_>) -> u8 {
    let log = d.log;
    let addr = d.addr.as_str();
    let refuse = |why: &str| {
        log.log(Level::Err, &format!("addr={addr} {why}"));
        if let Ok(mut out) = FdOutput::new(1, popup::AUTH_WRITE_TIMEOUT) {
            let _ = std::io::Write::write_all(&mut out, b"-ERR [SYS/TEMP] sandbox unavailable\r\n");
            let _ = std::io::Write::flush(&mut out);
        }
        111
    };
    // Logged with the client's address, once the header (if any) has named it.
    let confined: (Level, String) = match split::confine_dialogue(d.user) {
        Ok(c) => {
            let s = &c.sandbox;
            let bounding = if c.bounding_kept {
                " bounding set kept (no CAP_SETPCAP)"
            } else {
                ""
            };
            if s.landlock != Enforced::Full && d.require_sandbox {
                return refuse(&format!("--require-sandbox: {s}"));
            }
            let level = if s.landlock == Enforced::Full {
                Level::Debug
            } else {
                Level::Info
            };
            (level, format!("dialogue {s}{bounding}"))
        }
        Err(e) => return refuse(&format!("cannot confine the dialogue: {e}")),
    };
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(log);
    let client;
    let addr = if d.proxy_protocol {
        match read_proxy_header(&d.sock, log) {
            Some(a) => {
                client = a;
                client.as_str()
            }
            // Refused: the parent logs why; the client is told nothing.
            None => return 0,
        }
    } else {
        addr
    };
    log.log(confined.0, &format!("addr={addr} {}", confined.1));
    // Nothing reaches the client before the parent has shed its capabilities (and, with
    // --proxy-protocol, taken the client's slots).
    if let Err(e) = split::wait_go(&d.sock) {
        log.log(Level::Err, &format!("addr={addr} dialogue: {e}"));
        return 111;
    }
    let mut checker = split::ParentChecker::new(d.sock);
    let mut input = match ExactLineInput::new(0) {
        Ok(i) => i,
        Err(e) => {
            log.log(Level::Err, &format!("addr={addr} cannot use stdin: {e}"));
            return 111;
        }
    };
    let mut out = match FdOutput::new(1, popup::AUTH_WRITE_TIMEOUT) {
        Ok(o) => o,
        Err(e) => {
            log.log(Level::Err, &format!("addr={addr} cannot use stdout: {e}"));
            return 111;
        }
    };
    let front = RefCell::new(FdFront::new(d.front));
    // Every line carries the TLS state as of its writing (tls=PROTOCOL/CIPHER or tls=no).
    let tag = || front.borrow().log_tag();
    let mut log_line = |level, line: &str| log.log(level, &format!("addr={addr} {} {line}", tag()));
    let end = popup::run_with_front(
        &mut input,
        &mut out,
        &mut checker,
        &mut Shared(&front),
        d.cfg,
        d.stamp,
        &mut log_line,
    );
    if !matches!(end, popup::End::Served { .. }) {
        log_line(end.level(), &format!("end: {end}"));
    }
    end.exit_code()
}

/// The dialogue's first step with --proxy-protocol, confined: reads the header on
/// descriptor 0 (exactly its bytes), applies its environment changes here too (the
/// dialogue's log lines and requests then name the client), and reports it to the parent.
/// Returns the client's address, or None when the header was refused or the parent could
/// not be told.
fn read_proxy_header(sock: &std::os::fd::OwnedFd, log: &Logger) -> Option<String> {
    let got = popup::proxy::read_client();
    #[cfg(debug_assertions)]
    spool_wire::testhooks::parsed(log, "proxy-header");
    let (hello, client) = match got {
        Ok((header, env)) => {
            popup::proxy::apply(&env);
            let env = env
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(String::into_bytes)))
                .collect();
            let hello = split::Hello::Client {
                env,
                describe: header.describe(),
            };
            (hello, Some(client_address()))
        }
        Err(e) => {
            let io = matches!(e, spool_wire::proxy::ProxyError::Io(_));
            let hello = split::Hello::Refused {
                io,
                reason: e.to_string(),
            };
            (hello, None)
        }
    };
    if let Err(e) = split::send_hello(sock, &hello) {
        log.log(Level::Err, &format!("dialogue: {e}"));
        return None;
    }
    client
}

/// The parent's side of the first message: applies the client's environment changes and
/// returns its address; for a refused header logs why and returns the exit status.
fn client_from_dialogue(
    sock: &std::os::fd::OwnedFd,
    log: &Logger,
    proxy: &str,
) -> Result<String, u8> {
    match split::receive_hello(sock) {
        Ok(split::Hello::Client { env, describe }) => {
            let refused = split::apply_hello_env(&env);
            let addr = client_address();
            if !refused.is_empty() {
                log.log(
                    Level::Warning,
                    &format!(
                        "addr={addr} dialogue: environment names ignored: {}",
                        refused.join(",")
                    ),
                );
            }
            log.log(
                Level::Debug,
                &format!("addr={addr} proxy={proxy} {describe}"),
            );
            Ok(addr)
        }
        Ok(split::Hello::Refused { io, reason }) => {
            // The peer is the proxy (or someone bypassing it): nothing is sent.
            log.log(Level::Warning, &format!("proxy={proxy} refused: {reason}"));
            Err(if io { 111 } else { 0 })
        }
        Err(e) => {
            log.log(Level::Err, &format!("proxy={proxy} dialogue: {e}"));
            Err(111)
        }
    }
}

/// Takes the connection's slots (--max-per-source, --max-connections) for `addr`, or
/// answers the client at once and returns the exit status.
fn take_slots(args: &Args, log: &Logger, addr: &str) -> Result<popup::slots::Held, u8> {
    match popup::slots::take_for(
        &args.slot_dir,
        addr,
        args.max_per_source,
        args.max_connections,
    ) {
        Ok(h) => Ok(h),
        Err((popup::slots::SlotError::Full, which)) => {
            log.log(
                Level::Warning,
                &format!("addr={addr} refused: {which} reached"),
            );
            Err(refuse_busy())
        }
        Err((e, which)) => {
            log.log(Level::Err, &format!("addr={addr} {which}: {e}"));
            Err(refuse_busy())
        }
    }
}

/// The parent's whole job after the fork: one check per request of the dialogue, with the
/// dialogue's descriptors 0 and 1 and its allowed environment changes, until it ends.
/// Returns pop-popup's exit status (the dialogue's).
fn serve_checks(
    sock: std::os::fd::OwnedFd,
    checker: &mut ExecChecker,
    stamp: &Timestamp,
    log: &Logger,
    addr: &str,
    child: nix::unistd::Pid,
    user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> u8 {
    loop {
        let got = match split::receive(&sock) {
            Ok(Some(g)) => g,
            Ok(None) => break,
            Err(e) => {
                log.log(Level::Err, &format!("addr={addr} dialogue: {e}"));
                split::kill_dialogue(child, user);
                break;
            }
        };
        let status = if got.request.timestamp() != stamp.as_str().as_bytes() {
            log.log(
                Level::Err,
                &format!("addr={addr} dialogue: a request with another timestamp"),
            );
            popup::CheckStatus::SpawnFailed("bad request".into())
        } else {
            let [r, w] = &got.fds;
            match nix::unistd::dup2(r.as_raw_fd(), 0)
                .and_then(|_| nix::unistd::dup2(w.as_raw_fd(), 1))
            {
                Err(e) => popup::CheckStatus::SpawnFailed(format!("dup2: {e}")),
                Ok(_) => {
                    let refused = split::apply_env(&got.request.env);
                    if !refused.is_empty() {
                        log.log(
                            Level::Warning,
                            &format!(
                                "addr={addr} dialogue: environment names ignored: {}",
                                refused.join(",")
                            ),
                        );
                    }
                    checker.check(&got.request.payload)
                }
            }
        };
        drop(got);
        if let Err(e) = split::reply(&sock, &status) {
            log.log(Level::Err, &format!("addr={addr} dialogue: {e}"));
            break;
        }
    }
    // Closed first: a dialogue waiting for a reply sees the end rather than waiting forever.
    drop(sock);
    split::wait_dialogue(child)
}

/// Keepalive on the client's TCP socket, shared by every program of the chain after us.
/// A failure costs only the early end of a vanished client's session: logged at debug level.
fn keepalive(log: &Logger, addr: &str, secs: u64) {
    let Some(ka) = spool_wire::sock::KeepAlive::within(Duration::from_secs(secs)) else {
        return;
    };
    if let Err(e) = spool_wire::sock::keepalive_client(&ka, spool_wire::sock::Existing::Replace) {
        log.log(Level::Debug, &format!("addr={addr} {e}"));
    }
}

/// The front shared between the session and the log lines' `tls=` tag.
struct Shared<'a>(&'a RefCell<FdFront>);

impl popup::TlsFront for Shared<'_> {
    fn offers_stls(&self) -> bool {
        self.0.borrow().offers_stls()
    }
    fn is_on(&self) -> bool {
        self.0.borrow().is_on()
    }
    fn start(
        &mut self,
        out: &mut dyn std::io::Write,
        deadline: std::time::Instant,
    ) -> Result<popup::starttls::Switched, popup::starttls::StartError> {
        self.0.borrow_mut().start(out, deadline)
    }
}
