//! Deliveries: one row per file settlegate sends a partner, its state and
//! the audit events about it. The database allows one live delivery per
//! partner and checksum (`deliveries_live_checksum`), one pending resend of
//! a delivery, and one delivery per outbox claim.

use chrono::{DateTime, Utc};

use super::cluster::{both, now_ms};
use super::{Guard, Ledger, LedgerError, on_pool, query_error, where_clause};
use crate::model::{DeliverySource, DeliveryState, UploadProgress};

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub partner: &'a str,
    /// `None`: the partner collects it from `/outbox`.
    pub endpoint: Option<&'a str>,
    pub name: &'a str,
    pub source: DeliverySource,
    pub source_path: Option<&'a str>,
    pub size: u64,
    pub checksum: &'a str,
    /// The control file that goes with it: (name, checksum).
    pub control: Option<(&'a str, &'a str)>,
    pub format: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub business_key: Option<&'a str>,
    /// `Queued`, or `Invalid` (with `error`): never sent.
    pub state: DeliveryState,
    pub error: Option<&'a str>,
    /// A resend: the delivery it sends again.
    pub resend_of: Option<i64>,
    pub reason: Option<&'a str>,
    /// An outbox claim's key (one delivery per claim).
    pub claim: Option<&'a str>,
    pub actor: &'a str,
    pub at: DateTime<Utc>,
}

/// What recording a delivery did.
#[derive(Debug, Clone)]
pub enum Recorded {
    New(DeliveryRow),
    /// The same bytes are a live delivery to this partner already: recorded
    /// as a refused `duplicate` naming it, never sent.
    Duplicate {
        refused: Box<DeliveryRow>,
        live: Box<DeliveryRow>,
    },
    /// This outbox claim was recorded before a restart: its row.
    Already(DeliveryRow),
}

/// A delivery as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub id: i64,
    pub partner: String,
    pub endpoint: Option<String>,
    pub name: String,
    pub source: DeliverySource,
    pub source_path: Option<String>,
    pub size: i64,
    pub checksum: String,
    pub control_name: Option<String>,
    pub control_checksum: Option<String>,
    pub format: Option<String>,
    pub fingerprint: Option<String>,
    pub business_key: Option<String>,
    pub state: DeliveryState,
    pub progress: Option<UploadProgress>,
    pub attempts: i64,
    pub error: Option<String>,
    pub remote_path: Option<String>,
    pub related_delivery_id: Option<i64>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub collected_by: Option<String>,
    pub collected_from: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub ack_file_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StoredDelivery {
    id: i64,
    partner: String,
    endpoint: Option<String>,
    name: String,
    source: String,
    source_path: Option<String>,
    size: i64,
    checksum: String,
    control_name: Option<String>,
    control_checksum: Option<String>,
    format: Option<String>,
    fingerprint: Option<String>,
    business_key: Option<String>,
    state: String,
    progress: Option<String>,
    attempts: i64,
    error: Option<String>,
    remote_path: Option<String>,
    related_delivery_id: Option<i64>,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    collected_by: Option<String>,
    collected_from: Option<String>,
    acknowledged_at: Option<DateTime<Utc>>,
    ack_file_id: Option<i64>,
}

impl TryFrom<StoredDelivery> for DeliveryRow {
    type Error = LedgerError;

    fn try_from(s: StoredDelivery) -> Result<DeliveryRow, LedgerError> {
        let corrupt = |column, e: crate::model::UnknownName| LedgerError::Corrupt {
            id: s.id,
            column,
            message: e.to_string(),
        };
        Ok(DeliveryRow {
            id: s.id,
            source: DeliverySource::parse(&s.source).map_err(|e| corrupt("source", e))?,
            state: DeliveryState::parse(&s.state).map_err(|e| corrupt("state", e))?,
            progress: s
                .progress
                .as_deref()
                .map(UploadProgress::parse)
                .transpose()
                .map_err(|e| corrupt("progress", e))?,
            partner: s.partner,
            endpoint: s.endpoint,
            name: s.name,
            source_path: s.source_path,
            size: s.size,
            checksum: s.checksum,
            control_name: s.control_name,
            control_checksum: s.control_checksum,
            format: s.format,
            fingerprint: s.fingerprint,
            business_key: s.business_key,
            attempts: s.attempts,
            error: s.error,
            remote_path: s.remote_path,
            related_delivery_id: s.related_delivery_id,
            reason: s.reason,
            created_at: s.created_at,
            updated_at: s.updated_at,
            delivered_at: s.delivered_at,
            collected_by: s.collected_by,
            collected_from: s.collected_from,
            acknowledged_at: s.acknowledged_at,
            ack_file_id: s.ack_file_id,
        })
    }
}

macro_rules! delivery_columns {
    () => {
        "id, partner, endpoint, name, source, source_path, size, checksum, control_name, \
         control_checksum, format, fingerprint, business_key, state, progress, attempts, error, remote_path, \
         related_delivery_id, reason, created_at, updated_at, delivered_at, collected_by, \
         collected_from, acknowledged_at, ack_file_id"
    };
}

/// When an upload attempt counts as abandoned: silent for `silent_ms` by
/// the database's clock, and its `heartbeat_at` (its node's clock, the
/// only one an older version writes during a rolling upgrade) before
/// `before`. Both must say so: a live attempt is never taken over, whichever
/// version runs it; a dead node whose clock ran ahead is taken over late.
#[derive(Debug, Clone, Copy)]
pub struct Staleness {
    pub silent_ms: i64,
    pub before: DateTime<Utc>,
}

/// Filters of `settlegate deliveries`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub partner: Option<String>,
    pub state: Option<DeliveryState>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
}

/// What an upload attempt ended as.
#[derive(Debug, Clone)]
pub enum AttemptEnd<'a> {
    Delivered {
        remote_path: &'a str,
    },
    /// Failed (after the endpoint's retries): tried again later.
    Failed {
        error: &'a str,
    },
    /// The endpoint could not be reached: back to the queue.
    Requeued {
        error: &'a str,
    },
}

/// Append an audit event about a delivery.
macro_rules! delivery_event {
    ($exec:expr, $at:expr, $id:expr, $kind:expr, $actor:expr, $reason:expr, $details:expr) => {{
        let details: Option<String> = $details;
        let kind: &str = $kind;
        sqlx::query(
            "INSERT INTO events (at, delivery_id, kind, actor, reason, details) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($at)
        .bind($id)
        .bind(kind)
        .bind($actor)
        .bind($reason)
        .bind(details)
        .execute($exec)
        .await
        .map(|_| ())
        .map_err(query_error("append a delivery event"))
    }};
}

fn typed(rows: Vec<StoredDelivery>) -> Result<Vec<DeliveryRow>, LedgerError> {
    rows.into_iter().map(DeliveryRow::try_from).collect()
}

impl Ledger {
    /// Record a delivery and its event in one transaction. The database
    /// decides the duplicate: a second live delivery of the same bytes to
    /// the same partner fails `deliveries_live_checksum`, and is recorded
    /// as a refused `duplicate` naming the live one instead.
    pub async fn record_delivery(&self, d: &NewDelivery<'_>) -> Result<Recorded, LedgerError> {
        match self.insert_delivery(d, d.state, None).await {
            Ok(id) => Ok(Recorded::New(self.need_delivery(id).await?)),
            Err(LedgerError::Guard(Guard::DeliveryClaim)) => {
                let claim = d.claim.unwrap_or_default();
                let sql = concat!(
                    "SELECT ",
                    delivery_columns!(),
                    " FROM deliveries WHERE claim = $1"
                );
                let row: Option<StoredDelivery> = on_pool!(self, pool => sqlx::query_as(sql).bind(claim).fetch_optional(pool).await)
                    .map_err(query_error("look up an outbox claim"))?;
                let row = row.ok_or_else(|| {
                    LedgerError::State(format!(
                        "claim {claim} is recorded but its delivery is not found"
                    ))
                })?;
                Ok(Recorded::Already(row.try_into()?))
            }
            Err(LedgerError::Guard(Guard::DeliveryChecksum)) => {
                let live = self
                    .live_delivery(d.partner, d.checksum)
                    .await?
                    .ok_or_else(|| {
                        LedgerError::State(
                            "a live delivery refused this one but is not found".into(),
                        )
                    })?;
                let id = self
                    .insert_delivery(d, DeliveryState::Duplicate, Some(live.id))
                    .await?;
                Ok(Recorded::Duplicate {
                    refused: Box::new(self.need_delivery(id).await?),
                    live: Box::new(live),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn insert_delivery(
        &self,
        d: &NewDelivery<'_>,
        state: DeliveryState,
        duplicate_of: Option<i64>,
    ) -> Result<i64, LedgerError> {
        let related = duplicate_of.or(d.resend_of);
        let details = serde_json::json!({
            "name": d.name, "endpoint": d.endpoint, "source": d.source.as_str(),
            "source_path": d.source_path, "size": d.size, "checksum": d.checksum,
            "related_delivery_id": related, "claim": d.claim,
        })
        .to_string();
        let error = match (state, duplicate_of) {
            (DeliveryState::Duplicate, Some(live)) => Some(format!(
                "the same bytes are delivery {live} to this partner; only `settlegate resend {live}` sends them again"
            )),
            _ => d.error.map(String::from),
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO deliveries (partner, endpoint, name, source, source_path, size, checksum, control_name, \
                 control_checksum, format, fingerprint, state, error, related_delivery_id, reason, claim, created_at, updated_at, business_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18) RETURNING id",
            )
            .bind(d.partner)
            .bind(d.endpoint)
            .bind(d.name)
            .bind(d.source.as_str())
            .bind(d.source_path)
            .bind(d.size as i64)
            .bind(d.checksum)
            .bind(d.control.map(|c| c.0))
            .bind(d.control.map(|c| c.1))
            .bind(d.format)
            .bind(d.fingerprint)
            .bind(state.as_str())
            .bind(error.as_deref())
            .bind(related)
            .bind(d.reason)
            // A refused duplicate keeps no claim: the claim's one row is it.
            .bind(if duplicate_of.is_some() { None } else { d.claim })
            .bind(d.at)
            .bind(d.business_key)
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("record delivery"))?;
            delivery_event!(&mut *tx, d.at, id, state.as_str(), d.actor, d.reason.or(error.as_deref()), Some(details))?;
            tx.commit().await.map_err(query_error("commit delivery"))?;
            Ok(id)
        })
    }

    /// The live delivery of these bytes to this partner (not a resend).
    pub async fn live_delivery(
        &self,
        partner: &str,
        checksum: &str,
    ) -> Result<Option<DeliveryRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE partner = $1 AND checksum = $2 \
             AND state NOT IN ('invalid', 'duplicate') AND related_delivery_id IS NULL"
        );
        let row: Option<StoredDelivery> = on_pool!(self, pool => sqlx::query_as(sql).bind(partner).bind(checksum).fetch_optional(pool).await)
            .map_err(query_error("look up a live delivery"))?;
        row.map(DeliveryRow::try_from).transpose()
    }

    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE id = $1"
        );
        let row: Option<StoredDelivery> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
                .map_err(query_error("read delivery"))?;
        row.map(DeliveryRow::try_from).transpose()
    }

    async fn need_delivery(&self, id: i64) -> Result<DeliveryRow, LedgerError> {
        self.delivery(id)
            .await?
            .ok_or_else(|| LedgerError::State(format!("delivery {id} vanished")))
    }

    pub async fn deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRow>, LedgerError> {
        let where_ = where_clause(&[
            ("partner =", f.partner.is_some()),
            ("state =", f.state.is_some()),
            ("created_at >=", f.from.is_some()),
            ("created_at <", f.until.is_some()),
        ]);
        let limit = f.limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
        let sql = format!(
            "SELECT {} FROM deliveries{where_} ORDER BY id{limit}",
            delivery_columns!()
        );
        let rows: Vec<StoredDelivery> = on_pool!(self, pool => {
            // Built from fixed clauses and numbered placeholders only.
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
            if let Some(p) = &f.partner {
                q = q.bind(p);
            }
            if let Some(s) = f.state {
                q = q.bind(s.as_str());
            }
            if let Some(t) = f.from {
                q = q.bind(t);
            }
            if let Some(t) = f.until {
                q = q.bind(t);
            }
            q.fetch_all(pool).await
        })
        .map_err(query_error("list deliveries"))?;
        typed(rows)
    }

    /// A page of deliveries, newest first: those with an id below `before`
    /// (keyset on the primary key, so a page costs the same at any depth).
    pub async fn deliveries_page(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE id < $1 ORDER BY id DESC LIMIT $2"
        );
        let rows: Vec<StoredDelivery> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await)
        .map_err(query_error("list deliveries"))?;
        typed(rows)
    }

    /// Deliveries to upload now: queued or failed ones to an endpoint (not
    /// collected by the partner), oldest first.
    pub async fn deliveries_to_send(
        &self,
        partner: &str,
        endpoint: &str,
        with_failed: bool,
    ) -> Result<Vec<DeliveryRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE partner = $1 AND endpoint = $2 \
             AND (state = 'queued' OR (state = 'failed' AND $3)) ORDER BY id"
        );
        let rows: Vec<StoredDelivery> = on_pool!(self, pool => sqlx::query_as(sql).bind(partner).bind(endpoint).bind(with_failed).fetch_all(pool).await)
            .map_err(query_error("list deliveries to send"))?;
        typed(rows)
    }

    /// Take a delivery for an upload attempt by `owner`: `queued` or
    /// `failed` → `sending`, one more attempt. `false`: another process has
    /// it, or it is no longer to be sent.
    pub async fn start_attempt(
        &self,
        id: i64,
        from: DeliveryState,
        owner: &str,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<bool, LedgerError> {
        self.take_attempt(id, owner, at, actor, from, None).await
    }

    /// Take over an attempt whose process stopped saying it is alive (no
    /// heartbeat for `stale` by the database's clock): it stays `sending`,
    /// now `owner`'s, to be resolved from its progress.
    pub async fn take_over_attempt(
        &self,
        id: i64,
        owner: &str,
        stale: Staleness,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<bool, LedgerError> {
        self.take_attempt(id, owner, at, actor, DeliveryState::Sending, Some(stale))
            .await
    }

    async fn take_attempt(
        &self,
        id: i64,
        owner: &str,
        at: DateTime<Utc>,
        actor: &str,
        from: DeliveryState,
        stale: Option<Staleness>,
    ) -> Result<bool, LedgerError> {
        // A fresh attempt starts from nothing; a taken-over one keeps how far
        // the dead process got.
        let fresh = self.pick(both!(
            "UPDATE deliveries SET state = 'sending', progress = NULL, attempts = attempts + 1, \
             attempt_owner = $3, heartbeat_at = $4, heartbeat_ms = " NOW ", updated_at = $4 \
             WHERE id = $1 AND state = $2 AND endpoint IS NOT NULL"
        ));
        let take_over = self.pick(both!(
            "UPDATE deliveries SET attempt_owner = $3, heartbeat_at = $4, heartbeat_ms = " NOW ", updated_at = $4 \
             WHERE id = $1 AND state = $2 AND endpoint IS NOT NULL AND (heartbeat_ms IS NULL OR heartbeat_ms < " NOW " - $5) \
             AND (heartbeat_at IS NULL OR heartbeat_at < $6)"
        ));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let q = sqlx::query(if stale.is_some() { take_over } else { fresh })
                .bind(id)
                .bind(from.as_str())
                .bind(owner)
                .bind(at);
            let q = match &stale {
                Some(s) => q.bind(s.silent_ms).bind(s.before),
                None => q,
            };
            let n = q
                .execute(&mut *tx)
                .await
                .map_err(query_error("take an upload attempt"))?
                .rows_affected();
            if n == 1 {
                let details = serde_json::json!({ "owner": owner, "took_over": stale.is_some() }).to_string();
                delivery_event!(&mut *tx, at, id, DeliveryState::Sending.as_str(), actor, None::<&str>, Some(details))?;
            }
            tx.commit().await.map_err(query_error("commit attempt"))?;
            Ok(n == 1)
        })
    }

    /// The attempt's process is alive.
    pub async fn heartbeat(
        &self,
        id: i64,
        owner: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let sql = self.pick(both!(
            "UPDATE deliveries SET heartbeat_at = $3, heartbeat_ms = " NOW " \
             WHERE id = $1 AND attempt_owner = $2 AND state = 'sending'"
        ));
        let n: u64 = on_pool!(self, pool => sqlx::query(sql)
        .bind(id)
        .bind(owner)
        .bind(at)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .map_err(query_error("delivery heartbeat"))?;
        Ok(n == 1)
    }

    /// Attempts at uploads to `partner`'s `endpoint` whose process stopped
    /// saying it is alive (see [`Staleness`]).
    pub async fn stale_attempts(
        &self,
        partner: &str,
        endpoint: &str,
        stale: Staleness,
    ) -> Result<Vec<DeliveryRow>, LedgerError> {
        let sql = self.pick(both!(
            "SELECT " {delivery_columns} " FROM deliveries WHERE state = 'sending' AND partner = $1 AND endpoint = $2 \
             AND (heartbeat_ms IS NULL OR heartbeat_ms < " NOW " - $3) AND (heartbeat_at IS NULL OR heartbeat_at < $4) ORDER BY id"
        ));
        let rows: Vec<StoredDelivery> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(partner)
            .bind(endpoint)
            .bind(stale.silent_ms)
            .bind(stale.before)
            .fetch_all(pool)
            .await)
        .map_err(query_error("list stale upload attempts"))?;
        typed(rows)
    }

    /// How far the attempt in progress got (and where the bytes are).
    pub async fn set_progress(
        &self,
        id: i64,
        owner: &str,
        progress: UploadProgress,
        remote_path: &str,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let sql = self.pick(both!(
            "UPDATE deliveries SET progress = $2, remote_path = $3, updated_at = $4, heartbeat_at = $4, heartbeat_ms = " NOW " \
             WHERE id = $1 AND state = 'sending' AND attempt_owner = $5"
        ));
        let n: u64 = on_pool!(self, pool => sqlx::query(sql)
        .bind(id)
        .bind(progress.as_str())
        .bind(remote_path)
        .bind(at)
        .bind(owner)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .map_err(query_error("record upload progress"))?;
        if n == 1 {
            Ok(())
        } else {
            Err(LedgerError::State(format!(
                "delivery {id} is no longer this process's attempt"
            )))
        }
    }

    /// End an upload attempt, with its audit event.
    pub async fn end_attempt(
        &self,
        id: i64,
        owner: &str,
        end: AttemptEnd<'_>,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), LedgerError> {
        let (state, error, remote) = match end {
            AttemptEnd::Delivered { remote_path } => {
                (DeliveryState::Delivered, None, Some(remote_path))
            }
            AttemptEnd::Failed { error } => (DeliveryState::Failed, Some(error), None),
            AttemptEnd::Requeued { error } => (DeliveryState::Queued, Some(error), None),
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let n = sqlx::query(
                "UPDATE deliveries SET state = $2, error = $3, remote_path = COALESCE($4, remote_path), updated_at = $5, \
                 delivered_at = CASE WHEN $2 = 'delivered' THEN $5 ELSE delivered_at END, \
                 progress = CASE WHEN $2 = 'delivered' THEN progress ELSE NULL END, attempt_owner = NULL \
                 WHERE id = $1 AND state = 'sending' AND attempt_owner = $6",
            )
            .bind(id)
            .bind(state.as_str())
            .bind(error)
            .bind(remote)
            .bind(at)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(query_error("end an upload attempt"))?
            .rows_affected();
            if n != 1 {
                return Err(LedgerError::State(format!("delivery {id} is no longer this process's attempt")));
            }
            delivery_event!(&mut *tx, at, id, state.as_str(), actor, error, remote.map(|r| serde_json::json!({ "remote_path": r }).to_string()))?;
            tx.commit().await.map_err(query_error("commit attempt"))
        })
    }

    /// A partner read a delivery whole from `/outbox`: `collected`, with
    /// who and from where. Only the first complete read counts.
    pub async fn mark_collected(
        &self,
        id: i64,
        account: &str,
        address: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let n = sqlx::query(
                "UPDATE deliveries SET state = 'collected', collected_by = $2, collected_from = $3, updated_at = $4, delivered_at = $4 \
                 WHERE id = $1 AND state = 'queued' AND endpoint IS NULL",
            )
            .bind(id)
            .bind(account)
            .bind(address)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(query_error("mark collected"))?
            .rows_affected();
            if n == 1 {
                let details = serde_json::json!({ "account": account, "address": address }).to_string();
                delivery_event!(&mut *tx, at, id, DeliveryState::Collected.as_str(), format!("sftp-push:{account}"), None::<&str>, Some(details))?;
            }
            tx.commit().await.map_err(query_error("commit collected"))?;
            Ok(n == 1)
        })
    }

    /// Deliveries a partner collects from `/outbox`: waiting, or collected
    /// since `collected_since`; newest first.
    pub async fn collectable(
        &self,
        partner: &str,
        collected_since: DateTime<Utc>,
    ) -> Result<Vec<DeliveryRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE partner = $1 AND endpoint IS NULL \
             AND (state = 'queued' OR (state = 'collected' AND delivered_at >= $2)) ORDER BY id DESC"
        );
        let rows: Vec<StoredDelivery> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(partner)
            .bind(collected_since)
            .fetch_all(pool)
            .await)
        .map_err(query_error("list collectable deliveries"))?;
        typed(rows)
    }

    /// A partner's file acknowledged a delivery: the latest delivered or
    /// collected delivery to `partner` in `format` with this business key
    /// records it. Returns that delivery, if any.
    pub async fn acknowledge(
        &self,
        partner: &str,
        format: &str,
        business_key: &str,
        file_id: i64,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<Option<i64>, LedgerError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE partner = $1 AND format = $2 AND business_key = $3 \
                 AND state IN ('delivered', 'collected') ORDER BY id DESC LIMIT 1",
            )
            .bind(partner)
            .bind(format)
            .bind(business_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_error("find the acknowledged delivery"))?;
            let mut acked = None;
            if let Some(id) = id {
                let n = sqlx::query(
                    "UPDATE deliveries SET acknowledged_at = $2, ack_file_id = $3, updated_at = $2 WHERE id = $1 AND ack_file_id IS NULL",
                )
                .bind(id)
                .bind(at)
                .bind(file_id)
                .execute(&mut *tx)
                .await
                .map_err(query_error("record an acknowledgement"))?
                .rows_affected();
                if n == 1 {
                    let details = serde_json::json!({ "ack_file_id": file_id }).to_string();
                    delivery_event!(&mut *tx, at, id, "acknowledged", actor, None::<&str>, Some(details))?;
                    acked = Some(id);
                }
            }
            tx.commit().await.map_err(query_error("commit acknowledgement"))?;
            Ok(acked)
        })
    }

    pub async fn delivery_events(&self, id: i64) -> Result<Vec<super::EventRow>, LedgerError> {
        let sql = "SELECT id, at, file_id, kind, actor, reason, details FROM events WHERE delivery_id = $1 ORDER BY id";
        on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_all(pool).await)
            .map_err(query_error("read delivery events"))
    }
}
