//! The settlement day and the overrides around it: report, requests,
//! approve, deny, redeliver, and the four-eyes gate every override passes.

use chrono::NaiveDate;
use serde_json::json;

use super::CliError;
use super::render::{print_operator_outcome, shown};
use crate::day::Status;
use crate::intake::{Carried, Gateway, operator_actor};
use crate::ledger::RequestRow;
use crate::model::{Exit, OverrideAction};

/// `settlegate report`: 0 when the day is ready, 5 when not.
pub async fn report(gw: &Gateway, date: NaiveDate, json: bool) -> Result<Exit, CliError> {
    let r = gw.day_report(date, true).await?;
    if json {
        println!("{}", json!(r));
    } else {
        let kind = if r.business_day {
            "business day"
        } else {
            "not a business day"
        };
        let verdict = if r.ready { "ready" } else { "NOT READY" };
        println!("settlement day {date} ({kind}): {verdict}");
        println!(
            "{:<10} {:<22} {:>4} {:>4} {:>4} {:>4} {:>4} {:>4}  {:<25} {:<11} {:>20}",
            "partner",
            "format",
            "exp",
            "recv",
            "fed",
            "quar",
            "ref",
            "miss",
            "deadline",
            "status",
            "total"
        );
        for row in &r.rows {
            println!(
                "{:<10} {:<22} {:>4} {:>4} {:>4} {:>4} {:>4} {:>4}  {:<25} {:<11} {:>20}",
                row.partner,
                row.format,
                row.expected,
                row.received,
                row.fed,
                row.quarantined.len(),
                row.refused,
                row.missing,
                row.deadline
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_else(|| "-".into()),
                json!(row.status).as_str().unwrap_or_default(),
                row.total
            );
            for w in &row.quarantined {
                println!(
                    "{:>12}↳ file {} {} {}: {}",
                    "",
                    w.file_id,
                    w.verdict,
                    shown(&w.name),
                    w.reason.as_deref().map(shown).unwrap_or_default()
                );
            }
            if row.status == Status::Late {
                println!(
                    "{:>12}↳ {} file(s) missing after the deadline",
                    "", row.missing
                );
            }
        }
    }
    Ok(if r.ready { Exit::Ok } else { Exit::NotReady })
}

/// The operator running this command (`--operator`, `SETTLEGATE_OPERATOR`,
/// or the OS user).
pub fn operator() -> String {
    operator_actor()
}

fn request_json(r: &RequestRow, gw: &Gateway) -> serde_json::Value {
    let tz = gw.config.timezone;
    let mut v = json!({
        "id": r.id,
        "action": r.action,
        "operator": r.operator,
        "reason": r.reason,
        "created_at": r.created_at.with_timezone(&tz).to_rfc3339(),
        "expires_at": r.expires_at.with_timezone(&tz).to_rfc3339(),
        "state": r.state,
    });
    match (r.file_id, r.delivery_id) {
        (Some(f), _) => v["file_id"] = json!(f),
        (_, Some(d)) => v["delivery_id"] = json!(d),
        _ => {}
    }
    if let Some(by) = &r.decided_by {
        v["decided_by"] = json!(by);
        v["decision_reason"] = json!(r.decision_reason);
        v["outcome"] = json!(r.outcome_message);
    }
    v
}

fn target(r: &RequestRow) -> String {
    match (r.file_id, r.delivery_id) {
        (Some(f), _) => format!("file {f}"),
        (_, Some(d)) => format!("delivery {d}"),
        _ => "?".into(),
    }
}

/// The four-eyes gate: with the action under four-eyes, record a request
/// and say so (exit 6); otherwise `None` (the caller acts).
pub async fn gate(
    gw: &Gateway,
    action: OverrideAction,
    id: i64,
    reason: &str,
    json: bool,
) -> Result<Option<Exit>, CliError> {
    if !gw.config.operators.needs_second(action) {
        return Ok(None);
    }
    let r = gw.request_override(action, id, reason, &operator()).await?;
    if json {
        println!("{}", request_json(&r, gw));
    } else {
        println!(
            "request {}: {} of {} awaits a second operator (settlegate approve {}); expires {}",
            r.id,
            r.action,
            target(&r),
            r.id,
            r.expires_at.with_timezone(&gw.config.timezone).to_rfc3339()
        );
    }
    Ok(Some(Exit::Pending))
}

pub async fn requests(gw: &Gateway, json: bool) -> Result<Exit, CliError> {
    let rows = gw.ledger.pending_requests(gw.clock.now()).await?;
    if json {
        let list: Vec<serde_json::Value> = rows.iter().map(|r| request_json(r, gw)).collect();
        println!("{}", json!(list));
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        println!("no pending requests");
    }
    let tz = gw.config.timezone;
    for r in &rows {
        println!(
            "{:>5}  {:<9} {:<14} {:<24} expires {}  {}",
            r.id,
            r.action,
            target(r),
            shown(&r.operator),
            r.expires_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            shown(&r.reason)
        );
    }
    Ok(Exit::Ok)
}

pub async fn approve(
    gw: &Gateway,
    id: i64,
    reason: Option<&str>,
    json: bool,
) -> Result<Exit, CliError> {
    let (r, carried) = gw.approve(id, &operator(), reason).await?;
    eprintln!(
        "request {}: {} of {} approved by {}",
        r.id,
        r.action,
        target(&r),
        shown(r.decided_by.as_deref().unwrap_or_default())
    );
    match carried {
        Carried::File(out) => {
            print_operator_outcome(&out, json);
            Ok(out.verdict.into())
        }
        Carried::Rejected(file) => {
            if json {
                println!("{}", json!({ "file_id": file, "verdict": "rejected" }));
            } else {
                println!("rejected: file {file}: {}", shown(&r.reason));
            }
            Ok(Exit::Ok)
        }
        Carried::Delivery(d) => super::outbound::finish_sending(gw, d, json).await,
    }
}

pub async fn deny(gw: &Gateway, id: i64, reason: &str, json: bool) -> Result<Exit, CliError> {
    let r = gw.deny(id, &operator(), reason).await?;
    if json {
        println!("{}", request_json(&r, gw));
    } else {
        println!(
            "request {}: {} of {} denied: {}",
            r.id,
            r.action,
            target(&r),
            shown(reason)
        );
    }
    Ok(Exit::Ok)
}

pub async fn redeliver(
    gw: &Gateway,
    file_id: i64,
    reason: &str,
    json: bool,
) -> Result<Exit, CliError> {
    if let Some(exit) = gate(gw, OverrideAction::Redeliver, file_id, reason, json).await? {
        return Ok(exit);
    }
    let out = gw.redeliver(file_id, reason, &operator()).await?;
    print_operator_outcome(&out, json);
    Ok(out.verdict.into())
}
