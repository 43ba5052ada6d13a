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

/// Longest file name a file system takes (bytes).
const NAME_MAX: usize = 255;

/// The receipt's file name: `<name>.verdict` (see [`fitting_name`]).
pub fn file_name(name: &str) -> String {
    fitting_name(name, ".verdict")
}

/// `<name><suffix>`; a name too long for that keeps its first bytes, then
/// `~` and 16 hex digits of the SHA-256 of the whole name, so it fits in 255
/// bytes and stays unique.
pub fn fitting_name(name: &str, suffix: &str) -> String {
    if name.len() + suffix.len() <= NAME_MAX {
        return format!("{name}{suffix}");
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let mut end = NAME_MAX.saturating_sub(suffix.len() + 1 + 16);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{}{suffix}", &name[..end], &digest[..16])
}

/// Write the receipt in `dir` durably, readable as `mode` says; returns its path.
pub fn write(dir: &Path, row: &FileRow, mode: u32) -> std::io::Result<PathBuf> {
    write_text(&dir.join(file_name(&row.name)), &render(row), mode)
}

/// Write a small text file durably (temp → fsync → rename → fsync of the
/// directory) with the file mode `mode`.
pub fn write_text(path: &Path, text: &str, mode: u32) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".receipt-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_names_always_fit() {
        assert_eq!(file_name("a.dat"), "a.dat.verdict");
        let fits = "x".repeat(247);
        assert_eq!(file_name(&fits), format!("{fits}.verdict"));
        for long in ["y".repeat(248), "z".repeat(255), "정산".repeat(60)] {
            let n = file_name(&long);
            assert!(n.len() <= 255, "{} bytes", n.len());
            assert!(n.ends_with(".verdict") && n.contains('~'), "{n}");
            assert!(long.starts_with(n.split('~').next().unwrap_or("")));
        }
        // Two long names differing only at the end get two receipts.
        let (a, b) = (
            format!("{}a", "q".repeat(260)),
            format!("{}b", "q".repeat(260)),
        );
        assert_ne!(file_name(&a), file_name(&b));
    }
}
