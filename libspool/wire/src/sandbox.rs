//! The one mechanism every program confines itself with: `no_new_privs`, resource limits and
//! a Landlock ruleset that handles every right the kernel knows and grants only the paths a
//! program names. Best effort over every Landlock ABI up to the running kernel's: what was
//! enforced comes back in a [`Status`] for the program's one log line, and a program with
//! `--require-sandbox` refuses to run unless it is [`Enforced::Full`].
//!
//! Landlock rules are per thread and inherited only by threads started later, and across
//! `exec`: restrict while the process has one thread, and only in a process whose later
//! `exec`s (if any) need no more than it granted.

use landlock::{
    Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

pub use landlock::{AccessFs as Fs, BitFlags};

/// The highest Landlock ABI whose rights are asked for; older kernels enforce what they know.
pub const ABI_WANTED: i64 = 7;

/// How much of the sandbox the kernel enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Every right of [`ABI_WANTED`] is handled.
    Full,
    /// The kernel's ABI is older: the rights it knows are handled, the newer ones are not.
    Partial,
    /// No Landlock (kernel without it, disabled, or hidden by a seccomp filter).
    None,
}

/// What [`Sandbox::restrict`] did, for the one log line.
#[derive(Debug, Clone)]
pub struct Status {
    pub landlock: Enforced,
    /// The running kernel's Landlock ABI (0: none; negative: the probe failed).
    pub abi: i64,
    /// Why Landlock could not be set up at all, when that is why it is not enforced.
    pub failure: Option<String>,
}

impl Status {
    /// Not confined, for `reason`.
    pub fn none(reason: String) -> Status {
        Status {
            landlock: Enforced::None,
            abi: kernel_abi(),
            failure: Some(reason),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.landlock {
            Enforced::Full => "full",
            Enforced::Partial => "partial",
            Enforced::None => "none",
        };
        write!(f, "landlock: {what} (ABI {})", self.abi)?;
        match &self.failure {
            Some(e) => write!(f, ": {e}"),
            None => Ok(()),
        }
    }
}

/// Sets `no_new_privs`: no exec from here on can gain privileges (setuid, setgid, file
/// capabilities). Landlock requires it.
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `no_new_privs` is set on this process.
pub fn has_no_new_privs() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

/// Lowers `RLIMIT_NOFILE` (soft and hard) to `n`.
pub fn max_open_files(n: u64) -> io::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
        .map_err(io::Error::from)
}

/// The running kernel's Landlock ABI version: 0 without Landlock, negative when the probe
/// failed for another reason. Debug builds honour `POPSPOOL_TEST_LANDLOCK_ABI=N` (a lower N
/// only), so tests can show how a program behaves on an older kernel.
pub fn kernel_abi() -> i64 {
    let real = real_kernel_abi();
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var("POPSPOOL_TEST_LANDLOCK_ABI")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        return n.clamp(0, real.max(0));
    }
    real
}

fn real_kernel_abi() -> i64 {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag
    // only returns a number; it reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if r < 0 {
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSYS | libc::EOPNOTSUPP) => 0,
            _ => -1,
        }
    } else {
        r
    }
}

fn abi(n: i64) -> ABI {
    match n {
        i64::MIN..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        _ => ABI::V7,
    }
}

/// Rights to read one file (or every file beneath a directory) and list directories there.
pub fn read() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// Rights to execute one program (and read it, as the loader does).
pub fn execute() -> BitFlags<AccessFs> {
    AccessFs::Execute | AccessFs::ReadFile
}

/// Rights on one file that is read, written and truncated in place.
pub fn file_rw() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate
}

/// Rights in a directory whose regular files are created, replaced by rename and removed.
pub fn tree_rw() -> BitFlags<AccessFs> {
    AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::ReadDir
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
        | AccessFs::Refer
}

/// A Landlock ruleset under construction: everything is denied except what is allowed.
#[derive(Debug, Default)]
pub struct Sandbox {
    rules: Vec<(PathBuf, BitFlags<AccessFs>)>,
    held: Vec<(OwnedFd, BitFlags<AccessFs>)>,
}

impl Sandbox {
    /// Nothing granted: no file, no exec, no TCP bind or connect.
    pub fn new() -> Sandbox {
        Sandbox::default()
    }

    /// Grants `rights` on `path` and, for a directory, everything beneath it. A path that
    /// does not exist when the ruleset is applied gets no rule, so it stays out of reach.
    pub fn allow(mut self, path: impl Into<PathBuf>, rights: BitFlags<AccessFs>) -> Sandbox {
        self.rules.push((path.into(), rights));
        self
    }

    /// Grants `rights` on what `fd` (opened by the caller, `O_PATH` or not) refers to and,
    /// for a directory, everything beneath it: for a directory reached without following a
    /// symlink a user controls, which a path given to [`Sandbox::allow`] would follow.
    pub fn allow_fd(mut self, fd: OwnedFd, rights: BitFlags<AccessFs>) -> Sandbox {
        self.held.push((fd, rights));
        self
    }

    /// The paths granted so far, with their rights.
    pub fn rules(&self) -> &[(PathBuf, BitFlags<AccessFs>)] {
        &self.rules
    }

    /// Restricts this thread (and every thread or program it starts later): every
    /// filesystem right Landlock knows is handled and only those allowed are granted; TCP
    /// bind and connect are handled and never granted; signals and abstract unix sockets are
    /// scoped to the process's own domain. Sets `no_new_privs` first. Never fails: what could
    /// not be enforced is in the status; only a failure of `no_new_privs` itself is an error.
    pub fn restrict(self) -> io::Result<Status> {
        no_new_privs()?;
        let kernel = kernel_abi();
        if kernel <= 0 {
            return Ok(Status {
                landlock: Enforced::None,
                abi: kernel,
                failure: (kernel < 0).then(|| "landlock: the ABI probe failed".to_string()),
            });
        }
        let asked = abi(kernel.min(ABI_WANTED));
        match self.apply(asked) {
            Ok(RulesetStatus::FullyEnforced) if kernel >= ABI_WANTED => Ok(Status {
                landlock: Enforced::Full,
                abi: kernel,
                failure: None,
            }),
            Ok(RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced) => Ok(Status {
                landlock: Enforced::Partial,
                abi: kernel,
                failure: None,
            }),
            Ok(RulesetStatus::NotEnforced) => Ok(Status {
                landlock: Enforced::None,
                abi: kernel,
                failure: None,
            }),
            Err(e) => Ok(Status {
                landlock: Enforced::None,
                abi: kernel,
                failure: Some(e),
            }),
        }
    }

    fn apply(self, asked: ABI) -> Result<RulesetStatus, String> {
        let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(asked));
        if asked >= ABI::V4 {
            ruleset = ruleset.and_then(|r| r.handle_access(AccessNet::from_all(asked)));
        }
        if asked >= ABI::V6 {
            ruleset = ruleset.and_then(|r| r.scope(Scope::from_all(asked)));
        }
        let mut ruleset = ruleset
            .and_then(|r| r.create())
            .map_err(|e| format!("landlock: {e}"))?;
        let handled = AccessFs::from_all(asked);
        for (path, rights) in &self.rules {
            let fd = match PathFd::new(path) {
                Ok(fd) => fd,
                // Not there: nothing to grant. The program finds it missing or is refused.
                Err(_) if std::fs::symlink_metadata(path).is_err() => continue,
                Err(e) => return Err(format!("landlock: {}: {e}", path.display())),
            };
            // Directory-only rights on a file are refused by the kernel: keep those a file
            // can carry.
            let mut rights = *rights & handled;
            if !path.is_dir() {
                rights &= AccessFs::from_file(asked);
            }
            if rights.is_empty() {
                continue;
            }
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, rights))
                .map_err(|e| format!("landlock: {}: {e}", path.display()))?;
        }
        for (fd, rights) in &self.held {
            let is_dir = fd
                .try_clone()
                .and_then(|d| std::fs::File::from(d).metadata())
                .map(|m| m.is_dir())
                .map_err(|e| format!("landlock: a held descriptor: {e}"))?;
            let mut rights = *rights & handled;
            if !is_dir {
                rights &= AccessFs::from_file(asked);
            }
            if rights.is_empty() {
                continue;
            }
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd.as_fd(), rights))
                .map_err(|e| format!("landlock: a held descriptor: {e}"))?;
        }
        ruleset
            .restrict_self()
            .map(|s| s.ruleset)
            .map_err(|e| format!("landlock: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the test `name` of this binary in a new process with `SANDBOX_CASE` set, where
    /// it restricts itself (a restriction cannot be undone), and says whether it passed.
    fn in_child(name: &str) -> bool {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env("SANDBOX_CASE", "1")
            .output()
            .unwrap()
            .status
            .success()
    }

    fn is_child() -> bool {
        std::env::var_os("SANDBOX_CASE").is_some()
    }

    #[test]
    fn only_what_is_allowed_is_reachable() {
        if kernel_abi() <= 0 {
            eprintln!("SKIPPED only_what_is_allowed_is_reachable: no Landlock in this kernel");
            return;
        }
        if !is_child() {
            assert!(in_child(
                "sandbox::tests::only_what_is_allowed_is_reachable"
            ));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        let outside = dir.path().join("out");
        std::fs::write(&inside, b"x").unwrap();
        std::fs::write(&outside, b"y").unwrap();
        let s = Sandbox::new().allow(&inside, read()).restrict().unwrap();
        assert_ne!(s.landlock, Enforced::None);
        assert!(std::fs::read(&inside).is_ok());
        assert_eq!(
            std::fs::read(&outside).unwrap_err().raw_os_error(),
            Some(libc::EACCES)
        );
        assert!(std::fs::write(&inside, b"z").is_err());
        assert!(has_no_new_privs());
    }

    #[test]
    fn a_missing_path_is_skipped_and_stays_out_of_reach() {
        if !is_child() {
            assert!(in_child(
                "sandbox::tests::a_missing_path_is_skipped_and_stays_out_of_reach"
            ));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let s = Sandbox::new()
            .allow(&missing, tree_rw())
            .restrict()
            .unwrap();
        assert!(s.failure.is_none(), "{s}");
        if s.landlock != Enforced::None {
            assert!(std::fs::write(&missing, b"x").is_err());
        }
    }

    #[test]
    fn status_line_names_level_and_abi() {
        let s = Status {
            landlock: Enforced::Partial,
            abi: 3,
            failure: None,
        };
        assert_eq!(s.to_string(), "landlock: partial (ABI 3)");
        let s = Status {
            landlock: Enforced::None,
            abi: 0,
            failure: Some("landlock: nope".into()),
        };
        assert_eq!(s.to_string(), "landlock: none (ABI 0): landlock: nope");
    }
}
