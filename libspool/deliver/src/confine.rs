//! What a confined `pop-deliver` may reach, built from its [`Prepared`] targets (see
//! CONFINEMENT in pop-deliver(8)):
//!
//! - an mbox's directory, to create, lock (`NAME.lock`), append to and truncate back; or, for
//!   a caller other than root whose dotlocks the setgid helper makes (a `root:mail 2775`
//!   spool), the mbox file alone, the helper being run by a lock broker forked before the
//!   restriction ([`spool_store::broker`]);
//! - a Maildir (its parent when it does not exist yet, to create it);
//! - each mbox's state directory, where `pop-serve`'s journal is replayed;
//! - nothing else: no exec, no TCP, no other file. The temporary file was opened before.
//!
//! As root, every directory granted is opened without following a symlink (the spool's hash
//! directories from the spool, a state directory from `/`, an explicit target through its
//! pinned directory), so a user who controls a component of a name cannot point the grant
//! elsewhere; a directory reached only through a symlink is not granted.

use super::{parent_of, DeliverOptions, Identity, Plan, Prepared};
use spool_store::mailbox::MailboxSpec;
use spool_wire::sandbox::{self, BitFlags, Fs, Sandbox};
use std::path::{Path, PathBuf};

/// Rights in an mbox's directory: create the mailbox (a private name linked into place),
/// make and remove the dotlock, read, append to and truncate the mailbox, fsync the directory.
pub fn mbox_dir_rights() -> BitFlags<Fs> {
    Fs::ReadDir | Fs::ReadFile | Fs::WriteFile | Fs::Truncate | Fs::MakeReg | Fs::RemoveFile
}

/// Rights in a Maildir: make its folders, write in `tmp/`, link into `new/`, remove from
/// `tmp/`.
pub fn maildir_rights() -> BitFlags<Fs> {
    sandbox::tree_rw() | Fs::MakeDir
}

/// The ruleset of a delivery, and the mailboxes whose dotlocks a lock broker must take.
#[derive(Debug)]
pub struct Confinement {
    pub sandbox: Sandbox,
    /// Mailboxes (as named) for which a broker must be started before the restriction.
    pub brokers: Vec<PathBuf>,
}

/// Builds the ruleset for `prepared`.
pub fn confinement(prepared: &[Prepared], opts: &DeliverOptions) -> Confinement {
    let me = Identity::current();
    let helper = opts.dotlock_helper.as_deref();
    let mut c = Confinement {
        sandbox: Sandbox::new(),
        brokers: Vec::new(),
    };
    for p in prepared {
        let Ok(plan) = &p.plan else { continue };
        match plan {
            Plan::Spool {
                path, state_dir, ..
            } => {
                let dir = parent_of(path);
                if me.is_root() {
                    // The spool is root's; the hash directories below it are opened without
                    // following a symlink (group mail may write the spool).
                    let (base, rel) = match dir.strip_prefix(&opts.spool_dir) {
                        Ok(rel) => (opts.spool_dir.as_path(), rel),
                        Err(_) => (dir, Path::new("")),
                    };
                    grant_dir(&mut c, base, rel, mbox_dir_rights());
                    grant_state(&mut c, state_dir, true);
                } else {
                    mbox_as_user(&mut c, path, helper);
                    grant_state(&mut c, state_dir, false);
                }
            }
            Plan::Explicit { spec, pinned, .. } => {
                match (spec, pinned) {
                    (MailboxSpec::Mbox(_), Some(p)) => {
                        if let Ok(fd) = p.dir().as_fd().try_clone_to_owned() {
                            c.sandbox =
                                std::mem::take(&mut c.sandbox).allow_fd(fd, mbox_dir_rights());
                        }
                    }
                    (MailboxSpec::Maildir(path), Some(p)) => {
                        let name = path
                            .file_name()
                            .map(|n| n.as_encoded_bytes())
                            .unwrap_or(b"");
                        let fd = match p.dir().open_dir(name) {
                            Ok(spool_store::maildir::dirent::Opened::Dir(d)) => {
                                d.as_fd().try_clone_to_owned()
                            }
                            _ => p.dir().as_fd().try_clone_to_owned(),
                        };
                        if let Ok(fd) = fd {
                            c.sandbox =
                                std::mem::take(&mut c.sandbox).allow_fd(fd, maildir_rights());
                        }
                    }
                    (MailboxSpec::Mbox(path), None) => mbox_as_user(&mut c, path, helper),
                    (MailboxSpec::Maildir(path), None) => {
                        let at = if path.is_dir() {
                            path.as_path()
                        } else {
                            parent_of(path)
                        };
                        add(&mut c, at, maildir_rights());
                    }
                }
                if let (MailboxSpec::Mbox(_), Some(dir)) = (spec, super::explicit_state_dir(opts)) {
                    grant_state(&mut c, &dir, me.is_root());
                }
            }
        }
    }
    c
}

fn add(c: &mut Confinement, path: &Path, rights: BitFlags<Fs>) {
    c.sandbox = std::mem::take(&mut c.sandbox).allow(path, rights);
}

/// Grants `rights` on `base/rel`, opened without following a symlink.
fn grant_dir(c: &mut Confinement, base: &Path, rel: &Path, rights: BitFlags<Fs>) {
    if let Some(d) = spool_store::maildir::dirent::open_dir_nofollow(base, rel) {
        if let Ok(fd) = d.as_fd().try_clone_to_owned() {
            c.sandbox = std::mem::take(&mut c.sandbox).allow_fd(fd, rights);
        }
    }
}

/// The state directory where the mbox's journal is replayed.
fn grant_state(c: &mut Confinement, dir: &Path, as_root: bool) {
    if as_root {
        let base = if dir.is_absolute() { "/" } else { "." };
        grant_dir(c, Path::new(base), dir, sandbox::tree_rw());
    } else {
        add(c, dir, sandbox::tree_rw());
    }
}

/// An mbox delivered to by a caller other than root: its directory when the caller may
/// create the dotlock there, else the file alone and a broker for the helper.
fn mbox_as_user(c: &mut Confinement, path: &Path, helper: Option<&Path>) {
    let dir = parent_of(path);
    let writable = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok();
    match helper {
        Some(_) if !writable => {
            add(c, path, sandbox::file_rw());
            c.brokers.push(path.to_path_buf());
        }
        _ => add(c, dir, mbox_dir_rights()),
    }
}
