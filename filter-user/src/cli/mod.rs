//! The command line's output.

pub mod check;
