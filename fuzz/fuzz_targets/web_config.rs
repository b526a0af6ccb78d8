//! Fuzz target `web_config`: see `netmon::fuzzing::web_config` for the input format and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netmon::fuzzing::web_config(data));
