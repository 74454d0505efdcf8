//! SASL PLAIN (RFC 4616) as carried by POP3 AUTH (RFC 5034): strict base64 and the
//! `authzid NUL authcid NUL passwd` message.
//!
//! Strict means one encoding per value: the standard alphabet, `=` padding required, no
//! whitespace, no bits set after the last encoded byte. A lenient decoder would let two
//! different lines mean the same credentials, which only helps an attacker probe the decoder.

#![forbid(unsafe_code)]

use zeroize::Zeroizing;

/// Why a client's SASL response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// Not canonical base64 (RFC 5034 §4: the server rejects the AUTH command).
    BadBase64,
    /// Not `authzid NUL authcid NUL passwd` with a non-empty authcid and password, or an
    /// authcid with control characters.
    Malformed,
    /// An authorization identity other than the authentication identity: we never let one
    /// user act as another.
    AuthzidRefused,
}

fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes canonical base64. The output is wiped when dropped: it holds a password.
/// Memory is bounded by the input, which the caller's line limit bounds.
pub fn decode_base64(input: &[u8]) -> Result<Zeroizing<Vec<u8>>, SaslError> {
    if !input.len().is_multiple_of(4) {
        return Err(SaslError::BadBase64);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(input.len() / 4 * 3));
    let quads = input.len() / 4;
    for (i, quad) in input.chunks_exact(4).enumerate() {
        let last = i + 1 == quads;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(SaslError::BadBase64);
        }
        let mut v: u32 = 0;
        for &c in &quad[..4 - pad] {
            v = (v << 6) | sextet(c).ok_or(SaslError::BadBase64)?;
        }
        match pad {
            0 => out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]),
            1 => {
                // 18 bits: two bytes and two bits that must be zero.
                if v & 0b11 != 0 {
                    return Err(SaslError::BadBase64);
                }
                out.extend_from_slice(&[(v >> 10) as u8, (v >> 2) as u8]);
            }
            _ => {
                // 12 bits: one byte and four bits that must be zero.
                if v & 0b1111 != 0 {
                    return Err(SaslError::BadBase64);
                }
                out.push((v >> 4) as u8);
            }
        }
    }
    Ok(out)
}

/// The parts of a PLAIN message that matter: who logs in, with what password. Both are
/// wiped when dropped.
#[derive(Debug)]
pub struct PlainCredentials {
    pub authcid: Zeroizing<Vec<u8>>,
    pub password: Zeroizing<Vec<u8>>,
}

/// Splits a decoded PLAIN message. The authzid must be empty or equal to the authcid.
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslError> {
    let mut parts = msg.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty()
        || password.is_empty()
        || password.contains(&0)
        || authcid.iter().any(|&b| b < 0x20 || b == 0x7f)
    {
        return Err(SaslError::Malformed);
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidRefused);
    }
    Ok(PlainCredentials {
        authcid: Zeroizing::new(authcid.to_vec()),
        password: Zeroizing::new(password.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference encoder for the tests only.
    fn encode(data: &[u8]) -> Vec<u8> {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        for c in data.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(v >> (18 - 6 * i)) as usize & 63]);
                } else {
                    out.push(b'=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_table() {
        let ok: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"Zg==", b"f"),
            (b"Zm8=", b"fo"),
            (b"Zm9v", b"foo"),
            (b"Zm9vYg==", b"foob"),
            (b"AGJvYgBzZWNyZXQ=", b"\0bob\0secret"),
            (b"+/+/", b"\xfb\xff\xbf"),
        ];
        for (i, want) in ok {
            assert_eq!(&decode_base64(i).unwrap()[..], *want, "{i:?}");
        }
        let bad: &[&[u8]] = &[
            b"Zg",
            b"Zg=",
            b"Zh==",
            b"Zm9=",
            b"Z===",
            b"====",
            b"Zg==Zg==",
            b"Zm9v ",
            b" Zm9v",
            b"Zm 9v",
            b"Zm9v\r\n",
            b"Zm-v",
            b"Zm_v",
            b"Z=9v",
        ];
        for i in bad {
            assert_eq!(
                decode_base64(i).map(|v| v.to_vec()),
                Err(SaslError::BadBase64),
                "{i:?}"
            );
        }
    }

    #[test]
    fn plain_table() {
        type Case<'a> = (&'a [u8], Result<(&'a [u8], &'a [u8]), SaslError>);
        let cases: &[Case] = &[
            (b"\0bob\0secret", Ok((b"bob", b"secret"))),
            (b"bob\0bob\0secret", Ok((b"bob", b"secret"))),
            (b"\0bob\0sec ret\xff", Ok((b"bob", b"sec ret\xff"))),
            (b"alice\0bob\0secret", Err(SaslError::AuthzidRefused)),
            (b"\0bob\0", Err(SaslError::Malformed)),
            (b"\0\0secret", Err(SaslError::Malformed)),
            (b"\0bob", Err(SaslError::Malformed)),
            (b"bob", Err(SaslError::Malformed)),
            (b"", Err(SaslError::Malformed)),
            (b"\0bob\0se\0cret", Err(SaslError::Malformed)),
            (b"\0b\nob\0secret", Err(SaslError::Malformed)),
            (b"\0b\x7fob\0secret", Err(SaslError::Malformed)),
        ];
        for (msg, want) in cases {
            let got = parse_plain(msg).map(|c| (c.authcid.to_vec(), c.password.to_vec()));
            let want = want.map(|(u, p)| (u.to_vec(), p.to_vec()));
            assert_eq!(got, want, "{msg:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(&decode_base64(&encode(&data)).unwrap()[..], &data[..]);
        }

        #[test]
        fn only_canonical_decodes(input in proptest::collection::vec(
            prop_oneof![Just(b'='), Just(b'A'), Just(b'g'), Just(b'/'), any::<u8>()], 0..40)) {
            if let Ok(d) = decode_base64(&input) {
                prop_assert_eq!(encode(&d), input);
            }
        }
    }
}
