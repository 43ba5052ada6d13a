//! `settlegate.toml`: parse → validate → build. Unknown keys are errors that
//! name the key; every field has a documented default; validation compiles
//! patterns and windows before anything touches the network or the ledger.
//!
//! This module owns the top level and the partners ([`partner`],
//! [`endpoint`]). The sections a channel owns (`[watch]`, `[sftp_server]`)
//! are kept here as raw tables and validated by that channel
//! (`crate::channels::ChannelSettings`), so the configuration knows no
//! channel's types.

pub mod day;
pub mod endpoint;
pub mod partner;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::FixedOffset;
use serde::Deserialize;

use crate::format::{FormatRegistry, SpecError};

pub use day::{Calendar, ExpectDays, Expectation, Metrics, Operators};
pub use endpoint::{
    AfterPickup, Completion, Endpoint, EndpointAuth, HostKeyPin, RetryPolicy, Schedule, Upload,
};
pub use partner::{DateWindow, DrillWindow, Partner};

/// The default `timezone`: KST.
const DEFAULT_TIMEZONE: FixedOffset = match FixedOffset::east_opt(9 * 3600) {
    Some(tz) => tz,
    None => panic!("+09:00 is a valid offset"),
};

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
    /// Every problem found, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// One error from the problems found (`None`: none).
    pub fn from_problems(mut problems: Vec<ConfigError>) -> Option<ConfigError> {
        match problems.len() {
            0 => None,
            1 => problems.pop(),
            _ => Some(ConfigError::Several(problems)),
        }
    }

    /// The problems this error holds, one each.
    pub fn into_problems(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Several(v) => v.into_iter().flat_map(ConfigError::into_problems).collect(),
            other => vec![other],
        }
    }

    /// The file a problem is in.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Spec(e) => Some(e.path()),
            ConfigError::Several(_) => None,
        }
    }

    /// Where in the file: a key or a section (`None`: the whole file).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { context, .. } => Some(context),
            ConfigError::Spec(e) => e.context(),
            _ => None,
        }
    }

    /// The partner a problem is about, when it is about one (contexts name
    /// a partner as `partner ID`).
    pub fn partner(&self) -> Option<&str> {
        let key = self.key()?;
        let at = key.find("partner ")?;
        let rest = &key[at + "partner ".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        Some(&rest[..end]).filter(|p| !p.is_empty())
    }

    /// What is wrong, without the file and key.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { source, .. } => format!("cannot read: {source}"),
            ConfigError::Parse { message, .. } | ConfigError::Invalid { message, .. } => {
                message.clone()
            }
            ConfigError::Spec(e) => e.message(),
            ConfigError::Several(_) => self.to_string(),
        }
    }
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
    /// File mode of receipts, in octal. Default `"0640"` (partners' and
    /// operators' tooling in the group reads them).
    receipt_mode: Option<String>,
    #[serde(default)]
    partners: Vec<partner::RawPartner>,
    /// The watched-folder channel's section (its own validation).
    watch: Option<toml::Table>,
    /// The SFTP server's section (absent: off; its own validation).
    sftp_server: Option<toml::Table>,
    /// Business days (default: Monday to Friday, no holidays).
    #[serde(default)]
    calendar: day::RawCalendar,
    /// Operators' rules (four-eyes). Default: none.
    #[serde(default)]
    operators: day::RawOperators,
    /// `GET /metrics` and `/healthz` from `serve`. Absent: off.
    metrics: Option<day::RawMetrics>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from (`None`: built-in defaults).
    pub source: Option<PathBuf>,
    /// The directory relative paths in the file are relative to.
    pub base: PathBuf,
    pub data_dir: PathBuf,
    pub formats_dir: PathBuf,
    /// `None`: SQLite under the data dir.
    pub ledger: Option<String>,
    pub timezone: FixedOffset,
    /// File mode of receipts.
    pub receipt_mode: u32,
    pub partners: Vec<Partner>,
    pub calendar: Calendar,
    pub operators: Operators,
    /// `None`: `serve` answers no HTTP.
    pub metrics: Option<Metrics>,
    /// Every partner id the file declares, also one left out for a problem
    /// (so a section naming it is not told the partner is unknown).
    pub declared_partners: Vec<String>,
    /// The sections channels validate themselves.
    pub sections: Sections,
}

/// Raw sections owned by a channel, as written (`None`: absent).
#[derive(Debug, Clone, Default)]
pub struct Sections {
    pub watch: Option<toml::Table>,
    pub sftp_server: Option<toml::Table>,
}

impl Config {
    /// Load from `path`, or from `settlegate.toml` in the working directory
    /// when present, or built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let Some(path) = path else {
            let (config, problems) = Config::build(RawConfig::default(), None);
            return match ConfigError::from_problems(problems) {
                None => Ok(config),
                Some(e) => Err(e),
            };
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Config::from_toml(&text, &path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = Config::from_toml_checked(text, path)?;
        match ConfigError::from_problems(problems) {
            None => Ok(config),
            Some(e) => Err(e),
        }
    }

    /// Every problem of the file at once, with the configuration built from
    /// what is valid (a partner with a problem left out). `Err`: the file
    /// cannot be read or is not TOML (nothing more can be said).
    pub fn load_checked(path: Option<&Path>) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let Some(path) = path else {
            return Ok(Config::build(RawConfig::default(), None));
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Config::from_toml_checked(&text, &path)
    }

    /// [`Config::load_checked`] of a text.
    pub fn from_toml_checked(
        text: &str,
        path: &Path,
    ) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Config::build(raw, Some(path)))
    }

    /// An error about this configuration: where (a section, a partner) and what.
    pub fn invalid(&self, context: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from("(defaults)")),
            context: context.into(),
            message: message.into(),
        }
    }

    /// Validate every part; a part with a problem is noted and left at its
    /// default (a partner: left out), so every problem is found in one pass.
    fn build(raw: RawConfig, path: Option<&Path>) -> (Config, Vec<ConfigError>) {
        let shown = path.map_or_else(|| PathBuf::from("(defaults)"), Path::to_path_buf);
        let mut problems = Vec::new();
        let mut err = |context: &str, message: String| {
            problems.push(ConfigError::Invalid {
                path: shown.clone(),
                context: context.to_string(),
                message,
            })
        };
        let base = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let kst = DEFAULT_TIMEZONE;
        let timezone = match &raw.timezone {
            None => kst,
            Some(t) => t.parse::<FixedOffset>().unwrap_or_else(|e| {
                err(
                    "timezone",
                    format!("{t:?} is not a UTC offset such as +09:00 ({e})"),
                );
                kst
            }),
        };
        let receipt_mode = match raw.receipt_mode.as_deref() {
            None => 0o640,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|v| *v <= 0o777 && *v & 0o400 != 0)
                .unwrap_or_else(|| {
                    err(
                        "receipt_mode",
                        format!("{m:?} is not a file mode in octal such as \"0640\" (the owner must be able to read)"),
                    );
                    0o640
                }),
        };
        let mut partners: Vec<Partner> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for p in raw.partners {
            if seen.iter().any(|q| q == p.id()) {
                err(&format!("partner {}", p.id()), "defined twice".into());
                continue;
            }
            seen.push(p.id().to_string());
            match partner::build(p, &base, timezone) {
                Ok(p) => partners.push(p),
                Err(found) => {
                    for (c, m) in found {
                        err(&c, m);
                    }
                }
            }
        }
        let calendar = day::build_calendar(raw.calendar, &base).unwrap_or_else(|m| {
            err("calendar", m);
            Calendar::default()
        });
        let operators = day::build_operators(raw.operators).unwrap_or_else(|m| {
            err("operators", m);
            Operators::default()
        });
        let metrics = raw
            .metrics
            .map(day::build_metrics)
            .transpose()
            .unwrap_or_else(|m| {
                err("metrics", m);
                None
            });
        let config = Config {
            source: path.map(Path::to_path_buf),
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            formats_dir: raw
                .formats_dir
                .map_or_else(|| base.join("formats"), |f| base.join(f)),
            base,
            ledger: raw.ledger,
            timezone,
            receipt_mode,
            partners,
            calendar,
            operators,
            metrics,
            declared_partners: seen,
            sections: Sections {
                watch: raw.watch,
                sftp_server: raw.sftp_server,
            },
        };
        (config, problems)
    }

    /// Load the format specs and check every partner's formats exist.
    pub fn load_formats(&self) -> Result<FormatRegistry, ConfigError> {
        let (registry, problems) = self.load_formats_checked();
        match ConfigError::from_problems(problems) {
            None => Ok(registry),
            Some(e) => Err(e),
        }
    }

    /// Every format spec that loads, and every problem: specs that do not,
    /// and partners naming a format that is not there.
    pub fn load_formats_checked(&self) -> (FormatRegistry, Vec<ConfigError>) {
        let (registry, spec_problems) = FormatRegistry::load_dir_checked(&self.formats_dir);
        let unloaded = if spec_problems.is_empty() {
            ""
        } else {
            "; a spec that failed to load may be the one meant"
        };
        let mut problems: Vec<ConfigError> = Vec::new();
        for p in &self.partners {
            for f in p.formats.iter().chain(&p.outbound_formats) {
                if registry.get(f).is_none() {
                    problems.push(self.invalid(
                        format!("partner {}", p.id),
                        format!(
                            "unknown format {f:?} (loaded from {}: {}{unloaded})",
                            self.formats_dir.display(),
                            registry.ids().join(", ")
                        ),
                    ));
                }
            }
        }
        let mut all: Vec<ConfigError> = spec_problems.into_iter().map(ConfigError::Spec).collect();
        all.append(&mut problems);
        (registry, all)
    }

    pub fn partner(&self, id: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.id == id)
    }

    /// The partner ids, for messages.
    pub fn partner_ids(&self) -> Vec<&str> {
        self.partners.iter().map(|p| p.id.as_str()).collect()
    }

    /// A partner's outbox: what the settlement system drops there is
    /// delivered to the partner.
    pub fn outbox_dir(&self, partner: &str) -> PathBuf {
        self.partner(partner)
            .and_then(|p| p.outbox.clone())
            .unwrap_or_else(|| self.data_dir.join("outbox").join(partner))
    }

    /// A partner's watched inbox.
    pub fn inbox_dir(&self, partner: &str) -> PathBuf {
        self.partner(partner)
            .and_then(|p| p.inbox.clone())
            .unwrap_or_else(|| self.data_dir.join("inbox").join(partner))
    }
}

/// Deserialize a raw section into its typed form, naming the section in the
/// error (unknown keys included).
pub fn section<T: serde::de::DeserializeOwned>(
    table: Option<&toml::Table>,
) -> Result<Option<T>, String> {
    table
        .map(|t| {
            toml::Value::Table(t.clone())
                .try_into::<T>()
                .map_err(|e| e.to_string())
        })
        .transpose()
}

/// A number of seconds from `min` to one day.
pub fn seconds(v: Option<f64>, default: f64, min: f64, name: &str) -> Result<Duration, String> {
    let v = v.unwrap_or(default);
    if v.is_finite() && v >= min && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "{name}: {v} is not a number of seconds from {min} to 86400"
        ))
    }
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
            (
                format!("{fp}key_file = \"k\"\nupload_dir = \"in\"\nupload_channels = 0\n"),
                "upload_channels = 0: expected 1 to 16",
            ),
            (
                format!("{fp}key_file = \"k\"\nupload_channels = 2\n"),
                "need upload_dir",
            ),
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
    fn expectations_and_day_defaults() {
        let c = load(
            "timezone = \"+09:00\"\n[[partners]]\nid = \"a\"\nformats = [\"f\"]\n[[partners.expect]]\nformat = \"f\"\nby = \"09:30\"\n",
        )
        .unwrap();
        let e = &c.partners[0].expect[0];
        assert_eq!((e.days, e.count, e.lag_days), (ExpectDays::Business, 1, 1));
        assert_eq!(e.by, chrono::NaiveTime::from_hms_opt(9, 30, 0).unwrap());
        assert_eq!(e.timezone.local_minus_utc(), 9 * 3600);
        assert_eq!(c.calendar, Calendar::default());
        assert_eq!(c.operators.request_ttl_hours, 24);
        assert!(c.operators.four_eyes.is_empty());
        assert!(c.metrics.is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("timezone = \"KST\"", "timezone"),
            ("receipt_mode = \"0999\"", "receipt_mode"),
            ("receipt_mode = \"0040\"", "receipt_mode"),
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
            (
                "[operators]\nfour_eyes = [\"delete\"]",
                "unknown action \"delete\"",
            ),
            ("[operators]\nrequest_ttl_hours = 0", "request_ttl_hours"),
            ("[metrics]\nlisten = \"localhost\"", "listen \"localhost\""),
            (
                "[calendar]\nholidays = [\"2026-02-30\"]",
                "holidays: \"2026-02-30\"",
            ),
            ("[calendar]\nweekends = [\"caturday\"]", "caturday"),
            (
                "[[partners]]\nid = \"a\"\nformats = [\"f\"]\n[[partners.expect]]\nformat = \"g\"\nby = \"09:00\"",
                "not one of the partner's formats",
            ),
            (
                "[[partners]]\nid = \"a\"\nformats = [\"f\"]\n[[partners.expect]]\nformat = \"f\"\nby = \"9am\"",
                "by \"9am\"",
            ),
            (
                "[[partners]]\nid = \"a\"\nformats = [\"f\"]\n[[partners.expect]]\nformat = \"f\"\nby = \"09:00\"\ndays = \"weekly\"",
                "days \"weekly\"",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
