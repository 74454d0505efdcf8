//! A usage error of a program in the login chain never writes to stderr unless asked: under
//! inetd fd 2 is the client's socket. The exit codes stay the interface's.

use popspool_tests::bin;
use std::process::{Command, Stdio};

#[test]
fn usage_errors_stay_off_a_socket_stderr() {
    for (prog, code) in [
        ("pop-serve", 100),
        ("pop-popup", 100),
        ("pop-checkpassword", 2),
        ("pop-route", 100),
    ] {
        let out = Command::new(bin(prog))
            .arg("--no-such-option")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{prog}");
        assert!(
            out.stderr.is_empty(),
            "{prog} wrote to stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{prog} wrote to stdout");

        let out = Command::new(bin(prog))
            .args(["--log", "stderr", "--no-such-option"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{prog} --log stderr");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--no-such-option"),
            "{prog}: with --log stderr the usage error is shown"
        );
    }
}
