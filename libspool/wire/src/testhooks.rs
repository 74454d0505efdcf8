//! Test-only hooks that show from outside what a confined process may reach; compiled into
//! debug builds alone (release builds have none). A program calls [`run`] right after it
//! confines itself: `POPSPOOL_TEST_OPEN=PATH[:PATH...]` opens each PATH for reading and
//! `POPSPOOL_TEST_EXEC=PATH` runs PATH; each logs `test-open PATH: ok` or
//! `test-exec PATH: errno N (...)`.

use crate::log::{Level, Logger};

/// Runs the hooks the environment asks for, logging each outcome.
pub fn run(log: &Logger) {
    if let Some(list) = std::env::var_os("POPSPOOL_TEST_OPEN") {
        for p in std::env::split_paths(&list) {
            let r = std::fs::File::open(&p).map(drop);
            report(log, "test-open", p.as_os_str(), r);
        }
    }
    if let Some(p) = std::env::var_os("POPSPOOL_TEST_EXEC") {
        // Pipes, not /dev/null: opening /dev/null may be refused too, and would hide whether
        // the exec itself is.
        let r = std::process::Command::new(&p)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .map(drop);
        report(log, "test-exec", &p, r);
    }
}

fn report(log: &Logger, what: &str, p: &std::ffi::OsStr, r: std::io::Result<()>) {
    let outcome = match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("errno {} ({e})", e.raw_os_error().unwrap_or(0)),
    };
    log.log(
        Level::Info,
        &format!("{what} {}: {outcome}", p.to_string_lossy()),
    );
}
