//! The mbox index reader (`mbox::index::load` and `open_scan`), on the index the writer makes
//! and on arbitrary bytes.
//!
//! Input ([`crate::split::two`]): flags (bits 0-2 canonical options as in `mbox_scan`; bit 3
//! "fix up": make the arbitrary index's identity, tail digest and checksums match, so that the
//! checks behind them are reached), the mbox, then index bytes.
//!
//! Properties: the index written for a scan reads back as exactly that scan; the same index
//! with any one bit flipped, or a byte more or less, is refused; arbitrary bytes give an error
//! or a list that tiles the mailbox's indexed extent with well-formed records; `open_scan`
//! never fails on a bad index (it scans instead) and what it returns tiles the mailbox.

use crate::mbox_scan;
use crate::scratch;
use sha2::{Digest, Sha256};
use spool_store::mbox::index::{self, Stamp, HEADER_LEN, INDEX_MAGIC, INDEX_VERSION, RECORD_LEN};
use spool_store::mbox::scan::{self, ScanResult};
use std::os::unix::fs::MetadataExt;

const SUM_AT: usize = 176;

fn tiles(r: &ScanResult, end: u64) {
    let mut next = r.messages.first().map_or(end, |m| m.from_line_start());
    assert!(r.preamble_len <= next);
    for m in &r.messages {
        assert_eq!(m.from_line_start(), next, "records do not tile");
        assert!(m.from_line_start() < m.message_start());
        assert!(m.message_start() <= m.message_end() && m.message_end() <= m.next_start());
        next = m.next_start();
    }
    assert!(
        r.messages.is_empty() || next == end,
        "records end at {next}, not {end}"
    );
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// Makes `idx` agree with the mailbox's identity and contents and with its own checksums.
fn fix_up(idx: &mut [u8], meta: &std::fs::Metadata, mbox: &[u8], flags: u8) {
    if idx.len() < HEADER_LEN {
        return;
    }
    put(idx, 0, INDEX_MAGIC);
    put(idx, 8, &INDEX_VERSION.to_le_bytes());
    put(idx, 12, &(RECORD_LEN as u32).to_le_bytes());
    let quoting = match flags & 3 {
        0 => 0,
        1 => 1,
        _ => 2,
    };
    let hide = if flags & 4 != 0 { 4 } else { 0 };
    idx[16] = (idx[16] & 0xf0) | quoting | hide;
    put(idx, 24, &meta.dev().to_le_bytes());
    put(idx, 32, &meta.ino().to_le_bytes());
    put(idx, 40, &meta.mtime().to_le_bytes());
    put(idx, 48, &meta.mtime_nsec().to_le_bytes());
    put(idx, 56, &meta.ctime().to_le_bytes());
    put(idx, 64, &meta.ctime_nsec().to_le_bytes());
    let mut end = u64::from_le_bytes(idx[72..80].try_into().unwrap());
    if end > mbox.len() as u64 {
        end = mbox.len() as u64;
        put(idx, 72, &end.to_le_bytes());
    }
    let tail = end.min(index::TAIL_CHECK_LEN);
    put(idx, 104, &tail.to_le_bytes());
    let tail_sha = Sha256::digest(&mbox[(end - tail) as usize..end as usize]);
    put(idx, 112, &tail_sha);
    let records = Sha256::digest(&idx[HEADER_LEN..]);
    put(idx, 144, &records);
    let sum = Sha256::digest(&idx[..SUM_AT]);
    put(idx, SUM_AT, &sum[..16]);
}

pub fn run(data: &[u8]) {
    let (flags, mbox, raw_index) = crate::split::two(data);
    let opts = mbox_scan::options(flags);
    let (_, file) = scratch::file("mbox", mbox);
    let len = mbox.len() as u64;
    let meta = file.metadata().expect("stat the scratch mbox");
    let path = scratch::dir().join("index");

    // The writer's index reads back as the scan it was made from.
    let scanned = scan::scan(&file, len, opts).expect("scan");
    let stamp = Stamp::take(&file, len).expect("stamp");
    index::write(&path, &scanned, opts, &stamp).expect("write the index");
    if !scanned.is_empty() {
        let mut back = index::load(&path, &file, len, opts).expect("the index just written");
        back.finish();
        assert_eq!(back.messages, scanned.messages);
        assert_eq!(
            (
                back.preamble_len,
                back.extent_end,
                back.nul_at,
                back.unterminated
            ),
            (
                scanned.preamble_len,
                scanned.extent_end,
                scanned.nul_at,
                scanned.unterminated
            )
        );
        for i in 0..scanned.len() {
            assert_eq!(back.uidl(i), scanned.uidl(i));
        }
        // One flipped bit anywhere, or a byte more or less: refused.
        let good = std::fs::read(&path).expect("read the index");
        let seed = raw_index
            .iter()
            .fold(0u64, |h, &b| h.wrapping_mul(31) ^ u64::from(b));
        let bit = (seed % (good.len() as u64 * 8)) as usize;
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &bad).expect("write");
        assert!(
            index::load(&path, &file, len, opts).is_err(),
            "accepted an index with bit {bit} flipped"
        );
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).expect("write");
        assert!(index::load(&path, &file, len, opts).is_err());
        std::fs::write(&path, &good[..good.len() - 1]).expect("write");
        assert!(index::load(&path, &file, len, opts).is_err());
    }

    // Arbitrary bytes.
    let mut idx = raw_index.to_vec();
    if flags & 8 != 0 {
        fix_up(&mut idx, &meta, mbox, flags);
    }
    std::fs::write(&path, &idx).expect("write the index");
    if let Ok(mut r) = index::load(&path, &file, len, opts) {
        assert!(r.extent_end <= len);
        assert!(!r.is_empty());
        tiles(&r, r.extent_end);
        r.finish();
        for i in 0..r.len() {
            let u = r.uidl(i);
            assert!(!u.is_empty() && u.len() <= 70);
        }
    }
    let opened = index::open_scan(&file, len, &path, opts, true).expect("open_scan");
    assert_eq!(opened.scan.extent_end, len);
    tiles(&opened.scan, len);
    if matches!(opened.served, index::Served::FullScan) {
        assert_eq!(opened.scan.messages, scanned.messages);
    }
}
