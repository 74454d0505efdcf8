//! A minimal, strict POP3 client for scripted sessions against the real binaries, over pipes
//! (a child process) or a TCP connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One side of a POP3 conversation: reads CRLF lines and multi-line bodies, writes commands.
pub struct Client<R: Read, W: Write> {
    pub r: BufReader<R>,
    pub w: W,
}

impl<R: Read, W: Write> Client<R, W> {
    pub fn new(r: R, w: W) -> Self {
        Client {
            r: BufReader::new(r),
            w,
        }
    }

    /// One status line, CRLF stripped; panics on EOF or a bare LF ending.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.r.read_until(b'\n', &mut buf).expect("read");
        assert!(
            buf.ends_with(b"\r\n"),
            "response not CRLF-terminated: {buf:?}"
        );
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("status line is UTF-8")
    }

    /// Sends one command line.
    pub fn send(&mut self, cmd: &str) {
        self.w.write_all(cmd.as_bytes()).unwrap();
        self.w.write_all(b"\r\n").unwrap();
        self.w.flush().unwrap();
    }

    /// Sends a command and returns its status line.
    pub fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.line()
    }

    /// Reads a multi-line body up to the `.` line; returns the raw (still stuffed) bytes.
    pub fn body_raw(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = self.r.read_until(b'\n', &mut buf).expect("read");
            assert!(n > 0, "EOF inside a multi-line response");
            assert!(
                buf.ends_with(b"\r\n"),
                "body line without CRLF: {:?}",
                String::from_utf8_lossy(&buf)
            );
            if buf == b".\r\n" {
                return out;
            }
            out.extend_from_slice(&buf);
        }
    }

    /// A multi-line body, un-stuffed.
    pub fn body(&mut self) -> Vec<u8> {
        crate::gen::unstuff(&self.body_raw())
    }

    /// A multi-line listing as lines.
    pub fn listing(&mut self) -> Vec<String> {
        String::from_utf8(self.body())
            .unwrap()
            .lines()
            .map(|l| l.to_string())
            .collect()
    }

    /// Reads until EOF, returning what came.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.r.read_to_end(&mut v);
        v
    }
}

/// A pop-serve child on pipes.
pub struct Served {
    pub child: Child,
    pub client: Client<std::process::ChildStdout, std::process::ChildStdin>,
}

impl Served {
    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(crate::bin("pop-serve"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pop-serve");
        let client = Client::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        Served { child, client }
    }

    /// Waits for the child to end (bounded), returning its exit code and stderr.
    pub fn finish(mut self) -> (i32, String) {
        drop(self.client);
        for _ in 0..600 {
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (st.code().unwrap_or(-1), err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("pop-serve did not exit");
    }
}
