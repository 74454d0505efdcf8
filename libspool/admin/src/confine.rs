//! What a confined `pop-spool` may reach: the trees its subcommand names, and the state
//! directories of the users it works for (see CONFINEMENT in pop-spool(8)). Every lookup is
//! done first ([`super::prefetch`]); the ruleset is then applied before any mailbox is
//! opened.

use super::{is_root, PwUser, StateDirs, STATE_SUBDIR};
use spool_store::maildir::dirent::open_dir_nofollow;
use spool_wire::sandbox::{self, BitFlags, Fs, Sandbox};
use std::path::{Path, PathBuf};

/// How a subcommand uses a tree it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// List and read (stats, check without --fix, a dry run).
    Read,
    /// Read, write, create files and directories, rename across directories, remove.
    Write,
}

/// The rights for `u`.
pub fn rights(u: Use) -> BitFlags<Fs> {
    match u {
        Use::Read => sandbox::read(),
        Use::Write => sandbox::tree_rw() | Fs::MakeDir,
    }
}

/// The ruleset: each of `trees`, and with `state` each user's state directory (`users`:
/// those looked up). As root a user's state directory is opened from `/` without following
/// a symlink; one that does not exist yet is reached through the user's home, opened alike,
/// where it is created.
pub fn sandbox(
    trees: &[(PathBuf, Use)],
    state: Option<(&StateDirs, Use)>,
    users: &[PwUser],
) -> Sandbox {
    let mut s = Sandbox::new();
    for (t, u) in trees {
        s = s.allow(t, rights(*u));
    }
    let Some((dirs, u)) = state else {
        return s;
    };
    match dirs {
        StateDirs::Fixed(d) => {
            if d.is_dir() {
                s = s.allow(d, rights(u));
            } else if let Some(p) = d.parent() {
                s = s.allow(p, rights(Use::Write));
            }
        }
        StateDirs::Home => {
            for pw in users {
                if !pw.home.is_absolute() || pw.home == Path::new("/") {
                    continue;
                }
                let state = pw.home.join(STATE_SUBDIR);
                if !is_root() {
                    s = s.allow(if state.is_dir() { &state } else { &pw.home }, rights(u));
                    continue;
                }
                let held = open_dir_nofollow(Path::new("/"), &state)
                    .map(|d| (d, u))
                    .or_else(|| {
                        open_dir_nofollow(Path::new("/"), &pw.home).map(|d| (d, Use::Write))
                    });
                if let Some((d, u)) = held {
                    if let Ok(fd) = d.as_fd().try_clone_to_owned() {
                        s = s.allow_fd(fd, rights(u));
                    }
                }
            }
        }
    }
    s
}
