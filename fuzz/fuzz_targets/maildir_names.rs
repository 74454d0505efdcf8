//! See `spool_fuzz_targets::maildir_names` for the input format and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool_fuzz_targets::maildir_names::run(data));
