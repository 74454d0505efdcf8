//! Whole AUTHORIZATION sessions in memory: scripted input at every chunk size, a fake
//! checkpassword, exact output bytes.

#![forbid(unsafe_code)]

use super::*;
use spool_wire::timeio::ScriptedInput;

const STAMP: &str = "<1.2.000000003.abc@pop.example>";

/// Answers with the scripted statuses in order and records every payload.
#[derive(Default)]
struct FakeChecker {
    answers: Vec<CheckStatus>,
    payloads: Vec<Vec<u8>>,
}

impl Checker for FakeChecker {
    fn check(&mut self, payload: &[u8]) -> CheckStatus {
        self.payloads.push(payload.to_vec());
        if self.answers.is_empty() {
            CheckStatus::Rejected
        } else {
            self.answers.remove(0)
        }
    }
}

struct Outcome {
    out: String,
    end: End,
    payloads: Vec<Vec<u8>>,
    logs: Vec<String>,
}

fn cfg() -> PopupConfig {
    PopupConfig {
        fail_delay: Duration::ZERO,
        ..PopupConfig::default()
    }
}

fn session_with(cfg: &PopupConfig, input: ScriptedInput, answers: &[CheckStatus]) -> Outcome {
    let mut input = input;
    let mut out = Vec::new();
    let mut checker = FakeChecker {
        answers: answers.to_vec(),
        payloads: Vec::new(),
    };
    let mut logs = Vec::new();
    let end = run(
        &mut input,
        &mut out,
        &mut checker,
        cfg,
        &Timestamp::fixed(STAMP),
        &mut |_, l| logs.push(l.to_string()),
    );
    Outcome {
        out: String::from_utf8(out).unwrap(),
        end,
        payloads: checker.payloads,
        logs,
    }
}

fn session(script: &str, answers: &[CheckStatus]) -> Outcome {
    session_with(&cfg(), ScriptedInput::new(script.as_bytes(), 4096), answers)
}

/// The same script at chunk sizes 1..=32 gives the same output.
fn session_all_chunks(script: &str, answers: &[CheckStatus]) -> Outcome {
    let whole = session(script, answers);
    for chunk in 1..=32 {
        let o = session_with(
            &cfg(),
            ScriptedInput::new(script.as_bytes(), chunk),
            answers,
        );
        assert_eq!(o.out, whole.out, "chunk {chunk}");
        assert_eq!(o.payloads, whole.payloads, "chunk {chunk}");
    }
    whole
}

fn greet() -> String {
    format!("+OK {STAMP}\r\n")
}

fn payload(user: &str, secret: &str) -> Vec<u8> {
    format!("{user}\0{secret}\0{STAMP}\0").into_bytes()
}

#[test]
fn quit_and_noop() {
    let o = session_all_chunks("NOOP\r\nquit\r\n", &[]);
    assert_eq!(o.out, greet() + "+OK\r\n+OK\r\n");
    assert!(matches!(o.end, End::Quit));
    assert_eq!(o.end.exit_code(), 0);
}

#[test]
fn eof_ends_quietly() {
    let o = session("USER bob\r\nPA", &[]);
    assert_eq!(o.out, greet() + "+OK\r\n");
    assert!(matches!(o.end, End::ClientClosed));
    assert!(o.payloads.is_empty());
}

#[test]
fn timeout() {
    let o = session_with(
        &cfg(),
        ScriptedInput::new(b"NOOP\r\n", 10).then_timeout(),
        &[],
    );
    assert_eq!(o.out, greet() + "+OK\r\n-ERR authorization timed out\r\n");
    assert!(matches!(o.end, End::TimedOut));
}

#[test]
fn user_pass_served() {
    let o = session_all_chunks(
        "USER bob\r\nPASS sec ret\r\nSTAT\r\n",
        &[CheckStatus::Served],
    );
    assert_eq!(o.out, greet() + "+OK\r\n");
    assert_eq!(o.payloads, vec![payload("bob", "sec ret")]);
    match &o.end {
        End::Served { user, mechanism } => {
            assert_eq!(user, "bob");
            assert_eq!(*mechanism, Mechanism::User);
        }
        e => panic!("{e:?}"),
    }
    // ScriptedInput reads ahead, so STAT was read and the loss is logged; ExactLineInput
    // never reads ahead (see input.rs and the integration tests).
    assert_eq!(o.logs.last().unwrap(), "auth user=bob mech=USER result=ok");
    assert!(!o.logs.iter().any(|l| l.contains("sec ret")));
}

#[test]
fn pass_only_right_after_user() {
    let o = session_all_chunks(
        "PASS x\r\nUSER bob\r\nNOOP\r\nPASS x\r\nUSER bob\r\nUSER ann\r\nPASS y\r\nQUIT\r\n",
        &[CheckStatus::Rejected],
    );
    assert_eq!(
        o.out,
        greet()
            + "-ERR USER first\r\n+OK\r\n+OK\r\n-ERR USER first\r\n+OK\r\n+OK\r\n\
               -ERR [AUTH] authentication failed\r\n+OK\r\n"
    );
    assert_eq!(o.payloads, vec![payload("ann", "y")]);
}

#[test]
fn failures_then_limit() {
    let o = session_all_chunks(
        "USER a\r\nPASS 1\r\nUSER a\r\nPASS 2\r\nPASS 3\r\nUSER a\r\nPASS 3\r\nNOOP\r\n",
        &[],
    );
    assert_eq!(
        o.out,
        greet()
            + "+OK\r\n-ERR [AUTH] authentication failed\r\n+OK\r\n-ERR [AUTH] authentication failed\r\n\
               -ERR USER first\r\n+OK\r\n-ERR [AUTH] too many failures\r\n"
    );
    assert_eq!(o.payloads.len(), 3);
    assert!(matches!(o.end, End::TooManyFailures));
    assert_eq!(
        o.logs.iter().filter(|l| l.contains("result=fail")).count(),
        3
    );
}

#[test]
fn retry_after_failure_succeeds() {
    let o = session(
        "USER a\r\nPASS bad\r\nUSER a\r\nPASS good\r\n",
        &[CheckStatus::Rejected, CheckStatus::Served],
    );
    assert_eq!(
        o.out,
        greet() + "+OK\r\n-ERR [AUTH] authentication failed\r\n+OK\r\n"
    );
    assert!(matches!(o.end, End::Served { .. }));
}

#[test]
fn checker_failures_end_the_session() {
    let cases = [
        (
            CheckStatus::TempFail(111),
            "-ERR [SYS/TEMP] authentication temporarily unavailable",
        ),
        (
            CheckStatus::TempFail(7),
            "-ERR [SYS/TEMP] authentication temporarily unavailable",
        ),
        (
            CheckStatus::Crashed(11),
            "-ERR [SYS/TEMP] authentication temporarily unavailable",
        ),
        (
            CheckStatus::SpawnFailed("fork: EAGAIN".into()),
            "-ERR [SYS/TEMP] authentication temporarily unavailable",
        ),
        (
            CheckStatus::Misuse,
            "-ERR [SYS/PERM] authentication misconfigured",
        ),
    ];
    for (status, line) in cases {
        let o = session(
            "USER a\r\nPASS b\r\nNOOP\r\n",
            std::slice::from_ref(&status),
        );
        assert_eq!(o.out, greet() + "+OK\r\n" + line + "\r\n", "{status:?}");
        assert_eq!(o.end.exit_code(), 111);
    }
}

#[test]
fn apop() {
    let o = session_all_chunks(
        "APOP bob C4C9334BAC560ECC979E58001B3E22FB\r\n",
        &[CheckStatus::Served],
    );
    assert_eq!(o.out, greet());
    assert_eq!(
        o.payloads,
        vec![payload("bob", "c4c9334bac560ecc979e58001b3e22fb")]
    );

    let no = PopupConfig {
        apop: false,
        ..cfg()
    };
    let o = session_with(
        &no,
        ScriptedInput::new(b"APOP bob c4c9334bac560ecc979e58001b3e22fb\r\nQUIT\r\n", 7),
        &[CheckStatus::Served],
    );
    assert_eq!(
        o.out,
        "+OK POP3 server ready\r\n-ERR APOP not available\r\n+OK\r\n"
    );
    assert!(o.payloads.is_empty());
}

#[test]
fn auth_listing_and_plain() {
    // \0bob\0secret
    let o = session_all_chunks(
        "AUTH\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
        &[CheckStatus::Served],
    );
    assert_eq!(o.out, greet() + "+OK\r\nPLAIN\r\n.\r\n");
    assert_eq!(o.payloads, vec![payload("bob", "secret")]);
    assert_eq!(o.logs, vec!["auth user=bob mech=PLAIN result=ok"]);

    let o = session_all_chunks(
        "auth plain\r\nYm9iAGJvYgBzZWNyZXQ=\r\n",
        &[CheckStatus::Served],
    );
    assert_eq!(o.out, greet() + "+ \r\n");
    assert_eq!(o.payloads, vec![payload("bob", "secret")]);
}

#[test]
fn auth_refusals() {
    let o = session_all_chunks(
        "AUTH PLAIN\r\n*\r\nAUTH LOGIN\r\nAUTH PLAIN Zm9v!\r\nAUTH PLAIN Zm9v\r\n\
         AUTH PLAIN =\r\nAUTH PLAIN YQBib2IAc2VjcmV0\r\nQUIT\r\n",
        &[],
    );
    assert_eq!(
        o.out,
        greet()
            + "+ \r\n-ERR authentication cancelled\r\n-ERR unsupported SASL mechanism\r\n\
               -ERR invalid base64\r\n-ERR malformed PLAIN response\r\n\
               -ERR malformed PLAIN response\r\n-ERR [AUTH] authorization identity refused\r\n+OK\r\n"
    );
    assert!(o.payloads.is_empty());
}

#[test]
fn long_sasl_continuation_line() {
    // 300 base64 characters: over the command-line limit, within MAX_SASL_LINE.
    let msg = [b"\0bob\0".to_vec(), vec![b'p'; 190]].concat();
    let enc = encode(&msg);
    assert!(enc.len() > 255);
    let o = session(
        &format!("AUTH PLAIN\r\n{enc}\r\n"),
        &[CheckStatus::Rejected],
    );
    assert_eq!(
        o.out,
        greet() + "+ \r\n-ERR [AUTH] authentication failed\r\n"
    );
    assert_eq!(o.payloads.len(), 1);

    let huge = "A".repeat(MAX_SASL_LINE + 4);
    let o = session(&format!("AUTH PLAIN\r\n{huge}\r\nQUIT\r\n"), &[]);
    assert_eq!(o.out, greet() + "+ \r\n-ERR line too long\r\n+OK\r\n");
}

fn encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(v >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn capa() {
    let c = PopupConfig {
        expire: Some(Expire::Days(30)),
        login_delay: Some(900),
        ..cfg()
    };
    let o = session_with(&c, ScriptedInput::new(b"CAPA\r\n", 3), &[]);
    assert_eq!(
        o.out,
        greet()
            + "+OK capability list follows\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
               PIPELINING\r\nTOP\r\nUIDL\r\nEXPIRE 30\r\nLOGIN-DELAY 900\r\n\
               IMPLEMENTATION popspool\r\n.\r\n"
    );
    let never = PopupConfig {
        expire: Some(Expire::Never),
        ..cfg()
    };
    assert!(capa_listing(&never).contains("\r\nEXPIRE NEVER\r\n"));
    assert!(!capa_listing(&cfg()).contains("EXPIRE"));
}

#[test]
fn dispatch_follows_the_command_table() {
    for v in Verb::ALL {
        let o = session(&format!("{}\r\n", v.example()), &[]);
        let first = o.out[greet().len()..].lines().next().unwrap_or("");
        let refused = first == "-ERR authorization first" || first == "-ERR STLS not available";
        assert_eq!(refused, !authorization(v).serves(), "{v:?}: {first}");
    }
}

#[test]
fn bad_commands_and_limit() {
    let long = "X".repeat(300);
    let script = format!(
        "STAT\r\nFOO\r\nSTLS\r\n\r\nRETR 1\r\n{long}\r\nUSER\r\nNOOP\r\nLIST\r\nDELE 1\r\nTOP 1 1\r\n\
         UIDL\r\nRSET\r\n"
    );
    let o = session_all_chunks(&script, &[]);
    assert_eq!(
        o.out,
        greet()
            + "-ERR authorization first\r\n-ERR unknown command\r\n-ERR STLS not available\r\n\
               -ERR empty command\r\n-ERR authorization first\r\n-ERR line too long\r\n\
               -ERR usage: USER name\r\n+OK\r\n-ERR authorization first\r\n\
               -ERR authorization first\r\n-ERR too many bad commands\r\n"
    );
    assert!(matches!(o.end, End::TooManyBadCommands));
}

#[test]
fn command_line_limit_counts_crlf() {
    // 253 octets + CRLF = 255: accepted; 254 + CRLF: too long.
    let ok = format!("USER {}\r\nQUIT\r\n", "u".repeat(248));
    let o = session(&ok, &[]);
    assert_eq!(o.out, greet() + "+OK\r\n+OK\r\n");
    let long = format!("USER {}\r\nQUIT\r\n", "u".repeat(249));
    let o = session(&long, &[]);
    assert_eq!(o.out, greet() + "-ERR line too long\r\n+OK\r\n");
}

#[test]
fn overlong_credentials_never_reach_the_checker() {
    let user = "u".repeat(MAX_USER_LEN + 1);
    let pass = "p".repeat(MAX_PASSWORD_LEN + 1);
    let script = format!(
        "USER {user}\r\nPASS x\r\nUSER bob\r\nPASS {pass}\r\nUSER {}\r\nPASS {}\r\n",
        "u".repeat(MAX_USER_LEN),
        "p".repeat(MAX_PASSWORD_LEN)
    );
    let o = session(&script, &[CheckStatus::Served]);
    assert_eq!(
        o.out,
        greet()
            + "+OK\r\n-ERR [AUTH] credentials too long\r\n+OK\r\n-ERR [AUTH] credentials too long\r\n+OK\r\n"
    );
    assert_eq!(o.payloads.len(), 1);
    assert!(o.payloads[0].len() <= MAX_CHECKPASSWORD_INPUT);
    assert!(matches!(o.end, End::Served { .. }));
}

#[test]
fn fail_delays_grow_and_are_capped() {
    let b = Duration::from_secs(1);
    assert_eq!(fail_delay(b, 1), Duration::from_secs(1));
    assert_eq!(fail_delay(b, 2), Duration::from_secs(2));
    assert_eq!(fail_delay(b, 3), Duration::from_secs(4));
    assert_eq!(fail_delay(b, 6), MAX_FAIL_DELAY);
    assert_eq!(fail_delay(b, u32::MAX), MAX_FAIL_DELAY);
    assert_eq!(fail_delay(Duration::ZERO, 40), Duration::ZERO);
}

#[test]
fn failure_delay_is_applied() {
    let c = PopupConfig {
        fail_delay: Duration::from_millis(40),
        ..cfg()
    };
    let t = Instant::now();
    let o = session_with(
        &c,
        ScriptedInput::new(b"USER a\r\nPASS b\r\nUSER a\r\nPASS b\r\n", 64),
        &[],
    );
    assert!(t.elapsed() >= Duration::from_millis(120));
    assert_eq!(o.payloads.len(), 2);
}

#[test]
fn every_refusal_text_is_a_clean_line() {
    use Refusal as R;
    let all = [
        R::Command(CommandError::Unknown),
        R::LineTooLong,
        R::AuthorizationFirst,
        R::UserFirst,
        R::ApopDisabled,
        R::StlsUnavailable,
        R::TlsActive,
        R::TlsRequired,
        R::UnsupportedMechanism,
        R::Cancelled,
        R::BadBase64,
        R::MalformedPlain,
        R::AuthzidRefused,
        R::CredentialsTooLong,
        R::AuthFailed,
        R::TooManyFailures,
        R::TooManyBadCommands,
        R::TempFail,
        R::Misuse,
        R::TimedOut,
    ];
    for r in all {
        let (_, t) = r.reply();
        assert!(
            !t.is_empty() && t.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{r:?}"
        );
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// Arbitrary input never panics, always ends, and never reaches the checker with an
        /// oversized payload.
        #[test]
        fn arbitrary_input(lines in proptest::collection::vec(
            prop_oneof![
                Just(b"USER bob".to_vec()),
                Just(b"PASS x".to_vec()),
                Just(b"AUTH PLAIN".to_vec()),
                Just(b"AUTH PLAIN AGJvYgBzZWNyZXQ=".to_vec()),
                Just(b"*".to_vec()),
                Just(b"APOP a 00000000000000000000000000000000".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..300),
            ], 0..20), chunk in 1usize..64) {
            let script: Vec<u8> = lines.iter().flat_map(|l| [&l[..], b"\r\n"].concat()).collect();
            let mut input = ScriptedInput::new(&script, chunk);
            let mut out = Vec::new();
            let mut checker = FakeChecker::default();
            let end = run(&mut input, &mut out, &mut checker, &cfg(), &Timestamp::fixed(STAMP), &mut |_, _| {});
            prop_assert!(checker.payloads.len() <= DEFAULT_MAX_ATTEMPTS as usize);
            for p in &checker.payloads {
                prop_assert!(p.len() <= MAX_CHECKPASSWORD_INPUT);
                prop_assert_eq!(p.iter().filter(|&&b| b == 0).count(), 3);
            }
            prop_assert!(!matches!(end, End::Io(_)));
        }
    }
}

/// A TLS front in memory: offers STLS until started; `fail` makes the switch fail.
struct FakeFront {
    offered: bool,
    on: bool,
    fail: bool,
    starts: u32,
}

impl TlsFront for FakeFront {
    fn offers_stls(&self) -> bool {
        self.offered && !self.on
    }
    fn is_on(&self) -> bool {
        self.on
    }
    fn start(
        &mut self,
        out: &mut dyn Write,
        _: Instant,
    ) -> Result<starttls::Switched, starttls::StartError> {
        self.starts += 1;
        out.write_all(starttls::STLS_OK).unwrap();
        if self.fail {
            return Err(starttls::StartError::Handshake);
        }
        self.on = true;
        Ok(starttls::Switched {
            tag: "TLSv1.3/TLS_AES_128_GCM_SHA256".into(),
            dropped: 0,
        })
    }
}

/// One line per read, as a client that waits for each answer (pop-popup never reads past a
/// line, so this is also what it sees of a pipelined client).
struct LinesInput(Vec<Vec<u8>>);

impl ClientInput for LinesInput {
    fn read_until(&mut self, buf: &mut [u8], _: Instant) -> io::Result<ReadOutcome> {
        match self.0.pop() {
            None => Ok(ReadOutcome::Eof),
            Some(l) => {
                buf[..l.len()].copy_from_slice(&l);
                Ok(ReadOutcome::Data(l.len()))
            }
        }
    }
}

fn front(offered: bool, on: bool) -> FakeFront {
    FakeFront {
        offered,
        on,
        fail: false,
        starts: 0,
    }
}

fn tls_session(
    cfg: &PopupConfig,
    f: &mut FakeFront,
    script: &str,
    answers: &[CheckStatus],
) -> Outcome {
    let mut input = LinesInput(
        script
            .split_inclusive('\n')
            .map(|l| l.as_bytes().to_vec())
            .rev()
            .collect(),
    );
    let mut out = Vec::new();
    let mut checker = FakeChecker {
        answers: answers.to_vec(),
        payloads: Vec::new(),
    };
    let mut logs = Vec::new();
    let end = run_with_front(
        &mut input,
        &mut out,
        &mut checker,
        f,
        cfg,
        &Timestamp::fixed(STAMP),
        &mut |_, l| logs.push(l.to_string()),
    );
    Outcome {
        out: String::from_utf8(out).unwrap(),
        end,
        payloads: checker.payloads,
        logs,
    }
}

const TLS_REQUIRED: &str = "-ERR [AUTH] TLS required: use STLS before logging in";

#[test]
fn stls_offered_and_logins_wait_for_it() {
    let mut f = front(true, false);
    let o = tls_session(
        &cfg(),
        &mut f,
        "CAPA\r\nUSER bob\r\nPASS x\r\nAPOP bob c4c9334bac560ecc979e58001b3e22fb\r\nAUTH PLAIN\r\nAUTH\r\n\
         STLS\r\nCAPA\r\nSTLS\r\nUSER bob\r\nPASS secret\r\n",
        &[CheckStatus::Served],
    );
    let lines: Vec<&str> = o.out[greet().len()..].split("\r\n").collect();
    let before = capa_listing_tls(&cfg(), true, false);
    assert!(before.contains("STLS\r\n"));
    assert!(
        !before.contains("USER") && !before.contains("SASL"),
        "{before}"
    );
    let after = capa_listing(&cfg());
    assert!(after.contains("USER\r\n") && after.contains("SASL PLAIN\r\n"));
    assert!(!after.contains("STLS"));
    let expected = format!(
        "+OK capability list follows\r\n{before}{r}\r\n{r}\r\n{r}\r\n{r}\r\n{r}\r\n\
         +OK Begin TLS negotiation\r\n+OK capability list follows\r\n{after}\
         -ERR command not permitted when TLS active\r\n+OK\r\n",
        r = TLS_REQUIRED
    );
    assert!(o.out[greet().len()..].starts_with(&expected), "{lines:?}");
    assert_eq!(f.starts, 1);
    assert_eq!(o.payloads, vec![payload("bob", "secret")]);
    assert!(matches!(o.end, End::Served { .. }));
    assert!(o
        .logs
        .iter()
        .any(|l| l == "stls tls=TLSv1.3/TLS_AES_128_GCM_SHA256 dropped=0"));
}

#[test]
fn bytes_pipelined_after_stls_are_dropped() {
    // An input that reads ahead: the rest of the chunk is in the line buffer at STLS.
    let mut f = front(true, false);
    let mut input = ScriptedInput::new(b"STLS\r\nUSER x\r\nNOOP\r\n", 4096);
    let mut out = Vec::new();
    let mut logs = Vec::new();
    let end = run_with_front(
        &mut input,
        &mut out,
        &mut FakeChecker::default(),
        &mut f,
        &cfg(),
        &Timestamp::fixed(STAMP),
        &mut |_, l| logs.push(l.to_string()),
    );
    let o = Outcome {
        out: String::from_utf8(out).unwrap(),
        end,
        payloads: vec![],
        logs,
    };
    assert_eq!(
        o.out,
        format!("{}+OK Begin TLS negotiation\r\n", greet()),
        "nothing after STLS is answered"
    );
    assert!(matches!(o.end, End::ClientClosed));
    assert!(o.logs.iter().any(|l| l.ends_with(" dropped=14")));
}

#[test]
fn stls_refusals() {
    // No front: as without TLS.
    let mut f = front(false, false);
    let o = tls_session(&cfg(), &mut f, "STLS\r\nUSER bob\r\n", &[]);
    assert!(o.out.ends_with("-ERR STLS not available\r\n+OK\r\n"));
    // Implicit TLS: STLS refused, logins accepted, CAPA without STLS.
    let mut f = front(false, true);
    let o = tls_session(&cfg(), &mut f, "STLS\r\nCAPA\r\nUSER bob\r\n", &[]);
    assert!(o.out[greet().len()..].starts_with("-ERR command not permitted when TLS active\r\n"));
    assert!(o.out.contains("USER\r\nSASL PLAIN\r\n") && !o.out.contains("STLS\r\n"));
    assert!(o.out.ends_with("+OK\r\n"));
    assert_eq!(f.starts, 0);
    // A failed switch ends the session.
    let mut f = front(true, false);
    f.fail = true;
    let o = tls_session(&cfg(), &mut f, "STLS\r\nNOOP\r\n", &[]);
    assert!(matches!(o.end, End::Tls(starttls::StartError::Handshake)));
    assert!(o.out.ends_with("+OK Begin TLS negotiation\r\n"));
}

#[test]
fn allow_plaintext_accepts_logins_before_stls() {
    let c = PopupConfig {
        allow_plaintext: true,
        ..cfg()
    };
    let listing = capa_listing_tls(&c, true, true);
    assert!(listing.contains("USER\r\n") && listing.contains("SASL PLAIN\r\n"));
    assert!(listing.contains("STLS\r\n"));
    let mut f = front(true, false);
    let o = tls_session(
        &c,
        &mut f,
        "USER bob\r\nPASS secret\r\n",
        &[CheckStatus::Served],
    );
    assert_eq!(o.payloads, vec![payload("bob", "secret")]);
}

#[test]
fn tls_required_dispatch_follows_its_table() {
    for v in Verb::ALL {
        let mut f = front(true, false);
        // STLS itself switches; the other verbs answer from the table.
        let o = tls_session(&cfg(), &mut f, &format!("{}\r\n", v.example()), &[]);
        let first = o.out[greet().len()..].lines().next().unwrap_or("");
        let refused = first == "-ERR authorization first" || first == TLS_REQUIRED;
        assert_eq!(
            refused,
            !authorization_tls_required(v).serves(),
            "{v:?}: {first}"
        );
    }
}
