//! See `spool_fuzz_targets::auth_http` for the input format and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool_fuzz_targets::auth_http::run(data));
