//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Every series is per replica (Prometheus adds the instance), and no label carries an
//! organisation or a runtime: the page is about the server's health, not about tenants, so it
//! stays small whatever the fleet, and it leaks nothing when an operator exposes it to a monitoring
//! network. Routes are the matched route templates (`/v1/connect`), never raw paths, and
//! anything that matched no route is `unmatched`, so a scanner cannot grow the page either.
//!
//! Counters move when the event they count happened: entries and batches after their COMMIT,
//! refusals when the witness refuses. The pool gauges are read from the pool at each scrape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::messages::Stream;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::server::AppState;

/// What `/metrics` answers with: OpenMetrics text, which Prometheus negotiates and reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamLabels {
    stream: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BatchLabels {
    stream: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FlagLabels {
    stream: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    what: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ShedLabels {
    status: u16,
}

/// How a batch ended, as `atlasbridge_batches_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Committed and acknowledged.
    Acked,
    /// Committed, but nothing new joined the contiguous prefix (entries beyond a gap): no ack.
    Unacked,
    /// The payload was not a batch: answered with an error, nothing stored.
    Rejected,
    /// The database failed: nothing committed, the connection closed with 1013.
    Failed,
}

impl BatchOutcome {
    fn name(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::Unacked => "unacked",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

/// The server's metrics, shared by every request and connection of a replica.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    channels_open: Gauge,
    entries_ingested: Family<StreamLabels, Counter>,
    batches: Family<BatchLabels, Counter>,
    chain_flags: Family<FlagLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    shed: Family<ShedLabels, Counter>,
    tokens_issued: Counter,
    pool_max: Gauge,
    pool_size: Gauge,
    pool_available: Gauge,
    pool_waiters: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("channels_open", &self.channels_open.get())
            .finish_non_exhaustive()
    }
}

/// Request durations from 1 ms to about 33 s: a token call takes milliseconds, a WebSocket
/// upgrade is answered at once, and anything near the top is a database that is struggling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series registered, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("atlasbridge");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (for /v1/connect: until the upgrade), by method and route",
            http_duration.clone(),
        );
        let channels_open = Gauge::default();
        registry.register(
            "runtime_channels_open",
            "Runtime control channels (WebSocket) open on this replica",
            channels_open.clone(),
        );
        let entries_ingested = Family::<StreamLabels, Counter>::default();
        registry.register(
            "entries_ingested",
            "Entries stored for the first time (resent ones are not counted), after COMMIT",
            entries_ingested.clone(),
        );
        let batches = Family::<BatchLabels, Counter>::default();
        registry.register(
            "batches",
            "audit_batch messages by stream and outcome (acked, unacked, rejected, failed)",
            batches.clone(),
        );
        let chain_flags = Family::<FlagLabels, Counter>::default();
        registry.register(
            "chain_flags",
            "Findings that flagged a chain, by stream and kind (hash_mismatch, prev_mismatch, fork, rewound, malformed)",
            chain_flags.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "witness_refusals",
            "Heads (from hello and heartbeats) and checkpoints the witness refused",
            refusals.clone(),
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "load_shed",
            "Requests answered 429 or 503 with Retry-After",
            shed.clone(),
        );
        let tokens_issued = Counter::default();
        registry.register(
            "tokens_issued",
            "Access tokens issued by POST /v1/auth/token",
            tokens_issued.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_size",
            "Database connections the pool may open (database.pool_size)",
            pool_max.clone(),
        );
        let pool_size = Gauge::default();
        registry.register(
            "db_pool_size",
            "Database connections the pool holds now",
            pool_size.clone(),
        );
        let pool_available = Gauge::default();
        registry.register(
            "db_pool_available",
            "Pooled database connections idle now",
            pool_available.clone(),
        );
        let pool_waiters = Gauge::default();
        registry.register(
            "db_pool_waiters",
            "Requests waiting for a pooled database connection now",
            pool_waiters.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            channels_open,
            entries_ingested,
            batches,
            chain_flags,
            refusals,
            shed,
            tokens_issued,
            pool_max,
            pool_size,
            pool_available,
            pool_waiters,
        }
    }

    /// Counts one answered HTTP request.
    fn http_request(&self, method: &Method, route: String, status: StatusCode, took: Duration) {
        let method = method_name(method);
        self.http_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        let status = status.as_u16();
        self.http_requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
        if status == StatusCode::TOO_MANY_REQUESTS.as_u16()
            || status == StatusCode::SERVICE_UNAVAILABLE.as_u16()
        {
            self.shed.get_or_create(&ShedLabels { status }).inc();
        }
    }

    /// Marks a control channel open until the returned guard is dropped.
    pub fn channel_opened(&self) -> ChannelOpen {
        self.channels_open.inc();
        ChannelOpen {
            gauge: self.channels_open.clone(),
        }
    }

    /// Counts a committed batch: the entries it stored, whether it was acknowledged, and each
    /// finding (`kind`) it flagged the chain with.
    pub fn batch_committed(
        &self,
        stream: Stream,
        stored: usize,
        acked: bool,
        findings: &[&'static str],
    ) {
        let name = stream.name();
        self.entries_ingested
            .get_or_create(&StreamLabels { stream: name })
            .inc_by(stored as u64);
        let outcome = if acked {
            BatchOutcome::Acked
        } else {
            BatchOutcome::Unacked
        };
        self.batch(Some(stream), outcome);
        for kind in findings {
            self.chain_flagged(stream, kind);
        }
    }

    /// Counts a batch that ended as `outcome`; `None` when its stream could not be read.
    pub fn batch(&self, stream: Option<Stream>, outcome: BatchOutcome) {
        self.batches
            .get_or_create(&BatchLabels {
                stream: stream.map_or("unknown", Stream::name),
                outcome: outcome.name(),
            })
            .inc();
    }

    /// Counts a finding that flagged a chain of `stream`.
    pub fn chain_flagged(&self, stream: Stream, kind: &'static str) {
        self.chain_flags
            .get_or_create(&FlagLabels {
                stream: stream.name(),
                kind,
            })
            .inc();
    }

    /// Counts a head the witness refused (`kind`: `forked` or `rewound`), which also flags its
    /// chain.
    pub fn head_refused(&self, stream: Stream, kind: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels { what: "head" })
            .inc();
        let chain_kind = if kind == "forked" { "fork" } else { "rewound" };
        self.chain_flagged(stream, chain_kind);
    }

    /// Counts a checkpoint the witness refused.
    pub fn checkpoint_refused(&self) {
        self.refusals
            .get_or_create(&RefusalLabels { what: "checkpoint" })
            .inc();
    }

    /// Counts an issued access token.
    pub fn token_issued(&self) {
        self.tokens_issued.inc();
    }

    /// The page, with the pool gauges read from `pool` now.
    pub fn render(&self, pool: deadpool_postgres::Status) -> Result<String, std::fmt::Error> {
        self.pool_max.set(gauge_value(pool.max_size));
        self.pool_size.set(gauge_value(pool.size));
        self.pool_available.set(gauge_value(pool.available));
        self.pool_waiters.set(gauge_value(pool.waiting));
        let mut page = String::new();
        prometheus_client::encoding::text::encode(&mut page, &self.registry)?;
        Ok(page)
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The method as a label: the standard ones by name, anything else `other`, so that a client
/// inventing methods cannot add series.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// An open control channel; dropping it closes it in the gauge (also when its task panics).
#[derive(Debug)]
pub struct ChannelOpen {
    gauge: Gauge,
}

impl Drop for ChannelOpen {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Middleware: counts and times every request by its route template.
pub async fn track_http(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.http_request(&method, route, response.status(), started.elapsed());
    response
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.render(state.db.status()) {
        Ok(page) => {
            let mut response = page.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        Err(e) => {
            warn!(error = %e, "cannot render the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> deadpool_postgres::Status {
        deadpool_postgres::Status {
            max_size: 8,
            size: 3,
            available: 2,
            waiting: 1,
        }
    }

    /// The value of the sample `line_start` (name and labels) on `page`.
    fn sample(page: &str, line_start: &str) -> Option<f64> {
        page.lines()
            .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
    }

    #[test]
    fn unlabelled_series_show_from_the_start_and_the_pool_is_read_at_render() {
        let metrics = Metrics::new();
        let page = metrics.render(pool()).unwrap();
        // Labelled families show a series once it was first counted.
        for name in [
            "atlasbridge_runtime_channels_open",
            "atlasbridge_tokens_issued",
            "atlasbridge_db_pool_max_size",
            "atlasbridge_db_pool_size",
            "atlasbridge_db_pool_available",
            "atlasbridge_db_pool_waiters",
        ] {
            assert!(
                page.contains(&format!("# HELP {name} ")),
                "{name} in\n{page}"
            );
        }
        assert_eq!(sample(&page, "atlasbridge_db_pool_max_size "), Some(8.0));
        assert_eq!(sample(&page, "atlasbridge_db_pool_waiters "), Some(1.0));
        assert!(page.ends_with("# EOF\n"));
    }

    #[test]
    fn requests_sheds_batches_and_channels_are_counted() {
        let metrics = Metrics::new();
        metrics.http_request(
            &Method::POST,
            "/v1/auth/token".to_owned(),
            StatusCode::TOO_MANY_REQUESTS,
            Duration::from_millis(3),
        );
        metrics.http_request(
            &Method::from_bytes(b"BREW").unwrap(),
            UNMATCHED.to_owned(),
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        metrics.batch_committed(Stream::Trace, 5, true, &["prev_mismatch"]);
        metrics.batch(None, BatchOutcome::Rejected);
        metrics.head_refused(Stream::Audit, "forked");
        let open = metrics.channel_opened();
        let page = metrics.render(pool()).unwrap();
        assert_eq!(
            sample(
                &page,
                "atlasbridge_http_requests_total{method=\"POST\",route=\"/v1/auth/token\",status=\"429\"}"
            ),
            Some(1.0),
            "{page}"
        );
        assert_eq!(
            sample(&page, "atlasbridge_load_shed_total{status=\"429\"}"),
            Some(1.0)
        );
        assert!(page.contains("method=\"other\",route=\"unmatched\",status=\"404\""));
        assert_eq!(
            sample(
                &page,
                "atlasbridge_entries_ingested_total{stream=\"trace\"}"
            ),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &page,
                "atlasbridge_batches_total{stream=\"unknown\",outcome=\"rejected\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &page,
                "atlasbridge_chain_flags_total{stream=\"audit\",kind=\"fork\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&page, "atlasbridge_runtime_channels_open "),
            Some(1.0)
        );
        drop(open);
        let page = metrics.render(pool()).unwrap();
        assert_eq!(
            sample(&page, "atlasbridge_runtime_channels_open "),
            Some(0.0)
        );
    }
}
