//! `[[partners]]`: who sends files, in which formats, and what makes one of
//! their files a drill. Validated here; the channels read it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use regex::Regex;
use serde::Deserialize;

use super::endpoint::{self, Endpoint, RawEndpoint, is_plain_name};
use crate::model::Channel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartner {
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
    /// SFTP servers of the partner that settlegate picks files up from or
    /// delivers files to.
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
    /// Formats of the files settlegate sends this partner; a file that fails
    /// its format (or whose name matches none) is never sent. Absent: files
    /// are sent as they are.
    #[serde(default)]
    outbound_formats: Vec<String>,
    /// The partner collects its deliveries from `/outbox` on settlegate's
    /// SFTP server, also when it has an upload endpoint. Default false (a
    /// partner without an upload endpoint always collects).
    #[serde(default)]
    collect: bool,
    /// Where the settlement system drops files for this partner. Default
    /// `<data_dir>/outbox/<id>`.
    outbox: Option<PathBuf>,
    /// Files expected from this partner per business date, with deadlines.
    #[serde(default)]
    expect: Vec<super::day::RawExpect>,
}

impl RawPartner {
    pub(super) fn id(&self) -> &str {
        &self.id
    }
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

#[derive(Debug, Clone)]
pub struct Partner {
    pub id: String,
    pub formats: Vec<String>,
    pub drill_name_patterns: Vec<Regex>,
    pub drill_channels: Vec<Channel>,
    /// Endpoints or SFTP accounts (by name) whose files are drills; includes
    /// every endpoint marked `drill_site`.
    pub drill_endpoints: Vec<String>,
    pub drill_windows: Vec<DrillWindow>,
    pub business_date_window: Option<DateWindow>,
    /// Explicit inbox directory (default under the data dir).
    pub inbox: Option<PathBuf>,
    pub endpoints: Vec<Endpoint>,
    pub outbound_formats: Vec<String>,
    /// Collects from `/outbox` (set, or no endpoint with an upload_dir).
    pub collect: bool,
    /// Explicit outbox directory (default under the data dir).
    pub outbox: Option<PathBuf>,
    /// Files expected per business date (`[[partners.expect]]`).
    pub expect: Vec<super::day::Expectation>,
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

impl Partner {
    /// A partner with formats and nothing else (for tests and tools).
    pub fn for_tests(id: &str, formats: &[&str]) -> Partner {
        Partner {
            id: id.into(),
            formats: formats.iter().map(|f| f.to_string()).collect(),
            drill_name_patterns: Vec::new(),
            drill_channels: Vec::new(),
            drill_endpoints: Vec::new(),
            drill_windows: Vec::new(),
            business_date_window: None,
            inbox: None,
            endpoints: Vec::new(),
            outbound_formats: Vec::new(),
            collect: false,
            outbox: None,
            expect: Vec::new(),
        }
    }

    /// The endpoint deliveries go to: `name` when given, else the partner's
    /// first endpoint with an `upload_dir`. `None`: the partner collects.
    pub fn upload_endpoint(&self, name: Option<&str>) -> Option<&Endpoint> {
        match name {
            Some(n) => self.endpoint(n).filter(|e| e.upload.is_some()),
            None if self.collect => None,
            None => self.endpoints.iter().find(|e| e.upload.is_some()),
        }
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

/// Validate one partner. Errors are (context, message).
pub(super) fn build(
    p: RawPartner,
    base: &Path,
    timezone: chrono::FixedOffset,
) -> Result<Partner, (String, String)> {
    let ctx = format!("partner {}", p.id);
    let err = |m: String| (ctx.clone(), m);
    if !is_plain_name(&p.id) {
        return Err(err("id must be ASCII letters, digits, '-' or '_'".into()));
    }
    if p.formats.is_empty() {
        return Err(err("formats must name at least one format".into()));
    }
    let drill_name_patterns = p
        .drill_name_patterns
        .iter()
        .map(|r| Regex::new(r).map_err(|e| err(format!("drill_name_patterns {r:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let drill_channels = p
        .drill_channels
        .iter()
        .map(|c| Channel::parse(c).map_err(|e| err(format!("drill_channels: {e}"))))
        .collect::<Result<_, _>>()?;
    let drill_windows = p
        .drill_windows
        .iter()
        .map(|w| {
            let parse = |s: &str| {
                DateTime::parse_from_rfc3339(s).map_err(|e| {
                    err(format!(
                        "drill window {s:?}: {e} (RFC 3339, e.g. 2026-11-28T22:00:00+09:00)"
                    ))
                })
            };
            let (start, end) = (parse(&w.start)?, parse(&w.end)?);
            if end <= start {
                return Err(err(format!(
                    "drill window ends ({}) before it starts ({})",
                    w.end, w.start
                )));
            }
            Ok(DrillWindow { start, end })
        })
        .collect::<Result<_, _>>()?;
    let mut drill_endpoints = p.drill_endpoints;
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for e in p.endpoints {
        let ectx = format!("partner {} endpoint {}", p.id, e.name());
        if endpoints.iter().any(|q| q.name == e.name()) {
            return Err((ectx, "defined twice".into()));
        }
        let endpoint = endpoint::build(e, base).map_err(|m| (ectx, m))?;
        // A DR site's files are drills by the same rule as a listed drill
        // endpoint, so a file judged after a restart is judged alike.
        if endpoint.drill_site && !drill_endpoints.contains(&endpoint.name) {
            drill_endpoints.push(endpoint.name.clone());
        }
        endpoints.push(endpoint);
    }
    let mut expect: Vec<super::day::Expectation> = Vec::new();
    for e in p.expect {
        let e = super::day::build_expect(e, &p.formats, timezone).map_err(&err)?;
        if expect.iter().any(|x| x.format == e.format) {
            return Err(err(format!(
                "expect {}: defined twice (use count for several files)",
                e.format
            )));
        }
        expect.push(e);
    }
    Ok(Partner {
        id: p.id,
        formats: p.formats,
        drill_name_patterns,
        drill_channels,
        drill_endpoints,
        drill_windows,
        business_date_window: p.business_date_window.map(|w| DateWindow {
            days_before: w.days_before,
            days_after: w.days_after,
        }),
        inbox: p.inbox.map(|i| base.join(i)),
        collect: p.collect || !endpoints.iter().any(|e| e.upload.is_some()),
        endpoints,
        outbound_formats: p.outbound_formats,
        outbox: p.outbox.map(|o| base.join(o)),
        expect,
    })
}
