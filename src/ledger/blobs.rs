//! The content store's blobs kept in PostgreSQL (`store = "postgres"`):
//! chunks of at most [`CHUNK`] bytes, written in one transaction with the
//! `blobs` row that says the blob is whole, and streamed back in order. A
//! blob's chunks are under a key of its own (`blob_chunks.checksum` holds
//! it; `blobs.blob_key` names it), or under its checksum for blobs stored
//! before keys (`blob_key` NULL).

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

/// A piece of a blob streamed into the store ([`Ledger::put_blob_streamed`]).
#[derive(Debug)]
pub enum BlobPiece {
    /// The next bytes, in order (a chunk row each).
    Data(Vec<u8>),
    /// The end: the checksum and size of every byte sent.
    End { checksum: String, size: u64 },
}

/// A fresh key for a blob's chunks.
fn blob_key() -> Result<String, LedgerError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| LedgerError::State(format!("no randomness for a blob key: {e}")))?;
    Ok(format!("k{}", hex::encode(b)))
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

    /// Store `size` bytes read from `file` as the blob `checksum` (hashed
    /// by the caller), in one transaction; a blob already whole is left as
    /// it is. The bytes are read once, a chunk at a time.
    pub async fn put_blob(
        &self,
        checksum: &str,
        size: u64,
        mut file: tokio::fs::File,
    ) -> Result<(), LedgerError> {
        if self.blob_size(checksum).await?.is_some() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel(2);
        let reading = async move {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let filled = fill(&mut file, &mut buf, checksum).await?;
                buf.truncate(filled);
                if filled > 0 && tx.send(BlobPiece::Data(buf)).await.is_err() {
                    return Ok(());
                }
                if filled < CHUNK {
                    let end = BlobPiece::End {
                        checksum: checksum.to_string(),
                        size,
                    };
                    let _ = tx.send(end).await;
                    return Ok::<(), LedgerError>(());
                }
            }
        };
        let (read, stored) = tokio::join!(reading, self.put_blob_streamed(rx));
        read?;
        stored
    }

    /// Store a blob streamed in as its pieces come, in one transaction:
    /// chunks under a key of their own, then (at [`BlobPiece::End`]) the
    /// blob's row naming them. Nothing is kept when the stream stops before
    /// its end, when the bytes are fewer or more than it says, or when the
    /// blob was already whole (also when another node stored the same bytes
    /// meanwhile).
    pub async fn put_blob_streamed(
        &self,
        mut pieces: mpsc::Receiver<BlobPiece>,
    ) -> Result<(), LedgerError> {
        let pool = self.blob_pool()?;
        let key = blob_key()?;
        let mut tx = pool.begin().await.map_err(query_error("begin"))?;
        let mut n: i32 = 0;
        let mut written = 0u64;
        loop {
            match pieces.recv().await {
                Some(BlobPiece::Data(data)) => {
                    // Chunks are whole but for the last: a reader finds an
                    // offset's chunk by division.
                    if data.len() > CHUNK || !written.is_multiple_of(CHUNK as u64) {
                        return Err(LedgerError::State(format!(
                            "a blob's chunk {n} is not whole; nothing stored"
                        )));
                    }
                    sqlx::query("INSERT INTO blob_chunks (checksum, n, data) VALUES ($1, $2, $3)")
                        .bind(&key)
                        .bind(n)
                        .bind(&data)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_error("store a blob chunk"))?;
                    written += data.len() as u64;
                    n += 1;
                }
                Some(BlobPiece::End { checksum, size }) => {
                    if written != size {
                        return Err(LedgerError::State(format!(
                            "blob {checksum}: {written} bytes came, {size} expected; not stored"
                        )));
                    }
                    let whole = sqlx::query(
                        "INSERT INTO blobs (checksum, size, chunks, blob_key) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(&checksum)
                    .bind(i64::try_from(size).unwrap_or(i64::MAX))
                    .bind(n)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("store a blob"))?
                    .rows_affected();
                    if whole == 1 {
                        tx.commit().await.map_err(query_error("commit a blob"))?;
                    } else {
                        // Stored already: these chunks are not needed.
                        tx.rollback().await.map_err(query_error("roll back"))?;
                    }
                    return Ok(());
                }
                None => {
                    return Err(LedgerError::State(
                        "a blob's bytes stopped before their end; nothing stored".into(),
                    ));
                }
            }
        }
    }

    /// Chunk `n` of a blob (`None`: past its end or not stored).
    pub async fn blob_chunk(&self, checksum: &str, n: i32) -> Result<Option<Vec<u8>>, LedgerError> {
        sqlx::query_scalar(
            "SELECT c.data FROM blobs b JOIN blob_chunks c ON c.checksum = COALESCE(b.blob_key, b.checksum) \
             WHERE b.checksum = $1 AND c.n = $2",
        )
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
            let blob: Option<(i32, String)> = sqlx::query_as(
                "SELECT chunks, COALESCE(blob_key, checksum) FROM blobs WHERE checksum = $1",
            )
            .bind(checksum)
            .fetch_optional(pool)
            .await
            .map_err(query_error("look up a blob"))?;
            let Some((chunks, key)) = blob else {
                return Err(LedgerError::State(format!(
                    "blob {checksum} is not in the store"
                )));
            };
            let mut rows = sqlx::query_as::<_, (i32, Vec<u8>)>(
                "SELECT n, data FROM blob_chunks WHERE checksum = $1 AND n >= $2 ORDER BY n",
            )
            .bind(&key)
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
