//! Fuzz target `dns_response`: see `netmon::fuzzing::dns_response` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::dns_response(data));
