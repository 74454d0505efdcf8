//! `pop-popup` in two processes. The *dialogue* child talks to the client (greeting, CAPA,
//! USER/PASS, APOP, AUTH PLAIN, STLS) confined: an unprivileged uid and gid, no capability in
//! any set (Bounding included where CAP_SETPCAP allows), no_new_privs, Landlock with nothing granted,
//! `RLIMIT_NOFILE` [`DIALOGUE_MAX_OPEN_FILES`]. The parent keeps [`super::privs::KEPT`] for
//! the checkpassword program and reads nothing from the network: it serves the child's
//! requests on a `SOCK_SEQPACKET` socket pair, one per login attempt, each carrying the
//! user, the secret, the timestamp, the environment changes the child wants the chain to
//! see (the TLS facts after STLS), and the child's descriptors 0 and 1 as they are now
//! (`SCM_RIGHTS`; after STLS they are the front's pipes). The parent puts those on its own 0
//! and 1, runs the checkpassword program with fd 3 ([`super::ExecChecker`]), and answers
//! with how it ended. The child never reads past a command line and reads nothing while a
//! check runs, so every byte the client sent after the credentials is left to the chain.
//!
//! Both messages are bounded ([`MAX_REQUEST`], [`MAX_REPLY`]) and parsed in one place each
//! ([`Request::decode`], [`decode_reply`]); the parent accepts only environment names with a
//! prefix in [`CHAIN_ENV_PREFIXES`] and only its own timestamp.

#![forbid(unsafe_code)]

use super::handoff::{CheckStatus, Checker, MAX_CHECKPASSWORD_INPUT};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use zeroize::Zeroizing;

/// The dialogue's `RLIMIT_NOFILE`: stdio, the socket to the parent, the log socket and the
/// TLS front's descriptors, with room to spare (it opens nothing).
pub const DIALOGUE_MAX_OPEN_FILES: u64 = 16;

/// Longest request: the fd-3 payload plus the environment changes (the TLS facts a front
/// returns are at most [`super::starttls::MAX_TLS_INFO`]) and the framing.
pub const MAX_REQUEST: usize = MAX_CHECKPASSWORD_INPUT + super::starttls::MAX_TLS_INFO + 4096;

/// Longest reply.
pub const MAX_REPLY: usize = 1024;

/// Most environment changes in one request.
pub const MAX_ENV_CHANGES: usize = 256;

/// Environment names the dialogue may set for the chain: TLS facts (`SSL_`) and connection
/// facts (`TCP`, `REMOTE_`), the names pop-checkpassword passes on. Anything else (`PATH`,
/// `LD_PRELOAD`, ...) is ignored and logged.
pub const CHAIN_ENV_PREFIXES: &[&str] = &["SSL_", "TCP", "REMOTE_"];

/// Whether `name` may be set by the dialogue: an allowed prefix, then only `A-Z 0-9 _`, at
/// most 64 bytes.
pub fn env_name_allowed(name: &[u8]) -> bool {
    name.len() <= 64
        && CHAIN_ENV_PREFIXES
            .iter()
            .any(|p| name.starts_with(p.as_bytes()))
        && name
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// One login attempt, child to parent.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `user\0secret\0timestamp\0`, as the checkpassword program gets it.
    pub payload: Zeroizing<Vec<u8>>,
    /// Variables to set before the checkpassword program runs.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
}

fn put(out: &mut Vec<u8>, field: &[u8]) -> Result<(), String> {
    let n = u32::try_from(field.len()).map_err(|_| "field too long")?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn field(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

impl Request {
    /// `payload` (u32 length, bytes), the number of changes (u32), each name and value (u32
    /// length, bytes); at most [`MAX_REQUEST`] bytes.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_REQUEST));
        put(&mut out, &self.payload)?;
        if self.env.len() > MAX_ENV_CHANGES {
            return Err("too many environment changes".into());
        }
        out.extend_from_slice(&(self.env.len() as u32).to_be_bytes());
        for (k, v) in &self.env {
            put(&mut out, k)?;
            put(&mut out, v)?;
        }
        if out.len() > MAX_REQUEST {
            return Err(format!("request of {} bytes is too long", out.len()));
        }
        Ok(out)
    }

    /// The only parser of the dialogue's requests: every length checked, the payload three
    /// NUL-terminated fields within [`MAX_CHECKPASSWORD_INPUT`], no trailing bytes.
    pub fn decode(msg: &[u8]) -> Result<Request, String> {
        if msg.len() > MAX_REQUEST {
            return Err("request too long".into());
        }
        let mut c = Cursor(msg);
        let payload = Zeroizing::new(c.field()?.to_vec());
        if payload.len() > MAX_CHECKPASSWORD_INPUT
            || payload.iter().filter(|&&b| b == 0).count() != 3
            || payload.last() != Some(&0)
        {
            return Err("malformed credentials".into());
        }
        let n = c.u32()? as usize;
        if n > MAX_ENV_CHANGES {
            return Err("too many environment changes".into());
        }
        let mut env = Vec::with_capacity(n);
        for _ in 0..n {
            let k = c.field()?.to_vec();
            let v = c.field()?.to_vec();
            if k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0) {
                return Err("malformed environment change".into());
            }
            env.push((k, v));
        }
        if !c.0.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(Request { payload, env })
    }

    /// The timestamp field of the payload.
    pub fn timestamp(&self) -> &[u8] {
        let mut parts = self.payload.split(|&b| b == 0);
        parts.nth(2).unwrap_or_default()
    }
}

/// The parent's answer: how the checkpassword program ended.
pub fn encode_reply(s: &CheckStatus) -> Vec<u8> {
    let (kind, n, text): (u8, i32, &str) = match s {
        CheckStatus::Served => (0, 0, ""),
        CheckStatus::Rejected => (1, 0, ""),
        CheckStatus::Misuse => (2, 0, ""),
        CheckStatus::TempFail(c) => (3, *c, ""),
        CheckStatus::Crashed(sig) => (4, *sig, ""),
        CheckStatus::SpawnFailed(e) => (5, 0, e),
    };
    let text = &text.as_bytes()[..text.len().min(MAX_REPLY - 9)];
    let mut out = vec![kind];
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text);
    out
}

/// The only parser of the parent's replies.
pub fn decode_reply(msg: &[u8]) -> Result<CheckStatus, String> {
    if msg.len() > MAX_REPLY {
        return Err("reply too long".into());
    }
    let mut c = Cursor(msg);
    let kind = c.take(1)?[0];
    let n = c.u32()? as i32;
    let text = String::from_utf8_lossy(c.field()?).into_owned();
    if !c.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(match kind {
        0 => CheckStatus::Served,
        1 => CheckStatus::Rejected,
        2 => CheckStatus::Misuse,
        3 => CheckStatus::TempFail(n),
        4 => CheckStatus::Crashed(n),
        5 => CheckStatus::SpawnFailed(text),
        k => return Err(format!("unknown reply kind {k}")),
    })
}

/// The socket pair: `(parent's end, dialogue's end)`, both close-on-exec.
pub fn channel() -> std::io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(Into::into)
}

/// The dialogue's [`Checker`]: asks the parent. The environment at creation is the baseline;
/// each request carries what changed since (STLS sets the TLS facts).
pub struct ParentChecker {
    sock: OwnedFd,
    baseline: BTreeMap<OsString, OsString>,
}

impl ParentChecker {
    pub fn new(sock: OwnedFd) -> ParentChecker {
        ParentChecker {
            sock,
            baseline: std::env::vars_os().collect(),
        }
    }

    fn changes(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::env::vars_os()
            .filter(|(k, v)| self.baseline.get(k) != Some(v))
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect()
    }

    fn ask(&mut self, payload: &[u8]) -> Result<CheckStatus, String> {
        let req = Request {
            payload: Zeroizing::new(payload.to_vec()),
            env: self.changes(),
        };
        let msg = req.encode()?;
        // Debug builds only: a malformed request, as a subverted dialogue might send.
        #[cfg(debug_assertions)]
        let msg = if std::env::var_os("POPSPOOL_TEST_BAD_REQUEST").is_some() {
            Zeroizing::new(b"not a request".to_vec())
        } else {
            msg
        };
        let fds = [0, 1];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(&msg)];
        loop {
            match sendmsg::<()>(self.sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("sending the request: {e}")),
            }
        }
        drop(msg);
        let mut buf = [0u8; MAX_REPLY + 1];
        let n = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(self.sock.as_raw_fd(), &mut iov, None, MsgFlags::empty()) {
                Ok(r) => break r.bytes,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("reading the reply: {e}")),
            }
        };
        if n == 0 {
            return Err("the parent closed the channel".into());
        }
        decode_reply(&buf[..n])
    }
}

impl Checker for ParentChecker {
    fn check(&mut self, payload: &[u8]) -> CheckStatus {
        match self.ask(payload) {
            Ok(s) => s,
            Err(e) => CheckStatus::SpawnFailed(e),
        }
    }
}

/// One request as the parent receives it: the decoded message and the two descriptors.
pub struct Received {
    pub request: Request,
    pub fds: [OwnedFd; 2],
}

/// Receives the next request; `Ok(None)` when the dialogue has closed its end (it ended).
/// Anything but one well-formed message with exactly two descriptors is an error.
pub fn receive(sock: &OwnedFd) -> Result<Option<Received>, String> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_REQUEST + 1]);
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (n, flags, mut fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(r) => {
                let mut fds: Vec<OwnedFd> = Vec::new();
                for c in r.cmsgs().map_err(|e| format!("control messages: {e}"))? {
                    if let ControlMessageOwned::ScmRights(v) = c {
                        fds.extend(v.into_iter().map(crate::sys::own_received));
                    }
                }
                break (r.bytes, r.flags, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("reading a request: {e}")),
        }
    };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) || n > MAX_REQUEST {
        return Err("request too long".into());
    }
    if fds.len() != 2 {
        return Err(format!("{} descriptors with the request, not 2", fds.len()));
    }
    let request = Request::decode(&buf[..n])?;
    let b = fds.pop().expect("two");
    let a = fds.pop().expect("two");
    Ok(Some(Received {
        request,
        fds: [a, b],
    }))
}

/// Sends the reply.
pub fn reply(sock: &OwnedFd, s: &CheckStatus) -> Result<(), String> {
    let msg = encode_reply(s);
    loop {
        match nix::sys::socket::send(sock.as_raw_fd(), &msg, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("sending the reply: {e}")),
        }
    }
}

/// Longest first message of a `--proxy-protocol` dialogue ([`Hello`]).
pub const MAX_HELLO: usize = 1024;

/// With `--proxy-protocol`, the dialogue's first message: what the PROXY header it read
/// (confined) says. The parent applies the environment changes, takes the client's slots and
/// logs with the client's address; or, for a refused header, logs the reason and ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A valid header: the changes for the chain (a value to set, or None to remove the
    /// variable) and the header described for the log.
    Client {
        env: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        describe: String,
    },
    /// No valid header: whether reading failed (`io`) and why, as the log says it.
    Refused { io: bool, reason: String },
}

impl Hello {
    /// A kind byte (0 client, 1 refused, 2 refused by a read error); for a client the
    /// description (u32 length, bytes), the number of changes (u32), each name (u32 length,
    /// bytes) and value (a byte 0 to remove or 1 to set, then u32 length, bytes); for a
    /// refusal the reason. At most [`MAX_HELLO`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match self {
            Hello::Client { env, describe } => {
                out.push(0);
                put(&mut out, describe.as_bytes())?;
                out.extend_from_slice(&(env.len() as u32).to_be_bytes());
                for (k, v) in env {
                    put(&mut out, k)?;
                    match v {
                        None => out.push(0),
                        Some(v) => {
                            out.push(1);
                            put(&mut out, v)?;
                        }
                    }
                }
            }
            Hello::Refused { io, reason } => {
                out.push(if *io { 2 } else { 1 });
                put(&mut out, reason.as_bytes())?;
            }
        }
        if out.len() > MAX_HELLO {
            return Err(format!("first message of {} bytes is too long", out.len()));
        }
        Ok(out)
    }

    /// The only parser of the first message: every length checked, names and values free
    /// of NUL and names of `=`, no trailing bytes.
    pub fn decode(msg: &[u8]) -> Result<Hello, String> {
        if msg.len() > MAX_HELLO {
            return Err("first message too long".into());
        }
        let mut c = Cursor(msg);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let hello = match c.take(1)?[0] {
            0 => {
                let describe = text(c.field()?);
                let n = c.u32()? as usize;
                if n > MAX_ENV_CHANGES {
                    return Err("too many environment changes".into());
                }
                let mut env = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = c.field()?.to_vec();
                    let v = match c.take(1)?[0] {
                        0 => None,
                        1 => Some(c.field()?.to_vec()),
                        _ => return Err("malformed environment change".into()),
                    };
                    if k.is_empty()
                        || k.contains(&b'=')
                        || k.contains(&0)
                        || v.as_ref().is_some_and(|v| v.contains(&0))
                    {
                        return Err("malformed environment change".into());
                    }
                    env.push((k, v));
                }
                Hello::Client { env, describe }
            }
            k @ (1 | 2) => Hello::Refused {
                io: k == 2,
                reason: text(c.field()?),
            },
            k => return Err(format!("unknown first message kind {k}")),
        };
        if !c.0.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(hello)
    }
}

/// Sends the first message (the dialogue).
pub fn send_hello(sock: &OwnedFd, hello: &Hello) -> Result<(), String> {
    let msg = hello.encode()?;
    loop {
        match nix::sys::socket::send(sock.as_raw_fd(), &msg, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("sending the first message: {e}")),
        }
    }
}

/// Receives the first message (the parent); an error when the dialogue ended without one.
pub fn receive_hello(sock: &OwnedFd) -> Result<Hello, String> {
    let mut buf = [0u8; MAX_HELLO + 1];
    let n = loop {
        match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("reading the first message: {e}")),
        }
    };
    if n == 0 {
        return Err("the dialogue ended without a first message".into());
    }
    Hello::decode(&buf[..n])
}

/// Applies the allowed changes of a first message (removals included); returns the names
/// refused.
pub fn apply_hello_env(env: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<String> {
    let mut refused = Vec::new();
    for (k, v) in env {
        if !env_name_allowed(k) {
            refused.push(String::from_utf8_lossy(k).into_owned());
            continue;
        }
        let k = std::ffi::OsStr::from_bytes(k);
        match v {
            Some(v) => std::env::set_var(k, std::ffi::OsStr::from_bytes(v)),
            None => std::env::remove_var(k),
        }
    }
    refused
}

/// The parent's one-byte go-ahead, sent once it has shed its capabilities: the dialogue
/// greets nobody before that.
const GO: u8 = b'G';

/// Sends the go-ahead.
pub fn send_go(sock: &OwnedFd) -> Result<(), String> {
    nix::sys::socket::send(sock.as_raw_fd(), &[GO], MsgFlags::MSG_NOSIGNAL)
        .map(drop)
        .map_err(|e| format!("sending the go-ahead: {e}"))
}

/// Waits for the go-ahead; an error when the parent ended or sent anything else.
pub fn wait_go(sock: &OwnedFd) -> Result<(), String> {
    let mut b = [0u8; 2];
    loop {
        match nix::sys::socket::recv(sock.as_raw_fd(), &mut b, MsgFlags::empty()) {
            Ok(1) if b[0] == GO => return Ok(()),
            Ok(_) => return Err("no go-ahead from the parent".into()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the go-ahead: {e}")),
        }
    }
}

/// Applies the allowed environment changes of a request; returns the names refused.
pub fn apply_env(env: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    let mut refused = Vec::new();
    for (k, v) in env {
        if env_name_allowed(k) {
            std::env::set_var(
                std::ffi::OsStr::from_bytes(k),
                std::ffi::OsStr::from_bytes(v),
            );
        } else {
            refused.push(String::from_utf8_lossy(k).into_owned());
        }
    }
    refused
}

/// The dialogue's user, looked up (through NSS) before the fork: None when not root (nothing
/// to drop). Refused when it is uid or gid 0.
pub fn lookup_user(name: &str) -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) if u.uid.is_root() || u.gid.as_raw() == 0 => {
            Err(format!("dialogue user {name} has uid or gid 0"))
        }
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        Ok(None) => Err(format!("no such dialogue user {name}")),
        Err(e) => Err(format!("cannot look up dialogue user {name}: {e}")),
    }
}

/// What [`confine_dialogue`] did, for the one log line.
#[derive(Debug)]
pub struct Confined {
    pub sandbox: spool_wire::sandbox::Status,
    /// The Bounding set could not be emptied: CAP_SETPCAP was not held (a launcher that
    /// bounds it away, as the shipped systemd units do). No exec is possible, and none could
    /// gain from the set under no_new_privs.
    pub bounding_kept: bool,
}

/// Confines the dialogue, in this order: every capability out of the Bounding set (when
/// CAP_SETPCAP is effective), groups, gid and uid to `user` (when root), every capability
/// set cleared and checked empty, `RLIMIT_NOFILE`, then no_new_privs and Landlock with
/// nothing granted.
pub fn confine_dialogue(
    user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<Confined, String> {
    use caps::{CapSet, Capability};
    let setpcap = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(|e| e.to_string())?;
    if setpcap {
        for cap in 0..=63u8 {
            let one = rustix::thread::CapabilitySet::from_bits_retain(1u64 << cap);
            match rustix::thread::capability_is_in_bounding_set(one) {
                Ok(true) => rustix::thread::remove_capability_from_bounding_set(one)
                    .map_err(|e| format!("dropping capability {cap} from the bounding set: {e}"))?,
                Ok(false) => {}
                Err(_) => break,
            }
        }
    }
    if let Some((uid, gid)) = user {
        nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
        if nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
            return Err("uid 0 could be regained".into());
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| format!("clearing capabilities: {e}"))?;
    }
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| e.to_string())?;
    for set in [CapSet::Permitted, CapSet::Effective, CapSet::Inheritable] {
        let left = caps::read(None, set).map_err(|e| e.to_string())?;
        if !left.is_empty() {
            return Err(format!("capabilities left in {set:?}: {left:?}"));
        }
    }
    if setpcap && !bounding.is_empty() {
        return Err(format!(
            "capabilities left in the bounding set: {bounding:?}"
        ));
    }
    spool_wire::sandbox::max_open_files(DIALOGUE_MAX_OPEN_FILES)
        .map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let sandbox = spool_wire::sandbox::Sandbox::new()
        .restrict()
        .map_err(|e| format!("no_new_privs: {e}"))?;
    Ok(Confined {
        sandbox,
        bounding_kept: !bounding.is_empty(),
    })
}

/// Forks the dialogue (the process must have one thread): `None` in the child, the
/// child's pid in the parent.
pub fn fork_dialogue() -> std::io::Result<Option<nix::unistd::Pid>> {
    Ok(match crate::sys::fork_single_threaded()? {
        nix::unistd::ForkResult::Child => None,
        nix::unistd::ForkResult::Parent { child } => Some(child),
    })
}

/// Kills the dialogue. The parent has no CAP_KILL, so to signal a dialogue running as
/// `user` it takes that uid as its effective uid for the call (CAP_SETUID, kept in
/// Permitted for the checkpassword program, raised for this; the saved uid stays 0), then
/// returns to euid 0 and empties its Effective set again.
pub fn kill_dialogue(child: nix::unistd::Pid, user: Option<(nix::unistd::Uid, nix::unistd::Gid)>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::{setresuid, Uid};
    let keep = Uid::from_raw(u32::MAX); // -1: leave unchanged
    match user {
        None => {
            let _ = kill(child, Signal::SIGKILL);
        }
        Some((uid, _)) => {
            let _ = caps::raise(None, caps::CapSet::Effective, caps::Capability::CAP_SETUID);
            if setresuid(keep, uid, keep).is_ok() {
                let _ = kill(child, Signal::SIGKILL);
                let _ = setresuid(keep, Uid::from_raw(0), keep);
                let _ = caps::clear(None, caps::CapSet::Effective);
            }
        }
    }
}

/// Waits for the dialogue and turns its end into pop-popup's exit status (a signal: 111).
pub fn wait_dialogue(child: nix::unistd::Pid) -> u8 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => return u8::try_from(c).unwrap_or(111),
            Ok(WaitStatus::Signaled(..)) => return 111,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 111,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(payload: &[u8], env: &[(&str, &str)]) -> Request {
        Request {
            payload: Zeroizing::new(payload.to_vec()),
            env: env
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn requests_round_trip_and_truncations_fail() {
        for r in [
            req(b"alice\0pw\0<1.2@h>\0", &[]),
            req(
                b"a\0\0\0",
                &[("SSL_PROTOCOL", "TLSv1.3"), ("TCPREMOTEIP", "192.0.2.1")],
            ),
        ] {
            let m = r.encode().unwrap();
            let back = Request::decode(&m).unwrap();
            assert_eq!(back, r);
            for n in 0..m.len() {
                assert!(Request::decode(&m[..n]).is_err(), "cut at {n}");
            }
            let mut longer = m.to_vec();
            longer.push(0);
            assert!(Request::decode(&longer).is_err());
        }
        assert_eq!(req(b"u\0p\0ts\0", &[]).timestamp(), b"ts");
    }

    #[test]
    fn malformed_requests() {
        for payload in [&b"alice\0pw\0"[..], b"a\0b\0c\0d\0", b"a\0b\0c", b""] {
            let m = req(payload, &[]).encode().unwrap();
            assert!(Request::decode(&m).is_err(), "{payload:?}");
        }
        let mut big = b"u\0".to_vec();
        big.resize(MAX_CHECKPASSWORD_INPUT + 1, b'p');
        big.extend_from_slice(b"\0\0");
        assert!(Request::decode(&req(&big, &[]).encode().unwrap()).is_err());
        let m = req(b"u\0p\0t\0", &[("A=B", "x")]).encode().unwrap();
        assert!(Request::decode(&m).is_err());
        let huge = req(b"u\0p\0t\0", &[("SSL_X", &"v".repeat(MAX_REQUEST))]);
        assert!(huge.encode().is_err());
        let names: Vec<String> = (0..=MAX_ENV_CHANGES).map(|i| format!("SSL_{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert!(req(b"u\0p\0t\0", &many).encode().is_err());
        assert!(req(b"u\0p\0t\0", &many[1..]).encode().is_ok());
        // A count over the limit is refused before anything is allocated for it.
        let mut m = req(b"u\0p\0t\0", &[]).encode().unwrap().to_vec();
        let n = m.len();
        m[n - 4..].copy_from_slice(&(MAX_ENV_CHANGES as u32 + 1).to_be_bytes());
        assert!(Request::decode(&m).is_err());
    }

    #[test]
    fn replies_round_trip() {
        for s in [
            CheckStatus::Served,
            CheckStatus::Rejected,
            CheckStatus::Misuse,
            CheckStatus::TempFail(111),
            CheckStatus::TempFail(-5),
            CheckStatus::Crashed(9),
            CheckStatus::SpawnFailed("fork: EAGAIN".into()),
        ] {
            assert_eq!(decode_reply(&encode_reply(&s)).unwrap(), s);
        }
        assert!(decode_reply(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_reply(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(decode_reply(&vec![0u8; MAX_REPLY + 1]).is_err());
        let long = CheckStatus::SpawnFailed("e".repeat(2 * MAX_REPLY));
        assert!(encode_reply(&long).len() <= MAX_REPLY);
        assert!(decode_reply(&encode_reply(&long)).is_ok());
    }

    #[test]
    fn only_chain_names_may_be_set() {
        for ok in [
            "SSL_PROTOCOL",
            "SSL_CIPHER",
            "TCPREMOTEIP",
            "TCP6REMOTEIP",
            "REMOTE_ADDR",
        ] {
            assert!(env_name_allowed(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "PATH",
            "LD_PRELOAD",
            "SSL_a",
            "TCP-X",
            "",
            "HOME",
            "SSLCTLFD",
        ] {
            assert!(!env_name_allowed(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn hellos_round_trip_and_truncations_fail() {
        for h in [
            Hello::Client {
                env: vec![
                    (b"TCPREMOTEIP".to_vec(), Some(b"192.0.2.1".to_vec())),
                    (b"TCPREMOTEHOST".to_vec(), None),
                ],
                describe: "v1 PROXY 192.0.2.1:1 -> 192.0.2.2:110".into(),
            },
            Hello::Client {
                env: vec![],
                describe: "v2 LOCAL".into(),
            },
            Hello::Refused {
                io: false,
                reason: "no PROXY header".into(),
            },
            Hello::Refused {
                io: true,
                reason: "reading the PROXY header: EIO".into(),
            },
        ] {
            let m = h.encode().unwrap();
            assert_eq!(Hello::decode(&m).unwrap(), h);
            for n in 0..m.len() {
                assert!(Hello::decode(&m[..n]).is_err(), "cut at {n}");
            }
            let mut longer = m.clone();
            longer.push(0);
            assert!(Hello::decode(&longer).is_err());
        }
        let long = Hello::Refused {
            io: false,
            reason: "x".repeat(MAX_HELLO),
        };
        assert!(long.encode().is_err());
        assert!(Hello::decode(&vec![1u8; MAX_HELLO + 1]).is_err());
        let bad = Hello::Client {
            env: vec![(b"A=B".to_vec(), None)],
            describe: String::new(),
        };
        assert!(Hello::decode(&bad.encode().unwrap()).is_err());
        assert!(Hello::decode(&[3, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(msg in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(r) = Request::decode(&msg) {
                prop_assert_eq!(&r.encode().unwrap()[..], &msg[..]);
            }
            let _ = decode_reply(&msg);
            let _ = Hello::decode(&msg);
        }
    }
}
