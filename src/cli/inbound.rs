//! Commands that take files in or look at one: verify, formats, ingest,
//! pull, recover.

use std::io::{IsTerminal, Read};
use std::path::Path;

use serde_json::json;

use super::CliError;
use super::render::{
    facts_json, outcome_json, print_facts, print_formats, print_pull, pull_json, shown,
};
use crate::channels::sftp_pull::{self, PullError};
use crate::config::Config;
use crate::format::{FileContext, FormatSpec, Parallelism};
use crate::identify::{choose_format, control_file_beside};
use crate::intake::{Arrival, Bytes, Gateway, operator_actor};
use crate::model::{Channel, Exit};

/// Files larger than this get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 64 << 20;

pub fn formats(config: &Config) -> Result<Exit, CliError> {
    print_formats(&config.load_formats()?);
    Ok(Exit::Ok)
}

pub fn verify(
    config: &Config,
    format: &str,
    path: &Path,
    json: bool,
    threads: Option<u16>,
) -> Result<Exit, CliError> {
    let registry = config.load_formats()?;
    let spec = registry.get(format).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown format {format:?}; known formats: {}",
            registry.ids().join(", ")
        ))
    })?;
    let mut par = Parallelism::available();
    if let Some(n) = threads {
        par.workers = usize::from(n);
    }
    let io_err = |source| CliError::Io {
        context: format!("cannot read {}", path.display()),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sidecar = read_control_file(spec, path)?;
    let ctx = FileContext {
        name: &name,
        sidecar: sidecar.as_deref(),
    };
    let input: Box<dyn Read> = if size > PROGRESS_THRESHOLD && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(size).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Box::new(bar.wrap_read(file))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 16, file))
    };
    let facts = crate::format::verify_with(spec, input, ctx, &mut (), par).map_err(io_err)?;
    if json {
        println!("{}", facts_json(&facts));
    } else {
        print_facts(&name, &facts);
    }
    Ok(if facts.is_valid() {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}

/// A file's control file from beside it, if its format has one and it is there.
fn read_control_file(spec: &FormatSpec, file: &Path) -> Result<Option<Vec<u8>>, CliError> {
    let Some(path) = control_file_beside(spec, file) else {
        return Ok(None);
    };
    std::fs::read(&path)
        .map(Some)
        .map_err(|source| CliError::Io {
            context: format!("cannot read control file {}", path.display()),
            source,
        })
}

pub async fn ingest(
    gw: &Gateway,
    partner: &str,
    file: &Path,
    channel: Channel,
    reason: Option<String>,
    json: bool,
) -> Result<Exit, CliError> {
    let p = gw.config.partner(partner).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown partner {partner:?}; configured partners: {}",
            gw.config.partner_ids().join(", ")
        ))
    })?;
    let name = regular_file(file)?;
    let control = choose_format(&gw.formats, p, &name)
        .ok()
        .and_then(|spec| control_file_beside(spec, file));
    let actor = operator_actor();
    let (stored, control, verified) = match control {
        None => {
            let (stored, verified) = gw.stage_file(file, partner, &name).await?;
            (stored, None, verified)
        }
        Some(control) => {
            let (stored, control) = gw
                .stage(Bytes::Files {
                    data: file,
                    control: Some(&control),
                })
                .await?;
            (stored, control, None)
        }
    };
    // These bytes recorded by an interrupted run (a killed ingest, a full
    // disk) and never judged: finish that arrival instead of recording a
    // second one that would be its duplicate.
    if let Some(id) = gw
        .ledger
        .pending_with_checksum(partner, &stored.checksum)
        .await?
    {
        eprintln!(
            "file {id} holds these bytes: recorded by an interrupted run and not judged; judging it now"
        );
        return match gw.judge(id, &actor).await {
            Ok(out) => Ok(print_ingested(&out, &name, json)),
            Err(e) => match gw.ledger.file(id).await? {
                Some(row) if row.state != crate::model::FileState::Received => {
                    println!(
                        "file {id} was judged meanwhile by another process: {}: {}",
                        row.state,
                        row.reason.as_deref().map(shown).unwrap_or_default()
                    );
                    Ok(row.state.verdict().map_or(Exit::Refused, Exit::from))
                }
                _ => Err(e.into()),
            },
        };
    }
    let mut arrival = Arrival::new(partner, channel, &name, &actor);
    arrival.source_path = Some(
        std::fs::canonicalize(file)
            .unwrap_or(file.to_path_buf())
            .display()
            .to_string(),
    );
    arrival.reason = reason;
    let bytes = Bytes::Stored {
        data: &stored,
        control: control.as_ref(),
    };
    let out = gw.intake_verified(&arrival, bytes, verified).await?;
    Ok(print_ingested(&out, &name, json))
}

fn print_ingested(out: &crate::intake::Outcome, name: &str, json: bool) -> Exit {
    if json {
        println!("{}", outcome_json(out));
    } else {
        println!("{}: {}", out.verdict, out.reason);
        println!(
            "  file {}  {}  checksum {}",
            out.file_id,
            shown(name),
            out.checksum
        );
    }
    out.verdict.into()
}

/// The file name of `file` when it is a regular file (a symbolic link is
/// followed: the operator names the file on purpose); else why not.
pub fn regular_file(file: &Path) -> Result<String, CliError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::Usage(format!("{} is not a file", file.display())))?;
    let unreadable = |why: &str| CliError::Io {
        context: format!("cannot read {}", file.display()),
        source: std::io::Error::other(why.to_string()),
    };
    match std::fs::metadata(file) {
        Ok(m) if m.is_file() => Ok(name),
        Ok(m) if m.is_dir() => Err(unreadable("it is a directory, not a file")),
        Ok(_) => Err(unreadable(
            "not a regular file (a FIFO, socket or device); copy the file first",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unreadable("no such file")),
        Err(source) => Err(CliError::Io {
            context: format!("cannot read {}", file.display()),
            source,
        }),
    }
}

pub async fn pull(
    gw: &Gateway,
    partner: &str,
    endpoint: Option<String>,
    json: bool,
) -> Result<Exit, CliError> {
    let p = gw
        .config
        .partner(partner)
        .ok_or_else(|| CliError::Usage(format!("unknown partner {partner:?}")))?;
    let names: Vec<String> = match endpoint {
        Some(e) => vec![e],
        None if p.endpoints.is_empty() => {
            return Err(CliError::Usage(format!(
                "partner {partner} has no SFTP endpoints configured"
            )));
        }
        None => p
            .endpoints
            .iter()
            .filter(|e| e.pickup)
            .map(|e| e.name.clone())
            .collect(),
    };
    if let Some(ep) = names
        .iter()
        .find_map(|n| p.endpoint(n))
        .filter(|e| !e.pickup)
    {
        return Err(CliError::Usage(format!(
            "endpoint {} of partner {partner} only receives deliveries (no remote_dir)",
            ep.name
        )));
    }
    let mut code = Exit::Ok;
    let mut reports = Vec::new();
    // One endpoint failing never stops the others.
    for name in names {
        let result = sftp_pull::pull(gw, partner, &name).await;
        if let Some(e) = &result.error {
            code = match e {
                PullError::Unknown(_) => Exit::Usage,
                _ => Exit::Endpoint,
            };
        }
        if json {
            reports.push(pull_json(partner, &name, &result));
        } else {
            print_pull(partner, &name, &result);
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(reports));
    }
    Ok(code)
}

pub async fn recover(gw: &Gateway, json: bool) -> Result<Exit, CliError> {
    let report = gw.recover(&operator_actor()).await?;
    let unwritten: Vec<(i64, String)> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.receipt {
            crate::intake::ReceiptStatus::Failed(e) => Some((o.file_id, e.clone())),
            _ => None,
        })
        .collect();
    for (id, e) in &unwritten {
        eprintln!("file {id}: judged, but its receipt could not be written: {e}");
    }
    if json {
        let list: Vec<serde_json::Value> = report.outcomes.iter().map(outcome_json).collect();
        let failed: Vec<serde_json::Value> = report
            .failures
            .iter()
            .map(|(id, e)| json!({ "file_id": id, "error": e }))
            .collect();
        println!("{}", json!({ "judged": list, "failed": failed }));
    } else if report.outcomes.is_empty() && report.failures.is_empty() {
        println!("no unjudged files");
    } else {
        for o in &report.outcomes {
            println!("file {}: {}: {}", o.file_id, o.verdict, o.reason);
        }
        for (id, e) in &report.failures {
            println!("file {id}: still unjudged: {e}");
        }
    }
    Ok(if report.failures.is_empty() && unwritten.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    })
}
