//! Reading what the debug-only hooks of `spool_wire::testhooks` logged: whether the sandbox
//! let a confined program open or exec a path.

use std::path::Path;

/// How a hook line reports a refusal by the sandbox.
pub const EACCES: &str = "errno 13 ";

/// True when the running kernel has Landlock enabled (it answers the ABI version query).
pub fn kernel_has_landlock() -> bool {
    spool_wire::sandbox::kernel_abi() >= 1
}

/// The line the hook logged for `what` (`test-open` or `test-exec`) and `path`.
pub fn hook_line<'a>(log: &'a str, what: &str, path: &Path) -> &'a str {
    let want = format!("{what} {}: ", path.display());
    log.lines()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("no {want:?} in the log:\n{log}"))
}

/// The hook's `what` of `path` was refused with EACCES.
pub fn assert_denied(log: &str, what: &str, path: &Path) {
    let line = hook_line(log, what, path);
    assert!(line.contains(EACCES), "{path:?} not refused: {line}");
}

/// The hook's `what` of `path` succeeded.
pub fn assert_allowed(log: &str, what: &str, path: &Path) {
    let line = hook_line(log, what, path);
    assert!(line.ends_with(": ok"), "{path:?} refused: {line}");
}
