//! The command line: parse arguments, load configuration, call the library,
//! and turn results and errors into messages and exit codes ([`Exit`], one
//! table for every command).
//!
//! - [`inbound`]: verify, formats, ingest, pull, recover.
//! - [`operator`]: files, show, intake, supersede, release, reject.
//! - [`outbound`]: send, resend, deliveries.
//! - [`day`]: report, requests, approve, deny, redeliver (and the four-eyes
//!   gate of every override).
//! - [`ops`]: check, hash-password, host-key, keygen, reload, migrate.
//! - [`cluster`]: nodes, store migrate.
//! - [`render`]: the JSON and text forms of what commands print.

mod cluster;
mod day;
mod inbound;
mod operator;
mod ops;
mod outbound;
mod render;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};

use crate::channels::ChannelSettings;
use crate::config::{Config, ConfigError};
use crate::intake::{Gateway, GatewayOpenError, IntakeError, SystemClock};
use crate::ledger::LedgerError;
use crate::model::{Channel, DeliveryState, Exit, OverrideAction};

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
    /// Who is acting, in the audit log and for four-eyes (default: the OS user).
    #[arg(long, global = true, env = "SETTLEGATE_OPERATOR", value_parser = operator_name)]
    pub operator: Option<String>,
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
        channel: Channel,
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
    /// Send a file to a partner now: stage, verify against the partner's
    /// outbound formats, record the delivery, and upload it (waits for the
    /// upload). The same bytes sent twice are refused as a duplicate.
    Send {
        #[arg(long)]
        partner: String,
        /// The file. For formats with a control file, it is read from beside FILE.
        file: PathBuf,
        /// The endpoint to upload to (default: the partner's first endpoint
        /// with an upload_dir, or /outbox when the partner collects).
        #[arg(long)]
        endpoint: Option<String>,
        /// Why it is sent by hand (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a delivered file again, on purpose: a new delivery of the same
    /// bytes naming the first, audited with who and why.
    Resend {
        delivery_id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Whether a settlement day is ready: per partner and format, the files
    /// expected, received, fed, waiting in quarantine, refused and missing,
    /// the deadline and the totals fed. Exit 0 ready, 5 not ready.
    Report {
        /// Business date, YYYY-MM-DD.
        #[arg(long)]
        date: NaiveDate,
        #[arg(long)]
        json: bool,
    },
    /// Take a stored file's bytes through the whole pipeline again as a new
    /// arrival (channel `redelivery`), e.g. after a format fix.
    Redeliver {
        file_id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// List the requests waiting for a second operator.
    Requests {
        #[arg(long)]
        json: bool,
    },
    /// Approve another operator's request and carry it out.
    Approve {
        request_id: i64,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deny a request (nothing is carried out).
    Deny {
        request_id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration and every format spec, reporting every
    /// problem (exit 2); with --connect, also log in to each partner endpoint
    /// and check its host key and directories, taking nothing (exit 4 when
    /// one fails).
    Check {
        /// Connect to each pickup and upload endpoint.
        #[arg(long)]
        connect: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print the argon2 PHC string of a password for an SFTP account's
    /// password_hash (read from the terminal, or the first line of stdin).
    HashPassword,
    /// Print the SFTP server's host key fingerprint and the known_hosts line
    /// partners add (the key is generated when there is none yet).
    HostKey {
        /// The name partners connect to (default: the listening address).
        #[arg(long)]
        host: Option<String>,
    },
    /// Write a new ed25519 key pair (PATH and PATH.pub) for a pickup
    /// endpoint's key_file; prints the public line to send to the partner.
    Keygen {
        path: PathBuf,
        /// The key's comment (default: settlegate).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Make the running serve re-read its configuration and formats (SIGHUP
    /// through the pid file in the data dir). A configuration that fails
    /// check is refused here and by serve.
    Reload,
    /// Bring the ledger's schema up to this version; with --check, only say
    /// whether it is current (0), behind (7) or ahead (8: a newer version
    /// wrote it, and this one refuses to run on it).
    Migrate {
        #[arg(long)]
        check: bool,
        #[arg(long)]
        json: bool,
    },
    /// The nodes (`serve` processes) alive on this ledger, and the leases
    /// each holds.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// The content store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// List outbound deliveries.
    Deliveries {
        #[arg(long)]
        partner: Option<String>,
        /// queued, sending, delivered, collected, failed, invalid, duplicate.
        #[arg(long)]
        state: Option<DeliveryState>,
        /// The day a delivery was recorded, YYYY-MM-DD (in `timezone`).
        #[arg(long)]
        date: Option<NaiveDate>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a directory store into the ledger's PostgreSQL database (then
    /// set `store = "postgres"`). Blobs already there are skipped: run it
    /// again after an interruption, and once more after the last node that
    /// wrote the directory stopped.
    Migrate {
        /// Where to: `postgres` (the ledger's database).
        #[arg(long, value_parser = ["postgres"])]
        to: String,
        /// The directory store (default: <data-dir>/store).
        #[arg(long)]
        from: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// An operator name: printable, no spaces, at most 64 characters.
fn operator_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.chars().count() <= 64
        && s.chars().all(|c| !c.is_control() && !c.is_whitespace())
    {
        Ok(s.to_string())
    } else {
        Err("an operator name is 1 to 64 printable characters without spaces".into())
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Structured logs on stderr; `RUST_LOG` filters (default `default`).
/// Colour only when stderr is a terminal: a file, a pipe or journald gets
/// plain text.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
    fn exit(&self) -> Exit {
        match self {
            CliError::Config(_) | CliError::Usage(_) => Exit::Usage,
            CliError::Open(GatewayOpenError::Config(_)) => Exit::Usage,
            CliError::Intake(IntakeError::UnknownPartner(_)) => Exit::Usage,
            CliError::Intake(IntakeError::Refused(_)) => Exit::Refused,
            CliError::Ledger(LedgerError::Ahead(_))
            | CliError::Open(GatewayOpenError::Ledger(LedgerError::Ahead(_)))
            | CliError::Serve(crate::serve::ServeError::Open(GatewayOpenError::Ledger(
                LedgerError::Ahead(_),
            ))) => Exit::LedgerAhead,
            CliError::Serve(crate::serve::ServeError::Open(GatewayOpenError::Config(_)))
            | CliError::Serve(crate::serve::ServeError::Config(_)) => Exit::Usage,
            CliError::Io { .. }
            | CliError::Open(_)
            | CliError::Intake(_)
            | CliError::Ledger(_)
            | CliError::Serve(_) => Exit::Failure,
        }
    }
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = e.print();
            return code.into();
        }
    };
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("settlegate: {e}");
            e.exit().into()
        }
    }
}

/// The configuration with the command line's overrides, every section
/// (the channels' too) validated before any command runs.
fn load(cli: &Cli) -> Result<(Config, ChannelSettings), CliError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(l) = &cli.ledger {
        config.ledger = Some(l.clone());
    }
    let channels = ChannelSettings::from_config(&config)?;
    Ok((config, channels))
}

fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, CliError> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().build().map_err(|source| CliError::Io {
        context: "cannot start the async runtime".into(),
        source,
    })
}

pub fn run(cli: Cli) -> Result<Exit, CliError> {
    let overrides = crate::check::Overrides {
        data_dir: cli.data_dir.clone(),
        ledger: cli.ledger.clone(),
    };
    match &cli.command {
        Command::Check { connect, json } => {
            return ops::check(cli.config.as_deref(), &overrides, *connect, *json);
        }
        Command::HashPassword => return ops::hash_password(),
        Command::Keygen { path, comment } => return ops::keygen(path, comment.as_deref()),
        Command::Reload => {
            let checked =
                crate::check::check_config(cli.config.as_deref(), &overrides).map_err(|p| {
                    CliError::Config(
                        ConfigError::from_problems(p)
                            .unwrap_or_else(|| ConfigError::Several(Vec::new())),
                    )
                })?;
            return ops::reload(&checked.config.data_dir);
        }
        Command::Migrate { check, json } => {
            let (config, _) = load(&cli)?;
            return runtime(Some(2))?.block_on(ops::migrate(
                config.ledger.as_deref(),
                &config.data_dir,
                *check,
                *json,
            ));
        }
        _ => {}
    }
    if let Some(name) = &cli.operator {
        crate::intake::set_operator_name(name);
    }
    let (config, channels) = load(&cli)?;
    match cli.command {
        Command::HostKey { host } => ops::host_key(
            channels.sftp_server.as_ref(),
            &config.data_dir,
            host.as_deref(),
        ),
        Command::Formats => inbound::formats(&config),
        Command::Verify {
            format,
            file,
            json,
            threads,
        } => inbound::verify(&config, &format, &file, json, threads),
        Command::Serve { log_format } => {
            init_logging(log_format, "info");
            let source = crate::serve::ReloadSource {
                path: config.source.clone(),
                overrides,
            };
            runtime(None)?.block_on(crate::serve::serve_reloading(
                config,
                channels,
                source,
                crate::serve::shutdown_signal(),
            ))?;
            Ok(Exit::Ok)
        }
        command => runtime(Some(2))?.block_on(async {
            let gateway = Gateway::open(config, Arc::new(SystemClock)).await?;
            let result = match ledger_command(&gateway, command).await {
                Err(CliError::Intake(e)) => Err(CliError::Intake(gateway.explain(e).await)),
                Err(CliError::Ledger(e)) => Err(CliError::Ledger(gateway.ledger.diagnose(e).await)),
                other => other,
            };
            gateway.ledger.close().await;
            result
        }),
    }
}

async fn ledger_command(gw: &Gateway, command: Command) -> Result<Exit, CliError> {
    match command {
        Command::Ingest {
            partner,
            file,
            channel,
            reason,
            json,
        } => {
            // Warnings (a store or ledger retry, a verifier that fell back)
            // show on stderr.
            init_logging(LogFormat::Text, "warn");
            inbound::ingest(gw, &partner, &file, channel, reason, json).await
        }
        Command::Pull {
            partner,
            endpoint,
            json,
        } => {
            // Retries and after-pickup failures show on stderr.
            init_logging(LogFormat::Text, "warn");
            inbound::pull(gw, &partner, endpoint, json).await
        }
        Command::Recover { json } => inbound::recover(gw, json).await,
        Command::Send {
            partner,
            file,
            endpoint,
            reason,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            outbound::send(
                gw,
                &partner,
                &file,
                endpoint.as_deref(),
                reason.as_deref(),
                json,
            )
            .await
        }
        Command::Resend {
            delivery_id,
            reason,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            match day::gate(gw, OverrideAction::Resend, delivery_id, &reason, json).await? {
                Some(exit) => Ok(exit),
                None => outbound::resend(gw, delivery_id, &reason, json).await,
            }
        }
        Command::Deliveries {
            partner,
            state,
            date,
            json,
        } => outbound::deliveries(gw, partner, state, date, json).await,
        Command::Files {
            partner,
            date,
            verdict,
            json,
        } => operator::files(gw, partner, date, verdict, json).await,
        Command::Show { file_id, json } => operator::show(gw, file_id, json).await,
        Command::Intake { date, json } => operator::intake(gw, date, json).await,
        Command::Supersede {
            file_id,
            reason,
            json,
        } => operator::supersede(gw, file_id, &reason, json).await,
        Command::Release {
            file_id,
            reason,
            json,
            ..
        } => operator::release(gw, file_id, &reason, json).await,
        Command::Reject { file_id, reason } => operator::reject(gw, file_id, &reason).await,
        Command::Report { date, json } => day::report(gw, date, json).await,
        Command::Redeliver {
            file_id,
            reason,
            json,
        } => day::redeliver(gw, file_id, &reason, json).await,
        Command::Requests { json } => day::requests(gw, json).await,
        Command::Nodes { json } => cluster::nodes(gw, json).await,
        Command::Store {
            command: StoreCommand::Migrate { from, json, .. },
        } => {
            let from = from.unwrap_or_else(|| match &gw.config.store {
                crate::stage::StoreKind::Directory(d) => d.clone(),
                _ => gw.config.data_dir.join("store"),
            });
            cluster::store_migrate(gw, &from, json).await
        }
        Command::Approve {
            request_id,
            reason,
            json,
        } => {
            init_logging(LogFormat::Text, "warn");
            day::approve(gw, request_id, reason.as_deref(), json).await
        }
        Command::Deny {
            request_id,
            reason,
            json,
        } => day::deny(gw, request_id, &reason, json).await,
        Command::Verify { .. }
        | Command::Formats
        | Command::Serve { .. }
        | Command::Check { .. }
        | Command::HashPassword
        | Command::HostKey { .. }
        | Command::Keygen { .. }
        | Command::Reload
        | Command::Migrate { .. } => Err(CliError::Usage("not a ledger command".into())),
    }
}
