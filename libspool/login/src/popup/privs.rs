//! Shedding capabilities before the first byte from the network is read.
//!
//! pop-popup itself needs no privilege at all: it only reads lines, forks and execs. The
//! checkpassword program it execs (as root) needs exactly [`KEPT`]: SETUID and SETGID to
//! become the user, DAC_READ_SEARCH to read a shadow file that root does not own or that has
//! no owner-read bit (Fedora ships `/etc/shadow` mode 0000). Everything else goes from the
//! Bounding set (so no later exec, even of a set-uid or file-capability program, can regain
//! it), from Inheritable and Ambient, and from Permitted; Effective is emptied, since this
//! process uses none. Permitted keeps [`KEPT`] because under no_new_privs an exec cannot
//! raise Permitted above what the caller had; without it, root regains Permitted from the
//! Bounding set at exec.
//!
//! The Bounding set is walked by number up to what the kernel reports, not by a fixed list,
//! so capabilities newer than the `caps` crate are dropped too.

#![forbid(unsafe_code)]

use caps::{CapSet, Capability, CapsHashSet};
use rustix::thread::CapabilitySet;
use std::fmt;

/// The capabilities the checkpassword program needs, and all that is left after shedding.
pub const KEPT: [Capability; 3] = [
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
];

/// Bit mask of [`KEPT`], as `/proc/PID/status` shows it.
pub fn kept_mask() -> u64 {
    KEPT.iter().map(|c| c.bitmask()).fold(0, |a, b| a | b)
}

/// What [`shed_capabilities`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shed {
    /// Not root and no permitted capabilities: nothing to shed (tests, or a deliberate
    /// unprivileged setup). The Bounding set cannot be changed without CAP_SETPCAP.
    Unprivileged,
    /// Capabilities shed; `bounding_dropped` were removed from the Bounding set (the numbers),
    /// `permitted` is the Permitted mask left.
    Done {
        bounding_dropped: Vec<u8>,
        permitted: u64,
    },
}

/// Which step failed. Any failure leaves the process with more privilege than intended, so
/// the caller must not go on.
#[derive(Debug)]
pub enum PrivsError {
    /// A capability could not be removed from the Bounding set (usually: CAP_SETPCAP missing).
    Bounding { cap: u8, err: std::io::Error },
    /// The Ambient set could not be cleared.
    Ambient(std::io::Error),
    /// capset for this set failed.
    Set { set: &'static str, err: String },
    /// Reading back showed a capability that should be gone.
    Verify { set: &'static str, mask: u64 },
}

impl fmt::Display for PrivsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivsError::Bounding { cap, err } => {
                write!(
                    f,
                    "cannot drop capability {cap} from the bounding set: {err}"
                )
            }
            PrivsError::Ambient(e) => write!(f, "cannot clear the ambient set: {e}"),
            PrivsError::Set { set, err } => write!(f, "cannot set the {set} set: {err}"),
            PrivsError::Verify { set, mask } => {
                write!(f, "{set} set still holds {mask:#x} after shedding")
            }
        }
    }
}

/// The highest capability number the prctl interface can name.
const MAX_CAP_NUMBER: u8 = 63;

/// Capability number `cap` as the one-capability set rustix's prctl wrappers take.
fn one_cap(cap: u8) -> CapabilitySet {
    CapabilitySet::from_bits_retain(1u64 << cap)
}

fn bounding_has(cap: u8) -> Option<bool> {
    // Err (EINVAL): beyond the kernel's last capability.
    rustix::thread::capability_is_in_bounding_set(one_cap(cap)).ok()
}

/// The Bounding set as a bit mask.
pub fn bounding_mask() -> u64 {
    (0..=MAX_CAP_NUMBER)
        .map_while(|c| bounding_has(c).map(|has| if has { 1u64 << c } else { 0 }))
        .fold(0, |a, b| a | b)
}

fn mask(set: &CapsHashSet) -> u64 {
    set.iter().map(|c| c.bitmask()).fold(0, |a, b| a | b)
}

fn capset(set: CapSet, name: &'static str, value: &CapsHashSet) -> Result<(), PrivsError> {
    caps::set(None, set, value).map_err(|e| PrivsError::Set {
        set: name,
        err: e.to_string(),
    })
}

/// Sheds every capability but [`KEPT`]; see the module documentation. Call it before
/// reading from the client. A process that is neither root nor holds capabilities is left
/// alone ([`Shed::Unprivileged`]).
pub fn shed_capabilities() -> Result<Shed, PrivsError> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| PrivsError::Set {
        set: "permitted",
        err: e.to_string(),
    })?;
    if !nix::unistd::geteuid().is_root() && permitted.is_empty() {
        return Ok(Shed::Unprivileged);
    }
    let keep = kept_mask();

    // First, while CAP_SETPCAP may still be effective.
    let mut dropped = Vec::new();
    for cap in 0..=MAX_CAP_NUMBER {
        let Some(has) = bounding_has(cap) else { break };
        if has && keep & (1u64 << cap) == 0 {
            if let Err(e) = rustix::thread::remove_capability_from_bounding_set(one_cap(cap)) {
                return Err(PrivsError::Bounding { cap, err: e.into() });
            }
            dropped.push(cap);
        }
    }

    if let Err(e) = rustix::thread::clear_ambient_capability_set() {
        // EINVAL: a kernel before 4.3 has no ambient set, so nothing to clear.
        if e != rustix::io::Errno::INVAL {
            return Err(PrivsError::Ambient(e.into()));
        }
    }

    let kept: CapsHashSet = KEPT
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    capset(CapSet::Inheritable, "inheritable", &CapsHashSet::new())?;
    capset(CapSet::Effective, "effective", &CapsHashSet::new())?;
    capset(CapSet::Permitted, "permitted", &kept)?;

    let bnd = bounding_mask();
    if bnd & !keep != 0 {
        return Err(PrivsError::Verify {
            set: "bounding",
            mask: bnd,
        });
    }
    for (set, name) in [
        (CapSet::Permitted, "permitted"),
        (CapSet::Effective, "effective"),
        (CapSet::Inheritable, "inheritable"),
    ] {
        let m = caps::read(None, set)
            .map(|s| mask(&s))
            .map_err(|e| PrivsError::Set {
                set: name,
                err: e.to_string(),
            })?;
        let allowed = if name == "permitted" { keep } else { 0 };
        if m & !allowed != 0 {
            return Err(PrivsError::Verify { set: name, mask: m });
        }
    }
    Ok(Shed::Done {
        bounding_dropped: dropped,
        permitted: mask(&kept),
    })
}

/// Marks the process not dumpable: no core file and no ptrace by the same uid while it holds
/// passwords (the command-line buffer's copies cannot all be wiped). The kernel resets this
/// at exec, so the checkpassword chain is unaffected.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_mask_is_the_three_capabilities() {
        // DAC_READ_SEARCH = 2, SETGID = 6, SETUID = 7.
        assert_eq!(kept_mask(), (1 << 2) | (1 << 6) | (1 << 7));
    }

    #[test]
    fn bounding_mask_reads() {
        // Every process has some bounding set; the mask must at least not be garbage past
        // the kernel's last capability.
        let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let m = bounding_mask();
        if last < 63 {
            assert_eq!(m >> (last + 1), 0);
        }
    }

    /// Shedding changes the whole test process, so it runs in a forked child that reports
    /// through its exit status.
    #[test]
    fn shed_in_a_child() {
        let st = crate::sys::in_forked_child(|| match shed_capabilities() {
            Ok(Shed::Unprivileged) => {
                if nix::unistd::geteuid().is_root() {
                    3
                } else {
                    0
                }
            }
            Ok(Shed::Done { permitted, .. }) => {
                if bounding_mask() & !kept_mask() == 0 && permitted & !kept_mask() == 0 {
                    0
                } else {
                    4
                }
            }
            Err(_) => 5,
        });
        assert!(
            matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{st:?}"
        );
    }
}
