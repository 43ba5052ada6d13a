//! Commands that send files to partners: send, resend, deliveries.

use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::json;

use super::CliError;
use super::inbound::regular_file;
use super::render::{delivery_json, print_delivery, shown};
use crate::identify::{Formats, control_file_beside};
use crate::intake::{Bytes, Gateway, operator_actor};
use crate::ledger::{DeliveryFilter, DeliveryRow};
use crate::model::{DeliverySource, DeliveryState, Exit};
use crate::outbound::worker::Attempted;
use crate::outbound::{OutboundError, Submission};

impl From<OutboundError> for CliError {
    fn from(e: OutboundError) -> CliError {
        match e {
            OutboundError::UnknownPartner(_) | OutboundError::UnknownEndpoint { .. } => {
                CliError::Usage(e.to_string())
            }
            OutboundError::Refused(m) => CliError::Intake(crate::intake::IntakeError::Refused(m)),
            OutboundError::Intake(i) => CliError::Intake(i),
            OutboundError::Ledger(l) => CliError::Ledger(l),
            other => CliError::Io {
                context: "delivery".into(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn send(
    gw: &Gateway,
    partner: &str,
    file: &Path,
    endpoint: Option<&str>,
    reason: Option<&str>,
    json: bool,
) -> Result<Exit, CliError> {
    let p = gw.config.partner(partner).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown partner {partner:?}; configured partners: {}",
            gw.config.partner_ids().join(", ")
        ))
    })?;
    let name = regular_file(file)?;
    let control = Formats::outbound(&gw.formats, p)
        .choose(&name)
        .ok()
        .and_then(|spec| control_file_beside(spec, file));
    let control_name = control
        .as_deref()
        .and_then(|c| c.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let source_path = std::fs::canonicalize(file)
        .unwrap_or(file.to_path_buf())
        .display()
        .to_string();
    let actor = operator_actor();
    let out = gw
        .submit(&Submission {
            partner,
            endpoint,
            name: &name,
            bytes: Bytes::Files {
                data: file,
                control: control.as_deref(),
            },
            control_name: control_name.as_deref(),
            source: DeliverySource::Send,
            source_path: Some(&source_path),
            reason,
            claim: None,
            actor: &actor,
        })
        .await?;
    finish_sending(gw, out.delivery, json).await
}

pub async fn resend(gw: &Gateway, id: i64, reason: &str, json: bool) -> Result<Exit, CliError> {
    let d = gw.resend(id, reason, &operator_actor()).await?;
    finish_sending(gw, d, json).await
}

/// Upload a recorded delivery now (the command waits for it) and say how it
/// ended: 0 delivered or queued for collection, 10 duplicate, 14 invalid,
/// 4 the endpoint could not be reached or the upload failed (`serve` tries
/// again).
pub(super) async fn finish_sending(
    gw: &Gateway,
    d: DeliveryRow,
    json: bool,
) -> Result<Exit, CliError> {
    let d = match (d.state, &d.endpoint) {
        (DeliveryState::Queued, Some(_)) => {
            let mut conn = None;
            let attempted = gw.attempt(&d, &mut conn, true).await?;
            if let Some(c) = conn {
                c.close().await;
            }
            match attempted {
                // `serve` took it first: wait for its attempt to end.
                Attempted::Elsewhere(_) => wait_for_attempt(gw, d.id).await?,
                other => other.row().clone(),
            }
        }
        _ => d,
    };
    let related = match d.related_delivery_id {
        Some(id) => gw.ledger.delivery(id).await?,
        None => None,
    };
    if json {
        println!("{}", delivery_json(&d));
    } else {
        print_delivery(&d, related.as_ref(), gw.config.timezone);
    }
    Ok(match d.state {
        DeliveryState::Delivered | DeliveryState::Collected => Exit::Ok,
        DeliveryState::Queued if d.endpoint.is_none() => Exit::Ok,
        DeliveryState::Duplicate => Exit::Duplicate,
        DeliveryState::Invalid => Exit::Invalid,
        DeliveryState::Queued | DeliveryState::Failed | DeliveryState::Sending => Exit::Endpoint,
    })
}

/// Poll the ledger until another process's attempt at `id` has ended.
async fn wait_for_attempt(gw: &Gateway, id: i64) -> Result<DeliveryRow, CliError> {
    loop {
        let d = gw
            .ledger
            .delivery(id)
            .await?
            .ok_or_else(|| CliError::Usage(format!("no delivery {id}")))?;
        let ended = match d.state {
            DeliveryState::Sending => false,
            DeliveryState::Queued => d.attempts > 0 && d.error.is_some(),
            _ => true,
        };
        if ended {
            return Ok(d);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn deliveries(
    gw: &Gateway,
    partner: Option<String>,
    state: Option<DeliveryState>,
    date: Option<NaiveDate>,
    json: bool,
) -> Result<Exit, CliError> {
    let tz = gw.config.timezone;
    // The day as the operations team reads it: midnight to midnight in `timezone`.
    let bounds = date.and_then(|d| {
        let start = d.and_hms_opt(0, 0, 0)?.and_local_timezone(tz).single()?;
        Some((start.to_utc(), (start + chrono::Days::new(1)).to_utc()))
    });
    let rows = gw
        .ledger
        .deliveries(&DeliveryFilter {
            partner,
            state,
            from: bounds.map(|b| b.0),
            until: bounds.map(|b| b.1),
            limit: None,
        })
        .await?;
    if json {
        let list: Vec<serde_json::Value> = rows.iter().map(delivery_json).collect();
        println!("{}", json!(list));
        return Ok(Exit::Ok);
    }
    println!(
        "{:>6}  {:<8} {:<10} {:<10} {:>3}  {:<16} name / error",
        "id", "partner", "endpoint", "state", "try", "created"
    );
    for d in &rows {
        println!(
            "{:>6}  {:<8} {:<10} {:<10} {:>3}  {:<16} {}",
            d.id,
            d.partner,
            d.endpoint.as_deref().unwrap_or("(collect)"),
            d.state,
            d.attempts,
            d.created_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            shown(&d.name)
        );
        if let Some(e) = &d.error {
            println!("{:>8}↳ {}", "", shown(e));
        }
    }
    Ok(Exit::Ok)
}
