//! The HTTP sink: a POST of the stored body to `delivery.url`, signed with `delivery.secret`.

use std::{error::Error as _, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;

use super::policy::{Attempt, classify};
use crate::{
    receiver::install_crypto_provider,
    store::StoredEvent,
    verify::{Signer, header_value, signed_post},
};

/// Most of an application's answer body read (and thrown away) to keep the connection reusable.
const ANSWER_DRAIN_LIMIT: usize = 64 * 1024;

/// The HTTP client hookwall uses to reach the application (deliveries and validation forwards).
///
/// # Errors
/// If the TLS stack cannot be set up.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("hookwall/", env!("CARGO_PKG_VERSION")))
        // The application's address is configured, not discovered: never follow a redirect
        // elsewhere with a signed event.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client for delivery")
}

/// POSTs events to `delivery.url`, signed with `delivery.secret`.
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    signer: Arc<Signer>,
    timeout: Duration,
}

impl HttpSink {
    /// A sink for `url`.
    ///
    /// # Errors
    /// The URL does not parse or the client cannot be built.
    pub fn new(url: &str, signer: Arc<Signer>, timeout: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).context("parsing delivery.url")?;
        Ok(Self {
            client: http_client()?,
            url,
            signer,
            timeout,
        })
    }

    pub(super) async fn send(&self, event: &StoredEvent, attempt: u32) -> Attempt {
        let content_type = event
            .headers
            .iter()
            .find(|(name, _)| name == "content-type")
            .map_or("application/json", |(_, value)| value.as_str());
        let request = signed_post(
            &self.client,
            self.url.clone(),
            &self.signer,
            &event.event_id,
            content_type,
            Bytes::from(event.body.clone()),
        )
        .timeout(self.timeout)
        .header("idempotency-key", header_value(&event.event_id))
        .header("hookwall-route", header_value(&event.route))
        .header("hookwall-kind", header_value(&event.kind))
        .header("hookwall-event", event.id)
        .header("hookwall-received-at", event.received_at_ms)
        .header("hookwall-attempt", attempt);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = retry_after(response.headers());
                drain(response).await;
                classify(status, retry_after)
            }
            Err(e) => Attempt::Failed {
                error: describe(&e, self.timeout),
                retry_after: None,
            },
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from applications and is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads a little of the answer so the connection can be reused; a long answer is cut off (the
/// connection is then closed, which costs nothing but a reconnect).
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > ANSWER_DRAIN_LIMIT {
            break;
        }
    }
}

/// A transport error as one line, without the URL (it may carry a credential in its query).
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!(
            "no answer within {} (delivery.timeout)",
            humantime::format_duration(timeout)
        );
    }
    let mut text = String::from("could not reach the application");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_do_not_leak_the_url() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // A port nothing listens on: connection refused, fast.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let error = rt.block_on(async {
            let client = http_client().expect("client");
            client
                .post(format!("http://127.0.0.1:{port}/hook?key=SECRETQUERY"))
                .send()
                .await
                .expect_err("nothing listens")
        });
        let text = describe(&error, Duration::from_secs(1));
        assert!(
            text.starts_with("could not reach the application"),
            "{text}"
        );
        assert!(!text.contains("SECRETQUERY"), "{text}");
    }
}
