//! The ledger: every SQL statement settlegate runs lives in this module.
//!
//! SQLite (the embedded default) and PostgreSQL (several gateway processes on
//! several machines) run the same migrations' tables and, where the dialects
//! agree, the same statements: `$N` placeholders work in both, and
//! [`on_pool!`] runs one body against either pool. The promise is kept by
//! the database: partial unique indexes allow one fed file per checksum,
//! fingerprint and business key, and one live entry per record key, so a
//! second feed fails with a constraint violation ([`Guard`]) whichever
//! process attempts it.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::Sqlite;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::mpsc;

use crate::judge::{Judgement, PriorFile, Verdict};

/// A connected, migrated ledger.
#[derive(Debug, Clone)]
pub enum Ledger {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same body against whichever pool the ledger has.
macro_rules! on_pool {
    ($ledger:expr, $pool:ident => $body:expr) => {
        match $ledger {
            Ledger::Sqlite($pool) => $body,
            Ledger::Postgres($pool) => $body,
        }
    };
}

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

/// A new arrival, recorded before anything else happens to it.
#[derive(Debug, Clone)]
pub struct NewArrival<'a> {
    pub partner: &'a str,
    pub channel: &'a str,
    pub endpoint: Option<&'a str>,
    pub source_path: Option<&'a str>,
    pub name: &'a str,
    pub received_at: DateTime<Utc>,
    pub size: u64,
    pub checksum: &'a str,
    pub sidecar_checksum: Option<&'a str>,
    /// Who brought it in (the operator for manual ingest, the gateway otherwise).
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    /// For a file pulled from a partner's server: what it was there.
    pub remote: Option<&'a RemoteFile>,
}

/// A file on a partner's SFTP server as listed: the ledger remembers which
/// ones were taken, so a file left in place is not taken again while a
/// changed one (other size or modification time) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub partner: String,
    pub endpoint: String,
    pub path: String,
    pub size: u64,
    /// Seconds since the epoch, as the server reports it.
    pub mtime: i64,
}

/// What verification established, written with the verdict.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub format: Option<String>,
    pub fingerprint: Option<String>,
    pub business_key: Option<String>,
    pub business_date: Option<NaiveDate>,
    pub records: Option<i64>,
    /// JSON object of control totals.
    pub totals: Option<String>,
    /// JSON array of drill signals.
    pub drill_signals: Option<String>,
    /// JSON object of the first error.
    pub error: Option<String>,
}

/// A verdict to record: which file, what was established, who decided when.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub file_id: i64,
    pub identity: &'a Identity,
    pub judgement: &'a Judgement,
    pub at: DateTime<Utc>,
    pub actor: &'a str,
}

/// How to feed a file.
#[derive(Debug, Clone, Copy)]
pub struct FeedPlan<'a> {
    pub decision: Decision<'a>,
    pub partner: &'a str,
    /// The verdict the file has now: `received` (intake), `drill` (an
    /// operator's release), `conflict` (an operator's supersede).
    pub from: &'a str,
    /// A fed file this one replaces (supersede).
    pub supersedes: Option<i64>,
}

/// Where fed entries go.
struct EntryTarget<'a> {
    file_id: i64,
    partner: &'a str,
    format: &'a str,
    date: NaiveDate,
}

/// The statements whose SQL differs between the backends.
trait EntryWriter {
    /// Insert a batch of original entries.
    fn insert_entries(
        &mut self,
        t: &EntryTarget<'_>,
        rows: &[NewEntry],
    ) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send;
    /// Insert reversal entries (negated amounts) for a file's live originals.
    const REVERSE_ENTRIES: &'static str;
}

/// Offset a file's live originals with reversal entries, then mark them
/// reversed by `by` (the only update entries allow).
macro_rules! reverse_entries {
    ($tx:expr, $file_id:expr, $by:expr) => {{
        let tx = $tx;
        async {
            sqlx::query(entry_writer_sql(&*tx))
                .bind($file_id)
                .execute(&mut **tx)
                .await
                .map_err(query_error("insert reversals"))?;
            sqlx::query(
                "UPDATE entries SET reversed_by = $2 WHERE file_id = $1 AND kind = 'original' AND reversed_by IS NULL",
            )
            .bind($file_id)
            .bind($by)
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(query_error("mark reversed"))
        }
        .await
    }};
}

/// The reversal statement of the transaction's backend.
fn entry_writer_sql<T: EntryWriter>(_: &T) -> &'static str {
    T::REVERSE_ENTRIES
}

/// One settlement entry to feed.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub record_no: i64,
    pub record_key: String,
    pub amount: Decimal,
    /// JSON object of the record's fields.
    pub fields: String,
}

/// A file as the ledger holds it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct FileRow {
    pub id: i64,
    pub partner: String,
    pub channel: String,
    pub endpoint: Option<String>,
    pub source_path: Option<String>,
    pub name: String,
    pub received_at: DateTime<Utc>,
    pub size: i64,
    pub checksum: String,
    pub sidecar_checksum: Option<String>,
    pub format: Option<String>,
    pub fingerprint: Option<String>,
    pub business_key: Option<String>,
    pub business_date: Option<NaiveDate>,
    pub records: Option<i64>,
    pub totals: Option<String>,
    pub drill_signals: Option<String>,
    pub verdict: String,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub related_file_id: Option<i64>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl FileRow {
    pub fn prior(&self) -> PriorFile {
        PriorFile {
            id: self.id,
            name: self.name.clone(),
            verdict: self.verdict.clone(),
            channel: self.channel.clone(),
            received_at: self.received_at,
            decided_at: self.decided_at,
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub file_id: Option<i64>,
    pub kind: String,
    pub actor: String,
    pub reason: Option<String>,
    pub details: Option<String>,
}

/// What settlement will pay for one partner, format and business date.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IntakeRow {
    pub partner: String,
    pub format: String,
    pub business_date: NaiveDate,
    pub files: i64,
    pub entries: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
}

/// Filters of `settlegate files`.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    pub partner: Option<String>,
    pub business_date: Option<NaiveDate>,
    pub verdict: Option<String>,
    pub limit: Option<i64>,
}

/// The columns of [`FileRow`], as a literal so queries stay `&'static str`.
macro_rules! file_columns {
    () => {
        "id, partner, channel, endpoint, source_path, name, received_at, size, checksum, \
         sidecar_checksum, format, fingerprint, business_key, business_date, records, totals, drill_signals, \
         verdict, reason, error, related_file_id, decided_at"
    };
}

/// Rows per multi-row INSERT on SQLite (8 parameters each, well under its limit).
const SQLITE_BATCH: usize = 500;

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
            Ok(Ledger::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            if let Some(parent) = Path::new(
                url.trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:"),
            )
            .parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| open_err(sqlx::Error::Io(e)))?;
            }
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
                .pragma("cache_size", "-32768");
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(open_err)?;
            sqlx::migrate!("migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|source| LedgerError::Migrate {
                    url: shown.clone(),
                    source,
                })?;
            Ok(Ledger::Sqlite(pool))
        } else {
            Err(LedgerError::State(format!(
                "unsupported ledger URL {shown}: use sqlite://PATH or postgres://…"
            )))
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// Record an arrival (verdict `received`) and its audit event, in one
    /// transaction. Its bytes must already be in the content store.
    pub async fn record_arrival(&self, a: &NewArrival<'_>) -> Result<i64, LedgerError> {
        let details = serde_json::json!({
            "name": a.name, "channel": a.channel, "endpoint": a.endpoint,
            "source_path": a.source_path, "size": a.size, "checksum": a.checksum,
            "sidecar_checksum": a.sidecar_checksum,
        })
        .to_string();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO files (partner, channel, endpoint, source_path, name, received_at, size, checksum, sidecar_checksum, verdict) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'received') RETURNING id",
            )
            .bind(a.partner)
            .bind(a.channel)
            .bind(a.endpoint)
            .bind(a.source_path)
            .bind(a.name)
            .bind(a.received_at)
            .bind(a.size as i64)
            .bind(a.checksum)
            .bind(a.sidecar_checksum)
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("record arrival"))?;
            sqlx::query("INSERT INTO events (at, file_id, kind, actor, reason, details) VALUES ($1, $2, 'received', $3, $4, $5)")
                .bind(a.received_at)
                .bind(id)
                .bind(a.actor)
                .bind(a.reason)
                .bind(&details)
                .execute(&mut *tx)
                .await
                .map_err(query_error("record arrival event"))?;
            if let Some(r) = a.remote {
                // Another gateway process may have taken the same remote file
                // at the same moment: both arrivals are kept (the judge sees the
                // second as a duplicate), the first one is remembered.
                sqlx::query(
                    "INSERT INTO remote_files (partner, endpoint, path, size, mtime, file_id, taken_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(&r.partner)
                .bind(&r.endpoint)
                .bind(&r.path)
                .bind(r.size as i64)
                .bind(r.mtime)
                .bind(id)
                .bind(a.received_at)
                .execute(&mut *tx)
                .await
                .map_err(query_error("remember remote file"))?;
            }
            tx.commit().await.map_err(query_error("commit arrival"))?;
            Ok(id)
        })
    }

    /// The arrival that took this remote file (same endpoint, path, size and
    /// modification time), if any.
    pub async fn remote_taken(&self, r: &RemoteFile) -> Result<Option<i64>, LedgerError> {
        on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT file_id FROM remote_files \
                 WHERE partner = $1 AND endpoint = $2 AND path = $3 AND size = $4 AND mtime = $5",
            )
            .bind(&r.partner)
            .bind(&r.endpoint)
            .bind(&r.path)
            .bind(r.size as i64)
            .bind(r.mtime)
            .fetch_optional(pool)
            .await
            .map_err(query_error("look up remote file"))
        })
    }

    /// The earliest arrival of these bytes from this source (partner,
    /// endpoint and remote path), whatever its verdict.
    pub async fn taken_from(
        &self,
        partner: &str,
        endpoint: &str,
        source_path: &str,
        checksum: &str,
    ) -> Result<Option<i64>, LedgerError> {
        on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM files \
                 WHERE checksum = $1 AND partner = $2 AND endpoint = $3 AND source_path = $4 \
                 ORDER BY id LIMIT 1",
            )
            .bind(checksum)
            .bind(partner)
            .bind(endpoint)
            .bind(source_path)
            .fetch_optional(pool)
            .await
            .map_err(query_error("look up an earlier arrival"))
        })
    }

    /// The earliest arrival before `before_id` with these bytes, whatever its verdict.
    pub async fn earlier_same_checksum(
        &self,
        checksum: &str,
        before_id: i64,
    ) -> Result<Option<FileRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE checksum = $1 AND id < $2 ORDER BY id LIMIT 1"
        );
        on_pool!(self, pool => sqlx::query_as(sql).bind(checksum).bind(before_id).fetch_optional(pool).await)
            .map_err(query_error("look up checksum"))
    }

    /// The fed files with this fingerprint and with this business key, read
    /// in one statement so both answers come from one snapshot (two separate
    /// look-ups could straddle another process's feed and see a conflict
    /// where there is a duplicate).
    pub async fn fed_matching(
        &self,
        fingerprint: &str,
        format: &str,
        business_key: &str,
    ) -> Result<(Option<FileRow>, Option<FileRow>), LedgerError> {
        // Two index probes (the partial unique indexes) in one statement.
        let sql = concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE verdict = 'fed' AND fingerprint = $1 UNION ALL SELECT ",
            file_columns!(),
            " FROM files WHERE verdict = 'fed' AND format = $2 AND business_key = $3"
        );
        let rows: Vec<FileRow> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(fingerprint)
            .bind(format)
            .bind(business_key)
            .fetch_all(pool)
            .await)
        .map_err(query_error("look up fingerprint and business key"))?;
        let same_fp = rows
            .iter()
            .find(|r| r.fingerprint.as_deref() == Some(fingerprint))
            .cloned();
        let same_key = rows
            .iter()
            .find(|r| {
                r.format.as_deref() == Some(format)
                    && r.business_key.as_deref() == Some(business_key)
            })
            .cloned();
        Ok((same_fp, same_key))
    }

    /// How many of `keys` are already fed, per file.
    pub async fn fed_record_keys(
        &self,
        partner: &str,
        format: &str,
        keys: &[String],
    ) -> Result<BTreeMap<i64, u64>, LedgerError> {
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(500) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT file_id, COUNT(*) AS n FROM entries WHERE partner = $1 AND format = $2 \
                 AND kind = 'original' AND reversed_by IS NULL AND record_key IN ({}) GROUP BY file_id",
                list.join(", ")
            );
            let rows: Vec<(i64, i64)> = on_pool!(self, pool => {
                // Built from numbered placeholders only.
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(partner).bind(format);
                for k in chunk {
                    q = q.bind(k);
                }
                q.fetch_all(pool).await
            })
            .map_err(query_error("look up record keys"))?;
            for (file, n) in rows {
                *out.entry(file).or_insert(0) += n as u64;
            }
        }
        Ok(out)
    }

    pub async fn file(&self, id: i64) -> Result<Option<FileRow>, LedgerError> {
        let sql = concat!("SELECT ", file_columns!(), " FROM files WHERE id = $1");
        on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
            .map_err(query_error("read file"))
    }

    pub async fn files(&self, filter: &FileFilter) -> Result<Vec<FileRow>, LedgerError> {
        let mut clauses = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.partner.is_some() {
            clauses.push(format!("partner = {}", next()));
        }
        if filter.business_date.is_some() {
            clauses.push(format!("business_date = {}", next()));
        }
        if filter.verdict.is_some() {
            clauses.push(format!("verdict = {}", next()));
        }
        let where_ = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let limit = filter
            .limit
            .map(|l| format!(" LIMIT {l}"))
            .unwrap_or_default();
        let sql = format!(
            "SELECT {} FROM files{where_} ORDER BY id{limit}",
            file_columns!()
        );
        on_pool!(self, pool => {
            // Built from fixed clauses and numbered placeholders only.
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
            if let Some(p) = &filter.partner {
                q = q.bind(p);
            }
            if let Some(d) = filter.business_date {
                q = q.bind(d);
            }
            if let Some(v) = &filter.verdict {
                q = q.bind(v);
            }
            q.fetch_all(pool).await
        })
        .map_err(query_error("list files"))
    }

    pub async fn events(&self, file_id: i64) -> Result<Vec<EventRow>, LedgerError> {
        let sql = "SELECT id, at, file_id, kind, actor, reason, details FROM events WHERE file_id = $1 ORDER BY id";
        on_pool!(self, pool => sqlx::query_as(sql).bind(file_id).fetch_all(pool).await)
            .map_err(query_error("read events"))
    }

    /// Files still `received` (staged but never judged: a crash mid-intake).
    pub async fn unjudged(&self) -> Result<Vec<FileRow>, LedgerError> {
        self.files(&FileFilter {
            verdict: Some("received".into()),
            ..FileFilter::default()
        })
        .await
    }

    /// Record a verdict other than `fed`, with the file's identity and an
    /// audit event, in one transaction.
    pub async fn decide(&self, d: &Decision<'_>) -> Result<(), LedgerError> {
        let (id, identity, judgement, at, actor) =
            (d.file_id, d.identity, d.judgement, d.at, d.actor);
        if judgement.verdict == Verdict::Fed {
            return Err(LedgerError::State(
                "a fed verdict is written by feed()".into(),
            ));
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            set_verdict!(&mut *tx, id, identity, judgement, at, "received")?;
            insert_event!(&mut *tx, at, id, judgement.verdict.as_str(), actor, &judgement.reason, judgement.related)?;
            tx.commit().await.map_err(query_error("commit verdict"))
        })
    }

    /// Feed a file: in one transaction, mark it `fed`, insert its entries as
    /// they arrive on `entries`, and append the event. Any failure — a guard
    /// constraint, the entries channel closing before the stream is complete,
    /// a lost connection — rolls everything back: never half-fed.
    ///
    /// When the feed supersedes a fed file, that file is marked `superseded`
    /// and its live entries are offset by reversal entries (negated amounts)
    /// in the same transaction, before the new entries go in.
    ///
    /// `entries` yields batches; the sender signals a complete stream by
    /// sending a final empty batch. The receiver is dropped when this returns,
    /// so a producer blocked on it stops.
    pub async fn feed(
        &self,
        plan: &FeedPlan<'_>,
        mut entries: mpsc::Receiver<Vec<NewEntry>>,
    ) -> Result<u64, LedgerError> {
        let d = &plan.decision;
        let (id, identity, judgement, at, actor) =
            (d.file_id, d.identity, d.judgement, d.at, d.actor);
        if judgement.verdict != Verdict::Fed {
            return Err(LedgerError::State("feed() needs a fed judgement".into()));
        }
        let target = EntryTarget {
            file_id: id,
            partner: plan.partner,
            format: identity
                .format
                .as_deref()
                .ok_or_else(|| LedgerError::State("a fed file needs a format".into()))?,
            date: identity
                .business_date
                .ok_or_else(|| LedgerError::State("a fed file needs a business date".into()))?,
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            if let Some(old) = plan.supersedes {
                let n = sqlx::query(
                    "UPDATE files SET verdict = 'superseded', related_file_id = $2, decided_at = $3                      WHERE id = $1 AND verdict = 'fed'",
                )
                .bind(old)
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(query_error("mark superseded"))?
                .rows_affected();
                if n != 1 {
                    return Err(LedgerError::State(format!("file {old} is not fed; nothing to supersede")));
                }
                reverse_entries!(&mut tx, old, id)?;
                insert_event!(&mut *tx, at, old, "superseded", actor, &judgement.reason, Some(id))?;
            }
            set_verdict!(&mut *tx, id, identity, judgement, at, plan.from)?;
            let mut fed = 0u64;
            loop {
                let Some(batch) = entries.recv().await else {
                    return Err(LedgerError::State("the entry stream ended early; nothing was fed".into()));
                };
                if batch.is_empty() {
                    break;
                }
                tx.insert_entries(&target, &batch).await?;
                fed += batch.len() as u64;
            }
            insert_event!(&mut *tx, at, id, "fed", actor, &judgement.reason, plan.supersedes)?;
            tx.commit().await.map_err(query_error("commit feed"))?;
            Ok(fed)
        })
    }

    /// Move a quarantined file to a final operator verdict (`rejected`), with
    /// an audit event. `from` is the verdict it must have now.
    pub async fn reject(
        &self,
        id: i64,
        from: &str,
        reason: &str,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), LedgerError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let n = sqlx::query("UPDATE files SET verdict = 'rejected', reason = $3, decided_at = $4 WHERE id = $1 AND verdict = $2")
                .bind(id)
                .bind(from)
                .bind(reason)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(query_error("reject"))?
                .rows_affected();
            if n != 1 {
                return Err(LedgerError::State(format!("file {id} is no longer {from}")));
            }
            insert_event!(&mut *tx, at, id, "rejected", actor, reason, None::<i64>)?;
            tx.commit().await.map_err(query_error("commit reject"))
        })
    }

    /// What settlement will pay for a business date, per partner and format.
    /// Amounts are summed as exact decimals in Rust (SQLite has no exact
    /// decimal arithmetic), reversals included.
    pub async fn intake(&self, date: NaiveDate) -> Result<Vec<IntakeRow>, LedgerError> {
        let sql = "SELECT partner, format, file_id, CAST(amount AS TEXT) AS amount FROM entries WHERE business_date = $1";
        let mut groups: BTreeMap<
            (String, String),
            (std::collections::BTreeSet<i64>, i64, Decimal),
        > = BTreeMap::new();
        let rows: Vec<(String, String, i64, String)> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(date).fetch_all(pool).await)
                .map_err(query_error("read intake"))?;
        for (partner, format, file, amount) in rows {
            let amount = Decimal::from_str_exact(&amount).map_err(|e| {
                LedgerError::State(format!("entry amount {amount:?} is not a decimal: {e}"))
            })?;
            let g = groups.entry((partner, format)).or_default();
            g.0.insert(file);
            g.1 += 1;
            g.2 =
                g.2.checked_add(amount)
                    .ok_or_else(|| LedgerError::State("intake total overflows".into()))?;
        }
        Ok(groups
            .into_iter()
            .map(|((partner, format), (files, entries, total))| IntakeRow {
                partner,
                format,
                business_date: date,
                files: files.len() as i64,
                entries,
                total,
            })
            .collect())
    }

    /// Entries of a file (for `show` and tests).
    pub async fn entry_count(&self, file_id: i64) -> Result<i64, LedgerError> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM entries WHERE file_id = $1").bind(file_id).fetch_one(pool).await)
            .map_err(query_error("count entries"))
    }
}

/// Set a `received` file's identity and verdict. Fails (rows = 0) if another
/// process already judged it.
macro_rules! set_verdict {
    ($exec:expr, $id:expr, $identity:expr, $judgement:expr, $at:expr, $from:expr) => {{
        let i: &Identity = $identity;
        let j: &Judgement = $judgement;
        sqlx::query(
            "UPDATE files SET format = $2, fingerprint = $3, business_key = $4, business_date = $5, records = $6, \
             totals = $7, drill_signals = $8, error = $9, verdict = $10, reason = $11, related_file_id = $12, \
             decided_at = $13 WHERE id = $1 AND verdict = $14",
        )
        .bind($id)
        .bind(&i.format)
        .bind(&i.fingerprint)
        .bind(&i.business_key)
        .bind(i.business_date)
        .bind(i.records)
        .bind(&i.totals)
        .bind(&i.drill_signals)
        .bind(&i.error)
        .bind(j.verdict.as_str())
        .bind(&j.reason)
        .bind(j.related)
        .bind($at)
        .bind($from)
        .execute($exec)
        .await
        .map_err(query_error("record verdict"))
        .and_then(|r| {
            if r.rows_affected() == 1 {
                Ok(())
            } else {
                Err(LedgerError::State(format!("file {} is no longer {} (judged by another process?)", $id, $from)))
            }
        })
    }};
}
use set_verdict;

macro_rules! insert_event {
    ($exec:expr, $at:expr, $id:expr, $kind:expr, $actor:expr, $reason:expr, $related:expr) => {{
        let details = $related.map(|r: i64| serde_json::json!({ "related_file_id": r }).to_string());
        sqlx::query("INSERT INTO events (at, file_id, kind, actor, reason, details) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind($at)
            .bind($id)
            .bind($kind)
            .bind($actor)
            .bind($reason)
            .bind(details)
            .execute($exec)
            .await
            .map(|_| ())
            .map_err(query_error("append event"))
    }};
}
use insert_event;

impl EntryWriter for sqlx::Transaction<'_, Sqlite> {
    async fn insert_entries(
        &mut self,
        t: &EntryTarget<'_>,
        rows: &[NewEntry],
    ) -> Result<(), LedgerError> {
        for chunk in rows.chunks(SQLITE_BATCH) {
            // Anonymous `?` placeholders: binding numbered ones makes SQLite
            // look each name up in a list, quadratic in a statement this long.
            let mut sql = String::with_capacity(128 + chunk.len() * 32);
            sql.push_str(
                "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, 'original', ?)");
            }
            // Built from placeholders only.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for r in chunk {
                // SQLite keeps amounts as exact decimal text.
                q = q
                    .bind(t.file_id)
                    .bind(t.partner)
                    .bind(t.format)
                    .bind(t.date)
                    .bind(r.record_no)
                    .bind(&r.record_key)
                    .bind(r.amount.to_string())
                    .bind(&r.fields);
            }
            q.execute(&mut **self)
                .await
                .map_err(query_error("insert entries"))?;
        }
        Ok(())
    }

    // Negate the decimal text exactly (SQLite arithmetic would go through floats).
    const REVERSE_ENTRIES: &'static str = "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
         SELECT file_id, partner, format, business_date, record_no, record_key, \
                CASE WHEN amount LIKE '-%' THEN substr(amount, 2) \
                     WHEN amount = '0' THEN '0' ELSE '-' || amount END, \
                'reversal', fields \
         FROM entries WHERE file_id = $1 AND kind = 'original' AND reversed_by IS NULL ORDER BY id";
}

impl EntryWriter for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn insert_entries(
        &mut self,
        t: &EntryTarget<'_>,
        rows: &[NewEntry],
    ) -> Result<(), LedgerError> {
        // One statement per batch: arrays unnested server-side.
        let (mut nos, mut keys, mut amounts, mut fields) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for e in rows {
            nos.push(e.record_no);
            keys.push(e.record_key.as_str());
            amounts.push(e.amount);
            fields.push(e.fields.as_str());
        }
        sqlx::query(
            "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
             SELECT $1, $2, $3, $4, r.no, r.key, r.amount, 'original', r.fields \
             FROM UNNEST($5::bigint[], $6::text[], $7::numeric[], $8::text[]) AS r(no, key, amount, fields)",
        )
        .bind(t.file_id)
        .bind(t.partner)
        .bind(t.format)
        .bind(t.date)
        .bind(&nos)
        .bind(&keys)
        .bind(&amounts)
        .bind(&fields)
        .execute(&mut **self)
        .await
        .map(|_| ())
        .map_err(query_error("insert entries"))
    }

    const REVERSE_ENTRIES: &'static str = "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
         SELECT file_id, partner, format, business_date, record_no, record_key, -amount, 'reversal', fields \
         FROM entries WHERE file_id = $1 AND kind = 'original' AND reversed_by IS NULL ORDER BY id";
}

/// A raw statement for tests that must prove the database (not the code)
/// refuses something, e.g. editing an audit event.
pub async fn execute_raw(ledger: &Ledger, sql: &str) -> Result<u64, sqlx::Error> {
    on_pool!(ledger, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|r| r.rows_affected()))
}
