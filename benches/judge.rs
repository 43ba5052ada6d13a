//! Benchmark: the duplicate look-up stays flat as the ledger grows. Seeds a
//! ledger with N fed files (one entry each), then ingests small new files
//! and reports the per-file time of the ledger look-ups + judge, and of the
//! whole intake, at N = 10 000 and N = 1 000 000, on SQLite and PostgreSQL.
//!
//! `cargo bench --bench judge` (PostgreSQL at $PGURL, default
//! postgres://postgres@127.0.0.1:5432/postgres). `-- 10000` runs one size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use settlegate::config::Config;
use settlegate::format::generate::{CardFile, CardRecord};
use settlegate::intake::{Arrival, Bytes, Gateway, SystemClock};
use settlegate::ledger::{Backend, Ledger, execute_raw};
use settlegate::model::Channel;
use sqlx::Connection;

const PROBES: usize = 200;

fn config(dir: &std::path::Path, ledger: Option<String>) -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("settlegate.toml")).expect("sample config");
    let mut c = Config::from_toml(&text, &root.join("settlegate.toml")).expect("config");
    c.data_dir = dir.to_path_buf();
    c.ledger = ledger;
    c
}

async fn seed(ledger: &Ledger, n: u64) {
    let (series, cast) = match ledger.backend() {
        Backend::Sqlite => (
            format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})"
            ),
            "",
        ),
        Backend::Postgres => (
            format!("WITH s(i) AS (SELECT generate_series(1, {n}))"),
            "::date",
        ),
    };
    let files = format!(
        "{series} INSERT INTO files (partner, channel, name, received_at, size, checksum, format, fingerprint, \
         business_key, business_date, records, verdict, reason, decided_at) \
         SELECT 'cardco', 'sftp-pull', 'CSTL_031_SEED_' || i || '.dat', CURRENT_TIMESTAMP, 606, 'seed-checksum-' || i, \
         'card-settlement', 'seed-fingerprint-' || i, 'seed-key-' || i, '2026-01-01'{cast}, 1, 'fed', 'seeded', CURRENT_TIMESTAMP FROM s"
    );
    execute_raw(ledger, &files).await.expect("seed files");
    let entries = format!(
        "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) \
         SELECT id, 'cardco', 'card-settlement', '2026-01-01'{cast}, 2, 'seed-' || id, '1', 'original', '{{}}' FROM files"
    );
    execute_raw(ledger, &entries).await.expect("seed entries");
    // A ledger that grew over months has statistics; give the seeded one its own.
    execute_raw(ledger, "ANALYZE").await.expect("analyze");
}

async fn measure(name: &str, ledger_url: Option<String>, n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::open(config(dir.path(), ledger_url), Arc::new(SystemClock))
        .await
        .expect("gateway");
    let t = Instant::now();
    seed(&gw.ledger, n).await;
    let seeded = t.elapsed();
    let inbox = dir.path().join("in");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let (mut lookup, mut whole) = (Duration::ZERO, Duration::ZERO);
    for p in 0..PROBES {
        let day = NaiveDate::from_ymd_opt(2025, 1, 1).expect("d") + chrono::Days::new(p as u64);
        let mut f = CardFile::new(day);
        f.records = (0..10)
            .map(|i| CardRecord::synthetic(p as u64 * 10 + i, day))
            .collect();
        let path = inbox.join(f.file_name());
        std::fs::write(&path, f.render()).expect("write");
        // The look-ups the judge needs, alone.
        let t = Instant::now();
        let c = gw
            .ledger
            .earlier_same_checksum("not-there", i64::MAX, false)
            .await
            .expect("lookup");
        let m = gw
            .ledger
            .fed_matching(&format!("fp-{p}"), "card-settlement", &format!("key-{p}"))
            .await
            .expect("lookup");
        lookup += t.elapsed();
        assert!(c.is_none() && m.0.is_none() && m.1.is_none());
        let arrival = Arrival::new("cardco", Channel::Manual, &f.file_name(), "bench");
        let t = Instant::now();
        let bytes = Bytes::Files {
            data: &path,
            control: None,
        };
        let out = gw.intake(&arrival, bytes).await.expect("intake");
        whole += t.elapsed();
        assert_eq!(out.verdict.as_str(), "fed");
    }
    println!(
        "{name:<8} {n:>9} files: seeded in {:>6.1} s; per file: look-ups {:>7.3} ms, whole intake (10 records) {:>7.2} ms",
        seeded.as_secs_f64(),
        lookup.as_secs_f64() * 1000.0 / PROBES as f64,
        whole.as_secs_f64() * 1000.0 / PROBES as f64
    );
    gw.ledger.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 1_000_000]
    } else {
        sizes
    };
    let admin = std::env::var("PGURL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    for n in sizes {
        measure("sqlite", None, n).await;
        let db = format!("settlegate_bench_judge_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut conn)
            .await
            .expect("create");
        let url = format!(
            "{}/{db}",
            admin.rsplit_once('/').map_or(admin.as_str(), |(a, _)| a)
        );
        measure("postgres", Some(url), n).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {db} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .expect("drop");
    }
}
