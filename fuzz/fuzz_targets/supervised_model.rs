#![no_main]
//! Fuzz target `supervised_model`: see [`netanom_fuzz::supervised_model`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::supervised_model(data));
