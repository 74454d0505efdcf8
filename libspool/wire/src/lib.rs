//! What every popspool program shares, and nothing more: the POP3 wire (`pop3`: the one
//! command-line parser, the command tables and CAPA, the response writer), the toolkit's
//! named `limits`, the session `log`, `timeio` (deadlines on the client's descriptors), `sock`
//! (TCP keepalive on them), `proxy` (the PROXY protocol header a load balancer sends first),
//! `fds` (closing inherited descriptors, first thing in every program), `sandbox`
//! (no_new_privs, limits and Landlock, one mechanism for every program), `start` (the login
//! chain's lean entry point) and `cli` (clap's help, version and usage errors for every main).
//! Both sides of the chain build on this crate; it knows neither passwords nor mailboxes.
pub mod cli;
pub mod fds;
pub mod limits;
pub mod log;
pub mod pop3;
pub mod proxy;
pub mod sandbox;
pub mod sock;
pub mod start;
#[cfg(debug_assertions)]
pub mod testhooks;
pub mod timeio;
