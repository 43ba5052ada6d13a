//! Several `serve` processes (nodes) on one PostgreSQL ledger, with the
//! content store in the same database and nothing else shared: every file
//! downloaded once, judged once, fed at most once; the pickup lease taken
//! over when its holder is killed; outbound deliveries uploaded once; the
//! store round-trips a large blob and refuses damaged bytes; a lease's
//! fence refuses the write of a node that lost it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::server::{Server, wait_for};
use common::sshd::Sshd;
use common::{Env, TestLedger, card};

const LEASE_SECONDS: u64 = 3;
/// PG settlement files pushed with their control files.
const PG_PAIRS: u64 = 30;

/// A PostgreSQL ledger for this test (required under CI; skipped otherwise
/// when no server answers).
async fn pg_ledger() -> Option<TestLedger> {
    TestLedger::postgres().await
}

/// A node's environment: its own data dir and config, the shared ledger,
/// `store = "postgres"`, short leases, and `extra` (partners, SFTP server).
fn node_env(ledger: &TestLedger, extra: &str) -> Env {
    let env = Env::new(ledger, extra);
    let text = std::fs::read_to_string(&env.config)
        .expect("config")
        .replace("\nlease_seconds = ", "\n# lease_seconds = ");
    std::fs::write(
        &env.config,
        format!("store = \"postgres\"\nlease_seconds = {LEASE_SECONDS}\n{text}"),
    )
    .expect("config");
    env
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn keygen(path: &Path) -> String {
    common::sshd::keygen(path);
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_string()
}

/// `sftp -b` as `user` on `port`; panics on failure; returns what it printed.
fn sftp_batch(port: u16, key: &Path, user: &str, batch: &str) -> String {
    let file = tempfile::NamedTempFile::new().expect("batch file");
    std::fs::write(file.path(), batch).expect("batch");
    let out = Command::new("sftp")
        .arg("-b")
        .arg(file.path())
        .args(["-P", &port.to_string(), "-i"])
        .arg(key)
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
        ])
        .arg(format!("{user}@127.0.0.1"))
        .output()
        .expect("sftp");
    assert!(
        out.status.success(),
        "sftp to port {port} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn pool(ledger: &TestLedger) -> sqlx::PgPool {
    sqlx::PgPool::connect(ledger.url.as_deref().expect("pg url"))
        .await
        .expect("connect")
}

/// Write `bytes` as `dir/name` the way a partner should: under a temporary
/// name, then renamed in.
fn publish(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// What one drop is and what it must be judged.
struct Drop {
    name: String,
    verdict: &'static str,
}

/// The pickup's files: distinct valid files (fed), byte-identical copies
/// under another name (duplicate), drill copies (drill). `seq` numbers
/// keep business keys and record keys apart from other waves.
fn pickup_wave(dir: &Path, first_seq: u16, n: u16) -> Vec<Drop> {
    let mut out = Vec::new();
    for i in 0..n {
        let seq = first_seq + i;
        let f = card(seq, u64::from(seq) * 10, 3);
        let bytes = f.render();
        let name = f.file_name();
        publish(dir, &name, &bytes);
        out.push(Drop {
            name: name.clone(),
            verdict: "fed",
        });
        if i % 8 == 3 {
            let copy = name.replace(".dat", "_COPY.dat");
            publish(dir, &copy, &bytes);
            out.push(Drop {
                name: copy,
                verdict: "duplicate",
            });
        }
        if i % 12 == 5 {
            let drill = name.replace(".dat", "_DRILL.dat");
            publish(dir, &drill, &bytes);
            out.push(Drop {
                name: drill,
                verdict: "drill",
            });
        }
    }
    out
}

/// The node (in `servers`) holding `lease`, by the pid in its node name.
fn holder_of(env: &Env, lease: &str, servers: &[Option<Server>]) -> Option<usize> {
    let (code, v) = env.json(&["nodes", "--json"]);
    assert_eq!(code, 0, "nodes --json");
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    let node = nodes.iter().find(|n| {
        n["leases"]
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["name"] == lease))
    })?;
    let name = node["node"].as_str().unwrap_or_default();
    servers.iter().position(|s| {
        s.as_ref()
            .is_some_and(|s| name.contains(&format!("-{}-", s.pid())))
    })
}

/// Three nodes: the same OpenSSH endpoint scheduled every second on each
/// (`after_pickup = "leave"`), the SFTP server on three ports with one host
/// key; 300 files across pickup and push, with duplicates, drills and
/// control-file pairs; the node holding the pickup lease killed mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_take_every_file_once_and_survive_a_kill() {
    let Some(ledger) = pg_ledger().await else {
        return;
    };
    let sshd = Sshd::start_logging_opens();
    let remote = sshd.remote_dir("outgoing");
    let keys = tempfile::tempdir().expect("tempdir");
    let host_key = keys.path().join("host_key");
    keygen(&host_key);
    let push_key = keys.path().join("cardpush");
    let push_pub = keygen(&push_key);
    let pg_key = keys.path().join("pgpush");
    let pg_pub = keygen(&pg_key);

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let envs: Vec<Env> = ports
        .iter()
        .map(|port| {
            node_env(
                &ledger,
                &format!(
                    "[[partners]]\nid = \"cardpull\"\nformats = [\"card-settlement\"]\ndrill_name_patterns = [\"(?i)drill\"]\n\
                     [[partners.endpoints]]\nname = \"van\"\nhost = \"127.0.0.1\"\nport = {sport}\nuser = {user:?}\n\
                     key_file = {key:?}\nhost_key = {fp:?}\nremote_dir = {remote:?}\nstable_seconds = 0\n\
                     schedule = \"* * * * * *\"\nafter_pickup = \"leave\"\nretry_initial_seconds = 0.2\n\
                     [[partners]]\nid = \"cardpush\"\nformats = [\"card-settlement\"]\ndrill_name_patterns = [\"(?i)drill\"]\n\
                     [sftp_server]\nlisten = \"127.0.0.1:{port}\"\nhost_key = {hk:?}\nverdict_wait_seconds = 1\n\
                     [[sftp_server.accounts]]\npartner = \"cardpush\"\nauthorized_keys = [{push_pub:?}]\n\
                     [[sftp_server.accounts]]\npartner = \"pgco\"\nauthorized_keys = [{pg_pub:?}]\n",
                    sport = sshd.port,
                    user = sshd.user,
                    key = sshd.client_key.display().to_string(),
                    fp = sshd.fingerprint(),
                    remote = remote.display().to_string(),
                    hk = host_key.display().to_string(),
                ),
            )
        })
        .collect();
    let mut servers: Vec<Option<Server>> = envs.iter().map(|e| Some(Server::start(e))).collect();
    wait_for("three live nodes", Duration::from_secs(60), || {
        let (_, v) = envs[0].json(&["nodes", "--json"]);
        v["nodes"].as_array().map_or(0, Vec::len) == 3
    });
    // Every node shows the same host key.
    for s in servers.iter().flatten() {
        s.wait_log("channel sftp-push");
    }
    let fingerprints: Vec<String> = servers
        .iter()
        .flatten()
        .map(|s| {
            let log = s.log_text();
            let at = log.find("\"host_key\":\"").expect("host key logged") + 12;
            log[at..].split('"').next().unwrap_or_default().to_string()
        })
        .collect();
    assert!(
        fingerprints.windows(2).all(|w| w[0] == w[1]),
        "{fingerprints:?}"
    );

    // Wave A of the pickup.
    let mut pulled = pickup_wave(&remote, 1, 60);

    // The push: distinct files, duplicates of earlier ones, drills, spread
    // over the three nodes; PG settlement CSVs with their control files.
    let uploads = tempfile::tempdir().expect("tempdir");
    let mut pushed: Vec<Drop> = Vec::new();
    let mut batches = vec![String::from("cd inbox\n"); 3];
    // Copies and drill copies go once their originals are recorded: a copy
    // still pending makes its original a duplicate, so which one is fed
    // would otherwise be a race (decided once, by the ledger).
    let mut copies = vec![String::from("cd inbox\n"); 3];
    let mut pg_batches = vec![String::from("cd inbox\n"); 3];
    for i in 0..100u16 {
        let seq = 1000 + i;
        let f = card(seq, u64::from(seq) * 10, 3);
        let path = uploads.path().join(f.file_name());
        std::fs::write(&path, f.render()).expect("write");
        batches[usize::from(i % 3)].push_str(&format!("put {}\n", path.display()));
        pushed.push(Drop {
            name: f.file_name(),
            verdict: "fed",
        });
        if i % 7 == 2 {
            // The same bytes under another name, to another node.
            let copy = f.file_name().replace(".dat", "_AGAIN.dat");
            copies[usize::from((i + 1) % 3)].push_str(&format!("put {} {copy}\n", path.display()));
            pushed.push(Drop {
                name: copy,
                verdict: "duplicate",
            });
        }
        if i % 10 == 4 {
            let drill = f.file_name().replace(".dat", "_DRILL.dat");
            copies[usize::from((i + 2) % 3)].push_str(&format!("put {} {drill}\n", path.display()));
            pushed.push(Drop {
                name: drill,
                verdict: "drill",
            });
        }
    }
    for k in 0..PG_PAIRS {
        let f = common::drops::pg(k);
        let (data, ctl) = f.render();
        let (dp, cp) = (
            uploads.path().join(f.file_name()),
            uploads.path().join(f.control_name()),
        );
        std::fs::write(&dp, data).expect("write");
        std::fs::write(&cp, ctl).expect("write");
        // The data file to one node, its control file to the next: the
        // two sessions run at once, so either half may come first.
        pg_batches[(k % 3) as usize].push_str(&format!("put {}\n", dp.display()));
        pg_batches[((k + 1) % 3) as usize].push_str(&format!("put {}\n", cp.display()));
        pushed.push(Drop {
            name: f.file_name(),
            verdict: "fed",
        });
    }
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (port, key, batch) = (ports[i], push_key.clone(), batches[i].clone());
            let (pk, pb) = (pg_key.clone(), pg_batches[i].clone());
            std::thread::spawn(move || {
                sftp_batch(port, &key, "cardpush", &batch);
                sftp_batch(port, &pk, "pgco", &pb);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("push thread");
    }
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (port, key, batch) = (ports[i], push_key.clone(), copies[i].clone());
            std::thread::spawn(move || {
                sftp_batch(port, &key, "cardpush", &batch);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("push thread");
    }

    // Kill the node holding the pickup lease while it is taking wave A.
    let db = pool(&ledger).await;
    let pulled_count = |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM files WHERE channel = 'sftp-pull'")
            .fetch_one(&db)
            .await
            .expect("count")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while pulled_count(db.clone()).await < 10 {
        assert!(std::time::Instant::now() < deadline, "no pickup started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease = "pickup:cardpull/van";
    let victim = {
        let mut found = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while found.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no pickup lease holder"
            );
            found = holder_of(&envs[0], lease, &servers);
        }
        found.expect("holder")
    };
    let (_, before) = envs[0].json(&["nodes", "--json"]);
    let generation_before = before["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["leases"].as_array().cloned().unwrap_or_default())
        .find(|l| l["name"] == lease)
        .and_then(|l| l["generation"].as_i64())
        .expect("generation");
    let at_kill = pulled_count(db.clone()).await;
    if let Some(s) = servers[victim].as_mut() {
        s.kill9();
    }
    eprintln!("killed node {victim} holding {lease} with {at_kill} pickup arrivals recorded");
    let victim_log = servers[victim].take().map(|s| s.log_text());
    let survivor = (victim + 1) % 3;

    // Another node takes the lease and goes on; wave B arrives meanwhile.
    pulled.extend(pickup_wave(&remote, 200, 60));
    wait_for(
        "another node to hold the pickup lease",
        Duration::from_secs(60),
        || holder_of(&envs[survivor], lease, &servers).is_some_and(|h| h != victim),
    );
    let (_, after) = envs[survivor].json(&["nodes", "--json"]);
    let generation_after = after["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["leases"].as_array().cloned().unwrap_or_default())
        .find(|l| l["name"] == lease)
        .and_then(|l| l["generation"].as_i64())
        .expect("generation");
    assert!(generation_after > generation_before);

    // Everything arrives and is judged.
    let expected = (pulled.len() + pushed.len()) as i64;
    assert!(expected >= 300, "{expected} files");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (files, received): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE verdict = 'received') FROM files",
        )
        .fetch_one(&db)
        .await
        .expect("count");
        if files >= expected && received == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{files} of {expected} files recorded, {received} not judged; victim's log:\n{}",
            victim_log.as_deref().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One arrival per file, with the verdict it deserves.
    for (channel, drops) in [("sftp-pull", &pulled), ("sftp-push", &pushed)] {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, verdict FROM files WHERE channel = $1 ORDER BY id")
                .bind(channel)
                .fetch_all(&db)
                .await
                .expect("files");
        assert_eq!(rows.len(), drops.len(), "{channel}: one arrival per file");
        for d in drops.iter() {
            let got: Vec<&(String, String)> = rows.iter().filter(|(n, _)| *n == d.name).collect();
            assert_eq!(got.len(), 1, "{channel} {}: arrivals {got:?}", d.name);
            assert_eq!(got[0].1, d.verdict, "{channel} {}", d.name);
        }
    }
    // Judged once: one decision per file.
    let twice: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT file_id, count(*) FROM events WHERE file_id IS NOT NULL AND kind <> 'received' \
         GROUP BY file_id HAVING count(*) <> 1",
    )
    .fetch_all(&db)
    .await
    .expect("events");
    assert!(twice.is_empty(), "files decided other than once: {twice:?}");
    // Fed at most once: the fed files' entries, each once.
    let fed_expected = pulled
        .iter()
        .chain(&pushed)
        .filter(|d| d.verdict == "fed")
        .count() as i64;
    let (fed, entries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM files WHERE verdict = 'fed'), (SELECT count(*) FROM entries)",
    )
    .fetch_one(&db)
    .await
    .expect("fed");
    assert_eq!(fed, fed_expected);
    // Card files carry 3 records, PG files 2.
    assert_eq!(
        entries,
        (fed_expected - PG_PAIRS as i64) * 3 + PG_PAIRS as i64 * 2
    );

    // Downloaded once: sshd saw one open per file, except the files the
    // killed node was reading when it died (at most its downloads in
    // flight), each read again, once, by its successor.
    let mut twice_read = Vec::new();
    for d in &pulled {
        let opens = sshd.read_opens(&remote.join(&d.name));
        assert!(opens >= 1, "{} never read", d.name);
        if opens > 1 {
            twice_read.push((d.name.clone(), opens));
        }
    }
    assert!(
        twice_read.len() <= settlegate::channels::sftp_pull::DOWNLOADS_IN_FLIGHT
            && twice_read.iter().all(|(_, n)| *n == 2),
        "read more than once: {twice_read:?}"
    );

    // The bytes are in the database, and `show` reads them on any node.
    let blobs: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs")
        .fetch_one(&db)
        .await
        .expect("blobs");
    assert!(blobs > 0);
    let first_id: i64 = sqlx::query_scalar("SELECT min(id) FROM files")
        .fetch_one(&db)
        .await
        .expect("id");
    let out = envs[survivor].run(&[
        "redeliver",
        &first_id.to_string(),
        "--reason",
        "check the store",
        "--json",
    ]);
    assert!(
        out.stdout.contains("duplicate") || out.code == 10,
        "a redelivery of a fed file is its duplicate, read from the database: {} {}",
        out.stdout,
        out.stderr
    );

    // `/receipts` on every live node shows every pushed file's verdict,
    // whichever node judged it.
    for (i, port) in ports.iter().enumerate() {
        if i == victim {
            continue;
        }
        let listed = sftp_batch(*port, &push_key, "cardpush", "ls -1 /receipts\n");
        let pg_listed = sftp_batch(*port, &pg_key, "pgco", "ls -1 /receipts\n");
        for d in &pushed {
            let receipt = format!("{}.verdict", d.name);
            assert!(
                listed.contains(&receipt) || pg_listed.contains(&receipt),
                "node {i}: /receipts lacks {receipt}"
            );
        }
    }
    sftp_batch(
        ports[survivor],
        &push_key,
        "cardpush",
        &format!(
            "get /receipts/{}.verdict {}\n",
            pushed[0].name,
            uploads.path().join("r").display()
        ),
    );
    let receipt = std::fs::read_to_string(uploads.path().join("r")).expect("receipt");
    assert!(
        receipt.contains(&format!("verdict={}", pushed[0].verdict)),
        "{receipt}"
    );

    // The killed node drops out of `nodes`; the others stay.
    wait_for(
        "the killed node to drop out",
        Duration::from_secs(60),
        || {
            let (_, v) = envs[survivor].json(&["nodes", "--json"]);
            v["nodes"].as_array().map_or(0, Vec::len) == 2
        },
    );
    for s in servers.iter_mut().flatten() {
        assert_eq!(s.stop(), 0);
    }
    db.close().await;
    ledger.drop_db().await;
}

/// A bank transfer request (payout) for day `k`, written under `dir`.
fn payout(dir: &Path, k: u64) -> (String, Vec<u8>) {
    let f = common::drops::bank(k);
    let bytes = f.render_request();
    let name = f.request_file_name();
    std::fs::write(dir.join(&name), &bytes).expect("write");
    (name, bytes)
}

/// 100 payouts dropped into the outboxes of three nodes sending to one
/// endpoint: each uploaded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_upload_each_delivery_once() {
    let Some(ledger) = pg_ledger().await else {
        return;
    };
    let sshd = Sshd::start_logging_opens();
    let upload = sshd.remote_dir("in");
    let envs: Vec<Env> = (0..3)
        .map(|_| {
            node_env(
                &ledger,
                &format!(
                    "[[partners]]\nid = \"payco\"\nformats = [\"bank-transfer-result\"]\noutbound_formats = [\"bank-transfer-request\"]\n\
                     [[partners.endpoints]]\nname = \"bank\"\nhost = \"127.0.0.1\"\nport = {}\nuser = {:?}\n\
                     key_file = {:?}\nhost_key = {:?}\nupload_dir = {:?}\nretries = 3\nretry_initial_seconds = 0.2\n\
                     retry_max_seconds = 1\nio_timeout_seconds = 10\n",
                    sshd.port,
                    sshd.user,
                    sshd.client_key.display().to_string(),
                    sshd.fingerprint(),
                    upload.display().to_string(),
                ),
            )
        })
        .collect();
    let mut servers: Vec<Server> = envs.iter().map(Server::start).collect();
    let staging = tempfile::tempdir().expect("tempdir");
    let mut sent = Vec::new();
    for k in 0..100u64 {
        let (name, bytes) = payout(staging.path(), k);
        let outbox = envs[(k % 3) as usize].data.join("outbox/payco");
        std::fs::create_dir_all(&outbox).expect("outbox");
        publish(&outbox, &name, &bytes);
        sent.push((name, bytes));
    }
    let db = pool(&ledger).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let delivered: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
                .fetch_one(&db)
                .await
                .expect("count");
        if delivered == 100 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{delivered} of 100 delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(rows, 100, "one delivery per payout");
    let log = sshd.sftp_log();
    for (name, bytes) in &sent {
        assert_eq!(&std::fs::read(upload.join(name)).expect("uploaded"), bytes);
        // Uploaded once: one file written and renamed into this name.
        let final_path = format!("new \"{}\"", upload.join(name).display());
        let renames = log.lines().filter(|l| l.contains(&final_path)).count();
        assert_eq!(
            renames,
            1,
            "{name}: renamed into place {renames} times; sshd logged:\n{}",
            log.lines()
                .filter(|l| l.contains(name.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for s in &mut servers {
        assert_eq!(s.stop(), 0);
    }
    db.close().await;
    ledger.drop_db().await;
}

/// A reader of `len` pseudo-random bytes (never held whole in memory).
struct Noise {
    left: u64,
    state: u64,
}

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hashes what passes through.
struct Tee<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: std::io::Read> std::io::Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The PostgreSQL store takes a 1 GiB blob in (streamed, a chunk at a
/// time) and gives the same bytes back, checked against their checksum;
/// bytes damaged in the database are refused on reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_round_trips_a_large_blob() {
    use sha2::Digest;
    use std::io::Read;
    let Some(ledger) = pg_ledger().await else {
        return;
    };
    let url = ledger.url.clone().expect("url");
    let dir = tempfile::tempdir().expect("tempdir");
    let l = settlegate::ledger::Ledger::open(Some(&url), dir.path())
        .await
        .expect("migrate");
    l.close().await;
    let store = settlegate::stage::ContentStore::open_database(&dir.path().join("store"), &url)
        .await
        .expect("store");
    let size: u64 = std::env::var("SETTLEGATE_HA_BLOB_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    let s2 = store.clone();
    let (stored, expected) = tokio::task::spawn_blocking(move || {
        let mut tee = Tee {
            inner: Noise {
                left: size,
                state: 0x9e37_79b9_7f4a_7c15,
            },
            hasher: sha2::Sha256::new(),
        };
        let stored = s2.put(&mut tee).expect("put");
        (stored, hex::encode(tee.hasher.finalize()))
    })
    .await
    .expect("join");
    assert_eq!(stored.checksum, expected);
    assert_eq!(stored.size, size);
    // Nothing of it stays on the local disk.
    let local: u64 = walk_size(&dir.path().join("store"));
    assert!(local < 1 << 20, "{local} bytes left on disk");

    let (s2, sum) = (store.clone(), stored.checksum.clone());
    let (read, back) = tokio::task::spawn_blocking(move || {
        let mut blob = s2.open_blob(&sum).expect("open");
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = blob.read(&mut buf).expect("read back");
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            n += k as u64;
        }
        (n, hex::encode(hasher.finalize()))
    })
    .await
    .expect("join");
    assert_eq!(read, size);
    assert_eq!(back, expected);

    // A small blob, then one byte of it changed behind the store's back.
    let s2 = store.clone();
    let small = tokio::task::spawn_blocking(move || s2.put(&b"H20261121 T00000000"[..]))
        .await
        .expect("join")
        .expect("put");
    let db = pool(&ledger).await;
    // The same bytes stored again (a re-send): nothing more is kept.
    let s2 = store.clone();
    let again = tokio::task::spawn_blocking(move || s2.put(&b"H20261121 T00000000"[..]))
        .await
        .expect("join")
        .expect("put again");
    assert_eq!(again.checksum, small.checksum);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM blob_chunks c WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE COALESCE(b.blob_key, b.checksum) = c.checksum)",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(orphans, 0, "chunks of no blob");
    sqlx::query("ALTER TABLE blob_chunks DISABLE TRIGGER blob_chunks_append_only")
        .execute(&db)
        .await
        .expect("disable trigger");
    sqlx::query(
        "UPDATE blob_chunks SET data = $2 WHERE checksum = (SELECT COALESCE(blob_key, checksum) FROM blobs WHERE checksum = $1)",
    )
        .bind(&small.checksum)
        .bind(&b"H20261121 T00000001"[..])
        .execute(&db)
        .await
        .expect("damage");
    let (s2, sum) = (store.clone(), small.checksum.clone());
    let err = tokio::task::spawn_blocking(move || s2.read_blob(&sum))
        .await
        .expect("join")
        .expect_err("damaged bytes are refused");
    assert!(err.to_string().contains("damaged"), "{err}");

    // A blob stored before chunks had keys of their own (as an older node
    // still writes it): its chunks under its checksum, no key.
    let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    sqlx::query("INSERT INTO blob_chunks (checksum, n, data) VALUES ($1, 0, $2)")
        .bind(hello)
        .bind(&b"hello"[..])
        .execute(&db)
        .await
        .expect("an old chunk");
    sqlx::query("INSERT INTO blobs (checksum, size, chunks) VALUES ($1, 5, 1)")
        .bind(hello)
        .execute(&db)
        .await
        .expect("an old blob");
    let s2 = store.clone();
    let old = tokio::task::spawn_blocking(move || s2.read_blob(hello))
        .await
        .expect("join")
        .expect("an older node's blob reads");
    assert_eq!(old, b"hello");

    // A chunk of the large blob gone: a reader at any offset (SFTP
    // `/outbox`) gets an error there, never a short file.
    sqlx::query(
        "DELETE FROM blob_chunks WHERE checksum = (SELECT COALESCE(blob_key, checksum) FROM blobs WHERE checksum = $1) AND n = 1",
    )
        .bind(&stored.checksum)
        .execute(&db)
        .await
        .expect("remove a chunk");
    let (s2, sum) = (store.clone(), stored.checksum.clone());
    let (first, missing, end) = tokio::task::spawn_blocking(move || {
        let mut blob = s2.open_blob(&sum).expect("open");
        let mut buf = vec![0u8; 4096];
        let first = blob.read_at(&mut buf, 0).map_err(|e| e.to_string());
        let missing = blob
            .read_at(&mut buf, (1 << 20) + 10)
            .map_err(|e| e.to_string());
        let end = blob.read_at(&mut buf, size).map_err(|e| e.to_string());
        (first, missing, end)
    })
    .await
    .expect("join");
    assert_eq!(first, Ok(4096), "chunk 0 is there");
    let missing = missing.expect_err("a missing chunk is an error");
    assert!(missing.contains("damaged"), "{missing}");
    assert_eq!(end, Ok(0), "the end of the blob reads as its end");
    db.close().await;
    drop(store);
    ledger.drop_db().await;
}

fn walk_size(dir: &PathBuf) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += walk_size(&p);
            } else if let Ok(m) = p.metadata() {
                total += m.len();
            }
        }
    }
    total
}

/// A node that lost its lease records nothing under it: the fence is
/// checked by the database in the recording transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_fences_the_write() {
    use settlegate::ledger::{Ledger, LedgerError, NewArrival};
    let Some(ledger) = pg_ledger().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(ledger.url.as_deref(), dir.path())
        .await
        .expect("open");
    let a = l
        .acquire_lease("pickup:p/e", "node-a", 500)
        .await
        .expect("acquire")
        .expect("free");
    assert!(
        l.acquire_lease("pickup:p/e", "node-b", 500)
            .await
            .expect("acquire")
            .is_none(),
        "held by a"
    );
    // a stops renewing; b takes it once it expired.
    let mut b = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.is_none() {
        assert!(std::time::Instant::now() < deadline, "lease never expired");
        b = l
            .acquire_lease("pickup:p/e", "node-b", 30_000)
            .await
            .expect("acquire");
    }
    let b = b.expect("b");
    assert!(b.generation > a.generation);
    assert!(!l.renew_lease(&a, 500).await.expect("renew"), "a lost it");
    let arrival = |fence| NewArrival {
        partner: "cardco",
        channel: settlegate::model::Channel::SftpPull,
        endpoint: Some("e"),
        source_path: None,
        name: "CSTL_031_20261121_0001.dat",
        received_at: chrono::Utc::now(),
        size: 1,
        checksum: "00",
        sidecar_checksum: None,
        actor: "test",
        reason: None,
        remote: None,
        claim: None,
        redelivery_of: None,
        fence,
        takes_held: &[],
    };
    match l.record_arrival(&arrival(Some(&a))).await {
        Err(LedgerError::LeaseLost(name)) => assert_eq!(name, "pickup:p/e"),
        other => panic!("a's write must be refused: {other:?}"),
    }
    l.record_arrival(&arrival(Some(&b)))
        .await
        .expect("b's write is recorded");
    let files: i64 = {
        let db = pool(&ledger).await;
        let n = sqlx::query_scalar("SELECT count(*) FROM files")
            .fetch_one(&db)
            .await
            .expect("count");
        db.close().await;
        n
    };
    assert_eq!(files, 1);
    l.close().await;
    ledger.drop_db().await;
}

/// A claim on one piece of work (judging a file) is given up when the work
/// holding it is dropped midway (cancelled), not renewed for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_dropped_midway_is_given_up() {
    use settlegate::cluster::Lease;
    use settlegate::ledger::Ledger;
    let Some(ledger) = pg_ledger().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(ledger.url.as_deref(), dir.path())
        .await
        .expect("open");
    let work = {
        let l = l.clone();
        tokio::spawn(async move {
            let claimed = Lease::claim(&l, "judge:42", Duration::from_secs(3600))
                .hold_claim()
                .await
                .expect("claim")
                .expect("free");
            std::future::pending::<()>().await;
            drop(claimed);
        })
    };
    let held = |l: Ledger| async move {
        l.held_leases()
            .await
            .expect("leases")
            .iter()
            .any(|r| r.name == "judge:42")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !held(l.clone()).await {
        assert!(std::time::Instant::now() < deadline, "never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    work.abort();
    let _ = work.await;
    // Held for an hour unless given up: gone means given up.
    while held(l.clone()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim outlived its work"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    l.close().await;
    ledger.drop_db().await;
}

/// A file ingested by hand into the PostgreSQL store is verified as it
/// streams into the database (not read back out of it): a valid one is
/// fed, a spoiled one is invalid with its first error, the same bytes again
/// are a duplicate, and the stored bytes read back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_into_the_postgres_store_is_verified_on_the_way_in() {
    let Some(ledger) = pg_ledger().await else {
        return;
    };
    let env = node_env(&ledger, "");
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).expect("dir");
    // Several chunks' worth, so the pieces the verifier reads span chunks.
    let f = card(1, 1, 20_000);
    let good = dir.join(f.file_name());
    let bytes = f.render();
    assert!(bytes.len() > 3 << 20, "{} bytes", bytes.len());
    std::fs::write(&good, &bytes).expect("write");
    let ingest = |path: &Path| {
        let out = env.run(&[
            "ingest",
            "--partner",
            "cardco",
            "--json",
            path.to_str().expect("utf-8 path"),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
        v
    };
    let out = Command::new(env!("CARGO_BIN_EXE_settlegate"))
        .arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&env.data)
        .args(["--ledger", ledger.url.as_deref().expect("url")])
        .args(["ingest", "--partner", "cardco", "--json"])
        .arg(&good)
        .env("RUST_LOG", "settlegate=debug")
        .output()
        .expect("ingest");
    let log = String::from_utf8_lossy(&out.stderr);
    let fed: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(fed["verdict"], "fed", "{fed}");
    assert!(
        log.contains("verified on the way in"),
        "judged from the facts found while streaming into the database: {log}"
    );
    let again = ingest(&good);
    assert_eq!(again["verdict"], "duplicate", "{again}");

    // The trailer's record count spoiled (its last digit; the trailer is
    // the last 202 bytes): verified to the end, then invalid.
    let spoiled = card(2, 1, 20_000);
    let mut spoiled_bytes = spoiled.render();
    let at = spoiled_bytes.len() - 202 + 7;
    spoiled_bytes[at] = if spoiled_bytes[at] == b'9' {
        b'0'
    } else {
        spoiled_bytes[at] + 1
    };
    let bad = dir.join(spoiled.file_name());
    std::fs::write(&bad, &spoiled_bytes).expect("write");
    let invalid = ingest(&bad);
    assert_eq!(invalid["verdict"], "invalid", "{invalid}");
    assert!(
        invalid["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("trailer"),
        "{invalid}"
    );

    // The bytes in the database are the file's.
    let store = settlegate::stage::ContentStore::open_database(
        &env.data.join("store"),
        ledger.url.as_deref().expect("url"),
    )
    .await
    .expect("store");
    let sum = fed["checksum"].as_str().expect("checksum").to_string();
    let back = tokio::task::spawn_blocking(move || store.read_blob(&sum))
        .await
        .expect("join")
        .expect("read back");
    assert_eq!(back, bytes);
    ledger.drop_db().await;
}
