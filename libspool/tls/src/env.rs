//! The TLS facts handed to the program: `SSL_PROTOCOL`, `SSL_CIPHER` and
//! `SSL_TLS_SNI_SERVERNAME`, named and spelled as ucspi-ssl, s6-tlsd and mod_ssl spell them
//! (protocol `TLSv1.3`, cipher in OpenSSL's naming). The same bytes travel in the UCSPI-TLS
//! `Y` answer and, in implicit mode, to the root process that execs the program; that process
//! trusts none of it: [`parse`] accepts only these names with short, plain values.

#![forbid(unsafe_code)]

use rustls::{CipherSuite, ProtocolVersion};

/// The variables a TLS front sets; any inherited copy is removed before the program starts.
pub const NAMES: [&str; 3] = ["SSL_PROTOCOL", "SSL_CIPHER", "SSL_TLS_SNI_SERVERNAME"];

/// The UCSPI-TLS variables, removed from an implicit-mode program's environment.
pub const UCSPI_TLS_NAMES: [&str; 3] = ["SSLCTLFD", "SSLREADFD", "SSLWRITEFD"];

/// Longest value accepted (a DNS name is at most 253 bytes).
pub const MAX_VALUE: usize = 255;

/// Longest encoded block: three variables with the longest values, and the terminator.
pub const MAX_BLOCK: usize = 3 * (32 + MAX_VALUE) + 2;

/// Variables and their values, in [`NAMES`] order.
pub type Vars = Vec<(&'static str, String)>;

/// `TLSv1.2`, `TLSv1.3` as mod_ssl and ucspi-ssl report them.
pub fn protocol_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "unknown",
    }
}

/// OpenSSL's name for each suite rustls offers here (what ucspi-ssl's SSL_get_cipher_name
/// reports); the IANA name otherwise.
pub fn cipher_name(s: CipherSuite) -> String {
    let n = match s {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return format!("{other:?}"),
    };
    n.to_string()
}

/// One negotiated session's variables, in [`NAMES`] order; SNI only when the client sent a
/// plain one.
pub fn vars(
    proto: ProtocolVersion,
    suite: CipherSuite,
    sni: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (NAMES[0], protocol_name(proto).to_string()),
        (NAMES[1], cipher_name(suite)),
    ];
    // rustls admits only DNS-name characters; anything else is left out rather than refused
    // later by the program process.
    if let Some(s) = sni.filter(|s| plain_value(s.as_bytes())) {
        v.push((NAMES[2], s.to_string()));
    }
    v
}

/// The UCSPI-TLS block: `NAME=value\0` for each, then one more `\0`. With no variables it is
/// `\0\0`, as the convention asks.
pub fn encode(vars: &[(&'static str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in vars {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    if vars.is_empty() {
        out.push(0);
    }
    out.push(0);
    out
}

fn plain_value(v: &[u8]) -> bool {
    v.len() <= MAX_VALUE
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Parses a block from an untrusted writer: only [`NAMES`], each at most once, values of
/// letters, digits and `. - _`, and the terminator. None on anything else.
pub fn parse(block: &[u8]) -> Option<Vec<(&'static str, String)>> {
    if block.len() > MAX_BLOCK || block.len() < 2 || !block.ends_with(&[0, 0]) {
        return None;
    }
    let body = &block[..block.len() - 1];
    let mut out: Vec<(&'static str, String)> = Vec::new();
    if body == [0] {
        return Some(out);
    }
    for item in body[..body.len() - 1].split(|&b| b == 0) {
        let eq = item.iter().position(|&b| b == b'=')?;
        let (k, v) = (&item[..eq], &item[eq + 1..]);
        let name = *NAMES.iter().find(|n| n.as_bytes() == k)?;
        if out.iter().any(|(n, _)| *n == name) || !plain_value(v) {
            return None;
        }
        out.push((name, String::from_utf8(v.to_vec()).ok()?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = vars(
            ProtocolVersion::TLSv1_3,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            Some("pop.example.org"),
        );
        let b = encode(&v);
        assert_eq!(
            b,
            b"SSL_PROTOCOL=TLSv1.3\0SSL_CIPHER=TLS_AES_256_GCM_SHA384\0SSL_TLS_SNI_SERVERNAME=pop.example.org\0\0"
        );
        assert_eq!(parse(&b).unwrap(), v);
        assert_eq!(encode(&[]), b"\0\0");
        assert_eq!(parse(b"\0\0").unwrap(), vec![]);
    }

    proptest::proptest! {
        /// Whatever bytes arrive, parse accepts only the three names with plain values, and
        /// what it accepts encodes back to the same block.
        #[test]
        fn parse_accepts_only_what_encode_makes(block in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(b"SSL_PROTOCOL=SSL_CIPHER=SSL_TLS_SNI_SERVERNAME=LD_PRELOAD=".to_vec()),
                proptest::num::u8::ANY,
                proptest::strategy::Just(0u8),
            ],
            0..120,
        )) {
            if let Some(vars) = parse(&block) {
                for (k, v) in &vars {
                    proptest::prop_assert!(NAMES.contains(k));
                    proptest::prop_assert!(plain_value(v.as_bytes()));
                }
                proptest::prop_assert_eq!(encode(&vars), block);
            }
        }
    }

    proptest::proptest! {
        /// Any set of the three names with plain values survives encode then parse.
        #[test]
        fn encode_then_parse_round_trips(
            proto in "[A-Za-z0-9._-]{0,20}",
            cipher in "[A-Za-z0-9._-]{0,40}",
            sni in proptest::option::of("[a-z0-9.-]{1,253}"),
        ) {
            let mut vars: Vars = vec![(NAMES[0], proto), (NAMES[1], cipher)];
            if let Some(s) = sni {
                vars.push((NAMES[2], s));
            }
            proptest::prop_assert_eq!(parse(&encode(&vars)), Some(vars));
        }
    }

    #[test]
    fn refuses_foreign_names_and_values() {
        for bad in [
            &b"LD_PRELOAD=/tmp/x.so\0\0"[..],
            b"SSL_PROTOCOL=a b\0\0",
            b"SSL_PROTOCOL=TLSv1.3\0SSL_PROTOCOL=TLSv1.2\0\0",
            b"SSL_PROTOCOL=TLSv1.3\0",
            b"SSL_PROTOCOL\0\0",
            b"SSL_CIPHER=x/y\0\0",
            b"",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let long = format!("SSL_CIPHER={}\0\0", "a".repeat(MAX_VALUE + 1));
        assert!(parse(long.as_bytes()).is_none());
    }
}
