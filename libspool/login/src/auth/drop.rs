//! Becoming the verified user for good: supplementary groups, then gid, then uid (each later
//! step needs the privilege the earlier ones still have), then every capability set cleared,
//! then a check that nothing can be regained.
//!
//! "Privileged" means euid 0, or holding CAP_SETUID and CAP_SETGID without being root (a front
//! end may pass just those down as ambient capabilities). Unprivileged, the only account that
//! can be served is the invoking user's own: anything else is refused with
//! [`Denied::NeedsRoot`], and the ids are left as they are.

#![forbid(unsafe_code)]

use super::{AuthError, Denied, Groups, Verified};
use caps::{CapSet, Capability};
use nix::unistd::{self, Gid, Uid};
use std::ffi::CString;

/// Whether this process may change its ids.
pub fn privileged() -> bool {
    if unistd::geteuid().is_root() {
        return true;
    }
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    has(Capability::CAP_SETUID) && has(Capability::CAP_SETGID)
}

fn temp(what: &str, e: impl std::fmt::Display) -> AuthError {
    AuthError::Temporary(format!("{what}: {e}"))
}

/// Drops to `v`'s uid, gid and groups, or explains why not.
pub fn become_user(v: &Verified) -> Result<(), AuthError> {
    let uid = Uid::from_raw(v.uid);
    let gid = Gid::from_raw(v.gid);
    if !privileged() {
        if unistd::getuid() != uid || unistd::geteuid() != uid {
            return Err(AuthError::BadCredentials(Denied::NeedsRoot(v.uid)));
        }
        return Ok(());
    }
    match v.groups {
        Groups::Init => {
            let name = CString::new(v.name.clone()).map_err(|e| temp("user name", e))?;
            unistd::initgroups(&name, gid).map_err(|e| temp("initgroups", e))?;
        }
        Groups::OnlyPrimary => unistd::setgroups(&[gid]).map_err(|e| temp("setgroups", e))?,
    }
    unistd::setresgid(gid, gid, gid).map_err(|e| temp("setresgid", e))?;
    unistd::setresuid(uid, uid, uid).map_err(|e| temp("setresuid", e))?;
    // Leaving uid 0 clears the capability sets by itself; arriving from a non-root uid with
    // capabilities does not, so clear them explicitly (Permitted last: Ambient and Effective
    // cannot exceed it).
    // A root target (only with --allow-root) keeps its Permitted set: root without
    // capabilities is not what the admin asked for.
    let mut sets = vec![CapSet::Ambient, CapSet::Inheritable, CapSet::Effective];
    if v.uid != 0 {
        sets.push(CapSet::Permitted);
    }
    for set in sets {
        caps::clear(None, set).map_err(|e| temp("clearing capabilities", e))?;
    }
    verify_dropped(v)
}

/// Checks that the process now is exactly `v` and cannot become root again.
pub fn verify_dropped(v: &Verified) -> Result<(), AuthError> {
    let (uid, gid) = (Uid::from_raw(v.uid), Gid::from_raw(v.gid));
    let r = unistd::getresuid().map_err(|e| temp("getresuid", e))?;
    let g = unistd::getresgid().map_err(|e| temp("getresgid", e))?;
    if [r.real, r.effective, r.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(AuthError::Temporary(format!(
            "ids after the drop are uid {r:?} gid {g:?}, not {uid}/{gid}"
        )));
    }
    if v.uid != 0 {
        if unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(AuthError::Temporary(
                "setuid(0) succeeded after dropping privileges".into(),
            ));
        }
        if v.gid != 0 && unistd::setgid(Gid::from_raw(0)).is_ok() {
            return Err(AuthError::Temporary(
                "setgid(0) succeeded after dropping privileges".into(),
            ));
        }
        let permitted =
            caps::read(None, CapSet::Permitted).map_err(|e| temp("reading capabilities", e))?;
        if !permitted.is_empty() {
            return Err(AuthError::Temporary(format!(
                "capabilities left after the drop: {permitted:?}"
            )));
        }
    }
    Ok(())
}
