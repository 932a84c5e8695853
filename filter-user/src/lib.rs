//! hookwall: guards a payment-callback endpoint, from the kernel up.
//!
//! # Layout
//! One module per concern; the binary (`main.rs`) parses the command line and dispatches.
//! - `build_info`: the version, git revision and program digest this build reports.
//! - `config`: the TOML schema, one file per section under `config/check/`, loading and
//!   validation with `file:line` errors and "did you mean", secret references, host probes,
//!   the warning about secret files others can read.
//! - `allowlist`: presets, CIDRs and files turned into normalised, merged prefix sets;
//!   `allowlist::presets` holds the built-in provider lists with the source of each entry;
//!   `allowlist::sources` reads, checks and caches published lists (`allow.sources`).
//! - `filter`: the XDP program's life: load, pin, attach, re-adopt, apply without a gap,
//!   detach; `filter::pinned` is the one read-only view of the pinned maps.
//! - `status`: what `hookwall status` reports, read through `filter::pinned`.
//! - `metrics`: the Prometheus registry, `/healthz` and `/readyz`, and the listener for them.
//! - `receiver`: the HTTPS receiver: TLS, connections, the PROXY protocol, routing, the client
//!   address, the request pipeline (verify, then store, then answer), the audit line, C2B
//!   validation pass-through.
//! - `verify`: authenticates one webhook callback (M-Pesa token, HMAC schemes), no I/O; signs
//!   what hookwall itself sends (Standard Webhooks).
//! - `store`: the durable event store (SQLite, WAL, group commit): stored before answered.
//! - `delivery`: the worker that takes stored events to the application (HTTP) or NATS.
//! - `acme`: the HTTPS certificate from an ACME CA (`server.tls = "acme"`): the HTTP-01
//!   listener, the cache of the account and certificate, ordering and renewal.
//! - `watch`: asks for a reload when the config, allowlist or certificate files are edited.
//! - `daemon`: `hookwall run`: the start order, reloads (what applies, what waits for a
//!   restart), the stop order; `daemon::sources`: the tasks that keep published lists
//!   current; `daemon::privileges`: what it keeps of root's privileges once the filter is in
//!   force, on every thread, and the user it becomes (`daemon.run_as`).
//! - `cli`: what the other commands print: `check`, `status`, `queue`, `presets`, `allow`,
//!   `detach`; `cli::pins`, where `status` and `detach` find the pins.
//! - `logging`: the log's format on standard error (`text` or `json`) and its filter.
//! - `time`: RFC 3339 timestamps, as the audit log and the command line print them.
//!
//! The public surface is what the binary and the `hookwall-tests` crate use; the `bench`
//! feature adds the hooks that crate's kernel tests and benchmarks need.
pub(crate) mod acme;
pub(crate) mod allowlist;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod daemon;
pub(crate) mod delivery;
pub mod filter;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod receiver;
pub mod status;
pub mod store;
pub(crate) mod time;
pub(crate) mod verify;
pub(crate) mod watch;
