//! pop-spool: administration of the hashed mail spool. All logic is in `spool_admin`.

use clap::{Parser, Subcommand};
use spool_admin::confine::Use;
use spool_admin::{
    self as admin, check, create, expire, index, migrate, recover, stats, AdminError, Layout,
    StateDirs, Ui,
};
use spool_wire::cli;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pop-spool", version, about = "Administer a hashed mail spool")]
struct Args {
    /// The hashed spool.
    #[arg(long, global = true, default_value = admin::DEFAULT_SPOOL)]
    spool_dir: PathBuf,
    /// Hash depth of the spool (0 = flat, 1 = spool/c/claird, 2 = spool/c/cl/claird).
    #[arg(long, global = true, default_value_t = admin::DEFAULT_DEPTH)]
    hash_depth: u8,
    /// Where update journals and indexes live: one directory for all users. Default: each user's
    /// $HOME/.popspool, as pop-serve.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Seconds to wait for each mailbox's content lock.
    #[arg(long, global = true, default_value_t = spool_wire::limits::CONTENT_LOCK_WAIT.as_secs())]
    lock_timeout: u64,
    /// Refuse to run (exit 111) unless the kernel fully enforces the Landlock sandbox (see
    /// CONFINEMENT in pop-spool(8)).
    #[arg(long, global = true)]
    require_sandbox: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the mailbox path of USER.
    Path { user: OsString },
    /// Create hash directories and empty mailboxes (root).
    Create {
        /// Also fix owners and modes of what already exists.
        #[arg(long)]
        fix: bool,
        #[arg(required = true)]
        users: Vec<OsString>,
    },
    /// Move a flat spool into the hashed layout, while mail keeps arriving.
    Migrate {
        #[arg(long)]
        from: PathBuf,
        /// The hashed spool (default: --spool-dir).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Hash depth of the new spool (default: --hash-depth).
        #[arg(long)]
        depth: Option<u8>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Report (and with --fix repair) owners, modes, stale locks and malformed mailboxes.
    Check {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        fix: bool,
        users: Vec<OsString>,
    },
    /// Messages and bytes per mailbox, the largest mailboxes, totals.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Remove messages older than N days (by the date of their From line).
    Expire {
        #[arg(long)]
        days: u64,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        dry_run: bool,
        users: Vec<OsString>,
    },
    /// Build or refresh the mbox index pop-serve keeps in the state directory.
    Index {
        #[arg(long)]
        all: bool,
        users: Vec<OsString>,
    },
    /// Finish every update journal an interrupted UPDATE left (every mailbox without USERs).
    Recover {
        /// Every mailbox of the spool (also the default when no USER is named).
        #[arg(long)]
        all: bool,
        users: Vec<OsString>,
    },
}

fn main() {
    spool_wire::start::no_core_files();
    spool_wire::fds::close_inherited(spool_wire::fds::FIRST_INHERITED);
    let usage = cli::Usage {
        program: "pop-spool",
        report: cli::Report::Stderr,
        status: admin::EXIT_USAGE as u8,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => std::process::exit(status.into()),
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    let mut ui = Ui::new(&mut out, &mut err, Ui::progress_if_tty());
    let code = match run(args, &mut ui) {
        Ok(code) => code,
        Err(e) => {
            ui.warn(&e.to_string());
            e.exit_code()
        }
    };
    let _ = ui.out.flush();
    std::process::exit(code);
}

/// The trees a subcommand names, how it uses them, and how it uses the state directories.
fn reach(args: &Args, state: &StateDirs) -> (Vec<(PathBuf, Use)>, Option<Use>) {
    let rw = |dry: bool| if dry { Use::Read } else { Use::Write };
    let spool = args.spool_dir.clone();
    match &args.cmd {
        Cmd::Path { .. } => (Vec::new(), None),
        Cmd::Create { .. } => (vec![(spool, Use::Write)], None),
        Cmd::Migrate {
            from, to, dry_run, ..
        } => {
            let to = to.clone().unwrap_or(spool);
            let _ = state;
            (
                vec![(from.clone(), rw(*dry_run)), (to, rw(*dry_run))],
                Some(rw(*dry_run)),
            )
        }
        Cmd::Check { fix, .. } => (vec![(spool, rw(!fix))], Some(rw(!fix))),
        Cmd::Stats { .. } => (vec![(spool, Use::Read)], None),
        Cmd::Expire { .. } | Cmd::Index { .. } | Cmd::Recover { .. } => {
            (vec![(spool, Use::Write)], Some(Use::Write))
        }
    }
}

/// The users a subcommand may work for: those named, else every mailbox of the spool (for
/// migrate, of the flat spool it moves).
fn names(args: &Args, layout: &Layout) -> Vec<Vec<u8>> {
    let named = |users: &[OsString]| -> Vec<Vec<u8>> {
        users.iter().map(|u| u.as_bytes().to_vec()).collect()
    };
    let every = || -> Vec<Vec<u8>> {
        admin::walk(layout)
            .map(|w| w.mailboxes.into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default()
    };
    match &args.cmd {
        Cmd::Path { .. } | Cmd::Stats { .. } => Vec::new(),
        Cmd::Create { users, .. } => named(users),
        Cmd::Migrate { from, .. } => std::fs::read_dir(from)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().as_bytes().to_vec())
                    .collect()
            })
            .unwrap_or_default(),
        Cmd::Check { all, users, .. }
        | Cmd::Expire { all, users, .. }
        | Cmd::Index { all, users }
        | Cmd::Recover { all, users } => {
            if *all || users.is_empty() {
                every()
            } else {
                named(users)
            }
        }
    }
}

/// Looks up every user first, then confines the process: no_new_privs, `RLIMIT_NOFILE`,
/// Landlock over what the subcommand names (see CONFINEMENT in pop-spool(8)). The status is
/// said on stderr unless Landlock is fully enforced; with `--require-sandbox` anything less
/// is an error.
fn confine(
    args: &Args,
    layout: &Layout,
    state: &StateDirs,
    ui: &mut Ui<'_>,
) -> Result<(), AdminError> {
    use spool_wire::sandbox::{self, Enforced};
    let names = names(args, layout);
    admin::prefetch(names.iter().map(Vec::as_slice));
    let (trees, state_use) = reach(args, state);
    let users = admin::prefetched_users();
    let sb = admin::confine::sandbox(&trees, state_use.map(|u| (state, u)), &users);
    let err = |what: &str, e: std::io::Error| AdminError::Io(what.to_string(), e);
    sandbox::no_new_privs().map_err(|e| err("set no_new_privs", e))?;
    sandbox::max_open_files(spool_wire::limits::SPOOL_MAX_OPEN_FILES)
        .map_err(|e| err("set RLIMIT_NOFILE", e))?;
    let status = sb
        .restrict()
        .unwrap_or_else(|e| sandbox::Status::none(format!("no_new_privs: {e}")));
    if status.landlock != Enforced::Full {
        if args.require_sandbox {
            return Err(AdminError::Io(
                format!("--require-sandbox: {status}"),
                std::io::Error::other("refusing to run unconfined"),
            ));
        }
        ui.warn(&status.to_string());
    }
    #[cfg(debug_assertions)]
    spool_wire::testhooks::run(&spool_wire::log::Logger::new(
        "pop-spool",
        spool_wire::log::LogTarget::Stderr,
    ));
    Ok(())
}

fn run(args: Args, ui: &mut Ui<'_>) -> Result<i32, AdminError> {
    let layout = Layout::new(args.spool_dir.clone(), args.hash_depth)?;
    let state = match &args.state_dir {
        Some(d) => StateDirs::Fixed(d.clone()),
        None => StateDirs::Home,
    };
    confine(&args, &layout, &state, ui)?;
    let lock_wait = Duration::from_secs(args.lock_timeout);
    match args.cmd {
        Cmd::Path { user } => {
            let p = admin::path(&layout, user.as_bytes())?;
            let mut line = p.as_os_str().as_bytes().to_vec();
            line.push(b'\n');
            let _ = ui.out.write_all(&line);
            Ok(admin::EXIT_OK)
        }
        Cmd::Create { fix, users } => {
            let users: Vec<Vec<u8>> = users.iter().map(|u| u.as_bytes().to_vec()).collect();
            let r = create::create(&layout, &users, fix, ui)?;
            ui.say(&format!(
                "create: {} created, {} existed, {} fixed, {} differ, {} errors",
                r.created, r.existed, r.fixed, r.differs, r.errors
            ));
            Ok(if r.errors > 0 {
                admin::EXIT_TEMP
            } else if r.differs > 0 {
                admin::EXIT_PROBLEMS
            } else {
                admin::EXIT_OK
            })
        }
        Cmd::Migrate {
            from,
            to,
            depth,
            dry_run,
        } => {
            let to = Layout::new(
                to.unwrap_or(args.spool_dir),
                depth.unwrap_or(args.hash_depth),
            )?;
            let opts = migrate::MigrateOptions {
                from,
                to,
                dry_run,
                state,
                lock_wait,
            };
            let r = migrate::migrate(&opts, ui)?;
            ui.say(&format!(
                "migrate{}: {} moved, {} merged, {} skipped, {} errors, {} bytes",
                if dry_run { " (dry run)" } else { "" },
                r.moved,
                r.merged,
                r.skipped,
                r.errors,
                r.bytes
            ));
            Ok(if r.errors > 0 {
                admin::EXIT_TEMP
            } else {
                admin::EXIT_OK
            })
        }
        Cmd::Check { all, fix, users } => {
            let opts = check::CheckOptions {
                layout,
                users,
                all,
                fix,
                state,
                lock_wait,
            };
            let r = check::check(&opts, ui)?;
            ui.say(&format!(
                "check: {} mailboxes, {} problems, {} fixed, {} errors",
                r.mailboxes, r.problems, r.fixed, r.errors
            ));
            Ok(r.exit_code())
        }
        Cmd::Stats { json } => {
            let st = stats::stats(&layout, ui)?;
            let text = if json { st.json() } else { st.text() };
            let _ = ui.out.write_all(text.as_bytes());
            Ok(if st.errors > 0 {
                admin::EXIT_TEMP
            } else {
                admin::EXIT_OK
            })
        }
        Cmd::Expire {
            days,
            all,
            dry_run,
            users,
        } => {
            let opts = expire::ExpireOptions {
                layout,
                users,
                all,
                days,
                dry_run,
                state,
                lock_wait,
                now: None,
            };
            let r = expire::expire(&opts, ui)?;
            ui.say(&format!(
                "expire{}: {} mailboxes, {} messages removed, {} bytes, {} undated kept, {} errors",
                if dry_run { " (dry run)" } else { "" },
                r.mailboxes,
                r.removed,
                r.bytes,
                r.undated,
                r.errors
            ));
            Ok(if r.errors > 0 {
                admin::EXIT_TEMP
            } else {
                admin::EXIT_OK
            })
        }
        Cmd::Index { all, users } => {
            let opts = index::IndexOptions {
                layout,
                users,
                all,
                state,
                lock_wait,
            };
            let r = index::index(&opts, ui)?;
            ui.say(&format!(
                "index: {} mailboxes, {} built, {} refreshed, {} unchanged, {} messages, {} errors",
                r.mailboxes, r.built, r.refreshed, r.unchanged, r.messages, r.errors
            ));
            Ok(if r.errors > 0 {
                admin::EXIT_TEMP
            } else {
                admin::EXIT_OK
            })
        }
        Cmd::Recover { all, users } => {
            if all && !users.is_empty() {
                return Err(AdminError::Usage(
                    "name users or give --all (not both)".into(),
                ));
            }
            let opts = recover::RecoverOptions {
                layout,
                users,
                state,
                lock_wait,
            };
            let r = recover::recover(&opts, ui)?;
            ui.say(&format!(
                "recover: {} mailboxes, {} replayed, {} incomplete journals removed, {} nothing pending, {} failed",
                r.mailboxes, r.replayed, r.discarded, r.nothing, r.failed
            ));
            Ok(if r.failed > 0 {
                admin::EXIT_TEMP
            } else {
                admin::EXIT_OK
            })
        }
    }
}
