//! `pop-spool create USER...`: the hash directories (root:mail 2775) and an empty mailbox
//! (user:mail 0600) for each user. Idempotent: what exists is left alone, and what differs
//! from the wanted owner or mode is only reported, unless `--fix` (an admin may have set a
//! mode on purpose; `create` must not silently undo it).

use super::{io_at, AdminError, Layout, PwUser, Ui, MAILBOX_MODE, SPOOL_DIR_MODE};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The owner, group and mode something in the spool should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 07777`).
    pub mode: u32,
}

impl Want {
    pub fn dir(mail_gid: u32) -> Want {
        Want {
            uid: 0,
            gid: mail_gid,
            mode: SPOOL_DIR_MODE,
        }
    }
    pub fn mailbox(user: &PwUser, mail_gid: u32) -> Want {
        Want {
            uid: user.uid,
            gid: mail_gid,
            mode: MAILBOX_MODE,
        }
    }

    /// How `m` differs, one phrase per difference (empty: as wanted).
    pub fn differences(&self, m: &fs::Metadata) -> Vec<String> {
        let mut d = Vec::new();
        if m.uid() != self.uid {
            d.push(format!("owner uid {} (want {})", m.uid(), self.uid));
        }
        if m.gid() != self.gid {
            d.push(format!("group gid {} (want {})", m.gid(), self.gid));
        }
        let mode = m.mode() & 0o7777;
        if mode != self.mode {
            d.push(format!("mode {mode:04o} (want {:04o})", self.mode));
        }
        d
    }

    /// Sets owner, group and mode through the open descriptor (never a path a user could
    /// swap for a symlink). chown first: it clears setgid bits, which the chmod restores.
    pub fn apply(&self, f: &File) -> io::Result<()> {
        std::os::unix::fs::fchown(f, Some(self.uid), Some(self.gid))?;
        f.set_permissions(fs::Permissions::from_mode(self.mode))
    }
}

/// Opens a directory without following a symlink in its last component.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// What happened to one directory or mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Ok,
    /// Was wrong, now fixed: what was wrong.
    Fixed(Vec<String>),
    /// Is wrong and was left alone (no `--fix`).
    Differs(Vec<String>),
}

/// Makes sure `dir` is a directory owned as `want`: created if missing; fixed if `fix`.
/// With `set_owner` false (not root) a created directory keeps our owner and is only chmod-ed.
pub fn ensure_dir(
    dir: &Path,
    want: Want,
    fix: bool,
    set_owner: bool,
) -> Result<Outcome, AdminError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let diff = want.differences(&m);
            if diff.is_empty() {
                return Ok(Outcome::Ok);
            }
            if !fix {
                return Ok(Outcome::Differs(diff));
            }
            let f = open_dir(dir).map_err(io_at("open directory", dir))?;
            want.apply(&f).map_err(io_at("fix directory", dir))?;
            Ok(Outcome::Fixed(diff))
        }
        Ok(_) => Err(AdminError::Io(
            format!("hash directory {}", dir.display()),
            io::Error::other("exists and is not a directory (or is a symlink)"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::create_dir(dir) {
                Ok(()) => {}
                // A concurrent run (or MDA) made it: fine, check it as existing.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return ensure_dir(dir, want, fix, set_owner)
                }
                Err(e) => return Err(io_at("create directory", dir)(e)),
            }
            let f = open_dir(dir).map_err(io_at("open directory", dir))?;
            // mkdir ignores the setgid bit and applies the umask: set the mode explicitly.
            if set_owner {
                want.apply(&f)
            } else {
                f.set_permissions(fs::Permissions::from_mode(want.mode))
            }
            .map_err(io_at("set owner and mode of", dir))?;
            Ok(Outcome::Created)
        }
        Err(e) => Err(io_at("stat", dir)(e)),
    }
}

/// Makes sure every hash directory of `user`'s mailbox exists; returns the worst outcome
/// per directory, outermost first.
pub fn ensure_hash_dirs(
    layout: &Layout,
    user: &[u8],
    want: Want,
    fix: bool,
    set_owner: bool,
) -> Result<Vec<(std::path::PathBuf, Outcome)>, AdminError> {
    let mut out = Vec::new();
    for d in layout.hash_dirs(user)? {
        let o = ensure_dir(&d, want, fix, set_owner)?;
        out.push((d, o));
    }
    Ok(out)
}

/// Counts of a `create` run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CreateReport {
    pub created: usize,
    pub existed: usize,
    pub fixed: usize,
    /// Differences left alone (no `--fix`).
    pub differs: usize,
    pub errors: usize,
}

/// Creates one user's mailbox (and hash directories).
pub fn create_one(
    layout: &Layout,
    user: &[u8],
    mail_gid: u32,
    fix: bool,
    ui: &mut Ui<'_>,
    report: &mut CreateReport,
) -> Result<(), AdminError> {
    let path = layout.mailbox(user)?;
    let pw = super::lookup_user(user)?.ok_or_else(|| {
        AdminError::Usage(format!(
            "no such user {:?} in the password database",
            super::show(user)
        ))
    })?;
    for (d, o) in ensure_hash_dirs(layout, user, Want::dir(mail_gid), fix, true)? {
        note(ui, report, &d, &o, false);
    }
    let want = Want::mailbox(&pw, mail_gid);
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MAILBOX_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path);
    let outcome = match created {
        Ok(f) => {
            want.apply(&f)
                .map_err(io_at("set owner and mode of", &path))?;
            f.sync_all().map_err(io_at("sync", &path))?;
            super::sync_dir(super::parent_of(&path))?;
            Outcome::Created
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = fs::symlink_metadata(&path).map_err(io_at("stat", &path))?;
            if !m.is_file() {
                return Err(AdminError::Io(
                    format!("mailbox {}", path.display()),
                    io::Error::other("exists and is not a regular file (or is a symlink)"),
                ));
            }
            let diff = want.differences(&m);
            if diff.is_empty() {
                Outcome::Ok
            } else if fix {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(io_at("open", &path))?;
                want.apply(&f).map_err(io_at("fix", &path))?;
                Outcome::Fixed(diff)
            } else {
                Outcome::Differs(diff)
            }
        }
        Err(e) => return Err(io_at("create mailbox", &path)(e)),
    };
    note(ui, report, &path, &outcome, true);
    Ok(())
}

fn note(ui: &mut Ui<'_>, r: &mut CreateReport, path: &Path, o: &Outcome, mailbox: bool) {
    let p = path.display();
    match o {
        Outcome::Created => {
            if mailbox {
                r.created += 1;
            }
            ui.say(&format!("created {p}"));
        }
        Outcome::Ok => {
            if mailbox {
                r.existed += 1;
                ui.say(&format!("exists  {p}"));
            }
        }
        Outcome::Fixed(d) => {
            r.fixed += 1;
            ui.say(&format!("fixed   {p}: {}", d.join(", ")));
        }
        Outcome::Differs(d) => {
            r.differs += 1;
            ui.say(&format!(
                "differs {p}: {} (not changed without --fix)",
                d.join(", ")
            ));
        }
    }
}

/// `pop-spool create`: every user in turn; one failing user does not stop the others.
pub fn create(
    layout: &Layout,
    users: &[Vec<u8>],
    fix: bool,
    ui: &mut Ui<'_>,
) -> Result<CreateReport, AdminError> {
    if !super::is_root() {
        return Err(AdminError::NeedRoot("create"));
    }
    // A name the spool refuses is misuse of the whole command (exit 100), not one failure.
    for u in users {
        layout.mailbox(u)?;
    }
    if !layout.spool.is_dir() {
        return Err(AdminError::Usage(format!(
            "spool directory {} does not exist",
            layout.spool.display()
        )));
    }
    let gid = super::lookup_group(super::MAIL_GROUP)?;
    let mut report = CreateReport::default();
    for (i, u) in users.iter().enumerate() {
        ui.tick("create", i, users.len());
        if let Err(e) = create_one(layout, u, gid, fix, ui, &mut report) {
            report.errors += 1;
            ui.warn(&format!("{}: {e}", super::show(u)));
        }
    }
    ui.done();
    Ok(report)
}
