//! `hookwall detach`: what was taken off which interface, and how many pins were removed.

use anyhow::Context as _;

use crate::filter::{self, Pins};

/// Detaches the filter pinned under `pins` and prints what was done.
///
/// # Errors
/// If a link or pin could not be removed.
pub fn main(pins: &Pins) -> anyhow::Result<()> {
    let report = filter::detach(pins).with_context(|| {
        format!(
            "detaching the filter pinned under {}",
            pins.root().display()
        )
    })?;
    if report.links.is_empty() && report.pins_removed == 0 {
        println!(
            "nothing pinned under {}; nothing to do",
            pins.root().display()
        );
    }
    for (iface, mode) in &report.links {
        println!("detached from {iface} ({})", mode.as_str());
    }
    if report.pins_removed > 0 {
        println!(
            "removed {} pins under {}",
            report.pins_removed,
            pins.root().display()
        );
    }
    Ok(())
}
