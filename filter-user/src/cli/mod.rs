//! The commands' output: what `hookwall check`, `status`, `queue`, `presets` and `detach` print, and
//! where `status` and `detach` find the pins.

pub mod check;
pub mod detach;
pub mod pins;
pub mod presets;
pub mod queue;
pub mod status;
