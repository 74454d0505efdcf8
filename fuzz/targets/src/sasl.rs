//! SASL PLAIN as POP3 AUTH carries it: strict base64, then `authzid NUL authcid NUL passwd`.
//!
//! Properties: the decoder accepts exactly the canonical encodings (the output re-encodes to
//! the input byte for byte, so no two lines mean the same credentials), every byte string
//! round-trips through encode and decode, and `parse_plain` agrees with a direct reading of
//! RFC 4616 plus the documented refusals.

use spool_login::popup::sasl::{decode_base64, parse_plain, SaslError};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Canonical base64 with `=` padding.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let v = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(ALPHABET[(v >> (18 - 6 * k) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

pub fn run(data: &[u8]) {
    // The input as a client's base64 line.
    match decode_base64(data) {
        Ok(bytes) => {
            assert_eq!(encode(&bytes), data, "accepted a non-canonical encoding");
            check_plain(&bytes);
        }
        Err(e) => {
            assert_eq!(e, SaslError::BadBase64);
            assert!(!data.is_empty(), "refused the empty encoding");
        }
    }
    // The input as decoded bytes: its encoding always decodes back to it.
    let enc = encode(data);
    let back = decode_base64(&enc).expect("refused a canonical encoding");
    assert_eq!(&back[..], data);
    check_plain(data);
}

fn check_plain(msg: &[u8]) {
    let mut parts = msg.splitn(3, |&b| b == 0);
    let (authzid, authcid, password) = (parts.next(), parts.next(), parts.next());
    let got = parse_plain(msg);
    let (Some(authzid), Some(authcid), Some(password)) = (authzid, authcid, password) else {
        assert_eq!(got.err(), Some(SaslError::Malformed));
        return;
    };
    let malformed = authcid.is_empty()
        || password.is_empty()
        || password.contains(&0)
        || authcid.iter().any(|&b| b < 0x20 || b == 0x7f);
    match got {
        Ok(c) => {
            assert!(!malformed);
            assert!(authzid.is_empty() || authzid == authcid);
            assert_eq!(&c.authcid[..], authcid);
            assert_eq!(&c.password[..], password);
        }
        Err(SaslError::Malformed) => assert!(malformed),
        Err(SaslError::AuthzidRefused) => assert!(!malformed && authzid != authcid),
        Err(SaslError::BadBase64) => panic!("parse_plain said BadBase64"),
    }
}
