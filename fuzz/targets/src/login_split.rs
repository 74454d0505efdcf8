//! The messages between the halves of the login programs: pop-checkpassword's verdict
//! (`auth::verify::Verdict`, verifier to parent) and pop-popup's request and reply
//! (`popup::split`, dialogue to parent and back). The first byte chooses the parser, the
//! rest is the message. Properties: no parser panics or accepts more than its limit; what
//! the verdict and request parsers accept re-encodes to exactly the same bytes; an accepted
//! request's payload is three NUL-terminated fields within the fd-3 limit; an accepted reply
//! re-encodes to a message the parser accepts again.

use spool_login::auth::checkpw::FD3_MAX;
use spool_login::auth::verify::{Verdict, VERDICT_MAX};
use spool_login::popup::split::{decode_reply, encode_reply, Request, MAX_REPLY, MAX_REQUEST};

pub fn run(data: &[u8]) {
    let Some((&which, msg)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(v) = Verdict::decode(msg) {
                assert!(msg.len() <= VERDICT_MAX);
                assert_eq!(v.encode().expect("an accepted verdict encodes"), msg);
            }
        }
        1 => {
            if let Ok(r) = Request::decode(msg) {
                assert!(msg.len() <= MAX_REQUEST);
                assert!(r.payload.len() <= FD3_MAX);
                assert_eq!(r.payload.iter().filter(|&&b| b == 0).count(), 3);
                assert_eq!(r.payload.last(), Some(&0));
                assert_eq!(&r.encode().expect("an accepted request encodes")[..], msg);
            }
        }
        _ => {
            if let Ok(s) = decode_reply(msg) {
                assert!(msg.len() <= MAX_REPLY);
                let again = encode_reply(&s);
                assert!(again.len() <= MAX_REPLY);
                assert!(decode_reply(&again).is_ok());
            }
        }
    }
}
