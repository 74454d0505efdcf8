//! Delivery into a Maildir: write in `tmp/`, fsync, link into `new/`, unlink, fsync `new/`
//! (qmail-local's `maildir_child`). No lock is needed: a message appears in `new/` complete
//! or not at all.
//!
//! The file name is `SECS.M<usec>P<pid>Q<n>.HOST,S=<size>,W=<pop3 size>`: unique per host
//! (the pid, the microseconds and a per-process counter), `,S=` the stored size and `,W=` the
//! canonical size `pop-serve` would compute (measured with the same code), so `pop-serve`
//! need not read the file to answer LIST. The unique part (the whole name, as there is no
//! `:2,` yet) is the message's UIDL.

use super::mbox::Common;
use super::spool::{Spooled, SPOOL_CHUNK};
use super::{DeliverError, Delivered, MAILDIR_MODE};
use crate::canon::{self, CanonOptions};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Attempts at finding a free name before giving up (a clash needs the same pid, second,
/// microsecond and counter: only a clock jumping back with pid reuse).
pub const MAX_NAME_ATTEMPTS: u32 = 10;

/// Delivers `spooled` into the Maildir at `root`, creating `tmp/`, `new/`, `cur/` if missing.
pub fn deliver(root: &Path, spooled: &Spooled, common: &Common) -> Result<Delivered, DeliverError> {
    prepare(root, common)?;
    if let Some(limit) = common.max_size {
        let size = maildir_size(root)?;
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
        let tmp = root.join("tmp").join(&base);
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(create_error(root, e)),
        };
        let r = write_and_link(&f, &tmp, root, &base, spooled);
        let _ = fs::remove_file(&tmp);
        match r {
            Ok(Some(path)) => {
                return Ok(Delivered {
                    path,
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

/// The Maildir and its three directories; created (0700) when missing. Something else in
/// their place is not a Maildir.
fn prepare(root: &Path, common: &Common) -> Result<(), DeliverError> {
    for dir in [
        root.to_path_buf(),
        root.join("tmp"),
        root.join("new"),
        root.join("cur"),
    ] {
        match fs::DirBuilder::new().mode(MAILDIR_MODE).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS)
                ) =>
            {
                return Err(DeliverError::CannotCreate(dir, e))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(DeliverError::NotAMailbox(root.into()))
            }
            Err(e) => return Err(DeliverError::Io("create the Maildir", e)),
        }
        let m = fs::symlink_metadata(&dir).map_err(|e| DeliverError::Io("stat the Maildir", e))?;
        if !m.is_dir() {
            return Err(DeliverError::NotAMailbox(root.into()));
        }
        if !common.me.is_root() && m.uid() != common.me.euid {
            return Err(DeliverError::NotPermitted(
                dir,
                format!("owned by uid {}, not {}", m.uid(), common.me.euid),
            ));
        }
    }
    Ok(())
}

/// Writes the message, fsyncs, measures its POP3 size, links it into `new/`. `Ok(None)`
/// when the final name exists already (try another).
fn write_and_link(
    f: &File,
    tmp: &Path,
    root: &Path,
    base: &str,
    spooled: &Spooled,
) -> Result<Option<PathBuf>, DeliverError> {
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
    let new = root.join("new").join(format!("{base},S={size},W={w}"));
    match fs::hard_link(tmp, &new) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(DeliverError::Io("link the message into new/", e)),
    }
    if let Err(e) = File::open(root.join("new")).and_then(|d| d.sync_all()) {
        // Not durable: withdraw it, so the MTA's retry cannot make a duplicate.
        let _ = fs::remove_file(&new);
        return Err(DeliverError::Io("sync new/", e));
    }
    Ok(Some(new))
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

/// Bytes stored in `new/` and `cur/` (`,S=` when the name has it, else `stat`), for
/// `--max-mailbox-size`. Files vanishing meanwhile (a POP3 client deleting) are skipped.
fn maildir_size(root: &Path) -> Result<u64, DeliverError> {
    let mut total = 0u64;
    for sub in ["new", "cur"] {
        let rd =
            fs::read_dir(root.join(sub)).map_err(|e| DeliverError::Io("list the Maildir", e))?;
        for entry in rd {
            let entry = entry.map_err(|e| DeliverError::Io("list the Maildir", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let from_name = name
                .split(':')
                .next()
                .and_then(|u| u.split(',').find_map(|f| f.strip_prefix("S=")))
                .and_then(|v| v.parse::<u64>().ok());
            let size = match from_name {
                Some(s) => s,
                None => match entry.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == ErrorKind::NotFound => 0,
                    Err(e) => return Err(DeliverError::Io("stat a Maildir message", e)),
                },
            };
            total = total.saturating_add(size);
        }
    }
    Ok(total)
}

/// The host name for unique names, with `/` and `:` written as `\057` and `\072` as the
/// Maildir specification asks (they would split the name).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for `buf.len()` bytes; gethostname writes at most that many.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let raw: &[u8] = if r == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        &buf[..end]
    } else {
        b"localhost"
    };
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
