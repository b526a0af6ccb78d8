//! Fuzz target `http_redirect`: see `netmon::fuzzing::http_redirect` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::http_redirect(data));
