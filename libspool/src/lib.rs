//! libspool: all of popspool's logic, so that every binary stays a thin main.
//!
//! Reach is kept honest by module: `pop3` (the one POP3 command-line parser and the response
//! writer) and `log` are shared by every program; `popup` (the AUTHORIZATION state and the
//! checkpassword hand-off) and `auth` (verifying credentials, dropping to the user) are the
//! login side that only `pop-popup` and `pop-checkpassword` use; `mailbox`, `canon`, `mbox`,
//! `maildir`, `lock`, `journal` and `session` are the transaction side that only `pop-serve`,
//! `pop-deliver` and `pop-spool` use (`deliver` and `admin` are theirs).
//! `tests/tests/reach.rs` checks that no module of one side names a module of the other.

pub mod admin;
pub mod auth;
pub mod canon;
pub mod deliver;
pub mod error;
pub mod index;
pub mod journal;
pub mod limits;
pub mod lock;
pub mod log;
pub mod mailbox;
pub mod maildir;
pub mod maildir_dirent;
pub mod maildir_index;
pub mod mbox;
pub mod pop3;
pub mod popup;
pub mod session;
pub mod spoolpath;
pub mod timeio;
