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
    let revision = git_revision(Path::new(&manifest_dir));
    println!("cargo::rustc-env=HOOKWALL_GIT_REVISION={revision}");
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

/// The revision for `hookwall --version`: `HOOKWALL_GIT_REVISION` if set (a packager building
/// from a tarball), else the checkout's HEAD commit, else `unknown`. The build script runs again
/// when HEAD or the branch it names moves, so a commit never leaves an older revision behind.
/// Uncommitted edits are not marked: the script does not run again for them.
fn git_revision(manifest_dir: &Path) -> String {
    println!("cargo::rerun-if-env-changed=HOOKWALL_GIT_REVISION");
    if let Ok(revision) = std::env::var("HOOKWALL_GIT_REVISION") {
        return revision;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(manifest_dir)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut watched = vec!["HEAD".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    watched.push("packed-refs".to_owned());
    for file in watched {
        // A path that does not exist would make cargo run the script on every build.
        if let Some(path) = git(&["rev-parse", "--git-path", &file])
            .map(|path| manifest_dir.join(path))
            .filter(|path| path.exists())
        {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}
