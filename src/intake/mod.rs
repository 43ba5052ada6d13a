//! The one intake path every channel uses: stage → identify → verify →
//! judge → feed. Channels (manual ingest, watched folders, SFTP pull and
//! push) are thin adapters that hand a file here.
//!
//! Correctness never rests on this process: the ledger's constraints decide
//! who feeds. If a guard constraint fires because another process fed the
//! same data a moment earlier, the file is looked up and judged again.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::config::{Config, Partner};
use crate::format::{FileContext, FileFacts, FormatRegistry, FormatSpec, RecordSink, VerifyError};
use crate::judge::{self, ArrivalContext, Evidence, Judgement, Overlap, Verdict};
use crate::ledger::{
    Decision, FeedPlan, FileRow, Guard, Identity, Ledger, LedgerError, NewArrival, NewEntry,
    RemoteFile,
};
use crate::stage::{ContentStore, StoreError, Stored};

/// Entries per batch handed from the parsing thread to the feeding task.
const FEED_BATCH: usize = 4096;

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
        "file {file_id}: stored bytes do not match the recorded checksum {checksum}; the content store is damaged"
    )]
    Corrupt { file_id: i64, checksum: String },
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
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    pub partner: String,
    /// `manual`, `watch`, `sftp-pull` or `sftp-push`.
    pub channel: String,
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
}

/// The gateway's shared state: configuration, formats, store, ledger, clock.
pub struct Gateway {
    pub config: Config,
    pub formats: FormatRegistry,
    pub store: ContentStore,
    pub ledger: Ledger,
    pub clock: Arc<dyn Clock>,
}

impl Gateway {
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Gateway, GatewayOpenError> {
        let formats = config.load_formats()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| GatewayOpenError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = ContentStore::open(&config.data_dir.join("store"))?;
        let ledger = Ledger::open(config.ledger.as_deref(), &config.data_dir).await?;
        Ok(Gateway {
            config,
            formats,
            store,
            ledger,
            clock,
        })
    }

    fn partner(&self, id: &str) -> Result<&Partner, IntakeError> {
        self.config
            .partner(id)
            .ok_or_else(|| IntakeError::UnknownPartner(id.to_string()))
    }

    /// Take a file from disk through the whole pipeline. The data file (and
    /// its sidecar, when given) is staged in the store and recorded before
    /// anything else; the caller may remove the originals once this returns.
    pub async fn intake_file(
        &self,
        arrival: &Arrival,
        data: &Path,
        sidecar: Option<&Path>,
    ) -> Result<Outcome, IntakeError> {
        let id = self.stage_file(arrival, data, sidecar).await?;
        self.judge_recorded(id, arrival).await
    }

    /// The first half of [`Gateway::intake_file`]: stage the file (and its
    /// sidecar) in the store and record the arrival (`received`); returns its
    /// file id. [`Gateway::judge_staged`] finishes it.
    pub async fn stage_file(
        &self,
        arrival: &Arrival,
        data: &Path,
        sidecar: Option<&Path>,
    ) -> Result<i64, IntakeError> {
        self.partner(&arrival.partner)?;
        let store = self.store.clone();
        let (data_p, sidecar_p) = (data.to_path_buf(), sidecar.map(Path::to_path_buf));
        let (stored, side) = tokio::task::spawn_blocking(move || {
            let stored = store.put_file(&data_p)?;
            let side = sidecar_p.map(|p| store.put_file(&p)).transpose()?;
            Ok::<_, StoreError>((stored, side))
        })
        .await
        .map_err(|e| IntakeError::Internal(e.to_string()))??;
        self.record_stored(arrival, &stored, side.as_ref(), None)
            .await
    }

    /// Record bytes already in the store (a channel that streamed them there
    /// itself) and take them through the rest of the pipeline. `remote`, for
    /// a file pulled from a partner's server, is remembered in the same
    /// transaction as the arrival so the same remote file is not taken twice.
    pub async fn intake_stored(
        &self,
        arrival: &Arrival,
        stored: &Stored,
        side: Option<&Stored>,
        remote: Option<&RemoteFile>,
    ) -> Result<Outcome, IntakeError> {
        let id = self.record_stored(arrival, stored, side, remote).await?;
        self.judge_recorded(id, arrival).await
    }

    /// Record bytes already in the store (`received`); returns the file id.
    /// [`Gateway::judge_staged`] finishes it.
    pub async fn record_stored(
        &self,
        arrival: &Arrival,
        stored: &Stored,
        side: Option<&Stored>,
        remote: Option<&RemoteFile>,
    ) -> Result<i64, IntakeError> {
        self.partner(&arrival.partner)?;
        let id = self
            .ledger
            .record_arrival(&NewArrival {
                partner: &arrival.partner,
                channel: &arrival.channel,
                endpoint: arrival.endpoint.as_deref(),
                source_path: arrival.source_path.as_deref(),
                name: &arrival.name,
                received_at: self.clock.now(),
                size: stored.size,
                checksum: &stored.checksum,
                sidecar_checksum: side.map(|s| s.checksum.as_str()),
                actor: &arrival.actor,
                reason: arrival.reason.as_deref(),
                remote,
            })
            .await?;
        tracing::info!(file_id = id, partner = %arrival.partner, channel = %arrival.channel, name = %arrival.name, checksum = %stored.checksum, "staged");
        Ok(id)
    }

    /// Judge a just-recorded arrival; a failure says the file is safe
    /// (recorded) but not judged.
    async fn judge_recorded(&self, id: i64, arrival: &Arrival) -> Result<Outcome, IntakeError> {
        self.judge_staged(id, arrival)
            .await
            .map_err(|source| IntakeError::Staged {
                file_id: id,
                source: Box::new(source),
            })
    }

    /// Judge a staged file (and feed it if it deserves it). Also used to
    /// finish files left `received` by a crash.
    pub async fn judge_staged(
        &self,
        file_id: i64,
        arrival: &Arrival,
    ) -> Result<Outcome, IntakeError> {
        let row = self.ledger.file(file_id).await?.ok_or_else(|| {
            IntakeError::Internal(format!("file {file_id} vanished from the ledger"))
        })?;
        let partner = self.partner(&row.partner)?;
        let sidecar = match &row.sidecar_checksum {
            Some(c) => Some(self.store.read_blob(c)?),
            None => None,
        };
        let spec = match choose_format(&self.formats, partner, &row.name) {
            Ok(spec) => spec.clone(),
            Err(message) => {
                let facts = unidentified(&row, message);
                return self.quarantine(&row, arrival, facts, Vec::new()).await;
            }
        };
        let facts = self
            .verify_stored(&spec, &row, sidecar.clone(), None)
            .await?;
        let now = self.clock.now();
        let ctx = ArrivalContext {
            name: &row.name,
            channel: &row.channel,
            endpoint: row.endpoint.as_deref(),
            received_at: row.received_at,
        };
        let signals = judge::drill_signals(partner, &ctx, &facts, now, self.config.timezone);
        let mut overlaps: Vec<Overlap> = Vec::new();
        // A guard constraint can fire when another process fed the same data
        // between our look-ups and our feed: look again and judge again.
        for _attempt in 0..4 {
            let (judgement, identity) = self.judge_once(&row, &facts, &signals, &overlaps).await?;
            if judgement.verdict != Verdict::Fed {
                return self
                    .record_verdict(&row, arrival, judgement, &identity, facts)
                    .await;
            }
            let plan = self.plan(&row, &identity, &judgement, &arrival.actor);
            match self.feed(&spec, &row, sidecar.clone(), &plan).await {
                Ok(n) => {
                    tracing::info!(file_id = row.id, entries = n, "fed");
                    return Ok(outcome(&row, judgement, Some(facts), n));
                }
                Err(IntakeError::Ledger(LedgerError::Guard(Guard::RecordKey))) => {
                    overlaps = self.find_overlaps(&spec, &row, sidecar.clone()).await?;
                    if overlaps.is_empty() {
                        // Not fed elsewhere: the file repeats a record key itself.
                        let mut facts = facts.clone();
                        facts.error =
                            Some(self.find_repeated_key(&spec, &row, sidecar.clone()).await?);
                        facts.fingerprint = None;
                        return self.quarantine(&row, arrival, facts, signals).await;
                    }
                }
                Err(IntakeError::Ledger(LedgerError::Guard(g))) => {
                    tracing::warn!(file_id = row.id, guard = %g, "feed refused by the ledger; judging again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(IntakeError::Internal(format!(
            "file {}: the ledger kept refusing the feed; left as received",
            row.id
        )))
    }

    /// How to feed `row` as judged: from `received`, superseding nothing;
    /// operator actions override `from` and `supersedes`.
    fn plan<'a>(
        &self,
        row: &'a FileRow,
        identity: &'a Identity,
        judgement: &'a Judgement,
        actor: &'a str,
    ) -> FeedPlan<'a> {
        FeedPlan {
            decision: Decision {
                file_id: row.id,
                identity,
                judgement,
                at: self.clock.now(),
                actor,
            },
            partner: &row.partner,
            from: "received",
            supersedes: None,
        }
    }

    /// Record a non-fed verdict for facts that need no look-ups.
    async fn quarantine(
        &self,
        row: &FileRow,
        arrival: &Arrival,
        facts: FileFacts,
        signals: Vec<String>,
    ) -> Result<Outcome, IntakeError> {
        let (judgement, identity) = self.judge_once(row, &facts, &signals, &[]).await?;
        self.record_verdict(row, arrival, judgement, &identity, facts)
            .await
    }

    /// Write a verdict other than `fed`, with its audit event.
    async fn record_verdict(
        &self,
        row: &FileRow,
        arrival: &Arrival,
        judgement: Judgement,
        identity: &Identity,
        facts: FileFacts,
    ) -> Result<Outcome, IntakeError> {
        self.ledger
            .decide(&Decision {
                file_id: row.id,
                identity,
                judgement: &judgement,
                at: self.clock.now(),
                actor: &arrival.actor,
            })
            .await?;
        Ok(outcome(row, judgement, Some(facts), 0))
    }

    /// Look up what the ledger holds and ask the judge.
    async fn judge_once(
        &self,
        row: &FileRow,
        facts: &FileFacts,
        signals: &[String],
        overlaps: &[Overlap],
    ) -> Result<(Judgement, Identity), IntakeError> {
        let (mut same_checksum, mut same_fp, mut same_key) = (None, None, None);
        if facts.is_valid() {
            same_checksum = self
                .ledger
                .earlier_same_checksum(&row.checksum, row.id)
                .await?
                .map(|r| r.prior());
            if let Some(fp) = facts.fingerprint_hex() {
                let (fp_row, key_row) = self
                    .ledger
                    .fed_matching(&fp, &facts.format, &facts.business_key_text())
                    .await?;
                same_fp = fp_row.map(|r| r.prior());
                same_key = key_row.map(|r| r.prior());
            }
        }
        let evidence = Evidence {
            facts,
            drill_signals: signals,
            same_checksum: same_checksum.as_ref(),
            fed_same_fingerprint: same_fp.as_ref(),
            fed_same_business_key: same_key.as_ref(),
            overlaps,
            tz: self.config.timezone,
        };
        Ok((judge::judge(&evidence), identity(facts, signals)))
    }

    /// Verify a stored file on a blocking thread, optionally streaming its
    /// records to `sink`.
    async fn verify_stored(
        &self,
        spec: &FormatSpec,
        row: &FileRow,
        sidecar: Option<Vec<u8>>,
        sink: Option<Box<dyn RecordSink + Send>>,
    ) -> Result<FileFacts, IntakeError> {
        let blob = self.store.open_blob(&row.checksum)?;
        let (spec, name, id, checksum) =
            (spec.clone(), row.name.clone(), row.id, row.checksum.clone());
        let facts = tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            let ctx = FileContext {
                name: &name,
                sidecar: sidecar.as_deref(),
            };
            let reader = std::io::BufReader::with_capacity(1 << 20, blob);
            match sink.as_deref_mut() {
                Some(s) => crate::format::verify(&spec, reader, ctx, s),
                None => crate::format::verify(&spec, reader, ctx, &mut ()),
            }
        })
        .await
        .map_err(|e| IntakeError::Internal(e.to_string()))?
        .map_err(|source| IntakeError::Read {
            path: self.store.path_of(&checksum).display().to_string(),
            source,
        })?;
        if facts.checksum_hex() != checksum {
            return Err(IntakeError::Corrupt {
                file_id: id,
                checksum,
            });
        }
        Ok(facts)
    }

    /// Feed: parse the stored file again on a blocking thread, streaming its
    /// entries into one ledger transaction. The stream is marked complete only
    /// if the second pass gives the same valid facts.
    async fn feed(
        &self,
        spec: &FormatSpec,
        row: &FileRow,
        sidecar: Option<Vec<u8>>,
        plan: &FeedPlan<'_>,
    ) -> Result<u64, IntakeError> {
        let (tx, rx) = mpsc::channel::<Vec<NewEntry>>(4);
        let sink = Box::new(EntrySink {
            tx: tx.clone(),
            batch: Vec::with_capacity(FEED_BATCH),
        });
        let expected_fp = plan.decision.identity.fingerprint.clone();
        let parse = async move {
            let facts = self.verify_stored(spec, row, sidecar, Some(sink)).await;
            // Complete only if the second pass agrees with the first.
            if let Ok(f) = &facts
                && f.is_valid()
                && f.fingerprint_hex() == expected_fp
            {
                let _ = tx.send(Vec::new()).await;
            }
            drop(tx);
            facts
        };
        let feed = self.ledger.feed(plan, rx);
        let (parsed, fed) = tokio::join!(parse, feed);
        parsed?;
        Ok(fed?)
    }

    /// Which fed files share record keys with this one, and how many.
    async fn find_overlaps(
        &self,
        spec: &FormatSpec,
        row: &FileRow,
        sidecar: Option<Vec<u8>>,
    ) -> Result<Vec<Overlap>, IntakeError> {
        let (tx, mut rx) = mpsc::channel::<Vec<NewEntry>>(4);
        let sink = Box::new(EntrySink {
            tx,
            batch: Vec::with_capacity(FEED_BATCH),
        });
        let parse = self.verify_stored(spec, row, sidecar, Some(sink));
        // `move`: if a look-up fails, the receiver goes with it and the parsing
        // thread stops instead of waiting on a full channel.
        let lookup = async move {
            let mut counts = std::collections::BTreeMap::<i64, u64>::new();
            while let Some(batch) = rx.recv().await {
                let keys: Vec<String> = batch.into_iter().map(|e| e.record_key).collect();
                for (file, n) in self
                    .ledger
                    .fed_record_keys(&row.partner, &spec.id, &keys)
                    .await?
                {
                    *counts.entry(file).or_insert(0) += n;
                }
            }
            Ok::<_, IntakeError>(counts)
        };
        let (parsed, counts) = tokio::join!(parse, lookup);
        parsed?;
        let mut overlaps = Vec::new();
        for (file, records) in counts? {
            if file == row.id {
                continue;
            }
            if let Some(f) = self.ledger.file(file).await? {
                overlaps.push(Overlap {
                    file: f.prior(),
                    records,
                });
            }
        }
        Ok(overlaps)
    }

    /// The first record whose key repeats an earlier record's in the same file.
    async fn find_repeated_key(
        &self,
        spec: &FormatSpec,
        row: &FileRow,
        sidecar: Option<Vec<u8>>,
    ) -> Result<VerifyError, IntakeError> {
        let found = Arc::new(std::sync::Mutex::new(None::<VerifyError>));
        let sink = Box::new(RepeatFinder {
            seen: std::collections::HashMap::new(),
            found: found.clone(),
        });
        self.verify_stored(spec, row, sidecar, Some(sink)).await?;
        let found = found
            .lock()
            .map_err(|_| IntakeError::Internal("poisoned".into()))?
            .take();
        Ok(found.unwrap_or(VerifyError {
            record: None,
            offset: None,
            field: None,
            message: "a record key is already fed (the ledger refused it) but no fed file holds it"
                .into(),
        }))
    }

    /// Judge again every file a crash left `received`. A file that fails is
    /// reported and skipped; the others are still judged.
    pub async fn recover(&self, actor: &str) -> Result<Recovery, IntakeError> {
        let mut report = Recovery::default();
        for row in self.ledger.unjudged().await? {
            let arrival = Arrival {
                partner: row.partner.clone(),
                channel: row.channel.clone(),
                endpoint: row.endpoint.clone(),
                source_path: row.source_path.clone(),
                name: row.name.clone(),
                actor: actor.to_string(),
                ..Arrival::default()
            };
            tracing::info!(file_id = row.id, name = %row.name, "judging a file left unjudged");
            match self.judge_staged(row.id, &arrival).await {
                Ok(o) => report.outcomes.push((arrival, o)),
                Err(e) => {
                    tracing::error!(file_id = row.id, name = %row.name, error = %e, "could not judge a file left unjudged");
                    report.failures.push((row.id, e.to_string()));
                }
            }
        }
        Ok(report)
    }
}

/// What `recover` did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Each file judged, with how it had arrived.
    pub outcomes: Vec<(Arrival, Outcome)>,
    /// Files still unjudged, with why.
    pub failures: Vec<(i64, String)>,
}

/// Operator actions on quarantined files. Each goes through the same
/// verification and ledger constraints as an arrival, and is audited with
/// the operator and the reason.
impl Gateway {
    /// Re-read and verify a staged file as its partner's format.
    async fn reverify(
        &self,
        row: &FileRow,
    ) -> Result<(FormatSpec, Option<Vec<u8>>, FileFacts), IntakeError> {
        let partner = self.partner(&row.partner)?;
        let spec = choose_format(&self.formats, partner, &row.name)
            .map_err(IntakeError::Refused)?
            .clone();
        let sidecar = match &row.sidecar_checksum {
            Some(c) => Some(self.store.read_blob(c)?),
            None => None,
        };
        let facts = self
            .verify_stored(&spec, row, sidecar.clone(), None)
            .await?;
        if let Some(e) = &facts.error {
            return Err(IntakeError::Refused(format!(
                "file {} is invalid: {e}",
                row.id
            )));
        }
        Ok((spec, sidecar, facts))
    }

    async fn file_in(
        &self,
        id: i64,
        verdicts: &[&str],
        action: &str,
    ) -> Result<FileRow, IntakeError> {
        let row = self
            .ledger
            .file(id)
            .await?
            .ok_or_else(|| IntakeError::Refused(format!("no file {id} in the ledger")))?;
        if !verdicts.contains(&row.verdict.as_str()) {
            return Err(IntakeError::Refused(format!(
                "file {id} is {}; {action} applies to {} files",
                row.verdict,
                verdicts.join(" or ")
            )));
        }
        Ok(row)
    }

    /// Replace the fed file a `conflict` file collides with: in one
    /// transaction the fed file's entries are reversed (offsetting entries)
    /// and the conflict file is fed.
    pub async fn supersede(
        &self,
        new_id: i64,
        reason: &str,
        actor: &str,
    ) -> Result<Outcome, IntakeError> {
        let row = self.file_in(new_id, &["conflict"], "supersede").await?;
        let old = match row.related_file_id {
            Some(old) => self.ledger.file(old).await?,
            None => None,
        }
        .filter(|o| {
            o.verdict == "fed" && o.format == row.format && o.business_key == row.business_key
        })
        .ok_or_else(|| {
            IntakeError::Refused(format!(
                "file {new_id} no longer conflicts with a fed file; ingest it again instead"
            ))
        })?;
        let (spec, sidecar, facts) = self.reverify(&row).await?;
        let judgement = Judgement {
            verdict: Verdict::Fed,
            reason: format!("supersedes file {} ({}): {reason}", old.id, old.name),
            related: Some(old.id),
        };
        let identity = identity(&facts, &[]);
        let plan = FeedPlan {
            from: "conflict",
            supersedes: Some(old.id),
            ..self.plan(&row, &identity, &judgement, actor)
        };
        let n = self
            .feed(&spec, &row, sidecar, &plan)
            .await
            .map_err(refusal)?;
        Ok(outcome(&row, judgement, Some(facts), n))
    }

    /// Feed a quarantined drill file after all, by explicit override. Every
    /// other check (duplicate, conflict, overlap) still applies.
    pub async fn release(
        &self,
        id: i64,
        reason: &str,
        actor: &str,
    ) -> Result<Outcome, IntakeError> {
        let row = self.file_in(id, &["drill"], "release").await?;
        let (spec, sidecar, facts) = self.reverify(&row).await?;
        let (judged, identity) = self.judge_once(&row, &facts, &[], &[]).await?;
        if judged.verdict != Verdict::Fed {
            return Err(IntakeError::Refused(format!(
                "file {id} cannot be released: without its drill signals it would be {}: {}",
                judged.verdict, judged.reason
            )));
        }
        let judgement = Judgement {
            verdict: Verdict::Fed,
            reason: format!("released from drill quarantine by override: {reason}"),
            related: None,
        };
        let plan = FeedPlan {
            from: "drill",
            ..self.plan(&row, &identity, &judgement, actor)
        };
        let n = self
            .feed(&spec, &row, sidecar, &plan)
            .await
            .map_err(refusal)?;
        Ok(outcome(&row, judgement, Some(facts), n))
    }

    /// Close a quarantined file for good: it will never be fed.
    pub async fn reject(&self, id: i64, reason: &str, actor: &str) -> Result<(), IntakeError> {
        let row = self
            .file_in(id, &["drill", "conflict", "overlap", "invalid"], "reject")
            .await?;
        self.ledger
            .reject(id, &row.verdict, reason, self.clock.now(), actor)
            .await?;
        Ok(())
    }
}

/// A guard constraint during an operator action: explain, change nothing.
fn refusal(e: IntakeError) -> IntakeError {
    match e {
        IntakeError::Ledger(LedgerError::Guard(g)) => {
            IntakeError::Refused(format!("the ledger refused the feed: {g}; nothing changed"))
        }
        other => other,
    }
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

/// The partner's format for this file name: its only format, or the one whose
/// file-name pattern matches.
pub fn choose_format<'r>(
    formats: &'r FormatRegistry,
    partner: &Partner,
    name: &str,
) -> Result<&'r FormatSpec, String> {
    let specs: Vec<&FormatSpec> = partner
        .formats
        .iter()
        .filter_map(|f| formats.get(f))
        .collect();
    if let [only] = specs.as_slice() {
        return Ok(only);
    }
    let matching: Vec<&&FormatSpec> = specs
        .iter()
        .filter(|s| {
            s.file_name
                .as_ref()
                .is_some_and(|n| n.pattern.is_match(name))
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "file name {name:?} matches none of partner {}'s formats ({})",
            partner.id,
            partner.formats.join(", ")
        )),
        _ => Err(format!(
            "file name {name:?} matches several of partner {}'s formats",
            partner.id
        )),
    }
}

fn unidentified(row: &FileRow, message: String) -> FileFacts {
    FileFacts::failed(row.size as u64, message)
}

fn identity(facts: &FileFacts, signals: &[String]) -> Identity {
    let totals: serde_json::Map<String, serde_json::Value> = facts
        .totals
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_string())))
        .collect();
    Identity {
        format: (!facts.format.is_empty()).then(|| facts.format.clone()),
        fingerprint: facts.fingerprint_hex(),
        business_key: (!facts.business_key.is_empty()).then(|| facts.business_key_text()),
        business_date: facts.business_date,
        records: Some(facts.records as i64),
        totals: facts
            .is_valid()
            .then(|| serde_json::Value::Object(totals).to_string()),
        drill_signals: Some(serde_json::json!(signals).to_string()),
        error: facts
            .error
            .as_ref()
            .and_then(|e| serde_json::to_string(e).ok()),
    }
}

fn outcome(row: &FileRow, j: Judgement, facts: Option<FileFacts>, fed: u64) -> Outcome {
    Outcome {
        file_id: row.id,
        verdict: j.verdict,
        reason: j.reason,
        related_file_id: j.related,
        checksum: row.checksum.clone(),
        facts,
        fed_entries: fed,
    }
}

/// Batches entries from the parsing thread to the async feed.
struct EntrySink {
    tx: mpsc::Sender<Vec<NewEntry>>,
    batch: Vec<NewEntry>,
}

impl RecordSink for EntrySink {
    fn record(&mut self, r: &crate::format::DataRecord<'_>) -> ControlFlow<()> {
        self.batch.push(NewEntry {
            record_no: r.number as i64,
            record_key: r.record_key.to_string(),
            amount: r.amount,
            fields: r.fields_json(),
        });
        if self.batch.len() >= FEED_BATCH {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(FEED_BATCH));
            if self.tx.blocking_send(batch).is_err() {
                // The feed gave up (e.g. a constraint fired): stop parsing.
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

impl Drop for EntrySink {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.tx.blocking_send(std::mem::take(&mut self.batch));
        }
    }
}

/// Finds the first record whose key repeats an earlier one (by a 64-bit hash
/// of the key: 8 bytes a record).
struct RepeatFinder {
    seen: std::collections::HashMap<u64, (u64, u64)>,
    found: Arc<std::sync::Mutex<Option<VerifyError>>>,
}

impl RecordSink for RepeatFinder {
    fn record(&mut self, r: &crate::format::DataRecord<'_>) -> ControlFlow<()> {
        use std::hash::Hasher;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(r.record_key.as_bytes());
        let key = h.finish();
        if let Some((first, _)) = self.seen.get(&key) {
            if let Ok(mut f) = self.found.lock() {
                *f = Some(VerifyError {
                    record: Some(r.number),
                    offset: Some(r.offset),
                    field: None,
                    message: format!(
                        "record key {:?} repeats record {first}: a record is fed at most once",
                        r.record_key
                    ),
                });
            }
            return ControlFlow::Break(());
        }
        self.seen.insert(key, (r.number, r.offset));
        ControlFlow::Continue(())
    }
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

/// Who an operator is in the audit log (manual commands): the login name
/// (`SUDO_USER` first, so `sudo settlegate …` names the person), else the
/// name /etc/passwd gives the process's uid.
pub fn operator_actor() -> String {
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
