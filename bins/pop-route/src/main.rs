//! pop-route: answers one nginx mail-proxy `auth_http` request on stdin/stdout (run per
//! connection under tcpserver or a systemd socket unit): checks the credentials through a
//! checkpassword program, picks the user's backend, and hands it a login token.
//!
//! Exit status: 0 answered, 2 unreadable request (400/431/408), 111 answered with a temporary
//! error, 100 usage. See doc/pop-route.8.
// Started by spool_wire::start (see `main` below); a test build keeps the harness's main.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use clap::Parser;
use spool_login::popup::{privs, split, ExecChecker};
use spool_route::split as route_split;
use spool_route::{backend, RouteConfig};
use spool_wire::cli;
use spool_wire::log::{Level, LogTarget, Logger};
use spool_wire::sandbox::Enforced;
use spool_wire::timeio::{FdInput, FdOutput};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pop-route",
    version,
    about = "nginx mail-proxy auth_http service: checks a login through CHECKPROG, picks the \
             user's backend, answers with a login token for it"
)]
struct Args {
    /// A backend, IP:PORT (repeatable).
    #[arg(long, value_name = "IP:PORT", value_parser = backend::parse_addr)]
    backend: Vec<std::net::SocketAddr>,

    /// A file of backends, one IP:PORT a line, read on every request.
    #[arg(long, value_name = "FILE")]
    backends: Option<PathBuf>,

    /// A map file of `USER IP:PORT` lines, consulted before hashing, read on every request.
    #[arg(long, value_name = "FILE")]
    map: Option<PathBuf>,

    /// The key file shared with the backends' pop-checkpassword --token-key.
    #[arg(long, value_name = "FILE")]
    token_key: PathBuf,

    /// Failed attempts per client connection answered with Auth-Wait; the next closes it.
    #[arg(long, default_value_t = spool_route::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,

    /// Auth-Wait after the first failure, in seconds; doubled per further attempt.
    #[arg(long, default_value_t = spool_route::DEFAULT_WAIT_BASE.as_secs())]
    wait: u64,

    /// Seconds the request head may take to arrive.
    #[arg(long, default_value_t = spool_route::http::READ_TIMEOUT.as_secs())]
    read_timeout: u64,

    /// The user the request parser runs as when pop-route is started as root (looked up at
    /// start; must not have uid or gid 0).
    #[arg(long, value_name = "USER", default_value = "nobody")]
    parser_user: String,

    /// Answer with a temporary error (exit 111) unless the parser's Landlock sandbox is
    /// fully enforced.
    #[arg(long)]
    require_sandbox: bool,

    /// Where log lines go (facility mail for syslog).
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// The checkpassword program and the program it runs on success (which should just exit
    /// 0), with arguments. Default: pop-checkpassword beside this program, then /bin/true.
    #[arg(trailing_var_arg = true, value_name = "CHECKPROG")]
    check: Vec<OsString>,
}

spool_wire::lean_main!(real_main);

fn real_main() -> u8 {
    spool_wire::fds::close_inherited(spool_wire::fds::FIRST_INHERITED);
    spool_wire::fds::ignore_sigpipe();
    let usage = cli::Usage {
        program: "pop-route",
        report: cli::Report::Log,
        status: spool_route::EXIT_USAGE,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return status,
    };
    let log = Logger::new("pop-route", args.log);
    let usage_error = |msg: &str| {
        log.log(Level::Err, &format!("usage: {msg}"));
        spool_route::EXIT_USAGE
    };
    if args.backend.is_empty() && args.backends.is_none() && args.map.is_none() {
        return usage_error("no backends: give --backend, --backends or --map");
    }
    if args.read_timeout == 0 || args.wait == 0 {
        return usage_error("--read-timeout and --wait must be at least 1");
    }
    let check = if args.check.is_empty() {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("pop-checkpassword")));
        match beside {
            Some(p) => vec![p.into_os_string(), "/bin/true".into()],
            None => return usage_error("cannot find pop-checkpassword: give CHECKPROG"),
        }
    } else {
        args.check.clone()
    };
    let mut checker = match ExecChecker::new(check) {
        Ok(c) => c,
        Err(e) => return usage_error(&e.to_string()),
    };
    let cfg = RouteConfig {
        backends: backend::Backends {
            listed: args.backend.clone(),
            file: args.backends.clone(),
            map: args.map.clone(),
        },
        token_key: args.token_key.clone(),
        max_attempts: args.max_attempts,
        wait_base: Duration::from_secs(args.wait),
        read_timeout: Duration::from_secs(args.read_timeout),
        export_client_ip: true,
    };
    let parser_user = match split::lookup_user(&args.parser_user) {
        Ok(u) => u,
        Err(e) => return usage_error(&e),
    };
    let mut output = match FdOutput::new(1, Duration::from_secs(args.read_timeout)) {
        Ok(o) => o,
        Err(e) => {
            log.log(Level::Err, &format!("stdout: {e}"));
            return spool_route::EXIT_TEMPORARY;
        }
    };
    let temporary = |output: &mut FdOutput, why: &str| {
        log.log(Level::Err, why);
        spool_route::answer_temporary(output);
        spool_route::EXIT_TEMPORARY
    };
    let (mine, theirs) = match split::channel() {
        Ok(p) => p,
        Err(e) => return temporary(&mut output, &format!("parser channel: {e}")),
    };
    let child = match split::fork_dialogue() {
        Ok(Some(child)) => child,
        Ok(None) => {
            drop(mine);
            return parser(&cfg, &log, parser_user, args.require_sandbox, theirs);
        }
        Err(e) => return temporary(&mut output, &format!("forking the parser: {e}")),
    };
    drop(theirs);
    // Before the parser's request arrives: of root's capabilities only the three the
    // checkpassword program needs stay (Permitted, for its exec; Effective is empty). Core
    // files are already off (spool_wire::start).
    if let Err(e) = privs::shed_capabilities() {
        split::kill_dialogue(child, parser_user);
        split::wait_dialogue(child);
        return temporary(&mut output, &format!("shedding capabilities: {e}"));
    }
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(&log);
    match route_split::receive(mine) {
        Ok(Some(req)) => {
            split::wait_dialogue(child);
            spool_route::answer(&cfg, &req, &mut output, &mut checker, &log)
        }
        Ok(None) => match split::wait_dialogue(child) {
            // The parser answered the bad request itself.
            spool_route::EXIT_BAD_REQUEST => spool_route::EXIT_BAD_REQUEST,
            code => temporary(
                &mut output,
                &format!("the parser ended without a request (status {code})"),
            ),
        },
        Err(e) => {
            split::kill_dialogue(child, parser_user);
            split::wait_dialogue(child);
            temporary(&mut output, &format!("parser: {e}"))
        }
    }
}

/// The request parser, in the child: confines itself (no capability, `--parser-user`,
/// no_new_privs, Landlock granting nothing, few descriptors), reads and parses the request
/// (answering a bad one itself) and sends it to the parent. Returns its exit status.
fn parser(
    cfg: &RouteConfig,
    log: &Logger,
    user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    require_sandbox: bool,
    sock: std::os::fd::OwnedFd,
) -> u8 {
    match split::confine_dialogue(user) {
        Ok(c) => {
            let s = &c.sandbox;
            if s.landlock != Enforced::Full && require_sandbox {
                log.log(Level::Err, &format!("--require-sandbox: parser {s}"));
                return spool_route::EXIT_TEMPORARY;
            }
            let level = if s.landlock == Enforced::Full {
                Level::Debug
            } else {
                Level::Info
            };
            log.log(level, &format!("parser {s}"));
        }
        Err(e) => {
            log.log(Level::Err, &format!("cannot confine the parser: {e}"));
            return spool_route::EXIT_TEMPORARY;
        }
    }
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(log);
    let (mut input, mut output) = match (FdInput::new(0), FdOutput::new(1, cfg.read_timeout)) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => {
            log.log(Level::Err, &format!("stdin/stdout: {e}"));
            return spool_route::EXIT_TEMPORARY;
        }
    };
    match spool_route::read(cfg, &mut input, &mut output, log) {
        Ok(req) => match route_split::send(sock, &req) {
            Ok(()) => spool_route::EXIT_ANSWERED,
            Err(e) => {
                log.log(Level::Err, &e);
                spool_route::EXIT_TEMPORARY
            }
        },
        Err(code) => code,
    }
}
