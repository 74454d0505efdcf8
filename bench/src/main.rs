//! popspool-bench: pop-serve against Dovecot's POP3 on the same generated mailboxes, with
//! the machine's own limits (a pipe, a separator scan) measured in the same run.
//!
//! Every figure is a whole server process, spawned on a pipe pair and reaped with `wait4`:
//! wall time from fork to reaping, peak RSS from `ru_maxrss`. The two servers alternate per
//! repetition (A, B, A, B…) so that drift on a shared machine hits both alike, and a figure
//! only counts once the session's payload has been validated.

mod client;
mod connections;
mod gen;
mod proxy;
mod report;
mod scenario;
mod server;
mod spawn;
mod tls;

use clap::{Parser, Subcommand};
use server::{Env, Format};
use std::path::PathBuf;
use std::process::ExitCode;

/// Mailbox sizes of the full run: empty, tiny, ordinary, and a real 976 MB spool's count.
const FULL_SIZES: &[usize] = &[0, 10, 1_000, 144_524];
/// Sizes of `--quick` (a CI smoke run: well under a minute).
const QUICK_SIZES: &[usize] = &[0, 10, 1_000];
/// Message counts of the growth table.
const GROWTH_SIZES: &[usize] = &[1_000, 10_000, 100_000, 1_000_000];
/// Where Debian's dovecot-pop3d installs the POP3 process.
const DOVECOT_POP3: &str = "/usr/lib/dovecot/pop3";
/// The unprivileged user both servers run as when the bench runs as root.
pub(crate) const UNPRIVILEGED_USER: &str = "nobody";

#[derive(Parser, Debug)]
#[command(
    name = "popspool-bench",
    about = "Benchmark pop-serve against Dovecot's POP3 on generated mailboxes",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Connection rate through the whole login chain (tcpserver) vs Dovecot's daemon and a
    /// trivial three-program floor.
    Connections(connections::ConnOpts),
    /// POP3 over TLS: sessions/s and server CPU through pop-tls, Dovecot with TLS,
    /// tlswrapper and stunnel4, resumed sessions, and RETR throughput over TLS.
    Tls(tls::TlsOpts),
    /// Sessions/s and server CPU through nginx's mail proxy + pop-route + three backend
    /// chains, straight to one backend, and through Dovecot's own proxying (`proxy=y`).
    Proxy(proxy::ProxyOpts),
}

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Work directory: generated mailboxes (reused when the parameters match) and run copies.
    #[arg(long, default_value = "bench-work")]
    work: PathBuf,
    /// Mailbox message counts, comma-separated (default 0,10,1000,144524).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Repetitions per scenario and server; the median is reported.
    #[arg(long)]
    reps: Option<usize>,
    /// Smoke run: sizes 0,10,1000, one repetition, no growth table.
    #[arg(long)]
    quick: bool,
    /// Bench pop-serve alone.
    #[arg(long)]
    no_dovecot: bool,
    /// Only these scenarios, comma-separated (stat, list, uidl, retr-all, top-all,
    /// dele-half, dele-all); all by default.
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Mailbox formats, comma-separated: mbox, maildir.
    #[arg(long, value_delimiter = ',', default_value = "mbox,maildir")]
    formats: Vec<String>,
    /// Skip the growth table (on by default except with --quick).
    #[arg(long)]
    no_growth: bool,
    /// Growth table message counts, comma-separated.
    #[arg(long, value_delimiter = ',')]
    growth_sizes: Option<Vec<usize>>,
    /// Also run Dovecot in the growth table (slow on the 1M-message box).
    #[arg(long)]
    growth_dovecot: bool,
    /// The pop-serve binary (default: beside this program).
    #[arg(long)]
    pop_serve: Option<PathBuf>,
    /// Dovecot's POP3 process.
    #[arg(long, default_value = DOVECOT_POP3)]
    dovecot: PathBuf,
    /// Also write the report to this Markdown file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// A note printed with the machine description (e.g. other load on the machine).
    #[arg(long)]
    note: Option<String>,
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == spawn::SPAWN_ARG) {
        spawn::main(&args[2..]);
    }
    let cli = Cli::parse();
    let sub = match cli.cmd {
        Some(Cmd::Connections(opts)) => Some(("connections", connections::run(opts))),
        Some(Cmd::Tls(opts)) => Some(("tls", tls::run(opts))),
        Some(Cmd::Proxy(opts)) => Some(("proxy", proxy::run(opts))),
        None => None,
    };
    if let Some((name, r)) = sub {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("popspool-bench {name}: {e}");
                ExitCode::from(1)
            }
        };
    }
    match run(cli.opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popspool-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Resolves who the servers run as: the bench's own user, or `nobody` when run as root
/// (Dovecot refuses root, and both servers must run alike for a fair comparison).
fn server_env(opts: &Opts) -> Result<Env, String> {
    let pop_serve = match &opts.pop_serve {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find myself: {e}"))?
            .with_file_name("pop-serve"),
    };
    if !pop_serve.is_file() {
        return Err(format!(
            "{} not found: build it first (cargo build --release --workspace --bins)",
            pop_serve.display()
        ));
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        let name = std::ffi::CString::new(UNPRIVILEGED_USER).expect("no NUL");
        // SAFETY: getpwnam gets a valid C string; the result is read at once, before any
        // other passwd call could overwrite its static storage.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return Err(format!(
                "running as root needs a `{UNPRIVILEGED_USER}` user"
            ));
        }
        // SAFETY: pw is non-null and points to getpwnam's static struct.
        let (nuid, ngid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Ok(Env {
            pop_serve,
            dovecot: opts.dovecot.clone(),
            drop_to: Some((nuid, ngid)),
            uid: nuid,
            gid: ngid,
            user: UNPRIVILEGED_USER.into(),
        })
    } else {
        let user = std::env::var("USER").unwrap_or_else(|_| format!("uid{uid}"));
        Ok(Env {
            pop_serve,
            dovecot: opts.dovecot.clone(),
            drop_to: None,
            uid,
            gid,
            user,
        })
    }
}

fn run(mut opts: Opts) -> Result<(), String> {
    if opts.quick {
        opts.sizes.get_or_insert_with(|| QUICK_SIZES.to_vec());
        opts.reps.get_or_insert(1);
        opts.no_growth = true;
    }
    let sizes = opts.sizes.clone().unwrap_or_else(|| FULL_SIZES.to_vec());
    let reps = opts.reps.unwrap_or(3).max(1);
    let mut formats = Vec::new();
    for f in &opts.formats {
        match f.to_ascii_lowercase().as_str() {
            "mbox" => formats.push(Format::Mbox),
            "maildir" => formats.push(Format::Maildir),
            other => return Err(format!("unknown format {other}: expected mbox or maildir")),
        }
    }
    let env = server_env(&opts)?;
    let dovecot = !opts.no_dovecot && env.dovecot.is_file();
    let dovecot_note = if opts.no_dovecot {
        Some("Dovecot left out (--no-dovecot): pop-serve alone.".to_string())
    } else if !dovecot {
        Some(format!(
            "Dovecot not found at {}: pop-serve alone.",
            env.dovecot.display()
        ))
    } else {
        None
    };
    if let Some(n) = &dovecot_note {
        eprintln!("NOTE: {n}");
    }
    std::fs::create_dir_all(&opts.work).map_err(|e| format!("{}: {e}", opts.work.display()))?;
    let work = std::fs::canonicalize(&opts.work).map_err(|e| e.to_string())?;
    let scenarios = match &opts.scenarios {
        None => None,
        Some(words) => Some(
            words
                .iter()
                .map(|w| scenario::Scn::parse(w).ok_or(format!("unknown scenario {w}")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let cfg = scenario::Config {
        work,
        env,
        reps,
        dovecot,
        scenarios,
    };
    let growth = if opts.no_growth {
        None
    } else {
        Some(
            opts.growth_sizes
                .clone()
                .unwrap_or_else(|| GROWTH_SIZES.to_vec()),
        )
    };
    let results = scenario::run_all(
        &cfg,
        &sizes,
        &formats,
        growth.as_deref(),
        opts.growth_dovecot,
    )
    .map_err(|e| format!("bench failed: {e}"))?;
    let text = report::render(&cfg, &opts, &results, dovecot_note.as_deref());
    println!("{text}");
    if let Some(path) = &opts.markdown {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    results.clean_up(&cfg);
    if results.any_invalid() {
        eprintln!("WARNING: some rows are INVALID (payload validation failed); see above");
    }
    Ok(())
}
