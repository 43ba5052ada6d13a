//! Recovery: files a crash left staged and recorded but not judged
//! (`received`) are judged at the next start or by `settlegate recover`,
//! and a file that came by a channel gets its receipt then, so whoever
//! handed it in learns its verdict as if it had been judged at once. Temp
//! files of writers that died (half-written arrivals, never recorded) are
//! removed.

use super::{Gateway, IntakeError, Outcome};
use crate::model::FileState;

/// What a recovery did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Each file judged.
    pub outcomes: Vec<Outcome>,
    /// Files still unjudged, with why.
    pub failures: Vec<(i64, String)>,
    /// Half-written temp files removed from the content store.
    pub removed_temp_files: usize,
}

impl Gateway {
    /// Judge again every file a crash left `received`, as `actor`. A file
    /// that fails is reported and skipped; the others are still judged. A
    /// file another process decides meanwhile (it was judging it) is left
    /// to that process.
    pub async fn recover(&self, actor: &str) -> Result<Recovery, IntakeError> {
        let mut report = Recovery::default();
        let store = self.store.clone();
        report.removed_temp_files = super::blocking(move || store.remove_abandoned()).await?;
        if report.removed_temp_files > 0 {
            tracing::warn!(
                files = report.removed_temp_files,
                "removed half-written temp files of a process that died (never recorded)"
            );
        }
        for row in self.ledger.unjudged().await? {
            tracing::info!(file_id = row.id, name = %row.name.escape_debug(), "judging a file left unjudged");
            match self.judge(row.id, actor).await {
                Ok(o) => report.outcomes.push(o),
                Err(IntakeError::Elsewhere(id)) => {
                    tracing::info!(file_id = id, "being judged by another node");
                }
                Err(e) => {
                    let decided = self
                        .ledger
                        .file(row.id)
                        .await?
                        .is_some_and(|r| r.state != FileState::Received);
                    if decided {
                        tracing::info!(file_id = row.id, "judged meanwhile by another process");
                        continue;
                    }
                    tracing::error!(file_id = row.id, name = %row.name.escape_debug(), error = %e, "could not judge a file left unjudged");
                    report.failures.push((row.id, e.to_string()));
                }
            }
        }
        Ok(report)
    }

    /// Judge files another node recorded and left `received` longer than a
    /// lease time (it died before judging them, or while judging: its
    /// claim expired). Run by every node of `serve` every lease time; a
    /// file is judged by the one node that gets its claim.
    pub async fn recover_abandoned(&self, actor: &str) -> Result<usize, IntakeError> {
        let before = self.clock.now()
            - chrono::Duration::from_std(self.config.lease)
                .unwrap_or(chrono::Duration::seconds(30));
        let mut judged = 0;
        for row in self.ledger.unjudged().await? {
            if row.received_at > before {
                continue;
            }
            match self.finish(row.id, actor).await {
                Ok(_) => {
                    judged += 1;
                    tracing::warn!(file_id = row.id, name = %row.name.escape_debug(), "judged a file another node left unjudged");
                }
                Err(IntakeError::Elsewhere(_)) => {}
                Err(e) => {
                    tracing::error!(file_id = row.id, name = %row.name.escape_debug(), error = %e, "could not judge a file another node left unjudged");
                }
            }
        }
        Ok(judged)
    }
}
