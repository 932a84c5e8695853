//! The commands' output: what `hookwall check`, `status`, `queue`, `presets` and `detach` print.

pub mod check;
pub mod detach;
pub mod presets;
pub mod queue;
pub mod status;
