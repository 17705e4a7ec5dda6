#![no_main]
//! Fuzz target `config`: see [`netanom_fuzz::config`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::config(data));
