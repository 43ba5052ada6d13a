//! Servers and clients other than OpenSSH for interoperability tests: a
//! paramiko-based SFTP server (tests/interop/paramiko_sftp_server.py) with
//! switchable quirks. tests/run.sh installs paramiko when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sshd::keygen;

pub struct ParamikoServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub client_key: PathBuf,
    pub host_key_pub: PathBuf,
    child: Child,
}

/// `python3 -c "import MODULE"` succeeds, else a message naming tests/run.sh.
pub fn require_python(module: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 module {module} is missing: run the tests with tests/run.sh, which installs it"
    );
}

impl ParamikoServer {
    /// Serve `root` (created) with the given quirk flags.
    pub fn start(flags: &[&str]) -> ParamikoServer {
        require_python("paramiko");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::create_dir_all(d.join("root")).expect("root");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/paramiko_sftp_server.py");
        let port_file = d.join("port");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(d.join("root"))
            .arg(d.join("host_key"))
            .arg(d.join("client_key.pub"))
            .arg(&port_file)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("server.log")).expect("log"),
            ))
            .spawn()
            .expect("start the paramiko server");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            if let Ok(Some(_)) = child.try_wait() {
                panic!(
                    "paramiko server exited: {}",
                    std::fs::read_to_string(d.join("server.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "paramiko server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        ParamikoServer {
            port,
            client_key: d.join("client_key"),
            host_key_pub: d.join("host_key.pub"),
            child,
            dir,
        }
    }

    /// The directory served as `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The host key's fingerprint, `SHA256:…`.
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&self.host_key_pub)
            .output()
            .expect("ssh-keygen -lf");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }
}

impl Drop for ParamikoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
