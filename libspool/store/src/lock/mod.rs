//! The two locks: a session lock (one POP3 session per mailbox, dies with the process) and the
//! content lock (dotlock then fcntl, the MTAs' order), held only while reading the extent and
//! while committing.
//!
//! `session`: the session lock; `content`: the content lock; `read`: the read lock a session
//! takes instead of the content lock when it only reads the extent; `dotlock`: the side of
//! `pop-dotlock`, the setgid-mail helper that creates the dotlock where the user may not
//! (Debian's root:mail 2775 spool directories); `file`: what a dotlock file is and how one is
//! inspected; `wait`: bounded waits and the stop flag.
//!
//! Dotlocks are created with `O_CREAT|O_EXCL|O_NOFOLLOW` and hold the creator's pid, as
//! liblockfile, procmail and Postfix do: atomic on local filesystems and NFSv3+ (NFSv2, where
//! only the link()-based scheme is safe, is not supported). That keeps a crash from leaving
//! extra temporary files in the spool.
//!
//! The one rule: a file at a dotlock's name is broken only if it can be a dotlock, a small
//! regular file (see [`inspect_dotlock`]); anything else there (a mailbox, a symlink, a FIFO)
//! is respected as somebody else's and never read past [`MAX_DOTLOCK_SIZE`] bytes. Every wait
//! ends at once when the program's signal handler calls [`request_stop`].

#![forbid(unsafe_code)]

mod content;
mod dotlock;
pub(crate) mod file;
mod read;
mod session;
mod wait;

pub use content::{ContentLock, LockOptions};
pub use dotlock::{
    dotlock_helper, dotlock_helper_main, harden_setgid_process, HelperAction, HelperError,
    HelperOutcome, HELPER_EXIT_BUSY, HELPER_EXIT_OK, HELPER_EXIT_REFUSED, HELPER_EXIT_SYSTEM,
};
pub use file::{
    dead_owner, dotlock_path, inspect_dotlock, DotlockFile, LockFile, DOTLOCK_MODE, DOTLOCK_SUFFIX,
    MAX_DOTLOCK_SIZE,
};
pub use read::{ReadLock, READ_LOCK_ATTEMPTS, READ_LOCK_DOTLOCK_WAIT};
pub use session::{SessionLock, SESSION_LOCK_MODE, STATE_DIR_MODE};
pub use wait::{
    request_stop, stop_requested, DOTLOCK_BACKOFF_MAX, LOCK_POLL_INTERVAL, STOP_CHECK_INTERVAL,
};

#[cfg(test)]
mod tests {
    use super::content::*;
    use super::dotlock::*;
    use super::file::*;
    use super::session::*;
    use super::wait::*;
    use crate::error::MailboxError;
    use nix::sys::stat::Mode;
    use spool_wire::limits::STALE_DOTLOCK_AGE;
    use std::fs::{self, File, OpenOptions};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, SystemTime};

    const SHORT: Duration = Duration::from_millis(200);

    fn opts(wait: Duration) -> LockOptions {
        LockOptions {
            helper: None,
            wait,
            stale_age: STALE_DOTLOCK_AGE,
        }
    }

    fn mailbox() -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claird");
        fs::write(&path, b"From a Mon Jan  1 00:00:00 2024\n\nx\n\n").unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, path, f)
    }

    /// Another process's lock, as seen from here: an open-file-description lock conflicts
    /// with our POSIX locks even inside one process (Linux).
    fn foreign_lock(path: &Path) -> Option<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let fl = lock_record(libc::F_WRLCK);
        match nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => Some(f),
            Err(_) => None,
        }
    }

    fn backdate(path: &Path, by: Duration) {
        let t = SystemTime::now() - by;
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn session_lock_creates_private_dir_and_excludes_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state/x.lock");
        let l = SessionLock::acquire(&path, SHORT).unwrap();
        let dm = fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dm.permissions().mode() & 0o777, STATE_DIR_MODE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            SESSION_LOCK_MODE
        );
        // (Reading the file here would open and close a descriptor of it, which drops
        // every POSIX lock this process has on it.)
        assert!(foreign_lock(&path).is_none(), "session lock not held");
        drop(l);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        let other = foreign_lock(&path).expect("released on drop");
        let t = Instant::now();
        assert!(matches!(
            SessionLock::acquire(&path, SHORT),
            Err(MailboxError::InUse)
        ));
        assert!(t.elapsed() >= SHORT);
        drop(other);
        SessionLock::acquire(&path, SHORT).unwrap();
    }

    #[test]
    fn session_lock_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"").unwrap();
        let path = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(
            SessionLock::acquire(&path, SHORT),
            Err(MailboxError::Io(..))
        ));
    }

    #[test]
    fn content_lock_takes_dotlock_then_fcntl_and_releases_both() {
        let (_d, path, f) = mailbox();
        let lp = dotlock_path(&path);
        let l = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap();
        assert!(l.warnings().is_empty());
        assert_eq!(
            fs::read_to_string(&lp).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert!(foreign_lock(&path).is_none(), "fcntl lock not held");
        l.release().unwrap();
        assert!(!lp.exists());
        assert!(foreign_lock(&path).is_some());
        // Drop releases too.
        let l = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap();
        drop(l);
        assert!(!lp.exists());
        assert!(foreign_lock(&path).is_some());
    }

    #[test]
    fn relative_mailbox_path_locks_the_same_file() {
        let (d, path, f) = mailbox();
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(&path, &cwd);
        let l = ContentLock::acquire(&rel, &f, &opts(SHORT)).unwrap();
        assert!(dotlock_path(&path).exists());
        drop(l);
        assert!(!dotlock_path(&path).exists());
        drop(d);
    }

    fn pathdiff(path: &Path, base: &Path) -> PathBuf {
        let up: PathBuf = base.components().skip(1).map(|_| "..").collect();
        up.join(path.strip_prefix("/").unwrap())
    }

    #[test]
    fn busy_fresh_dotlock_times_out_and_is_left_alone() {
        let (_d, path, f) = mailbox();
        let lp = dotlock_path(&path);
        fs::write(&lp, b"1\n").unwrap();
        let t = Instant::now();
        let e = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap_err();
        assert!(matches!(e, MailboxError::LockTimeout(_)), "{e}");
        assert!(t.elapsed() >= SHORT);
        assert_eq!(fs::read(&lp).unwrap(), b"1\n");
    }

    #[test]
    fn stale_rule_needs_both_old_lock_and_quiet_mailbox() {
        let hour = Duration::from_secs(3600);
        // (lock age, mailbox age, broken?)
        let table = [
            (hour, hour, true),
            (hour, Duration::ZERO, false),
            (Duration::ZERO, hour, false),
        ];
        for (lock_age, box_age, broken) in table {
            let (_d, path, f) = mailbox();
            let lp = dotlock_path(&path);
            fs::write(&lp, b"1\n").unwrap();
            backdate(&lp, lock_age);
            backdate(&path, box_age);
            let r = ContentLock::acquire(&path, &f, &opts(SHORT));
            assert_eq!(r.is_ok(), broken, "{lock_age:?} {box_age:?}");
            if let Ok(l) = r {
                assert_eq!(l.warnings().len(), 1);
                assert!(l.warnings()[0].contains("stale dotlock"));
                drop(l);
                assert!(!lp.exists());
            } else {
                assert_eq!(fs::read(&lp).unwrap(), b"1\n");
            }
        }
    }

    #[test]
    fn dotlock_appears_with_its_pid_and_nothing_else_is_left() {
        let (d, path, file) = mailbox();
        let before: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let l = ContentLock::acquire(&path, &file, &opts(SHORT)).unwrap();
        let lp = dotlock_path(&path);
        assert_eq!(
            fs::read(&lp).unwrap(),
            format!("{}\n", std::process::id()).into_bytes()
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&lp).unwrap().permissions().mode() & 0o777,
            DOTLOCK_MODE
        );
        let during: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            during.len(),
            before.len() + 1,
            "only the dotlock was added: {during:?}"
        );
        l.release().unwrap();
        assert!(!lp.exists());
    }

    #[test]
    fn dotlock_of_a_dead_process_is_broken_at_once() {
        let (_d, path, file) = mailbox();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        fs::write(dotlock_path(&path), format!("{pid}\n")).unwrap();
        let l = ContentLock::acquire(&path, &file, &opts(Duration::from_millis(300))).unwrap();
        assert!(l.warnings()[0].contains("is gone"), "{:?}", l.warnings());
        l.release().unwrap();
        // A live creator (ourselves) and a lock without a pid are respected.
        fs::write(dotlock_path(&path), format!("{}\n", std::process::id())).unwrap();
        assert!(ContentLock::acquire(&path, &file, &opts(Duration::from_millis(200))).is_err());
        fs::write(dotlock_path(&path), b"").unwrap();
        assert!(ContentLock::acquire(&path, &file, &opts(Duration::from_millis(200))).is_err());
        assert_eq!(dead_owner(b"1\n"), None);
        assert_eq!(dead_owner(b"abc"), None);
    }

    #[test]
    fn only_a_small_regular_file_can_be_a_dotlock() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        fs::write(p("empty"), b"").unwrap();
        fs::write(p("pid"), b"12345\n").unwrap();
        fs::write(p("max"), vec![b'1'; MAX_DOTLOCK_SIZE as usize]).unwrap();
        fs::write(p("big"), vec![b'1'; MAX_DOTLOCK_SIZE as usize + 1]).unwrap();
        fs::write(p("mail"), b"From a\n\nx\n").unwrap();
        std::os::unix::fs::symlink("/dev/zero", p("zero")).unwrap();
        std::os::unix::fs::symlink(p("pid"), p("link")).unwrap();
        nix::unistd::mkfifo(&p("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        fs::create_dir(p("dir")).unwrap();
        let lock = |n: &str| match inspect_dotlock(&p(n)).unwrap() {
            DotlockFile::Lock(l) => Some(l.content),
            DotlockFile::NotALock(_) => None,
            DotlockFile::Missing => panic!("{n} missing"),
        };
        assert_eq!(lock("empty"), Some(vec![]));
        assert_eq!(lock("pid"), Some(b"12345\n".to_vec()));
        assert_eq!(
            lock("max").map(|c| c.len()),
            Some(MAX_DOTLOCK_SIZE as usize)
        );
        for n in ["big", "mail", "zero", "link", "fifo", "dir"] {
            assert_eq!(lock(n), None, "{n}");
        }
        assert_eq!(inspect_dotlock(&p("none")).unwrap(), DotlockFile::Missing);
    }

    /// The mailbox of a user named like the lock (`claird.lock`), old and quiet: never
    /// broken; the wait ends with an error that says what is in the way.
    #[test]
    fn a_mailbox_at_the_dotlock_name_is_never_broken() {
        let (_d, path, f) = mailbox();
        let lp = dotlock_path(&path);
        let mail = b"From x Mon Jan  1 00:00:00 2024\nSubject: mine\n\nbody\n\n".to_vec();
        let big = vec![b'7'; 2 * MAX_DOTLOCK_SIZE as usize];
        for content in [mail, big] {
            fs::write(&lp, &content).unwrap();
            backdate(&lp, STALE_DOTLOCK_AGE * 2);
            backdate(&path, STALE_DOTLOCK_AGE * 2);
            let e = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap_err();
            assert!(e.to_string().contains("is not a dotlock"), "{e}");
            assert_eq!(fs::read(&lp).unwrap(), content);
            assert_eq!(
                dotlock_helper(HelperAction::Lock, &path, me()).map_err(|e| e.exit_code()),
                Err(HELPER_EXIT_REFUSED)
            );
            assert_eq!(fs::read(&lp).unwrap(), content);
        }
    }

    #[test]
    fn helper_refuses_a_mailbox_named_like_a_lock() {
        let (d, path, _f) = mailbox();
        let named = d.path().join("claird.lock");
        fs::rename(&path, &named).unwrap();
        for action in [HelperAction::Lock, HelperAction::Unlock] {
            let r = dotlock_helper(action, &named, me());
            assert!(refused(r.clone()), "{r:?}");
        }
        assert!(!d.path().join("claird.lock.lock").exists());
    }

    #[test]
    fn fcntl_busy_times_out_and_removes_our_dotlock() {
        let (_d, path, f) = mailbox();
        let _other = foreign_lock(&path).unwrap();
        let e = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap_err();
        assert!(matches!(e, MailboxError::LockTimeout(_)), "{e}");
        assert!(!dotlock_path(&path).exists());
    }

    #[test]
    fn release_never_removes_somebody_elses_dotlock() {
        let (_d, path, f) = mailbox();
        let lp = dotlock_path(&path);
        let l = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap();
        // Someone broke ours and took their own.
        fs::remove_file(&lp).unwrap();
        fs::write(&lp, b"other\n").unwrap();
        l.release().unwrap();
        assert_eq!(fs::read(&lp).unwrap(), b"other\n");
    }

    /// A stand-in for pop-dotlock that logs its calls; only builtins and absolute paths,
    /// as it runs with an empty environment.
    fn fake_helper(dir: &Path) -> (PathBuf, PathBuf) {
        let log = dir.join("helper.log");
        let script = dir.join("helper.sh");
        let text = format!(
            "#!/bin/sh\necho \"$1 $2 ${{HOME:-noenv}}\" >> '{}'\n\
             case $1 in\n  lock) set -C; (echo $PPID > \"$2.lock\") 2>/dev/null && exit 0; exit 1;;\n  \
             unlock) /bin/rm -f \"$2.lock\"; exit 0;;\n  *) echo 'bad usage' >&2; exit 100;;\nesac\n",
            log.display()
        );
        fs::write(&script, text).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        (script, log)
    }

    #[test]
    fn helper_path_locks_and_unlocks_through_the_helper() {
        let (d, path, f) = mailbox();
        let (helper, log) = fake_helper(d.path());
        let o = LockOptions {
            helper: Some(helper),
            ..opts(SHORT)
        };
        let l = ContentLock::acquire_inner(&path, &f, &o, true).unwrap();
        assert_eq!(
            fs::read_to_string(dotlock_path(&path)).unwrap(),
            our_dotlock_content()
        );
        assert!(foreign_lock(&path).is_none());
        l.release().unwrap();
        assert!(!dotlock_path(&path).exists());
        let calls = fs::read_to_string(&log).unwrap();
        let want = format!("lock {p} noenv\nunlock {p} noenv\n", p = path.display());
        assert_eq!(calls, want);
        // Busy through the helper: a timeout, and the holder's lock stays.
        fs::write(dotlock_path(&path), b"1\n").unwrap();
        let e = ContentLock::acquire_inner(&path, &f, &o, true).unwrap_err();
        assert!(matches!(e, MailboxError::LockTimeout(_)), "{e}");
        assert_eq!(fs::read(dotlock_path(&path)).unwrap(), b"1\n");
    }

    #[test]
    fn helper_failure_is_an_error_with_its_message() {
        let (d, path, f) = mailbox();
        let (helper, _log) = fake_helper(d.path());
        let bad = d.path().join("bad.sh");
        fs::write(&bad, "#!/bin/sh\necho 'refused: not yours' >&2\nexit 100\n").unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
        for h in [bad, d.path().join("missing")] {
            let o = LockOptions {
                helper: Some(h),
                ..opts(SHORT)
            };
            let e = ContentLock::acquire_inner(&path, &f, &o, true).unwrap_err();
            assert!(matches!(e, MailboxError::Io(..)), "{e}");
        }
        drop(helper);
        assert!(!dotlock_path(&path).exists());
    }

    #[test]
    fn denied_without_helper_is_an_error() {
        // Root ignores directory permissions; the EACCES branch is exercised by CI as a user.
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let (d, path, f) = mailbox();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o555)).unwrap();
        let e = ContentLock::acquire(&path, &f, &opts(SHORT)).unwrap_err();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(e, MailboxError::Io(..)), "{e}");
    }

    fn me() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn refused(r: Result<HelperOutcome, HelperError>) -> bool {
        matches!(r, Err(HelperError::Refused(_)))
    }

    #[test]
    fn helper_locks_only_the_callers_own_regular_mailbox() {
        let (d, path, _f) = mailbox();
        let sub = d.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let cases: Vec<(PathBuf, u32, &str)> = vec![
            (PathBuf::from("relative/box"), me(), "relative"),
            (PathBuf::from("/"), me(), "root dir"),
            (d.path().join("nobox"), me(), "missing"),
            (d.path().join("nodir/box"), me(), "missing dir"),
            (sub.clone(), me(), "directory"),
            (link.clone(), me(), "symlink"),
            (path.clone(), me().wrapping_add(1), "other owner"),
        ];
        for (p, uid, what) in cases {
            for action in [HelperAction::Lock, HelperAction::Unlock] {
                let r = dotlock_helper(action, &p, uid);
                assert!(refused(r.clone()), "{what} {action:?}: {r:?}");
                assert_eq!(r.unwrap_err().exit_code(), HELPER_EXIT_REFUSED);
            }
        }
        assert!(!dotlock_path(&link).exists());
        assert!(!dotlock_path(&path).exists());
    }

    #[test]
    fn helper_lock_busy_unlock_cycle() {
        let (_d, path, _f) = mailbox();
        let lp = dotlock_path(&path);
        let lock = |a| dotlock_helper(a, &path, me());
        assert_eq!(lock(HelperAction::Lock), Ok(HelperOutcome::Locked));
        assert_eq!(
            fs::read_to_string(&lp).unwrap(),
            format!("{}\n", nix::unistd::getppid())
        );
        assert_eq!(
            fs::metadata(&lp).unwrap().permissions().mode() & 0o777,
            DOTLOCK_MODE
        );
        assert_eq!(lock(HelperAction::Lock), Ok(HelperOutcome::Busy));
        assert_eq!(HelperOutcome::Busy.exit_code(), HELPER_EXIT_BUSY);
        assert_eq!(lock(HelperAction::Unlock), Ok(HelperOutcome::Unlocked));
        assert!(!lp.exists());
        // Unlocking what is not there is fine (idempotent release).
        assert_eq!(lock(HelperAction::Unlock), Ok(HelperOutcome::Unlocked));
    }

    #[test]
    fn helper_applies_the_fixed_stale_rule() {
        let old = STALE_DOTLOCK_AGE + Duration::from_secs(60);
        let table = [
            (old, old, HelperOutcome::Locked),
            (old, Duration::ZERO, HelperOutcome::Busy),
            (Duration::ZERO, old, HelperOutcome::Busy),
        ];
        for (lock_age, box_age, want) in table {
            let (_d, path, _f) = mailbox();
            let lp = dotlock_path(&path);
            fs::write(&lp, b"1\n").unwrap();
            backdate(&lp, lock_age);
            backdate(&path, box_age);
            assert_eq!(dotlock_helper(HelperAction::Lock, &path, me()), Ok(want));
        }
    }

    #[test]
    fn helper_unlock_removes_only_a_regular_file_of_the_caller() {
        let (d, path, _f) = mailbox();
        let lp = dotlock_path(&path);
        let target = d.path().join("precious");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, &lp).unwrap();
        assert!(refused(dotlock_helper(HelperAction::Unlock, &path, me())));
        assert!(refused(dotlock_helper(HelperAction::Lock, &path, me())));
        assert!(fs::symlink_metadata(&lp).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        fs::remove_file(&lp).unwrap();
        fs::create_dir(&lp).unwrap();
        assert!(refused(dotlock_helper(HelperAction::Unlock, &path, me())));
        fs::remove_dir(&lp).unwrap();
        // An MDA's dotlock (another owner) cannot be removed by the user: needs root to set up.
        if nix::unistd::geteuid().is_root() {
            fs::write(&lp, b"1\n").unwrap();
            let other = nix::unistd::Uid::from_raw(4242);
            nix::unistd::chown(&path, Some(other), None).unwrap();
            assert!(refused(dotlock_helper(HelperAction::Unlock, &path, 4242)));
            assert!(lp.exists());
            nix::unistd::chown(&lp, Some(other), None).unwrap();
            assert_eq!(
                dotlock_helper(HelperAction::Unlock, &path, 4242),
                Ok(HelperOutcome::Unlocked)
            );
        }
    }
}
