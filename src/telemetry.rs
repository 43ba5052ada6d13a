//! What this process knows about itself and shows on `/metrics` and
//! `/healthz`: how long intakes take, when each SFTP endpoint last
//! answered, how often it failed, and whether each channel task still
//! runs. Business figures (files, quarantine, late files) are not kept
//! here: they come from the ledger, so every process sharing it agrees.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels as (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Process-local metrics and the state of its tasks.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Seconds from an arrival being handed in to its verdict recorded.
    pub intake_seconds: Histogram,
    /// Unix time of each endpoint's last successful pickup or upload of a delivery.
    pub endpoint_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Failed pickups or deliveries per endpoint (since this process started).
    pub endpoint_failures: Family<Labels, Counter>,
    /// Channel tasks by name: running or not.
    tasks: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            // 5 ms to ~80 s.
            intake_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            endpoint_last_success: Family::default(),
            endpoint_failures: Family::default(),
            tasks: Arc::default(),
        }
    }
}

fn endpoint_labels(partner: &str, endpoint: &str) -> Labels {
    vec![
        ("partner", partner.to_string()),
        ("endpoint", endpoint.to_string()),
    ]
}

impl Telemetry {
    pub fn endpoint_succeeded(&self, partner: &str, endpoint: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.endpoint_last_success
            .get_or_create(&endpoint_labels(partner, endpoint))
            .set(now);
        // A failure counter from zero shows the endpoint is watched.
        let _ = self
            .endpoint_failures
            .get_or_create(&endpoint_labels(partner, endpoint));
    }

    pub fn endpoint_failed(&self, partner: &str, endpoint: &str) {
        self.endpoint_failures
            .get_or_create(&endpoint_labels(partner, endpoint))
            .inc();
    }

    /// Run `task` under `name`, recorded as running until it ends.
    pub fn track<F: Future<Output = ()> + Send + 'static>(
        &self,
        name: String,
        task: F,
    ) -> impl Future<Output = ()> + Send + 'static {
        let tasks = self.tasks.clone();
        if let Ok(mut t) = tasks.lock() {
            t.insert(name.clone(), true);
        }
        async move {
            task.await;
            if let Ok(mut t) = tasks.lock() {
                t.insert(name, false);
            }
        }
    }

    /// Forget the tasks that ended (a stopped generation's, before a reload
    /// starts the next).
    pub fn forget_stopped(&self) {
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|_, running| *running);
        }
    }

    /// Every task by name, and whether it runs.
    pub fn tasks(&self) -> BTreeMap<String, bool> {
        self.tasks.lock().map(|t| t.clone()).unwrap_or_default()
    }
}
