//! `[watch]`: the timing of the watched-folder channel.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, ConfigError, seconds, section};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    /// Seconds a file's size and modification time must stay unchanged
    /// before it is taken. Default 2.
    settle_seconds: Option<f64>,
    /// Seconds between safety-net rescans of every inbox. Default 30.
    rescan_seconds: Option<f64>,
    /// Files of one folder taken at once (their stores, commits and
    /// receipts overlap). 1 takes them one at a time, in name order.
    /// Default 8.
    parallel_files: Option<usize>,
}

/// Settings of the watched-folder channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// A file must keep its size and mtime this long before it is taken.
    pub settle: Duration,
    /// Interval of the safety-net rescan.
    pub rescan: Duration,
    /// Files of one folder taken at once.
    pub parallel_files: usize,
}

impl WatchSettings {
    /// Validate the `[watch]` section (absent: the defaults).
    pub fn from_config(config: &Config) -> Result<WatchSettings, ConfigError> {
        let err = |m: String| config.invalid("watch", m);
        let raw: RawWatch = section(config.sections.watch.as_ref())
            .map_err(err)?
            .unwrap_or_default();
        Ok(WatchSettings {
            settle: seconds(raw.settle_seconds, 2.0, 0.0, "settle_seconds").map_err(err)?,
            rescan: seconds(raw.rescan_seconds, 30.0, 0.1, "rescan_seconds").map_err(err)?,
            parallel_files: match raw.parallel_files {
                None => 8,
                Some(n @ 1..=256) => n,
                Some(n) => {
                    return Err(err(format!(
                        "parallel_files = {n}: expected 1 to 256 files taken at once"
                    )));
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<WatchSettings, ConfigError> {
        let c = Config::from_toml(text, std::path::Path::new("/etc/sg/settlegate.toml"))?;
        WatchSettings::from_config(&c)
    }

    #[test]
    fn defaults_and_bad_values() {
        let w = load("").unwrap();
        assert_eq!(w.settle, Duration::from_secs(2));
        assert_eq!(w.rescan, Duration::from_secs(30));
        assert_eq!(w.parallel_files, 8);
        assert_eq!(
            load("[watch]\nparallel_files = 1").unwrap().parallel_files,
            1
        );
        for (text, needle) in [
            ("[watch]\nrescan_seconds = 0.01", "watch: rescan_seconds"),
            ("[watch]\nsettle_seconds = -1", "watch: settle_seconds"),
            ("[watch]\nsettle_secs = 1", "settle_secs"),
            ("[watch]\nparallel_files = 0", "watch: parallel_files = 0"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
