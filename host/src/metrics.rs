//! Prometheus metrics: HTTP requests by route and status, request latency, allocations, and
//! per-pool size and utilization (set from the store at each scrape, so never stale).

use crate::store::Pool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStatusLabels {
    pub pool: String,
    pub status: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub allocations: Counter,
    pool_size: Family<PoolLabels, FloatGauge>,
    pool_utilization: Family<PoolLabels, FloatGauge>,
    pool_addresses: Family<PoolStatusLabels, FloatGauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let allocations = Counter::default();
        let pool_size = Family::<PoolLabels, FloatGauge>::default();
        let pool_utilization = Family::<PoolLabels, FloatGauge>::default();
        let pool_addresses = Family::<PoolStatusLabels, FloatGauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "allocations",
            "Addresses allocated through the API",
            allocations.clone(),
        );
        registry.register("pool_size", "Usable addresses in a pool", pool_size.clone());
        registry.register(
            "pool_utilization",
            "Held addresses / usable addresses",
            pool_utilization.clone(),
        );
        registry.register(
            "pool_addresses",
            "Addresses of a pool by status",
            pool_addresses.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            allocations,
            pool_size,
            pool_utilization,
            pool_addresses,
        }
    }

    /// Sets the pool gauges to the given pools, forgetting pools that are gone.
    pub fn set_pools(&self, pools: &[Pool]) {
        self.pool_size.clear();
        self.pool_utilization.clear();
        self.pool_addresses.clear();
        for p in pools {
            self.observe_pool(p);
        }
    }

    fn observe_pool(&self, pool: &Pool) {
        let stats = pool.stats();
        let l = PoolLabels {
            pool: pool.name.clone(),
        };
        self.pool_size.get_or_create(&l).set(stats.total as f64);
        self.pool_utilization
            .get_or_create(&l)
            .set(stats.utilization);
        for (status, n) in [
            ("available", stats.available),
            ("allocated", stats.allocated),
            ("reserved", stats.reserved),
            ("quarantine", stats.quarantine),
        ] {
            self.pool_addresses
                .get_or_create(&PoolStatusLabels {
                    pool: pool.name.clone(),
                    status,
                })
                .set(n as f64);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
