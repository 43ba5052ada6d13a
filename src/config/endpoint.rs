//! `[[partners.endpoints]]`: a partner's SFTP server that settlegate connects
//! to. Validated here, before anything touches the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::seconds;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
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
    /// Remote directory to pick files up from. Default `.` (the login
    /// directory), unless the endpoint only receives deliveries (`upload_dir`
    /// without `remote_dir`).
    remote_dir: Option<String>,
    /// Remote directory settlegate delivers outbound files into (absent: no
    /// deliveries to this endpoint).
    upload_dir: Option<String>,
    /// Temporary name of an upload in progress: `<prefix><name><suffix>`.
    /// Defaults `.` and `.part` (partners watching for other patterns set
    /// their own).
    upload_temp_prefix: Option<String>,
    upload_temp_suffix: Option<String>,
    /// Replace a file of the same final name on the partner's side. Default
    /// false: such a delivery fails, naming the file, and nothing is replaced.
    #[serde(default)]
    overwrite: bool,
    /// SFTP sessions (SSH channels) one upload of a large file writes
    /// through at once, each with its own flow-control window: across a long
    /// round trip one window, not the link, bounds a transfer. 1 to 16,
    /// default 4; a server that allows fewer sessions per connection gets
    /// as many as it allows.
    upload_channels: Option<usize>,
    /// Cron schedule (with seconds, in `timezone`) on which queued
    /// deliveries go out together. Absent: each goes as soon as it is recorded.
    upload_schedule: Option<String>,
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

impl RawEndpoint {
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// A partner's SFTP server that settlegate picks files up from, delivers
/// files to, or both.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    /// Files are picked up from `remote_dir` (`pull`, `schedule`).
    pub pickup: bool,
    /// Deliveries go to this endpoint.
    pub upload: Option<Upload>,
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
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub retry: RetryPolicy,
}

/// Where and how outbound files are delivered to an endpoint.
#[derive(Debug, Clone)]
pub struct Upload {
    pub dir: String,
    pub temp_prefix: String,
    pub temp_suffix: String,
    /// An empty `<name><suffix>` marker written after the file is in place.
    pub done_suffix: Option<String>,
    pub overwrite: bool,
    pub schedule: Option<Schedule>,
    /// SFTP sessions a large upload is spread over.
    pub channels: usize,
}

impl Upload {
    /// The temporary name a file is uploaded under before its rename.
    pub fn temp_name(&self, name: &str) -> String {
        format!("{}{name}{}", self.temp_prefix, self.temp_suffix)
    }
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
    Stable(Duration),
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

impl Schedule {
    /// Parse a six-field cron expression (seconds first).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build()
            .parse(text)
            .map(|cron| Schedule {
                text: text.to_string(),
                cron,
            })
            .map_err(|x| {
                format!(
                    "schedule {text:?}: {x} (six fields, seconds first, e.g. \"0 */10 * * * *\")"
                )
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub initial: Duration,
    pub max: Duration,
}

/// A name that is ASCII letters, digits, '-' or '_' (partner and endpoint ids).
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn build(e: RawEndpoint, base: &Path) -> Result<Endpoint, String> {
    if !is_plain_name(&e.name) {
        return Err("name must be ASCII letters, digits, '-' or '_'".into());
    }
    let auth = match (e.key_file, e.password_env, e.key_passphrase_env) {
        (Some(file), None, passphrase_env) => EndpointAuth::Key {
            file: base.join(file),
            passphrase_env,
        },
        (None, Some(env), None) => EndpointAuth::Password { env },
        (None, Some(_), Some(_)) => return Err("key_passphrase_env needs key_file".into()),
        (Some(_), Some(_), _) => {
            return Err("key_file and password_env: choose one way to log in".into());
        }
        (None, None, _) => {
            return Err(
                "no way to log in: set key_file (OpenSSH private key) or password_env (the name of an environment variable holding the password)".into(),
            );
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
                return Err(format!(
                    "host_key {fp:?} is not a SHA256 fingerprint such as `ssh-keygen -lf` prints (SHA256: and 43 base64 characters)"
                ));
            }
            HostKeyPin::Fingerprint(fp)
        }
        (Some(_), Some(_)) => {
            return Err("known_hosts and host_key: pin the host key one way".into());
        }
        (None, None) => {
            return Err(
                "the host key must be pinned: set known_hosts (an OpenSSH known_hosts file) or host_key (SHA256:… fingerprint)".into(),
            );
        }
    };
    if e.trust_on_first_use && !matches!(host_key, HostKeyPin::KnownHosts(_)) {
        return Err("trust_on_first_use needs a known_hosts file to record the key in".into());
    }
    let pickup = e.remote_dir.is_some() || e.upload_dir.is_none();
    let done_suffix = e.done_suffix.clone();
    let upload = match e.upload_dir {
        None => {
            if e.upload_temp_prefix.is_some()
                || e.upload_temp_suffix.is_some()
                || e.overwrite
                || e.upload_schedule.is_some()
                || e.upload_channels.is_some()
            {
                return Err(
                    "upload_temp_prefix, upload_temp_suffix, upload_channels, overwrite and upload_schedule need upload_dir".into(),
                );
            }
            None
        }
        Some(dir) => {
            let temp_prefix = e.upload_temp_prefix.unwrap_or_else(|| ".".into());
            let temp_suffix = e.upload_temp_suffix.unwrap_or_else(|| ".part".into());
            if temp_prefix.is_empty() && temp_suffix.is_empty() {
                return Err(
                    "upload_temp_prefix and upload_temp_suffix are both empty: an upload in progress would carry its final name".into(),
                );
            }
            if [&temp_prefix, &temp_suffix].iter().any(|p| p.contains('/')) {
                return Err(
                    "upload_temp_prefix and upload_temp_suffix must not contain '/'".into(),
                );
            }
            let channels = e.upload_channels.unwrap_or(4);
            if !(1..=16).contains(&channels) {
                return Err(format!("upload_channels = {channels}: expected 1 to 16"));
            }
            Some(Upload {
                channels,
                dir,
                temp_prefix,
                temp_suffix,
                done_suffix: done_suffix.clone(),
                overwrite: e.overwrite,
                schedule: e
                    .upload_schedule
                    .as_deref()
                    .map(Schedule::parse)
                    .transpose()?,
            })
        }
    };
    if !pickup && (e.schedule.is_some() || e.glob.is_some() || e.after_pickup.is_some()) {
        return Err(
            "schedule, glob and after_pickup are about pickup: set remote_dir too, or remove them"
                .into(),
        );
    }
    let remote_dir = e.remote_dir.unwrap_or_else(|| ".".into());
    let glob_text = e.glob.unwrap_or_else(|| "*".into());
    let glob = glob::Pattern::new(&glob_text).map_err(|x| format!("glob {glob_text:?}: {x}"))?;
    let completion = match (e.done_suffix, e.stable_seconds) {
        (Some(s), None) if !s.is_empty() && !s.contains('/') => Completion::DoneMarker(s),
        (Some(s), None) => {
            return Err(format!("done_suffix {s:?} must be a non-empty name suffix"));
        }
        (None, v) => Completion::Stable(seconds(v, 10.0, 0.0, "stable_seconds")?),
        (Some(_), Some(_)) => {
            return Err("done_suffix and stable_seconds: choose one completion rule".into());
        }
    };
    if e.archive_dir.as_deref().map(|d| d.trim_end_matches('/'))
        == Some(remote_dir.trim_end_matches('/'))
    {
        return Err("archive_dir is the remote_dir: archived files would be taken again".into());
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
            return Err("archive_dir is only for after_pickup = \"archive\"".into());
        }
        (other, _) => {
            return Err(format!(
                "after_pickup {other:?}: expected \"archive\", \"delete\" or \"leave\""
            ));
        }
    };
    let schedule = e.schedule.as_deref().map(Schedule::parse).transpose()?;
    let retry = RetryPolicy {
        retries: e.retries.unwrap_or(4),
        initial: seconds(e.retry_initial_seconds, 1.0, 0.0, "retry_initial_seconds")?,
        max: seconds(e.retry_max_seconds, 60.0, 0.0, "retry_max_seconds")?,
    };
    Ok(Endpoint {
        name: e.name,
        pickup,
        upload,
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
        )?,
        io_timeout: seconds(e.io_timeout_seconds, 60.0, 1.0, "io_timeout_seconds")?,
        retry,
    })
}
