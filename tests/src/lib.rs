//! Support for hookwall end-to-end tests.
