//! pop-serve: POP3 TRANSACTION and UPDATE on stdin/stdout for one mailbox, run as the mail
//! user after a checkpassword program, a drop-in for qmail-pop3d.
//!
//! Exit status: 0 once the client has been answered (even with `-ERR`, so a qmail-popup-style
//! front end adds nothing); 100 for a usage error; 111 when the client could not be answered.
// Started by spool_wire::start (see `main` below); a test build keeps the harness's main.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use clap::Parser;
use spool_store::confine::{self, Enforced, Reach};
use spool_store::mailbox::{MailboxSpec, OpenOptions};
use spool_store::mbox::Quoting;
use spool_store::session::{self, Expire, SessionConfig};
use spool_store::spoolpath;
use spool_wire::cli;
use spool_wire::log::{client_address, Level, LogTarget, Logger};
use spool_wire::pop3::response;
use spool_wire::timeio::{FdInput, FdOutput};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Output buffer: large enough that RETR streams in big writes, small enough to be cheap.
const OUTPUT_BUFFER: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "pop-serve",
    version,
    about = "POP3 transaction server for one mailbox (runs as the mail user)"
)]
struct Args {
    /// The mailbox: `mbox:PATH`, `maildir:PATH`, or a bare path (a directory or a path ending
    /// in `/` is a Maildir, as qmail-pop3d's `./Maildir/`). Default: `$USER`'s hashed spool mbox.
    mailbox: Option<String>,

    /// Root of the hashed spool used when no MAILBOX is given.
    #[arg(long, default_value = "/var/spool/mail")]
    spool_dir: PathBuf,

    /// Levels of hashing in the spool: 1 = c/claird, 2 = c/cl/claird, 0 = flat.
    #[arg(long, default_value_t = 1)]
    hash_depth: u8,

    /// How `>From ` lines of an mbox are read: mboxrd (one `>` removed) or mboxo (as stored).
    #[arg(long, default_value = "mboxrd", value_parser = parse_quoting)]
    mbox_quoting: Quoting,

    /// Pass spool-internal headers (Status, X-Status, X-UID, X-IMAP, X-IMAPbase, X-Keywords,
    /// Content-Length) through to clients instead of hiding them.
    #[arg(long)]
    show_spool_headers: bool,

    /// Where the session lock, the update journal and the index live (default
    /// `$HOME/.popspool`); the mail user must be able to write there.
    #[arg(long)]
    state_dir: Option<PathBuf>,

    /// The setgid-mail helper that takes the dotlock where the user may not create files
    /// (default: `pop-dotlock` beside this program, if present).
    #[arg(long)]
    dotlock_helper: Option<PathBuf>,

    /// Never use a dotlock helper.
    #[arg(long, conflicts_with = "dotlock_helper")]
    no_dotlock_helper: bool,

    /// Seconds to wait for the mailbox content lock before `-ERR [SYS/TEMP]`.
    #[arg(long, default_value_t = spool_wire::limits::CONTENT_LOCK_WAIT.as_secs())]
    lock_timeout: u64,

    /// Seconds without a command before the session ends (nothing is deleted).
    #[arg(long, default_value_t = spool_wire::limits::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout: u64,

    /// Seconds a started command line may take to complete.
    #[arg(long, default_value_t = spool_wire::limits::DEFAULT_LINE_DEADLINE.as_secs())]
    line_timeout: u64,

    /// Seconds a whole session may last, counted from its greeting; 0 for no limit. A RETR
    /// under way finishes; the next command gets `-ERR` and the session ends without UPDATE.
    #[arg(long, value_name = "SECS", default_value_t = spool_wire::limits::DEFAULT_MAX_SESSION.as_secs())]
    max_session_time: u64,

    /// Bad commands in a row before the session is ended.
    #[arg(long, default_value_t = spool_wire::limits::DEFAULT_MAX_BAD_COMMANDS)]
    max_bad_commands: u32,

    /// Present only the oldest N messages in a session (a policy for draining huge boxes).
    #[arg(long)]
    max_messages: Option<usize>,

    /// Advertise RFC 2449 EXPIRE: a number of days, or `never`.
    #[arg(long)]
    expire: Option<Expire>,

    /// Advertise RFC 2449 LOGIN-DELAY in seconds.
    #[arg(long)]
    login_delay: Option<u64>,

    /// Maildir: leave retrieved messages in new/ instead of moving them to cur/ with the S flag.
    #[arg(long)]
    maildir_keep_new: bool,

    /// A client whose TCP connection goes silent is dropped about SECS seconds after its
    /// last sign of life (keepalive probes and TCP_USER_TIMEOUT on descriptors 0 and 1 when
    /// they are TCP sockets); 0 leaves the socket as it is. Without this option the default
    /// (120) applies only to a socket whose keepalive a front end has not turned on already.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86400))]
    tcp_keepalive: Option<u64>,

    /// Where logs go: syslog (facility mail), stderr, or none. Under inetd stderr is the
    /// client's socket: use stderr only where it is not.
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// Serve even when running as root (qmail-pop3d refuses; so do we by default).
    #[arg(long)]
    allow_root: bool,

    /// Refuse to serve (`-ERR [SYS/TEMP]`, exit 111) unless the kernel fully enforces the
    /// Landlock sandbox (see CONFINEMENT in pop-serve(8)).
    #[arg(long)]
    require_sandbox: bool,
}

fn parse_quoting(s: &str) -> Result<Quoting, String> {
    match s {
        "mboxrd" => Ok(Quoting::Mboxrd),
        "mboxo" => Ok(Quoting::Mboxo),
        _ => Err("expected mboxrd or mboxo".into()),
    }
}

spool_wire::lean_main!(real_main);

fn real_main() -> u8 {
    spool_wire::fds::close_inherited(spool_wire::fds::FIRST_INHERITED);
    let usage = cli::Usage {
        program: "pop-serve",
        report: cli::Report::Log,
        status: 100,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return status,
    };
    let log = Logger::new("pop-serve", args.log);
    let started = Instant::now();
    let user = std::env::var("USER").unwrap_or_default();
    let addr = client_address();

    // Here too, not only in pop-popup: a front end such as qmail-popup sets nothing. What
    // pop-popup or another front end chose is kept unless the option was given here.
    let (secs, existing) = match args.tcp_keepalive {
        Some(s) => (Duration::from_secs(s), spool_wire::sock::Existing::Replace),
        None => (
            spool_wire::limits::DEFAULT_TCP_KEEPALIVE,
            spool_wire::sock::Existing::Keep,
        ),
    };
    if let Some(ka) = spool_wire::sock::KeepAlive::within(secs) {
        if let Err(e) = spool_wire::sock::keepalive_client(&ka, existing) {
            log.log(Level::Debug, &format!("user={user} addr={addr} {e}"));
        }
    }

    let out = match FdOutput::new(1, spool_wire::limits::WRITE_TIMEOUT) {
        Ok(o) => o,
        Err(e) => {
            log.log(
                Level::Err,
                &format!("user={user} addr={addr} cannot use stdout: {e}"),
            );
            return 111;
        }
    };
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, out);
    let refuse = |out: &mut BufWriter<FdOutput>, code, text: &str, logged: &str| {
        log.log(Level::Err, &format!("user={user} addr={addr} {logged}"));
        let _ = response::err(out, code, text);
        let _ = out.flush();
        0
    };

    if !args.allow_root && nix::unistd::getuid().is_root() {
        return refuse(
            &mut out,
            Some(response::RespCode::SysPerm),
            "server misconfigured",
            "refusing to run as root (use --allow-root)",
        );
    }
    let spec = match &args.mailbox {
        Some(m) => MailboxSpec::parse(m),
        None => match spoolpath::hashed_path(&args.spool_dir, user.as_bytes(), args.hash_depth) {
            Ok(p) => MailboxSpec::Mbox(p),
            Err(e) => {
                return refuse(
                    &mut out,
                    Some(response::RespCode::SysPerm),
                    "no usable mailbox",
                    &format!("no mailbox for $USER: {e}"),
                )
            }
        },
    };
    let state_dir = match (&args.state_dir, std::env::var_os("HOME")) {
        (Some(d), _) => d.clone(),
        (None, Some(h)) if !h.is_empty() => PathBuf::from(h).join(".popspool"),
        _ => {
            return refuse(
                &mut out,
                Some(response::RespCode::SysPerm),
                "no usable mailbox",
                "neither --state-dir nor $HOME is set",
            )
        }
    };
    let mut opts = OpenOptions::with_state_dir(state_dir);
    opts.quoting = args.mbox_quoting;
    opts.hide_spool_headers = !args.show_spool_headers;
    opts.content_lock_wait = Duration::from_secs(args.lock_timeout);
    opts.max_messages = args.max_messages;
    opts.maildir_mark_seen = !args.maildir_keep_new;
    opts.dotlock_helper = if args.no_dotlock_helper {
        None
    } else {
        args.dotlock_helper.clone().or_else(default_helper)
    };

    // Confined before the mailbox is opened and before any thread starts.
    let empty_mbox = match confine_session(&spec, &opts) {
        Ok((status, empty)) if status.landlock == Enforced::Full => {
            log.log(Level::Debug, &format!("user={user} {status}"));
            empty
        }
        Ok((status, _)) if args.require_sandbox => {
            refuse(
                &mut out,
                Some(response::RespCode::SysTemp),
                "sandbox unavailable",
                &format!("--require-sandbox: {status}"),
            );
            return 111;
        }
        Ok((status, empty)) => {
            log.log(Level::Info, &format!("user={user} {status}"));
            empty
        }
        Err(e) => {
            let text = if args.require_sandbox {
                "sandbox unavailable"
            } else {
                "cannot confine the session"
            };
            refuse(
                &mut out,
                Some(response::RespCode::SysTemp),
                text,
                &format!("mailbox={} {e}", spec.path().display()),
            );
            return 111;
        }
    };
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(&log);

    let opened = if empty_mbox {
        Ok(Box::new(spool_store::mailbox::EmptyMailbox) as Box<dyn spool_store::mailbox::Mailbox>)
    } else {
        spool_store::open(&spec, &opts)
    };
    let mut mbox = match opened {
        Ok(m) => m,
        Err(e) => {
            let (code, text) = e.response();
            return refuse(
                &mut out,
                code,
                &text,
                &format!("mailbox={} {e}", spec.path().display()),
            );
        }
    };
    for w in mbox.warnings() {
        log.log(
            Level::Warning,
            &format!("user={user} mailbox={} {w}", spec.path().display()),
        );
    }
    let mut input = match FdInput::new(0) {
        Ok(i) => i,
        Err(e) => {
            log.log(
                Level::Err,
                &format!("user={user} addr={addr} cannot use stdin: {e}"),
            );
            return 111;
        }
    };
    let cfg = SessionConfig {
        idle_timeout: Duration::from_secs(args.idle_timeout),
        line_deadline: Duration::from_secs(args.line_timeout),
        max_session: (args.max_session_time > 0)
            .then(|| Duration::from_secs(args.max_session_time)),
        max_bad_commands: args.max_bad_commands.max(1),
        expire: args.expire,
        login_delay: args.login_delay,
    };
    let r = session::run(&mut *mbox, &mut input, &mut out, &cfg);
    let level = match r.end {
        session::EndReason::Quit | session::EndReason::ClientClosed => Level::Info,
        _ => Level::Warning,
    };
    log.log(
        level,
        &format!(
            "user={user} addr={addr} messages={} retrieved={} retrieved_bytes={} deleted={} \
             deleted_bytes={} left={} duration_ms={} end={}",
            r.messages,
            r.retrieved,
            r.retrieved_bytes,
            r.deleted,
            r.deleted_bytes,
            r.left,
            started.elapsed().as_millis(),
            r.end
        ),
    );
    0
}

/// Starts the lock broker when the dotlock helper will be needed, then confines the process:
/// no_new_privs, `RLIMIT_NOFILE`, Landlock (see CONFINEMENT in pop-serve(8)). An error only
/// when the broker cannot be started or no_new_privs or the limit cannot be set; what Landlock
/// enforced is in the status.
fn confine_session(
    spec: &MailboxSpec,
    opts: &OpenOptions,
) -> Result<(confine::Status, bool), String> {
    let (reach, needs_state) = match spec {
        MailboxSpec::Mbox(p) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            // Where the user may create files, the session makes its own dotlock; elsewhere
            // (a root:mail 2775 spool) only the setgid helper can, run by the broker.
            let writable = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok();
            if let (Some(helper), false) = (&opts.dotlock_helper, writable) {
                spool_store::broker::start(helper, p)
                    .map_err(|e| format!("cannot start the lock broker: {e}"))?;
            }
            // Decided once, here: an mbox missing or empty now is served as empty (as
            // spool_store::open's fast path would), so mail arriving before the open cannot
            // need a state directory the confined session could no longer create.
            let empty = match std::fs::symlink_metadata(p) {
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
                Ok(m) => m.is_file() && m.len() == 0,
            };
            (
                Reach::Mbox {
                    path: p.clone(),
                    dotlock_dir: writable,
                },
                !empty,
            )
        }
        MailboxSpec::Maildir(p) => (Reach::Maildir(p.clone()), p.is_dir()),
    };
    // The session creates its state directory when it opens a mailbox with mail in it;
    // once confined it could no longer, so it is made here (an error shows at open).
    if needs_state {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(spool_store::lock::STATE_DIR_MODE)
            .create(&opts.state_dir);
    }
    confine::no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    confine::max_open_files(spool_wire::limits::SERVE_MAX_OPEN_FILES)
        .map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let status = confine::confine(&reach, &opts.state_dir).unwrap_or_else(|e| confine::Status {
        landlock: Enforced::None,
        abi: confine::kernel_abi(),
        failure: Some(e),
    });
    let empty_mbox = matches!(spec, MailboxSpec::Mbox(_)) && !needs_state;
    Ok((status, empty_mbox))
}

/// `pop-dotlock` installed beside this program.
fn default_helper() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let helper = exe.parent()?.join("pop-dotlock");
    helper.is_file().then_some(helper)
}
