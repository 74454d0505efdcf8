//! Shared helpers for the integration tests (the tests themselves are in tests/tests/):
//! locating the built binaries, a deterministic mailbox generator that knows the exact bytes a
//! POP3 client must receive for every message, and a small POP3 client for scripted sessions.

pub mod gen;
pub mod hooks;
pub mod listen;
pub mod pop;
pub mod tlsca;

use std::path::PathBuf;

/// A built binary of the workspace (`cargo build --workspace` must have run, as the README's
/// test command does).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// True when the tests run as root (CI does); tests that need it say why when skipped.
pub fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// Common pop-serve arguments for tests: logs off, state in `state`, root allowed when root.
pub fn serve_args(state: &std::path::Path) -> Vec<String> {
    let mut v = vec![
        "--log".to_string(),
        "none".to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
        "--no-dotlock-helper".to_string(),
    ];
    if is_root() {
        v.push("--allow-root".into());
    }
    v
}

/// Looks for a program on PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

/// Says why a test is skipped, in a form CI logs show.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// A TCP connection to `to` from `source`, a loopback address of the test's choosing (any of
/// 127.0.0.0/8 works on Linux), so a server's log can be checked for the client's address.
pub fn connect_from(
    source: std::net::Ipv4Addr,
    to: std::net::SocketAddrV4,
) -> nix::Result<std::net::TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
    )?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(std::net::TcpStream::from(fd))
}
