//! SSH client connections to partners' servers: a pinned host key (an
//! OpenSSH `known_hosts` file or a `SHA256:` fingerprint), key or password
//! login with the secret read from a file or the environment at connect
//! time, and an SFTP session tuned for many requests in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::RawSftpSession;

use crate::config::{Endpoint, EndpointAuth, HostKeyPin};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {0:?} (connect and log in)", .timeout)]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error(
        "{addr} offered host key {offered}, which {pin} does not know; refusing to connect (add the key to the pin after checking it with the partner)"
    )]
    UnknownHostKey {
        addr: String,
        offered: String,
        pin: String,
    },
    #[error(
        "{addr} offered host key {offered}, but {pin} pins {expected} for it: HOST KEY CHANGED, refusing to connect (possible man-in-the-middle; confirm with the partner before changing the pin)"
    )]
    ChangedHostKey {
        addr: String,
        offered: String,
        pin: String,
        expected: String,
    },
    #[error("known_hosts {path}: {message}")]
    KnownHosts { path: PathBuf, message: String },
    #[error("{addr}: login as {user:?} refused ({method})")]
    AuthRefused {
        addr: String,
        user: String,
        method: &'static str,
    },
    #[error("cannot load private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("environment variable {0} (a login secret) is not set")]
    MissingSecret(String),
    #[error("{addr}: SSH: {source}")]
    Ssh { addr: String, source: russh::Error },
    #[error("{addr}: SFTP session: {message}")]
    Sftp { addr: String, message: String },
}

impl SshError {
    /// Worth another attempt later (the network, not the configuration).
    pub fn is_transient(&self) -> bool {
        match self {
            SshError::Connect { .. } | SshError::ConnectTimeout { .. } | SshError::Sftp { .. } => {
                true
            }
            SshError::Ssh { source, .. } => !matches!(
                source,
                russh::Error::UnknownKey
                    | russh::Error::NotAuthenticated
                    | russh::Error::NoAuthMethod
            ),
            _ => false,
        }
    }
}

/// `SHA256:…` as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// How a host key compares with the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    Trusted,
    /// Nothing is pinned for this host (known_hosts has no line for it).
    Unknown,
    /// Something else is pinned: its fingerprint.
    Changed(String),
}

/// Compare an offered host key with the pin. Reads the known_hosts file
/// (hashed host names are understood; `@cert-authority`/`@revoked` markers
/// and wildcards are not, and such lines never match).
pub fn check_pin(
    pin: &HostKeyPin,
    host: &str,
    port: u16,
    offered: &PublicKey,
) -> Result<PinCheck, SshError> {
    match pin {
        HostKeyPin::Fingerprint(fp) => Ok(if *fp == fingerprint(offered) {
            PinCheck::Trusted
        } else {
            PinCheck::Changed(fp.clone())
        }),
        HostKeyPin::KnownHosts(path) => {
            if !path.exists() {
                return Ok(PinCheck::Unknown);
            }
            // OpenSSH compares host names in lower case.
            let host = host.to_ascii_lowercase();
            let recorded = russh::keys::known_hosts::known_host_keys_path(&host, port, path)
                .map_err(|e| SshError::KnownHosts {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            // Fail closed on lines for this host that the reader above skips
            // (markers, tab separators, wildcards): never fall through to
            // "unknown" (and trust on first use) past them.
            let text = std::fs::read_to_string(path).map_err(|e| SshError::KnownHosts {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let read: Vec<usize> = recorded.iter().map(|(line, _)| *line).collect();
            if let Some(line) = unreadable_line_for(&text, &host, port, &read) {
                return Err(SshError::KnownHosts {
                    path: path.clone(),
                    message: format!(
                        "line {line} is about {host} but cannot be used here (markers such as @revoked or @cert-authority, tab separators and wildcards are not supported); refusing to connect"
                    ),
                });
            }
            if recorded.iter().any(|(_, k)| k == offered) {
                return Ok(PinCheck::Trusted);
            }
            Ok(match recorded.first() {
                None => PinCheck::Unknown,
                Some((line, k)) => PinCheck::Changed(format!("{} (line {line})", fingerprint(k))),
            })
        }
    }
}

/// The host key algorithms to ask the server for, in russh's order of
/// preference, when known_hosts pins keys for this host: only those of the
/// pinned keys' types. A server with several host keys then proves itself
/// with a pinned one, instead of one of another type that would look like a
/// changed key (OpenSSH's client orders its offer the same way). `None`
/// keeps russh's default: nothing readable is pinned, or a fingerprint pin,
/// whose key type is not known.
fn pinned_key_algorithms(pin: &HostKeyPin, host: &str, port: u16) -> Option<Vec<Algorithm>> {
    let HostKeyPin::KnownHosts(path) = pin else {
        return None;
    };
    let host = host.to_ascii_lowercase();
    let recorded = russh::keys::known_hosts::known_host_keys_path(&host, port, path).ok()?;
    let pinned: Vec<Algorithm> = recorded.iter().map(|(_, k)| k.algorithm()).collect();
    // RSA keys sign with any of the RSA algorithms (SHA-2 or SHA-1).
    let same_type = |a: &Algorithm, b: &Algorithm| {
        matches!((a, b), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })) || a == b
    };
    let offer: Vec<Algorithm> = russh::Preferred::DEFAULT
        .key
        .iter()
        .filter(|a| pinned.iter().any(|p| same_type(a, p)))
        .cloned()
        .collect();
    (!offer.is_empty()).then_some(offer)
}

/// Ciphers to offer, best first. With AES in hardware, AES-GCM costs both
/// ends (OpenSSH's sshd too) a fraction of ChaCha20-Poly1305's CPU, which on
/// a fast link is what bounds a transfer; without it ChaCha20 is the faster.
fn cipher_order() -> Vec<russh::cipher::Name> {
    use russh::cipher::{AES_128_CTR, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    #[cfg(target_arch = "x86_64")]
    let aes_in_hardware =
        std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let aes_in_hardware = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes_in_hardware = false;
    let (first, second) = if aes_in_hardware {
        (AES_256_GCM, CHACHA20_POLY1305)
    } else {
        (CHACHA20_POLY1305, AES_256_GCM)
    };
    vec![first, second, AES_256_CTR, AES_192_CTR, AES_128_CTR]
}

/// The first line (1-based, counting comments as russh does not) that names
/// `host` — literally, as `[host]:port`, or through a wildcard — but is not
/// among the lines the known_hosts reader understood.
fn unreadable_line_for(text: &str, host: &str, port: u16, read: &[usize]) -> Option<usize> {
    let wanted = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut line_no = 0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        line_no += 1;
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        let hosts = if first.starts_with('@') {
            fields.next().unwrap_or("")
        } else {
            first
        };
        let names_host = hosts.split(',').any(|h| {
            let h = h.trim_start_matches('!').to_ascii_lowercase();
            h == wanted || ((h.contains('*') || h.contains('?')) && wildcard(&h, &wanted))
        });
        let tidy = !first.starts_with('@') && !line.contains('\t');
        if names_host && !(tidy && read.contains(&line_no)) {
            return Some(line_no);
        }
    }
    None
}

/// OpenSSH host patterns: `*` any run, `?` one character, all else literal.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

fn describe_pin(pin: &HostKeyPin) -> String {
    match pin {
        HostKeyPin::Fingerprint(fp) => format!("the configured host_key {fp}"),
        HostKeyPin::KnownHosts(p) => format!("known_hosts {}", p.display()),
    }
}

/// The russh client handler: only the host-key decision lives here.
struct PinnedHost {
    addr: String,
    host: String,
    port: u16,
    pin: HostKeyPin,
    trust_on_first_use: bool,
}

impl russh::client::Handler for PinnedHost {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, SshError> {
        let key = match offered {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                return Err(SshError::UnknownHostKey {
                    addr: self.addr.clone(),
                    offered: "a host certificate".into(),
                    pin: "settlegate (certificates are not accepted)".into(),
                });
            }
        };
        match check_pin(&self.pin, &self.host, self.port, key)? {
            PinCheck::Trusted => Ok(true),
            PinCheck::Unknown if self.trust_on_first_use => {
                let HostKeyPin::KnownHosts(path) = &self.pin else {
                    return Ok(false);
                };
                russh::keys::known_hosts::learn_known_hosts_path(&self.host, self.port, key, path)
                    .map_err(|e| SshError::KnownHosts {
                        path: path.clone(),
                        message: format!("cannot record the first-seen key: {e}"),
                    })?;
                tracing::warn!(addr = %self.addr, fingerprint = %fingerprint(key), known_hosts = %path.display(), "trust on first use: host key recorded");
                Ok(true)
            }
            PinCheck::Unknown => Err(SshError::UnknownHostKey {
                addr: self.addr.clone(),
                offered: fingerprint(key),
                pin: describe_pin(&self.pin),
            }),
            PinCheck::Changed(expected) => Err(SshError::ChangedHostKey {
                addr: self.addr.clone(),
                offered: fingerprint(key),
                pin: describe_pin(&self.pin),
                expected,
            }),
        }
    }
}

impl From<russh::Error> for SshError {
    fn from(source: russh::Error) -> Self {
        SshError::Ssh {
            addr: String::new(),
            source,
        }
    }
}

/// An authenticated connection with one SFTP session open.
pub struct SftpConnection {
    pub addr: String,
    handle: russh::client::Handle<PinnedHost>,
    pub sftp: Arc<RawSftpSession>,
    /// Largest read the server accepts (its `limits@openssh.com`, else 32 KiB).
    pub read_len: u32,
    /// Largest write the server accepts (its `limits@openssh.com`, else 32 KiB).
    pub write_len: u32,
    /// The server offers `posix-rename@openssh.com` (rename over an existing name).
    pub posix_rename: bool,
    /// How long one request may wait for its answer.
    pub io_timeout: Duration,
    /// The same, in whole seconds, as russh-sftp takes it.
    request_timeout: u64,
    /// Further SFTP sessions opened by [`Self::sessions`].
    more_sessions: tokio::sync::Mutex<Vec<Arc<RawSftpSession>>>,
}

/// What a server said about itself when its SFTP session started.
struct SftpServer {
    posix_rename: bool,
    read_len: u32,
    write_len: u32,
}

/// Open a session channel on `handle`, start the SFTP subsystem on it and
/// ask the server's limits.
async fn start_sftp(
    handle: &russh::client::Handle<PinnedHost>,
    request_timeout_secs: u64,
    addr: &str,
) -> Result<(RawSftpSession, SftpServer), SshError> {
    let ssh_err = |source: russh::Error| SshError::Ssh {
        addr: addr.to_string(),
        source,
    };
    let sftp_err = |message: String| SshError::Sftp {
        addr: addr.to_string(),
        message,
    };
    let channel = handle.channel_open_session().await.map_err(ssh_err)?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(ssh_err)?;
    let cfg = russh_sftp::client::Config {
        request_timeout_secs,
        ..Default::default()
    };
    let mut sftp = RawSftpSession::new_with_config(channel.into_stream(), cfg);
    let version = sftp
        .init()
        .await
        .map_err(|e| sftp_err(format!("init: {e}")))?;
    let mut server = SftpServer {
        posix_rename: version.extensions.contains_key("posix-rename@openssh.com"),
        read_len: 32 * 1024,
        write_len: 32 * 1024,
    };
    if version.extensions.contains_key("limits@openssh.com") {
        let limits = sftp
            .limits()
            .await
            .map_err(|e| sftp_err(format!("limits: {e}")))?;
        // Stay within what russh-sftp accepts as one packet, too.
        if limits.max_read_len > 0 {
            server.read_len = limits.max_read_len.min(255 * 1024) as u32;
        }
        if limits.max_write_len > 0 {
            server.write_len = limits.max_write_len.min(255 * 1024) as u32;
        }
        sftp.set_limits(limits.into());
    }
    Ok((sftp, server))
}

impl SftpConnection {
    /// Connect, check the host key, log in, start SFTP; all within the
    /// endpoint's connect timeout.
    pub async fn open(ep: &Endpoint) -> Result<SftpConnection, SshError> {
        let addr = format!("{}:{}", ep.host, ep.port);
        tokio::time::timeout(ep.connect_timeout, Self::open_inner(ep, addr.clone()))
            .await
            .unwrap_or(Err(SshError::ConnectTimeout {
                addr,
                timeout: ep.connect_timeout,
            }))
    }

    async fn open_inner(ep: &Endpoint, addr: String) -> Result<SftpConnection, SshError> {
        let with_addr = |e: SshError| match e {
            SshError::Ssh { source, .. } => SshError::Ssh {
                addr: addr.clone(),
                source,
            },
            other => other,
        };
        // Load the secret first: a missing one is a configuration error,
        // better reported before touching the network.
        let secret = load_secret(&ep.auth)?;
        let stream = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|source| SshError::Connect {
                addr: addr.clone(),
                source,
            })?;
        stream.set_nodelay(true).ok();
        let config = russh::client::Config {
            // A wide window and large packets keep a long fat link busy.
            window_size: 16 * 1024 * 1024,
            // russh warns above 64 KiB; OpenSSH sends at most 32 KiB anyway.
            maximum_packet_size: 65535,
            channel_buffer_size: 256,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            inactivity_timeout: Some(ep.io_timeout.max(Duration::from_secs(60)) * 2),
            nodelay: true,
            preferred: russh::Preferred {
                key: pinned_key_algorithms(&ep.host_key, &ep.host, ep.port)
                    .map(Into::into)
                    .unwrap_or(russh::Preferred::DEFAULT.key),
                cipher: cipher_order().into(),
                ..russh::Preferred::DEFAULT
            },
            ..Default::default()
        };
        let handler = PinnedHost {
            addr: addr.clone(),
            host: ep.host.clone(),
            port: ep.port,
            pin: ep.host_key.clone(),
            trust_on_first_use: ep.trust_on_first_use,
        };
        let mut handle = russh::client::connect_stream(Arc::new(config), stream, handler)
            .await
            .map_err(with_addr)?;
        let (method, result) = match secret {
            Secret::Key(key) => {
                // RSA keys sign with SHA-2 when the server offers it; plain
                // ssh-rsa (SHA-1) is refused by current OpenSSH.
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| with_addr(e.into()))?
                    .flatten();
                let key = PrivateKeyWithHashAlg::new(Arc::new(*key), hash);
                (
                    "public key",
                    handle.authenticate_publickey(&ep.user, key).await,
                )
            }
            Secret::Password(p) => ("password", handle.authenticate_password(&ep.user, p).await),
        };
        if !result.map_err(|e| with_addr(e.into()))?.success() {
            return Err(SshError::AuthRefused {
                addr,
                user: ep.user.clone(),
                method,
            });
        }
        let request_timeout = ep.io_timeout.as_secs().max(1);
        let (sftp, server) = start_sftp(&handle, request_timeout, &addr).await?;
        Ok(SftpConnection {
            io_timeout: Duration::from_secs(ep.io_timeout.as_secs().max(1)),
            addr,
            handle,
            sftp: Arc::new(sftp),
            request_timeout,
            more_sessions: tokio::sync::Mutex::new(Vec::new()),
            read_len: server.read_len,
            write_len: server.write_len,
            posix_rename: server.posix_rename,
        })
    }

    /// Up to `n` SFTP sessions on this connection, the first being
    /// [`Self::sftp`]: each is its own SSH channel with its own flow-control
    /// window, so several carry more than one across a long link. Sessions
    /// beyond the first are opened on first use and kept; a server that
    /// refuses another channel (a per-connection session limit) leaves
    /// fewer, never an error.
    pub async fn sessions(&self, n: usize) -> Vec<Arc<RawSftpSession>> {
        let mut more = self.more_sessions.lock().await;
        while more.len() + 1 < n {
            match start_sftp(&self.handle, self.request_timeout, &self.addr).await {
                Ok((sftp, _)) => more.push(Arc::new(sftp)),
                Err(e) => {
                    tracing::debug!(addr = %self.addr, sessions = more.len() + 1, error = %e, "no further SFTP channel on this connection");
                    break;
                }
            }
        }
        std::iter::once(self.sftp.clone())
            .chain(more.iter().take(n.saturating_sub(1)).cloned())
            .collect()
    }

    /// Say goodbye politely; errors are irrelevant by now.
    pub async fn close(self) {
        for s in self.more_sessions.into_inner() {
            let _ = s.close_session();
        }
        let _ = self.sftp.close_session();
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

enum Secret {
    Key(Box<russh::keys::PrivateKey>),
    Password(String),
}

fn env_secret(var: &str) -> Result<String, SshError> {
    std::env::var(var).map_err(|_| SshError::MissingSecret(var.to_string()))
}

fn load_secret(auth: &EndpointAuth) -> Result<Secret, SshError> {
    match auth {
        EndpointAuth::Password { env } => Ok(Secret::Password(env_secret(env)?)),
        EndpointAuth::Key {
            file,
            passphrase_env,
        } => {
            let passphrase = passphrase_env.as_deref().map(env_secret).transpose()?;
            load_key(file, passphrase.as_deref()).map(|k| Secret::Key(Box::new(k)))
        }
    }
}

fn load_key(path: &Path, passphrase: Option<&str>) -> Result<russh::keys::PrivateKey, SshError> {
    russh::keys::load_secret_key(path, passphrase).map_err(|e| SshError::Key {
        path: path.to_path_buf(),
        // The error names the problem (wrong passphrase, unreadable file),
        // never the key or the passphrase.
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        PublicKey::from(russh::keys::ssh_key::public::KeyData::Ed25519(pair.public))
    }

    #[test]
    fn fingerprint_pin() {
        let k = key(1);
        let pin = HostKeyPin::Fingerprint(fingerprint(&k));
        assert_eq!(check_pin(&pin, "h", 22, &k).unwrap(), PinCheck::Trusted);
        assert_eq!(
            check_pin(&pin, "h", 22, &key(2)).unwrap(),
            PinCheck::Changed(fingerprint(&k))
        );
    }

    #[test]
    fn known_hosts_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let pin = HostKeyPin::KnownHosts(path.clone());
        // No file: unknown, not an error.
        assert_eq!(
            check_pin(&pin, "h", 2222, &key(1)).unwrap(),
            PinCheck::Unknown
        );
        russh::keys::known_hosts::learn_known_hosts_path("h", 2222, &key(1), &path).unwrap();
        assert_eq!(
            check_pin(&pin, "h", 2222, &key(1)).unwrap(),
            PinCheck::Trusted
        );
        // Another port is another host.
        assert_eq!(
            check_pin(&pin, "h", 22, &key(1)).unwrap(),
            PinCheck::Unknown
        );
        match check_pin(&pin, "h", 2222, &key(2)).unwrap() {
            PinCheck::Changed(expected) => {
                assert!(expected.starts_with(&fingerprint(&key(1))), "{expected}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn known_hosts_lines_that_cannot_be_read_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let pin = HostKeyPin::KnownHosts(path.clone());
        let line = |prefix: &str, sep: &str| {
            let k = key(1).to_openssh().unwrap();
            let mut parts = k.split_whitespace();
            let (alg, b64) = (parts.next().unwrap(), parts.next().unwrap());
            format!("{prefix}[h]:2222{sep}{alg}{sep}{b64}\n")
        };
        for text in [
            line("@revoked ", " "),
            line("@cert-authority ", " "),
            line("", "\t"),
            line("", " ").replace("[h]:2222", "[*]:2222"),
        ] {
            std::fs::write(&path, &text).unwrap();
            let e = check_pin(&pin, "H", 2222, &key(1)).unwrap_err();
            assert!(e.to_string().contains("line 1"), "{text:?}: {e}");
        }
        // A plain line, host in other case: trusted.
        std::fs::write(&path, line("", " ")).unwrap();
        assert_eq!(
            check_pin(&pin, "H", 2222, &key(1)).unwrap(),
            PinCheck::Trusted
        );
    }

    #[test]
    fn host_patterns() {
        assert!(wildcard("*.example.com", "sftp.example.com"));
        assert!(wildcard("[*]:2222", "[h]:2222"));
        assert!(wildcard("h?st", "host"));
        assert!(!wildcard("*.example.com", "example.org"));
        assert!(!wildcard("[*]:2222", "[h]:22"));
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let e = load_secret(&EndpointAuth::Password {
            env: "SETTLEGATE_TEST_UNSET_SECRET".into(),
        })
        .err()
        .unwrap();
        assert!(
            e.to_string().contains("SETTLEGATE_TEST_UNSET_SECRET"),
            "{e}"
        );
        let e = load_key(Path::new("/nonexistent/key"), None).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/key"), "{e}");
    }
}
