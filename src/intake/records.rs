//! A stored file's data records read again through its format (record key
//! and amount), for an operator to compare a conflicting re-send with the
//! fed file of the same business key.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use super::{Gateway, IntakeError};
use crate::format::{DataRecord, RecordSink};
use crate::identify::choose_format;
use crate::ledger::EntryAmount;

/// Records read at most (a larger file is compared on its first ones).
pub const MAX_RECORDS: usize = 200_000;

/// What reading a stored file's records gave.
#[derive(Debug, Clone, Default)]
pub struct StoredRecords {
    pub records: Vec<EntryAmount>,
    /// More records than [`MAX_RECORDS`]: the rest were not read.
    pub truncated: bool,
}

struct Collect(Arc<Mutex<StoredRecords>>);

impl RecordSink for Collect {
    fn record(&mut self, r: &DataRecord<'_>) -> ControlFlow<()> {
        let Ok(mut out) = self.0.lock() else {
            return ControlFlow::Break(());
        };
        if out.records.len() >= MAX_RECORDS {
            out.truncated = true;
            return ControlFlow::Break(());
        }
        out.records.push(EntryAmount {
            record_no: r.number as i64,
            record_key: r.record_key.to_string(),
            amount: r.amount,
        });
        ControlFlow::Continue(())
    }
}

impl Gateway {
    /// The data records of stored file `id`, read with its partner's format.
    pub async fn stored_records(&self, id: i64) -> Result<StoredRecords, IntakeError> {
        let row = self
            .ledger
            .file(id)
            .await?
            .ok_or(IntakeError::NoSuchFile(id))?;
        let partner = self.partner(&row.partner)?;
        let spec = choose_format(&self.formats, partner, &row.name)
            .map_err(|e| IntakeError::Refused(e.to_string()))?
            .clone();
        let sidecar = self.control_bytes(&row).await?;
        let out = Arc::new(Mutex::new(StoredRecords::default()));
        self.verify_stored(&spec, &row, sidecar, Some(Box::new(Collect(out.clone()))))
            .await?;
        let taken = out
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .map_err(|_| IntakeError::Internal("record reader poisoned".into()))?;
        Ok(taken)
    }
}
