//! What commands print: the JSON objects scripts read and the text operators
//! read. Names from outside (file names, paths) are escaped wherever they
//! are printed as text, so a control character cannot forge a line.

use std::path::Path;

use serde_json::json;

use crate::channels::sftp_pull::PullReport;
use crate::format::{FileFacts, FormatRegistry};
use crate::intake::Outcome;
use crate::ledger::{DeliveryRow, EventRow, FileRow};

/// A name from outside, safe to print on one line: control characters
/// (and only they) escaped.
pub fn shown(name: &str) -> String {
    if name.chars().any(char::is_control) {
        name.chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    } else {
        name.to_string()
    }
}

pub fn print_operator_outcome(out: &Outcome, json: bool) {
    if json {
        println!("{}", outcome_json(out));
    } else {
        println!("{}: {}", out.verdict, out.reason);
        println!("  file {}  {} entries", out.file_id, out.fed_entries);
    }
}

pub fn print_pull(partner: &str, endpoint: &str, r: &PullReport) {
    if let Some(e) = &r.error {
        println!("{partner}/{endpoint}: cannot pull: {e}");
        if r.taken.is_empty() && r.skipped.is_empty() {
            return;
        }
    }
    println!(
        "{partner}/{endpoint}: {} taken, {} waiting{}",
        r.taken.len(),
        r.waiting.len(),
        if r.attempts > 1 {
            format!(" ({} connection attempts)", r.attempts)
        } else {
            String::new()
        }
    );
    for t in &r.taken {
        match &t.outcome {
            Some(o) => println!(
                "  {:<10} file {:<6} {}  {}",
                o.verdict.as_str(),
                o.file_id,
                shown(&t.name),
                o.reason
            ),
            None => match t.already_taken {
                Some(id) => println!(
                    "  {:<10} file {id:<6} {}  the same bytes were taken before; not recorded again",
                    "taken",
                    shown(&t.name)
                ),
                None => println!(
                    "  {:<10} {}  {}",
                    "unjudged",
                    shown(&t.name),
                    t.error.as_deref().unwrap_or("")
                ),
            },
        }
        if let Some(e) = &t.after_pickup_error {
            println!("             after-pickup action failed (retried next pickup): {e}");
        }
    }
    for w in &r.waiting {
        println!("  {:<10} {}", "waiting", shown(w));
    }
    for k in &r.skipped {
        println!("  {:<10} {}  {}", "skipped", shown(&k.name), k.reason);
    }
}

pub fn pull_json(partner: &str, endpoint: &str, r: &PullReport) -> serde_json::Value {
    let taken: Vec<serde_json::Value> = r
        .taken
        .iter()
        .map(|t| {
            let mut v = t
                .outcome
                .as_ref()
                .map(outcome_json)
                .unwrap_or_else(|| json!({}));
            v["name"] = json!(t.name);
            v["remote_path"] = json!(t.remote_path);
            v["error"] = json!(t.error);
            v["after_pickup_error"] = json!(t.after_pickup_error);
            v["already_taken"] = json!(t.already_taken);
            v
        })
        .collect();
    let skipped: Vec<serde_json::Value> = r
        .skipped
        .iter()
        .map(|k| json!({ "name": k.name, "reason": k.reason }))
        .collect();
    json!({
        "partner": partner, "endpoint": endpoint, "ok": r.error.is_none(),
        "error": r.error.as_ref().map(|e| e.to_string()),
        "attempts": r.attempts, "taken": taken, "waiting": r.waiting,
        "skipped": skipped,
    })
}

pub fn outcome_json(out: &Outcome) -> serde_json::Value {
    let facts = out.facts.as_ref();
    let business_key: serde_json::Map<String, serde_json::Value> = facts
        .map(|f| {
            f.business_key
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "file_id": out.file_id,
        "verdict": out.verdict.as_str(),
        "reason": out.reason,
        "related_file_id": out.related_file_id,
        "checksum": out.checksum,
        "fingerprint": facts.and_then(|f| f.fingerprint_hex()),
        "business_key": business_key,
        "business_date": facts.and_then(|f| f.business_date).map(|d| d.to_string()),
        "records": facts.map(|f| f.records),
        "entries": out.fed_entries,
    })
}

/// The JSON shape of a file in `files --json` and `show --json`.
pub fn file_json(r: &FileRow) -> serde_json::Value {
    let totals = r.totals.as_ref().map(|t| {
        t.iter()
            .map(|(k, v)| (k.clone(), json!(v.to_string())))
            .collect::<serde_json::Map<_, _>>()
    });
    let signals: Vec<&str> = r.drill_signals.iter().map(|s| s.text.as_str()).collect();
    json!({
        "id": r.id,
        "partner": r.partner,
        "channel": r.channel,
        "endpoint": r.endpoint,
        "source_path": r.source_path,
        "name": r.name,
        "verdict": r.state,
        "reason": r.reason,
        "related_file_id": r.related_file_id,
        "checksum": r.checksum,
        "sidecar_checksum": r.sidecar_checksum,
        "fingerprint": r.fingerprint,
        "format": r.format,
        "business_key": r.business_key,
        "business_date": r.business_date.map(|d| d.to_string()),
        "records": r.records,
        "size": r.size,
        "totals": totals,
        "drill_signals": signals,
        "error": r.error,
        "received_at": r.received_at.to_rfc3339(),
        "decided_at": r.decided_at.map(|d| d.to_rfc3339()),
    })
}

pub fn print_file(
    r: &FileRow,
    events: &[EventRow],
    entries: i64,
    stored: &Path,
    related: Option<&FileRow>,
    fed_copy: Option<i64>,
    tz: chrono::FixedOffset,
) {
    println!("file {}: {} ({})", r.id, shown(&r.name), r.state);
    if let Some(reason) = &r.reason {
        println!("  reason         {reason}");
    }
    if let Some(rel) = r.related_file_id {
        match related {
            Some(f) => println!("  related file   {rel} (now {})", f.state),
            None => println!("  related file   {rel}"),
        }
    }
    if let Some(fed) = fed_copy.filter(|f| *f != r.id) {
        println!("  same bytes fed as file {fed}");
    }
    println!(
        "  partner        {} via {}{}",
        r.partner,
        r.channel,
        r.endpoint
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    if let Some(p) = &r.source_path {
        println!("  source         {}", shown(p));
    }
    println!(
        "  received       {}",
        r.received_at
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
    );
    println!("  size           {} bytes", r.size);
    println!("  checksum       {}", r.checksum);
    println!("  stored at      {}", stored.display());
    let totals = r.totals.as_ref().filter(|t| !t.is_empty()).map(|t| {
        t.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let signals = (!r.drill_signals.is_empty()).then(|| {
        r.drill_signals
            .iter()
            .map(|s| format!("{} ({})", s.text, s.source))
            .collect::<Vec<_>>()
            .join("; ")
    });
    for (label, v) in [
        ("format", r.format.clone()),
        ("fingerprint", r.fingerprint.clone()),
        ("business key", r.business_key.clone()),
        ("totals", totals),
        ("drill signals", signals),
        ("error", r.error.as_ref().map(|e| e.to_string())),
    ] {
        if let Some(v) = v {
            println!("  {label:<14} {v}");
        }
    }
    if let Some(d) = r.business_date {
        println!("  business date  {d}");
    }
    if let Some(n) = r.records {
        println!("  records        {n}");
    }
    println!("  entries        {entries}");
    println!("  events:");
    for e in events {
        println!(
            "    {}  {:<10} {:<28} {}",
            e.at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.actor,
            e.reason.as_deref().unwrap_or("")
        );
    }
}

pub fn print_formats(registry: &FormatRegistry) {
    for spec in registry.iter() {
        println!(
            "{:<22} {:<6} {:<28} {}",
            spec.id,
            spec.encoding.label(),
            spec.layout_summary(),
            spec.title
        );
    }
}

/// The JSON shape of `verify --json`.
pub fn facts_json(facts: &FileFacts) -> serde_json::Value {
    let business_key: serde_json::Map<String, serde_json::Value> = facts
        .business_key
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let totals: serde_json::Map<String, serde_json::Value> = facts
        .totals
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.to_string())))
        .collect();
    json!({
        "format": facts.format,
        "valid": facts.is_valid(),
        "records": facts.records,
        "size": facts.size,
        "checksum": facts.checksum_hex(),
        "fingerprint": facts.fingerprint_hex(),
        "business_key": business_key,
        "business_date": facts.business_date.map(|d| d.to_string()),
        "totals": totals,
        "drill_signals": facts.drill_signals,
        "error": facts.error,
    })
}

pub fn print_facts(name: &str, facts: &FileFacts) {
    match &facts.error {
        None => println!("valid: {} ({})", shown(name), facts.format),
        Some(e) => println!("invalid: {} ({}): {e}", shown(name), facts.format),
    }
    println!("  records        {}", facts.records);
    println!("  checksum       {}", facts.checksum_hex());
    if let Some(fp) = facts.fingerprint_hex() {
        println!("  fingerprint    {fp}");
    }
    if !facts.business_key.is_empty() {
        println!("  business key   {}", facts.business_key_text());
    }
    if facts.is_valid() && !facts.totals.is_empty() {
        let totals: Vec<String> = facts
            .totals
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  totals         {}", totals.join(" "));
    }
    if !facts.drill_signals.is_empty() {
        println!("  drill signals  {}", facts.drill_signals.join(" "));
    }
}

/// The JSON shape of a delivery (`deliveries --json`, `send --json`).
pub fn delivery_json(d: &DeliveryRow) -> serde_json::Value {
    json!({
        "id": d.id,
        "partner": d.partner,
        "endpoint": d.endpoint,
        "name": d.name,
        "source": d.source,
        "checksum": d.checksum,
        "size": d.size,
        "format": d.format,
        "fingerprint": d.fingerprint,
        "state": d.state,
        "attempts": d.attempts,
        "error": d.error,
        "remote_path": d.remote_path,
        "related_delivery_id": d.related_delivery_id,
        "reason": d.reason,
        "created_at": d.created_at.to_rfc3339(),
        "delivered_at": d.delivered_at.map(|t| t.to_rfc3339()),
        "collected_by": d.collected_by,
        "collected_from": d.collected_from,
        "acknowledged": d.acknowledged_at.is_some(),
        "acknowledged_at": d.acknowledged_at.map(|t| t.to_rfc3339()),
        "ack_file_id": d.ack_file_id,
    })
}

/// A delivery as text, after `send` or `resend`.
pub fn print_delivery(d: &DeliveryRow, related: Option<&DeliveryRow>, tz: chrono::FixedOffset) {
    let state = match (&d.state, &d.endpoint) {
        (crate::model::DeliveryState::Queued, None) => {
            "queued for collection from /outbox".to_string()
        }
        (s, _) => s.to_string(),
    };
    println!("delivery {}: {} ({state})", d.id, shown(&d.name));
    match (d.state, related) {
        (crate::model::DeliveryState::Duplicate, Some(r)) => println!(
            "  refused: the same bytes are delivery {} ({}, {} {}); only `settlegate resend {}` sends them again",
            r.id,
            shown(&r.name),
            r.state,
            r.created_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            r.id
        ),
        (_, Some(r)) => println!("  resend of delivery {}", r.id),
        _ => {}
    }
    println!("  partner        {}", d.partner);
    println!(
        "  endpoint       {}",
        d.endpoint
            .as_deref()
            .unwrap_or("(the partner collects it from /outbox)")
    );
    println!("  checksum       {}", d.checksum);
    if let Some(p) = &d.remote_path {
        println!("  remote path    {}", shown(p));
    }
    if let Some(e) = &d.error {
        println!("  error          {}", shown(e));
    }
    println!("  attempts       {}", d.attempts);
}
