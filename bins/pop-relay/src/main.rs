//! pop-relay: the administrator's side of POP-before-SMTP. `expire` removes the records older
//! than the maximum age from the relay directory; `export` writes the fresh ones as a Postfix
//! access map (`ADDRESS OK`), atomically, and can run postmap on it. See doc/pop-relay.8.

use clap::{Args as ClapArgs, Parser, Subcommand};
use spool_relay as relay;
use spool_wire::cli;
use spool_wire::log::{Level, LogTarget, Logger};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Largest `--max-age-minutes`: one week.
const MAX_AGE_MINUTES: u64 = 7 * 24 * 60;

#[derive(Parser, Debug)]
#[command(
    name = "pop-relay",
    version,
    about = "POP-before-SMTP records: expire them, export them as a Postfix access map"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(ClapArgs, Debug)]
struct Common {
    /// The relay directory: absolute, owned by root (or the caller), not writable by group or
    /// others.
    #[arg(long)]
    dir: PathBuf,

    /// A record older than this many minutes no longer relays (1 to 10080).
    #[arg(long, default_value_t = relay::DEFAULT_MAX_AGE.as_secs() / 60,
          value_parser = clap::value_parser!(u64).range(1..=MAX_AGE_MINUTES))]
    max_age_minutes: u64,

    /// Where log lines go (facility mail for syslog).
    #[arg(long, default_value = "stderr")]
    log: LogTarget,

    /// Refuse (exit 111, nothing changed) unless the kernel fully enforces the Landlock
    /// sandbox (see CONFINEMENT in pop-relay(8)).
    #[arg(long)]
    require_sandbox: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Remove the records older than the maximum age.
    Expire {
        #[command(flatten)]
        common: Common,
    },
    /// Write the fresh records to MAP as `ADDRESS OK` lines (temp file + rename).
    Export {
        #[command(flatten)]
        common: Common,

        /// The access map to write (its directory must be safe as --dir's is).
        #[arg(long)]
        map: PathBuf,

        /// Then run `postmap hash:MAP` (the program at PATH, default /usr/sbin/postmap).
        #[arg(long, value_name = "PATH", num_args = 0..=1,
              default_missing_value = "/usr/sbin/postmap")]
        postmap: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    spool_wire::fds::close_inherited(spool_wire::fds::FIRST_INHERITED);
    let usage = cli::Usage {
        program: "pop-relay",
        report: cli::Report::Stderr,
        status: 2,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return ExitCode::from(status),
    };
    let common = match &args.cmd {
        Cmd::Expire { common } | Cmd::Export { common, .. } => common,
    };
    let log = Logger::new("pop-relay", common.log);
    match run(&args.cmd, common, &log) {
        Ok(msg) => {
            log.log(Level::Info, &msg);
            ExitCode::SUCCESS
        }
        Err(e) => {
            log.log(Level::Err, &e);
            ExitCode::from(111)
        }
    }
}

fn run(cmd: &Cmd, common: &Common, log: &Logger) -> Result<String, String> {
    let dir = relay::open_dir(&common.dir).map_err(|e| e.to_string())?;
    let max_age = Duration::from_secs(common.max_age_minutes * 60);
    let now = SystemTime::now();
    match cmd {
        Cmd::Expire { .. } => {
            // Expiry needs the directory alone: no other file, no exec, no TCP.
            let held = dir.try_clone().map_err(|e| format!("dup: {e}"))?;
            let sb =
                spool_wire::sandbox::Sandbox::new().allow_fd(held, spool_wire::sandbox::tree_rw());
            confine(sb, common.require_sandbox, log)?;
            let n = relay::expire(dir.as_fd(), max_age, now).map_err(|e| e.to_string())?;
            Ok(format!("expired {n} records"))
        }
        Cmd::Export { map, postmap, .. } => {
            let (Some(parent), Some(name)) = (map.parent(), map.file_name()) else {
                return Err(format!("{}: no directory or file name", map.display()));
            };
            let map_dir = relay::open_dir(parent).map_err(|e| e.to_string())?;
            let export = || -> Result<usize, String> {
                confine_export(&dir, &map_dir, common.require_sandbox, log)?;
                let recs = relay::records(dir.as_fd()).map_err(|e| e.to_string())?;
                let text = relay::map_text(&recs, max_age, now);
                relay::write_atomically_at(map_dir.as_fd(), name, &text, map)
                    .map_err(|e| e.to_string())?;
                Ok(text.lines().count())
            };
            let Some(prog) = postmap else {
                let n = export()?;
                return Ok(format!("exported {n} addresses to {}", map.display()));
            };
            // postmap reads Postfix's configuration and runs as its own program: the map is
            // written by a confined child, postmap is run by this unconfined parent after it.
            let n = in_child(export)?;
            let mut arg = std::ffi::OsString::from("hash:");
            arg.push(map);
            let st = std::process::Command::new(prog)
                .arg(arg)
                .status()
                .map_err(|e| format!("cannot run {}: {e}", prog.display()))?;
            if !st.success() {
                return Err(format!("{} failed: {st}", prog.display()));
            }
            Ok(format!("exported {n} addresses to {}", map.display()))
        }
    }
}

/// Export's sandbox: no_new_privs, and Landlock granting the relay directory read (its
/// records listed and stat'ed) and the map's directory only what the atomic write needs:
/// make a regular file, write it, remove a file (the rename over the old map, a stale temp
/// file). Nothing else is read, nothing executed, no TCP.
fn confine_export(
    dir: &std::os::fd::OwnedFd,
    map_dir: &std::os::fd::OwnedFd,
    require: bool,
    log: &Logger,
) -> Result<(), String> {
    use spool_wire::sandbox::{self, Fs};
    let held = dir.try_clone().map_err(|e| format!("dup: {e}"))?;
    let held_map = map_dir.try_clone().map_err(|e| format!("dup: {e}"))?;
    let sb = sandbox::Sandbox::new()
        .allow_fd(held, sandbox::read())
        .allow_fd(held_map, Fs::MakeReg | Fs::WriteFile | Fs::RemoveFile);
    confine(sb, require, log)
}

/// Applies `sb`; with `require` (--require-sandbox) anything less than a fully enforced
/// Landlock ruleset is an error, before any change is made. Then the debug hooks run.
fn confine(sb: spool_wire::sandbox::Sandbox, require: bool, log: &Logger) -> Result<(), String> {
    match sb.restrict() {
        Ok(st) if require && st.landlock != spool_wire::sandbox::Enforced::Full => {
            return Err(format!("--require-sandbox: {st}"));
        }
        Ok(st) => log.log(Level::Debug, &format!("confined: {st}")),
        Err(e) => return Err(format!("cannot confine: {e}")),
    }
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(log);
    Ok(())
}

/// Runs `f` in a child process and returns its count: the child reports it on a pipe and
/// exits, so the sandbox it sets up stays behind with it.
fn in_child(f: impl FnOnce() -> Result<usize, String>) -> Result<usize, String> {
    use std::io::{Read, Write};
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: pop-relay starts no thread, so the child is a copy of a single-threaded process.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let msg = match f() {
                Ok(n) => format!("+{n}"),
                Err(e) => format!("-{e}"),
            };
            let _ = std::fs::File::from(w).write_all(msg.as_bytes());
            std::process::exit(0)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            let read = std::fs::File::from(r).read_to_string(&mut msg);
            let _ = nix::sys::wait::waitpid(child, None);
            read.map_err(|e| format!("reading the export's outcome: {e}"))?;
            match msg.split_at_checked(1) {
                Some(("+", n)) => n.parse().map_err(|_| format!("bad outcome {msg:?}")),
                Some(("-", e)) => Err(e.to_string()),
                _ => Err("the export ended without an outcome".to_string()),
            }
        }
    }
}
