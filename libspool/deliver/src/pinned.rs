//! An explicit target (`mbox:PATH`, `maildir:PATH`) delivered to by root: the one rule for
//! both formats, so that no user who controls a directory on PATH can steer root.
//!
//! 1. PATH is resolved by us, one component at a time, from `/` (or from the working
//!    directory for a relative PATH), each directory opened `O_DIRECTORY|O_NOFOLLOW` relative
//!    to the one before: a symbolic link anywhere in PATH is refused
//!    ([`DeliverError::NotPermitted`], exit 77, qmail 100), never followed.
//! 2. The directory that holds the mailbox (the mbox's directory, the Maildir's parent) stays
//!    open, and the delivery names the mailbox as `/proc/self/fd/N/NAME` ([`PROC_SELF_FD`]),
//!    which the kernel resolves straight to that open directory: renaming or swapping any
//!    component of PATH afterwards redirects nothing, the dotlock beside an mbox included.
//! 3. When that directory belongs to a user (not root), the whole delivery runs with that
//!    user's file-system identity ([`AsUser`](spool_store::userfs::AsUser)) and the user's rules:
//!    what is created (the mbox, the Maildir and its folders, the messages, the dotlock)
//!    belongs to the user, an existing mailbox must be the user's, and nothing is done the user
//!    could not do.
//!
//! The hashed spool (`pop-deliver USER`, root's own directories) and a caller other than root
//! (who has no rights to be steered into) are not concerned.

#![forbid(unsafe_code)]

use super::DeliverError;
use spool_store::maildir::dirent::{Dir, Opened};
use spool_store::userfs::Account;
use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Where the kernel lists this process's descriptors; `DIR/N/NAME` is `NAME` in the open
/// directory `N`, whatever became of the path it was opened by.
pub const PROC_SELF_FD: &str = "/proc/self/fd";

/// The directory holding an explicit mailbox, reached without following a symlink and kept
/// open for the whole delivery.
#[derive(Debug)]
pub struct Pinned {
    /// Kept open: `at` names the mailbox through it.
    _holder: Dir,
    /// `/proc/self/fd/N/NAME`: the mailbox in the held directory.
    pub at: PathBuf,
    /// The holder's owner, whose identity the delivery takes; `None` when that is root.
    pub account: Option<Account>,
}

impl Pinned {
    /// The held directory (the mbox's directory, the Maildir's parent).
    pub fn dir(&self) -> &Dir {
        &self._holder
    }
}

/// Resolves `path` as the module describes and pins the directory holding its last component.
pub fn pin(path: &Path) -> Result<Pinned, DeliverError> {
    let mut comps: Vec<Component<'_>> = path.components().collect();
    let name: OsString = match comps.pop() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => return Err(DeliverError::NotAMailbox(path.into())),
    };
    let start = if path.is_absolute() { "/" } else { "." };
    let mut walked = PathBuf::from(start);
    let mut dir = opened(Dir::open(Path::new(start)), &walked, path)?;
    for c in comps {
        let step: &[u8] = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir => b"..",
            Component::Normal(n) => n.as_bytes(),
            Component::Prefix(_) => return Err(DeliverError::NotAMailbox(path.into())),
        };
        walked.push(c);
        dir = opened(dir.open_dir(step), &walked, path)?;
    }
    let st = dir
        .stat()
        .map_err(|e| DeliverError::Io("stat the mailbox's directory", e))?;
    let at = Path::new(PROC_SELF_FD)
        .join(dir.as_fd().as_raw_fd().to_string())
        .join(&name);
    // Without /proc the name would not lead to the held directory: say so, do not guess.
    match std::fs::metadata(at.parent().unwrap_or(&at)) {
        Ok(m) if m.dev() == st.st_dev && m.ino() == st.st_ino => {}
        Ok(_) => {
            return Err(DeliverError::Io(
                "reach the mailbox's directory",
                io::Error::other(format!("{PROC_SELF_FD} does not show our descriptors")),
            ))
        }
        Err(e) => {
            return Err(DeliverError::Io(
                "reach the mailbox's directory",
                io::Error::new(e.kind(), format!("{PROC_SELF_FD} (is /proc mounted?): {e}")),
            ))
        }
    }
    let account = match st.st_uid {
        0 => None,
        uid => Some(
            Account::of_uid(uid)
                .map_err(|e| DeliverError::Io("look up the directory's owner", e))?
                // A uid without an account: its own uid, the directory's group, no others.
                .unwrap_or(Account {
                    uid,
                    gid: st.st_gid,
                    groups: Vec::new(),
                }),
        ),
    };
    Ok(Pinned {
        _holder: dir,
        at,
        account,
    })
}

/// One step of the walk: a directory, or why `target` cannot be reached through `walked`.
fn opened(r: io::Result<Opened>, walked: &Path, target: &Path) -> Result<Dir, DeliverError> {
    match r {
        Ok(Opened::Dir(d)) => Ok(d),
        Ok(Opened::Symlink) => Err(DeliverError::NotPermitted(
            target.into(),
            format!(
                "{} is a symbolic link (never followed when delivering as root)",
                walked.display()
            ),
        )),
        Ok(Opened::NotADir) => Err(DeliverError::NotAMailbox(target.into())),
        // Mail waits while the directory is missing, as for a mailbox we may not create.
        Ok(Opened::Missing) => Err(DeliverError::CannotCreate(
            walked.into(),
            io::Error::from(ErrorKind::NotFound),
        )),
        // A directory again when we looked: a symlink (or a file) when the kernel refused
        // to follow it. Somebody is swapping it; what we were to go through was not ours to.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            Err(DeliverError::NotPermitted(
                target.into(),
                format!(
                    "{} was a symbolic link or not a directory when opened, a directory just \
                     after (replaced meanwhile; never followed)",
                    walked.display()
                ),
            ))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Err(
            DeliverError::NotPermitted(target.into(), format!("{}: {e}", walked.display())),
        ),
        Err(e) => Err(DeliverError::Io("open a directory of the mailbox path", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_anywhere_is_refused_and_a_real_path_pinned() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        let p = pin(&d.path().join("real/sub/box")).unwrap();
        assert!(p.at.starts_with(PROC_SELF_FD) && p.at.ends_with("box"));
        std::fs::write(&p.at, b"x").unwrap();
        assert!(real.join("sub/box").exists());
        let e = pin(&d.path().join("link/sub/box")).unwrap_err();
        assert!(
            matches!(&e, DeliverError::NotPermitted(_, why) if why.contains("symbolic link")),
            "{e}"
        );
        assert!(matches!(
            pin(&d.path().join("nope/box")).unwrap_err(),
            DeliverError::CannotCreate(..)
        ));
        assert!(matches!(
            pin(Path::new("/")).unwrap_err(),
            DeliverError::NotAMailbox(_)
        ));
    }
}
