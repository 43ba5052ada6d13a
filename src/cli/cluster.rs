//! Commands for several nodes on one ledger: `nodes` (who is alive, which
//! leases each holds) and `store migrate` (a directory store moved into
//! the ledger's database).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::CliError;
use super::render::shown;
use crate::intake::Gateway;
use crate::ledger::{LeaseRow, NodeRow};
use crate::model::Exit;
use crate::stage::ContentStore;

fn at(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// `settlegate nodes [--json]`: nodes heard of within three lease times,
/// and the leases each holds now.
pub async fn nodes(gw: &Gateway, json: bool) -> Result<Exit, CliError> {
    let within = i64::try_from(gw.config.lease.as_millis() * 3).unwrap_or(90_000);
    let (nodes, now) = gw.ledger.live_nodes(within).await?;
    let leases = gw.ledger.held_leases().await?;
    let held_by = |n: &NodeRow| -> Vec<&LeaseRow> {
        leases
            .iter()
            .filter(|l| l.holder == n.node && !l.name.starts_with("judge:"))
            .collect()
    };
    if json {
        let v: Vec<_> = nodes
            .iter()
            .map(|n| {
                json!({
                    "node": n.node,
                    "host": n.host,
                    "version": n.version,
                    "started": at(n.started_ms),
                    "last_heartbeat": at(n.heartbeat_ms),
                    "heartbeat_age_ms": now - n.heartbeat_ms,
                    "leases": held_by(n).iter().map(|l| json!({
                        "name": l.name,
                        "generation": l.generation,
                        "since": at(l.acquired_ms),
                        "expires": at(l.expires_ms),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({ "nodes": v }));
        return Ok(Exit::Ok);
    }
    if nodes.is_empty() {
        println!("no live node");
        return Ok(Exit::Ok);
    }
    for n in &nodes {
        println!(
            "{}  host {}  version {}  started {}  last heartbeat {} ({} ms ago)",
            shown(&n.node),
            shown(&n.host),
            shown(&n.version),
            at(n.started_ms),
            at(n.heartbeat_ms),
            now - n.heartbeat_ms
        );
        for l in held_by(n) {
            println!(
                "    lease {}  generation {}  since {}  expires {}",
                shown(&l.name),
                l.generation,
                at(l.acquired_ms),
                at(l.expires_ms)
            );
        }
    }
    Ok(Exit::Ok)
}

/// What `store migrate` did.
#[derive(Debug, Default)]
struct Moved {
    copied: u64,
    already: u64,
    bytes: u64,
    damaged: Vec<String>,
}

/// `settlegate store migrate --to postgres [--from DIR]`: copy every blob
/// of a directory store into the ledger's database. Each blob goes in one
/// transaction and one already there is skipped, so running it again (after
/// an interruption, or while nodes still write the directory) finishes the
/// job. A blob whose bytes no longer match its name is reported, not copied.
pub async fn store_migrate(gw: &Gateway, from: &Path, json: bool) -> Result<Exit, CliError> {
    let url = gw
        .config
        .ledger
        .clone()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
        .ok_or_else(|| {
            CliError::Usage(
                "store migrate --to postgres needs a PostgreSQL ledger (--ledger postgres://…)"
                    .into(),
            )
        })?;
    if !from.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a content store directory",
            from.display()
        )));
    }
    let target = ContentStore::open_database(&gw.config.data_dir.join("store"), &url)
        .await
        .map_err(|e| CliError::Intake(e.into()))?;
    let from = from.to_path_buf();
    let moved = tokio::task::spawn_blocking(move || copy_all(&from, &target))
        .await
        .map_err(|e| CliError::Io {
            context: "store migrate".into(),
            source: std::io::Error::other(e),
        })??;
    if json {
        println!(
            "{}",
            json!({
                "copied": moved.copied,
                "already": moved.already,
                "bytes": moved.bytes,
                "damaged": moved.damaged,
            })
        );
    } else {
        println!(
            "{} blob(s) copied ({} bytes), {} already in the database",
            moved.copied, moved.bytes, moved.already
        );
        for d in &moved.damaged {
            println!("damaged, not copied: {}", shown(d));
        }
    }
    Ok(if moved.damaged.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    })
}

fn copy_all(from: &Path, target: &ContentStore) -> Result<Moved, CliError> {
    let io = |context: String| move |source| CliError::Io { context, source };
    let mut moved = Moved::default();
    let mut shards: Vec<_> = std::fs::read_dir(from)
        .map_err(io(format!("read {}", from.display())))?
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() == 2 && n.chars().all(|c| c.is_ascii_hexdigit())
        })
        .map(|e| e.path())
        .collect();
    shards.sort();
    for shard in shards {
        let mut blobs: Vec<_> = std::fs::read_dir(&shard)
            .map_err(io(format!("read {}", shard.display())))?
            .flatten()
            .map(|e| e.path())
            .collect();
        blobs.sort();
        for path in blobs {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if name.len() != 64 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            if target
                .size_of(&name)
                .map_err(|e| CliError::Intake(e.into()))?
                .is_some()
            {
                moved.already += 1;
                continue;
            }
            let stored = target
                .put_file(&path)
                .map_err(|e| CliError::Intake(e.into()))?;
            if stored.checksum != name {
                // Stored under the checksum of what is there now; the
                // recorded checksum stays missing and is reported.
                moved.damaged.push(path.display().to_string());
                continue;
            }
            moved.copied += 1;
            moved.bytes += stored.size;
        }
    }
    Ok(moved)
}
