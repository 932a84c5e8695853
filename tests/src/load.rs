//! A continuous client for the restart and upgrade tests: M-Pesa confirmations posted one after
//! another from the client namespace, each on a new TLS connection with a TransID of its own,
//! and a tally of what each came to.

use std::{
    io,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{
    https::request,
    lab::Lab,
    netns::{ALLOWED_V4, PROTECTED_PORT, srv_addr},
};

const JSON: (&str, &str) = ("Content-Type", "application/json");
const C2B_CONFIRMATION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));
/// The fixture's TransID, replaced by a distinct one per request.
const FIXTURE_TRANS_ID: &str = "RKTQDM7W6S";

/// What the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests tried.
    pub attempted: usize,
    /// The TransIDs answered 200.
    pub acknowledged: Vec<String>,
    /// Connections refused (nothing listening).
    pub refused: usize,
    /// Every other failure: an error after connecting, or a status other than 200.
    pub failed: Vec<String>,
}

impl Tally {
    /// The counts in a line, named `what`.
    #[must_use]
    pub fn figures(&self, what: &str) -> String {
        format!(
            "{what}: attempted {}, acknowledged {}, refused {}, failed {}",
            self.attempted,
            self.acknowledged.len(),
            self.refused,
            self.failed.len()
        )
    }

    /// Asserts that the load ran (more than 10 requests acknowledged), that no connection was
    /// refused and that no request failed. `what` names the run in the message; `context` (a
    /// daemon's log, or nothing) follows it.
    ///
    /// # Panics
    /// If any of the three does not hold.
    pub fn assert_all_answered(&self, what: &str, context: &str) {
        let figures = self.figures(what);
        assert!(
            self.acknowledged.len() > 10,
            "the load ran: {figures}\n{context}"
        );
        assert_eq!(self.refused, 0, "{figures}\n{context}");
        assert!(
            self.failed.is_empty(),
            "{figures}; failures: {:?}\n{context}",
            self.failed
        );
    }
}

/// A confirmation with its own TransID.
///
/// # Panics
/// If the fixture changed.
#[must_use]
pub fn confirmation(trans_id: &str) -> Vec<u8> {
    assert!(C2B_CONFIRMATION.contains(FIXTURE_TRANS_ID));
    C2B_CONFIRMATION
        .replace(FIXTURE_TRANS_ID, trans_id)
        .into_bytes()
}

/// Posts confirmations to `path` (the route's path and token) from the client namespace, one
/// after another with `pace` between them, each on a new TLS connection with the TransID
/// `{tag}{n}`, until `stop`; the tally when stopped.
#[must_use]
pub fn start(
    lab: &Lab,
    path: String,
    tag: &'static str,
    pace: Duration,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<Tally> {
    let src = IpAddr::V4(ALLOWED_V4);
    let dst = srv_addr(src, PROTECTED_PORT);
    let client = Arc::clone(lab.client());
    let stop = Arc::clone(stop);
    lab.net.cli.spawn(move || {
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed) {
            tally.attempted += 1;
            let id = format!("{tag}{:07}", tally.attempted);
            match request(
                src,
                dst,
                &client,
                "POST",
                &path,
                &[JSON],
                &confirmation(&id),
            ) {
                Ok(reply) if reply.status == 200 => tally.acknowledged.push(id),
                Ok(reply) => tally.failed.push(format!("{id}: status {}", reply.status)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => tally.refused += 1,
                Err(e) => tally.failed.push(format!("{id}: {e}")),
            }
            std::thread::sleep(pace);
        }
        tally
    })
}
