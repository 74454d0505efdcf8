//! Reading a Maildir folder without one allocation per entry.
//!
//! `std::fs::read_dir` allocates an `OsString` and an `Arc` per entry and reads the directory
//! 32 KiB at a time; a Maildir of 150,000 messages is 5-10 MB of `dirent64` records. Here the
//! directory is read with `getdents64` into one [`DIRENT_BUF_LEN`] buffer and each name is
//! handed to the caller as a borrowed slice, so the caller can copy it straight into its own
//! arena. Dot-files and anything that is not a regular file are skipped, using `d_type` where
//! the file system provides it and one `fstatat(AT_SYMLINK_NOFOLLOW)` where it does not.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes of `dirent64` records fetched per `getdents64` call: few system calls for a huge
/// folder, a transient 256 KiB for the session.
pub const DIRENT_BUF_LEN: usize = 256 * 1024;

/// Smaller buffer for "is there any message at all" probes, which usually stop at once.
pub const PROBE_BUF_LEN: usize = 16 * 1024;

/// Offset of `d_name` in a `dirent64`: `d_ino` (8), `d_off` (8), `d_reclen` (2), `d_type` (1).
const D_NAME_OFFSET: usize = 19;

/// Names shorter than this are made NUL-terminated on the stack: no allocation per `openat`,
/// `unlinkat` or `fstatat` (`NAME_MAX` is 255 on every Linux file system).
const STACK_NAME_LEN: usize = 256;

/// Calls `f` with `name` as a C string; a name containing NUL cannot exist (`InvalidInput`).
fn with_cstr<T>(name: &[u8], f: impl FnOnce(&std::ffi::CStr) -> io::Result<T>) -> io::Result<T> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    if name.len() < STACK_NAME_LEN {
        let mut buf = [0u8; STACK_NAME_LEN];
        buf[..name.len()].copy_from_slice(name);
        let c = std::ffi::CStr::from_bytes_with_nul(&buf[..=name.len()]).map_err(|_| invalid())?;
        f(c)
    } else {
        let c = CString::new(name).map_err(|_| invalid())?;
        f(&c)
    }
}

/// An open directory (`O_DIRECTORY`, `O_CLOEXEC`).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens `path`; `Ok(None)` when it does not exist.
    pub fn open(path: &Path) -> io::Result<Option<Dir>> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Some(Dir { fd }))
    }

    /// Calls `f` with the name of each message candidate (a regular file whose name does not
    /// start with `.`), in directory order, until it returns false. Returns false if stopped.
    pub fn for_each_file(
        &self,
        buf_len: usize,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<bool> {
        // From the start, however often the directory was read before.
        // SAFETY: lseek on an open fd has no memory effects.
        if unsafe { libc::lseek(self.fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; buf_len.max(4096)];
        loop {
            // SAFETY: the buffer is valid for writes of `buf.len()` bytes and the fd is open;
            // getdents64 writes at most that many bytes and returns how many it wrote.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = usize::try_from(n).unwrap_or(0).min(buf.len());
            if n == 0 {
                return Ok(true);
            }
            let mut pos = 0;
            while pos + D_NAME_OFFSET <= n {
                let reclen = usize::from(u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]));
                if reclen < D_NAME_OFFSET || pos + reclen > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed dirent from getdents64",
                    ));
                }
                let d_type = buf[pos + 18];
                let raw = &buf[pos + D_NAME_OFFSET..pos + reclen];
                let name = match memchr::memchr(0, raw) {
                    Some(end) => &raw[..end],
                    None => raw,
                };
                pos += reclen;
                if name.is_empty() || name[0] == b'.' {
                    continue;
                }
                let regular = match d_type {
                    libc::DT_REG => true,
                    libc::DT_UNKNOWN => match self.lstat_is_file(name) {
                        Ok(r) => r,
                        // Removed between getdents and fstatat.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                        Err(e) => return Err(e),
                    },
                    _ => false,
                };
                if regular && !f(name) {
                    return Ok(false);
                }
            }
        }
    }

    /// For file systems without `d_type`.
    fn lstat_is_file(&self, name: &[u8]) -> io::Result<bool> {
        Ok(self.lstat(name)?.st_mode & libc::S_IFMT == libc::S_IFREG)
    }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)` of an entry.
    pub fn lstat(&self, name: &[u8]) -> io::Result<libc::stat> {
        with_cstr(name, |c| self.lstat_c(c))
    }

    fn lstat_c(&self, c: &std::ffi::CStr) -> io::Result<libc::stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fd is an open directory, `c` a NUL-terminated name, `st` writable stat space.
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so it filled in `st`.
        Ok(unsafe { st.assume_init() })
    }

    /// Opens an entry for reading. `O_NOFOLLOW`: a message is a regular file, never a link
    /// out of the Maildir; `O_NONBLOCK`: a FIFO swapped in after the listing cannot hang.
    pub fn open_file(&self, name: &[u8]) -> io::Result<File> {
        with_cstr(name, |c| self.open_file_c(c))
    }

    fn open_file_c(&self, c: &std::ffi::CStr) -> io::Result<File> {
        // SAFETY: fd is an open directory and `c` a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat(2) and is owned by nobody else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Removes an entry (`unlinkat`): one path component to resolve, not the whole path.
    pub fn unlink(&self, name: &[u8]) -> io::Result<()> {
        with_cstr(name, |c| {
            // SAFETY: fd is an open directory and `c` a NUL-terminated name.
            if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }

    /// Renames entry `from` of this directory to `to` in `dir` (atomic within a file system).
    pub fn rename_to(&self, from: &[u8], dir: &Dir, to: &[u8]) -> io::Result<()> {
        with_cstr(from, |a| {
            with_cstr(to, |b| {
                // SAFETY: both fds are open directories and both names NUL-terminated.
                let r = unsafe {
                    libc::renameat(
                        self.fd.as_raw_fd(),
                        a.as_ptr(),
                        dir.fd.as_raw_fd(),
                        b.as_ptr(),
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        })
    }
}

/// Calls `f` for each message candidate of `dir` (see [`Dir::for_each_file`]); a missing
/// directory has none.
pub fn for_each_file(dir: &Path, buf_len: usize, f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    match Dir::open(dir)? {
        Some(d) => d.for_each_file(buf_len, f).map(|_| ()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;

    fn names(dir: &Path, buf_len: usize) -> BTreeSet<Vec<u8>> {
        let mut out = BTreeSet::new();
        for_each_file(dir, buf_len, |n| {
            assert!(out.insert(n.to_vec()), "duplicate");
            true
        })
        .expect("read");
        out
    }

    #[test]
    fn names_of_any_length_and_nul() {
        for (name, ok) in [
            (b"a".to_vec(), true),
            (vec![b'x'; STACK_NAME_LEN - 1], true),
            (vec![b'x'; STACK_NAME_LEN], true),
            (vec![b'y'; 1000], true),
            (b"a\0b".to_vec(), false),
        ] {
            let r = with_cstr(&name, |c| Ok(c.to_bytes().to_vec()));
            assert_eq!(r.ok(), ok.then(|| name.clone()), "{}", name.len());
        }
    }

    #[test]
    fn lists_regular_files_only_across_many_buffers() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut want = BTreeSet::new();
        for i in 0..700 {
            let n = format!("{i}.M{i}P1.host,S={}", i * 7);
            fs::write(d.path().join(&n), b"x").expect("write");
            want.insert(n.into_bytes());
        }
        fs::write(d.path().join(".hidden"), b"x").expect("write");
        fs::create_dir(d.path().join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).expect("symlink");
        // The smallest buffer forces many getdents64 calls.
        assert_eq!(names(d.path(), 0), want);
        assert_eq!(names(d.path(), DIRENT_BUF_LEN), want);
        assert!(names(&d.path().join("missing"), 4096).is_empty());
        // Stopping early.
        let mut seen = 0;
        let d2 = Dir::open(d.path()).expect("open").expect("exists");
        let finished = d2
            .for_each_file(4096, |_| {
                seen += 1;
                seen < 3
            })
            .expect("read");
        assert!(!finished);
        assert_eq!(seen, 3);
        // The same handle reads the whole directory again from the start.
        let mut again = 0;
        assert!(d2
            .for_each_file(4096, |_| {
                again += 1;
                true
            })
            .expect("read"));
        assert_eq!(again, 700);
        // A file is not a directory.
        assert!(Dir::open(&d.path().join("0.M0P1.host,S=0")).is_err());
    }
}
