#![no_main]
//! Fuzz target `confluent_frame`: see [`netanom_fuzz::confluent_frame`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::confluent_frame(data));
