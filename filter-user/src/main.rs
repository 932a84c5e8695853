//! The `hookwall` command line: see `hookwall --help` and README.md.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hookwall::{
    config, daemon,
    filter::{self, Pins},
    presets, status,
};

/// Guards a payment-callback endpoint: an XDP allowlist in the kernel and a daemon that feeds it.
#[derive(Parser)]
#[command(name = "hookwall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load or re-adopt the filter, attach it, serve metrics; reload on SIGHUP and file change.
    Run {
        /// Config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a config without touching the system; print the effective allowlist.
    Check {
        /// Config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Show the pinned filter: interfaces, mode, prefix counts, counters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Remove the program from every interface and unpin everything hookwall pinned.
    Detach {
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Print the built-in provider address lists with their sources.
    Presets,
}

/// Where the pins are: `--pin-path`, else the config's `filter.pin_path`.
#[derive(clap::Args)]
struct PinArgs {
    /// Config file whose filter.pin_path to use.
    #[arg(short, long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Pin path to use instead of the config's.
    #[arg(long)]
    pin_path: Option<PathBuf>,
}

impl PinArgs {
    fn pins(&self) -> Pins {
        if let Some(path) = &self.pin_path {
            return Pins::new(path);
        }
        match config::load(&self.config) {
            Ok(config) => Pins::new(config.filter.pin_path),
            Err(errors) => {
                let fallback = config::DEFAULT_PIN_PATH;
                eprintln!(
                    "note: could not read {} ({} error(s)); using the default pin path {fallback} \
                     (pass --pin-path to choose)",
                    self.config.display(),
                    errors.0.len()
                );
                Pins::new(fallback)
            }
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOOKWALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(daemon::run(&config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => match config::load(&config) {
            Ok(config) => {
                print!("{}", config.render_check());
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "{}: {} error(s); nothing was changed",
                    config.display(),
                    errors.0.len()
                );
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Status { json, pins } => {
            let pins = pins.pins();
            let status = status::read(&pins).with_context(|| {
                format!("reading the filter pinned under {}", pins.root().display())
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Detach { pins } => {
            let pins = pins.pins();
            let report = filter::detach(&pins).with_context(|| {
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Presets => {
            print!("{}", presets::render());
            Ok(ExitCode::SUCCESS)
        }
    }
}
