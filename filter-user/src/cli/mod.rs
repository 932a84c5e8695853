pub mod detach;
pub mod presets;
pub mod queue;
