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
//! - [`console`]: the operator console's sessions and pages.
//! - [`cluster`]: nodes' heartbeats and the leases of scheduled work.
//! - [`blobs`]: the content store kept in PostgreSQL.
//! - [`held`]: pushed halves of pairs held for their counterpart, and
//!   the judged files a partner's receipts show.

mod blobs;
mod cluster;
mod console;
mod day;
mod deliveries;
mod feed;
mod files;
mod held;
mod requests;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use blobs::{BlobPiece, CHUNK as BLOB_CHUNK};
pub use cluster::{Fence, LeaseRow, NodeRow};
pub use console::{ConsoleSession, EntryAmount, FedTotal, NewSession};
pub use day::{DeliveryCount, FileCount};
pub use deliveries::{
    AttemptEnd, DeliveryFilter, DeliveryRow, NewDelivery, Recorded as DeliveryRecorded, Staleness,
};
pub use feed::{FeedPlan, IntakeRow, NewEntry};
pub use files::{
    Decision, EventRow, FileFilter, FileRow, Identity, NewArrival, Recorded, RemoteFile,
};
pub use held::{HeldUpload, Pairing};
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
    /// The ledger holds migrations this version does not know.
    #[error("{0}; refusing to run on it (upgrade settlegate)")]
    Ahead(String),
    #[error("ledger: {context}: {source}")]
    Query {
        context: &'static str,
        source: sqlx::Error,
    },
    #[error("ledger refused the feed: {0}")]
    Guard(Guard),
    /// The lease a write was fenced by is held by another node now (or
    /// expired): nothing was written.
    #[error("the lease {0} is no longer held by this node; nothing recorded")]
    LeaseLost(String),
    /// A held half of a pair that an arrival was to take is no longer held
    /// (another node's arrival took it): nothing was written.
    #[error("the held upload {0} was taken by another arrival; nothing recorded")]
    HeldGone(String),
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

/// The migrations this version carries.
fn known_versions(backend: Backend) -> Vec<i64> {
    let migrator = match backend {
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("migrations/postgres"),
    };
    migrator.iter().map(|m| m.version).collect()
}

/// Where a ledger's schema stands against this version's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The ledger, password hidden.
    pub url: String,
    /// The migrations this version carries.
    pub known: Vec<i64>,
    /// The migrations the ledger records as applied.
    pub applied: Vec<i64>,
    /// Known, not applied yet: the ledger is behind.
    pub pending: Vec<i64>,
    /// Applied, not known: a newer version wrote the ledger.
    pub unknown: Vec<i64>,
}

impl MigrationStatus {
    fn of(url: String, known: Vec<i64>, applied: Vec<i64>) -> MigrationStatus {
        let pending = known
            .iter()
            .filter(|v| !applied.contains(v))
            .copied()
            .collect();
        let unknown = applied
            .iter()
            .filter(|v| !known.contains(v))
            .copied()
            .collect();
        MigrationStatus {
            url,
            known,
            applied,
            pending,
            unknown,
        }
    }

    /// `ahead`, `behind` or `current`.
    pub fn state(&self) -> &'static str {
        if !self.unknown.is_empty() {
            "ahead"
        } else if !self.pending.is_empty() {
            "behind"
        } else {
            "current"
        }
    }

    pub fn describe(&self) -> String {
        let list = |v: &[i64]| {
            v.iter()
                .map(|n| format!("{n:04}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.state() {
            "ahead" => format!(
                "the ledger {} is ahead: a newer settlegate applied migration(s) {} that this version ({}) does not know",
                self.url,
                list(&self.unknown),
                env!("CARGO_PKG_VERSION")
            ),
            "behind" => format!(
                "the ledger {} is behind: migration(s) {} not applied yet (settlegate migrate, or serve at start, applies them)",
                self.url,
                list(&self.pending)
            ),
            _ => format!(
                "the ledger {} is current (migrations up to {})",
                self.url,
                self.known
                    .last()
                    .map_or_else(|| "none".to_string(), |v| format!("{v:04}"))
            ),
        }
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
    /// Migrations run on open, under a lock: PostgreSQL's advisory lock
    /// (sqlx's migrator takes it), on SQLite a lock file beside the ledger. A
    /// ledger a newer version migrated is refused before anything is written.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Ledger, LedgerError> {
        let ledger = Ledger::connect(url, data_dir).await?;
        let status = ledger.status().await?;
        if !status.unknown.is_empty() {
            ledger.close().await;
            return Err(LedgerError::Ahead(status.describe()));
        }
        let migrated = match &ledger.pool {
            Pool::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
            // Nothing pending stays so: no lock to wait for.
            Pool::Sqlite(pool) => match ledger.sqlite_migration_lock(&status).await {
                Ok(_lock) => sqlx::migrate!("migrations/sqlite").run(pool).await,
                Err(e) => Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(e))),
            },
        };
        if let Err(source) = migrated {
            ledger.close().await;
            return Err(LedgerError::Migrate {
                url: ledger.url.clone(),
                source,
            });
        }
        Ok(ledger)
    }

    /// `<ledger>-migrate`, locked. sqlx's migrator takes no lock on SQLite:
    /// two processes opening one behind ledger at once would each read what
    /// is applied, and the second would run a migration again (and fail on
    /// the migrations table after redoing it). Held, the lock lets one
    /// migrate while the others wait, then find the work done.
    async fn sqlite_migration_lock(
        &self,
        status: &MigrationStatus,
    ) -> std::io::Result<Option<std::fs::File>> {
        let Some(path) = self
            .sqlite_path
            .as_ref()
            .filter(|_| !status.pending.is_empty())
        else {
            return Ok(None);
        };
        let mut name = path.as_os_str().to_owned();
        name.push("-migrate");
        let lock_path = PathBuf::from(name);
        let named = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{}: {e}", lock_path.display()))
        };
        // A lock needs no write access: a file another user created (say
        // `migrate` run as root) is opened for reading.
        let file = match std::fs::File::open(&lock_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path),
            other => other,
        }
        .map_err(named)?;
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::Error(e)) => return Err(named(e)),
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        tracing::info!(lock = %lock_path.display(), "waiting for another process migrating the ledger");
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(std::io::Error::other)?;
        locked.map(Some).map_err(named)
    }

    /// Where the ledger's schema stands, without changing it (an SQLite
    /// file that does not exist is not created).
    pub async fn migration_status(
        url: Option<&str>,
        data_dir: &Path,
    ) -> Result<MigrationStatus, LedgerError> {
        let url_text = match url {
            Some(u) => u.to_string(),
            None => format!("sqlite://{}", data_dir.join("ledger.db").display()),
        };
        if url_text.starts_with("sqlite:") {
            let opts =
                SqliteConnectOptions::from_str(&url_text).map_err(|source| LedgerError::Open {
                    url: redact_url(&url_text),
                    source,
                })?;
            if sqlite_file(&url_text, &opts).is_some_and(|file| !file.exists()) {
                return Ok(MigrationStatus::of(
                    redact_url(&url_text),
                    known_versions(Backend::Sqlite),
                    Vec::new(),
                ));
            }
        }
        let ledger = Ledger::connect(url, data_dir).await?;
        let status = ledger.status().await;
        ledger.close().await;
        status
    }

    async fn status(&self) -> Result<MigrationStatus, LedgerError> {
        let table = match self.backend() {
            Backend::Sqlite => {
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = '_sqlx_migrations' AND schemaname = current_schema()"
            }
        };
        let exists: i64 = on_pool!(self, pool => sqlx::query_scalar(table).fetch_one(pool).await)
            .map_err(query_error("read the migrations table"))?;
        let applied: Vec<i64> = if exists > 0 {
            on_pool!(self, pool => sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version"
            )
            .fetch_all(pool)
            .await)
            .map_err(query_error("read the applied migrations"))?
        } else {
            Vec::new()
        };
        Ok(MigrationStatus::of(
            self.url.clone(),
            known_versions(self.backend()),
            applied,
        ))
    }

    /// Connect to a ledger another connection already migrated (the
    /// content store's own pool).
    pub async fn connect_only(url: &str, data_dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::connect(Some(url), data_dir).await
    }

    /// Connect without migrating.
    async fn connect(url: Option<&str>, data_dir: &Path) -> Result<Ledger, LedgerError> {
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
            Ok(Ledger {
                pool: Pool::Postgres(pool),
                url: shown,
                sqlite_path: None,
            })
        } else if url.starts_with("sqlite:") {
            let parsed = SqliteConnectOptions::from_str(&url).map_err(open_err)?;
            let path = sqlite_file(&url, &parsed);
            if let Some(parent) = path.as_deref().and_then(Path::parent)
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| open_err(sqlx::Error::Io(e)))?;
            }
            let full = |source: sqlx::Error| match path
                .as_deref()
                .and_then(|p| Some((p, disk_full(p, &source)?)))
            {
                Some((p, free)) => LedgerError::DiskFull {
                    path: p.display().to_string(),
                    free,
                    source,
                },
                None => open_err(source),
            };
            let opts = parsed
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Money: a commit is on disk before it is acknowledged.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                // Replaced by `wait_for_the_lock` once connected; it bounds
                // the statements run while connecting.
                .busy_timeout(BUSY_TIMEOUT)
                // 32 MiB of page cache per connection: feeding millions of
                // entries touches the record-key index all over.
                .pragma("cache_size", "-32768")
                // The WAL shrinks back after a checkpoint: space a failed
                // feed took on a full disk is given back.
                .pragma("journal_size_limit", "67108864");
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        let mut handle = conn.lock_handle().await?;
                        // SAFETY: the handle is locked out of sqlx's worker
                        // thread; the handler is a plain function that keeps
                        // no state.
                        let rc = unsafe {
                            libsqlite3_sys::sqlite3_busy_handler(
                                handle.as_raw_handle().as_ptr(),
                                Some(wait_for_the_lock),
                                std::ptr::null_mut(),
                            )
                        };
                        if rc != libsqlite3_sys::SQLITE_OK {
                            return Err(sqlx::Error::Protocol(format!(
                                "cannot set the SQLite busy handler (code {rc})"
                            )));
                        }
                        Ok(())
                    })
                })
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
            Ok(Ledger {
                pool: Pool::Sqlite(pool),
                url: shown,
                sqlite_path: path,
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

/// How long an SQLite statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite's busy handler for the ledger's connections. SQLite's own sleeps
/// 1, 2, 5, 10, 15, 20, 25 ms and on between tries, while a write
/// transaction here holds the lock for a millisecond or two: with several
/// files judged at once, writers slept more than they worked. This one tries
/// again after 50 µs, doubling to 1 ms, and gives up after [`BUSY_TIMEOUT`]
/// of sleeps, as the default handler does.
extern "C" fn wait_for_the_lock(
    _: *mut std::ffi::c_void,
    tries: std::ffi::c_int,
) -> std::ffi::c_int {
    match busy_wait(tries) {
        Some(wait) => {
            std::thread::sleep(wait);
            1
        }
        None => 0,
    }
}

/// The sleep before try `tries + 1` for the lock, or `None` once the sleeps
/// so far add up to [`BUSY_TIMEOUT`].
fn busy_wait(tries: std::ffi::c_int) -> Option<Duration> {
    const FIRST_MICROS: u64 = 50;
    const MOST: Duration = Duration::from_millis(1);
    // 50, 100, 200, 400, 800 µs (1 550 µs in all), then 1 ms a try.
    let doubling = 5;
    let tries = u64::try_from(tries).unwrap_or(0);
    let slept = if tries <= doubling {
        Duration::from_micros(FIRST_MICROS * ((1 << tries) - 1))
    } else {
        Duration::from_micros(FIRST_MICROS * ((1 << doubling) - 1))
            + MOST * (tries - doubling) as u32
    };
    if slept >= BUSY_TIMEOUT {
        return None;
    }
    Some(if tries < doubling {
        Duration::from_micros(FIRST_MICROS << tries)
    } else {
        MOST
    })
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

/// The file an `sqlite:` URL names, as sqlx reads it (decoded, its query
/// left out); none for an in-memory database (one process, no file).
fn sqlite_file(url: &str, opts: &SqliteConnectOptions) -> Option<PathBuf> {
    (!sqlite_in_memory(url)).then(|| opts.get_filename().to_path_buf())
}

/// Whether an `sqlite:` URL names an in-memory database (sqlx's spellings).
fn sqlite_in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || query.split('&').any(|kv| kv == "mode=memory")
}

/// A raw statement for tests that must prove the database (not the code)
/// refuses something, e.g. editing an audit event.
pub async fn execute_raw(ledger: &Ledger, sql: &str) -> Result<u64, sqlx::Error> {
    on_pool!(ledger, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|r| r.rows_affected()))
}

/// ` WHERE …` over the conditions that apply (`("partner =", true)` →
/// `partner = $1`), placeholders numbered in order; empty when none does.
/// Fixed text only: the caller binds the values in the same order.
pub(crate) fn where_clause(conditions: &[(&str, bool)]) -> String {
    let parts: Vec<String> = conditions
        .iter()
        .filter(|(_, applies)| *applies)
        .enumerate()
        .map(|(i, (condition, _))| format!("{condition} ${}", i + 1))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    }
}

#[cfg(test)]
mod where_tests {
    use super::where_clause;

    #[test]
    fn placeholders_follow_the_conditions_that_apply() {
        assert_eq!(where_clause(&[("a =", false), ("b =", false)]), "");
        assert_eq!(
            where_clause(&[("a =", false), ("b >=", true), ("c <", true)]),
            " WHERE b >= $1 AND c < $2"
        );
    }
}

#[cfg(test)]
mod busy_tests {
    use std::time::Duration;

    use super::{BUSY_TIMEOUT, busy_wait};

    #[test]
    fn the_busy_handler_retries_soon_and_gives_up_after_the_timeout() {
        let waits: Vec<Duration> = (0..).map_while(busy_wait).collect();
        assert_eq!(waits[0], Duration::from_micros(50));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(1)));
        let total: Duration = waits.iter().sum();
        assert!(total >= BUSY_TIMEOUT, "{total:?}");
        assert!(
            total <= BUSY_TIMEOUT + Duration::from_millis(1),
            "{total:?}"
        );
    }

    /// SQLite reports a busy timeout of 0 once a busy handler of one's own
    /// replaces the one `busy_timeout` set.
    #[tokio::test]
    async fn the_ledgers_connections_wait_with_this_handler() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = super::Ledger::open(None, dir.path()).await.unwrap();
        let super::Pool::Sqlite(pool) = &ledger.pool else {
            panic!("the default ledger is SQLite");
        };
        // Every connection of the pool, not only the first.
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut conn = pool.acquire().await.unwrap();
            let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(timeout, 0);
            held.push(conn);
        }
    }
}

#[cfg(test)]
mod sqlite_url_tests {
    use super::sqlite_in_memory;

    #[test]
    fn in_memory_urls_have_no_file() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://ledger.db?mode=memory",
            "sqlite:ledger.db?cache=shared&mode=memory",
        ] {
            assert!(sqlite_in_memory(url), "{url}");
        }
        for url in [
            "sqlite:///var/lib/settlegate/ledger.db",
            "sqlite://ledger.db?mode=rwc",
            "sqlite://memory.db",
            "sqlite://:memory:.db",
        ] {
            assert!(!sqlite_in_memory(url), "{url}");
        }
    }
}
