//! Servers and clients other than OpenSSH for interoperability tests: a
//! paramiko-based SFTP server (tests/interop/paramiko_sftp_server.py) with
//! switchable quirks, and ProFTPD's mod_sftp. tests/run.sh installs them
//! when they are missing.

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
        fingerprint(&self.host_key_pub)
    }
}

/// A public key file's fingerprint, `SHA256:…`.
fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .expect("ssh-keygen -lf");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

impl Drop for ParamikoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ProFTPD's `mod_sftp` (Debian's proftpd-core and proftpd-mod-crypto,
/// installed by tests/run.sh), serving one virtual user, `cardpull`,
/// chrooted to `root()`, with key login. Runs as root (it drops to
/// `nobody` for the session), so the served tree belongs to that user.
pub struct ProftpdServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub client_key: PathBuf,
    pub host_key_pub: PathBuf,
    child: Child,
}

/// The user ProFTPD's session runs as (Debian's `nobody`).
const NOBODY: u32 = 65534;

impl ProftpdServer {
    pub fn start() -> ProftpdServer {
        assert!(
            Path::new("/usr/lib/proftpd/mod_sftp.so").exists(),
            "ProFTPD mod_sftp is missing: run the tests with tests/run.sh, which installs it"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let chmod = |p: &Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        // The session runs as nobody: it must reach its home.
        chmod(d, 0o755);
        std::fs::create_dir_all(d.join("home")).expect("home");
        std::os::unix::fs::chown(d.join("home"), Some(NOBODY), Some(NOBODY)).expect("chown");
        // mod_sftp reads PEM RSA host keys on every build.
        let keygen_rsa = Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f"])
            .arg(d.join("host_rsa"))
            .status()
            .expect("ssh-keygen");
        assert!(keygen_rsa.success());
        keygen(&d.join("client_key"));
        // Authorized keys in RFC 4716 form, as mod_sftp wants them.
        let rfc4716 = Command::new("ssh-keygen")
            .arg("-e")
            .arg("-f")
            .arg(d.join("client_key.pub"))
            .output()
            .expect("ssh-keygen -e");
        std::fs::write(d.join("authorized_keys"), &rfc4716.stdout).expect("keys");
        chmod(&d.join("authorized_keys"), 0o644);
        std::fs::write(
            d.join("passwd"),
            format!(
                "cardpull:x:{NOBODY}:{NOBODY}::{}:/bin/sh\n",
                d.join("home").display()
            ),
        )
        .expect("passwd");
        std::fs::write(d.join("group"), format!("cardpull:x:{NOBODY}:\n")).expect("group");
        chmod(&d.join("passwd"), 0o600);
        chmod(&d.join("group"), 0o600);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let p = |name: &str| d.join(name).display().to_string();
        let conf = format!(
            "ModulePath /usr/lib/proftpd\nLoadModule mod_sftp.c\nServerName \"settlegate test\"\n\
             ServerType standalone\nDefaultAddress 127.0.0.1\nSocketBindTight on\nUseIPv6 off\n\
             Port {port}\nUser nobody\nGroup nogroup\nPidFile {}\nScoreboardFile {}\nDelayTable none\n\
             WtmpLog off\nUseReverseDNS off\nRequireValidShell off\nAuthOrder mod_auth_file.c\n\
             AuthUserFile {}\nAuthGroupFile {}\nDefaultRoot ~\nSFTPEngine on\nSFTPLog {}\n\
             SFTPHostKey {}\nSFTPAuthMethods publickey\nSFTPAuthorizedUserKeys file:{}\n\
             <Directory ~>\n  AllowOverwrite on\n</Directory>\n",
            p("proftpd.pid"),
            p("scoreboard"),
            p("passwd"),
            p("group"),
            p("sftp.log"),
            p("host_rsa"),
            p("authorized_keys"),
        );
        std::fs::write(d.join("proftpd.conf"), conf).expect("conf");
        let child = Command::new("/usr/sbin/proftpd")
            .arg("-n")
            .arg("-c")
            .arg(d.join("proftpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("server.log")).expect("log"),
            ))
            .spawn()
            .expect("start proftpd");
        let mut server = ProftpdServer {
            port,
            client_key: d.join("client_key"),
            host_key_pub: d.join("host_rsa.pub"),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(_)) = server.child.try_wait() {
                panic!(
                    "proftpd exited: {}",
                    std::fs::read_to_string(server.dir.path().join("server.log"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "proftpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The user's home, served as `/`; a directory made here belongs to
    /// the session's user.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("home").join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).expect("chown");
        p
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.host_key_pub)
    }
}

impl Drop for ProftpdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
