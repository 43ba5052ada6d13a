//! The binary's contract: exit codes, JSON fields, and clear errors that lose
//! nothing (a ledger that cannot be opened, a file that cannot be read, a
//! full disk, a bad configuration).

mod common;

use std::process::Command;

use common::{Env, TestLedger, root};

fn fixture(format: &str, case: &str) -> String {
    let dir = root().join("fixtures").join(format).join(case);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n != "expect.toml" && !n.ends_with(".ctl")
        })
        .unwrap();
    file.display().to_string()
}

#[test]
fn verify_json_and_exit_codes() {
    let env = Env::new(&TestLedger::sqlite(), "");
    let (code, v) = env.json(&[
        "verify",
        "--format",
        "card-settlement",
        &fixture("card-settlement", "valid-cancels"),
        "--json",
    ]);
    assert_eq!(code, 0);
    for key in [
        "format",
        "valid",
        "records",
        "checksum",
        "fingerprint",
        "business_key",
        "totals",
        "drill_signals",
        "error",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["valid"], true);
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(v["business_key"]["sender_code"], "031");
    assert!(
        v["totals"]["total_settle"]
            .as_str()
            .unwrap()
            .starts_with('-'),
        "{v}"
    );
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);

    let (code, v) = env.json(&[
        "verify",
        "--format",
        "card-settlement",
        &fixture("card-settlement", "bad-digit"),
        "--json",
    ]);
    assert_eq!(code, 14);
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"]["record"], 4);
    assert_eq!(v["error"]["field"], "fee_amount");
    assert_eq!(v["error"]["offset"], 716);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected digits")
    );

    let (code, v) = env.json(&[
        "verify",
        "--format",
        "pg-settlement-csv",
        &fixture("pg-settlement-csv", "valid-refund-usd"),
        "--json",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["totals"]["net_total"], "9652.97");

    let out = env.run(&[
        "verify",
        "--format",
        "no-such-format",
        &fixture("card-settlement", "valid-basic"),
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown format") && out.stderr.contains("card-settlement"),
        "{}",
        out.stderr
    );

    let out = env.run(&["formats"]);
    assert_eq!(out.code, 0);
    let specs = std::fs::read_dir(common::root().join("formats"))
        .expect("formats")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    assert_eq!(out.stdout.lines().count(), specs, "{}", out.stdout);

    // One thread or several: the same answer, error for error.
    for case in ["valid-cancels", "bad-digit", "seq-gap"] {
        let file = fixture("card-settlement", case);
        let args = |threads: &'static str| {
            let mut a = vec!["verify", "--format", "card-settlement", "--json"];
            a.extend(["--threads", threads]);
            a
        };
        let mut one = args("1");
        one.push(&file);
        let mut three = args("3");
        three.push(&file);
        assert_eq!(env.json(&one), env.json(&three), "{case}");
    }
    let out = env.run(&[
        "verify",
        "--threads",
        "0",
        "--format",
        "card-settlement",
        &fixture("card-settlement", "valid-basic"),
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--threads"), "{}", out.stderr);
}

#[test]
fn a_ledger_that_cannot_be_opened_is_a_clear_error_and_hides_the_password() {
    let mut env = Env::new(&TestLedger::sqlite(), "");
    env.ledger = Some("postgres://postgres:s3cret@127.0.0.1:1/settlegate".into());
    let out = env.run(&[
        "ingest",
        "--partner",
        "cardco",
        &fixture("card-settlement", "valid-basic"),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot open the ledger"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("s3cret"),
        "password leaked: {}",
        out.stderr
    );
    assert!(out.stderr.contains("****"), "{}", out.stderr);
}

#[test]
fn unreadable_input_and_bad_usage() {
    let env = Env::new(&TestLedger::sqlite(), "");
    let out = env.run(&[
        "ingest",
        "--partner",
        "cardco",
        "/nonexistent/CSTL_031_20261121_0001.dat",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot read /nonexistent/CSTL_031_20261121_0001.dat"),
        "{}",
        out.stderr
    );

    let out = env.run(&[
        "ingest",
        "--partner",
        "nobody",
        &fixture("card-settlement", "valid-basic"),
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown partner") && out.stderr.contains("cardco"),
        "{}",
        out.stderr
    );

    let out = env.run(&[
        "ingest",
        "--partner",
        "cardco",
        "--channel",
        "fax",
        &fixture("card-settlement", "valid-basic"),
    ]);
    assert_eq!(out.code, 2);

    // Nothing was recorded by the refused commands.
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(files, serde_json::json!([]));

    let bad = Env::new(&TestLedger::sqlite(), "dta_dir = \"x\"");
    let out = bad.run(&["files"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("dta_dir"), "{}", out.stderr);
}

#[test]
fn show_says_why_and_every_refused_file_is_kept() {
    let env = Env::new(&TestLedger::sqlite(), "");
    for (case, code, verdict) in [
        ("valid-basic", 0, "fed"),
        ("bad-digit", 14, "invalid"),
        ("valid-drill-run-mode", 11, "drill"),
        ("valid-lf", 10, "duplicate"),
        ("valid-hangul", 12, "conflict"),
    ] {
        let (c, v) = env.json(&[
            "ingest",
            "--partner",
            "cardco",
            &fixture("card-settlement", case),
            "--json",
        ]);
        assert_eq!(
            (c, v["verdict"].as_str()),
            (code, Some(verdict)),
            "{case}: {v}"
        );
        for key in [
            "file_id",
            "verdict",
            "reason",
            "related_file_id",
            "checksum",
            "fingerprint",
            "business_key",
            "business_date",
            "records",
        ] {
            assert!(v.get(key).is_some(), "{case}: missing {key}");
        }
        let (_, shown) = env.json(&["show", &v["file_id"].to_string(), "--json"]);
        assert_eq!(shown["verdict"], verdict);
        assert_eq!(shown["reason"], v["reason"]);
        let bytes = std::fs::read(shown["stored_at"].as_str().unwrap()).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(fixture("card-settlement", case)).unwrap(),
            "{case}: stored bytes differ"
        );
        if verdict == "invalid" {
            assert_eq!(shown["error"]["record"], 4);
            assert_eq!(shown["error"]["field"], "fee_amount");
        }
    }
    let text = env.run(&["show", "2"]).stdout;
    assert!(
        text.contains("expected digits") && text.contains("events:"),
        "{text}"
    );
    let (_, files) = env.json(&["files", "--verdict", "duplicate", "--json"]);
    assert_eq!(files.as_array().unwrap().len(), 1);
    for key in [
        "id",
        "partner",
        "channel",
        "name",
        "verdict",
        "reason",
        "checksum",
        "fingerprint",
        "business_date",
        "records",
        "received_at",
    ] {
        assert!(files[0].get(key).is_some(), "files --json lacks {key}");
    }
    let (_, none) = env.json(&["files", "--date", "2026-11-22", "--json"]);
    assert_eq!(none, serde_json::json!([]));
    let (_, pgfiles) = env.json(&["files", "--partner", "pgco", "--json"]);
    assert_eq!(pgfiles, serde_json::json!([]));
}

/// A full disk: the store cannot take the file; the command fails clearly
/// and nothing is recorded or half-written. Needs a small tmpfs (root).
#[test]
fn a_full_disk_fails_cleanly() {
    let env = Env::new(&TestLedger::sqlite(), "");
    let mnt = env.path("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let big = env.path("CSTL_031_20261121_0001.dat");
    let mut f = settlegate::format::generate::CardFile::new(
        chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(),
    );
    let mut bytes = Vec::new();
    f.line_ending = settlegate::format::generate::LineEnding::CrLf;
    f.write_synthetic(5000, &mut bytes).unwrap();
    std::fs::write(&big, &bytes).unwrap();

    let ledger = env.path("ledger.db");
    let out = Command::new(env!("CARGO_BIN_EXE_settlegate"))
        .arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&mnt)
        .arg("--ledger")
        .arg(format!("sqlite://{}", ledger.display()))
        .args(["ingest", "--partner", "cardco"])
        .arg(&big)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("content store"), "{stderr}");
    // Nothing recorded, no temp file left, the original untouched.
    let files = Command::new(env!("CARGO_BIN_EXE_settlegate"))
        .arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&mnt)
        .arg("--ledger")
        .arg(format!("sqlite://{}", ledger.display()))
        .args(["files", "--json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&files.stdout).trim(), "[]");
    assert_eq!(std::fs::read_dir(mnt.join("store/tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read(&big).unwrap(), bytes);
}

/// `ingest` of something that is not a regular file says what it is; an
/// ingest an interrupted run left recorded but unjudged is finished by
/// ingesting the same bytes again (one arrival, fed), not refused as its
/// duplicate; a control file beside the data file is found whatever its
/// case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_says_what_it_cannot_read_and_finishes_what_was_left() {
    use settlegate::intake::{Arrival, Bytes, Gateway, SystemClock};
    let env = Env::new(&TestLedger::sqlite(), "");
    let dir = env.path("in");
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    let out = env.run(&[
        "ingest",
        "--partner",
        "cardco",
        &dir.join("a-directory").display().to_string(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("is a directory"), "{}", out.stderr);
    let fifo = dir.join("pipe.dat");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
    );
    let out = env.run(&["ingest", "--partner", "cardco", &fifo.display().to_string()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("FIFO"), "{}", out.stderr);

    // An ingest killed after recording: the row is left `received`.
    let file = fixture("card-settlement", "valid-basic");
    let mut config = settlegate::config::Config::load(Some(&env.config)).unwrap();
    config.data_dir = env.data.clone();
    let gw = Gateway::open(config, std::sync::Arc::new(SystemClock))
        .await
        .unwrap();
    let name = std::path::Path::new(&file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let arrival = Arrival::new(
        "cardco",
        settlegate::model::Channel::Manual,
        &name,
        "operator:test",
    );
    let path = std::path::PathBuf::from(&file);
    let id = gw
        .record(
            &arrival,
            Bytes::Files {
                data: &path,
                control: None,
            },
        )
        .await
        .unwrap();
    gw.ledger.close().await;
    let out = env.run(&["ingest", "--partner", "cardco", &file]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("fed:"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("file {id} holds these bytes")),
        "{}",
        out.stderr
    );
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(files.as_array().map(Vec::len), Some(1), "{files}");
    assert_eq!(files[0]["verdict"], "fed");

    // A CSV whose control file is named in upper case beside it.
    let csv = fixture("pg-settlement-csv", "valid-basic");
    let csv_name = std::path::Path::new(&csv)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::copy(&csv, dir.join(&csv_name)).unwrap();
    let ctl = std::path::Path::new(&csv).with_extension("ctl");
    std::fs::copy(&ctl, dir.join(&csv_name).with_extension("CTL")).unwrap();
    let (code, v) = env.json(&[
        "ingest",
        "--partner",
        "pgco",
        "--json",
        &dir.join(&csv_name).display().to_string(),
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verdict"], "fed", "{v}");
}
