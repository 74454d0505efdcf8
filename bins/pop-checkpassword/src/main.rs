//! pop-checkpassword: verifies the credentials a checkpassword front end (pop-popup,
//! qmail-popup) passes on fd 3, becomes the user, and execs the rest of its command line.
//!
//! Exit status: 1 bad credentials, 2 misuse, 111 temporary failure; on success the status is
//! the exec'd program's. See doc/pop-checkpassword.8.
// Started by spool_wire::start (see `main` below); a test build keeps the harness's main.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use clap::{Parser, ValueEnum};
use spool_login::auth::{self, checkpw, AuthError, Config, Source};
use spool_wire::cli;
use spool_wire::log::{Level, LogTarget, Logger};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceKind {
    /// /etc/passwd and /etc/shadow (read directly, not through NSS).
    System,
    /// A Dovecot passwd-file of virtual users.
    PasswdFile,
    /// A directory of passwd-files, one per virtual server (--vhost-dir).
    Vhost,
}

#[derive(Parser, Debug)]
#[command(
    name = "pop-checkpassword",
    version,
    about = "checkpassword-interface verifier: reads user\\0password\\0timestamp\\0 on fd 3, \
             becomes the user, execs PROG"
)]
struct Args {
    /// Where accounts come from.
    #[arg(long, value_enum, default_value = "system")]
    source: SourceKind,

    /// The passwd file (system source).
    #[arg(long, default_value = "/etc/passwd")]
    passwd: PathBuf,

    /// The shadow file (system source).
    #[arg(long, default_value = "/etc/shadow")]
    shadow: PathBuf,

    /// The Dovecot passwd-file (required with --source passwd-file).
    #[arg(long)]
    passwd_file: Option<PathBuf>,

    /// The directory of per-server passwd-files (required with --source vhost).
    #[arg(long)]
    vhost_dir: Option<PathBuf>,

    /// uid for passwd-file lines whose uid field is empty.
    #[arg(long)]
    virtual_uid: Option<u32>,

    /// gid for passwd-file lines whose gid field is empty.
    #[arg(long)]
    virtual_gid: Option<u32>,

    /// Home for passwd-file lines whose home field is empty (`%u` = user name, `%%` = `%`).
    #[arg(long)]
    virtual_home: Option<String>,

    /// Refuse accounts whose uid is below this.
    #[arg(long, default_value_t = 1000)]
    min_uid: u32,

    /// Allow uid 0 (also needs --min-uid 0).
    #[arg(long)]
    allow_root: bool,

    /// Accept traditional DES crypt hashes (only 8 password characters count).
    #[arg(long)]
    allow_des: bool,

    /// Accept system accounts whose shell is nologin or false (mail-only accounts).
    #[arg(long)]
    allow_nologin_shell: bool,

    /// Refuse system accounts whose shell is not listed in the --shells file.
    #[arg(long)]
    require_valid_shell: bool,

    /// The shells(5) file for --require-valid-shell.
    #[arg(long, default_value = "/etc/shells")]
    shells: PathBuf,

    /// Ignore shadow password aging (fields 3, 5, 7); account expiry (field 8) still applies.
    #[arg(long)]
    ignore_password_aging: bool,

    /// Accept only a router's login token (pop-route) made with the key in this file instead
    /// of the password; the source then only finds the account.
    #[arg(long, value_name = "FILE")]
    token_key: Option<PathBuf>,

    /// Pass this environment variable through to PROG as well (repeatable).
    #[arg(long, value_name = "NAME")]
    keep_env: Vec<String>,

    /// Seconds the caller may take to write fd 3 and close it.
    #[arg(long, default_value_t = checkpw::FD3_TIMEOUT.as_secs())]
    fd3_timeout: u64,

    /// Refuse to run (exit 111) unless the verifier's Landlock sandbox is fully enforced.
    #[arg(long)]
    require_sandbox: bool,

    /// Where log lines go (facility mail for syslog).
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// The program to exec as the user, and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "PROG")]
    prog: Vec<OsString>,
}

impl Args {
    fn config(&self) -> Result<Config, AuthError> {
        let source = match self.source {
            SourceKind::System => {
                if self.passwd_file.is_some() {
                    return Err(AuthError::Misuse(
                        "--passwd-file needs --source passwd-file".into(),
                    ));
                }
                Source::System {
                    passwd: self.passwd.clone(),
                    shadow: self.shadow.clone(),
                    allow_nologin_shell: self.allow_nologin_shell,
                    valid_shells: self.require_valid_shell.then(|| self.shells.clone()),
                    ignore_password_aging: self.ignore_password_aging,
                }
            }
            SourceKind::PasswdFile => Source::PasswdFile {
                path: self.passwd_file.clone().ok_or_else(|| {
                    AuthError::Misuse("--source passwd-file needs --passwd-file PATH".into())
                })?,
                default_uid: self.virtual_uid,
                default_gid: self.virtual_gid,
                default_home: self.virtual_home.clone(),
            },
            SourceKind::Vhost => {
                let home = self.virtual_home.clone().ok_or_else(|| {
                    AuthError::Misuse("--source vhost needs --virtual-home with %u and %v".into())
                })?;
                auth::vhost::check_home_template(&home).map_err(AuthError::Misuse)?;
                Source::Vhost {
                    dir: self.vhost_dir.clone().ok_or_else(|| {
                        AuthError::Misuse("--source vhost needs --vhost-dir DIR".into())
                    })?,
                    default_uid: self.virtual_uid,
                    default_gid: self.virtual_gid,
                    home,
                }
            }
        };
        if self.vhost_dir.is_some() && self.source != SourceKind::Vhost {
            return Err(AuthError::Misuse("--vhost-dir needs --source vhost".into()));
        }
        if self.fd3_timeout == 0 {
            return Err(AuthError::Misuse("--fd3-timeout must be at least 1".into()));
        }
        Ok(Config {
            source,
            min_uid: self.min_uid,
            allow_root: self.allow_root,
            allow_des: self.allow_des,
            keep_env: self.keep_env.clone(),
            fd3_timeout: Duration::from_secs(self.fd3_timeout),
            token_key: self.token_key.clone(),
        })
    }
}

spool_wire::lean_main!(real_main);

fn real_main() -> u8 {
    // Kept above fd 3: exactly the POP-before-SMTP login pipe, if POPRELAYFD names one.
    let relay_fd = spool_login::relay_fd();
    spool_wire::fds::close_inherited_except(
        spool_wire::fds::FIRST_INHERITED_CHECKPASSWORD,
        relay_fd.as_slice(),
    );
    if relay_fd.is_none() {
        std::env::remove_var(spool_login::RELAY_FD_ENV);
    }
    // A usage error is the interface's "misuse" (exit 2); its message must not reach stderr,
    // which is the client's socket under inetd, unless asked for.
    let usage = cli::Usage {
        program: "pop-checkpassword",
        report: cli::Report::Log,
        status: 2,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return status,
    };
    let log = Logger::new("pop-checkpassword", args.log);
    match args.config() {
        Ok(cfg) => auth::verify::run(&cfg, &args.prog, args.require_sandbox, &log),
        Err(e) => {
            log.log(Level::Err, &e.to_string());
            e.exit_code()
        }
    }
}
