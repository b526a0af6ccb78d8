//! Fuzz target `http_response`: see `netmon::fuzzing::http_response` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::http_response(data));
