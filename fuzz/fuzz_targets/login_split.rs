//! See `spool_fuzz_targets::login_split` for the input format and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool_fuzz_targets::login_split::run(data));
