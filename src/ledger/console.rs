//! What the operator console reads and keeps: its sessions (shared by every
//! gateway process on the ledger), the quarantine a page at a time, the fed
//! totals of recent business dates, and the last pickup per endpoint.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::files::{StoredFile, file_columns, typed};
use super::{FileRow, Ledger, LedgerError, on_pool, query_error};

/// A console session as the ledger holds it. The token itself is never
/// stored: only its hash, the row's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub login: String,
    /// `viewer` or `operator`, as it was at login.
    pub role: String,
    /// The token every state-changing form carries.
    pub csrf_token: String,
    pub address: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// A session to record at login.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub login: &'a str,
    pub role: &'a str,
    pub csrf_token: &'a str,
    pub address: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Fed files' totals of one partner and format on one business date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FedTotal {
    pub partner: String,
    pub format: String,
    pub business_date: NaiveDate,
    pub files: i64,
    pub total: Decimal,
}

/// One data record of a file in the ledger: key and amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryAmount {
    pub record_no: i64,
    pub record_key: String,
    pub amount: Decimal,
}

const QUARANTINE: &str = "verdict IN ('drill', 'conflict', 'overlap', 'invalid')";

fn decimal(text: &str, what: &str) -> Result<Decimal, LedgerError> {
    Decimal::from_str_exact(text)
        .map_err(|e| LedgerError::State(format!("{what}: {text:?} is not a decimal: {e}")))
}

impl Ledger {
    /// Record a session at login.
    pub async fn create_session(&self, s: &NewSession<'_>) -> Result<(), LedgerError> {
        let sql = "INSERT INTO console_sessions (token_hash, login, role, csrf_token, address, created_at, last_seen) \
                   VALUES ($1, $2, $3, $4, $5, $6, $6)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(s.token_hash)
            .bind(s.login)
            .bind(s.role)
            .bind(s.csrf_token)
            .bind(s.address)
            .bind(s.at)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(query_error("record a console session"))
    }

    /// The session with this token hash if it was seen after `idle_since`,
    /// marked seen `now` in the same statement (several processes may
    /// answer the same browser; the last one to see it wins, which is all
    /// the idle expiry needs). An expired session is removed.
    pub async fn touch_session(
        &self,
        token_hash: &str,
        idle_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsoleSession>, LedgerError> {
        let sql = "UPDATE console_sessions SET last_seen = $3 WHERE token_hash = $1 AND last_seen > $2 \
                   RETURNING login, role, csrf_token, address, created_at, last_seen";
        type Row = (
            String,
            String,
            String,
            Option<String>,
            DateTime<Utc>,
            DateTime<Utc>,
        );
        let row: Option<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(token_hash)
            .bind(idle_since)
            .bind(now)
            .fetch_optional(pool)
            .await)
        .map_err(query_error("read a console session"))?;
        if row.is_none() {
            self.end_session(token_hash).await?;
        }
        Ok(row.map(
            |(login, role, csrf_token, address, created_at, last_seen)| ConsoleSession {
                login,
                role,
                csrf_token,
                address,
                created_at,
                last_seen,
            },
        ))
    }

    /// Log out: the session is gone for every process.
    pub async fn end_session(&self, token_hash: &str) -> Result<(), LedgerError> {
        on_pool!(self, pool => sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(query_error("end a console session"))
    }

    /// Remove sessions idle since before `idle_since`.
    pub async fn purge_sessions(&self, idle_since: DateTime<Utc>) -> Result<u64, LedgerError> {
        on_pool!(self, pool => sqlx::query("DELETE FROM console_sessions WHERE last_seen <= $1")
            .bind(idle_since)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(query_error("purge console sessions"))
    }

    /// Files waiting in quarantine, newest first: those with an id below
    /// `before` (keyset on `files_quarantine_id`).
    pub async fn quarantine_page(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<FileRow>, LedgerError> {
        let sql = format!(
            "SELECT {} FROM files WHERE {QUARANTINE} AND id < $1 ORDER BY id DESC LIMIT $2",
            file_columns!()
        );
        let rows: Vec<StoredFile> =
            on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await)
            .map_err(query_error("list the quarantine"))?;
        typed(rows)
    }

    /// What the fed files of business dates `from..=to` pay, per partner,
    /// format and date: the same sums as [`Ledger::intake`] (a superseded
    /// file's entries and their reversals cancel out), read from one row per
    /// fed file instead of every entry. Files fed before the ledger kept
    /// `fed_amount` are summed from their entries.
    pub async fn fed_totals(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<FedTotal>, LedgerError> {
        let sql = "SELECT id, partner, format, business_date, CAST(fed_amount AS TEXT) FROM files \
                   WHERE verdict = 'fed' AND business_date >= $1 AND business_date <= $2";
        type Row = (i64, String, Option<String>, NaiveDate, Option<String>);
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await)
        .map_err(query_error("read fed totals"))?;
        let mut out: BTreeMap<(String, String, NaiveDate), (i64, Decimal)> = BTreeMap::new();
        for (id, partner, format, date, amount) in rows {
            let amount = match amount {
                Some(text) => decimal(&text, &format!("file {id}: fed_amount"))?,
                None => self
                    .file_entries(id)
                    .await?
                    .iter()
                    .try_fold(Decimal::ZERO, |sum, e| sum.checked_add(e.amount))
                    .ok_or_else(|| LedgerError::State(format!("file {id}: its total overflows")))?,
            };
            let format = format.unwrap_or_default();
            let slot = out.entry((partner, format, date)).or_default();
            slot.0 += 1;
            slot.1 = slot
                .1
                .checked_add(amount)
                .ok_or_else(|| LedgerError::State("fed totals overflow".into()))?;
        }
        Ok(out
            .into_iter()
            .map(
                |((partner, format, business_date), (files, total))| FedTotal {
                    partner,
                    format,
                    business_date,
                    files,
                    total,
                },
            )
            .collect())
    }

    /// A file's original entries (what it fed), in record order.
    pub async fn file_entries(&self, file_id: i64) -> Result<Vec<EntryAmount>, LedgerError> {
        let sql = concat!(
            "SELECT record_no, record_key, CAST(amount AS TEXT) FROM entries WHERE ",
            super::feed::originals_of_file!(),
            " ORDER BY record_no"
        );
        let rows: Vec<(i64, String, String)> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(file_id)
            .fetch_all(pool)
            .await)
        .map_err(query_error("read a file's entries"))?;
        rows.into_iter()
            .map(|(record_no, record_key, amount)| {
                Ok(EntryAmount {
                    record_no,
                    amount: decimal(&amount, &format!("file {file_id}: entry {record_no}"))?,
                    record_key,
                })
            })
            .collect()
    }

    /// When a file last arrived from this partner's endpoint.
    pub async fn last_arrival(
        &self,
        partner: &str,
        endpoint: &str,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let sql = "SELECT received_at FROM files WHERE partner = $1 AND endpoint = $2 \
                   ORDER BY received_at DESC LIMIT 1";
        on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(partner)
            .bind(endpoint)
            .fetch_optional(pool)
            .await)
        .map_err(query_error("read the last arrival"))
    }
}
