//! The lock broker: a small child forked by `pop-serve` before it confines itself, which runs
//! the setgid dotlock helper (`pop-dotlock`) on its behalf.
//!
//! Why: a confined `pop-serve` has `no_new_privs` set, so exec of the setgid helper would no
//! longer gain group `mail`, and Landlock forbids it any exec at all. The broker is forked
//! before either restriction and keeps the power to run the helper, and nothing else:
//!
//! - the helper's path and the mailbox path are fixed at fork time; the only input is a
//!   `SOCK_SEQPACKET` socket on which each message must be exactly one byte, [`REQ_LOCK`] or
//!   [`REQ_UNLOCK`]; anything else ends the broker;
//! - it closes every descriptor but that socket and stderr (0 and 1 become `/dev/null`), so it
//!   holds neither the mailbox nor the client's connection;
//! - it ends when the socket reaches end-of-file, i.e. when `pop-serve` ends (the parent's end
//!   is close-on-exec and never handed on);
//! - the reply is the helper's exit status (one byte) and the first line of its stderr.
//!
//! An attacker in control of a confined `pop-serve` can therefore only make the helper lock or
//! unlock the user's own mailbox, which the user could do without the broker by running
//! `pop-dotlock` itself; the helper re-checks every request (absolute path, a regular file the
//! real uid owns, a spool-valid name). On unlock the broker first checks that the dotlock still
//! holds its own pid (the helper writes its parent's, the broker's, pid into it), so a dotlock
//! somebody broke and re-created is never removed.

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::unistd::{fork, ForkResult};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The request byte for `pop-dotlock lock MAILBOX`.
pub const REQ_LOCK: u8 = b'L';

/// The request byte for `pop-dotlock unlock MAILBOX`.
pub const REQ_UNLOCK: u8 = b'U';

/// Longest reply: the status byte and at most this much of the helper's first stderr line.
const MAX_REPLY_TEXT: usize = 400;

/// The reply status byte when the helper did not exit normally (or could not be run).
const STATUS_ABNORMAL: u8 = 255;

struct Broker {
    sock: OwnedFd,
    pid: u32,
    helper: PathBuf,
    mailbox: PathBuf,
}

/// One broker per mailbox (`pop-serve` has one mailbox, `pop-deliver` may have several).
static BROKERS: Mutex<Vec<Broker>> = Mutex::new(Vec::new());

/// Forks the broker for `helper` on `mailbox` (made absolute here, as the lock code does).
/// Returns the broker's pid. A process may start one per mailbox; each broker holds only its
/// own socket (the others' are closed in it).
///
/// Must be called while the process has a single thread, and before it opens the mailbox.
pub fn start(helper: &Path, mailbox: &Path) -> io::Result<u32> {
    let mailbox = std::path::absolute(mailbox)?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: the caller guarantees a single thread, so the child is a full copy of a
    // consistent process; it runs only `serve` and leaves with `_exit`.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ours);
            serve(theirs, helper, &mailbox);
            // SAFETY: ends the child without running the parent's exit handlers or flushing
            // buffers that belong to the parent.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let pid = child.as_raw() as u32;
            let mut b = BROKERS.lock().unwrap_or_else(|e| e.into_inner());
            b.push(Broker {
                sock: ours,
                pid,
                helper: helper.to_path_buf(),
                mailbox,
            });
            Ok(pid)
        }
    }
}

/// The pid of the broker started for `mailbox` (the pid the helper writes into the dotlocks
/// it makes for us), when one was.
pub fn pid_for(mailbox: &Path) -> Option<u32> {
    let mailbox = std::path::absolute(mailbox).ok()?;
    BROKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|b| b.mailbox == mailbox)
        .map(|b| b.pid)
}

/// Runs `helper verb mailbox` through the broker. `None` when no broker was started (the
/// caller runs the helper itself); an error when the request is not the one the broker was
/// started for or the broker is gone. Otherwise the helper's exit status (-1: not a normal
/// exit) and the first line of its stderr.
pub fn request(helper: &Path, verb: &str, mailbox: &Path) -> Option<io::Result<(i32, String)>> {
    let guard = BROKERS.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_empty() {
        return None;
    }
    let abs = match std::path::absolute(mailbox) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    Some(match guard.iter().find(|b| b.mailbox == abs) {
        Some(b) => ask(b, helper, verb),
        None => Err(io::Error::other(format!(
            "no lock broker serves {}",
            abs.display()
        ))),
    })
}

fn ask(b: &Broker, helper: &Path, verb: &str) -> io::Result<(i32, String)> {
    let req = match verb {
        "lock" => REQ_LOCK,
        "unlock" => REQ_UNLOCK,
        _ => return Err(io::Error::other(format!("no such helper request {verb}"))),
    };
    if helper != b.helper {
        return Err(io::Error::other(format!(
            "the lock broker serves only {} for {}",
            b.helper.display(),
            b.mailbox.display()
        )));
    }
    let fd = b.sock.as_raw_fd();
    loop {
        match send(fd, &[req], MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::other(format!("lock broker: {e}"))),
        }
    }
    let mut buf = [0u8; 1 + MAX_REPLY_TEXT + 1];
    let n = loop {
        match recv(fd, &mut buf, MsgFlags::empty()) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::other(format!("lock broker: {e}"))),
        }
    };
    if n == 0 {
        return Err(io::Error::other("lock broker: ended"));
    }
    let status = match buf[0] {
        STATUS_ABNORMAL => -1,
        c => i32::from(c),
    };
    let text = String::from_utf8_lossy(&buf[1..n.min(1 + MAX_REPLY_TEXT)]).into_owned();
    Ok((status, text))
}

/// The child's whole life. Returns when the socket ends or a request is malformed.
fn serve(sock: OwnedFd, helper: &Path, mailbox: &Path) {
    let fd = sock.as_raw_fd();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    // Everything from 3 up but the socket: the parent's inherited descriptors and the
    // /dev/null just opened. Nothing else in this process owns a descriptor there.
    spool_wire::fds::close_inherited_except(spool_wire::fds::FIRST_INHERITED, &[fd]);
    let mut req = [0u8; 2];
    loop {
        let n = match recv(fd, &mut req, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        let reply = match (n, req[0]) {
            (1, REQ_LOCK) => run(helper, "lock", mailbox),
            (1, REQ_UNLOCK) if !still_ours(mailbox) => vec![0],
            (1, REQ_UNLOCK) => run(helper, "unlock", mailbox),
            _ => return,
        };
        if send(fd, &reply, MsgFlags::MSG_NOSIGNAL).is_err() {
            return;
        }
    }
}

/// Whether `MAILBOX.lock` holds this process's pid, as the helper writes it for us.
fn still_ours(mailbox: &Path) -> bool {
    let mut name = mailbox.as_os_str().to_os_string();
    name.push(crate::lock::DOTLOCK_SUFFIX);
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
    else {
        return false;
    };
    let want = format!("{}\n", std::process::id());
    let mut got = Vec::with_capacity(want.len() + 1);
    if f.take(want.len() as u64 + 1).read_to_end(&mut got).is_err() {
        return false;
    }
    got == want.as_bytes()
}

/// `helper verb mailbox` with an empty environment: the reply to send.
fn run(helper: &Path, verb: &str, mailbox: &Path) -> Vec<u8> {
    let out = Command::new(helper)
        .arg(verb)
        .arg(mailbox)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let (status, text) = match out {
        Ok(o) => {
            let status = match o.status.code() {
                Some(c) if (0..i32::from(STATUS_ABNORMAL)).contains(&c) => c as u8,
                _ => STATUS_ABNORMAL,
            };
            let msg = String::from_utf8_lossy(&o.stderr);
            (status, msg.lines().next().unwrap_or("").trim().to_string())
        }
        Err(e) => (STATUS_ABNORMAL, format!("cannot run the helper: {e}")),
    };
    let mut reply = vec![status];
    let mut bytes = text.into_bytes();
    bytes.truncate(MAX_REPLY_TEXT);
    reply.extend_from_slice(&bytes);
    reply
}
