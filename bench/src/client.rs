//! The POP3 client of the bench: runs one server process on a pipe pair, pipelines a whole
//! session's commands from a writer thread, and parses the replies over big buffers with
//! memchr/memmem (never line by line for message bodies), then reaps the server with `wait4`
//! for its peak RSS.

use crate::spawn;
use memchr::memmem;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Initial reply buffer; grows only if one reply is larger.
const READ_BUF: usize = 4 << 20;
/// Read size per `read` call.
const READ_CHUNK: usize = 1 << 20;

/// What one pipelined command's reply looks like and what to record from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A one-line reply (greeting, DELE, QUIT).
    Line,
    /// STAT: `+OK count size`.
    Stat,
    /// LIST: multi-line `n size`.
    List,
    /// UIDL: multi-line `n uid`.
    Uidl,
    /// RETR: multi-line message, counted un-stuffed.
    Retr,
    /// TOP: multi-line, counted.
    Top,
}

/// A session to run: the bytes to send and the replies expected, in order.
#[derive(Default)]
pub struct Script {
    pub send: Vec<u8>,
    pub expect: Vec<Reply>,
}

impl Script {
    pub fn cmd(&mut self, line: &str, reply: Reply) {
        self.send.extend_from_slice(line.as_bytes());
        self.send.extend_from_slice(b"\r\n");
        self.expect.push(reply);
    }
}

/// What came back.
#[derive(Default, Debug)]
pub struct Outcome {
    pub wall: Duration,
    /// Peak RSS of the server process, bytes.
    pub max_rss: u64,
    pub exit_status: i32,
    pub stat: Option<(u64, u64)>,
    pub list: Vec<u64>,
    pub uidl_count: usize,
    pub uidl_unique: bool,
    pub retr_sizes: Vec<u64>,
    pub top_count: usize,
    /// Problems: -ERR replies, malformed or missing replies, trailing garbage.
    pub errors: Vec<String>,
}

/// How to start a server process.
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Switch to this (uid, gid) with no supplementary groups before exec.
    pub drop_to: Option<(u32, u32)>,
    /// Where the server's stderr goes.
    pub stderr: File,
}

/// Spawns `launch`, runs `script`, reaps the process. The wall time is from just before the
/// fork to the reaping, so process start-up and the UPDATE state's work at QUIT count.
pub fn run(launch: &Launch, script: &Script) -> io::Result<Outcome> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a live array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two fds and nothing else owns them.
    let (mut report_r, report_w) =
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let id = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(spawn::SPAWN_ARG)
        .arg(id(launch.drop_to.map(|d| d.0)))
        .arg(id(launch.drop_to.map(|d| d.1)))
        .arg(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(launch.stderr.try_clone()?);
    let w = report_w.as_raw_fd();
    // SAFETY: between fork and exec only dup2, an async-signal-safe system call, runs.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w, spawn::REPORT_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(report_w);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let send = script.send.clone();
    let writer = std::thread::spawn(move || {
        // A server that quits early closes its end: EPIPE is not the bench's error.
        let _ = stdin.write_all(&send);
    });
    let mut parser = Parser::new(&script.expect);
    let mut read_err = None;
    loop {
        parser.reserve();
        let filled = parser.filled;
        let end = (filled + READ_CHUNK).min(parser.buf.len());
        match stdout.read(&mut parser.buf[filled..end]) {
            Ok(0) => break,
            Ok(n) => {
                parser.filled += n;
                parser.parse();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_err = Some(e);
                break;
            }
        }
    }
    drop(stdout);
    let _ = writer.join();
    child.wait()?;
    let mut report = String::new();
    report_r.read_to_string(&mut report)?;
    let fields: Vec<u64> = report
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let &[ns, rss_kb, status] = &fields[..] else {
        return Err(io::Error::other(format!(
            "spawner failed (report {report:?})"
        )));
    };
    let mut out = parser.finish();
    if let Some(e) = read_err {
        out.errors.push(format!("read error: {e}"));
    }
    out.wall = Duration::from_nanos(ns);
    out.max_rss = rss_kb * 1024;
    out.exit_status = status as i32;
    Ok(out)
}

struct Parser {
    expect: VecDeque<Reply>,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Where the search for the current multi-line reply's terminator may resume.
    scan_from: usize,
    replies: usize,
    terminator: memmem::Finder<'static>,
    stuffed: memmem::Finder<'static>,
    uidls: HashSet<Vec<u8>>,
    out: Outcome,
}

impl Parser {
    fn new(expect: &[Reply]) -> Self {
        Parser {
            expect: expect.iter().copied().collect(),
            buf: vec![0; READ_BUF],
            start: 0,
            filled: 0,
            scan_from: 0,
            replies: 0,
            terminator: memmem::Finder::new(b"\r\n.\r\n"),
            stuffed: memmem::Finder::new(b"\n.."),
            uidls: HashSet::new(),
            out: Outcome {
                uidl_unique: true,
                ..Outcome::default()
            },
        }
    }

    /// Makes room for a read: moves the unparsed tail to the front, or grows the buffer
    /// when one reply fills it.
    fn reserve(&mut self) {
        if self.buf.len() - self.filled >= READ_CHUNK {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.scan_from -= self.start.min(self.scan_from);
            self.start = 0;
        }
        if self.buf.len() - self.filled < READ_CHUNK {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
    }

    fn parse(&mut self) {
        while let Some(&kind) = self.expect.front() {
            let data = &self.buf[self.start..self.filled];
            let Some(nl) = memchr::memchr(b'\n', data) else {
                return;
            };
            let line = &data[..nl + 1];
            if !line.starts_with(b"+OK") {
                let text = String::from_utf8_lossy(line).trim_end().to_string();
                self.out
                    .errors
                    .push(format!("reply {} ({kind:?}): {text}", self.replies));
                self.expect.pop_front();
                self.replies += 1;
                self.start += nl + 1;
                self.scan_from = self.start;
                continue;
            }
            if !line.ends_with(b"\r\n") {
                self.out
                    .errors
                    .push(format!("reply {}: status line without CRLF", self.replies));
            }
            let status_end = self.start + nl + 1;
            let end;
            match kind {
                Reply::Line => end = status_end,
                Reply::Stat => {
                    let mut it = line[3..]
                        .split(|c| c.is_ascii_whitespace())
                        .filter(|w| !w.is_empty())
                        .map(|w| std::str::from_utf8(w).ok().and_then(|s| s.parse().ok()));
                    match (it.next().flatten(), it.next().flatten()) {
                        (Some(n), Some(s)) => self.out.stat = Some((n, s)),
                        _ => self.out.errors.push("malformed STAT reply".into()),
                    }
                    end = status_end;
                }
                Reply::List | Reply::Uidl | Reply::Retr | Reply::Top => {
                    // The status line's CRLF starts the search, so an empty body (".\r\n"
                    // right after it) is found too.
                    let from = self.scan_from.max(status_end - 2);
                    let Some(t) = self.terminator.find(&self.buf[from..self.filled]) else {
                        self.scan_from = self.filled.saturating_sub(4).max(status_end - 2);
                        return;
                    };
                    let t = from + t;
                    let body_end = t + 2;
                    let body = &self.buf[status_end.min(body_end)..body_end];
                    match kind {
                        Reply::Retr => {
                            let stuffed = self
                                .stuffed
                                .find_iter(&self.buf[status_end - 1..body_end])
                                .count();
                            self.out.retr_sizes.push((body.len() - stuffed) as u64);
                        }
                        Reply::Top => self.out.top_count += 1,
                        Reply::List => {
                            for l in body.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                                let size = l
                                    .split(|&c| c == b' ')
                                    .nth(1)
                                    .and_then(|w| std::str::from_utf8(w).ok())
                                    .and_then(|w| w.trim_end().parse().ok());
                                match size {
                                    Some(s) => self.out.list.push(s),
                                    None => {
                                        self.out.errors.push("malformed LIST line".into());
                                    }
                                }
                            }
                        }
                        Reply::Uidl => {
                            for l in body.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                                let uid = l.split(|&c| c == b' ').nth(1).unwrap_or(b"");
                                let uid = uid.strip_suffix(b"\r").unwrap_or(uid);
                                self.out.uidl_count += 1;
                                if uid.is_empty() || !self.uidls.insert(uid.to_vec()) {
                                    self.out.uidl_unique = false;
                                }
                            }
                        }
                        _ => unreachable!(),
                    }
                    end = t + 5;
                }
            }
            self.expect.pop_front();
            self.replies += 1;
            self.start = end;
            self.scan_from = end;
        }
        if self.start < self.filled {
            self.out.errors.push(format!(
                "{} bytes after the last expected reply",
                self.filled - self.start
            ));
            self.start = self.filled;
        }
    }

    fn finish(mut self) -> Outcome {
        if !self.expect.is_empty() {
            self.out.errors.push(format!(
                "connection closed with {} replies missing (next: {:?})",
                self.expect.len(),
                self.expect.front()
            ));
        }
        self.out
    }
}
