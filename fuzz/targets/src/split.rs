//! How one fuzz input carries a flags byte and two files.

/// `flags`, then a `u16` little-endian length `n`, then the first file (`n` bytes, fewer when
/// the input ends first), then the second file (the rest). Inputs shorter than 3 bytes give
/// two empty files.
pub fn two(data: &[u8]) -> (u8, &[u8], &[u8]) {
    let [flags, lo, hi, rest @ ..] = data else {
        return (data.first().copied().unwrap_or(0), &[], &[]);
    };
    let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
    (*flags, &rest[..n], &rest[n..])
}

/// The inverse of [`two`] (for making seeds); `None` when `first` does not fit a `u16`.
pub fn join(flags: u8, first: &[u8], second: &[u8]) -> Option<Vec<u8>> {
    let n = u16::try_from(first.len()).ok()?;
    let mut v = vec![flags];
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(first);
    v.extend_from_slice(second);
    Some(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn join_then_two() {
        let v = super::join(7, b"abc", b"de").unwrap();
        assert_eq!(super::two(&v), (7, &b"abc"[..], &b"de"[..]));
        assert_eq!(super::two(&[1, 9, 0, b'x']), (1, &b"x"[..], &b""[..]));
    }
}
