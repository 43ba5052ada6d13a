//! `settlegate serve` as a real process: started on a test environment,
//! its JSON log read back, stopped with SIGTERM (or killed), and killed when
//! dropped so no test leaves a gateway running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Env;

/// Poll `done` until it holds; fail the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `settlegate serve`, killed when dropped.
pub struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Start and wait until it says it is serving.
    pub fn start(env: &Env) -> Server {
        Server::start_in(env, None)
    }

    /// Start with the working directory set and `--data-dir` relative to it
    /// (when `cwd` is given), as an operator would from the repository.
    pub fn start_in(env: &Env, cwd: Option<&Path>) -> Server {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let log = env.path(&format!(
            "serve-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_settlegate"));
        cmd.arg("--config").arg(&env.config).arg("--data-dir");
        match cwd {
            Some(dir) => {
                let relative = env.data.strip_prefix(dir).expect("data dir under cwd");
                cmd.arg(relative).current_dir(dir);
            }
            None => {
                cmd.arg(&env.data);
            }
        }
        if let Some(url) = &env.ledger {
            cmd.arg("--ledger").arg(url);
        }
        let child = cmd
            .args(["serve", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start serve");
        let s = Server { child, log };
        wait_for("serve to start", Duration::from_secs(60), || {
            let text = s.log_text();
            // An error before serving is a failed start: say so at once.
            assert!(
                !text.contains("\"level\":\"ERROR\"") || text.contains("serving"),
                "{text}"
            );
            text.contains("settlegate serving")
        });
        s
    }

    /// Poll `done` until it holds; fail the test after `timeout`, showing
    /// the end of this server's log.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            if Instant::now() >= deadline {
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "timed out waiting for {what}; the log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str) {
        self.wait_log_count(needle, 1);
    }

    pub fn wait_log_count(&self, needle: &str, n: usize) {
        wait_for(
            &format!("{n} log line(s) {needle:?}"),
            Duration::from_secs(30),
            || self.log_text().matches(needle).count() >= n,
        );
    }

    /// The process id (a node's name in the ledger holds it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit code.
    pub fn stop(&mut self) -> i32 {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop on SIGTERM: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `curl -s URL`: (HTTP status, body).
pub fn curl(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "20", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The address `serve` logged for its metrics listener.
pub fn metrics_addr(server: &Server) -> String {
    server.wait_log("metrics and health");
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("metrics and health"))
        .expect("line");
    let v: serde_json::Value = serde_json::from_str(line).expect("json log");
    v["fields"]["listen"].as_str().expect("listen").to_string()
}

/// The value of one sample line `name{labels} value` of an exposition.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
