//! Which route a request is for: the routes of the config in force, each with its verifier
//! (and validator) and the sources it accepts, plus the client address's source.

use std::sync::Arc;

use super::validation::Validator;
use crate::{
    allowlist::Allowlist,
    config::{ClientAddress, Config, RouteConfig, VerifyKind},
    delivery,
    verify::{self, Verifier},
};
use anyhow::Context as _;

/// One route with its verifier.
pub(crate) struct Route {
    pub(crate) path: String,
    pub(crate) verify: VerifyKind,
    pub(crate) verifier: Verifier,
    /// C2B validation pass-through (`validation`): ask the application instead of storing.
    pub(crate) validator: Option<Validator>,
    /// The sources the route accepts; `None`: any the filter lets through.
    pub(crate) sources: Option<Sources>,
}

/// The sources a route accepts, and the refusal reason for a client outside them.
pub(crate) struct Sources {
    /// Shared by every route that uses the same list (`mpesa` routes without `allow` share
    /// `[allow]`'s, which may hold 100,000 prefixes).
    pub(crate) list: Arc<Allowlist>,
    /// [`REASON_PEER_NOT_ALLOWED`] or [`REASON_ROUTE_SOURCE`].
    pub(crate) reason: &'static str,
}

/// The refusal reason of a client not on `[allow]`'s list, on an `mpesa` route without `allow`.
pub(crate) const REASON_PEER_NOT_ALLOWED: &str = "peer_not_allowed";
/// The refusal reason of a client outside a route's own `allow`.
pub(crate) const REASON_ROUTE_SOURCE: &str = "route_source";

impl Sources {
    /// What `route` accepts: its `allow`; without one, `[allow]`'s list for `mpesa` (Daraja signs
    /// nothing, so its source is part of what authenticates a callback), any source otherwise.
    fn of(route: &RouteConfig, allowlist: &Arc<Allowlist>) -> Option<Self> {
        match (&route.allow, route.verify) {
            (Some(allow), _) => Some(Self {
                list: Arc::new(allow.list.clone()),
                reason: REASON_ROUTE_SOURCE,
            }),
            (None, VerifyKind::Mpesa) => Some(Self {
                list: Arc::clone(allowlist),
                reason: REASON_PEER_NOT_ALLOWED,
            }),
            (None, _) => None,
        }
    }
}

/// What a config says about requests: the routes and the source of the client address
/// (`server.client_address`).
pub(crate) struct Routing {
    pub(crate) routes: Vec<Route>,
    pub(crate) client_address: ClientAddress,
}

impl Routing {
    pub(crate) fn from_config(config: &Config) -> anyhow::Result<Self> {
        // Validation forwards are signed with delivery.secret, read once per config load.
        let forwarding = if config.routes.iter().any(|r| r.validation.is_some()) {
            let signer = config
                .delivery
                .as_ref()
                .map(verify::delivery_signer)
                .transpose()?
                .flatten()
                .context("a route with `validation` needs delivery.secret to sign its forwards")?;
            Some((Arc::new(signer), delivery::http_client()?))
        } else {
            None
        };
        let allowlist = Arc::new(config.allowlist.clone());
        let routes = config
            .routes
            .iter()
            .map(|r: &RouteConfig| {
                let validator = match (&r.validation, &forwarding) {
                    (Some(validation), Some((signer, client))) => Some(
                        Validator::new(validation, Arc::clone(signer), client.clone())
                            .with_context(|| format!("route {}", r.path))?,
                    ),
                    _ => None,
                };
                Ok(Route {
                    path: r.path.clone(),
                    verify: r.verify,
                    verifier: Verifier::from_route(r)?,
                    validator,
                    sources: Sources::of(r, &allowlist),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            routes,
            client_address: config.server.client_address.clone(),
        })
    }

    /// The route for `path`, and for `mpesa` routes the token segment (if any).
    pub(crate) fn find<'a>(&self, path: &'a str) -> Option<(&Route, Option<&'a str>)> {
        for route in &self.routes {
            if path == route.path {
                return Some((route, None));
            }
            if route.verify == VerifyKind::Mpesa
                && let Some(rest) = path.strip_prefix(route.path.as_str())
                && let Some(token) = rest.strip_prefix('/')
                && !token.is_empty()
                && !token.contains('/')
            {
                return Some((route, Some(token)));
            }
        }
        None
    }
}
