//! `settlegate serve` with watched folders, as a real process on real files:
//! a thousand drops across three inboxes, a slow writer, and `kill -9`
//! mid-run followed by a restart.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::drops::{bank, claimed_files, drop_file, files_in, ledger_files, pg};
use common::server::{Server, wait_for};
use common::{Env, TestLedger, card, sha};
use settlegate::format::generate::LineEnding;

const WATCH: &str = "[watch]\nsettle_seconds = 0.5\nrescan_seconds = 2\n";

/// What each dropped data file should end as.
struct Expected {
    /// checksum → (partner, verdict)
    by_checksum: HashMap<String, (&'static str, &'static str)>,
    data_files: usize,
}

fn drop_thousand(env: &Env) -> Expected {
    let inbox = |p: &str| env.data.join("inbox").join(p);
    let mut by_checksum = HashMap::new();
    let mut data_files = 0;
    let mut put =
        |partner: &'static str, name: String, bytes: Vec<u8>, verdict: &'static str, i: usize| {
            drop_file(&inbox(partner), &name, &bytes, i.is_multiple_of(2));
            // Byte-identical copies keep the first expectation.
            by_checksum.entry(sha(&bytes)).or_insert((partner, verdict));
            data_files += 1;
        };
    // cardco: 500 files.
    for k in 0..350u64 {
        let f = card(k as u16 + 1, k * 10, 3);
        put("cardco", f.file_name(), f.render(), "fed", k as usize);
    }
    for k in 0..50u64 {
        // Same bytes as an earlier file, another name.
        let f = card(k as u16 + 1, k * 10, 3);
        put(
            "cardco",
            format!("COPY_{k}_{}", f.file_name()),
            f.render(),
            "duplicate",
            k as usize,
        );
        // Same data, other line endings and file sequence: same fingerprint.
        let mut g = card(k as u16 + 1, k * 10, 3);
        g.line_ending = LineEnding::Lf;
        g.file_seq = 5000 + k as u16;
        put(
            "cardco",
            g.file_name(),
            g.render(),
            "duplicate",
            k as usize + 1,
        );
    }
    for k in 0..25u64 {
        let mut f = card(6000 + k as u16, 100_000 + k * 10, 3);
        f.run_mode = 'D';
        put("cardco", f.file_name(), f.render(), "drill", k as usize);
        let mut bad = card(7000 + k as u16, 200_000 + k * 10, 3).render();
        bad[202 + 110] = b'X'; // a letter in the first record's fee_amount
        put(
            "cardco",
            format!("CSTL_031_20261121_{:04}.dat", 7000 + k),
            bad,
            "invalid",
            k as usize + 1,
        );
    }
    // bankco: 300 files.
    for k in 0..275u64 {
        let f = bank(k);
        put("bankco", f.file_name(), f.render(), "fed", k as usize);
    }
    for k in 0..25u64 {
        let f = bank(1000 + k);
        put(
            "bankco",
            f.file_name().replace(".dat", "_DRILL.dat"),
            f.render(),
            "drill",
            k as usize,
        );
    }
    // pgco: 100 data files; their control files arrive a second later.
    let mut controls = Vec::new();
    for k in 0..100u64 {
        let f = pg(k);
        let (csv, ctl) = f.render();
        put("pgco", f.file_name(), csv, "fed", k as usize);
        controls.push((f.control_name(), ctl));
    }
    std::thread::sleep(Duration::from_secs(1));
    for (i, (name, ctl)) in controls.into_iter().enumerate() {
        drop_file(&inbox("pgco"), &name, &ctl, i.is_multiple_of(2));
    }
    Expected {
        by_checksum,
        data_files,
    }
}

#[test]
fn a_thousand_drops_each_get_one_verdict() {
    let t = TestLedger::sqlite();
    let env = Env::new(&t, WATCH);
    let mut server = Server::start(&env);
    let expected = drop_thousand(&env);
    let inboxes = ["cardco", "bankco", "pgco"].map(|p| env.data.join("inbox").join(p));
    wait_for("the inboxes to empty", Duration::from_secs(300), || {
        inboxes.iter().all(|d| files_in(d).is_empty())
    });
    assert_eq!(server.stop(), 0, "clean exit on SIGTERM");

    // Every dropped data file got exactly one arrival and one verdict.
    let files = ledger_files(&env);
    assert_eq!(
        files.len(),
        expected.data_files,
        "one arrival per dropped data file"
    );
    let mut verdicts: HashMap<String, usize> = HashMap::new();
    for f in &files {
        let checksum = f["checksum"].as_str().unwrap_or("");
        let (partner, want) = expected
            .by_checksum
            .get(checksum)
            .unwrap_or_else(|| panic!("unexpected file {f}"));
        assert_eq!(f["partner"], *partner);
        assert_eq!(f["channel"], "watch");
        let verdict = f["verdict"].as_str().unwrap_or("").to_string();
        // A byte-identical copy is a duplicate of whichever copy came first.
        if *want != "duplicate" && verdict != "duplicate" {
            assert_eq!(verdict, *want, "{f}");
        }
        *verdicts.entry(verdict).or_default() += 1;
    }
    assert_eq!(
        verdicts.get("fed"),
        Some(&(350 + 275 + 100)),
        "{verdicts:?}"
    );
    assert_eq!(verdicts.get("duplicate"), Some(&100), "{verdicts:?}");
    assert_eq!(verdicts.get("drill"), Some(&50), "{verdicts:?}");
    assert_eq!(verdicts.get("invalid"), Some(&25), "{verdicts:?}");
    assert_eq!(verdicts.get("received"), None);

    // Nothing fed twice: the entries for 2026-11-21 are exactly the fed
    // card and PG files' records.
    let (_, intake) = env.json(&["intake", "--date", "2026-11-21", "--json"]);
    let entries: HashMap<String, u64> = intake
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["partner"].as_str().unwrap_or("").to_string(),
                r["entries"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(entries.get("cardco"), Some(&(350 * 3)));
    assert_eq!(entries.get("pgco"), Some(&(100 * 2)));

    // Every receipt is written and says what the ledger says.
    for f in &files {
        let partner = f["partner"].as_str().unwrap_or("");
        let name = f["name"].as_str().unwrap_or("");
        let receipt = env
            .data
            .join("receipts")
            .join(partner)
            .join(format!("{name}.verdict"));
        let text = std::fs::read_to_string(&receipt)
            .unwrap_or_else(|e| panic!("{}: {e}", receipt.display()));
        assert!(
            text.contains(&format!(
                "verdict={}\n",
                f["verdict"].as_str().unwrap_or("")
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "checksum={}\n",
                f["checksum"].as_str().unwrap_or("")
            )),
            "{text}"
        );
        assert!(text.contains(&format!("file_id={}\n", f["id"])), "{text}");
    }
    // The control files went with their data files.
    assert!(files_in(&env.data.join("inbox/pgco")).is_empty());
}

#[test]
fn a_slowly_written_file_is_taken_once_complete() {
    let t = TestLedger::sqlite();
    let env = Env::new(&t, "[watch]\nsettle_seconds = 2\nrescan_seconds = 1\n");
    let mut server = Server::start(&env);
    let f = card(1, 0, 400);
    let bytes = f.render();
    let path = env.data.join("inbox/cardco").join(f.file_name());
    let chunk = bytes.len().div_ceil(10);
    {
        use std::io::Write;
        let mut out = std::fs::File::create(&path).expect("create");
        for part in bytes.chunks(chunk) {
            out.write_all(part).expect("write");
            out.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Taken: claimed, recorded, judged and answered (the inbox ends empty).
    let inbox = env.data.join("inbox/cardco");
    wait_for("the file to be taken", Duration::from_secs(30), || {
        files_in(&inbox).is_empty()
    });
    assert_eq!(server.stop(), 0);
    let files = ledger_files(&env);
    assert_eq!(files.len(), 1, "taken once: {files:?}");
    assert_eq!(files[0]["verdict"], "fed", "{}", files[0]);
    assert_eq!(files[0]["records"], 400);
    assert_eq!(files[0]["checksum"].as_str(), Some(sha(&bytes).as_str()));
}

#[test]
fn kill_9_mid_run_loses_nothing_and_feeds_nothing_twice() {
    let t = TestLedger::sqlite();
    let env = Env::new(&t, WATCH);
    let mut server = Server::start(&env);
    let inbox = env.data.join("inbox/cardco");
    let mut dropped = HashMap::new();
    for k in 0..300u64 {
        let f = card(k as u16 + 1, k * 10, 3);
        let bytes = f.render();
        dropped.insert(f.file_name(), sha(&bytes));
        drop_file(&inbox, &f.file_name(), &bytes, k.is_multiple_of(2));
    }
    let receipts = env.data.join("receipts/cardco");
    wait_for("some files to be taken", Duration::from_secs(60), || {
        files_in(&receipts).len() >= 30
    });
    server.kill9();

    // At this moment every file is in the inbox, or staged in the ledger with its bytes in the store.
    // A claimed file (being taken when the kill came) is still in the inbox.
    let mut in_inbox: Vec<String> = files_in(&inbox);
    in_inbox.extend(claimed_files(&inbox));
    let files = ledger_files(&env);
    let in_ledger: HashMap<String, &serde_json::Value> = files
        .iter()
        .map(|f| (f["checksum"].as_str().unwrap_or("").to_string(), f))
        .collect();
    for (name, checksum) in &dropped {
        let staged = in_ledger.get(checksum);
        assert!(
            in_inbox.contains(name) || staged.is_some(),
            "{name} was lost"
        );
        if let Some(f) = staged {
            let store = env.data.join("store").join(&checksum[..2]).join(checksum);
            assert!(store.exists(), "{name}: bytes missing from the store ({f})");
        }
    }
    assert!(
        in_inbox.len() < dropped.len(),
        "the kill came after some files were taken"
    );

    // Restart: the rest is taken, anything left unjudged is judged.
    let mut server = Server::start(&env);
    wait_for("the inbox to empty", Duration::from_secs(120), || {
        files_in(&inbox).is_empty()
    });
    assert_eq!(server.stop(), 0);
    let files = ledger_files(&env);
    let mut fed = HashMap::new();
    for f in &files {
        let verdict = f["verdict"].as_str().unwrap_or("");
        assert!(verdict == "fed" || verdict == "duplicate", "{f}");
        if verdict == "fed" {
            *fed.entry(f["checksum"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    // Each dropped file fed exactly once; a file re-taken after the crash is a duplicate.
    for (name, checksum) in &dropped {
        assert_eq!(fed.get(checksum), Some(&1), "{name}");
    }
    let (_, intake) = env.json(&["intake", "--date", "2026-11-21", "--json"]);
    assert_eq!(
        intake[0]["entries"].as_u64(),
        Some(300 * 3),
        "no record fed twice"
    );
}

/// A partner's inbox vanishing is logged and repaired; the other partners
/// are served meanwhile, and the first is served again once it is back.
#[test]
fn a_missing_inbox_does_not_stop_the_others() {
    let t = TestLedger::sqlite();
    let env = Env::new(&t, WATCH);
    let mut server = Server::start(&env);
    let cardco = env.data.join("inbox/cardco");
    std::fs::remove_dir_all(&cardco).expect("remove inbox");
    let f = bank(1);
    drop_file(
        &env.data.join("inbox/bankco"),
        &f.file_name(),
        &f.render(),
        true,
    );
    wait_for("bankco's file to be taken", Duration::from_secs(30), || {
        files_in(&env.data.join("inbox/bankco")).is_empty()
    });
    wait_for(
        "cardco's inbox to be recreated",
        Duration::from_secs(30),
        || cardco.is_dir(),
    );
    let c = card(1, 0, 3);
    drop_file(&cardco, &c.file_name(), &c.render(), false);
    wait_for("cardco's file to be taken", Duration::from_secs(30), || {
        files_in(&cardco).is_empty()
    });
    assert_eq!(server.stop(), 0);
    assert!(
        server.log_text().contains("inbox unreadable"),
        "the fault was logged"
    );
    let verdicts: Vec<String> = ledger_files(&env)
        .iter()
        .map(|f| f["verdict"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(verdicts, ["fed", "fed"]);
}

/// A full disk: the file that cannot be stored is logged by name, stays in
/// its inbox and is retried; other partners keep being served. Needs a small
/// tmpfs for the data dir (root).
#[test]
fn a_full_disk_leaves_the_file_in_place_and_others_are_served() {
    let t = TestLedger::sqlite();
    let mut env = Env::new(&t, WATCH);
    let small = env.path("small-data");
    std::fs::create_dir_all(&small).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    // cardco's inbox lives on the big disk, the store and ledger on the small one.
    let big_inbox = env.path("cardco-inbox");
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text = text.replacen(
        "id = \"cardco\"",
        &format!(
            "id = \"cardco\"\ninbox = {:?}",
            big_inbox.display().to_string()
        ),
        1,
    );
    std::fs::write(&env.config, text).expect("config");
    env.data = small.clone();
    let mut server = Server::start(&env);
    let big = card(1, 0, 12_000); // about 2.4 MB: more than the small disk holds
    drop_file(&big_inbox, &big.file_name(), &big.render(), true);
    let b = bank(7);
    drop_file(
        &small.join("inbox/bankco"),
        &b.file_name(),
        &b.render(),
        true,
    );
    // Both files may meet the full disk (bankco's is retried and then fits):
    // wait for the lines about the file each assertion is about.
    let about_big =
        |l: &&str| l.contains("No space left on device") && l.contains(&big.file_name());
    wait_for("bankco's file to be taken", Duration::from_secs(60), || {
        server
            .log_text()
            .lines()
            .any(|l| l.contains("taken from inbox") && l.contains(&b.file_name()))
    });
    wait_for(
        "the full disk to be logged for the big file",
        Duration::from_secs(30),
        || server.log_text().lines().any(|l| about_big(&l)),
    );
    assert_eq!(server.stop(), 0);
    let log = server.log_text();
    let line = log.lines().find(about_big).expect("error line");
    assert!(
        line.contains(&big.file_name()) && line.contains("retried"),
        "{line}"
    );
    assert!(
        claimed_files(&big_inbox).contains(&big.file_name()),
        "the file stays in its inbox (claimed, waiting for its retry)"
    );
    let files = ledger_files(&env);
    assert_eq!(files.len(), 1, "only bankco's file was recorded: {files:?}");
    assert_eq!(files[0]["partner"], "bankco");
    assert!(
        files_in(&small.join("store/tmp")).is_empty(),
        "no partial file left behind"
    );
}

/// With the safety-net rescan far away, a file-system event alone gets a
/// dropped file taken — also when the data dir is given as a relative path.
#[test]
fn file_system_events_wake_the_inbox() {
    let t = TestLedger::sqlite();
    let env = Env::new(&t, "[watch]\nsettle_seconds = 0.5\nrescan_seconds = 600\n");
    let mut server = Server::start_in(&env, Some(env.dir.path()));
    // The start-up scan is over; from now on only events wake the scanner.
    std::thread::sleep(Duration::from_millis(500));
    let f = card(1, 0, 3);
    let inbox = env.data.join("inbox/cardco");
    drop_file(&inbox, &f.file_name(), &f.render(), true);
    wait_for(
        "the event to get the file taken",
        Duration::from_secs(15),
        || files_in(&inbox).is_empty(),
    );
    assert_eq!(server.stop(), 0);
    assert_eq!(ledger_files(&env).len(), 1);
}

/// A file claimed by a run that stopped mid-way is taken at the next start,
/// and a new file dropped under the same name meanwhile is not confused with
/// it: both are judged, one after the other.
#[test]
fn claimed_files_survive_a_restart_and_same_names_wait_their_turn() {
    let t = TestLedger::sqlite();
    let env = Env::new(&t, WATCH);
    let inbox = env.data.join("inbox/cardco");
    let claimed = inbox.join(".taking");
    std::fs::create_dir_all(&claimed).expect("mkdir");
    let first = card(1, 0, 3);
    let mut second = card(1, 0, 3);
    second.records[0].sales += 1; // same name, other content
    std::fs::write(claimed.join(first.file_name()), first.render()).expect("write");
    std::fs::write(inbox.join(second.file_name()), second.render()).expect("write");
    let mut server = Server::start(&env);
    wait_for("both files to be taken", Duration::from_secs(30), || {
        files_in(&inbox).iter().all(|n| n == ".taking") && files_in(&claimed).is_empty()
    });
    assert_eq!(server.stop(), 0);
    let files = ledger_files(&env);
    let checksums: Vec<&str> = files
        .iter()
        .map(|f| f["checksum"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        checksums,
        [sha(&first.render()), sha(&second.render())],
        "the claimed one first, then the new one"
    );
    let verdicts: Vec<&str> = files
        .iter()
        .map(|f| f["verdict"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(verdicts, ["fed", "conflict"]);
}
