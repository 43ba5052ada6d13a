//! The sidecar control file (`.ctl`): `key=value` lines whose counts, sums
//! and checksum must agree with what the data file gave. Checked once the
//! data file's pass is over and valid.

use super::super::codec;
use super::super::spec::{FormatSpec, Measure};
use super::{FileContext, FileFacts, VerifyError};

/// Compare the sidecar control file with what the data file gave.
pub(super) fn check_sidecar(
    spec: &FormatSpec,
    ctx: &FileContext<'_>,
    facts: &FileFacts,
) -> Option<VerifyError> {
    spec.sidecar.as_ref()?;
    let name = spec.sidecar_name(ctx.name).unwrap_or_default();
    let err = |field: Option<&str>, message: String| {
        Some(VerifyError {
            record: None,
            offset: None,
            field: field.map(str::to_string),
            message: format!("control file {name}: {message}"),
        })
    };
    let bytes = ctx.sidecar?;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return err(None, "is not valid UTF-8".into());
    };
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return err(
                None,
                format!("line {}: expected key=value, found {line:?}", n + 1),
            );
        };
        let (k, v) = (k.trim(), v.trim());
        if !spec.controls.iter().any(|c| c.name == k) {
            return err(Some(k), format!("line {}: unknown key {k:?}", n + 1));
        }
        if seen.iter().any(|(s, _)| *s == k) {
            return err(Some(k), format!("line {}: key {k:?} given twice", n + 1));
        }
        seen.push((k, v));
    }
    for c in &spec.controls {
        let Some((_, stated)) = seen.iter().find(|(k, _)| *k == c.name) else {
            return err(Some(&c.name), format!("has no {}= line", c.name));
        };
        let computed = match c.measure {
            Measure::Checksum => {
                let actual = facts.checksum_hex();
                if !stated.eq_ignore_ascii_case(&actual) {
                    return err(
                        Some(&c.name),
                        format!(
                            "{} says {stated}, the data file's SHA-256 is {actual}",
                            c.name
                        ),
                    );
                }
                continue;
            }
            _ => facts
                .totals
                .iter()
                .find(|(n, _)| *n == c.name)
                .map(|(_, v)| *v)?,
        };
        match codec::parse_decimal(stated) {
            Ok(v) if v == computed => {}
            Ok(_) | Err(_) => {
                return err(
                    Some(&c.name),
                    format!("{} says {stated}, the data file gives {computed}", c.name),
                );
            }
        }
    }
    None
}
