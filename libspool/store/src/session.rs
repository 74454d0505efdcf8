//! The POP3 TRANSACTION and UPDATE states (RFC 1939 §5-6) over a [`Mailbox`].
//!
//! The session is preauthenticated, as qmail-pop3d is: it starts by printing the `+OK` that
//! answers the client's PASS, then serves commands until QUIT (UPDATE: commit the deletions),
//! end of input, a timeout, the session's time limit or too many bad commands (no commit:
//! nothing is deleted).
//!
//! Responses to a batch of pipelined commands are buffered and flushed once, when no complete
//! command line is left in the input buffer (RFC 2449 PIPELINING).

#![forbid(unsafe_code)]

use crate::error::MailboxError;
use crate::mailbox::{Mailbox, RetrieveError, RetrieveSink, WireOut};
use spool_wire::limits;
use spool_wire::pop3::capa::{self, Row};
use spool_wire::pop3::command::{self, Command, MsgNum, Verb};
use spool_wire::pop3::line::{Line, LineBuffer};
use spool_wire::pop3::response::{self, DotStuffer, RespCode};
use spool_wire::timeio::{ClientInput, ReadOutcome};
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

pub use spool_wire::pop3::policy::Expire;

/// Session limits and advertised policies.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// No command for this long ends the session (RFC 1939: at least 10 minutes).
    pub idle_timeout: Duration,
    /// A started command line must be complete within this time.
    pub line_deadline: Duration,
    /// The whole session's life, counted from the greeting; `None` for no limit. Checked
    /// whenever a command is to be read or served, so a RETR under way is never cut: the
    /// next command is answered `-ERR` and the session ends without UPDATE.
    pub max_session: Option<Duration>,
    /// This many bad commands in a row end the session.
    pub max_bad_commands: u32,
    /// Advertised in CAPA as `EXPIRE` when set.
    pub expire: Option<Expire>,
    /// Advertised in CAPA as `LOGIN-DELAY` (seconds) when set.
    pub login_delay: Option<u64>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: limits::DEFAULT_IDLE_TIMEOUT,
            line_deadline: limits::DEFAULT_LINE_DEADLINE,
            max_session: Some(limits::DEFAULT_MAX_SESSION),
            max_bad_commands: limits::DEFAULT_MAX_BAD_COMMANDS,
            expire: None,
            login_delay: None,
        }
    }
}

/// How a session ended. Only `Quit` commits deletions.
#[derive(Debug)]
pub enum EndReason {
    /// QUIT, and the UPDATE committed.
    Quit,
    /// QUIT, but the UPDATE failed: the mailbox is unchanged.
    CommitFailed(MailboxError),
    ClientClosed,
    IdleTimeout,
    LineTimeout,
    /// The session reached `max_session`.
    SessionLimit,
    TooManyBadCommands,
    /// The client stopped reading or the connection broke while we wrote.
    WriteFailed(io::Error),
    ReadFailed(io::Error),
    /// A message could not be sent whole after `+OK` (it changed under us).
    RetrieveFailed(MailboxError),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Quit => write!(f, "quit"),
            EndReason::CommitFailed(e) => write!(f, "quit, update failed: {e}"),
            EndReason::ClientClosed => write!(f, "client closed"),
            EndReason::IdleTimeout => write!(f, "idle timeout"),
            EndReason::LineTimeout => write!(f, "command line timeout"),
            EndReason::SessionLimit => write!(f, "session time limit"),
            EndReason::TooManyBadCommands => write!(f, "too many bad commands"),
            EndReason::WriteFailed(e) => write!(f, "write failed: {e}"),
            EndReason::ReadFailed(e) => write!(f, "read failed: {e}"),
            EndReason::RetrieveFailed(e) => write!(f, "retrieve failed: {e}"),
        }
    }
}

/// What a session did, for its one summary log line.
#[derive(Debug)]
pub struct SessionReport {
    pub messages: usize,
    pub retrieved: usize,
    pub retrieved_bytes: u64,
    pub deleted: usize,
    pub deleted_bytes: u64,
    pub left: usize,
    pub end: EndReason,
}

enum Flow {
    Continue,
    End(EndReason),
}

struct State<'m> {
    mbox: &'m mut dyn Mailbox,
    deleted: Vec<bool>,
    retrieved: Vec<bool>,
    /// Highest message number accessed (RETR or DELE) this session, for LAST (RFC 1725).
    last: usize,
    retrieved_count: usize,
    retrieved_bytes: u64,
    bad_in_a_row: u32,
    /// The CAPA listing, computed once.
    capa: Vec<u8>,
}

/// Size of the chunks read from the client.
const READ_CHUNK: usize = 4096;

/// Runs one session: greeting, commands, UPDATE on QUIT. `out` should be buffered; it is
/// flushed once per batch of pipelined commands.
pub fn run(
    mbox: &mut dyn Mailbox,
    input: &mut dyn ClientInput,
    out: &mut dyn Write,
    cfg: &SessionConfig,
) -> SessionReport {
    let n = mbox.count();
    let mut st = State {
        mbox,
        deleted: vec![false; n],
        retrieved: vec![false; n],
        last: 0,
        retrieved_count: 0,
        retrieved_bytes: 0,
        bad_in_a_row: 0,
        capa: capa_listing(cfg),
    };
    let mut out = Out {
        buf: Vec::with_capacity(2 * OUT_CHUNK),
        inner: out,
    };
    let end = serve(&mut st, input, &mut out, cfg);
    // Every way out of `serve` has flushed already; this only matters if one did not.
    let _ = out.flush();
    let (deleted, deleted_bytes) = match end {
        EndReason::Quit => st.deleted_totals(),
        _ => (0, 0),
    };
    SessionReport {
        messages: n,
        retrieved: st.retrieved_count,
        retrieved_bytes: st.retrieved_bytes,
        deleted,
        deleted_bytes,
        left: n - deleted,
        end,
    }
}

fn serve(
    st: &mut State<'_>,
    input: &mut dyn ClientInput,
    out: &mut Out<'_>,
    cfg: &SessionConfig,
) -> EndReason {
    // qmail-pop3d's first line: the answer to the client's PASS.
    if let Err(e) = out.write_all(b"+OK \r\n").and_then(|_| out.flush()) {
        return EndReason::WriteFailed(e);
    }
    let mut lines = LineBuffer::new(limits::MAX_COMMAND_LINE);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut partial_since: Option<Instant> = None;
    let life_end = cfg.max_session.map(|d| Instant::now() + d);
    let life_over = || life_end.is_some_and(|t| Instant::now() >= t);
    let end_of_life = |out: &mut Out<'_>| {
        let _ = response::err(out, None, SESSION_LIMIT_TEXT);
        let _ = out.flush();
        EndReason::SessionLimit
    };
    loop {
        while let Some(line) = lines.next_line() {
            if life_over() {
                return end_of_life(out);
            }
            let flow = match line {
                Line::Complete(l) => st.handle_line(&l, out),
                Line::TooLong => st.bad(out, "command line too long"),
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::End(reason)) => {
                    let _ = out.flush();
                    return reason;
                }
                Err(e) => return EndReason::WriteFailed(e),
            }
            if st.bad_in_a_row >= cfg.max_bad_commands {
                let _ = response::err(out, None, "too many bad commands, closing");
                let _ = out.flush();
                return EndReason::TooManyBadCommands;
            }
        }
        if let Err(e) = out.flush() {
            return EndReason::WriteFailed(e);
        }
        let now = Instant::now();
        partial_since = if lines.has_partial() {
            Some(partial_since.unwrap_or(now))
        } else {
            None
        };
        let idle_deadline = now + cfg.idle_timeout;
        let mut deadline = match partial_since {
            Some(t) => idle_deadline.min(t + cfg.line_deadline),
            None => idle_deadline,
        };
        if let Some(t) = life_end {
            deadline = deadline.min(t);
        }
        match input.read_until(&mut buf, deadline) {
            Ok(ReadOutcome::Data(n)) => lines.push(&buf[..n]),
            Ok(ReadOutcome::Eof) => return EndReason::ClientClosed,
            Ok(ReadOutcome::TimedOut) if life_over() => return end_of_life(out),
            Ok(ReadOutcome::TimedOut) => {
                let line_expired =
                    partial_since.is_some_and(|t| Instant::now() >= t + cfg.line_deadline);
                let (reason, text) = if line_expired {
                    (
                        EndReason::LineTimeout,
                        "command line not completed in time, closing",
                    )
                } else {
                    (EndReason::IdleTimeout, "idle for too long, closing")
                };
                let _ = response::err(out, None, text);
                let _ = out.flush();
                return reason;
            }
            Err(e) => return EndReason::ReadFailed(e),
        }
    }
}

/// The answer to the first command read after the session's time limit.
pub const SESSION_LIMIT_TEXT: &str = "session time limit reached, closing; nothing deleted";

/// Octets the session's output buffer collects before it writes them out. At least the
/// caller's `BufWriter` capacity (pop-serve: 64 KiB), which then passes our writes straight
/// to the descriptor instead of copying them once more.
pub const OUT_CHUNK: usize = 128 * 1024;

/// The session's output: every response goes through this one buffer, and RETR/TOP append
/// their wire form straight into it (see [`WireOut`]), so a message is copied once between
/// the `pread` and the `write`, and small messages leave together in large writes.
struct Out<'a> {
    buf: Vec<u8>,
    inner: &'a mut dyn Write,
}

impl Out<'_> {
    /// Writes out everything buffered.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.inner.write_all(&self.buf);
        // After a failed write the session ends; what is left would go nowhere.
        self.buf.clear();
        r
    }

    /// Writes out the buffer once it holds a large write's worth.
    fn spill(&mut self) -> io::Result<()> {
        if self.buf.len() >= OUT_CHUNK {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for Out<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= OUT_CHUNK {
            return self.inner.write(data);
        }
        self.buf.extend_from_slice(data);
        self.spill()?;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        self.inner.flush()
    }
}

/// RETR/TOP output: `+OK` once the mailbox has checked the message, then the byte-stuffed
/// canonical message. Through `Write` (canonical bytes, stuffed here) or through [`WireOut`]
/// (the mailbox appends the stuffed wire form itself).
struct Sink<'s, 'o> {
    stuffer: DotStuffer<&'s mut Out<'o>>,
    status: String,
    /// Where this response starts in the output buffer, while the wire path is in use.
    wire_mark: Option<usize>,
}

impl WireOut for Sink<'_, '_> {
    fn start(&mut self) -> usize {
        let out = self.stuffer.get_mut();
        let mark = out.buf.len();
        out.buf.extend_from_slice(self.status.as_bytes());
        self.wire_mark = Some(mark);
        mark
    }
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.stuffer.get_mut().buf
    }
    fn spill(&mut self) -> io::Result<()> {
        self.stuffer.get_mut().spill()
    }
    fn cancel(&mut self, mark: usize) {
        self.stuffer.get_mut().buf.truncate(mark);
        self.wire_mark = None;
    }
}

impl Write for Sink<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stuffer.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stuffer.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stuffer.flush()
    }
}

impl RetrieveSink for Sink<'_, '_> {
    fn begin(&mut self) -> io::Result<()> {
        self.stuffer.get_mut().write_all(self.status.as_bytes())
    }
    fn wire(&mut self) -> Option<&mut dyn WireOut> {
        Some(self)
    }
}

impl State<'_> {
    fn deleted_totals(&self) -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for (i, d) in self.deleted.iter().enumerate() {
            if *d {
                n += 1;
                bytes += self.mbox.size(i);
            }
        }
        (n, bytes)
    }

    /// A protocol error: counted towards the bad-command limit.
    fn bad(&mut self, out: &mut dyn Write, text: &str) -> io::Result<Flow> {
        self.bad_in_a_row += 1;
        response::err(out, None, text)?;
        Ok(Flow::Continue)
    }

    /// The one check of a client's message number: counted from 1, in range, not deleted.
    fn msgno(&self, m: MsgNum) -> Result<usize, &'static str> {
        let i = m.0 as usize;
        if i == 0 {
            return Err("messages are counted from 1");
        }
        if i > self.deleted.len() {
            return Err("no such message");
        }
        if self.deleted[i - 1] {
            return Err("message is deleted");
        }
        Ok(i - 1)
    }

    fn handle_line(&mut self, line: &[u8], out: &mut Out<'_>) -> io::Result<Flow> {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => return self.bad(out, e.text()),
        };
        let flow = self.handle(cmd, out)?;
        Ok(flow)
    }

    /// One parsed command. Every command has its own arm, refused or served as
    /// [`transaction`] says.
    fn handle(&mut self, cmd: Command, out: &mut Out<'_>) -> io::Result<Flow> {
        let ok_cmd = |st: &mut Self| st.bad_in_a_row = 0;
        match cmd {
            Command::Stat => {
                ok_cmd(self);
                let (n, bytes) = self.live_totals();
                response::ok(out, &format!("{n} {bytes}"))?;
            }
            Command::List(Some(m)) => self.one_listing(m, false, out)?,
            Command::Uidl(Some(m)) => self.one_listing(m, true, out)?,
            Command::List(None) => {
                ok_cmd(self);
                let (n, bytes) = self.live_totals();
                response::ok(out, &format!("{n} messages ({bytes} octets)"))?;
                self.listing(out, |mb, i, o| writeln_crlf(o, i + 1, mb.size(i)))?;
            }
            Command::Uidl(None) => {
                ok_cmd(self);
                response::ok(out, "unique-id listing follows")?;
                self.listing(out, |mb, i, o| writeln_crlf(o, i + 1, mb.uidl(i)))?;
            }
            Command::Retr(m) => return self.retrieve(m, None, out),
            Command::Top(m, n) => return self.retrieve(m, Some(n), out),
            Command::Dele(m) => match self.msgno(m) {
                Ok(i) => {
                    ok_cmd(self);
                    self.deleted[i] = true;
                    self.last = self.last.max(i + 1);
                    response::ok(out, &format!("message {} deleted", i + 1))?;
                }
                Err(t) => response::err(out, None, t)?,
            },
            Command::Rset => {
                ok_cmd(self);
                self.deleted.iter_mut().for_each(|d| *d = false);
                self.last = 0;
                let (n, bytes) = self.live_totals();
                response::ok(out, &format!("maildrop has {n} messages ({bytes} octets)"))?;
            }
            Command::Noop => {
                ok_cmd(self);
                response::ok(out, "")?;
            }
            Command::Last => {
                ok_cmd(self);
                response::ok(out, &self.last.to_string())?;
            }
            Command::Capa => {
                ok_cmd(self);
                response::ok(out, "capability list follows")?;
                out.write_all(&self.capa)?;
            }
            Command::Quit => return Ok(Flow::End(self.quit(out)?)),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls => {
                return self.bad(out, "already authenticated");
            }
        }
        Ok(Flow::Continue)
    }

    fn one_listing(&mut self, m: MsgNum, uidl: bool, out: &mut dyn Write) -> io::Result<()> {
        match self.msgno(m) {
            Ok(i) => {
                self.bad_in_a_row = 0;
                if uidl {
                    response::ok(out, &format!("{} {}", i + 1, self.mbox.uidl(i)))
                } else {
                    response::ok(out, &format!("{} {}", i + 1, self.mbox.size(i)))
                }
            }
            Err(t) => response::err(out, None, t),
        }
    }

    fn live_totals(&self) -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for (i, d) in self.deleted.iter().enumerate() {
            if !*d {
                n += 1;
                bytes += self.mbox.size(i);
            }
        }
        (n, bytes)
    }

    /// Writes one line per live message, then the terminating `.`.
    fn listing(
        &self,
        out: &mut dyn Write,
        line: impl Fn(&dyn Mailbox, usize, &mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        for (i, d) in self.deleted.iter().enumerate() {
            if !*d {
                line(&*self.mbox, i, out)?;
            }
        }
        out.write_all(b".\r\n")
    }

    fn retrieve(&mut self, m: MsgNum, top: Option<u64>, out: &mut Out<'_>) -> io::Result<Flow> {
        let i = match self.msgno(m) {
            Ok(i) => i,
            Err(t) => {
                response::err(out, None, t)?;
                return Ok(Flow::Continue);
            }
        };
        self.bad_in_a_row = 0;
        let size = self.mbox.size(i);
        let status = match top {
            None => format!("+OK {size} octets\r\n"),
            Some(_) => "+OK top of message follows\r\n".to_string(),
        };
        let mut sink = Sink {
            stuffer: DotStuffer::new(out),
            status,
            wire_mark: None,
        };
        match self.mbox.retrieve(i, top, &mut sink) {
            Ok(()) => {
                if sink.wire_mark.is_some() {
                    // The wire form ends with CRLF or is empty: the terminator alone.
                    sink.stuffer.get_mut().write_all(b".\r\n")?;
                } else {
                    sink.stuffer.finish()?;
                }
                if top.is_none() {
                    self.last = self.last.max(i + 1);
                    if !self.retrieved[i] {
                        self.retrieved[i] = true;
                        self.retrieved_count += 1;
                    }
                    self.retrieved_bytes += size;
                }
                Ok(Flow::Continue)
            }
            Err(RetrieveError::BeforeStart(e)) => {
                if let Some(mark) = sink.wire_mark {
                    // The mailbox should have cancelled; never let a staged `+OK` out.
                    sink.cancel(mark);
                }
                let (code, text) = e.response();
                response::err(sink.stuffer.get_mut(), code, &text)?;
                Ok(Flow::Continue)
            }
            Err(RetrieveError::During(e)) => {
                // The client has part of a message and no way to tell; all we can do is end the
                // session without committing anything.
                Ok(Flow::End(EndReason::RetrieveFailed(e)))
            }
        }
    }

    /// The UPDATE state.
    fn quit(&mut self, out: &mut dyn Write) -> io::Result<EndReason> {
        let any_deleted = self.deleted.iter().any(|d| *d);
        let result = if any_deleted || self.retrieved.iter().any(|r| *r) {
            self.mbox.commit(&self.deleted, &self.retrieved)
        } else {
            Ok(Default::default())
        };
        match result {
            Ok(_) => {
                let (n, _) = self.live_totals();
                response::ok(out, &format!("popspool signing off ({n} messages left)"))?;
                Ok(EndReason::Quit)
            }
            Err(e) => {
                let (code, text) = e.response();
                let code = code.or(Some(RespCode::SysTemp));
                response::err(out, code, &format!("{text}; no messages were deleted"))?;
                Ok(EndReason::CommitFailed(e))
            }
        }
    }
}

fn writeln_crlf(out: &mut dyn Write, n: usize, v: impl fmt::Display) -> io::Result<()> {
    write!(out, "{n} {v}\r\n")
}

/// The TRANSACTION state's command table: every verb and what this state does with it. The
/// AUTHORIZATION state's verbs are answered "already authenticated".
pub fn transaction(verb: Verb) -> Row {
    match verb {
        Verb::Stat | Verb::List | Verb::Retr | Verb::Dele | Verb::Rset => Row::Serves,
        Verb::Top | Verb::Uidl | Verb::Last => Row::Serves,
        Verb::Capa | Verb::Quit | Verb::Noop => Row::Serves,
        Verb::User | Verb::Pass | Verb::Apop | Verb::Auth | Verb::Stls => {
            Row::Refuses { advertised: false }
        }
    }
}

/// The TRANSACTION state's capabilities (RFC 2449), with the `.` terminator, made from
/// [`transaction`].
pub fn capa_listing(cfg: &SessionConfig) -> Vec<u8> {
    let policy = spool_wire::pop3::policy::Policy {
        expire: cfg.expire,
        login_delay: cfg.login_delay,
    };
    let state = [capa::RESP_CODES, capa::PIPELINING];
    capa::listing(transaction, &state, &policy).into_bytes()
}

#[cfg(test)]
mod tests;
