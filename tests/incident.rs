//! The incident replay, end to end through the built binary, against SQLite
//! and PostgreSQL: whichever way a second copy of a settlement day arrives,
//! it is not fed, and `intake` pays each day exactly once.

mod common;

use chrono::NaiveDate;
use common::{Env, TestLedger};
use rust_decimal::Decimal;
use serde_json::Value;
use settlegate::format::generate::{CardFile, CardRecord, LineEnding};
use std::str::FromStr;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).expect("date")
}

fn card_day(d: NaiveDate, n: u64, first: u64) -> CardFile {
    let mut f = CardFile::new(d);
    f.records = (first..first + n)
        .map(|i| CardRecord::synthetic(i, d))
        .collect();
    f
}

fn write(env: &Env, dir: &str, f: &CardFile) -> String {
    let d = env.path(dir);
    std::fs::create_dir_all(&d).expect("mkdir");
    let p = d.join(f.file_name());
    std::fs::write(&p, f.render()).expect("write");
    p.display().to_string()
}

fn ingest(env: &Env, path: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["ingest", "--partner", "cardco", path, "--json"];
    args.extend_from_slice(extra);
    env.json(&args)
}

async fn replay(ledger: TestLedger) {
    let env = Env::new(&ledger, "");
    let backend = ledger.backend;
    let (d1, d2, d3, d4) = (day(20), day(21), day(22), day(23));

    // (a) production file for D1 → fed
    let f1 = card_day(d1, 40, 0);
    let p1 = write(&env, "a", &f1);
    let (code, a) = ingest(&env, &p1, &[]);
    assert_eq!(
        (code, a["verdict"].as_str()),
        (0, Some("fed")),
        "{backend} (a): {a}"
    );
    assert_eq!(a["records"], 40);
    let first_id = a["file_id"].as_i64().expect("id");

    // (b) a DR-drill copy of D2 (run_mode D) → drill
    let f2 = card_day(d2, 25, 1000);
    let mut drill = f2.clone();
    drill.run_mode = 'D';
    let (code, b) = ingest(&env, &write(&env, "b", &drill), &[]);
    assert_eq!(
        (code, b["verdict"].as_str()),
        (11, Some("drill")),
        "{backend} (b): {b}"
    );
    assert!(
        b["reason"].as_str().unwrap_or("").contains("run_mode=D"),
        "{b}"
    );

    // (c) the production D2 file → fed; the quarantined drill copy (same
    //     fingerprint) does not block it
    let p2 = write(&env, "c", &f2);
    let (code, c) = ingest(&env, &p2, &[]);
    assert_eq!(
        (code, c["verdict"].as_str()),
        (0, Some("fed")),
        "{backend} (c): {c}"
    );
    assert_eq!(
        c["fingerprint"], b["fingerprint"],
        "drill copy and production share a fingerprint"
    );

    // (d) D2 re-sent: new creation stamp, file sequence 0002, LF, other order → duplicate
    let mut resend = f2.clone();
    resend.created_at = d2.succ_opt().expect("d").and_hms_opt(9, 30, 0).expect("t");
    resend.file_seq = 2;
    resend.line_ending = LineEnding::Lf;
    resend.records.reverse();
    resend.records.swap(3, 17);
    let (code, d) = ingest(&env, &write(&env, "d", &resend), &[]);
    assert_eq!(
        (code, d["verdict"].as_str()),
        (10, Some("duplicate")),
        "{backend} (d): {d}"
    );
    assert_eq!(d["related_file_id"], c["file_id"], "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("same fingerprint"),
        "{d}"
    );

    // (e) D1 redelivered by hand → duplicate, naming the first
    let (code, e) = ingest(&env, &p1, &["--reason", "weekend re-run"]);
    assert_eq!(
        (code, e["verdict"].as_str()),
        (10, Some("duplicate")),
        "{backend} (e): {e}"
    );
    assert_eq!(e["related_file_id"].as_i64(), Some(first_id));
    let reason = e["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains(&format!("file {first_id} (")) && reason.contains(&f1.file_name()),
        "{reason}"
    );

    // (f) a D2 file with one amount changed → conflict
    let mut changed = f2.clone();
    changed.records[7].sales += 1000;
    let (code, f) = ingest(&env, &write(&env, "f", &changed), &[]);
    assert_eq!(
        (code, f["verdict"].as_str()),
        (12, Some("conflict")),
        "{backend} (f): {f}"
    );
    assert_eq!(f["related_file_id"], c["file_id"]);

    // (g) D1's records relabelled as day D3 → overlap
    let mut relabelled = f1.clone();
    relabelled.business_date = d3;
    let (code, g) = ingest(&env, &write(&env, "g", &relabelled), &[]);
    assert_eq!(
        (code, g["verdict"].as_str()),
        (13, Some("overlap")),
        "{backend} (g): {g}"
    );
    assert_eq!(g["related_file_id"].as_i64(), Some(first_id));
    assert!(
        g["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("40 record key(s) already fed"),
        "{g}"
    );

    // (h) an empty day → fed
    let empty = card_day(d4, 0, 0);
    let (code, h) = ingest(&env, &write(&env, "h", &empty), &[]);
    assert_eq!(
        (code, h["verdict"].as_str()),
        (0, Some("fed")),
        "{backend} (h): {h}"
    );

    // Afterwards intake for D1 and D2 equals exactly those files' trailer totals.
    for (date, file) in [(d1, &f1), (d2, &f2)] {
        let (code, rows) = env.json(&["intake", "--date", &date.to_string(), "--json"]);
        assert_eq!(code, 0);
        let rows = rows.as_array().expect("array");
        assert_eq!(rows.len(), 1, "{backend} {date}: {rows:?}");
        let r = &rows[0];
        assert_eq!(r["partner"], "cardco");
        assert_eq!(r["format"], "card-settlement");
        assert_eq!(r["files"], 1);
        assert_eq!(r["entries"].as_u64(), Some(file.records.len() as u64));
        let total = Decimal::from_str(r["total"].as_str().expect("total")).expect("decimal");
        assert_eq!(
            total,
            Decimal::from_i128_with_scale(file.totals().settle, 0),
            "{backend} {date}"
        );
    }
    let (_, rows) = env.json(&["intake", "--date", &d3.to_string(), "--json"]);
    assert_eq!(
        rows,
        serde_json::json!([]),
        "nothing of the overlapping D3 file was fed"
    );

    // Every arrival is in the ledger, with its bytes in the store.
    let (_, files) = env.json(&["files", "--json"]);
    let files = files.as_array().expect("array");
    assert_eq!(files.len(), 8);
    let verdicts: Vec<&str> = files
        .iter()
        .map(|f| f["verdict"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        verdicts,
        [
            "fed",
            "drill",
            "fed",
            "duplicate",
            "duplicate",
            "conflict",
            "overlap",
            "fed"
        ]
    );
    for f in files {
        let (_, shown) = env.json(&["show", &f["id"].to_string(), "--json"]);
        let stored = shown["stored_at"].as_str().expect("stored_at");
        let bytes = std::fs::read(stored).expect("stored bytes");
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            f["checksum"].as_str().unwrap_or("")
        );
        assert!(
            shown["events"].as_array().is_some_and(|e| e.len() >= 2),
            "{shown}"
        );
    }
    let (_, manual) = env.json(&["show", &e["file_id"].to_string(), "--json"]);
    assert_eq!(manual["events"][0]["reason"], "weekend re-run");
    assert_eq!(manual["events"][0]["actor"], "operator:test-operator");

    operator_actions(&env, backend, &f2, &changed, &b, &c, &f, &g);

    ledger.drop_db().await;
}

/// The repairs an operator makes afterwards: supersede the corrected D2 file
/// (reversing the first D2 feed in the same transaction), reject the
/// overlapping file, and release drill files only by explicit override.
#[allow(clippy::too_many_arguments)]
fn operator_actions(
    env: &Env,
    backend: &str,
    f2: &CardFile,
    changed: &CardFile,
    b: &Value,
    c: &Value,
    f: &Value,
    g: &Value,
) {
    let id = |v: &Value| v["file_id"].to_string();
    let d2 = f2.business_date.to_string();
    let out = env.run(&[
        "supersede",
        &id(f),
        "--reason",
        "partner sent a corrected D2",
    ]);
    assert_eq!(out.code, 0, "{backend}: {out:?}");
    assert!(
        out.stdout.starts_with("fed: supersedes file"),
        "{}",
        out.stdout
    );
    let (_, rows) = env.json(&["intake", "--date", &d2, "--json"]);
    let total = Decimal::from_str(rows[0]["total"].as_str().expect("total")).expect("decimal");
    assert_eq!(
        total,
        Decimal::from_i128_with_scale(changed.totals().settle, 0),
        "{backend}: D2 pays the corrected file only"
    );
    assert_eq!(
        rows[0]["entries"].as_u64(),
        Some(3 * f2.records.len() as u64),
        "originals, reversals, replacements"
    );
    let (_, old) = env.json(&["show", &id(c), "--json"]);
    assert_eq!(old["verdict"], "superseded");
    assert_eq!(old["related_file_id"], f["file_id"]);
    let kinds: Vec<&str> = old["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["received", "fed", "superseded"]);
    // Superseding twice is refused: the file is fed now.
    let again = env.run(&["supersede", &id(f), "--reason", "again"]);
    assert_eq!(again.code, 3, "{again:?}");

    // The D2 drill copy cannot be released: without its drill signal it
    // would be a conflict with the corrected D2.
    let out = env.run(&[
        "release",
        &id(b),
        "--override",
        "--reason",
        "partner says it was real",
    ]);
    assert_eq!(out.code, 3, "{backend}: {out:?}");
    assert!(out.stderr.contains("would be conflict"), "{}", out.stderr);
    // Release needs --override.
    assert_eq!(env.run(&["release", &id(b), "--reason", "x"]).code, 2);
    // A drill copy of a day not otherwise delivered can be released.
    let d5 = day(25);
    let mut drill5 = card_day(d5, 5, 5000);
    drill5.run_mode = 'T';
    let (code, v) = ingest(env, &write(env, "i", &drill5), &[]);
    assert_eq!(code, 11, "{v}");
    let (code, released) = env.json(&[
        "release",
        &id(&v),
        "--override",
        "--reason",
        "test run was the real one",
        "--json",
    ]);
    assert_eq!(
        (code, released["verdict"].as_str()),
        (0, Some("fed")),
        "{released}"
    );
    let (_, shown) = env.json(&["show", &id(&v), "--json"]);
    let last = shown["events"]
        .as_array()
        .expect("events")
        .last()
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["kind"], "fed");
    assert_eq!(last["actor"], "operator:test-operator");
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or("")
            .contains("test run was the real one")
    );

    // Reject the overlapping file for good; it cannot be rejected twice.
    assert_eq!(
        env.run(&["reject", &id(g), "--reason", "relabelled copy of D1"])
            .code,
        0
    );
    let (_, shown) = env.json(&["show", &id(g), "--json"]);
    assert_eq!(shown["verdict"], "rejected");
    assert_eq!(env.run(&["reject", &id(g), "--reason", "again"]).code, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_replay_sqlite() {
    replay(TestLedger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_replay_postgres() {
    if let Some(pg) = TestLedger::postgres().await {
        replay(pg).await;
    }
}
