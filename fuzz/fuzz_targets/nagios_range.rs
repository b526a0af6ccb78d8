//! Fuzz target `nagios_range`: see `netmon::fuzzing::nagios_range` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::nagios_range(data));
