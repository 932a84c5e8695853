//! Which series of the per-route families exist, so that a reload that removes a route can
//! remove its series. prometheus-client's `Family` cannot list its label sets, and the `reason`
//! of a refusal is not a closed list known here, so each series is noted when it is created:
//! the first request with a label set takes a lock, the others only look the series up.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, PoisonError},
};

use super::{HttpLabels, RefusalLabels, RouteLabels, ValidationLabels};

/// One series of a per-route family, by its labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Series {
    /// `hookwall_http_requests_total`.
    Request(HttpLabels),
    /// `hookwall_http_refusals_total`.
    Refusal(RefusalLabels),
    /// `hookwall_http_request_duration_seconds`.
    Duration(RouteLabels),
    /// `hookwall_validation_requests_total`.
    Validation(ValidationLabels),
}

impl Series {
    /// The route label.
    #[must_use]
    pub fn route(&self) -> &str {
        match self {
            Self::Request(l) => &l.route,
            Self::Refusal(l) => &l.route,
            Self::Duration(l) => &l.route,
            Self::Validation(l) => &l.route,
        }
    }
}

/// The per-route series created so far, by route, and the routes that may have series.
#[derive(Debug, Default)]
pub(super) struct RouteIndex {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `None` until the routes are first set: every route is admitted.
    configured: Option<HashSet<String>>,
    series: HashMap<String, HashSet<Series>>,
}

impl RouteIndex {
    /// Runs `make` (which creates `series` in its family) and notes the series, unless `route`
    /// is not one of the configured routes. Under the index's lock, so that [`RouteIndex::retain`]
    /// cannot run between the two and leave a series it does not know of.
    pub(super) fn create(&self, route: &str, series: Series, make: impl FnOnce()) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner
            .configured
            .as_ref()
            .is_some_and(|routes| !routes.contains(route))
        {
            return;
        }
        make();
        inner
            .series
            .entry(route.to_owned())
            .or_default()
            .insert(series);
    }

    /// Makes `routes` the configured ones and hands every series of another route to `remove`
    /// (which removes it from its family), under the index's lock: a concurrent
    /// [`RouteIndex::create`] for a removed route is refused, not raced.
    pub(super) fn retain<'a>(
        &self,
        routes: impl IntoIterator<Item = &'a str>,
        mut remove: impl FnMut(Series),
    ) {
        let routes: HashSet<String> = routes.into_iter().map(str::to_owned).collect();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.series.retain(|route, series| {
            let keep = routes.contains(route);
            if !keep {
                series.drain().for_each(&mut remove);
            }
            keep
        });
        inner.configured = Some(routes);
    }
}
