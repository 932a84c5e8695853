//! The commands' output: what `hookwall check`, `status`, `queue`, `presets`, `allow` and `detach` print, and
//! where `status` and `detach` find the pins; what their exit statuses mean; their completion
//! scripts and man pages.

pub mod allow;
pub mod check;
pub mod detach;
pub mod exit;
pub mod generate;
pub mod pins;
pub mod presets;
pub mod queue;
pub mod status;
pub mod upgrade;
