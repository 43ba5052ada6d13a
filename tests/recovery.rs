//! Crash recovery as a fault campaign the project runs itself: `serve`
//! killed with SIGKILL at random moments while files of every kind arrive,
//! then restarted; two `serve` processes sharing one data directory, one of
//! them killed now and then; a full disk, then space freed. Afterwards,
//! every drop has exactly one arrival, every arrival one decision, every
//! receipt says the ledger's verdict, nothing is left `received`, claimed or
//! half-written, and what settlement gets equals the trailers' totals — on
//! SQLite and PostgreSQL.
//!
//! `SETTLEGATE_KILL_TRIALS` (default 10) sets the number of trials and
//! `SETTLEGATE_KILL_SEED` replays a campaign; the seed is printed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::NaiveDate;
use common::disk::SmallDisk;
use common::drops::{bank, drop_file, files_in, ledger_files, pg};
use common::server::{Server, wait_for};
use common::{Env, TestLedger, sha};
use rust_decimal::Decimal;
use settlegate::format::generate::{CardFile, CardRecord};

const WATCH: &str = "[watch]\nsettle_seconds = 0.2\nrescan_seconds = 1\n";

/// xorshift64*: the campaign's only source of chance, so a seed replays it.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("SETTLEGATE_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        eprintln!("kill campaign seed: SETTLEGATE_KILL_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn trials() -> u64 {
    std::env::var("SETTLEGATE_KILL_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// One file dropped into an inbox, and what must become of it.
#[derive(Debug, Clone)]
struct Dropped {
    partner: &'static str,
    name: String,
    checksum: String,
    /// The verdict its arrival must get.
    verdict: &'static str,
    /// For a fed card file: what settlement must get from it.
    settle: Option<Decimal>,
    bytes: Vec<u8>,
    control: Option<(String, Vec<u8>)>,
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 21).expect("date")
}

/// A card file with `n` records numbered from `first`, sequence `seq`.
fn card_file(seq: u16, first: u64, n: u64) -> CardFile {
    let mut f = CardFile::new(day());
    f.file_seq = seq;
    f.records = (first..first + n)
        .map(|i| CardRecord::synthetic(i, day()))
        .collect();
    f
}

fn card_drop(f: &CardFile, verdict: &'static str) -> Dropped {
    let bytes = f.render();
    Dropped {
        partner: "cardco",
        name: f.file_name(),
        checksum: sha(&bytes),
        verdict,
        settle: (verdict == "fed").then(|| Decimal::from_i128_with_scale(f.totals().settle, 0)),
        bytes,
        control: None,
    }
}

/// Trial `t`'s mix: distinct valid card files, a large one, an invalid one,
/// a drill by content, bank files (valid and drill-named), a CSV with its
/// control file, and byte-identical copies of two of the previous trial's
/// fed files (same names: the earlier ones are gone by then).
fn mix(t: u64, previous: &[Dropped]) -> Vec<Dropped> {
    let base = t * 1_000_000;
    let seq = |k: u64| (t * 20 + k + 1) as u16;
    let mut out = Vec::new();
    for k in 0..4 {
        out.push(card_drop(&card_file(seq(k), base + k * 1000, 3), "fed"));
    }
    out.push(card_drop(&card_file(seq(5), base + 500_000, 40_000), "fed"));
    let mut bad = card_file(seq(6), base + 6000, 3);
    bad.records[1].merchant_name = "\u{1}bad".into();
    out.push(card_drop(&bad, "invalid"));
    let mut drill = card_file(seq(7), base + 7000, 3);
    drill.run_mode = 'D';
    out.push(card_drop(&drill, "drill"));
    for (j, verdict) in [(0, "fed"), (1, "drill")] {
        let b = bank(t * 10 + j);
        let name = if verdict == "drill" {
            b.file_name().replace(".dat", "_DRILL.dat")
        } else {
            b.file_name()
        };
        let bytes = b.render();
        out.push(Dropped {
            partner: "bankco",
            name,
            checksum: sha(&bytes),
            verdict,
            settle: None,
            bytes,
            control: None,
        });
    }
    if t < 90 {
        let p = pg(t);
        let (bytes, ctl) = p.render();
        out.push(Dropped {
            partner: "pgco",
            name: p.file_name(),
            checksum: sha(&bytes),
            verdict: "fed",
            settle: None,
            bytes,
            control: Some((p.control_name(), ctl)),
        });
    }
    for d in previous
        .iter()
        .filter(|d| d.partner == "cardco" && d.verdict == "fed" && d.bytes.len() < 10_000)
        .take(2)
    {
        out.push(Dropped {
            verdict: "duplicate",
            settle: None,
            ..d.clone()
        });
    }
    out
}

fn inbox(env: &Env, partner: &str) -> PathBuf {
    env.data.join("inbox").join(partner)
}

fn put(env: &Env, d: &Dropped, via_temp: bool) {
    let dir = inbox(env, d.partner);
    std::fs::create_dir_all(&dir).expect("inbox");
    if let Some((name, bytes)) = &d.control {
        drop_file(&dir, name, bytes, via_temp);
    }
    drop_file(&dir, &d.name, &d.bytes, via_temp);
}

/// Every inbox empty (nothing waiting, nothing claimed) and nothing left to judge.
fn settled(env: &Env) -> bool {
    ["cardco", "bankco", "pgco"]
        .iter()
        .all(|p| files_in(&inbox(env, p)).is_empty())
        && {
            let (code, v) = env.json(&["files", "--verdict", "received", "--json"]);
            code == 0 && v.as_array().is_some_and(|a| a.is_empty())
        }
}

fn wait_settled(env: &Env, servers: &[&Server]) {
    wait_for(
        "every drop to be taken and judged",
        Duration::from_secs(180),
        || {
            for s in servers {
                let log = s.log_text();
                assert!(!log.contains("panicked"), "{log}");
            }
            settled(env)
        },
    );
}

fn receipt_of(env: &Env, partner: &str, name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(
        env.data
            .join("receipts")
            .join(partner)
            .join(format!("{name}.verdict")),
    )
    .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn events(env: &Env, id: i64) -> Vec<String> {
    let (code, v) = env.json(&["show", &id.to_string(), "--json"]);
    assert_eq!(code, 0);
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["kind"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The campaign's promises, checked on what the ledger, the receipts and
/// the disk hold once everything has settled.
fn check(env: &Env, drops: &[Dropped]) {
    let files = ledger_files(env);
    // One arrival per drop.
    let mut arrivals: HashMap<(String, String, String), Vec<&serde_json::Value>> = HashMap::new();
    for f in &files {
        let key = (
            f["partner"].as_str().unwrap_or("").to_string(),
            f["name"].as_str().unwrap_or("").to_string(),
            f["checksum"].as_str().unwrap_or("").to_string(),
        );
        arrivals.entry(key).or_default().push(f);
    }
    let mut expected: HashMap<(String, String, String), Vec<&Dropped>> = HashMap::new();
    for d in drops {
        expected
            .entry((d.partner.to_string(), d.name.clone(), d.checksum.clone()))
            .or_default()
            .push(d);
    }
    assert_eq!(
        files.len(),
        drops.len(),
        "one arrival per drop ({} drops, {} arrivals)",
        drops.len(),
        files.len()
    );
    for (key, ds) in &expected {
        let got = arrivals.get(key).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), ds.len(), "arrivals of {key:?}");
        // In order of arrival, each has the verdict its drop must get.
        for (f, d) in got.iter().zip(ds.iter()) {
            assert_eq!(f["verdict"], d.verdict, "{key:?}: {f}");
        }
    }
    // One decision per arrival: its arrival event and one verdict.
    for f in &files {
        let id = f["id"].as_i64().expect("id");
        let kinds = events(env, id);
        assert_eq!(kinds.len(), 2, "file {id}: {kinds:?}");
        assert_eq!(kinds[0], "received", "file {id}: {kinds:?}");
        assert_eq!(kinds[1], f["verdict"].as_str().unwrap_or(""), "file {id}");
    }
    // Every receipt says the ledger's verdict of the latest arrival by that name.
    let mut latest: HashMap<(String, String), &serde_json::Value> = HashMap::new();
    for f in &files {
        latest.insert(
            (
                f["partner"].as_str().unwrap_or("").to_string(),
                f["name"].as_str().unwrap_or("").to_string(),
            ),
            f,
        );
    }
    for ((partner, name), f) in &latest {
        let r = receipt_of(env, partner, name);
        assert_eq!(
            r.get("file_id").map(String::as_str),
            Some(f["id"].to_string().as_str()),
            "receipt of {partner}/{name}: {r:?}"
        );
        assert_eq!(r.get("verdict").map(String::as_str), f["verdict"].as_str());
        assert_eq!(
            r.get("checksum").map(String::as_str),
            f["checksum"].as_str()
        );
    }
    // Nothing left claimed, half-written or spooled.
    for p in ["cardco", "bankco", "pgco"] {
        assert!(files_in(&inbox(env, p)).is_empty(), "inbox {p}");
    }
    assert!(
        files_in(&env.data.join("store/tmp")).is_empty(),
        "store temp files"
    );
    // What settlement gets for the card day equals the trailers' totals.
    let want: Decimal = drops.iter().filter_map(|d| d.settle).sum();
    let (code, intake) = env.json(&["intake", "--date", "2026-11-21", "--json"]);
    assert_eq!(code, 0);
    let got = intake
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["format"] == "card-settlement"))
        .and_then(|r| r["total"].as_str())
        .and_then(|t| Decimal::from_str_exact(t).ok())
        .unwrap_or_default();
    assert_eq!(got, want, "card intake");
}

/// Kill `serve` at random moments while a trial's files arrive, restart
/// it, and let it finish; then check every promise.
async fn kill_trials(ledger: TestLedger) {
    let env = Env::new(&ledger, WATCH);
    let mut rng = Rng::from_env();
    let mut drops: Vec<Dropped> = Vec::new();
    let mut previous: Vec<Dropped> = Vec::new();
    for t in 0..trials() {
        let mut server = Server::start(&env);
        let batch = mix(t, &previous);
        for (i, d) in batch.iter().enumerate() {
            put(&env, d, i % 2 == 0);
        }
        std::thread::sleep(Duration::from_millis(rng.below(2500)));
        server.kill9();
        let mut server = Server::start(&env);
        wait_settled(&env, &[&server]);
        assert_eq!(server.stop(), 0, "trial {t}: {}", server.log_text());
        previous = batch.clone();
        drops.extend(batch);
    }
    check(&env, &drops);
    ledger.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_sqlite() {
    kill_trials(TestLedger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_postgres() {
    if let Some(t) = TestLedger::postgres().await {
        kill_trials(t).await;
    }
}

/// Two `serve` processes on one data directory (a restart overlapping the
/// old process, or two nodes on a shared inbox): each takes what the other
/// has not claimed, neither touches the other's claims, and one of them is
/// killed now and then and restarted while the other goes on.
async fn two_serves(ledger: TestLedger) {
    let env = Env::new(&ledger, WATCH);
    let mut rng = Rng::from_env();
    let mut a = Server::start(&env);
    let mut b = Server::start(&env);
    let mut drops: Vec<Dropped> = Vec::new();
    let mut previous: Vec<Dropped> = Vec::new();
    for t in 0..trials() {
        let batch = mix(t, &previous);
        for (i, d) in batch.iter().enumerate() {
            put(&env, d, i % 2 == 1);
        }
        std::thread::sleep(Duration::from_millis(rng.below(2000)));
        if rng.below(2) == 0 {
            a.kill9();
            a = Server::start(&env);
        } else {
            b.kill9();
            b = Server::start(&env);
        }
        wait_settled(&env, &[&a, &b]);
        for s in [&a, &b] {
            assert!(
                !s.log_text().contains("could not claim file"),
                "{}",
                s.log_text()
            );
        }
        previous = batch.clone();
        drops.extend(batch);
    }
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
    check(&env, &drops);
    ledger.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_on_one_data_dir_sqlite() {
    two_serves(TestLedger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_on_one_data_dir_postgres() {
    if let Some(t) = TestLedger::postgres().await {
        two_serves(t).await;
    }
}

/// The disk fills up while files arrive: each is kept in its inbox and
/// retried, nothing is recorded half; once space is freed every file is
/// taken and judged within a few retries, each recorded once.
async fn full_disk(ledger: TestLedger) {
    let mut env = Env::new(&ledger, WATCH);
    let small = env.path("small-data");
    let Some(disk) = SmallDisk::mount(&small, "24m") else {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    };
    // The inboxes live on the big disk; the store, spool and SQLite ledger on the small one.
    let big = env.path("inboxes");
    let mut text = std::fs::read_to_string(&env.config).expect("config");
    for p in ["cardco", "bankco", "pgco"] {
        text = text.replacen(
            &format!("id = \"{p}\""),
            &format!(
                "id = \"{p}\"\ninbox = {:?}",
                big.join(p).display().to_string()
            ),
            1,
        );
    }
    std::fs::write(&env.config, text).expect("config");
    env.data = small.clone();
    let inbox_of = |p: &str| big.join(p);
    let mut server = Server::start(&env);
    let filler = disk.fill();
    let mut drops = Vec::new();
    for k in 0..12u64 {
        let d = card_drop(&card_file(k as u16 + 1, k * 1000, 200), "fed");
        std::fs::create_dir_all(inbox_of("cardco")).expect("inbox");
        drop_file(&inbox_of("cardco"), &d.name, &d.bytes, k % 2 == 0);
        drops.push(d);
    }
    wait_for(
        "the full disk to stop a file",
        Duration::from_secs(60),
        || server.log_text().contains("could not take file"),
    );
    assert!(ledger_files(&env).len() < drops.len(), "the disk was full");
    std::fs::remove_file(&filler).expect("free the disk");
    server.wait_until(
        "every file taken once space is back",
        Duration::from_secs(90),
        || files_in(&inbox_of("cardco")).is_empty() && settled_ledger(&env, drops.len()),
    );
    if ledger.backend == "sqlite" {
        // Again, with room for the file's bytes but not for what feeding it
        // writes into the SQLite ledger on this disk.
        let filler = disk.fill();
        let big = card_drop(&card_file(99, 900_000, 8_000), "fed");
        // Room for the bytes and a little more (the arrival's row), not
        // for the feed's 8 000 entries.
        free_some(&filler, big.bytes.len() as u64 + (256 << 10));
        let big_name = big.name.clone();
        drop_file(&inbox_of("cardco"), &big.name, &big.bytes, true);
        drops.push(big);
        wait_for("the big file to be stored", Duration::from_secs(60), || {
            !files_in(&inbox_of("cardco"))
                .iter()
                .any(|n| n.ends_with(".dat"))
        });
        server.wait_until(
            "the feed to meet the full disk",
            Duration::from_secs(60),
            || {
                let log = server.log_text();
                log.lines()
                    .any(|l| l.contains(&big_name) && l.contains("could not take file"))
            },
        );
        std::fs::remove_file(&filler).expect("free the disk");
        server.wait_until(
            "the big file fed once space is back",
            Duration::from_secs(90),
            || files_in(&inbox_of("cardco")).is_empty() && settled_ledger(&env, drops.len()),
        );
    }
    assert_eq!(server.stop(), 0, "{}", server.log_text());
    let files = ledger_files(&env);
    assert_eq!(files.len(), drops.len(), "one arrival per drop: {files:?}");
    for f in &files {
        assert_eq!(f["verdict"], "fed", "{f}");
    }
    let log = server.log_text();
    for wrong in ["vanished", "is not in the ledger", "database is locked"] {
        assert!(!log.contains(wrong), "{wrong}: {log}");
    }
    if ledger.backend == "sqlite" {
        assert!(
            log.contains("the disk holding the ledger"),
            "the SQLite ledger met the full disk and said so: {log}"
        );
    }
    let want: Decimal = drops.iter().filter_map(|d| d.settle).sum();
    let (_, intake) = env.json(&["intake", "--date", "2026-11-21", "--json"]);
    assert_eq!(intake[0]["total"].as_str(), Some(want.to_string().as_str()));
    assert!(
        files_in(&small.join("store/tmp")).is_empty(),
        "no partial file left"
    );
    drop(disk);
    ledger.drop_db().await;
}

/// Give back the last `bytes` of a filler file.
fn free_some(filler: &Path, bytes: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(filler)
        .expect("filler");
    let len = f.metadata().expect("stat").len();
    f.set_len(len.saturating_sub(bytes)).expect("truncate");
}

fn settled_ledger(env: &Env, n: usize) -> bool {
    let files = ledger_files(env);
    files.len() >= n && files.iter().all(|f| f["verdict"] != "received")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_then_freed_sqlite() {
    full_disk(TestLedger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_then_freed_postgres() {
    if let Some(t) = TestLedger::postgres().await {
        full_disk(t).await;
    }
}

/// What an operator meets in an inbox: entries that are never taken are
/// each named once with why; an entry named `.taking` is moved aside and
/// does not block the partner; a 255-byte name gets a receipt that fits;
/// receipts are readable by the group (0640).
#[test]
fn odd_inbox_entries_are_named_once_and_block_nothing() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let env = Env::new(&TestLedger::sqlite(), WATCH);
    let inbox = inbox(&env, "cardco");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let outside = env.path("outside.dat");
    std::fs::write(&outside, card_file(1, 0, 3).render()).expect("write");
    symlink(&outside, inbox.join("linked.dat")).expect("symlink");
    symlink("/etc/passwd", inbox.join("passwd.dat")).expect("symlink");
    symlink(env.path("nowhere"), inbox.join("dangling.dat")).expect("symlink");
    std::fs::create_dir(inbox.join("subdir")).expect("mkdir");
    let fifo = inbox.join("pipe.dat");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
    );
    std::fs::write(inbox.join(".taking"), b"a partner's stray file").expect("write");
    let long = format!("{}.dat", "L".repeat(251));
    std::fs::write(inbox.join(&long), card_file(2, 100, 3).render()).expect("write");
    let first = card_drop(&card_file(3, 200, 3), "fed");
    put(&env, &first, true);
    let mut server = Server::start(&env);
    let taken = |name: &str| {
        let name = name.to_string();
        move |log: &str| {
            log.lines()
                .any(|l| l.contains("taken from inbox") && l.contains(&name))
        }
    };
    let first_taken = taken(&first.name);
    server.wait_until("the first file taken", Duration::from_secs(60), || {
        first_taken(&server.log_text())
    });
    // More scans go by while a second file arrives and is taken.
    let second = card_drop(&card_file(4, 300, 3), "fed");
    put(&env, &second, false);
    let second_taken = taken(&second.name);
    server.wait_until("the second file taken", Duration::from_secs(60), || {
        second_taken(&server.log_text())
    });
    assert_eq!(server.stop(), 0);
    let log = server.log_text();
    for (name, why) in [
        ("linked.dat", "symbolic link"),
        ("passwd.dat", "symbolic link"),
        ("dangling.dat", "symbolic link"),
        ("subdir", "a directory"),
        ("pipe.dat", "not a regular file"),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("not taken") && l.contains(&format!("\"{name}\"")))
            .collect();
        assert_eq!(lines.len(), 1, "{name} named once: {lines:?}");
        assert!(lines[0].contains(why), "{}", lines[0]);
    }
    assert!(log.contains("moved aside"), "{log}");
    assert!(
        files_in(&inbox)
            .iter()
            .any(|n| n.starts_with(".taking.not-a-directory")),
        "the stray .taking was moved aside, not deleted"
    );
    // The long name was judged once; its receipt has a name that fits.
    let files = ledger_files(&env);
    assert_eq!(
        files.iter().filter(|f| f["name"] == long.as_str()).count(),
        1
    );
    let receipts = files_in(&env.data.join("receipts/cardco"));
    let short = receipts
        .iter()
        .find(|n| n.starts_with("LLLL") && n.ends_with(".verdict"))
        .unwrap_or_else(|| panic!("no receipt for the long name: {receipts:?}"));
    assert!(short.len() <= 255 && short.contains('~'), "{short}");
    let mode = std::fs::metadata(
        env.data
            .join("receipts/cardco")
            .join(format!("{}.verdict", first.name)),
    )
    .expect("receipt")
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o640);
    // The links and the FIFO are still there, untouched.
    assert!(inbox.join("passwd.dat").symlink_metadata().is_ok());
    assert!(fifo.exists());
}

/// Temp files of a writer that died are removed at start; one a live
/// writer holds (locked) is left alone.
#[test]
fn a_dead_writers_temp_files_are_removed_at_start() {
    let env = Env::new(&TestLedger::sqlite(), WATCH);
    let tmp = env.data.join("store/tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    std::fs::write(tmp.join("incoming-dead.part"), vec![7u8; 4096]).expect("write");
    let live = std::fs::File::create(tmp.join("incoming-live.part")).expect("create");
    live.lock().expect("lock");
    let spool = env.data.join("sftp/spool/cardco");
    std::fs::create_dir_all(&spool).expect("mkdir");
    let mut server = Server::start(&env);
    assert_eq!(server.stop(), 0);
    assert_eq!(files_in(&tmp), vec!["incoming-live.part".to_string()]);
    assert!(server.log_text().contains("half-written temp files"));
    drop(live);
    let out = env.run(&["recover"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        files_in(&tmp).is_empty(),
        "recover removes it once nobody holds it"
    );
}

/// The ledger's PostgreSQL goes away while `serve` runs: the log says the
/// ledger is unreachable and why (not a pool timing out); the file waits
/// and is taken once the database is back.
#[test]
fn a_ledger_outage_is_said_plainly_and_nothing_is_lost() {
    let Some(pg) = common::pg::ThrowawayPostgres::start() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL's server binaries are needed under CI"
        );
        eprintln!("skipping: no PostgreSQL server binaries here");
        return;
    };
    let ledger = TestLedger::at(pg.url());
    let env = Env::new(&ledger, WATCH);
    let mut server = Server::start(&env);
    pg.down();
    let d = card_drop(&card_file(1, 0, 3), "fed");
    put(&env, &d, true);
    server.wait_until("the outage to be logged", Duration::from_secs(90), || {
        server.log_text().contains("is unreachable")
    });
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("is unreachable"))
        .unwrap_or_default();
    assert!(
        line.contains(&d.name) && (line.contains("refused") || line.contains("onnect")),
        "{line}"
    );
    assert!(!line.contains("pool timed out"), "{line}");
    pg.up();
    let name = d.name.clone();
    server.wait_until(
        "the file to be taken after the outage",
        Duration::from_secs(90),
        || {
            server
                .log_text()
                .lines()
                .any(|l| l.contains("taken from inbox") && l.contains(&name))
        },
    );
    assert_eq!(server.stop(), 0);
    let files = ledger_files(&env);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["verdict"], "fed");
}
