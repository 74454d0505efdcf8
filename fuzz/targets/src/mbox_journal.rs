//! The UPDATE journal reader and replay (`mbox::journal::recover`), on journals of
//! interrupted updates made by the real code and on arbitrary bytes.
//!
//! Input ([`crate::split::two`]): flags, the mbox, then a plan or a journal.
//!
//! - flags bit 0 clear, "made": the plan's bytes choose ranges to cut out of the mbox, a
//!   round size and a point where the update stops as if killed (`journal::Crash`); bit 1
//!   flips one bit of the journal left behind, bit 2 lets mail be appended to the mbox after
//!   the crash (a foreign MDA that broke the stale dotlock), bit 3 makes that mail the very
//!   bytes the update cuts from the end (a message delivered again byte for byte). Properties:
//!   without a flip, recovery ends with exactly the mbox minus the ranges (plus the appended
//!   mail), or the untouched mbox when the crash came before the journal was installed; with
//!   a flip anywhere in the journal, the journal is refused (an error, the mailbox untouched
//!   by the replay) or the result is still exactly right. One exception, inherent in a log
//!   whose last append may be torn: a flip in the last record when that round's copy had
//!   begun (a crash during or after it, before the end record) reads as a torn append, and
//!   the replay repeats the round before it (see doc/DESIGN.md, "The update journal"); there
//!   the journal only has to end removed or refused. A second recovery has nothing to do.
//! - flags bit 0 set, "raw": the rest is the journal's bytes (bit 1 fixes up its magic,
//!   version, inode and checksums so that the checks behind them are reached). Properties:
//!   no panic; success removes the journal and never grows the mbox; a refused journal is
//!   moved aside or left in place, and a second recovery agrees.

use crate::scratch;
use sha2::{Digest, Sha256};
use spool_store::mbox::journal::{self, Crash, Reached, JOURNAL_HEADER_LEN, JOURNAL_MAGIC};
use spool_store::mbox::journal::{tmp_path, JOURNAL_VERSION};
use std::fs;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const APPENDED: &[u8] =
    b"From appended@example.org Thu Jan  1 00:00:00 1970\nSubject: late\n\nhi\n";

fn plan_byte(plan: &[u8], i: usize) -> u8 {
    plan.get(i).copied().unwrap_or(0)
}

fn plan_u16(plan: &[u8], i: usize) -> u64 {
    u64::from(u16::from_le_bytes([
        plan_byte(plan, i),
        plan_byte(plan, i + 1),
    ]))
}

/// Cut points from the plan: up to four ranges, sorted, disjoint, non-empty.
fn ranges(plan: &[u8], len: u64) -> Vec<Range<u64>> {
    let n = usize::from(plan_byte(plan, 0) % 4) + 1;
    let mut cuts: Vec<u64> = (0..2 * n)
        .map(|k| plan_u16(plan, 1 + 2 * k) % (len + 1))
        .collect();
    cuts.sort_unstable();
    cuts.chunks_exact(2)
        .map(|c| c[0]..c[1])
        .filter(|r| !r.is_empty())
        .fold(Vec::new(), |mut v: Vec<Range<u64>>, r| {
            // Touching ranges are one range.
            match v.last_mut() {
                Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
                _ => v.push(r),
            }
            v
        })
}

fn crash(code: u8, n: u64) -> Crash {
    match code % 13 {
        0 => Crash::None,
        1 => Crash::JournalWrite(n),
        2 => Crash::BeforeRename,
        3 => Crash::AfterRename,
        4 => Crash::MidCopy(n),
        5 => Crash::AfterRecord(n % 8 + 1),
        6 => Crash::TornRecord(n % 8 + 1),
        7 => Crash::AfterCopy,
        8 => Crash::BeforeTruncate,
        9 => Crash::AfterTruncate,
        10 => Crash::AfterRejournal,
        11 => Crash::AfterStamp,
        _ => Crash::MidCopy(n / 3),
    }
}

fn cut(mbox: &[u8], delete: &[Range<u64>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mbox.len());
    let mut at = 0;
    for r in delete {
        out.extend_from_slice(&mbox[at..r.start as usize]);
        at = r.end as usize;
    }
    out.extend_from_slice(&mbox[at..]);
    out
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn made(flags: u8, mbox: &[u8], plan: &[u8]) {
    if mbox.is_empty() {
        return;
    }
    let len = mbox.len() as u64;
    let delete = ranges(plan, len);
    if delete.is_empty() {
        return;
    }
    let dir = scratch::subdir("journal");
    let mbox_path = dir.join("mbox");
    let jpath = dir.join("mbox.journal");
    fs::write(&mbox_path, mbox).expect("write the mbox");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mbox_path)
        .expect("open the mbox");
    let min_round = 1 + plan_u16(plan, 9) % 64;
    let stop = crash(plan_byte(plan, 11), plan_u16(plan, 12));
    let reached = journal::compact(&jpath, &file, &delete, len, min_round, stop).expect("compact");
    let mut want = cut(mbox, &delete);
    if reached == Reached::Done {
        assert_eq!(fs::read(&mbox_path).unwrap(), want, "compaction result");
        assert!(!exists(&jpath));
        return;
    }
    let installed = exists(&jpath);
    if !installed {
        want = mbox.to_vec();
    }
    if flags & 4 != 0 {
        // Bit 3 appends the deleted tail itself (a message delivered again byte for byte):
        // after the truncate it must still be kept as new mail.
        let late = if flags & 8 != 0 {
            &mbox[want.len().min(mbox.len())..]
        } else {
            APPENDED
        };
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&mbox_path)
            .expect("open for appending");
        std::io::Write::write_all(&mut f, late).expect("append");
        want.extend_from_slice(late);
    }
    let flipped = installed && flags & 2 != 0;
    let mut exempt = false;
    if flipped {
        let mut j = fs::read(&jpath).unwrap();
        let bit = (plan_u16(plan, 14) << 16 | plan_u16(plan, 16)) % (j.len() as u64 * 8);
        let copy_begun = matches!(
            stop,
            Crash::MidCopy(_) | Crash::AfterCopy | Crash::AfterStamp
        );
        exempt = copy_begun && bit / 8 >= last_record(&j);
        j[bit as usize / 8] ^= 1 << (bit % 8);
        fs::write(&jpath, &j).unwrap();
    }
    let before = fs::read(&mbox_path).unwrap();
    match journal::recover(&jpath, &mbox_path, &file) {
        Ok(replayed) => {
            assert_eq!(replayed, installed);
            if !exempt {
                assert!(
                    fs::read(&mbox_path).unwrap() == want,
                    "recovered mbox differs (flipped: {flipped})"
                );
            }
            assert!(!exists(&jpath) && !exists(&tmp_path(&jpath)));
        }
        Err(e) => {
            assert!(flipped, "recovery of an intact journal failed: {e}");
            assert_eq!(
                fs::read(&mbox_path).unwrap(),
                before,
                "a refused journal changed the mbox: {e}"
            );
        }
    }
    again(&jpath, &mbox_path, &file);
}

/// Where the last record of an intact journal starts (a torn one counts as a record).
fn last_record(j: &[u8]) -> u64 {
    let pieces = u64::from_le_bytes(j[56..64].try_into().unwrap());
    let mut at = JOURNAL_HEADER_LEN + pieces * 16;
    let mut last = at;
    let len = j.len() as u64;
    while at < len {
        last = at;
        let rest = &j[at as usize..];
        let n = if rest.starts_with(b"POPSPRND") && rest.len() >= 48 {
            96 + u64::from_le_bytes(rest[40..48].try_into().unwrap())
        } else if rest.starts_with(b"POPSPEND") {
            128
        } else {
            break;
        };
        at = at.saturating_add(n);
    }
    last
}

/// A second recovery: nothing to do, or the same refusal; never a change to the mbox.
fn again(jpath: &Path, mbox_path: &Path, file: &fs::File) {
    let before = fs::read(mbox_path).unwrap();
    let left = exists(jpath);
    match journal::recover(jpath, mbox_path, file) {
        Ok(replayed) => assert!(!replayed && !left, "a second recovery replayed"),
        Err(_) => assert!(left, "a second recovery failed with no journal"),
    }
    assert_eq!(fs::read(mbox_path).unwrap(), before);
}

fn fix_up(j: &mut [u8], ino: u64) {
    let header = JOURNAL_HEADER_LEN as usize;
    if j.len() < header {
        return;
    }
    j[0..8].copy_from_slice(&JOURNAL_MAGIC);
    j[8..12].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
    j[12..16].fill(0);
    j[24..32].copy_from_slice(&ino.to_le_bytes());
    // The nonce's first byte is 0, the round length at least 1, the reserved word 0.
    j[128] = 0;
    if j[144..152].iter().all(|&b| b == 0) {
        j[144] = 1;
    }
    j[152..160].fill(0);
    let pieces = u64::from_le_bytes(j[56..64].try_into().unwrap());
    let table_end = pieces
        .checked_mul(16)
        .and_then(|t| t.checked_add(header as u64))
        .filter(|&e| e <= j.len() as u64);
    if let Some(end) = table_end {
        let sha = Sha256::digest(&j[header..end as usize]);
        j[96..128].copy_from_slice(&sha);
    }
    let sum = Sha256::digest(&j[..160]);
    j[160..176].copy_from_slice(&sum[..16]);
}

/// Returns whether the first recovery replayed the journal.
fn raw(flags: u8, mbox: &[u8], bytes: &[u8]) -> bool {
    let dir = scratch::subdir("journal");
    let mbox_path = dir.join("mbox");
    let jpath = dir.join("mbox.journal");
    fs::write(&mbox_path, mbox).expect("write the mbox");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mbox_path)
        .expect("open the mbox");
    let mut j = bytes.to_vec();
    if flags & 2 != 0 {
        fix_up(&mut j, file.metadata().unwrap().ino());
    }
    fs::write(&jpath, &j).expect("write the journal");
    let replayed = match journal::recover(&jpath, &mbox_path, &file) {
        Ok(replayed) => {
            assert!(replayed, "a journal was there");
            assert!(!exists(&jpath));
            assert!(fs::metadata(&mbox_path).unwrap().len() <= mbox.len() as u64);
            true
        }
        Err(_) => false,
    };
    again(&jpath, &mbox_path, &file);
    replayed
}

pub fn run(data: &[u8]) {
    let (flags, mbox, rest) = crate::split::two(data);
    if flags & 1 == 0 {
        made(flags, mbox, rest);
    } else {
        raw(flags, mbox, rest);
    }
}

#[cfg(test)]
mod tests {
    /// The journals in the corpus are real ones, so the target reaches the replay with them.
    #[test]
    fn the_corpus_journals_replay() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/mbox_journal");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("crash")
            {
                let data = std::fs::read(&p).unwrap();
                let (flags, mbox, journal) = crate::split::two(&data);
                assert!(super::raw(flags, mbox, journal), "{}", p.display());
                n += 1;
            }
        }
        assert!(n > 0);
    }
}
