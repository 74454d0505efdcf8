//! Delivery into a Maildir: write in `tmp/`, fsync, link into `new/`, unlink, fsync `new/`
//! (qmail-local's `maildir_child`). No lock is needed: a message appears in `new/` complete
//! or not at all.
//!
//! The file name is `SECS.M<usec>P<pid>Q<n>.HOST,S=<size>,W=<pop3 size>`: unique per host
//! (the pid, the microseconds and a per-process counter), `,S=` the stored size and `,W=` the
//! canonical size `pop-serve` would compute (measured with the same code), so `pop-serve`
//! need not read the file to answer LIST. The unique part (the whole name, as there is no
//! `:2,` yet) is the message's UIDL.
//!
//! The Maildir, `tmp/`, `new/` and `cur/` are opened `O_DIRECTORY|O_NOFOLLOW` and the message
//! is created, linked and unlinked through those descriptors, never by path: a Maildir or a
//! folder that is a symbolic link is refused ([`DeliverError::NotPermitted`]), and swapping
//! one in after the check redirects nothing.

#![forbid(unsafe_code)]

use super::mbox::Common;
use super::spool::{Spooled, SPOOL_CHUNK};
use super::{DeliverError, Delivered, MAILDIR_MODE};
use spool_store::canon::{self, CanonOptions};
use spool_store::maildir::dirent::{Dir, Opened, DIRENT_BUF_LEN};
use spool_store::maildir::names::{name_field, unique_part};
use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Attempts at finding a free name before giving up (a clash needs the same pid, second,
/// microsecond and counter: only a clock jumping back with pid reuse).
pub const MAX_NAME_ATTEMPTS: u32 = 10;

/// Mode of a message file.
const MESSAGE_MODE: u32 = 0o600;

/// The three folders of a Maildir, opened without following a symlink; every file is then
/// created, linked and unlinked through them by one name, never by path.
struct Folders {
    tmp: Dir,
    new: Dir,
    cur: Dir,
}

/// Delivers `spooled` into the Maildir `root`, creating it and `tmp/`, `new/`, `cur/` if
/// missing. It is reached by the path `at`: `root` itself, or the same name through a pinned
/// directory ([`super::pinned`]); `root` is what messages name.
pub fn deliver(
    root: &Path,
    at: &Path,
    spooled: &Spooled,
    common: &Common,
) -> Result<Delivered, DeliverError> {
    let folders = prepare(root, at, common)?;
    if let Some(limit) = common.max_size {
        let size = maildir_size(&folders)?;
        let add = spooled.maildir_len();
        if size.saturating_add(add) > limit {
            return Err(DeliverError::OverQuota { size, add, limit });
        }
    }
    let host = hostname();
    for _ in 0..MAX_NAME_ATTEMPTS {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let base = format!(
            "{}.M{}P{}Q{}.{host}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            super::unique_counter()
        );
        let f = match folders.tmp.create_file(base.as_bytes(), MESSAGE_MODE) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(create_error(root, e)),
        };
        let r = write_and_link(&f, &folders, &base, spooled);
        let _ = folders.tmp.unlink(base.as_bytes());
        match r {
            Ok(Some(name)) => {
                return Ok(Delivered {
                    path: root.join("new").join(name),
                    bytes: spooled.maildir_len(),
                    warnings: Vec::new(),
                })
            }
            Ok(None) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(DeliverError::Io(
        "name the message",
        io::Error::other("no unique file name found"),
    ))
}

fn create_error(root: &Path, e: io::Error) -> DeliverError {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            DeliverError::NotPermitted(root.into(), format!("cannot write tmp/: {e}"))
        }
        _ => DeliverError::Io("create the message file", e),
    }
}

/// Why a Maildir directory could not be created.
fn mkdir_error(dir: PathBuf, root: &Path, e: io::Error) -> DeliverError {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => DeliverError::CannotCreate(dir, e),
        Some(libc::ENOTDIR) => DeliverError::NotAMailbox(root.into()),
        _ => DeliverError::Io("create the Maildir", e),
    }
}

/// A Maildir directory just opened: a directory owned by the caller (root may deliver into
/// anybody's), never a symlink, which is refused and not followed.
fn checked(
    opened: io::Result<Opened>,
    dir: PathBuf,
    root: &Path,
    common: &Common,
) -> Result<Dir, DeliverError> {
    let d = match opened {
        Ok(Opened::Dir(d)) => d,
        Ok(Opened::Symlink) => {
            return Err(DeliverError::NotPermitted(
                dir,
                "a symbolic link (never followed)".into(),
            ))
        }
        Ok(Opened::NotADir) => return Err(DeliverError::NotAMailbox(root.into())),
        // Created a moment ago: removed again meanwhile.
        Ok(Opened::Missing) => {
            return Err(DeliverError::Io(
                "open the Maildir",
                io::Error::from(ErrorKind::NotFound),
            ))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            return Err(DeliverError::NotPermitted(dir, format!("cannot open: {e}")))
        }
        Err(e) => return Err(DeliverError::Io("open the Maildir", e)),
    };
    let st = d
        .stat()
        .map_err(|e| DeliverError::Io("stat the Maildir", e))?;
    if !common.me.is_root() && st.st_uid != common.me.euid {
        return Err(DeliverError::NotPermitted(
            dir,
            format!("owned by uid {}, not {}", st.st_uid, common.me.euid),
        ));
    }
    Ok(d)
}

/// The Maildir and its three directories, opened; created (0700) when missing. Something else
/// in their place is not a Maildir; a symlink in their place is refused.
fn prepare(root: &Path, at: &Path, common: &Common) -> Result<Folders, DeliverError> {
    // mkdir never follows a final symlink (an existing one is EEXIST), and the open that
    // follows refuses one.
    match fs::DirBuilder::new().mode(MAILDIR_MODE).create(at) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(mkdir_error(root.into(), root, e)),
    }
    let top = checked(Dir::open(at), root.into(), root, common)?;
    let sub = |name: &str| -> Result<Dir, DeliverError> {
        let dir = root.join(name);
        match top.mkdir(name.as_bytes(), MAILDIR_MODE) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(mkdir_error(dir, root, e)),
        }
        checked(top.open_dir(name.as_bytes()), dir, root, common)
    };
    Ok(Folders {
        tmp: sub("tmp")?,
        new: sub("new")?,
        cur: sub("cur")?,
    })
}

/// Writes the message, fsyncs, measures its POP3 size, links it into `new/`. Returns the name
/// in `new/`, or `Ok(None)` when that name exists already (try another).
fn write_and_link(
    f: &File,
    folders: &Folders,
    base: &str,
    spooled: &Spooled,
) -> Result<Option<String>, DeliverError> {
    let io_err = |what| move |e| DeliverError::Io(what, e);
    let mut out = io::BufWriter::with_capacity(SPOOL_CHUNK, f);
    let mut buf = vec![0u8; SPOOL_CHUNK.min(spooled.len as usize).max(1)];
    let mut at = 0u64;
    while at < spooled.len {
        if super::interrupted() {
            return Err(DeliverError::Interrupted);
        }
        let n = (spooled.len - at).min(buf.len() as u64) as usize;
        spooled
            .file()
            .read_exact_at(&mut buf[..n], at)
            .map_err(io_err("read the temporary file"))?;
        out.write_all(&buf[..n])
            .map_err(io_err("write the message file"))?;
        at += n as u64;
    }
    if !spooled.ends_with_newline {
        out.write_all(b"\n")
            .map_err(io_err("write the message file"))?;
    }
    out.flush().map_err(io_err("write the message file"))?;
    drop(out);
    f.sync_all().map_err(io_err("sync the message file"))?;
    let size = spooled.maildir_len();
    let mut reader = io::BufReader::with_capacity(SPOOL_CHUNK, ReadAt { f, off: 0 });
    let w = canon::measure(&mut reader, size, CanonOptions::PLAIN)
        .map_err(io_err("measure the message"))?;
    let name = format!("{base},S={size},W={w}");
    match folders
        .tmp
        .link_to(base.as_bytes(), &folders.new, name.as_bytes())
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(DeliverError::Io("link the message into new/", e)),
    }
    if let Err(e) = folders.new.sync() {
        // Not durable: withdraw it, so the MTA's retry cannot make a duplicate.
        let _ = folders.new.unlink(name.as_bytes());
        return Err(DeliverError::Io("sync new/", e));
    }
    Ok(Some(name))
}

/// `Read` over a file from offset 0 with `pread`, leaving the descriptor's offset alone.
struct ReadAt<'a> {
    f: &'a File,
    off: u64,
}

impl io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.f.read_at(buf, self.off)?;
        self.off += n as u64;
        Ok(n)
    }
}

/// Bytes stored in `new/` and `cur/` (`,S=` when the name has it, else `fstatat`), for
/// `--max-mailbox-size`. Only message files count (what `pop-serve` lists); files vanishing
/// meanwhile (a POP3 client deleting) are skipped.
fn maildir_size(folders: &Folders) -> Result<u64, DeliverError> {
    let mut total = 0u64;
    for dir in [&folders.new, &folders.cur] {
        let mut failed = None;
        dir.for_each_file(DIRENT_BUF_LEN, |name| {
            let size = match name_field(unique_part(name), b'S') {
                Some(s) => s,
                None => match dir.lstat(name) {
                    Ok(st) => u64::try_from(st.st_size).unwrap_or(0),
                    Err(e) if e.kind() == ErrorKind::NotFound => 0,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                },
            };
            total = total.saturating_add(size);
            true
        })
        .map_err(|e| DeliverError::Io("list the Maildir", e))?;
        if let Some(e) = failed {
            return Err(DeliverError::Io("stat a Maildir message", e));
        }
    }
    Ok(total)
}

/// The host name for unique names, with `/` and `:` written as `\057` and `\072` as the
/// Maildir specification asks (they would split the name).
pub fn hostname() -> String {
    let name = nix::unistd::gethostname().unwrap_or_default();
    let raw = name.as_bytes();
    let mut s = String::new();
    for &b in if raw.is_empty() { b"localhost" } else { raw } {
        match b {
            b'/' => s.push_str("\\057"),
            b':' => s.push_str("\\072"),
            b',' => s.push_str("\\054"),
            0x21..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s
}
