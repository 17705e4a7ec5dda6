//! The `netanom` umbrella binary as a library: configuration layering, the command line, and the orchestration
//! of `netanom run` (all three roles in one process on an embedded broker). The roles themselves live in the
//! `netanom-producer`, `netanom-detector` and `netanom-alert-router` crates; this crate only wires them.

pub mod cli;
pub mod config;
pub mod eval;
pub mod evaluate;
pub mod labels;
pub mod registry;
pub mod replay;
pub mod report;
pub mod run;
pub mod summary;
pub mod supervised;
pub mod telemetry;
pub mod traffic;
