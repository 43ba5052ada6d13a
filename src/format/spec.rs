//! Format specs: the declarative description of a partner layout, loaded from
//! `formats/*.toml` and compiled into a [`FormatSpec`] before any file is read.
//!
//! Loading is parse → validate → build: every mistake in a spec (overlapping or
//! uncovered bytes, a key naming a missing field, an unknown type, a rule that
//! does not parse) is refused here, with the spec file and the field named, so
//! the verifier can trust what it is given.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use super::codec::Encoding;
use super::rules::{Condition, Rule};

/// A spec that could not be loaded; names the spec file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read format spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("format spec {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("format spec {path}: {context}: {message}")]
    Invalid {
        path: PathBuf,
        context: String,
        message: String,
    },
    #[error("formats directory {path}: {message}")]
    Directory { path: PathBuf, message: String },
}

impl SpecError {
    /// The spec file (or the directory) the problem is in.
    pub fn path(&self) -> &Path {
        match self {
            SpecError::Read { path, .. }
            | SpecError::Parse { path, .. }
            | SpecError::Invalid { path, .. }
            | SpecError::Directory { path, .. } => path,
        }
    }

    /// The key in the spec, when one is named.
    pub fn context(&self) -> Option<&str> {
        match self {
            SpecError::Invalid { context, .. } => Some(context),
            _ => None,
        }
    }

    /// What is wrong, without the file and key.
    pub fn message(&self) -> String {
        match self {
            SpecError::Read { source, .. } => format!("cannot read: {source}"),
            SpecError::Parse { message, .. }
            | SpecError::Invalid { message, .. }
            | SpecError::Directory { message, .. } => message.clone(),
        }
    }
}

/// How records are laid out in the file: exactly one of the two, with its
/// details, so a spec cannot be both or neither.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Fixed-width records sliced by byte offsets.
    Fixed(FixedLayout),
    /// Delimited rows parsed with RFC 4180 quoting.
    Csv(CsvLayout),
}

impl Layout {
    /// Every record definition, in the order records are indexed by (a
    /// fixed layout's `records`; the CSV row alone).
    pub fn record_defs(&self) -> &[RecordDef] {
        match self {
            Layout::Fixed(f) => &f.records,
            Layout::Csv(c) => std::slice::from_ref(&c.row),
        }
    }
}

/// The `layout` key of a spec file, before its details are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LayoutKind {
    Fixed,
    Csv,
}

/// What follows each fixed-width record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Terminator {
    /// No terminator: the file is one run of records (its size a multiple of the length).
    None,
    /// CRLF or LF after each record (the last one may end at end of file).
    Line,
}

/// The type of a field, as FORMATS.md names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FieldType {
    /// `A`: text, left-aligned, padded on the right with spaces or U+3000.
    #[serde(rename = "A")]
    Text,
    /// `N`: unsigned integer, zero-padded, digits only.
    #[serde(rename = "N")]
    Digits,
    /// `D`: date `YYYYMMDD`.
    #[serde(rename = "D")]
    Date,
    /// `T`: date-time `YYYYMMDDHHMMSS`.
    #[serde(rename = "T")]
    DateTime,
    /// `S`: sign, `+` or `-`.
    #[serde(rename = "S")]
    Sign,
    /// `date-iso`: date `YYYY-MM-DD` (CSV layouts).
    #[serde(rename = "date-iso")]
    IsoDate,
    /// `decimal`: signed decimal number with a bounded scale (CSV layouts).
    #[serde(rename = "decimal")]
    Decimal,
}

impl FieldType {
    /// Whether values of this type are numbers (usable in sums and arithmetic rules).
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Digits | FieldType::Decimal)
    }
}

/// Which part of the file a record type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Header,
    Data,
    Trailer,
}

// ---------------------------------------------------------------------------
// Raw (serde) shapes. `deny_unknown_fields` so a typo in a spec is an error,
// never a silently ignored setting.
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    id: String,
    #[serde(default)]
    title: String,
    layout: LayoutKind,
    encoding: String,
    record_length: Option<usize>,
    terminator: Option<Terminator>,
    business_date: String,
    file_name: Option<RawFileName>,
    record_type: Option<RawSlice>,
    #[serde(default)]
    records: Vec<RawRecord>,
    csv: Option<RawCsv>,
    sidecar: Option<RawSidecar>,
    #[serde(default)]
    controls: Vec<RawControl>,
    /// A file of this format acknowledges the delivery (of the named
    /// outbound format) with the same business key: e.g. a bank's transfer
    /// results acknowledge our transfer request.
    acknowledges: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlice {
    offset: usize,
    len: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileName {
    pattern: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    fields: Vec<RawField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    code: String,
    role: Role,
    fields: Vec<RawField>,
    amount: Option<RawAmount>,
    #[serde(default)]
    rules: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCsv {
    #[serde(default = "default_delimiter")]
    delimiter: char,
    #[serde(default = "default_true")]
    header: bool,
    columns: Vec<RawField>,
    amount: Option<RawAmount>,
    #[serde(default)]
    rules: Vec<String>,
}

fn default_delimiter() -> char {
    ','
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    suffix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmount {
    field: String,
    when: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    name: String,
    #[serde(default)]
    count: bool,
    sum: Option<String>,
    #[serde(default)]
    checksum: bool,
    when: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    offset: Option<usize>,
    len: Option<usize>,
    #[serde(rename = "type")]
    ty: FieldType,
    #[serde(default)]
    key: bool,
    #[serde(default)]
    record_key: bool,
    #[serde(default)]
    volatile: bool,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    sequence: bool,
    values: Option<Vec<String>>,
    drill_unless: Option<Vec<String>>,
    sign: Option<String>,
    scale_by: Option<String>,
    scales: Option<BTreeMap<String, u32>>,
    max_scale: Option<u32>,
}

// ---------------------------------------------------------------------------
// Compiled shapes: what the verifier uses.
// ---------------------------------------------------------------------------

/// A compiled, validated format spec.
#[derive(Debug, Clone)]
pub struct FormatSpec {
    /// Stable identifier (`card-settlement`); part of every fingerprint.
    pub id: String,
    /// One-line description for `settlegate formats`.
    pub title: String,
    /// Where the spec was loaded from, for messages.
    pub source: PathBuf,
    /// Fixed-width or CSV, with the record definitions.
    pub layout: Layout,
    pub encoding: Encoding,
    /// The file-name rule; captures may supply key fields.
    pub file_name: Option<FileNameRule>,
    /// Where the business date comes from.
    pub business_date: FieldRef,
    /// Control totals (trailer fields or sidecar keys) recomputed from the data.
    pub controls: Vec<Control>,
    /// The sidecar control file, for layouts that have one.
    pub sidecar: Option<Sidecar>,
    /// The outbound format whose deliveries a file of this format
    /// acknowledges, matched by business key.
    pub acknowledges: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FixedLayout {
    pub record_length: usize,
    pub terminator: Terminator,
    /// Where the record type code sits in every record.
    pub type_offset: usize,
    pub type_len: usize,
    /// Record definitions; exactly one header and one trailer, one or more data.
    pub records: Vec<RecordDef>,
}

#[derive(Debug, Clone)]
pub struct CsvLayout {
    pub delimiter: u8,
    pub header: bool,
    /// The data row, as a record definition whose fields are the columns.
    pub row: RecordDef,
}

#[derive(Debug, Clone)]
pub struct FileNameRule {
    pub pattern: Regex,
    /// A name that does not match is an error (the key comes from the name).
    pub required: bool,
    /// Typed captures; a record definition with role `Header`.
    pub fields: RecordDef,
}

#[derive(Debug, Clone)]
pub struct Sidecar {
    /// Suffix replacing the data file's extension (`.ctl`).
    pub suffix: String,
}

/// A record type: its code, role and fields.
#[derive(Debug, Clone)]
pub struct RecordDef {
    pub code: Vec<u8>,
    pub role: Role,
    pub fields: Vec<FieldDef>,
    /// For data records: the settlement amount fed for the record.
    pub amount: Option<AmountRule>,
    /// Per-record checks.
    pub rules: Vec<Rule>,
    /// Index of the field that must count 1, 2, 3… in file order.
    pub sequence: Option<usize>,
    /// Some field carries `drill_unless` (saves a per-record scan when none does).
    pub has_drill_flags: bool,
    /// Some decimal field has a scale rule.
    pub has_scale_rules: bool,
}

impl RecordDef {
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: String,
    /// Byte offset within the record (fixed layouts only).
    pub offset: usize,
    /// Byte length (fixed layouts only).
    pub len: usize,
    pub ty: FieldType,
    /// Part of the business key.
    pub key: bool,
    /// Part of the record key.
    pub record_key: bool,
    /// Left out of the content fingerprint.
    pub volatile: bool,
    /// An empty value is an error.
    pub required: bool,
    /// Allowed values (after trimming), if restricted.
    pub values: Option<Vec<String>>,
    /// A drill signal when the value is not one of these.
    pub drill_unless: Option<Vec<String>>,
    /// Index of the `S` field in the same record that signs this number.
    pub sign: Option<usize>,
    /// Scale rule for decimals.
    pub scale: ScaleRule,
}

#[derive(Debug, Clone)]
pub enum ScaleRule {
    /// Any scale (or not a decimal).
    Any,
    /// At most this many decimal places.
    Max(u32),
    /// The scale allowed depends on another field's value (e.g. currency).
    By {
        field: usize,
        scales: BTreeMap<String, u32>,
    },
}

#[derive(Debug, Clone)]
pub struct AmountRule {
    /// The numeric field whose (signed) value is fed.
    pub field: usize,
    /// When present and false for a record, the amount fed is 0.
    pub when: Option<Condition>,
}

/// Where a named field lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef {
    /// A field of the header record.
    Header(usize),
    /// A capture of the file name.
    Name(usize),
}

#[derive(Debug, Clone)]
pub struct Control {
    /// The trailer field (fixed) or the sidecar key (CSV) holding the expected value.
    pub name: String,
    pub measure: Measure,
    /// By record definition (see [`FormatSpec::record_defs`]): the control
    /// as that record type meets it, resolved against its own fields; `None`
    /// for records that are not data.
    pub on: Vec<Option<ControlOn>>,
    /// Index of the trailer field (fixed layouts).
    pub trailer_field: Option<usize>,
}

impl Control {
    /// The control as record definition `def` meets it (`None`: not a data record).
    pub fn on(&self, def: usize) -> Option<&ControlOn> {
        self.on.get(def).and_then(Option::as_ref)
    }
}

/// A control as one data record type meets it.
#[derive(Debug, Clone)]
pub struct ControlOn {
    /// The summed field (`Measure::Sum`).
    pub field: Option<usize>,
    /// Only records meeting this condition count.
    pub when: Option<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Number of data records.
    Count,
    /// Σ of a data field's signed value (the field is named per record
    /// type in [`ControlOn`]).
    Sum,
    /// SHA-256 of the data file's bytes (sidecar only).
    Checksum,
}

impl FormatSpec {
    /// Parse and validate one spec file's text. `source` is only used in messages.
    pub fn from_toml(text: &str, source: &Path) -> Result<FormatSpec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: source.to_path_buf(),
            message: e.to_string(),
        })?;
        Builder {
            path: source.to_path_buf(),
        }
        .build(raw)
    }

    /// Load one spec file.
    pub fn load(path: &Path) -> Result<FormatSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FormatSpec::from_toml(&text, path)
    }

    /// The header record (fixed layouts; a CSV header row is column names only).
    pub fn header(&self) -> Option<&RecordDef> {
        self.fixed_record(Role::Header)
    }

    /// The trailer record (fixed layouts).
    pub fn trailer(&self) -> Option<&RecordDef> {
        self.fixed_record(Role::Trailer)
    }

    fn fixed_record(&self, role: Role) -> Option<&RecordDef> {
        match &self.layout {
            Layout::Fixed(f) => f.records.iter().find(|r| r.role == role),
            Layout::Csv(_) => None,
        }
    }

    /// Every record definition, in the order records are indexed by (see
    /// [`Layout::record_defs`]).
    pub fn record_defs(&self) -> &[RecordDef] {
        self.layout.record_defs()
    }

    /// The data record definitions (the CSV row for CSV layouts).
    pub fn data_records(&self) -> impl Iterator<Item = &RecordDef> {
        self.record_defs().iter().filter(|r| r.role == Role::Data)
    }

    /// The layout in a few words, for listings: `fixed 200 bytes, CRLF/LF`,
    /// `fixed 120 bytes, no terminator`, `csv + .ctl`.
    pub fn layout_summary(&self) -> String {
        match &self.layout {
            Layout::Fixed(f) => {
                let terminator = match f.terminator {
                    Terminator::Line => "CRLF/LF",
                    Terminator::None => "no terminator",
                };
                format!("fixed {} bytes, {terminator}", f.record_length)
            }
            Layout::Csv(_) => match &self.sidecar {
                Some(s) => format!("csv + {}", s.suffix),
                None => "csv".to_string(),
            },
        }
    }

    /// Name of the sidecar file for a data file name (`X.csv` → `X.ctl`).
    pub fn sidecar_name(&self, data_name: &str) -> Option<String> {
        let sidecar = self.sidecar.as_ref()?;
        let stem = match data_name.rfind('.') {
            Some(dot) if dot > 0 => &data_name[..dot],
            _ => data_name,
        };
        Some(format!("{stem}{}", sidecar.suffix))
    }
}

/// All specs in a directory, keyed by id.
#[derive(Debug, Clone, Default)]
pub struct FormatRegistry {
    specs: BTreeMap<String, FormatSpec>,
}

impl FormatRegistry {
    /// Load every `*.toml` in `dir`. Two specs with one id are an error.
    pub fn load_dir(dir: &Path) -> Result<FormatRegistry, SpecError> {
        let (registry, mut problems) = FormatRegistry::load_dir_checked(dir);
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(problems.swap_remove(0))
        }
    }

    /// Every spec in `dir` that loads, and every problem found (a spec that
    /// fails is left out; the others are still checked).
    pub fn load_dir_checked(dir: &Path) -> (FormatRegistry, Vec<SpecError>) {
        let mut problems = Vec::new();
        let mut registry = FormatRegistry::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(SpecError::Directory {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                });
                return (registry, problems);
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "toml") {
                        paths.push(path);
                    }
                }
                Err(e) => problems.push(SpecError::Directory {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                }),
            }
        }
        paths.sort();
        let found = paths.len();
        for path in paths {
            let spec = match FormatSpec::load(&path) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if let Some(other) = registry.specs.get(&spec.id) {
                problems.push(SpecError::Invalid {
                    path: path.clone(),
                    context: "id".into(),
                    message: format!(
                        "format id {:?} is already defined by {}",
                        spec.id,
                        other.source.display()
                    ),
                });
                continue;
            }
            registry.specs.insert(spec.id.clone(), spec);
        }
        if found == 0 && problems.is_empty() {
            problems.push(SpecError::Directory {
                path: dir.to_path_buf(),
                message: "no format specs (*.toml) found".into(),
            });
        }
        for spec in registry.specs.values() {
            if let Some(other) = &spec.acknowledges
                && !registry.specs.contains_key(other)
            {
                problems.push(SpecError::Invalid {
                    path: spec.source.clone(),
                    context: "acknowledges".into(),
                    message: format!("no format {other:?} in {}", dir.display()),
                });
            }
        }
        (registry, problems)
    }

    pub fn get(&self, id: &str) -> Option<&FormatSpec> {
        self.specs.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &FormatSpec> {
        self.specs.values()
    }

    pub fn ids(&self) -> Vec<&str> {
        self.specs.keys().map(String::as_str).collect()
    }
}

struct Builder {
    path: PathBuf,
}

impl Builder {
    fn err(&self, context: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            path: self.path.clone(),
            context: context.into(),
            message: message.into(),
        }
    }

    fn build(&self, raw: RawSpec) -> Result<FormatSpec, SpecError> {
        if raw.id.is_empty()
            || !raw
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err(
                "id",
                format!(
                    "{:?} must be non-empty ASCII letters, digits, '-' or '_'",
                    raw.id
                ),
            ));
        }
        let encoding = Encoding::from_label(&raw.encoding).ok_or_else(|| {
            self.err(
                "encoding",
                format!(
                    "unknown encoding {:?} (known: cp949, ms949, euc-kr, utf-8)",
                    raw.encoding
                ),
            )
        })?;

        let file_name = raw
            .file_name
            .as_ref()
            .map(|f| self.build_file_name(f))
            .transpose()?;

        let layout = match raw.layout {
            LayoutKind::Fixed => {
                if raw.csv.is_some() {
                    return Err(self.err("csv", "a fixed layout has no [csv] section"));
                }
                Layout::Fixed(self.build_fixed(&raw)?)
            }
            LayoutKind::Csv => {
                if !raw.records.is_empty() || raw.record_length.is_some() {
                    return Err(self.err(
                        "records",
                        "a csv layout declares its columns in [csv], not records or record_length",
                    ));
                }
                let csv = raw
                    .csv
                    .as_ref()
                    .ok_or_else(|| self.err("csv", "a csv layout needs a [csv] section"))?;
                Layout::Csv(self.build_csv(csv, file_name.as_ref())?)
            }
        };

        let mut spec = FormatSpec {
            id: raw.id.clone(),
            title: raw.title.clone(),
            source: self.path.clone(),
            layout,
            encoding,
            file_name,
            business_date: FieldRef::Header(0),
            controls: Vec::new(),
            sidecar: raw.sidecar.as_ref().map(|s| Sidecar {
                suffix: s.suffix.clone(),
            }),
            acknowledges: raw.acknowledges.clone(),
        };
        if let Some(s) = &spec.sidecar
            && (s.suffix.is_empty() || s.suffix.contains('/'))
        {
            return Err(self.err(
                "sidecar.suffix",
                "must be a non-empty suffix such as \".ctl\"",
            ));
        }
        spec.business_date = self.resolve_business_date(&spec, &raw.business_date)?;
        spec.controls = self.build_controls(&spec, &raw.controls)?;
        self.check_keys(&spec)?;
        Ok(spec)
    }

    fn build_file_name(&self, raw: &RawFileName) -> Result<FileNameRule, SpecError> {
        let pattern = Regex::new(&raw.pattern)
            .map_err(|e| self.err("file_name.pattern", format!("bad regex: {e}")))?;
        let captures: HashSet<&str> = pattern.capture_names().flatten().collect();
        for f in &raw.fields {
            if !captures.contains(f.name.as_str()) {
                return Err(self.err(
                    format!("file_name field {}", f.name),
                    "the pattern has no capture group of that name",
                ));
            }
        }
        if !raw.fields.is_empty() && !raw.required {
            return Err(self.err(
                "file_name",
                "fields taken from the name need required = true (a file whose name does not match would lack them)",
            ));
        }
        let fields = self.build_record(
            "file_name",
            b"",
            Role::Header,
            &raw.fields,
            None,
            &[],
            false,
        )?;
        Ok(FileNameRule {
            pattern,
            required: raw.required,
            fields,
        })
    }

    fn build_fixed(&self, raw: &RawSpec) -> Result<FixedLayout, SpecError> {
        let record_length = raw
            .record_length
            .ok_or_else(|| self.err("record_length", "a fixed layout needs record_length"))?;
        if record_length == 0 {
            return Err(self.err("record_length", "must be greater than 0"));
        }
        let terminator = raw.terminator.ok_or_else(|| {
            self.err(
                "terminator",
                "a fixed layout needs terminator = \"line\" or \"none\"",
            )
        })?;
        let rt = raw.record_type.as_ref().ok_or_else(|| {
            self.err(
                "record_type",
                "a fixed layout needs [record_type] offset and len",
            )
        })?;
        if rt.len == 0 || rt.offset + rt.len > record_length {
            return Err(self.err("record_type", "must lie within the record"));
        }
        if raw.records.is_empty() {
            return Err(self.err("records", "a fixed layout needs [[records]]"));
        }
        let mut records = Vec::new();
        let mut codes = HashSet::new();
        for r in &raw.records {
            let ctx = format!("record {}", r.code);
            if r.code.len() != rt.len || !r.code.is_ascii() {
                return Err(self.err(
                    &ctx,
                    format!("code must be {} ASCII byte(s) (record_type.len)", rt.len),
                ));
            }
            if !codes.insert(r.code.clone()) {
                return Err(self.err(&ctx, "record code defined twice"));
            }
            let def = self.build_record(
                &ctx,
                r.code.as_bytes(),
                r.role,
                &r.fields,
                r.amount.as_ref(),
                &r.rules,
                true,
            )?;
            self.check_coverage(&ctx, &def, record_length)?;
            // The record type field must be where record_type says, so a record
            // is never read with the wrong definition.
            if !def
                .fields
                .iter()
                .any(|f| f.offset == rt.offset && f.len == rt.len)
            {
                return Err(self.err(
                    &ctx,
                    format!(
                        "no field covers the record type at offset {} length {}",
                        rt.offset, rt.len
                    ),
                ));
            }
            records.push(def);
        }
        for role in [Role::Header, Role::Trailer] {
            let n = records.iter().filter(|r| r.role == role).count();
            if n != 1 {
                return Err(self.err(
                    "records",
                    format!("needs exactly one {role:?} record, found {n}").to_lowercase(),
                ));
            }
        }
        if !records.iter().any(|r| r.role == Role::Data) {
            return Err(self.err("records", "needs at least one data record"));
        }
        Ok(FixedLayout {
            record_length,
            terminator,
            type_offset: rt.offset,
            type_len: rt.len,
            records,
        })
    }

    fn build_csv(
        &self,
        raw: &RawCsv,
        file_name: Option<&FileNameRule>,
    ) -> Result<CsvLayout, SpecError> {
        if !raw.delimiter.is_ascii() {
            return Err(self.err("csv.delimiter", "must be one ASCII character"));
        }
        if raw.columns.is_empty() {
            return Err(self.err("csv.columns", "needs at least one column"));
        }
        for c in &raw.columns {
            if c.offset.is_some() || c.len.is_some() {
                return Err(self.err(
                    format!("column {}", c.name),
                    "csv columns have no offset or len",
                ));
            }
        }
        let mut row = self.build_record(
            "csv",
            b"",
            Role::Data,
            &raw.columns,
            raw.amount.as_ref(),
            &[],
            false,
        )?;
        // Rules may refer to the file name's captures as `name.<capture>`.
        let name_fields = file_name.map(|f| &f.fields);
        row.rules = raw
            .rules
            .iter()
            .map(|text| {
                Rule::parse(text, &row, name_fields)
                    .map_err(|m| self.err(format!("csv rule {text:?}"), m))
            })
            .collect::<Result<_, _>>()?;
        Ok(CsvLayout {
            delimiter: raw.delimiter as u8,
            header: raw.header,
            row,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build_record(
        &self,
        ctx: &str,
        code: &[u8],
        role: Role,
        raw_fields: &[RawField],
        amount: Option<&RawAmount>,
        rules: &[String],
        fixed: bool,
    ) -> Result<RecordDef, SpecError> {
        let mut names = HashSet::new();
        let mut fields = Vec::with_capacity(raw_fields.len());
        for f in raw_fields {
            let fctx = format!("{ctx}, field {}", f.name);
            if f.name.is_empty() {
                return Err(self.err(ctx, "a field has an empty name"));
            }
            if !names.insert(f.name.as_str()) {
                return Err(self.err(&fctx, "field name used twice in one record"));
            }
            let (offset, len) = if fixed {
                match (f.offset, f.len) {
                    (Some(o), Some(l)) if l > 0 => (o, l),
                    (_, Some(0)) => return Err(self.err(&fctx, "len must be greater than 0")),
                    _ => return Err(self.err(&fctx, "a fixed-width field needs offset and len")),
                }
            } else {
                (0, 0)
            };
            if fixed {
                match f.ty {
                    FieldType::Digits if len > 28 => {
                        return Err(self.err(&fctx, "an N field holds at most 28 digits"));
                    }
                    FieldType::Date if len != 8 => {
                        return Err(self.err(&fctx, "a D field is 8 bytes (YYYYMMDD)"));
                    }
                    FieldType::DateTime if len != 14 => {
                        return Err(self.err(&fctx, "a T field is 14 bytes (YYYYMMDDHHMMSS)"));
                    }
                    FieldType::Sign if len != 1 => {
                        return Err(self.err(&fctx, "an S field is 1 byte"));
                    }
                    FieldType::IsoDate | FieldType::Decimal => {
                        return Err(self.err(
                            &fctx,
                            "types date-iso and decimal are for csv layouts; use D and N",
                        ));
                    }
                    _ => {}
                }
            }
            if f.sequence && f.ty != FieldType::Digits {
                return Err(self.err(&fctx, "a sequence field must be of type N"));
            }
            if f.record_key && role != Role::Data {
                return Err(self.err(&fctx, "record_key fields belong to data records"));
            }
            if f.key && role != Role::Header {
                return Err(self.err(
                    &fctx,
                    "business key fields belong to the header or the file name",
                ));
            }
            if (f.scale_by.is_some() || f.scales.is_some() || f.max_scale.is_some())
                && f.ty != FieldType::Decimal
            {
                return Err(self.err(&fctx, "scales apply to decimal fields only"));
            }
            fields.push(FieldDef {
                name: f.name.clone(),
                offset,
                len,
                ty: f.ty,
                key: f.key,
                record_key: f.record_key,
                volatile: f.volatile,
                required: f.required,
                values: f.values.clone(),
                drill_unless: f.drill_unless.clone(),
                sign: None,
                scale: ScaleRule::Any,
            });
        }
        // Second pass: references between fields of the same record.
        let index = |name: &str| raw_fields.iter().position(|f| f.name == name);
        let mut sequence = None;
        for (i, f) in raw_fields.iter().enumerate() {
            let fctx = format!("{ctx}, field {}", f.name);
            if let Some(sign) = &f.sign {
                let s = index(sign).ok_or_else(|| {
                    self.err(&fctx, format!("sign field {sign:?} does not exist"))
                })?;
                if fields[s].ty != FieldType::Sign {
                    return Err(self.err(&fctx, format!("sign field {sign:?} is not of type S")));
                }
                if !fields[i].ty.is_numeric() {
                    return Err(self.err(&fctx, "only a number can have a sign field"));
                }
                fields[i].sign = Some(s);
            }
            fields[i].scale = match (&f.scale_by, &f.scales, f.max_scale) {
                (Some(by), Some(scales), None) => {
                    let b = index(by).ok_or_else(|| {
                        self.err(&fctx, format!("scale_by field {by:?} does not exist"))
                    })?;
                    ScaleRule::By {
                        field: b,
                        scales: scales.clone(),
                    }
                }
                (None, None, Some(max)) => ScaleRule::Max(max),
                (None, None, None) => ScaleRule::Any,
                _ => {
                    return Err(self.err(
                        &fctx,
                        "give either max_scale, or scale_by together with scales",
                    ));
                }
            };
            if f.sequence {
                if sequence.is_some() {
                    return Err(self.err(&fctx, "only one sequence field per record"));
                }
                sequence = Some(i);
            }
        }
        let has_drill_flags = fields.iter().any(|f| f.drill_unless.is_some());
        let has_scale_rules = fields.iter().any(|f| !matches!(f.scale, ScaleRule::Any));
        let mut def = RecordDef {
            code: code.to_vec(),
            role,
            fields,
            amount: None,
            rules: Vec::new(),
            sequence,
            has_drill_flags,
            has_scale_rules,
        };
        if let Some(a) = amount {
            if role != Role::Data {
                return Err(self.err(ctx, "only data records have an amount"));
            }
            let field = def.field_index(&a.field).ok_or_else(|| {
                self.err(ctx, format!("amount field {:?} does not exist", a.field))
            })?;
            if !def.fields[field].ty.is_numeric() {
                return Err(self.err(ctx, format!("amount field {:?} is not a number", a.field)));
            }
            let when = a
                .when
                .as_deref()
                .map(|w| {
                    Condition::parse(w, &def)
                        .map_err(|m| self.err(format!("{ctx}, amount.when {w:?}"), m))
                })
                .transpose()?;
            def.amount = Some(AmountRule { field, when });
        } else if role == Role::Data && fixed {
            return Err(self.err(
                ctx,
                "a data record needs an amount (the value fed into settlement)",
            ));
        }
        def.rules = rules
            .iter()
            .map(|text| {
                Rule::parse(text, &def, None)
                    .map_err(|m| self.err(format!("{ctx}, rule {text:?}"), m))
            })
            .collect::<Result<_, _>>()?;
        if role == Role::Data && !def.fields.iter().any(|f| f.record_key) {
            return Err(self.err(ctx, "a data record needs at least one record_key field"));
        }
        Ok(def)
    }

    /// Every byte of a fixed record belongs to exactly one field.
    fn check_coverage(&self, ctx: &str, def: &RecordDef, len: usize) -> Result<(), SpecError> {
        let mut fields: Vec<&FieldDef> = def.fields.iter().collect();
        fields.sort_by_key(|f| f.offset);
        let mut next = 0usize;
        for f in fields {
            if f.offset < next {
                return Err(self.err(
                    format!("{ctx}, field {}", f.name),
                    format!(
                        "bytes {}..{} overlap the previous field (which ends at {next})",
                        f.offset,
                        f.offset + f.len
                    ),
                ));
            }
            if f.offset > next {
                return Err(self.err(
                    format!("{ctx}, field {}", f.name),
                    format!("bytes {next}..{} are not covered by any field", f.offset),
                ));
            }
            next = f.offset + f.len;
        }
        if next != len {
            return Err(self.err(
                ctx,
                if next < len {
                    format!("fields end at byte {next} but record_length is {len}")
                } else {
                    format!("fields run to byte {next}, past record_length {len}")
                },
            ));
        }
        Ok(())
    }

    fn resolve_business_date(&self, spec: &FormatSpec, name: &str) -> Result<FieldRef, SpecError> {
        let ctx = "business_date";
        let found = spec
            .header()
            .and_then(|h| {
                h.field_index(name)
                    .map(|i| (FieldRef::Header(i), h.fields[i].ty))
            })
            .or_else(|| {
                spec.file_name.as_ref().and_then(|n| {
                    n.fields
                        .field_index(name)
                        .map(|i| (FieldRef::Name(i), n.fields.fields[i].ty))
                })
            });
        match found {
            Some((r, FieldType::Date | FieldType::IsoDate)) => Ok(r),
            Some(_) => Err(self.err(ctx, format!("field {name:?} is not a date"))),
            None => Err(self.err(
                ctx,
                format!("no header field or file-name field is named {name:?}"),
            )),
        }
    }

    fn build_controls(
        &self,
        spec: &FormatSpec,
        raw: &[RawControl],
    ) -> Result<Vec<Control>, SpecError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for c in raw {
            let ctx = format!("control {}", c.name);
            if !seen.insert(c.name.as_str()) {
                return Err(self.err(&ctx, "defined twice"));
            }
            let measure = match (c.count, &c.sum, c.checksum) {
                (true, None, false) => Measure::Count,
                (false, Some(_), false) => Measure::Sum,
                (false, None, true) => Measure::Checksum,
                _ => return Err(self.err(&ctx, "give exactly one of count, sum or checksum")),
            };
            if spec.data_records().next().is_none() {
                return Err(self.err(&ctx, "no data record"));
            }
            // Each data record type meets the control through its own
            // fields: the same names, wherever each record has them.
            let mut on = Vec::new();
            for def in spec.record_defs() {
                if def.role != Role::Data {
                    on.push(None);
                    continue;
                }
                let rctx = match spec.layout {
                    Layout::Fixed(_) => {
                        format!("{ctx}, record {}", String::from_utf8_lossy(&def.code))
                    }
                    Layout::Csv(_) => ctx.clone(),
                };
                let field = match &c.sum {
                    Some(name) => {
                        let i = def.field_index(name).ok_or_else(|| {
                            self.err(&rctx, format!("sum field {name:?} is not a data field"))
                        })?;
                        if !def.fields[i].ty.is_numeric() {
                            return Err(
                                self.err(&rctx, format!("sum field {name:?} is not a number"))
                            );
                        }
                        Some(i)
                    }
                    None => None,
                };
                let when = match &c.when {
                    Some(w) => Some(
                        Condition::parse(w, def)
                            .map_err(|m| self.err(format!("{rctx}, when {w:?}"), m))?,
                    ),
                    None => None,
                };
                on.push(Some(ControlOn { field, when }));
            }
            let trailer_field = match spec.layout {
                Layout::Fixed(_) => {
                    if matches!(measure, Measure::Checksum) {
                        return Err(
                            self.err(&ctx, "a checksum control needs a sidecar (csv layouts)")
                        );
                    }
                    let t = spec.trailer().ok_or_else(|| self.err(&ctx, "no trailer"))?;
                    let i = t
                        .field_index(&c.name)
                        .ok_or_else(|| self.err(&ctx, "the trailer has no field of that name"))?;
                    if !t.fields[i].ty.is_numeric() {
                        return Err(self.err(&ctx, "the trailer field is not a number"));
                    }
                    Some(i)
                }
                Layout::Csv(_) => {
                    if spec.sidecar.is_none() {
                        return Err(self.err(
                            &ctx,
                            "csv controls are read from a [sidecar]; none is declared",
                        ));
                    }
                    None
                }
            };
            out.push(Control {
                name: c.name.clone(),
                measure,
                on,
                trailer_field,
            });
        }
        Ok(out)
    }

    fn check_keys(&self, spec: &FormatSpec) -> Result<(), SpecError> {
        let header_keys = spec
            .header()
            .map(|h| h.fields.iter().filter(|f| f.key).count())
            .unwrap_or(0);
        let name_keys = spec
            .file_name
            .as_ref()
            .map(|n| n.fields.fields.iter().filter(|f| f.key).count())
            .unwrap_or(0);
        if header_keys + name_keys == 0 {
            return Err(self.err("business key", "no field is marked key = true"));
        }
        if name_keys > 0 && !spec.file_name.as_ref().is_some_and(|n| n.required) {
            return Err(self.err(
                "file_name",
                "key fields come from the name, so file_name.required must be true",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = include_str!("../../formats/card-settlement.toml");

    fn load(text: &str) -> Result<FormatSpec, SpecError> {
        FormatSpec::from_toml(text, Path::new("formats/test.toml"))
    }

    fn refused(text: &str, needles: &[&str]) {
        let e = load(text).expect_err("spec should be refused").to_string();
        assert!(
            e.contains("formats/test.toml"),
            "message must name the spec file: {e}"
        );
        for n in needles {
            assert!(e.contains(n), "{e:?} should mention {n:?}");
        }
    }

    #[test]
    fn shipped_specs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
        let reg = FormatRegistry::load_dir(&dir).unwrap();
        assert_eq!(
            reg.ids(),
            vec![
                "bank-transfer-request",
                "bank-transfer-result",
                "card-settlement",
                "pg-settlement-csv"
            ]
        );
        let card = reg.get("card-settlement").unwrap();
        let Layout::Fixed(layout) = &card.layout else {
            panic!("card-settlement is fixed-width");
        };
        assert_eq!(layout.record_length, 200);
        assert_eq!(card.layout_summary(), "fixed 200 bytes, CRLF/LF");
        assert_eq!(
            reg.get("bank-transfer-result").unwrap().layout_summary(),
            "fixed 120 bytes, no terminator"
        );
        assert_eq!(
            reg.get("pg-settlement-csv").unwrap().layout_summary(),
            "csv + .ctl"
        );
        assert_eq!(card.business_date, FieldRef::Header(4));
        assert_eq!(card.controls.len(), 4);
    }

    #[test]
    fn overlapping_bytes_are_refused() {
        let bad = CARD.replace(
            r#"{ name = "receiver_code", offset = 8,  len = 10"#,
            r#"{ name = "receiver_code", offset = 7,  len = 11"#,
        );
        refused(&bad, &["record H", "receiver_code", "overlap"]);
    }

    #[test]
    fn uncovered_bytes_are_refused() {
        let bad = CARD.replace(
            r#"{ name = "filler",        offset = 75, len = 125"#,
            r#"{ name = "filler",        offset = 76, len = 124"#,
        );
        refused(&bad, &["record H", "filler", "not covered"]);
    }

    #[test]
    fn record_length_must_add_up() {
        refused(
            &CARD.replace("record_length = 200", "record_length = 201"),
            &["record H", "record_length is 201"],
        );
        refused(
            &CARD.replace("record_length = 200", "record_length = 199"),
            &["past record_length 199"],
        );
    }

    const TWO_DATA_TYPES: &str = include_str!("../../tests/specs/two-data-types.toml");

    #[test]
    fn each_data_record_type_meets_a_control_through_its_own_fields() {
        let spec = load(TWO_DATA_TYPES).unwrap();
        let control = &spec.controls[0];
        let field = |def: usize| control.on(def).and_then(|on| on.field);
        // Records H, D, C, T: amount is D's fourth field and C's second.
        assert_eq!(
            (field(0), field(1), field(2), field(3)),
            (None, Some(3), Some(1), None)
        );
        // A data record type without the summed field is refused, by name:
        // C's amount renamed (the last amount rule is C's).
        let mut missing = TWO_DATA_TYPES.replace(
            r#"{ name = "amount", offset = 1, len = 10, type = "N" }"#,
            r#"{ name = "amt", offset = 1, len = 10, type = "N" }"#,
        );
        let rule = r#"amount = { field = "amount" }"#;
        let at = missing.rfind(rule).unwrap();
        missing.replace_range(at..at + rule.len(), r#"amount = { field = "amt" }"#);
        refused(
            &missing,
            &["control total", "record C", "sum field \"amount\""],
        );
    }

    #[test]
    fn unknown_type_is_refused() {
        let bad = CARD.replace(
            r#"name = "card_no",       offset = 79,  len = 16, type = "A""#,
            r#"name = "card_no",       offset = 79,  len = 16, type = "X""#,
        );
        refused(&bad, &["unknown variant", "X"]);
    }

    #[test]
    fn references_to_missing_fields_are_refused() {
        refused(
            &CARD.replace(r#"sum = "fee_amount""#, r#"sum = "fee""#),
            &["control total_fee", "\"fee\""],
        );
        refused(
            &CARD.replace(
                r#"amount = { field = "settle_amount" }"#,
                r#"amount = { field = "settle" }"#,
            ),
            &["record D", "amount field \"settle\""],
        );
        refused(
            &CARD.replace(
                r#"business_date = "business_date""#,
                r#"business_date = "base_date""#,
            ),
            &["business_date", "base_date"],
        );
        refused(
            &CARD.replace(r#"sign = "settle_sign""#, r#"sign = "sign""#),
            &["settle_amount", "sign field \"sign\""],
        );
        refused(
            &CARD.replace(
                "settle_amount = sales_amount - fee_amount if",
                "settle_amount = sales - fee_amount if",
            ),
            &["rule", "\"sales\""],
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        refused(
            &CARD.replace(
                "record_length = 200",
                "record_length = 200\nrecord_lenght = 200",
            ),
            &["record_lenght"],
        );
        refused(
            &CARD.replace(
                r#"type = "A", key = true, values"#,
                r#"type = "A", kee = true, values"#,
            ),
            &["kee"],
        );
    }

    #[test]
    fn a_spec_needs_a_business_key_and_record_key() {
        refused(&CARD.replace(", key = true", ""), &["business key"]);
        refused(
            &CARD.replace(", record_key = true", ""),
            &["record D", "record_key"],
        );
    }

    #[test]
    fn name_fields_need_a_required_name() {
        let pg = include_str!("../../formats/pg-settlement-csv.toml");
        refused(
            &pg.replace("required = true\n", ""),
            &["file_name", "required = true"],
        );
    }

    #[test]
    fn key_fields_must_be_in_the_header() {
        let bad = CARD.replace(
            r#"{ name = "card_no",       offset = 79,  len = 16, type = "A" }"#,
            r#"{ name = "card_no",       offset = 79,  len = 16, type = "A", key = true }"#,
        );
        refused(
            &bad,
            &["card_no", "business key fields belong to the header"],
        );
    }
}
