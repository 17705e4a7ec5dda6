//! netanom alert-router.
