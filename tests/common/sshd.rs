//! A real OpenSSH `sshd` for interoperability tests: started on a free
//! loopback port with a temporary config, host key and authorized key, and
//! killed when dropped. As root it needs `/run/sshd` (created here) and the
//! privilege-separation user the Debian package creates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
    /// A private key sshd accepts.
    pub client_key: PathBuf,
    pub host_key_pub: PathBuf,
    /// A second host key, RSA (`start_with_rsa_host_key`).
    pub rsa_host_key_pub: Option<PathBuf>,
    child: Child,
}

/// `ssh-keygen -t ed25519` without a passphrase.
pub fn keygen(path: &Path) {
    keygen_of(path, "ed25519");
}

/// `ssh-keygen -t KIND` without a passphrase.
pub fn keygen_of(path: &Path, kind: &str) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) must be installed")
        .success();
    assert!(ok, "ssh-keygen failed");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_inner(false, "")
    }

    /// With an RSA host key besides the ed25519 one.
    pub fn start_with_rsa_host_key() -> Sshd {
        Sshd::start_inner(true, "")
    }

    /// With `config` lines that come before (and so win over, as sshd takes
    /// the first value of a keyword) the usual ones, e.g. `MaxSessions 1`.
    pub fn start_with_config(config: &str) -> Sshd {
        Sshd::start_inner(false, config)
    }

    /// What sshd has logged (LogLevel VERBOSE: logins and each session,
    /// `Starting session: subsystem 'sftp' …`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn start_inner(rsa: bool, first_lines: &str) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: run the tests with tests/run.sh, which installs openssh-server"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        let rsa_host_key = rsa.then(|| {
            keygen_of(&d.join("host_key_rsa"), "rsa");
            d.join("host_key_rsa")
        });
        let extra_host_key = rsa_host_key
            .as_ref()
            .map(|k| format!("HostKey {}\n", k.display()))
            .unwrap_or_default();
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .expect("user name")
        .trim()
        .to_string();
        if nix_is_root() {
            std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }
        for _ in 0..5 {
            let port = free_port();
            let config = d.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "{config}Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n{extra_host_key}PidFile {dir}/sshd.pid\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
                     MaxStartups 100\nMaxSessions 20\nLogLevel VERBOSE\n",
                    dir = d.display(),
                    config = first_lines.lines().map(|l| format!("{l}\n")).collect::<String>()
                ),
            )
            .expect("sshd_config");
            let mut child = Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(d.join("sshd.log")).expect("log"),
                ))
                .spawn()
                .expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken, or a config problem: try again
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        port,
                        user,
                        client_key: d.join("client_key"),
                        host_key_pub: d.join("host_key.pub"),
                        rsa_host_key_pub: rsa_host_key.as_ref().map(|k| k.with_extension("pub")),
                        child,
                        dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "sshd did not start: {}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
    }

    /// A directory under the server's temp dir, created.
    pub fn remote_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("remote dir");
        p
    }

    /// The host key's fingerprint, `SHA256:…`, as `ssh-keygen -lf` prints it.
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

    /// A known_hosts line pinning `key_pub` for this server.
    pub fn known_hosts_line(&self, key_pub: &Path) -> String {
        let key = std::fs::read_to_string(key_pub).expect("public key");
        let mut parts = key.split_whitespace();
        let (alg, b64) = (parts.next().expect("alg"), parts.next().expect("key"));
        format!("[127.0.0.1]:{} {alg} {b64}\n", self.port)
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
