//! Appending to an mbox: open (or create) safely, lock like every MDA, append all or nothing.
//!
//! What is written, at the old end of the file:
//!
//! 1. What the file needs to end in a blank line, if it does not already (`\n\n`, or
//!    `\n\r\n` in a CRLF mbox): nothing, `\n`, or `\n\n` (an empty file needs nothing). A
//!    previous message cut short by a crash or a full disk keeps its bytes and stays a
//!    separate message; our `From ` line is never glued to its last line.
//! 2. `From SENDER DATE\n`.
//! 3. The spooled message, every line matching `^>*From ` with one more `>` (mboxrd, which
//!    `pop-serve` undoes), headers included.
//! 4. A final `\n` if the message lacks one, then the empty separator line.
//!
//! The size is computed before writing and checked after: the bytes written are exactly
//! the ones `--max-mailbox-size` was checked against.

#![forbid(unsafe_code)]

use super::spool::{FromMatch, Spooled, SPOOL_CHUNK};
use super::{parent_of, DeliverError, Delivered, Identity, HASH_DIR_MODE};
use memchr::memchr;
use spool_store::lock::LockOptions;
use spool_store::mailbox::state_paths;
use spool_store::mbox::journal::{self, Recovered, Step, Then};
use spool_store::userfs::{Account, AsUser};
use spool_wire::limits::STALE_DOTLOCK_AGE;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often we start over when the mailbox was replaced (renamed over, recreated) between
/// opening and locking it. More than one replacement during one delivery means something is
/// fighting us; a temporary failure is the honest answer.
pub const MAX_REOPEN: u32 = 5;

/// Settings shared by every target.
#[derive(Debug, Clone)]
pub struct Common {
    pub helper: Option<PathBuf>,
    pub lock_wait: Duration,
    pub max_size: Option<u64>,
    pub(crate) me: Identity,
}

/// How a missing mailbox is created.
#[derive(Debug, Clone)]
pub struct Creation<'a> {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// Create missing hash directories below this spool directory (root:mail 2775 as root).
    pub hash_dirs_under: Option<&'a Path>,
}

/// One mbox to deliver to.
#[derive(Debug, Clone)]
pub struct MboxTarget<'a> {
    /// The mailbox's name: in messages, and what `pop-serve`'s state files are keyed by.
    pub path: &'a Path,
    /// Where it is opened, created and locked: `path`, or the same name through a pinned
    /// directory ([`super::pinned`]), so a path component swapped meanwhile redirects nothing.
    pub at: &'a Path,
    /// The uid the mailbox must belong to (`None`: anyone's, for root's explicit targets).
    pub owner: Option<u32>,
    pub create: Creation<'a>,
    /// `pop-serve`'s state directory for this mailbox (its update journal).
    pub state_dir: Option<PathBuf>,
    /// Whose state directory it is: as root, the journal is replayed with this account's
    /// file-system identity (the directory is the user's, and root must not follow paths a
    /// user controls). `None`: the owner of the mailbox file.
    pub state_owner: Option<Account>,
    /// The mailbox file's owner looked up before the process was confined (when it can no
    /// longer read the password database): its uid and account, if it has one.
    pub known_owner: Option<(u32, Option<Account>)>,
}

/// Delivers `spooled` into the mbox `t`. On error the mailbox is as it was.
pub fn deliver(
    t: &MboxTarget<'_>,
    spooled: &Spooled,
    from_line: &str,
    common: &Common,
) -> Result<Delivered, DeliverError> {
    for _ in 0..MAX_REOPEN {
        let file = open_or_create(t, common.me)?;
        let opts = LockOptions {
            helper: common.helper.clone(),
            wait: common.lock_wait,
            stale_age: STALE_DOTLOCK_AGE,
        };
        let lock_err = |e| match e {
            spool_store::error::MailboxError::LockTimeout(_) => {
                DeliverError::LockTimeout(t.path.into())
            }
            spool_store::error::MailboxError::Interrupted => DeliverError::Interrupted,
            e if t.at == t.path => DeliverError::Mailbox(e),
            // Both temporary: the message names the mailbox as the caller did.
            e => DeliverError::Io(
                "lock the mailbox",
                io::Error::other(shown(&e.to_string(), t)),
            ),
        };
        let r = journal::lock_and_replay(
            t.at,
            t.path,
            &file,
            &opts,
            |step, e| match step {
                Step::Lock => lock_err(e),
                Step::Replay => DeliverError::Mailbox(e),
            },
            |_| {
                // Renamed over or removed while we waited: the lock protects the wrong file.
                if !same_file(t.at, &file)? {
                    return Ok(Then::Reopen);
                }
                match &t.state_dir {
                    Some(dir) => {
                        let j = state_paths(dir, t.path).journal;
                        replay_as(j, &file, t, common.me)
                    }
                    None => Ok(Then::Skip(None)),
                }
            },
        )?;
        let Some(Recovered {
            lock,
            replayed,
            guard,
        }) = r
        else {
            continue;
        };
        drop(guard);
        let mut warnings: Vec<String> = lock.warnings().iter().map(|w| shown(w, t)).collect();
        if replayed {
            warnings.push("finished an interrupted POP3 update from its journal".into());
        }
        let bytes = append(
            &file,
            spooled,
            from_line,
            common.max_size,
            &super::interrupted,
        )?;
        if let Err(e) = lock.release() {
            // The message is durable: a failure now must not make the MTA send it again.
            warnings.push(format!("delivered, but releasing the lock failed: {e}"));
        }
        return Ok(Delivered {
            path: t.path.to_path_buf(),
            bytes,
            warnings,
        });
    }
    Err(DeliverError::Io(
        "lock the mailbox",
        io::Error::other("it was replaced repeatedly while we locked it"),
    ))
}

/// `text` about `t.at` as it would read about `t.path`.
fn shown(text: &str, t: &MboxTarget<'_>) -> String {
    if t.at == t.path {
        return text.to_string();
    }
    text.replace(&*t.at.to_string_lossy(), &t.path.to_string_lossy())
}

fn same_file(path: &Path, file: &File) -> Result<bool, DeliverError> {
    let fm = file
        .metadata()
        .map_err(|e| DeliverError::Io("stat the mailbox", e))?;
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.dev() == fm.dev() && m.ino() == fm.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DeliverError::Io("stat the mailbox", e)),
    }
}

/// Whether to replay `pop-serve`'s journal (under our content lock): if one is there. As root,
/// with the file-system identity of the state directory's user ([`AsUser`], the guard),
/// looking included: the journal lives in the user's home. A mailbox owned by a uid without
/// an account is appended to without a replay, which is safe (the journal's rounds never
/// write where we append, and its next replay cuts the old region out in front of our
/// message).
fn replay_as(
    journal_path: PathBuf,
    file: &File,
    t: &MboxTarget<'_>,
    me: Identity,
) -> Result<Then<Option<AsUser>>, DeliverError> {
    let looked_up;
    let owner = match t.state_owner.as_ref() {
        Some(a) => Some(a),
        None if me.is_root() => {
            let uid = file
                .metadata()
                .map_err(|e| DeliverError::Io("stat the mailbox", e))?
                .uid();
            looked_up = match &t.known_owner {
                // Root's own mailbox: root replays, with no lookup.
                _ if uid == 0 => None,
                Some((known, account)) if *known == uid => account.clone(),
                _ => Account::of_uid(uid)
                    .map_err(|e| DeliverError::Io("look up the mailbox owner", e))?,
            };
            match &looked_up {
                Some(a) => Some(a),
                None if uid == 0 => None,
                None => return Ok(Then::Skip(None)),
            }
        }
        None => None,
    };
    let as_user = AsUser::enter(owner)
        .map_err(|e| DeliverError::Io("take the user's file-system identity", e))?;
    let tmp = journal::tmp_path(&journal_path);
    let present = |p: &Path| fs::symlink_metadata(p).is_ok();
    if !present(&journal_path) && !present(&tmp) {
        return Ok(Then::Skip(Some(as_user)));
    }
    Ok(Then::Replay {
        journal: journal_path,
        guard: Some(as_user),
    })
}

/// Opens the mailbox read-write (fcntl write locks need it), never through a symlink, and
/// non-blocking so a FIFO in its place cannot hang us; creates it when missing.
fn open_or_create(t: &MboxTarget<'_>, me: Identity) -> Result<File, DeliverError> {
    for _ in 0..MAX_REOPEN {
        let r = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(t.at);
        match r {
            Ok(f) => return check(t, f),
            Err(e) if e.kind() == ErrorKind::NotFound => match create(t, me)? {
                Some(f) => return check(t, f),
                None => continue, // someone else created it meanwhile
            },
            Err(e) => return Err(open_error(t.path, e)),
        }
    }
    Err(DeliverError::Io(
        "open the mailbox",
        io::Error::other("it keeps appearing and vanishing"),
    ))
}

fn open_error(path: &Path, e: io::Error) -> DeliverError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => DeliverError::NotPermitted(path.into(), "it is a symlink".into()),
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            DeliverError::NotPermitted(path.into(), format!("cannot open it for writing: {e}"))
        }
        Some(libc::EISDIR | libc::ENXIO | libc::ENOTDIR) => DeliverError::NotAMailbox(path.into()),
        _ => DeliverError::Io("open the mailbox", e),
    }
}

/// A regular file with one link, owned by the right user: anything else is refused untouched
/// (a hard link could make us append to another user's file; mail.local checks the same).
fn check(t: &MboxTarget<'_>, f: File) -> Result<File, DeliverError> {
    let m = f
        .metadata()
        .map_err(|e| DeliverError::Io("stat the mailbox", e))?;
    if !m.file_type().is_file() {
        return Err(DeliverError::NotAMailbox(t.path.into()));
    }
    if m.nlink() != 1 {
        return Err(DeliverError::NotPermitted(
            t.path.into(),
            format!("it has {} hard links", m.nlink()),
        ));
    }
    if let Some(uid) = t.owner {
        if m.uid() != uid {
            return Err(DeliverError::NotPermitted(
                t.path.into(),
                format!("owned by uid {}, not {uid}", m.uid()),
            ));
        }
    }
    Ok(f)
}

/// Creates the mailbox under a private name, sets owner, group and mode, then links it into
/// place: it never exists with the wrong owner (a concurrent delivery would refuse it), and
/// two creators cannot both win. `Ok(None)`: somebody else created it first.
fn create(t: &MboxTarget<'_>, me: Identity) -> Result<Option<File>, DeliverError> {
    let dir = parent_of(t.at);
    if let Some(spool) = t.create.hash_dirs_under {
        make_hash_dirs(spool, dir, t.create.gid, me)?;
    }
    let name =
        t.at.file_name()
            .ok_or_else(|| DeliverError::NotAMailbox(t.path.into()))?;
    // `.NAME.pop-deliver.PID.N`, NAME shortened so that the whole is a file name: only the
    // pid and the counter need to make it unique.
    let tail = format!(
        ".pop-deliver.{}.{}",
        std::process::id(),
        super::unique_counter()
    );
    let keep = spool_store::spoolpath::NAME_MAX.saturating_sub(1 + tail.len());
    let mut private = b".".to_vec();
    private.extend(name.as_bytes().iter().take(keep));
    private.extend_from_slice(tail.as_bytes());
    let tmp = dir.join(std::ffi::OsStr::from_bytes(&private));
    let cant = |e: io::Error| match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            DeliverError::CannotCreate(t.path.into(), e)
        }
        Some(libc::ENOENT | libc::ENOTDIR) => DeliverError::CannotCreate(t.path.into(), e),
        _ => DeliverError::Io("create the mailbox", e),
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(cant)?;
    let result = (|| {
        if me.is_root() {
            std::os::unix::fs::fchown(&f, Some(t.create.uid), Some(t.create.gid))
                .map_err(|e| DeliverError::Io("set the mailbox owner", e))?;
        } else {
            // Group mail only if we are in it; otherwise the directory's group or ours.
            let _ = std::os::unix::fs::fchown(&f, None, Some(t.create.gid));
        }
        f.set_permissions(fs::Permissions::from_mode(t.create.mode & 0o7777))
            .map_err(|e| DeliverError::Io("set the mailbox mode", e))?;
        match fs::hard_link(&tmp, t.at) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(cant(e)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(true) => {
            spool_store::mbox::journal::sync_parent(t.at).map_err(DeliverError::Mailbox)?;
            Ok(Some(f))
        }
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the hash directories between `spool` and `dir`: root:GROUP 2775 as root (the
/// Debian spool layout `pop-dotlock` expects), the caller's otherwise. The spool itself
/// must exist: a missing spool is a setup problem we do not paper over.
pub(crate) fn make_hash_dirs(
    spool: &Path,
    dir: &Path,
    gid: u32,
    me: Identity,
) -> Result<(), DeliverError> {
    let Ok(rel) = dir.strip_prefix(spool) else {
        return Ok(());
    };
    if let Err(e) = fs::metadata(spool) {
        return Err(DeliverError::Io(
            "use the spool directory",
            io::Error::new(e.kind(), format!("{}: {e}", spool.display())),
        ));
    }
    let mut at = spool.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::DirBuilder::new().mode(HASH_DIR_MODE).create(&at) {
            Ok(()) => {
                if me.is_root() {
                    // Through a descriptor of what we just made, never by path: a group-mail
                    // writer of the spool could swap the name for a symlink meanwhile.
                    OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&at)
                        .and_then(|d| {
                            std::os::unix::fs::fchown(&d, Some(0), Some(gid))?;
                            d.set_permissions(fs::Permissions::from_mode(HASH_DIR_MODE))
                        })
                        .map_err(|e| DeliverError::Io("set up a spool hash directory", e))?;
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(DeliverError::CannotCreate(at, e)),
        }
    }
    Ok(())
}

/// What must precede our `From ` line so the file ends in a blank line first.
fn separator_needed(file: &File, size: u64) -> Result<&'static [u8], DeliverError> {
    if size == 0 {
        return Ok(b"");
    }
    let k = size.min(3) as usize;
    let mut tail = [0u8; 3];
    file.read_exact_at(&mut tail[..k], size - k as u64)
        .map_err(|e| DeliverError::Io("read the mailbox end", e))?;
    let tail = &tail[..k];
    Ok(
        if tail.ends_with(b"\n\n") || tail.ends_with(b"\n\r\n") || tail == b"\n" {
            b""
        } else if tail.ends_with(b"\n") {
            b"\n"
        } else {
            b"\n\n"
        },
    )
}

/// Appends under the caller's lock; on any error truncates back to the old size and fsyncs.
/// Returns the bytes added.
pub fn append(
    file: &File,
    spooled: &Spooled,
    from_line: &str,
    max_size: Option<u64>,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, DeliverError> {
    let old = file
        .metadata()
        .map_err(|e| DeliverError::Io("stat the mailbox", e))?
        .len();
    let sep = separator_needed(file, old)?;
    let add = sep.len() as u64 + from_line.len() as u64 + spooled.mbox_body_len();
    if let Some(limit) = max_size {
        if old.saturating_add(add) > limit {
            return Err(DeliverError::OverQuota {
                size: old,
                add,
                limit,
            });
        }
    }
    let r = write_message(file, old, sep, from_line, spooled, interrupted).and_then(|n| {
        if n != add {
            return Err(DeliverError::Io(
                "write the mailbox",
                io::Error::other(format!("wrote {n} bytes, expected {add}")),
            ));
        }
        file.sync_all()
            .map_err(|e| DeliverError::Io("sync the mailbox", e))
    });
    match r {
        Ok(()) => Ok(add),
        Err(e) => Err(truncate_back(file, old, e)),
    }
}

/// Undoes a failed append. If even that fails the error says so: the admin must look.
fn truncate_back(file: &File, old: u64, e: DeliverError) -> DeliverError {
    match file.set_len(old).and_then(|()| file.sync_all()) {
        Ok(()) => e,
        Err(t) => DeliverError::Io(
            "write the mailbox, and truncating it back failed",
            io::Error::other(format!("{e}; truncate: {t}")),
        ),
    }
}

/// Stages output and writes it at increasing offsets with `pwrite`.
struct AtWriter<'a> {
    file: &'a File,
    off: u64,
    buf: Vec<u8>,
    written: u64,
}

impl AtWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), DeliverError> {
        if self.buf.len() + b.len() > SPOOL_CHUNK {
            self.flush()?;
        }
        if b.len() >= SPOOL_CHUNK {
            self.write(b)
        } else {
            self.buf.extend_from_slice(b);
            Ok(())
        }
    }

    fn write(&mut self, b: &[u8]) -> Result<(), DeliverError> {
        self.file
            .write_all_at(b, self.off)
            .map_err(|e| DeliverError::Io("write the mailbox", e))?;
        self.off += b.len() as u64;
        self.written += b.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeliverError> {
        if !self.buf.is_empty() {
            let b = std::mem::take(&mut self.buf);
            let r = self.write(&b);
            self.buf = b;
            self.buf.clear();
            r?;
        }
        Ok(())
    }
}

fn write_message(
    file: &File,
    old: u64,
    sep: &[u8],
    from_line: &str,
    spooled: &Spooled,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, DeliverError> {
    let mut w = AtWriter {
        file,
        off: old,
        buf: Vec::with_capacity(SPOOL_CHUNK),
        written: 0,
    };
    w.put(sep)?;
    w.put(from_line.as_bytes())?;
    let mut buf = vec![0u8; SPOOL_CHUNK.min(spooled.len as usize).max(1)];
    let mut at = 0u64;
    let mut q = Quoter::default();
    while at < spooled.len {
        if interrupted() {
            return Err(DeliverError::Interrupted);
        }
        let n = (spooled.len - at).min(buf.len() as u64) as usize;
        spooled
            .file()
            .read_exact_at(&mut buf[..n], at)
            .map_err(|e| DeliverError::Io("read the temporary file", e))?;
        q.feed(&buf[..n], &mut w)?;
        at += n as u64;
    }
    q.finish(&mut w)?;
    if !spooled.ends_with_newline {
        w.put(b"\n")?;
    }
    w.put(b"\n")?;
    w.flush()?;
    Ok(w.written)
}

/// mboxrd quoting while copying: the bytes at a line start that could still be `>*From `
/// are held back as a count (all `>` then a prefix of `From `), then written with or without
/// the extra `>`. Memory is constant whatever the line.
#[derive(Default)]
struct Quoter {
    mid_line: bool,
    gts: u64,
    from_k: u8,
}

impl Quoter {
    fn held(&self, quote: bool, w: &mut AtWriter<'_>) -> Result<(), DeliverError> {
        const GTS: [u8; 64] = [b'>'; 64];
        let mut n = self.gts + u64::from(quote);
        while n > 0 {
            let k = n.min(64) as usize;
            w.put(&GTS[..k])?;
            n -= k as u64;
        }
        w.put(&b"From "[..usize::from(self.from_k)])
    }

    fn feed(&mut self, mut b: &[u8], w: &mut AtWriter<'_>) -> Result<(), DeliverError> {
        while !b.is_empty() {
            if !self.mid_line {
                // Deciding: consume bytes while they may still form `>*From `.
                let mut m = if self.from_k == 0 {
                    FromMatch::Open(0)
                } else {
                    FromMatch::Open(self.from_k)
                };
                let mut i = 0;
                while i < b.len() {
                    let next = m.step(b[i]);
                    match next {
                        FromMatch::Open(k) => {
                            if k == 0 {
                                self.gts += 1;
                            } else {
                                self.from_k = k;
                            }
                            i += 1;
                        }
                        FromMatch::Yes => {
                            self.from_k = 5;
                            self.held(true, w)?;
                            i += 1;
                            self.reset_mid();
                            break;
                        }
                        FromMatch::No => {
                            self.held(false, w)?;
                            self.reset_mid();
                            break;
                        }
                    }
                    m = next;
                }
                b = &b[i..];
                continue;
            }
            match memchr(b'\n', b) {
                Some(i) => {
                    w.put(&b[..=i])?;
                    b = &b[i + 1..];
                    self.mid_line = false;
                }
                None => {
                    w.put(b)?;
                    b = &[];
                }
            }
        }
        Ok(())
    }

    fn reset_mid(&mut self) {
        self.mid_line = true;
        self.gts = 0;
        self.from_k = 0;
    }

    fn finish(&mut self, w: &mut AtWriter<'_>) -> Result<(), DeliverError> {
        if !self.mid_line {
            self.held(false, w)?;
            self.reset_mid();
        }
        Ok(())
    }
}
