//! Fuzz target `echo_wire`: see `netmon::fuzzing::echo_wire` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::echo_wire(data));
