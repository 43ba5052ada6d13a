//! The command line: parse arguments, load configuration, call the library,
//! and turn results and errors into messages and exit codes.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::{Config, ConfigError};
use crate::format::{FileContext, FileFacts, FormatRegistry, FormatSpec};

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
    },
    /// List the loaded format specs.
    Formats,
}

/// Errors the binary reports; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
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
            CliError::Io { .. } => exit::FAILURE,
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
        Command::Verify { format, file, json } => {
            let registry = config.load_formats()?;
            let spec = registry.get(&format).ok_or_else(|| {
                CliError::Usage(format!(
                    "unknown format {format:?}; known formats: {}",
                    registry.ids().join(", ")
                ))
            })?;
            verify_file(spec, &file, json)
        }
    }
}

fn print_formats(registry: &FormatRegistry) {
    for spec in registry.iter() {
        let layout = match (&spec.fixed, &spec.csv) {
            (Some(f), _) => format!(
                "fixed {} bytes, {}",
                f.record_length,
                match f.terminator {
                    crate::format::spec::Terminator::Line => "CRLF/LF",
                    crate::format::spec::Terminator::None => "no terminator",
                }
            ),
            (None, Some(_)) => {
                let sidecar = spec
                    .sidecar
                    .as_ref()
                    .map(|s| format!(" + {}", s.suffix))
                    .unwrap_or_default();
                format!("csv{sidecar}")
            }
            (None, None) => String::new(),
        };
        println!(
            "{:<22} {:<6} {:<28} {}",
            spec.id,
            spec.encoding.label(),
            layout,
            spec.title
        );
    }
}

/// Read a file's sidecar from beside it, if the format has one and it exists.
pub fn read_sidecar(spec: &FormatSpec, file: &Path) -> Result<Option<Vec<u8>>, CliError> {
    let Some(name) = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| spec.sidecar_name(n))
    else {
        return Ok(None);
    };
    let path = file.with_file_name(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CliError::Io {
            context: format!("cannot read control file {}", path.display()),
            source,
        }),
    }
}

fn verify_file(spec: &FormatSpec, path: &Path, json: bool) -> Result<u8, CliError> {
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
    let facts = crate::format::verify(spec, input, ctx, &mut ()).map_err(io_err)?;
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
