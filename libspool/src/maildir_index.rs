//! The size cache of a Maildir: the exact POP3 (CRLF) size of every message that had to be
//! read to be measured, kept in the state directory so that the next session reads no
//! message file at all.
//!
//! POP3 sizes must be the exact octets RETR sends. Dovecot puts that size in the file name
//! (`,W=`) and such files never need this cache; Courier, qmail and procmail deliveries have
//! only `,S=` (the stored, LF size) or nothing, and without a cache every session would read
//! every message. The cache is keyed by the unique part of the file name (the UIDL, which
//! flag changes and the `new/`→`cur/` move never touch).
//!
//! * **Validity.** An entry is believed for a message only when the stored (LF) size still
//!   matches: taken from `,S=` in the name when the entry's size equals it, otherwise from an
//!   `lstat` of the file, whose mtime (seconds and nanoseconds) must match too. Trusting `,S=`
//!   without a `stat` is deliberate: Maildir files are immutable by convention (a change of
//!   content is a new delivery with a new name), this is what Dovecot and Courier rely on
//!   too, and a warm session then touches no inode at all, which is what costs on a cold
//!   server (thousands of random inode reads). A file whose `,S=` does not match its length
//!   when measured is cached by `stat` instead. RETR always sends the file as it is.
//! * **Cacheable names.** Only unique parts of 1 to [`MAX_CACHED_UNIQUE_LEN`] bytes of
//!   0x21-0x7E are cached, so a line can never be ambiguous; any other name (rare, and given a
//!   `sha256:` UIDL anyway) is simply measured at every session.
//! * **Format** (text, one line each, LF):
//!   `popspool-maildir-sizes 1`, then per message
//!   `UNIQUE SP LFSIZE SP MTIMESEC.NNNNNNNNN SP CRLFSIZE`, sorted by unique part, then
//!   `end COUNT SHA256HEX` where the digest covers every byte before that line. Anything that
//!   does not parse exactly, a duplicate key, a wrong count or digest: the whole cache is
//!   ignored with a warning and rebuilt, never a failed session.
//! * **Writing.** Only when the session's scan changed something (a new measurement, or
//!   entries of messages no longer present dropped), as `NAME.tmp` (mode 0600, `O_NOFOLLOW`),
//!   fsynced and renamed over `NAME`: a reader sees the old or the new cache. Deleted messages
//!   are pruned by the next session's scan rather than at commit: the cache only ever holds
//!   sizes, so a stale entry is harmless, and the next session rewrites it anyway when new
//!   mail arrived.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// First line of every cache; bumped on any change of format or meaning.
pub const SIZE_CACHE_HEADER: &str = "popspool-maildir-sizes 1";
/// Longest unique part cached (`NAME_MAX`): a longer one cannot be a file name anyway.
pub const MAX_CACHED_UNIQUE_LEN: usize = 255;
/// Most entries a cache may hold: bounds the memory a damaged or foreign file can cost.
/// A Maildir larger than this is still served, its surplus measured at every session.
pub const MAX_SIZE_CACHE_ENTRIES: usize = 4_000_000;
/// Mode of a cache: it describes the user's mail.
pub const SIZE_CACHE_MODE: u32 = 0o600;

/// Longest valid line: unique part, three numbers of at most 20 digits, the nanoseconds.
const MAX_LINE_LEN: usize = MAX_CACHED_UNIQUE_LEN + 3 * 21 + 10 + 1;

/// What is known of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// The file's length as stored (LF line endings).
    pub lf_len: u64,
    /// The file's mtime (seconds, nanoseconds) when it was measured.
    pub mtime: (i64, i64),
    /// The canonical (CRLF) size: what STAT, LIST and RETR count.
    pub crlf_size: u64,
}

/// Can `unique` be a cache key?
pub fn cacheable(unique: &[u8]) -> bool {
    !unique.is_empty()
        && unique.len() <= MAX_CACHED_UNIQUE_LEN
        && unique.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

/// The cache of one Maildir, in memory for the duration of the scan.
#[derive(Debug, Default)]
pub struct SizeCache {
    entries: HashMap<Box<[u8]>, Sizes>,
    /// The file on disk does not describe `entries`.
    dirty: bool,
}

impl SizeCache {
    /// Loads the cache at `path`. Never fails: a missing cache is empty (silently); an
    /// unreadable, corrupt or foreign one is empty with a warning for the log, and marked to
    /// be rewritten.
    pub fn load(path: &Path) -> (SizeCache, Option<String>) {
        match read(path) {
            Ok(entries) => (
                SizeCache {
                    entries,
                    dirty: false,
                },
                None,
            ),
            Err(LoadError::Missing) => (SizeCache::default(), None),
            Err(e) => (
                SizeCache {
                    entries: HashMap::new(),
                    dirty: true,
                },
                Some(format!(
                    "Maildir size cache {}: {e}; rebuilt",
                    path.display()
                )),
            ),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn get(&self, unique: &[u8]) -> Option<&Sizes> {
        self.entries.get(unique)
    }

    /// Records a measurement; an uncacheable name, or one beyond the entry limit, is ignored.
    pub fn insert(&mut self, unique: &[u8], sizes: Sizes) {
        if !cacheable(unique) {
            return;
        }
        if let Some(old) = self.entries.get_mut(unique) {
            if *old != sizes {
                *old = sizes;
                self.dirty = true;
            }
            return;
        }
        if self.entries.len() < MAX_SIZE_CACHE_ENTRIES {
            self.entries.insert(Box::from(unique), sizes);
            self.dirty = true;
        }
    }

    /// Drops the entries of messages not in `present` (unique parts of the current listing).
    pub fn retain_present(&mut self, present: &HashSet<&[u8]>) {
        let before = self.entries.len();
        self.entries.retain(|k, _| present.contains(&**k));
        if self.entries.len() != before {
            self.dirty = true;
        }
    }

    /// Writes the cache atomically if it changed (an empty cache removes the file).
    pub fn write_if_dirty(&mut self, path: &Path) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if self.entries.is_empty() {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            write(path, &self.entries)?;
        }
        self.dirty = false;
        Ok(())
    }
}

#[derive(Debug)]
enum LoadError {
    Missing,
    Io(io::Error),
    Corrupt(&'static str),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Missing => f.write_str("none yet"),
            LoadError::Io(e) => write!(f, "unreadable ({e})"),
            LoadError::Corrupt(why) => write!(f, "corrupt or foreign ({why})"),
        }
    }
}

fn open_cache(path: &Path) -> Result<File, LoadError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LoadError::Missing,
            _ => LoadError::Io(e),
        })
}

/// One line without its LF; `None` at end of file. A line longer than `MAX_LINE_LEN` or
/// without its LF is corrupt.
fn next_line<'a, R: BufRead>(
    r: &mut R,
    buf: &'a mut Vec<u8>,
) -> Result<Option<&'a [u8]>, LoadError> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE_LEN as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(LoadError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    match buf.pop() {
        Some(b'\n') => Ok(Some(buf)),
        _ if n > MAX_LINE_LEN => Err(LoadError::Corrupt("line too long")),
        _ => Err(LoadError::Corrupt("truncated")),
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `SEC.NNNNNNNNN`, SEC possibly negative (files from before 1970 exist on broken clocks),
/// written exactly as `write` does (no sign but `-`, no leading zeros, no `-0`).
fn parse_mtime(b: &[u8]) -> Option<(i64, i64)> {
    let dot = memchr::memchr(b'.', b)?;
    let (sec, nsec) = (&b[..dot], &b[dot + 1..]);
    let digits = sec.strip_prefix(b"-").unwrap_or(sec);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || sec == b"0");
    if !canonical || nsec.len() != 9 || !nsec.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s: i64 = std::str::from_utf8(sec).ok()?.parse().ok()?;
    let ns: i64 = std::str::from_utf8(nsec).ok()?.parse().ok()?;
    Some((s, ns))
}

fn parse_entry(line: &[u8]) -> Option<(&[u8], Sizes)> {
    let mut f = line.split(|&b| b == b' ');
    let (unique, lf, mtime, crlf) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some() || !cacheable(unique) {
        return None;
    }
    let sizes = Sizes {
        lf_len: parse_u64(lf)?,
        mtime: parse_mtime(mtime)?,
        crlf_size: parse_u64(crlf)?,
    };
    // A canonical form only ever adds bytes (CR before LF, a final CRLF), at most doubling.
    let plausible = sizes.crlf_size >= sizes.lf_len
        && sizes.crlf_size <= sizes.lf_len.saturating_mul(2).saturating_add(2);
    plausible.then_some((unique, sizes))
}

fn read(path: &Path) -> Result<HashMap<Box<[u8]>, Sizes>, LoadError> {
    let file = open_cache(path)?;
    let meta = file.metadata().map_err(LoadError::Io)?;
    if !meta.is_file() {
        return Err(LoadError::Corrupt("not a regular file"));
    }
    let mut r = BufReader::new(file);
    let mut sha = Sha256::new();
    let mut buf = Vec::with_capacity(MAX_LINE_LEN + 1);
    match next_line(&mut r, &mut buf)? {
        Some(l) if l == SIZE_CACHE_HEADER.as_bytes() => {}
        _ => return Err(LoadError::Corrupt("bad header")),
    }
    sha.update(&buf);
    sha.update(b"\n");
    let mut entries = HashMap::new();
    loop {
        let Some(line) = next_line(&mut r, &mut buf)? else {
            return Err(LoadError::Corrupt("no end line"));
        };
        if let Some(rest) = line.strip_prefix(b"end ") {
            let mut f = rest.split(|&b| b == b' ');
            let count = f.next().and_then(parse_u64);
            let digest = f.next();
            if f.next().is_some() || count != Some(entries.len() as u64) {
                return Err(LoadError::Corrupt("wrong count"));
            }
            if digest != Some(hex(&sha.finalize()).as_bytes()) {
                return Err(LoadError::Corrupt("checksum mismatch"));
            }
            break;
        }
        let (unique, sizes) = parse_entry(line).ok_or(LoadError::Corrupt("bad entry"))?;
        if entries.len() >= MAX_SIZE_CACHE_ENTRIES {
            return Err(LoadError::Corrupt("too many entries"));
        }
        if entries.insert(Box::from(unique), sizes).is_some() {
            return Err(LoadError::Corrupt("duplicate entry"));
        }
        sha.update(&buf);
        sha.update(b"\n");
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(LoadError::Io)? != 0 {
        return Err(LoadError::Corrupt("data after the end line"));
    }
    Ok(entries)
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn write(path: &Path, entries: &HashMap<Box<[u8]>, Sizes>) -> io::Result<()> {
    let tmp = tmp_path(path);
    // A stale .tmp (a writer that crashed) is replaced; the session lock keeps writers apart.
    let _ = fs::remove_file(&tmp);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SIZE_CACHE_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    let result = (|| {
        let mut keys: Vec<&[u8]> = entries.keys().map(|k| &**k).collect();
        // Sorted: the same cache is always the same file (diffable, testable).
        keys.sort_unstable();
        let mut out = io::BufWriter::new(&file);
        let mut sha = Sha256::new();
        let mut line = Vec::with_capacity(MAX_LINE_LEN + 1);
        let mut emit = |line: &[u8], out: &mut io::BufWriter<&File>| {
            sha.update(line);
            out.write_all(line)
        };
        line.extend_from_slice(SIZE_CACHE_HEADER.as_bytes());
        line.push(b'\n');
        emit(&line, &mut out)?;
        for k in &keys {
            let s = &entries[*k];
            line.clear();
            line.extend_from_slice(k);
            writeln!(
                line,
                " {} {}.{:09} {}",
                s.lf_len, s.mtime.0, s.mtime.1, s.crlf_size
            )?;
            emit(&line, &mut out)?;
        }
        writeln!(out, "end {} {}", keys.len(), hex(&sha.finalize()))?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The cached canonical size of the message stored at `path` with unique part `unique`,
/// when the cache still describes it (see the module documentation). `stored_size`: the
/// `,S=` of the name, if any.
pub fn cached_size(
    cache: &SizeCache,
    unique: &[u8],
    stored_size: Option<u64>,
    path: &Path,
) -> Option<u64> {
    let c = cache.get(unique)?;
    if stored_size == Some(c.lf_len) {
        return Some(c.crlf_size);
    }
    let m = fs::symlink_metadata(path).ok()?;
    let same = m.is_file() && m.len() == c.lf_len && (m.mtime(), m.mtime_nsec()) == c.mtime;
    same.then_some(c.crlf_size)
}

/// The `Sizes` to cache for a file just measured, from its `fstat`.
pub fn sizes_of(meta: &fs::Metadata, crlf_size: u64) -> Sizes {
    Sizes {
        lf_len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        crlf_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(lf: u64, crlf: u64) -> Sizes {
        Sizes {
            lf_len: lf,
            mtime: (1_700_000_000, 123),
            crlf_size: crlf,
        }
    }

    #[test]
    fn round_trip_and_write_only_when_dirty() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("c.index");
        let (mut c, w) = SizeCache::load(&p);
        assert!(w.is_none() && c.is_empty() && !c.is_dirty());
        c.insert(b"1.M1.h", sizes(4, 6));
        c.insert(b"2.M1.h,S=10", sizes(10, 12));
        c.insert(b"odd name", sizes(1, 2));
        c.insert(b"", sizes(1, 2));
        let neg = Sizes {
            lf_len: 0,
            mtime: (-5, 999_999_999),
            crlf_size: 0,
        };
        c.insert(b"3.M1.h", neg);
        assert_eq!(c.len(), 3);
        c.write_if_dirty(&p).expect("write");
        let text = fs::read_to_string(&p).expect("read");
        assert!(
            text.starts_with(
                "popspool-maildir-sizes 1\n\
                 1.M1.h 4 1700000000.000000123 6\n\
                 2.M1.h,S=10 10 1700000000.000000123 12\n\
                 3.M1.h 0 -5.999999999 0\n\
                 end 3 "
            ),
            "{text}"
        );
        assert_eq!(
            fs::metadata(&p).expect("stat").mode() & 0o777,
            SIZE_CACHE_MODE
        );
        let (mut c2, w) = SizeCache::load(&p);
        assert!(w.is_none(), "{w:?}");
        assert_eq!(c2.get(b"3.M1.h"), Some(&neg));
        assert_eq!(c2.get(b"1.M1.h"), Some(&sizes(4, 6)));
        // Same values: not dirty, not rewritten.
        c2.insert(b"1.M1.h", sizes(4, 6));
        assert!(!c2.is_dirty());
        let present: HashSet<&[u8]> = [&b"1.M1.h"[..], b"3.M1.h", b"9.new"].into();
        c2.retain_present(&present);
        assert!(c2.is_dirty());
        c2.write_if_dirty(&p).expect("write");
        assert_eq!(SizeCache::load(&p).0.len(), 2);
        // Nothing left: the file goes.
        c2.retain_present(&HashSet::new());
        c2.write_if_dirty(&p).expect("write");
        assert!(!p.exists());
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn damaged_caches_are_ignored_with_a_warning() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("c.index");
        let mut c = SizeCache::default();
        c.insert(b"1.M1.h", sizes(4, 6));
        c.insert(b"2.M1.h", sizes(5, 7));
        c.write_if_dirty(&p).expect("write");
        let good = fs::read(&p).expect("read");
        let text = String::from_utf8(good.clone()).expect("utf8");
        let long = format!("{}\n", "x".repeat(5000));
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"popspool-maildir-sizes 2\nend 0 x\n".to_vec(),
            good[..good.len() - 1].to_vec(),
            good[..good.len() - 20].to_vec(),
            [&good[..], b"junk\n"].concat(),
            text.replace("4 1700", "5 1700").into_bytes(),
            text.replace("end 2", "end 3").into_bytes(),
            text.replace("2.M1.h", "1.M1.h").into_bytes(),
            text.replace(" 6\n", " 60\n").into_bytes(),
            text.replace(".000000123 6", ".123 6").into_bytes(),
            text.replace(" 4 ", " 04 ").into_bytes(),
            long.into_bytes(),
            b"\x00\xff binary foreign file".to_vec(),
            // An mbox index (another format) in its place.
            b"POPSPIDX\x01\x00\x00\x00".to_vec(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            fs::write(&p, bytes).expect("write");
            let (c, w) = SizeCache::load(&p);
            assert!(c.is_empty(), "case {i}");
            assert!(c.is_dirty(), "case {i}");
            assert!(w.expect("warning").contains("rebuilt"), "case {i}");
        }
        fs::remove_file(&p).expect("rm");
        fs::create_dir(&p).expect("mkdir");
        let (c, w) = SizeCache::load(&p);
        assert!(c.is_empty() && w.is_some());
    }

    #[test]
    fn cached_size_checks_stored_size_or_stat() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("1.M1.h");
        fs::write(&f, b"a\nb\n").expect("write");
        let meta = fs::metadata(&f).expect("stat");
        let mut c = SizeCache::default();
        c.insert(b"1.M1.h", sizes_of(&meta, 6));
        assert_eq!(cached_size(&c, b"1.M1.h", None, &f), Some(6));
        // ,S= agreeing with the entry: believed without a stat (the file need not exist).
        assert_eq!(
            cached_size(&c, b"1.M1.h", Some(4), &d.path().join("x")),
            Some(6)
        );
        assert_eq!(cached_size(&c, b"2.M1.h", None, &f), None);
        // Same length, another mtime: re-measured.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        File::options()
            .write(true)
            .open(&f)
            .and_then(|fh| fh.set_modified(old))
            .expect("utime");
        assert_eq!(cached_size(&c, b"1.M1.h", None, &f), None);
        fs::remove_file(&f).expect("rm");
        assert_eq!(cached_size(&c, b"1.M1.h", None, &f), None);
        // A ,S= that disagrees falls back to the stat (here: gone).
        assert_eq!(cached_size(&c, b"1.M1.h", Some(5), &f), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_load_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let d = tempfile::tempdir().expect("tempdir");
            let p = d.path().join("c.index");
            fs::write(&p, &bytes).expect("write");
            let (c, w) = SizeCache::load(&p);
            proptest::prop_assert!(c.is_empty() || w.is_none());
        }

        #[test]
        fn round_trips(entries in proptest::collection::hash_map(
            "[!-~]{1,40}", (0u64..1 << 40, proptest::prelude::any::<i64>(), 0i64..1_000_000_000, 0u64..3), 0..20)) {
            let d = tempfile::tempdir().expect("tempdir");
            let p = d.path().join("c.index");
            let mut c = SizeCache::default();
            for (k, &(lf, s, ns, extra)) in &entries {
                c.insert(k.as_bytes(), Sizes { lf_len: lf, mtime: (s, ns), crlf_size: lf + extra });
            }
            c.write_if_dirty(&p).expect("write");
            let (back, w) = SizeCache::load(&p);
            proptest::prop_assert!(w.is_none(), "{:?}", w);
            proptest::prop_assert_eq!(back.entries, c.entries);
        }
    }
}
