//! pop-spool: administration of the hashed mail spool. All logic is in `spool_admin`.

use clap::{Parser, Subcommand};
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

fn run(args: Args, ui: &mut Ui<'_>) -> Result<i32, AdminError> {
    let layout = Layout::new(args.spool_dir.clone(), args.hash_depth)?;
    let state = match &args.state_dir {
        Some(d) => StateDirs::Fixed(d.clone()),
        None => StateDirs::Home,
    };
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
