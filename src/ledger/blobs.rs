//! The content store's blobs kept in PostgreSQL (`store = "postgres"`):
//! chunks of at most [`CHUNK`] bytes, written in one transaction with the
//! `blobs` row that says the blob is whole, and streamed back in order.

use futures::TryStreamExt;
use sqlx::postgres::PgPool;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{Ledger, LedgerError, Pool, query_error};

/// Bytes per chunk row.
pub const CHUNK: usize = 1 << 20;

/// Read into `buf` until it is full or the file ends; how many bytes.
async fn fill(
    file: &mut tokio::fs::File,
    buf: &mut [u8],
    checksum: &str,
) -> Result<usize, LedgerError> {
    let mut filled = 0;
    while filled < buf.len() {
        let got = file.read(&mut buf[filled..]).await.map_err(|e| {
            LedgerError::State(format!("cannot read the bytes of blob {checksum}: {e}"))
        })?;
        if got == 0 {
            break;
        }
        filled += got;
    }
    Ok(filled)
}

impl Ledger {
    fn blob_pool(&self) -> Result<&PgPool, LedgerError> {
        match &self.pool {
            Pool::Postgres(p) => Ok(p),
            Pool::Sqlite(_) => Err(LedgerError::State(
                "store = \"postgres\" keeps the content store in the ledger's database and needs a PostgreSQL ledger".into(),
            )),
        }
    }

    /// The size of a whole blob, `None` when it is not stored.
    pub async fn blob_size(&self, checksum: &str) -> Result<Option<u64>, LedgerError> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE checksum = $1")
            .bind(checksum)
            .fetch_optional(self.blob_pool()?)
            .await
            .map_err(query_error("look up a blob"))?;
        Ok(size.map(|s| u64::try_from(s).unwrap_or_default()))
    }

    /// Store `size` bytes read from `file` as the blob `checksum`, in one
    /// transaction; a blob already whole is left as it is (another node
    /// storing the same bytes at the same moment waits, then does nothing).
    /// The caller hashed the bytes; they are read once, a chunk at a time.
    pub async fn put_blob(
        &self,
        checksum: &str,
        size: u64,
        mut file: tokio::fs::File,
    ) -> Result<(), LedgerError> {
        let pool = self.blob_pool()?;
        if self.blob_size(checksum).await?.is_some() {
            return Ok(());
        }
        let mut tx = pool.begin().await.map_err(query_error("begin"))?;
        let mut n: i32 = 0;
        let mut written = 0u64;
        // Two buffers: the next chunk is read while the last one is sent.
        let (mut this, mut next) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let mut filled = fill(&mut file, &mut this, checksum).await?;
        loop {
            let insert = sqlx::query(
                "INSERT INTO blob_chunks (checksum, n, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(checksum)
            .bind(n)
            .bind(&this[..filled])
            .execute(&mut *tx);
            let last = filled < CHUNK;
            let (inserted, read) = if last {
                (insert.await, Ok(0))
            } else {
                tokio::join!(insert, fill(&mut file, &mut next, checksum))
            };
            inserted.map_err(query_error("store a blob chunk"))?;
            written += filled as u64;
            n += 1;
            filled = read?;
            if last || filled == 0 {
                break;
            }
            std::mem::swap(&mut this, &mut next);
        }
        if written != size {
            return Err(LedgerError::State(format!(
                "blob {checksum}: read {written} bytes, expected {size}; not stored"
            )));
        }
        sqlx::query(
            "INSERT INTO blobs (checksum, size, chunks) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(checksum)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(n)
        .execute(&mut *tx)
        .await
        .map_err(query_error("store a blob"))?;
        tx.commit().await.map_err(query_error("commit a blob"))
    }

    /// Chunk `n` of a blob (`None`: past its end or not stored).
    pub async fn blob_chunk(&self, checksum: &str, n: i32) -> Result<Option<Vec<u8>>, LedgerError> {
        sqlx::query_scalar("SELECT data FROM blob_chunks WHERE checksum = $1 AND n = $2")
            .bind(checksum)
            .bind(n)
            .fetch_optional(self.blob_pool()?)
            .await
            .map_err(query_error("read a blob chunk"))
    }

    /// Send a whole blob's chunks from chunk `from` on, in order, to `tx`
    /// (one query, streamed); an error (also a missing chunk) is sent last.
    /// Stops when the receiver goes.
    pub async fn pump_blob(
        &self,
        checksum: &str,
        from: i32,
        tx: mpsc::Sender<Result<Vec<u8>, String>>,
    ) {
        let result = async {
            let pool = self.blob_pool()?;
            let chunks: Option<i32> =
                sqlx::query_scalar("SELECT chunks FROM blobs WHERE checksum = $1")
                    .bind(checksum)
                    .fetch_optional(pool)
                    .await
                    .map_err(query_error("look up a blob"))?;
            let Some(chunks) = chunks else {
                return Err(LedgerError::State(format!(
                    "blob {checksum} is not in the store"
                )));
            };
            let mut rows = sqlx::query_as::<_, (i32, Vec<u8>)>(
                "SELECT n, data FROM blob_chunks WHERE checksum = $1 AND n >= $2 ORDER BY n",
            )
            .bind(checksum)
            .bind(from)
            .fetch(pool);
            let mut next = from;
            while let Some((n, data)) = rows
                .try_next()
                .await
                .map_err(query_error("read a blob chunk"))?
            {
                if n != next {
                    break;
                }
                next += 1;
                if tx.send(Ok(data)).await.is_err() {
                    return Ok(());
                }
            }
            if next < chunks {
                return Err(LedgerError::State(format!(
                    "blob {checksum}: chunk {next} of {chunks} is missing"
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(e.to_string())).await;
        }
    }

    /// Every blob's checksum (for `store migrate` and its checks).
    pub async fn blob_checksums(&self) -> Result<Vec<String>, LedgerError> {
        sqlx::query_scalar("SELECT checksum FROM blobs ORDER BY checksum")
            .fetch_all(self.blob_pool()?)
            .await
            .map_err(query_error("list blobs"))
    }
}
