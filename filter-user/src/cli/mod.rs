pub mod detach;
pub mod presets;
pub mod queue;
pub mod status;
