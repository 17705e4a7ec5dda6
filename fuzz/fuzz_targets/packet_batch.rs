#![no_main]
//! Fuzz target `packet_batch`: see [`netanom_fuzz::packet_batch`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| netanom_fuzz::packet_batch(data));
