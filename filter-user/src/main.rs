//! The `hookwall` command line: see `hookwall --help` and README.md.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use hookwall::{
    cli::{self, exit, queue},
    config, daemon,
    filter::Pins,
    logging::{self, LogFormat},
    status,
    store::EventState,
};

/// mimalloc instead of glibc's malloc: a stored request allocates on one thread and frees on
/// another (the store's writer), and glibc spent about a fifth of the receiver's CPU per stored
/// request on that. Version 2, not 3: 3 kept more memory resident after a large allowlist was
/// loaded (docs/decisions/0004-mimalloc.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Guards a payment-callback endpoint: an XDP allowlist in the kernel and a daemon that feeds it.
#[derive(Parser)]
#[command(name = "hookwall", version, long_version = hookwall::build_info::long_version(), about)]
#[command(after_help = exit::help(exit::HOOKWALL))]
struct Cli {
    /// Log format on standard error: text, or json (one object per line, for journald and
    /// Loki) [env: HOOKWALL_LOG_FORMAT; default: text].
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load or re-adopt the filter, attach it, serve HTTPS and metrics, deliver stored events;
    /// reload on SIGHUP and file change.
    #[command(after_help = exit::help(exit::RUN))]
    Run {
        /// Config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a config without touching the system; print the effective allowlist.
    #[command(after_help = exit::help(exit::CHECK))]
    Check {
        /// Config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Show the pinned filter: interfaces, mode, prefix counts, counters.
    #[command(after_help = exit::help(exit::STATUS))]
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Remove the program from every interface and unpin everything hookwall pinned.
    #[command(after_help = exit::help(exit::DETACH))]
    Detach {
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Upgrade the running daemon in place: it starts the binary now at its path, hands it its
    /// listening sockets and exits once that one serves (SIGUSR2 does the same).
    #[command(after_help = exit::help(exit::UPGRADE))]
    Upgrade {
        /// The daemon's PID, instead of the one the pinned filter records.
        #[arg(long)]
        pid: Option<u32>,
        /// How long to wait for the hand-over, e.g. "60s".
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        timeout: std::time::Duration,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Print the built-in provider address lists with their sources.
    #[command(after_help = exit::help(exit::PRINTS))]
    Presets,
    /// Published address lists (allow.sources, refreshed presets).
    #[command(after_help = exit::help(exit::ALLOW))]
    Allow {
        #[command(subcommand)]
        command: AllowCommand,
    },
    /// Inspect the event store, replay dead letters, purge delivered events.
    #[command(after_help = exit::help(exit::QUEUE))]
    Queue {
        /// Config file whose [store] to use (no other section is read).
        #[arg(short, long, default_value = config::DEFAULT_PATH, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Print the completion script for SHELL, e.g. `hookwall completions bash >
    /// /usr/share/bash-completion/completions/hookwall`.
    #[command(after_help = exit::help(exit::PRINTS))]
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages of hookwall and of every subcommand into DIR (used to build the
    /// package).
    #[command(hide = true)]
    Manpages {
        /// Directory to write the `.1` files into; created if missing.
        dir: PathBuf,
    },
}

/// `hookwall queue ...`.
#[derive(Subcommand)]
enum AllowCommand {
    /// Let a fetched list that was refused for shrinking too much through, once, and tell the
    /// running daemon to fetch it now.
    #[command(after_help = exit::help(exit::ALLOW))]
    Accept {
        /// Config file whose allow.cache_dir (or store directory) and pin path to use.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Only this list: a preset's name or a source's URL without its query, as the log
        /// and the metrics name it. Default: every refused list.
        source: Option<String>,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List events, newest first.
    #[command(after_help = exit::help(exit::QUEUE))]
    List {
        /// Only events in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only events with an id below this one (the next page).
        #[arg(long)]
        before: Option<i64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one event: state, attempts, last error, headers and body.
    #[command(after_help = exit::help(exit::QUEUE))]
    Show {
        /// The event's id (first column of `queue list`).
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay dead letters: back to pending, delivered again at once.
    #[command(after_help = exit::help(exit::QUEUE))]
    Retry {
        /// Ids of dead letters.
        #[arg(required_unless_present = "all_dead")]
        ids: Vec<i64>,
        /// Every dead letter.
        #[arg(long)]
        all_dead: bool,
    },
    /// Delete delivered events older than store.retention (or --older-than). Pending and dead
    /// events are never purged.
    #[command(after_help = exit::help(exit::QUEUE))]
    Purge {
        /// Age, e.g. "30d" or "12h".
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

/// A delivery state on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum StateArg {
    Pending,
    Delivered,
    Dead,
}

impl From<StateArg> for EventState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Pending => EventState::Pending,
            StateArg::Delivered => EventState::Delivered,
            StateArg::Dead => EventState::Dead,
        }
    }
}

impl From<QueueCommand> for queue::Command {
    fn from(command: QueueCommand) -> Self {
        match command {
            QueueCommand::List {
                state,
                limit,
                before,
                json,
            } => queue::Command::List {
                state: state.map(EventState::from),
                limit,
                before,
                json,
            },
            QueueCommand::Show { id, json } => queue::Command::Show { id, json },
            QueueCommand::Retry { ids, all_dead } => queue::Command::Retry { ids, all_dead },
            QueueCommand::Purge { older_than } => queue::Command::Purge { older_than },
        }
    }
}

/// Where the pins are: `--pin-path`, else the config's `filter.pin_path`.
#[derive(clap::Args)]
struct PinArgs {
    /// Config file whose filter.pin_path to use [default: /etc/hookwall/hookwall.toml]; no
    /// other section is read. Named here, its [filter] must be valid; the default one, if
    /// absent, means the default pin path.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Pin path to use instead of the config's.
    #[arg(long)]
    pin_path: Option<PathBuf>,
}

impl PinArgs {
    fn pins(&self) -> anyhow::Result<Pins> {
        cli::pins::resolve(
            self.pin_path.as_deref(),
            self.config.as_deref(),
            std::path::Path::new(config::DEFAULT_PATH),
        )
        .map_err(|err| {
            let cli::pins::PinPathError::Config { errors, .. } = &err;
            eprintln!("{errors}");
            anyhow::Error::new(err)
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_format) {
        // A usage error, as clap's own are.
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            logging::report(&e);
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            // SAFETY: no other thread exists yet (logging starts none; the runtime comes next),
            // so removing the LISTEN_* variables races with nothing.
            let handed = unsafe { daemon::Handed::take_from_env() }?;
            // SAFETY: as above.
            let handover = unsafe { daemon::Handover::take_from_env() }
                .context("reading the hand-over socket of an in-place upgrade")?;
            // SAFETY: still one thread, and root's privileges: the helper that starts a
            // successor on SIGUSR2 is forked now (daemon/upgrade).
            let upgrader = unsafe { daemon::Upgrader::start_helper() };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(daemon::run(&config, handed, handover, upgrader))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => match config::load(&config) {
            Ok(config) => {
                print!("{}", config.render_check());
                for loose in config.loose_permissions() {
                    eprintln!("warning: {loose}");
                }
                for gap in config.route_allow_gaps() {
                    eprintln!("warning: {gap}");
                }
                for warning in config.provider_warnings() {
                    eprintln!("warning: {warning}");
                }
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
            let pins = pins.pins()?;
            let status = status::read(&pins).with_context(|| {
                format!("reading the filter pinned under {}", pins.root().display())
            })?;
            cli::status::print(&status, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Detach { pins } => {
            cli::detach::main(&pins.pins()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Upgrade { pid, timeout, pins } => {
            let pins = pins.pins()?;
            let new = cli::upgrade::main(&pins, pid, timeout)?;
            println!("upgraded: PID {new} serves now");
            Ok(ExitCode::SUCCESS)
        }
        Command::Presets => {
            cli::presets::main();
            Ok(ExitCode::SUCCESS)
        }
        Command::Allow {
            command: AllowCommand::Accept { config, source },
        } => {
            let accepted = cli::allow::accept(&config, source.as_deref())?;
            print!("{}", accepted.text);
            Ok(if accepted.any {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Queue { config, command } => queue::main(&config, &queue::Command::from(command)),
        Command::Completions { shell } => {
            cli::generate::completions(Cli::command(), shell, &mut std::io::stdout().lock())
                .context("writing the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages { dir } => {
            for page in cli::generate::manpages(Cli::command(), &dir)? {
                println!("{}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
