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
            partners.push(Partner {
                id: p.id,
                formats: p.formats,
                drill_name_patterns,
                drill_channels: p.drill_channels,
                drill_endpoints: p.drill_endpoints,
                drill_windows,
                business_date_window: p.business_date_window.map(|w| DateWindow {
                    days_before: w.days_before,
                    days_after: w.days_after,
                }),
                inbox: p.inbox.map(|i| base.join(i)),
            });
        }
        let seconds = |v: Option<f64>, default: f64, min: f64, name: &str| {
            let v = v.unwrap_or(default);
            if v.is_finite() && v >= min && v <= 86_400.0 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                Err(err(
                    &format!("watch.{name}"),
                    format!("{v} is not a number of seconds from {min} to 86400"),
                ))
            }
        };
        let watch = WatchConfig {
            settle: seconds(raw.watch.settle_seconds, 2.0, 0.0, "settle_seconds")?,
            rescan: seconds(raw.watch.rescan_seconds, 30.0, 0.1, "rescan_seconds")?,
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

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("timezone = \"KST\"", "timezone"),
            ("[watch]\nrescan_seconds = 0.01", "watch.rescan_seconds"),
            ("[watch]\nsettle_seconds = -1", "watch.settle_seconds"),
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
