//! Seeds made by the real code: the mbox samples' indexes as `pop-serve` writes them, the
//! journals an UPDATE leaves when it is killed at several points, and a Maildir's index.

use spool_fuzz_targets::split::join;
use spool_store::mailbox::{state_paths, MailboxSpec, OpenOptions};
use spool_store::mbox::journal::{self, Crash};
use std::fs;
use std::path::Path;

/// Small mboxes that reach the scanner's cases: LF and CRLF, quoting, spool headers, a
/// separator blank line or none, a preamble, an unterminated last message, a NUL.
pub const MBOXES: &[&[u8]] = &[
    b"From a@example.org Thu Jan  1 00:00:00 1970\nSubject: one\nStatus: RO\n\nbody\n>From quoted\n.dot\n\nFrom c@example.org Fri Jan  2 00:00:00 1970\nSubject: two\n\nline\n",
    b"From x Mon Jan  5 00:00:00 2026\r\nX-UID: 7\r\n Continued\r\nSubject: crlf\r\n\r\n..two dots\r\n.\r\n\r\nFrom y Mon Jan  5 00:00:01 2026\r\nSubject: same\r\n\r\nFrom y Mon Jan  5 00:00:01 2026\r\nSubject: same\r\n\r\n",
    b"preamble that is not a message\nFrom a\nSubject: no blank line before the next\nFrom b\n\nno final newline",
    b"From only-a-from-line-without-newline",
    b"From n\nContent-Length: 3\n\na\0b\n>>From deep\n\n\nFrom m\n\n",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::write(dir.join(name), bytes).map_err(|e| format!("{}: {e}", dir.display()))
}

pub fn make(out: &Path) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let state = tmp.path().join("state");
    fs::create_dir(&state).map_err(|e| e.to_string())?;
    let opts = OpenOptions::with_state_dir(state.clone());
    for (k, mbox) in MBOXES.iter().enumerate() {
        // mbox_scan: the mailbox under each quoting and header option.
        for flags in [0u8, 5, 2 | 0x18] {
            let mut v = vec![flags];
            v.extend_from_slice(mbox);
            write(&out.join("mbox_scan"), &format!("sample{k}-{flags}"), &v)?;
        }

        // mbox_index: the index pop-serve's open writes (mboxrd, headers hidden: flags 5),
        // as is (refused as made for another file) and fixed up (bit 3).
        let path = tmp.path().join(format!("mbox{k}"));
        fs::write(&path, mbox).map_err(|e| e.to_string())?;
        drop(
            spool_store::open(&MailboxSpec::Mbox(path.clone()), &opts)
                .map_err(|e| format!("open {}: {e}", path.display()))?,
        );
        if let Ok(index) = fs::read(state_paths(&state, &path).index) {
            for flags in [5u8, 5 | 8] {
                let v = join(flags, mbox, &index).ok_or("sample too long")?;
                write(&out.join("mbox_index"), &format!("sample{k}-{flags}"), &v)?;
            }
        }

        // mbox_journal: plans for the target to carry out, and journals left by an update
        // killed at several points, with the mailbox as the crash left it.
        for (j, plan) in [[0u8, 0, 0, 40, 0, 0, 0, 0, 0, 8, 0, 5, 3, 0, 0, 0, 9, 0]]
            .iter()
            .enumerate()
        {
            for flags in [0u8, 6] {
                let v = join(flags, mbox, plan).ok_or("sample too long")?;
                write(
                    &out.join("mbox_journal"),
                    &format!("plan{k}-{j}-{flags}"),
                    &v,
                )?;
            }
        }
        let len = mbox.len() as u64;
        if len < 64 {
            continue;
        }
        for (c, crash) in [
            Crash::AfterRecord(1),
            Crash::TornRecord(1),
            Crash::MidCopy(5),
        ]
        .into_iter()
        .enumerate()
        {
            let m = tmp.path().join(format!("crash{k}-{c}"));
            fs::write(&m, mbox).map_err(|e| e.to_string())?;
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&m)
                .map_err(|e| e.to_string())?;
            let jpath = tmp.path().join(format!("crash{k}-{c}.journal"));
            let delete = [0..len / 3, len / 2..len / 2 + 2];
            journal::compact(&jpath, &file, &delete, len, 4, crash).map_err(|e| e.to_string())?;
            let Ok(jbytes) = fs::read(&jpath) else {
                continue;
            };
            let now = fs::read(&m).map_err(|e| e.to_string())?;
            // Raw mode (bit 0) with the inode fixed up (bit 1).
            let v = join(3, &now, &jbytes).ok_or("sample too long")?;
            write(&out.join("mbox_journal"), &format!("crash{k}-{c}"), &v)?;
        }
    }

    // maildir_index: the index a session writes for a small Maildir.
    let md = tmp.path().join("Maildir");
    for d in ["new", "cur", "tmp"] {
        fs::create_dir_all(md.join(d)).map_err(|e| e.to_string())?;
    }
    let files: [(&str, &[u8]); 4] = [
        ("new/1700000000.M1P2.host,S=18", b"Subject: a\n\nbody\n"),
        ("new/1700000001.M3P4.host", b"Subject: b\r\n\r\nx\r\n"),
        ("cur/1600000000.M5P6.host,S=4,W=5:2,S", b"a\nb\n"),
        ("cur/bad uidl name:2,FS", b"no header\n"),
    ];
    for (name, body) in files {
        fs::write(md.join(name), body).map_err(|e| e.to_string())?;
    }
    drop(
        spool_store::open(&MailboxSpec::Maildir(md.clone()), &opts)
            .map_err(|e| format!("open the Maildir: {e}"))?,
    );
    let index =
        fs::read(state_paths(&state, &md).index).map_err(|e| format!("the Maildir index: {e}"))?;
    for flags in [0u8, 1] {
        let mut v = vec![flags];
        v.extend_from_slice(&index);
        write(&out.join("maildir_index"), &format!("session-{flags}"), &v)?;
    }
    Ok(())
}
