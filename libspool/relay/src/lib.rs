//! POP-before-SMTP: after a successful POP3 login the client's address is recorded in a
//! directory, one empty file per address named by it, its mtime the login time (the layout of
//! relay-ctrl); records older than a maximum age are expired, and the fresh ones are exported
//! as a Postfix access map (`ADDRESS OK` lines).
//!
//! The record is made by a root process that learned the address before the login and is
//! told of the login's success through a pipe ([`RELAY_FD_ENV`]); see doc/DESIGN.md,
//! "POP-before-SMTP". Nothing the logged-in user controls names the address, the directory or
//! the file: the user can at most write the byte that says "logged in", which only a session
//! that logged in holds the descriptor for.
//!
//! Every file operation goes through a directory descriptor opened by [`open_dir`], which
//! walks the path from `/` without following symlinks and refuses a directory a user other
//! than root (or the caller) could change.

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::time::{Duration, SystemTime};

/// The variable that names the descriptor of the login-success pipe.
pub const RELAY_FD_ENV: &str = "POPRELAYFD";

/// The smallest descriptor number accepted for the pipe: 0-2 are the client, 3 the
/// checkpassword credentials.
pub const MIN_RELAY_FD: RawFd = 4;

/// The largest descriptor number accepted for the pipe.
pub const MAX_RELAY_FD: RawFd = 1023;

/// How long a record lets its address relay when no `--max-age` is given.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 60);

/// Most records exported at once; more is refused (a flood, not a site).
pub const MAX_RECORDS: usize = 1_000_000;

/// How long the recorder waits for the login's outcome when no `--login-timeout` is given:
/// the byte comes right after the password check, so this only ends a recorder whose pipe a
/// program of the chain holds open without writing.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest `--login-timeout`, in seconds.
pub const MAX_LOGIN_TIMEOUT_SECS: u64 = 3600;

/// The one byte that says "the password was accepted".
pub const LOGIN_OK: u8 = b'+';

/// An address in its normal spelling, the record's file name: `192.0.2.1`, `2001:db8::1`
/// (an IPv4-mapped IPv6 address as IPv4). None if `raw` is not an IP address.
pub fn address(raw: &str) -> Option<String> {
    let ip: IpAddr = raw.trim().parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        v4 => v4.to_string(),
    })
}

/// The client's address as the launcher exported it: `TCPREMOTEIP` (tcpserver, s6) or
/// `REMOTE_ADDR` (systemd `Accept=yes`), normalized.
pub fn client_from_env() -> Option<String> {
    ["TCPREMOTEIP", "REMOTE_ADDR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().and_then(|s| address(&s)))
}

/// The descriptor [`RELAY_FD_ENV`] names, if it is in range, open, a pipe (FIFO) and open for
/// writing. Anything else is None: a number that names something else is never written to.
pub fn inherited_fd() -> Option<RawFd> {
    let fd: RawFd = std::env::var(RELAY_FD_ENV).ok()?.parse().ok()?;
    if !(MIN_RELAY_FD..=MAX_RELAY_FD).contains(&fd) {
        return None;
    }
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).ok()?;
    if flags & libc::O_ACCMODE != libc::O_WRONLY {
        return None;
    }
    let st = nix::sys::stat::fstat(fd).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFIFO).then_some(fd)
}

/// Why a directory or record operation failed.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error(format!("{what}: {e}"))
}

/// Opens the directory `path` (absolute, no `..`) component by component from `/` with
/// `O_NOFOLLOW`. Every directory on the way must be owned by root or the caller and not be
/// writable by group or others, unless it has the sticky bit (as /tmp), which keeps others
/// from replacing what it holds; the last one must not be writable by group or others at all.
pub fn open_dir(path: &Path) -> Result<OwnedFd, Error> {
    if !path.is_absolute() {
        return Err(Error(format!("{} is not an absolute path", path.display())));
    }
    let me = rustix::process::geteuid().as_raw();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open("/", flags, Mode::empty()).map_err(|e| err("/", e))?;
    let mut comps = path.components().peekable();
    loop {
        let st = rustix::fs::fstat(&dir).map_err(|e| err(path.display(), e))?;
        let last = comps.peek().is_none();
        let mode = st.st_mode;
        if st.st_uid != 0 && st.st_uid != me {
            return Err(Error(format!(
                "{}: a directory on the way is owned by uid {}",
                path.display(),
                st.st_uid
            )));
        }
        let sticky = mode & libc::S_ISVTX != 0;
        if mode & 0o022 != 0 && (last || !sticky) {
            return Err(Error(format!(
                "{}: a directory on the way is writable by group or others",
                path.display()
            )));
        }
        let Some(c) = comps.next() else {
            return Ok(dir);
        };
        match c {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => {
                dir = rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| {
                    err(
                        format!("{} (at {:?})", path.display(), name),
                        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                            "a symlink or not a directory".to_string()
                        } else {
                            e.to_string()
                        },
                    )
                })?;
            }
            _ => return Err(Error(format!("{}: `..` refused", path.display()))),
        }
    }
}

/// Records `addr` (already normalized by [`address`]) in the directory: creates its file or
/// sets its mtime to now.
pub fn record(dir: BorrowedFd<'_>, addr: &str) -> Result<(), Error> {
    if address(addr).as_deref() != Some(addr) {
        return Err(Error(format!("{addr:?} is not a normalized address")));
    }
    let fd = rustix::fs::openat(
        dir,
        addr,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| err(addr, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| err(addr, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error(format!("{addr} is not a regular file")));
    }
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    rustix::fs::futimens(
        &fd,
        &Timestamps {
            last_access: now,
            last_modification: now,
        },
    )
    .map_err(|e| err(addr, e))
}

/// One record: its address and the time of its login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub address: String,
    pub time: SystemTime,
}

/// The records in the directory: regular files whose name is a normalized address (anything
/// else is ignored), sorted by address.
pub fn records(dir: BorrowedFd<'_>) -> Result<Vec<Record>, Error> {
    records_up_to(dir, MAX_RECORDS)
}

/// [`records`] with the limit given: more than `max` records is an error.
pub fn records_up_to(dir: BorrowedFd<'_>, max: usize) -> Result<Vec<Record>, Error> {
    let reader = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("relay directory", e))?;
    let mut out = Vec::new();
    let d = rustix::fs::Dir::read_from(&reader).map_err(|e| err("relay directory", e))?;
    for ent in d {
        let ent = ent.map_err(|e| err("relay directory", e))?;
        let name = OsStr::from_bytes(ent.file_name().to_bytes());
        let Some(name) = name.to_str() else { continue };
        if address(name).as_deref() != Some(name) {
            continue;
        }
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        if out.len() == max {
            return Err(Error(format!("more than {max} records")));
        }
        let time = SystemTime::UNIX_EPOCH
            + Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
        out.push(Record {
            address: name.to_string(),
            time,
        });
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(out)
}

/// Whether a record made at `time` is older than `max_age` at `now`.
pub fn expired(time: SystemTime, now: SystemTime, max_age: Duration) -> bool {
    now.duration_since(time).is_ok_and(|age| age > max_age)
}

/// Removes the records older than `max_age`; returns how many.
pub fn expire(dir: BorrowedFd<'_>, max_age: Duration, now: SystemTime) -> Result<usize, Error> {
    let mut n = 0;
    for r in records(dir)? {
        if expired(r.time, now, max_age) {
            match rustix::fs::unlinkat(dir, r.address.as_str(), AtFlags::empty()) {
                Ok(()) => n += 1,
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(err(&r.address, e)),
            }
        }
    }
    Ok(n)
}

/// The access map of the records not older than `max_age`: `ADDRESS OK` lines.
pub fn map_text(records: &[Record], max_age: Duration, now: SystemTime) -> String {
    let mut s = String::new();
    for r in records.iter().filter(|r| !expired(r.time, now, max_age)) {
        s.push_str(&r.address);
        s.push_str(" OK\n");
    }
    s
}

/// Writes `text` to `map` atomically: a new file beside it (`.NAME.tmp.PID`, mode 0644),
/// synced, renamed over `map`. The map's directory is opened with [`open_dir`].
pub fn write_atomically(map: &Path, text: &str) -> Result<(), Error> {
    let (Some(parent), Some(name)) = (map.parent(), map.file_name()) else {
        return Err(Error(format!(
            "{}: no directory or file name",
            map.display()
        )));
    };
    let dir = open_dir(parent)?;
    write_atomically_at(dir.as_fd(), name, text, map)
}

/// [`write_atomically`] in the directory `dir` already open, as `name`; `map` names it in
/// errors. Needs only these rights there: make a regular file, write it, remove a file
/// (the rename replaces the old map; a stale temp file is removed).
pub fn write_atomically_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    text: &str,
    map: &Path,
) -> Result<(), Error> {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp.{}", std::process::id()));
    let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    let fd = rustix::fs::openat(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| err(map.display(), e))?;
    let mut f = std::fs::File::from(fd);
    let done = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(map.display(), e))
        .and_then(|()| {
            rustix::fs::renameat(dir, &tmp, dir, name).map_err(|e| err(map.display(), e))
        });
    if done.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    done
}

/// Makes the login-success pipe and the recorder: a root process, detached from the session
/// (double fork, so the session never waits for it), that holds only the pipe's read end and
/// `dir`, and records `addr` when [`LOGIN_OK`] arrives; on EOF without it (the login failed)
/// it records nothing. Returns the write end for the rest of the chain, not close-on-exec.
///
/// The recorder confines itself before it reads the pipe: Landlock grants it the relay
/// directory alone (through the descriptor, so no path is followed again), no exec and no TCP,
/// and `no_new_privs` is set; `on_confined` is called in it with the outcome (for logging),
/// and when it returns false the recorder exits without reading the pipe. The recorder waits at most `limit`; `on_record` is called in it with the outcome (for
/// logging).
pub fn start_recorder(
    dir: OwnedFd,
    addr: String,
    keep_stderr: bool,
    limit: Duration,
    on_confined: impl FnOnce(std::io::Result<spool_wire::sandbox::Status>) -> bool,
    on_record: impl FnOnce(Result<bool, Error>),
) -> Result<OwnedFd, Error> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?;
    // The write end goes to the next program: above the credentials' fd 3, not close-on-exec.
    let w_raw = nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(MIN_RELAY_FD))
        .map_err(|e| err("dup", e))?;
    drop(w);
    // SAFETY: F_DUPFD just returned this new descriptor, which nothing else owns.
    let w = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(w_raw) };
    // SAFETY: the calling programs are single-threaded at this point (no thread was started),
    // so the child may do anything the parent could until it exits or execs.
    match unsafe { nix::unistd::fork() }.map_err(|e| err("fork", e))? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(r);
            // The middle child exits at once; reaping it leaves the recorder to init.
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(w)
        }
        nix::unistd::ForkResult::Child => {
            drop(w);
            // SAFETY: as above; this process is a copy of a single-threaded one.
            if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
                detach(keep_stderr, &[r.as_raw_fd(), dir.as_raw_fd()]);
                if !on_confined(drop_capabilities().and_then(|()| confine_recorder(dir.as_fd()))) {
                    std::process::exit(0)
                }
                let outcome = wait_for_login(r.as_fd(), limit).and_then(|ok| {
                    if ok {
                        record(dir.as_fd(), &addr).map(|()| true)
                    } else {
                        Ok(false)
                    }
                });
                on_record(outcome);
            }
            std::process::exit(0)
        }
    }
}

/// Drops every capability: the Bounding set first (while CAP_SETPCAP is still effective; a
/// process without it keeps its Bounding set, which no_new_privs and the absence of exec
/// make moot), then Ambient, then Effective, Permitted and Inheritable, read back to check.
/// The recorder needs none once it holds the directory's descriptor: it runs as root, the
/// owner of the relay directory ([`open_dir`] accepts no other owner when run as root) and
/// of every record in it, so creating a record (owner's write permission on the directory)
/// and setting its times (the file's owner) are plain owner rights. A directory whose owner
/// has no write permission refuses records.
pub fn drop_capabilities() -> std::io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let setpcap = rustix::thread::capabilities(None)?
        .effective
        .contains(CapabilitySet::SETPCAP);
    if setpcap {
        for cap in 0..64u32 {
            let one = CapabilitySet::from_bits_retain(1u64 << cap);
            match rustix::thread::capability_is_in_bounding_set(one) {
                Ok(true) => rustix::thread::remove_capability_from_bounding_set(one)?,
                Ok(false) => {}
                // EINVAL: beyond the kernel's last capability.
                Err(_) => break,
            }
        }
    }
    match rustix::thread::clear_ambient_capability_set() {
        // EINVAL: a kernel without an ambient set.
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none)?;
    let now = rustix::thread::capabilities(None)?;
    if !(now.effective.is_empty() && now.permitted.is_empty() && now.inheritable.is_empty()) {
        return Err(std::io::Error::other(
            "capabilities left after dropping them",
        ));
    }
    Ok(())
}

/// The recorder's sandbox: the relay directory (files made, written, removed) and nothing
/// else.
fn confine_recorder(dir: BorrowedFd<'_>) -> std::io::Result<spool_wire::sandbox::Status> {
    let held = dir.try_clone_to_owned()?;
    spool_wire::sandbox::Sandbox::new()
        .allow_fd(held, spool_wire::sandbox::tree_rw())
        .restrict()
}

/// Leaves the session: 0 and 1 (and 2 unless kept) become /dev/null, everything else but
/// `keep` is closed (the credentials' fd 3 among them).
fn detach(keep_stderr: bool, keep: &[RawFd]) {
    if let Ok(null) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        let _ = nix::unistd::dup2(null, 0);
        let _ = nix::unistd::dup2(null, 1);
        if !keep_stderr {
            let _ = nix::unistd::dup2(null, 2);
        }
        if !keep.contains(&null) {
            let _ = nix::unistd::close(null);
        }
    }
    let _ = nix::unistd::setsid();
    let top = keep.iter().copied().max().unwrap_or(2);
    for fd in 3..=top {
        if !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
    spool_wire::fds::close_inherited(top + 1);
}

/// Reads the pipe to its first byte within `limit`: true if it is [`LOGIN_OK`], false on EOF
/// or any other byte; an error when the limit passes first.
pub fn wait_for_login(r: BorrowedFd<'_>, limit: Duration) -> Result<bool, Error> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + limit;
    let mut b = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Error(format!(
                "no word from the login within {} s",
                limit.as_secs()
            )));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(r, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(err("waiting on the login pipe", e)),
        }
        match nix::unistd::read(r.as_raw_fd(), &mut b) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(b[0] == LOGIN_OK),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(err("reading the login pipe", e)),
        }
    }
}

/// Tells the recorder the login succeeded: one byte on `fd`, then closes it.
pub fn signal_login(fd: RawFd) -> Result<(), Error> {
    // SAFETY: `fd` came from [`inherited_fd`], which checked that it is an open pipe write end
    // this process inherited; nothing else in the process uses it, and it is closed here.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut f = std::fs::File::from(owned);
    f.write_all(&[LOGIN_OK]).map_err(|e| err("login pipe", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn address_table() {
        assert_eq!(address("192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(address(" ::ffff:192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(address("2001:DB8::0:1").as_deref(), Some("2001:db8::1"));
        for bad in ["", "x", "1.2.3", "../etc", "192.0.2.1/24", "01.2.3.4"] {
            assert_eq!(address(bad), None, "{bad}");
        }
    }

    fn private_dir() -> tempfile::TempDir {
        // Beside the test binary: a path of directories owned by the caller, unlike /tmp's
        // children when other users share the machine.
        let exe = std::env::current_exe().unwrap();
        let d = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        d
    }

    #[test]
    fn record_expire_export() {
        let d = private_dir();
        let dir = open_dir(d.path()).unwrap();
        record(dir.as_fd(), "192.0.2.1").unwrap();
        record(dir.as_fd(), "2001:db8::1").unwrap();
        assert!(record(dir.as_fd(), "../x").is_err());
        assert!(record(dir.as_fd(), "2001:DB8::1").is_err());
        std::fs::write(d.path().join("junk"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("192.0.2.9")).unwrap();
        assert!(
            record(dir.as_fd(), "192.0.2.9").is_err(),
            "symlink followed"
        );
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(d.path().join("192.0.2.1"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let now = SystemTime::now();
        let recs = records(dir.as_fd()).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(),
            ["192.0.2.1", "2001:db8::1"]
        );
        assert_eq!(map_text(&recs, DEFAULT_MAX_AGE, now), "2001:db8::1 OK\n");
        assert_eq!(expire(dir.as_fd(), DEFAULT_MAX_AGE, now).unwrap(), 1);
        assert!(!d.path().join("192.0.2.1").exists());
        assert!(d.path().join("junk").exists());
        assert_eq!(records_up_to(dir.as_fd(), 1).unwrap().len(), 1);
        record(dir.as_fd(), "192.0.2.2").unwrap();
        assert!(records_up_to(dir.as_fd(), 1).is_err(), "over the limit");
        let map = d.path().join("relay_map");
        write_atomically(&map, "2001:db8::1 OK\n").unwrap();
        assert_eq!(std::fs::read_to_string(&map).unwrap(), "2001:db8::1 OK\n");
    }

    #[test]
    fn the_login_pipe() {
        let limit = Duration::from_secs(5);
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, &[LOGIN_OK]).unwrap();
        assert!(wait_for_login(r.as_fd(), limit).unwrap());
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        assert!(
            !wait_for_login(r.as_fd(), limit).unwrap(),
            "EOF is no login"
        );
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"x").unwrap();
        assert!(
            !wait_for_login(r.as_fd(), limit).unwrap(),
            "another byte is no login"
        );
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(wait_for_login(r.as_fd(), Duration::from_millis(50)).is_err());
    }

    #[test]
    fn unsafe_directories_are_refused() {
        let d = private_dir();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        assert!(open_dir(&open).is_err());
        std::fs::create_dir(open.join("inner")).unwrap();
        assert!(open_dir(&open.join("inner")).is_err(), "writable parent");
        std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
        assert!(open_dir(&d.path().join("link")).is_err());
        assert!(open_dir(Path::new("relative")).is_err());
        assert!(open_dir(&d.path().join("..").join("x")).is_err());
    }
}
