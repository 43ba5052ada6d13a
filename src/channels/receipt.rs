//! Receipts: `<name>.verdict` files that tell whoever handed a file in what
//! became of it. Written durably (temp → fsync → rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::intake::Outcome;

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
