#![no_main]
//! Fuzz target `frame`: see [`netanom_fuzz::frame`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::frame(data));
