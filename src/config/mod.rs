//! `settlegate.toml`: parse → validate → build. Unknown keys are errors that
//! name the key; every field has a documented default; validation compiles
//! patterns and windows before anything touches the network or the ledger.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use regex::Regex;
use serde::Deserialize;

use crate::format::{FormatRegistry, SpecError};

/// The default config file, looked up in the working directory.
pub const DEFAULT_CONFIG: &str = "settlegate.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {context}: {message}")]
    Invalid {
        path: PathBuf,
        context: String,
        message: String,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// The file as written. Field docs give the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Where everything the gateway writes lives. Default `data` (relative to
    /// the working directory). `--data-dir` overrides.
    data_dir: Option<PathBuf>,
    /// Directory of format specs. Default `formats` beside the config file.
    formats_dir: Option<PathBuf>,
    /// Ledger URL: `sqlite://PATH` or `postgres://…`. Default
    /// `<data_dir>/ledger.db` (SQLite). `--ledger` overrides.
    ledger: Option<String>,
    /// UTC offset used for "today" and drill windows written without one.
    /// Default `+09:00` (KST).
    timezone: Option<String>,
    /// The watched-folder channel.
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    partners: Vec<RawPartner>,
    /// The SFTP server for partners that push (absent: off).
    sftp_server: Option<crate::channels::sftp_server::RawSftpServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    /// Seconds a file's size and modification time must stay unchanged
    /// before it is taken. Default 2.
    settle_seconds: Option<f64>,
    /// Seconds between safety-net rescans of every inbox. Default 30.
    rescan_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    /// Partner id, used in commands, paths and the ledger.
    id: String,
    /// Formats this partner sends. With several, the file name picks one
    /// (each format's file-name pattern).
    formats: Vec<String>,
    /// File names matching any of these regexes are drill files.
    #[serde(default)]
    drill_name_patterns: Vec<String>,
    /// Channels (`manual`, `watch`, `sftp-pull`, `sftp-push`) whose every
    /// arrival from this partner is a drill.
    #[serde(default)]
    drill_channels: Vec<String>,
    /// Endpoints (by name) that are drill/DR sites.
    #[serde(default)]
    drill_endpoints: Vec<String>,
    /// Announced drill windows: arrivals inside one are drills.
    #[serde(default)]
    drill_windows: Vec<RawWindow>,
    /// Business dates further than this from today are drill signals. Absent = off.
    business_date_window: Option<RawDateWindow>,
    /// The partner's watched inbox. Default `<data_dir>/inbox/<id>`.
    inbox: Option<PathBuf>,
    /// SFTP servers of the partner that settlegate pulls from.
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    /// Endpoint name, e.g. `primary` or `dr`; recorded with every file.
    name: String,
    host: String,
    /// Default 22.
    port: Option<u16>,
    user: String,
    /// OpenSSH private key file (relative to the config file).
    key_file: Option<PathBuf>,
    /// Environment variable holding the key's passphrase.
    key_passphrase_env: Option<String>,
    /// Environment variable holding the password (password auth).
    password_env: Option<String>,
    /// Pinned host key: an OpenSSH known_hosts file …
    known_hosts: Option<PathBuf>,
    /// … or a fingerprint, `SHA256:…` as `ssh-keygen -lf` prints it.
    host_key: Option<String>,
    /// Accept and record (into `known_hosts`) the key of a host that has
    /// none recorded. Default false; a changed key is refused regardless.
    #[serde(default)]
    trust_on_first_use: bool,
    /// Remote directory to list. Default `.` (the login directory).
    remote_dir: Option<String>,
    /// File-name glob, e.g. `CSTL_*.dat`. Default `*`.
    glob: Option<String>,
    /// Completion rule: a file is complete when `<name><done_suffix>` exists …
    done_suffix: Option<String>,
    /// … or when its size and modification time are unchanged across two
    /// listings this many seconds apart. Default 10 (when no done_suffix).
    stable_seconds: Option<f64>,
    /// `archive` (move to `archive_dir`), `delete` or `leave`. Default `archive`.
    after_pickup: Option<String>,
    /// Remote directory for `archive`. Default `<remote_dir>/archive`.
    archive_dir: Option<String>,
    /// Every file from this endpoint is a drill (a partner's DR site).
    #[serde(default)]
    drill_site: bool,
    /// Largest file taken, in bytes; a larger one is reported and left on
    /// the server. Default 4 GiB.
    max_file_bytes: Option<u64>,
    /// Cron schedule with seconds, e.g. `0 */10 * * * *`, in `timezone`.
    /// Absent: only `settlegate pull` takes files from this endpoint.
    schedule: Option<String>,
    /// Seconds to connect and log in. Default 20.
    connect_timeout_seconds: Option<f64>,
    /// Seconds any one SFTP request may take. Default 60.
    io_timeout_seconds: Option<f64>,
    /// Attempts after a dropped connection or timeout. Default 4.
    retries: Option<u32>,
    /// First back-off delay in seconds, doubled each attempt. Default 1.
    retry_initial_seconds: Option<f64>,
    /// Longest back-off delay in seconds. Default 60.
    retry_max_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    /// RFC 3339 timestamp, e.g. `2026-11-28T22:00:00+09:00`.
    start: String,
    end: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDateWindow {
    /// How many days before today a business date may be.
    days_before: u32,
    /// How many days after today a business date may be.
    days_after: u32,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from (`None`: built-in defaults).
    pub source: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub formats_dir: PathBuf,
    /// `None`: SQLite under the data dir.
    pub ledger: Option<String>,
    pub timezone: FixedOffset,
    pub watch: WatchConfig,
    pub partners: Vec<Partner>,
    /// The SFTP server channel, when configured.
    pub sftp_server: Option<crate::channels::sftp_server::SftpServerConfig>,
}

/// Timing of the watched-folder channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    pub settle: std::time::Duration,
    pub rescan: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Partner {
    pub id: String,
    pub formats: Vec<String>,
    pub drill_name_patterns: Vec<Regex>,
    pub drill_channels: Vec<String>,
    pub drill_endpoints: Vec<String>,
    pub drill_windows: Vec<DrillWindow>,
    pub business_date_window: Option<DateWindow>,
    /// Explicit inbox directory (default under the data dir).
    pub inbox: Option<PathBuf>,
    pub endpoints: Vec<Endpoint>,
}

/// A partner's SFTP server that settlegate pulls from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: EndpointAuth,
    pub host_key: HostKeyPin,
    pub trust_on_first_use: bool,
    pub remote_dir: String,
    pub glob: glob::Pattern,
    pub completion: Completion,
    pub after_pickup: AfterPickup,
    pub drill_site: bool,
    pub max_file_bytes: u64,
    pub schedule: Option<Schedule>,
    pub connect_timeout: std::time::Duration,
    pub io_timeout: std::time::Duration,
    pub retry: RetryPolicy,
}

/// How to log in. Secrets are read from the environment when connecting,
/// never held in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAuth {
    Key {
        file: PathBuf,
        passphrase_env: Option<String>,
    },
    Password {
        env: String,
    },
}

/// The pinned host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    KnownHosts(PathBuf),
    Fingerprint(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    DoneMarker(String),
    Stable(std::time::Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPickup {
    Archive(String),
    Delete,
    Leave,
}

/// A cron schedule with seconds, kept with its text for messages.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub text: String,
    pub cron: croner::Cron,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub initial: std::time::Duration,
    pub max: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrillWindow {
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateWindow {
    pub days_before: u32,
    pub days_after: u32,
}

/// Channels the intake knows.
pub const CHANNELS: &[&str] = &["manual", "watch", "sftp-pull", "sftp-push"];

impl Config {
    /// Load from `path`, or from `settlegate.toml` in the working directory
    /// when present, or built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let Some(path) = path else {
            return Config::build(RawConfig::default(), None);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Config::from_toml(&text, &path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::build(raw, Some(path))
    }

    fn build(raw: RawConfig, path: Option<&Path>) -> Result<Config, ConfigError> {
        let shown = path.map_or_else(|| PathBuf::from("(defaults)"), Path::to_path_buf);
        let err = |context: &str, message: String| ConfigError::Invalid {
            path: shown.clone(),
            context: context.to_string(),
            message,
        };
        let base = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let timezone = match &raw.timezone {
            None => FixedOffset::east_opt(9 * 3600)
                .ok_or_else(|| err("timezone", "bad default".into()))?,
            Some(t) => t.parse::<FixedOffset>().map_err(|e| {
                err(
                    "timezone",
                    format!("{t:?} is not a UTC offset such as +09:00 ({e})"),
                )
            })?,
        };
        let mut partners = Vec::new();
        for p in raw.partners {
            let ctx = format!("partner {}", p.id);
            if p.id.is_empty()
                || !p
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    &ctx,
                    "id must be ASCII letters, digits, '-' or '_'".into(),
                ));
            }
            if partners.iter().any(|q: &Partner| q.id == p.id) {
                return Err(err(&ctx, "defined twice".into()));
            }
            if p.formats.is_empty() {
                return Err(err(&ctx, "formats must name at least one format".into()));
            }
            let drill_name_patterns = p
                .drill_name_patterns
                .iter()
                .map(|r| {
                    Regex::new(r).map_err(|e| err(&ctx, format!("drill_name_patterns {r:?}: {e}")))
                })
                .collect::<Result<_, _>>()?;
            for c in &p.drill_channels {
                if !CHANNELS.contains(&c.as_str()) {
                    return Err(err(
                        &ctx,
                        format!(
                            "drill_channels: unknown channel {c:?} (known: {})",
                            CHANNELS.join(", ")
                        ),
                    ));
                }
            }
            let drill_windows = p
                .drill_windows
                .iter()
                .map(|w| {
                    let parse = |s: &str| {
                        DateTime::parse_from_rfc3339(s)
                            .map_err(|e| err(&ctx, format!("drill window {s:?}: {e} (RFC 3339, e.g. 2026-11-28T22:00:00+09:00)")))
                    };
                    let (start, end) = (parse(&w.start)?, parse(&w.end)?);
                    if end <= start {
                        return Err(err(&ctx, format!("drill window ends ({}) before it starts ({})", w.end, w.start)));
                    }
                    Ok(DrillWindow { start, end })
                })
                .collect::<Result<_, _>>()?;
            let mut drill_endpoints = p.drill_endpoints;
            let mut endpoints: Vec<Endpoint> = Vec::new();
            for e in p.endpoints {
                let ctx = format!("partner {} endpoint {}", p.id, e.name);
                if endpoints.iter().any(|q| q.name == e.name) {
                    return Err(err(&ctx, "defined twice".into()));
                }
                let endpoint = build_endpoint(e, &base, &|m| err(&ctx, m))?;
                // A DR site's files are drills by the same rule as a listed
                // drill endpoint, so a file judged after a restart is judged alike.
                if endpoint.drill_site && !drill_endpoints.contains(&endpoint.name) {
                    drill_endpoints.push(endpoint.name.clone());
                }
                endpoints.push(endpoint);
            }
            partners.push(Partner {
                id: p.id,
                formats: p.formats,
                drill_name_patterns,
                drill_channels: p.drill_channels,
                drill_endpoints,
                drill_windows,
                business_date_window: p.business_date_window.map(|w| DateWindow {
                    days_before: w.days_before,
                    days_after: w.days_after,
                }),
                inbox: p.inbox.map(|i| base.join(i)),
                endpoints,
            });
        }
        let watch_err = |m| err("watch", m);
        let watch = WatchConfig {
            settle: seconds(
                raw.watch.settle_seconds,
                2.0,
                0.0,
                "settle_seconds",
                &watch_err,
            )?,
            rescan: seconds(
                raw.watch.rescan_seconds,
                30.0,
                0.1,
                "rescan_seconds",
                &watch_err,
            )?,
        };
        let partner_ids: Vec<&str> = partners.iter().map(|p: &Partner| p.id.as_str()).collect();
        let sftp_server = raw
            .sftp_server
            .map(|s| s.validate(&partner_ids, &base))
            .transpose()
            .map_err(|(context, message)| err(&context, message))?;
        Ok(Config {
            source: path.map(Path::to_path_buf),
            sftp_server,
            watch,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            formats_dir: raw
                .formats_dir
                .map_or_else(|| base.join("formats"), |f| base.join(f)),
            ledger: raw.ledger,
            timezone,
            partners,
        })
    }

    /// Load the format specs and check every partner's formats exist.
    pub fn load_formats(&self) -> Result<FormatRegistry, ConfigError> {
        let registry = FormatRegistry::load_dir(&self.formats_dir)?;
        for p in &self.partners {
            for f in &p.formats {
                if registry.get(f).is_none() {
                    return Err(ConfigError::Invalid {
                        path: self.source.clone().unwrap_or_default(),
                        context: format!("partner {}", p.id),
                        message: format!(
                            "unknown format {f:?} (loaded from {}: {})",
                            self.formats_dir.display(),
                            registry.ids().join(", ")
                        ),
                    });
                }
            }
        }
        Ok(registry)
    }

    pub fn partner(&self, id: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.id == id)
    }

    /// A partner's watched inbox.
    pub fn inbox_dir(&self, partner: &str) -> PathBuf {
        self.partner(partner)
            .and_then(|p| p.inbox.clone())
            .unwrap_or_else(|| self.data_dir.join("inbox").join(partner))
    }
}

/// A number of seconds from `min` to one day.
fn seconds(
    v: Option<f64>,
    default: f64,
    min: f64,
    name: &str,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<std::time::Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v.is_finite() && v >= min && v <= 86_400.0 {
        Ok(std::time::Duration::from_secs_f64(v))
    } else {
        Err(err(format!(
            "{name}: {v} is not a number of seconds from {min} to 86400"
        )))
    }
}

fn build_endpoint(
    e: RawEndpoint,
    base: &Path,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<Endpoint, ConfigError> {
    if e.name.is_empty()
        || !e
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err("name must be ASCII letters, digits, '-' or '_'".into()));
    }
    let auth = match (e.key_file, e.password_env, e.key_passphrase_env) {
        (Some(file), None, passphrase_env) => EndpointAuth::Key {
            file: base.join(file),
            passphrase_env,
        },
        (None, Some(env), None) => EndpointAuth::Password { env },
        (None, Some(_), Some(_)) => {
            return Err(err("key_passphrase_env needs key_file".into()));
        }
        (Some(_), Some(_), _) => {
            return Err(err(
                "key_file and password_env: choose one way to log in".into()
            ));
        }
        (None, None, _) => {
            return Err(err(
                "no way to log in: set key_file (OpenSSH private key) or password_env (the name of an environment variable holding the password)".into(),
            ));
        }
    };
    let host_key = match (e.known_hosts, e.host_key) {
        (Some(path), None) => HostKeyPin::KnownHosts(base.join(path)),
        (None, Some(fp)) => {
            let b64 = fp.strip_prefix("SHA256:").unwrap_or("");
            if b64.len() != 43
                || !b64
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
            {
                return Err(err(format!(
                    "host_key {fp:?} is not a SHA256 fingerprint such as `ssh-keygen -lf` prints (SHA256: and 43 base64 characters)"
                )));
            }
            HostKeyPin::Fingerprint(fp)
        }
        (Some(_), Some(_)) => {
            return Err(err(
                "known_hosts and host_key: pin the host key one way".into()
            ));
        }
        (None, None) => {
            return Err(err(
                "the host key must be pinned: set known_hosts (an OpenSSH known_hosts file) or host_key (SHA256:… fingerprint)".into(),
            ));
        }
    };
    if e.trust_on_first_use && !matches!(host_key, HostKeyPin::KnownHosts(_)) {
        return Err(err(
            "trust_on_first_use needs a known_hosts file to record the key in".into(),
        ));
    }
    let remote_dir = e.remote_dir.unwrap_or_else(|| ".".into());
    let glob_text = e.glob.unwrap_or_else(|| "*".into());
    let glob =
        glob::Pattern::new(&glob_text).map_err(|x| err(format!("glob {glob_text:?}: {x}")))?;
    let completion = match (e.done_suffix, e.stable_seconds) {
        (Some(s), None) if !s.is_empty() && !s.contains('/') => Completion::DoneMarker(s),
        (Some(s), None) => {
            return Err(err(format!(
                "done_suffix {s:?} must be a non-empty name suffix"
            )));
        }
        (None, v) => Completion::Stable(seconds(v, 10.0, 0.0, "stable_seconds", err)?),
        (Some(_), Some(_)) => {
            return Err(err(
                "done_suffix and stable_seconds: choose one completion rule".into(),
            ));
        }
    };
    if e.archive_dir.as_deref().map(|d| d.trim_end_matches('/'))
        == Some(remote_dir.trim_end_matches('/'))
    {
        return Err(err(
            "archive_dir is the remote_dir: archived files would be taken again".into(),
        ));
    }
    let after_pickup = match (
        e.after_pickup.as_deref().unwrap_or("archive"),
        e.archive_dir,
    ) {
        ("archive", dir) => AfterPickup::Archive(
            dir.unwrap_or_else(|| format!("{}/archive", remote_dir.trim_end_matches('/'))),
        ),
        ("delete", None) => AfterPickup::Delete,
        ("leave", None) => AfterPickup::Leave,
        ("delete" | "leave", Some(_)) => {
            return Err(err(
                "archive_dir is only for after_pickup = \"archive\"".into()
            ));
        }
        (other, _) => {
            return Err(err(format!(
                "after_pickup {other:?}: expected \"archive\", \"delete\" or \"leave\""
            )));
        }
    };
    let schedule = e
        .schedule
        .map(|text| {
            croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Required)
                .build()
                .parse(&text)
                .map(|cron| Schedule {
                    text: text.clone(),
                    cron,
                })
                .map_err(|x| {
                    err(format!(
                        "schedule {text:?}: {x} (six fields, seconds first, e.g. \"0 */10 * * * *\")"
                    ))
                })
        })
        .transpose()?;
    let retry = RetryPolicy {
        retries: e.retries.unwrap_or(4),
        initial: seconds(
            e.retry_initial_seconds,
            1.0,
            0.0,
            "retry_initial_seconds",
            err,
        )?,
        max: seconds(e.retry_max_seconds, 60.0, 0.0, "retry_max_seconds", err)?,
    };
    Ok(Endpoint {
        name: e.name,
        host: e.host,
        port: e.port.unwrap_or(22),
        user: e.user,
        auth,
        host_key,
        trust_on_first_use: e.trust_on_first_use,
        remote_dir,
        glob,
        completion,
        after_pickup,
        drill_site: e.drill_site,
        max_file_bytes: e.max_file_bytes.unwrap_or(4 << 30),
        schedule,
        connect_timeout: seconds(
            e.connect_timeout_seconds,
            20.0,
            0.1,
            "connect_timeout_seconds",
            err,
        )?,
        io_timeout: seconds(e.io_timeout_seconds, 60.0, 1.0, "io_timeout_seconds", err)?,
        retry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/sg/settlegate.toml"))
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load("data_dri = \"x\"").unwrap_err().to_string();
        assert!(e.contains("data_dri"), "{e}");
        let e = load("[[partners]]\nid = \"a\"\nformats = [\"f\"]\ndril_name_patterns = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dril_name_patterns"), "{e}");
    }

    #[test]
    fn defaults_and_relative_formats_dir() {
        let c = load("").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.formats_dir, PathBuf::from("/etc/sg/formats"));
        assert_eq!(c.timezone.local_minus_utc(), 9 * 3600);
        assert!(c.ledger.is_none());
    }

    const EP: &str = "[[partners]]\nid = \"a\"\nformats = [\"f\"]\n[[partners.endpoints]]\nname = \"dr\"\nhost = \"sftp.example\"\nuser = \"sg\"\n";

    #[test]
    fn endpoint_defaults_and_dr_site() {
        let c = load(&format!(
            "{EP}key_file = \"keys/id\"\nhost_key = \"SHA256:{}\"\ndrill_site = true\nschedule = \"0 */10 * * * *\"\n",
            "A".repeat(43)
        ))
        .unwrap();
        let p = &c.partners[0];
        let e = &p.endpoints[0];
        assert_eq!(e.port, 22);
        assert_eq!(e.remote_dir, ".");
        assert_eq!(
            e.completion,
            Completion::Stable(std::time::Duration::from_secs(10))
        );
        assert_eq!(e.after_pickup, AfterPickup::Archive("./archive".into()));
        assert_eq!(
            e.auth,
            EndpointAuth::Key {
                file: PathBuf::from("/etc/sg/keys/id"),
                passphrase_env: None
            }
        );
        assert_eq!(e.retry.retries, 4);
        assert!(e.schedule.is_some());
        // A DR site's files are drills by the partner's drill_endpoints rule.
        assert_eq!(p.drill_endpoints, vec!["dr".to_string()]);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        let fp = format!("host_key = \"SHA256:{}\"\n", "A".repeat(43));
        for (extra, needle) in [
            ("key_file = \"k\"\n".to_string(), "host key must be pinned"),
            (fp.clone(), "no way to log in"),
            (
                format!("{fp}key_file = \"k\"\npassword_env = \"P\"\n"),
                "choose one way to log in",
            ),
            (
                "key_file = \"k\"\nhost_key = \"MD5:aa\"\n".to_string(),
                "not a SHA256 fingerprint",
            ),
            (
                format!("{fp}key_file = \"k\"\nknown_hosts = \"kh\"\n"),
                "pin the host key one way",
            ),
            (
                format!("{fp}key_file = \"k\"\ntrust_on_first_use = true\n"),
                "trust_on_first_use needs a known_hosts",
            ),
            (
                format!("{fp}key_file = \"k\"\nschedule = \"*/10 * * * *\"\n"),
                "schedule",
            ),
            (
                format!("{fp}key_file = \"k\"\nafter_pickup = \"shred\"\n"),
                "after_pickup \"shred\"",
            ),
            (
                format!("{fp}key_file = \"k\"\ndone_suffix = \".done\"\nstable_seconds = 5\n"),
                "choose one completion rule",
            ),
            (
                format!("{fp}key_file = \"k\"\nafter_pickup = \"leave\"\narchive_dir = \"x\"\n"),
                "archive_dir is only for",
            ),
            (format!("{fp}key_file = \"k\"\nglob = \"[\"\n"), "glob"),
            (
                format!("{fp}key_file = \"k\"\nremote_dir = \"/out\"\narchive_dir = \"/out/\"\n"),
                "archive_dir is the remote_dir",
            ),
            (format!("{fp}key_file = \"k\"\nsecret = \"x\"\n"), "secret"),
        ] {
            let text = format!("{EP}{extra}");
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra:?}: {e}");
            assert!(
                e.contains("unknown field") || e.contains("endpoint dr"),
                "names the endpoint: {e}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("timezone = \"KST\"", "timezone"),
            ("[watch]\nrescan_seconds = 0.01", "watch: rescan_seconds"),
            ("[watch]\nsettle_seconds = -1", "watch: settle_seconds"),
            (
                "[[partners]]\nid = \"a\"\nformats = []",
                "at least one format",
            ),
            (
                "[[partners]]\nid = \"a b\"\nformats = [\"f\"]",
                "id must be",
            ),
            (
                "[[partners]]\nid = \"a\"\nformats = [\"f\"]\ndrill_name_patterns = [\"(\"]",
                "drill_name_patterns",
            ),
            (
                "[[partners]]\nid = \"a\"\nformats = [\"f\"]\ndrill_channels = [\"fax\"]",
                "unknown channel",
            ),
            (
                "[[partners]]\nid = \"a\"\nformats = [\"f\"]\ndrill_windows = [{ start = \"2026-11-28T22:00:00+09:00\", end = \"2026-11-28T21:00:00+09:00\" }]",
                "before it starts",
            ),
            (
                "[[partners]]\nid = \"a\"\nformats = [\"f\"]\n[[partners]]\nid = \"a\"\nformats = [\"f\"]",
                "defined twice",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
