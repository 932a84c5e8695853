//! `cargo xtask`: the project's single entry point for the work cargo alone cannot do.
//!
//! Layout:
//! - `setup`: installs the pinned toolchains, LLVM, bpf-linker and the test tools (idempotent).
//! - `build`: setup, then builds the `hookwall` binary and the test/bench binaries.
//! - `run`: setup and build, then runs the daemon with the bundled dev config, as root.
//! - `test`: setup, lints (userspace and eBPF), then the unit and end-to-end tests, as root.
//! - `bench`: setup, then runs one of the benchmarks of `hookwall-tests`.
//! - `dist`: setup, then the release binary and the Debian package (cargo-deb).
//!
//! This file also holds the few helpers every command shares: the project root, running a
//! command with its command line echoed, and the root check.
use std::{
    ffi::OsStr,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Output},
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Parser, Subcommand};

mod bench;
mod build;
mod dist;
mod run;
mod services;
mod setup;
mod test;

/// `cargo xtask` command line.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Set up, build, run, test and benchmark hookwall."
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: XtaskCommand,
}

/// The xtask subcommands.
#[derive(Debug, Subcommand)]
enum XtaskCommand {
    /// Install the pinned toolchains, llvm-22-dev, bpf-linker, cargo-deb and the test and
    /// packaging tools (iproute2, curl, nats-server, dpkg-dev, systemd, man-db...); skips what is
    /// there.
    Setup,
    /// Set up, then build `hookwall` and the binaries of `hookwall-tests`.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, then run `hookwall` (as root) with the bundled dev config.
    Run {
        /// Run the release build.
        #[arg(long)]
        release: bool,
        /// Arguments for `hookwall`, replacing the default `run -c filter-user/hookwall.dev.toml`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting, run clippy (userspace and eBPF), then run the tests (as root).
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter, or `-- --nocapture`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then build the release binary and the Debian package (cargo-deb) into
    /// target/debian/; prints its path and size.
    Dist,
    /// Set up, then run one benchmark of `hookwall-tests` in release mode.
    Bench {
        /// Which benchmark to run.
        which: bench::BenchKind,
        /// Extra arguments for the bench binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        XtaskCommand::Setup => setup::setup(),
        XtaskCommand::Build { release } => build::build(release),
        XtaskCommand::Run { release, args } => run::run(release, &args),
        XtaskCommand::Test { args } => test::test(&args),
        XtaskCommand::Bench { which, args } => bench::bench(which, &args),
        XtaskCommand::Dist => dist::dist(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The context chain says what failed; anyhow's `Debug` would add a backtrace of xtask
            // itself whenever RUST_BACKTRACE is set, which only buries the message.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The workspace root. xtask lives one level below it, so this holds wherever `cargo xtask` is
/// started from; every cargo command runs here so that `.cargo/config.toml` applies.
pub fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A `cargo` command that runs in the project root with the pinned userspace toolchain.
///
/// xtask itself is built by whatever stable rustup has (there is no rust-toolchain.toml: with
/// RUSTUP_AUTO_INSTALL=0 one would stop `cargo xtask` before it could install anything), so the
/// pin is applied here, through the rustup proxy (`cargo` from PATH; `$CARGO` names one
/// toolchain's own cargo, which understands neither the override nor `+nightly-...`).
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(project_root())
        .env("RUSTUP_TOOLCHAIN", setup::USER_TOOLCHAIN);
    cmd
}

/// The command line of `cmd` as a shell would show it, for the log and error messages.
pub fn display(cmd: &Command) -> String {
    let mut shown = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(
                shown,
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            );
        }
    }
    shown.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&quote(arg));
    }
    shown
}

/// Quotes `arg` for display if a shell would split or expand it.
fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,/=:+@%".contains(c));
    if plain {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio after echoing it, and fails unless it exits with success.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("    $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("starting `{shown}` (is it installed and on PATH?)"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    Ok(())
}

/// Runs `cmd` quietly and returns its output whatever its exit status; fails only if it cannot
/// be started. Used by the checks, which read the status themselves.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let shown = display(cmd);
    cmd.stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("starting `{shown}` (is it installed and on PATH?)"))
}

/// Runs `cmd` quietly and returns its stdout, failing unless it exits with success.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("output of `{shown}` is not UTF-8"))
}

/// Whether this process runs with effective uid 0. XDP attach, BPF loading and network
/// namespaces need it (strictly CAP_BPF/CAP_NET_ADMIN, but root is what the project documents).
pub fn is_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status to find our user id")?;
    let euid = effective_uid(&status).context("no `Uid:` line in /proc/self/status")?;
    Ok(euid == 0)
}

/// The effective uid from the text of `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Where cargo puts its build output: `$CARGO_TARGET_DIR` (relative to the project root, as cargo
/// reads it) or `target/`. A `build.target-dir` in a cargo config file is not followed; the
/// project sets none.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => project_root().join(dir),
        _ => project_root().join("target"),
    }
}

/// Whether an executable named `program` is on PATH (without running it).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_args_after_double_dash_pass_through_including_a_second_double_dash() {
        let cli = Cli::try_parse_from(["xtask", "test", "--", "e2e", "--", "--nocapture"]).unwrap();
        match cli.command {
            XtaskCommand::Test { args } => assert_eq!(args, ["e2e", "--", "--nocapture"]),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn run_args_replace_the_default_only_when_given() {
        let cli = Cli::try_parse_from(["xtask", "run", "--release"]).unwrap();
        assert!(
            matches!(cli.command, XtaskCommand::Run { release: true, ref args } if args.is_empty())
        );
        let cli = Cli::try_parse_from(["xtask", "run", "--", "status"]).unwrap();
        assert!(
            matches!(cli.command, XtaskCommand::Run { release: false, ref args } if args == &["status"])
        );
    }

    #[test]
    fn bench_takes_only_known_kinds() {
        let cli = Cli::try_parse_from(["xtask", "bench", "http", "--", "-n", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            XtaskCommand::Bench { which: bench::BenchKind::Http, ref args } if args == &["-n", "5"]
        ));
        assert!(Cli::try_parse_from(["xtask", "bench", "nope"]).is_err());
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\txtask\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        let mut cmd = Command::new("dpkg-query");
        cmd.args(["-W", "-f=${Status}", "llvm-22-dev", "it's"])
            .env("A", "1");
        assert_eq!(
            display(&cmd),
            r"A=1 dpkg-query -W '-f=${Status}' llvm-22-dev 'it'\''s'"
        );
    }

    #[test]
    fn project_root_is_the_workspace() {
        assert!(project_root().join(".cargo/config.toml").is_file());
        assert!(project_root().join("xtask/Cargo.toml").is_file());
    }
}
