//! What the `mbox_journal` target found, as tests of the behaviour wanted: a record damaged
//! in the middle of the log is refused, never taken for the torn end; mail appended after the
//! truncate is kept whatever its bytes (doc/DESIGN.md, "The update journal").

use spool_store::error::MailboxError;
use spool_store::mbox::journal::{self, Crash, Reached};
use std::fs;
use std::ops::Range;

const MBOX: &[u8] = b"From a@example.org Thu Jan  1 00:00:00 1970\nSubject: one\nStatus: RO\n\nbody\n>From quoted\n.dot\n\nFrom c@example.org Fri Jan  2 00:00:00 1970\nSubject: two\n\nline\n";

fn cut(mbox: &[u8], r: Range<usize>) -> Vec<u8> {
    [&mbox[..r.start], &mbox[r.end..]].concat()
}

/// A round record damaged in the middle of the log, after later rounds were copied: the
/// replay refuses the journal and touches neither it nor the mailbox, never reports success
/// with a wrong mailbox.
#[test]
fn a_damaged_record_mid_log_is_not_taken_for_the_torn_end() {
    let dir = tempfile::tempdir().unwrap();
    let (m, j) = (dir.path().join("mbox"), dir.path().join("mbox.journal"));
    fs::write(&m, MBOX).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&m)
        .unwrap();
    let len = MBOX.len() as u64;
    let delete = std::slice::from_ref(&(2..40));
    let reached = journal::compact(&j, &file, delete, len, 1, Crash::BeforeTruncate).unwrap();
    assert_eq!(reached, Reached::Crashed);
    // Byte 304: the stream offset `t` of round 1, the second record of the log (header 176
    // bytes, one piece of 16, round 0's record of 96 with nothing saved).
    let mut bytes = fs::read(&j).unwrap();
    assert_eq!(&bytes[288..296], b"POPSPRND");
    bytes[304] ^= 1;
    fs::write(&j, &bytes).unwrap();
    let before = fs::read(&m).unwrap();
    match journal::recover(&j, &m, &file) {
        Err(MailboxError::JournalRefused(why)) => {
            assert!(why.contains("round 1") && why.contains("follow"), "{why}")
        }
        other => panic!("not refused: {other:?}"),
    }
    // Journal and mailbox left for the administrator, and every later open refuses too.
    assert_eq!(fs::read(&j).unwrap(), bytes);
    assert_eq!(fs::read(&m).unwrap(), before);
    assert!(matches!(
        journal::recover(&j, &m, &file),
        Err(MailboxError::JournalRefused(_))
    ));
}

/// Mail appended after the truncate whose first bytes are those that lay between the new and
/// the old end (here the deleted last message, delivered again byte for byte) must be kept.
#[test]
fn mail_appended_after_the_truncate_is_kept_whatever_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (m, j) = (dir.path().join("mbox"), dir.path().join("mbox.journal"));
    fs::write(&m, MBOX).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&m)
        .unwrap();
    let len = MBOX.len();
    let second = MBOX.windows(6).rposition(|w| w == b"\nFrom ").unwrap() + 1;
    let reached = journal::compact(
        &j,
        &file,
        std::slice::from_ref(&(second as u64..len as u64)),
        len as u64,
        journal::MIN_ROUND,
        Crash::AfterTruncate,
    )
    .unwrap();
    assert_eq!(reached, Reached::Crashed);
    let mut f = fs::OpenOptions::new().append(true).open(&m).unwrap();
    std::io::Write::write_all(&mut f, &MBOX[second..]).unwrap();
    journal::recover(&j, &m, &file).unwrap();
    assert_eq!(fs::read(&m).unwrap(), MBOX, "the new delivery was cut");
}

/// A crash at every step after the stamp: the stamp overwrites the first bytes after the new
/// end, which may be sources of the last round, so repeating that round must not read them
/// from the mailbox.
#[test]
fn the_stamp_never_feeds_a_repeated_round() {
    let big: Vec<u8> = (0..200u8)
        .flat_map(|i| {
            format!("From x@example.org Thu Jan  1 00:00:00 1970\nSubject: {i}\n\nbody {i}\n\n")
                .into_bytes()
        })
        .collect();
    for stop in [
        Crash::AfterStamp,
        Crash::BeforeTruncate,
        Crash::AfterTruncate,
    ] {
        for delete in [0..30u64, 100..120, 5..6] {
            let dir = tempfile::tempdir().unwrap();
            let (m, j) = (dir.path().join("mbox"), dir.path().join("mbox.journal"));
            fs::write(&m, &big).unwrap();
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&m)
                .unwrap();
            let d = std::slice::from_ref(&delete);
            let reached =
                journal::compact(&j, &file, d, big.len() as u64, journal::MIN_ROUND, stop).unwrap();
            assert_eq!(reached, Reached::Crashed);
            journal::recover(&j, &m, &file).unwrap();
            let r = delete.start as usize..delete.end as usize;
            assert!(fs::read(&m).unwrap() == cut(&big, r), "{stop:?} {delete:?}");
        }
    }
}
