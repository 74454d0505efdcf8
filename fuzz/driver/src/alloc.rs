//! A global allocator that turns one oversized allocation into a finding: arbitrary bytes
//! must never make a parser ask for memory out of proportion to its input. The check has to
//! act inside the allocator (an allocation that large may fail and abort before any panic
//! could be caught), so it writes the current input with plain system calls and exits.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Largest single allocation a target may make: inputs are at most 16 KiB, and the biggest
/// fixed buffer in the code is the scanner's 1 MiB read.
pub const MAX_ALLOC: usize = 64 << 20;

pub struct Capped;

static INPUT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static SAVE_AS: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Where the next oversized allocation saves its input (set once per target).
pub fn save_as(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    let old = SAVE_AS.swap(c.into_raw(), Ordering::SeqCst);
    if !old.is_null() {
        // SAFETY: `old` came from `CString::into_raw` above and is no longer published.
        drop(unsafe { CString::from_raw(old) });
    }
}

/// The input being run (cleared with an empty slice).
pub fn current(input: &[u8]) {
    INPUT_LEN.store(0, Ordering::SeqCst);
    INPUT.store(input.as_ptr().cast_mut(), Ordering::SeqCst);
    INPUT_LEN.store(input.len(), Ordering::SeqCst);
}

fn report() -> ! {
    let msg = b"spool-fuzz: oversized allocation; input saved as the target's oversize-alloc\n";
    // SAFETY: plain system calls on buffers that stay valid: the message, the current input
    // (set by `current` from a slice the driver holds across the run) and a leaked CString.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        let path = SAVE_AS.load(Ordering::SeqCst);
        let (p, n) = (
            INPUT.load(Ordering::SeqCst),
            INPUT_LEN.load(Ordering::SeqCst),
        );
        if !path.is_null() && !p.is_null() {
            let fd = libc::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
            if fd >= 0 {
                libc::write(fd, p.cast(), n);
                libc::close(fd);
            }
        }
        libc::_exit(1)
    }
}

// SAFETY: every call is passed to `System` unchanged, except that one oversized request
// ends the process instead.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC && !REPORTING.swap(true, Ordering::SeqCst) {
            report();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC && !REPORTING.swap(true, Ordering::SeqCst) {
            report();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC && !REPORTING.swap(true, Ordering::SeqCst) {
            report();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
