//! Plaintext secrets and APOP (RFC 1939 §7): the digest is MD5(timestamp + secret) in lowercase
//! hex, so only a plaintext-stored secret can check it.
//!
//! qmail-popup hands the greeting's timestamp over fd 3 for USER/PASS as well as for APOP, so a
//! non-empty timestamp does not mean APOP. The rule: with a plaintext secret, a non-empty
//! timestamp and a password field of exactly 32 hex digits, the field is checked both as an
//! APOP digest and as a password (a user may have a 32-hex-digit password); it is accepted if
//! either matches. Both comparisons always run, in constant time. With a crypt-stored secret
//! the field is only ever a password.

#![forbid(unsafe_code)]

use super::constant_time;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

/// Length of an APOP digest: 128-bit MD5 in hex.
pub const APOP_DIGEST_LEN: usize = 32;

/// Whether `field` has the shape of an APOP digest.
pub fn looks_like_digest(field: &[u8]) -> bool {
    field.len() == APOP_DIGEST_LEN && field.iter().all(u8::is_ascii_hexdigit)
}

/// The APOP digest a client holding `secret` sends for `timestamp`, lowercase hex.
pub fn digest(timestamp: &[u8], secret: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut h = Md5::new();
    h.update(timestamp);
    h.update(secret);
    let d = h.finalize();
    let mut out = Zeroizing::new(Vec::with_capacity(APOP_DIGEST_LEN));
    for b in d.iter() {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out
}

/// Checks the password field against a plaintext secret, as a password and, when it may be one,
/// as an APOP digest (see the module comment).
pub fn check_plain(field: &[u8], timestamp: &[u8], secret: &[u8]) -> bool {
    let as_password = constant_time::eq(field, secret);
    let as_digest = if !timestamp.is_empty() && looks_like_digest(field) {
        let lower = Zeroizing::new(field.to_ascii_lowercase());
        constant_time::eq(&lower, &digest(timestamp, secret))
    } else {
        false
    };
    // Non-short-circuit: both comparisons have already run; combine without a branch.
    as_password | as_digest
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1939 §7's example.
    const TS: &[u8] = b"<1896.697170952@dbc.mtview.ca.us>";
    const RFC_DIGEST: &[u8] = b"c4c9334bac560ecc979e58001b3e22fb";

    #[test]
    fn rfc1939_example() {
        assert_eq!(&digest(TS, b"tanstaaf")[..], RFC_DIGEST);
    }

    #[test]
    fn check_table() {
        let upper = RFC_DIGEST.to_ascii_uppercase();
        let hexpw = b"0123456789abcdef0123456789abcdef";
        // (field sent, timestamp, stored secret, accepted)
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], bool);
        let cases: &[Case] = &[
            (RFC_DIGEST, TS, b"tanstaaf", true),
            (&upper, TS, b"tanstaaf", true),
            (RFC_DIGEST, TS, b"tanstaaX", false),
            (RFC_DIGEST, b"<other@ts>", b"tanstaaf", false),
            // No timestamp: never APOP.
            (RFC_DIGEST, b"", b"tanstaaf", false),
            // Plain passwords, with or without a timestamp (qmail-popup sends one for PASS).
            (b"tanstaaf", TS, b"tanstaaf", true),
            (b"tanstaaf", b"", b"tanstaaf", true),
            (b"tanstaa", TS, b"tanstaaf", false),
            // A password that looks like a digest still works as a password.
            (hexpw, TS, hexpw, true),
            (b"", TS, b"x", false),
        ];
        for (field, ts, secret, want) in cases {
            assert_eq!(
                check_plain(field, ts, secret),
                *want,
                "{:?}",
                String::from_utf8_lossy(field)
            );
        }
    }

    #[test]
    fn digest_shape() {
        assert!(looks_like_digest(RFC_DIGEST));
        assert!(!looks_like_digest(&RFC_DIGEST[1..]));
        assert!(!looks_like_digest(b"g4c9334bac560ecc979e58001b3e22fb"));
    }
}
