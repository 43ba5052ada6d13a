//! Receipts: `<name>.verdict` files that tell whoever handed a file in by a
//! channel (watched folder, SFTP push or pull) what became of it, written
//! from the ledger's row, durably (temp → fsync → rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ledger::FileRow;

/// Where a partner's receipts go: `<data-dir>/receipts/<partner>/`, whichever
/// channel the file came by.
pub fn dir(data_dir: &Path, partner: &str) -> PathBuf {
    data_dir.join("receipts").join(partner)
}

/// The receipt's text: `key=value` lines.
pub fn render(row: &FileRow) -> String {
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    let mut text = String::new();
    text.push_str(&format!("name={}\n", one_line(&row.name)));
    text.push_str(&format!("verdict={}\n", row.state));
    text.push_str(&format!(
        "reason={}\n",
        one_line(row.reason.as_deref().unwrap_or(""))
    ));
    text.push_str(&format!("checksum={}\n", row.checksum));
    text.push_str(&format!("file_id={}\n", row.id));
    if let Some(r) = row.related_file_id {
        text.push_str(&format!("related_file_id={r}\n"));
    }
    text
}

/// Write `<dir>/<name>.verdict` durably; returns its path.
pub fn write(dir: &Path, row: &FileRow) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.verdict", row.name));
    let mut tmp = tempfile::Builder::new()
        .prefix(".receipt-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(render(row).as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}
