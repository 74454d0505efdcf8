//! See `spool_fuzz_targets::command_parse` for the input format and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool_fuzz_targets::command_parse::run(data));
