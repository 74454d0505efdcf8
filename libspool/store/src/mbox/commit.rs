//! The mbox UPDATE: removing deleted byte ranges in place, crash-safe through the journal.
//!
//! Only what lies after the first deleted byte `p0` moves: the prefix is never rewritten, and
//! owner, group, mode and inode stay as they are (MDAs and MUAs keep working on the same
//! file). The kept bytes move once, in rounds; only the bytes a round would overwrite before
//! they were moved go to the journal first (see `crate::mbox::journal`), so a commit costs about
//! the bytes after `p0` in I/O plus at most [`journal::MIN_ROUND`] per round that cannot
//! avoid overwriting its own sources, and a crash at any instant is finished by
//! `journal::recover`.

#![forbid(unsafe_code)]

use crate::error::{io_err, MailboxError};
use crate::mbox::journal::{self, Crash, Reached};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Every deleted range must start with this (the RFC 4155 separator line): a cheap check that
/// the file still is what the session scanned.
const FROM_LINE: &[u8] = b"From ";

/// One mbox UPDATE: the deleted ranges of the mailbox open as `file`, to remove in place.
#[derive(Debug, Clone, Copy)]
pub struct Compaction<'a> {
    pub file: &'a File,
    /// The mailbox's path, for messages.
    pub mailbox: &'a Path,
    /// Where the journal of this mailbox lives.
    pub journal: &'a Path,
    /// The end of the session's view: everything after it (mail appended during the session)
    /// is kept.
    pub extent_end: u64,
    /// Sorted, disjoint byte ranges inside `0..extent_end`, each a whole message from its
    /// `From ` line to the next one.
    pub delete: &'a [Range<u64>],
}

impl Compaction<'_> {
    /// Removes `delete`, moving only what lies after the first deleted byte, crash-safe through
    /// the journal, fsynced. The caller holds the content lock. On error the mailbox is
    /// unchanged (or the journal will restore it on the next open).
    pub fn remove(self) -> Result<(), MailboxError> {
        self.run(journal::MIN_ROUND, Crash::None, true).map(|_| ())
    }

    /// [`Compaction::remove`] for a caller that has already read both ends of every range (and
    /// more: the session checks each deleted message's digest): skips the boundary reads, one
    /// `pread` per range end, which for "delete every other message of 144,524" were 289,048
    /// system calls.
    pub fn remove_prechecked(self) -> Result<(), MailboxError> {
        self.run(journal::MIN_ROUND, Crash::None, false).map(|_| ())
    }

    /// [`Compaction::remove`] with the journal's round size and an injected crash, for the
    /// crash tests.
    #[cfg(test)]
    pub(crate) fn remove_until(
        self,
        min_round: u64,
        crash: Crash,
    ) -> Result<Reached, MailboxError> {
        self.run(min_round, crash, true)
    }

    fn run(
        self,
        min_round: u64,
        crash: Crash,
        check_boundaries: bool,
    ) -> Result<Reached, MailboxError> {
        let Compaction {
            file,
            mailbox: mailbox_path,
            journal,
            extent_end,
            delete,
        } = self;
        // Empty ranges are allowed and ignored; the list is copied only when it has any.
        let filtered: Vec<Range<u64>>;
        let delete = if delete.iter().all(|r| r.start < r.end) {
            delete
        } else {
            filtered = delete.iter().filter(|r| r.start < r.end).cloned().collect();
            &filtered[..]
        };
        if delete.is_empty() {
            return Ok(Reached::Done);
        }
        let ordered = delete.windows(2).all(|w| w[0].end <= w[1].start);
        if !ordered || delete.iter().any(|r| r.end > extent_end) {
            return Err(MailboxError::Io(
                "commit deletions",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "delete ranges not sorted, disjoint and inside the extent",
                ),
            ));
        }
        let s_old = file.metadata().map_err(io_err("stat the mailbox"))?.len();
        if s_old < extent_end {
            return Err(MailboxError::Changed(format!(
                "{} is {s_old} bytes, shorter than the {extent_end} the session saw",
                mailbox_path.display()
            )));
        }
        // Both ends of every range must be message boundaries: a From line, or the extent's end.
        let mut head = [0u8; FROM_LINE.len()];
        let mut at_from =
            |off: u64| file.read_exact_at(&mut head, off).is_ok() && head == FROM_LINE;
        for r in delete.iter().filter(|_| check_boundaries) {
            for off in [r.start, r.end] {
                if !(at_from(off) || off == extent_end && off != r.start) {
                    return Err(MailboxError::Changed(format!(
                        "{}: no From line at byte {off}",
                        mailbox_path.display()
                    )));
                }
            }
        }
        // The content lock serializes every popspool program, so an existing journal here means
        // the caller skipped recovery: overwriting it could lose mail.
        if journal::exists(journal).map_err(io_err("look for a journal"))? {
            return Err(MailboxError::Journal(format!(
                "{} exists: recover before committing",
                journal.display()
            )));
        }
        journal::compact(journal, file, delete, s_old, min_round, crash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(
        file: &File,
        mailbox: &Path,
        journal: &Path,
        extent_end: u64,
        delete: &[Range<u64>],
    ) -> Result<(), MailboxError> {
        Compaction {
            file,
            mailbox,
            journal,
            extent_end,
            delete,
        }
        .remove()
    }

    fn compact_inner(
        file: &File,
        mailbox: &Path,
        journal: &Path,
        extent_end: u64,
        delete: &[Range<u64>],
        min_round: u64,
        crash: Crash,
    ) -> Result<Reached, MailboxError> {
        Compaction {
            file,
            mailbox,
            journal,
            extent_end,
            delete,
        }
        .remove_until(min_round, crash)
    }
    use crate::mbox::journal::{recover, recover_inner, tmp_path, JOURNAL_HEADER_LEN};
    use proptest::prelude::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::PathBuf;

    fn msg(n: usize, body: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "From sender{n}@example.org Mon Jan  1 00:00:{:02} 2024\nSubject: {n}\n\n",
            n % 60
        )
        .into_bytes();
        m.extend_from_slice(body);
        m.extend_from_slice(b"\n\n");
        m
    }

    struct Box_ {
        _dir: tempfile::TempDir,
        path: PathBuf,
        journal: PathBuf,
        extent_end: u64,
        ranges: Vec<Range<u64>>,
        kept: Vec<u8>,
        original: Vec<u8>,
    }

    fn make(msgs: &[Vec<u8>], del: &[bool], session_append: &[u8]) -> Box_ {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        let journal = dir.path().join("state").join("m.journal");
        fs::create_dir(dir.path().join("state")).unwrap();
        let mut all = Vec::new();
        let mut kept = Vec::new();
        let mut ranges = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let start = all.len() as u64;
            all.extend_from_slice(m);
            if del.get(i).copied().unwrap_or(false) {
                ranges.push(start..all.len() as u64);
            } else {
                kept.extend_from_slice(m);
            }
        }
        let extent_end = all.len() as u64;
        all.extend_from_slice(session_append);
        kept.extend_from_slice(session_append);
        fs::write(&path, &all).unwrap();
        Box_ {
            _dir: dir,
            path,
            journal,
            extent_end,
            ranges,
            kept,
            original: all,
        }
    }

    fn open_rw(p: &Path) -> File {
        OpenOptions::new().read(true).write(true).open(p).unwrap()
    }

    fn append(p: &Path, bytes: &[u8]) {
        OpenOptions::new()
            .append(true)
            .open(p)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    fn no_journal(b: &Box_) -> bool {
        !b.journal.exists() && !tmp_path(&b.journal).exists()
    }

    /// Runs compact to `crash`, appends `late` as a foreign MDA would, then recovers (first
    /// crashing inside recovery at `rcrash`) and checks the result byte for byte.
    fn scenario(
        msgs: &[Vec<u8>],
        del: &[bool],
        session_append: &[u8],
        crash: Crash,
        late: &[u8],
        rcrash: Crash,
        round: u64,
    ) -> Result<(), TestCaseError> {
        let b = make(msgs, del, session_append);
        let f = open_rw(&b.path);
        let reached = compact_inner(
            &f,
            &b.path,
            &b.journal,
            b.extent_end,
            &b.ranges,
            round,
            crash,
        )
        .unwrap();
        drop(f);
        let installed = b.journal.exists();
        append(&b.path, late);
        let f = open_rw(&b.path);
        if reached == Reached::Crashed && rcrash != Crash::None {
            recover_inner(&b.journal, &b.path, &f, rcrash, round).unwrap();
        }
        drop(f);
        let f = open_rw(&b.path);
        recover(&b.journal, &b.path, &f).unwrap();
        let got = fs::read(&b.path).unwrap();
        let mut want = if b.ranges.is_empty() || reached == Reached::Done || installed {
            b.kept.clone()
        } else {
            b.original.clone()
        };
        want.extend_from_slice(late);
        prop_assert!(
            got == want,
            "crash {:?} rcrash {:?} round {}: got {} bytes, want {}",
            crash,
            rcrash,
            round,
            got.len(),
            want.len()
        );
        prop_assert!(no_journal(&b));
        // Recovery with nothing to do is a no-op.
        prop_assert!(!recover(&b.journal, &b.path, &f).unwrap());
        prop_assert_eq!(fs::read(&b.path).unwrap(), want);
        Ok(())
    }

    fn sample() -> Vec<Vec<u8>> {
        (0..6)
            .map(|i| msg(i, format!("body of {i}\n").repeat(i + 1).as_bytes()))
            .collect()
    }

    const CRASHES: &[Crash] = &[
        Crash::None,
        Crash::JournalWrite(0),
        Crash::JournalWrite(7),
        Crash::BeforeRename,
        Crash::AfterRename,
        Crash::MidCopy(0),
        Crash::MidCopy(1),
        Crash::MidCopy(40),
        Crash::MidCopy(200),
        Crash::AfterRecord(1),
        Crash::AfterRecord(2),
        Crash::TornRecord(1),
        Crash::TornRecord(3),
        Crash::AfterCopy,
        Crash::AfterStamp,
        Crash::BeforeTruncate,
        Crash::AfterTruncate,
        Crash::AfterRejournal,
    ];
    /// Round lengths: many tiny rounds (most save bytes to the journal), rounds of about a
    /// message, and production's (one round for these small mailboxes).
    const ROUNDS: &[u64] = &[1, 40, journal::MIN_ROUND];

    #[test]
    fn every_crash_point_with_and_without_late_mail() {
        let msgs = sample();
        let late = msg(99, b"late arrival\n");
        let dels: &[&[bool]] = &[
            &[true],
            &[false, true],
            &[false, false, false, false, false, true],
            &[true, false, true, false, true, false],
            &[true, true, true, true, true, true],
            &[false, true, true, false, false, true],
        ];
        for del in dels {
            for &sa in &[&b""[..], &msg(50, b"during session\n")[..]] {
                for &crash in CRASHES {
                    for l in [&b""[..], &late[..]] {
                        for &round in ROUNDS {
                            scenario(&msgs, del, sa, crash, l, Crash::None, round).unwrap();
                        }
                    }
                }
            }
        }
        // Crashes inside recovery itself, with foreign mail appended before recovery ran.
        for del in &dels[1..3] {
            for &crash in CRASHES {
                for &rc in CRASHES {
                    for l in [&b""[..], &late[..]] {
                        for round in [1, 40] {
                            scenario(&msgs, del, b"", crash, l, rc, round).unwrap();
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_delete_is_a_noop() {
        let b = make(&sample(), &[], b"");
        let f = open_rw(&b.path);
        compact(&f, &b.path, &b.journal, b.extent_end, &[]).unwrap();
        compact(
            &f,
            &b.path,
            &b.journal,
            b.extent_end,
            std::slice::from_ref(&(3..3)),
        )
        .unwrap();
        assert_eq!(fs::read(&b.path).unwrap(), b.original);
        assert!(no_journal(&b));
    }

    #[test]
    fn bad_delete_lists_are_refused_and_change_nothing() {
        let msgs = sample();
        let b = make(&msgs, &[true, true, false, true], b"");
        let f = open_rw(&b.path);
        let r = &b.ranges;
        let cases: Vec<(Vec<Range<u64>>, u64)> = vec![
            (vec![r[1].clone(), r[0].clone()], b.extent_end), // unsorted
            (
                vec![Range {
                    start: r[0].start,
                    end: r[1].start + 1,
                }],
                b.extent_end,
            ), // ends past a From line
            (vec![r[0].clone(), r[0].clone()], b.extent_end), // overlapping
            (vec![r[2].clone()], r[2].end - 1),               // past the extent
            (
                vec![Range {
                    start: r[0].start + 1,
                    end: r[0].end,
                }],
                b.extent_end,
            ), // not at a From line
            (vec![r[0].clone()], b.original.len() as u64 + 1), // file shrank below extent
        ];
        for (del, extent) in cases {
            assert!(
                compact(&f, &b.path, &b.journal, extent, &del).is_err(),
                "{del:?}"
            );
            assert_eq!(fs::read(&b.path).unwrap(), b.original);
            assert!(no_journal(&b));
        }
    }

    #[test]
    fn refuses_to_overwrite_a_pending_journal() {
        let b = make(&sample(), &[false, true], b"");
        let f = open_rw(&b.path);
        let r = compact_inner(
            &f,
            &b.path,
            &b.journal,
            b.extent_end,
            &b.ranges,
            journal::MIN_ROUND,
            Crash::AfterRename,
        );
        assert_eq!(r.unwrap(), Reached::Crashed);
        let jbefore = fs::read(&b.journal).unwrap();
        let e = compact(&f, &b.path, &b.journal, b.extent_end, &b.ranges).unwrap_err();
        assert!(matches!(e, MailboxError::Journal(_)));
        assert_eq!(fs::read(&b.journal).unwrap(), jbefore);
        assert!(recover(&b.journal, &b.path, &f).unwrap());
        assert_eq!(fs::read(&b.path).unwrap(), b.kept);
    }

    #[test]
    fn large_tail_crosses_chunk_boundaries() {
        let big = vec![b'x'; journal::COPY_CHUNK + 12345];
        let msgs = vec![msg(0, b"a"), msg(1, &big), msg(2, &big), msg(3, b"d")];
        for crash in [Crash::None, Crash::MidCopy(journal::COPY_CHUNK as u64 + 1)] {
            scenario(
                &msgs,
                &[true, false, true],
                b"",
                crash,
                &msg(9, &big),
                Crash::None,
                journal::MIN_ROUND,
            )
            .unwrap();
        }
    }

    /// Cut regions longer than two stale-digest samples (the digest then covers only their
    /// ends), through every crash point, with and without foreign mail appended afterwards,
    /// including "delete everything" (an empty tail: the whole file is the stale region).
    #[test]
    fn large_stale_region_every_crash_point() {
        let big = vec![b'y'; 3 * journal::STALE_SAMPLE as usize + 777];
        let msgs = vec![msg(0, b"a"), msg(1, &big), msg(2, &big), msg(3, b"d")];
        let late_big = msg(9, &vec![b'z'; 2 * journal::STALE_SAMPLE as usize + 5]);
        for del in [
            &[false, true, true, true][..],
            &[true, true, true, true][..],
            &[true, false, true, false][..],
        ] {
            for &crash in CRASHES {
                for late in [&b""[..], &msg(8, b"small late mail")[..], &late_big[..]] {
                    for round in [1000, journal::MIN_ROUND] {
                        scenario(&msgs, del, b"", crash, late, Crash::None, round).unwrap();
                    }
                }
            }
        }
    }

    fn journal_files(b: &Box_, tag: &str) -> Vec<PathBuf> {
        fs::read_dir(b.journal.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(tag))
            .collect()
    }

    #[test]
    fn corrupt_journals_are_moved_aside_and_reported() {
        let flip = |off: u64| {
            move |p: &Path| {
                let mut d = fs::read(p).unwrap();
                let o = off as usize % d.len();
                d[o] ^= 0x40;
                fs::write(p, d).unwrap();
            }
        };
        type Damage = Box<dyn Fn(&Path)>;
        let damages: Vec<(&str, Damage)> = vec![
            ("magic", Box::new(flip(0))),
            ("offsets", Box::new(flip(33))),
            ("checksum", Box::new(flip(130))),
            ("tail", Box::new(flip(JOURNAL_HEADER_LEN + 3))),
            (
                "short",
                Box::new(|p: &Path| {
                    let d = fs::read(p).unwrap();
                    fs::write(p, &d[..d.len() - 1]).unwrap();
                }),
            ),
            (
                "tiny",
                Box::new(|p: &Path| fs::write(p, b"POPSPJNL").unwrap()),
            ),
            ("empty", Box::new(|p: &Path| fs::write(p, b"").unwrap())),
        ];
        for (name, damage) in damages {
            let b = make(&sample(), &[false, true, false, true], b"");
            let f = open_rw(&b.path);
            let r = compact_inner(
                &f,
                &b.path,
                &b.journal,
                b.extent_end,
                &b.ranges,
                journal::MIN_ROUND,
                Crash::AfterRename,
            );
            assert_eq!(r.unwrap(), Reached::Crashed);
            damage(&b.journal);
            let e = recover(&b.journal, &b.path, &f).unwrap_err();
            assert!(matches!(e, MailboxError::Journal(_)), "{name}: {e}");
            assert!(!b.journal.exists(), "{name}");
            assert_eq!(journal_files(&b, ".corrupt-").len(), 1, "{name}");
            // The mailbox was not touched yet, and the next open proceeds.
            assert_eq!(fs::read(&b.path).unwrap(), b.original, "{name}");
            assert!(!recover(&b.journal, &b.path, &f).unwrap());
        }
    }

    #[test]
    fn journal_for_a_replaced_mailbox_is_an_orphan() {
        let b = make(&sample(), &[true, false, true], b"");
        let f = open_rw(&b.path);
        compact_inner(
            &f,
            &b.path,
            &b.journal,
            b.extent_end,
            &b.ranges,
            journal::MIN_ROUND,
            Crash::MidCopy(5),
        )
        .unwrap();
        drop(f);
        // Something replaced the mailbox by rename: a new inode.
        let other = b.path.with_extension("new");
        fs::write(&other, b"From x Mon Jan  1 00:00:00 2024\n\nnew\n").unwrap();
        fs::rename(&other, &b.path).unwrap();
        let f = open_rw(&b.path);
        let e = recover(&b.journal, &b.path, &f).unwrap_err();
        assert!(matches!(e, MailboxError::Journal(_)), "{e}");
        assert_eq!(journal_files(&b, ".orphan-").len(), 1);
        assert!(!b.journal.exists());
        assert!(!recover(&b.journal, &b.path, &f).unwrap());
    }

    #[test]
    fn contradicting_mailbox_leaves_the_journal_for_the_admin() {
        let b = make(&sample(), &[true, false, true], b"");
        let f = open_rw(&b.path);
        let r = compact_inner(
            &f,
            &b.path,
            &b.journal,
            b.extent_end,
            &b.ranges,
            journal::MIN_ROUND,
            Crash::AfterTruncate,
        );
        assert_eq!(r.unwrap(), Reached::Crashed);
        // Someone edited the moved part after the truncate.
        f.write_all_at(b"Z", b.ranges[0].start + 2).unwrap();
        for _ in 0..2 {
            let e = recover(&b.journal, &b.path, &f).unwrap_err();
            assert!(matches!(e, MailboxError::Journal(_)), "{e}");
            assert!(b.journal.exists());
        }
        // And a mailbox truncated below the journal's end by someone else.
        f.set_len(b.ranges[0].start + 1).unwrap();
        assert!(matches!(
            recover(&b.journal, &b.path, &f),
            Err(MailboxError::Journal(_))
        ));
        assert!(b.journal.exists());
    }

    #[test]
    fn leftover_tmp_is_removed() {
        let b = make(&sample(), &[true], b"");
        fs::write(tmp_path(&b.journal), b"partial").unwrap();
        let f = open_rw(&b.path);
        assert!(!recover(&b.journal, &b.path, &f).unwrap());
        assert!(no_journal(&b));
        assert_eq!(fs::read(&b.path).unwrap(), b.original);
    }

    fn crash_strategy() -> impl Strategy<Value = Crash> {
        prop_oneof![
            Just(Crash::None),
            (0u64..400).prop_map(Crash::JournalWrite),
            Just(Crash::BeforeRename),
            Just(Crash::AfterRename),
            (0u64..2000).prop_map(Crash::MidCopy),
            (1u64..5).prop_map(Crash::AfterRecord),
            (1u64..5).prop_map(Crash::TornRecord),
            Just(Crash::AfterCopy),
            Just(Crash::AfterStamp),
            Just(Crash::BeforeTruncate),
            Just(Crash::AfterTruncate),
            Just(Crash::AfterRejournal),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn random_mailboxes_deletions_and_crashes(
            bodies in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'F'), 0x20u8..0x7f], 0..120),
                1..9),
            del in proptest::collection::vec(any::<bool>(), 0..9),
            session in proptest::option::of(proptest::collection::vec(0x20u8..0x7f, 0..60)),
            late in proptest::option::of(proptest::collection::vec(0x20u8..0x7f, 0..300)),
            crash in crash_strategy(),
            rcrash in crash_strategy(),
            round in prop_oneof![Just(1u64), 1u64..300, Just(journal::MIN_ROUND)],
        ) {
            let msgs: Vec<Vec<u8>> = bodies.iter().enumerate().map(|(i, b)| msg(i, b)).collect();
            let session = session.map(|s| msg(70, &s)).unwrap_or_default();
            let late = late.map(|s| msg(80, &s)).unwrap_or_default();
            scenario(&msgs, &del, &session, crash, &late, rcrash, round)?;
        }
    }
}
