//! Receipts: `<name>.verdict` files that tell whoever handed a file in what
//! became of it. Written durably (temp → fsync → rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::intake::{Arrival, Outcome, Recovery};

/// Where a partner's receipts go: `<data-dir>/receipts/<partner>/`, whichever
/// channel the file came by.
pub fn dir(data_dir: &Path, partner: &str) -> PathBuf {
    data_dir.join("receipts").join(partner)
}

/// Receipts for the files a recovery judged: a partner who handed a file in
/// before a crash learns its verdict as if it had been judged at once.
/// Manual ingests answer the operator instead. Returns the receipts that
/// could not be written.
pub fn write_recovered(data_dir: &Path, recovery: &Recovery) -> Vec<(i64, std::io::Error)> {
    let mut failed = Vec::new();
    for (arrival, out) in &recovery.outcomes {
        if !answers_with_receipts(arrival) {
            continue;
        }
        match write(&dir(data_dir, &arrival.partner), &arrival.name, out) {
            Ok(path) => {
                tracing::info!(file_id = out.file_id, receipt = %path.display(), "receipt for a recovered file");
            }
            Err(e) => failed.push((out.file_id, e)),
        }
    }
    failed
}

fn answers_with_receipts(arrival: &Arrival) -> bool {
    arrival.channel != "manual"
}

/// The receipt's text: `key=value` lines.
pub fn render(name: &str, out: &Outcome) -> String {
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    let mut text = String::new();
    text.push_str(&format!("name={}\n", one_line(name)));
    text.push_str(&format!("verdict={}\n", out.verdict));
    text.push_str(&format!("reason={}\n", one_line(&out.reason)));
    text.push_str(&format!("checksum={}\n", out.checksum));
    text.push_str(&format!("file_id={}\n", out.file_id));
    if let Some(r) = out.related_file_id {
        text.push_str(&format!("related_file_id={r}\n"));
    }
    text
}

/// Write `<dir>/<name>.verdict` durably; returns its path.
pub fn write(dir: &Path, name: &str, out: &Outcome) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.verdict"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".receipt-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(render(name, out).as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}
