//! Settlement entries: a file's records fed in one transaction with its
//! verdict, reversals that offset a superseded file, and what settlement
//! will pay per business date.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::Sqlite;
use tokio::sync::mpsc;

use super::files::{Decision, insert_event, related_details, set_verdict};
use super::{Ledger, LedgerError, on_pool, query_error};
use crate::model::{FileState, Verdict};

/// How to feed a file.
#[derive(Debug, Clone, Copy)]
pub struct FeedPlan<'a> {
    pub decision: Decision<'a>,
    pub partner: &'a str,
    /// The state the file has now: received (intake), drill (an operator's
    /// release), conflict (an operator's supersede).
    pub from: FileState,
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
    /// Insert the original entries that arrive on `entries`, up to the empty
    /// batch that marks the stream complete; returns how many and their sum. A stream that
    /// ends without that mark is an error (the caller rolls back).
    fn insert_entries(
        &mut self,
        t: &EntryTarget<'_>,
        entries: &mut mpsc::Receiver<Vec<NewEntry>>,
        file_id: i64,
    ) -> impl std::future::Future<Output = Result<Tally, LedgerError>> + Send;
    const SQL: EntrySql;
}

/// A backend's statements for entries.
#[derive(Clone, Copy)]
struct EntrySql {
    /// Insert reversal entries (negated amounts) for file `$1`'s live originals.
    reverse: &'static str,
    /// The least id an entry this transaction inserts from now on can take.
    ids_from: &'static str,
    /// Record file `$1`'s feed: what it paid (`$2`), how many entries (`$3`),
    /// and their ids, from `$4` to the greatest this transaction has taken.
    record_fed: &'static str,
    /// Record the range of the reversals of file `$1` (from `$2`), when
    /// they are as many as it fed (`$3`).
    record_reversed: &'static str,
}

/// The entries of file `$1` that it fed (its originals), found on the
/// primary key by the range of ids its feed took.
macro_rules! originals_of_file {
    () => {
        "file_id = $1 AND kind = 'original' \
         AND id BETWEEN (SELECT entries_from FROM files WHERE id = $1) AND (SELECT entries_to FROM files WHERE id = $1)"
    };
}
pub(super) use originals_of_file;

/// Offset a file's live originals with reversal entries, then mark them
/// reversed by `by` (the only update entries allow); the reversals' ids are
/// recorded on the file, and they must be as many as it fed.
macro_rules! reverse_entries {
    ($tx:expr, $file_id:expr, $by:expr) => {{
        let tx = $tx;
        let sql = entry_sql(&*tx);
        async {
            let from: i64 = sqlx::query_scalar(sql.ids_from)
                .fetch_one(&mut **tx)
                .await
                .map_err(query_error("take the reversals' first id"))?;
            let reversed = sqlx::query(sql.reverse)
                .bind($file_id)
                .execute(&mut **tx)
                .await
                .map_err(query_error("insert reversals"))?
                .rows_affected();
            let marked = sqlx::query(concat!(
                "UPDATE entries SET reversed_by = $2 WHERE ",
                originals_of_file!(),
                " AND reversed_by IS NULL"
            ))
            .bind($file_id)
            .bind($by)
            .execute(&mut **tx)
            .await
            .map_err(query_error("mark reversed"))?
            .rows_affected();
            let recorded = sqlx::query(sql.record_reversed)
                .bind($file_id)
                .bind(from)
                .bind(reversed as i64)
                .execute(&mut **tx)
                .await
                .map_err(query_error("record the reversals"))?
                .rows_affected();
            if marked != reversed || recorded != 1 {
                return Err(LedgerError::State(format!(
                    "file {}: {reversed} entries reversed and {marked} marked, not the entries it fed; nothing was superseded",
                    $file_id
                )));
            }
            Ok(())
        }
        .await
    }};
}

/// The statements of the transaction's backend.
fn entry_sql<T: EntryWriter>(_: &T) -> EntrySql {
    T::SQL
}

/// Rows in `COPY`'s binary format, PostgreSQL's own encoding of each
/// value: the server converts nothing from text, and text columns go as
/// they are (no escaping).
struct CopyRows {
    buf: Vec<u8>,
    /// Where sqlx encodes a date or a decimal before it is framed.
    value: sqlx::postgres::PgArgumentBuffer,
}

/// How much of a `COPY` is gathered before it is sent.
const SEND_AT: usize = 1 << 20;

impl CopyRows {
    /// The signature, no flags, no header extension.
    const HEADER: &'static [u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
    /// A field count of -1.
    const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

    fn with_capacity(bytes: usize) -> Self {
        CopyRows {
            buf: Vec::with_capacity(bytes),
            value: Default::default(),
        }
    }

    fn field_count(&mut self, n: i16) {
        self.buf.extend_from_slice(&n.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), LedgerError> {
        frame(&mut self.buf, b)
    }

    fn int8(&mut self, v: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An amount as `numeric`: sqlx's encoding, except for a zero, which
    /// sqlx sends without its scale; a zero keeps it here (as `0.00` in
    /// text would), so entries read the same however they were fed.
    fn numeric(&mut self, amount: &Decimal) -> Result<(), LedgerError> {
        if !amount.is_zero() {
            return self.encoded(amount);
        }
        // No digits, weight 0, positive, the display scale (at most 28).
        let scale = amount.scale() as i16;
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        self.buf.extend_from_slice(&scale.to_be_bytes());
        Ok(())
    }

    /// A value in the encoding sqlx gives it (the binary protocol's, which
    /// `COPY` shares).
    fn encoded<'q, T: sqlx::Encode<'q, sqlx::Postgres>>(
        &mut self,
        v: &T,
    ) -> Result<(), LedgerError> {
        self.value.clear();
        let null = v.encode_by_ref(&mut self.value).map_err(|e| {
            LedgerError::State(format!("cannot encode {}: {e}", std::any::type_name::<T>()))
        })?;
        match null {
            // A length of -1 is NULL (the column then refuses it).
            sqlx::encode::IsNull::Yes => {
                self.buf.extend_from_slice(&(-1i32).to_be_bytes());
                Ok(())
            }
            sqlx::encode::IsNull::No => frame(&mut self.buf, &self.value),
        }
    }
}

/// A field: its length, then its bytes.
fn frame(out: &mut Vec<u8>, b: &[u8]) -> Result<(), LedgerError> {
    let len = i32::try_from(b.len()).map_err(|_| {
        LedgerError::State(format!("a value of {} bytes is too long to feed", b.len()))
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// An amount as exact decimal text, a zero without a sign (`-0.00` is
/// `0.00`, as PostgreSQL's `numeric` has it).
fn amount_text(amount: &Decimal) -> String {
    if amount.is_zero() {
        Decimal::new(0, amount.scale()).to_string()
    } else {
        amount.to_string()
    }
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

/// Rows per multi-row INSERT on SQLite (8 parameters each, well under its limit).
const SQLITE_BATCH: usize = 500;

impl Ledger {
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
                    "UPDATE files SET verdict = 'superseded', related_file_id = $2, decided_at = $3 WHERE id = $1 AND verdict = 'fed'",
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
                insert_event!(&mut *tx, at, old, FileState::Superseded.as_str(), actor, &judgement.reason, related_details(Some(id)))?;
            }
            set_verdict!(&mut *tx, id, identity, judgement, at, plan.from)?;
            let sql = entry_sql(&tx);
            let from: i64 = sqlx::query_scalar(sql.ids_from)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_error("take the entries' first id"))?;
            let tally = tx.insert_entries(&target, &mut entries, id).await?;
            sqlx::query(sql.record_fed)
                .bind(id)
                .bind(tally.paid.to_string())
                .bind(tally.entries as i64)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(query_error("record what the file paid"))?;
            let fed = tally.entries;
            insert_event!(&mut *tx, at, id, Verdict::Fed.as_str(), actor, &judgement.reason, related_details(plan.supersedes))?;
            tx.commit().await.map_err(query_error("commit feed"))?;
            Ok(fed)
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

    /// Entries of a file, its originals and their reversals (for `show` and tests).
    pub async fn entry_count(&self, file_id: i64) -> Result<i64, LedgerError> {
        // Each range bounded by a subquery: PostgreSQL then plans a range
        // scan of the primary key, where bounds from a join leave it guessing.
        let sql = concat!(
            "SELECT (SELECT COUNT(*) FROM entries WHERE ",
            originals_of_file!(),
            ") + (SELECT COUNT(*) FROM entries WHERE file_id = $1 AND kind = 'reversal' \
             AND id BETWEEN (SELECT reversals_from FROM files WHERE id = $1) AND (SELECT reversals_to FROM files WHERE id = $1))"
        );
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(file_id).fetch_one(pool).await)
            .map_err(query_error("count entries"))
    }
}

/// The next batch of a feed's entry stream: `None` once it is complete.
/// What a file's fed entries add up to: how many, and what it paid.
#[derive(Default)]
struct Tally {
    entries: u64,
    paid: Decimal,
}

/// The next batch of the stream, counted into `tally`; `None` at the mark
/// of its end.
async fn next_batch(
    entries: &mut mpsc::Receiver<Vec<NewEntry>>,
    tally: &mut Tally,
    file_id: i64,
) -> Result<Option<Vec<NewEntry>>, LedgerError> {
    match entries.recv().await {
        Some(batch) if batch.is_empty() => Ok(None),
        Some(batch) => {
            for e in &batch {
                tally.paid = tally.paid.checked_add(e.amount).ok_or_else(|| {
                    LedgerError::State(format!("file {file_id}: the sum of its amounts overflows"))
                })?;
            }
            tally.entries += batch.len() as u64;
            Ok(Some(batch))
        }
        None => Err(LedgerError::State(
            "the entry stream ended early; nothing was fed".into(),
        )),
    }
}

impl EntryWriter for sqlx::Transaction<'_, Sqlite> {
    async fn insert_entries(
        &mut self,
        t: &EntryTarget<'_>,
        entries: &mut mpsc::Receiver<Vec<NewEntry>>,
        file_id: i64,
    ) -> Result<Tally, LedgerError> {
        let mut tally = Tally::default();
        while let Some(rows) = next_batch(entries, &mut tally, file_id).await? {
            self.insert_batch(t, &rows).await?;
        }
        Ok(tally)
    }

    const SQL: EntrySql = EntrySql {
        // Negate the decimal text exactly (SQLite arithmetic would go through floats).
        reverse: concat!(
            "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
             SELECT file_id, partner, format, business_date, record_no, record_key, \
                    CASE WHEN amount LIKE '-%' THEN substr(amount, 2) \
                         WHEN amount = '0' THEN '0' ELSE '-' || amount END, \
                    'reversal', fields \
             FROM entries WHERE ",
            originals_of_file!(),
            " AND reversed_by IS NULL ORDER BY id"
        ),
        // Rowids only grow (entries are never deleted), and the transaction
        // holds the only writer's lock.
        ids_from: "SELECT COALESCE(MAX(id), 0) + 1 FROM entries",
        // Amounts as exact decimal text.
        record_fed: "UPDATE files SET fed_amount = $2, fed_entries = $3, \
                     entries_from = CASE WHEN $3 > 0 THEN $4 END, \
                     entries_to = CASE WHEN $3 > 0 THEN (SELECT MAX(id) FROM entries) END WHERE id = $1",
        record_reversed: "UPDATE files SET reversals_from = CASE WHEN $3 > 0 THEN $2 END, \
                          reversals_to = CASE WHEN $3 > 0 THEN (SELECT MAX(id) FROM entries) END \
                          WHERE id = $1 AND (fed_entries IS NULL OR fed_entries = $3)",
    };
}

/// SQLite's multi-row inserts.
trait SqliteBatch {
    fn insert_batch(
        &mut self,
        t: &EntryTarget<'_>,
        rows: &[NewEntry],
    ) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send;
}

impl SqliteBatch for sqlx::Transaction<'_, Sqlite> {
    async fn insert_batch(
        &mut self,
        t: &EntryTarget<'_>,
        rows: &[NewEntry],
    ) -> Result<(), LedgerError> {
        for chunk in rows.chunks(SQLITE_BATCH) {
            // Anonymous `?` placeholders: binding numbered ones makes SQLite
            // look each name up in a list, quadratic in a statement this long.
            // OR FAIL: a refused row stops the statement and fails the whole
            // feed, whose transaction rolls back, so the statement need not
            // undo itself alone and SQLite keeps no statement journal for it
            // (with the foreign keys checked at commit, migration 0018).
            let mut sql = String::with_capacity(128 + chunk.len() * 32);
            sql.push_str(
                "INSERT OR FAIL INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) VALUES ",
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
                    .bind(amount_text(&r.amount))
                    .bind(&r.fields);
            }
            q.execute(&mut **self)
                .await
                .map_err(query_error("insert entries"))?;
        }
        Ok(())
    }
}

impl EntryWriter for sqlx::Transaction<'_, sqlx::Postgres> {
    /// One `COPY … FROM STDIN` (binary format) for the whole stream, the
    /// bulk loader's own path; the unique index still refuses a record key fed
    /// before (at the end of the copy, rolling the transaction back). A
    /// stream of one batch is one `INSERT` of arrays instead: the copy's
    /// data and its end go out as two small writes, and the socket (sqlx
    /// leaves Nagle on) holds the second until the server's delayed
    /// acknowledgement of the first, some 40 ms a file.
    async fn insert_entries(
        &mut self,
        t: &EntryTarget<'_>,
        entries: &mut mpsc::Receiver<Vec<NewEntry>>,
        file_id: i64,
    ) -> Result<Tally, LedgerError> {
        let mut tally = Tally::default();
        let Some(first) = next_batch(entries, &mut tally, file_id).await? else {
            return Ok(tally);
        };
        let second = match next_batch(entries, &mut tally, file_id).await? {
            None => {
                insert_array(self, t, &first).await?;
                return Ok(tally);
            }
            Some(rows) => rows,
        };
        // The columns every row shares, encoded once.
        let shared = {
            let mut s = CopyRows::with_capacity(64);
            s.field_count(9);
            s.int8(t.file_id);
            s.bytes(t.partner.as_bytes())?;
            s.bytes(t.format.as_bytes())?;
            s.encoded(&t.date)?;
            s.buf
        };
        let mut copy = self
            .copy_in_raw(
                "COPY entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) FROM STDIN (FORMAT binary)",
            )
            .await
            .map_err(query_error("insert entries"))?;
        let mut out = CopyRows::with_capacity(2 * SEND_AT);
        out.buf.extend_from_slice(CopyRows::HEADER);
        let mut ready = [first, second].into_iter();
        loop {
            let next = match ready.next() {
                Some(rows) => Ok(Some(rows)),
                None => next_batch(entries, &mut tally, file_id).await,
            };
            let rows = match next {
                Ok(Some(rows)) => rows,
                Ok(None) => break,
                Err(e) => {
                    // The transaction rolls back; the copy is ended first so
                    // the connection is usable for it.
                    let _ = copy.abort("the entry stream ended early").await;
                    return Err(e);
                }
            };
            // What is encoded goes out once the next batch is in hand, so
            // the last batch and the end of the data go in one write.
            if out.buf.len() >= SEND_AT {
                copy.send(&out.buf[..])
                    .await
                    .map_err(query_error("insert entries"))?;
                out.buf.clear();
            }
            if let Err(e) = encode_rows(&mut out, &shared, &rows) {
                let _ = copy.abort("an entry could not be encoded").await;
                return Err(e);
            }
        }
        out.buf.extend_from_slice(&CopyRows::TRAILER);
        copy.send(&out.buf[..])
            .await
            .map_err(query_error("insert entries"))?;
        copy.finish().await.map_err(query_error("insert entries"))?;
        Ok(tally)
    }

    const SQL: EntrySql = EntrySql {
        reverse: concat!(
            "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
             SELECT file_id, partner, format, business_date, record_no, record_key, -amount, 'reversal', fields \
             FROM entries WHERE ",
            originals_of_file!(),
            " AND reversed_by IS NULL ORDER BY id"
        ),
        // nextval's own value names no entry; the ids this transaction
        // inserts are greater, and a concurrent feed's may lie between
        // (hence file_id in every look-up).
        ids_from: "SELECT nextval(pg_get_serial_sequence('entries', 'id')) + 1",
        record_fed: "UPDATE files SET fed_amount = CAST($2 AS NUMERIC), fed_entries = $3, \
                     entries_from = CASE WHEN $3 > 0 THEN $4 END, \
                     entries_to = CASE WHEN $3 > 0 THEN nextval(pg_get_serial_sequence('entries', 'id')) - 1 END \
                     WHERE id = $1",
        record_reversed: "UPDATE files SET reversals_from = CASE WHEN $3 > 0 THEN $2 END, \
                          reversals_to = CASE WHEN $3 > 0 THEN nextval(pg_get_serial_sequence('entries', 'id')) - 1 END \
                          WHERE id = $1 AND (fed_entries IS NULL OR fed_entries = $3)",
    };
}

/// A batch's rows after the columns they share.
fn encode_rows(out: &mut CopyRows, shared: &[u8], rows: &[NewEntry]) -> Result<(), LedgerError> {
    for r in rows {
        out.buf.extend_from_slice(shared);
        out.int8(r.record_no);
        out.bytes(r.record_key.as_bytes())?;
        out.numeric(&r.amount)?;
        out.bytes(b"original")?;
        out.bytes(r.fields.as_bytes())?;
    }
    Ok(())
}

/// Entries of one batch in one `INSERT`, each column bound as an array (in
/// record order: the entries' ids follow it).
async fn insert_array(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    t: &EntryTarget<'_>,
    rows: &[NewEntry],
) -> Result<(), LedgerError> {
    let record_no: Vec<i64> = rows.iter().map(|r| r.record_no).collect();
    let record_key: Vec<&str> = rows.iter().map(|r| r.record_key.as_str()).collect();
    let amount: Vec<String> = rows.iter().map(|r| amount_text(&r.amount)).collect();
    let fields: Vec<&str> = rows.iter().map(|r| r.fields.as_str()).collect();
    sqlx::query(
        "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
         SELECT $1, $2, $3, $4, r.record_no, r.record_key, CAST(r.amount AS NUMERIC), 'original', r.fields \
         FROM UNNEST($5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::TEXT[]) WITH ORDINALITY AS r(record_no, record_key, amount, fields, n) \
         ORDER BY r.n",
    )
    .bind(t.file_id)
    .bind(t.partner)
    .bind(t.format)
    .bind(t.date)
    .bind(record_no)
    .bind(record_key)
    .bind(amount)
    .bind(fields)
    .execute(&mut **tx)
    .await
    .map_err(query_error("insert entries"))?;
    Ok(())
}
