//! Delivery: every stored event reaches the user's application at least once.
//!
//! # Design
//! - **The store is the queue.** An event is `pending` from the moment it is stored (before the
//!   provider is answered) until an attempt succeeds (`delivered`) or the retry policy gives up
//!   (`dead`). Nothing is deleted on failure; dead letters wait for `hookwall queue retry`.
//! - **At least once, one idempotency key.** Each attempt carries the event id (`webhook-id`,
//!   `idempotency-key`, `Nats-Msg-Id`), and the result is committed only after the sink answered.
//!   A crash between the two leads to the same event being sent again with the same key, never to
//!   a lost one; the application (or JetStream's duplicate window) drops the second copy.
//! - **The worker** ([`Worker::run`]) wakes when the store commits new events, when the next
//!   retry is due, and at least every [`IDLE_POLL`] (so `queue retry` from another process is
//!   seen); it keeps at most `delivery.concurrency` attempts in flight and never runs two attempts
//!   of the same event at once. Each result is recorded through the store's group commit.
//! - **Sinks.** `delivery.url`: an HTTP POST of the stored body, signed by hookwall with Standard
//!   Webhooks headers so the application can trust the last hop. `[delivery.nats]`: a JetStream
//!   publish, acknowledged by the server once stored. Several hookwall hosts can feed one stream;
//!   `Nats-Msg-Id` lets JetStream drop the copy a provider's retry made on another host.
//! - **Retry policy** ([`Policy`]): 2xx delivers; 4xx other than 408 and 429 is final (dead at
//!   once: the application says the event itself is wrong, and repeating it would not help);
//!   anything else is retried with exponential backoff and jitter, honouring `Retry-After`, until
//!   `max_attempts` or `max_age`.

use std::{
    collections::{HashMap, HashSet},
    error::Error as _,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use bytes::Bytes;
use reqwest::{StatusCode, header::HeaderValue};
use tokio::{sync::watch, task::JoinSet};

use crate::{
    config::{DeliveryConfig, NatsConfig, Sink as SinkConfig},
    metrics::{DeliveryLabels, DeliveryMetrics, SinkLabels},
    store::{Reader, StoreHandle, StoredEvent, Update, unix_ms},
    verify::Signer,
};

/// Longest sleep of an idle worker: bounds how long an event re-queued by `hookwall queue retry`
/// (another process, so no in-process wake-up) waits for its attempt.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long a stopping worker lets attempts in flight finish before abandoning them (they stay
/// pending and are sent again, with the same id, after the restart).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Most of an application's answer body read (and thrown away) to keep the connection reusable.
const ANSWER_DRAIN_LIMIT: usize = 64 * 1024;

/// How often delivered events older than `store.retention` are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// How often the queue gauges are refreshed from the store.
pub const GAUGES_EVERY: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Retry policy
// ---------------------------------------------------------------------------------------------

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The sink took the event (2xx; a JetStream ack).
    Delivered,
    /// Worth trying again: 5xx, 408, 429, a network error, a timeout.
    Failed {
        /// What happened, for `last_error` and the log; never a secret.
        error: String,
        /// The application's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The application refused the event for good (4xx other than 408 and 429).
    Rejected {
        /// What happened.
        error: String,
    },
}

/// What an HTTP status means for the event.
#[must_use]
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let error = format!("the application answered HTTP {status}");
    let retried = status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    if status.is_client_error() && !retried {
        Attempt::Rejected { error }
    } else {
        Attempt::Failed { error, retry_after }
    }
}

/// When to try again, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts at most (`delivery.max_attempts`).
    pub max_attempts: u32,
    /// Age at which an undelivered event is given up (`delivery.max_age`), from its receipt.
    pub max_age: Duration,
    /// Backoff after the first failure (`delivery.backoff_initial`).
    pub backoff_initial: Duration,
    /// Longest backoff (`delivery.backoff_max`).
    pub backoff_max: Duration,
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this unix ms.
    RetryAt(i64),
    /// Give up: the event becomes a dead letter, for this reason.
    Dead(String),
}

impl Policy {
    /// From the config.
    #[must_use]
    pub fn from_config(config: &DeliveryConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            max_age: config.max_age,
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
        }
    }

    /// The backoff after `failures` failed attempts (1 = the first), before jitter:
    /// `backoff_initial * 2^(failures - 1)`, at most `backoff_max`.
    #[must_use]
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.backoff_initial
            .saturating_mul(1_u32 << doublings.min(31))
            .min(self.backoff_max)
    }

    /// Decides what follows a failed attempt. `attempts` counts it; `jitter` is uniform in
    /// [0, 1) (a parameter so tests are exact). The wait is "equal jitter": half the backoff plus
    /// a random part of the other half, so retries of a burst spread out but never come early. A
    /// `Retry-After` is honoured up to `backoff_max`. The last retry is placed at the event's
    /// `max_age` deadline rather than beyond it.
    #[must_use]
    pub fn after_failure(
        &self,
        attempts: u32,
        received_at_ms: i64,
        now_ms: i64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Next {
        if attempts >= self.max_attempts {
            return Next::Dead(format!(
                "gave up after {attempts} attempts (delivery.max_attempts)"
            ));
        }
        let deadline_ms = received_at_ms.saturating_add(duration_ms(self.max_age));
        if now_ms >= deadline_ms {
            return Next::Dead(format!(
                "gave up after {attempts} attempts: older than delivery.max_age ({})",
                humantime::format_duration(self.max_age)
            ));
        }
        let backoff = self.backoff(attempts);
        let half = backoff / 2;
        let wait = half + half.mul_f64(jitter.clamp(0.0, 1.0));
        let wait = match retry_after {
            Some(asked) => wait.max(asked.min(self.backoff_max)),
            None => wait,
        };
        Next::RetryAt(now_ms.saturating_add(duration_ms(wait)).min(deadline_ms))
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Sinks
// ---------------------------------------------------------------------------------------------

/// Where events go.
pub enum Sink {
    /// POST to the application.
    Http(HttpSink),
    /// Publish to NATS JetStream (boxed: the JetStream context is large, and one sink exists).
    Nats(Box<NatsSink>),
}

impl Sink {
    /// Builds the sink `config` names; a NATS sink connects in the background (a broker that is
    /// down at start only delays deliveries).
    ///
    /// # Errors
    /// The delivery secret cannot be read or decoded, the URL is invalid, or the HTTP client
    /// cannot be built.
    pub async fn from_config(config: &DeliveryConfig) -> anyhow::Result<Sink> {
        match &config.sink {
            SinkConfig::Http { url } => {
                let signer = delivery_signer(config)?
                    .context("delivery.url needs delivery.secret to sign what it sends")?;
                Ok(Sink::Http(HttpSink::new(
                    url,
                    Arc::new(signer),
                    config.timeout,
                )?))
            }
            SinkConfig::Nats(nats) => Ok(Sink::Nats(Box::new(
                NatsSink::connect(nats, config.timeout).await?,
            ))),
        }
    }

    /// The `sink` label of the metrics.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Sink::Http(_) => "http",
            Sink::Nats(_) => "nats",
        }
    }

    /// Sends one event; `attempt` counts this one (1 = the first).
    pub async fn send(&self, event: &StoredEvent, attempt: u32) -> Attempt {
        match self {
            Sink::Http(http) => http.send(event, attempt).await,
            Sink::Nats(nats) => nats.send(event).await,
        }
    }
}

/// The signer of `delivery.secret`, if set.
///
/// # Errors
/// The secret cannot be read, or is not a `whsec_` secret.
pub fn delivery_signer(config: &DeliveryConfig) -> anyhow::Result<Option<Signer>> {
    let Some(secret) = &config.secret else {
        return Ok(None);
    };
    let bytes = secret
        .resolve()
        .with_context(|| format!("reading delivery.secret ({secret})"))?;
    let signer = Signer::from_secret(&bytes).map_err(|why| {
        anyhow::anyhow!(
            "delivery.secret ({secret}) is not a Standard Webhooks secret: {why}; generate one \
             with e.g. `echo whsec_$(head -c 32 /dev/urandom | base64)`"
        )
    })?;
    Ok(Some(signer))
}

/// The HTTP client hookwall uses to reach the application (deliveries and validation forwards).
///
/// # Errors
/// If the TLS stack cannot be set up.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    crate::receiver::install_crypto_provider();
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

    async fn send(&self, event: &StoredEvent, attempt: u32) -> Attempt {
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

/// A POST of `body` to `url` with the Standard Webhooks headers for message `id`, signed now.
pub fn signed_post(
    client: &reqwest::Client,
    url: reqwest::Url,
    signer: &Signer,
    id: &str,
    content_type: &str,
    body: Bytes,
) -> reqwest::RequestBuilder {
    let timestamp = unix_ms(SystemTime::now()) / 1000;
    let signature = signer.sign(id, timestamp, &body);
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, header_value(content_type))
        .header("webhook-id", header_value(id))
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature)
        .body(body)
}

/// A header value from stored text; ids and routes are visible ASCII in practice (the verifiers
/// read them from headers or JSON), and anything else is percent-free hex rather than an error.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        HeaderValue::from_str(&hex::encode(text.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    })
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

    async fn send(&self, event: &StoredEvent) -> Attempt {
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

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

/// Takes due events from the store to the sink until stopped.
pub struct Worker {
    sink: Arc<Sink>,
    policy: Policy,
    concurrency: usize,
    store: StoreHandle,
    reader: Arc<Reader>,
    metrics: DeliveryMetrics,
}

impl Worker {
    /// A worker for `config`, reading the store at `store.path()` through its own connection.
    ///
    /// # Errors
    /// The sink cannot be built or the store cannot be opened for reading.
    pub async fn new(
        config: &DeliveryConfig,
        store: StoreHandle,
        metrics: DeliveryMetrics,
    ) -> anyhow::Result<Self> {
        let sink = Sink::from_config(config).await?;
        let reader = Reader::open(store.path()).with_context(|| {
            format!(
                "opening the event store {} for the delivery worker",
                store.path().display()
            )
        })?;
        let label = sink.label();
        for result in ["delivered", "retry", "dead"] {
            let _ = metrics.deliveries.get_or_create(&DeliveryLabels {
                sink: label,
                result,
            });
        }
        Ok(Self {
            sink: Arc::new(sink),
            policy: Policy::from_config(config),
            concurrency: config.concurrency.max(1),
            store,
            reader: Arc::new(reader),
            metrics,
        })
    }

    /// The sink's metrics label (`http` or `nats`).
    #[must_use]
    pub fn sink_label(&self) -> &'static str {
        self.sink.label()
    }

    /// Delivers until `stop` turns true, then lets attempts in flight finish (at most
    /// [`STOP_GRACE`]).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut inserted = self.store.inserted();
        // Events being attempted, by the task attempting them (a panicked task reports only its
        // task id).
        let mut in_flight: HashMap<tokio::task::Id, i64> = HashMap::new();
        let mut attempts: JoinSet<()> = JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let wake = match self.fill(&mut in_flight, &mut attempts).await {
                Ok(wake) => wake,
                Err(e) => {
                    tracing::error!("delivery: reading due events failed: {e:#}; retrying");
                    IDLE_POLL
                }
            };
            tokio::select! {
                Some(done) = attempts.join_next_with_id() => {
                    let task = match done {
                        Ok((task, ())) => task,
                        Err(e) => {
                            tracing::error!("delivery: an attempt failed to complete: {e}");
                            e.id()
                        }
                    };
                    in_flight.remove(&task);
                }
                _ = inserted.changed() => {}
                () = tokio::time::sleep(wake) => {}
                _ = stop.changed() => {}
            }
        }
        let grace = tokio::time::timeout(STOP_GRACE, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        if grace.is_err() {
            tracing::warn!(
                in_flight = attempts.len(),
                "delivery: stopping with attempts in flight; they stay pending and are sent \
                 again (same id) after the restart"
            );
            attempts.abort_all();
        }
    }

    /// Starts attempts for due events while there is room; returns how long to sleep before
    /// looking again if nothing else wakes the worker.
    async fn fill(
        &self,
        in_flight: &mut HashMap<tokio::task::Id, i64>,
        attempts: &mut JoinSet<()>,
    ) -> anyhow::Result<Duration> {
        let now = unix_ms(SystemTime::now());
        let room = self.concurrency.saturating_sub(in_flight.len());
        // Events in flight are still pending in the store: ask for enough to skip them. Both
        // reads go in one trip to the blocking pool.
        let limit = if room > 0 { room + in_flight.len() } else { 0 };
        let reader = Arc::clone(&self.reader);
        let (due, next) = tokio::task::spawn_blocking(move || {
            let due = if limit > 0 {
                reader.due(now, limit)?
            } else {
                Vec::new()
            };
            Ok::<_, crate::store::StoreError>((due, reader.next_due_after(now)?))
        })
        .await
        .context("the store read task")??;
        let busy: HashSet<i64> = in_flight.values().copied().collect();
        for event in due.into_iter().filter(|e| !busy.contains(&e.id)).take(room) {
            let id = event.id;
            let task = attempts.spawn(attempt(
                Arc::clone(&self.sink),
                self.policy,
                self.store.clone(),
                self.metrics.clone(),
                event,
            ));
            in_flight.insert(task.id(), id);
        }
        Ok(next.map_or(IDLE_POLL, |at| {
            Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(IDLE_POLL)
        }))
    }
}

/// One attempt of one event, and the record of its result.
async fn attempt(
    sink: Arc<Sink>,
    policy: Policy,
    store: StoreHandle,
    metrics: DeliveryMetrics,
    event: StoredEvent,
) {
    let number = event.attempts.saturating_add(1);
    let label = sink.label();
    let started = Instant::now();
    let result = sink.send(&event, number).await;
    metrics
        .attempt_duration
        .get_or_create(&SinkLabels { sink: label })
        .observe(started.elapsed().as_secs_f64());
    let now = unix_ms(SystemTime::now());
    let (update, result_label) = match result {
        Attempt::Delivered => {
            let age = Duration::from_millis(u64::try_from(now - event.received_at_ms).unwrap_or(0));
            metrics
                .latency
                .get_or_create(&SinkLabels { sink: label })
                .observe(age.as_secs_f64());
            tracing::debug!(id = event.id, event_id = %event.event_id, attempt = number, "delivered");
            (
                Update::Delivered {
                    id: event.id,
                    attempts: number,
                    at_ms: now,
                },
                "delivered",
            )
        }
        Attempt::Rejected { error } => {
            tracing::warn!(id = event.id, event_id = %event.event_id, attempt = number, %error,
                "the application refused an event; it is a dead letter now (`hookwall queue retry` replays it)");
            (
                Update::Dead {
                    id: event.id,
                    attempts: number,
                    error: format!("{error}; not retried (a 4xx other than 408/429 is final)"),
                },
                "dead",
            )
        }
        Attempt::Failed { error, retry_after } => match policy.after_failure(
            number,
            event.received_at_ms,
            now,
            retry_after,
            fastrand::f64(),
        ) {
            Next::RetryAt(at) => {
                tracing::info!(id = event.id, event_id = %event.event_id, attempt = number, %error,
                    retry_in_ms = at - now, "delivery failed; will retry");
                (
                    Update::Retry {
                        id: event.id,
                        attempts: number,
                        next_at_ms: at,
                        error,
                    },
                    "retry",
                )
            }
            Next::Dead(why) => {
                tracing::warn!(id = event.id, event_id = %event.event_id, attempt = number, %error,
                    "{why}; the event is a dead letter now (`hookwall queue retry` replays it)");
                (
                    Update::Dead {
                        id: event.id,
                        attempts: number,
                        error: format!("{error}; {why}"),
                    },
                    "dead",
                )
            }
        },
    };
    metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            sink: label,
            result: result_label,
        })
        .inc();
    if result_label == "dead" {
        metrics.dead_letters.inc();
    }
    if let Err(e) = store.update(vec![update]).await {
        // The row stays as it was (pending, due): it is attempted again, with the same id. The
        // pause keeps a failing disk from turning that into a busy loop.
        tracing::error!(
            id = event.id,
            "delivery: recording the result failed: {e}; the event stays pending"
        );
        tokio::time::sleep(IDLE_POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Queue upkeep: gauges and retention
// ---------------------------------------------------------------------------------------------

/// Refreshes the queue gauges every [`GAUGES_EVERY`] until `stop`.
pub async fn watch_queue(
    reader: Arc<Reader>,
    metrics: DeliveryMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(GAUGES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let reader = Arc::clone(&reader);
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::store::StoreError>((reader.counts()?, reader.oldest_pending_ms()?))
        })
        .await;
        match read {
            Ok(Ok((counts, oldest))) => {
                for (state, n) in [
                    ("pending", counts.pending),
                    ("delivered", counts.delivered),
                    ("dead", counts.dead),
                ] {
                    metrics
                        .queue_events
                        .get_or_create(&crate::metrics::StateLabels { state })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                let age_ms = oldest.map_or(0, |at| (unix_ms(SystemTime::now()) - at).max(0));
                #[expect(clippy::cast_precision_loss, reason = "an age in ms fits f64 exactly")]
                metrics.oldest_pending_age.set(age_ms as f64 / 1e3);
            }
            Ok(Err(e)) => tracing::warn!("reading the queue for its gauges failed: {e}"),
            Err(e) => tracing::warn!("the queue gauge task failed: {e}"),
        }
    }
}

/// Purges delivered events older than `retention` now and every [`PURGE_EVERY`] until `stop`.
/// Pending and dead events are never purged.
pub async fn purge_loop(store: StoreHandle, retention: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let before = unix_ms(SystemTime::now()).saturating_sub(duration_ms(retention));
        match store.purge_delivered(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                purged = n,
                retention = %humantime::format_duration(retention),
                "purged delivered events older than store.retention"
            ),
            Err(e) => tracing::error!("purging delivered events failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        max_attempts: 5,
        max_age: Duration::from_secs(3600),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    };

    #[test]
    fn statuses_are_classified_as_the_issue_says() {
        assert_eq!(classify(StatusCode::OK, None), Attempt::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Attempt::Delivered);
        for final_status in [400, 401, 403, 404, 409, 410, 422] {
            let status = StatusCode::from_u16(final_status).expect("valid");
            assert!(
                matches!(classify(status, None), Attempt::Rejected { .. }),
                "{status} must be final"
            );
        }
        for retried in [408, 429, 500, 502, 503, 504, 301, 302] {
            let status = StatusCode::from_u16(retried).expect("valid");
            assert!(
                matches!(classify(status, None), Attempt::Failed { .. }),
                "{status} must be retried"
            );
        }
        let asked = Some(Duration::from_secs(7));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, asked),
            Attempt::Failed {
                error: "the application answered HTTP 429 Too Many Requests".into(),
                retry_after: asked
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let secs: Vec<u64> = (1..=9).map(|n| POLICY.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // No overflow however many failures.
        assert_eq!(POLICY.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        let now = 1_000_000;
        for (failures, jitter, expect_ms) in [(1, 0.0, 500), (1, 0.999_999, 999), (3, 0.5, 3000)] {
            assert_eq!(
                POLICY.after_failure(failures, now, now, None, jitter),
                Next::RetryAt(now + expect_ms),
                "failures {failures} jitter {jitter}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let now = 5_000_000;
        assert_eq!(
            POLICY.after_failure(1, now, now, Some(Duration::from_secs(30)), 0.0),
            Next::RetryAt(now + 30_000)
        );
        assert_eq!(
            POLICY.after_failure(1, now, now, Some(Duration::from_secs(600)), 0.0),
            Next::RetryAt(now + 60_000)
        );
    }

    #[test]
    fn gives_up_at_max_attempts_and_max_age_but_tries_once_at_the_deadline() {
        let received = 10_000_000;
        assert!(matches!(
            POLICY.after_failure(5, received, received + 1, None, 0.0),
            Next::Dead(why) if why.contains("max_attempts")
        ));
        let deadline = received + 3_600_000;
        assert!(matches!(
            POLICY.after_failure(2, received, deadline, None, 0.0),
            Next::Dead(why) if why.contains("max_age")
        ));
        // 10 s before the deadline with a 60 s backoff: the last retry is at the deadline.
        assert_eq!(
            POLICY.after_failure(
                4,
                received,
                deadline - 10_000,
                Some(Duration::from_secs(60)),
                0.0
            ),
            Next::RetryAt(deadline)
        );
    }

    #[tokio::test]
    async fn the_retention_purge_removes_old_delivered_events_only() {
        use crate::store::{HashedBody, NewEvent, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("events.db")).expect("open");
        let handle = store.handle();
        let now = unix_ms(SystemTime::now());
        let hour = 3_600_000;
        let mut ids = Vec::new();
        for name in ["old-delivered", "new-delivered", "old-dead", "old-pending"] {
            let event = NewEvent {
                route: "/r".to_owned(),
                event_id: name.to_owned(),
                kind: "test".to_owned(),
                received_at_ms: now - 3 * hour,
                body: HashedBody::new(b"{}".to_vec()),
                headers: Vec::new(),
            };
            ids.push(handle.insert(event).await.expect("insert").id());
        }
        let updates = vec![
            Update::Delivered {
                id: ids[0],
                attempts: 1,
                at_ms: now - 2 * hour,
            },
            Update::Delivered {
                id: ids[1],
                attempts: 1,
                at_ms: now - hour / 2,
            },
            Update::Dead {
                id: ids[2],
                attempts: 3,
                error: "HTTP 400".to_owned(),
            },
        ];
        assert_eq!(handle.update(updates).await.expect("update"), 3);
        // The loop purges at once (its first tick), then waits an hour: stop it after the first.
        let (stop_tx, stop_rx) = watch::channel(false);
        let purge = tokio::spawn(purge_loop(
            handle.clone(),
            Duration::from_secs(3600),
            stop_rx,
        ));
        let reader = store.reader();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reader.get(ids[0]).expect("read").is_some() {
            assert!(
                Instant::now() < deadline,
                "the old delivered event was not purged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(true).expect("stop");
        purge.await.expect("the purge task");
        for (id, what) in [
            (ids[1], "a recent delivered"),
            (ids[2], "a dead"),
            (ids[3], "a pending"),
        ] {
            assert!(
                reader.get(id).expect("read").is_some(),
                "{what} event was purged"
            );
        }
    }

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
