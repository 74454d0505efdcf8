//! Maildir file names: the unique part, the UIDL (as is or the hashed fallback), the leading
//! timestamp, the `,S=`/`,W=` fields and the name a retrieved message gets in `cur/`.
//!
//! Input: a flags byte (bit 0: the name is in `cur/`), then a name. Properties: each function
//! agrees with a direct reading of its definition; a size written as `,S=n` reads back as n;
//! the fallback UIDL is a valid UIDL exactly when the plain one is not; the `cur/` name keeps
//! the unique part and has the `S` flag, in ASCII order when the flags were.

use spool_store::maildir::names::{
    cmp_unique, leading_timestamp, name_field, plain_uidl, unique_part,
};
use spool_store::maildir::{fallback_uidl, seen_name};
use spool_wire::limits::MAX_UIDL_LEN;

fn valid_uidl(u: &[u8]) -> bool {
    !u.is_empty() && u.len() <= MAX_UIDL_LEN && u.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

/// `,K=digits`: the first field after the first comma whose key is `k` and whose digits are
/// all digits and fit a u64.
fn reference_field(unique: &[u8], k: u8) -> Option<u64> {
    unique.split(|&b| b == b',').skip(1).find_map(|f| {
        let digits = f.strip_prefix(&[k, b'='])?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse::<u64>().ok()
    })
}

fn reference_timestamp(name: &[u8]) -> u32 {
    let digits: Vec<u8> = name
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    if digits.is_empty() {
        return u32::MAX;
    }
    let significant = digits.iter().skip_while(|&&d| d == b'0').count();
    if significant > 10 {
        return u32::MAX - 1;
    }
    let v: u64 = std::str::from_utf8(&digits)
        .unwrap()
        .parse()
        .unwrap_or(u64::MAX);
    u32::try_from(v).unwrap_or(u32::MAX - 1).min(u32::MAX - 1)
}

pub fn run(data: &[u8]) {
    let Some((&flags, name)) = data.split_first() else {
        return;
    };
    let in_cur = flags & 1 != 0;
    let unique = unique_part(name);
    assert!(name.starts_with(unique));
    assert!(!unique.contains(&b':'));
    assert!(unique.len() == name.len() || name[unique.len()] == b':');

    assert_eq!(plain_uidl(unique), valid_uidl(unique));
    match fallback_uidl(unique) {
        None => assert!(plain_uidl(unique)),
        Some(u) => {
            assert!(!plain_uidl(unique));
            assert!(
                valid_uidl(u.as_bytes()),
                "fallback UIDL {u:?} is not a UIDL"
            );
            assert!(u.starts_with("sha256:"));
            assert_eq!(fallback_uidl(unique).as_deref(), Some(&*u));
        }
    }

    assert_eq!(leading_timestamp(name), reference_timestamp(name));
    for k in [b'S', b'W'] {
        assert_eq!(name_field(unique, k), reference_field(unique, k));
    }

    // A size written the way deliverers write it reads back.
    let n = u64::from_le_bytes(std::array::from_fn(|i| *name.get(i).unwrap_or(&0)));
    let mut written = unique.to_vec();
    written.retain(|&b| b != b',');
    written.extend_from_slice(format!(",S={n},W={}", n / 2).as_bytes());
    assert_eq!(name_field(&written, b'S'), Some(n));
    assert_eq!(name_field(&written, b'W'), Some(n / 2));

    // Comparing unique parts without finding the colon first.
    let other = &name[name.len() / 2..];
    assert_eq!(
        cmp_unique(name, other),
        unique.cmp(unique_part(other)),
        "cmp_unique({name:?}, {other:?})"
    );
    assert!(cmp_unique(name, unique).is_eq());

    match seen_name(name, in_cur) {
        None => {
            let flags = name
                .iter()
                .position(|&c| c == b':')
                .map(|c| &name[c + 1..])
                .expect("no change for a name without an info part");
            assert!(!flags.starts_with(b"2,") || (in_cur && flags[2..].contains(&b'S')));
        }
        Some(new) => {
            assert_eq!(unique_part(&new), unique);
            let info = &new[unique.len()..];
            let flags = info
                .strip_prefix(b":2,")
                .expect("the new name has a :2, info");
            assert!(flags.contains(&b'S'));
            let old_flags = name.get(unique.len() + 3..).unwrap_or(b"");
            if old_flags.windows(2).all(|w| w[0] <= w[1]) {
                assert!(flags.windows(2).all(|w| w[0] <= w[1]), "{new:?}");
            }
            // Idempotent: once seen in cur/, nothing more changes.
            assert_eq!(seen_name(&new, true), None);
        }
    }
}
