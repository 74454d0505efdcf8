//! The POP3 AUTHORIZATION state and the checkpassword hand-off: everything `pop-popup` does.
//! Never touches mailboxes or password databases.
//!
//! [`run`] greets the client, answers USER, PASS, APOP, AUTH PLAIN, CAPA, NOOP and QUIT, and
//! hands every credential to a [`Checker`] (in production [`ExecChecker`]: fork and exec the
//! checkpassword program with `user\0secret\0timestamp\0` on fd 3, as qmail-popup does). It is
//! generic over the client's input and output so whole sessions are unit-tested in memory.
//! Every refusal is a [`Refusal`] and [`Refusal::reply`] is the one place that turns it into a
//! `-ERR` line.

#![forbid(unsafe_code)]

pub mod handoff;
pub mod input;
pub mod privs;
pub mod proxy;
pub mod sasl;
pub mod slots;
pub mod split;
pub mod stamp;
pub mod starttls;

pub use handoff::{CheckStatus, Checker, ExecChecker, MAX_CHECKPASSWORD_INPUT};
pub use input::ExactLineInput;
pub use stamp::{validate_hostname, HostnameError, Timestamp, MAX_HOSTNAME_LEN};

use spool_wire::limits::MAX_COMMAND_LINE;
use spool_wire::log::Level;
use spool_wire::pop3::capa::{self, Row};
use spool_wire::pop3::command::{parse, Command, CommandError, Verb};
use spool_wire::pop3::line::{Line, LineBuffer};
use spool_wire::pop3::response::{self, RespCode};
use spool_wire::timeio::{ClientInput, ReadOutcome};
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};
use zeroize::{Zeroize, Zeroizing};

/// Longest user name handed to the checkpassword program (Linux names are at most 32 bytes;
/// virtual-domain logins such as `user@example.org` need more).
pub const MAX_USER_LEN: usize = 128;

/// Longest password (or APOP digest) handed on. With [`MAX_USER_LEN`] and the longest
/// timestamp the fd-3 payload stays within [`MAX_CHECKPASSWORD_INPUT`].
pub const MAX_PASSWORD_LEN: usize = 192;

// user NUL password NUL timestamp NUL.
#[allow(clippy::int_plus_one)]
const _: () = assert!(
    MAX_USER_LEN + 1 + MAX_PASSWORD_LEN + 1 + stamp::MAX_STAMP_LEN + 1 <= MAX_CHECKPASSWORD_INPUT
);

/// A SASL continuation line (base64, RFC 5034 §4) may be longer than a command line: 1024
/// octets hold the base64 of any payload that fits [`MAX_CHECKPASSWORD_INPUT`].
pub const MAX_SASL_LINE: usize = 1024;

/// The whole AUTHORIZATION state must end within this time (qmail-popup allows 1200 s per
/// read, without bound overall). Long enough for a user typing a password at a client's
/// prompt, short enough that slow or idle connections give their slot back.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(120);

/// Failed logins (bad credentials) allowed on one connection.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The delay before answering the first failed login; it doubles with each further failure.
pub const DEFAULT_FAIL_DELAY: Duration = Duration::from_secs(1);

/// No single failure delay is longer than this, whatever the base and attempt count.
pub const MAX_FAIL_DELAY: Duration = Duration::from_secs(30);

/// Writes to the client that make no progress for this long end the session.
pub const AUTH_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

pub use spool_wire::pop3::policy::Expire;

/// Everything that shapes a session, validated.
#[derive(Debug, Clone)]
pub struct PopupConfig {
    /// Whether APOP is offered: the timestamp appears in the greeting only when it is.
    pub apop: bool,
    /// The whole AUTHORIZATION state must end within this time.
    pub timeout: Duration,
    /// Failed logins before the connection is closed (at least 1).
    pub max_attempts: u32,
    /// Delay before the first `-ERR [AUTH]`; doubles per failure, capped at MAX_FAIL_DELAY.
    pub fail_delay: Duration,
    /// Bad commands before the connection is closed (at least 1).
    pub max_bad_commands: u32,
    pub expire: Option<Expire>,
    pub login_delay: Option<u64>,
    /// Accept USER, PASS, APOP and AUTH before STLS even where a TLS front offers STLS.
    pub allow_plaintext: bool,
}

impl Default for PopupConfig {
    fn default() -> Self {
        PopupConfig {
            apop: true,
            timeout: DEFAULT_AUTH_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            fail_delay: DEFAULT_FAIL_DELAY,
            max_bad_commands: spool_wire::limits::DEFAULT_MAX_BAD_COMMANDS,
            expire: None,
            login_delay: None,
            allow_plaintext: false,
        }
    }
}

/// The TLS front end as the session sees it: whether STLS can be offered, whether TLS is on,
/// and the switch itself. [`NoTls`] when there is no front; [`starttls::FdFront`] otherwise.
pub trait TlsFront {
    /// STLS can be offered now (a front is there and TLS is not on yet).
    fn offers_stls(&self) -> bool;
    /// The channel is private: implicit TLS, or after STLS.
    fn is_on(&self) -> bool;
    /// Called on STLS: drops what the client sent after the STLS line, sends the `+OK` the
    /// front's way, and switches.
    fn start(
        &mut self,
        out: &mut dyn Write,
        deadline: Instant,
    ) -> Result<starttls::Switched, starttls::StartError>;
}

/// No TLS front: STLS is refused and nothing else changes.
pub struct NoTls;

impl TlsFront for NoTls {
    fn offers_stls(&self) -> bool {
        false
    }
    fn is_on(&self) -> bool {
        false
    }
    fn start(
        &mut self,
        _: &mut dyn Write,
        _: Instant,
    ) -> Result<starttls::Switched, starttls::StartError> {
        Err(starttls::StartError::Io(io::Error::other("no TLS front")))
    }
}

/// How a credential was presented, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    User,
    Apop,
    Plain,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::User => "USER",
            Mechanism::Apop => "APOP",
            Mechanism::Plain => "PLAIN",
        }
    }
}

/// Every way a command is refused. [`Refusal::reply`] gives its one `-ERR` line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The line is not a command (the parser's text).
    Command(CommandError),
    /// Over the line limit (255 octets for commands, [`MAX_SASL_LINE`] for SASL responses).
    LineTooLong,
    /// A TRANSACTION command before login.
    AuthorizationFirst,
    /// PASS not immediately after USER (RFC 1939 §7).
    UserFirst,
    /// APOP while `--no-apop`.
    ApopDisabled,
    /// STLS without a TLS front end to hand the connection to.
    StlsUnavailable,
    /// STLS when TLS is already on (implicit TLS, or a second STLS).
    TlsActive,
    /// USER, PASS, APOP or AUTH while a TLS front offers STLS and TLS is not on yet.
    TlsRequired,
    /// AUTH with a mechanism other than PLAIN.
    UnsupportedMechanism,
    /// The client answered `*` to the SASL continuation.
    Cancelled,
    /// The SASL response is not canonical base64.
    BadBase64,
    /// The decoded PLAIN message is malformed.
    MalformedPlain,
    /// A PLAIN authorization identity other than the authentication identity.
    AuthzidRefused,
    /// User name or password over MAX_USER_LEN / MAX_PASSWORD_LEN: refused without asking the
    /// checkpassword program.
    CredentialsTooLong,
    /// The checkpassword program said no (exit 1).
    AuthFailed,
    /// The last allowed failure; the connection closes.
    TooManyFailures,
    /// The last allowed bad command; the connection closes.
    TooManyBadCommands,
    /// The checkpassword program failed temporarily (exit 111 or another code), crashed, or
    /// could not be started; the connection closes.
    TempFail,
    /// The checkpassword program reported misuse (exit 2); the connection closes.
    Misuse,
    /// The AUTHORIZATION timeout passed; the connection closes.
    TimedOut,
}

/// What a refusal does to the session's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counts {
    /// A bad command (towards max_bad_commands).
    Bad,
    /// Counted elsewhere or not at all.
    Nothing,
}

impl Refusal {
    /// The response code and text, the one place every `-ERR` of pop-popup is written down.
    pub fn reply(&self) -> (Option<RespCode>, &'static str) {
        use Refusal as R;
        match self {
            R::Command(e) => (None, e.text()),
            R::LineTooLong => (None, "line too long"),
            R::AuthorizationFirst => (None, "authorization first"),
            R::UserFirst => (None, "USER first"),
            R::ApopDisabled => (None, "APOP not available"),
            R::StlsUnavailable => (None, "STLS not available"),
            // RFC 2595 §4's text.
            R::TlsActive => (None, "command not permitted when TLS active"),
            // RFC 3206 §5: [AUTH] covers a login refused by policy, which this is; the
            // client is to fix its settings (use STLS), not retry as it is. Not SYS/PERM:
            // nothing is wrong with the server.
            R::TlsRequired => (
                Some(RespCode::Auth),
                "TLS required: use STLS before logging in",
            ),
            R::UnsupportedMechanism => (None, "unsupported SASL mechanism"),
            R::Cancelled => (None, "authentication cancelled"),
            R::BadBase64 => (None, "invalid base64"),
            R::MalformedPlain => (None, "malformed PLAIN response"),
            R::AuthzidRefused => (Some(RespCode::Auth), "authorization identity refused"),
            R::CredentialsTooLong => (Some(RespCode::Auth), "credentials too long"),
            R::AuthFailed => (Some(RespCode::Auth), "authentication failed"),
            R::TooManyFailures => (Some(RespCode::Auth), "too many failures"),
            R::TooManyBadCommands => (None, "too many bad commands"),
            R::TempFail => (
                Some(RespCode::SysTemp),
                "authentication temporarily unavailable",
            ),
            R::Misuse => (Some(RespCode::SysPerm), "authentication misconfigured"),
            R::TimedOut => (None, "authorization timed out"),
        }
    }

    fn counts(&self) -> Counts {
        use Refusal as R;
        match self {
            R::Command(_)
            | R::LineTooLong
            | R::AuthorizationFirst
            | R::UserFirst
            | R::ApopDisabled
            | R::StlsUnavailable
            | R::TlsActive
            | R::TlsRequired
            | R::UnsupportedMechanism
            | R::BadBase64
            | R::MalformedPlain => Counts::Bad,
            _ => Counts::Nothing,
        }
    }
}

/// How the session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum End {
    /// The checkpassword program accepted and its chain served the session.
    Served {
        user: String,
        mechanism: Mechanism,
    },
    /// QUIT.
    Quit,
    /// The client closed the connection.
    ClientClosed,
    TimedOut,
    TooManyFailures,
    TooManyBadCommands,
    /// The checkpassword program failed temporarily, crashed or could not be run.
    CheckTempFail(CheckStatus),
    /// The checkpassword program reported misuse.
    CheckMisuse,
    /// Reading from or writing to the client failed.
    Io(io::Error),
    /// STLS was answered but the switch to TLS failed; the connection is not used again.
    Tls(starttls::StartError),
}

impl End {
    /// pop-popup's exit status: 0 when the session ended normally, whatever the login's
    /// outcome; 111 when a system failure (the checkpassword program's included) ended it.
    pub fn exit_code(&self) -> u8 {
        match self {
            End::CheckTempFail(_) | End::CheckMisuse => 111,
            _ => 0,
        }
    }

    /// Log level for the end line.
    pub fn level(&self) -> Level {
        match self {
            End::Served { .. } | End::Quit | End::ClientClosed => Level::Info,
            End::CheckTempFail(_) | End::CheckMisuse => Level::Err,
            _ => Level::Warning,
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Served { user, mechanism } => {
                write!(f, "served user={user} mech={}", mechanism.as_str())
            }
            End::Quit => write!(f, "quit"),
            End::ClientClosed => write!(f, "client closed the connection"),
            End::TimedOut => write!(f, "authorization timed out"),
            End::TooManyFailures => write!(f, "too many failed logins"),
            End::TooManyBadCommands => write!(f, "too many bad commands"),
            End::CheckTempFail(s) => write!(f, "checkpassword failed: {s:?}"),
            End::CheckMisuse => write!(f, "checkpassword reported misuse (exit 2)"),
            End::Io(e) => write!(f, "client i/o error: {e}"),
            End::Tls(e) => write!(f, "STLS: {e}"),
        }
    }
}

/// The delay before answering the `n`th failure (1-based): base, 2×base, 4×base, ...,
/// at most [`MAX_FAIL_DELAY`].
pub fn fail_delay(base: Duration, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(MAX_FAIL_DELAY)
        .min(MAX_FAIL_DELAY)
}

/// The AUTHORIZATION state's command table: every verb and what this state does with it.
/// The TRANSACTION state's verbs are refused ("authorization first") and those with a
/// capability are advertised, as RFC 2449 §5 allows, so clients that ask only once see what
/// pop-serve will offer.
pub fn authorization(verb: Verb) -> Row {
    match verb {
        Verb::User | Verb::Pass | Verb::Apop | Verb::Auth => Row::Serves,
        Verb::Capa | Verb::Quit | Verb::Noop => Row::Serves,
        Verb::Stls => Row::Refuses { advertised: false },
        Verb::Stat
        | Verb::List
        | Verb::Retr
        | Verb::Dele
        | Verb::Rset
        | Verb::Top
        | Verb::Uidl
        | Verb::Last => Row::Refuses { advertised: true },
    }
}

/// The AUTHORIZATION state while a TLS front offers STLS and plaintext logins are allowed
/// (`--allow-plaintext`): as [`authorization`], and STLS is served.
pub fn authorization_stls(verb: Verb) -> Row {
    match verb {
        Verb::Stls => Row::Serves,
        v => authorization(v),
    }
}

/// The AUTHORIZATION state while a TLS front offers STLS and TLS is required: no login
/// command is served (nor listed) until STLS.
pub fn authorization_tls_required(verb: Verb) -> Row {
    match verb {
        Verb::User | Verb::Pass | Verb::Apop | Verb::Auth => Row::Refuses { advertised: false },
        v => authorization_stls(v),
    }
}

/// The capability STLS brings (RFC 2595 §4).
pub const STLS_CAPABILITY: &str = "STLS";

/// Which of the three AUTHORIZATION tables applies.
pub fn table(stls_offered: bool, plaintext_ok: bool) -> fn(Verb) -> Row {
    match (stls_offered, plaintext_ok) {
        (false, _) => authorization,
        (true, true) => authorization_stls,
        (true, false) => authorization_tls_required,
    }
}

/// The AUTHORIZATION-state capability list, with the terminator, made from [`authorization`]
/// (no TLS front, or TLS on).
pub fn capa_listing(cfg: &PopupConfig) -> String {
    capa_listing_tls(cfg, false, true)
}

/// The capability list for the table [`table`] picks; STLS listed when offered.
pub fn capa_listing_tls(cfg: &PopupConfig, stls_offered: bool, plaintext_ok: bool) -> String {
    let policy = spool_wire::pop3::policy::Policy {
        expire: cfg.expire,
        login_delay: cfg.login_delay,
    };
    let mut state = vec![capa::RESP_CODES, capa::AUTH_RESP_CODE, capa::PIPELINING];
    if stls_offered {
        state.push(STLS_CAPABILITY);
    }
    capa::listing(table(stls_offered, plaintext_ok), &state, &policy)
}

/// The greeting line's text: the timestamp when APOP is offered (qmail-popup's exact form,
/// `+OK <...>`); without APOP no timestamp, so that clients do not try APOP.
pub fn greeting(cfg: &PopupConfig, stamp: &Timestamp) -> String {
    if cfg.apop {
        stamp.as_str().to_string()
    } else {
        "POP3 server ready".to_string()
    }
}

/// One line from the client, or why there is none.
enum Got {
    Line(Zeroizing<Vec<u8>>),
    TooLong,
    End(End),
}

/// One AUTHORIZATION conversation's mutable state (the TRANSACTION state is
/// `spool_store::session`, in another program).
struct Login<'a, I, W, C> {
    input: &'a mut I,
    out: &'a mut W,
    checker: &'a mut C,
    front: &'a mut dyn TlsFront,
    cfg: &'a PopupConfig,
    stamp: &'a Timestamp,
    log: &'a mut dyn FnMut(Level, &str),
    lines: LineBuffer,
    deadline: Instant,
    failures: u32,
    bad: u32,
    /// Read buffer, wiped after every read: passwords pass through it.
    buf: Zeroizing<Vec<u8>>,
}

/// Runs the AUTHORIZATION state to its end: writes the greeting, answers commands, hands
/// credentials to `checker`. `log` receives one line per login attempt (never a password).
///
/// With an input that never reads past a line ([`ExactLineInput`]), whatever the client
/// pipelined after the line that led to a successful login is still unread when the
/// checkpassword chain starts, so the served session answers it.
pub fn run<I: ClientInput, W: Write, C: Checker>(
    input: &mut I,
    out: &mut W,
    checker: &mut C,
    cfg: &PopupConfig,
    stamp: &Timestamp,
    log: &mut dyn FnMut(Level, &str),
) -> End {
    run_with_front(input, out, checker, &mut NoTls, cfg, stamp, log)
}

/// [`run`] behind a TLS front end: STLS offered while `front` offers it, and logins refused
/// before it unless `cfg.allow_plaintext`.
pub fn run_with_front<I: ClientInput, W: Write, C: Checker>(
    input: &mut I,
    out: &mut W,
    checker: &mut C,
    front: &mut dyn TlsFront,
    cfg: &PopupConfig,
    stamp: &Timestamp,
    log: &mut dyn FnMut(Level, &str),
) -> End {
    let mut s = Login {
        input,
        out,
        checker,
        front,
        cfg,
        stamp,
        log,
        // One buffer for both kinds of line (an input that reads ahead may already hold the
        // SASL response); the shorter command-line limit is checked per line.
        lines: LineBuffer::new(MAX_SASL_LINE),
        deadline: Instant::now() + cfg.timeout,
        failures: 0,
        bad: 0,
        buf: Zeroizing::new(vec![0u8; MAX_SASL_LINE]),
    };
    let text = greeting(cfg, stamp);
    if let Err(e) = s.ok(&text) {
        return End::Io(e);
    }
    s.serve()
}

impl<I: ClientInput, W: Write, C: Checker> Login<'_, I, W, C> {
    /// Logins in the clear are accepted: no front offers STLS, or the admin allows them.
    fn plaintext_ok(&self) -> bool {
        !self.front.offers_stls() || self.cfg.allow_plaintext
    }

    /// STLS: the switch, with nothing the client sent after the STLS line kept. This side
    /// never reads past a line ([`ExactLineInput`]), so the front's discard sees all of it;
    /// an input that read ahead has its bytes dropped here too.
    fn stls(&mut self) -> Result<Option<End>, Refusal> {
        if self.front.is_on() {
            return Err(Refusal::TlsActive);
        }
        if !self.front.offers_stls() {
            return Err(Refusal::StlsUnavailable);
        }
        let read_ahead = self.lines.buffered();
        self.lines.wipe_taken();
        self.lines = LineBuffer::new(MAX_SASL_LINE);
        match self.front.start(self.out, self.deadline) {
            Ok(sw) => {
                // Bytes after STLS mean a broken client or an injection attempt: worth a
                // warning.
                let dropped = read_ahead + sw.dropped;
                let level = if dropped > 0 {
                    Level::Warning
                } else {
                    Level::Info
                };
                (self.log)(level, &format!("stls tls={} dropped={dropped}", sw.tag));
                Ok(None)
            }
            Err(e) => Ok(Some(End::Tls(e))),
        }
    }

    fn ok(&mut self, text: &str) -> io::Result<()> {
        response::ok(self.out, text)?;
        self.out.flush()
    }

    /// Answers a refusal, counts it, and says whether the session ends.
    fn refuse(&mut self, r: Refusal) -> Option<End> {
        let mut r = r;
        if r.counts() == Counts::Bad {
            self.bad += 1;
            if self.bad >= self.cfg.max_bad_commands.max(1) {
                r = Refusal::TooManyBadCommands;
            }
        }
        let (code, text) = r.reply();
        let written = response::err(self.out, code, text).and_then(|()| self.out.flush());
        let end = match r {
            Refusal::TooManyBadCommands => Some(End::TooManyBadCommands),
            Refusal::TooManyFailures => Some(End::TooManyFailures),
            Refusal::TimedOut => Some(End::TimedOut),
            _ => None,
        };
        match (end, written) {
            (Some(end), _) => Some(end),
            (None, Err(e)) => Some(End::Io(e)),
            (None, Ok(())) => None,
        }
    }

    /// The next line from `lines`, reading more as needed. Command lines are held to
    /// MAX_COMMAND_LINE (CRLF counted), SASL responses (`sasl`) to MAX_SASL_LINE.
    fn next_line(&mut self, sasl: bool) -> Got {
        loop {
            match self.lines.next_line() {
                Some(Line::Complete(l)) => {
                    let l = Zeroizing::new(l);
                    self.lines.wipe_taken();
                    if !sasl && l.len() + 2 > MAX_COMMAND_LINE {
                        return Got::TooLong;
                    }
                    return Got::Line(l);
                }
                Some(Line::TooLong) => return Got::TooLong,
                None => {}
            }
            let r = self.input.read_until(&mut self.buf, self.deadline);
            match r {
                Ok(ReadOutcome::Data(n)) => {
                    self.lines.push(&self.buf[..n]);
                    self.buf[..n].zeroize();
                }
                Ok(ReadOutcome::Eof) => return Got::End(End::ClientClosed),
                Ok(ReadOutcome::TimedOut) => {
                    // Best effort: the client may not be reading either.
                    let (code, text) = Refusal::TimedOut.reply();
                    let _ = response::err(self.out, code, text).and_then(|()| self.out.flush());
                    return Got::End(End::TimedOut);
                }
                Err(e) => return Got::End(End::Io(e)),
            }
        }
    }

    fn serve(&mut self) -> End {
        // The user named by the previous command, if it was USER (PASS must follow at once).
        let mut pending_user: Option<Zeroizing<Vec<u8>>> = None;
        loop {
            let line = match self.next_line(false) {
                Got::Line(l) => l,
                Got::TooLong => {
                    pending_user = None;
                    if let Some(end) = self.refuse(Refusal::LineTooLong) {
                        return end;
                    }
                    continue;
                }
                Got::End(end) => return end,
            };
            let user = pending_user.take();
            let outcome = match parse(&line) {
                Err(e) => Err(Refusal::Command(e)),
                Ok(cmd) => self.command(cmd, user, &mut pending_user),
            };
            drop(line);
            match outcome {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(r) => {
                    if let Some(end) = self.refuse(r) {
                        return end;
                    }
                }
            }
        }
    }

    /// One parsed command. `user` is the name from an immediately preceding USER. Every
    /// command has its own arm, refused or served as [`authorization`] says.
    fn command(
        &mut self,
        cmd: Command,
        user: Option<Zeroizing<Vec<u8>>>,
        pending_user: &mut Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Option<End>, Refusal> {
        let io = |r: io::Result<()>| r.err().map(End::Io);
        let login = matches!(
            cmd,
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. }
        );
        if login && !self.plaintext_ok() {
            return Err(Refusal::TlsRequired);
        }
        match cmd {
            Command::User(name) => {
                *pending_user = Some(Zeroizing::new(name));
                Ok(io(self.ok("")))
            }
            Command::Pass(pass) => {
                let pass = Zeroizing::new(pass);
                match user {
                    None => Err(Refusal::UserFirst),
                    Some(u) => self.attempt(Mechanism::User, &u, &pass),
                }
            }
            Command::Apop { name, digest } => {
                if !self.cfg.apop {
                    return Err(Refusal::ApopDisabled);
                }
                self.attempt(Mechanism::Apop, &name, &digest)
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                let r = response::ok(self.out, "")
                    .and_then(|()| self.out.write_all(b"PLAIN\r\n.\r\n"))
                    .and_then(|()| self.out.flush());
                Ok(io(r))
            }
            Command::Auth {
                mechanism: Some(m),
                initial,
            } => {
                if m != b"PLAIN" {
                    return Err(Refusal::UnsupportedMechanism);
                }
                self.auth_plain(initial.map(Zeroizing::new))
            }
            Command::Capa => {
                let listing =
                    capa_listing_tls(self.cfg, self.front.offers_stls(), self.plaintext_ok());
                let r = response::ok(self.out, "capability list follows")
                    .and_then(|()| self.out.write_all(listing.as_bytes()))
                    .and_then(|()| self.out.flush());
                Ok(io(r))
            }
            Command::Noop => Ok(io(self.ok(""))),
            Command::Quit => {
                let _ = self.ok("");
                Ok(Some(End::Quit))
            }
            Command::Stls => self.stls(),
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Rset
            | Command::Top(..)
            | Command::Uidl(_)
            | Command::Last => Err(Refusal::AuthorizationFirst),
        }
    }

    /// AUTH PLAIN, with the initial response or after a `+ ` continuation.
    fn auth_plain(&mut self, initial: Option<Zeroizing<Vec<u8>>>) -> Result<Option<End>, Refusal> {
        let encoded = match initial {
            Some(i) => i,
            None => {
                // RFC 5034 §4: an empty challenge is "+ " followed by CRLF.
                if let Err(e) = self
                    .out
                    .write_all(b"+ \r\n")
                    .and_then(|()| self.out.flush())
                {
                    return Ok(Some(End::Io(e)));
                }
                match self.next_line(true) {
                    Got::Line(l) => l,
                    Got::TooLong => return Err(Refusal::LineTooLong),
                    Got::End(end) => return Ok(Some(end)),
                }
            }
        };
        if encoded.as_slice() == b"*" {
            return Err(Refusal::Cancelled);
        }
        let decoded = sasl::decode_base64(&encoded).map_err(|_| Refusal::BadBase64)?;
        let creds = sasl::parse_plain(&decoded).map_err(|e| match e {
            sasl::SaslError::AuthzidRefused => Refusal::AuthzidRefused,
            _ => Refusal::MalformedPlain,
        });
        match creds {
            Ok(c) => self.attempt(Mechanism::Plain, &c.authcid, &c.password),
            Err(Refusal::AuthzidRefused) => {
                (self.log)(Level::Warning, "auth mech=PLAIN result=authzid-refused");
                self.failure(Refusal::AuthzidRefused)
            }
            Err(r) => Err(r),
        }
    }

    /// Counts a failed login, waits, and refuses: AuthFailed, or TooManyFailures at the limit.
    fn failure(&mut self, r: Refusal) -> Result<Option<End>, Refusal> {
        self.failures += 1;
        std::thread::sleep(fail_delay(self.cfg.fail_delay, self.failures));
        if self.failures >= self.cfg.max_attempts.max(1) {
            return Err(Refusal::TooManyFailures);
        }
        Err(r)
    }

    /// Hands one credential to the checkpassword program.
    fn attempt(
        &mut self,
        mech: Mechanism,
        user: &[u8],
        secret: &[u8],
    ) -> Result<Option<End>, Refusal> {
        let shown = String::from_utf8_lossy(&user[..user.len().min(MAX_USER_LEN)]).into_owned();
        if user.len() > MAX_USER_LEN || secret.len() > MAX_PASSWORD_LEN {
            (self.log)(
                Level::Warning,
                // Nothing derived from the secret (not even its length) is logged.
                &format!(
                    "auth user={shown} mech={} result=too-long user_len={}",
                    mech.as_str(),
                    user.len()
                ),
            );
            return self.failure(Refusal::CredentialsTooLong);
        }
        let stamp = self.stamp.as_str().as_bytes();
        let mut payload = Zeroizing::new(Vec::with_capacity(MAX_CHECKPASSWORD_INPUT));
        payload.extend_from_slice(user);
        payload.push(0);
        payload.extend_from_slice(secret);
        payload.push(0);
        payload.extend_from_slice(stamp);
        payload.push(0);
        if self.lines.buffered() > 0 {
            (self.log)(
                Level::Warning,
                &format!(
                    "{} pipelined bytes were read ahead and cannot reach the session",
                    self.lines.buffered()
                ),
            );
        }
        let status = self.checker.check(&payload);
        drop(payload);
        let result = match &status {
            CheckStatus::Served => "ok".to_string(),
            CheckStatus::Rejected => "fail".to_string(),
            CheckStatus::Misuse => "misuse".to_string(),
            CheckStatus::TempFail(c) => format!("tempfail exit={c}"),
            CheckStatus::Crashed(sig) => format!("crashed signal={sig}"),
            CheckStatus::SpawnFailed(e) => format!("tempfail error={e}"),
        };
        let level = match status {
            CheckStatus::Served => Level::Info,
            CheckStatus::Rejected => Level::Warning,
            _ => Level::Err,
        };
        (self.log)(
            level,
            &format!("auth user={shown} mech={} result={result}", mech.as_str()),
        );
        match status {
            CheckStatus::Served => Ok(Some(End::Served {
                user: shown,
                mechanism: mech,
            })),
            CheckStatus::Rejected => self.failure(Refusal::AuthFailed),
            CheckStatus::Misuse => {
                let _ = self.refuse(Refusal::Misuse);
                Ok(Some(End::CheckMisuse))
            }
            other => {
                let _ = self.refuse(Refusal::TempFail);
                Ok(Some(End::CheckTempFail(other)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
