//! The one intake path every channel uses: stage → identify → verify →
//! judge → feed. Channels are thin adapters with two verbs:
//! [`Gateway::record`] (stage the bytes and record the arrival, from files
//! on disk or from a blob already in the store) and [`Gateway::judge`]
//! (identify, verify, judge and feed a recorded file, then answer a channel
//! arrival with its receipt). [`Gateway::intake`] does both.
//!
//! - [`pipeline`]: the two verbs, verification and the feed.
//! - [`operator`]: supersede, release, reject, redeliver.
//! - [`four_eyes`]: overrides that wait for a second operator.
//! - [`records`]: a stored file's records read again (the conflict diff).
//! - [`recovery`]: files a crash left recorded but unjudged.
//! - [`receipt`]: `<name>.verdict` files, written in one place.
//!
//! Correctness never rests on this process: the ledger's constraints decide
//! who feeds. If a guard constraint fires because another process fed the
//! same data a moment earlier, the file is looked up and judged again.

mod arriving;
mod day;
mod four_eyes;
mod operator;
mod pipeline;
pub mod receipt;
mod records;
mod recovery;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{Config, Partner};
use crate::format::{FileFacts, FormatRegistry};
use crate::judge::Verdict;
use crate::ledger::{Ledger, LedgerError, RemoteFile};
use crate::model::Channel;
use crate::stage::{ContentStore, StoreError, Stored};

pub use arriving::{Arriving, Verified, WriteBehind, WriteBehindError};
pub use four_eyes::Carried;
pub use records::{MAX_RECORDS, StoredRecords};
pub use recovery::Recovery;

/// The source of "now": the wall clock in production, fixed in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always says the same time.
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("unknown partner {0:?}")]
    UnknownPartner(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{what}: stored bytes do not match the recorded checksum {checksum}; the content store is damaged"
    )]
    Corrupt { what: String, checksum: String },
    #[error("file {0} is not in the ledger")]
    NoSuchFile(i64),
    /// Another node is judging the file now (it holds its claim).
    #[error("file {0} is being judged by another node")]
    Elsewhere(i64),
    #[error("cannot write a receipt in {dir}: {source}")]
    Receipt {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file is staged and recorded (`received`) but judging it failed;
    /// judging that row again (a retry, `settlegate recover`) finishes it.
    #[error("file {file_id} is stored and recorded but not judged yet: {source}")]
    Staged {
        file_id: i64,
        source: Box<IntakeError>,
    },
    /// An operator action the ledger's state does not allow; nothing changed.
    #[error("refused: {0}")]
    Refused(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a file arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub partner: String,
    pub channel: Channel,
    /// The endpoint (SFTP pull) or account it came from. Whether it is a
    /// drill/DR site is read from the configuration by name when judging, so
    /// a file judged after a restart is judged the same way.
    pub endpoint: Option<String>,
    /// Where it was found (remote path, inbox path).
    pub source_path: Option<String>,
    /// Its original file name.
    pub name: String,
    /// Who brought it in.
    pub actor: String,
    /// Why (manual redelivery).
    pub reason: Option<String>,
    /// For a file pulled from a partner's server: what it was there,
    /// remembered with the arrival so it is not taken twice.
    pub remote: Option<RemoteFile>,
    /// For a file claimed from a watched inbox: the claim's identity, so a
    /// claim found again after a crash is finished, not recorded twice.
    pub claim: Option<String>,
    /// For a redelivery: the stored file whose bytes these are.
    pub redelivery_of: Option<i64>,
    /// The lease a scheduled pickup holds: the arrival is recorded only
    /// while this node still holds it.
    pub fence: Option<crate::ledger::Fence>,
    /// Halves of a pushed pair held in the ledger that this arrival takes
    /// out when it is recorded.
    pub takes_held: Vec<crate::ledger::HeldUpload>,
}

impl Arrival {
    /// An arrival by `channel` from `partner` of a file named `name`,
    /// brought in by `actor`; the other particulars are set by the channel.
    pub fn new(partner: &str, channel: Channel, name: &str, actor: &str) -> Arrival {
        Arrival {
            partner: partner.to_string(),
            channel,
            endpoint: None,
            source_path: None,
            name: name.to_string(),
            actor: actor.to_string(),
            reason: None,
            remote: None,
            claim: None,
            redelivery_of: None,
            fence: None,
            takes_held: Vec::new(),
        }
    }
}

/// Where an arrival's bytes are.
#[derive(Debug, Clone, Copy)]
pub enum Bytes<'a> {
    /// Files on disk: copied into the store.
    Files {
        data: &'a Path,
        control: Option<&'a Path>,
    },
    /// Already in the store (a channel that streamed them there itself).
    Stored {
        data: &'a Stored,
        control: Option<&'a Stored>,
    },
}

/// What became of an arrival.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file_id: i64,
    pub verdict: Verdict,
    pub reason: String,
    pub related_file_id: Option<i64>,
    pub checksum: String,
    pub facts: Option<FileFacts>,
    /// Entries fed (0 unless fed).
    pub fed_entries: u64,
    /// The receipt of a channel arrival.
    pub receipt: ReceiptStatus,
}

/// Whether the one who handed a file in has its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Not by a channel that answers with receipts (a manual ingest, or an
    /// operator's action).
    NotWanted,
    Written(std::path::PathBuf),
    /// Judged, but the receipt could not be written; [`Gateway::write_receipt`]
    /// tries again.
    Failed(String),
}

/// The gateway's shared state: configuration, formats, store, ledger, clock.
pub struct Gateway {
    pub config: Config,
    pub formats: FormatRegistry,
    pub store: ContentStore,
    pub ledger: Ledger,
    pub clock: Arc<dyn Clock>,
    /// This process's own metrics and tasks (`/metrics`, `/healthz`).
    pub telemetry: crate::telemetry::Telemetry,
    /// Which configuration and formats this is: each gateway opened or
    /// reconfigured gets its own, so facts found under one are not taken
    /// for another's.
    generation: u64,
}

fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayOpenError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl Gateway {
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Gateway, GatewayOpenError> {
        let formats = config.load_formats()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| GatewayOpenError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let ledger = Ledger::open(config.ledger.as_deref(), &config.data_dir).await?;
        let store = open_store(&config).await?;
        Ok(Gateway {
            config,
            formats,
            store,
            ledger,
            clock,
            telemetry: crate::telemetry::Telemetry::default(),
            generation: next_generation(),
        })
    }

    /// The same store, ledger and clock under a new configuration and
    /// formats (a reload; the data dir and the ledger stay).
    pub fn reconfigured(&self, config: Config, formats: FormatRegistry) -> Gateway {
        Gateway {
            config,
            formats,
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            clock: self.clock.clone(),
            telemetry: self.telemetry.clone(),
            generation: next_generation(),
        }
    }

    /// The error with the ledger's part said plainly: an unreachable
    /// ledger with why, a full disk (see [`Ledger::diagnose`]).
    pub async fn explain(&self, e: IntakeError) -> IntakeError {
        match e {
            IntakeError::Ledger(l) => IntakeError::Ledger(self.ledger.diagnose(l).await),
            IntakeError::Staged { file_id, source } => IntakeError::Staged {
                file_id,
                source: Box::new(Box::pin(self.explain(*source)).await),
            },
            other => other,
        }
    }

    fn partner(&self, id: &str) -> Result<&Partner, IntakeError> {
        self.config
            .partner(id)
            .ok_or_else(|| IntakeError::UnknownPartner(id.to_string()))
    }
}

/// The content store the configuration names: a directory, or the
/// ledger's PostgreSQL database (temp files still under the data dir).
pub async fn open_store(config: &Config) -> Result<ContentStore, GatewayOpenError> {
    use crate::stage::StoreKind;
    let local = config.data_dir.join("store");
    Ok(match &config.store {
        StoreKind::DataDir => ContentStore::open(&local)?,
        StoreKind::Directory(dir) => ContentStore::open(dir)?,
        StoreKind::Postgres => match config.ledger.as_deref() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                ContentStore::open_database(&local, url).await?
            }
            _ => {
                return Err(GatewayOpenError::Config(config.invalid(
                    "store",
                    "\"postgres\" keeps the content store in the ledger's database: the ledger must be PostgreSQL (ledger = \"postgres://…\")",
                )));
            }
        },
    })
}

/// Run blocking work (file system, hashing) on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, IntakeError>
where
    IntakeError: From<E>,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IntakeError::Internal(e.to_string()))?
        .map_err(IntakeError::from)
}

/// This process, as an owner of claims and attempts: host, pid and start
/// time, so no two processes (nor two runs of one pid) share it.
pub fn process_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        let host: String = gateway_actor()
            .trim_start_matches("settlegate@")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .take(32)
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{host}-{}-{nanos:x}", std::process::id())
    })
}

/// Who the gateway is in the audit log.
pub fn gateway_actor() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("settlegate@{host}")
}

/// The operator named on the command line (`--operator`, or
/// `SETTLEGATE_OPERATOR`), set once at start.
static OPERATOR_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Name the operator running this process (the command line's
/// `--operator`); the first name set holds.
pub fn set_operator_name(name: &str) {
    let _ = OPERATOR_NAME.set(name.to_string());
}

/// Who an operator is in the audit log (manual commands): the name given
/// with `--operator` (or `SETTLEGATE_OPERATOR`), else the login name
/// (`SUDO_USER` first, so `sudo settlegate …` names the person), else the
/// name /etc/passwd gives the process's uid.
pub fn operator_actor() -> String {
    if let Some(name) = OPERATOR_NAME.get() {
        return format!("operator:{name}");
    }
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .or_else(passwd_name)
        .unwrap_or_else(|| "unknown".into());
    format!("operator:{user}")
}

fn passwd_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut parts = line.split(':');
        let name = parts.next()?;
        (parts.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}
