//! pop-deliver: local delivery agent. Reads one message on stdin and appends it to each
//! user's hashed-spool mbox, or to an explicit `mbox:`/`maildir:` mailbox. All logic is in
//! `spool_deliver`; see pop-deliver(8).

use clap::Parser;
use spool_deliver::{self as deliver, DeliverError, DeliverOptions, InputRules, Target};
use spool_store::mailbox::MailboxSpec;
use spool_wire::cli;
use spool_wire::log::{LogTarget, Logger};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pop-deliver",
    version,
    about = "Deliver one message from stdin into local mailboxes (mbox or Maildir)"
)]
struct Args {
    /// Users whose spool mbox gets the message (looked up with getpwnam).
    #[arg(value_name = "USER")]
    users: Vec<String>,

    /// Deliver to this mailbox instead: mbox:PATH or maildir:PATH (repeatable).
    #[arg(long, value_name = "SPEC")]
    mailbox: Vec<String>,

    /// Envelope sender for the From_ line (default: $SENDER, then the input's From_ line,
    /// then Return-Path:, then MAILER-DAEMON).
    #[arg(short = 'f', long = "sender", value_name = "SENDER")]
    sender: Option<String>,

    /// The spool directory of user mailboxes.
    #[arg(long, default_value = deliver::DEFAULT_SPOOL_DIR)]
    spool_dir: PathBuf,

    /// Hash depth of the spool (0 flat, 1 spool/a/alice, 2 spool/a/al/alice).
    #[arg(long, default_value_t = deliver::DEFAULT_HASH_DEPTH)]
    hash_depth: u8,

    /// Seconds to wait for the mailbox lock before a temporary failure.
    #[arg(long, default_value_t = deliver::DEFAULT_LOCK_WAIT.as_secs(), value_name = "SECS")]
    lock_timeout: u64,

    /// The setgid-mail helper used to create the dotlock where we may not (default:
    /// pop-dotlock beside this program, if present).
    #[arg(long, value_name = "PATH")]
    dotlock_helper: Option<PathBuf>,

    /// Never use a dotlock helper.
    #[arg(long, conflicts_with = "dotlock_helper")]
    no_dotlock_helper: bool,

    /// Group of created mailboxes (name or number; the user's primary group if it does not
    /// exist).
    #[arg(long, default_value = deliver::DEFAULT_GROUP)]
    group: String,

    /// Mode of created mailboxes, octal.
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    mode: u32,

    /// Refuse (temporarily) a delivery that would make the mailbox larger than this.
    #[arg(long, value_name = "BYTES")]
    max_mailbox_size: Option<u64>,

    /// Refuse (permanently) a message with a longer line; 0 means no limit.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    max_line_length: u64,

    /// Refuse (permanently) a message containing NUL bytes instead of storing them.
    #[arg(long)]
    reject_nul: bool,

    /// pop-serve's state directory, for replaying an interrupted POP3 update before
    /// appending (default: HOME/.popspool of the user).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Where stdin is spooled before delivery (default: $TMPDIR, else /tmp).
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,

    /// Exit 0/100/111 as qmail-local expects instead of sysexits codes.
    #[arg(long)]
    qmail_exit_codes: bool,

    /// Where the per-delivery log line goes: syslog (facility mail), stderr or none.
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// Refuse to deliver (a temporary failure: exit 75, or 111 with --qmail-exit-codes)
    /// unless the kernel fully enforces the Landlock sandbox (see CONFINEMENT in
    /// pop-deliver(8)).
    #[arg(long)]
    require_sandbox: bool,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal file mode")),
    }
}

fn default_helper() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let helper = exe.parent()?.join("pop-dotlock");
    helper.is_file().then_some(helper)
}

fn fail(e: &DeliverError, qmail: bool) -> ExitCode {
    eprintln!("pop-deliver: {}", deliver::one_line(&e.to_string()));
    ExitCode::from(e.exit_code(qmail) as u8)
}

/// Starts the lock brokers the targets need, then confines the process: no_new_privs,
/// `RLIMIT_NOFILE`, Landlock (see CONFINEMENT in pop-deliver(8)). An error when a broker
/// cannot be started, no_new_privs or the limit cannot be set, or `require` and Landlock is
/// not fully enforced.
fn confine(
    prepared: &[deliver::Prepared],
    opts: &DeliverOptions,
    log: &Logger,
    require: bool,
) -> Result<(), String> {
    use spool_wire::limits::{DELIVER_MAX_OPEN_FILES, DELIVER_OPEN_FILES_PER_TARGET};
    use spool_wire::log::Level;
    use spool_wire::sandbox::{self, Enforced};
    let c = deliver::confine::confinement(prepared, opts);
    if let Some(helper) = &opts.dotlock_helper {
        for mailbox in &c.brokers {
            spool_store::broker::start(helper, mailbox)
                .map_err(|e| format!("cannot start the lock broker: {e}"))?;
        }
    }
    sandbox::no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    let files = DELIVER_MAX_OPEN_FILES
        .saturating_add(DELIVER_OPEN_FILES_PER_TARGET.saturating_mul(prepared.len() as u64));
    sandbox::max_open_files(files).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let status = c
        .sandbox
        .restrict()
        .unwrap_or_else(|e| sandbox::Status::none(format!("no_new_privs: {e}")));
    match status.landlock {
        Enforced::Full => log.log(Level::Debug, &status.to_string()),
        _ if require => return Err(format!("--require-sandbox: {status}")),
        _ => log.log(Level::Info, &status.to_string()),
    }
    Ok(())
}

fn main() -> ExitCode {
    spool_wire::start::no_core_files();
    spool_wire::fds::close_inherited(spool_wire::fds::FIRST_INHERITED);
    let qmail_hint = std::env::args_os().any(|a| a == "--qmail-exit-codes");
    let usage = cli::Usage {
        program: "pop-deliver",
        report: cli::Report::Stderr,
        status: DeliverError::Usage(String::new()).exit_code(qmail_hint) as u8,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return ExitCode::from(status),
    };
    let qmail = args.qmail_exit_codes;
    if let Err(e) = deliver::install_signal_handlers() {
        return fail(
            &DeliverError::Io("install signal handlers", e.into()),
            qmail,
        );
    }
    let mut targets: Vec<Target> = args.users.iter().cloned().map(Target::User).collect();
    for m in &args.mailbox {
        if !(m.starts_with("mbox:") || m.starts_with("maildir:")) {
            let e = DeliverError::Usage(format!("--mailbox {m:?}: use mbox:PATH or maildir:PATH"));
            return fail(&e, qmail);
        }
        targets.push(Target::Mailbox(MailboxSpec::parse(m)));
    }
    if targets.is_empty() {
        return fail(
            &DeliverError::Usage("give a USER or --mailbox".into()),
            qmail,
        );
    }
    let opts = DeliverOptions {
        spool_dir: args.spool_dir,
        hash_depth: args.hash_depth,
        sender: args.sender,
        env_sender: std::env::var("SENDER").ok(),
        lock_wait: Duration::from_secs(args.lock_timeout),
        dotlock_helper: if args.no_dotlock_helper {
            None
        } else {
            args.dotlock_helper.or_else(default_helper)
        },
        group: Some(args.group),
        mode: args.mode,
        max_mailbox_size: args.max_mailbox_size,
        rules: InputRules {
            max_line_length: (args.max_line_length > 0).then_some(args.max_line_length),
            reject_nul: args.reject_nul,
        },
        state_dir: args.state_dir,
        home: std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from),
        tmp_dir: args
            .tmp_dir
            .or_else(|| {
                std::env::var_os("TMPDIR")
                    .filter(|t| !t.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("/tmp")),
    };
    let log = Logger::new("pop-deliver", args.log);
    // Everything that reads the system's databases or creates the temporary file happens
    // first; then the process confines itself, before it reads the message.
    let prepared = deliver::prepare(&targets, &opts);
    let tmp = match deliver::spool::anonymous_file(&opts.tmp_dir) {
        Ok(f) => f,
        Err(e) => return fail(&DeliverError::Io("create a temporary file", e), qmail),
    };
    if let Err(e) = confine(&prepared, &opts, &log, args.require_sandbox) {
        log.log(spool_wire::log::Level::Err, &e);
        return fail(
            &DeliverError::Io("confine the delivery", std::io::Error::other(e)),
            qmail,
        );
    }
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(&log);
    let mut stdin = std::io::stdin().lock();
    match deliver::deliver_prepared(prepared, tmp, &opts, &mut stdin, &log) {
        Ok(report) => {
            if let Some(line) = report.reason_line() {
                eprintln!("pop-deliver: {line}");
            }
            ExitCode::from(report.exit_code(qmail) as u8)
        }
        Err(e) => {
            log.log(
                spool_wire::log::Level::Err,
                &format!("refused message: {e}"),
            );
            fail(&e, qmail)
        }
    }
}
