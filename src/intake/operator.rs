//! Operator actions on quarantined files: supersede a fed file by a
//! conflicting one, release a drill by override, reject for good. Each goes
//! through the same verification and ledger constraints as an arrival and is
//! audited with the operator and the reason.

use super::pipeline::{identity, outcome};
use super::{Arrival, Bytes, Gateway, IntakeError, Outcome, blocking};
use crate::format::{FileFacts, FormatSpec};
use crate::identify::choose_format;
use crate::judge::{Judgement, Verdict};
use crate::ledger::{FeedPlan, FileRow, LedgerError};
use crate::model::{Channel, FileState};

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
            .map_err(|e| IntakeError::Refused(e.to_string()))?
            .clone();
        let sidecar = self.control_bytes(row).await?;
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
        verdicts: &[Verdict],
        action: &str,
    ) -> Result<FileRow, IntakeError> {
        let row = self
            .ledger
            .file(id)
            .await?
            .ok_or_else(|| IntakeError::Refused(format!("no file {id} in the ledger")))?;
        if !row.state.verdict().is_some_and(|v| verdicts.contains(&v)) {
            let names: Vec<&str> = verdicts.iter().map(|v| v.as_str()).collect();
            return Err(IntakeError::Refused(format!(
                "file {id} is {}; {action} applies to {} files",
                row.state,
                names.join(" or ")
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
        let row = self
            .file_in(new_id, &[Verdict::Conflict], "supersede")
            .await?;
        let old = match row.related_file_id {
            Some(old) => self.ledger.file(old).await?,
            None => None,
        }
        .filter(|o| {
            o.state == FileState::FED
                && o.format == row.format
                && o.business_key == row.business_key
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
            from: FileState::Judged(Verdict::Conflict),
            supersedes: Some(old.id),
            ..self.plan(&row, &identity, &judgement, actor)
        };
        let n = self
            .feed(&spec, &row, sidecar, &plan)
            .await
            .map_err(refusal)?;
        self.acknowledge(&spec, &row, &facts, actor).await;
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
        let row = self.file_in(id, &[Verdict::Drill], "release").await?;
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
            from: FileState::Judged(Verdict::Drill),
            ..self.plan(&row, &identity, &judgement, actor)
        };
        let n = self
            .feed(&spec, &row, sidecar, &plan)
            .await
            .map_err(refusal)?;
        self.acknowledge(&spec, &row, &facts, actor).await;
        Ok(outcome(&row, judgement, Some(facts), n))
    }

    /// Take a stored file's bytes through the whole pipeline again as a new
    /// arrival (channel `redelivery`, naming the file): after a format or
    /// configuration fix an invalid file can be fed; bytes already fed are
    /// still a duplicate. When the redelivery is fed, the original, if it
    /// waits in quarantine, is closed (`rejected`) naming it.
    pub async fn redeliver(
        &self,
        id: i64,
        reason: &str,
        actor: &str,
    ) -> Result<Outcome, IntakeError> {
        let row = self
            .ledger
            .file(id)
            .await?
            .ok_or_else(|| IntakeError::Refused(format!("no file {id} in the ledger")))?;
        if row.state == FileState::Received {
            return Err(IntakeError::Refused(format!(
                "file {id} is not judged yet; settlegate recover judges it"
            )));
        }
        let data = crate::stage::Stored {
            checksum: row.checksum.clone(),
            size: u64::try_from(row.size).unwrap_or_default(),
            path: self.store.path_of(&row.checksum),
        };
        let control = row.sidecar_checksum.as_ref().map(|c| crate::stage::Stored {
            checksum: c.clone(),
            size: 0,
            path: self.store.path_of(c),
        });
        for s in std::iter::once(&data).chain(control.as_ref()) {
            let (store, sum) = (self.store.clone(), s.checksum.clone());
            if blocking(move || store.size_of(&sum)).await?.is_none() {
                return Err(IntakeError::Refused(format!(
                    "file {id}: its bytes ({}) are not in the content store",
                    s.checksum
                )));
            }
        }
        let mut arrival = Arrival::new(&row.partner, Channel::Redelivery, &row.name, actor);
        arrival.reason = Some(reason.to_string());
        arrival.source_path = row.source_path.clone();
        arrival.redelivery_of = Some(id);
        let out = self
            .intake(
                &arrival,
                Bytes::Stored {
                    data: &data,
                    control: control.as_ref(),
                },
            )
            .await?;
        if out.verdict == Verdict::Fed
            && let Some(v) = row.state.verdict()
            && v.is_quarantine()
        {
            let why = format!(
                "redelivered as file {}, which was fed: {reason}",
                out.file_id
            );
            if let Err(e) = self
                .ledger
                .reject(id, row.state, &why, self.clock.now(), actor)
                .await
            {
                tracing::warn!(file_id = id, error = %e, "redelivery fed, but the original could not be closed");
            }
        }
        Ok(out)
    }

    /// Close a quarantined file for good: it will never be fed.
    pub async fn reject(&self, id: i64, reason: &str, actor: &str) -> Result<(), IntakeError> {
        let row = self
            .file_in(
                id,
                &[
                    Verdict::Drill,
                    Verdict::Conflict,
                    Verdict::Overlap,
                    Verdict::Invalid,
                ],
                "reject",
            )
            .await?;
        self.ledger
            .reject(id, row.state, reason, self.clock.now(), actor)
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
