//! Confinement of the network process, in this order: drop to the TLS user (groups, gid,
//! uid), no core dumps and no ptrace from other processes of that user, no_new_privs,
//! Landlock with no filesystem access and no TCP bind/connect, then rlimits that forbid new
//! descriptors, files and processes. Rule: nothing here may run before the last descriptor
//! the process needs is open, and nothing after it may need a new one.

use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgid, setgroups, setuid, Gid, Uid, User};
use std::os::fd::RawFd;

/// What was applied, for the log.
#[derive(Debug, Default)]
pub struct Applied {
    pub user: Option<String>,
    pub landlock: &'static str,
}

/// The TLS user to switch to, looked up while /etc/passwd can still be read. None when not
/// root: then there is nothing to drop.
pub fn lookup_user(name: &str) -> Result<Option<User>, String> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(name) {
        Ok(Some(u)) if u.uid.is_root() || u.gid.as_raw() == 0 => {
            Err(format!("TLS user {name} has uid or gid 0"))
        }
        Ok(Some(u)) => Ok(Some(u)),
        Ok(None) => Err(format!("no such TLS user {name}")),
        Err(e) => Err(format!("cannot look up TLS user {name}: {e}")),
    }
}

/// Drops root for good: supplementary groups, then gid, then uid; checks it cannot return.
pub fn drop_to(u: &User) -> Result<(), String> {
    setgroups(&[u.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(u.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(u.uid).map_err(|e| format!("setuid: {e}"))?;
    if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() {
        return Err("privileges could be regained after the drop".into());
    }
    Ok(())
}

/// Not dumpable (so other processes of the TLS user cannot ptrace or read /proc/PID/mem), no
/// core files.
pub fn no_dumps() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_DUMPABLE: {}",
            std::io::Error::last_os_error()
        ));
    }
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("RLIMIT_CORE: {e}"))
}

/// Landlock, best effort: every filesystem right handled and none granted, TCP bind and
/// connect handled and none granted, abstract sockets and signals scoped. Sets no_new_privs.
/// Returns how much the kernel enforced.
pub fn landlock_nothing() -> Result<&'static str, String> {
    use landlock::{Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetStatus, Scope, ABI};
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V6))
        .and_then(|r| r.handle_access(AccessNet::from_all(ABI::V6)))
        .and_then(|r| r.scope(Scope::from_all(ABI::V6)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    if !status.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "landlock fully enforced",
        RulesetStatus::PartiallyEnforced => "landlock partially enforced (older kernel ABI)",
        RulesetStatus::NotEnforced => "landlock not enforced (kernel without landlock)",
    })
}

/// Keeps exactly the descriptors in `kept`: every other number below the highest of them
/// gets a copy of `filler` (closing whatever was inherited there), every number above is
/// closed, and RLIMIT_NOFILE becomes that highest number plus one. The process can then
/// create no descriptor at all, while poll over its own still works. When the process runs as
/// the TLS user, no new processes either (RLIMIT_NPROC). RLIMIT_FSIZE is left alone: Linux
/// applies it to socket writes too (SIGXFSZ), and Landlock already forbids writing files.
pub fn close_the_doors(kept: &[RawFd], filler: RawFd, dropped: bool) -> Result<RawFd, String> {
    let limit = kept.iter().copied().max().unwrap_or(2) + 1;
    for fd in 0..limit {
        if !kept.contains(&fd) {
            nix::unistd::dup2(filler, fd).map_err(|e| format!("dup2: {e}"))?;
        }
    }
    // SAFETY: closes descriptors this process does not use (none of `kept`).
    if unsafe { libc::close_range(limit as u32, u32::MAX, 0) } != 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    let l = limit as u64;
    setrlimit(Resource::RLIMIT_NOFILE, l, l).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    if dropped {
        setrlimit(Resource::RLIMIT_NPROC, 0, 0).map_err(|e| format!("RLIMIT_NPROC: {e}"))?;
    }
    Ok(limit)
}

/// Closes every descriptor except `keep` (for the key process: nothing inherited from the
/// launcher or the parent stays open in it).
pub fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&f| f >= 0)
        .map(|&f| f as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 0u32;
    for k in keep {
        if k > from {
            // SAFETY: closes a range of descriptors this process does not use.
            unsafe { libc::close_range(from, k - 1, 0) };
        }
        from = k + 1;
    }
    // SAFETY: as above, everything above the last kept descriptor.
    unsafe { libc::close_range(from, u32::MAX, 0) };
}
