//! A throwaway PostgreSQL server for outage tests: `initdb` into a temp
//! directory, started on a free loopback port with trust auth, stopped and
//! started again by the test. The machine's own cluster is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct ThrowawayPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Run a PostgreSQL tool as the `postgres` user when we are root (initdb
/// and the server refuse to run as root).
fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let status = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join(tool))
            .args(args)
            .status()
    } else {
        Command::new(bin.join(tool)).args(args).status()
    };
    status.is_ok_and(|s| s.success())
}

impl ThrowawayPostgres {
    /// `None` when PostgreSQL's server binaries are not installed here.
    pub fn start() -> Option<ThrowawayPostgres> {
        let bin = pg_bin()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("pgdata");
        let data_s = data.display().to_string();
        assert!(
            as_postgres(
                &bin,
                "initdb",
                &[
                    "-D",
                    &data_s,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8"
                ]
            ),
            "initdb failed"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let pg = ThrowawayPostgres { dir, bin, port };
        pg.up();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("pgdata").display().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start (again); waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        assert!(
            as_postgres(
                &self.bin,
                "pg_ctl",
                &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"]
            ),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
        );
    }

    /// Stop at once (in-flight connections are cut).
    pub fn down(&self) {
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        self.down();
    }
}
