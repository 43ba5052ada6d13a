//! SFTP pickup against a real OpenSSH `sshd` started by the test on a free
//! loopback port (tests/common/sshd.rs), through the built binary.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::server::{Server, wait_for};
use common::sshd::{Sshd, keygen};
use common::{Env, TestLedger, card, sha};
use settlegate::format::generate::CardFile;

/// Put a card file on the remote side; returns its name and checksum.
fn put(dir: &Path, f: &CardFile) -> (String, String) {
    let bytes = f.render();
    std::fs::write(dir.join(f.file_name()), &bytes).expect("write remote file");
    (f.file_name(), sha(&bytes))
}

/// One `[[partners.endpoints]]` block for `sshd`, key auth, pinned by
/// fingerprint unless `extra` pins otherwise.
fn endpoint(sshd: &Sshd, name: &str, remote: &Path, extra: &str) -> String {
    let pin = if extra.contains("known_hosts") || extra.contains("host_key") {
        String::new()
    } else {
        format!("host_key = {:?}\n", sshd.fingerprint())
    };
    let key = if extra.contains("key_file") {
        String::new()
    } else {
        format!("key_file = {:?}\n", sshd.client_key.display().to_string())
    };
    format!(
        "[[partners.endpoints]]\nname = {name:?}\nhost = \"127.0.0.1\"\nport = {}\nuser = {:?}\n{key}{pin}remote_dir = {:?}\nstable_seconds = 0\nretry_initial_seconds = 0.2\n{extra}\n",
        sshd.port,
        sshd.user,
        remote.display().to_string()
    )
}

/// A partner `cardpull` (card-settlement) with the given endpoint blocks.
fn env(ledger: &TestLedger, endpoints: &str) -> Env {
    Env::new(
        ledger,
        &format!(
            "[[partners]]\nid = \"cardpull\"\nformats = [\"card-settlement\"]\ndrill_name_patterns = [\"(?i)drill\"]\n{endpoints}"
        ),
    )
}

fn pull(env: &Env, extra: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut args = vec!["pull", "--partner", "cardpull", "--json"];
    args.extend_from_slice(extra);
    let (code, v) = env.json(&args);
    (
        code,
        v.as_array().cloned().expect("array of endpoint reports"),
    )
}

fn verdicts(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["taken"]
        .as_array()
        .expect("taken")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or("?").to_string(),
                t["verdict"].as_str().unwrap_or("unjudged").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A modification time seconds ahead: SFTP v3 reports whole seconds.
fn touch_later(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
}

fn store_tmp_is_empty(env: &Env) -> bool {
    names_in(&env.data.join("store").join("tmp")).is_empty()
}

#[tokio::test]
async fn key_auth_pulls_archives_and_does_not_take_twice() {
    let sshd = Sshd::start();
    for ledger in TestLedger::all().await {
        let remote = sshd.remote_dir(&format!("outbox-{}", ledger.backend));
        let (a, a_sum) = put(&remote, &card(1, 0, 3));
        let (b, _) = put(&remote, &card(2, 100, 2));
        // Not matching the glob: left alone.
        std::fs::write(remote.join("README.txt"), b"not a settlement file").unwrap();
        let env = env(
            &ledger,
            &endpoint(&sshd, "primary", &remote, "glob = \"CSTL_*.dat\"\n"),
        );
        let (code, reports) = pull(&env, &[]);
        assert_eq!(code, 0, "{reports:?}");
        let r = &reports[0];
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(
            verdicts(r),
            vec![(a.clone(), "fed".into()), (b.clone(), "fed".into())]
        );
        let t = r["taken"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == a.as_str())
            .unwrap();
        assert_eq!(t["checksum"], a_sum.as_str());
        // Archived only after being recorded; the rest stays.
        assert_eq!(names_in(&remote), vec!["README.txt", "archive"]);
        assert_eq!(
            names_in(&remote.join("archive")),
            vec![a.clone(), b.clone()]
        );
        // Receipts, and the ledger knows the endpoint and the remote path.
        assert!(
            env.data
                .join("receipts/cardpull")
                .join(format!("{a}.verdict"))
                .exists()
        );
        let (_, files) = env.json(&["files", "--json"]);
        let f = files
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == a.as_str())
            .unwrap()
            .clone();
        assert_eq!(f["channel"], "sftp-pull");
        assert_eq!(f["endpoint"], "primary");
        assert!(
            f["source_path"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{a}")),
            "{f}"
        );
        // The partner re-publishes the same file: taken, judged a duplicate.
        std::fs::copy(remote.join("archive").join(&a), remote.join(&a)).unwrap();
        touch_later(&remote.join(&a));
        let (code, reports) = pull(&env, &[]);
        assert_eq!(code, 0);
        assert_eq!(verdicts(&reports[0]), vec![(a.clone(), "duplicate".into())]);
        // Archived again over the earlier copy (posix-rename replaces).
        assert_eq!(
            reports[0]["taken"][0]["after_pickup_error"],
            serde_json::Value::Null
        );
        assert_eq!(names_in(&remote), vec!["README.txt", "archive"]);
        // Nothing new: nothing taken.
        let (_, reports) = pull(&env, &[]);
        assert!(reports[0]["taken"].as_array().unwrap().is_empty());
        assert!(store_tmp_is_empty(&env));
        ledger.drop_db().await;
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    put(&remote, &card(1, 0, 1));
    let other = sshd.dir.path().join("stranger_key");
    keygen(&other);
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(
            &sshd,
            "primary",
            &remote,
            &format!("key_file = {:?}\n", other.display().to_string()),
        ),
    );
    let out = env.run(&["pull", "--partner", "cardpull"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("refused"), "{out:?}");
    // Not retried: a refused login is not a network problem.
    assert!(!out.stderr.contains("retrying"), "{out:?}");
    assert_eq!(names_in(&remote).len(), 1);
}

#[tokio::test]
async fn a_file_over_the_size_limit_is_reported_and_left_alone() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let (small, _) = put(&remote, &card(1, 0, 1));
    let (big, _) = put(&remote, &card(2, 10, 40));
    let limit = std::fs::metadata(remote.join(&small)).unwrap().len();
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(
            &sshd,
            "primary",
            &remote,
            &format!("max_file_bytes = {limit}\n"),
        ),
    );
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let taken = reports[0]["taken"].as_array().unwrap();
    let by_name = |n: &str| taken.iter().find(|t| t["name"] == n).unwrap().clone();
    assert_eq!(by_name(&small)["verdict"], "fed");
    let refused = by_name(&big);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("max_file_bytes"),
        "{refused}"
    );
    assert_eq!(names_in(&remote), vec![big, "archive".to_string()]);
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(
        files.as_array().unwrap().len(),
        1,
        "nothing recorded for the big file"
    );
}

/// RSA keys sign with SHA-2 (rsa-sha2-512/256): OpenSSH refuses plain ssh-rsa.
#[tokio::test]
async fn an_rsa_key_logs_in() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let (name, _) = put(&remote, &card(1, 0, 1));
    let rsa = sshd.dir.path().join("rsa_key");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut authorized = std::fs::read_to_string(sshd.dir.path().join("authorized_keys")).unwrap();
    authorized.push_str(&std::fs::read_to_string(rsa.with_extension("pub")).unwrap());
    std::fs::write(sshd.dir.path().join("authorized_keys"), authorized).unwrap();
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(
            &sshd,
            "primary",
            &remote,
            &format!("key_file = {:?}\n", rsa.display().to_string()),
        ),
    );
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(verdicts(&reports[0]), vec![(name, "fed".into())]);
}

#[tokio::test]
async fn unknown_and_changed_host_keys_are_refused() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let (name, _) = put(&remote, &card(1, 0, 1));
    let offered = sshd.fingerprint();
    let kh = sshd.dir.path().join("known_hosts");
    let env = env_with_known_hosts(&sshd, &remote, &kh, "");

    // Unknown: nothing recorded for the host.
    let out = env.run(&["pull", "--partner", "cardpull"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stdout.contains(&offered),
        "shows the offered key: {out:?}"
    );
    assert!(out.stdout.contains("does not know"), "{out:?}");
    assert!(!kh.exists(), "no trust on first use unless configured");

    // Changed: another key is pinned for this host and port.
    let impostor = sshd.dir.path().join("impostor");
    keygen(&impostor);
    std::fs::write(&kh, sshd.known_hosts_line(&impostor.with_extension("pub"))).unwrap();
    let out = env.run(&["pull", "--partner", "cardpull"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("HOST KEY CHANGED"), "{out:?}");
    assert!(out.stdout.contains(&offered), "{out:?}");

    // A wrong fingerprint pin is a changed key too.
    let wrong = env_with_pin(
        &sshd,
        &remote,
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let out = wrong.run(&["pull", "--partner", "cardpull"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("HOST KEY CHANGED"), "{out:?}");
    assert_eq!(names_in(&remote), vec![name.clone()], "nothing taken");

    // The right key in known_hosts: accepted.
    std::fs::write(&kh, sshd.known_hosts_line(&sshd.host_key_pub)).unwrap();
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(verdicts(&reports[0]), vec![(name, "fed".into())]);
}

/// An after-pickup action that keeps failing (here the archive directory
/// cannot be made: a file stands in its way) does not add a duplicate
/// arrival on every pickup: the same bytes are recognised and only the
/// action is retried, until it succeeds. A changed file under the same name
/// is still taken as a new arrival.
#[tokio::test]
async fn a_failing_archive_is_retried_without_recording_the_file_again() {
    let sshd = Sshd::start();
    for ledger in TestLedger::all().await {
        failing_archive(&sshd, ledger).await;
    }
}

async fn failing_archive(sshd: &Sshd, ledger: TestLedger) {
    let remote = sshd.remote_dir(&format!("outbox-{}", ledger.backend));
    let blocker = sshd.dir.path().join(format!("blocker-{}", ledger.backend));
    std::fs::write(&blocker, b"not a directory").unwrap();
    let archive = blocker.join("archive");
    let env = env(
        &ledger,
        &endpoint(
            sshd,
            "primary",
            &remote,
            &format!("archive_dir = {:?}\n", archive.display().to_string()),
        ),
    );
    let (name, sum) = put(&remote, &card(1, 0, 2));
    let (code, first) = pull(&env, &[]);
    assert_eq!(code, 0, "{first:?}");
    let t = &first[0]["taken"][0];
    assert_eq!(t["verdict"], "fed", "{t}");
    assert!(t["after_pickup_error"].is_string(), "{t}");
    let id = t["file_id"].clone();

    for _ in 0..2 {
        let (code, again) = pull(&env, &[]);
        assert_eq!(code, 0, "{again:?}");
        let t = &again[0]["taken"][0];
        assert_eq!(t["already_taken"], id, "{t}");
        assert!(t["after_pickup_error"].is_string(), "{t}");
    }
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(files.as_array().unwrap().len(), 1, "recorded once: {files}");

    // A corrected file under the same name: a new arrival (a conflict with
    // the one fed), whatever became of the archive.
    let mut corrected = card(1, 0, 2);
    corrected.records[0].sales += 1000;
    let bytes = corrected.render();
    std::fs::write(remote.join(&name), &bytes).unwrap();
    let (_, third) = pull(&env, &[]);
    let t = &third[0]["taken"][0];
    assert_eq!(t["already_taken"], serde_json::Value::Null, "{t}");
    assert_eq!(t["checksum"], sha(&bytes).as_str(), "{t}");
    assert_ne!(t["checksum"], sum.as_str());

    // The way cleared (the partner's side made the parent directory):
    // archived, still not recorded again.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    let (_, last) = pull(&env, &[]);
    let t = &last[0]["taken"][0];
    assert!(t["already_taken"].is_i64(), "{t}");
    assert_eq!(t["after_pickup_error"], serde_json::Value::Null, "{t}");
    assert_eq!(names_in(&archive), vec![name]);
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(
        files.as_array().unwrap().len(),
        2,
        "{}: {files}",
        ledger.backend
    );
    ledger.drop_db().await;
}

/// A server with several host keys proves itself with a pinned one: when
/// known_hosts pins only its RSA key, the connection asks for RSA rather than
/// the ed25519 key russh prefers (which would look like a changed key), and
/// the other way round.
#[tokio::test]
async fn the_pinned_key_type_is_asked_for() {
    let sshd = Sshd::start_with_rsa_host_key();
    let remote = sshd.remote_dir("outbox");
    let kh = sshd.dir.path().join("known_hosts");
    let env = env_with_known_hosts(&sshd, &remote, &kh, "");
    let rsa = sshd.rsa_host_key_pub.clone().expect("rsa host key");
    for (seq, pinned) in [(1, rsa), (2, sshd.host_key_pub.clone())] {
        let (name, _) = put(&remote, &card(seq, u64::from(seq) * 10, 1));
        std::fs::write(&kh, sshd.known_hosts_line(&pinned)).unwrap();
        let (code, reports) = pull(&env, &[]);
        assert_eq!(code, 0, "{}: {reports:?}", pinned.display());
        assert_eq!(verdicts(&reports[0]), vec![(name, "fed".into())]);
    }
}

/// An endpoint pinned by the known_hosts file `kh`.
fn env_with_known_hosts(sshd: &Sshd, remote: &Path, kh: &Path, extra: &str) -> Env {
    let pin = format!("known_hosts = {:?}\n{extra}", kh.display().to_string());
    env(
        &TestLedger::sqlite(),
        &endpoint(sshd, "primary", remote, &pin),
    )
}

fn env_with_pin(sshd: &Sshd, remote: &Path, pin: &str) -> Env {
    env(
        &TestLedger::sqlite(),
        &endpoint(sshd, "primary", remote, &format!("host_key = {pin:?}\n")),
    )
}

#[tokio::test]
async fn trust_on_first_use_records_the_key_only_when_configured() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let (name, _) = put(&remote, &card(1, 0, 1));
    let kh = sshd.dir.path().join("tofu_known_hosts");
    let env = env_with_known_hosts(&sshd, &remote, &kh, "trust_on_first_use = true\n");
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(verdicts(&reports[0]), vec![(name, "fed".into())]);
    let recorded = std::fs::read_to_string(&kh).unwrap();
    let host_key = std::fs::read_to_string(&sshd.host_key_pub).unwrap();
    let b64 = host_key.split_whitespace().nth(1).unwrap();
    assert!(recorded.contains(b64), "{recorded}");
    // From now on the recorded key is the pin: a changed one is refused.
    let impostor = sshd.dir.path().join("impostor");
    keygen(&impostor);
    std::fs::write(&kh, sshd.known_hosts_line(&impostor.with_extension("pub"))).unwrap();
    let out = env.run(&["pull", "--partner", "cardpull"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("HOST KEY CHANGED"), "{out:?}");
}

#[tokio::test]
async fn done_marker_rule_and_delete() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let (a, _) = put(&remote, &card(1, 0, 2));
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(
            &sshd,
            "primary",
            &remote,
            "done_suffix = \".done\"\nafter_pickup = \"delete\"\n",
        )
        .replace("stable_seconds = 0\n", ""),
    );
    // No marker yet: waiting.
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    assert!(reports[0]["taken"].as_array().unwrap().is_empty());
    assert_eq!(reports[0]["waiting"], serde_json::json!([a.clone()]));
    std::fs::write(remote.join(format!("{a}.done")), b"").unwrap();
    let (_, reports) = pull(&env, &[]);
    assert_eq!(verdicts(&reports[0]), vec![(a, "fed".into())]);
    // Deleted, marker included.
    assert!(names_in(&remote).is_empty(), "{:?}", names_in(&remote));
}

#[tokio::test]
async fn a_file_still_growing_is_not_taken() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let f = card(1, 0, 40);
    let bytes = f.render();
    let path = remote.join(f.file_name());
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(&sshd, "primary", &remote, "")
            .replace("stable_seconds = 0\n", "stable_seconds = 1\n"),
    );
    // The partner's side writes slowly, a record every 100 ms, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path, bytes) = (stop.clone(), path.clone(), bytes.clone());
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(&path).unwrap();
            for chunk in bytes.chunks(200).cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                out.write_all(chunk).unwrap();
                out.flush().unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (code, reports) = pull(&env, &[]);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(code, 0, "{reports:?}");
    assert!(
        reports[0]["taken"].as_array().unwrap().is_empty(),
        "{reports:?}"
    );
    assert_eq!(reports[0]["waiting"], serde_json::json!([f.file_name()]));
    // Finished: taken on the next pickup.
    std::fs::write(&path, &bytes).unwrap();
    let (_, reports) = pull(&env, &[]);
    assert_eq!(verdicts(&reports[0]), vec![(f.file_name(), "fed".into())]);
}

#[tokio::test]
async fn leave_remembers_the_remote_file_and_takes_a_changed_one() {
    let sshd = Sshd::start();
    for ledger in TestLedger::all().await {
        let remote = sshd.remote_dir(&format!("leave-{}", ledger.backend));
        let (a, _) = put(&remote, &card(1, 0, 2));
        let env = env(
            &ledger,
            &endpoint(&sshd, "primary", &remote, "after_pickup = \"leave\"\n"),
        );
        let (_, reports) = pull(&env, &[]);
        assert_eq!(verdicts(&reports[0]), vec![(a.clone(), "fed".into())]);
        assert_eq!(names_in(&remote), vec![a.clone()], "left in place");
        // Same path, size and mtime: not downloaded again.
        let (_, reports) = pull(&env, &[]);
        assert!(
            reports[0]["taken"].as_array().unwrap().is_empty(),
            "{reports:?}"
        );
        // The partner rewrites it (new content, same name): taken again.
        let mut changed = card(1, 0, 2);
        changed.records[0].sales += 1;
        std::fs::write(remote.join(&a), changed.render()).unwrap();
        touch_later(&remote.join(&a));
        let (_, reports) = pull(&env, &[]);
        assert_eq!(verdicts(&reports[0]), vec![(a.clone(), "conflict".into())]);
        ledger.drop_db().await;
    }
}

#[tokio::test]
async fn a_dr_endpoints_files_are_drills_and_one_failing_endpoint_stops_no_other() {
    let sshd = Sshd::start();
    let primary = sshd.remote_dir("primary");
    let dr = sshd.remote_dir("dr");
    let (a, _) = put(&primary, &card(1, 0, 2));
    // The DR site publishes the same day's file (a drill copy).
    let (b, _) = put(&dr, &card(2, 50, 2));
    // An endpoint nobody listens on, not retried, listed first.
    let broken = endpoint(&sshd, "old", &primary, "retries = 0\n")
        .replace(&format!("port = {}", sshd.port), "port = 1");
    let env = env(
        &TestLedger::sqlite(),
        &format!(
            "{broken}{}{}",
            endpoint(&sshd, "primary", &primary, ""),
            endpoint(&sshd, "dr", &dr, "drill_site = true\n"),
        ),
    );
    let (code, reports) = pull(&env, &[]);
    assert_eq!(
        code, 4,
        "the unreachable endpoint makes the exit non-zero: {reports:?}"
    );
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0]["endpoint"], "old");
    assert_eq!(reports[0]["ok"], false);
    assert_eq!(verdicts(&reports[1]), vec![(a, "fed".into())]);
    assert_eq!(verdicts(&reports[2]), vec![(b.clone(), "drill".into())]);
    let reason = reports[2]["taken"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("dr"), "{reason}");
    // One endpoint at a time.
    let (code, reports) = pull(&env, &["--endpoint", "dr"]);
    assert_eq!(code, 0);
    assert_eq!(reports.len(), 1);
}

/// A partner's DR site replays the very same file during a drill: its copy
/// is quarantined as a drill, and the production endpoint's copy of the same
/// bytes is then fed (the drill copy's `show` names it); a re-send with a new
/// stamp, and the same bytes once more, are duplicates of the fed file.
#[tokio::test]
async fn a_dr_sites_byte_identical_copy_does_not_block_the_production_file() {
    for ledger in TestLedger::all().await {
        dr_twin(ledger).await;
    }
}

async fn dr_twin(ledger: TestLedger) {
    let sshd = Sshd::start();
    let primary = sshd.remote_dir("primary");
    let dr = sshd.remote_dir("dr");
    let day = card(1, 0, 3);
    let env = env(
        &ledger,
        &format!(
            "{}{}",
            endpoint(&sshd, "primary", &primary, ""),
            endpoint(&sshd, "dr", &dr, "drill_site = true\n"),
        ),
    );
    let (name, sum) = put(&dr, &day);
    let (code, reports) = pull(&env, &["--endpoint", "dr"]);
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(verdicts(&reports[0]), vec![(name.clone(), "drill".into())]);
    let drill_id = reports[0]["taken"][0]["file_id"].as_i64().expect("id");

    // The production endpoint delivers the very same bytes.
    assert_eq!(put(&primary, &day).1, sum);
    let (code, reports) = pull(&env, &["--endpoint", "primary"]);
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(
        verdicts(&reports[0]),
        vec![(name.clone(), "fed".into())],
        "{} {reports:?}",
        ledger.backend
    );
    let fed_id = reports[0]["taken"][0]["file_id"].as_i64().expect("id");
    let (_, shown) = env.json(&["show", &drill_id.to_string(), "--json"]);
    assert_eq!(shown["verdict"], "drill");
    assert_eq!(shown["fed_copy_file_id"], fed_id, "{shown}");
    let text = env.run(&["show", &drill_id.to_string()]).stdout;
    assert!(
        text.contains(&format!("same bytes fed as file {fed_id}")),
        "{text}"
    );

    // The same day with a new stamp (same fingerprint, other bytes), and the
    // same bytes once more: duplicates of the fed file.
    let mut restamped = day.clone();
    restamped.created_at += chrono::Duration::hours(3);
    put(&primary, &restamped);
    let (_, reports) = pull(&env, &["--endpoint", "primary"]);
    assert_eq!(
        verdicts(&reports[0]),
        vec![(name.clone(), "duplicate".into())]
    );
    assert_eq!(reports[0]["taken"][0]["related_file_id"], fed_id);
    // (republished later: same path and size, a new modification time)
    put(&primary, &day);
    touch_later(&primary.join(&name));
    let (_, reports) = pull(&env, &["--endpoint", "primary"]);
    assert_eq!(
        verdicts(&reports[0]),
        vec![(name.clone(), "duplicate".into())]
    );
    assert_eq!(reports[0]["taken"][0]["related_file_id"], fed_id);
    ledger.drop_db().await;
}

#[tokio::test]
async fn two_hundred_files_in_one_pickup() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let mut sums = std::collections::BTreeMap::new();
    for i in 0..200u16 {
        let (n, s) = put(&remote, &card(i + 1, u64::from(i) * 10, 2));
        sums.insert(n, s);
    }
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(&sshd, "primary", &remote, ""),
    );
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0);
    let taken = reports[0]["taken"].as_array().unwrap();
    assert_eq!(taken.len(), 200);
    for t in taken {
        assert_eq!(t["verdict"], "fed", "{t}");
        assert_eq!(
            t["checksum"].as_str(),
            sums.get(t["name"].as_str().unwrap()).map(String::as_str)
        );
    }
    assert_eq!(names_in(&remote.join("archive")).len(), 200);
}

/// Several files are downloaded at once, yet recorded and judged in
/// listing order, each once: the large file listed first finishes its
/// download after the small ones behind it and is still recorded first.
#[tokio::test]
async fn files_downloaded_together_are_recorded_once_in_listing_order() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let mut sums = std::collections::BTreeMap::new();
    // Listed first (names sort by sequence number): 24 MiB of random bytes.
    let first = "CSTL_031_20261121_0001.dat".to_string();
    sums.insert(first.clone(), random_file(&remote.join(&first), 24 << 20));
    for i in 1..40u16 {
        let (n, s) = put(&remote, &card(i + 1, u64::from(i) * 10, 2));
        sums.insert(n, s);
    }
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(&sshd, "primary", &remote, ""),
    );
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let taken = reports[0]["taken"].as_array().unwrap();
    let names: Vec<&str> = taken.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, sums.keys().map(String::as_str).collect::<Vec<_>>());
    for t in taken {
        assert_eq!(
            t["checksum"].as_str(),
            sums.get(t["name"].as_str().unwrap()).map(String::as_str),
            "{t}"
        );
    }
    assert_eq!(taken[0]["verdict"], "invalid", "{}", taken[0]);
    for t in &taken[1..] {
        assert_eq!(t["verdict"], "fed", "{t}");
    }
    // Recorded in listing order: the file ids rise with it.
    let ids: Vec<i64> = taken
        .iter()
        .map(|t| t["file_id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Each recorded once; nothing left half-written in the store.
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(files.as_array().map(Vec::len), Some(40), "{files}");
    assert!(store_tmp_is_empty(&env));
    assert_eq!(names_in(&remote.join("archive")).len(), 40);
}

/// Bytes the server sent the client through [`CuttingProxy`] before the
/// first connection is cut.
const CUT_AFTER: usize = 8 << 20;

/// A TCP proxy in front of sshd. It can cut the first connection once
/// `cut_after` bytes went from the server to the client (later connections
/// pass through), and hold the server-to-client direction to `rate` bytes a
/// second.
struct Proxy {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    fn cutting(upstream: u16) -> Proxy {
        Proxy::start(upstream, Some(CUT_AFTER), None)
    }

    fn throttled(upstream: u16, rate: u64) -> Proxy {
        Proxy::start(upstream, None, Some(rate))
    }

    fn start(upstream: u16, cut_after: Option<usize>, rate: Option<u64>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let limit = cut_after.filter(|_| n == 0).unwrap_or(usize::MAX);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, usize::MAX, None));
                std::thread::spawn(move || pump(server, client, limit, rate));
            }
        });
        Proxy { port, connections }
    }
}

/// An endpoint block that connects through `proxy` instead of to sshd.
fn through(proxy: &Proxy, sshd: &Sshd, endpoint: String) -> String {
    endpoint.replace(
        &format!("port = {}", sshd.port),
        &format!("port = {}", proxy.port),
    )
}

fn pump(mut from: TcpStream, mut to: TcpStream, limit: usize, rate: Option<u64>) {
    // Small pieces when throttled, so the rate holds over short spans too.
    let mut buf = vec![0u8; if rate.is_some() { 4 << 10 } else { 64 << 10 }];
    let started = std::time::Instant::now();
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if sent >= limit {
            break;
        }
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn random_file(path: &PathBuf, bytes: u64) -> String {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {bytes} /dev/urandom > '{}'",
            path.display()
        ))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_connection_cut_mid_file_is_retried_and_no_partial_file_is_judged() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let name = card(1, 0, 1).file_name();
    let sum = random_file(&remote.join(&name), 64 << 20);
    let proxy = Proxy::cutting(sshd.port);
    let ep = through(
        &proxy,
        &sshd,
        endpoint(&sshd, "primary", &remote, "retries = 3\n"),
    );
    let env = env(&TestLedger::sqlite(), &ep);
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["attempts"], 2, "{r}");
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2);
    let taken = r["taken"].as_array().unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0]["checksum"], sum.as_str());
    // Random bytes are not a card file: quarantined, but whole.
    assert_eq!(taken[0]["verdict"], "invalid");
    // Exactly one arrival recorded, and no partial bytes left in the store.
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(files.as_array().unwrap().len(), 1, "{files}");
    assert!(store_tmp_is_empty(&env));
}

/// A slow link and a short I/O timeout: 1.5 MiB at 200 KB/s with every read
/// to be answered within 3 s. Sending all the file's reads at once would
/// leave the last waiting 8 s behind the others; the reads in flight are
/// sized to what the link carries (one 255 KiB read takes 1.3 s), so the
/// file arrives on the first try.
#[tokio::test]
async fn a_slow_link_does_not_time_out_the_reads() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let name = card(1, 0, 1).file_name();
    let sum = random_file(&remote.join(&name), 3 << 19);
    let proxy = Proxy::throttled(sshd.port, 200_000);
    let ep = through(
        &proxy,
        &sshd,
        endpoint(
            &sshd,
            "primary",
            &remote,
            "retries = 0\nio_timeout_seconds = 3\nconnect_timeout_seconds = 30\n",
        ),
    );
    let env = env(&TestLedger::sqlite(), &ep);
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["attempts"], 1, "{r}");
    let taken = r["taken"].as_array().unwrap();
    assert_eq!(taken.len(), 1, "{r}");
    assert_eq!(taken[0]["checksum"], sum.as_str());
}

#[tokio::test]
async fn a_one_gib_file_arrives_whole() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let name = card(1, 0, 1).file_name();
    let sum = random_file(&remote.join(&name), 1 << 30);
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(&sshd, "primary", &remote, ""),
    );
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let taken = reports[0]["taken"].as_array().unwrap();
    assert_eq!(taken[0]["checksum"], sum.as_str());
    let (_, f) = env.json(&["show", &taken[0]["file_id"].to_string(), "--json"]);
    assert_eq!(f["size"], 1u64 << 30);
    assert!(store_tmp_is_empty(&env));
}

/// The sample configuration's commented endpoint example is valid: with the
/// comment marks removed it loads, and `pull` names what is missing.
#[test]
fn the_sample_documents_a_pull_endpoint() {
    let sample = std::fs::read_to_string(common::root().join("settlegate.toml")).unwrap();
    let start = sample
        .find("# [[partners.endpoints]]")
        .expect("example endpoint");
    let end = start
        + sample[start..]
            .find("\n\n[[partners]]")
            .expect("end of example");
    let example: String = sample[start..end]
        .lines()
        .filter(|l| !l.starts_with("# # ") && l.trim() != "#")
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        example.contains("schedule = \"0 */10 * * * *\""),
        "{example}"
    );
    let env = env(&TestLedger::sqlite(), &example);
    let out = env.run(&["pull", "--partner", "cardpull", "--endpoint", "primary"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("CARDCO_KEY_PASSPHRASE"), "{out:?}");
    // The pieces an operator needs are documented.
    for key in [
        "known_hosts",
        "host_key",
        "trust_on_first_use",
        "done_suffix",
        "stable_seconds",
        "after_pickup",
        "archive_dir",
        "drill_site",
        "password_env",
        "retries",
        "max_file_bytes",
    ] {
        assert!(sample.contains(key), "{key} undocumented");
    }
}

/// `serve` runs each endpoint's schedule: a file published on the server is
/// pulled and fed without anyone asking, and SIGTERM stops the gateway.
#[test]
fn serve_pulls_on_schedule() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let (a, _) = put(&remote, &card(1, 0, 2));
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(&sshd, "primary", &remote, "schedule = \"* * * * * *\"\n"),
    );
    let mut server = Server::start(&env);
    let receipt = env
        .data
        .join("receipts/cardpull")
        .join(format!("{a}.verdict"));
    wait_for("the receipt", Duration::from_secs(30), || receipt.exists());
    let text = std::fs::read_to_string(&receipt).unwrap_or_default();
    assert!(text.contains("verdict=fed"), "{text}");
    assert_eq!(server.stop(), 0, "{}", server.log_text());
    let log = server.log_text();
    assert!(log.contains("sftp-pull"), "{log}");
    assert_eq!(names_in(&remote.join("archive")), vec![a]);
}

/// A symbolic link, a FIFO and names with a newline and an ESC among the
/// files: each is reported as skipped (and not taken), every regular file
/// is taken and archived, and `pull --json` lists every file it took.
#[tokio::test]
async fn odd_remote_entries_are_skipped_and_the_rest_taken() {
    let sshd = Sshd::start();
    let remote = sshd.remote_dir("outbox");
    let (a, _) = put(&remote, &card(1, 0, 2));
    let (b, _) = put(&remote, &card(2, 10, 2));
    std::os::unix::fs::symlink(remote.join(&a), remote.join("CSTL_031_20261121_0009.dat")).unwrap();
    let fifo = remote.join("CSTL_031_20261121_0008.dat");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let newline = "CSTL_031_20261121_0007\n.dat";
    let esc = "CSTL_031_20261121_0006\u{1b}[2J.dat";
    std::fs::write(remote.join(newline), card(7, 20, 1).render()).unwrap();
    std::fs::write(remote.join(esc), card(6, 30, 1).render()).unwrap();
    let env = env(
        &TestLedger::sqlite(),
        &endpoint(&sshd, "primary", &remote, "glob = \"CSTL_*\"\n"),
    );
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        verdicts(r),
        vec![(a.clone(), "fed".into()), (b.clone(), "fed".into())]
    );
    let mut skipped: Vec<(String, String)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    skipped.sort();
    let names: Vec<&str> = skipped.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            esc,
            newline,
            "CSTL_031_20261121_0008.dat",
            "CSTL_031_20261121_0009.dat"
        ]
    );
    assert!(skipped[0].1.contains("control character"), "{skipped:?}");
    assert!(skipped[2].1.contains("not a regular file"), "{skipped:?}");
    assert!(skipped[3].1.contains("symbolic link"), "{skipped:?}");
    assert_eq!(
        names_in(&remote.join("archive")),
        vec![a.clone(), b.clone()]
    );
    // Nothing of the odd entries was recorded; they stay where they are.
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(files.as_array().unwrap().len(), 2, "{files}");
    assert!(remote.join(newline).exists() && remote.join(esc).exists());
    // Printed as text and logged, the names are escaped: no raw control character.
    let out = env.run(&["pull", "--partner", "cardpull"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("CSTL_031_20261121_0007\\n.dat"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("CSTL_031_20261121_0006\\u{1b}[2J.dat"),
        "{out:?}"
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains('\u{1b}'), "{out:?}");
        assert!(!text.contains("0007\n"), "{out:?}");
    }
}

fn paramiko_endpoint(server: &common::interop::ParamikoServer) -> String {
    format!(
        "[[partners.endpoints]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"cardpull\"\nkey_file = {:?}\nhost_key = {:?}\nremote_dir = \"/out\"\nstable_seconds = 0\nretry_initial_seconds = 0.2\n",
        server.port,
        server.client_key.display().to_string(),
        server.fingerprint()
    )
}

/// A paramiko server that advertises posix-rename@openssh.com but answers
/// "unsupported", and lists one file a byte larger than it is: the archive
/// falls back to plain rename, the mislisted file is reported and left
/// alone, the others are taken once.
#[tokio::test]
async fn a_server_refusing_posix_rename_and_misreporting_a_size() {
    let (ok1, ok2) = (card(1, 0, 2), card(3, 20, 2));
    let liar = card(2, 10, 2);
    let server = common::interop::ParamikoServer::start(&[
        "--advertise-posix-rename",
        "--lie-size",
        &liar.file_name(),
    ]);
    let remote = server.root().join("out");
    std::fs::create_dir_all(&remote).unwrap();
    for f in [&ok1, &liar, &ok2] {
        put(&remote, f);
    }
    let env = env(&TestLedger::sqlite(), &paramiko_endpoint(&server));
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["ok"], true, "{r}");
    let taken = r["taken"].as_array().unwrap();
    let by_name = |n: &str| taken.iter().find(|t| t["name"] == n).cloned();
    assert_eq!(by_name(&ok1.file_name()).unwrap()["verdict"], "fed", "{r}");
    assert_eq!(by_name(&ok2.file_name()).unwrap()["verdict"], "fed", "{r}");
    let bad = by_name(&liar.file_name()).unwrap();
    assert!(bad["error"].as_str().unwrap().contains("size"), "{bad}");
    assert!(
        taken.iter().all(|t| t["after_pickup_error"].is_null()),
        "{r}"
    );
    assert_eq!(
        names_in(&remote.join("archive")),
        vec![ok1.file_name(), ok2.file_name()]
    );
    assert_eq!(
        names_in(&remote),
        vec![liar.file_name(), "archive".to_string()]
    );
    // A second pickup takes nothing again.
    let (_, reports) = pull(&env, &[]);
    let again: Vec<_> = reports[0]["taken"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["verdict"].is_string())
        .cloned()
        .collect();
    assert!(again.is_empty(), "{reports:?}");
    let (_, files) = env.json(&["files", "--json"]);
    assert_eq!(files.as_array().unwrap().len(), 2, "{files}");
}

/// A server that lists names without attributes: each entry is asked for
/// with a stat, regular files are taken and a symbolic link is reported
/// (and logged).
#[tokio::test]
async fn a_listing_without_attributes_is_completed_by_stat() {
    let server = common::interop::ParamikoServer::start(&["--bare-listing"]);
    let remote = server.root().join("out");
    std::fs::create_dir_all(&remote).unwrap();
    let (a, _) = put(&remote, &card(1, 0, 2));
    std::os::unix::fs::symlink(remote.join(&a), remote.join("CSTL_031_20261121_0009.dat")).unwrap();
    let env = env(&TestLedger::sqlite(), &paramiko_endpoint(&server));
    let out = env.run(&["pull", "--partner", "cardpull", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let reports: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let r = &reports[0];
    assert_eq!(verdicts(r), vec![(a.clone(), "fed".into())], "{r}");
    assert_eq!(r["skipped"][0]["name"], "CSTL_031_20261121_0009.dat", "{r}");
    assert!(
        out.stderr.contains("remote entry not taken")
            && out.stderr.contains("CSTL_031_20261121_0009.dat"),
        "{out:?}"
    );
}

/// ProFTPD's mod_sftp as the partner's server: the pickup logs in with a
/// pinned RSA host key, takes the files, reports a symbolic link and a name
/// holding a newline (escaped) without taking them, and archives what it
/// took; a second pickup finds nothing new.
#[tokio::test]
async fn pickup_from_proftpd_mod_sftp() {
    let server = common::interop::ProftpdServer::start();
    let remote = server.mkdir("out");
    let (a, _) = put(&remote, &card(1, 0, 2));
    let (b, _) = put(&remote, &card(2, 10, 2));
    std::os::unix::fs::symlink(remote.join(&a), remote.join("CSTL_031_20261121_0009.dat")).unwrap();
    std::fs::write(remote.join("CSTL_031_20261121_0008\n.dat"), b"forged").unwrap();
    let endpoint = format!(
        "[[partners.endpoints]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"cardpull\"\nkey_file = {:?}\nhost_key = {:?}\nremote_dir = \"/out\"\nstable_seconds = 0\nretry_initial_seconds = 0.2\n",
        server.port,
        server.client_key.display().to_string(),
        server.fingerprint()
    );
    let env = env(&TestLedger::sqlite(), &endpoint);
    let (code, reports) = pull(&env, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let r = &reports[0];
    assert_eq!(
        verdicts(r),
        vec![(a.clone(), "fed".into()), (b.clone(), "fed".into())],
        "{r}"
    );
    let mut skipped: Vec<String> = r["skipped"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        vec![
            "CSTL_031_20261121_0008\n.dat".to_string(),
            "CSTL_031_20261121_0009.dat".to_string()
        ],
        "{r}"
    );
    for name in [&a, &b] {
        assert!(
            remote.join("archive").join(name).exists(),
            "{name} archived"
        );
        assert!(
            !remote.join(name).exists(),
            "{name} left the pickup directory"
        );
    }
    let (code, again) = pull(&env, &[]);
    assert_eq!(code, 0, "{again:?}");
    assert!(verdicts(&again[0]).is_empty(), "{again:?}");
}
