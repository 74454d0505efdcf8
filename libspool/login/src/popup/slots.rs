//! Connection slots: at most N live sessions per client source, and in all, whatever launcher
//! runs pop-popup (tcpserver has a global `-c` but no per-source limit, and openbsd-inetd has
//! neither).
//!
//! A slot is a one-byte open-file-description lock (`F_OFD_SETLK`) on byte k of the file named
//! after the source in a root-only directory. pop-popup stays the parent of the whole session,
//! so the slot is held until the session ends, and the kernel releases it however the process
//! dies: there is no count to go stale. The rule a reader must not break: the directory is
//! opened `O_NOFOLLOW` and must belong to us and be writable by nobody else; every file is
//! opened relative to it, `O_NOFOLLOW`.

#![forbid(unsafe_code)]

use nix::errno::Errno;
use nix::sys::stat::{fstat, Mode, SFlag};
use rustix::fs::OFlags;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Where the slot files live unless `--slot-dir` says otherwise (a tmpfs, emptied at boot).
pub const DEFAULT_SLOT_DIR: &str = "/run/popspool";

/// The slot file of every connection, for the global limit.
const ALL: &str = "all";

/// A held slot; released when dropped or when the process ends.
#[derive(Debug)]
pub struct Slot {
    _file: File,
}

/// Why no slot was taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum SlotError {
    /// Every slot of the source (or of the server) is held.
    Full,
    /// The slot directory or file could not be used.
    System(String),
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::Full => write!(f, "every slot is taken"),
            SlotError::System(s) => write!(f, "{s}"),
        }
    }
}

/// The file name of a client address's slots: IPv4 as is (an IPv4-mapped IPv6 address too),
/// IPv6 by its /64 prefix (one site gets a whole /64, so one address means nothing), anything
/// that is not an address (a pipe, a Unix socket) `local`.
pub fn source_key(addr: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("ip4-{v4}"),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip4-{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6-{:x}-{:x}-{:x}-{:x}", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => "local".into(),
    }
}

/// Opens (creating it 0700 if missing) the slot directory, which must be a directory of ours
/// that nobody else can write.
pub fn open_dir(path: &Path) -> Result<OwnedFd, SlotError> {
    let sys = |what: &str, e: Errno| SlotError::System(format!("{what} {}: {e}", path.display()));
    match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(sys("cannot create", e)),
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| sys("cannot open", Errno::from_raw(e.raw_os_error())))?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| sys("cannot stat", e))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o022 != 0 {
        return Err(SlotError::System(format!(
            "{} must belong to uid {} and be writable by nobody else",
            path.display(),
            nix::unistd::geteuid()
        )));
    }
    Ok(fd)
}

/// Takes one of the `limit` slots of `key` in `dir`.
pub fn take(dir: &OwnedFd, key: &str, limit: u32) -> Result<Slot, SlotError> {
    let sys = |what: &str, e: Errno| SlotError::System(format!("{what} slot file {key}: {e}"));
    let fd = rustix::fs::openat(
        dir,
        key,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| sys("cannot open", Errno::from_raw(e.raw_os_error())))?;
    let file = File::from(fd);
    let st = fstat(file.as_raw_fd()).map_err(|e| sys("cannot stat", e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(SlotError::System(format!(
            "slot file {key} is not a regular file"
        )));
    }
    for k in 0..limit {
        if lock_byte(file.as_raw_fd(), k)? {
            return Ok(Slot { _file: file });
        }
    }
    Err(SlotError::Full)
}

/// Tries the open-file-description write lock on byte `k`: true when taken, false when held.
fn lock_byte(fd: RawFd, k: u32) -> Result<bool, SlotError> {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: libc::off_t::from(k),
        l_len: 1,
        l_pid: 0,
    };
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(SlotError::System(format!("cannot lock a slot: {e}"))),
    }
}

/// The slots pop-popup holds for its connection: one of the source's, one of the server's.
#[derive(Debug)]
pub struct Held {
    _source: Option<Slot>,
    _all: Option<Slot>,
}

/// Takes a slot of `per_source` for `addr`'s source and one of `total`, in `dir` (None: no
/// such limit). `Err(Full)` names which limit was reached in the log only: the client is told
/// the same either way.
pub fn take_for(
    dir: &Path,
    addr: &str,
    per_source: Option<u32>,
    total: Option<u32>,
) -> Result<Held, (SlotError, &'static str)> {
    if per_source.is_none() && total.is_none() {
        return Ok(Held {
            _source: None,
            _all: None,
        });
    }
    let d = open_dir(dir).map_err(|e| (e, "slot directory"))?;
    let source = per_source
        .map(|n| take(&d, &source_key(addr), n))
        .transpose()
        .map_err(|e| (e, "per-source limit"))?;
    let all = total
        .map(|n| take(&d, ALL, n))
        .transpose()
        .map_err(|e| (e, "connection limit"))?;
    Ok(Held {
        _source: source,
        _all: all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for (addr, key) in [
            ("127.0.0.1", "ip4-127.0.0.1"),
            ("::ffff:10.1.2.3", "ip4-10.1.2.3"),
            ("2001:db8:1:2:3:4:5:6", "ip6-2001-db8-1-2"),
            ("2001:db8:1:2::9", "ip6-2001-db8-1-2"),
            ("-", "local"),
            ("local", "local"),
            ("../../etc/passwd", "local"),
        ] {
            assert_eq!(source_key(addr), key, "{addr}");
        }
    }

    #[test]
    fn slots_fill_up_and_free_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("slots");
        let held: Vec<Held> = (0..3)
            .map(|_| take_for(&dir, "192.0.2.1", Some(3), Some(4)).unwrap())
            .collect();
        assert!(matches!(
            take_for(&dir, "192.0.2.1", Some(3), Some(4)),
            Err((SlotError::Full, "per-source limit"))
        ));
        let other = take_for(&dir, "192.0.2.2", Some(3), Some(4)).unwrap();
        assert!(matches!(
            take_for(&dir, "192.0.2.3", Some(3), Some(4)),
            Err((SlotError::Full, "connection limit"))
        ));
        drop(other);
        drop(held);
        take_for(&dir, "192.0.2.1", Some(3), Some(4)).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(open_dir(t.path()), Err(SlotError::System(_))));
        let link = t.path().join("link");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        assert!(matches!(open_dir(&link), Err(SlotError::System(_))));
    }
}
