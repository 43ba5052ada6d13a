//! `settlegate check`: the whole configuration (top level, partners, the
//! channels' sections, every format spec) validated in one pass with every
//! problem reported, and, on request, each partner endpoint tried: login,
//! host key pin, the remote directories. `serve` reloads only a
//! configuration this check passes.

use std::path::{Path, PathBuf};

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use crate::channels::ChannelSettings;
use crate::channels::ssh::SftpConnection;
use crate::config::{Config, ConfigError, Endpoint};
use crate::format::FormatRegistry;

/// What the command line puts over the file's values.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub ledger: Option<String>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = &self.ledger {
            config.ledger = Some(l.clone());
        }
    }
}

/// A configuration that passed the check: everything `serve` runs from.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Config,
    pub channels: ChannelSettings,
    pub formats: FormatRegistry,
}

/// Load and check the configuration at `path` (default: `./settlegate.toml`
/// when present). `Err`: every problem found, in file order (top level and
/// partners, the channels' sections, then the format specs).
pub fn check_config(
    path: Option<&Path>,
    overrides: &Overrides,
) -> Result<Checked, Vec<ConfigError>> {
    let (mut config, mut problems) = match Config::load_checked(path) {
        Ok(loaded) => loaded,
        Err(e) => return Err(vec![e]),
    };
    overrides.apply(&mut config);
    let channels = ChannelSettings::from_config(&config)
        .map_err(|e| problems.extend(e.into_problems()))
        .ok();
    let (formats, format_problems) = config.load_formats_checked();
    problems.extend(
        format_problems
            .into_iter()
            .flat_map(ConfigError::into_problems),
    );
    match channels {
        Some(channels) if problems.is_empty() => Ok(Checked {
            config,
            channels,
            formats,
        }),
        _ => Err(problems),
    }
}

/// One step of an endpoint check.
#[derive(Debug, Clone)]
pub struct Step {
    /// What was tried: `login`, `remote_dir`, `upload_dir`.
    pub what: &'static str,
    /// The remote path, for the directory steps.
    pub path: Option<String>,
    /// `Ok`: what was found; `Err`: why it failed.
    pub result: Result<String, String>,
}

/// What trying one endpoint found.
#[derive(Debug, Clone)]
pub struct EndpointCheck {
    pub partner: String,
    pub endpoint: String,
    pub addr: String,
    pub steps: Vec<Step>,
}

impl EndpointCheck {
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.result.is_ok())
    }
}

/// Try every endpoint of every partner, one after the other.
pub async fn connect_all(config: &Config) -> Vec<EndpointCheck> {
    let mut out = Vec::new();
    for p in &config.partners {
        for ep in &p.endpoints {
            out.push(connect(&p.id, ep).await);
        }
    }
    out
}

/// Log in to one endpoint (host key checked against its pin), list its
/// pickup directory and prove its upload directory writable by creating and
/// removing an empty file under the upload's temporary naming (which a
/// partner's pickup ignores). Nothing is taken, moved or left behind.
pub async fn connect(partner: &str, ep: &Endpoint) -> EndpointCheck {
    let mut check = EndpointCheck {
        partner: partner.to_string(),
        endpoint: ep.name.clone(),
        addr: format!("{}:{}", ep.host, ep.port),
        steps: Vec::new(),
    };
    let conn = match SftpConnection::open(ep).await {
        Ok(c) => c,
        Err(e) => {
            check.steps.push(Step {
                what: "login",
                path: None,
                result: Err(e.to_string()),
            });
            return check;
        }
    };
    check.steps.push(Step {
        what: "login",
        path: None,
        result: Ok(format!(
            "logged in as {}, host key matches the pin",
            ep.user
        )),
    });
    if ep.pickup {
        check.steps.push(Step {
            what: "remote_dir",
            path: Some(ep.remote_dir.clone()),
            result: list_dir(&conn, &ep.remote_dir).await,
        });
    }
    if let Some(up) = &ep.upload {
        check.steps.push(Step {
            what: "upload_dir",
            path: Some(up.dir.clone()),
            result: probe_write(&conn, up).await,
        });
    }
    conn.close().await;
    check
}

fn status(e: &SftpError) -> String {
    match e {
        SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile => {
            "no such directory".into()
        }
        SftpError::Status(s) if s.status_code == StatusCode::PermissionDenied => {
            "permission denied".into()
        }
        other => other.to_string(),
    }
}

async fn list_dir(conn: &SftpConnection, dir: &str) -> Result<String, String> {
    let handle = conn
        .sftp
        .opendir(dir)
        .await
        .map_err(|e| format!("cannot list: {}", status(&e)))?
        .handle;
    let mut entries = 0usize;
    let result = loop {
        match conn.sftp.readdir(handle.as_str()).await {
            Ok(names) => {
                entries += names
                    .files
                    .iter()
                    .filter(|f| f.filename != "." && f.filename != "..")
                    .count()
            }
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
            Err(e) => break Err(format!("cannot list: {}", status(&e))),
        }
    };
    let _ = conn.sftp.close(handle).await;
    result.map(|()| format!("listable ({entries} entries)"))
}

async fn probe_write(conn: &SftpConnection, up: &crate::config::Upload) -> Result<String, String> {
    let mut token = [0u8; 6];
    getrandom::fill(&mut token).map_err(|e| format!("no randomness: {e}"))?;
    let name = up.temp_name(&format!("settlegate-check-{}", hex::encode(token)));
    let path = crate::outbound::upload::remote_path(&up.dir, &name);
    let handle = conn
        .sftp
        .open(
            path.as_str(),
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
            FileAttributes::default(),
        )
        .await
        .map_err(|e| format!("not writable: cannot create {path}: {}", status(&e)))?
        .handle;
    let _ = conn.sftp.close(handle).await;
    conn.sftp
        .remove(path.as_str())
        .await
        .map_err(|e| format!("created {path} but cannot remove it: {}", status(&e)))?;
    Ok(format!("writable (created and removed {name})"))
}
