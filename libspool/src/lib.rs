//! libspool: all of popspool's logic, so that every binary stays a thin main.
//!
//! Reach is kept honest by module: `pop3` (the one POP3 command-line parser and the response
//! writer) is shared by every program; `mailbox`, `mbox`, `maildir`, `lock`, `journal` and
//! `session` are the transaction side that only `pop-serve`, `pop-deliver` and `pop-spool` use.

pub mod canon;
pub mod error;
pub mod journal;
pub mod limits;
pub mod lock;
pub mod log;
pub mod mailbox;
pub mod maildir;
pub mod mbox;
pub mod pop3;
pub mod session;
pub mod spoolpath;
pub mod timeio;
