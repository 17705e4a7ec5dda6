#![no_main]
//! Fuzz target `capture_file`: see [`netanom_fuzz::capture_file`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::capture_file(data));
