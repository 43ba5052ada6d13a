//! Running the gateway in production: `check` (every problem at once;
//! `--connect` against a real sshd), the onboarding helpers (`hash-password`
//! accepted by the SFTP server, `keygen`, `host-key`), reload on SIGHUP with
//! a session and an upload in progress, and `migrate --check` on older and
//! newer ledgers.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Server, wait_for};
use common::sshd::Sshd;
use common::{Env, TestLedger, root};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The binary with only these arguments (no test environment).
fn settlegate(args: &[&str], stdin: Option<&str>) -> common::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_settlegate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run settlegate");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("settlegate output");
    common::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A client run with a time limit (a hung client fails the test, not CI).
fn client(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start client");
    let deadline = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("client {cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("client output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn curl(args: &[&str]) -> (bool, String) {
    client(
        Command::new("curl")
            .args(["-sS", "-k", "--connect-timeout", "20"])
            .args(args)
            .stdin(Stdio::null()),
        Duration::from_secs(120),
    )
}

fn ssh_opts(port: u16, key: &Path) -> Vec<String> {
    [
        "-P",
        &port.to_string(),
        "-i",
        &key.display().to_string(),
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn receipt(env: &Env, partner: &str, name: &str) -> String {
    std::fs::read_to_string(
        env.data
            .join("receipts")
            .join(partner)
            .join(format!("{name}.verdict")),
    )
    .unwrap_or_default()
}

fn card_file(dir: &Path, seq: u16, first: u64, n: u64) -> PathBuf {
    let f = common::card(seq, first, n);
    let p = dir.join(f.file_name());
    std::fs::write(&p, f.render()).expect("write card file");
    p
}

fn hash_password(password: &str) -> String {
    let out = settlegate(&["hash-password"], Some(&format!("{password}\n")));
    assert_eq!(out.code, 0, "{out:?}");
    let hash = out.stdout.trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(
        !out.stdout.contains(password),
        "the password is never printed"
    );
    hash
}

/// A configuration with a problem in every part is reported whole: each
/// problem names its file, key and partner, and nothing stops at the first.
#[test]
fn check_names_every_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let formats = tmp.path().join("formats");
    std::fs::create_dir(&formats).expect("formats dir");
    for f in ["card-settlement.toml", "pg-settlement-csv.toml"] {
        std::fs::copy(root().join("formats").join(f), formats.join(f)).expect("copy spec");
    }
    std::fs::write(
        formats.join("broken.toml"),
        "id = \"broken\"\nnonsense = 1\n",
    )
    .expect("broken spec");
    let config = tmp.path().join("settlegate.toml");
    std::fs::write(
        &config,
        r#"
timezone = "KST"
receipt_mode = "0999"

[[partners]]
id = "cardco"
formats = ["card-settlement"]
drill_name_patterns = ["(unclosed"]
drill_channels = ["fax"]

[[partners]]
id = "pgco"
formats = ["pg-settlement-csv", "no-such-format"]

[[partners.endpoints]]
name = "primary"
host = "sftp.pgco.example"
user = "sg"
key_file = "keys/pgco"

[watch]
rescan_seconds = 0.001

[sftp_server]
listen = "127.0.0.1:2222"

[[sftp_server.accounts]]
partner = "cardco"
password_hash = "hunter2"

[[sftp_server.accounts]]
partner = "nobody"
authorized_keys = ["ssh-ed25519 AAAA"]
"#,
    )
    .expect("config");
    let cfg = config.display().to_string();
    let out = settlegate(&["--config", &cfg, "check", "--json"], None);
    assert_eq!(out.code, 2, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().expect("problems");
    let find = |needle: &str| {
        problems
            .iter()
            .find(|p| {
                p["message"].as_str().unwrap_or("").contains(needle)
                    || p["key"].as_str().unwrap_or("").contains(needle)
            })
            .unwrap_or_else(|| panic!("no problem about {needle:?}: {problems:#?}"))
            .clone()
    };
    let tz = find("timezone");
    assert_eq!(tz["file"], cfg.as_str());
    assert!(tz["partner"].is_null());
    find("receipt_mode");
    let pattern = find("drill_name_patterns");
    assert_eq!(pattern["partner"], "cardco");
    let channel = find("drill_channels");
    assert_eq!(channel["partner"], "cardco");
    let endpoint = find("host key must be pinned");
    assert_eq!(endpoint["partner"], "pgco");
    assert!(
        endpoint["key"]
            .as_str()
            .unwrap_or("")
            .contains("endpoint primary"),
        "{endpoint}"
    );
    find("rescan_seconds");
    let hash = find("PHC");
    assert_eq!(hash["partner"], "cardco");
    assert!(!out.stdout.contains("hunter2"), "a secret is never printed");
    let nobody = find("unknown partner");
    assert_eq!(nobody["partner"], "nobody");
    find("authorized_keys[0]");
    let spec = find("nonsense");
    assert_eq!(
        spec["file"],
        formats.join("broken.toml").display().to_string()
    );
    // The ten above (pgco, left out for its endpoint, has its formats
    // checked once it is valid); one line each in text.
    assert_eq!(problems.len(), 10, "{problems:#?}");
    let text = settlegate(&["--config", &cfg, "check"], None);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout.starts_with(&format!(
            "{} problem(s) in the configuration",
            problems.len()
        )),
        "{}",
        text.stdout
    );
    assert_eq!(text.stdout.lines().count(), 11, "{}", text.stdout);

    // Fixed, the same file checks clean, exit 0.
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "formats_dir = {:?}\n[[partners]]\nid = \"cardco\"\nformats = [\"card-settlement\"]\n",
            root().join("formats").display().to_string()
        ),
    )
    .expect("good config");
    let ok = settlegate(&["--config", &good.display().to_string(), "check"], None);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.starts_with("configuration ok"), "{}", ok.stdout);
}

/// `check --connect` against a real OpenSSH server: a good endpoint (listed
/// and written to, nothing left behind or taken), a wrong host key pin, a
/// missing pickup directory and an upload directory that cannot be written.
#[test]
fn check_connect_against_sshd() {
    let sshd = Sshd::start();
    let pickup = sshd.remote_dir("outbox");
    let upload = sshd.remote_dir("inbox");
    std::fs::write(pickup.join("CSTL_waiting.dat"), b"not taken").expect("waiting file");
    let plain = sshd.remote_dir("x").join("plain-file");
    std::fs::write(&plain, b"a file, not a directory").expect("plain file");
    let other_fp = format!("SHA256:{}", "A".repeat(43));
    let ep = |name: &str, pin: &str, dirs: &str| {
        format!(
            "[[partners.endpoints]]\nname = {name:?}\nhost = \"127.0.0.1\"\nport = {}\nuser = {:?}\nkey_file = {:?}\nhost_key = {pin:?}\n{dirs}\n",
            sshd.port,
            sshd.user,
            sshd.client_key.display().to_string()
        )
    };
    let fp = sshd.fingerprint();
    let extra = format!(
        "[[partners]]\nid = \"cardpull\"\nformats = [\"card-settlement\"]\n{}{}{}{}",
        ep(
            "good",
            &fp,
            &format!(
                "remote_dir = {:?}\nupload_dir = {:?}",
                pickup.display().to_string(),
                upload.display().to_string()
            )
        ),
        ep(
            "wrongkey",
            &other_fp,
            &format!("remote_dir = {:?}", pickup.display().to_string())
        ),
        ep(
            "nodir",
            &fp,
            &format!(
                "remote_dir = {:?}",
                sshd.dir.path().join("missing").display().to_string()
            )
        ),
        ep(
            "readonly",
            &fp,
            &format!("upload_dir = {:?}", plain.display().to_string())
        ),
    );
    let env = Env::new(&TestLedger::sqlite(), &extra);
    let (code, v) = env.json(&["check", "--connect", "--json"]);
    assert_eq!(code, 4, "{v:#}");
    let endpoints = v["endpoints"].as_array().expect("endpoints");
    let by = |name: &str| {
        endpoints
            .iter()
            .find(|e| e["endpoint"] == name)
            .unwrap_or_else(|| panic!("no endpoint {name}: {v:#}"))
            .clone()
    };
    let step = |e: &serde_json::Value, what: &str| {
        e["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["check"] == what))
            .unwrap_or_else(|| panic!("no step {what}: {e:#}"))
            .clone()
    };
    let good = by("good");
    assert_eq!(good["ok"], true, "{good:#}");
    assert!(
        step(&good, "remote_dir")["result"]
            .as_str()
            .unwrap_or("")
            .contains("1 entries"),
        "{good:#}"
    );
    assert_eq!(step(&good, "upload_dir")["ok"], true);
    let wrong = by("wrongkey");
    assert_eq!(wrong["ok"], false);
    let login = step(&wrong, "login");
    assert!(
        login["result"]
            .as_str()
            .unwrap_or("")
            .contains("HOST KEY CHANGED"),
        "{wrong:#}"
    );
    let nodir = by("nodir");
    assert_eq!(step(&nodir, "login")["ok"], true);
    let listed = step(&nodir, "remote_dir");
    assert_eq!(listed["ok"], false);
    assert!(
        listed["result"]
            .as_str()
            .unwrap_or("")
            .contains("no such directory"),
        "{nodir:#}"
    );
    let readonly = by("readonly");
    let up = step(&readonly, "upload_dir");
    assert_eq!(up["ok"], false, "{readonly:#}");
    assert!(
        up["result"].as_str().unwrap_or("").contains("not writable"),
        "{readonly:#}"
    );
    // Nothing taken, nothing left behind, nothing recorded.
    assert_eq!(
        std::fs::read(pickup.join("CSTL_waiting.dat")).expect("still there"),
        b"not taken"
    );
    assert_eq!(
        std::fs::read_dir(&upload).expect("upload dir").count(),
        0,
        "the probe file was removed"
    );
    assert!(
        !env.data.join("ledger.db").exists(),
        "check opens no ledger"
    );

    // Text: one line per endpoint and step.
    let text = env.run(&["check", "--connect"]);
    assert_eq!(text.code, 4);
    assert!(
        text.stdout.contains("cardpull/good (127.0.0.1:"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("cardpull/wrongkey"), "{}", text.stdout);
    assert!(text.stdout.contains("FAILED"), "{}", text.stdout);
}

/// `keygen` writes a pair ssh-keygen reads; `host-key` prints the server's
/// fingerprint and a known_hosts line that OpenSSH accepts for it.
#[test]
fn keygen_and_host_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("pickup_ed25519");
    let out = settlegate(
        &[
            "keygen",
            &key.display().to_string(),
            "--comment",
            "settlegate@cardco",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let public = out.stdout.trim().to_string();
    assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
    assert!(public.ends_with("settlegate@cardco"), "{public}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // OpenSSH derives the same public key from the private one.
    let derived = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .output()
        .expect("ssh-keygen -y");
    let derived = String::from_utf8_lossy(&derived.stdout);
    assert_eq!(
        derived.split_whitespace().nth(1),
        public.split_whitespace().nth(1)
    );
    // Never replaces a key.
    let again = settlegate(&["keygen", &key.display().to_string()], None);
    assert_eq!(again.code, 2, "{again:?}");

    // host-key, then the server serves that key.
    let port = free_port();
    let env = Env::new(
        &TestLedger::sqlite(),
        &format!("[sftp_server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let hk = env.run(&["host-key"]);
    assert_eq!(hk.code, 0, "{hk:?}");
    let mut lines = hk.stdout.lines();
    let fingerprint = lines.next().expect("fingerprint").to_string();
    let known = lines.next().expect("known_hosts line").to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    assert!(
        known.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 ")),
        "{known}"
    );
    let _server = Server::start(&env);
    let scanned = Command::new("ssh-keyscan")
        .args(["-p", &port.to_string(), "-t", "ed25519", "127.0.0.1"])
        .output()
        .expect("ssh-keyscan");
    let scanned = String::from_utf8_lossy(&scanned.stdout);
    assert!(
        scanned.lines().any(|l| l.trim() == known),
        "ssh-keyscan: {scanned}\nhost-key: {known}"
    );
}

/// The server's configuration with accounts (partner, key line, hash).
fn sftp_section(port: u16, accounts: &[(&str, Option<&str>, Option<&str>)]) -> String {
    let mut s = format!("[sftp_server]\nlisten = \"127.0.0.1:{port}\"\nmax_failed_logins = 100\n");
    for (partner, key, hash) in accounts {
        s.push_str(&format!(
            "[[sftp_server.accounts]]\npartner = \"{partner}\"\n"
        ));
        if let Some(k) = key {
            s.push_str(&format!("authorized_keys = [{k:?}]\n"));
        }
        if let Some(h) = hash {
            s.push_str(&format!("password_hash = {h:?}\n"));
        }
    }
    s
}

/// Replace the `[sftp_server]` part of the test configuration.
fn rewrite_sftp(env: &Env, section: &str) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    let start = text.find("[sftp_server]").expect("has [sftp_server]");
    let new = format!("{}{section}", &text[..start]);
    let tmp = env.config.with_extension("new");
    std::fs::write(&tmp, new).expect("write config");
    std::fs::rename(&tmp, &env.config).expect("replace config");
}

fn reload_events(env: &Env) -> Vec<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ledger = settlegate::ledger::Ledger::open(env.ledger.as_deref(), &env.data)
            .await
            .expect("ledger");
        let rows = ledger.gateway_events("reload").await.expect("events");
        ledger.close().await;
        rows.into_iter()
            .map(|r| serde_json::from_str(r.details.as_deref().unwrap_or("{}")).expect("details"))
            .collect()
    })
}

/// A password hashed by `hash-password` logs in; SIGHUP adds an account
/// (hash-password's) that then logs in while an upload in another session
/// goes on and completes; a broken configuration on reload is refused and
/// the running one keeps serving; a removed account cannot log in again;
/// each reload is an audit event naming what changed.
#[test]
fn reload_adds_and_removes_accounts_without_cutting_sessions() {
    let port = free_port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("cardco");
    let out = settlegate(&["keygen", &key.display().to_string()], None);
    assert_eq!(out.code, 0, "{out:?}");
    let card_key = out.stdout.trim().to_string();
    let env = Env::new(
        &TestLedger::sqlite(),
        &format!(
            "[[partners]]\nid = \"bankpush\"\nformats = [\"card-settlement\"]\n{}",
            sftp_section(port, &[("cardco", Some(&card_key), None)])
        ),
    );
    let server = Server::start(&env);
    let url = format!("sftp://127.0.0.1:{port}");

    // Before the reload bankpush has no account.
    let hash = hash_password("correct horse battery");
    let (ok, _) = curl(&[
        "-u",
        "bankpush:correct horse battery",
        &format!("{url}/receipts/"),
    ]);
    assert!(!ok, "no account yet");

    // An upload in progress in one session: sftp reading its commands from
    // a pipe, throttled, so the session is open across the reload.
    let big = card_file(tmp.path(), 1, 0, 20_000);
    let big_name = big
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let mut session = Command::new("sftp")
        .args(["-l", "8000", "-b", "-"])
        .args(ssh_opts(port, &key))
        .arg("cardco@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sftp session");
    let mut commands = session.stdin.take().expect("stdin");
    writeln!(commands, "put {} /inbox/", big.display()).expect("put");
    server.wait_log("sftp login");

    // Reload through the pid file: bankpush gets a password account.
    rewrite_sftp(
        &env,
        &sftp_section(
            port,
            &[
                ("cardco", Some(&card_key), None),
                ("bankpush", None, Some(&hash)),
            ],
        ),
    );
    let r = env.run(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    server.wait_log("configuration reloaded");
    let small = card_file(tmp.path(), 2, 900_000, 3);
    let small_name = small
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let (ok, msg) = curl(&[
        "-u",
        "bankpush:correct horse battery",
        "-T",
        &small.display().to_string(),
        &format!("{url}/inbox/"),
    ]);
    assert!(
        ok,
        "the new account logs in and uploads: {msg}\n{}",
        server.log_text()
    );
    let (bad, _) = curl(&["-u", "bankpush:wrong", &format!("{url}/receipts/")]);
    assert!(!bad, "a wrong password is refused");

    // The first session's upload completes, and the session goes on.
    let second = card_file(tmp.path(), 3, 500_000, 3);
    writeln!(commands, "put {} /inbox/", second.display()).expect("put");
    drop(commands);
    let done = session.wait_with_output().expect("sftp ends");
    assert!(
        done.status.success(),
        "the session survived the reload: {}\n{}",
        String::from_utf8_lossy(&done.stderr),
        server.log_text()
    );
    let second_name = second
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    server.wait_until("three receipts", Duration::from_secs(60), || {
        receipt(&env, "cardco", &big_name).contains("verdict=fed")
            && receipt(&env, "cardco", &second_name).contains("verdict=fed")
            && receipt(&env, "bankpush", &small_name).contains("verdict=")
    });

    // A broken configuration is refused; the running one keeps serving.
    let good = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!("{good}\n[[sftp_server.accounts]]\npartner = \"ghost\"\npassword_hash = \"x\"\n"),
    )
    .expect("broken config");
    let refused = env.run(&["reload"]);
    assert_eq!(refused.code, 2, "reload checks first: {refused:?}");
    assert!(refused.stderr.contains("ghost"), "{refused:?}");
    // SIGHUP straight to the process: serve checks too.
    let pid = std::fs::read_to_string(env.data.join("serve.pid")).expect("pid file");
    let status = Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    server.wait_log("reload refused");
    let (ok, msg) = curl(&[
        "-u",
        "bankpush:correct horse battery",
        &format!("{url}/receipts/"),
    ]);
    assert!(ok, "the running configuration still serves: {msg}");

    // bankpush removed: it cannot log in again; cardco still can.
    rewrite_sftp(
        &env,
        &sftp_section(port, &[("cardco", Some(&card_key), None)]),
    );
    let r = env.run(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    server.wait_log_count("configuration reloaded", 2);
    let (ok, _) = curl(&[
        "-u",
        "bankpush:correct horse battery",
        &format!("{url}/receipts/"),
    ]);
    assert!(!ok, "a removed account cannot log in");
    let (ok, msg) = client(
        Command::new("sftp")
            .args(["-b", "-"])
            .args(ssh_opts(port, &key))
            .arg("cardco@127.0.0.1")
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert!(ok, "cardco still logs in: {msg}");

    // Each reload taken is an audit event saying what changed.
    let events = reload_events(&env);
    assert_eq!(events.len(), 2, "{events:?}");
    let changes = |e: &serde_json::Value| e["changes"].to_string();
    assert!(
        changes(&events[0]).contains("sftp account bankpush (partner bankpush) added"),
        "{events:?}"
    );
    assert!(
        changes(&events[1]).contains("sftp account bankpush removed"),
        "{events:?}"
    );
    assert!(
        !format!("{events:?}").contains("argon2"),
        "no secret in the audit log"
    );
}

/// Newer partners, formats' schedules and watched folders follow a reload:
/// a partner added by SIGHUP gets its inbox, and a file dropped there is fed.
#[test]
fn reload_adds_a_partner_with_its_inbox() {
    let env = Env::new(&TestLedger::sqlite(), "");
    let mut server = Server::start(&env);
    assert!(
        env.data.join("serve.pid").exists(),
        "serve writes its pid file"
    );
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!("{text}\n[[partners]]\nid = \"newcard\"\nformats = [\"card-settlement\"]\n"),
    )
    .expect("config");
    let r = env.run(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    server.wait_log("configuration reloaded");
    let inbox = env.data.join("inbox").join("newcard");
    wait_for("the new inbox", Duration::from_secs(30), || inbox.is_dir());
    let f = common::card(7, 0, 3);
    std::fs::write(inbox.join(f.file_name()), f.render()).expect("drop");
    server.wait_until(
        "the new partner's file fed",
        Duration::from_secs(60),
        || receipt(&env, "newcard", &f.file_name()).contains("verdict=fed"),
    );
    assert_eq!(server.stop(), 0);
    assert!(!env.data.join("serve.pid").exists(), "removed at exit");
    let r = env.run(&["reload"]);
    assert_eq!(r.code, 1, "no serve to reload: {r:?}");
    assert!(r.stderr.contains("no running serve"), "{r:?}");
}

/// Apply this version's migrations up to `upto` only: a ledger an older
/// version left.
async fn older_ledger(url: &str, upto: i64) {
    use sqlx::migrate::Migrator;
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let migrator = Migrator::new(root().join("migrations").join(backend))
        .await
        .expect("migrations");
    let older = Migrator {
        migrations: std::borrow::Cow::Owned(
            migrator
                .iter()
                .filter(|m| m.version <= upto)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    if backend == "sqlite" {
        let opts: sqlx::sqlite::SqliteConnectOptions = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .expect("url")
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
        older.run(&pool).await.expect("older migrations");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        older.run(&pool).await.expect("older migrations");
        pool.close().await;
    }
}

async fn migrate_check(t: TestLedger) {
    let mut env = Env::new(&t, "");
    std::fs::create_dir_all(&env.data).expect("data dir");
    let url = t
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", env.data.join("ledger.db").display()));
    env.ledger = Some(url.clone());
    older_ledger(&url, 3).await;
    let (code, v) = env.json(&["migrate", "--check", "--json"]);
    assert_eq!(code, 7, "{v:#}");
    assert_eq!(v["state"], "behind");
    assert!(
        v["pending"]
            .as_array()
            .is_some_and(|p| p.iter().any(|n| n == 4)),
        "{v:#}"
    );
    let text = env.run(&["migrate", "--check"]);
    assert!(
        text.stdout.contains("is behind: migration(s) 0004"),
        "{text:?}"
    );

    let up = env.run(&["migrate"]);
    assert_eq!(up.code, 0, "{up:?}");
    let (code, v) = env.json(&["migrate", "--check", "--json"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["state"], "current");

    // A newer version's migration in the ledger: this one refuses it.
    let ledger = settlegate::ledger::Ledger::open(Some(&url), &env.data)
        .await
        .expect("open");
    let checksum = if url.starts_with("sqlite") {
        "X'00'"
    } else {
        "'\\x00'::bytea"
    };
    settlegate::ledger::execute_raw(
        &ledger,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (9001, 'from a newer settlegate', CURRENT_TIMESTAMP, TRUE, {checksum}, 0)"
        ),
    )
    .await
    .expect("a newer migration row");
    ledger.close().await;
    let (code, v) = env.json(&["migrate", "--check", "--json"]);
    assert_eq!(code, 8, "{v:#}");
    assert_eq!(v["state"], "ahead");
    let files = env.run(&["files"]);
    assert_eq!(files.code, 8, "{files:?}");
    assert!(files.stderr.contains("9001"), "{files:?}");
    assert!(files.stderr.contains("refusing to run on it"), "{files:?}");
    t.drop_db().await;
}

/// A ledger an older version fed, entries of files interleaved: after the
/// upgrade each file's entries are found by the ids they hold, its
/// originals and (for the superseded one) its reversals, and nothing else.
async fn entries_found_after_upgrade(t: TestLedger) {
    let env = Env::new(&t, "");
    std::fs::create_dir_all(&env.data).expect("data dir");
    let url = t
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", env.data.join("ledger.db").display()));
    older_ledger(&url, 16).await;
    let at = "'2026-11-22 01:00:00+00:00'";
    let file = |name: &str, verdict: &str| {
        format!(
            "INSERT INTO files (partner, channel, name, received_at, size, checksum, verdict) \
             VALUES ('cardco', 'manual', '{name}', {at}, 1, 'c-{name}', '{verdict}')"
        )
    };
    let entry = |(file, no, amount, kind, by): Spec| {
        let by = by.map_or("NULL".to_string(), |b| b.to_string());
        format!(
            "INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, reversed_by, fields) \
             VALUES ({file}, 'cardco', 'card-settlement', '2026-11-21', {no}, 'k{file}-{no}', '{amount}', '{kind}', {by}, '{{\"no\":{no}}}')"
        )
    };
    type Spec = (i64, i64, &'static str, &'static str, Option<i64>);
    // a (1) fed 2, 3, 4 with b (2) fed between; c (3) superseded a.
    let entries: [Spec; 10] = [
        (1, 2, "1.00", "original", Some(3)),
        (2, 2, "5.00", "original", None),
        (1, 3, "2.00", "original", Some(3)),
        (1, 4, "3.00", "original", Some(3)),
        (2, 3, "6.00", "original", None),
        (1, 2, "-1.00", "reversal", None),
        (1, 3, "-2.00", "reversal", None),
        (1, 4, "-3.00", "reversal", None),
        (3, 2, "1.50", "original", None),
        (3, 3, "2.00", "original", None),
    ];
    let statements: Vec<String> = [file("a", "superseded"), file("b", "fed"), file("c", "fed")]
        .into_iter()
        .chain(entries.iter().map(|e| entry(*e)))
        .collect();
    let raw = RawLedger::connect(&url).await;
    for sql in &statements {
        raw.execute(sql).await.expect(sql);
    }
    let before = raw.entries().await;
    let expected: Vec<EntryRow> = entries
        .iter()
        .zip(1..)
        .map(|(&(file, no, amount, kind, by), id)| EntryRow {
            id,
            file_id: file,
            partner: "cardco".into(),
            format: "card-settlement".into(),
            business_date: "2026-11-21".into(),
            record_no: no,
            record_key: format!("k{file}-{no}"),
            amount: amount.into(),
            kind: kind.into(),
            reversed_by: by,
            fields: format!("{{\"no\":{no}}}"),
        })
        .collect();
    assert_eq!(before, expected, "{}", t.backend);
    let ledger = settlegate::ledger::Ledger::open(Some(&url), &env.data)
        .await
        .expect("open and migrate");
    for (id, originals, named) in [
        (1, vec![2, 3, 4], 6),
        (2, vec![2, 3], 2),
        (3, vec![2, 3], 2),
    ] {
        assert_eq!(
            common::fed_record_nos(&ledger, id).await,
            originals,
            "{} file {id}",
            t.backend
        );
        assert_eq!(
            ledger.entry_count(id).await.expect("count"),
            named,
            "{} file {id}",
            t.backend
        );
    }
    // SQLite rebuilt the table (migration 0018): every row, every column,
    // under the same id; its indexes and triggers; and every guard refuses.
    assert_eq!(raw.entries().await, expected, "{}", t.backend);
    if t.url.is_none() {
        assert_eq!(
            raw.sqlite_objects_on_entries().await,
            [
                "index entries_business_date",
                "index entries_fed_record_key",
                "trigger entries_no_delete",
                "trigger entries_only_reverse",
            ],
        );
    }
    for (sql, refusal) in [
        (
            "DELETE FROM entries WHERE id = 2".to_string(),
            "append-only",
        ),
        (
            "UPDATE entries SET amount = '9.00' WHERE id = 2".to_string(),
            "append-only",
        ),
        (entry((2, 2, "5.00", "original", None)), "unique"),
        (entry((3, 3, "2.00", "original", None)), "unique"),
        (entry((99, 9, "1.00", "original", None)), "foreign key"),
        (entry((2, 9, "1.00", "original", Some(99))), "foreign key"),
    ] {
        let r = settlegate::ledger::execute_raw(&ledger, &sql).await;
        let msg = r.expect_err(&sql).to_string().to_lowercase();
        assert!(refused_for(&msg, refusal), "{}: {sql}: {msg}", t.backend);
    }
    // In a transaction, SQLite checks an entry's file at commit (so a
    // multi-row insert keeps no statement journal), PostgreSQL at the end of
    // the statement; either way the transaction does not commit.
    let ghost = entry((99, 9, "1.00", "original", None));
    let msg = raw.in_transaction(&ghost).await.to_lowercase();
    let when = if t.url.is_none() {
        "commit"
    } else {
        "statement"
    };
    assert!(msg.starts_with(when), "{}: {msg}", t.backend);
    assert!(refused_for(&msg, "foreign key"), "{}: {msg}", t.backend);
    assert_eq!(raw.entries().await, expected, "{}", t.backend);
    raw.close().await;
    ledger.close().await;
    t.drop_db().await;
}

/// Whether a refusal's message names what refused it.
fn refused_for(msg: &str, refusal: &str) -> bool {
    match refusal {
        "unique" => msg.contains("unique") || msg.contains("duplicate key"),
        "foreign key" => msg.contains("foreign key") || msg.contains("name a file"),
        _ => msg.contains(refusal),
    }
}

/// A ledger's table of entries, read as text where the dialects differ.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct EntryRow {
    id: i64,
    file_id: i64,
    partner: String,
    format: String,
    business_date: String,
    record_no: i64,
    record_key: String,
    amount: String,
    kind: String,
    reversed_by: Option<i64>,
    fields: String,
}

/// A ledger reached without settlegate: to write what an older version
/// wrote and read what a migration left.
enum RawLedger {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

macro_rules! on_raw {
    ($raw:expr, $pool:ident => $body:expr) => {
        match $raw {
            RawLedger::Sqlite($pool) => $body,
            RawLedger::Postgres($pool) => $body,
        }
    };
}

impl RawLedger {
    async fn connect(url: &str) -> RawLedger {
        if url.starts_with("sqlite") {
            RawLedger::Sqlite(sqlx::SqlitePool::connect(url).await.expect("sqlite"))
        } else {
            RawLedger::Postgres(sqlx::PgPool::connect(url).await.expect("postgres"))
        }
    }

    async fn execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        on_raw!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|_| ()))
    }

    async fn entries(&self) -> Vec<EntryRow> {
        let sql = "SELECT id, file_id, partner, format, CAST(business_date AS TEXT) AS business_date, \
                   record_no, record_key, CAST(amount AS TEXT) AS amount, kind, reversed_by, fields \
                   FROM entries ORDER BY id";
        on_raw!(self, pool => sqlx::query_as(sql).fetch_all(pool).await).expect("entries")
    }

    /// `<type> <name>` of every index and trigger on SQLite's entries.
    async fn sqlite_objects_on_entries(&self) -> Vec<String> {
        let RawLedger::Sqlite(pool) = self else {
            panic!("SQLite only");
        };
        sqlx::query_scalar(
            "SELECT type || ' ' || name FROM sqlite_schema \
             WHERE tbl_name = 'entries' AND type <> 'table' ORDER BY type, name",
        )
        .fetch_all(pool)
        .await
        .expect("schema")
    }

    /// Run `sql` in a transaction expected to be refused: `statement: …`
    /// when the statement is, `commit: …` when only the commit is.
    async fn in_transaction(&self, sql: &str) -> String {
        on_raw!(self, pool => {
            let mut tx = pool.begin().await.expect("begin");
            match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await {
                Err(e) => format!("statement: {e}"),
                Ok(_) => match tx.commit().await {
                    Err(e) => format!("commit: {e}"),
                    Ok(()) => panic!("{sql} was committed"),
                },
            }
        })
    }

    async fn close(&self) {
        on_raw!(self, pool => pool.close().await)
    }
}

/// `name::sqlite` and `name::postgres` running `body` on each ledger
/// (PostgreSQL's only where one answers).
macro_rules! both_ledgers {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                $body(TestLedger::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(t) = TestLedger::postgres().await {
                    $body(t).await;
                }
            }
        }
    };
}

both_ledgers!(entries_found_after_upgrade, entries_found_after_upgrade);

both_ledgers!(migrate_check_on_older_and_newer_ledgers, migrate_check);

/// `settlegate migrate` in `env` (or on `--ledger url`), its output kept.
fn spawn_migrate(env: &Env, url: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_settlegate"));
    if let Some(url) = url {
        cmd.args(["--ledger", url]);
    }
    cmd.arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&env.data)
        .arg("migrate")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("migrate")
}

/// Two gateways upgrading one ledger at once: the migration lock
/// (PostgreSQL's advisory lock, SQLite's lock file) lets one migrate and the
/// other find it done; both end current.
async fn two_nodes_migrate(t: TestLedger) {
    let env = Env::new(&t, "");
    let mut children: Vec<_> = (0..2)
        .map(|_| spawn_migrate(&env, t.url.as_deref()))
        .collect();
    for c in children.drain(..) {
        let out = c.wait_with_output().expect("migrate ends");
        assert!(
            out.status.success(),
            "{}: {}",
            t.backend,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, v) = env.json(&["migrate", "--check", "--json"]);
    assert_eq!(code, 0, "{v:#}");
    t.drop_db().await;
}

both_ledgers!(two_nodes_migrate_at_once, two_nodes_migrate);

/// An SQLite ledger is migrated under `ledger.db-migrate`, locked: a
/// migration waits while another process holds the lock (whatever the
/// ledger's URL adds to its file name, and the lock file opened for
/// reading, as one another user made is), and runs once it is let go.
#[tokio::test]
async fn sqlite_migrations_wait_for_the_lock() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new(&TestLedger::sqlite(), "");
    std::fs::create_dir_all(&env.data).expect("data dir");
    let ledger = env.data.join("ledger.db");
    older_ledger(&format!("sqlite://{}", ledger.display()), 17).await;
    let lock_path = env.data.join("ledger.db-migrate");
    let lock = std::fs::File::create(&lock_path).expect("lock file");
    lock.lock().expect("lock");
    let url = format!("sqlite://{}?mode=rwc", ledger.display());
    let mut child = spawn_migrate(&env, Some(&url));
    // /proc/locks lists a process waiting for a lock as `N: -> FLOCK …
    // <pid> <major>:<minor>:<inode> …`.
    let inode = format!(":{} ", std::fs::metadata(&lock_path).expect("lock").ino());
    let waiter = format!(" {} ", child.id());
    wait_for(
        "migrate to wait for the lock",
        Duration::from_secs(60),
        || {
            assert!(
                child.try_wait().expect("child").is_none(),
                "migrate ended without waiting for the lock"
            );
            std::fs::read_to_string("/proc/locks")
                .expect("/proc/locks")
                .lines()
                .any(|l| l.contains("->") && l.contains(&waiter) && l.contains(&inode))
        },
    );
    let (code, v) = env.json(&["migrate", "--check", "--json"]);
    assert_eq!(code, 7, "still behind while the lock is held: {v:#}");
    assert_eq!(v["pending"][0], 18, "{v:#}");
    drop(lock);
    let out = child.wait_with_output().expect("migrate ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, v) = env.json(&["migrate", "--check", "--json"]);
    assert_eq!(code, 0, "{v:#}");
}

/// The systemd unit carries the hardening the README promises, and
/// `systemd-analyze verify` accepts it (where systemd is installed), with
/// the binary path pointed at the one built here.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(root().join("packaging/settlegate.service")).expect("unit");
    for line in [
        "User=settlegate",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/settlegate",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStartPre=/usr/bin/settlegate check",
        "ExecStart=/usr/bin/settlegate serve --log-format text",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!(
            "systemd-analyze is not installed: the unit's directives were checked, not verified"
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let local = tmp.path().join("settlegate.service");
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("kill");
    std::fs::write(
        &local,
        unit.replace("/usr/bin/settlegate", env!("CARGO_BIN_EXE_settlegate"))
            .replace("/bin/kill", kill),
    )
    .expect("unit copy");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
