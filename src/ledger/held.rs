//! Halves of pushed pairs (a data file and its control file) held until
//! the other half arrives on any node, and the receipts a partner reads
//! from `/receipts` on any node.

use chrono::{DateTime, Utc};

use super::files::{FileRow, StoredFile, file_columns, typed};
use super::{Backend, Ledger, LedgerError, on_pool, query_error};

/// A half held for its counterpart: its bytes are in the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUpload {
    pub name: String,
    pub checksum: String,
    pub size: u64,
    pub held_at: DateTime<Utc>,
}

/// What the ledger says of a half offered with [`Ledger::pair_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pairing {
    /// Its counterpart is held: the pair is complete. The held half stays
    /// in the ledger until the pair's arrival is recorded, which takes it
    /// out in the same transaction (`NewArrival::takes_held`), so a node
    /// that dies in between loses nothing.
    Complete(HeldUpload),
    /// Held until its counterpart comes.
    Held,
    /// An earlier half of the same name is held: it is to be taken alone
    /// (no arrival is lost) before this one is offered again.
    Occupied(HeldUpload),
}

impl Ledger {
    /// Offer a pushed half `name` (stored as `checksum`): `counterpart`
    /// picks, among the partner's held halves, the one that completes it.
    /// Decided in one transaction, one decision per partner at a time
    /// (PostgreSQL: a transaction advisory lock on the partner), so two
    /// halves arriving on two nodes at once pair with each other. Only
    /// [`Pairing::Held`] changes the ledger.
    pub async fn pair_upload(
        &self,
        partner: &str,
        name: &str,
        checksum: &str,
        size: u64,
        at: DateTime<Utc>,
        counterpart: impl FnOnce(&[HeldUpload]) -> Option<String>,
    ) -> Result<Pairing, LedgerError> {
        let backend = self.backend();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            if backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('held_uploads:' || $1))")
                    .bind(partner)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("lock the partner's held uploads"))?;
            }
            let rows: Vec<(String, String, i64, DateTime<Utc>)> = sqlx::query_as(
                "SELECT name, checksum, size, held_at FROM held_uploads WHERE partner = $1 ORDER BY name",
            )
            .bind(partner)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_error("list held uploads"))?;
            let held = held_rows(rows);
            let outcome = if let Some(other) = counterpart(&held)
                && let Some(h) = held.iter().find(|h| h.name == other)
            {
                Pairing::Complete(h.clone())
            } else if let Some(earlier) = held.iter().find(|h| h.name == name) {
                Pairing::Occupied(earlier.clone())
            } else {
                sqlx::query(
                    "INSERT INTO held_uploads (partner, name, checksum, size, held_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(partner)
                .bind(name)
                .bind(checksum)
                .bind(i64::try_from(size).unwrap_or(i64::MAX))
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(query_error("hold an upload"))?;
                Pairing::Held
            };
            tx.commit().await.map_err(query_error("commit"))?;
            Ok(outcome)
        })
    }

    /// The partner's halves held for their counterpart.
    pub async fn held_uploads(&self, partner: &str) -> Result<Vec<HeldUpload>, LedgerError> {
        let rows: Vec<(String, String, i64, DateTime<Utc>)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT name, checksum, size, held_at FROM held_uploads WHERE partner = $1 ORDER BY name",
        )
        .bind(partner)
        .fetch_all(pool)
        .await)
        .map_err(query_error("list held uploads"))?;
        Ok(held_rows(rows))
    }

    /// The partner's files that came by `channels` since `since` and are
    /// judged, oldest first: what its receipts say.
    pub async fn judged_since(
        &self,
        partner: &str,
        channels: &[&str],
        since: DateTime<Utc>,
    ) -> Result<Vec<FileRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE partner = $1 AND received_at >= $2 AND verdict <> 'received' ORDER BY id"
        );
        let rows: Vec<StoredFile> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(partner)
            .bind(since)
            .fetch_all(pool)
            .await)
        .map_err(query_error("read judged files"))?;
        let rows = typed(rows)?;
        Ok(rows
            .into_iter()
            .filter(|r| channels.contains(&r.channel.as_str()))
            .collect())
    }
}

fn held_rows(rows: Vec<(String, String, i64, DateTime<Utc>)>) -> Vec<HeldUpload> {
    rows.into_iter()
        .map(|(name, checksum, size, held_at)| HeldUpload {
            name,
            checksum,
            size: u64::try_from(size).unwrap_or_default(),
            held_at,
        })
        .collect()
}
