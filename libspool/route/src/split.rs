//! The parsed request as the confined parser sends it to the parent: one bounded,
//! length-checked message over the `SOCK_SEQPACKET` pair of `spool_login::popup::split`.
//!
//! Layout: the version byte [`VERSION`], then method, user, password, salt, protocol and
//! client IP (empty when none), each as a big-endian `u16` length and that many bytes, then
//! the attempt as a big-endian `u32`. Nothing may follow. [`decode`] checks every length and
//! the values [`crate::http`] would have accepted, so a subverted parser can send the parent
//! nothing a well-formed request could not carry.

#![forbid(unsafe_code)]

use crate::http::{AuthRequest, MAX_HEAD_BYTES};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use zeroize::Zeroizing;

/// The message format's version.
pub const VERSION: u8 = 1;

/// Most bytes in a message: every field comes from a head of at most
/// [`MAX_HEAD_BYTES`] bytes, plus the framing.
pub const MAX_MESSAGE: usize = MAX_HEAD_BYTES + 64;

fn put(out: &mut Vec<u8>, field: &[u8]) -> Result<(), String> {
    let n = u16::try_from(field.len()).map_err(|_| "field too long".to_string())?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

/// Encodes `req`; an error when it would exceed [`MAX_MESSAGE`].
pub fn encode(req: &AuthRequest) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(vec![VERSION]);
    let ip = req.client_ip.map(|a| a.to_string()).unwrap_or_default();
    for f in [
        req.method.as_bytes(),
        &req.user,
        &req.pass,
        &req.salt,
        req.protocol.as_bytes(),
        ip.as_bytes(),
    ] {
        put(&mut out, f)?;
    }
    out.extend_from_slice(&req.attempt.to_be_bytes());
    if out.len() > MAX_MESSAGE {
        return Err(format!("message longer than {MAX_MESSAGE} bytes"));
    }
    Ok(out)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("truncated message".into());
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }
    fn field(&mut self) -> Result<&'a [u8], String> {
        let len = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        self.take(n)
    }
    fn text(&mut self, what: &str) -> Result<String, String> {
        let f = self.field()?;
        String::from_utf8(f.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// Decodes one message; an error for anything [`encode`] would not produce.
pub fn decode(msg: &[u8]) -> Result<AuthRequest, String> {
    if msg.len() > MAX_MESSAGE {
        return Err(format!("message longer than {MAX_MESSAGE} bytes"));
    }
    let mut r = Reader { rest: msg };
    if r.take(1)? != [VERSION] {
        return Err("unknown message version".into());
    }
    let method = r.text("method")?;
    let user = r.field()?.to_vec();
    let pass = Zeroizing::new(r.field()?.to_vec());
    let salt = r.field()?.to_vec();
    let protocol = r.text("protocol")?;
    let ip = r.text("client IP")?;
    let client_ip = if ip.is_empty() {
        None
    } else {
        Some(ip.parse().map_err(|_| "client IP is not an address")?)
    };
    let a = r.take(4)?;
    let attempt = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
    if !r.rest.is_empty() {
        return Err("trailing bytes after the message".into());
    }
    if attempt == 0 {
        return Err("attempt 0".into());
    }
    Ok(AuthRequest {
        method,
        user,
        pass,
        salt,
        protocol,
        attempt,
        client_ip,
    })
}

/// Sends `req` as one message (the parser's side).
pub fn send(sock: OwnedFd, req: &AuthRequest) -> Result<(), String> {
    let msg = encode(req)?;
    std::fs::File::from(sock)
        .write_all(&msg)
        .map_err(|e| format!("sending the request: {e}"))
}

/// Receives the parser's message; `Ok(None)` when it closed its end without one (it
/// answered a bad request itself, or failed).
pub fn receive(sock: OwnedFd) -> Result<Option<AuthRequest>, String> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_MESSAGE + 1]);
    let n = std::fs::File::from(sock)
        .read(&mut buf)
        .map_err(|e| format!("reading the parser's message: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    decode(&buf[..n]).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuthRequest {
        AuthRequest {
            method: "apop".into(),
            user: b"al ice".to_vec(),
            pass: Zeroizing::new(b"\x00pw%".to_vec()),
            salt: b"<1.2@host>".to_vec(),
            protocol: "pop3".into(),
            attempt: 3,
            client_ip: Some("2001:db8::7".parse().unwrap()),
        }
    }

    fn same(a: &AuthRequest, b: &AuthRequest) -> bool {
        (
            &a.method,
            &a.user,
            &*a.pass,
            &a.salt,
            &a.protocol,
            a.attempt,
            a.client_ip,
        ) == (
            &b.method,
            &b.user,
            &*b.pass,
            &b.salt,
            &b.protocol,
            b.attempt,
            b.client_ip,
        )
    }

    #[test]
    fn round_trip() {
        let req = sample();
        assert!(same(&decode(&encode(&req).unwrap()).unwrap(), &req));
        let mut none = sample();
        none.client_ip = None;
        none.salt.clear();
        assert!(same(&decode(&encode(&none).unwrap()).unwrap(), &none));
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let msg = encode(&sample()).unwrap();
        for n in 0..msg.len() {
            assert!(decode(&msg[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut longer = msg.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&vec![VERSION; MAX_MESSAGE + 1]).is_err());
        let mut v2 = msg.to_vec();
        v2[0] = 2;
        assert!(decode(&v2).is_err());
    }

    #[test]
    fn a_bad_address_or_attempt_is_refused() {
        let mut req = sample();
        req.attempt = 0;
        assert!(decode(&encode(&req).unwrap()).is_err());
        let mut msg = vec![VERSION];
        for f in [&b"plain"[..], b"u", b"p", b"", b"pop3", b"not-an-ip"] {
            put(&mut msg, f).unwrap();
        }
        msg.extend_from_slice(&1u32.to_be_bytes());
        assert!(decode(&msg).is_err());
    }

    #[test]
    fn the_largest_head_fits() {
        let mut req = sample();
        req.user = vec![b'u'; MAX_HEAD_BYTES / 2];
        req.pass = Zeroizing::new(vec![b'p'; MAX_HEAD_BYTES / 2]);
        assert!(same(&decode(&encode(&req).unwrap()).unwrap(), &req));
    }
}
