//! Test-only hooks that show from outside what a confined process may reach; compiled into
//! debug builds alone (release builds have none). A program calls [`run`] right after it
//! confines itself: `POPSPOOL_TEST_OPEN=PATH[:PATH...]` opens each PATH for reading and
//! `POPSPOOL_TEST_EXEC=PATH` runs PATH; each logs `test-open PATH: ok` or
//! `test-exec PATH: errno N (...)`; `POPSPOOL_TEST_SELF=1` logs the process's own state, by
//! system calls alone (a confined process may not read /proc):
//! `test-self uid=U nnp=0|1 nofile=N capeff=0x.. capprm=0x..`; `POPSPOOL_TEST_NNP` (any value)
//! logs `test-no-new-privs: 0|1` and `test-nofile: SOFT HARD` (`RLIMIT_NOFILE`), for a program
//! too short-lived to be seen in /proc. [`parsed`] marks where a program parses untrusted
//! input: with `POPSPOOL_TEST_SELF=1` it logs `test-parsed WHAT by test-self ...`, the state
//! of the process that did.

use crate::log::{Level, Logger};

/// Runs the hooks the environment asks for, logging each outcome.
pub fn run(log: &Logger) {
    if std::env::var_os("POPSPOOL_TEST_SELF").is_some() {
        log.log(Level::Info, &self_state());
    }
    if std::env::var_os("POPSPOOL_TEST_NNP").is_some() {
        let v = u8::from(crate::sandbox::has_no_new_privs());
        log.log(Level::Info, &format!("test-no-new-privs: {v}"));
        if let Ok((soft, hard)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            log.log(Level::Info, &format!("test-nofile: {soft} {hard}"));
        }
    }
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

/// With `POPSPOOL_TEST_SELF` set, logs that this process parsed `what`, and its state.
pub fn parsed(log: &Logger, what: &str) {
    if std::env::var_os("POPSPOOL_TEST_SELF").is_some() {
        log.log(
            Level::Info,
            &format!("test-parsed {what} by {}", self_state()),
        );
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

/// uid, no_new_privs, RLIMIT_NOFILE and the Effective and Permitted capability masks.
pub fn self_state() -> String {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget writes two `Data` records (version 3) into `d`, which has room for them.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    let (eff, prm) = if r == 0 {
        (
            u64::from(d[0].effective) | (u64::from(d[1].effective) << 32),
            u64::from(d[0].permitted) | (u64::from(d[1].permitted) << 32),
        )
    } else {
        (u64::MAX, u64::MAX)
    };
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    format!(
        "test-self uid={} nnp={} nofile={nofile} capeff={eff:#x} capprm={prm:#x}",
        nix::unistd::getuid(),
        u8::from(crate::sandbox::has_no_new_privs()),
    )
}
