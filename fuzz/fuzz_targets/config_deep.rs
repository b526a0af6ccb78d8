//! Fuzz target `config_deep`: see `netmon::fuzzing::config_deep` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::config_deep(data));
