//! Fuzz target `stamp_wire`: see `netmon::fuzzing::stamp_wire` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::stamp_wire(data));
