//! The NATS sink: a JetStream publish, acknowledged once the stream has stored the message.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;

use super::policy::Attempt;
use crate::{config::NatsConfig, store::StoredEvent};

/// Publishes events to a JetStream stream.
pub struct NatsSink {
    jetstream: async_nats::jetstream::Context,
    config: NatsConfig,
    /// Whether the stream is known to exist (checked, or created, on first use; checked again
    /// after a publish finds no stream, e.g. a broker that came back without its store).
    stream_ready: std::sync::atomic::AtomicBool,
    timeout: Duration,
}

impl NatsSink {
    /// Connects to `config.url`; the connection is made (and remade) in the background.
    ///
    /// # Errors
    /// The token cannot be read or the URL is invalid.
    pub async fn connect(config: &NatsConfig, timeout: Duration) -> anyhow::Result<Self> {
        let mut options = async_nats::ConnectOptions::new()
            .name("hookwall")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5));
        if let Some(token) = &config.token {
            let secret = token
                .resolve()
                .with_context(|| format!("reading delivery.nats.token ({token})"))?;
            let text = String::from_utf8(secret.expose().to_vec())
                .map_err(|_| anyhow::anyhow!("delivery.nats.token ({token}) is not UTF-8 text"))?;
            options = options.token(text);
        }
        let client = options
            .connect(config.url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {} (delivery.nats.url)", config.url))?;
        Ok(Self {
            jetstream: async_nats::jetstream::new(client),
            config: config.clone(),
            stream_ready: std::sync::atomic::AtomicBool::new(false),
            timeout,
        })
    }

    /// Finds the stream, or creates it with the subject and duplicate window configured. A
    /// stream that exists is used as it is (another host may have created it). Attempts racing
    /// here may each ask; JetStream answers all of them with the one stream.
    async fn ensure_stream(&self) -> Result<(), String> {
        if self.stream_ready.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let config = async_nats::jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![self.config.subject.clone()],
            duplicate_window: self.config.duplicate_window,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|e| format!("finding or creating stream {}: {e}", self.config.stream))?;
        self.stream_ready
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    pub(super) async fn send(&self, event: &StoredEvent) -> Attempt {
        let published = tokio::time::timeout(self.timeout, async {
            self.ensure_stream().await?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event.event_id.as_str());
            headers.insert("hookwall-route", event.route.as_str());
            headers.insert("hookwall-kind", event.kind.as_str());
            headers.insert("hookwall-event", event.id.to_string().as_str());
            headers.insert(
                "hookwall-received-at",
                event.received_at_ms.to_string().as_str(),
            );
            if let Some((_, content_type)) = event
                .headers
                .iter()
                .find(|(name, _)| name == "content-type")
            {
                headers.insert("content-type", content_type.as_str());
            }
            let ack = self
                .jetstream
                .publish_with_headers(
                    self.config.subject.clone(),
                    headers,
                    Bytes::from(event.body.clone()),
                )
                .await
                .map_err(|e| format!("publishing to {}: {e}", self.config.subject))?;
            // The ack comes once the stream has stored the message (or found it a duplicate
            // within its window: stored before, by this host or another).
            ack.await.map(|_| ()).map_err(|e| {
                if e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound {
                    // The stream went away after it was found (deleted, or the broker lost its
                    // store): look for it, or make it, again on the next attempt rather than
                    // failing every attempt until the events are dead letters.
                    self.stream_ready
                        .store(false, std::sync::atomic::Ordering::Release);
                }
                format!("waiting for JetStream's ack: {e}")
            })
        })
        .await;
        match published {
            Ok(Ok(())) => Attempt::Delivered,
            Ok(Err(error)) => Attempt::Failed {
                error,
                retry_after: None,
            },
            Err(_) => Attempt::Failed {
                error: format!(
                    "no JetStream ack within {} (delivery.timeout)",
                    humantime::format_duration(self.timeout)
                ),
                retry_after: None,
            },
        }
    }
}
