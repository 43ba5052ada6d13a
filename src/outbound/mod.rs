//! Outbound delivery: stage → verify → deliver. A file for a partner (from
//! its outbox, `settlegate send`, or an operator's resend) is staged in the
//! content store, verified against the partner's `outbound_formats`, and
//! recorded as a delivery; the ledger refuses a second live delivery of the
//! same bytes to the same partner. Then it is uploaded to the partner's
//! endpoint ([`upload`]) or waits in `/outbox` for the partner to collect.
//!
//! - [`state`]: how a delivery found `sending` after a crash is resolved (pure).
//! - [`upload`]: one upload to a partner's SFTP server.
//! - [`worker`]: `serve`'s delivery loop per endpoint, and crash resolution.
//! - [`receipt`]: `<name>.delivery` files for whoever dropped a file in an outbox.

pub mod receipt;
pub mod state;
pub mod upload;
pub mod worker;

use chrono::{DateTime, Utc};

use crate::format::FileFacts;
use crate::identify::Formats;
use crate::intake::{Bytes, Gateway, IntakeError};
use crate::ledger::{DeliveryRecorded, DeliveryRow, LedgerError, NewDelivery};
use crate::model::{DeliverySource, DeliveryState};

/// How long a collected delivery stays listed in `/outbox` (to be read again).
pub const COLLECTED_LISTED_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("unknown partner {0:?}")]
    UnknownPartner(String),
    #[error("partner {partner} has no endpoint {endpoint:?} with an upload_dir")]
    UnknownEndpoint { partner: String, endpoint: String },
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("no delivery {0} in the ledger")]
    NoSuchDelivery(i64),
    /// An operator action the delivery's state does not allow; nothing changed.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Upload(Box<upload::UploadError>),
}

impl From<upload::UploadError> for OutboundError {
    fn from(e: upload::UploadError) -> OutboundError {
        OutboundError::Upload(Box::new(e))
    }
}

/// A file to deliver.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub partner: &'a str,
    /// The endpoint to upload to (default: the partner's first upload
    /// endpoint, or `/outbox` when the partner collects).
    pub endpoint: Option<&'a str>,
    pub name: &'a str,
    pub bytes: Bytes<'a>,
    pub control_name: Option<&'a str>,
    pub source: DeliverySource,
    pub source_path: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// An outbox claim's key.
    pub claim: Option<&'a str>,
    pub actor: &'a str,
}

/// What became of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub delivery: DeliveryRow,
    /// For a refused duplicate: the live delivery of the same bytes.
    pub live: Option<DeliveryRow>,
    /// The verification's facts, when a format applies.
    pub facts: Option<FileFacts>,
}

impl Gateway {
    /// Stage, verify and record a file to deliver. Invalid files and
    /// duplicates are recorded as such and never sent.
    pub async fn submit(&self, s: &Submission<'_>) -> Result<Submitted, OutboundError> {
        let partner = self
            .config
            .partner(s.partner)
            .ok_or_else(|| OutboundError::UnknownPartner(s.partner.to_string()))?;
        let endpoint = match s.endpoint {
            Some(e) => Some(
                partner
                    .endpoint(e)
                    .filter(|ep| ep.upload.is_some())
                    .ok_or_else(|| OutboundError::UnknownEndpoint {
                        partner: partner.id.clone(),
                        endpoint: e.to_string(),
                    })?
                    .name
                    .as_str(),
            ),
            None => partner.upload_endpoint(None).map(|e| e.name.as_str()),
        };
        let (stored, control) = self.stage(s.bytes).await?;
        // Verification before sending: a file that fails its format, or
        // whose name matches none, is never sent.
        let mut facts = None;
        let mut error = None;
        if !partner.outbound_formats.is_empty() {
            match Formats::outbound(&self.formats, partner).choose(s.name) {
                Err(e) => error = Some(e.to_string()),
                Ok(spec) => {
                    let sidecar = match &control {
                        Some(c) => {
                            let (store, sum) = (self.store.clone(), c.checksum.clone());
                            Some(crate::intake::blocking(move || store.read_blob(&sum)).await?)
                        }
                        None => None,
                    };
                    let f = self
                        .verify_blob(spec, (&stored.checksum, stored.size), s.name, sidecar, None)
                        .await?;
                    error = f.error.as_ref().map(|e| format!("{}: {e}", spec.id));
                    facts = Some(f);
                }
            }
        }
        let fingerprint = facts.as_ref().and_then(|f| f.fingerprint_hex());
        let format = facts.as_ref().map(|f| f.format.clone());
        let business_key = facts
            .as_ref()
            .filter(|f| !f.business_key.is_empty())
            .map(|f| f.business_key_text());
        let state = if error.is_some() {
            DeliveryState::Invalid
        } else {
            DeliveryState::Queued
        };
        let recorded = self
            .ledger
            .record_delivery(&NewDelivery {
                partner: s.partner,
                endpoint,
                name: s.name,
                source: s.source,
                source_path: s.source_path,
                size: stored.size,
                checksum: &stored.checksum,
                control: control
                    .as_ref()
                    .zip(s.control_name)
                    .map(|(c, n)| (n, c.checksum.as_str())),
                format: format.as_deref(),
                fingerprint: fingerprint.as_deref(),
                business_key: business_key.as_deref(),
                state,
                error: error.as_deref(),
                resend_of: None,
                reason: s.reason,
                claim: s.claim,
                actor: s.actor,
                at: self.clock.now(),
            })
            .await?;
        let out = match recorded {
            DeliveryRecorded::New(delivery) | DeliveryRecorded::Already(delivery) => Submitted {
                delivery,
                live: None,
                facts,
            },
            DeliveryRecorded::Duplicate { refused, live } => Submitted {
                delivery: *refused,
                live: Some(*live),
                facts,
            },
        };
        let d = &out.delivery;
        tracing::info!(
            delivery_id = d.id, partner = %d.partner, name = %d.name.escape_debug(),
            endpoint = d.endpoint.as_deref().unwrap_or("(collected from /outbox)"),
            state = %d.state, error = d.error.as_deref().unwrap_or(""), "delivery recorded"
        );
        Ok(out)
    }

    /// Send a delivered (or collected) file again, on purpose: a new
    /// delivery of the same bytes naming the first, audited with who and why.
    pub async fn resend(
        &self,
        id: i64,
        reason: &str,
        actor: &str,
    ) -> Result<DeliveryRow, OutboundError> {
        let first = self
            .ledger
            .delivery(id)
            .await?
            .ok_or(OutboundError::NoSuchDelivery(id))?;
        if !matches!(
            first.state,
            DeliveryState::Delivered | DeliveryState::Collected | DeliveryState::Failed
        ) {
            return Err(OutboundError::Refused(format!(
                "delivery {id} is {}; resend applies to delivered, collected or failed deliveries",
                first.state
            )));
        }
        let recorded = self
            .ledger
            .record_delivery(&NewDelivery {
                partner: &first.partner,
                endpoint: first.endpoint.as_deref(),
                name: &first.name,
                source: DeliverySource::Resend,
                source_path: first.source_path.as_deref(),
                size: first.size as u64,
                checksum: &first.checksum,
                control: first
                    .control_name
                    .as_deref()
                    .zip(first.control_checksum.as_deref()),
                format: first.format.as_deref(),
                fingerprint: first.fingerprint.as_deref(),
                business_key: first.business_key.as_deref(),
                state: DeliveryState::Queued,
                error: None,
                resend_of: Some(first.id),
                reason: Some(reason),
                claim: None,
                actor,
                at: self.clock.now(),
            })
            .await;
        match recorded {
            Ok(DeliveryRecorded::New(d)) => Ok(d),
            Ok(_) => Err(OutboundError::Refused(format!(
                "delivery {id} could not be sent again"
            ))),
            Err(LedgerError::Guard(g)) => Err(OutboundError::Refused(format!(
                "the ledger refused the resend: {g}; nothing changed"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// What a collecting partner finds in `/outbox`: its waiting deliveries
    /// and those collected in the last [`COLLECTED_LISTED_DAYS`] days, one
    /// per name (a name delivered more than once shows its newest).
    pub async fn collectable(&self, partner: &str) -> Result<Vec<DeliveryRow>, OutboundError> {
        let since = self.clock.now() - chrono::Duration::days(COLLECTED_LISTED_DAYS);
        let rows = self.ledger.collectable(partner, since).await?;
        let mut seen = std::collections::HashSet::new();
        Ok(rows
            .into_iter()
            .filter(|d| seen.insert(d.name.clone()))
            .collect())
    }

    /// A delivery's stored bytes, open for reading.
    pub fn open_delivery(&self, d: &DeliveryRow) -> Result<crate::stage::Blob, OutboundError> {
        Ok(self
            .store
            .open_blob(&d.checksum)
            .map_err(IntakeError::from)?)
    }

    /// A partner read a delivery whole from `/outbox`.
    pub async fn collected(
        &self,
        id: i64,
        account: &str,
        address: &str,
    ) -> Result<bool, OutboundError> {
        let now: DateTime<Utc> = self.clock.now();
        let marked = self
            .ledger
            .mark_collected(id, account, address, now)
            .await?;
        if marked {
            tracing::info!(delivery_id = id, account, address, "delivery collected");
            self.delivery_receipt(id).await;
        }
        Ok(marked)
    }
}
