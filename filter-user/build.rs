//! Builds the XDP programs of `filter-ebpf` for the BPF target with the pinned nightly (see
//! docs/development.md, "Toolchain pins") and leaves the objects in OUT_DIR for
//! `include_bytes_aligned!`.
use std::path::Path;

use anyhow::Context as _;

/// The nightly that matches bpf-linker's LLVM; `cargo xtask setup` installs it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../filter-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("finding the eBPF crate at {}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir.to_str().context("eBPF crate path is not UTF-8")?;
    println!("cargo::rerun-if-changed=../filter-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "filter-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
    .context("building the XDP program (run `cargo xtask setup` if the eBPF toolchain is missing)")
}
