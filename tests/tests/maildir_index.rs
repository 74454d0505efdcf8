//! The Maildir size cache through the real pop-serve: a warm session answers exactly what a
//! session without any cache answers and reads no message file; a file changed under its
//! name is measured again; a damaged cache is rebuilt, never fatal.

use popspool_tests::pop::Served;
use popspool_tests::serve_args;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn serve(state: &Path, md: &Path) -> Served {
    let mut args = serve_args(state);
    args.push(format!("maildir:{}", md.display()));
    Served::spawn(&args, &[("USER", "tester")])
}

/// STAT, LIST, UIDL, and with `retr` every message (checking its octets against LIST).
fn session(state: &Path, md: &Path, retr: bool) -> Vec<String> {
    let mut s = serve(state, md);
    let c = &mut s.client;
    assert_eq!(c.line(), "+OK ");
    let mut out = vec![c.cmd("STAT")];
    assert!(c.cmd("LIST").starts_with("+OK"));
    let list = c.listing();
    out.extend(list.iter().cloned());
    assert!(c.cmd("UIDL").starts_with("+OK"));
    out.extend(c.listing());
    if retr {
        for l in &list {
            let (n, size) = l.split_once(' ').unwrap();
            assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
            let body = c.body();
            assert_eq!(body.len().to_string(), size, "RETR {n} octets = LIST");
            out.push(String::from_utf8_lossy(&body).into_owned());
        }
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (code, err) = s.finish();
    assert_eq!(code, 0, "{err}");
    out
}

/// A Maildir of `n` messages without `,W=`: Courier-style `,S=` names, bare qmail names,
/// and seen ones in cur/; LF, CRLF, mixed and unterminated contents.
fn generate(md: &Path, n: usize) -> Vec<PathBuf> {
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    (0..n)
        .map(|i| {
            let mut body = format!("Subject: message {i}\n\n").into_bytes();
            for k in 0..(i % 9) {
                body.extend_from_slice(match k % 4 {
                    0 => b"line\n".as_slice(),
                    1 => b".dotted\r\n",
                    2 => b"\n",
                    _ => b"bare\rcr\n",
                });
            }
            if i % 5 == 0 {
                body.extend_from_slice(b"no final newline");
            }
            let name = match i % 3 {
                0 => format!("new/{}.M{i}P1Q{i}.host,S={}", 1_700_000_000 + i, body.len()),
                1 => format!("new/{}.M{i}P1Q{i}.host", 1_700_000_000 + i),
                _ => format!("cur/{}.M{i}P1Q{i}.host:2,S", 1_700_000_000 + i),
            };
            let p = md.join(name);
            fs::write(&p, &body).unwrap();
            p
        })
        .collect()
}

/// First bytes of the Maildir index (libspool/store/src/maildir/index.rs).
const MAGIC: &[u8] = b"POPSPMD\x02";

/// The message names recorded in an index: every run of name bytes ending in `marker` plus
/// what follows up to a byte that cannot be in these test names.
fn names_in(index: &[u8], marker: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(index);
    let mut out = Vec::new();
    for (at, _) in text.match_indices(marker) {
        let start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
            .map_or(0, |i| i + 1);
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_graphic()))
            .map_or(text.len(), |i| at + i);
        out.push(text[start..end].to_string());
    }
    out
}

fn cache_file(state: &Path) -> PathBuf {
    fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "index"))
        .expect("a size cache")
}

/// New content of the same length under the same name and mtime: only a reader notices.
fn forge(p: &Path) {
    let mtime = fs::metadata(p).unwrap().modified().unwrap();
    let mut bytes = fs::read(p).unwrap();
    for b in bytes.iter_mut() {
        if *b == b'\n' {
            *b = b'x';
        }
    }
    fs::write(p, &bytes).unwrap();
    File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn warm_sessions_answer_as_cold_ones_and_read_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    let state = dir.path().join("state");
    let files = generate(&md, 30);
    let cold = session(&state, &md, true);
    let cache = cache_file(&state);
    assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o777, 0o600);
    let bytes = fs::read(&cache).unwrap();
    assert!(
        bytes.starts_with(MAGIC),
        "{:?}",
        &bytes[..bytes.len().min(16)]
    );
    assert_eq!(names_in(&bytes, ".host").len(), 30);
    assert_eq!(session(&state, &md, true), cold);
    // Every message forged behind the cache's back (same length and mtime): the warm session
    // still lists the cached sizes, so it read none of them.
    // (The RETR sessions moved the new/ ones to cur/ as seen.)
    assert_eq!(files.len(), 30);
    for sub in ["new", "cur"] {
        for e in fs::read_dir(md.join(sub)).unwrap() {
            forge(&e.unwrap().path());
        }
    }
    let warm = session(&state, &md, false);
    assert_eq!(warm, cold[..warm.len()]);
    // Without a cache the forged contents are measured: the sizes differ.
    let fresh = session(&dir.path().join("state2"), &md, true);
    assert_ne!(fresh[0], cold[0]);
}

#[test]
fn changed_files_are_measured_and_a_damaged_cache_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    let state = dir.path().join("state");
    let files = generate(&md, 12);
    session(&state, &md, false);
    // A bare qmail name (no ,S=) given a longer content: its stat no longer matches.
    let bare = files
        .iter()
        .find(|p| !p.to_string_lossy().contains(",S=") && !p.to_string_lossy().contains(':'))
        .unwrap();
    fs::write(bare, b"Subject: grown\n\nmuch\nlonger\nnow\n").unwrap();
    // Another deleted, one new.
    fs::remove_file(&files[0]).unwrap();
    fs::write(md.join("new/1800000000.M1P1Q1.host"), b"new\n").unwrap();
    let no_cache = dir.path().join("nocache");
    let want = session(&no_cache, &md, true);
    assert_eq!(session(&state, &md, true), want);
    let bytes = fs::read(cache_file(&state)).unwrap();
    let names = names_in(&bytes, ".host");
    assert!(
        !names.iter().any(|n| n.contains(".M0P1Q0.")),
        "deleted message pruned: {names:?}"
    );
    assert!(names
        .iter()
        .any(|n| n.starts_with("1800000000.M1P1Q1.host")));
    // Damaged in several ways: never fatal, same answers, rebuilt.
    let cache = cache_file(&state);
    let good = fs::read(&cache).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x20;
    for junk in [
        b"".as_slice(),
        MAGIC,
        b"popspool-maildir-sizes 1\n",
        b"\xff\xfe garbage",
        &good[..good.len() - 1],
        &flipped,
    ] {
        fs::write(&cache, junk).unwrap();
        assert_eq!(session(&state, &md, true), want);
        let bytes = fs::read(&cache).unwrap();
        assert!(bytes.starts_with(MAGIC), "rebuilt");
        assert_eq!(names_in(&bytes, ".host").len(), 12);
    }
}
