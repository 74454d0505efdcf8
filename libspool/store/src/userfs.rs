//! Working in a directory a user controls, as that user: the one way a privileged program
//! touches a user's state directory (`$HOME/.popspool`, or a shared `--state-dir`), and any
//! other path below a directory the user can write.
//!
//! The rule a reader must not break: root never resolves a path a user can change with its
//! own rights. A user who owns `$HOME` can swap `.popspool` for a symlink to any directory
//! between any check and any use, so no check by path helps; and walking with `openat` from
//! verified directory descriptors would have to be threaded through the journal, the index
//! and every later caller. Instead the calling thread takes the user's file-system identity
//! for the duration of the work ([`AsUser`]): Linux's `setfsuid`/`setfsgid` (which also drop
//! the file-system capabilities, `CAP_DAC_OVERRIDE` and the like, from the thread's effective
//! set while the fsuid is not 0) and the thread's own supplementary groups (the user's, so
//! root's groups grant nothing either). Every lookup, open, create, rename and unlink then
//! succeeds exactly when it would for the user: a symlink to a root-only directory fails with
//! `EACCES`, and whatever is created belongs to the user without a `chown` by path. The real
//! and effective ids stay root, so the rest of the run (the spool, the dotlock) is untouched
//! and the switch is undone when the guard drops.
//!
//! All three are per-thread in the kernel: the guard is `!Send`, so it is dropped on the
//! thread that took it, and other threads keep root's identity meanwhile.

#![forbid(unsafe_code)]

use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::io;
use std::marker::PhantomData;

/// A user's file-system identity: uid, primary gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Account {
    /// `name`'s identity with its groups from the group database, as a login gets them
    /// (`initgroups`): what `pop-serve`, running as the user, has.
    pub fn lookup(name: &str, uid: u32, gid: u32) -> io::Result<Account> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let groups = nix::unistd::getgrouplist(&c, Gid::from_raw(gid))
            .map_err(io::Error::from)?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(Account { uid, gid, groups })
    }

    /// The identity of the account `uid` in the password database, `None` when it has no
    /// entry (nobody to be).
    pub fn of_uid(uid: u32) -> io::Result<Option<Account>> {
        match nix::unistd::User::from_uid(Uid::from_raw(uid)).map_err(io::Error::from)? {
            Some(u) => Account::lookup(&u.name, uid, u.gid.as_raw()).map(Some),
            None => Ok(None),
        }
    }
}

/// While alive, the calling thread resolves paths, checks permissions and creates files as
/// the account it was entered with (when we are root; otherwise nothing is switched: an
/// unprivileged program has no rights the user lacks). Restored on drop.
#[must_use = "the identity is switched back as soon as the guard is dropped"]
pub struct AsUser {
    /// Root's supplementary groups to restore; `None`: nothing was switched.
    saved: Option<Vec<rustix::thread::Gid>>,
    /// The switch is per-thread: keep the guard on its thread.
    _thread: PhantomData<*const ()>,
}

impl AsUser {
    /// Nothing switched: for work in a directory no user controls (root's own).
    pub fn unchanged() -> AsUser {
        AsUser {
            saved: None,
            _thread: PhantomData,
        }
    }

    /// Takes `account`'s file-system identity if we are root and it is not root; `None` or
    /// an unprivileged caller switch nothing. Fails (having switched nothing) if the kernel
    /// did not take the new identity.
    pub fn enter(account: Option<&Account>) -> io::Result<AsUser> {
        let Some(a) = account else {
            return Ok(AsUser::unchanged());
        };
        if !nix::unistd::geteuid().is_root() || a.uid == 0 {
            return Ok(AsUser::unchanged());
        }
        let saved = rustix::process::getgroups()?;
        let groups: Vec<rustix::thread::Gid> = a
            .groups
            .iter()
            .map(|&g| rustix::thread::Gid::from_raw(g))
            .collect();
        rustix::thread::set_thread_groups(&groups)?;
        let guard = AsUser {
            saved: Some(saved),
            _thread: PhantomData,
        };
        nix::unistd::setfsgid(Gid::from_raw(a.gid));
        nix::unistd::setfsuid(Uid::from_raw(a.uid));
        // Both calls report the previous id, never an error: ask again (an invalid id
        // changes nothing and returns the current one) to confirm the switch.
        let (uid, gid) = (
            nix::unistd::setfsuid(Uid::from_raw(u32::MAX)),
            nix::unistd::setfsgid(Gid::from_raw(u32::MAX)),
        );
        if uid.as_raw() != a.uid || gid.as_raw() != a.gid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "could not take the user's file-system identity",
            ));
        }
        Ok(guard)
    }

    /// Whether the identity was switched.
    pub fn switched(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        let Some(saved) = self.saved.take() else {
            return;
        };
        // Back to the effective ids (root): the file-system capabilities return with fsuid 0.
        nix::unistd::setfsuid(nix::unistd::geteuid());
        nix::unistd::setfsgid(nix::unistd::getegid());
        // Failing here leaves the thread with the user's groups: fewer rights, never more.
        let _ = rustix::thread::set_thread_groups(&saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn nothing_switches_without_an_account() {
        let g = AsUser::enter(None).unwrap();
        assert!(!g.switched());
        assert!(!AsUser::unchanged().switched());
    }

    /// As root: inside the guard a root-only directory (0700, and 0770 through root's group)
    /// is out of reach and created files are the account's; after it, root's rights are back.
    #[test]
    fn root_works_with_the_users_rights_and_gets_its_own_back() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED root_works_with_the_users_rights: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (mine, r700, r770) = (
            d.path().join("mine"),
            d.path().join("r700"),
            d.path().join("r770"),
        );
        for (p, m) in [(&mine, 0o700), (&r700, 0o700), (&r770, 0o770)] {
            fs::create_dir(p).unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        }
        let nobody = Account {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        };
        std::os::unix::fs::chown(&mine, Some(nobody.uid), Some(nobody.gid)).unwrap();
        {
            let g = AsUser::enter(Some(&nobody)).unwrap();
            assert!(g.switched());
            for p in [&r700, &r770] {
                let e = fs::write(p.join("x"), b"x").unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{}", p.display());
            }
            fs::write(mine.join("f"), b"x").unwrap();
        }
        let m = fs::metadata(mine.join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        fs::write(r700.join("x"), b"x").unwrap();
        assert_eq!(nix::unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw(), 0);
    }
}
