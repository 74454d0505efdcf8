//! The PROXY protocol header reader (`spool_wire::proxy`). Input: one byte choosing the read
//! size the peer's bytes arrive in (1 to 64), then the bytes. Properties: never panics; never
//! takes more than the header it returns (nor, on refusal, more than the largest header
//! allowed); the same bytes in single-byte reads give the same answer; and writing the
//! header it returns back out (v1 or v2) and reading that gives the same header.

use spool_wire::limits::{PROXY_V1_MAX_LINE, PROXY_V2_MAX_HEADER};
use spool_wire::proxy::{encode_v1, encode_v2, read_header, Header, ProxyError, Version};
use spool_wire::timeio::{ClientInput, ReadOutcome, ScriptedInput};
use std::io;
use std::time::{Duration, Instant};

/// Counts the bytes the reader takes.
struct Counting {
    inner: ScriptedInput,
    taken: usize,
}

impl ClientInput for Counting {
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome> {
        let r = self.inner.read_until(buf, deadline)?;
        if let ReadOutcome::Data(n) = r {
            self.taken += n;
        }
        Ok(r)
    }
}

fn read(data: &[u8], chunk: usize) -> (Result<(Header, usize), ProxyError>, usize) {
    let mut input = Counting {
        inner: ScriptedInput::new(data, chunk),
        taken: 0,
    };
    let r = read_header(&mut input, Instant::now() + Duration::from_secs(5));
    (r, input.taken)
}

/// The error's kind, without the I/O error (which a scripted input never gives).
fn kind(r: &Result<(Header, usize), ProxyError>) -> String {
    match r {
        Ok((h, n)) => format!("ok {h:?} {n}"),
        Err(e) => e.to_string(),
    }
}

pub fn run(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(sel % 64) + 1;
    let (got, taken) = read(bytes, chunk);
    match &got {
        Ok((h, used)) => {
            assert_eq!(taken, *used, "took bytes past the header");
            assert!(*used <= PROXY_V2_MAX_HEADER.max(PROXY_V1_MAX_LINE));
            let again = match h.version {
                Version::V1 => encode_v1(h.addrs),
                Version::V2 => encode_v2(h.command, h.addrs, b""),
            };
            let (back, back_taken) = read(&again, 7);
            let (back, n) = back.expect("a written header reads back");
            assert_eq!(&back, h);
            assert_eq!(n, again.len());
            assert_eq!(back_taken, again.len());
        }
        Err(e) => {
            assert!(!matches!(e, ProxyError::Io(_)));
            assert!(taken <= PROXY_V2_MAX_HEADER.max(PROXY_V1_MAX_LINE));
        }
    }
    let (single, _) = read(bytes, 1);
    assert_eq!(kind(&single), kind(&got), "depends on how the bytes arrive");
}
