//! What `/readyz` checks and what the scrape-time metrics read: the interfaces the filter must
//! be attached to, the store's writer, the HTTPS listener, the certificate being served.
//!
//! Ready means all of:
//! - **filter**: on every interface in `filter.interfaces` (as last applied), the link pinned
//!   for it is attached to that interface now, asked of the kernel at each request
//!   ([`PinnedFilter::attachments`]);
//! - **store** (when routes are configured): the store's writer thread runs and the last batch
//!   it wrote committed ([`WriterHealth::check`]);
//! - **https** (when routes are configured): the HTTPS listener is bound and its accept loop
//!   runs (it stops at shutdown, before anything else);
//! - **certificate** (with `server.tls = "acme"`): a certificate is served; until the first one
//!   is issued (or read from the cache) every handshake is refused.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
};

use arc_swap::ArcSwapOption;

use crate::{
    config::AttachMode,
    filter::{
        Pins,
        pinned::{Attachment, PinnedFilter},
    },
    store::WriterHealth,
};

/// No certificate is being served (no routes, or not yet loaded).
const NO_CERTIFICATE: i64 = i64::MIN;

/// The state read by `/readyz` and at scrape time; shared by [`super::Metrics`]' clones.
#[derive(Debug)]
pub struct Health {
    pins: Pins,
    /// `filter.interfaces` and `filter.attach` as last applied; `None` before bring-up.
    filter: ArcSwapOption<(Vec<String>, AttachMode)>,
    store: OnceLock<WriterHealth>,
    https: OnceLock<Https>,
    /// The served certificate's notAfter, in Unix seconds; [`NO_CERTIFICATE`] when none.
    not_after: AtomicI64,
    /// Readiness waits for a certificate (ACME: none until the first is issued).
    certificate_expected: AtomicBool,
}

#[derive(Debug)]
struct Https {
    listen: SocketAddr,
    serving: Arc<AtomicBool>,
}

/// Marks the HTTPS listener serving while alive.
#[derive(Debug)]
#[must_use = "the listener counts as serving only while this lives"]
pub struct Serving(Option<Arc<AtomicBool>>);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(serving) = &self.0 {
            serving.store(false, Ordering::Release);
        }
    }
}

impl Health {
    pub(super) fn new(pins: Pins) -> Self {
        Self {
            pins,
            filter: ArcSwapOption::empty(),
            store: OnceLock::new(),
            https: OnceLock::new(),
            not_after: AtomicI64::new(NO_CERTIFICATE),
            certificate_expected: AtomicBool::new(false),
        }
    }

    /// Records the interfaces the filter must be attached to now (at start and after each
    /// reload that applied).
    pub fn set_interfaces(&self, interfaces: &[String], attach: AttachMode) {
        self.filter
            .store(Some(Arc::new((interfaces.to_vec(), attach))));
    }

    /// Each configured interface's attachment, and the configured `filter.attach`; `None`
    /// before [`Health::set_interfaces`].
    pub(super) fn attachments(&self) -> Option<(Vec<Attachment>, AttachMode)> {
        let filter = self.filter.load_full()?;
        let (interfaces, attach) = &*filter;
        Some((
            PinnedFilter::new(&self.pins).attachments(interfaces),
            *attach,
        ))
    }

    /// Makes readiness depend on the store written through `writer`.
    pub fn watch_store(&self, writer: WriterHealth) {
        let _ = self.store.set(writer);
    }

    /// Makes readiness depend on the HTTPS listener bound on `listen` serving.
    pub fn https_bound(&self, listen: SocketAddr) {
        let _ = self.https.set(Https {
            listen,
            serving: Arc::new(AtomicBool::new(false)),
        });
    }

    /// Marks the HTTPS listener serving until the returned value is dropped.
    pub fn https_serving(&self) -> Serving {
        let serving = self.https.get().map(|https| Arc::clone(&https.serving));
        if let Some(serving) = &serving {
            serving.store(true, Ordering::Release);
        }
        Serving(serving)
    }

    /// Records the notAfter (Unix seconds) of the certificate now served.
    pub fn set_certificate_not_after(&self, unix_seconds: i64) {
        self.not_after.store(unix_seconds, Ordering::Relaxed);
    }

    /// Makes readiness depend on a certificate being served (one comes later, from ACME).
    pub fn expect_certificate(&self) {
        self.certificate_expected.store(true, Ordering::Relaxed);
    }

    /// The notAfter of the certificate being served, if any.
    pub(super) fn certificate_not_after(&self) -> Option<i64> {
        let at = self.not_after.load(Ordering::Relaxed);
        (at != NO_CERTIFICATE).then_some(at)
    }

    /// What is not ready, one line each; empty when ready.
    #[must_use]
    pub fn not_ready(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match self.attachments() {
            None => lines.push("filter: not attached yet (starting)".to_owned()),
            Some((attachments, _)) => {
                for a in attachments {
                    if let Err(why) = a.attached {
                        lines.push(format!("filter: not attached on {}: {why}", a.interface));
                    }
                }
            }
        }
        if let Some(store) = self.store.get()
            && let Err(why) = store.check()
        {
            lines.push(format!("store: not writable: {why}"));
        }
        if let Some(https) = self.https.get()
            && !https.serving.load(Ordering::Acquire)
        {
            lines.push(format!(
                "https: the listener on {} is not serving",
                https.listen
            ));
        }
        if self.certificate_expected.load(Ordering::Relaxed)
            && self.certificate_not_after().is_none()
        {
            lines.push(
                "certificate: none yet (server.tls = \"acme\": the first is being ordered; TLS \
                 handshakes are refused until it is issued)"
                    .to_owned(),
            );
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn each_failed_check_is_one_line_naming_what_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path().join("pins"));
        let health = Health::new(pins.clone());
        health.set_interfaces(&["hw-absent0".to_owned()], AttachMode::Auto);
        let filter_line = format!(
            "filter: not attached on hw-absent0: no link is pinned for it in {}",
            pins.links_dir().display()
        );
        assert_eq!(health.not_ready(), std::slice::from_ref(&filter_line));

        let listen: SocketAddr = "192.0.2.1:443".parse().unwrap();
        health.https_bound(listen);
        let https_line = "https: the listener on 192.0.2.1:443 is not serving".to_owned();
        assert_eq!(
            health.not_ready(),
            [filter_line.clone(), https_line.clone()]
        );
        let serving = health.https_serving();
        assert_eq!(health.not_ready(), std::slice::from_ref(&filter_line));
        drop(serving);
        assert_eq!(
            health.not_ready(),
            [filter_line.clone(), https_line.clone()]
        );

        let store = Store::open(dir.path().join("events.db")).unwrap();
        health.watch_store(store.handle().health());
        assert_eq!(
            health.not_ready(),
            [filter_line.clone(), https_line.clone()]
        );
        store.close().await.unwrap();
        assert_eq!(
            health.not_ready(),
            [
                filter_line,
                "store: not writable: the writer thread has stopped".to_owned(),
                https_line
            ]
        );
    }
}
