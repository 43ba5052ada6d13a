//! Identify: which of a partner's formats a file is, and which control file
//! (sidecar, e.g. `.ctl`) belongs to which data file. Every channel and the
//! command line decide these here, so a file is identified the same way
//! whichever way it came. Pure: names in, decisions out.

use std::path::{Path, PathBuf};

use crate::config::Partner;
use crate::format::{FormatRegistry, FormatSpec};

/// Why a file name does not pick one of the partner's formats.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unidentified {
    #[error("file name {name:?} matches none of partner {partner}'s formats ({formats})")]
    NoFormat {
        name: String,
        partner: String,
        formats: String,
    },
    #[error("file name {name:?} matches several of partner {partner}'s formats")]
    SeveralFormats { name: String, partner: String },
}

/// The formats a partner exchanges in one direction: those it sends
/// (`formats`) or those settlegate sends it (`outbound_formats`).
#[derive(Debug, Clone, Copy)]
pub struct Formats<'r, 'p> {
    pub registry: &'r FormatRegistry,
    pub partner: &'p str,
    pub ids: &'p [String],
}

impl<'r, 'p> Formats<'r, 'p> {
    /// What the partner sends settlegate.
    pub fn inbound(registry: &'r FormatRegistry, partner: &'p Partner) -> Formats<'r, 'p> {
        Formats {
            registry,
            partner: &partner.id,
            ids: &partner.formats,
        }
    }

    /// What settlegate sends the partner.
    pub fn outbound(registry: &'r FormatRegistry, partner: &'p Partner) -> Formats<'r, 'p> {
        Formats {
            registry,
            partner: &partner.id,
            ids: &partner.outbound_formats,
        }
    }

    fn specs(&self) -> impl Iterator<Item = &'r FormatSpec> + '_ {
        self.ids.iter().filter_map(|f| self.registry.get(f))
    }

    /// The format for this file name: the only one, or the one whose
    /// file-name pattern matches.
    pub fn choose(&self, name: &str) -> Result<&'r FormatSpec, Unidentified> {
        let specs: Vec<&FormatSpec> = self.specs().collect();
        if let [only] = specs.as_slice() {
            return Ok(only);
        }
        let matching: Vec<&&FormatSpec> = specs
            .iter()
            .filter(|s| {
                s.file_name
                    .as_ref()
                    .is_some_and(|n| n.pattern.is_match(name))
            })
            .collect();
        match matching.as_slice() {
            [one] => Ok(one),
            [] => Err(Unidentified::NoFormat {
                name: name.to_string(),
                partner: self.partner.to_string(),
                formats: self.ids.join(", "),
            }),
            _ => Err(Unidentified::SeveralFormats {
                name: name.to_string(),
                partner: self.partner.to_string(),
            }),
        }
    }

    /// A control file (sidecar) of one of these formats, by suffix, ignoring
    /// case: never taken alone.
    pub fn is_control_file(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        self.specs()
            .filter_map(|s| s.sidecar.as_ref())
            .any(|c| lower.ends_with(&c.suffix.to_ascii_lowercase()))
    }

    /// The control file a data file needs, when its format has one.
    pub fn control_file_name(&self, data: &str) -> Option<String> {
        self.choose(data)
            .ok()
            .and_then(|spec| spec.sidecar_name(data))
    }

    /// Whether `control` is the control file of `data` (partners differ in
    /// the case of suffixes: `X.CSV` + `X.CTL`).
    pub fn controls(&self, data: &str, control: &str) -> bool {
        self.control_file_name(data)
            .is_some_and(|w| w.eq_ignore_ascii_case(control))
    }

    /// Pair ready data files with their control files. Control files are
    /// never taken alone; a data file whose format needs one waits until it
    /// is ready.
    pub fn pair(&self, ready: &[String]) -> Pairing {
        let mut out = Pairing::default();
        for name in ready {
            if self.is_control_file(name) {
                continue;
            }
            match self.control_file_name(name) {
                Some(w) => match ready.iter().find(|r| r.eq_ignore_ascii_case(&w)) {
                    Some(s) => out.pairs.push((name.clone(), Some(s.clone()))),
                    // Not arrived or not settled yet: wait.
                    None => out.waiting.push(name.clone()),
                },
                None => out.pairs.push((name.clone(), None)),
            }
        }
        out
    }
}

/// The partner's inbound format for this file name.
pub fn choose_format<'r>(
    formats: &'r FormatRegistry,
    partner: &Partner,
    name: &str,
) -> Result<&'r FormatSpec, Unidentified> {
    Formats::inbound(formats, partner).choose(name)
}

/// A control file of one of the partner's inbound formats.
pub fn is_control_file(formats: &FormatRegistry, partner: &Partner, name: &str) -> bool {
    Formats::inbound(formats, partner).is_control_file(name)
}

/// The control file an inbound data file needs, when its format has one.
pub fn control_file_name(
    formats: &FormatRegistry,
    partner: &Partner,
    data: &str,
) -> Option<String> {
    Formats::inbound(formats, partner).control_file_name(data)
}

/// Whether `control` is the control file of the inbound `data`.
pub fn controls(formats: &FormatRegistry, partner: &Partner, data: &str, control: &str) -> bool {
    Formats::inbound(formats, partner).controls(data, control)
}

/// Data files paired with their control files, and the data files still
/// waiting for theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairing {
    /// Each data file ready to take, with its control file when it has one.
    pub pairs: Vec<(String, Option<String>)>,
    /// Data files whose format needs a control file that is not there yet.
    pub waiting: Vec<String>,
}

/// Pair ready inbound data files with their control files.
pub fn pair(formats: &FormatRegistry, partner: &Partner, ready: &[String]) -> Pairing {
    Formats::inbound(formats, partner).pair(ready)
}

/// The control file beside a data file on disk, when its format has one and
/// it is there: the exact name first, then one differing only in case.
pub fn control_file_beside(spec: &FormatSpec, data: &Path) -> Option<PathBuf> {
    let name = data.file_name()?.to_str()?;
    let wanted = spec.sidecar_name(name)?;
    let exact = data.with_file_name(&wanted);
    if exact.is_file() {
        return Some(exact);
    }
    let dir = match data.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name().into_string().ok()?;
        (n.eq_ignore_ascii_case(&wanted) && e.path().is_file()).then(|| e.path())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (FormatRegistry, Partner) {
        let formats =
            FormatRegistry::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("formats"))
                .expect("formats");
        let partner = Partner::for_tests("pgco", &["pg-settlement-csv"]);
        (formats, partner)
    }

    #[test]
    fn pairs_ignore_case_and_wait_for_the_control_file() {
        let (formats, p) = setup();
        let ready: Vec<String> = [
            "PGSTL_PG01_20261121_01.csv",
            "PGSTL_PG01_20261121_01.CTL",
            "PGSTL_PG01_20261122_01.csv",
            "PGSTL_PG01_20261123_01.ctl",
        ]
        .map(String::from)
        .to_vec();
        let p = pair(&formats, &p, &ready);
        assert_eq!(
            p.pairs,
            vec![(
                "PGSTL_PG01_20261121_01.csv".to_string(),
                Some("PGSTL_PG01_20261121_01.CTL".to_string())
            )]
        );
        assert_eq!(p.waiting, vec!["PGSTL_PG01_20261122_01.csv".to_string()]);
    }

    #[test]
    fn a_control_file_beside_is_found_in_any_case() {
        let (formats, _) = setup();
        let spec = formats.get("pg-settlement-csv").expect("spec");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("PGSTL_PG01_20261121_01.csv");
        std::fs::write(&data, b"x").expect("write");
        assert_eq!(control_file_beside(spec, &data), None);
        std::fs::write(dir.path().join("PGSTL_PG01_20261121_01.CTL"), b"c").expect("write");
        assert_eq!(
            control_file_beside(spec, &data),
            Some(dir.path().join("PGSTL_PG01_20261121_01.CTL"))
        );
    }

    #[test]
    fn several_formats_are_told_apart_by_name() {
        let (formats, _) = setup();
        let p = Partner::for_tests("multi", &["card-settlement", "bank-transfer-result"]);
        assert_eq!(
            choose_format(&formats, &p, "CSTL_031_20261121_0001.dat").map(|s| s.id.as_str()),
            Ok("card-settlement")
        );
        let e = choose_format(&formats, &p, "other.dat").unwrap_err();
        assert!(e.to_string().contains("matches none"), "{e}");
    }
}
