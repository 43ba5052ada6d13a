//! Files: one row per arrival, its verdict, and the audit events about it;
//! the look-ups the judge makes before deciding.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::{Ledger, LedgerError, on_pool, query_error, where_clause};
use crate::format::VerifyError;
use crate::judge::{Judgement, PriorFile};
use crate::model::{Channel, DrillSignal, DrillSource, FileState, Verdict};

/// A new arrival, recorded before anything else happens to it.
#[derive(Debug, Clone)]
pub struct NewArrival<'a> {
    pub partner: &'a str,
    pub channel: Channel,
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
    /// For a file claimed from a watched inbox: the claim's identity. A
    /// second arrival with the same claim is refused by the database
    /// (`files_claim`); recording it again returns the first row.
    pub claim: Option<&'a str>,
    /// For a redelivery: the stored file whose bytes these are.
    pub redelivery_of: Option<i64>,
    /// The lease the arrival is taken under (a scheduled pickup): checked in
    /// the recording transaction, so a node that lost it records nothing.
    pub fence: Option<&'a super::Fence>,
    /// Halves of a pushed pair held in the ledger that this arrival takes:
    /// taken out in the recording transaction, which fails
    /// ([`LedgerError::HeldGone`]) when one is no longer held.
    pub takes_held: &'a [super::HeldUpload],
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
    /// Control totals, in the format's order (`None`: not valid).
    pub totals: Option<Vec<(String, Decimal)>>,
    pub drill_signals: Vec<DrillSignal>,
    /// The first error of an invalid file.
    pub error: Option<VerifyError>,
}

/// What recording an arrival did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new row.
    New(i64),
    /// The claim was recorded before (a retry after a crash): its row.
    Already(i64),
}

impl Recorded {
    pub fn id(self) -> i64 {
        match self {
            Recorded::New(id) | Recorded::Already(id) => id,
        }
    }
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

/// A file as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub id: i64,
    pub partner: String,
    pub channel: Channel,
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
    /// Control totals in the format's order (`None` unless valid).
    pub totals: Option<Vec<(String, Decimal)>>,
    pub drill_signals: Vec<DrillSignal>,
    pub state: FileState,
    pub reason: Option<String>,
    pub error: Option<VerifyError>,
    pub related_file_id: Option<i64>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl FileRow {
    pub fn prior(&self) -> PriorFile {
        PriorFile {
            id: self.id,
            name: self.name.clone(),
            state: self.state,
            channel: self.channel,
            received_at: self.received_at,
            decided_at: self.decided_at,
        }
    }
}

/// A file row as stored: the typed [`FileRow`] is read from it once.
#[derive(sqlx::FromRow)]
pub(super) struct StoredFile {
    id: i64,
    partner: String,
    channel: String,
    endpoint: Option<String>,
    source_path: Option<String>,
    name: String,
    received_at: DateTime<Utc>,
    size: i64,
    checksum: String,
    sidecar_checksum: Option<String>,
    format: Option<String>,
    fingerprint: Option<String>,
    business_key: Option<String>,
    business_date: Option<NaiveDate>,
    records: Option<i64>,
    totals: Option<String>,
    drill_signals: Option<String>,
    verdict: String,
    reason: Option<String>,
    error: Option<String>,
    related_file_id: Option<i64>,
    decided_at: Option<DateTime<Utc>>,
}

impl TryFrom<StoredFile> for FileRow {
    type Error = LedgerError;

    fn try_from(s: StoredFile) -> Result<FileRow, LedgerError> {
        let id = s.id;
        let corrupt = |column, message: String| LedgerError::Corrupt {
            id,
            column,
            message,
        };
        let json = |column, text: &Option<String>| -> Result<serde_json::Value, LedgerError> {
            match text {
                None => Ok(serde_json::Value::Null),
                Some(t) => serde_json::from_str(t).map_err(|e| corrupt(column, e.to_string())),
            }
        };
        let totals = match json("totals", &s.totals)? {
            serde_json::Value::Null => None,
            serde_json::Value::Object(m) => Some(
                m.into_iter()
                    .map(|(k, v)| {
                        let text = v.as_str().unwrap_or_default();
                        Decimal::from_str_exact(text)
                            .map(|d| (k, d))
                            .map_err(|e| corrupt("totals", format!("{text:?}: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(corrupt("totals", format!("not an object: {other}"))),
        };
        let drill_signals = match json("drill_signals", &s.drill_signals)? {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| decode_signal(v).ok_or_else(|| corrupt("drill_signals", v.to_string())))
                .collect::<Result<_, _>>()?,
            other => return Err(corrupt("drill_signals", format!("not a list: {other}"))),
        };
        let error = match json("error", &s.error)? {
            serde_json::Value::Null => None,
            v => Some(decode_error(&v).ok_or_else(|| corrupt("error", v.to_string()))?),
        };
        Ok(FileRow {
            id,
            partner: s.partner,
            channel: Channel::parse(&s.channel).map_err(|e| corrupt("channel", e.to_string()))?,
            endpoint: s.endpoint,
            source_path: s.source_path,
            name: s.name,
            received_at: s.received_at,
            size: s.size,
            checksum: s.checksum,
            sidecar_checksum: s.sidecar_checksum,
            format: s.format,
            fingerprint: s.fingerprint,
            business_key: s.business_key,
            business_date: s.business_date,
            records: s.records,
            totals,
            drill_signals,
            state: FileState::parse(&s.verdict).map_err(|e| corrupt("verdict", e.to_string()))?,
            reason: s.reason,
            error,
            related_file_id: s.related_file_id,
            decided_at: s.decided_at,
        })
    }
}

/// `{"source": "endpoint", "text": "…"}`; a plain string is a signal
/// recorded before sources were kept (its source read from its wording).
fn decode_signal(v: &serde_json::Value) -> Option<DrillSignal> {
    match v {
        serde_json::Value::String(text) => {
            let source = [
                ("file name matches", DrillSource::Name),
                ("channel ", DrillSource::Channel),
                ("endpoint ", DrillSource::Endpoint),
                (
                    "received inside the announced drill window",
                    DrillSource::Window,
                ),
                ("business date ", DrillSource::BusinessDate),
            ]
            .into_iter()
            .find(|(prefix, _)| text.starts_with(prefix))
            .map_or(DrillSource::Content, |(_, s)| s);
            Some(DrillSignal::new(source, text.clone()))
        }
        serde_json::Value::Object(m) => Some(DrillSignal::new(
            DrillSource::parse(m.get("source")?.as_str()?).ok()?,
            m.get("text")?.as_str()?,
        )),
        _ => None,
    }
}

pub(super) fn encode_signals(signals: &[DrillSignal]) -> String {
    serde_json::Value::Array(
        signals
            .iter()
            .map(|s| serde_json::json!({ "source": s.source.as_str(), "text": s.text }))
            .collect(),
    )
    .to_string()
}

fn decode_error(v: &serde_json::Value) -> Option<VerifyError> {
    Some(VerifyError {
        record: v.get("record").and_then(|r| r.as_u64()),
        offset: v.get("offset").and_then(|r| r.as_u64()),
        field: v.get("field").and_then(|f| f.as_str()).map(String::from),
        message: v.get("message")?.as_str()?.to_string(),
    })
}

pub(super) fn encode_totals(totals: &[(String, Decimal)]) -> String {
    serde_json::Value::Object(
        totals
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_string())))
            .collect(),
    )
    .to_string()
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

/// Filters of `settlegate files`.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    pub partner: Option<String>,
    pub business_date: Option<NaiveDate>,
    pub state: Option<FileState>,
    pub limit: Option<i64>,
}

/// The columns of a file row, as a literal so queries stay `&'static str`.
macro_rules! file_columns {
    () => {
        "id, partner, channel, endpoint, source_path, name, received_at, size, checksum, \
         sidecar_checksum, format, fingerprint, business_key, business_date, records, totals, drill_signals, \
         verdict, reason, error, related_file_id, decided_at"
    };
}
pub(super) use file_columns;

pub(super) fn typed(rows: Vec<StoredFile>) -> Result<Vec<FileRow>, LedgerError> {
    rows.into_iter().map(FileRow::try_from).collect()
}

/// Set a file's identity and verdict, from the state it must be in now.
/// Fails (rows = 0) if another process already moved it.
macro_rules! set_verdict {
    ($exec:expr, $id:expr, $identity:expr, $judgement:expr, $at:expr, $from:expr) => {{
        let i: &$crate::ledger::Identity = $identity;
        let j: &$crate::judge::Judgement = $judgement;
        let from: $crate::model::FileState = $from;
        let by_arrival = $crate::judge::quarantined_for_arrival(j.verdict, &i.drill_signals);
        sqlx::query(
            "UPDATE files SET format = $2, fingerprint = $3, business_key = $4, business_date = $5, records = $6, \
             totals = $7, drill_signals = $8, error = $9, verdict = $10, reason = $11, related_file_id = $12, \
             decided_at = $13, drill_by_arrival = $15 WHERE id = $1 AND verdict = $14",
        )
        .bind($id)
        .bind(&i.format)
        .bind(&i.fingerprint)
        .bind(&i.business_key)
        .bind(i.business_date)
        .bind(i.records)
        .bind(i.totals.as_deref().map(super::files::encode_totals))
        .bind(super::files::encode_signals(&i.drill_signals))
        .bind(i.error.as_ref().and_then(|e| serde_json::to_string(e).ok()))
        .bind(j.verdict.as_str())
        .bind(&j.reason)
        .bind(j.related)
        .bind($at)
        .bind(from.as_str())
        .bind(by_arrival)
        .execute($exec)
        .await
        .map_err(super::query_error("record verdict"))
        .and_then(|r| {
            if r.rows_affected() == 1 {
                Ok(())
            } else {
                Err(super::LedgerError::State(format!(
                    "file {} is no longer {} (judged by another process?)",
                    $id, from
                )))
            }
        })
    }};
}
pub(super) use set_verdict;

/// Append an audit event about a file; `details` is a JSON object's text.
macro_rules! insert_event {
    ($exec:expr, $at:expr, $id:expr, $kind:expr, $actor:expr, $reason:expr, $details:expr) => {{
        let details: Option<String> = $details;
        let kind: &str = $kind;
        sqlx::query("INSERT INTO events (at, file_id, kind, actor, reason, details) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind($at)
            .bind($id)
            .bind(kind)
            .bind($actor)
            .bind($reason)
            .bind(details)
            .execute($exec)
            .await
            .map(|_| ())
            .map_err(super::query_error("append event"))
    }};
}
pub(super) use insert_event;

/// The details of an event that names another file.
pub(super) fn related_details(related: Option<i64>) -> Option<String> {
    related.map(|r| serde_json::json!({ "related_file_id": r }).to_string())
}

/// The statements recording arrival `$a` in transaction `$tx` (see
/// [`Ledger::record_arrival`]). The insert comes first, so on SQLite the
/// transaction takes the write lock with its first write rather than
/// upgrading a read, which fails at once when another connection wrote
/// meanwhile; a claim recorded before inserts nothing and is found. The
/// lease's fence is checked after it, in the same transaction: a lost lease
/// still records nothing.
macro_rules! arrival_in {
    ($tx:expr, $a:expr, $fence_sql:expr) => {{
        let tx = $tx;
        let a: &NewArrival<'_> = $a;
        async {
            let details = serde_json::json!({
                "name": a.name, "channel": a.channel.as_str(), "endpoint": a.endpoint,
                "source_path": a.source_path, "size": a.size, "checksum": a.checksum,
                "sidecar_checksum": a.sidecar_checksum, "claim": a.claim, "redelivery_of": a.redelivery_of,
            })
            .to_string();
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO files (partner, channel, endpoint, source_path, name, received_at, size, checksum, sidecar_checksum, verdict, claim, redelivery_of) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'received', $10, $11) \
                 ON CONFLICT (claim) WHERE claim IS NOT NULL DO NOTHING RETURNING id",
            )
            .bind(a.partner)
            .bind(a.channel.as_str())
            .bind(a.endpoint)
            .bind(a.source_path)
            .bind(a.name)
            .bind(a.received_at)
            .bind(a.size as i64)
            .bind(a.checksum)
            .bind(a.sidecar_checksum)
            .bind(a.claim)
            .bind(a.redelivery_of)
            .fetch_optional(&mut **tx)
            .await
            .map_err(query_error("record arrival"))?;
            let Some(id) = id else {
                let claim = a.claim.unwrap_or_default();
                let before: Option<i64> = sqlx::query_scalar("SELECT id FROM files WHERE claim = $1")
                    .bind(claim)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(query_error("look up a claim"))?;
                return before.map(Recorded::Already).ok_or_else(|| {
                    LedgerError::State(format!("claim {claim} is recorded but its file is not found"))
                });
            };
            if let Some(fence) = a.fence
                && !super::cluster::check_fence!(&mut **tx, $fence_sql, fence)?
            {
                return Err(LedgerError::LeaseLost(fence.lease.clone()));
            }
            for h in a.takes_held {
                let taken = sqlx::query(
                    "DELETE FROM held_uploads WHERE partner = $1 AND name = $2 AND checksum = $3",
                )
                .bind(a.partner)
                .bind(&h.name)
                .bind(&h.checksum)
                .execute(&mut **tx)
                .await
                .map_err(query_error("take a held upload"))?;
                if taken.rows_affected() != 1 {
                    return Err(LedgerError::HeldGone(h.name.clone()));
                }
            }
            insert_event!(&mut **tx, a.received_at, id, FileState::Received.as_str(), a.actor, a.reason, Some(details))?;
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
                .execute(&mut **tx)
                .await
                .map_err(query_error("remember remote file"))?;
            }
            Ok::<Recorded, LedgerError>(Recorded::New(id))
        }
        .await
    }};
}

impl Ledger {
    /// Record an arrival (verdict `received`) and its audit event, in one
    /// transaction; returns its id. Its bytes must already be in the content
    /// store. An arrival whose claim is already recorded is not recorded
    /// again: the first row's id is returned (`Recorded::Already`).
    pub async fn record_arrival(&self, a: &NewArrival<'_>) -> Result<Recorded, LedgerError> {
        let fence_sql = self.fence_sql();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let recorded = arrival_in!(&mut tx, a, fence_sql)?;
            tx.commit().await.map_err(query_error("commit arrival"))?;
            Ok(recorded)
        })
    }

    /// Record several arrivals in one transaction (one commit for all),
    /// each as [`Ledger::record_arrival`] would, in order. A claim recorded
    /// before (also by another process meanwhile) is found, not recorded
    /// again. When one arrival fails the transaction (its held half is
    /// gone, its lease lost), each is recorded on its own, so each gets its
    /// own result; any other failure (the ledger unreachable, a full disk)
    /// is the whole call's.
    pub async fn record_arrivals(
        &self,
        arrivals: &[NewArrival<'_>],
    ) -> Result<Vec<Result<Recorded, LedgerError>>, LedgerError> {
        if arrivals.len() > 1 {
            match self.insert_arrivals(arrivals).await {
                Ok(recorded) => return Ok(recorded.into_iter().map(Ok).collect()),
                Err(
                    e @ (LedgerError::Guard(_)
                    | LedgerError::HeldGone(_)
                    | LedgerError::LeaseLost(_)),
                ) => {
                    tracing::debug!(arrivals = arrivals.len(), error = %e, "an arrival failed the others' transaction; recording each alone")
                }
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::with_capacity(arrivals.len());
        for a in arrivals {
            out.push(self.record_arrival(a).await);
        }
        Ok(out)
    }

    async fn insert_arrivals(
        &self,
        arrivals: &[NewArrival<'_>],
    ) -> Result<Vec<Recorded>, LedgerError> {
        let fence_sql = self.fence_sql();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let mut out = Vec::with_capacity(arrivals.len());
            for a in arrivals {
                out.push(arrival_in!(&mut tx, a, fence_sql)?);
            }
            tx.commit().await.map_err(query_error("commit arrivals"))?;
            Ok(out)
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

    /// The earliest arrival before `before_id` with these bytes that a copy
    /// is a duplicate of: fed, judged on its content, or still pending —
    /// not one quarantined as a drill only for how it arrived. With
    /// `past_invalid`, copies judged invalid or closed by an operator do not
    /// count either: a redelivery judges the bytes anew after a fix.
    pub async fn earlier_same_checksum(
        &self,
        checksum: &str,
        before_id: i64,
        past_invalid: bool,
    ) -> Result<Option<FileRow>, LedgerError> {
        let sql = concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE checksum = $1 AND id < $2 AND NOT drill_by_arrival \
             AND NOT ($3 AND verdict IN ('invalid', 'rejected')) ORDER BY id LIMIT 1"
        );
        let row: Option<StoredFile> = on_pool!(self, pool => sqlx::query_as(sql).bind(checksum).bind(before_id).bind(past_invalid).fetch_optional(pool).await)
            .map_err(query_error("look up checksum"))?;
        row.map(FileRow::try_from).transpose()
    }

    /// The earliest arrival from `partner` with these bytes still waiting to
    /// be judged (`received`): one an interrupted run recorded.
    pub async fn pending_with_checksum(
        &self,
        partner: &str,
        checksum: &str,
    ) -> Result<Option<i64>, LedgerError> {
        on_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM files WHERE checksum = $1 AND partner = $2 AND verdict = 'received' ORDER BY id LIMIT 1",
        )
        .bind(checksum)
        .bind(partner)
        .fetch_optional(pool)
        .await)
        .map_err(query_error("look up a pending arrival"))
    }

    /// The fed file with these bytes, if any (what became of a drill copy's
    /// production twin).
    pub async fn fed_with_checksum(&self, checksum: &str) -> Result<Option<i64>, LedgerError> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT id FROM files WHERE checksum = $1 AND verdict = 'fed'")
            .bind(checksum)
            .fetch_optional(pool)
            .await)
        .map_err(query_error("look up the fed copy"))
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
        let rows: Vec<StoredFile> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(fingerprint)
            .bind(format)
            .bind(business_key)
            .fetch_all(pool)
            .await)
        .map_err(query_error("look up fingerprint and business key"))?;
        let rows = typed(rows)?;
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

    pub async fn file(&self, id: i64) -> Result<Option<FileRow>, LedgerError> {
        let sql = concat!("SELECT ", file_columns!(), " FROM files WHERE id = $1");
        let row: Option<StoredFile> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
                .map_err(query_error("read file"))?;
        row.map(FileRow::try_from).transpose()
    }

    /// Several files by id (those that exist).
    pub async fn files_by_id(&self, ids: &[i64]) -> Result<BTreeMap<i64, FileRow>, LedgerError> {
        let mut out = BTreeMap::new();
        for id in ids {
            if let Some(f) = self.file(*id).await? {
                out.insert(*id, f);
            }
        }
        Ok(out)
    }

    pub async fn files(&self, filter: &FileFilter) -> Result<Vec<FileRow>, LedgerError> {
        let where_ = where_clause(&[
            ("partner =", filter.partner.is_some()),
            ("business_date =", filter.business_date.is_some()),
            ("verdict =", filter.state.is_some()),
        ]);
        let limit = filter
            .limit
            .map(|l| format!(" LIMIT {l}"))
            .unwrap_or_default();
        let sql = format!(
            "SELECT {} FROM files{where_} ORDER BY id{limit}",
            file_columns!()
        );
        let rows: Vec<StoredFile> = on_pool!(self, pool => {
            // Built from fixed clauses and numbered placeholders only.
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
            if let Some(p) = &filter.partner {
                q = q.bind(p);
            }
            if let Some(d) = filter.business_date {
                q = q.bind(d);
            }
            if let Some(v) = filter.state {
                q = q.bind(v.as_str());
            }
            q.fetch_all(pool).await
        })
        .map_err(query_error("list files"))?;
        typed(rows)
    }

    /// Append an audit event about the gateway itself (a reload): no file,
    /// no delivery. `details` is a JSON object's text.
    pub async fn gateway_event(
        &self,
        at: DateTime<Utc>,
        kind: &str,
        actor: &str,
        reason: Option<&str>,
        details: &str,
    ) -> Result<(), LedgerError> {
        let sql =
            "INSERT INTO events (at, kind, actor, reason, details) VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, pool => sqlx::query(sql).bind(at).bind(kind).bind(actor).bind(reason).bind(details).execute(pool).await.map(|_| ()))
            .map_err(query_error("append a gateway event"))
    }

    /// The gateway's own audit events of one kind, oldest first.
    pub async fn gateway_events(&self, kind: &str) -> Result<Vec<EventRow>, LedgerError> {
        let sql = "SELECT id, at, file_id, kind, actor, reason, details FROM events WHERE file_id IS NULL AND delivery_id IS NULL AND kind = $1 ORDER BY id";
        on_pool!(self, pool => sqlx::query_as(sql).bind(kind).fetch_all(pool).await)
            .map_err(query_error("read gateway events"))
    }

    pub async fn events(&self, file_id: i64) -> Result<Vec<EventRow>, LedgerError> {
        let sql = "SELECT id, at, file_id, kind, actor, reason, details FROM events WHERE file_id = $1 ORDER BY id";
        on_pool!(self, pool => sqlx::query_as(sql).bind(file_id).fetch_all(pool).await)
            .map_err(query_error("read events"))
    }

    /// Files still `received` (staged but never judged: a crash mid-intake).
    pub async fn unjudged(&self) -> Result<Vec<FileRow>, LedgerError> {
        self.files(&FileFilter {
            state: Some(FileState::Received),
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
            set_verdict!(&mut *tx, id, identity, judgement, at, FileState::Received)?;
            insert_event!(&mut *tx, at, id, judgement.verdict.as_str(), actor, &judgement.reason, related_details(judgement.related))?;
            tx.commit().await.map_err(query_error("commit verdict"))
        })
    }

    /// Close a quarantined file for good (`rejected`), with an audit event.
    /// `from` is the state it must have now.
    pub async fn reject(
        &self,
        id: i64,
        from: FileState,
        reason: &str,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), LedgerError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_error("begin"))?;
            let n = sqlx::query("UPDATE files SET verdict = $5, reason = $3, decided_at = $4 WHERE id = $1 AND verdict = $2")
                .bind(id)
                .bind(from.as_str())
                .bind(reason)
                .bind(at)
                .bind(FileState::Rejected.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_error("reject"))?
                .rows_affected();
            if n != 1 {
                return Err(LedgerError::State(format!("file {id} is no longer {from}")));
            }
            insert_event!(&mut *tx, at, id, FileState::Rejected.as_str(), actor, reason, None)?;
            tx.commit().await.map_err(query_error("commit reject"))
        })
    }
}
