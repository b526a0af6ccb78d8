//! Fuzz target `udp_expect`: see `netmon::fuzzing::udp_expect` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::udp_expect(data));
