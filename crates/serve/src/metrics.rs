//! Prometheus metrics of `/metrics`: requests by route and status, latency histograms by
//! route, batch sizes and queue depth by model, requests in flight.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The server's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `kiln_requests_total{route, status}`.
    pub requests: IntCounterVec,
    /// `kiln_request_duration_seconds{route}`.
    pub latency: HistogramVec,
    /// `kiln_batch_size{model}`: inputs per model call.
    pub batch_size: HistogramVec,
    /// `kiln_queue_depth{model}`: requests waiting for the model.
    pub queue_depth: IntGaugeVec,
    /// `kiln_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `kiln_rejected_total{model}`: requests refused because a model's queue was full.
    pub rejected: IntCounterVec,
    /// `kiln_refused_total{reason}`: connections and requests refused before any model:
    /// `connections` (the cap), `client_share` (a client's requests in flight),
    /// `body_budget` (bytes of bodies in flight), `host` (a `Host` not this server's).
    pub refused: IntCounterVec,
}

impl Metrics {
    /// Fresh metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("kiln_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kiln_request_duration_seconds",
                "Time from request to response headers, by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new("kiln_batch_size", "Inputs per model call, by model")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["model"],
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new("kiln_queue_depth", "Requests waiting for a model"),
            &["model"],
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new("kiln_requests_in_flight", "Requests being handled").expect("valid");
        let rejected = IntCounterVec::new(
            Opts::new(
                "kiln_rejected_total",
                "Requests refused because a model's queue was full",
            ),
            &["model"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "kiln_refused_total",
                "Connections and requests refused before reaching a model, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch_size.clone()),
            Box::new(queue_depth.clone()),
            Box::new(in_flight.clone()),
            Box::new(rejected.clone()),
            Box::new(refused.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            latency,
            batch_size,
            queue_depth,
            in_flight,
            rejected,
            refused,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
