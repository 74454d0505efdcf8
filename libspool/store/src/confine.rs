//! What a session process (`pop-serve`) may reach once it is confined: its own mailbox, its
//! state directory, nothing else; no exec, no TCP, no signals or abstract sockets beyond
//! itself. Enforced with `no_new_privs`, `RLIMIT_NOFILE` and Landlock through
//! [`spool_wire::sandbox`], best effort over every Landlock ABI up to the running kernel's.
//!
//! Landlock rules are per thread and inherited only by threads started later: [`confine`]
//! must run while the process has one thread, and before the mailbox is opened.

use spool_wire::sandbox::{self, BitFlags, Fs, Sandbox};
pub use spool_wire::sandbox::{kernel_abi, max_open_files, no_new_privs, Enforced, Status};
use std::path::{Path, PathBuf};

/// The mailbox a session may reach.
#[derive(Debug, Clone)]
pub enum Reach {
    /// An mbox file; `dotlock_dir`: the session creates and removes `PATH.lock` itself (its
    /// directory is writable to it), so it may create, read and remove files there.
    Mbox { path: PathBuf, dotlock_dir: bool },
    /// A Maildir tree: read, write, rename between its subdirectories, remove.
    Maildir(PathBuf),
}

/// Rights in an mbox's directory when the session makes its own dotlocks there.
fn dotlock_dir_rights() -> BitFlags<Fs> {
    Fs::ReadDir | Fs::ReadFile | Fs::WriteFile | Fs::MakeReg | Fs::RemoveFile
}

/// The ruleset of a session: `mailbox` and `state_dir`, nothing else.
pub fn sandbox(mailbox: &Reach, state_dir: &Path) -> Sandbox {
    let s = Sandbox::new().allow(state_dir, sandbox::tree_rw());
    match mailbox {
        Reach::Mbox { path, dotlock_dir } => {
            let s = s.allow(path, sandbox::file_rw());
            match path.parent() {
                Some(dir) if *dotlock_dir => {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    s.allow(dir, dotlock_dir_rights())
                }
                _ => s,
            }
        }
        Reach::Maildir(path) => s.allow(path, sandbox::tree_rw()),
    }
}

/// Restricts this thread (and every thread it starts later) to `mailbox` and `state_dir`
/// (see [`Sandbox::restrict`]). Also sets `no_new_privs`; an error only when that fails.
pub fn confine(mailbox: &Reach, state_dir: &Path) -> Result<Status, String> {
    sandbox(mailbox, state_dir)
        .restrict()
        .map_err(|e| format!("no_new_privs: {e}"))
}
