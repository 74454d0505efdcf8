//! What a session process (`pop-serve`) may reach once it is confined: its own mailbox, its
//! state directory, nothing else; no exec, no TCP, no signals or abstract sockets beyond
//! itself. Enforced with `no_new_privs`, `RLIMIT_NOFILE` and Landlock, best effort over every
//! Landlock ABI up to the running kernel's.
//!
//! Landlock rules are per thread and inherited only by threads started later: [`confine`]
//! must run while the process has one thread, and before the mailbox is opened.

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The highest Landlock ABI whose rights are asked for; older kernels enforce what they know.
const ABI_WANTED: ABI = ABI::V7;

/// How much of the sandbox the kernel enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Full,
    Partial,
    None,
}

/// What [`confine`] did, for the one log line.
#[derive(Debug, Clone)]
pub struct Status {
    pub landlock: Enforced,
    /// The running kernel's Landlock ABI (0: none; negative: the probe failed).
    pub abi: i64,
    /// Why Landlock could not be set up at all, when that is why it is not enforced.
    pub failure: Option<String>,
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

/// The mailbox a session may reach.
#[derive(Debug, Clone)]
pub enum Reach {
    /// An mbox file; `dotlock_dir`: the session creates and removes `PATH.lock` itself (its
    /// directory is writable to it), so it may create, read and remove files there.
    Mbox { path: PathBuf, dotlock_dir: bool },
    /// A Maildir tree: read, write, rename between its subdirectories, remove.
    Maildir(PathBuf),
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

/// Lowers `RLIMIT_NOFILE` (soft and hard) to `n`.
pub fn max_open_files(n: u64) -> io::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
        .map_err(io::Error::from)
}

/// The running kernel's Landlock ABI version: 0 without Landlock.
pub fn kernel_abi() -> i64 {
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

/// Rights on a mailbox file.
fn file_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate
}

/// Rights in a directory whose files are created, replaced and removed: the state directory
/// and a Maildir.
fn tree_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::ReadDir
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
        | AccessFs::Refer
}

/// Rights in an mbox's directory when the session makes its own dotlocks there.
fn dotlock_dir_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadDir
        | AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
}

/// Restricts this thread (and every thread it starts later) to `mailbox` and `state_dir`:
/// every filesystem right Landlock knows is handled and only those listed are granted; TCP
/// bind and connect are handled and never granted; signals and abstract unix sockets are
/// scoped to the process's own domain. A path that does not exist (yet) gets no rule, so it
/// stays out of reach. Also sets `no_new_privs`.
pub fn confine(mailbox: &Reach, state_dir: &Path) -> Result<Status, String> {
    let abi = kernel_abi();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_WANTED))
        .and_then(|r| r.handle_access(AccessNet::from_all(ABI_WANTED)))
        .and_then(|r| r.scope(Scope::from_all(ABI_WANTED)))
        .and_then(|r| r.create())
        .map_err(|e| format!("landlock: {e}"))?;
    let mut rules: Vec<(&Path, BitFlags<AccessFs>)> = vec![(state_dir, tree_rights())];
    match mailbox {
        Reach::Mbox { path, dotlock_dir } => {
            rules.push((path, file_rights()));
            if *dotlock_dir {
                if let Some(dir) = path.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    rules.push((dir, dotlock_dir_rights()));
                }
            }
        }
        Reach::Maildir(path) => rules.push((path, tree_rights())),
    }
    for (path, rights) in rules {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // Not there: nothing to grant. The session finds it missing or is refused.
            Err(_) if !path.exists() => continue,
            Err(e) => return Err(format!("landlock: {}: {e}", path.display())),
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|e| format!("landlock: {}: {e}", path.display()))?;
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("landlock: {e}"))?;
    if !status.no_new_privs {
        no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    let landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Full,
        RulesetStatus::PartiallyEnforced => Enforced::Partial,
        RulesetStatus::NotEnforced => Enforced::None,
    };
    Ok(Status {
        landlock,
        abi,
        failure: None,
    })
}
