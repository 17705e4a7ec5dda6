#![no_main]
//! Fuzz target `forest_model`: see [`netanom_fuzz::forest_model`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::forest_model(data));
