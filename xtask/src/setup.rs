//! `cargo xtask setup`: installs what building and testing hookwall needs.
//!
//! Every step checks first and prints one `ok:` line when its piece is already there, so running
//! setup before each build/run/test costs well under a second on a prepared machine and needs no
//! network. Nothing installed by hand survives to CI, which is why this must do it all.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{capture, cargo, is_root, on_path, run_cmd, services, stdout_of};

// The pins, in one place. They follow the recipe in docs/development.md ("Toolchain pins"): the
// nightly, llvm-22-dev and bpf-linker's `llvm-22` feature must share one LLVM major, so move them
// together. `filter-user/build.rs` repeats the eBPF
// toolchain; the `pins_agree_with_the_repository` test below fails if they drift apart.

/// Userspace toolchain (aya 0.16 needs rustc >= 1.98); every cargo xtask runs uses it.
pub const USER_TOOLCHAIN: &str = "1.98.0";
/// Components of the userspace toolchain: `cargo xtask test` runs rustfmt and clippy.
pub const USER_COMPONENTS: &[&str] = &["rustfmt", "clippy"];
/// eBPF toolchain: `-Z build-std=core` needs a nightly, and its LLVM (22) must match bpf-linker's.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";
/// Components of the eBPF toolchain: `rust-src` for `-Z build-std=core`, plus `clippy` for the
/// eBPF lint step of `cargo xtask test`.
pub const EBPF_COMPONENTS: &[&str] = &["rust-src", "clippy"];
/// The Debian package with the LLVM that bpf-linker links against (dynamically, so it must stay).
pub const LLVM_PACKAGE: &str = "llvm-22-dev";
/// Where `LLVM_PACKAGE` installs LLVM; bpf-linker's build finds it through `LLVM_PREFIX`.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// bpf-linker version; 0.13.0 is the newest that has an `llvm-22` feature.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker feature selecting its LLVM; the default (`llvm-23`) is not packaged by Debian.
pub const BPF_LINKER_FEATURE: &str = "llvm-22";
/// Debian packages the tests need at run time: iproute2 gives `ip` (namespaces, veth pairs),
/// curl an independent HTTP/2 client, nats-server the JetStream broker the delivery tests and
/// `bench delivery` start and stop, prometheus `promtool` (the rule tests) and the server the
/// dashboard test runs its queries against, systemd `systemd-analyze verify` (the unit files in
/// contrib/systemd), pebble the ACME CA (and `pebble-challtestsrv`, its DNS server) the
/// certificate tests order from (it installs no service).
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "curl",
    "nats-server",
    PROMETHEUS_PACKAGE,
    "systemd",
    "pebble",
];
/// The package of `prometheus` and `promtool`. It is installed without its Recommends (the node
/// exporter and its collectors: more servers, none of them needed), with no service started
/// and its service disabled: the tests start their own server (see [`ensure_apt_packages`]).
pub const PROMETHEUS_PACKAGE: &str = "prometheus";
/// The server [`PROMETHEUS_PACKAGE`] installs; setup checks that none was started.
const PROMETHEUS_SERVER: &str = "/usr/bin/prometheus";
/// Debian packages `cargo xtask bench flood` runs: netsniff-ng gives `trafgen` (the SYN
/// generator), and nftables, ipset and iptables the firewalls hookwall is compared with.
pub const BENCH_PACKAGES: &[&str] = &["netsniff-ng", "nftables", "ipset", "iptables"];
/// Debian packages `cargo xtask dist` and the package test need: dpkg-dev gives cargo-deb
/// `dpkg-shlibdeps` (the package's library dependencies); adduser runs in the package's
/// postinst; systemd gives `systemd-analyze` (the unit is verified, its exposure scored, also
/// where systemd is not PID 1); man-db and groff-base render the man pages.
pub const PACKAGE_TOOLS: &[&str] = &["dpkg-dev", "adduser", "systemd", "man-db", "groff-base"];
/// cargo-deb version (`cargo deb`, which `cargo xtask dist` runs).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Runs every setup step in order; the first failure stops it.
pub fn setup() -> Result<()> {
    println!("==> setup (pins: docs/development.md)");
    let root = is_root()?;
    if !root {
        println!(
            "note: not running as root: installing missing Debian packages ({}) needs root, and \
             so do `cargo xtask run` and `cargo xtask test`; the rustup and cargo steps do not",
            apt_packages().join(", ")
        );
    }
    let host = host_triple().context("finding the host target triple")?;
    ensure_toolchain(USER_TOOLCHAIN, USER_COMPONENTS, &host)
        .with_context(|| format!("setting up the userspace toolchain {USER_TOOLCHAIN}"))?;
    ensure_toolchain(EBPF_TOOLCHAIN, EBPF_COMPONENTS, &host)
        .with_context(|| format!("setting up the eBPF toolchain {EBPF_TOOLCHAIN}"))?;
    ensure_apt_packages(root).context("installing Debian packages")?;
    ensure_bpf_linker().context("installing bpf-linker")?;
    ensure_cargo_deb().context("installing cargo-deb")?;
    Ok(())
}

/// All Debian packages setup manages.
fn apt_packages() -> Vec<&'static str> {
    std::iter::once(LLVM_PACKAGE)
        .chain(TEST_PACKAGES.iter().copied())
        .chain(BENCH_PACKAGES.iter().copied())
        .chain(PACKAGE_TOOLS.iter().copied())
        .collect()
}

/// The host triple, from `rustc -vV`; rustup names installed toolchains `<name>-<host>`.
fn host_triple() -> Result<String> {
    let mut cmd = Command::new("rustc");
    cmd.arg("-vV").current_dir(crate::project_root());
    let out = stdout_of(&mut cmd)?;
    parse_host(&out).context("no `host:` line in `rustc -vV`")
}

/// The `host:` value of `rustc -vV` output.
fn parse_host(rustc_vv: &str) -> Option<String> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Installs toolchain `name` with `components`, or adds the components it lacks, or says it is
/// there. Checked first because `rustup toolchain install` of an installed toolchain still
/// fetches the channel manifest (slow, and fails offline).
fn ensure_toolchain(name: &str, components: &[&str], host: &str) -> Result<()> {
    let list = stdout_of(Command::new("rustup").args(["toolchain", "list"]))
        .context("listing installed toolchains")?;
    if !toolchain_installed(&list, name, host) {
        println!(
            "setup: installing Rust {name} with {}",
            components.join(",")
        );
        return run_cmd(
            Command::new("rustup")
                .args(["toolchain", "install", name, "--profile", "minimal"])
                .arg("--component")
                .arg(components.join(","))
                .stdin(Stdio::null()),
        );
    }
    let installed = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        name,
    ]))
    .with_context(|| format!("listing the components of {name}"))?;
    let missing = missing_components(&installed, components, host);
    if missing.is_empty() {
        println!(
            "ok: Rust {name} with {} already installed",
            components.join(",")
        );
        return Ok(());
    }
    println!("setup: adding {} to Rust {name}", missing.join(","));
    run_cmd(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", name])
            .args(&missing)
            .stdin(Stdio::null()),
    )
}

/// Whether `rustup toolchain list` output names toolchain `name` for `host`. Lines look like
/// `1.98.0-x86_64-unknown-linux-gnu (active)`; an exact match keeps `nightly` from matching
/// `nightly-2026-07-01-...`.
fn toolchain_installed(list: &str, name: &str, host: &str) -> bool {
    let full = format!("{name}-{host}");
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| t == full || t == name)
}

/// The entries of `wanted` absent from `rustup component list --installed` output, whose lines
/// are `clippy-x86_64-unknown-linux-gnu` for host components and `rust-src` for the others.
fn missing_components<'a>(installed: &str, wanted: &[&'a str], host: &str) -> Vec<&'a str> {
    let names: Vec<&str> = installed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|c| {
            let full = format!("{c}-{host}");
            !names.iter().any(|n| *n == *c || *n == full)
        })
        .collect()
}

/// Installs the Debian packages that are missing, with one `apt-get update` for all of them,
/// under a `policy-rc.d` that keeps their maintainer scripts from starting services (see
/// [`services`]); then checks that no prometheus server was started.
fn ensure_apt_packages(root: bool) -> Result<()> {
    let mut missing = Vec::new();
    for package in apt_packages() {
        if dpkg_installed(package)? {
            println!("ok: {package} already installed");
        } else {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let (lean, full): (Vec<&str>, Vec<&str>) =
        missing.iter().partition(|p| **p == PROMETHEUS_PACKAGE);
    if !root {
        bail!(
            "{list} must be installed and that needs root: run `cargo xtask setup` as root \
             (it keeps {PROMETHEUS_PACKAGE}'s service from starting), or run \
             `sudo apt-get update` and {}, then `cargo xtask setup` again",
            [
                (&full, "sudo apt-get install -y"),
                (&lean, "sudo apt-get install -y --no-install-recommends"),
            ]
            .iter()
            .filter(|(packages, _)| !packages.is_empty())
            .map(|(packages, install)| format!("`{install} {}`", packages.join(" ")))
            .collect::<Vec<_>>()
            .join(" and ")
        );
    }
    let servers_before = services::running(Path::new(PROMETHEUS_SERVER))?;
    println!("setup: installing {list} with apt-get");
    {
        // Maintainer scripts run `invoke-rc.d NAME start`; this makes each of them a no-op.
        let _policy = services::NoStartPolicy::install(Path::new(services::POLICY_RC_D))?;
        run_cmd(apt_get().arg("update")).context("updating the apt package lists")?;
        if !full.is_empty() {
            run_cmd(apt_get().args(["install", "-y"]).args(&full))
                .with_context(|| format!("installing {}", full.join(" ")))?;
        }
        if !lean.is_empty() {
            run_cmd(
                apt_get()
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(&lean),
            )
            .with_context(|| format!("installing {}", lean.join(" ")))?;
        }
    }
    if !lean.is_empty() {
        disable_prometheus_service()?;
    }
    let started: Vec<u32> = services::running(Path::new(PROMETHEUS_SERVER))?
        .difference(&servers_before)
        .copied()
        .collect();
    if !started.is_empty() {
        let pids: Vec<String> = started.iter().map(u32::to_string).collect();
        bail!(
            "installing {PROMETHEUS_PACKAGE} started its server (PID {}): {} allowed the start. \
             The tests run their own server; stop that one (`service prometheus stop`) and make \
             the policy exit 101 while packages are installed",
            pids.join(", "),
            services::POLICY_RC_D
        );
    }
    println!("setup: no {PROMETHEUS_SERVER} server was started by the install");
    Ok(())
}

/// Keeps the freshly installed prometheus service from starting at the next boot: the package
/// enables both its systemd unit and its init script. `systemctl disable` edits links only (it
/// works whatever PID 1 is) and passes the init script on to `update-rc.d`; without systemd the
/// init script is all there is.
fn disable_prometheus_service() -> Result<()> {
    if on_path("systemctl") {
        run_cmd(Command::new("systemctl").args(["disable", "prometheus.service"]))
            .context("disabling the prometheus service")
    } else if Path::new("/etc/init.d/prometheus").exists() {
        run_cmd(Command::new("update-rc.d").args(["prometheus", "disable"]))
            .context("disabling the prometheus init script")
    } else {
        Ok(())
    }
}

/// `apt-get` that never asks a question: CI has no stdin.
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

/// Whether dpkg reports `package` as installed. An unknown package makes `dpkg-query` exit
/// non-zero, which means "not installed" here; a missing `dpkg-query` is an error (not Debian).
fn dpkg_installed(package: &str) -> Result<bool> {
    let out = capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .context("asking dpkg about installed packages (setup supports Debian and Ubuntu)")?;
    Ok(out.status.success() && dpkg_status_installed(&String::from_utf8_lossy(&out.stdout)))
}

/// Whether a dpkg `${Status}` value means fully installed; `deinstall ok config-files` (removed)
/// or `install ok unpacked` (half-installed) do not.
fn dpkg_status_installed(status: &str) -> bool {
    status.trim() == "install ok installed"
}

/// Installs bpf-linker unless the pinned version answers `--version`.
fn ensure_bpf_linker() -> Result<()> {
    // A missing binary, or one whose libLLVM is gone, fails to start or exits non-zero: reinstall.
    let installed = capture(Command::new("bpf-linker").arg("--version"))
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| parse_bpf_linker_version(&String::from_utf8_lossy(&out.stdout)));
    if installed.as_deref() == Some(BPF_LINKER_VERSION) {
        println!("ok: bpf-linker {BPF_LINKER_VERSION} already installed");
        return Ok(());
    }
    match installed {
        Some(other) => println!(
            "setup: replacing bpf-linker {other} with {BPF_LINKER_VERSION} (about a minute)"
        ),
        None => println!("setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)"),
    }
    // The command of docs/development.md's recipe, run in the project root so it uses the pinned
    // 1.98.0.
    let mut cmd = cargo();
    cmd.env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", BPF_LINKER_FEATURE])
        .stdin(Stdio::null());
    run_cmd(&mut cmd)
}

/// Installs cargo-deb unless the pinned version answers `cargo deb --version`.
fn ensure_cargo_deb() -> Result<()> {
    let installed = capture(cargo().args(["deb", "--version"]))
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| parse_tool_version(&String::from_utf8_lossy(&out.stdout), "cargo-deb"));
    if installed.as_deref() == Some(CARGO_DEB_VERSION) {
        println!("ok: cargo-deb {CARGO_DEB_VERSION} already installed");
        return Ok(());
    }
    match installed {
        Some(other) => println!("setup: replacing cargo-deb {other} with {CARGO_DEB_VERSION}"),
        None => println!("setup: installing cargo-deb {CARGO_DEB_VERSION} (about a minute)"),
    }
    run_cmd(
        cargo()
            .args([
                "install",
                "cargo-deb",
                "--version",
                CARGO_DEB_VERSION,
                "--locked",
            ])
            .stdin(Stdio::null()),
    )
}

/// The version in `TOOL --version` output whose first line is `TOOL VERSION`.
fn parse_tool_version(output: &str, tool: &str) -> Option<String> {
    let mut words = output.lines().next()?.split_whitespace();
    match (words.next(), words.next()) {
        (Some(name), Some(version)) if name == tool => Some(version.to_owned()),
        _ => None,
    }
}

/// The version in `bpf-linker --version` output (`bpf-linker 0.13.0`).
fn parse_bpf_linker_version(output: &str) -> Option<String> {
    let mut words = output.lines().next()?.split_whitespace();
    match (words.next(), words.next()) {
        (Some("bpf-linker"), Some(version)) => Some(version.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "x86_64-unknown-linux-gnu";

    #[test]
    fn bpf_linker_version_is_the_second_word() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.9.15").as_deref(),
            Some("0.9.15")
        );
        // Must be compared whole: `0.13.01` contains `0.13.0`.
        assert_ne!(
            parse_bpf_linker_version("bpf-linker 0.13.01").as_deref(),
            Some(BPF_LINKER_VERSION)
        );
        assert_eq!(parse_bpf_linker_version("something-else 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }

    #[test]
    fn cargo_deb_version_is_the_second_word() {
        assert_eq!(
            parse_tool_version("cargo-deb 3.8.0\n", "cargo-deb").as_deref(),
            Some(CARGO_DEB_VERSION)
        );
        assert_eq!(
            parse_tool_version("cargo-deb 3.8.01", "cargo-deb").as_deref(),
            Some("3.8.01")
        );
        assert_eq!(parse_tool_version("bpf-linker 3.8.0", "cargo-deb"), None);
        assert_eq!(parse_tool_version("", "cargo-deb"), None);
    }

    #[test]
    fn only_a_complete_dpkg_install_counts() {
        assert!(dpkg_status_installed("install ok installed"));
        assert!(dpkg_status_installed("install ok installed\n"));
        assert!(!dpkg_status_installed("deinstall ok config-files"));
        assert!(!dpkg_status_installed("install ok unpacked"));
        assert!(!dpkg_status_installed("install ok half-configured"));
        assert!(!dpkg_status_installed("install ok half-installed"));
        assert!(!dpkg_status_installed(""));
    }

    #[test]
    fn toolchains_match_exactly() {
        let list = "stable-x86_64-unknown-linux-gnu (default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.98.0-x86_64-unknown-linux-gnu (active)\n";
        assert!(toolchain_installed(list, "1.98.0", HOST));
        assert!(toolchain_installed(list, "nightly", HOST));
        assert!(!toolchain_installed(list, "nightly-2026-07-01", HOST));
        assert!(!toolchain_installed(list, "1.98", HOST));
        assert!(!toolchain_installed(
            "no installed toolchains\n",
            "1.98.0",
            HOST
        ));
        let list = "nightly-2026-07-01-x86_64-unknown-linux-gnu\n";
        assert!(toolchain_installed(list, "nightly-2026-07-01", HOST));
        assert!(!toolchain_installed(list, "nightly", HOST));
    }

    #[test]
    fn missing_components_handles_host_suffixes() {
        let installed = "cargo-x86_64-unknown-linux-gnu\n\
                         rust-src\n\
                         rust-std-x86_64-unknown-linux-gnu\n\
                         rustc-x86_64-unknown-linux-gnu\n";
        assert_eq!(
            missing_components(installed, &["rust-src", "clippy"], HOST),
            ["clippy"]
        );
        assert_eq!(
            missing_components(installed, &["rustfmt", "clippy"], HOST),
            ["rustfmt", "clippy"]
        );
        let installed = format!("{installed}clippy-{HOST}\nrustfmt-{HOST}\n");
        assert!(
            missing_components(&installed, &["rustfmt", "clippy", "rust-src"], HOST).is_empty()
        );
    }

    #[test]
    fn host_comes_from_rustc_vv() {
        let out = "rustc 1.98.0 (88d9e12ae 2026-08-18)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\n\
                   release: 1.98.0\nLLVM version: 22.1.8\n";
        assert_eq!(parse_host(out).as_deref(), Some(HOST));
        assert_eq!(parse_host("rustc 1.98.0\n"), None);
    }

    /// The pins repeated outside this file must not drift from the ones here.
    #[test]
    fn pins_agree_with_the_repository() {
        let root = crate::project_root();
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let minor = USER_TOOLCHAIN
            .rsplit_once('.')
            .map_or(USER_TOOLCHAIN, |(mm, _)| mm);
        assert!(
            workspace.contains(&format!("rust-version = \"{minor}\"")),
            "the workspace's rust-version is not {minor}, the toolchain xtask pins"
        );
        let build_rs = std::fs::read_to_string(root.join("filter-user/build.rs")).unwrap();
        assert!(
            build_rs.contains(&format!("\"{EBPF_TOOLCHAIN}\"")),
            "filter-user/build.rs does not build the eBPF crate with {EBPF_TOOLCHAIN}"
        );
        assert!(LLVM_PREFIX.ends_with(BPF_LINKER_FEATURE.trim_start_matches("llvm")));
        assert!(LLVM_PACKAGE.starts_with(BPF_LINKER_FEATURE));
    }
}
