//! See `spool_fuzz_targets::proxy_header` for the input format and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool_fuzz_targets::proxy_header::run(data));
