//! The SFTP server channel: partners that push log in to settlegate's own
//! SFTP server (russh + russh-sftp) and upload into `/inbox`; each complete
//! upload goes through the one intake path with channel `sftp-push`, and its
//! verdict appears as `/receipts/<name>.verdict`. Partners that collect read
//! their deliveries from `/outbox`.
//!
//! - [`jail`]: the pure path jail (client path → virtual location).
//! - [`config`]: `[sftp_server]` and its accounts, validated.
//! - [`limits`]: failed logins per address, sessions per partner (pure).
//! - [`session`]: the SSH handler (authentication, only the `sftp` subsystem).
//! - [`sftp`]: the SFTP request handler of one session.
//! - [`upload`]: spool, control-file pairing, intake and receipt.
//! - [`outbox`]: deliveries a partner collects, and when a read is whole.
//! - [`wire`]: the SFTP request loop (framing, malformed packets).

pub mod config;
pub mod jail;
pub mod limits;
pub mod outbox;
pub mod session;
pub mod sftp;
pub mod upload;
pub mod wire;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use std::borrow::Cow;

use russh::keys::ssh_key::{self, Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey};
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{RawSftpServer, SftpServerConfig};

use crate::intake::Gateway;
use limits::{FailedLogins, PreAuth, PreAuthFull, Sessions};
use session::Connection;
use upload::Uploads;

#[derive(Debug, thiserror::Error)]
pub enum SftpServerError {
    #[error("sftp server: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("sftp server: host key {path}: {message}")]
    HostKey { path: PathBuf, message: String },
    #[error("sftp server: {0}")]
    Spool(#[from] upload::UploadError),
}

/// What every connection of one server shares.
pub struct Shared {
    /// Accounts and limits, read at each login; a reload swaps them (a
    /// session already logged in keeps going; a removed account cannot log
    /// in again).
    settings: RwLock<Arc<SftpServerConfig>>,
    pub uploads: Arc<Uploads>,
    pub failed_logins: Mutex<FailedLogins>,
    pub sessions: Sessions,
    /// The SSH settings new connections get (the methods offered follow the
    /// accounts); rebuilt on reload.
    ssh: RwLock<Arc<russh::server::Config>>,
    host_key: PrivateKey,
    /// Connections not yet logged in.
    pub pre_auth: PreAuth,
}

impl Shared {
    /// The current settings.
    pub fn settings(&self) -> Arc<SftpServerConfig> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn ssh(&self) -> Arc<russh::server::Config> {
        self.ssh.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Reloads a running server's accounts and gateway.
#[derive(Clone)]
pub struct SftpServerHandle(Arc<Shared>);

impl SftpServerHandle {
    /// New logins use `settings` and new uploads `gw`; sessions and uploads
    /// in progress go on. Returns what changed that needs a restart (the
    /// listening address, the host key), said so they can be logged.
    pub fn reload(
        &self,
        settings: SftpServerConfig,
        gw: Arc<Gateway>,
    ) -> Result<Vec<String>, SftpServerError> {
        let old = self.0.settings();
        let mut restart = Vec::new();
        if settings.listen != old.listen {
            restart.push(format!(
                "sftp_server.listen {} (still listening on {})",
                settings.listen, old.listen
            ));
        }
        if settings.host_key != old.host_key {
            restart.push("sftp_server.host_key (the old key is still served)".to_string());
        }
        for p in &gw.config.partners {
            self.0.uploads.prepare(&p.id)?;
        }
        let ssh = ssh_config(&settings, self.0.host_key.clone());
        self.0.uploads.set_gw(gw);
        *self.0.ssh.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ssh);
        *self.0.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
        Ok(restart)
    }
}

/// A bound, not yet running, SFTP server.
pub struct SftpServer {
    listener: TcpListener,
    shared: Arc<Shared>,
    pub fingerprint: String,
}

/// glibc's allocator keeps memory freed by a thread in that thread's arena
/// (up to 8 per core), so after large uploads on many worker threads an
/// idle server would hold what the transfers used. Fewer arenas, and the
/// free memory given back when a session ends.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) mod allocator {
    pub fn limit_arenas() {
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }

    pub fn give_back() {
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) mod allocator {
    pub fn limit_arenas() {}
    pub fn give_back() {}
}

/// Load the host key, or generate an ed25519 key (mode 0600) when absent.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, SftpServerError> {
    let err = |message: String| SftpServerError::HostKey {
        path: path.to_path_buf(),
        message,
    };
    if path.exists() {
        return russh::keys::load_secret_key(path, None).map_err(|e| err(e.to_string()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| err(format!("no randomness: {e}")))?;
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(
        ssh_key::private::KeypairData::Ed25519(pair),
        "settlegate host key",
    )
    .map_err(|e| err(e.to_string()))?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| err(format!("cannot create: {e}")))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(format!("cannot write: {e}")))?;
    tracing::info!(path = %path.display(), "generated a new sftp host key");
    Ok(key)
}

/// The SSH side of the server: the methods offered follow the accounts
/// (password only when an account has a hash).
fn ssh_config(settings: &SftpServerConfig, key: PrivateKey) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    if settings.accounts.iter().any(|a| a.password_hash.is_some()) {
        methods.push(MethodKind::Password);
    }
    let idle = settings.idle_timeout;
    russh::server::Config {
        server_id: SshId::Standard(
            format!("SSH-2.0-settlegate_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods,
        // Rejections take a constant time; OpenSSH's first "none" probe is answered at once.
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 6,
        keys: vec![key],
        // Dead peers: three unanswered keepalives 15 s apart. Idle but
        // live sessions are closed by the SFTP idle watchdog (the
        // keepalive answers would keep russh's own timer from firing).
        // A backstop only: the SFTP idle watchdog (which logs the
        // partner) closes idle sessions first.
        inactivity_timeout: Some(idle + Duration::from_secs(30)),
        keepalive_interval: Some(Duration::from_secs(15).min(idle)),
        keepalive_max: 3,
        // The receive window: twice what OpenSSH's sshd offers. OpenSSH's
        // client buffers what the window allows, and at 64 MiB it spent
        // 2.5× the system time on the same 1 GiB put.
        window_size: 4 * 1024 * 1024,
        maximum_packet_size: 65535,
        // Packets queued for a session's SFTP loop: more than the 64
        // requests a client may keep outstanding (`limits@openssh.com`),
        // since russh reads the connection no further while it is full.
        channel_buffer_size: 256,
        nodelay: true,
        preferred: russh::Preferred {
            // RSA keys sign with SHA-2 only: `server-sig-algs` lists these.
            key: Cow::Borrowed(&[
                Algorithm::Ed25519,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP384,
                },
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP521,
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]),
            // Compression only after login (zlib@openssh.com): no
            // decompressor fed by a peer that has not logged in.
            compression: Cow::Borrowed(&[
                russh::compression::NONE,
                russh::compression::ZLIB_LEGACY,
            ]),
            ..russh::Preferred::DEFAULT
        },
        ..Default::default()
    }
}

impl SftpServer {
    /// Prepare the spool, load the host key and bind the listening socket.
    pub async fn bind(
        gw: Arc<Gateway>,
        settings: SftpServerConfig,
    ) -> Result<SftpServer, SftpServerError> {
        allocator::limit_arenas();
        let key = load_or_create_host_key(&settings.host_key_path(&gw.config.data_dir))?;
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        let uploads = Arc::new(Uploads::new(gw.clone(), settings.verdict_wait));
        for p in &gw.config.partners {
            let removed = uploads.prepare(&p.id)?;
            if removed > 0 {
                tracing::warn!(partner = %p.id, files = removed, "removed partial uploads an earlier run left in the spool (never recorded)");
            }
        }
        let ssh = ssh_config(&settings, key.clone());
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| SftpServerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let shared = Arc::new(Shared {
            failed_logins: Mutex::new(FailedLogins::new(settings.login_limit)),
            settings: RwLock::new(Arc::new(settings)),
            uploads,
            sessions: Sessions::default(),
            ssh: RwLock::new(Arc::new(ssh)),
            host_key: key,
            pre_auth: PreAuth::default(),
        });
        Ok(SftpServer {
            listener,
            shared,
            fingerprint,
        })
    }

    /// A handle to reload the running server with.
    pub fn handle(&self) -> SftpServerHandle {
        SftpServerHandle(self.shared.clone())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Accept connections until `stop` turns true; then disconnect every
    /// session and wait for uploads being taken to finish.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, addr)) => {
                        let blocked = self
                            .shared
                            .failed_logins
                            .lock()
                            .ok()
                            .and_then(|mut f| f.blocked(addr.ip(), Instant::now()));
                        if let Some(left) = blocked {
                            tracing::warn!(addr = %addr, blocked_seconds = left.as_secs(), "refused: connection from an address blocked after failed logins");
                            drop(socket);
                            continue;
                        }
                        let limit = self.shared.settings().pre_auth;
                        let slot = match self.shared.pre_auth.try_take(addr.ip(), limit.per_address, limit.total) {
                            Ok(slot) => slot,
                            Err(full) => {
                                let (what, max) = match full {
                                    PreAuthFull::Address => ("from this address", limit.per_address),
                                    PreAuthFull::Total => ("in total", limit.total),
                                };
                                tracing::warn!(addr = %addr, max, "refused: too many connections not yet logged in {what}");
                                drop(socket);
                                continue;
                            }
                        };
                        let _ = socket.set_nodelay(true);
                        conns.spawn(connection(self.shared.clone(), self.shared.ssh(), socket, addr, slot, stop.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sftp accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = stop.changed() => {}
            }
        }
        drop(self.listener);
        tracing::info!("sftp server: stopping; finishing uploads in progress");
        self.shared.uploads.drain().await;
        let wait = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            conns.abort_all();
        }
        tracing::info!("sftp server stopped");
    }
}

/// One connection, with its idle watchdog.
async fn connection(
    shared: Arc<Shared>,
    ssh: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    addr: SocketAddr,
    pre_auth: limits::PreAuthSlot,
    mut stop: watch::Receiver<bool>,
) {
    let idle = shared.settings().idle_timeout;
    let grace = shared.settings().pre_auth.grace;
    let started = Instant::now();
    let conn = Connection::new(shared.clone(), addr, pre_auth);
    let activity = conn.activity.clone();
    let session = match tokio::time::timeout(grace, russh::server::run_stream(ssh, socket, conn))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(addr = %addr, error = %e, "ssh connection setup failed");
            return;
        }
        Err(_) => {
            tracing::warn!(addr = %addr, grace_seconds = grace.as_secs(), "refused: no SSH handshake within the login grace time");
            return;
        }
    };
    let handle = session.handle();
    let mut session = session;
    let tick = (idle.min(grace) / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    // On shutdown a request in progress (a close being taken) is let finish
    // first, for up to a minute, so its client gets its answer.
    let mut stop_by: Option<Instant> = None;
    let mut closing = false;
    loop {
        let wait = if stop_by.is_some() {
            Duration::from_millis(50)
        } else {
            tick
        };
        tokio::select! {
            result = &mut session => {
                if let Err(e) = result {
                    tracing::debug!(addr = %addr, error = %e, "ssh session ended with an error");
                }
                break;
            }
            _ = tokio::time::sleep(wait), if !closing => {
                if let Some(t) = stop_by {
                    if !activity.is_busy() || Instant::now() >= t {
                        closing = true;
                        let _ = handle.disconnect(russh::Disconnect::ByApplication, "server shutting down".into(), "en".into()).await;
                    }
                } else if !activity.is_authenticated() && started.elapsed() >= grace {
                    tracing::warn!(addr = %addr, grace_seconds = grace.as_secs(), "refused: not logged in within the login grace time; disconnecting");
                    closing = true;
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "login grace time over".into(), "en".into()).await;
                } else if activity.idle_for() >= idle {
                    tracing::warn!(addr = %addr, partner = %activity.partner(), idle_seconds = idle.as_secs(), "refused: session idle too long; disconnecting");
                    closing = true;
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "idle timeout".into(), "en".into()).await;
                }
            }
            _ = stop.changed(), if stop_by.is_none() && !closing => {
                stop_by = Some(Instant::now() + Duration::from_secs(60));
            }
        }
    }
    drop(session);
    allocator::give_back();
}
