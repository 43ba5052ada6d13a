//! The operator console against `settlegate serve` with a real ledger
//! (SQLite and PostgreSQL): HTTP-level refusals with curl (no CSRF token,
//! a viewer, one's own approval, wrong passwords rate-limited), and the
//! settlement-day scenario in Debian's headless chromium driven through
//! chromedriver, a screenshot of each page saved under the target
//! directory (`<target>/console-screenshots/`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::NaiveDate;
use common::server::{Server, wait_for};
use common::{Env, TestLedger};
use serde_json::Value;
use settlegate::format::generate::{BankFile, BankRecord, CardFile, CardRecord};

/// Friday 2026-11-20: a past business day, so every deadline has passed.
fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).expect("date")
}

fn card(n: u64, first: u64) -> CardFile {
    let mut f = CardFile::new(day());
    f.records = (first..first + n)
        .map(|i| CardRecord::synthetic(i, day()))
        .collect();
    f
}

fn bank(n: usize) -> BankFile {
    BankFile {
        bank_code: 88,
        company_code: "SETTLEGT".into(),
        business_date: day(),
        file_seq: 1,
        created_time: "083000".into(),
        records: (0..n)
            .map(|i| BankRecord {
                payee_bank: 4,
                account_no: format!("{:014}", 1_000 + i),
                amount: 1_250_000 + i as u64 * 7,
                result_code: "0000".into(),
                payee_name: "HONG GILDONG".into(),
                transfer_id: format!("T20261120{i:08}"),
                memo: "PAYOUT".into(),
            })
            .collect(),
    }
}

/// An argon2 PHC string for `password`, made by `settlegate hash-password`.
fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_settlegate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("hash-password");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

const ALICE: &str = "alice-pw-1";
const BOB: &str = "bob-pw-2";
const VERA: &str = "vera-pw-3";

/// cardco expects one card-settlement file for the day, bankco one
/// bank-transfer-result; release needs a second operator; three console
/// logins (alice and bob operate, vera views); on PostgreSQL the content
/// store in the database.
fn env(ledger: &TestLedger, extra_console: &str) -> Env {
    let console = format!(
        "[operators]\nfour_eyes = [\"release\"]\n\n[console]\nlisten = \"127.0.0.1:0\"\n{extra_console}\n\
         [[console.operators]]\nlogin = \"alice\"\npassword_hash = \"{}\"\nrole = \"operator\"\n\
         [[console.operators]]\nlogin = \"bob\"\npassword_hash = \"{}\"\nrole = \"operator\"\n\
         [[console.operators]]\nlogin = \"vera\"\npassword_hash = \"{}\"\nrole = \"viewer\"\n",
        hash(ALICE),
        hash(BOB),
        hash(VERA)
    );
    let env = Env::new(ledger, &console);
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text = text
        .replacen(
            "[[partners]]\nid = \"bankco\"",
            "[[partners.expect]]\nformat = \"card-settlement\"\nby = \"06:00\"\nlag_days = 1\n\n[[partners]]\nid = \"bankco\"",
            1,
        )
        .replacen(
            "[[partners]]\nid = \"pgco\"",
            "[[partners.expect]]\nformat = \"bank-transfer-result\"\nby = \"09:00\"\n\n[[partners]]\nid = \"pgco\"",
            1,
        );
    // On PostgreSQL the content store is the ledger's database too, so the
    // console's download reads through the store, not a path on disk.
    let text = if ledger.backend == "postgres" {
        format!("store = \"postgres\"\n{text}")
    } else {
        text
    };
    std::fs::write(&env.config, text).expect("config");
    env
}

fn ingest(env: &Env, partner: &str, name: &str, bytes: &[u8]) -> (i32, Value) {
    let dir = env.path("drops");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    env.json(&[
        "ingest",
        "--partner",
        partner,
        &p.display().to_string(),
        "--json",
    ])
}

/// The drill copy of the day's card file, quarantined: its id.
fn drill(env: &Env) -> i64 {
    let mut f = card(5, 100);
    f.run_mode = 'D';
    let (code, v) = ingest(env, "cardco", &f.file_name(), &f.render());
    assert_eq!(code, 11, "{v}");
    v["file_id"].as_i64().expect("file id")
}

fn verdict(env: &Env, id: i64) -> String {
    let (_, v) = env.json(&["show", &id.to_string(), "--json"]);
    v["verdict"].as_str().unwrap_or_default().to_string()
}

fn pending_requests(env: &Env) -> Vec<Value> {
    let (_, v) = env.json(&["requests", "--json"]);
    v.as_array().cloned().unwrap_or_default()
}

/// The console's address, from serve's log.
fn console_addr(server: &Server) -> String {
    server.wait_log("operator console");
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("operator console"))
        .expect("line");
    let v: Value = serde_json::from_str(line).expect("json log");
    v["fields"]["listen"].as_str().expect("listen").to_string()
}

/// A browser-less client: curl with a cookie jar.
struct Curl {
    base: String,
    jar: PathBuf,
}

struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Curl {
    fn new(base: &str, jar: PathBuf) -> Curl {
        Curl {
            base: base.to_string(),
            jar,
        }
    }

    fn call(&self, path: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let headers = self.jar.with_extension("headers");
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-m", "30", "-o", "-", "-w", "\n%{http_code}"])
            .arg("-D")
            .arg(&headers)
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar);
        if let Some(fields) = form {
            for (k, v) in fields {
                cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
            }
        }
        cmd.arg(format!("{}{path}", self.base));
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Answer {
            status: code.trim().parse().unwrap_or(0),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: body.to_string(),
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.call(path, None)
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.call(path, Some(form))
    }

    /// Log in through the form: fetched first (its token and cookie), then
    /// posted back.
    fn login(&self, login: &str, password: &str) -> Answer {
        let token = form_token(&self.get("/login").body);
        self.post(
            "/login",
            &[("login", login), ("password", password), ("csrf", &token)],
        )
    }

    /// This session's CSRF token, read from a page's logout form.
    fn csrf(&self) -> String {
        form_token(&self.get("/day").body)
    }
}

/// The CSRF token a page's form carries.
fn form_token(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF token in {page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of token")].to_string()
}

impl Curl {}

/// Refusals over plain HTTP: no CSRF token, a viewer, one's own approval,
/// an expired session after logout; the right approval feeds the file.
async fn refusals(ledger: TestLedger) {
    let backend = ledger.backend;
    let env = env(&ledger, "");
    let id = drill(&env);
    let server = Server::start(&env);
    let base = format!("http://{}", console_addr(&server));
    let alice = Curl::new(&base, env.path("alice.jar"));
    let vera = Curl::new(&base, env.path("vera.jar"));
    let bob = Curl::new(&base, env.path("bob.jar"));

    // Not logged in: every page sends to the login form.
    let a = alice.get("/quarantine");
    assert_eq!(a.status, 303, "{backend}");
    assert!(a.headers.to_lowercase().contains("location: /login"));

    // A login posted without the form's token (from another site, say),
    // or with a token other than its cookie's, logs nobody in.
    let forged = alice.post("/login", &[("login", "alice"), ("password", ALICE)]);
    assert_eq!(forged.status, 403, "{backend}: {}", forged.body);
    assert!(!forged.headers.contains("settlegate_console="));
    alice.get("/login");
    let forged = alice.post(
        "/login",
        &[
            ("login", "alice"),
            ("password", ALICE),
            ("csrf", &"0".repeat(64)),
        ],
    );
    assert_eq!(forged.status, 403, "{backend}: {}", forged.body);
    assert!(!forged.headers.contains("settlegate_console="));
    assert_eq!(alice.get("/day").status, 303, "still not logged in");
    server.wait_log("the login form did not carry its CSRF token");

    let a = alice.login("alice", ALICE);
    assert_eq!(a.status, 303, "{backend}: {}", a.body);
    let cookie = a
        .headers
        .lines()
        .find(|l| {
            l.to_lowercase()
                .starts_with("set-cookie: settlegate_console=")
        })
        .expect("a session cookie")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "no TLS, no secure_cookies: {cookie}"
    );
    let token = cookie
        .split_once("settlegate_console=")
        .map(|(_, t)| t[..64].to_string())
        .expect("token");

    let page = alice.get("/day?date=2026-11-20");
    assert_eq!(page.status, 200, "{backend}");
    assert!(page.body.contains("NOT READY"), "{}", page.body);
    assert!(page.body.contains("st-late"), "bankco's file is late");
    assert!(page.body.contains("st-quarantined"), "the drill waits");

    // A POST without the CSRF token: 403, nothing recorded.
    let reason = "훈련 아님 <script>alert(1)</script>";
    let forged = alice.post(
        &format!("/files/{id}/act"),
        &[
            ("action", "release"),
            ("override", "yes"),
            ("reason", reason),
        ],
    );
    assert_eq!(forged.status, 403, "{backend}: {}", forged.body);
    assert!(
        pending_requests(&env).is_empty(),
        "{backend}: nothing asked"
    );
    assert_eq!(verdict(&env, id), "drill");
    // A wrong token: the same.
    let wrong = alice.post(
        &format!("/files/{id}/act"),
        &[
            ("csrf", &"0".repeat(64)),
            ("action", "reject"),
            ("reason", "x"),
        ],
    );
    assert_eq!(wrong.status, 403, "{backend}");
    assert_eq!(verdict(&env, id), "drill");

    // A viewer cannot act, even with its own valid token.
    assert_eq!(vera.login("vera", VERA).status, 303);
    let vera_csrf = vera.csrf();
    let q = vera.get("/quarantine");
    assert_eq!(q.status, 200);
    assert!(
        !q.body.contains("do-release"),
        "no action buttons for a viewer"
    );
    let refused = vera.post(
        &format!("/files/{id}/act"),
        &[
            ("csrf", &vera_csrf),
            ("action", "reject"),
            ("reason", "viewer tries"),
        ],
    );
    assert_eq!(refused.status, 403, "{backend}: {}", refused.body);
    assert!(refused.body.contains("viewer"), "{}", refused.body);
    assert_eq!(verdict(&env, id), "drill");

    // Alice asks for the release: a request, the file unchanged.
    let csrf = alice.csrf();
    let asked = alice.post(
        &format!("/files/{id}/act"),
        &[
            ("csrf", &csrf),
            ("action", "release"),
            ("override", "yes"),
            ("reason", reason),
        ],
    );
    assert_eq!(asked.status, 200, "{backend}: {}", asked.body);
    assert!(
        asked.body.contains("awaits a second operator"),
        "{}",
        asked.body
    );
    let list = pending_requests(&env);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["operator"], "operator:alice");
    assert_eq!(list[0]["reason"], reason);
    let rid = list[0]["id"].as_i64().expect("request id");
    assert_eq!(verdict(&env, id), "drill");
    // Outside text is escaped on the page.
    let reqs = alice.get("/requests").body;
    assert!(reqs.contains("훈련 아님 &lt;script&gt;"), "{reqs}");
    assert!(!reqs.contains("<script>alert"), "{reqs}");

    // Her own approval is refused; the request still waits.
    let own = alice.post(&format!("/requests/{rid}/approve"), &[("csrf", &csrf)]);
    assert_eq!(own.status, 409, "{backend}: {}", own.body);
    assert!(
        own.body.contains("another operator must approve"),
        "{}",
        own.body
    );
    assert_eq!(pending_requests(&env).len(), 1);
    assert_eq!(verdict(&env, id), "drill");

    // Bob approves: fed, once.
    assert_eq!(bob.login("bob", BOB).status, 303);
    let bob_csrf = bob.csrf();
    let ok = bob.post(&format!("/requests/{rid}/approve"), &[("csrf", &bob_csrf)]);
    assert_eq!(ok.status, 200, "{backend}: {}", ok.body);
    assert!(ok.body.contains("fed"), "{}", ok.body);
    assert_eq!(verdict(&env, id), "fed");
    let again = bob.post(&format!("/requests/{rid}/approve"), &[("csrf", &bob_csrf)]);
    assert_eq!(again.status, 409, "decided already");

    // The file page: facts, events, the stored bytes.
    let page = bob.get(&format!("/files/{id}")).body;
    for needle in [
        "card-settlement",
        "request-approved",
        "operator:bob",
        "/bytes",
    ] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
    let bytes = Command::new("curl")
        .args(["-s", "-b"])
        .arg(env.path("bob.jar"))
        .arg(format!("{base}/files/{id}/bytes"))
        .output()
        .expect("curl");
    let mut f = card(5, 100);
    f.run_mode = 'D';
    assert_eq!(bytes.stdout, f.render(), "the stored bytes, exactly");

    // A corrected re-send of the fed file: a conflict, and its page shows
    // the records that differ (one amount changed, one removed, one added).
    let mut resend = card(5, 100);
    resend.records[1].sales += 5_000;
    resend.records.remove(3);
    resend.records.push(CardRecord::synthetic(777, day()));
    let (code, v) = ingest(&env, "cardco", "CSTL_resend_정정.dat", &resend.render());
    assert_eq!(code, 12, "{backend}: a conflict: {v}");
    let conflict = v["file_id"].as_i64().expect("id");
    let page = bob.get(&format!("/files/{conflict}")).body;
    assert!(
        page.contains("1 added · 1 removed · 1 changed · 3 the same"),
        "{backend}: {page}"
    );
    assert!(
        page.contains("CSTL_resend_정정.dat"),
        "Korean name shown as is"
    );
    assert!(page.contains("do-supersede"), "an operator may supersede");
    assert!(
        page.contains("5,000"),
        "the changed amount's difference: {page}"
    );

    // Logout ends the session for good (the ledger forgets it).
    let out = alice.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(out.status, 303);
    let after = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Cookie: settlegate_console={token}"))
        .arg(format!("{base}/day"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&after.stdout), "303");

    // Neither a password nor a session token reaches the log.
    let log = server.log_text();
    for secret in [ALICE, BOB, VERA, token.as_str(), csrf.as_str()] {
        assert!(!log.contains(secret), "{backend}: a secret in the log");
    }
    assert!(
        log.contains("console: refused: the form did not carry"),
        "refusals logged"
    );
    assert!(log.contains("console: refused: a viewer cannot act"));
    drop(server);
    ledger.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_sqlite() {
    refusals(TestLedger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_postgres() {
    if let Some(pg) = TestLedger::postgres().await {
        refusals(pg).await;
    }
}

/// Wrong passwords from one address are counted by the SFTP server's
/// limiter: the third blocks the address, and then even the right password
/// is not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_rate_limited() {
    let ledger = TestLedger::sqlite();
    let env = env(&ledger, "max_failed_logins = 3\n");
    let server = Server::start(&env);
    let base = format!("http://{}", console_addr(&server));
    let c = Curl::new(&base, env.path("jar"));
    for _ in 0..3 {
        let a = c.login("alice", "not her password");
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(a.body.contains("Wrong login or password"));
    }
    let blocked = c.login("alice", ALICE);
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert!(blocked.body.contains("Too many failed logins"));
    assert!(
        !blocked.headers.contains("settlegate_console="),
        "no session: {}",
        blocked.headers
    );
    assert!(c.get("/day").status == 303, "not logged in");
    server.wait_log("address blocked");
    assert!(!server.log_text().contains("not her password"));
}

// ---------------------------------------------------------------------------
// The browser.

/// A free TCP port on the loopback (bound, then released for chromedriver).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(log: &Path) -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/run.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to answer", Duration::from_secs(60), || {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("{url}/status"))
                .output()
                .is_ok_and(|o| o.stdout == b"200")
        });
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `<target>/console-screenshots` (the target dir the
/// test binary was built in).
fn screenshots() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_settlegate"));
    let target = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

use fantoccini::{Client, ClientBuilder, Locator};

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        "--lang=ko-KR",
    ];
    // SAFETY: geteuid only reads the process's user id.
    if unsafe { libc::geteuid() } == 0 {
        args.push("--no-sandbox");
    }
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }),
    );
    ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// Wait (up to a generous deadline) for an element, then its text.
async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn shot(c: &Client, backend: &str, n: &mut u32, page: &str) {
    *n += 1;
    let png = c.screenshot().await.expect("screenshot");
    let path = screenshots().join(format!("{backend}-{:02}-{page}.png", n));
    std::fs::write(&path, png).expect("write screenshot");
}

async fn log_in(c: &Client, base: &str, login: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("login"))
        .await
        .expect("login field")
        .send_keys(login)
        .await
        .expect("type");
    c.find(Locator::Id("password"))
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("type");
    c.find(Locator::Id("submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    let who = text_of(c, "#who").await;
    assert_eq!(who, login);
}

/// Fill the form of `button_css` (its reason field) and press the button.
async fn press(c: &Client, form_css: &str, reason: Option<&str>, tick: bool) {
    let form = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(form_css))
        .await
        .unwrap_or_else(|e| panic!("{form_css}: {e}"));
    if let Some(r) = reason {
        form.find(Locator::Css("input[name=reason]"))
            .await
            .expect("reason")
            .send_keys(r)
            .await
            .expect("type");
    }
    if tick {
        form.find(Locator::Css("input[name=override]"))
            .await
            .expect("override box")
            .click()
            .await
            .expect("tick");
    }
    form.find(Locator::Css("button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
}

/// The scenario in chromium: the day with a late file and a
/// quarantined drill; alice asks for the release; her approval is refused;
/// bob approves; the drill is fed; the late file arrives; the day is ready.
/// A viewer sees no action buttons; a forged cross-site POST is refused.
async fn scenario(ledger: TestLedger) {
    let backend = ledger.backend;
    let env = env(&ledger, "");
    let id = drill(&env);
    let server = Server::start(&env);
    let base = format!("http://{}", console_addr(&server));
    let driver = Driver::start(&env.path("chromedriver.log"));
    let c = browser(&driver).await;
    let mut n = 0;

    log_in(&c, &base, "alice", ALICE).await;
    c.goto(&format!("{base}/day?date=2026-11-20"))
        .await
        .expect("day");
    assert!(text_of(&c, "#day-status").await.contains("NOT READY"));
    let late = text_of(&c, "tr[data-partner=bankco] .st").await;
    assert_eq!(late, "late", "{backend}");
    let waiting = text_of(&c, "tr[data-partner=cardco] .st").await;
    assert_eq!(waiting, "quarantined", "{backend}");
    c.find(Locator::Css("svg#chart")).await.expect("the chart");
    shot(&c, backend, &mut n, "day-not-ready").await;

    c.goto(&format!("{base}/quarantine"))
        .await
        .expect("quarantine");
    let row = format!("tr.file[data-id=\"{id}\"]");
    assert!(text_of(&c, &row).await.contains("drill"));
    shot(&c, backend, &mut n, "quarantine").await;
    press(
        &c,
        &format!("{row} form:has(button.do-release)"),
        Some("모의훈련 파일이 아니었음 (partner confirmed)"),
        true,
    )
    .await;
    let title = text_of(&c, "#title").await;
    assert!(title.starts_with("Request"), "{title}");
    shot(&c, backend, &mut n, "release-requested").await;
    assert_eq!(verdict(&env, id), "drill", "{backend}: waits for bob");
    let rid = pending_requests(&env)[0]["id"].as_i64().expect("request");

    c.goto(&format!("{base}/requests")).await.expect("requests");
    let req = format!("tr.request[data-id=\"{rid}\"]");
    assert!(text_of(&c, &req).await.contains("(you)"));
    shot(&c, backend, &mut n, "requests").await;
    press(&c, &format!("{req} form:has(button.approve)"), None, false).await;
    let refused = text_of(&c, "#error").await;
    assert!(
        refused.contains("another operator must approve"),
        "{backend}: {refused}"
    );
    shot(&c, backend, &mut n, "own-approval-refused").await;
    assert_eq!(verdict(&env, id), "drill");
    c.delete_all_cookies().await.expect("log out");

    log_in(&c, &base, "bob", BOB).await;
    c.goto(&format!("{base}/requests")).await.expect("requests");
    press(
        &c,
        &format!("{req} form:has(button.approve)"),
        Some("확인함"),
        false,
    )
    .await;
    let done = text_of(&c, "#message").await;
    assert!(done.contains("fed"), "{backend}: {done}");
    shot(&c, backend, &mut n, "approved").await;
    c.find(Locator::Id("to-file"))
        .await
        .expect("link to the file")
        .click()
        .await
        .expect("click");
    assert_eq!(text_of(&c, "#verdict").await, "fed");
    shot(&c, backend, &mut n, "file-fed").await;
    assert_eq!(verdict(&env, id), "fed");

    // The late file arrives; the day is ready.
    let b = bank(3);
    let (code, v) = ingest(&env, "bankco", &b.file_name(), &b.render());
    assert_eq!(code, 0, "{v}");
    c.goto(&format!("{base}/day?date=2026-11-20"))
        .await
        .expect("day");
    assert!(
        text_of(&c, "#day-status").await.starts_with("READY"),
        "{backend}"
    );
    let total = text_of(&c, "#grand-total").await;
    assert!(total.contains(','), "thousands separators: {total}");
    assert!(!total.contains('.'), "KRW without decimals: {total}");
    shot(&c, backend, &mut n, "day-ready").await;
    c.goto(&format!("{base}/endpoints"))
        .await
        .expect("endpoints");
    text_of(&c, "#deliveries").await;
    shot(&c, backend, &mut n, "endpoints").await;
    c.delete_all_cookies().await.expect("log out");

    // A viewer: every page, no action button.
    let mut f = card(3, 900);
    f.run_mode = 'D';
    f.file_seq = 2;
    let (code, v) = ingest(&env, "cardco", &f.file_name(), &f.render());
    assert_eq!(code, 11, "{v}");
    let second = v["file_id"].as_i64().expect("id");
    log_in(&c, &base, "vera", VERA).await;
    c.goto(&format!("{base}/quarantine"))
        .await
        .expect("quarantine");
    text_of(&c, &format!("tr.file[data-id=\"{second}\"]")).await;
    assert!(
        c.find_all(Locator::Css("button.do-release, button.do-reject"))
            .await
            .expect("query")
            .is_empty(),
        "{backend}: a viewer sees no action buttons"
    );
    shot(&c, backend, &mut n, "viewer-quarantine").await;
    c.goto(&format!("{base}/files/{second}"))
        .await
        .expect("file");
    text_of(&c, "#file-name").await;
    assert!(
        c.find_all(Locator::Css("form.act"))
            .await
            .expect("query")
            .is_empty()
    );
    shot(&c, backend, &mut n, "viewer-file").await;

    // A forged POST from another site: the SameSite=Strict cookie is not
    // sent and no token is carried; refused, nothing changed.
    log_in(&c, &base, "bob", BOB).await;
    let forged = format!(
        "data:text/html,<form id=f method=post action=\"{base}/files/{second}/act\">\
         <input name=action value=reject><input name=reason value=forged></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    c.goto(&forged).await.expect("forged page");
    let refused = text_of(&c, "#error").await;
    assert!(
        refused.contains("refused") || refused.contains("not logged in"),
        "{refused}"
    );
    shot(&c, backend, &mut n, "forged-post-refused").await;
    assert_eq!(verdict(&env, second), "drill", "{backend}: nothing changed");

    c.close().await.expect("close the browser");
    drop(driver);
    drop(server);
    ledger.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_scenario_sqlite() {
    scenario(TestLedger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_scenario_postgres() {
    if let Some(pg) = TestLedger::postgres().await {
        scenario(pg).await;
    }
}
