//! Arrival channels: thin adapters that find complete files and hand them to
//! the one intake path ([`crate::intake::Gateway`]).

pub mod receipt;
pub mod sftp_pull;
pub mod sftp_server;
pub mod ssh;
pub mod watch;

use crate::config::Partner;
use crate::format::FormatRegistry;
use crate::intake::choose_format;

/// A control file (sidecar) of one of the partner's formats, by suffix,
/// ignoring case: never taken alone.
pub fn is_control_file(formats: &FormatRegistry, partner: &Partner, name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    partner
        .formats
        .iter()
        .filter_map(|f| formats.get(f))
        .filter_map(|s| s.sidecar.as_ref())
        .any(|c| lower.ends_with(&c.suffix.to_ascii_lowercase()))
}

/// Pair ready data files with their control files. Control files are never
/// taken alone; a data file whose format needs one waits until it is ready.
/// Returns the pairs and the data files still waiting for their control file.
pub fn pair_sidecars(
    formats: &FormatRegistry,
    partner: &Partner,
    ready: &[String],
) -> (Vec<(String, Option<String>)>, Vec<String>) {
    let mut waiting = Vec::new();
    let mut out = Vec::new();
    for name in ready {
        if is_control_file(formats, partner, name) {
            continue;
        }
        let wanted = choose_format(formats, partner, name)
            .ok()
            .and_then(|spec| spec.sidecar_name(name));
        match wanted {
            // Partners differ in the case of suffixes: `X.CSV` + `X.CTL`.
            Some(w) => {
                // The control file may not have arrived or settled yet: then wait.
                match ready.iter().find(|r| r.eq_ignore_ascii_case(&w)) {
                    Some(s) => out.push((name.clone(), Some(s.clone()))),
                    None => waiting.push(name.clone()),
                }
            }
            None => out.push((name.clone(), None)),
        }
    }
    (out, waiting)
}
