//! Reading a Maildir folder without one allocation per entry.
//!
//! `std::fs::read_dir` allocates an `OsString` and an `Arc` per entry and reads the directory
//! 32 KiB at a time; a Maildir of 150,000 messages is 5-10 MB of `dirent64` records. Here the
//! directory is read with `getdents64` (rustix's `RawDir`) into one [`DIRENT_BUF_LEN`] buffer
//! and each name is handed to the caller as a borrowed slice, so the caller can copy it
//! straight into its own arena. Dot-files and anything that is not a regular file are
//! skipped, using `d_type` where the file system provides it and one
//! `fstatat(AT_SYMLINK_NOFOLLOW)` where it does not.
//!
//! The one rule: a Maildir and its folders are opened as [`Dir`]s without following a final
//! symlink, and everything inside them is reached through those descriptors by one name,
//! never by path, whoever runs the program.

#![forbid(unsafe_code)]

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Stat};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes of `dirent64` records fetched per `getdents64` call: few system calls for a huge
/// folder, a transient 256 KiB for the session.
pub const DIRENT_BUF_LEN: usize = 256 * 1024;

/// Smaller buffer for "is there any message at all" probes, which usually stop at once.
pub const PROBE_BUF_LEN: usize = 16 * 1024;

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

/// Flags of every directory opened here. `O_NOFOLLOW`: a Maildir or a folder that is a
/// symbolic link is refused, never followed (with `O_DIRECTORY` the kernel then answers
/// `ENOTDIR`); `O_NONBLOCK`: nothing swapped in can hang the open.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK);

/// What [`Dir::open`] or [`Dir::open_dir`] found.
#[derive(Debug)]
pub enum Opened {
    Dir(Dir),
    /// Nothing there.
    Missing,
    /// A symbolic link: not followed, whatever it points to.
    Symlink,
    /// Something else that is not a directory (a file, a FIFO, ...).
    NotADir,
}

/// The result of a failed directory open, told apart by an `lstat` of the same entry: a
/// symlink and a file both give `ENOTDIR` (or `ELOOP`) under [`DIR_FLAGS`].
fn classify(err: io::Error, lstat: impl FnOnce() -> io::Result<Stat>) -> io::Result<Opened> {
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(Opened::Missing),
        Some(libc::ENOTDIR | libc::ELOOP) => match lstat() {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => Ok(Opened::Symlink),
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => Ok(Opened::NotADir),
            // A directory again (replaced meanwhile), or an earlier component that is not.
            _ => Err(err),
        },
        _ => Err(err),
    }
}

/// An open directory ([`DIR_FLAGS`]). Every file operation below it resolves one name
/// relative to this descriptor (`openat`, `fstatat`, `unlinkat`, `renameat`, `linkat`), never
/// a path, so a folder replaced by a symlink after it was opened redirects nothing.
/// Opens `base` (the administrator's: resolved as usual, symlinks included) and then each
/// component of `rel` below it, never following a symlink: the directory, or `None` when it
/// is missing, not a directory, a symlink anywhere on `rel`, or `rel` climbs with `..`. For
/// granting a confined root the directories it works in without letting a user who controls
/// a component of the name point it elsewhere.
pub fn open_dir_nofollow(base: &Path, rel: &Path) -> Option<Dir> {
    use std::path::Component;
    let base = std::fs::canonicalize(base).ok()?;
    let mut dir = match Dir::open(&base) {
        Ok(Opened::Dir(d)) => d,
        _ => return None,
    };
    for c in rel.components() {
        let step = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(n) => n.as_bytes(),
            Component::ParentDir | Component::Prefix(_) => return None,
        };
        dir = match dir.open_dir(step) {
            Ok(Opened::Dir(d)) => d,
            _ => return None,
        };
    }
    Some(dir)
}

#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens the directory at `path` without following a final symlink. Trailing slashes
    /// (qmail's `./Maildir/`) are dropped first: with one, the kernel would follow a final
    /// symlink despite `O_NOFOLLOW`. Earlier components are resolved as usual.
    pub fn open(path: &Path) -> io::Result<Opened> {
        let mut bytes = path.as_os_str().as_bytes();
        while bytes.len() > 1 && bytes.ends_with(b"/") {
            bytes = &bytes[..bytes.len() - 1];
        }
        let c = CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        match rfs::open(c.as_c_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Opened::Dir(Dir { fd })),
            Err(e) => classify(e.into(), || lstat_at(rfs::CWD, &c)),
        }
    }

    /// The open directory, for callers that name it through `/proc/self/fd`.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory `name` (one path component) in this one, as [`Dir::open`].
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Opened> {
        with_cstr(name, |c| {
            match rfs::openat(&self.fd, c, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => Ok(Opened::Dir(Dir { fd })),
                Err(e) => classify(e.into(), || self.lstat_c(c)),
            }
        })
    }

    /// `fstat` of the directory itself.
    pub fn stat(&self) -> io::Result<Stat> {
        Ok(rfs::fstat(&self.fd)?)
    }

    /// `fsync` of the directory: makes entries linked into it durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rfs::fsync(&self.fd)?)
    }

    /// Creates the directory `name` in this one (`mkdirat`, which never follows a final
    /// symlink: an existing one is `AlreadyExists`).
    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        with_cstr(name, |c| {
            rfs::mkdirat(&self.fd, c, Mode::from_raw_mode(mode))?;
            Ok(())
        })
    }

    /// Creates the new file `name` for reading and writing: `O_EXCL`, so an existing entry of
    /// any kind, a symlink included, is `AlreadyExists` and never opened.
    pub fn create_file(&self, name: &[u8], mode: u32) -> io::Result<File> {
        with_cstr(name, |c| {
            let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
            let fd = rfs::openat(
                &self.fd,
                c,
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            )?;
            Ok(File::from(fd))
        })
    }

    /// Calls `f` with the name of each message candidate (a regular file whose name does not
    /// start with `.`), in directory order, until it returns false. Returns false if stopped.
    pub fn for_each_file(
        &self,
        buf_len: usize,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<bool> {
        // From the start, however often the directory was read before.
        rfs::seek(&self.fd, rustix::fs::SeekFrom::Start(0))?;
        let mut buf = vec![MaybeUninit::<u8>::uninit(); buf_len.max(4096)];
        let mut entries = rfs::RawDir::new(&self.fd, &mut buf);
        while let Some(entry) = entries.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name.is_empty() || name[0] == b'.' {
                continue;
            }
            let regular = match entry.file_type() {
                rfs::FileType::RegularFile => true,
                rfs::FileType::Unknown => match self.lstat_is_file(name) {
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
        Ok(true)
    }

    /// For file systems without `d_type`.
    fn lstat_is_file(&self, name: &[u8]) -> io::Result<bool> {
        Ok(self.lstat(name)?.st_mode & libc::S_IFMT == libc::S_IFREG)
    }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)` of an entry.
    pub fn lstat(&self, name: &[u8]) -> io::Result<Stat> {
        with_cstr(name, |c| self.lstat_c(c))
    }

    fn lstat_c(&self, c: &std::ffi::CStr) -> io::Result<Stat> {
        lstat_at(self.fd.as_fd(), c)
    }

    /// Opens an entry for reading. `O_NOFOLLOW`: a message is a regular file, never a link
    /// out of the Maildir; `O_NONBLOCK`: a FIFO swapped in after the listing cannot hang.
    pub fn open_file(&self, name: &[u8]) -> io::Result<File> {
        with_cstr(name, |c| self.open_file_c(c))
    }

    fn open_file_c(&self, c: &std::ffi::CStr) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        Ok(File::from(rfs::openat(&self.fd, c, flags, Mode::empty())?))
    }

    /// Removes an entry (`unlinkat`): one path component to resolve, not the whole path.
    pub fn unlink(&self, name: &[u8]) -> io::Result<()> {
        with_cstr(name, |c| Ok(rfs::unlinkat(&self.fd, c, AtFlags::empty())?))
    }

    /// Renames entry `from` of this directory to `to` in `dir` (atomic within a file system).
    pub fn rename_to(&self, from: &[u8], dir: &Dir, to: &[u8]) -> io::Result<()> {
        with_cstr(from, |a| {
            with_cstr(to, |b| Ok(rfs::renameat(&self.fd, a, &dir.fd, b)?))
        })
    }

    /// Links entry `from` of this directory as `to` in `dir` (`linkat` without
    /// `AT_SYMLINK_FOLLOW`); an existing `to` is `AlreadyExists`.
    pub fn link_to(&self, from: &[u8], dir: &Dir, to: &[u8]) -> io::Result<()> {
        with_cstr(from, |a| {
            with_cstr(to, |b| {
                Ok(rfs::linkat(&self.fd, a, &dir.fd, b, AtFlags::empty())?)
            })
        })
    }
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)` of `c` relative to `dirfd` (or [`rfs::CWD`]).
fn lstat_at(dirfd: BorrowedFd<'_>, c: &std::ffi::CStr) -> io::Result<Stat> {
    Ok(rfs::statat(dirfd, c, AtFlags::SYMLINK_NOFOLLOW)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;

    fn open(path: &Path) -> Dir {
        match Dir::open(path).expect("open") {
            Opened::Dir(d) => d,
            other => panic!("{}: {other:?}", path.display()),
        }
    }

    fn names(dir: &Path, buf_len: usize) -> BTreeSet<Vec<u8>> {
        let mut out = BTreeSet::new();
        open(dir)
            .for_each_file(buf_len, |n| {
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
        // Stopping early.
        let mut seen = 0;
        let d2 = open(d.path());
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
    }

    #[test]
    fn a_symlinked_directory_is_never_opened() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        fs::write(real.join("1.M1.h"), b"x").expect("write");
        std::os::unix::fs::symlink(&real, d.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink("/nonexistent", d.path().join("dangling")).expect("symlink");
        fs::write(d.path().join("file"), b"x").expect("write");
        let kind = |p: &Path| match Dir::open(p).expect("open") {
            Opened::Dir(_) => "dir",
            Opened::Missing => "missing",
            Opened::Symlink => "symlink",
            Opened::NotADir => "not a dir",
        };
        for (name, want) in [
            ("real", "dir"),
            ("real/", "dir"),
            ("real//", "dir"),
            ("link", "symlink"),
            // A trailing slash would make the kernel follow it: dropped first.
            ("link/", "symlink"),
            ("link//", "symlink"),
            ("dangling", "symlink"),
            ("file", "not a dir"),
            ("missing", "missing"),
        ] {
            assert_eq!(kind(&d.path().join(name)), want, "{name}");
        }
        assert_eq!(kind(Path::new("/")), "dir");
        let top = open(d.path());
        for (name, want) in [
            (&b"real"[..], "dir"),
            (b"link", "symlink"),
            (b"dangling", "symlink"),
            (b"file", "not a dir"),
            (b"missing", "missing"),
        ] {
            let got = match top.open_dir(name).expect("open") {
                Opened::Dir(_) => "dir",
                Opened::Missing => "missing",
                Opened::Symlink => "symlink",
                Opened::NotADir => "not a dir",
            };
            assert_eq!(got, want, "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn create_link_and_unlink_stay_inside_the_directories() {
        let d = tempfile::tempdir().expect("tempdir");
        let top = open(d.path());
        for sub in [&b"tmp"[..], b"new"] {
            top.mkdir(sub, 0o700).expect("mkdir");
        }
        assert_eq!(
            top.mkdir(b"tmp", 0o700).map_err(|e| e.kind()),
            Err(io::ErrorKind::AlreadyExists)
        );
        let tmp = open(&d.path().join("tmp"));
        let new = open(&d.path().join("new"));
        let mut f = tmp.create_file(b"m", 0o600).expect("create");
        std::io::Write::write_all(&mut f, b"hello").expect("write");
        assert_eq!(
            tmp.create_file(b"m", 0o600)
                .map(|_| ())
                .map_err(|e| e.kind()),
            Err(io::ErrorKind::AlreadyExists)
        );
        // A symlink planted under the name is never opened through.
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("tmp/s")).expect("symlink");
        assert!(tmp.create_file(b"s", 0o600).is_err());
        tmp.link_to(b"m", &new, b"m2").expect("link");
        assert_eq!(
            tmp.link_to(b"m", &new, b"m2").map_err(|e| e.kind()),
            Err(io::ErrorKind::AlreadyExists)
        );
        new.sync().expect("fsync");
        tmp.unlink(b"m").expect("unlink");
        assert_eq!(fs::read(d.path().join("new/m2")).expect("read"), b"hello");
        assert_eq!(
            new.stat().expect("fstat").st_mode & libc::S_IFMT,
            libc::S_IFDIR
        );
    }
}
