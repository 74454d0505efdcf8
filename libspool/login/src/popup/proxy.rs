//! `--proxy-protocol`: the PROXY header a load balancer sends before its client's first
//! byte, read from descriptor 0 before the greeting, and the environment it gives the rest
//! of the chain (the checkpassword program and everything it runs).

#![forbid(unsafe_code)]

use spool_wire::limits::PROXY_HEADER_TIMEOUT;
use spool_wire::proxy::{self, Header, ProxyError};

/// Environment changes: a value to set, or None to remove the variable.
pub type EnvChanges = Vec<(&'static str, Option<String>)>;

/// Reads the header on descriptor 0 within [`PROXY_HEADER_TIMEOUT`], taking exactly its
/// bytes. Returns the header and the environment changes for the chain: with the client's
/// addresses, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP and TCPLOCALPORT set and the variables
/// that would describe the proxy removed; for LOCAL or UNKNOWN, none.
pub fn read_client() -> Result<(Header, EnvChanges), ProxyError> {
    let header = proxy::read_from_fd(0, PROXY_HEADER_TIMEOUT)?;
    let env = header.environment();
    Ok((header, env))
}

/// Applies `changes` to this process's environment, which every program it execs inherits.
/// Call it while the process has one thread.
pub fn apply(changes: &EnvChanges) {
    for (name, value) in changes {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}
