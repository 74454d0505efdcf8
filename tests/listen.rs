//! Starting a chain of programs on a loopback port under a real launcher, as a site would:
//! `tcpserver` (ucspi-tcp) or `systemd-socket-activate --inetd` (what a socket unit with
//! `Accept=yes` does).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Launcher {
    Tcpserver,
    SocketActivate,
    /// xinetd with a private configuration (`type = UNLISTED` on our port), as root: the
    /// service runs as `user = root` like the one in scripts/inetd/xinetd.pop3.
    Xinetd,
}

/// A running launcher; killed on drop.
pub struct Listener {
    child: Child,
    pub port: u16,
    _config: Option<tempfile::TempDir>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `argv` per connection on a free port of 127.0.0.1 and waits until a connection gets
/// a greeting. None (with a SKIPPED line) when the launcher is not installed.
pub fn start(how: Launcher, argv: &[String], stderr: Stdio) -> Option<Listener> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = None;
    let mut cmd = match how {
        Launcher::Tcpserver => {
            let Some(t) = crate::which("tcpserver") else {
                crate::skip(
                    "tests under tcpserver",
                    "tcpserver not installed (Debian package ucspi-tcp)",
                );
                return None;
            };
            let mut c = Command::new(t);
            c.args([
                "-q",
                "-R",
                "-H",
                "-l",
                "localhost",
                "127.0.0.1",
                &port.to_string(),
            ]);
            c
        }
        Launcher::SocketActivate => {
            let Some(t) = crate::which("systemd-socket-activate") else {
                crate::skip(
                    "tests under systemd-socket-activate",
                    "not installed (Debian package systemd)",
                );
                return None;
            };
            let mut c = Command::new(t);
            c.args(["--inetd", "-a", "-l", &format!("127.0.0.1:{port}")]);
            c
        }
        Launcher::Xinetd => {
            let Some(t) = crate::which("xinetd").or_else(|| {
                let p = std::path::PathBuf::from("/usr/sbin/xinetd");
                p.is_file().then_some(p)
            }) else {
                crate::skip(
                    "tests under xinetd",
                    "xinetd not installed (Debian package xinetd)",
                );
                return None;
            };
            if !crate::is_root() {
                crate::skip(
                    "tests under xinetd",
                    "needs root (the service runs as user root)",
                );
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("xinetd.conf");
            let service = format!(
                "service popspool-test\n{{\n\ttype = UNLISTED\n\tport = {port}\n\tbind = 127.0.0.1\n\
                 \tsocket_type = stream\n\tprotocol = tcp\n\twait = no\n\tuser = root\n\
                 \tserver = {}\n\tserver_args = {}\n\tinstances = 16\n}}\n",
                argv[0],
                argv[1..].join(" ")
            );
            std::fs::write(&conf, service).unwrap();
            let mut c = Command::new(t);
            c.arg("-dontfork")
                .arg("-f")
                .arg(&conf)
                .arg("-pidfile")
                .arg(dir.path().join("pid"));
            config = Some(dir);
            c
        }
    };
    if !matches!(how, Launcher::Xinetd) {
        cmd.args(argv);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let child = cmd.spawn().expect("start the launcher");
    let listener = Listener {
        child,
        port,
        _config: config,
    };
    // A connection that closes without a word is retried until the deadline: on a loaded
    // machine it was seen once (an empty read right after start-up), and the question here is
    // only whether the launcher answers at all.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            let mut b = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let n = s.read(&mut b).unwrap_or(0);
            if b[..n].starts_with(b"+OK") {
                return Some(listener);
            }
            last = String::from_utf8_lossy(&b[..n]).into_owned();
            assert!(n == 0, "greeting: {last:?}");
        }
        assert!(
            Instant::now() < deadline,
            "listener did not come up (last greeting {last:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
