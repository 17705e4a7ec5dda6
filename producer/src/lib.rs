//! netanom producer.
