//! The calls of `pop-deliver` that cannot be safe: installing signal handlers (`sigaction`),
//! kept here so every other module can forbid `unsafe`.

extern "C" fn on_signal(_sig: libc::c_int) {
    spool_store::lock::request_stop();
}

/// For `pop-deliver`'s main: SIGTERM, SIGINT, SIGHUP and SIGALRM (MTA timeouts) set a flag
/// that makes the delivery stop and truncate back instead of dying mid-append, or give up a
/// lock wait at once; they do not restart reads, so a blocked read of stdin notices at once. SIGXFSZ is ignored so that
/// exceeding RLIMIT_FSIZE is an `EFBIG` error (truncated back, temporary failure) rather than
/// death with a partial message; SIGPIPE is ignored as well.
pub fn install_signal_handlers() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let stop = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGALRM,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &stop) }?;
    }
    for sig in [Signal::SIGXFSZ, Signal::SIGPIPE] {
        // SAFETY: ignoring a signal installs no code.
        unsafe { sigaction(sig, &ignore) }?;
    }
    Ok(())
}
