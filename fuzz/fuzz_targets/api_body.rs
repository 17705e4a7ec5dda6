#![no_main]
//! Fuzz target `api_body`: see [`netanom_fuzz::api_body`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::api_body(data));
