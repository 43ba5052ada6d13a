//! Outbound delivery against a real OpenSSH `sshd`: send and check the
//! partner's bytes, the same bytes refused, resend, a final name already
//! there, a rename the server refuses, a link cut mid-upload, a crash
//! between the upload and its record, an outbox drop while `serve` runs —
//! on SQLite and PostgreSQL.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::disk::SmallDisk;
use common::drops::{bank, big_bank, drop_file, files_in};
use common::server::{Server, curl, metrics_addr, sample};
use common::sshd::Sshd;
use common::{Env, TestLedger, sha};

/// A partner `payco` we send bank transfer files to, verified before sending,
/// through an endpoint on `port` with `extra` settings.
fn env(ledger: &TestLedger, sshd: &Sshd, port: u16, upload: &Path, extra: &str) -> Env {
    Env::new(
        ledger,
        &format!(
            "[[partners]]\nid = \"payco\"\nformats = [\"bank-transfer-result\"]\noutbound_formats = [\"bank-transfer-request\"]\n\
             [[partners.endpoints]]\nname = \"bank\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {:?}\n\
             key_file = {:?}\nhost_key = {:?}\nupload_dir = {:?}\nretries = 3\nretry_initial_seconds = 0.2\n\
             retry_max_seconds = 1\nio_timeout_seconds = 5\n{extra}\n",
            sshd.user,
            sshd.client_key.display().to_string(),
            sshd.fingerprint(),
            upload.display().to_string(),
        ),
    )
}

/// A payout file (a bank transfer request) for day `k`, written under `dir`.
fn payout(dir: &Path, k: u64) -> (PathBuf, Vec<u8>) {
    let f = bank(k);
    let bytes = f.render_request();
    let path = dir.join(f.request_file_name());
    std::fs::write(&path, &bytes).expect("write");
    (path, bytes)
}

/// A large payout of `n` transfers for day `k` (40 000 make about 5 MB),
/// written under `dir`: (path, bytes).
fn big_payout(dir: &Path, k: u64, n: u64) -> (PathBuf, Vec<u8>) {
    let f = big_bank(k, n);
    let bytes = f.render_request();
    let path = dir.join(f.request_file_name());
    std::fs::write(&path, &bytes).expect("write");
    (path, bytes)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn send(env: &Env, file: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let path = file.display().to_string();
    let mut args = vec!["send", "--partner", "payco", "--json", path.as_str()];
    args.extend_from_slice(extra);
    env.json(&args)
}

fn deliveries(env: &Env) -> Vec<serde_json::Value> {
    let (code, v) = env.json(&["deliveries", "--json"]);
    assert_eq!(code, 0);
    v.as_array().cloned().unwrap_or_default()
}

/// A file's identity on the partner's side: an upload writes a new file and
/// renames it over the name, so a second upload changes it.
fn identity(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).expect("remote file");
    (m.ino(), m.modified().expect("mtime"))
}

async fn send_refuse_resend(ledger: TestLedger) {
    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let env = env(&ledger, &sshd, sshd.port, &upload, "");
    let local = env.path("out");
    std::fs::create_dir_all(&local).unwrap();
    let (file, bytes) = payout(&local, 1);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();

    let (code, d) = send(&env, &file, &["--reason", "first payout run"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["state"], "delivered", "{d}");
    assert_eq!(d["endpoint"], "bank");
    assert_eq!(d["checksum"].as_str(), Some(sha(&bytes).as_str()));
    assert_eq!(std::fs::read(upload.join(&name)).unwrap(), bytes);
    assert_eq!(
        files_in(&upload),
        vec![name.clone()],
        "no temporary name left"
    );
    assert_eq!(
        d["remote_path"].as_str(),
        Some(upload.join(&name).display().to_string().as_str())
    );
    let first = identity(&upload.join(&name));

    // The same bytes again: refused as a duplicate naming the first, never uploaded.
    let (code, dup) = send(&env, &file, &[]);
    assert_eq!(code, 10, "{dup}");
    assert_eq!(dup["state"], "duplicate");
    assert_eq!(dup["related_delivery_id"], d["id"]);
    assert!(
        dup["error"].as_str().unwrap_or("").contains("resend"),
        "{dup}"
    );
    assert_eq!(identity(&upload.join(&name)), first, "not uploaded again");

    // The bank took the file; an operator sends it again on purpose.
    std::fs::remove_file(upload.join(&name)).unwrap();
    let id = d["id"].to_string();
    let out = env.run(&["resend", &id, "--reason", "the bank lost it", "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let again: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(again["state"], "delivered");
    assert_eq!(again["related_delivery_id"], d["id"]);
    assert_eq!(again["source"], "resend");
    assert_eq!(std::fs::read(upload.join(&name)).unwrap(), bytes);
    // A resend is audited with who and why.
    assert!(
        deliveries(&env)
            .iter()
            .any(|x| x["reason"] == "the bank lost it")
    );
    // Resending a refused duplicate is not allowed (nothing changes).
    let out = env.run(&["resend", &dup["id"].to_string(), "--reason", "x"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(deliveries(&env).len(), 3);
    // Filters combine: the one refused duplicate of this partner.
    let (code, dups) = env.json(&[
        "deliveries",
        "--partner",
        "payco",
        "--state",
        "duplicate",
        "--json",
    ]);
    assert_eq!(code, 0);
    let dups = dups.as_array().cloned().unwrap_or_default();
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert_eq!(dups[0]["id"], dup["id"]);

    // A final name already on the partner's side is never replaced.
    let (file2, _) = payout(&local, 2);
    let name2 = file2.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(upload.join(&name2), b"the bank's own file").unwrap();
    let (code, d2) = send(&env, &file2, &[]);
    assert_eq!(code, 4, "{d2}");
    assert_eq!(d2["state"], "failed");
    assert!(
        d2["error"]
            .as_str()
            .unwrap_or("")
            .contains("already exists"),
        "{d2}"
    );
    assert_eq!(
        std::fs::read(upload.join(&name2)).unwrap(),
        b"the bank's own file"
    );

    // A file that fails its outbound format is never sent.
    let bad = local.join(bank(3).request_file_name());
    let mut b = bank(3).render_request();
    b.truncate(b.len() - 1);
    std::fs::write(&bad, &b).unwrap();
    let (code, inv) = send(&env, &bad, &[]);
    assert_eq!(code, 14, "{inv}");
    assert_eq!(inv["state"], "invalid");
    assert!(
        inv["error"].as_str().unwrap_or("").contains("record"),
        "{inv}"
    );
    assert!(!upload.join(bank(3).request_file_name()).exists());

    // The bank's transfer results for the first request acknowledge it.
    let results = local.join(bank(1).file_name());
    std::fs::write(&results, bank(1).render()).unwrap();
    let (code, fed) = env.json(&[
        "ingest",
        "--partner",
        "payco",
        "--json",
        &results.display().to_string(),
    ]);
    assert_eq!(code, 0, "{fed}");
    let acked: Vec<serde_json::Value> = deliveries(&env)
        .into_iter()
        .filter(|x| x["acknowledged"] == true)
        .collect();
    assert_eq!(acked.len(), 1, "{acked:?}");
    assert_eq!(
        acked[0]["id"], again["id"],
        "the latest delivery of that key"
    );
    assert_eq!(acked[0]["ack_file_id"], fed["file_id"]);
    ledger.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_refuse_and_resend_sqlite() {
    send_refuse_resend(TestLedger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_refuse_and_resend_postgres() {
    if let Some(t) = TestLedger::postgres().await {
        send_refuse_resend(t).await;
    }
}

/// The server refuses the rename (the final name is a directory it cannot
/// replace): retried with back-off, then failed with the error visible; no
/// temporary file is left on the partner's side.
#[test]
fn a_refused_rename_fails_visibly_and_leaves_no_temporary_file() {
    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let env = env(
        &TestLedger::sqlite(),
        &sshd,
        sshd.port,
        &upload,
        "overwrite = true\n",
    );
    let local = env.path("out");
    std::fs::create_dir_all(&local).unwrap();
    let (file, _) = payout(&local, 1);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::create_dir_all(upload.join(&name).join("inside")).unwrap();
    let (code, d) = send(&env, &file, &[]);
    assert_eq!(code, 4, "{d}");
    assert_eq!(d["state"], "failed");
    assert!(d["error"].as_str().unwrap_or("").contains("rename"), "{d}");
    assert!(
        d["attempts"].as_i64() == Some(1),
        "one attempt, retried inside it: {d}"
    );
    assert_eq!(files_in(&upload), vec![name], "no temporary name left");
}

/// The partner's disk is full: the upload fails with the error visible and
/// its temporary file removed, nothing half-written under the final name;
/// once there is space, `serve` delivers it whole at its start.
#[test]
fn a_full_remote_disk_fails_visibly_and_is_delivered_later() {
    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let Some(disk) = SmallDisk::mount(&upload, "1m") else {
        eprintln!("skipped: a tmpfs cannot be mounted here (not root)");
        return;
    };
    let env = env(&TestLedger::sqlite(), &sshd, sshd.port, &upload, "");
    let local = env.path("out");
    std::fs::create_dir_all(&local).unwrap();
    // About 5 MB on a 1 MiB disk.
    let (file, bytes) = big_payout(&local, 2, 40_000);
    let (code, d) = send(&env, &file, &[]);
    assert_eq!(code, 4, "{d}");
    assert_eq!(d["state"], "failed", "{d}");
    assert!(!d["error"].as_str().unwrap_or("").is_empty(), "{d}");
    assert_eq!(
        files_in(&upload),
        Vec::<String>::new(),
        "nothing left on the full disk"
    );

    drop(disk);
    let mut server = Server::start(&env);
    server.wait_until("the delivery to be made", Duration::from_secs(120), || {
        deliveries(&env).iter().any(|d| d["state"] == "delivered")
    });
    assert_eq!(server.stop(), 0);
    assert_eq!(std::fs::read(upload.join(name_of(&file))).unwrap(), bytes);
    assert_eq!(files_in(&upload), vec![name_of(&file)]);
    assert_eq!(deliveries(&env).len(), 1);
}

/// The endpoint's host key is not the pinned one: nothing is sent, the
/// delivery waits with the reason visible (exit 4); with the right pin,
/// `serve` delivers it.
#[test]
fn a_host_key_that_is_not_the_pinned_one_sends_nothing() {
    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let env = env(&TestLedger::sqlite(), &sshd, sshd.port, &upload, "");
    let config = std::fs::read_to_string(&env.config).unwrap();
    let wrong = format!("SHA256:{}", "A".repeat(43));
    std::fs::write(&env.config, config.replace(&sshd.fingerprint(), &wrong)).unwrap();
    let local = env.path("out");
    std::fs::create_dir_all(&local).unwrap();
    let (file, bytes) = payout(&local, 4);
    let (code, d) = send(&env, &file, &[]);
    assert_eq!(code, 4, "{d}");
    assert_ne!(d["state"], "delivered", "{d}");
    assert!(
        d["error"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("host key"),
        "{d}"
    );
    assert!(files_in(&upload).is_empty(), "nothing sent");

    std::fs::write(&env.config, &config).unwrap();
    let mut server = Server::start(&env);
    server.wait_until("the delivery to be made", Duration::from_secs(120), || {
        deliveries(&env).iter().any(|d| d["state"] == "delivered")
    });
    assert_eq!(server.stop(), 0);
    assert_eq!(
        std::fs::read(upload.join(file.file_name().unwrap())).unwrap(),
        bytes
    );
}

/// With four-eyes on `resend`, an operator's resend is a request (exit 6)
/// and nothing is sent; the same operator cannot approve it; a second
/// operator's approval sends the bytes again, once.
#[test]
fn a_resend_under_four_eyes_waits_for_a_second_operator() {
    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let env = env(
        &TestLedger::sqlite(),
        &sshd,
        sshd.port,
        &upload,
        "[operators]\nfour_eyes = [\"resend\"]\n",
    );
    let local = env.path("out");
    std::fs::create_dir_all(&local).unwrap();
    let (file, bytes) = payout(&local, 6);
    let name = name_of(&file);
    let (code, d) = send(&env, &file, &[]);
    assert_eq!(code, 0, "{d}");
    std::fs::remove_file(upload.join(&name)).unwrap();

    let id = d["id"].to_string();
    let out = env.run(&[
        "--operator",
        "alice",
        "resend",
        &id,
        "--reason",
        "the bank lost it",
    ]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(!upload.join(&name).exists(), "nothing sent yet");
    assert_eq!(deliveries(&env).len(), 1);
    let (_, list) = env.json(&["requests", "--json"]);
    let list = list.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["action"], "resend");
    assert_eq!(list[0]["delivery_id"], d["id"]);
    let request = list[0]["id"].to_string();

    let out = env.run(&["--operator", "alice", "approve", &request]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        !upload.join(&name).exists(),
        "the requester's own approval sends nothing"
    );

    let out = env.run(&["--operator", "bob", "approve", &request]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read(upload.join(&name)).unwrap(), bytes);
    let all = deliveries(&env);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().any(|x| x["source"] == "resend"
            && x["related_delivery_id"] == d["id"]
            && x["state"] == "delivered"),
        "{all:?}"
    );
    let out = env.run(&["--operator", "carol", "approve", &request]);
    assert_ne!(out.code, 0, "a request is carried out once: {out:?}");
    assert_eq!(deliveries(&env).len(), 2);
}

/// A TCP proxy in front of an SSH server that cuts its first connection
/// once `cut_after` bytes went one way (from the client by default).
struct CuttingProxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(target: u16, cut_after: usize) -> CuttingProxy {
        CuttingProxy::start_cutting(target, cut_after, false)
    }

    /// Cut once `cut_after` bytes went from the server to the client.
    fn start_downstream(target: u16, cut_after: usize) -> CuttingProxy {
        CuttingProxy::start_cutting(target, cut_after, true)
    }

    fn start_cutting(target: u16, cut_after: usize, downstream: bool) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                let limit = if first { cut_after } else { usize::MAX };
                let (up, down) = if downstream {
                    (usize::MAX, limit)
                } else {
                    (limit, usize::MAX)
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (f1, f2) = (flag.clone(), flag.clone());
                std::thread::spawn(move || pump(c2, s2, up, Some(f1)));
                std::thread::spawn(move || pump(server, client, down, Some(f2)));
            }
        });
        CuttingProxy { port, cut }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, limit: usize, cut: Option<Arc<AtomicBool>>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if sent + n > limit {
            if let Some(c) = &cut {
                c.store(true, Ordering::SeqCst);
            }
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The link is cut mid-upload: the attempt is retried on a new connection,
/// and the partner ends with one whole file under its final name, no
/// temporary file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_mid_upload_is_retried_to_one_whole_file() {
    for ledger in TestLedger::all().await {
        let sshd = Sshd::start();
        let upload = sshd.remote_dir("in");
        let proxy = CuttingProxy::start(sshd.port, 2 << 20);
        let env = env(&ledger, &sshd, proxy.port, &upload, "");
        let local = env.path("out");
        std::fs::create_dir_all(&local).unwrap();
        let (file, bytes) = big_payout(&local, 1, 40_000);
        let (code, d) = send(&env, &file, &[]);
        assert_eq!(code, 0, "{} {d}", ledger.backend);
        assert_eq!(d["state"], "delivered");
        assert!(proxy.cut.load(Ordering::SeqCst), "the link was cut");
        assert_eq!(std::fs::read(upload.join(name_of(&file))).unwrap(), bytes);
        assert_eq!(
            files_in(&upload),
            vec![name_of(&file)],
            "no temporary name left"
        );
        ledger.drop_db().await;
    }
}

/// Put a delivery in the state a crash leaves it in: recorded `sending`
/// by a process that stopped saying it is alive, `progress` as far as it got.
fn crashed_mid_attempt(env: &Env, id: i64, progress: &str, remote_path: &Path) {
    execute(
        env,
        &format!(
            "UPDATE deliveries SET state = 'sending', progress = '{progress}', remote_path = '{}', \
             attempts = attempts + 1, attempt_owner = 'dead-1-1', heartbeat_at = '2000-01-01T00:00:00+00:00', \
             heartbeat_ms = 0 WHERE id = {id}",
            remote_path.display()
        ),
    );
}

/// Change one row of the ledger behind the gateway's back.
fn execute(env: &Env, sql: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ledger = settlegate::ledger::Ledger::open(env.ledger.as_deref(), &env.data)
            .await
            .expect("ledger");
        let n = settlegate::ledger::execute_raw(&ledger, sql)
            .await
            .expect("prepare the crash");
        assert_eq!(n, 1);
        ledger.close().await;
    });
}

/// A crash between the upload and its record: at the next start the
/// delivery is resolved by what the partner's side holds — the file in
/// place is delivered without a second upload; a temporary file is removed
/// and the file uploaded again, once.
#[test]
fn a_crash_between_upload_and_record_is_resolved_without_a_second_copy() {
    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let env = env(&TestLedger::sqlite(), &sshd, sshd.port, &upload, "");
    let local = env.path("out");
    std::fs::create_dir_all(&local).unwrap();
    // Two deliveries recorded but not sent yet (queued for an endpoint
    // nobody serves: send them with the endpoint unreachable).
    let unreachable = env.path("unreachable.toml");
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&format!("port = {}", sshd.port), "port = 1");
    std::fs::write(&unreachable, text).unwrap();
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for k in [1, 2, 3] {
        let (file, bytes) = payout(&local, k);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_settlegate"))
            .args(["--config"])
            .arg(&unreachable)
            .arg("--data-dir")
            .arg(&env.data)
            .args(["send", "--partner", "payco", "--json"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(d["state"], "queued", "unreachable: back in the queue: {d}");
        ids.push(d["id"].as_i64().unwrap());
        names.push((
            file.file_name().unwrap().to_string_lossy().into_owned(),
            bytes,
        ));
    }
    // The first was renamed into place when the process died; the second
    // was uploaded under its temporary name.
    let (n1, b1) = &names[0];
    let (n2, b2) = &names[1];
    std::fs::write(upload.join(n1), b1).unwrap();
    let in_place = identity(&upload.join(n1));
    crashed_mid_attempt(
        &env,
        ids[0],
        "uploaded",
        &upload.join(format!(".{n1}.part")),
    );
    std::fs::write(upload.join(format!(".{n2}.part")), &b2[..100]).unwrap();
    crashed_mid_attempt(
        &env,
        ids[1],
        "uploaded",
        &upload.join(format!(".{n2}.part")),
    );

    // The third is being sent by a live process on another machine whose
    // clock is years behind: its heartbeat is fresh by the database's clock
    // (the one that counts), stale by its own.
    execute(
        &env,
        &format!(
            "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, attempt_owner = 'alive-1-1', \
             heartbeat_at = '2000-01-01T00:00:00+00:00', heartbeat_ms = {} WHERE id = {}",
            (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_millis(),
            ids[2]
        ),
    );

    let mut server = Server::start(&env);
    server.wait_until("both deliveries resolved", Duration::from_secs(60), || {
        let d = deliveries(&env);
        d.iter().filter(|x| x["state"] == "delivered").count() == 2
    });
    assert_eq!(server.stop(), 0);
    let live = deliveries(&env);
    let live = live
        .iter()
        .find(|d| d["id"] == ids[2])
        .expect("the third delivery");
    assert_eq!(
        live["state"], "sending",
        "a live attempt is not taken over: {live}"
    );
    // One refused `send`, then the live process's attempt: none of this node's.
    assert_eq!(live["attempts"], 2, "{live}");
    assert!(
        !upload.join(&names[2].0).exists(),
        "not uploaded by this node"
    );
    assert_eq!(std::fs::read(upload.join(n1)).unwrap(), *b1);
    assert_eq!(std::fs::read(upload.join(n2)).unwrap(), *b2);
    let mut left = files_in(&upload);
    left.sort();
    let mut want = vec![n1.clone(), n2.clone()];
    want.sort();
    assert_eq!(left, want, "no temporary name left");
    assert_eq!(
        identity(&upload.join(n1)),
        in_place,
        "the file in place was not uploaded again"
    );
}

/// `serve` killed while it uploads a large outbox drop, at a random
/// moment, then restarted: the partner ends with one whole copy under its
/// final name and no temporary file.
#[test]
fn kill_9_during_an_upload_leaves_one_copy() {
    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let env = env(&TestLedger::sqlite(), &sshd, sshd.port, &upload, "");
    let f = big_bank(5, 80_000);
    let bytes = f.render_request();
    let outbox = env.data.join("outbox/payco");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    eprintln!("kill after {} ms", 100 + seed % 900);
    let mut server = Server::start(&env);
    drop_file(&outbox, &f.request_file_name(), &bytes, true);
    server.wait_log("delivery recorded");
    std::thread::sleep(Duration::from_millis(u64::from(100 + seed % 900)));
    server.kill9();
    let mut server = Server::start(&env);
    server.wait_until("the delivery to be made", Duration::from_secs(120), || {
        deliveries(&env).iter().any(|d| d["state"] == "delivered")
    });
    assert_eq!(server.stop(), 0);
    assert_eq!(
        std::fs::read(upload.join(f.request_file_name())).unwrap(),
        bytes
    );
    assert_eq!(
        files_in(&upload),
        vec![f.request_file_name()],
        "one copy, no temporary name"
    );
    assert_eq!(deliveries(&env).len(), 1);
    assert!(files_in(&outbox).is_empty());
}

/// A file dropped into a partner's outbox while `serve` runs: recorded
/// (the outbox ends empty), verified, delivered, and its receipt tells the
/// settlement system; an invalid one is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_drop_is_delivered() {
    for ledger in TestLedger::all().await {
        let sshd = Sshd::start();
        let upload = sshd.remote_dir("in");
        let env = env(
            &ledger,
            &sshd,
            sshd.port,
            &upload,
            "done_suffix = \".done\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        );
        let mut server = Server::start(&env);
        let outbox = env.data.join("outbox/payco");
        let good = bank(7);
        drop_file(
            &outbox,
            &good.request_file_name(),
            &good.render_request(),
            true,
        );
        let mut bad = bank(8).render_request();
        bad.truncate(bad.len() - 1);
        drop_file(&outbox, &bank(8).request_file_name(), &bad, false);
        server.wait_until("the good file delivered", Duration::from_secs(60), || {
            upload
                .join(format!("{}.done", good.request_file_name()))
                .exists()
        });
        server.wait_until("the outbox to empty", Duration::from_secs(60), || {
            files_in(&outbox).is_empty()
        });
        // The endpoint's last successful upload and the deliveries by
        // state, on /metrics.
        let (code, text) = curl(&format!("http://{}/metrics", metrics_addr(&server)));
        assert_eq!(code, 200, "{text}");
        assert!(
            sample(
                &text,
                "settlegate_endpoint_last_success_timestamp_seconds{partner=\"payco\",endpoint=\"bank\"}"
            )
            .is_some_and(|t| t > 1.0e9),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "settlegate_deliveries_total{partner=\"payco\",state=\"delivered\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(server.stop(), 0);
        assert_eq!(
            std::fs::read(upload.join(good.request_file_name())).unwrap(),
            good.render_request()
        );
        assert!(
            !upload.join(bank(8).request_file_name()).exists(),
            "the invalid file is never sent"
        );
        let receipt = std::fs::read_to_string(
            env.data
                .join("outbox-receipts/payco")
                .join(format!("{}.delivery", good.request_file_name())),
        )
        .unwrap();
        assert!(receipt.contains("state=delivered"), "{receipt}");
        let receipt = std::fs::read_to_string(
            env.data
                .join("outbox-receipts/payco")
                .join(format!("{}.delivery", bank(8).request_file_name())),
        )
        .unwrap();
        assert!(
            receipt.contains("state=invalid") && receipt.contains("error="),
            "{receipt}"
        );
        let d = deliveries(&env);
        assert_eq!(d.len(), 2, "{d:?}");
        ledger.drop_db().await;
    }
}

/// A partner that collects: `send` queues the delivery in `/outbox` on
/// settlegate's SFTP server; OpenSSH `sftp` lists it; a download cut
/// mid-file leaves it waiting; a whole `get` marks it `collected` with the
/// account and address, the bytes equal to what was sent; `/outbox` is
/// read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collecting_partner_reads_its_deliveries_from_the_outbox() {
    for ledger in TestLedger::all().await {
        let work = tempfile::tempdir().unwrap();
        let key = work.path().join("payco_key");
        common::sshd::keygen(&key);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = Env::new(
            &ledger,
            &format!(
                "[sftp_server]\nlisten = \"127.0.0.1:{port}\"\n\
                 [[sftp_server.accounts]]\npartner = \"payco\"\nauthorized_keys = [{:?}]\n\
                 [[partners]]\nid = \"payco\"\nformats = [\"bank-transfer-result\"]\n\
                 outbound_formats = [\"bank-transfer-request\"]\n",
                public.trim()
            ),
        );
        let server = Server::start(&env);
        let local = env.path("out");
        std::fs::create_dir_all(&local).unwrap();
        // About 20 MB: a download cut after 1 MiB is cut mid-file, and a
        // whole one keeps many reads in flight, more than the client's
        // window lets the server answer at once.
        let (file, bytes) = big_payout(&local, 3, 160_000);
        let name = name_of(&file);
        let (code, d) = send(&env, &file, &[]);
        assert_eq!(code, 0, "queued for collection: {d}");
        assert_eq!(d["state"], "queued");
        assert!(d["endpoint"].is_null(), "{d}");
        let id = d["id"].as_i64().unwrap();

        let sftp = |port: u16, batch: &str| {
            let file = work.path().join("batch");
            std::fs::write(&file, batch).unwrap();
            std::process::Command::new("sftp")
                .arg("-b")
                .arg(&file)
                .args(["-P", &port.to_string(), "-i"])
                .arg(&key)
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "LogLevel=ERROR",
                    "payco@127.0.0.1",
                ])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        };
        let got = work.path().join("got");

        // Listed, and read-only.
        let out = sftp(
            port,
            &format!("ls -l /outbox\n-put {} /outbox/x.dat\n", file.display()),
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(listing.contains(&name), "{listing}");
        assert!(
            listing.contains(&bytes.len().to_string()),
            "listed at its size: {listing}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // A download cut mid-file: not collected.
        let proxy = CuttingProxy::start_downstream(port, 1 << 20);
        let out = sftp(
            proxy.port,
            &format!("get /outbox/{name} {}\n", got.display()),
        );
        assert!(!out.status.success(), "the download was cut");
        assert!(proxy.cut.load(Ordering::SeqCst));
        server.wait_until(
            "the cut session to be over",
            Duration::from_secs(60),
            || server.log_text().contains("it stays waiting in /outbox"),
        );
        let d = deliveries(&env);
        assert_eq!(d[0]["state"], "queued", "{} {d:?}", ledger.backend);

        // A resumed download that reads only the tail, then closes: not
        // collected either.
        let half = work.path().join("half");
        std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
        let out = sftp(port, &format!("reget /outbox/{name} {}\n", half.display()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sha(&std::fs::read(&half).unwrap()),
            sha(&bytes),
            "reget completed the copy"
        );
        server.wait_until(
            "the tail read to be closed",
            Duration::from_secs(60),
            || server.log_text().contains("a delivery was read in part"),
        );
        let d = deliveries(&env);
        assert_eq!(d[0]["state"], "queued", "{} {d:?}", ledger.backend);

        // A whole download: collected, with who and from where.
        let out = sftp(port, &format!("get /outbox/{name} {}\n", got.display()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha(&std::fs::read(&got).unwrap()), sha(&bytes));
        let d = deliveries(&env);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["id"].as_i64(), Some(id));
        assert_eq!(d[0]["state"], "collected", "{} {d:?}", ledger.backend);
        assert_eq!(d[0]["collected_by"], "payco");
        assert!(
            d[0]["collected_from"]
                .as_str()
                .unwrap_or("")
                .starts_with("127.0.0.1:"),
            "{d:?}"
        );
        assert!(d[0]["delivered_at"].is_string(), "{d:?}");
        // Still listed (the partner may read it again); collected once.
        let out = sftp(
            port,
            &format!("ls /outbox\nget /outbox/{name} {}\n", got.display()),
        );
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(&name));
        let mut server = server;
        assert_eq!(server.stop(), 0);
        let log = server.log_text();
        assert_eq!(log.matches("delivery collected").count(), 1, "{log}");
        ledger.drop_db().await;
    }
}

/// The `Starting session: subsystem 'sftp'` lines sshd logged: one per
/// SFTP session (SSH channel) opened on it.
fn sftp_sessions(sshd: &Sshd) -> usize {
    sshd.log()
        .matches("Starting session: subsystem 'sftp'")
        .count()
}

/// A large file goes through several SFTP sessions on one connection, each
/// writing its share of the temporary file; a link cut mid-upload still
/// ends in one whole file; a server that allows one session per connection
/// gets the file through that one.
#[test]
fn a_large_upload_is_spread_over_several_sftp_sessions() {
    let ledger = TestLedger::sqlite();
    // About 17.5 MB: more than the 16 MiB from which an upload is spread.
    let transfers = 140_000;

    let sshd = Sshd::start();
    let upload = sshd.remote_dir("in");
    let env = env(&ledger, &sshd, sshd.port, &upload, "upload_channels = 4");
    let local = env.path("out");
    std::fs::create_dir_all(&local).unwrap();
    let (file, bytes) = big_payout(&local, 1, transfers);
    assert!(bytes.len() > 16 << 20, "{} bytes", bytes.len());
    let (code, d) = send(&env, &file, &[]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["state"], "delivered");
    assert_eq!(std::fs::read(upload.join(name_of(&file))).unwrap(), bytes);
    assert_eq!(files_in(&upload), vec![name_of(&file)]);
    assert_eq!(sftp_sessions(&sshd), 4, "{}", sshd.log());

    // The link cut after 8 MiB: every session goes with it; the retry on a
    // new connection writes the whole file again.
    let cut_sshd = Sshd::start();
    let cut_upload = cut_sshd.remote_dir("in");
    let proxy = CuttingProxy::start(cut_sshd.port, 8 << 20);
    let env = self::env(&ledger, &cut_sshd, proxy.port, &cut_upload, "");
    let (file, bytes) = big_payout(&local, 2, transfers);
    let (code, d) = send(&env, &file, &[]);
    assert_eq!(code, 0, "{d}");
    assert!(proxy.cut.load(Ordering::SeqCst), "the link was cut");
    assert_eq!(
        std::fs::read(cut_upload.join(name_of(&file))).unwrap(),
        bytes
    );
    assert_eq!(files_in(&cut_upload), vec![name_of(&file)]);

    // One session per connection: the extra channels are refused, the
    // upload goes through the one there is.
    let one = Sshd::start_with_config("MaxSessions 1");
    let one_upload = one.remote_dir("in");
    let env = self::env(&ledger, &one, one.port, &one_upload, "upload_channels = 4");
    let (file, bytes) = big_payout(&local, 3, transfers);
    let (code, d) = send(&env, &file, &[]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(
        std::fs::read(one_upload.join(name_of(&file))).unwrap(),
        bytes
    );
    assert_eq!(sftp_sessions(&one), 1, "{}", one.log());
}
