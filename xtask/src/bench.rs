//! `cargo xtask bench`: runs one benchmark binary of `hookwall-tests`.
use anyhow::{Context as _, Result};
use clap::ValueEnum;

use crate::{cargo, run_cmd, setup, target_dir};

/// The benchmarks the `bench` binary of `hookwall-tests` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKind {
    /// The XDP program on crafted packets (BPF_PROG_TEST_RUN; needs root).
    Filter,
    /// The daemon's HTTP callback endpoint.
    Http,
    /// Delivery of accepted callbacks.
    Delivery,
    /// A SYN flood over a veth: hookwall against nftables and iptables with ipset.
    Flood,
}

impl BenchKind {
    /// The name the bench binary takes as its first argument.
    pub fn name(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Http => "http",
            Self::Delivery => "delivery",
            Self::Flood => "flood",
        }
    }
}

/// Sets up, then runs `bench <which> ARGS` in release mode (benchmarks of a debug build mislead).
pub fn bench(which: BenchKind, args: &[String]) -> Result<()> {
    setup::setup()?;
    // The benchmarks start real daemons: build the release binary they run.
    run_cmd(cargo().args(["build", "--release", "-p", "hookwall", "--bins"]))
        .context("building the release hookwall binary")?;
    println!("==> bench {}", which.name());
    let mut cmd = cargo();
    cmd.env(
        "HOOKWALL_BIN",
        target_dir().join("release").join("hookwall"),
    );
    cmd.args([
        "run",
        "--release",
        "-p",
        "hookwall-tests",
        "--bin",
        "bench",
        "--",
    ])
    .arg(which.name())
    .args(args);
    run_cmd(&mut cmd).with_context(|| format!("running the {} benchmark", which.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names handed to the bench binary are the ones clap accepts on our command line.
    #[test]
    fn names_match_clap() {
        for kind in BenchKind::value_variants() {
            let value = kind.to_possible_value().unwrap();
            assert_eq!(value.get_name(), kind.name());
        }
    }
}
