//! `cargo xtask test`: what CI runs. Lints first (cheap, and need no root), then the tests.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{
    capture, cargo, display, is_root, run_cmd,
    setup::{self, EBPF_TOOLCHAIN},
    target_dir,
};

/// Number of steps after setup, for the `[n/STEPS]` headers.
const STEPS: usize = 5;
/// Prefix of the network namespaces the end-to-end tests create.
pub const TEST_NETNS_PREFIX: &str = "hw-";

/// Sets up, then runs formatting check, clippy (userspace, then eBPF) and the tests, stopping at
/// the first failure. `cargo_test_args` go to `cargo test` as they are (a filter, `-- --nocapture`).
pub fn test(cargo_test_args: &[String]) -> Result<()> {
    setup::setup()?;
    let root = is_root()?;
    if !root {
        println!("note: not root: the lint steps run, but the tests (step {STEPS}) will refuse");
    }

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    step(1, "formatting", &mut fmt, "run `cargo fmt --all` to fix it")?;

    // The daemon alone first: built with the tests crate, `hookwall` gets the `bench` feature,
    // which would hide code that only its hooks use.
    let mut daemon_clippy = cargo();
    daemon_clippy
        .args(["clippy", "-p", "hookwall", "--all-targets"])
        .args(["--", "-D", "warnings"]);
    step(
        2,
        "clippy (the daemon)",
        &mut daemon_clippy,
        "fix the lints above",
    )?;
    let mut clippy = cargo();
    clippy
        .args(["clippy", "-p", "filter-common", "-p", "hookwall"])
        .args(["-p", "hookwall-tests", "-p", "xtask", "--all-targets"])
        .args(["--", "-D", "warnings"]);
    step(3, "clippy (userspace)", &mut clippy, "fix the lints above")?;

    // The eBPF crate only builds for the BPF target, with core from source, so it needs its own
    // pass with the pinned nightly; `--release` matches how filter-user/build.rs builds it.
    let mut ebpf_clippy = cargo();
    ebpf_clippy
        .arg(format!("+{EBPF_TOOLCHAIN}"))
        .args([
            "clippy",
            "-p",
            "filter-ebpf",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"]);
    step(4, "clippy (eBPF)", &mut ebpf_clippy, "fix the lints above")?;

    println!("==> [{STEPS}/{STEPS}] tests");
    if !root {
        bail!(
            "step {STEPS}/{STEPS} (tests) needs root: the tests load BPF programs and create network \
             namespaces; run `cargo xtask test` as root (e.g. `sudo -E cargo xtask test`)"
        );
    }
    warn_leftover_namespaces();
    let mounted = ensure_bpffs()?;
    let outcome = build_and_test(cargo_test_args);
    if mounted {
        unmount_bpffs();
    }
    outcome?;
    println!("==> all {STEPS} steps passed");
    Ok(())
}

/// Builds the Debian package the package test installs (tests/tests/package.rs), the binary the
/// end-to-end tests start, then runs every crate's tests.
fn build_and_test(cargo_test_args: &[String]) -> Result<()> {
    // Once per run: the release build costs minutes. The test fails without it, never skips.
    let deb = crate::dist::build_package().with_context(|| {
        format!("step {STEPS}/{STEPS} (tests) failed while building the Debian package")
    })?;
    let mut build = cargo();
    build.args(["build", "-p", "hookwall", "--bins"]);
    run_cmd(&mut build).with_context(|| {
        format!("step {STEPS}/{STEPS} (tests) failed while building the hookwall binary")
    })?;
    // The end-to-end tests start the real binary; an absolute path keeps them independent of
    // the working directory cargo gives each test.
    let bin = target_dir().join("debug").join("hookwall");
    let mut tests = cargo();
    tests
        .env("HOOKWALL_BIN", &bin)
        .env("HOOKWALL_DEB", &deb)
        .args(["test", "-p", "filter-common", "-p", "hookwall"])
        .args(["-p", "hookwall-tests", "-p", "xtask"])
        .args(cargo_test_args);
    run_cmd(&mut tests).with_context(|| format!("step {STEPS}/{STEPS} (tests) failed"))
}

/// Mounts bpffs at /sys/fs/bpf once, before any test runs: hookwall mounts it itself when
/// needed, but tests in several processes starting at once could otherwise each mount one, and a
/// second mount would hide the first one's pins. Returns whether it mounted it.
fn ensure_bpffs() -> Result<bool> {
    let fs_type = crate::stdout_of(Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/bpf"]))
        .context("checking the filesystem type of /sys/fs/bpf")?;
    if fs_type.trim() == "bpf_fs" {
        return Ok(false);
    }
    println!("mounting bpffs at /sys/fs/bpf (it was {})", fs_type.trim());
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs at /sys/fs/bpf")?;
    Ok(true)
}

/// Entries the kernel itself puts in every bpffs mount (the BPF preload iterators), not pins.
const KERNEL_BPFFS_ENTRIES: [&str; 2] = ["maps.debug", "progs.debug"];

/// Unmounts the bpffs the tests mounted, unless something else was pinned there meanwhile
/// (then it stays, and says why): the tests remove their own pins, so a clean run leaves the
/// machine as it found it.
fn unmount_bpffs() {
    let pinned: Vec<String> = match std::fs::read_dir("/sys/fs/bpf") {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !KERNEL_BPFFS_ENTRIES.contains(&name.as_str()))
            .collect(),
        Err(e) => {
            println!("note: leaving bpffs mounted at /sys/fs/bpf (cannot list it: {e})");
            return;
        }
    };
    if !pinned.is_empty() {
        println!(
            "note: leaving bpffs mounted at /sys/fs/bpf: it holds {}",
            pinned.join(", ")
        );
        return;
    }
    if let Err(e) = run_cmd(Command::new("umount").arg("/sys/fs/bpf")) {
        println!("note: could not unmount the bpffs the tests mounted at /sys/fs/bpf: {e:#}");
    }
}

/// Prints the `[n/STEPS]` header, runs `cmd`, and on failure names the step and what to do.
fn step(n: usize, name: &str, cmd: &mut Command, hint: &str) -> Result<()> {
    println!("==> [{n}/{STEPS}] {name}");
    run_cmd(cmd).with_context(|| format!("step {n}/{STEPS} ({name}) failed: {hint}"))
}

/// Warns about `hw-*` namespaces left by earlier test runs (a killed run cannot clean up). Only
/// a warning: they may belong to a run still going, so deleting them is left to the user.
fn warn_leftover_namespaces() {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    match capture(&mut cmd) {
        Ok(out) if out.status.success() => {
            let list = String::from_utf8_lossy(&out.stdout);
            let leftovers = test_namespaces(&list);
            if leftovers.is_empty() {
                println!("ok: no leftover {TEST_NETNS_PREFIX}* network namespaces");
            } else {
                println!(
                    "warning: leftover network namespaces from earlier test runs (not deleted; \
                     `ip netns del NAME` removes one): {}",
                    leftovers.join(" ")
                );
            }
        }
        Ok(out) => println!(
            "warning: could not list network namespaces: `{}` failed: {}",
            display(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => println!("warning: could not list network namespaces: {err:#}"),
    }
}

/// The test namespaces in `ip netns list` output, whose lines are `NAME` or `NAME (id: N)`.
fn test_namespaces(list: &str) -> Vec<&str> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(TEST_NETNS_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_test_namespaces_are_reported() {
        let list = "hw-e2e-1 (id: 3)\nblue (id: 0)\nhw-bench\nmyhw-x\n\n";
        assert_eq!(test_namespaces(list), ["hw-e2e-1", "hw-bench"]);
        assert!(test_namespaces("").is_empty());
    }
}
