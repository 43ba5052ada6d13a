//! What a pass over a file yields: its facts (checksum, fingerprint, keys,
//! totals, drill signals), the first error with where it is, and each
//! accepted data record as handed to a [`RecordSink`]. These are the
//! verifier's whole public vocabulary; the rest of the engine fills them.

use std::ops::ControlFlow;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::super::rules::RecordRef;

/// Why a file is invalid: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyError {
    /// 1-based record number (fixed: the header is record 1; CSV: the first
    /// data row is record 1, the header row is 0). `None` for whole-file
    /// problems such as the control file.
    pub record: Option<u64>,
    /// Byte offset in the file of the field (fixed) or row (CSV).
    pub offset: Option<u64>,
    /// The field or column, when the error is about one.
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for VerifyError {
    /// `record 1043 (byte 208600), field fee_amount: expected digits, found "1,2"`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut place = Vec::with_capacity(2);
        match (self.record, self.offset) {
            (Some(r), Some(o)) => place.push(format!("record {r} (byte {o})")),
            (Some(r), None) => place.push(format!("record {r}")),
            (None, Some(o)) => place.push(format!("byte {o}")),
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            place.push(format!("field {field}"));
        }
        if place.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", place.join(", "), self.message)
        }
    }
}

/// What one pass over a file establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub format: String,
    /// SHA-256 of the raw bytes (always computed, whatever else fails).
    pub checksum: [u8; 32],
    pub size: u64,
    /// Data records (CSV: data rows) read and accepted.
    pub records: u64,
    /// Content fingerprint; `None` when the file is invalid.
    pub fingerprint: Option<[u8; 32]>,
    /// Business key fields in spec order, canonical text.
    pub business_key: Vec<(String, String)>,
    pub business_date: Option<NaiveDate>,
    /// Control totals recomputed from the data records (name → value).
    pub totals: Vec<(String, Decimal)>,
    /// Drill signals found in the content, e.g. `run_mode=D`.
    pub drill_signals: Vec<String>,
    /// The first error; `None` when the file is valid.
    pub error: Option<VerifyError>,
}

impl FileFacts {
    /// Facts of a file that could not be verified at all (no format matches).
    pub fn failed(size: u64, message: String) -> FileFacts {
        FileFacts {
            format: String::new(),
            checksum: [0; 32],
            size,
            records: 0,
            fingerprint: None,
            business_key: Vec::new(),
            business_date: None,
            totals: Vec::new(),
            drill_signals: Vec::new(),
            error: Some(VerifyError {
                record: None,
                offset: None,
                field: None,
                message,
            }),
        }
    }

    pub fn is_valid(&self) -> bool {
        self.error.is_none()
    }

    pub fn checksum_hex(&self) -> String {
        hex::encode(self.checksum)
    }

    pub fn fingerprint_hex(&self) -> Option<String> {
        self.fingerprint.map(hex::encode)
    }

    /// The business key as one string: `field=value` pairs joined by `;`.
    pub fn business_key_text(&self) -> String {
        self.business_key
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// One accepted data record, as handed to a [`RecordSink`].
pub struct DataRecord<'a> {
    /// Record number as in errors.
    pub number: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// The record key: key fields' canonical values joined by `|`.
    pub record_key: &'a str,
    /// The settlement amount fed for this record.
    pub amount: Decimal,
    pub(super) rec: RecordRef<'a>,
}

impl DataRecord<'_> {
    /// Field name → trimmed decoded text, in spec order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rec
            .def
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), self.rec.text(i)))
    }

    /// The record's fields as a JSON object (kept with each settlement
    /// entry). Written directly: this runs once per fed record.
    pub fn fields_json(&self) -> String {
        let mut out = String::with_capacity(self.rec.buf.len() + 24 * self.rec.def.fields.len());
        out.push('{');
        for (i, (k, v)) in self.fields().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, k);
            out.push(':');
            push_json_str(&mut out, v);
        }
        out.push('}');
        out
    }
}

/// Append `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Runs of characters that need no escape are copied whole (every byte
    // that needs one is ASCII, so the cuts fall on character boundaries).
    let mut rest = s;
    while let Some(at) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)
    {
        out.push_str(&rest[..at]);
        match rest.as_bytes()[at] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b => out.push_str(&format!("\\u{b:04x}")),
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Receives each accepted data record, in file order. Returning `Break` stops
/// the pass (the facts then carry an error saying so).
pub trait RecordSink {
    fn record(&mut self, record: &DataRecord<'_>) -> ControlFlow<()>;

    /// Whether this sink looks at records at all; when not, the pass skips
    /// building record keys.
    fn wants_records(&self) -> bool {
        true
    }
}

/// The sink that keeps nothing (plain verification).
impl RecordSink for () {
    fn record(&mut self, _: &DataRecord<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    fn wants_records(&self) -> bool {
        false
    }
}

impl<F: FnMut(&DataRecord<'_>) -> ControlFlow<()>> RecordSink for F {
    fn record(&mut self, record: &DataRecord<'_>) -> ControlFlow<()> {
        self(record)
    }
}

/// What the verifier needs to know besides the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileContext<'a> {
    /// The file's original name (the file-name pattern and rules use it).
    pub name: &'a str,
    /// The sidecar control file's bytes, when one was found.
    pub sidecar: Option<&'a [u8]>,
}
