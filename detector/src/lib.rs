//! netanom detector.
