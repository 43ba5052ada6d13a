//! Arrival channels: thin adapters that find complete files and hand them to
//! the intake ([`crate::intake::Gateway::record`], then
//! [`crate::intake::Gateway::judge`]). Each channel owns its settings and
//! validates its own configuration section.

pub mod sftp_pull;
pub mod sftp_server;
pub mod ssh;
pub mod watch;

use crate::config::{Config, ConfigError};

pub use sftp_server::SftpServerConfig;
pub use watch::WatchSettings;

/// Every channel's validated settings.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    pub watch: WatchSettings,
    /// `None`: no `[sftp_server]` section, no SFTP server.
    pub sftp_server: Option<SftpServerConfig>,
}

impl ChannelSettings {
    /// Validate the sections the channels own; every section is checked
    /// whatever another's problems.
    pub fn from_config(config: &Config) -> Result<ChannelSettings, ConfigError> {
        match (
            WatchSettings::from_config(config),
            sftp_server::config::from_config(config),
        ) {
            (Ok(watch), Ok(sftp_server)) => Ok(ChannelSettings { watch, sftp_server }),
            (watch, sftp) => {
                let problems = [watch.err(), sftp.err()]
                    .into_iter()
                    .flatten()
                    .flat_map(ConfigError::into_problems)
                    .collect();
                Err(ConfigError::from_problems(problems)
                    .unwrap_or_else(|| config.invalid("channels", "invalid")))
            }
        }
    }
}
