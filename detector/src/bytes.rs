//! Byte estimates of the tables that hold per-host state, from their capacities (`netanom_schemas::bytes`, shared
//! with the other services' bounded tables). The host map (`crate::state`) adds them up against its memory budget.

pub use netanom_schemas::bytes::{table_bytes, vec_bytes};
