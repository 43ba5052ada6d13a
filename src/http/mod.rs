//! The HTTP side of `serve` (`[metrics] listen`): `GET /metrics` in the
//! Prometheus text format and `GET /healthz`. Business figures are counted
//! by the ledger at each scrape, so several gateway processes sharing one
//! ledger report the same; each process adds its own intake timings,
//! endpoint health and tasks.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::intake::{Gateway, IntakeError};
use crate::telemetry::Labels;

/// How long `/healthz` waits for the ledger before calling it down.
const LEDGER_PROBE: Duration = Duration::from_secs(3);

/// Business dates `settlegate_expected_files_late` looks back over.
const LATE_LOOKBACK_DAYS: u64 = 7;

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(gw)
}

/// Serve `router` on `listener` until `stop` says so.
pub async fn run(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let served = axum::serve(listener, router(gw))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    match encode(&gw).await {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            let e = gw.explain(e).await;
            tracing::error!(error = %e, "metrics: cannot read the ledger");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the ledger: {e}\n"),
            )
                .into_response()
        }
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The exposition: ledger figures read now, then this process's own.
pub async fn encode(gw: &Gateway) -> Result<String, IntakeError> {
    let mut registry = Registry::default();

    let files = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    for c in gw.ledger.file_counts().await? {
        let (p, ch, v) = (c.partner.as_str(), c.channel.as_str(), c.state.as_str());
        files
            .get_or_create(&labels(&[("partner", p), ("channel", ch), ("verdict", v)]))
            .inc_by(u64::try_from(c.files).unwrap_or_default());
        bytes
            .get_or_create(&labels(&[("partner", p), ("channel", ch)]))
            .inc_by(u64::try_from(c.bytes).unwrap_or_default());
    }
    registry.register(
        "settlegate_files",
        "Files that arrived, by partner, channel and verdict (from the ledger)",
        files,
    );
    registry.register(
        "settlegate_file_bytes",
        "Bytes that arrived, by partner and channel (from the ledger)",
        bytes,
    );

    let quarantined = Family::<Labels, Gauge>::default();
    for p in &gw.config.partners {
        let _ = quarantined.get_or_create(&labels(&[("partner", &p.id)]));
    }
    for (partner, n) in gw.ledger.quarantined_counts().await? {
        quarantined
            .get_or_create(&labels(&[("partner", &partner)]))
            .set(n);
    }
    registry.register(
        "settlegate_quarantined_files",
        "Files waiting in quarantine for an operator (drill, conflict, overlap, invalid)",
        quarantined,
    );

    let late = Family::<Labels, Gauge>::default();
    for p in &gw.config.partners {
        for e in &p.expect {
            let _ = late.get_or_create(&labels(&[("partner", &p.id), ("format", &e.format)]));
        }
    }
    let today = gw
        .clock
        .now()
        .with_timezone(&gw.config.timezone)
        .date_naive();
    for back in 0..=LATE_LOOKBACK_DAYS {
        let Some(date) = today.checked_sub_days(chrono::Days::new(back)) else {
            continue;
        };
        for row in gw.day_report(date, false).await?.rows {
            if row.status == crate::day::Status::Late {
                late.get_or_create(&labels(&[
                    ("partner", &row.partner),
                    ("format", &row.format),
                ]))
                .inc_by(i64::from(row.missing));
            }
        }
    }
    registry.register(
        "settlegate_expected_files_late",
        "Expected files missing after their deadline (business dates of the last 7 days)",
        late,
    );

    let deliveries = Family::<Labels, Counter>::default();
    for d in gw.ledger.delivery_counts().await? {
        deliveries
            .get_or_create(&labels(&[
                ("partner", &d.partner),
                ("state", d.state.as_str()),
            ]))
            .inc_by(u64::try_from(d.deliveries).unwrap_or_default());
    }
    registry.register(
        "settlegate_deliveries",
        "Outbound deliveries by partner and state (from the ledger)",
        deliveries,
    );

    let t = &gw.telemetry;
    registry.register(
        "settlegate_endpoint_last_success_timestamp_seconds",
        "Unix time of the last successful pickup from a partner's SFTP endpoint (this process)",
        t.endpoint_last_success.clone(),
    );
    registry.register(
        "settlegate_endpoint_failures",
        "Failed pickups from a partner's SFTP endpoint since this process started",
        t.endpoint_failures.clone(),
    );
    registry.register(
        "settlegate_intake_seconds",
        "Seconds from an arrival handed in to its verdict recorded (this process)",
        t.intake_seconds.clone(),
    );
    let up = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
    for (name, running) in t.tasks() {
        up.get_or_create(&labels(&[("task", &name)]))
            .set(i64::from(running));
    }
    registry.register(
        "settlegate_task_running",
        "1 while a channel task of this process runs",
        up,
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| IntakeError::Internal(format!("encode metrics: {e}")))?;
    Ok(text)
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    let mut failing: Vec<String> = Vec::new();
    let ledger = match tokio::time::timeout(LEDGER_PROBE, gw.ledger.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => {
            let e = gw.ledger.diagnose(e).await;
            failing.push("ledger".into());
            e.to_string()
        }
        Err(_) => {
            failing.push("ledger".into());
            format!("no answer within {} s", LEDGER_PROBE.as_secs())
        }
    };
    let tasks = gw.telemetry.tasks();
    for (name, running) in &tasks {
        if !running {
            failing.push(format!("task {name}"));
        }
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if failing.is_empty() { "ok" } else { "failing" },
        "failing": failing,
        "ledger": ledger,
        "tasks": tasks.iter().map(|(n, r)| (n.clone(), json!(if *r { "running" } else { "stopped" }))).collect::<serde_json::Map<_, _>>(),
    });
    (status, axum::Json(body)).into_response()
}
