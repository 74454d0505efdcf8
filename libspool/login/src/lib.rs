//! The login side of the chain, started as root: `popup` (the AUTHORIZATION state and the
//! checkpassword hand-off, for `pop-popup`) and `auth` (verifying credentials and dropping to
//! the user, for `pop-checkpassword`). This crate cannot name mailbox code: it does not depend
//! on the store. It is the only crate that links libcrypt.

pub mod auth;
pub mod popup;
mod sys;

/// The POP-before-SMTP login pipe a checkpassword program keeps open for the chain after it.
pub use spool_relay::{inherited_fd as relay_fd, RELAY_FD_ENV};
