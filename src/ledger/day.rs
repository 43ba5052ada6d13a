//! What the settlement day and monitoring read: a business date's files,
//! and the figures `/metrics` shows (counted by the ledger, so every
//! gateway process sharing it reports the same).

use chrono::{DateTime, NaiveDate, Utc};

use super::{Ledger, LedgerError, on_pool, query_error};
use crate::day::DayFile;
use crate::model::{Channel, DeliveryState, FileState};

/// Files and bytes per partner, channel and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCount {
    pub partner: String,
    pub channel: Channel,
    pub state: FileState,
    pub files: i64,
    pub bytes: i64,
}

/// Deliveries per partner and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCount {
    pub partner: String,
    pub state: DeliveryState,
    pub deliveries: i64,
}

/// id, partner, format, name, verdict, reason.
type StoredDayFile = (i64, String, Option<String>, String, String, Option<String>);

fn corrupt(column: &'static str, e: impl ToString) -> LedgerError {
    LedgerError::Corrupt {
        id: 0,
        column,
        message: e.to_string(),
    }
}

impl Ledger {
    /// The files of business date `date`, and the quarantined files whose
    /// business date could not be read that arrived in `[from, to)`.
    pub async fn day_files(
        &self,
        date: NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DayFile>, LedgerError> {
        let sql = "SELECT id, partner, format, name, verdict, reason FROM files WHERE business_date = $1 \
                   UNION ALL SELECT id, partner, format, name, verdict, reason FROM files \
                   WHERE business_date IS NULL AND received_at >= $2 AND received_at < $3 \
                   AND verdict IN ('drill', 'conflict', 'overlap', 'invalid') ORDER BY id";
        let rows: Vec<StoredDayFile> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(date)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await)
        .map_err(query_error("read the day's files"))?;
        rows.into_iter()
            .map(|(id, partner, format, name, verdict, reason)| {
                Ok(DayFile {
                    id,
                    partner,
                    format,
                    name,
                    state: FileState::parse(&verdict).map_err(|e| LedgerError::Corrupt {
                        id,
                        column: "verdict",
                        message: e.to_string(),
                    })?,
                    reason,
                })
            })
            .collect()
    }

    /// Files and bytes per partner, channel and state: the deltas arrivals
    /// and verdicts appended (migration 0009) are folded into
    /// `file_counts` first, in one transaction that deletes exactly what it
    /// adds, so several processes scraping at once count each change once.
    pub async fn file_counts(&self) -> Result<Vec<FileCount>, LedgerError> {
        match &self.pool {
            super::Pool::Postgres(pool) => {
                sqlx::query(
                    "WITH d AS (DELETE FROM file_count_deltas RETURNING partner, channel, verdict, files, bytes) \
                     INSERT INTO file_counts (partner, channel, verdict, files, bytes) \
                     SELECT partner, channel, verdict, SUM(files), SUM(bytes) FROM d GROUP BY partner, channel, verdict \
                     ON CONFLICT (partner, channel, verdict) DO UPDATE \
                     SET files = file_counts.files + EXCLUDED.files, bytes = file_counts.bytes + EXCLUDED.bytes",
                )
                .execute(pool)
                .await
                .map_err(query_error("fold file counts"))?;
            }
            super::Pool::Sqlite(pool) => {
                // One writer at a time: the write lock is taken by the first
                // statement and held to the commit, so both statements see
                // the same deltas.
                let mut tx = pool.begin().await.map_err(query_error("begin"))?;
                sqlx::query(
                    "INSERT INTO file_counts (partner, channel, verdict, files, bytes) \
                     SELECT partner, channel, verdict, SUM(files), SUM(bytes) FROM file_count_deltas \
                     WHERE id <= (SELECT MAX(id) FROM file_count_deltas) GROUP BY partner, channel, verdict \
                     ON CONFLICT (partner, channel, verdict) DO UPDATE \
                     SET files = file_counts.files + excluded.files, bytes = file_counts.bytes + excluded.bytes",
                )
                .execute(&mut *tx)
                .await
                .map_err(query_error("fold file counts"))?;
                sqlx::query("DELETE FROM file_count_deltas WHERE id <= (SELECT MAX(id) FROM file_count_deltas)")
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("fold file counts"))?;
                tx.commit()
                    .await
                    .map_err(query_error("commit file counts"))?;
            }
        }
        let sql = "SELECT partner, channel, verdict, files, bytes FROM file_counts \
                   WHERE files <> 0 ORDER BY partner, channel, verdict";
        let rows: Vec<(String, String, String, i64, i64)> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
                .map_err(query_error("count files"))?;
        rows.into_iter()
            .map(|(partner, channel, verdict, files, bytes)| {
                Ok(FileCount {
                    partner,
                    channel: Channel::parse(&channel).map_err(|e| corrupt("channel", e))?,
                    state: FileState::parse(&verdict).map_err(|e| corrupt("verdict", e))?,
                    files,
                    bytes,
                })
            })
            .collect()
    }

    /// Files waiting in quarantine, per partner.
    pub async fn quarantined_counts(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        let sql = "SELECT partner, COUNT(*) FROM files \
                   WHERE verdict IN ('drill', 'conflict', 'overlap', 'invalid') GROUP BY partner ORDER BY partner";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
            .map_err(query_error("count quarantined files"))
    }

    /// Deliveries per partner and state.
    pub async fn delivery_counts(&self) -> Result<Vec<DeliveryCount>, LedgerError> {
        let sql = "SELECT partner, state, COUNT(*) FROM deliveries GROUP BY partner, state ORDER BY partner, state";
        let rows: Vec<(String, String, i64)> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
                .map_err(query_error("count deliveries"))?;
        rows.into_iter()
            .map(|(partner, state, deliveries)| {
                Ok(DeliveryCount {
                    partner,
                    state: DeliveryState::parse(&state).map_err(|e| corrupt("state", e))?,
                    deliveries,
                })
            })
            .collect()
    }

    /// The ledger answers a trivial query.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        on_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT CAST(1 AS BIGINT)").fetch_one(pool).await)
            .map(|_| ())
            .map_err(query_error("ping"))
    }
}
