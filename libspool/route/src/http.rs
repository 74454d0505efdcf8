//! nginx's `auth_http` requests: reading the head with limits and a deadline, parsing it with
//! `httparse`, and the few responses the service gives.

#![forbid(unsafe_code)]

use spool_wire::timeio::{ClientInput, ReadOutcome};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Most bytes of request head read (nginx sends a few hundred).
pub const MAX_HEAD_BYTES: usize = 8192;

/// Most header lines in a request (nginx sends about ten, plus `auth_http_header` ones).
pub const MAX_HEADERS: usize = 32;

/// The whole request head must arrive within this time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request is not answered with an `Auth-Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// Not HTTP, or a header nginx always sends is missing or unusable.
    Malformed(String),
    /// More than [`MAX_HEAD_BYTES`] before the end of the head.
    TooLong,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// The head did not arrive within the read deadline.
    TimedOut,
    /// The peer closed before the end of the head.
    Eof,
    /// Reading failed.
    Io(String),
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRequest::Malformed(s) => write!(f, "malformed request: {s}"),
            BadRequest::TooLong => write!(f, "request head longer than {MAX_HEAD_BYTES} bytes"),
            BadRequest::TooManyHeaders => write!(f, "more than {MAX_HEADERS} header lines"),
            BadRequest::TimedOut => write!(f, "request head not complete within the deadline"),
            BadRequest::Eof => write!(f, "connection closed before the end of the request"),
            BadRequest::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

impl BadRequest {
    /// The HTTP status line sent for it.
    pub fn status(&self) -> &'static str {
        match self {
            BadRequest::TooLong | BadRequest::TooManyHeaders => {
                "431 Request Header Fields Too Large"
            }
            BadRequest::TimedOut => "408 Request Timeout",
            _ => "400 Bad Request",
        }
    }
}

/// One `auth_http` request, headers decoded.
pub struct AuthRequest {
    /// `Auth-Method`: plain, apop, cram-md5, external.
    pub method: String,
    /// `Auth-User`, percent-decoded.
    pub user: Vec<u8>,
    /// `Auth-Pass`, percent-decoded (the password, or the APOP digest).
    pub pass: Zeroizing<Vec<u8>>,
    /// `Auth-Salt` (the APOP timestamp), trimmed; empty when absent.
    pub salt: Vec<u8>,
    /// `Auth-Protocol`: pop3, imap, smtp.
    pub protocol: String,
    /// `Auth-Login-Attempt`, from 1.
    pub attempt: u32,
    /// `Client-IP`, when it is an address.
    pub client_ip: Option<std::net::IpAddr>,
}

/// Reads up to the end of the head (`\r\n\r\n`) and parses it.
pub fn read_request<I: ClientInput>(
    input: &mut I,
    deadline: Instant,
) -> Result<AuthRequest, BadRequest> {
    let mut buf = Zeroizing::new(Vec::with_capacity(1024));
    let mut chunk = [0u8; 1024];
    loop {
        match input.read_until(&mut chunk, deadline) {
            Ok(ReadOutcome::Data(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(ReadOutcome::Eof) => return Err(BadRequest::Eof),
            Ok(ReadOutcome::TimedOut) => return Err(BadRequest::TimedOut),
            Err(e) => return Err(BadRequest::Io(e.to_string())),
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return decode(&req),
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD_BYTES {
                    return Err(BadRequest::TooLong);
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooManyHeaders),
            Err(e) => return Err(BadRequest::Malformed(e.to_string())),
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(BadRequest::TooLong);
        }
    }
}

/// Undoes nginx's escaping of `Auth-User` and `Auth-Pass` (`%XX` for space, `%` and control
/// bytes). A `%` not followed by two hex digits, or a decoded NUL, is malformed.
pub fn percent_decode(v: &[u8]) -> Option<Vec<u8>> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let hi = hex(*v.get(i + 1)?)?;
            let lo = hex(*v.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    (!out.contains(&0)).then_some(out)
}

fn decode(req: &httparse::Request<'_, '_>) -> Result<AuthRequest, BadRequest> {
    if req.method != Some("GET") {
        return Err(BadRequest::Malformed(format!(
            "method {:?}, not GET",
            req.method.unwrap_or("")
        )));
    }
    let get = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let text = |name: &str| -> Result<String, BadRequest> {
        let v = get(name).ok_or_else(|| BadRequest::Malformed(format!("no {name} header")))?;
        std::str::from_utf8(v)
            .map(|s| s.trim().to_ascii_lowercase())
            .map_err(|_| BadRequest::Malformed(format!("{name} is not UTF-8")))
    };
    let method = text("Auth-Method")?;
    let protocol = text("Auth-Protocol")?;
    let user = get("Auth-User")
        .and_then(percent_decode)
        .ok_or_else(|| BadRequest::Malformed("Auth-User missing or badly escaped".into()))?;
    let pass = Zeroizing::new(
        get("Auth-Pass")
            .and_then(percent_decode)
            .ok_or_else(|| BadRequest::Malformed("Auth-Pass missing or badly escaped".into()))?,
    );
    let attempt = match get("Auth-Login-Attempt") {
        None => 1,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| BadRequest::Malformed("Auth-Login-Attempt is not a number".into()))?,
    };
    let salt = get("Auth-Salt")
        .map(|v| v.trim_ascii().to_vec())
        .unwrap_or_default();
    let client_ip = get("Client-IP")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse().ok());
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

/// The head of a `200 OK` answer carrying `fields` (name, value).
pub fn answer(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("HTTP/1.0 200 OK\r\n");
    for (k, v) in fields {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// The answer to a request that could not be read.
pub fn refusal(why: &BadRequest) -> Vec<u8> {
    format!(
        "HTTP/1.0 {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        why.status()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_wire::timeio::ScriptedInput;

    fn parse(b: &[u8]) -> Result<AuthRequest, BadRequest> {
        let mut i = ScriptedInput::new(b, 7);
        read_request(&mut i, Instant::now() + Duration::from_secs(5))
    }

    const GOOD: &[u8] = b"GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n\
Auth-User: al%20ice\r\nAuth-Pass: p%25ss%20word\r\nAuth-Protocol: pop3\r\n\
Auth-Login-Attempt: 2\r\nClient-IP: 192.0.2.42\r\n\r\n";

    #[test]
    fn good_request() {
        let r = parse(GOOD).ok().unwrap();
        assert_eq!(r.method, "plain");
        assert_eq!(r.user, b"al ice");
        assert_eq!(&r.pass[..], b"p%ss word");
        assert_eq!(r.protocol, "pop3");
        assert_eq!(r.attempt, 2);
        assert_eq!(r.client_ip, Some("192.0.2.42".parse().unwrap()));
        assert!(r.salt.is_empty());
    }

    #[test]
    fn bad_requests() {
        let e = |b: &[u8]| parse(b).err().unwrap();
        assert!(matches!(e(b"HELLO\r\n\r\n"), BadRequest::Malformed(_)));
        assert!(matches!(
            e(b"POST / HTTP/1.0\r\n\r\n"),
            BadRequest::Malformed(_)
        ));
        assert!(matches!(
            e(b"GET / HTTP/1.0\r\nAuth-Method: plain\r\n\r\n"),
            BadRequest::Malformed(_)
        ));
        let bad_escape = String::from_utf8_lossy(GOOD).replace("al%20ice", "al%2");
        assert!(matches!(e(bad_escape.as_bytes()), BadRequest::Malformed(_)));
        let nul = String::from_utf8_lossy(GOOD).replace("al%20ice", "al%00ice");
        assert!(matches!(e(nul.as_bytes()), BadRequest::Malformed(_)));
        assert_eq!(e(b"GET / HTTP/1.0\r\n"), BadRequest::Eof);
        let mut long = b"GET / HTTP/1.0\r\nX: ".to_vec();
        long.extend(vec![b'a'; MAX_HEAD_BYTES]);
        assert_eq!(e(&long), BadRequest::TooLong);
        let mut many = b"GET / HTTP/1.0\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("X-{i}: y\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(e(&many), BadRequest::TooManyHeaders);
        let mut slow = ScriptedInput::new(b"GET / HTTP/1.0\r\n", 4).then_timeout();
        assert_eq!(
            read_request(&mut slow, Instant::now() + Duration::from_secs(5))
                .err()
                .unwrap(),
            BadRequest::TimedOut
        );
    }
}
