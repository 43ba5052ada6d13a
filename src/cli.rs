//! The command line: parse arguments, load configuration, call the library,
//! and turn results and errors into messages and exit codes.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use std::sync::Arc;

use chrono::NaiveDate;

use crate::config::{Config, ConfigError};
use crate::format::{FileContext, FileFacts, FormatRegistry, FormatSpec};
use crate::intake::{Arrival, Gateway, GatewayOpenError, IntakeError, Outcome, SystemClock};
use crate::judge::Verdict;
use crate::ledger::{EventRow, FileFilter, FileRow, LedgerError};

/// Exit codes, one per outcome an operator or a script must tell apart.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DUPLICATE: u8 = 10;
    pub const DRILL: u8 = 11;
    pub const CONFLICT: u8 = 12;
    pub const OVERLAP: u8 = 13;
    pub const INVALID: u8 = 14;
    /// An operator action the ledger's state does not allow.
    pub const REFUSED: u8 = 3;
    /// `pull`: an endpoint could not be read (connection, host key, login).
    pub const ENDPOINT: u8 = 4;
}

/// Files larger than this get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 64 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "settlegate",
    version,
    about = "Settlement-file gateway: every file kept, identified, judged, and fed at most once"
)]
pub struct Cli {
    /// Configuration file (default: ./settlegate.toml when present).
    #[arg(long, global = true, env = "SETTLEGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the gateway keeps its ledger, content store, inboxes and receipts (default: ./data).
    #[arg(long, global = true, env = "SETTLEGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ledger URL: sqlite://PATH or postgres://… (default: SQLite at <data-dir>/ledger.db).
    #[arg(long, global = true, env = "SETTLEGATE_LEDGER")]
    pub ledger: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a file against a format and print its facts; touches nothing.
    Verify {
        /// Format id (see `settlegate formats`).
        #[arg(long)]
        format: String,
        /// The data file. A sidecar control file (e.g. `.ctl`) is read from beside it.
        file: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Threads checking records of a fixed-width file (default: one per
        /// CPU). With 1 the records are checked in order on one thread.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
    },
    /// List the loaded format specs.
    Formats,
    /// Manual ingest and redelivery: take a file through the whole pipeline.
    Ingest {
        /// Partner id from the configuration.
        #[arg(long)]
        partner: String,
        /// The data file. For formats with a control file, it is read from beside FILE.
        file: PathBuf,
        /// Channel to record (manual ingest is `manual`).
        #[arg(long, default_value = "manual")]
        channel: String,
        /// Why the file is being ingested by hand (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List files in the ledger.
    Files {
        #[arg(long)]
        partner: Option<String>,
        /// Business date, YYYY-MM-DD.
        #[arg(long)]
        date: Option<NaiveDate>,
        /// fed, duplicate, drill, conflict, overlap, invalid, received, superseded, rejected.
        #[arg(long)]
        verdict: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A file's facts, verdict and audit events.
    Show {
        file_id: i64,
        #[arg(long)]
        json: bool,
    },
    /// What settlement will pay for a business date, per partner and format.
    Intake {
        /// Business date, YYYY-MM-DD.
        #[arg(long)]
        date: NaiveDate,
        #[arg(long)]
        json: bool,
    },
    /// Replace the fed file a conflict file collides with: its entries are
    /// reversed and the conflict file is fed, in one transaction.
    Supersede {
        /// The conflict file (it names the fed file it replaces).
        file_id: i64,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Feed a quarantined drill file after all. Needs --override and a reason;
    /// duplicates, conflicts and overlaps are still refused.
    Release {
        file_id: i64,
        /// Confirms the file is to be fed despite its drill signals.
        #[arg(long = "override", required = true)]
        override_: bool,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Close a quarantined file (drill, conflict, overlap, invalid) for good.
    Reject {
        file_id: i64,
        #[arg(long)]
        reason: String,
    },
    /// Run the gateway: every configured channel, until SIGINT or SIGTERM.
    Serve {
        /// Log format on stderr.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Pick up new files from a partner's SFTP endpoints now (what the
    /// schedule does), and print each file taken with its verdict.
    Pull {
        #[arg(long)]
        partner: String,
        /// One endpoint by name (default: every endpoint of the partner).
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Judge files an interrupted run left staged but unjudged.
    Recover {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Structured logs on stderr; `RUST_LOG` filters (default `default`).
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Errors the binary reports; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] GatewayOpenError),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => exit::USAGE,
            CliError::Open(GatewayOpenError::Config(_)) => exit::USAGE,
            CliError::Intake(IntakeError::UnknownPartner(_)) => exit::USAGE,
            CliError::Intake(IntakeError::Refused(_)) => exit::REFUSED,
            CliError::Serve(crate::serve::ServeError::Open(GatewayOpenError::Config(_))) => {
                exit::USAGE
            }
            CliError::Io { .. }
            | CliError::Open(_)
            | CliError::Intake(_)
            | CliError::Ledger(_)
            | CliError::Serve(_) => exit::FAILURE,
        }
    }
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("settlegate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

pub fn run(cli: Cli) -> Result<u8, CliError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = cli.ledger {
        config.ledger = Some(l);
    }
    match cli.command {
        Command::Formats => {
            let registry = config.load_formats()?;
            print_formats(&registry);
            Ok(exit::OK)
        }
        Command::Verify {
            format,
            file,
            json,
            threads,
        } => {
            let registry = config.load_formats()?;
            let spec = registry.get(&format).ok_or_else(|| {
                CliError::Usage(format!(
                    "unknown format {format:?}; known formats: {}",
                    registry.ids().join(", ")
                ))
            })?;
            let mut par = crate::format::Parallelism::available();
            if let Some(n) = threads {
                par.workers = usize::from(n);
            }
            verify_file(spec, &file, json, par)
        }
        Command::Serve { log_format } => {
            init_logging(log_format, "info");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|source| CliError::Io {
                    context: "cannot start the async runtime".into(),
                    source,
                })?;
            runtime.block_on(crate::serve::serve(config, crate::serve::shutdown_signal()))?;
            Ok(exit::OK)
        }
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|source| CliError::Io {
                    context: "cannot start the async runtime".into(),
                    source,
                })?;
            runtime.block_on(run_ledger_command(config, command))
        }
    }
}

async fn run_ledger_command(config: Config, command: Command) -> Result<u8, CliError> {
    let gateway = Gateway::open(config, Arc::new(SystemClock)).await?;
    let result = ledger_command(&gateway, command).await;
    gateway.ledger.close().await;
    result
}

async fn ledger_command(gw: &Gateway, command: Command) -> Result<u8, CliError> {
    let tz = gw.config.timezone;
    match command {
        Command::Ingest {
            partner,
            file,
            channel,
            reason,
            json,
        } => {
            if !crate::config::CHANNELS.contains(&channel.as_str()) {
                return Err(CliError::Usage(format!(
                    "unknown channel {channel:?} (known: {})",
                    crate::config::CHANNELS.join(", ")
                )));
            }
            let p = gw.config.partner(&partner).ok_or_else(|| {
                CliError::Usage(format!(
                    "unknown partner {partner:?}; configured partners: {}",
                    gw.config
                        .partners
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| CliError::Usage(format!("{} is not a file", file.display())))?;
            if !file.is_file() {
                return Err(CliError::Io {
                    context: format!("cannot read {}", file.display()),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            let sidecar = crate::intake::choose_format(&gw.formats, p, &name)
                .ok()
                .and_then(|spec| sidecar_path(spec, &file))
                .filter(|path| path.is_file());
            let arrival = Arrival {
                partner: partner.clone(),
                channel,
                source_path: Some(
                    std::fs::canonicalize(&file)
                        .unwrap_or(file.clone())
                        .display()
                        .to_string(),
                ),
                name,
                actor: crate::intake::operator_actor(),
                reason,
                ..Arrival::default()
            };
            let out = gw.intake_file(&arrival, &file, sidecar.as_deref()).await?;
            if json {
                println!("{}", outcome_json(&out));
            } else {
                println!("{}: {}", out.verdict, out.reason);
                println!(
                    "  file {}  {}  checksum {}",
                    out.file_id, arrival.name, out.checksum
                );
            }
            Ok(out.verdict.exit_code())
        }
        Command::Files {
            partner,
            date,
            verdict,
            json,
        } => {
            if let Some(v) = &verdict
                && Verdict::parse(v).is_none()
                && !["received", "superseded", "rejected"].contains(&v.as_str())
            {
                return Err(CliError::Usage(format!("unknown verdict {v:?}")));
            }
            let rows = gw
                .ledger
                .files(&FileFilter {
                    partner,
                    business_date: date,
                    verdict,
                    limit: None,
                })
                .await?;
            if json {
                let list: Vec<serde_json::Value> = rows.iter().map(file_json).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:>6}  {:<8} {:<9} {:<10} {:<10} {:>8}  {:<16} name / reason",
                    "id", "partner", "channel", "verdict", "date", "records", "received"
                );
                for r in &rows {
                    println!(
                        "{:>6}  {:<8} {:<9} {:<10} {:<10} {:>8}  {:<16} {}",
                        r.id,
                        r.partner,
                        r.channel,
                        r.verdict,
                        r.business_date
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.records
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.received_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
                        r.name
                    );
                    if let Some(reason) = &r.reason
                        && r.verdict != "fed"
                    {
                        println!("{:>8}↳ {reason}", "");
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Show { file_id, json } => {
            let row = gw
                .ledger
                .file(file_id)
                .await?
                .ok_or_else(|| CliError::Usage(format!("no file {file_id} in the ledger")))?;
            let events = gw.ledger.events(file_id).await?;
            let entries = gw.ledger.entry_count(file_id).await?;
            let stored = gw.store.path_of(&row.checksum);
            if json {
                let mut v = file_json(&row);
                v["entries"] = json!(entries);
                v["stored_at"] = json!(stored.display().to_string());
                v["events"] = json!(events);
                println!("{v}");
            } else {
                print_file(&row, &events, entries, &stored, tz);
            }
            Ok(exit::OK)
        }
        Command::Intake { date, json } => {
            let rows = gw.ledger.intake(date).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
                );
            } else if rows.is_empty() {
                println!("nothing fed for business date {date}");
            } else {
                println!(
                    "{:<10} {:<22} {:<10} {:>6} {:>10} {:>20}",
                    "partner", "format", "date", "files", "entries", "total"
                );
                for r in rows {
                    println!(
                        "{:<10} {:<22} {:<10} {:>6} {:>10} {:>20}",
                        r.partner, r.format, r.business_date, r.files, r.entries, r.total
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Supersede {
            file_id,
            reason,
            json,
        } => {
            let out = gw
                .supersede(file_id, &reason, &crate::intake::operator_actor())
                .await?;
            print_operator_outcome(&out, json);
            Ok(exit::OK)
        }
        Command::Release {
            file_id,
            reason,
            json,
            ..
        } => {
            let out = gw
                .release(file_id, &reason, &crate::intake::operator_actor())
                .await?;
            print_operator_outcome(&out, json);
            Ok(exit::OK)
        }
        Command::Reject { file_id, reason } => {
            gw.reject(file_id, &reason, &crate::intake::operator_actor())
                .await?;
            println!("rejected: file {file_id}: {reason}");
            Ok(exit::OK)
        }
        Command::Pull {
            partner,
            endpoint,
            json,
        } => {
            // Retries and after-pickup failures show on stderr.
            init_logging(LogFormat::Text, "warn");
            let p = gw
                .config
                .partner(&partner)
                .ok_or_else(|| CliError::Usage(format!("unknown partner {partner:?}")))?;
            let names: Vec<String> = match endpoint {
                Some(e) => vec![e],
                None if p.endpoints.is_empty() => {
                    return Err(CliError::Usage(format!(
                        "partner {partner} has no SFTP endpoints configured"
                    )));
                }
                None => p.endpoints.iter().map(|e| e.name.clone()).collect(),
            };
            let mut code = exit::OK;
            let mut reports = Vec::new();
            // One endpoint failing never stops the others.
            for name in names {
                let result = crate::channels::sftp_pull::pull(gw, &partner, &name).await;
                if let Err(e) = &result {
                    code = match e {
                        crate::channels::sftp_pull::PullError::Unknown(_) => exit::USAGE,
                        _ => exit::ENDPOINT,
                    };
                }
                if json {
                    reports.push(pull_json(&partner, &name, &result));
                } else {
                    print_pull(&partner, &name, &result);
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(reports));
            }
            Ok(code)
        }
        Command::Recover { json } => {
            let report = gw.recover(&crate::intake::operator_actor()).await?;
            let unwritten = crate::channels::receipt::write_recovered(&gw.config.data_dir, &report);
            for (id, e) in &unwritten {
                eprintln!("file {id}: judged, but its receipt could not be written: {e}");
            }
            if json {
                let list: Vec<serde_json::Value> = report
                    .outcomes
                    .iter()
                    .map(|(_, o)| outcome_json(o))
                    .collect();
                let failed: Vec<serde_json::Value> = report
                    .failures
                    .iter()
                    .map(|(id, e)| json!({ "file_id": id, "error": e }))
                    .collect();
                println!("{}", json!({ "judged": list, "failed": failed }));
            } else if report.outcomes.is_empty() && report.failures.is_empty() {
                println!("no unjudged files");
            } else {
                for (_, o) in &report.outcomes {
                    println!("file {}: {}: {}", o.file_id, o.verdict, o.reason);
                }
                for (id, e) in &report.failures {
                    println!("file {id}: still unjudged: {e}");
                }
            }
            Ok(if report.failures.is_empty() && unwritten.is_empty() {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
        Command::Verify { .. } | Command::Formats | Command::Serve { .. } => {
            Err(CliError::Usage("not a ledger command".into()))
        }
    }
}

fn print_operator_outcome(out: &Outcome, json: bool) {
    if json {
        println!("{}", outcome_json(out));
    } else {
        println!("{}: {}", out.verdict, out.reason);
        println!("  file {}  {} entries", out.file_id, out.fed_entries);
    }
}

fn print_pull(
    partner: &str,
    endpoint: &str,
    result: &Result<crate::channels::sftp_pull::PullReport, crate::channels::sftp_pull::PullError>,
) {
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            println!("{partner}/{endpoint}: cannot pull: {e}");
            return;
        }
    };
    println!(
        "{partner}/{endpoint}: {} taken, {} waiting{}",
        r.taken.len(),
        r.waiting.len(),
        if r.attempts > 1 {
            format!(" ({} connection attempts)", r.attempts)
        } else {
            String::new()
        }
    );
    for t in &r.taken {
        match &t.outcome {
            Some(o) => println!(
                "  {:<10} file {:<6} {}  {}",
                o.verdict.as_str(),
                o.file_id,
                t.name,
                o.reason
            ),
            None => match t.already_taken {
                Some(id) => println!(
                    "  {:<10} file {id:<6} {}  the same bytes were taken before; not recorded again",
                    "taken", t.name
                ),
                None => println!(
                    "  {:<10} {}  {}",
                    "unjudged",
                    t.name,
                    t.error.as_deref().unwrap_or("")
                ),
            },
        }
        if let Some(e) = &t.after_pickup_error {
            println!("             after-pickup action failed (retried next pickup): {e}");
        }
    }
    for w in &r.waiting {
        println!("  {:<10} {w}", "waiting");
    }
}

fn pull_json(
    partner: &str,
    endpoint: &str,
    result: &Result<crate::channels::sftp_pull::PullReport, crate::channels::sftp_pull::PullError>,
) -> serde_json::Value {
    match result {
        Err(e) => json!({
            "partner": partner, "endpoint": endpoint, "ok": false, "error": e.to_string(),
        }),
        Ok(r) => {
            let taken: Vec<serde_json::Value> = r
                .taken
                .iter()
                .map(|t| {
                    let mut v = t
                        .outcome
                        .as_ref()
                        .map(outcome_json)
                        .unwrap_or_else(|| json!({}));
                    v["name"] = json!(t.name);
                    v["remote_path"] = json!(t.remote_path);
                    v["error"] = json!(t.error);
                    v["after_pickup_error"] = json!(t.after_pickup_error);
                    v["already_taken"] = json!(t.already_taken);
                    v
                })
                .collect();
            json!({
                "partner": partner, "endpoint": endpoint, "ok": true, "error": null,
                "attempts": r.attempts, "taken": taken, "waiting": r.waiting,
            })
        }
    }
}

fn outcome_json(out: &Outcome) -> serde_json::Value {
    let facts = out.facts.as_ref();
    let business_key: serde_json::Map<String, serde_json::Value> = facts
        .map(|f| {
            f.business_key
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "file_id": out.file_id,
        "verdict": out.verdict.as_str(),
        "reason": out.reason,
        "related_file_id": out.related_file_id,
        "checksum": out.checksum,
        "fingerprint": facts.and_then(|f| f.fingerprint_hex()),
        "business_key": business_key,
        "business_date": facts.and_then(|f| f.business_date).map(|d| d.to_string()),
        "records": facts.map(|f| f.records),
        "entries": out.fed_entries,
    })
}

fn file_json(r: &FileRow) -> serde_json::Value {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    json!({
        "id": r.id,
        "partner": r.partner,
        "channel": r.channel,
        "endpoint": r.endpoint,
        "source_path": r.source_path,
        "name": r.name,
        "verdict": r.verdict,
        "reason": r.reason,
        "related_file_id": r.related_file_id,
        "checksum": r.checksum,
        "sidecar_checksum": r.sidecar_checksum,
        "fingerprint": r.fingerprint,
        "format": r.format,
        "business_key": r.business_key,
        "business_date": r.business_date.map(|d| d.to_string()),
        "records": r.records,
        "size": r.size,
        "totals": parse(&r.totals),
        "drill_signals": parse(&r.drill_signals),
        "error": parse(&r.error),
        "received_at": r.received_at.to_rfc3339(),
        "decided_at": r.decided_at.map(|d| d.to_rfc3339()),
    })
}

fn print_file(
    r: &FileRow,
    events: &[EventRow],
    entries: i64,
    stored: &Path,
    tz: chrono::FixedOffset,
) {
    println!("file {}: {} ({})", r.id, r.name, r.verdict);
    if let Some(reason) = &r.reason {
        println!("  reason         {reason}");
    }
    if let Some(rel) = r.related_file_id {
        println!("  related file   {rel}");
    }
    println!(
        "  partner        {} via {}{}",
        r.partner,
        r.channel,
        r.endpoint
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    if let Some(p) = &r.source_path {
        println!("  source         {p}");
    }
    println!(
        "  received       {}",
        r.received_at
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
    );
    println!("  size           {} bytes", r.size);
    println!("  checksum       {}", r.checksum);
    println!("  stored at      {}", stored.display());
    for (label, v) in [
        ("format", &r.format),
        ("fingerprint", &r.fingerprint),
        ("business key", &r.business_key),
        ("totals", &r.totals),
        ("drill signals", &r.drill_signals),
        ("error", &r.error),
    ] {
        if let Some(v) = v {
            println!("  {label:<14} {v}");
        }
    }
    if let Some(d) = r.business_date {
        println!("  business date  {d}");
    }
    if let Some(n) = r.records {
        println!("  records        {n}");
    }
    println!("  entries        {entries}");
    println!("  events:");
    for e in events {
        println!(
            "    {}  {:<10} {:<28} {}",
            e.at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.actor,
            e.reason.as_deref().unwrap_or("")
        );
    }
}

fn print_formats(registry: &FormatRegistry) {
    for spec in registry.iter() {
        println!(
            "{:<22} {:<6} {:<28} {}",
            spec.id,
            spec.encoding.label(),
            spec.layout_summary(),
            spec.title
        );
    }
}

/// Where a data file's control file would be (beside it), if its format has one.
fn sidecar_path(spec: &FormatSpec, file: &Path) -> Option<PathBuf> {
    let name = file.file_name()?.to_str()?;
    Some(file.with_file_name(spec.sidecar_name(name)?))
}

/// Read a file's sidecar from beside it, if the format has one and it exists.
pub fn read_sidecar(spec: &FormatSpec, file: &Path) -> Result<Option<Vec<u8>>, CliError> {
    let Some(path) = sidecar_path(spec, file) else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CliError::Io {
            context: format!("cannot read control file {}", path.display()),
            source,
        }),
    }
}

fn verify_file(
    spec: &FormatSpec,
    path: &Path,
    json: bool,
    par: crate::format::Parallelism,
) -> Result<u8, CliError> {
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
    let sidecar = read_sidecar(spec, path)?;
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
        exit::OK
    } else {
        exit::INVALID
    })
}

/// The JSON shape of `verify --json`.
pub fn facts_json(facts: &FileFacts) -> serde_json::Value {
    let business_key: serde_json::Map<String, serde_json::Value> = facts
        .business_key
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let totals: serde_json::Map<String, serde_json::Value> = facts
        .totals
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.to_string())))
        .collect();
    json!({
        "format": facts.format,
        "valid": facts.is_valid(),
        "records": facts.records,
        "size": facts.size,
        "checksum": facts.checksum_hex(),
        "fingerprint": facts.fingerprint_hex(),
        "business_key": business_key,
        "business_date": facts.business_date.map(|d| d.to_string()),
        "totals": totals,
        "drill_signals": facts.drill_signals,
        "error": facts.error,
    })
}

fn print_facts(name: &str, facts: &FileFacts) {
    match &facts.error {
        None => println!("valid: {name} ({})", facts.format),
        Some(e) => println!("invalid: {name} ({}): {e}", facts.format),
    }
    println!("  records        {}", facts.records);
    println!("  checksum       {}", facts.checksum_hex());
    if let Some(fp) = facts.fingerprint_hex() {
        println!("  fingerprint    {fp}");
    }
    if !facts.business_key.is_empty() {
        println!("  business key   {}", facts.business_key_text());
    }
    if facts.is_valid() && !facts.totals.is_empty() {
        let totals: Vec<String> = facts
            .totals
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  totals         {}", totals.join(" "));
    }
    if !facts.drill_signals.is_empty() {
        println!("  drill signals  {}", facts.drill_signals.join(" "));
    }
}
