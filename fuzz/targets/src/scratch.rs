//! The private directory where file-reading targets put their inputs.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use tempfile::TempDir;

thread_local! {
    /// One directory per thread: targets may run on several threads at once (the tests do).
    static DIR: RefCell<Option<TempDir>> = const { RefCell::new(None) };
}

/// The scratch directory, created on first use: in /dev/shm when there is one (the targets
/// that write indexes and journals fsync them, which costs nothing on tmpfs), else in the
/// temporary directory.
pub(crate) fn dir() -> PathBuf {
    DIR.with_borrow_mut(|d| {
        d.get_or_insert_with(|| {
            let b = {
                let mut b = tempfile::Builder::new();
                b.prefix("spool-fuzz-");
                b
            };
            b.tempdir_in("/dev/shm")
                .or_else(|_| b.tempdir())
                .expect("create the fuzz scratch directory")
        })
        .path()
        .to_path_buf()
    })
}

/// Deletes this thread's scratch directory (a later target call makes a new one). Other
/// threads' directories go when the threads end.
pub fn remove_scratch() {
    DIR.with_borrow_mut(|d| d.take());
}

/// `name` in the scratch directory, holding exactly `bytes`, open for reading and writing.
pub(crate) fn file(name: &str, bytes: &[u8]) -> (PathBuf, File) {
    let path = dir().join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create a scratch file");
    f.write_all_at(bytes, 0).expect("write a scratch file");
    (path, f)
}

/// A fresh empty subdirectory `name` of the scratch directory.
pub(crate) fn subdir(name: &str) -> PathBuf {
    let p = dir().join(name);
    match fs::remove_dir_all(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("clear {}: {e}", p.display()),
    }
    fs::create_dir(&p).expect("create a scratch subdirectory");
    p
}
