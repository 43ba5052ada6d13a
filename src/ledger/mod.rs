//! The ledger: every SQL statement settlegate runs lives in this module, and
//! it returns typed rows.
//!
//! SQLite (the embedded default) and PostgreSQL (several gateway processes on
//! several machines) run the same migrations' tables and, where the dialects
//! agree, the same statements: `$N` placeholders work in both, and
//! [`on_pool!`] runs one body against either pool. The promise is kept by
//! the database: partial unique indexes allow one fed file per checksum,
//! fingerprint and business key, and one live entry per record key, so a
//! second feed fails with a constraint violation ([`Guard`]) whichever
//! process attempts it.
//!
//! - [`files`]: arrivals, verdicts and the look-ups the judge needs.
//! - [`feed`]: settlement entries, fed and reversed in one transaction.
//! - [`deliveries`]: outbound files, delivered at most once per partner.
//! - [`day`]: a business date's files and the figures `/metrics` shows.
//! - [`requests`]: four-eyes requests and their one decision.

mod day;
mod deliveries;
mod feed;
mod files;
mod requests;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use day::{DeliveryCount, FileCount};
pub use deliveries::{
    AttemptEnd, DeliveryFilter, DeliveryRow, NewDelivery, Recorded as DeliveryRecorded,
};
pub use feed::{FeedPlan, IntakeRow, NewEntry};
pub use files::{
    Decision, EventRow, FileFilter, FileRow, Identity, NewArrival, Recorded, RemoteFile,
};
pub use requests::{Decided, NewRequest, RequestRow};

/// A connected, migrated ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: Pool,
    /// The URL, password hidden, for messages.
    url: String,
    /// The SQLite file (to tell a full disk from other I/O errors).
    sqlite_path: Option<PathBuf>,
}

/// Which database a ledger is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same body against whichever pool the ledger has.
macro_rules! on_pool {
    ($ledger:expr, $pool:ident => $body:expr) => {
        match &$ledger.pool {
            $crate::ledger::Pool::Sqlite($pool) => $body,
            $crate::ledger::Pool::Postgres($pool) => $body,
        }
    };
}
use on_pool;

/// The database refused a second feed: which promise it kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Another fed file has the same checksum.
    Checksum,
    /// Another fed file has the same fingerprint.
    Fingerprint,
    /// Another fed file has the same business key.
    BusinessKey,
    /// A record key is already fed (from another file, or twice in this one).
    RecordKey,
    /// The claim of a watched file is already recorded (`files_claim`).
    Claim,
    /// A live delivery of the same bytes to the partner exists.
    DeliveryChecksum,
    /// The outbox claim is already recorded as a delivery.
    DeliveryClaim,
    /// A resend of this delivery is already waiting to go out.
    PendingResend,
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Guard::Checksum => "a fed file with the same checksum exists (files_fed_checksum)",
            Guard::Fingerprint => {
                "a fed file with the same fingerprint exists (files_fed_fingerprint)"
            }
            Guard::BusinessKey => {
                "a fed file with the same business key exists (files_fed_business_key)"
            }
            Guard::RecordKey => "a record key is already fed (entries_fed_record_key)",
            Guard::Claim => "this claim is already recorded (files_claim)",
            Guard::DeliveryChecksum => {
                "a live delivery of the same bytes to this partner exists (deliveries_live_checksum)"
            }
            Guard::DeliveryClaim => "this outbox claim is already recorded (deliveries_claim)",
            Guard::PendingResend => {
                "a resend of this delivery is already waiting to go out (deliveries_pending_resend)"
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the ledger {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("ledger: {context}: {source}")]
    Query {
        context: &'static str,
        source: sqlx::Error,
    },
    #[error("ledger refused the feed: {0}")]
    Guard(Guard),
    #[error("ledger: {0}")]
    State(String),
    /// No connection could be had; `cause` is what connecting says.
    #[error("the ledger {url} is unreachable: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("the disk holding the ledger {path} is full ({free} bytes free): {source}")]
    DiskFull {
        path: String,
        free: u64,
        source: sqlx::Error,
    },
    /// A row the ledger holds does not read as what this version writes.
    #[error("ledger: file {id}: column {column}: {message}")]
    Corrupt {
        id: i64,
        column: &'static str,
        message: String,
    },
}

/// Wrap a query error, recognising the guard constraints by name (PostgreSQL)
/// or by the columns SQLite names in its message.
fn query_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError {
    move |source| match guard_of(&source) {
        Some(g) => LedgerError::Guard(g),
        None => LedgerError::Query { context, source },
    }
}

fn guard_of(e: &sqlx::Error) -> Option<Guard> {
    let db = e.as_database_error()?;
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    let name = db.constraint().unwrap_or_default();
    let msg = db.message();
    let has = |constraint: &str, sqlite_cols: &str| name == constraint || msg.contains(sqlite_cols);
    if has("files_fed_checksum", "files.checksum") {
        Some(Guard::Checksum)
    } else if has("files_fed_fingerprint", "files.fingerprint") {
        Some(Guard::Fingerprint)
    } else if has("files_fed_business_key", "files.business_key") {
        Some(Guard::BusinessKey)
    } else if has("entries_fed_record_key", "entries.record_key") {
        Some(Guard::RecordKey)
    } else if has("files_claim", "files.claim") {
        Some(Guard::Claim)
    } else if has("deliveries_live_checksum", "deliveries.checksum") {
        Some(Guard::DeliveryChecksum)
    } else if has("deliveries_claim", "deliveries.claim") {
        Some(Guard::DeliveryClaim)
    } else if has(
        "deliveries_pending_resend",
        "deliveries.related_delivery_id",
    ) {
        Some(Guard::PendingResend)
    } else {
        None
    }
}

/// Hide a password in a ledger URL before it reaches a message or a log.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Ledger {
    /// Open the ledger: `url` when given (`sqlite://PATH`, `postgres://…`),
    /// otherwise SQLite at `<data_dir>/ledger.db`, created on first use.
    /// Migrations run on open (PostgreSQL serialises them with an advisory lock).
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Ledger, LedgerError> {
        let url = match url {
            Some(u) => u.to_string(),
            None => format!("sqlite://{}", data_dir.join("ledger.db").display()),
        };
        let shown = redact_url(&url);
        let open_err = |source| LedgerError::Open {
            url: shown.clone(),
            source,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(&url).map_err(open_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(open_err)?;
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .map_err(|source| LedgerError::Migrate {
                    url: shown.clone(),
                    source,
                })?;
            Ok(Ledger {
                pool: Pool::Postgres(pool),
                url: shown,
                sqlite_path: None,
            })
        } else if url.starts_with("sqlite:") {
            let path = PathBuf::from(
                url.trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:"),
            );
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| open_err(sqlx::Error::Io(e)))?;
            }
            let full = |source: sqlx::Error| match disk_full(&path, &source) {
                Some(free) => LedgerError::DiskFull {
                    path: path.display().to_string(),
                    free,
                    source,
                },
                None => open_err(source),
            };
            let opts = SqliteConnectOptions::from_str(&url)
                .map_err(open_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Money: a commit is on disk before it is acknowledged.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30))
                // 32 MiB of page cache per connection: feeding millions of
                // entries touches the record-key index all over.
                .pragma("cache_size", "-32768")
                // The WAL shrinks back after a checkpoint: space a failed
                // feed took on a full disk is given back.
                .pragma("journal_size_limit", "67108864");
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                // A connection still inside a transaction (a COMMIT that
                // failed on a full disk leaves it open, holding the write
                // lock) is closed instead of going back to the pool, where it
                // would block every other writer.
                .after_release(|conn, _| {
                    Box::pin(async move {
                        let mut handle = conn.lock_handle().await?;
                        // SAFETY: the handle is locked out of sqlx's worker
                        // thread; sqlite3_get_autocommit only reads its state.
                        let idle = unsafe {
                            libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr())
                        } != 0;
                        if !idle {
                            tracing::warn!(
                                "closing an SQLite connection left inside a transaction"
                            );
                        }
                        Ok(idle)
                    })
                })
                .connect_with(opts)
                .await
                .map_err(full)?;
            sqlx::migrate!("migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|source| LedgerError::Migrate {
                    url: shown.clone(),
                    source,
                })?;
            Ok(Ledger {
                pool: Pool::Sqlite(pool),
                url: shown,
                sqlite_path: Some(path),
            })
        } else {
            Err(LedgerError::State(format!(
                "unsupported ledger URL {shown}: use sqlite://PATH or postgres://…"
            )))
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Say why a query failed when its error hides it: a pool that timed
    /// out waiting for a connection is probed with one direct connection
    /// (the database down, refusing, unreachable); an SQLite I/O error on a
    /// disk with no space left is a full disk.
    pub async fn diagnose(&self, e: LedgerError) -> LedgerError {
        let LedgerError::Query { source, .. } = &e else {
            return e;
        };
        if matches!(source, sqlx::Error::PoolTimedOut) {
            let probe = async {
                match &self.pool {
                    Pool::Postgres(p) => {
                        use sqlx::Connection;
                        sqlx::PgConnection::connect_with(&p.connect_options())
                            .await
                            .map(|_| ())
                    }
                    Pool::Sqlite(p) => {
                        use sqlx::Connection;
                        sqlx::SqliteConnection::connect_with(&p.connect_options())
                            .await
                            .map(|_| ())
                    }
                }
            };
            let cause = match tokio::time::timeout(Duration::from_secs(5), probe).await {
                Err(_) => "no answer within 5 s (host down or unreachable?)".to_string(),
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => {
                    "connecting works now, but no pooled connection was free for 10 s (overloaded?)"
                        .to_string()
                }
            };
            return LedgerError::Unreachable {
                url: self.url.clone(),
                cause,
            };
        }
        if let Some(path) = &self.sqlite_path
            && let Some(free) = disk_full(path, source)
            && let LedgerError::Query { source, .. } = e
        {
            return LedgerError::DiskFull {
                path: path.display().to_string(),
                free,
                source,
            };
        }
        e
    }
}

/// Bytes free on the file system holding `path`, when `e` is the kind of
/// SQLite error a full disk causes (SQLITE_FULL, or an I/O error while
/// growing a file) and almost nothing is free.
fn disk_full(path: &Path, e: &sqlx::Error) -> Option<u64> {
    let io_like = match e {
        sqlx::Error::Io(io) => io.raw_os_error() == Some(libc::ENOSPC),
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            // SQLITE_FULL, and SQLITE_IOERR with any extended code.
            .is_some_and(|c| c & 0xff == 13 || c & 0xff == 10),
        _ => false,
    };
    if !io_like {
        return None;
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let free = free_bytes(dir)?;
    (free < 1 << 20).then_some(free)
}

/// Bytes an unprivileged writer can still use on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so the buffer is filled in.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// A raw statement for tests that must prove the database (not the code)
/// refuses something, e.g. editing an audit event.
pub async fn execute_raw(ledger: &Ledger, sql: &str) -> Result<u64, sqlx::Error> {
    on_pool!(ledger, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|r| r.rows_affected()))
}
