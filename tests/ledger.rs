//! The ledger keeps the promise by itself: its constraints refuse a second
//! feed even when the judge is bypassed, its audit log cannot be edited, and
//! several gateways racing on one ledger feed a file once. Every test body
//! runs against SQLite and PostgreSQL.

mod common;

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use common::{Env, TestLedger};
use rust_decimal::Decimal;
use settlegate::config::Config;
use settlegate::format::generate::{CardFile, CardRecord, LineEnding};
use settlegate::intake::{Arrival, Bytes, FixedClock, Gateway};
use settlegate::judge::{Judgement, Verdict};
use settlegate::ledger::{
    Decision, FeedPlan, Guard, HeldUpload, Identity, Ledger, LedgerError, NewArrival, NewEntry,
    Pairing, Recorded, execute_raw,
};
use settlegate::model::{Channel, FileState};
use tokio::sync::mpsc;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 1, 0, 0).unwrap()
}

async fn open(ledger: &TestLedger, dir: &std::path::Path) -> Ledger {
    Ledger::open(ledger.url.as_deref(), dir)
        .await
        .expect("open ledger")
}

/// A manual arrival of cardco's file with `checksum`.
fn arrival(checksum: &str) -> NewArrival<'_> {
    NewArrival {
        partner: "cardco",
        channel: Channel::Manual,
        endpoint: None,
        source_path: None,
        name: "CSTL_031_20261121_0001.dat",
        received_at: now(),
        size: 1,
        checksum,
        sidecar_checksum: None,
        actor: "test",
        reason: None,
        remote: None,
        claim: None,
        redelivery_of: None,
        fence: None,
        takes_held: &[],
    }
}

async fn arrive(l: &Ledger, checksum: &str) -> i64 {
    l.record_arrival(&arrival(checksum))
        .await
        .expect("record arrival")
        .id()
}

fn identity(fingerprint: &str, key: &str) -> Identity {
    Identity {
        format: Some("card-settlement".into()),
        fingerprint: Some(fingerprint.into()),
        business_key: Some(key.into()),
        business_date: NaiveDate::from_ymd_opt(2026, 11, 21),
        records: Some(2),
        ..Identity::default()
    }
}

fn fed() -> Judgement {
    Judgement {
        verdict: Verdict::Fed,
        reason: "fed by a test that bypasses the judge".into(),
        related: None,
    }
}

/// How a test's entries reach the ledger: in one batch, as a small file's
/// do, or one record a batch, as a large file's do (PostgreSQL takes a
/// stream of several batches by `COPY`, one batch by an `INSERT`).
#[derive(Debug, Clone, Copy)]
enum Stream {
    OneBatch,
    RecordPerBatch,
}

/// Feed straight into the ledger, no judge involved.
async fn feed(l: &Ledger, id: i64, id_: &Identity, keys: &[&str]) -> Result<u64, LedgerError> {
    feed_as(l, id, id_, keys, Stream::OneBatch).await
}

async fn feed_as(
    l: &Ledger,
    id: i64,
    id_: &Identity,
    keys: &[&str],
    how: Stream,
) -> Result<u64, LedgerError> {
    let amounts = vec![Decimal::new(-12345, 2); keys.len()];
    feed_amounts(l, id, id_, keys, &amounts, how).await
}

/// Feed an entry per key, each with its amount.
async fn feed_amounts(
    l: &Ledger,
    id: i64,
    id_: &Identity,
    keys: &[&str],
    amounts: &[Decimal],
    how: Stream,
) -> Result<u64, LedgerError> {
    feed_stream(l, id, id_, None, complete_stream(keys, amounts, how)).await
}

/// A complete stream of entries, one per key, in the batches of `how`.
fn complete_stream(
    keys: &[&str],
    amounts: &[Decimal],
    how: Stream,
) -> mpsc::Receiver<Vec<NewEntry>> {
    let batches = batches(keys, amounts, how);
    let (tx, rx) = mpsc::channel(batches.len() + 1);
    for batch in batches.into_iter().chain([Vec::new()]) {
        tx.try_send(batch).expect("room for every batch");
    }
    rx
}

/// An entry per key, each with its amount, in the batches of `how`.
fn batches(keys: &[&str], amounts: &[Decimal], how: Stream) -> Vec<Vec<NewEntry>> {
    let entries: Vec<NewEntry> = keys
        .iter()
        .zip(amounts)
        .enumerate()
        .map(|(i, (k, amount))| NewEntry {
            record_no: i as i64 + 2,
            record_key: (*k).into(),
            amount: *amount,
            fields: "{}".into(),
        })
        .collect();
    match how {
        Stream::OneBatch => vec![entries],
        Stream::RecordPerBatch => entries.into_iter().map(|e| vec![e]).collect(),
    }
}

/// Feed the entries that arrive on `rx` (a complete stream ends with an
/// empty batch), superseding a fed file or not.
async fn feed_stream(
    l: &Ledger,
    id: i64,
    id_: &Identity,
    supersedes: Option<i64>,
    rx: mpsc::Receiver<Vec<NewEntry>>,
) -> Result<u64, LedgerError> {
    let judgement = fed();
    let decision = Decision {
        file_id: id,
        identity: id_,
        judgement: &judgement,
        at: now(),
        actor: "test",
    };
    let plan = FeedPlan {
        decision,
        partner: "cardco",
        from: FileState::Received,
        supersedes,
    };
    l.feed(&plan, rx).await
}

async fn entries(l: &Ledger, id: i64) -> i64 {
    l.entry_count(id).await.expect("count")
}

async fn verdict(l: &Ledger, id: i64) -> String {
    l.file(id)
        .await
        .expect("file")
        .expect("row")
        .state
        .to_string()
}

async fn constraints_refuse_a_second_feed(t: TestLedger) {
    second_feeds_refused(t, Stream::OneBatch).await
}

async fn constraints_refuse_a_second_feed_streamed(t: TestLedger) {
    second_feeds_refused(t, Stream::RecordPerBatch).await
}

async fn second_feeds_refused(t: TestLedger, how: Stream) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let first = arrive(&l, "c1").await;
    assert_eq!(
        feed_as(&l, first, &identity("f1", "k1"), &["a", "b"], how)
            .await
            .expect("first feed"),
        2
    );

    // Each promise, with everything else different.
    let cases: [(&str, Identity, &[&str], Guard); 4] = [
        ("c1", identity("f2", "k2"), &["c"], Guard::Checksum),
        ("c3", identity("f1", "k3"), &["d"], Guard::Fingerprint),
        ("c4", identity("f4", "k1"), &["e"], Guard::BusinessKey),
        ("c5", identity("f5", "k5"), &["f", "b"], Guard::RecordKey),
    ];
    for (checksum, ident, keys, guard) in cases {
        let id = arrive(&l, checksum).await;
        match feed_as(&l, id, &ident, keys, how).await {
            Err(LedgerError::Guard(g)) => assert_eq!(g, guard, "{}", t.backend),
            other => panic!("{}: expected {guard:?}, got {other:?}", t.backend),
        }
        // Rolled back whole: no entries, still awaiting a verdict.
        assert_eq!(entries(&l, id).await, 0);
        assert_eq!(verdict(&l, id).await, "received");
    }
    // A record key twice in one file.
    let id = arrive(&l, "c6").await;
    assert!(matches!(
        feed_as(&l, id, &identity("f6", "k6"), &["g", "g"], how).await,
        Err(LedgerError::Guard(Guard::RecordKey))
    ));
    assert_eq!(entries(&l, id).await, 0);
    // A file is judged once: feeding the first again is refused.
    assert!(matches!(
        feed_as(&l, first, &identity("f7", "k7"), &["h"], how).await,
        Err(LedgerError::State(_))
    ));
    assert_eq!(entries(&l, first).await, 2);

    // Amounts are exact decimals in both backends.
    let rows = l
        .intake(NaiveDate::from_ymd_opt(2026, 11, 21).unwrap())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].total, Decimal::new(-24690, 2));
    l.close().await;
    t.drop_db().await;
}

/// Record keys holding the characters a text bulk load would escape (tab,
/// backslash, line feed, carriage return) are stored as they are: the same
/// key fed again is refused, while the key spelled with the escapes'
/// letters is a different key.
async fn keys_with_control_characters_are_stored_exactly(t: TestLedger) {
    control_characters_stored_exactly(t, Stream::OneBatch).await
}

async fn keys_with_control_characters_are_stored_exactly_streamed(t: TestLedger) {
    control_characters_stored_exactly(t, Stream::RecordPerBatch).await
}

async fn control_characters_stored_exactly(t: TestLedger, how: Stream) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let first = arrive(&l, "c1").await;
    let odd = "a\tb\\c\nd\re|N";
    assert_eq!(
        feed_as(&l, first, &identity("f1", "k1"), &[odd, "plain"], how)
            .await
            .expect("first feed"),
        2
    );
    let again = arrive(&l, "c2").await;
    assert!(
        matches!(
            feed_as(&l, again, &identity("f2", "k2"), &[odd], how).await,
            Err(LedgerError::Guard(Guard::RecordKey))
        ),
        "{}",
        t.backend
    );
    let spelled = arrive(&l, "c3").await;
    assert_eq!(
        feed_as(
            &l,
            spelled,
            &identity("f3", "k3"),
            &["a\\tb\\\\c\\nd\\re|N"],
            how
        )
        .await
        .expect("a different key"),
        1
    );
    l.close().await;
    t.drop_db().await;
}

/// Amounts come back exactly as fed, scale included, whichever way the
/// entries went in (PostgreSQL: an `INSERT` of decimal text for one batch,
/// `COPY`'s binary numeric for a stream).
async fn amounts_are_stored_exactly(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let mut negative_zero = Decimal::new(0, 2);
    negative_zero.set_sign_negative(true);
    let amounts = [
        Decimal::new(0, 0),
        Decimal::new(0, 2),
        negative_zero,
        Decimal::new(12340, 2),
        Decimal::new(-1, 2),
        Decimal::new(10000, 0),
        Decimal::new(99999999, 4),
        Decimal::new(-100000001, 4),
        Decimal::new(123456789, 5),
        Decimal::new(1, 28),
        // The file's sum stays in range: MIN, then MAX.
        Decimal::MIN,
        Decimal::MAX,
        Decimal::from_i128_with_scale(-79_228_162_514_264_337_593_543_950_335, 28),
    ];
    for (n, how) in [Stream::OneBatch, Stream::RecordPerBatch]
        .into_iter()
        .enumerate()
    {
        let id = arrive(&l, &format!("c{n}")).await;
        let keys: Vec<String> = (0..amounts.len()).map(|i| format!("{n}-{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let fed = feed_amounts(
            &l,
            id,
            &identity(&format!("f{n}"), &format!("k{n}")),
            &keys,
            &amounts,
            how,
        )
        .await
        .expect("feed");
        assert_eq!(fed, amounts.len() as u64);
        let stored: Vec<String> = l
            .file_entries(id)
            .await
            .expect("entries")
            .iter()
            .map(|e| e.amount.to_string())
            .collect();
        // A zero has no sign in either ledger.
        let expected: Vec<String> = amounts
            .iter()
            .map(|a| {
                if a.is_zero() {
                    Decimal::new(0, a.scale())
                } else {
                    *a
                }
                .to_string()
            })
            .collect();
        assert_eq!(stored, expected, "{} {how:?}", t.backend);
    }
    l.close().await;
    t.drop_db().await;
}

async fn the_audit_log_and_entries_are_append_only(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let id = arrive(&l, "c1").await;
    feed(&l, id, &identity("f1", "k1"), &["a"])
        .await
        .expect("feed");
    for sql in [
        "UPDATE events SET reason = 'rewritten'",
        "DELETE FROM events",
        "DELETE FROM entries",
        "UPDATE entries SET amount = '0'",
        "DELETE FROM files",
    ] {
        let r = execute_raw(&l, sql).await;
        assert!(r.is_err(), "{}: {sql} was allowed", t.backend);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("append-only") || msg.contains("never deleted"),
            "{msg}"
        );
    }
    assert_eq!(l.events(id).await.unwrap().len(), 2);
    l.close().await;
    t.drop_db().await;
}

/// Entries name a file that exists, whichever way they go in: an insert of
/// one entry, of several, and (PostgreSQL) the stream of a feed, checked a
/// statement at a time there. Nothing of a refused statement stays.
async fn entries_name_files(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let id = arrive(&l, "c1").await;
    feed_as(
        &l,
        id,
        &identity("f1", "k1"),
        &["a", "b"],
        Stream::RecordPerBatch,
    )
    .await
    .expect("feed");
    let ghost = id + 1000;
    for sql in [
        format!(
            "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
             VALUES ({ghost}, 'cardco', 'card-settlement', '2026-11-21', 2, 'x', '1', 'original', '{{}}')"
        ),
        format!(
            "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
             VALUES ({id}, 'cardco', 'card-settlement', '2026-11-21', 4, 'y', '1', 'original', '{{}}'), \
                    ({ghost}, 'cardco', 'card-settlement', '2026-11-21', 5, 'z', '1', 'original', '{{}}')"
        ),
        format!("UPDATE entries SET reversed_by = {ghost} WHERE record_key = 'a'"),
    ] {
        let r = execute_raw(&l, &sql).await;
        assert!(r.is_err(), "{}: {sql} was allowed", t.backend);
        let msg = r.unwrap_err().to_string().to_lowercase();
        assert!(
            msg.contains("foreign key") || msg.contains("name a file"),
            "{}: {msg}",
            t.backend
        );
    }
    assert_eq!(entries(&l, id).await, 2);
    l.close().await;
    t.drop_db().await;
}

/// File b of the range tests: keys 4 and 5, paying 0.07 and 0.11.
async fn feed_b(l: &Ledger, b: i64, how: Stream) -> Result<u64, LedgerError> {
    let d = |units: i64| Decimal::new(units, 2);
    feed_amounts(
        l,
        b,
        &identity("fb", "kb"),
        &["4", "5"],
        &[d(7), d(11)],
        how,
    )
    .await
}

/// A file's entries are found by the ids its feed took: its originals in
/// record order, its reversals once superseded (a re-send of the same keys
/// with other amounts), and nothing of another file. The ranges
/// never move once set.
async fn entries_are_found_by_their_feeds_ids(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let d = |units: i64| Decimal::new(units, 2);
    let (a, b) = (arrive(&l, "ca").await, arrive(&l, "cb").await);
    feed_amounts(
        &l,
        a,
        &identity("fa", "ka"),
        &["1", "2", "3"],
        &[d(100), d(-20), d(3)],
        Stream::RecordPerBatch,
    )
    .await
    .expect("feed a");
    feed_b(&l, b, Stream::OneBatch).await.expect("feed b");
    // A re-send of a's keys supersedes it.
    let c = arrive(&l, "cc").await;
    supersede_and_check(&l, &t, [a, b, c], Stream::RecordPerBatch).await;
    // Each range is exactly the ids of what it holds (a no-op update counts
    // the files whose ranges match).
    let exact = "UPDATE files SET reason = reason WHERE \
        entries_from = (SELECT MIN(id) FROM entries e WHERE e.file_id = files.id AND kind = 'original') \
        AND entries_to = (SELECT MAX(id) FROM entries e WHERE e.file_id = files.id AND kind = 'original') \
        AND (reversals_from IS NULL OR reversals_from = (SELECT MIN(id) FROM entries e WHERE e.file_id = files.id AND kind = 'reversal')) \
        AND (reversals_to IS NULL OR reversals_to = (SELECT MAX(id) FROM entries e WHERE e.file_id = files.id AND kind = 'reversal'))";
    assert_eq!(execute_raw(&l, exact).await.expect("compare ranges"), 3);
    let reversed = format!(
        "UPDATE files SET reason = reason WHERE id = {a} AND reversals_from > (SELECT entries_to FROM files WHERE id = {b})"
    );
    assert_eq!(execute_raw(&l, &reversed).await.expect("compare ranges"), 1);
    for sql in [
        format!("UPDATE files SET entries_from = entries_from + 1 WHERE id = {a}"),
        format!("UPDATE files SET entries_to = NULL WHERE id = {b}"),
        format!("UPDATE files SET reversals_to = reversals_to - 1 WHERE id = {a}"),
    ] {
        let r = execute_raw(&l, &sql).await;
        assert!(r.is_err(), "{}: {sql} was allowed", t.backend);
        assert!(r.unwrap_err().to_string().contains("never change"));
    }
    l.close().await;
    t.drop_db().await;
}

/// File c, a re-send of a's keys (one amount changed, one record added),
/// supersedes a; then each file's entries are found, b's untouched.
async fn supersede_and_check(l: &Ledger, t: &TestLedger, [a, b, c]: [i64; 3], how: Stream) {
    let d = |units: i64| Decimal::new(units, 2);
    let resend = complete_stream(&["1", "2", "3", "9"], &[d(101), d(-20), d(3), d(1)], how);
    feed_stream(l, c, &identity("fc", "kc"), Some(a), resend)
        .await
        .expect("supersede a");
    check_found(
        l,
        t,
        [(a, 3, 6), (b, 2, 2), (c, 4, 4)],
        d(7 + 11 + 101 - 20 + 3 + 1),
    )
    .await;
}

/// Each file's original entries, how many entries name it (reversals
/// included), and what settlement pays for the date.
async fn check_found(l: &Ledger, t: &TestLedger, files: [(i64, usize, i64); 3], total: Decimal) {
    for (id, originals, named) in files {
        assert_eq!(
            common::fed_record_nos(l, id).await,
            (2..2 + originals as i64).collect::<Vec<_>>(),
            "{} file {id}",
            t.backend
        );
        assert_eq!(entries(l, id).await, named, "{} file {id}", t.backend);
    }
    let rows = l
        .intake(NaiveDate::from_ymd_opt(2026, 11, 21).unwrap())
        .await
        .expect("intake");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].total, total, "{}", t.backend);
}

/// On PostgreSQL another node's feed can take ids inside a feed's range:
/// file b is fed whole while a's feed is open (a has taken its first id,
/// b's entries come before a's). a's look-ups and the reversal of a still
/// touch a's entries only.
async fn interleaved_feeds_keep_their_entries(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let d = |units: i64| Decimal::new(units, 2);
    let (a, b, c) = (
        arrive(&l, "ca").await,
        arrive(&l, "cb").await,
        arrive(&l, "cc").await,
    );
    // Room for one batch: the second send returns once the feed has taken
    // the first, after it took its first id.
    let (tx, rx) = mpsc::channel(1);
    let feeding_a = {
        let l = l.clone();
        tokio::spawn(async move { feed_stream(&l, a, &identity("fa", "ka"), None, rx).await })
    };
    let mut a_batches = batches(
        &["1", "2", "3"],
        &[d(100), d(-20), d(3)],
        Stream::RecordPerBatch,
    )
    .into_iter();
    for batch in a_batches.by_ref().take(2) {
        tx.send(batch).await.expect("send");
    }
    feed_b(&l, b, Stream::RecordPerBatch)
        .await
        .expect("feed b while a's feed is open");
    for batch in a_batches {
        tx.send(batch).await.expect("send");
    }
    tx.send(Vec::new()).await.expect("send end");
    assert_eq!(feeding_a.await.expect("join").expect("feed a"), 3);
    // b's entries lie inside a's range (a no-op update counts the match).
    let inside = format!(
        "UPDATE files SET reason = reason WHERE id = {a} \
         AND entries_from < (SELECT MIN(id) FROM entries WHERE file_id = {b}) \
         AND entries_to > (SELECT MAX(id) FROM entries WHERE file_id = {b})"
    );
    assert_eq!(execute_raw(&l, &inside).await.expect("compare ranges"), 1);
    supersede_and_check(&l, &t, [a, b, c], Stream::OneBatch).await;
    l.close().await;
    t.drop_db().await;
}

fn card(lf: bool) -> CardFile {
    let d = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    let mut f = CardFile::new(d);
    f.records = (0..50).map(|i| CardRecord::synthetic(i, d)).collect();
    if lf {
        f.line_ending = LineEnding::Lf;
    }
    f
}

/// Several gateways (separate connection pools, as separate processes would
/// have) race to take copies of one settlement day: exactly one is fed.
async fn racing_gateways_feed_once(t: TestLedger) {
    let env = Env::new(&t, "");
    let mut config = Config::load(Some(&env.config)).expect("config");
    config.data_dir = env.data.clone();
    config.ledger = t.url.clone();
    // Same bytes from four gateways, and the same data with other line
    // endings (same fingerprint, other checksum) from two more.
    let crlf = env.path("crlf");
    let lf = env.path("lf");
    std::fs::create_dir_all(&crlf).unwrap();
    std::fs::create_dir_all(&lf).unwrap();
    let name = card(false).file_name();
    std::fs::write(crlf.join(&name), card(false).render()).unwrap();
    std::fs::write(lf.join(&name), card(true).render()).unwrap();
    let mut gateways = Vec::new();
    for _ in 0..6 {
        gateways.push(Arc::new(
            Gateway::open(config.clone(), Arc::new(FixedClock(now())))
                .await
                .expect("gateway"),
        ));
    }
    let mut tasks = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        let gw = gw.clone();
        let path = if i < 4 {
            crlf.join(&name)
        } else {
            lf.join(&name)
        };
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let arrival = Arrival::new("cardco", Channel::Watch, &name, &format!("gateway-{i}"));
            let bytes = Bytes::Files {
                data: &path,
                control: None,
            };
            gw.intake(&arrival, bytes).await
        }));
    }
    let mut verdicts = Vec::new();
    for t in tasks {
        verdicts.push(t.await.expect("join").expect("intake").verdict);
    }
    let fed = verdicts.iter().filter(|v| **v == Verdict::Fed).count();
    assert_eq!(fed, 1, "{}: {verdicts:?}", t.backend);
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| **v == Verdict::Duplicate)
            .count(),
        5
    );
    let rows = gateways[0]
        .ledger
        .intake(NaiveDate::from_ymd_opt(2026, 11, 21).unwrap())
        .await
        .unwrap();
    assert_eq!(rows[0].entries, 50);
    assert_eq!(
        rows[0].total,
        Decimal::from_i128_with_scale(card(false).totals().settle, 0)
    );
    for gw in &gateways {
        gw.ledger.close().await;
    }
    t.drop_db().await;
}

/// Files a crash left staged but unjudged are judged by `settlegate
/// recover` (and at `serve` start, through the same code), and a partner who
/// handed one in by a channel gets its receipt; a manual ingest does not.
async fn recovery_judges_and_answers_with_receipts(t: TestLedger) {
    let env = Env::new(&t, "");
    let mut config = Config::load(Some(&env.config)).expect("config");
    config.data_dir = env.data.clone();
    config.ledger = t.url.clone();
    let gw = Gateway::open(config, Arc::new(FixedClock(now())))
        .await
        .expect("gateway");
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ids = Vec::new();
    for (channel, lf) in [(Channel::SftpPush, false), (Channel::Manual, true)] {
        let f = card(lf);
        let name = format!("{channel}-{}", f.file_name());
        std::fs::write(dir.join(&name), f.render()).unwrap();
        let arrival = Arrival::new("cardco", channel, &f.file_name(), "test");
        let bytes = Bytes::Files {
            data: &dir.join(&name),
            control: None,
        };
        // Staged and recorded, then the "crash": never judged.
        ids.push(gw.record(&arrival, bytes).await.expect("stage"));
    }
    gw.ledger.close().await;

    let (code, report) = env.json(&["recover", "--json"]);
    assert_eq!(code, 0, "{report}");
    let judged = report["judged"].as_array().expect("judged");
    assert_eq!(judged.len(), 2, "{report}");
    // The same day twice (other line endings): one fed, the other a duplicate.
    let verdicts: Vec<&str> = judged
        .iter()
        .filter_map(|o| o["verdict"].as_str())
        .collect();
    assert!(
        verdicts.contains(&"fed") && verdicts.contains(&"duplicate"),
        "{report}"
    );
    let receipts: Vec<String> = std::fs::read_dir(env.data.join("receipts/cardco"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        receipts,
        vec![format!("{}.verdict", card(false).file_name())],
        "only the channel's file"
    );
    let text =
        std::fs::read_to_string(env.data.join("receipts/cardco").join(&receipts[0])).unwrap();
    assert!(text.contains(&format!("file_id={}\n", ids[0])), "{text}");
    assert!(
        text.contains("verdict=fed") || text.contains("verdict=duplicate"),
        "{text}"
    );

    // Nothing is left to recover.
    let (code, report) = env.json(&["recover", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(report["judged"], serde_json::json!([]));
    t.drop_db().await;
}

/// A drill verdict that came from how a file arrived (a drill channel, an
/// announced window, a file-name pattern, a DR endpoint) says nothing about
/// another arrival of the same bytes by a production route: that copy is
/// judged on its own and fed, also after the drill copy was rejected. A copy
/// of bytes still pending, or fed, stays a duplicate.
async fn arrival_drills_do_not_block_their_twin(t: TestLedger) {
    let env = Env::new(
        &t,
        "[[partners]]\nid = \"twins\"\nformats = [\"card-settlement\"]\n\
         drill_name_patterns = [\"(?i)drill\"]\ndrill_channels = [\"watch\"]\ndrill_endpoints = [\"dr\"]\n\
         drill_windows = [{ start = \"2026-11-23T09:00:00+09:00\", end = \"2026-11-23T11:00:00+09:00\" }]\n",
    );
    let mut config = Config::load(Some(&env.config)).expect("config");
    config.data_dir = env.data.clone();
    config.ledger = t.url.clone();
    let gw = Gateway::open(config.clone(), Arc::new(FixedClock(now())))
        .await
        .expect("gateway");
    // 2026-11-23 10:00 KST: inside the announced window.
    let in_window = Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    let gw_window = Gateway::open(config, Arc::new(FixedClock(in_window)))
        .await
        .expect("gateway");
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    let day = |seq: u16| {
        let d = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let mut f = CardFile::new(d);
        f.file_seq = seq;
        f.records = (0..3)
            .map(|i| CardRecord::synthetic(u64::from(seq) * 100 + i, d))
            .collect();
        f
    };
    async fn take(
        gw: &Gateway,
        dir: &std::path::Path,
        f: &CardFile,
        name: &str,
        channel: Channel,
        endpoint: Option<&str>,
    ) -> settlegate::intake::Outcome {
        let path = dir.join(format!("{}-{name}", f.file_seq));
        std::fs::write(&path, f.render()).unwrap();
        let mut arrival = Arrival::new("twins", channel, name, "test");
        arrival.endpoint = endpoint.map(String::from);
        let bytes = Bytes::Files {
            data: &path,
            control: None,
        };
        gw.intake(&arrival, bytes).await.expect("intake")
    }
    // (case, the drill copy's route, reject the drill copy first?)
    for (seq, case) in [
        (1, "name"),
        (2, "channel"),
        (3, "window"),
        (4, "endpoint"),
        (5, "rejected"),
    ] {
        let f = day(seq);
        let name = f.file_name();
        let drill = match case {
            "name" => {
                take(
                    &gw,
                    &dir,
                    &f,
                    &name.replace(".dat", "_DRILL.dat"),
                    Channel::Manual,
                    None,
                )
                .await
            }
            "channel" | "rejected" => take(&gw, &dir, &f, &name, Channel::Watch, None).await,
            "window" => take(&gw_window, &dir, &f, &name, Channel::Manual, None).await,
            _ => take(&gw, &dir, &f, &name, Channel::SftpPull, Some("dr")).await,
        };
        assert_eq!(drill.verdict, Verdict::Drill, "{case}: {}", drill.reason);
        if case == "rejected" {
            gw.reject(drill.file_id, "a DR drill copy", "operator:test")
                .await
                .expect("reject");
        }
        let twin = take(&gw, &dir, &f, &name, Channel::SftpPull, Some("primary")).await;
        assert_eq!(
            twin.verdict,
            Verdict::Fed,
            "{case} ({}): {}",
            t.backend,
            twin.reason
        );
        assert_eq!(
            gw.ledger.fed_with_checksum(&drill.checksum).await.unwrap(),
            Some(twin.file_id)
        );
        // Once fed, the same bytes again are its duplicate.
        let again = take(&gw, &dir, &f, &name, Channel::Manual, None).await;
        assert_eq!(again.verdict, Verdict::Duplicate, "{case}");
        assert_eq!(again.related_file_id, Some(twin.file_id), "{case}");
    }
    // Bytes still pending (recorded, not judged): a copy is a duplicate.
    let f = day(6);
    let path = dir.join("pending");
    std::fs::write(&path, f.render()).unwrap();
    let pending = gw
        .record(
            &Arrival::new("twins", Channel::Manual, &f.file_name(), "test"),
            Bytes::Files {
                data: &path,
                control: None,
            },
        )
        .await
        .expect("record");
    let copy = take(&gw, &dir, &f, &f.file_name(), Channel::Manual, None).await;
    assert_eq!(copy.verdict, Verdict::Duplicate);
    assert_eq!(copy.related_file_id, Some(pending));
    gw.ledger.close().await;
    gw_window.ledger.close().await;
    t.drop_db().await;
}

/// A held half of a pushed pair leaves the ledger only with the arrival
/// that takes it: pairing alone changes nothing (a node dying before it
/// records the pair loses nothing), and a second arrival taking the same
/// half is refused whole.
async fn a_held_half_leaves_only_with_its_arrival(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let data = "CSTL_031_20261121_0001.dat";
    let held = l
        .pair_upload("cardco", data, "c-data", 10, now(), |_| None)
        .await
        .expect("hold");
    assert_eq!(held, Pairing::Held);
    let pick = |h: &[HeldUpload]| h.first().map(|h| h.name.clone());
    let complete = l
        .pair_upload(
            "cardco",
            "CSTL_031_20261121_0001.ctl",
            "c-ctl",
            3,
            now(),
            pick,
        )
        .await
        .expect("pair");
    let Pairing::Complete(other) = complete else {
        panic!(
            "{}: the data file completes the pair: {complete:?}",
            t.backend
        );
    };
    assert_eq!(other.checksum, "c-data");
    // Paired, not yet recorded (as when the node dies here): still held.
    assert_eq!(l.held_uploads("cardco").await.unwrap().len(), 1);
    // A same-named half offered meanwhile is told the earlier one is there.
    let again = l
        .pair_upload("cardco", data, "c-data-2", 10, now(), |_| None)
        .await
        .expect("offer");
    assert_eq!(again, Pairing::Occupied(other.clone()));

    let takes = [other];
    let arrival = NewArrival {
        channel: Channel::SftpPush,
        endpoint: Some("cardco"),
        name: data,
        size: 10,
        sidecar_checksum: Some("c-ctl"),
        takes_held: &takes,
        ..arrival("c-data")
    };
    let id = l.record_arrival(&arrival).await.expect("record").id();
    assert!(l.held_uploads("cardco").await.unwrap().is_empty());
    match l.record_arrival(&arrival).await {
        Err(LedgerError::HeldGone(name)) => assert_eq!(name, data),
        other => panic!("{}: a second taker is refused: {other:?}", t.backend),
    }
    let files = l.files(&Default::default()).await.expect("files");
    assert_eq!(
        files.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![id],
        "{}: the refused arrival recorded nothing",
        t.backend
    );
    l.close().await;
    t.drop_db().await;
}

/// A connection left inside a transaction (as a COMMIT that failed on a
/// full disk leaves it) is closed when it goes back to the pool: it neither
/// blocks other writers nor swallows the next transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_connection_left_in_a_transaction_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&TestLedger::sqlite(), dir.path()).await;
    execute_raw(&l, "BEGIN IMMEDIATE").await.expect("begin");
    // Without the check the write waits out the busy timeout and fails
    // with "database is locked".
    let id = arrive(&l, "c-after").await;
    assert!(
        l.file(id).await.expect("read").is_some(),
        "the arrival is committed"
    );
    l.close().await;
}

/// Arrivals recorded together: one row and one `received` event each, a
/// claim recorded before found and not recorded again; and when the
/// transaction fails as a whole (an arrival takes a held half that is
/// gone), each is recorded alone with its own result.
async fn arrivals_are_recorded_together(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let claimed = |checksum, claim| NewArrival {
        channel: Channel::Watch,
        claim: Some(claim),
        ..arrival(checksum)
    };
    let first = l
        .record_arrival(&claimed("c-1", "in:cardco/o/1"))
        .await
        .expect("record")
        .id();
    let together = l
        .record_arrivals(&[
            claimed("c-2", "in:cardco/o/2"),
            claimed("c-1", "in:cardco/o/1"),
            claimed("c-3", "in:cardco/o/3"),
            arrival("c-4"),
        ])
        .await
        .expect("recorded together");
    let recorded: Vec<Recorded> = together.into_iter().map(|r| r.expect("recorded")).collect();
    assert!(matches!(recorded[0], Recorded::New(_)), "{recorded:?}");
    assert_eq!(recorded[1], Recorded::Already(first), "{}", t.backend);
    assert!(matches!(recorded[2], Recorded::New(_)), "{recorded:?}");
    assert!(matches!(recorded[3], Recorded::New(_)), "{recorded:?}");
    if let Some(url) = t.url.as_deref() {
        // One transaction wrote the three rows.
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let writers: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT xmin::text) FROM files WHERE checksum IN ('c-2', 'c-3', 'c-4')",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(writers, 1);
        pool.close().await;
    }
    let files = l.files(&Default::default()).await.expect("files");
    let mut checksums: Vec<&str> = files.iter().map(|f| f.checksum.as_str()).collect();
    checksums.sort();
    assert_eq!(checksums, ["c-1", "c-2", "c-3", "c-4"], "{}", t.backend);
    for r in &recorded {
        let events = l.events(r.id()).await.expect("events");
        assert_eq!(events.len(), 1, "{}: {events:?}", t.backend);
        assert_eq!(events[0].kind, "received");
    }

    let gone = [HeldUpload {
        name: "gone.dat".into(),
        checksum: "c-gone".into(),
        size: 1,
        held_at: now(),
    }];
    let alone = l
        .record_arrivals(&[
            arrival("c-5"),
            NewArrival {
                takes_held: &gone,
                ..arrival("c-6")
            },
            arrival("c-7"),
        ])
        .await
        .expect("recorded alone");
    assert!(matches!(alone[0], Ok(Recorded::New(_))), "{alone:?}");
    assert!(
        matches!(&alone[1], Err(LedgerError::HeldGone(n)) if n == "gone.dat"),
        "{alone:?}"
    );
    assert!(matches!(alone[2], Ok(Recorded::New(_))), "{alone:?}");
    let files = l.files(&Default::default()).await.expect("files");
    let mut checksums: Vec<&str> = files.iter().map(|f| f.checksum.as_str()).collect();
    checksums.sort();
    assert_eq!(
        checksums,
        ["c-1", "c-2", "c-3", "c-4", "c-5", "c-7"],
        "{}: the refused arrival recorded nothing",
        t.backend
    );
    l.close().await;
    t.drop_db().await;
}

/// A claim another process is recording at the same moment: the arrivals'
/// transaction waits for it and, once it is committed, finds its row
/// instead of failing, and records the others.
async fn a_claim_recorded_meanwhile_elsewhere_is_found(t: TestLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&t, dir.path()).await;
    let url = t.url.clone().expect("a PostgreSQL ledger");
    let other = sqlx::PgPool::connect(&url).await.expect("connect");
    let mut elsewhere = other.begin().await.expect("begin");
    let theirs: i64 = sqlx::query_scalar(
        "INSERT INTO files (partner, channel, name, received_at, size, checksum, verdict, claim) \
         VALUES ('cardco', 'watch', 'x.dat', now(), 1, 'c-theirs', 'received', 'in:cardco/o/9') RETURNING id",
    )
    .fetch_one(&mut *elsewhere)
    .await
    .expect("insert elsewhere");
    let ours = {
        let l = l.clone();
        tokio::spawn(async move {
            let claimed = |checksum, claim| NewArrival {
                channel: Channel::Watch,
                claim: Some(claim),
                ..arrival(checksum)
            };
            l.record_arrivals(&[
                claimed("c-ours", "in:cardco/o/9"),
                claimed("c-next", "in:cardco/o/10"),
            ])
            .await
        })
    };
    // Our insert waits on theirs: a lock not granted to a session of this
    // database (a transaction id's lock names no database).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks WHERE NOT granted \
             AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())",
        )
        .fetch_one(&other)
        .await
        .expect("locks");
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the arrivals never waited for the other transaction"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    elsewhere.commit().await.expect("commit elsewhere");
    let recorded: Vec<Recorded> = ours
        .await
        .expect("task")
        .expect("recorded together")
        .into_iter()
        .map(|r| r.expect("recorded"))
        .collect();
    assert_eq!(recorded[0], Recorded::Already(theirs));
    assert!(matches!(recorded[1], Recorded::New(_)), "{recorded:?}");
    let files = l.files(&Default::default()).await.expect("files");
    let mut checksums: Vec<&str> = files.iter().map(|f| f.checksum.as_str()).collect();
    checksums.sort();
    assert_eq!(checksums, ["c-next", "c-theirs"]);
    other.close().await;
    l.close().await;
    t.drop_db().await;
}

mod claim_recorded_elsewhere {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(t) = TestLedger::postgres().await {
            a_claim_recorded_meanwhile_elsewhere_is_found(t).await;
        }
    }
}

macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(TestLedger::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(t) = TestLedger::postgres().await {
                    $body(t).await;
                }
            }
        }
    };
}

both!(guards, constraints_refuse_a_second_feed);
both!(guards_streamed, constraints_refuse_a_second_feed_streamed);
both!(escapes, keys_with_control_characters_are_stored_exactly);
both!(
    escapes_streamed,
    keys_with_control_characters_are_stored_exactly_streamed
);
both!(amounts, amounts_are_stored_exactly);
both!(found_by_ids, entries_are_found_by_their_feeds_ids);

mod interleaved_feeds {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(t) = TestLedger::postgres().await {
            interleaved_feeds_keep_their_entries(t).await;
        }
    }
}
both!(append_only, the_audit_log_and_entries_are_append_only);
both!(entries_name_files_that_exist, entries_name_files);
both!(races, racing_gateways_feed_once);
both!(recovery, recovery_judges_and_answers_with_receipts);
both!(drill_twins, arrival_drills_do_not_block_their_twin);
both!(held_halves, a_held_half_leaves_only_with_its_arrival);
both!(together, arrivals_are_recorded_together);
