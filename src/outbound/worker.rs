//! Delivering: one attempt at a delivery (by `settlegate send` and by
//! `serve`), `serve`'s loop per upload endpoint, and the resolution of
//! attempts a process left `sending` when it died.
//!
//! An attempt belongs to the process that took it (the ledger's
//! compare-and-set from `queued` or `failed`), which says it is alive every
//! few seconds; only an attempt whose process stopped saying so is taken
//! over and resolved from how far it got and what the partner's side holds.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::OutboundError;
use super::state::{RemoteSide, Resolution, resolve};
use super::upload::{self, UploadError};
use crate::channels::ssh::SftpConnection;
use crate::config::{Endpoint, Upload};
use crate::intake::{Gateway, gateway_actor, process_owner};
use crate::ledger::{AttemptEnd, DeliveryRow, Staleness};
use crate::model::{DeliveryState, UploadProgress};

/// Queued deliveries to an endpoint without a schedule are looked for this often.
const POLL: Duration = Duration::from_secs(1);
/// Failed deliveries to an endpoint without a schedule are tried again this often.
const RETRY_FAILED: Duration = Duration::from_secs(600);

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Attempted {
    Delivered(DeliveryRow),
    /// Failed after the endpoint's retries; tried again later.
    Failed(DeliveryRow),
    /// The endpoint could not be reached: the delivery is queued again.
    Unreachable(DeliveryRow),
    /// Not this process's to send (another has it, or it is no longer due).
    Elsewhere(DeliveryRow),
}

impl Attempted {
    pub fn row(&self) -> &DeliveryRow {
        match self {
            Attempted::Delivered(r)
            | Attempted::Failed(r)
            | Attempted::Unreachable(r)
            | Attempted::Elsewhere(r) => r,
        }
    }
}

fn upload_of<'a>(
    gw: &'a Gateway,
    d: &DeliveryRow,
) -> Result<(&'a Endpoint, &'a Upload), OutboundError> {
    let endpoint = d.endpoint.as_deref().unwrap_or_default();
    gw.config
        .partner(&d.partner)
        .and_then(|p| p.endpoint(endpoint))
        .and_then(|e| e.upload.as_ref().map(|u| (e, u)))
        .ok_or_else(|| OutboundError::UnknownEndpoint {
            partner: d.partner.clone(),
            endpoint: endpoint.to_string(),
        })
}

impl Gateway {
    /// One attempt at a queued or failed delivery, through `conn` (opened
    /// when `None`, kept for the next delivery to the same endpoint), with
    /// the endpoint's retries. `requeue_unreachable`: an endpoint that
    /// cannot be reached puts the delivery back in the queue (`send`, for
    /// `serve` to retry) instead of failing it.
    pub async fn attempt(
        &self,
        d: &DeliveryRow,
        conn: &mut Option<SftpConnection>,
        requeue_unreachable: bool,
    ) -> Result<Attempted, OutboundError> {
        let actor = gateway_actor();
        let owner = process_owner();
        let now = Utc::now;
        if !self
            .ledger
            .start_attempt(d.id, d.state, owner, now(), &actor)
            .await?
        {
            let row = self.need_delivery(d.id).await?;
            return Ok(Attempted::Elsewhere(row));
        }
        self.run_attempt(d.id, conn, requeue_unreachable).await
    }

    /// The attempt this process holds: upload (or resume) with retries,
    /// then record how it ended.
    async fn run_attempt(
        &self,
        id: i64,
        conn: &mut Option<SftpConnection>,
        requeue_unreachable: bool,
    ) -> Result<Attempted, OutboundError> {
        let owner = process_owner();
        let actor = gateway_actor();
        let d = self.need_delivery(id).await?;
        let (ep, up) = upload_of(self, &d)?;
        let alive = self.keep_alive(id);
        let mut delays = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(ep.retry.initial)
                .with_max_delay(ep.retry.max)
                .with_max_times(ep.retry.retries as usize)
                .with_jitter(),
        );
        let result = loop {
            let step = async {
                if conn.is_none() {
                    *conn = Some(upload::connect(ep).await?);
                }
                let c = conn.as_ref().ok_or_else(|| {
                    UploadError::Ssh(crate::channels::ssh::SshError::Sftp {
                        addr: ep.host.clone(),
                        message: "no connection".into(),
                    })
                })?;
                self.resume(c, up, id).await
            };
            match step.await {
                Ok(r) => break Ok(r),
                Err(e) if e.is_retried() && !e.is_unreachable() => match delays.next() {
                    Some(wait) => {
                        tracing::warn!(delivery_id = id, endpoint = %ep.name, retry_in = ?wait, error = %e, "upload interrupted; retrying");
                        // A fresh connection: the old one may be the fault.
                        if let Some(c) = conn.take() {
                            c.close().await;
                        }
                        tokio::time::sleep(wait).await;
                    }
                    None => break Err(e),
                },
                Err(e) => break Err(e),
            }
        };
        alive.abort();
        match &result {
            Ok(Some(_)) => self.telemetry.endpoint_succeeded(&d.partner, &ep.name),
            _ => self.telemetry.endpoint_failed(&d.partner, &ep.name),
        }
        let now = Utc::now();
        let attempted = match result {
            Ok(Some(remote_path)) => {
                self.ledger
                    .end_attempt(
                        id,
                        owner,
                        AttemptEnd::Delivered {
                            remote_path: &remote_path,
                        },
                        now,
                        &actor,
                    )
                    .await?;
                tracing::info!(delivery_id = id, partner = %d.partner, endpoint = %ep.name, remote_path = %remote_path.escape_debug(), "delivered");
                Attempted::Delivered(self.need_delivery(id).await?)
            }
            Ok(None) => {
                let error = "the bytes were uploaded but neither the temporary nor the final name is on the partner's side now: the file may have been taken already; check with the partner before `settlegate resend`";
                self.ledger
                    .end_attempt(id, owner, AttemptEnd::Failed { error }, now, &actor)
                    .await?;
                tracing::error!(delivery_id = id, partner = %d.partner, endpoint = %ep.name, "{error}");
                Attempted::Failed(self.need_delivery(id).await?)
            }
            Err(e) => {
                if let Some(c) = conn.take() {
                    // Nothing half-done stays on the partner's side (best
                    // effort: the link may be what failed).
                    if !e.is_unreachable() {
                        for name in
                            std::iter::once(d.name.as_str()).chain(d.control_name.as_deref())
                        {
                            let temp = upload::remote_path(&up.dir, &up.temp_name(name));
                            if let Err(x) = upload::remove_if_there(&c, &temp).await {
                                tracing::warn!(delivery_id = id, temp = %temp.escape_debug(), error = %x, "cannot remove the temporary file");
                            }
                        }
                    }
                    c.close().await;
                }
                let error = e.to_string();
                let unreachable = e.is_unreachable();
                let end = if unreachable && requeue_unreachable {
                    AttemptEnd::Requeued { error: &error }
                } else {
                    AttemptEnd::Failed { error: &error }
                };
                self.ledger.end_attempt(id, owner, end, now, &actor).await?;
                tracing::error!(delivery_id = id, partner = %d.partner, endpoint = %ep.name, error = %error, "delivery not made; tried again later");
                let row = self.need_delivery(id).await?;
                if unreachable && requeue_unreachable {
                    Attempted::Unreachable(row)
                } else {
                    Attempted::Failed(row)
                }
            }
        };
        self.delivery_receipt(id).await;
        Ok(attempted)
    }

    /// Upload, or take up where the attempt got to: `Some(final path)` when
    /// the file is in place, `None` when it cannot be known whether the
    /// partner has it already (see [`Resolution::Ambiguous`]).
    async fn resume(
        &self,
        conn: &SftpConnection,
        up: &Upload,
        id: i64,
    ) -> Result<Option<String>, UploadError> {
        let d = self.need_delivery(id).await.map_err(|e| match e {
            OutboundError::Ledger(l) => UploadError::Ledger(l),
            other => UploadError::Ledger(crate::ledger::LedgerError::State(other.to_string())),
        })?;
        let final_path = upload::remote_path(&up.dir, &d.name);
        if d.progress.is_some() {
            let temp_path = upload::remote_path(&up.dir, &up.temp_name(&d.name));
            let remote = RemoteSide {
                temp: upload::remote_size(conn, &temp_path).await?.is_some(),
                final_size: upload::remote_size(conn, &final_path).await?,
            };
            match resolve(d.progress, remote, d.size as u64) {
                Resolution::Delivered => {
                    upload::finish(conn, up, &d).await?;
                    self.ledger
                        .set_progress(
                            id,
                            process_owner(),
                            UploadProgress::Renamed,
                            &final_path,
                            Utc::now(),
                        )
                        .await?;
                    return Ok(Some(final_path));
                }
                Resolution::Ambiguous => return Ok(None),
                Resolution::UploadAgain => {
                    for name in std::iter::once(d.name.as_str()).chain(d.control_name.as_deref()) {
                        upload::remove_if_there(
                            conn,
                            &upload::remote_path(&up.dir, &up.temp_name(name)),
                        )
                        .await?;
                    }
                }
            }
        }
        upload::upload(self, conn, up, &d).await.map(Some)
    }

    async fn need_delivery(&self, id: i64) -> Result<DeliveryRow, OutboundError> {
        self.ledger
            .delivery(id)
            .await?
            .ok_or(OutboundError::NoSuchDelivery(id))
    }

    /// Say every few seconds that this process's attempt is alive, until
    /// the returned task is aborted.
    fn keep_alive(&self, id: i64) -> tokio::task::JoinHandle<()> {
        let ledger = self.ledger.clone();
        // A third of the lease time: an attempt silent for a whole lease
        // time belongs to a process that died.
        let every = self.config.lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = ledger.heartbeat(id, process_owner(), Utc::now()).await {
                    tracing::warn!(delivery_id = id, error = %e, "delivery heartbeat failed");
                }
            }
        })
    }

    /// Take over and finish the attempts at uploads to `partner`'s
    /// `endpoint` (whose lease this node holds) of processes that died
    /// mid-upload: silent for `lease_seconds` by the database's clock.
    pub async fn resolve_stale_attempts(
        &self,
        partner: &str,
        endpoint: &str,
    ) -> Result<usize, OutboundError> {
        let lease =
            chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(30));
        let stale = Staleness {
            silent_ms: lease.num_milliseconds(),
            before: Utc::now() - lease,
        };
        let mut n = 0;
        for d in self.ledger.stale_attempts(partner, endpoint, stale).await? {
            if !self
                .ledger
                .take_over_attempt(d.id, process_owner(), stale, Utc::now(), &gateway_actor())
                .await?
            {
                continue;
            }
            n += 1;
            tracing::warn!(delivery_id = d.id, partner = %d.partner, progress = d.progress.map(|p| p.as_str()).unwrap_or("none"), "finishing an upload a stopped process left in progress");
            let mut conn = None;
            self.run_attempt(d.id, &mut conn, false).await?;
            if let Some(c) = conn {
                c.close().await;
            }
        }
        Ok(n)
    }
}

/// `serve`'s delivery loop for one upload endpoint: queued deliveries go out
/// as soon as they are recorded (or at `upload_schedule`), failed ones are
/// tried again at the schedule (or every ten minutes without one), and
/// attempts of stopped processes are finished first.
pub async fn run_endpoint(
    gw: Arc<Gateway>,
    partner: String,
    endpoint: String,
    mut stop: watch::Receiver<bool>,
) {
    let Some(up) = gw
        .config
        .partner(&partner)
        .and_then(|p| p.endpoint(&endpoint))
        .and_then(|e| e.upload.clone())
    else {
        return;
    };
    let tz = gw.config.timezone;
    let mut retry_failed_at = tokio::time::Instant::now();
    // One node at a time sends to an endpoint (each delivery is also
    // claimed in the ledger, so a node without the lease, such as
    // `settlegate send`, never sends one twice either).
    let lease = crate::cluster::Lease::new(
        &gw.ledger,
        format!("upload:{partner}/{endpoint}"),
        gw.config.lease,
    );
    let mut holding = false;
    loop {
        // Only while the endpoint's lease is still this node's (the last
        // round of deliveries may have outlasted it).
        if holding
            && lease.fence().is_some()
            && let Err(e) = gw.resolve_stale_attempts(&partner, &endpoint).await
        {
            tracing::error!(partner = %partner, endpoint = %endpoint, error = %e, "cannot resolve uploads left in progress");
        }
        let (wait, scheduled) = match &up.schedule {
            Some(s) => {
                let now = Utc::now().with_timezone(&tz);
                match s.cron.find_next_occurrence(&now, false) {
                    Ok(next) => ((next - now).to_std().unwrap_or(Duration::ZERO), true),
                    Err(e) => {
                        tracing::error!(partner = %partner, endpoint = %endpoint, schedule = %s.text, error = %e, "upload schedule has no next run; deliveries to this endpoint stopped");
                        return;
                    }
                }
            }
            None => (POLL, false),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::cluster::stopped(&mut stop) => {
                lease.release().await;
                return;
            }
        }
        holding = match lease.hold().await {
            Ok(held) => held.is_some(),
            Err(e) => {
                let e = gw.ledger.diagnose(e).await;
                tracing::error!(partner = %partner, endpoint = %endpoint, error = %e, "cannot take the upload lease");
                false
            }
        };
        if !holding {
            continue;
        }
        let with_failed = scheduled || tokio::time::Instant::now() >= retry_failed_at;
        if with_failed && !scheduled {
            retry_failed_at = tokio::time::Instant::now() + RETRY_FAILED;
        }
        let due = match gw
            .ledger
            .deliveries_to_send(&partner, &endpoint, with_failed)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                let e = gw.ledger.diagnose(e).await;
                tracing::error!(partner = %partner, endpoint = %endpoint, error = %e, "cannot list deliveries");
                continue;
            }
        };
        let mut conn = None;
        for d in due {
            if *stop.borrow() || lease.fence().is_none() {
                break;
            }
            // An attempt runs to its end (a shutdown waits for it): an
            // upload cut half-way would be resumed at the next start anyway.
            if let Err(e) = gw.attempt(&d, &mut conn, false).await {
                tracing::error!(delivery_id = d.id, partner = %partner, endpoint = %endpoint, error = %e, "delivery attempt failed");
            }
        }
        if let Some(c) = conn {
            c.close().await;
        }
    }
}

/// The state a delivery is left in by an attempt, for exit codes.
pub fn settled(state: DeliveryState) -> bool {
    matches!(state, DeliveryState::Delivered | DeliveryState::Collected)
}
