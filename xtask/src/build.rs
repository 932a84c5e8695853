//! `cargo xtask build`: setup, then the binaries.
//!
//! The eBPF object needs no step of its own: `filter-user/build.rs` builds it with the pinned
//! nightly and embeds it in `hookwall`.
use anyhow::{Context as _, Result};

use crate::{cargo, run_cmd, setup};

/// Sets up, then builds `hookwall` and the binaries of `hookwall-tests` (the bench).
pub fn build(release: bool) -> Result<()> {
    setup::setup()?;
    build_bins(release)
}

/// Builds the binaries without running setup first; for commands that already did.
pub fn build_bins(release: bool) -> Result<()> {
    let profile = if release { "release" } else { "debug" };
    println!("==> build ({profile})");
    let mut cmd = cargo();
    cmd.arg("build");
    if release {
        cmd.arg("--release");
    }
    cmd.args(["-p", "hookwall", "-p", "hookwall-tests", "--bins"]);
    run_cmd(&mut cmd).with_context(|| format!("building the {profile} binaries"))
}
