//! The two verbs channels use — record an arrival, judge a recorded file —
//! and what judging does: verify the stored bytes, ask the judge, and feed
//! the file's entries in one ledger transaction.

use std::ops::ControlFlow;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{
    Arrival, Bytes, Gateway, IntakeError, Outcome, ReceiptStatus, Verified, blocking, receipt,
};
use crate::format::{FileContext, FileFacts, FormatSpec, RecordSink, VerifyError};
use crate::identify::choose_format;
use crate::judge::{self, ArrivalContext, Evidence, Judgement, Overlap, Verdict};
use crate::ledger::{
    Decision, FeedPlan, FileRow, Guard, Identity, LedgerError, NewArrival, NewEntry, Recorded,
};
use crate::model::{DrillSignal, FileState};
use crate::stage::Stored;

/// The log line of a recorded arrival; its file id.
fn log_recorded(arrival: &Arrival, stored: &Stored, recorded: Recorded) -> i64 {
    match recorded {
        Recorded::New(id) => {
            tracing::info!(file_id = id, partner = %arrival.partner, channel = %arrival.channel, name = %arrival.name.escape_debug(), checksum = %stored.checksum, "staged");
        }
        Recorded::Already(id) => {
            tracing::info!(file_id = id, partner = %arrival.partner, claim = arrival.claim.as_deref().unwrap_or_default(), name = %arrival.name.escape_debug(), "this claim was recorded before a restart; finishing it");
        }
    }
    recorded.id()
}

/// Entries per batch handed from the parsing thread to the feeding task.
const FEED_BATCH: usize = 4096;

impl Gateway {
    /// Record and judge: [`Gateway::record`], then [`Gateway::judge`] with
    /// the arrival's actor. A failure after recording says the file is safe
    /// (recorded) but not judged ([`IntakeError::Staged`]).
    pub async fn intake(
        &self,
        arrival: &Arrival,
        bytes: Bytes<'_>,
    ) -> Result<Outcome, IntakeError> {
        self.intake_verified(arrival, bytes, None).await
    }

    /// [`Gateway::intake`] of bytes streamed in with [`Gateway::arriving`]:
    /// judged from the facts found on the way in when they still hold.
    pub async fn intake_verified(
        &self,
        arrival: &Arrival,
        bytes: Bytes<'_>,
        verified: Option<Verified>,
    ) -> Result<Outcome, IntakeError> {
        let started = std::time::Instant::now();
        let id = self.record(arrival, bytes).await?;
        let out = self
            .judge_verified(id, &arrival.actor, verified)
            .await
            .map_err(|source| IntakeError::Staged {
                file_id: id,
                source: Box::new(source),
            })?;
        self.telemetry
            .intake_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Stage the bytes (and the control file's) in the content store and
    /// record the arrival (`received`); returns its file id. Once this
    /// returns, the caller may let go of its copy: nothing is lost.
    pub async fn record(&self, arrival: &Arrival, bytes: Bytes<'_>) -> Result<i64, IntakeError> {
        let (stored, control) = self.stage_for(arrival, bytes).await?;
        let recorded = self
            .ledger
            .record_arrival(&self.new_arrival(arrival, &stored, control.as_ref()))
            .await?;
        Ok(log_recorded(arrival, &stored, recorded))
    }

    /// [`Gateway::record`] of several arrivals, staged `parallel` at a time
    /// and recorded in one ledger transaction (one commit for all); a result
    /// for each, in order. An arrival that cannot be staged is left out of
    /// the transaction, with its error; when the ledger fails the whole
    /// call, each staged arrival's error says so in words.
    pub async fn record_all(
        &self,
        arrivals: &[(Arrival, Bytes<'_>)],
        parallel: usize,
    ) -> Vec<Result<i64, IntakeError>> {
        let mut staged: Vec<Result<(Stored, Option<Stored>), IntakeError>> =
            Vec::with_capacity(arrivals.len());
        for some in arrivals.chunks(parallel.max(1)) {
            let stages = some
                .iter()
                .map(|(arrival, bytes)| self.stage_for(arrival, *bytes));
            staged.extend(futures::future::join_all(stages).await);
        }
        let new: Vec<NewArrival<'_>> = arrivals
            .iter()
            .zip(&staged)
            .filter_map(|((arrival, _), s)| {
                let (data, control) = s.as_ref().ok()?;
                Some(self.new_arrival(arrival, data, control.as_ref()))
            })
            .collect();
        let (mut recorded, whole) = match self.ledger.record_arrivals(&new).await {
            Ok(r) => (r.into_iter(), None),
            Err(e) => (Vec::new().into_iter(), Some(e.to_string())),
        };
        arrivals
            .iter()
            .zip(staged)
            .map(|((arrival, _), s)| {
                let (data, _) = s?;
                match recorded.next() {
                    Some(r) => Ok(log_recorded(arrival, &data, r?)),
                    None => Err(IntakeError::Internal(format!(
                        "not recorded: {}",
                        whole.as_deref().unwrap_or("no result for this arrival")
                    ))),
                }
            })
            .collect()
    }

    async fn stage_for(
        &self,
        arrival: &Arrival,
        bytes: Bytes<'_>,
    ) -> Result<(Stored, Option<Stored>), IntakeError> {
        self.partner(&arrival.partner)?;
        self.stage(bytes).await
    }

    /// The ledger's row for an arrival whose bytes are stored.
    fn new_arrival<'a>(
        &self,
        arrival: &'a Arrival,
        stored: &'a Stored,
        control: Option<&'a Stored>,
    ) -> NewArrival<'a> {
        NewArrival {
            partner: &arrival.partner,
            channel: arrival.channel,
            endpoint: arrival.endpoint.as_deref(),
            source_path: arrival.source_path.as_deref(),
            name: &arrival.name,
            received_at: self.clock.now(),
            size: stored.size,
            checksum: &stored.checksum,
            sidecar_checksum: control.map(|s| s.checksum.as_str()),
            actor: &arrival.actor,
            reason: arrival.reason.as_deref(),
            remote: arrival.remote.as_ref(),
            claim: arrival.claim.as_deref(),
            redelivery_of: arrival.redelivery_of,
            fence: arrival.fence.as_ref(),
            takes_held: &arrival.takes_held,
        }
    }

    /// Put an arrival's bytes (and its control file's) in the content store;
    /// bytes already there are returned as they are.
    pub async fn stage(&self, bytes: Bytes<'_>) -> Result<(Stored, Option<Stored>), IntakeError> {
        match bytes {
            Bytes::Stored { data, control } => Ok((data.clone(), control.cloned())),
            Bytes::Files { data, control } => {
                let store = self.store.clone();
                let (data, control) = (data.to_path_buf(), control.map(|p| p.to_path_buf()));
                blocking(move || {
                    let stored = store.put_file(&data)?;
                    let control = control.map(|p| store.put_file(&p)).transpose()?;
                    Ok::<_, crate::stage::StoreError>((stored, control))
                })
                .await
            }
        }
    }

    /// Judge a recorded file (and feed it if it deserves it), as `actor`;
    /// then, for a file that came by a channel, write its receipt. Also
    /// finishes files a crash left `received`.
    pub async fn judge(&self, file_id: i64, actor: &str) -> Result<Outcome, IntakeError> {
        self.judge_verified(file_id, actor, None).await
    }

    /// [`Gateway::judge`] with the facts of a file verified on its way in
    /// ([`Gateway::arriving`]); they stand in for verifying the stored
    /// bytes when they are of this file, under this configuration.
    pub async fn judge_verified(
        &self,
        file_id: i64,
        actor: &str,
        verified: Option<Verified>,
    ) -> Result<Outcome, IntakeError> {
        // One node judges a file at a time: a claim in the ledger, renewed
        // while judging lasts; a node that dies mid-judgement lets it go
        // when the claim expires, and another node judges the file.
        let claim = crate::cluster::Lease::claim(
            &self.ledger,
            format!("judge:{file_id}"),
            self.config.lease,
        );
        // An SQLite ledger has one machine: the ledger's compare-and-set of
        // the verdict is enough there, without two more commits a file.
        if self.ledger.backend() != crate::ledger::Backend::Postgres {
            return self.judge_claimed(file_id, actor, verified).await;
        }
        let Some(claimed) = claim.hold_claim().await? else {
            return Err(IntakeError::Elsewhere(file_id));
        };
        let out = self.judge_claimed(file_id, actor, verified).await;
        claimed.release().await;
        out
    }

    async fn judge_claimed(
        &self,
        file_id: i64,
        actor: &str,
        verified: Option<Verified>,
    ) -> Result<Outcome, IntakeError> {
        let row = self
            .ledger
            .file(file_id)
            .await?
            .ok_or(IntakeError::NoSuchFile(file_id))?;
        let mut out = self.judge_row(&row, actor, verified).await?;
        if row.channel.answers_with_receipts() {
            out.receipt = match self.write_receipt(file_id).await {
                Ok(path) => ReceiptStatus::Written(path),
                Err(e) => {
                    tracing::error!(file_id, partner = %row.partner, name = %row.name.escape_debug(), error = %e, "judged, but the receipt could not be written");
                    ReceiptStatus::Failed(e.to_string())
                }
            };
        }
        Ok(out)
    }

    /// Finish a recorded arrival, whatever became of it so far: judge it
    /// if it is still `received` (another process may be judging it too:
    /// the ledger lets one decide), then write its receipt when it came by a
    /// channel. Returns the row as decided. Used to finish a claim found
    /// again after a crash, and by recovery.
    pub async fn finish(&self, file_id: i64, actor: &str) -> Result<FileRow, IntakeError> {
        let row = self.decided_row(file_id).await?;
        if row.state == FileState::Received {
            let judged = self.judge(file_id, actor).await;
            let row = self.decided_row(file_id).await?;
            return match (judged, row.state) {
                (Ok(out), _) => {
                    if let ReceiptStatus::Failed(e) = out.receipt {
                        return Err(IntakeError::Internal(format!(
                            "file {file_id} is judged but its receipt could not be written: {e}"
                        )));
                    }
                    Ok(row)
                }
                // Decided meanwhile by another process: answer from its verdict.
                (Err(_), state) if state != FileState::Received => {
                    self.receipt_for(&row).await?;
                    Ok(row)
                }
                (Err(e), _) => Err(e),
            };
        }
        self.receipt_for(&row).await?;
        Ok(row)
    }

    async fn decided_row(&self, file_id: i64) -> Result<FileRow, IntakeError> {
        self.ledger
            .file(file_id)
            .await?
            .ok_or(IntakeError::NoSuchFile(file_id))
    }

    async fn receipt_for(&self, row: &FileRow) -> Result<(), IntakeError> {
        if row.channel.answers_with_receipts() {
            self.write_receipt(row.id).await?;
        }
        Ok(())
    }

    /// Write (or write again) the receipt of a judged file from what the
    /// ledger holds: `<data-dir>/receipts/<partner>/<name>.verdict`.
    pub async fn write_receipt(&self, file_id: i64) -> Result<std::path::PathBuf, IntakeError> {
        let row = self
            .ledger
            .file(file_id)
            .await?
            .ok_or(IntakeError::NoSuchFile(file_id))?;
        let dir = receipt::dir(&self.config.data_dir, &row.partner);
        let mode = self.config.receipt_mode;
        blocking(move || {
            receipt::write(&dir, &row, mode).map_err(|source| IntakeError::Receipt { dir, source })
        })
        .await
    }

    async fn judge_row(
        &self,
        row: &FileRow,
        actor: &str,
        verified: Option<Verified>,
    ) -> Result<Outcome, IntakeError> {
        if row.state != FileState::Received {
            return Err(IntakeError::Internal(format!(
                "file {} is already {}; it is judged once",
                row.id, row.state
            )));
        }
        let partner = self.partner(&row.partner)?;
        let sidecar = self.control_bytes(row).await?;
        let spec = match choose_format(&self.formats, partner, &row.name) {
            Ok(spec) => spec.clone(),
            Err(e) => {
                let facts = unidentified(row, e.to_string());
                return self.quarantine(row, actor, facts, Vec::new()).await;
            }
        };
        let on_the_way = verified.and_then(|v| {
            v.facts_for(
                self.generation,
                &spec,
                &row.name,
                &row.checksum,
                row.sidecar_checksum.is_some(),
            )
        });
        let facts = match on_the_way {
            Some(facts) => {
                tracing::debug!(
                    file_id = row.id,
                    "verified on the way in; the stored bytes are not read again"
                );
                facts
            }
            None => {
                self.verify_stored(&spec, row, sidecar.clone(), None)
                    .await?
            }
        };
        let now = self.clock.now();
        let ctx = ArrivalContext {
            name: &row.name,
            channel: row.channel,
            endpoint: row.endpoint.as_deref(),
            received_at: row.received_at,
        };
        let signals = judge::drill_signals(partner, &ctx, &facts, now, self.config.timezone);
        let mut overlaps: Vec<Overlap> = Vec::new();
        // A guard constraint can fire when another process fed the same data
        // between our look-ups and our feed: look again and judge again.
        for _attempt in 0..4 {
            let (judgement, identity) = self.judge_once(row, &facts, &signals, &overlaps).await?;
            if judgement.verdict != Verdict::Fed {
                return self
                    .record_verdict(row, actor, judgement, &identity, facts)
                    .await;
            }
            let plan = self.plan(row, &identity, &judgement, actor);
            match self.feed(&spec, row, sidecar.clone(), &plan).await {
                Ok(n) => {
                    tracing::info!(file_id = row.id, entries = n, "fed");
                    self.acknowledge(&spec, row, &facts, actor).await;
                    return Ok(outcome(row, judgement, Some(facts), n));
                }
                Err(IntakeError::Ledger(LedgerError::Guard(Guard::RecordKey))) => {
                    overlaps = self.find_overlaps(&spec, row, sidecar.clone()).await?;
                    if overlaps.is_empty() {
                        // Not fed elsewhere: the file repeats a record key itself.
                        let mut facts = facts.clone();
                        facts.error =
                            Some(self.find_repeated_key(&spec, row, sidecar.clone()).await?);
                        facts.fingerprint = None;
                        return self.quarantine(row, actor, facts, signals).await;
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

    /// A fed file of a format that acknowledges deliveries (a bank's
    /// transfer results) marks the delivery of the same business key
    /// acknowledged. The file is fed either way; a failure is logged.
    pub(super) async fn acknowledge(
        &self,
        spec: &FormatSpec,
        row: &FileRow,
        facts: &FileFacts,
        actor: &str,
    ) {
        let Some(outbound) = &spec.acknowledges else {
            return;
        };
        let key = facts.business_key_text();
        match self
            .ledger
            .acknowledge(
                &row.partner,
                outbound,
                &key,
                row.id,
                self.clock.now(),
                actor,
            )
            .await
        {
            Ok(Some(delivery)) => {
                tracing::info!(
                    file_id = row.id,
                    delivery_id = delivery,
                    "acknowledges delivery"
                )
            }
            Ok(None) => {
                tracing::info!(file_id = row.id, format = %outbound, business_key = %key, "acknowledges no delivered file")
            }
            Err(e) => {
                tracing::error!(file_id = row.id, error = %e, "cannot record the acknowledgement")
            }
        }
    }

    /// The control file's bytes, when the arrival had one.
    pub(super) async fn control_bytes(
        &self,
        row: &FileRow,
    ) -> Result<Option<Vec<u8>>, IntakeError> {
        match &row.sidecar_checksum {
            Some(c) => {
                let (store, c) = (self.store.clone(), c.clone());
                Ok(Some(blocking(move || store.read_blob(&c)).await?))
            }
            None => Ok(None),
        }
    }

    /// How to feed `row` as judged: from `received`, superseding nothing;
    /// operator actions override `from` and `supersedes`.
    pub(super) fn plan<'a>(
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
            from: FileState::Received,
            supersedes: None,
        }
    }

    /// Record a non-fed verdict for facts that need no look-ups.
    async fn quarantine(
        &self,
        row: &FileRow,
        actor: &str,
        facts: FileFacts,
        signals: Vec<DrillSignal>,
    ) -> Result<Outcome, IntakeError> {
        let (judgement, identity) = self.judge_once(row, &facts, &signals, &[]).await?;
        self.record_verdict(row, actor, judgement, &identity, facts)
            .await
    }

    /// Write a verdict other than `fed`, with its audit event.
    async fn record_verdict(
        &self,
        row: &FileRow,
        actor: &str,
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
                actor,
            })
            .await?;
        Ok(outcome(row, judgement, Some(facts), 0))
    }

    /// Look up what the ledger holds and ask the judge.
    pub(super) async fn judge_once(
        &self,
        row: &FileRow,
        facts: &FileFacts,
        signals: &[DrillSignal],
        overlaps: &[Overlap],
    ) -> Result<(Judgement, Identity), IntakeError> {
        let (mut same_checksum, mut same_fp, mut same_key) = (None, None, None);
        if facts.is_valid() {
            same_checksum = self
                .ledger
                .earlier_same_checksum(
                    &row.checksum,
                    row.id,
                    row.channel == crate::model::Channel::Redelivery,
                )
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
    pub(super) async fn verify_stored(
        &self,
        spec: &FormatSpec,
        row: &FileRow,
        sidecar: Option<Vec<u8>>,
        sink: Option<Box<dyn RecordSink + Send>>,
    ) -> Result<FileFacts, IntakeError> {
        self.verify_blob(
            spec,
            (&row.checksum, row.size as u64),
            &row.name,
            sidecar,
            sink,
        )
        .await
        .map_err(|e| match e {
            IntakeError::Corrupt { checksum, .. } => IntakeError::Corrupt {
                what: format!("file {}", row.id),
                checksum,
            },
            other => other,
        })
    }

    /// Verify a blob of the store (of `size` bytes) as the file `name`, on
    /// a blocking thread, optionally streaming its records to `sink`; its
    /// bytes must still be those of `checksum`.
    pub async fn verify_blob(
        &self,
        spec: &FormatSpec,
        (checksum, size): (&str, u64),
        name: &str,
        sidecar: Option<Vec<u8>>,
        sink: Option<Box<dyn RecordSink + Send>>,
    ) -> Result<FileFacts, IntakeError> {
        let mut blob = self.store.open_blob_unhashed(checksum)?;
        let (spec, owned_name, sum) = (spec.clone(), name.to_string(), checksum.to_string());
        let facts = tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            let sink: &mut dyn RecordSink = match sink.as_deref_mut() {
                Some(s) => s,
                None => &mut (),
            };
            let ctx = FileContext {
                name: &owned_name,
                sidecar: sidecar.as_deref(),
            };
            // The verifier reads in large blocks itself: no buffer between.
            if size > crate::stage::SMALL_FILE {
                return crate::format::verify(&spec, blob, ctx, sink);
            }
            // What the blob holds is checked, up to a byte more than
            // recorded: its checksum says whether it is still the file.
            let mut bytes = Vec::with_capacity(size as usize + 1);
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut blob, size + 1), &mut bytes)?;
            crate::format::verify_whole(&spec, &bytes, ctx, sink)
        })
        .await
        .map_err(|e| IntakeError::Internal(e.to_string()))?
        .map_err(|source| IntakeError::Read {
            path: self.store.path_of(&sum).display().to_string(),
            source,
        })?;
        if facts.checksum_hex() != sum {
            return Err(IntakeError::Corrupt {
                what: name.to_string(),
                checksum: sum,
            });
        }
        Ok(facts)
    }

    /// Feed: parse the stored file again on a blocking thread, streaming its
    /// entries into one ledger transaction. The stream is marked complete only
    /// if the second pass gives the same valid facts.
    pub(super) async fn feed(
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
}

pub(super) fn unidentified(row: &FileRow, message: String) -> FileFacts {
    FileFacts::failed(row.size as u64, message)
}

pub(super) fn identity(facts: &FileFacts, signals: &[DrillSignal]) -> Identity {
    Identity {
        format: (!facts.format.is_empty()).then(|| facts.format.clone()),
        fingerprint: facts.fingerprint_hex(),
        business_key: (!facts.business_key.is_empty()).then(|| facts.business_key_text()),
        business_date: facts.business_date,
        records: Some(facts.records as i64),
        totals: facts.is_valid().then(|| facts.totals.clone()),
        drill_signals: signals.to_vec(),
        error: facts.error.clone(),
    }
}

pub(super) fn outcome(row: &FileRow, j: Judgement, facts: Option<FileFacts>, fed: u64) -> Outcome {
    Outcome {
        file_id: row.id,
        verdict: j.verdict,
        reason: j.reason,
        related_file_id: j.related,
        checksum: row.checksum.clone(),
        facts,
        fed_entries: fed,
        receipt: ReceiptStatus::NotWanted,
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
