//! `[sftp_server]` in `settlegate.toml`: parse → pure validate. Accounts are
//! per partner; keys are parsed and password hashes checked to be argon2 PHC
//! strings here, before anything listens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::PublicKey;
use serde::Deserialize;

use crate::config::{Config, ConfigError, section};

/// Defaults, as documented in the sample configuration.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2222";
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 30;
pub const DEFAULT_MAX_SESSIONS: usize = 4;
pub const DEFAULT_IDLE_SECONDS: u64 = 300;
pub const DEFAULT_MAX_FAILED_LOGINS: u32 = 5;
pub const DEFAULT_FAILED_LOGIN_WINDOW: u64 = 60;
pub const DEFAULT_FAILED_LOGIN_BLOCK: u64 = 300;
pub const DEFAULT_VERDICT_WAIT: u64 = 10;
pub const DEFAULT_LOGIN_GRACE: u64 = 120;
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 10;
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 100;

/// `[sftp_server]` as written. Absent section: no SFTP server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSftpServer {
    /// Address to listen on. Default `127.0.0.1:2222`.
    listen: Option<String>,
    /// The server's private host key (OpenSSH format). Default
    /// `<data_dir>/sftp/host_key`, an ed25519 key generated on first start.
    host_key: Option<PathBuf>,
    /// Largest upload accepted, in bytes. Default 4 GiB.
    max_file_bytes: Option<u64>,
    /// Concurrent sessions per partner. Default 4.
    max_sessions_per_partner: Option<usize>,
    /// Seconds without an SFTP request before a session is closed. Default 300.
    idle_timeout_seconds: Option<u64>,
    /// Failed logins from one address within `failed_login_window_seconds`
    /// that block it. Default 5.
    max_failed_logins: Option<u32>,
    /// Default 60.
    failed_login_window_seconds: Option<u64>,
    /// How long a blocked address stays blocked. Default 300.
    failed_login_block_seconds: Option<u64>,
    /// How long the close of an upload waits for its verdict once the file
    /// is staged and recorded (0: answer right after recording). Judging
    /// that takes longer goes on and writes the receipt when done. Default 10.
    verdict_wait_seconds: Option<u64>,
    /// Seconds a connection has to log in before it is closed (OpenSSH's
    /// `LoginGraceTime`). Default 120.
    login_grace_seconds: Option<u64>,
    /// Connections not yet logged in, from one address. Default 10.
    max_unauthenticated_per_address: Option<usize>,
    /// Connections not yet logged in, in total. Default 100.
    max_unauthenticated: Option<usize>,
    /// One account per partner that pushes.
    #[serde(default)]
    accounts: Vec<RawAccount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    /// The partner id whose files this account delivers.
    partner: String,
    /// SSH user name. Default: the partner id.
    user: Option<String>,
    /// OpenSSH `authorized_keys` lines (`ssh-ed25519 AAAA… comment`; no options).
    #[serde(default)]
    authorized_keys: Vec<String>,
    /// An argon2 PHC string (`$argon2id$v=19$m=…`). Never a plain password.
    password_hash: Option<String>,
}

/// A value that never shows up in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// One partner's login.
#[derive(Debug, Clone)]
pub struct Account {
    pub partner: String,
    pub user: String,
    pub keys: Vec<PublicKey>,
    pub password_hash: Option<Secret<String>>,
}

pub use crate::auth::LoginLimit;

/// Connections that have not logged in yet: how many, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthLimit {
    pub grace: Duration,
    pub per_address: usize,
    pub total: usize,
}

/// The validated `[sftp_server]` section.
#[derive(Debug, Clone)]
pub struct SftpServerConfig {
    pub listen: SocketAddr,
    /// `None`: `<data_dir>/sftp/host_key`, generated when absent.
    pub host_key: Option<PathBuf>,
    pub max_file_bytes: u64,
    pub max_sessions_per_partner: usize,
    pub idle_timeout: Duration,
    pub login_limit: LoginLimit,
    pub verdict_wait: Duration,
    pub pre_auth: PreAuthLimit,
    pub accounts: Vec<Account>,
}

impl SftpServerConfig {
    pub fn account(&self, user: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.user == user)
    }

    /// The host key's path for a data dir.
    pub fn host_key_path(&self, data_dir: &Path) -> PathBuf {
        self.host_key
            .clone()
            .unwrap_or_else(|| data_dir.join("sftp").join("host_key"))
    }
}

/// A validation failure: (where, what).
pub type Invalid = (String, String);

/// Validate `[sftp_server]` (absent: no server).
pub fn from_config(config: &Config) -> Result<Option<SftpServerConfig>, ConfigError> {
    let raw: Option<RawSftpServer> = section(config.sections.sftp_server.as_ref())
        .map_err(|m| config.invalid("sftp_server", m))?;
    let partners: Vec<&str> = config
        .declared_partners
        .iter()
        .map(String::as_str)
        .collect();
    raw.map(|r| r.validate_all(&partners, &config.base))
        .transpose()
        .map_err(|found| {
            ConfigError::from_problems(
                found
                    .into_iter()
                    .map(|(context, message)| config.invalid(context, message))
                    .collect(),
            )
            .unwrap_or_else(|| config.invalid("sftp_server", "invalid"))
        })
}

impl RawSftpServer {
    /// Validate against the configured partner ids; relative paths are
    /// relative to `base` (the config file's directory). The first problem.
    pub fn validate(self, partners: &[&str], base: &Path) -> Result<SftpServerConfig, Invalid> {
        self.validate_all(partners, base)
            .map_err(|mut found| found.swap_remove(0))
    }

    /// [`RawSftpServer::validate`] with every problem: each account is
    /// checked whatever another's problems.
    pub fn validate_all(
        self,
        partners: &[&str],
        base: &Path,
    ) -> Result<SftpServerConfig, Vec<Invalid>> {
        let bad = |ctx: &str, msg: String| (format!("sftp_server{ctx}"), msg);
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            vec![bad(
                ".listen",
                format!("{listen_text:?} is not an address such as 127.0.0.1:2222 ({e})"),
            )]
        })?;
        let positive = |v: Option<u64>, default: u64, name: &str| {
            let v = v.unwrap_or(default);
            if v == 0 {
                Err(vec![bad(
                    &format!(".{name}"),
                    "must be greater than 0".into(),
                )])
            } else {
                Ok(v)
            }
        };
        let max_file_bytes = positive(
            self.max_file_bytes,
            DEFAULT_MAX_FILE_BYTES,
            "max_file_bytes",
        )?;
        let max_sessions = positive(
            self.max_sessions_per_partner.map(|v| v as u64),
            DEFAULT_MAX_SESSIONS as u64,
            "max_sessions_per_partner",
        )? as usize;
        let idle = positive(
            self.idle_timeout_seconds,
            DEFAULT_IDLE_SECONDS,
            "idle_timeout_seconds",
        )?;
        let max_failures = positive(
            self.max_failed_logins.map(u64::from),
            u64::from(DEFAULT_MAX_FAILED_LOGINS),
            "max_failed_logins",
        )?;
        let window = positive(
            self.failed_login_window_seconds,
            DEFAULT_FAILED_LOGIN_WINDOW,
            "failed_login_window_seconds",
        )?;
        let block = positive(
            self.failed_login_block_seconds,
            DEFAULT_FAILED_LOGIN_BLOCK,
            "failed_login_block_seconds",
        )?;
        let pre_auth = PreAuthLimit {
            grace: Duration::from_secs(positive(
                self.login_grace_seconds,
                DEFAULT_LOGIN_GRACE,
                "login_grace_seconds",
            )?),
            per_address: positive(
                self.max_unauthenticated_per_address.map(|v| v as u64),
                DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS as u64,
                "max_unauthenticated_per_address",
            )? as usize,
            total: positive(
                self.max_unauthenticated.map(|v| v as u64),
                DEFAULT_MAX_UNAUTHENTICATED as u64,
                "max_unauthenticated",
            )? as usize,
        };
        let mut accounts: Vec<Account> = Vec::new();
        let mut problems: Vec<Invalid> = Vec::new();
        for a in self.accounts {
            let ctx = format!(".accounts (partner {})", a.partner);
            let mut account_problems: Vec<Invalid> = Vec::new();
            if !partners.contains(&a.partner.as_str()) {
                account_problems.push(bad(&ctx, format!("unknown partner {:?}", a.partner)));
            }
            let user = a.user.unwrap_or_else(|| a.partner.clone());
            if user.is_empty()
                || !user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                account_problems.push(bad(
                    &ctx,
                    format!("user {user:?}: ASCII letters, digits, '-', '_' or '.'"),
                ));
            }
            if accounts.iter().any(|b| b.user == user) {
                account_problems.push(bad(&ctx, format!("user {user:?} is defined twice")));
            }
            if accounts.iter().any(|b| b.partner == a.partner) {
                account_problems.push(bad(&ctx, "the partner has two accounts".into()));
            }
            let mut keys = Vec::new();
            for (i, line) in a.authorized_keys.iter().enumerate() {
                match PublicKey::from_openssh(line.trim()) {
                    Ok(key) => keys.push(key),
                    Err(e) => account_problems.push(bad(
                        &ctx,
                        format!(
                            "authorized_keys[{i}] is not an OpenSSH public key line \
                             such as \"ssh-ed25519 AAAA… comment\" (options are not supported): {e}"
                        ),
                    )),
                }
            }
            let can_log_in = !a.authorized_keys.is_empty() || a.password_hash.is_some();
            let password_hash = match a.password_hash {
                None => None,
                Some(h) => match crate::auth::check_password_hash(&h) {
                    Err(m) => {
                        account_problems.push(bad(&ctx, m));
                        None
                    }
                    Ok(()) => Some(Secret(h)),
                },
            };
            if !can_log_in {
                account_problems.push(bad(&ctx, "needs authorized_keys or a password_hash".into()));
            }
            if !account_problems.is_empty() {
                problems.append(&mut account_problems);
                continue;
            }
            accounts.push(Account {
                partner: a.partner,
                user,
                keys,
                password_hash,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SftpServerConfig {
            listen,
            host_key: self.host_key.map(|p| base.join(p)),
            max_file_bytes,
            max_sessions_per_partner: max_sessions,
            idle_timeout: Duration::from_secs(idle),
            login_limit: LoginLimit {
                max_failures: max_failures as u32,
                window: Duration::from_secs(window),
                block: Duration::from_secs(block),
            },
            verdict_wait: Duration::from_secs(
                self.verdict_wait_seconds
                    .unwrap_or(DEFAULT_VERDICT_WAIT)
                    .min(86_400),
            ),
            pre_auth,
            accounts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbM8ypy1fBQ0PYnEP1wxc5IdTDfgj/pt0ro6kA56Fkl demo";
    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$rgGjAXRL6tHhw7WP3sRznjvGDwjGvOdGCtY8R6q4UBo";

    fn raw(text: &str) -> Result<SftpServerConfig, Invalid> {
        let raw: RawSftpServer =
            toml::from_str(text).map_err(|e| ("toml".into(), e.to_string()))?;
        raw.validate(&["cardco", "bankco"], Path::new("/etc/sg"))
    }

    #[test]
    fn defaults() {
        let c = raw("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.max_file_bytes, DEFAULT_MAX_FILE_BYTES);
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(
            c.host_key_path(Path::new("d")),
            PathBuf::from("d/sftp/host_key")
        );
        assert!(c.accounts.is_empty());
    }

    #[test]
    fn accounts() {
        let c = raw(&format!(
            "host_key = \"k\"\n[[accounts]]\npartner = \"cardco\"\nauthorized_keys = [\"{KEY}\"]\n\
             [[accounts]]\npartner = \"bankco\"\nuser = \"bank.one\"\npassword_hash = \"{HASH}\"\n"
        ))
        .unwrap();
        assert_eq!(c.host_key_path(Path::new("d")), PathBuf::from("/etc/sg/k"));
        assert_eq!(c.account("cardco").unwrap().keys.len(), 1);
        let b = c.account("bank.one").unwrap();
        assert_eq!(b.partner, "bankco");
        // The hash never shows in Debug output.
        assert!(!format!("{c:?}").contains("argon2id"));
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("listen = \"localhost\"", "sftp_server.listen"),
            ("max_file_bytes = 0", "max_file_bytes"),
            ("nonsense = 1", "nonsense"),
            (
                "[[accounts]]\npartner = \"nobody\"\nauthorized_keys = []",
                "unknown partner",
            ),
            (
                "[[accounts]]\npartner = \"cardco\"",
                "needs authorized_keys",
            ),
            (
                "[[accounts]]\npartner = \"cardco\"\nauthorized_keys = [\"ssh-ed25519 AAAA\"]",
                "authorized_keys[0]",
            ),
            (
                "[[accounts]]\npartner = \"cardco\"\nauthorized_keys = [\"from=\\\"1.2.3.4\\\" ssh-ed25519 AAAA\"]",
                "options are not supported",
            ),
            (
                "[[accounts]]\npartner = \"cardco\"\npassword_hash = \"hunter2\"",
                "PHC",
            ),
            (
                "[[accounts]]\npartner = \"cardco\"\npassword_hash = \"$pbkdf2-sha256$i=1000$c29tZXNhbHRzYWx0$aGFzaGhhc2hoYXNo\"",
                "must be argon2",
            ),
            (
                "[[accounts]]\npartner = \"cardco\"\nuser = \"a b\"\npassword_hash = \"x\"",
                "user",
            ),
        ] {
            let e = raw(text).unwrap_err();
            let s = format!("{}: {}", e.0, e.1);
            assert!(s.contains(needle), "{text:?}: {s}");
            assert!(!s.contains("hunter2"), "{s}");
        }
    }
}

#[cfg(test)]
mod password_tests {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

    /// A hash made with other parameters (e.g. the `argon2` CLI's) is
    /// verified with its own parameters, as the server does.
    #[test]
    fn hashes_with_other_parameters_verify() {
        let params = Params::new(4096, 3, 1, None).expect("params");
        let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"s3cret", b"0123456789abcdef")
            .expect("hash")
            .to_string();
        assert!(hash.contains("m=4096,t=3,p=1"), "{hash}");
        assert!(
            Argon2::default()
                .verify_password(b"s3cret", hash.as_str())
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", hash.as_str())
                .is_err()
        );
    }
}
