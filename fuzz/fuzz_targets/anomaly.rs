#![no_main]
//! Fuzz target `anomaly`: see [`netanom_fuzz::anomaly`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::anomaly(data));
