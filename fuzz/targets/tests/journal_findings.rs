//! What the `mbox_journal` target found, as tests of the behaviour wanted. Both cases lie
//! outside the crash model the journal is built for (README, "Fuzzing"), and both stay
//! ignored until the journal's format or replay changes to handle them.

use spool_store::mbox::journal::{self, Crash, Reached};
use std::fs;
use std::ops::Range;

const MBOX: &[u8] = b"From a@example.org Thu Jan  1 00:00:00 1970\nSubject: one\nStatus: RO\n\nbody\n>From quoted\n.dot\n\nFrom c@example.org Fri Jan  2 00:00:00 1970\nSubject: two\n\nline\n";

fn cut(mbox: &[u8], r: Range<usize>) -> Vec<u8> {
    [&mbox[..r.start], &mbox[r.end..]].concat()
}

/// A round record damaged in the middle of the log, after later rounds were copied: the
/// replay must refuse the journal or still produce the right mailbox, never report success
/// with a wrong one.
#[test]
#[ignore = "a damaged mid-log round record is taken for a torn end (README, Fuzzing)"]
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
    // Byte 288: the stream offset `t` of round 1, the second record of the log.
    let mut bytes = fs::read(&j).unwrap();
    bytes[288] ^= 1;
    fs::write(&j, &bytes).unwrap();
    if journal::recover(&j, &m, &file).is_ok() {
        assert_eq!(
            fs::read(&m).unwrap(),
            cut(MBOX, 2..40),
            "success with a wrong mailbox"
        );
    }
}

/// Mail appended after the truncate whose first bytes are those that lay between the new and
/// the old end (here the deleted last message, delivered again byte for byte) must be kept.
#[test]
#[ignore = "appended mail equal to the cut tail's bytes looks like an unfinished update"]
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
