//! Four-eyes requests: an override one operator asks for, and the one
//! decision a second operator makes about it. The decision's primary key is
//! the request, so however many approvers race, one decision is recorded
//! and the action is carried out at most once.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Ledger, LedgerError, on_pool, query_error};
use crate::model::{OverrideAction, RequestState};

/// A request to record.
#[derive(Debug, Clone, Copy)]
pub struct NewRequest<'a> {
    pub action: OverrideAction,
    pub file_id: Option<i64>,
    pub delivery_id: Option<i64>,
    pub operator: &'a str,
    pub reason: &'a str,
    pub at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A request as the ledger holds it, with its decision if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRow {
    pub id: i64,
    pub action: OverrideAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<i64>,
    pub operator: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Pending, approved, failed (approved, the action refused) or denied.
    pub state: RequestState,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    pub outcome_message: Option<String>,
}

impl RequestRow {
    /// Pending and past its expiry at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.state == RequestState::Pending && now >= self.expires_at
    }
}

/// A decision to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Approved,
    Denied,
}

type StoredRequest = (
    i64,
    String,
    Option<i64>,
    Option<i64>,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const REQUEST_COLUMNS: &str = "SELECT r.id, r.action, r.file_id, r.delivery_id, r.operator, r.reason, r.created_at, r.expires_at, \
     d.decision, d.operator, d.at, d.reason, d.outcome, d.outcome_message \
     FROM requests r LEFT JOIN request_decisions d ON d.request_id = r.id";

fn typed(s: StoredRequest) -> Result<RequestRow, LedgerError> {
    let (id, action, file_id, delivery_id, operator, reason, created_at, expires_at) =
        (s.0, s.1, s.2, s.3, s.4, s.5, s.6, s.7);
    let corrupt = |column, message: String| LedgerError::Corrupt {
        id,
        column,
        message,
    };
    let state = match (s.8.as_deref(), s.12.as_deref()) {
        (None, _) => RequestState::Pending,
        (Some("denied"), _) => RequestState::Denied,
        (Some("approved"), Some("failed")) => RequestState::Failed,
        (Some("approved"), _) => RequestState::Approved,
        (Some(other), _) => return Err(corrupt("decision", other.to_string())),
    };
    Ok(RequestRow {
        id,
        action: OverrideAction::parse(&action).map_err(|e| corrupt("action", e.to_string()))?,
        file_id,
        delivery_id,
        operator,
        reason,
        created_at,
        expires_at,
        state,
        decided_by: s.9,
        decided_at: s.10,
        decision_reason: s.11,
        outcome_message: s.13,
    })
}

/// Append an audit event about a request (and the file or delivery it
/// names).
macro_rules! request_event {
    ($exec:expr, $at:expr, $r:expr, $kind:expr, $actor:expr, $reason:expr) => {{
        let r: &RequestRow = $r;
        let details = serde_json::json!({ "request_id": r.id, "action": r.action.as_str() }).to_string();
        sqlx::query("INSERT INTO events (at, file_id, delivery_id, request_id, kind, actor, reason, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind($at)
            .bind(r.file_id)
            .bind(r.delivery_id)
            .bind(r.id)
            .bind($kind)
            .bind($actor)
            .bind($reason)
            .bind(details)
            .execute($exec)
            .await
            .map(|_| ())
            .map_err(query_error("append request event"))
    }};
}

impl Ledger {
    /// Record a request and its audit event.
    pub async fn record_request(&self, n: &NewRequest<'_>) -> Result<RequestRow, LedgerError> {
        let id: i64 = on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO requests (action, file_id, delivery_id, operator, reason, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(n.action.as_str())
            .bind(n.file_id)
            .bind(n.delivery_id)
            .bind(n.operator)
            .bind(n.reason)
            .bind(n.at)
            .bind(n.expires_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("record request"))?;
            let row = RequestRow {
                id,
                action: n.action,
                file_id: n.file_id,
                delivery_id: n.delivery_id,
                operator: n.operator.to_string(),
                reason: n.reason.to_string(),
                created_at: n.at,
                expires_at: n.expires_at,
                state: RequestState::Pending,
                decided_by: None,
                decided_at: None,
                decision_reason: None,
                outcome_message: None,
            };
            request_event!(&mut *tx, n.at, &row, "request", n.operator, Some(n.reason))?;
            tx.commit().await.map_err(query_error("commit request"))?;
            Ok::<i64, LedgerError>(id)
        })?;
        self.request(id)
            .await?
            .ok_or_else(|| LedgerError::State(format!("request {id} vanished")))
    }

    pub async fn request(&self, id: i64) -> Result<Option<RequestRow>, LedgerError> {
        let sql = format!("{REQUEST_COLUMNS} WHERE r.id = $1");
        let row: Option<StoredRequest> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await)
            .map_err(query_error("read request"))?;
        row.map(typed).transpose()
    }

    /// Requests without a decision that have not expired at `now`.
    pub async fn pending_requests(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RequestRow>, LedgerError> {
        let sql = format!(
            "{REQUEST_COLUMNS} WHERE d.request_id IS NULL AND r.expires_at > $1 ORDER BY r.id"
        );
        let rows: Vec<StoredRequest> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(now).fetch_all(pool).await)
            .map_err(query_error("list requests"))?;
        rows.into_iter().map(typed).collect()
    }

    /// Record the one decision about a request, with its audit event.
    /// `Ok(false)`: another decision was recorded first (nothing written).
    pub async fn decide_request(
        &self,
        r: &RequestRow,
        decided: Decided,
        operator: &str,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let (decision, kind) = match decided {
            Decided::Approved => ("approved", "request-approved"),
            Decided::Denied => ("denied", "request-denied"),
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let n = sqlx::query(
                "INSERT INTO request_decisions (request_id, decision, operator, reason, at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(r.id)
            .bind(decision)
            .bind(operator)
            .bind(reason)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(query_error("decide request"))?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            request_event!(&mut *tx, at, r, kind, operator, reason)?;
            tx.commit().await.map_err(query_error("commit decision"))?;
            Ok(true)
        })
    }

    /// Record how an approved request's action ended (once), with its
    /// audit event.
    pub async fn request_outcome(
        &self,
        r: &RequestRow,
        done: bool,
        message: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (outcome, kind) = if done {
            ("done", "request-done")
        } else {
            ("failed", "request-failed")
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            sqlx::query("UPDATE request_decisions SET outcome = $2, outcome_message = $3 WHERE request_id = $1 AND outcome IS NULL")
                .bind(r.id)
                .bind(outcome)
                .bind(message)
                .execute(&mut *tx)
                .await
                .map_err(query_error("record request outcome"))?;
            request_event!(&mut *tx, at, r, kind, actor, Some(message))?;
            tx.commit().await.map_err(query_error("commit request outcome"))
        })
    }

    /// The audit events about a request.
    pub async fn request_events(&self, id: i64) -> Result<Vec<super::EventRow>, LedgerError> {
        let sql = "SELECT id, at, file_id, kind, actor, reason, details FROM events WHERE request_id = $1 ORDER BY id";
        on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_all(pool).await)
            .map_err(query_error("read request events"))
    }
}
