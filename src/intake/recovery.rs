//! Recovery: files a crash left staged and recorded but not judged
//! (`received`) are judged at the next start or by `settlegate recover`,
//! and a file that came by a channel gets its receipt then, so whoever
//! handed it in learns its verdict as if it had been judged at once.

use super::{Gateway, IntakeError, Outcome};

/// What a recovery did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Each file judged.
    pub outcomes: Vec<Outcome>,
    /// Files still unjudged, with why.
    pub failures: Vec<(i64, String)>,
}

impl Gateway {
    /// Judge again every file a crash left `received`, as `actor`. A file
    /// that fails is reported and skipped; the others are still judged.
    pub async fn recover(&self, actor: &str) -> Result<Recovery, IntakeError> {
        let mut report = Recovery::default();
        for row in self.ledger.unjudged().await? {
            tracing::info!(file_id = row.id, name = %row.name.escape_debug(), "judging a file left unjudged");
            match self.judge(row.id, actor).await {
                Ok(o) => report.outcomes.push(o),
                Err(e) => {
                    tracing::error!(file_id = row.id, name = %row.name.escape_debug(), error = %e, "could not judge a file left unjudged");
                    report.failures.push((row.id, e.to_string()));
                }
            }
        }
        Ok(report)
    }
}
