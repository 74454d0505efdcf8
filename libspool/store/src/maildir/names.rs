//! Maildir file names: the unique part (the UIDL), the leading timestamp that orders
//! messages, and the `,S=`/`,W=` size fields.

#![forbid(unsafe_code)]

/// The unique part of a Maildir file name: everything before the first `:`.
pub fn unique_part(name: &[u8]) -> &[u8] {
    // A plain loop: names are short, and SIMD memchr's set-up dominates at this length.
    match name.iter().position(|&c| c == b':') {
        Some(i) => &name[..i],
        None => name,
    }
}

/// Is the unique part a valid RFC 1939 UIDL as it is (1-70 octets of 0x21-0x7E)?
pub fn plain_uidl(unique: &[u8]) -> bool {
    !unique.is_empty()
        && unique.len() <= spool_wire::limits::MAX_UIDL_LEN
        && unique.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

/// Compares the unique parts of two names without first finding their `:` (a `memchr` per
/// name costs more than the whole comparison of two short names that differ early).
pub fn cmp_unique(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    // The common case when merging a listing with its index: the very same name.
    if a == b {
        return std::cmp::Ordering::Equal;
    }
    let at = |n: &[u8], i: usize| n.get(i).copied().filter(|&c| c != b':');
    let mut i = 0;
    loop {
        match (at(a, i), at(b, i)) {
            (Some(x), Some(y)) if x == y => i += 1,
            (x, y) => return x.cmp(&y),
        }
    }
}

/// The delivery time at the start of a name, saturated at `u32::MAX - 1` (after 2106, or
/// not a time); no leading digit is `u32::MAX`, so unknown ages sort last.
pub fn leading_timestamp(name: &[u8]) -> u32 {
    let mut any = false;
    let mut t: u64 = 0;
    for &d in name.iter().take_while(|b| b.is_ascii_digit()) {
        any = true;
        t = t.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    if any {
        u32::try_from(t).unwrap_or(u32::MAX - 1).min(u32::MAX - 1)
    } else {
        u32::MAX
    }
}

/// The value of a `,K=digits` field in the unique part (Courier/Dovecot `,S=` and `,W=`).
pub fn name_field(unique: &[u8], key: u8) -> Option<u64> {
    unique
        .split(|&b| b == b',')
        .skip(1)
        .find_map(|field| match field {
            [k, b'=', digits @ ..] if *k == key && !digits.is_empty() => {
                digits.iter().try_fold(0u64, |acc, &d| {
                    if d.is_ascii_digit() {
                        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                    } else {
                        None
                    }
                })
            }
            _ => None,
        })
}
