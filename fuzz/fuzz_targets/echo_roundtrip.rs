//! Fuzz target `echo_roundtrip`: see `netmon::fuzzing::echo_roundtrip` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::echo_roundtrip(data));
