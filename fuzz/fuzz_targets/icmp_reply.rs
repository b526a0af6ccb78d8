//! Fuzz target `icmp_reply`: see `netmon::fuzzing::icmp_reply` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::icmp_reply(data));
