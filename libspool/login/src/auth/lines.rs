//! Reading colon-separated account databases (/etc/passwd, /etc/shadow, Dovecot passwd-file)
//! line by line with a bound, wiping every line buffer since some lines hold secrets.

#![forbid(unsafe_code)]

use super::AuthError;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use zeroize::Zeroizing;

/// Longest database line we look at. Longer lines are skipped whole (and so never match): no
/// real account line comes near it, and it bounds memory on a corrupt file.
pub const MAX_DB_LINE: usize = 64 * 1024;

/// Calls `f` with every line of `path` (without its LF or a CR before it) that fits
/// [`MAX_DB_LINE`]; `f` returns `true` to stop. The whole file is read even after a match
/// unless `f` stops, so callers that want lookup time independent of the user's position keep
/// returning `false`. A file that cannot be opened or read is a temporary failure: the
/// database is broken, not the credentials.
pub fn for_each_line(path: &Path, mut f: impl FnMut(&[u8]) -> bool) -> Result<(), AuthError> {
    let file = File::open(path)
        .map_err(|e| AuthError::Temporary(format!("cannot open {}: {e}", path.display())))?;
    scan(BufReader::new(file), &mut f)
        .map_err(|e| AuthError::Temporary(format!("cannot read {}: {e}", path.display())))
}

/// [`for_each_line`] on a file already opened (by a source that opens it through a directory
/// descriptor); `what` names it in errors.
pub fn for_each_line_of(
    file: File,
    what: &str,
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<(), AuthError> {
    scan(BufReader::new(file), &mut f)
        .map_err(|e| AuthError::Temporary(format!("cannot read {what}: {e}")))
}

/// The reader-generic part of [`for_each_line`], for tests.
pub fn scan<R: BufRead>(mut r: R, f: &mut impl FnMut(&[u8]) -> bool) -> std::io::Result<()> {
    let mut line = Zeroizing::new(Vec::with_capacity(256));
    loop {
        line.clear();
        let n = r
            .by_ref()
            .take(MAX_DB_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > MAX_DB_LINE {
            // Too long: skip to the end of this line, wiping as we go.
            skip_line(&mut r)?;
            continue;
        }
        let mut l: &[u8] = &line;
        if let Some(s) = l.strip_suffix(b"\n") {
            l = s;
        }
        if let Some(s) = l.strip_suffix(b"\r") {
            l = s;
        }
        if f(l) {
            return Ok(());
        }
    }
}

fn skip_line<R: BufRead>(r: &mut R) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// Splits a line on `:` into at most `max` fields; the last field keeps any further colons
/// (Dovecot's extra fields contain `maildir:~/Maildir`).
pub fn fields(line: &[u8], max: usize) -> Vec<&[u8]> {
    line.splitn(max, |&b| b == b':').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[u8]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        scan(data, &mut |l: &[u8]| {
            v.push(l.to_vec());
            false
        })
        .unwrap();
        v
    }

    #[test]
    fn lines_table() {
        let long = vec![b'a'; MAX_DB_LINE + 10];
        let mut with_long = b"x\n".to_vec();
        with_long.extend_from_slice(&long);
        with_long.extend_from_slice(b"\ny\n");
        let exact = vec![b'b'; MAX_DB_LINE];
        let mut with_exact = exact.clone();
        with_exact.push(b'\n');
        let cases: Vec<(Vec<u8>, Vec<Vec<u8>>)> = vec![
            (b"".to_vec(), vec![]),
            (b"a\nb\n".to_vec(), vec![b"a".to_vec(), b"b".to_vec()]),
            (b"a\r\nb".to_vec(), vec![b"a".to_vec(), b"b".to_vec()]),
            (b"\n\n".to_vec(), vec![b"".to_vec(), b"".to_vec()]),
            (with_long, vec![b"x".to_vec(), b"y".to_vec()]),
            (with_exact, vec![exact]),
        ];
        for (input, want) in cases {
            assert_eq!(collect(&input), want);
        }
    }

    #[test]
    fn fields_keep_colons_in_the_last() {
        assert_eq!(
            fields(b"u:p:1:2::/h::userdb_mail=maildir:~/M", 8),
            vec![
                &b"u"[..],
                b"p",
                b"1",
                b"2",
                b"",
                b"/h",
                b"",
                b"userdb_mail=maildir:~/M"
            ]
        );
        assert_eq!(fields(b"u", 8), vec![&b"u"[..]]);
    }
}
