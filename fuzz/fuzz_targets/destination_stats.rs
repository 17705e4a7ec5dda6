#![no_main]
//! Fuzz target `destination_stats`: see [`netanom_fuzz::destination_stats`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::destination_stats(data));
