//! The Maildir index reader (`maildir::index::IndexReader`) on arbitrary bytes.
//!
//! Input: flags (bit 0 "fix up": the trailing SHA-256 is made to match, so that the record
//! checks are reached), then the index bytes.
//!
//! Properties: no panic, no allocation beyond the reader's fixed buffer; a read that ends in
//! success returned only records with a usable name and a plausible size, and the bytes are
//! exactly the format's encoding of what was read (header, records, checksum: encoding it
//! again gives the file back, so no two files read the same); a read that fails is a
//! `Corrupt` error (the caller then discards what it took).

use crate::scratch;
use sha2::{Digest, Sha256};
use spool_store::error::IndexProblem;
use spool_store::maildir::index::{DirStamp, IndexReader, INDEX_MAGIC};
use spool_store::maildir::listing::{StatKey, F_CUR, F_SIZED, F_STAT};

const STAMP_LEN: usize = 1 + 8 + 8 + 12 + 12;

fn put_time(out: &mut Vec<u8>, t: (i64, u32)) {
    out.extend_from_slice(&t.0.to_le_bytes());
    out.extend_from_slice(&t.1.to_le_bytes());
}

fn put_stamp(out: &mut Vec<u8>, s: Option<DirStamp>) {
    match s {
        Some(s) => {
            out.push(1);
            out.extend_from_slice(&s.dev.to_le_bytes());
            out.extend_from_slice(&s.ino.to_le_bytes());
            put_time(out, s.mtime);
            put_time(out, s.ctime);
        }
        None => out.extend_from_slice(&[0; STAMP_LEN]),
    }
}

pub fn run(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let mut bytes = bytes.to_vec();
    if flags & 1 != 0 && bytes.len() >= 32 {
        let n = bytes.len() - 32;
        let sum = Sha256::digest(&bytes[..n]);
        bytes[n..].copy_from_slice(&sum);
    }
    let (path, _) = scratch::file("maildir.index", &bytes);
    let mut r = match IndexReader::open(&path) {
        Ok(Some(r)) => r,
        Ok(None) => panic!("the index file is there"),
        Err(IndexProblem::Corrupt(_)) | Err(IndexProblem::OldFormat) => return,
        Err(e) => panic!("reading a regular file: {e:?}"),
    };
    let mut again = Vec::with_capacity(bytes.len());
    again.extend_from_slice(INDEX_MAGIC);
    put_time(&mut again, r.header.scan_start);
    for s in r.header.stamps {
        put_stamp(&mut again, s);
    }
    let mut count = 0u64;
    let count_at = again.len();
    again.extend_from_slice(&[0; 8]);
    // Every record takes at least 3 bytes: more iterations than that is a reader that loops.
    for _ in 0..=bytes.len() / 3 + 1 {
        match r.next_rec() {
            Ok(Some(rec)) => {
                count += 1;
                assert!(!rec.name.is_empty() && rec.name[0] != b'.');
                assert!(!rec.name.contains(&b'/') && !rec.name.contains(&0));
                if let Some(size) = rec.size {
                    assert!(size <= 2 * (1u64 << 40));
                }
                assert!(rec.stat.is_none() || rec.size.is_some());
                let mut f = 0;
                if rec.in_cur {
                    f |= F_CUR;
                }
                if rec.size.is_some() {
                    f |= F_SIZED;
                }
                if rec.stat.is_some() {
                    f |= F_STAT;
                }
                again.push(f);
                again.extend_from_slice(&(rec.name.len() as u16).to_le_bytes());
                again.extend_from_slice(rec.name);
                if let Some(s) = rec.size {
                    again.extend_from_slice(&s.to_le_bytes());
                }
                if let Some(StatKey { lf_len, mtime }) = rec.stat {
                    again.extend_from_slice(&lf_len.to_le_bytes());
                    put_time(&mut again, mtime);
                }
            }
            Ok(None) => {
                again[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
                let sum = Sha256::digest(&again);
                again.extend_from_slice(&sum);
                // An absent folder stamp's 40 bytes after its 0 are not read: compare the
                // file with them as the writer leaves them, zero.
                let mut file = bytes.clone();
                for (d, s) in r.header.stamps.iter().enumerate() {
                    if s.is_none() {
                        let at = 20 + d * STAMP_LEN;
                        file[at..at + STAMP_LEN].fill(0);
                    }
                }
                assert_eq!(
                    file.len(),
                    again.len(),
                    "read another length than the file's"
                );
                let n = file.len() - 32;
                assert_eq!(file[..n], again[..n], "re-encoding differs from the file");
                if file == bytes {
                    assert_eq!(file[n..], again[n..]);
                }
                return;
            }
            Err(IndexProblem::Corrupt(_)) => return,
            Err(e) => panic!("reading a regular file: {e:?}"),
        }
    }
    panic!("more records than the file can hold");
}
