//! Shared test support: ledgers on both backends, a sample configuration in a
//! temporary directory, and the built binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;

pub mod disk;
pub mod drops;
pub mod interop;
pub mod pg;
pub mod server;
pub mod sshd;

/// A card-settlement file for 2026-11-21: sequence `seq`, `n` synthetic
/// records numbered from `first`.
pub fn card(seq: u16, first: u64, n: u64) -> settlegate::format::generate::CardFile {
    use settlegate::format::generate::{CardFile, CardRecord};
    let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).expect("date");
    let mut f = CardFile::new(d);
    f.file_seq = seq;
    f.records = (first..first + n)
        .map(|i| CardRecord::synthetic(i, d))
        .collect();
    f
}

/// SHA-256 in hex.
pub fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Where the test PostgreSQL server is (a maintenance database to connect to).
pub fn postgres_admin_url() -> String {
    std::env::var("SETTLEGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A ledger for one test: SQLite in a temp dir, or a fresh PostgreSQL
/// database that is dropped at the end.
pub struct TestLedger {
    pub backend: &'static str,
    /// `--ledger` URL; `None` means the embedded default under the data dir.
    pub url: Option<String>,
    pg_name: Option<String>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestLedger {
    pub fn sqlite() -> TestLedger {
        TestLedger {
            backend: "sqlite",
            url: None,
            pg_name: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` when PostgreSQL is unreachable
    /// outside CI. Under `CI=true` an unreachable server fails the test.
    pub async fn postgres() -> Option<TestLedger> {
        let admin = postgres_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("PostgreSQL at {admin} is required under CI=true: {e}");
                }
                eprintln!("skipping the PostgreSQL half: {admin} unreachable: {e}");
                return None;
            }
        };
        let name = format!(
            "settlegate_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin).expect("admin url");
        url.set_path(&format!("/{name}"));
        Some(TestLedger {
            backend: "postgres",
            url: Some(url.to_string()),
            pg_name: Some(name),
        })
    }

    /// A PostgreSQL ledger at `url` that the test owns (nothing to drop).
    pub fn at(url: String) -> TestLedger {
        TestLedger {
            backend: "postgres",
            url: Some(url),
            pg_name: None,
        }
    }

    /// Both backends (PostgreSQL only when reachable, or always under CI).
    pub async fn all() -> Vec<TestLedger> {
        let mut v = vec![TestLedger::sqlite()];
        if let Some(pg) = TestLedger::postgres().await {
            v.push(pg);
        }
        v
    }

    pub async fn drop_db(self) {
        if let Some(name) = self.pg_name {
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .expect("drop test database");
        }
    }
}

/// A data dir and a config file (the sample configuration, pointed at the
/// shipped formats) in a temp dir.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
    pub ledger: Option<String>,
}

impl Env {
    pub fn new(ledger: &TestLedger, extra_config: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let sample =
            std::fs::read_to_string(root().join("settlegate.toml")).expect("sample config");
        let mut text = sample.replace(
            "formats_dir = \"formats\"",
            &format!(
                "formats_dir = {:?}",
                root().join("formats").display().to_string()
            ),
        );
        // A test that sets [watch] replaces the sample's.
        if extra_config.contains("[watch]") {
            let start = text.find("[watch]").expect("sample has [watch]");
            let end = text[start..]
                .find("[[partners]]")
                .map_or(text.len(), |e| start + e);
            text.replace_range(start..end, "");
        }
        // The sample's SFTP server (its last section) listens on a fixed
        // port: a test that wants one configures its own.
        if let Some(start) = text.find("\n[sftp_server]") {
            text.truncate(start + 1);
        }
        let config = dir.path().join("settlegate.toml");
        std::fs::write(&config, format!("{text}\n{extra_config}")).expect("write config");
        let data = dir.path().join("data");
        Env {
            config,
            data,
            ledger: ledger.url.clone(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Run the built binary with this environment's config, data dir and ledger.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_settlegate"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data);
        if let Some(url) = &self.ledger {
            cmd.arg("--ledger").arg(url);
        }
        cmd.args(args).env("USER", "test-operator");
        let out = cmd.output().expect("run settlegate");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let out = self.run(args);
        let v = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}\nstderr: {}",
                out.stdout, out.stderr
            )
        });
        (out.code, v)
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The record numbers of a file's original entries, as the ledger finds them.
pub async fn fed_record_nos(ledger: &settlegate::ledger::Ledger, file_id: i64) -> Vec<i64> {
    ledger
        .file_entries(file_id)
        .await
        .expect("a file's entries")
        .iter()
        .map(|e| e.record_no)
        .collect()
}
