//! The settlement day read from the ledger: the files of a business date
//! and what it pays, handed to the pure [`crate::day::report`].

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{Gateway, IntakeError};
use crate::day::{self, DayReport};

impl Gateway {
    /// The report for business date `date` as of now. Without `totals` the
    /// entries are not summed (what `/metrics` needs is only the status).
    pub async fn day_report(
        &self,
        date: NaiveDate,
        totals: bool,
    ) -> Result<DayReport, IntakeError> {
        let tz = self.config.timezone;
        // Quarantined files whose business date could not be read count
        // for the date they arrived on and the day after.
        let (from, to) = date
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(tz).single())
            .map(|start| (start.to_utc(), (start + chrono::Days::new(2)).to_utc()))
            .ok_or_else(|| IntakeError::Refused(format!("{date} has no midnight in {tz}")))?;
        let files = self.ledger.day_files(date, from, to).await?;
        let sums: BTreeMap<(String, String), rust_decimal::Decimal> = if totals {
            self.ledger
                .intake(date)
                .await?
                .into_iter()
                .map(|r| ((r.partner, r.format), r.total))
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(day::report(
            date,
            &self.config.partners,
            &self.config.calendar,
            &files,
            &sums,
            self.clock.now(),
        ))
    }
}
