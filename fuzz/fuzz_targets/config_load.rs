//! Fuzz target `config_load`: see `netmon::fuzzing::config_load` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::config_load(data));
