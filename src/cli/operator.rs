//! Commands an operator reads the ledger with and acts on quarantined files
//! with: files, show, intake, supersede, release, reject (each override
//! through the four-eyes gate).

use chrono::NaiveDate;
use serde_json::json;

use super::CliError;
use super::day::gate;
use super::render::{file_json, print_file, print_operator_outcome, shown};
use crate::intake::{Gateway, operator_actor};
use crate::ledger::FileFilter;
use crate::model::{Exit, FileState, OverrideAction};

pub async fn files(
    gw: &Gateway,
    partner: Option<String>,
    date: Option<NaiveDate>,
    verdict: Option<String>,
    json: bool,
) -> Result<Exit, CliError> {
    let state = verdict
        .as_deref()
        .map(FileState::parse)
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let rows = gw
        .ledger
        .files(&FileFilter {
            partner,
            business_date: date,
            state,
            limit: None,
        })
        .await?;
    if json {
        let list: Vec<serde_json::Value> = rows.iter().map(file_json).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(Exit::Ok);
    }
    let tz = gw.config.timezone;
    println!(
        "{:>6}  {:<8} {:<9} {:<10} {:<10} {:>8}  {:<16} name / reason",
        "id", "partner", "channel", "verdict", "date", "records", "received"
    );
    for r in &rows {
        println!(
            "{:>6}  {:<8} {:<9} {:<10} {:<10} {:>8}  {:<16} {}",
            r.id,
            r.partner,
            r.channel,
            r.state,
            r.business_date
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            r.records
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            r.received_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            shown(&r.name)
        );
        if let Some(reason) = &r.reason
            && r.state != FileState::FED
        {
            println!("{:>8}↳ {}", "", shown(reason));
        }
    }
    Ok(Exit::Ok)
}

pub async fn show(gw: &Gateway, file_id: i64, json: bool) -> Result<Exit, CliError> {
    let row = gw
        .ledger
        .file(file_id)
        .await?
        .ok_or_else(|| CliError::Usage(format!("no file {file_id} in the ledger")))?;
    let events = gw.ledger.events(file_id).await?;
    let entries = gw.ledger.entry_count(file_id).await?;
    let stored = gw.store.path_of(&row.checksum);
    // A copy of these bytes fed by another route (a drill copy's production twin).
    let fed_copy = gw
        .ledger
        .fed_with_checksum(&row.checksum)
        .await?
        .filter(|id| *id != row.id);
    let related = match row.related_file_id {
        Some(id) => gw.ledger.file(id).await?,
        None => None,
    };
    if json {
        let mut v = file_json(&row);
        v["related_file_state"] = json!(related.as_ref().map(|f| f.state));
        v["entries"] = json!(entries);
        v["stored_at"] = json!(stored.display().to_string());
        v["fed_copy_file_id"] = json!(fed_copy);
        v["events"] = json!(events);
        println!("{v}");
    } else {
        print_file(
            &row,
            &events,
            entries,
            &stored,
            related.as_ref(),
            fed_copy,
            gw.config.timezone,
        );
    }
    Ok(Exit::Ok)
}

pub async fn intake(gw: &Gateway, date: NaiveDate, json: bool) -> Result<Exit, CliError> {
    let rows = gw.ledger.intake(date).await?;
    if json {
        println!("{}", json!(rows));
    } else if rows.is_empty() {
        println!("nothing fed for business date {date}");
    } else {
        println!(
            "{:<10} {:<22} {:<10} {:>6} {:>10} {:>20}",
            "partner", "format", "date", "files", "entries", "total"
        );
        for r in rows {
            println!(
                "{:<10} {:<22} {:<10} {:>6} {:>10} {:>20}",
                r.partner, r.format, r.business_date, r.files, r.entries, r.total
            );
        }
    }
    Ok(Exit::Ok)
}

pub async fn supersede(
    gw: &Gateway,
    file_id: i64,
    reason: &str,
    json: bool,
) -> Result<Exit, CliError> {
    if let Some(exit) = gate(gw, OverrideAction::Supersede, file_id, reason, json).await? {
        return Ok(exit);
    }
    let out = gw.supersede(file_id, reason, &operator_actor()).await?;
    print_operator_outcome(&out, json);
    Ok(Exit::Ok)
}

pub async fn release(
    gw: &Gateway,
    file_id: i64,
    reason: &str,
    json: bool,
) -> Result<Exit, CliError> {
    if let Some(exit) = gate(gw, OverrideAction::Release, file_id, reason, json).await? {
        return Ok(exit);
    }
    let out = gw.release(file_id, reason, &operator_actor()).await?;
    print_operator_outcome(&out, json);
    Ok(Exit::Ok)
}

pub async fn reject(gw: &Gateway, file_id: i64, reason: &str) -> Result<Exit, CliError> {
    if let Some(exit) = gate(gw, OverrideAction::Reject, file_id, reason, false).await? {
        return Ok(exit);
    }
    gw.reject(file_id, reason, &operator_actor()).await?;
    println!("rejected: file {file_id}: {reason}");
    Ok(Exit::Ok)
}
