//! pop-route's input: an nginx `auth_http` request head, read in chunks, and the login token
//! a backend's pop-checkpassword verifies.
//!
//! The first byte picks the chunk size the request arrives in (1..=256), the rest is the
//! request. Properties: reading never panics and the outcome does not depend on the chunk
//! size; an accepted request has a user and password without NUL, whose escaping round-trips;
//! a refused one fits the documented limits. The whole input as a token never verifies
//! unless it is exactly the token the key issues for its own time.

use spool_login::auth::token::{Key, TokenError};
use spool_route::http::{percent_decode, read_request, BadRequest, MAX_HEAD_BYTES};
use spool_wire::timeio::ScriptedInput;
use std::time::{Duration, Instant};

fn read(data: &[u8], chunk: usize) -> Result<(Vec<u8>, Vec<u8>, u32), BadRequest> {
    let mut input = ScriptedInput::new(data, chunk);
    read_request(&mut input, Instant::now() + Duration::from_secs(5))
        .map(|r| (r.user, r.pass.to_vec(), r.attempt))
}

/// nginx's escaping, as percent_decode undoes it: `%`, space and control bytes as `%XX`.
fn escape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in v {
        if b == b'%' || b <= b' ' || b == 0x7f {
            out.extend(format!("%{b:02X}").bytes());
        } else {
            out.push(b);
        }
    }
    out
}

pub fn run(data: &[u8]) {
    let Some((&first, req)) = data.split_first() else {
        return;
    };
    let chunk = first as usize + 1;
    let got = read(req, chunk);
    assert_eq!(got, read(req, 1024), "outcome depends on the chunk size");
    match &got {
        Ok((user, pass, attempt)) => {
            assert!(!user.contains(&0) && !pass.contains(&0));
            assert!(*attempt >= 1);
            assert_eq!(percent_decode(&escape(user)).as_deref(), Some(&user[..]));
        }
        Err(BadRequest::TooLong) => assert!(req.len() >= MAX_HEAD_BYTES),
        Err(_) => {}
    }

    let key = Key::from_bytes(b"fuzzing key, thirty-two bytes at least").unwrap();
    let now = 1_800_000_000;
    let user = b"user";
    match key.verify(user, req, now) {
        Ok(()) => {
            let t = std::str::from_utf8(req).unwrap();
            let secs: u64 = t.split('.').nth(1).unwrap().parse().unwrap();
            assert_eq!(key.issue(user, secs).as_bytes(), req);
        }
        Err(TokenError::Forged | TokenError::Malformed | TokenError::Version) => {}
        Err(e) => panic!("{e:?} without a valid MAC"),
    }
    let real = key.issue(user, now);
    assert_eq!(key.verify(user, real.as_bytes(), now), Ok(()));
}
