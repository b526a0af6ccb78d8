//! Fuzz target `tcp_banner`: see `netmon::fuzzing::tcp_banner` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::tcp_banner(data));
