//! Which route a request is for: the routes of the config in force, each with its verifier
//! (and validator), plus what the pipeline needs besides (the allowlist, the client address's
//! source).

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
}

/// What a config says about requests: routes, the allowlist (for `mpesa`), the source of the
/// client address (`server.client_address`).
pub(crate) struct Routing {
    pub(crate) routes: Vec<Route>,
    pub(crate) allowlist: Allowlist,
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
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            routes,
            allowlist: config.allowlist.clone(),
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
