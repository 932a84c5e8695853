//! hookwall: guards a payment-callback endpoint, from the kernel up.
//!
//! # Layout
//! - [`config`]: the TOML schema, loading and validation with file/line errors.
//! - [`presets`]: the built-in provider address lists, with the source of each entry.
//! - [`allowlist`]: turns presets, CIDRs and files into the normalised, merged prefix sets.
//! - [`filter`]: loads, pins, attaches, re-adopts, feeds and detaches the XDP program.
//! - [`status`]: reads the pinned maps, with or without a running daemon.
//! - [`metrics`]: the Prometheus registry and the `/metrics` listener.
//! - [`store`]: the durable event store (SQLite, WAL, group commit): stored before answered.
//! - [`verify`]: authenticates one webhook callback (M-Pesa token, HMAC schemes), no I/O; signs
//!   what hookwall itself sends (Standard Webhooks).
//! - [`receiver`]: the HTTPS receiver: TLS, routes, limits, audit; verify, then store, then
//!   answer; [`receiver::validation`]: M-Pesa C2B validation pass-through.
//! - [`delivery`]: the worker that takes stored events to the application (HTTP) or NATS.
//! - [`cli`]: what the commands print: `check`, `status`, `queue`, `presets`, `detach`.
//! - [`time`]: RFC 3339 timestamps, as the audit log and the command line print them.
//! - [`watch`]: asks for a reload when the config, allowlist or certificate files are edited.
//! - [`daemon`]: `hookwall run`: the long-running loop, reloads on SIGHUP and file change.
pub(crate) mod allowlist;
pub mod cli;
pub mod config;
pub mod daemon;
pub(crate) mod delivery;
pub mod filter;
pub(crate) mod metrics;
pub(crate) mod presets;
pub(crate) mod receiver;
pub mod status;
pub mod store;
pub(crate) mod time;
pub(crate) mod verify;
pub(crate) mod watch;
