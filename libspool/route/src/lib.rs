//! The routing service for nginx's mail proxy (`pop-route`): answers one `auth_http` request
//! per run. It checks the user's credentials by running a checkpassword program (any, ours by
//! default) with a subprogram that just exits 0, picks the user's backend ([`backend`]), and
//! answers nginx with that backend and a short-lived login token
//! ([`spool_login::auth::token`]) as `Auth-Pass`, which the backend's `pop-checkpassword
//! --token-key` accepts instead of the password. Never touches mailboxes.
//!
//! Failed logins are answered with `Auth-Wait`, growing with `Auth-Login-Attempt`
//! ([`auth_wait`]); past the attempt limit the answer has no `Auth-Wait` and nginx closes the
//! connection.

#![forbid(unsafe_code)]

pub mod backend;
pub mod http;
pub mod split;

use spool_login::auth::token;
use spool_login::popup::{CheckStatus, Checker, MAX_CHECKPASSWORD_INPUT};
use spool_wire::log::{Level, Logger};
use spool_wire::timeio::ClientInput;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Exit code: the request was answered (login accepted or refused).
pub const EXIT_ANSWERED: u8 = 0;
/// Exit code: the request could not be read (malformed, too long, too slow): 400/431/408.
pub const EXIT_BAD_REQUEST: u8 = 2;
/// Exit code: answered with a temporary error (checkpassword failed, key or backend list
/// unusable).
pub const EXIT_TEMPORARY: u8 = 111;
/// Exit code: misuse (bad options).
pub const EXIT_USAGE: u8 = 100;

/// The first failed login waits this long by default; each further attempt doubles it.
pub const DEFAULT_WAIT_BASE: Duration = Duration::from_secs(1);
/// No `Auth-Wait` is longer than this.
pub const MAX_AUTH_WAIT: Duration = Duration::from_secs(30);
/// Failed logins per client connection (nginx's `Auth-Login-Attempt`) before the answer has
/// no `Auth-Wait`, which makes nginx close the connection. nginx asks for a limit of 10-20.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Longest user name handed on (as pop-popup's).
pub const MAX_USER_LEN: usize = spool_login::popup::MAX_USER_LEN;
/// Longest password or APOP digest handed on (as pop-popup's).
pub const MAX_PASSWORD_LEN: usize = spool_login::popup::MAX_PASSWORD_LEN;

/// `Auth-Status` of a refused login.
pub const STATUS_INVALID: &str = "Invalid login or password";
/// `Auth-Status` of a temporary failure.
pub const STATUS_TEMPORARY: &str = "Temporary server problem, try again later";

/// Everything a run needs, validated by the binary.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub backends: backend::Backends,
    /// The token key file shared with the backends.
    pub token_key: PathBuf,
    pub max_attempts: u32,
    pub wait_base: Duration,
    pub read_timeout: Duration,
    /// Set `TCPREMOTEIP` to the request's `Client-IP` for the checkpassword program, so its log
    /// names the client rather than nginx (off in tests that share one process environment).
    pub export_client_ip: bool,
}

/// The `Auth-Wait` after failed attempt `attempt` (from 1): `base`, doubled per further
/// attempt, at most [`MAX_AUTH_WAIT`], in whole seconds (at least 1: nginx takes whole seconds
/// and 0 would let a client retry at once).
pub fn auth_wait(base: Duration, attempt: u32) -> u64 {
    let shift = attempt.saturating_sub(1).min(16);
    let w = base.saturating_mul(1 << shift).min(MAX_AUTH_WAIT);
    w.as_secs().max(1)
}

/// Reads and answers one request: [`read`], then [`answer`].
pub fn serve<I: ClientInput, W: Write, C: Checker>(
    cfg: &RouteConfig,
    input: &mut I,
    out: &mut W,
    checker: &mut C,
    log: &Logger,
) -> u8 {
    match read(cfg, input, out, log) {
        Ok(req) => answer(cfg, &req, out, checker, log),
        Err(code) => code,
    }
}

/// Reads and parses the request; a bad one is answered here (400, 431 or 408) and gives
/// `Err` with the exit status.
pub fn read<I: ClientInput, W: Write>(
    cfg: &RouteConfig,
    input: &mut I,
    out: &mut W,
    log: &Logger,
) -> Result<http::AuthRequest, u8> {
    let got = http::read_request(input, Instant::now() + cfg.read_timeout);
    #[cfg(debug_assertions)]
    spool_wire::testhooks::parsed(log, "auth-request");
    got.map_err(|e| {
        log.log(Level::Warning, &format!("{e}"));
        let _ = out.write_all(&http::refusal(&e));
        let _ = out.flush();
        EXIT_BAD_REQUEST
    })
}

/// Decides on a parsed request (checkpassword, backend, token) and writes the answer.
pub fn answer<W: Write, C: Checker>(
    cfg: &RouteConfig,
    req: &http::AuthRequest,
    out: &mut W,
    checker: &mut C,
    log: &Logger,
) -> u8 {
    let (code, answer) = decide(cfg, req, checker, log);
    let fields: Vec<(&str, &str)> = answer.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bytes = Zeroizing::new(http::answer(&fields));
    if let Err(e) = out.write_all(&bytes).and_then(|_| out.flush()) {
        log.log(Level::Warning, &format!("writing the answer: {e}"));
    }
    code
}

/// The answer when no request could be read for want of a working parser: a temporary
/// error, without `Auth-Wait` (the attempt is unknown).
pub fn answer_temporary<W: Write>(out: &mut W) {
    let _ = out.write_all(&http::answer(&[("Auth-Status", STATUS_TEMPORARY)]));
    let _ = out.flush();
}

type Fields = Vec<(&'static str, String)>;

fn refuse(cfg: &RouteConfig, attempt: u32, status: &str) -> Fields {
    let mut f = vec![("Auth-Status", status.to_string())];
    if attempt < cfg.max_attempts {
        f.push(("Auth-Wait", auth_wait(cfg.wait_base, attempt).to_string()));
    }
    f
}

fn decide<C: Checker>(
    cfg: &RouteConfig,
    req: &http::AuthRequest,
    checker: &mut C,
    log: &Logger,
) -> (u8, Fields) {
    let user = String::from_utf8_lossy(&req.user).into_owned();
    let client = req
        .client_ip
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    let say = |level, what: &str| {
        log.log(
            level,
            &format!(
                "user={user} client={client} method={} attempt={} {what}",
                req.method, req.attempt
            ),
        )
    };
    let temporary = |what: &str| {
        say(Level::Err, what);
        (EXIT_TEMPORARY, refuse(cfg, req.attempt, STATUS_TEMPORARY))
    };
    if req.protocol != "pop3" {
        say(Level::Info, &format!("refused: protocol {}", req.protocol));
        return (
            EXIT_ANSWERED,
            vec![("Auth-Status", "Only POP3 is served here".to_string())],
        );
    }
    if req.attempt > cfg.max_attempts {
        say(Level::Info, "refused: too many attempts");
        return (
            EXIT_ANSWERED,
            vec![("Auth-Status", STATUS_INVALID.to_string())],
        );
    }
    let salt: &[u8] = match req.method.as_str() {
        "plain" => b"",
        "apop" if !req.salt.is_empty() => &req.salt,
        m => {
            say(Level::Info, &format!("refused: method {m} not supported"));
            return (EXIT_ANSWERED, refuse(cfg, req.attempt, STATUS_INVALID));
        }
    };
    // Control bytes in a name (nginx escapes them, so they arrive as %XX) are refused, as
    // pop-popup refuses them: nginx would send the name to the backend on a USER line.
    if req.user.is_empty()
        || req.user.len() > MAX_USER_LEN
        || req.pass.len() > MAX_PASSWORD_LEN
        || req.user.iter().any(|&b| b < 0x20 || b == 0x7f)
    {
        say(
            Level::Info,
            "refused: unusable user name or password too long",
        );
        return (EXIT_ANSWERED, refuse(cfg, req.attempt, STATUS_INVALID));
    }
    let key = match token::Key::load(&cfg.token_key) {
        Ok(k) => k,
        Err(e) => return temporary(&format!("token key {}: {e}", cfg.token_key.display())),
    };
    let target = match cfg.backends.choose(&req.user) {
        Ok(t) => t,
        Err(e) => return temporary(&format!("no backend: {e}")),
    };
    let mut payload = Zeroizing::new(Vec::with_capacity(MAX_CHECKPASSWORD_INPUT));
    payload.extend_from_slice(&req.user);
    payload.push(0);
    payload.extend_from_slice(&req.pass);
    payload.push(0);
    payload.extend_from_slice(salt);
    payload.push(0);
    if payload.len() > MAX_CHECKPASSWORD_INPUT {
        say(Level::Info, "refused: credentials too long");
        return (EXIT_ANSWERED, refuse(cfg, req.attempt, STATUS_INVALID));
    }
    if cfg.export_client_ip {
        // A parsed address: nothing else from the request reaches the environment.
        if let Some(ip) = req.client_ip {
            std::env::set_var("TCPREMOTEIP", ip.to_string());
        }
    }
    match checker.check(&payload) {
        CheckStatus::Served => {
            let tok = key.issue(&req.user, token::now());
            say(Level::Info, &format!("ok backend={target}"));
            (
                EXIT_ANSWERED,
                vec![
                    ("Auth-Status", "OK".to_string()),
                    ("Auth-Server", target.ip().to_string()),
                    ("Auth-Port", target.port().to_string()),
                    ("Auth-Pass", tok),
                ],
            )
        }
        CheckStatus::Rejected => {
            say(Level::Info, "refused: bad credentials");
            (EXIT_ANSWERED, refuse(cfg, req.attempt, STATUS_INVALID))
        }
        other => temporary(&format!("checkpassword failed: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_wire::log::LogTarget;
    use spool_wire::timeio::ScriptedInput;
    use std::os::unix::fs::PermissionsExt;

    struct Fake(CheckStatus, Vec<Vec<u8>>);
    impl Checker for Fake {
        fn check(&mut self, payload: &[u8]) -> CheckStatus {
            self.1.push(payload.to_vec());
            self.0.clone()
        }
    }

    fn setup() -> (tempfile::TempDir, RouteConfig) {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("key");
        std::fs::write(&key, [b'k'; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = RouteConfig {
            backends: backend::Backends {
                listed: vec!["127.0.3.1:110".parse().unwrap()],
                file: None,
                map: None,
            },
            token_key: key,
            max_attempts: 3,
            wait_base: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            export_client_ip: false,
        };
        (d, cfg)
    }

    fn run(cfg: &RouteConfig, req: &str, status: CheckStatus) -> (u8, String, Vec<Vec<u8>>) {
        let mut input = ScriptedInput::new(req.as_bytes(), 100);
        let mut out = Vec::new();
        let mut c = Fake(status, vec![]);
        let code = serve(
            cfg,
            &mut input,
            &mut out,
            &mut c,
            &Logger::new("pop-route", LogTarget::None),
        );
        (code, String::from_utf8(out).unwrap(), c.1)
    }

    fn req(method: &str, attempt: u32, extra: &str) -> String {
        format!(
            "GET /auth HTTP/1.0\r\nHost: x\r\nAuth-Method: {method}\r\nAuth-User: alice\r\n\
             Auth-Pass: pw\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: {attempt}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn accepted_gets_backend_and_token() {
        let (_d, cfg) = setup();
        let (code, out, seen) = run(&cfg, &req("plain", 1, ""), CheckStatus::Served);
        assert_eq!(code, EXIT_ANSWERED);
        assert!(
            out.starts_with("HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"),
            "{out}"
        );
        assert!(out.contains("Auth-Server: 127.0.3.1\r\nAuth-Port: 110\r\nAuth-Pass: v1."));
        assert_eq!(seen, vec![b"alice\0pw\0\0".to_vec()]);
        let tok = out
            .split("Auth-Pass: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next();
        let key = token::Key::load(&cfg.token_key).unwrap();
        assert_eq!(
            key.verify(b"alice", tok.unwrap().as_bytes(), token::now()),
            Ok(())
        );
    }

    #[test]
    fn apop_passes_the_salt() {
        let (_d, cfg) = setup();
        let (_, out, seen) = run(
            &cfg,
            &req("apop", 1, "Auth-Salt: <1.2@host>\r\n"),
            CheckStatus::Served,
        );
        assert!(out.contains("Auth-Status: OK"));
        assert_eq!(seen, vec![b"alice\0pw\0<1.2@host>\0".to_vec()]);
        let (_, out, seen) = run(&cfg, &req("cram-md5", 1, ""), CheckStatus::Served);
        assert!(out.contains(STATUS_INVALID), "{out}");
        assert!(seen.is_empty());
        let crlf = req("plain", 1, "").replace("Auth-User: alice", "Auth-User: al%0D%0Aice");
        let (_, out, seen) = run(&cfg, &crlf, CheckStatus::Served);
        assert!(out.contains(STATUS_INVALID), "{out}");
        assert!(seen.is_empty());
    }

    #[test]
    fn refusals_wait_longer_each_attempt_then_close() {
        let (_d, cfg) = setup();
        let (_, out, _) = run(&cfg, &req("plain", 1, ""), CheckStatus::Rejected);
        assert!(out.contains("Auth-Status: Invalid login or password\r\nAuth-Wait: 1\r\n"));
        let (_, out, _) = run(&cfg, &req("plain", 2, ""), CheckStatus::Rejected);
        assert!(out.contains("Auth-Wait: 2\r\n"), "{out}");
        let (_, out, _) = run(&cfg, &req("plain", 3, ""), CheckStatus::Rejected);
        assert!(!out.contains("Auth-Wait"), "{out}");
        let (_, out, seen) = run(&cfg, &req("plain", 4, ""), CheckStatus::Served);
        assert!(out.contains(STATUS_INVALID) && !out.contains("Auth-Wait"));
        assert!(seen.is_empty());
        assert_eq!(auth_wait(Duration::from_secs(1), 100), 30);
        assert_eq!(auth_wait(Duration::from_millis(10), 1), 1);
    }

    #[test]
    fn temporary_failures() {
        let (d, mut cfg) = setup();
        let (code, out, _) = run(&cfg, &req("plain", 1, ""), CheckStatus::TempFail(111));
        assert_eq!(code, EXIT_TEMPORARY);
        assert!(out.contains(STATUS_TEMPORARY) && out.contains("Auth-Wait: 1"));
        std::fs::set_permissions(&cfg.token_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, out, seen) = run(&cfg, &req("plain", 1, ""), CheckStatus::Served);
        assert_eq!(code, EXIT_TEMPORARY);
        assert!(out.contains(STATUS_TEMPORARY) && seen.is_empty());
        std::fs::set_permissions(&cfg.token_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        cfg.backends.listed.clear();
        let (code, _, _) = run(&cfg, &req("plain", 1, ""), CheckStatus::Served);
        assert_eq!(code, EXIT_TEMPORARY);
        drop(d);
    }

    #[test]
    fn bad_request_gets_400() {
        let (_d, cfg) = setup();
        let (code, out, seen) = run(&cfg, "nonsense\r\n\r\n", CheckStatus::Served);
        assert_eq!(code, EXIT_BAD_REQUEST);
        assert!(out.starts_with("HTTP/1.0 400 Bad Request\r\n"));
        assert!(seen.is_empty());
    }
}
