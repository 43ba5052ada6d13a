//! The streaming verifier: one pass over a file's bytes that checks every
//! record against its spec and yields the file's facts — checksum, content
//! fingerprint, business key, record keys (through a [`RecordSink`]), drill
//! signals and recomputed control totals.
//!
//! It reads from any `Read` in fixed-size chunks and never holds the whole
//! file; it does no file-system, network or clock access, so it is tested with
//! byte fixtures and property tests alone.

use std::io::{self, Read};
use std::ops::{ControlFlow, Range};
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::codec::{self, FieldError, FieldValue, Value};
use super::rules::RecordRef;
use super::spec::{
    CsvLayout, FieldDef, FieldRef, FieldType, FixedLayout, FormatSpec, Layout, Measure, RecordDef,
    Role, Terminator,
};

mod compiled;
mod parallel;

pub use parallel::Parallelism;

/// Bytes read from the input at a time.
const CHUNK: usize = 1 << 20;

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
    rec: RecordRef<'a>,
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
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
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

/// Verify one file. I/O errors from `input` are returned as such (they say
/// nothing about the file's validity); everything wrong with the content is
/// in `FileFacts::error`.
///
/// A fixed-width file is checked in chunks on the workers free in the
/// process (see `parallel::WorkerBudget`), or in order when fewer than two
/// are free; the facts are the same either way.
pub fn verify<R: Read>(
    spec: &FormatSpec,
    input: R,
    ctx: FileContext<'_>,
    sink: &mut dyn RecordSink,
) -> io::Result<FileFacts> {
    let chunked = match spec.layout {
        Layout::Fixed(_) => !sink.wants_records(),
        Layout::Csv(_) => false,
    };
    let workers = parallel::WORKERS.take(if chunked { usize::MAX } else { 0 });
    let par = Parallelism {
        workers: workers.count.max(1),
        ..Parallelism::SEQUENTIAL
    };
    verify_with(spec, input, ctx, sink, par)
}

/// [`verify`] with the work spread as `par` says. Fixed-width files are
/// checked in chunks on several threads when no sink wants the records (the
/// result is the same either way); everything else is checked in order.
pub fn verify_with<R: Read>(
    spec: &FormatSpec,
    input: R,
    ctx: FileContext<'_>,
    sink: &mut dyn RecordSink,
    par: Parallelism,
) -> io::Result<FileFacts> {
    // The checksum of the raw bytes is computed on its own thread while the
    // others parse: on large files the two take comparable time.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Block>(8);
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            let mut size = 0u64;
            for (block, range) in rx {
                size += range.len() as u64;
                h.update(&block[range]);
            }
            (<[u8; 32]>::from(h.finalize()), size)
        });
        // Plain verification checks data records by their compiled plans;
        // a sink gets every record decoded by the general path.
        let plans = if sink.wants_records() {
            Vec::new()
        } else {
            compiled::compile(spec)
        };
        let mut state = State::new(spec);
        state.plans = &plans;
        let result = match &spec.layout {
            Layout::Fixed(layout) if par.workers > 1 && !sink.wants_records() => {
                parallel::verify_fixed(spec, layout, input, tx, &ctx, &mut state, par)
            }
            layout => {
                let mut input = HashingReader { inner: input, tx };
                let result = match layout {
                    Layout::Fixed(layout) => {
                        verify_fixed(spec, layout, &mut input, &ctx, &mut state, sink)
                    }
                    Layout::Csv(layout) => {
                        verify_csv(spec, layout, &mut input, &ctx, &mut state, sink)
                    }
                };
                // Read what is left so the checksum always covers the whole file.
                if !matches!(result, Err(Stop::Io(_))) {
                    io::copy(&mut input, &mut io::sink())?;
                }
                result
            }
        };
        let error = match result {
            Ok(()) => None,
            Err(Stop::Io(e)) => return Err(e),
            Err(Stop::Invalid(e)) => Some(e),
        };
        let (checksum, size) = hasher
            .join()
            .map_err(|_| io::Error::other("the checksum thread failed"))?;
        let mut facts = state.into_facts(spec, checksum, size, error);
        if facts.error.is_none()
            && let Some(e) = check_sidecar(spec, &ctx, &facts)
        {
            facts.error = Some(e);
            facts.fingerprint = None;
        }
        Ok(facts)
    })
}

/// Bytes on their way to the checksum thread: a shared buffer and the part
/// of it that is file content, in file order.
type Block = (Arc<Vec<u8>>, Range<usize>);

#[derive(Debug)]
enum Stop {
    Io(io::Error),
    Invalid(VerifyError),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Io(e)
    }
}

fn invalid(
    record: Option<u64>,
    offset: Option<u64>,
    field: Option<&str>,
    message: impl Into<String>,
) -> Stop {
    Stop::Invalid(VerifyError {
        record,
        offset,
        field: field.map(str::to_string),
        message: message.into(),
    })
}

/// Hands a copy of everything read through it to the checksum thread.
struct HashingReader<R> {
    inner: R,
    tx: std::sync::mpsc::SyncSender<Block>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n > 0 {
            self.tx
                .send((Arc::new(buf[..n].to_vec()), 0..n))
                .map_err(|_| io::Error::other("the checksum thread stopped"))?;
        }
        Ok(n)
    }
}

/// Where the pass is in the header → data → trailer order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ExpectHeader,
    Body,
    Done,
}

/// Order-insensitive content fingerprint: each data record's canonical form
/// is hashed and the digests are added modulo 2^256, so reordering records
/// does not change the sum while any change to a record does. Header,
/// trailer and file-name fields are hashed in order on top.
struct Fingerprint {
    fixed_parts: Sha256,
    sum: [u64; 4],
    count: u64,
    canon: Vec<u8>,
    record_hash: ShortSha256,
}

impl Fingerprint {
    fn new() -> Self {
        Fingerprint {
            fixed_parts: Sha256::new(),
            sum: [0; 4],
            count: 0,
            canon: Vec::with_capacity(256),
            record_hash: ShortSha256::default(),
        }
    }

    /// Canonical form of a record's non-volatile fields into `self.canon`.
    fn canonicalise(&mut self, rec: RecordRef<'_>) {
        self.canon.clear();
        self.canon.extend_from_slice(&rec.def.code);
        self.canon.push(0x1e);
        for (i, f) in rec.def.fields.iter().enumerate() {
            if f.volatile {
                continue;
            }
            let negative = f
                .sign
                .is_some_and(|s| rec.fields[s].value == Value::Sign(true));
            codec::canonical(&rec.fields[i].value, rec.text(i), negative, &mut self.canon);
            self.canon.push(0x1f);
        }
    }

    fn add_ordered(&mut self, tag: &str, rec: RecordRef<'_>) {
        self.canonicalise(rec);
        self.fixed_parts.update(tag.as_bytes());
        self.fixed_parts.update([0]);
        self.fixed_parts.update(&self.canon);
        self.fixed_parts.update([0]);
    }

    fn add_data(&mut self, rec: RecordRef<'_>) {
        self.canonicalise(rec);
        let canon = std::mem::take(&mut self.canon);
        self.add_canonical(&canon);
        self.canon = canon;
    }

    /// Add a data record by its canonical form.
    fn add_canonical(&mut self, canon: &[u8]) {
        let digest = self.record_hash.digest(canon);
        let mut limbs = [0u64; 4];
        for (limb, part) in limbs.iter_mut().zip(digest.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(part);
            *limb = u64::from_le_bytes(bytes);
        }
        self.add_sum(limbs, 1);
    }

    /// Add digests (or another run's sum of them) modulo 2^256.
    fn add_sum(&mut self, limbs: [u64; 4], count: u64) {
        let mut carry = 0u64;
        for (limb, add) in self.sum.iter_mut().zip(limbs) {
            let (a, c1) = limb.overflowing_add(add);
            let (b, c2) = a.overflowing_add(carry);
            *limb = b;
            carry = u64::from(c1) + u64::from(c2);
        }
        self.count += count;
    }

    fn finish(self, format: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"settlegate.fingerprint.v1\0");
        h.update(format.as_bytes());
        h.update([0]);
        h.update(self.fixed_parts.finalize());
        h.update(self.count.to_be_bytes());
        for limb in self.sum {
            h.update(limb.to_le_bytes());
        }
        h.finalize().into()
    }
}

/// A running control total, exact. Whole-number addends (won amounts,
/// counts) are added as integers, and the total becomes a `Decimal` at the
/// first addend with decimal places. The sum is the same either way and
/// overflows exactly where a `Decimal` sum would (beyond 96 bits), but the
/// common case costs an integer add instead of a decimal one per record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Total {
    /// `|value| <= Decimal::MAX`.
    Whole(i128),
    Decimal(Decimal),
}

/// The largest magnitude of a whole-number `Decimal`: 2^96 - 1.
const WHOLE_MAX: u128 = (1 << 96) - 1;

impl Total {
    const ZERO: Total = Total::Whole(0);

    fn value(self) -> Decimal {
        match self {
            // In range by the invariant; `from_i128_with_scale` would panic
            // only beyond it.
            Total::Whole(n) => Decimal::try_from_i128_with_scale(n, 0).unwrap_or(Decimal::MAX),
            Total::Decimal(d) => d,
        }
    }

    /// `self + n`, or `None` when it overflows.
    fn add_whole(self, n: i128) -> Option<Total> {
        let mut sum = self;
        sum.add_whole_in_place(n).then_some(sum)
    }

    /// Add `n` in place; `false`, and unchanged, when the sum overflows.
    /// (In place: a returned total would go through memory on every record.)
    #[inline(always)]
    fn add_whole_in_place(&mut self, n: i128) -> bool {
        match self {
            Total::Whole(t) => match t.checked_add(n) {
                Some(s) if s.unsigned_abs() <= WHOLE_MAX => {
                    *t = s;
                    true
                }
                _ => false,
            },
            Total::Decimal(d) => {
                match Decimal::try_from_i128_with_scale(n, 0)
                    .ok()
                    .and_then(|n| d.checked_add(n))
                {
                    Some(s) => {
                        *d = s;
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Whether `n` can be added without overflow.
    #[inline(always)]
    fn fits_whole(&self, n: i128) -> bool {
        self.clone().add_whole_in_place(n)
    }

    /// `self + d`, or `None` when it overflows.
    fn add(self, d: Decimal) -> Option<Total> {
        if d.scale() == 0 {
            return self.add_whole(d.mantissa());
        }
        self.value().checked_add(d).map(Total::Decimal)
    }

    fn add_total(self, other: Total) -> Option<Total> {
        match other {
            Total::Whole(n) => self.add_whole(n),
            Total::Decimal(d) => self.add(d),
        }
    }
}

/// One SHA-256 block.
type Sha256Block = sha2::digest::core_api::Block<sha2::Sha256VarCore>;

/// SHA-256 of short messages (a record's canonical form: two blocks, most
/// often), the same digest as `Sha256::digest`. The message is padded here
/// and all its blocks go to the compression function in one call, which
/// saves a sixth of the hashing time per record; the blocks are reused.
#[derive(Debug, Default)]
struct ShortSha256 {
    blocks: Vec<Sha256Block>,
}

impl ShortSha256 {
    const INITIAL: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    fn digest(&mut self, message: &[u8]) -> [u8; 32] {
        // FIPS 180-4 padding: 0x80, zeros, then the length in bits as a
        // big-endian u64 ending a block.
        let blocks = (message.len() + 1 + 8).div_ceil(64);
        self.blocks.clear();
        self.blocks.resize(blocks, Sha256Block::default());
        for (block, part) in self.blocks.iter_mut().zip(message.chunks(64)) {
            block[..part.len()].copy_from_slice(part);
        }
        // There is room: the blocks hold the message and nine bytes more.
        if let Some(block) = self.blocks.get_mut(message.len() / 64) {
            block[message.len() % 64] = 0x80;
        }
        let bits = (message.len() as u64).wrapping_mul(8).to_be_bytes();
        if let Some(last) = self.blocks.last_mut() {
            last[56..].copy_from_slice(&bits);
        }
        let mut state = Self::INITIAL;
        sha2::compress256(&mut state, &self.blocks);
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Per-pass state shared by the fixed and CSV readers.
struct State<'s> {
    phase: Phase,
    /// Records seen (fixed: all records; CSV: data rows).
    record_no: u64,
    data_records: u64,
    /// Per data record type: the next expected sequence number (`None` at
    /// the start of a chunk checked on its own, where any first number goes).
    next_seq: Vec<Option<Decimal>>,
    /// Per data record type: the first sequence number met where none was
    /// expected (chunks only), for the merge to check against the file order.
    first_seq: Vec<Option<Decimal>>,
    /// Checking one chunk of data records on its own (see `parallel`): any
    /// record that is not a data record ends the chunk's attempt.
    chunk: bool,
    controls: Vec<Total>,
    fingerprint: Fingerprint,
    business_key: Vec<(String, String)>,
    business_date: Option<NaiveDate>,
    drill_signals: Vec<String>,
    /// Decoded fields of the current record and their text.
    values: Vec<FieldValue>,
    /// A fixed record with its non-ASCII fields blanked (see `decode_fixed`);
    /// once the record is decoded, a key field's canonical bytes.
    scratch: Vec<u8>,
    dates: codec::DateMemo,
    buf: String,
    /// Decoded file-name captures (when the spec has a file-name rule and the name matched).
    name_values: Vec<FieldValue>,
    name_buf: String,
    name_matched: bool,
    record_key: String,
    /// Compiled plans by record definition (empty: every record takes the
    /// general path).
    plans: &'s [Option<compiled::RecordPlan>],
    planned: compiled::Scratch,
    spec: &'s FormatSpec,
}

impl<'s> State<'s> {
    fn new(spec: &'s FormatSpec) -> Self {
        State {
            phase: Phase::ExpectHeader,
            record_no: 0,
            data_records: 0,
            // Indexed by record definition (fixed) or 0 (the CSV row).
            next_seq: vec![Some(Decimal::ONE); spec.record_defs().len()],
            first_seq: vec![None; spec.record_defs().len()],
            chunk: false,
            controls: vec![Total::ZERO; spec.controls.len()],
            fingerprint: Fingerprint::new(),
            business_key: Vec::new(),
            business_date: None,
            drill_signals: Vec::new(),
            values: Vec::with_capacity(32),
            scratch: Vec::with_capacity(512),
            dates: codec::DateMemo::default(),
            buf: String::with_capacity(512),
            name_values: Vec::new(),
            name_buf: String::new(),
            name_matched: false,
            record_key: String::with_capacity(64),
            plans: &[],
            planned: compiled::Scratch::default(),
            spec,
        }
    }

    fn into_facts(
        self,
        spec: &FormatSpec,
        checksum: [u8; 32],
        size: u64,
        error: Option<VerifyError>,
    ) -> FileFacts {
        let totals = spec
            .controls
            .iter()
            .zip(&self.controls)
            .filter(|(c, _)| !matches!(c.measure, Measure::Checksum))
            .map(|(c, v)| (c.name.clone(), v.value()))
            .collect();
        let valid = error.is_none();
        FileFacts {
            format: spec.id.clone(),
            checksum,
            size,
            records: self.data_records,
            fingerprint: valid.then(|| self.fingerprint.finish(&spec.id)),
            business_key: self.business_key,
            business_date: self.business_date,
            totals,
            drill_signals: self.drill_signals,
            error,
        }
    }

    fn rec<'a>(&'a self, def: &'a RecordDef) -> RecordRef<'a> {
        RecordRef {
            def,
            fields: &self.values,
            buf: &self.buf,
        }
    }

    fn name_rec(&self) -> Option<RecordRef<'_>> {
        let rule = self.spec.file_name.as_ref()?;
        self.name_matched.then_some(RecordRef {
            def: &rule.fields,
            fields: &self.name_values,
            buf: &self.name_buf,
        })
    }

    /// Match the file name against the spec's pattern and decode its captures.
    fn read_name(&mut self, name: &str) -> Result<(), Stop> {
        let Some(rule) = &self.spec.file_name else {
            return Ok(());
        };
        let Some(caps) = rule.pattern.captures(name) else {
            if rule.required {
                return Err(invalid(
                    None,
                    None,
                    None,
                    format!(
                        "file name {name:?} does not match the pattern {}",
                        rule.pattern.as_str()
                    ),
                ));
            }
            return Ok(());
        };
        for f in &rule.fields.fields {
            let text = caps.name(&f.name).map_or("", |m| m.as_str());
            let v = codec::parse_field(
                f,
                text.as_bytes(),
                self.spec.encoding,
                &mut self.name_buf,
                &mut self.dates,
            )
            .map_err(|e| invalid(None, None, Some(&f.name), format!("in the file name: {e}")))?;
            self.name_values.push(v);
        }
        self.name_matched = true;
        let rec = RecordRef {
            def: &rule.fields,
            fields: &self.name_values,
            buf: &self.name_buf,
        };
        for (i, f) in rule.fields.fields.iter().enumerate() {
            if f.key {
                self.business_key
                    .push((f.name.clone(), key_text(f, rec, i)));
            }
        }
        if let FieldRef::Name(i) = self.spec.business_date {
            self.business_date = rec.date(i);
        }
        // Only typed captures count, so a file's fingerprint never depends on
        // whether its name happened to match (specs with name fields require
        // the match).
        if !rule.fields.fields.is_empty() {
            self.fingerprint.add_ordered("name", rec);
        }
        Ok(())
    }

    /// Decode every field of a fixed record or CSV row into `self.values`.
    fn decode_fields<'a>(
        &mut self,
        def: &RecordDef,
        slices: impl Iterator<Item = (&'a [u8], u64)>,
        record: u64,
    ) -> Result<(), Stop> {
        self.values.clear();
        self.buf.clear();
        for (f, (raw, offset)) in def.fields.iter().zip(slices) {
            match codec::parse_field(f, raw, self.spec.encoding, &mut self.buf, &mut self.dates) {
                Ok(v) => self.values.push(v),
                Err(e) => return Err(field_error(record, offset, f, e)),
            }
        }
        self.check_scales(def, record)
    }

    /// Decode and type every field of a fixed record. Printable ASCII is
    /// the same text in every supported encoding, so the record is copied
    /// into the text buffer once, and only a field holding other bytes (Hangul,
    /// a control character) is decoded strictly on its own, in field order, so
    /// a character split by a field boundary is caught where it happens.
    fn decode_fixed(
        &mut self,
        def: &RecordDef,
        record: &[u8],
        number: u64,
        offset: u64,
    ) -> Result<(), Stop> {
        self.values.clear();
        self.buf.clear();
        let ascii = codec::is_printable_ascii(record);
        let copied = if ascii {
            std::str::from_utf8(record)
        } else {
            // Blank the fields decoded below; what is left is printable ASCII.
            self.scratch.clear();
            self.scratch.extend_from_slice(record);
            for f in &def.fields {
                let raw = &mut self.scratch[f.offset..f.offset + f.len];
                if !codec::is_printable_ascii(raw) {
                    raw.fill(b' ');
                }
            }
            std::str::from_utf8(&self.scratch)
        };
        match copied {
            Ok(text) => self.buf.push_str(text),
            // Unreachable while the fields cover the record (the spec loader
            // checks that), but never a panic on input.
            Err(_) => return Err(invalid(Some(number), Some(offset), None, "not text")),
        }
        for f in &def.fields {
            let raw = &record[f.offset..f.offset + f.len];
            let (start, width) = if ascii || codec::is_printable_ascii(raw) {
                (f.offset, f.len)
            } else {
                let start = self.buf.len();
                codec::decode_checked(raw, self.spec.encoding, &mut self.buf)
                    .map_err(|e| field_error(number, offset + f.offset as u64, f, e))?;
                (start, self.buf.len() - start)
            };
            let end = start + codec::trimmed_len(&self.buf.as_bytes()[start..start + width]);
            match codec::type_value(f, &self.buf[start..end], f.len, &mut self.dates) {
                Ok(value) => self.values.push(FieldValue {
                    value,
                    text: start..end,
                }),
                Err(e) => return Err(field_error(number, offset + f.offset as u64, f, e)),
            }
        }
        self.check_scales(def, number)
    }

    fn check_scales(&self, def: &RecordDef, record: u64) -> Result<(), Stop> {
        if !def.has_scale_rules {
            return Ok(());
        }
        // Scales may depend on other fields (a currency), so check them last.
        for (i, f) in def.fields.iter().enumerate() {
            if matches!(f.scale, super::spec::ScaleRule::Any) {
                continue;
            }
            if let Value::Number(n) = &self.values[i].value {
                let text = &self.buf[self.values[i].text.clone()];
                codec::check_scale(&f.scale, n, text, &self.values, &self.buf)
                    .map_err(|e| field_error(record, 0, f, e))?;
            }
        }
        Ok(())
    }

    fn drill_check(&mut self, def: &RecordDef) {
        for (i, f) in def.fields.iter().enumerate() {
            if let Some(allowed) = &f.drill_unless {
                let text = &self.buf[self.values[i].text.clone()];
                if !allowed.iter().any(|a| a == text) {
                    self.drill_signals.push(format!("{}={}", f.name, text));
                }
            }
        }
    }

    fn header(&mut self, def: &RecordDef) {
        let rec = self.rec(def);
        let keys: Vec<(String, String)> = def
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.key)
            .map(|(i, f)| (f.name.clone(), key_text(f, rec, i)))
            .collect();
        let date = match self.spec.business_date {
            FieldRef::Header(i) => rec.date(i),
            FieldRef::Name(_) => self.business_date,
        };
        // Header keys come first; name keys (if any) were read before.
        let mut all = keys;
        all.append(&mut self.business_key);
        self.business_key = all;
        self.business_date = date;
        let rec = RecordRef {
            def,
            fields: &self.values,
            buf: &self.buf,
        };
        self.fingerprint.add_ordered("header", rec);
        self.drill_check(def);
    }

    /// Checks and bookkeeping for one decoded data record; hands it to the sink.
    fn data(
        &mut self,
        def_index: usize,
        def: &RecordDef,
        number: u64,
        offset: u64,
        sink: &mut dyn RecordSink,
    ) -> Result<(), Stop> {
        if let Some(seq) = def.sequence {
            let found = match self.values[seq].value {
                Value::Number(n) => n,
                _ => Decimal::ZERO,
            };
            let Some(expected) = self.next_seq[def_index] else {
                self.first_seq[def_index] = Some(found);
                self.next_seq[def_index] = Some(found + Decimal::ONE);
                return self.data_checked(def_index, def, number, offset, sink);
            };
            if found != expected {
                let f = &def.fields[seq];
                return Err(invalid(
                    Some(number),
                    Some(offset + f.offset as u64),
                    Some(&f.name),
                    format!("sequence number out of order: expected {expected}, found {found}"),
                ));
            }
            self.next_seq[def_index] = Some(expected + Decimal::ONE);
        }
        self.data_checked(def_index, def, number, offset, sink)
    }

    /// The rest of a data record's checks, once its sequence number is in order.
    fn data_checked(
        &mut self,
        def_index: usize,
        def: &RecordDef,
        number: u64,
        offset: u64,
        sink: &mut dyn RecordSink,
    ) -> Result<(), Stop> {
        let name_rec = self.name_rec();
        let rec = RecordRef {
            def,
            fields: &self.values,
            buf: &self.buf,
        };
        for rule in &def.rules {
            if let Err(fail) = rule.check(rec, name_rec) {
                let f = &def.fields[fail.field];
                return Err(invalid(
                    Some(number),
                    Some(offset + f.offset as u64),
                    Some(&f.name),
                    fail.message,
                ));
            }
        }
        for (c, total) in self.spec.controls.iter().zip(self.controls.iter_mut()) {
            let Some(on) = c.on(def_index) else { continue };
            if on
                .when
                .as_ref()
                .is_some_and(|w| !w.holds(rec.fields, rec.buf))
            {
                continue;
            }
            let add = match (c.measure, on.field) {
                (Measure::Count, _) => Decimal::ONE,
                (Measure::Sum, Some(i)) => rec.number(i),
                _ => continue,
            };
            *total = total.add(add).ok_or_else(|| {
                invalid(
                    Some(number),
                    Some(offset),
                    None,
                    format!("control total {} overflows", c.name),
                )
            })?;
        }
        self.fingerprint.add_data(rec);
        self.data_records += 1;
        if sink.wants_records() {
            let amount = match &def.amount {
                Some(a) if a.when.as_ref().is_none_or(|w| w.holds(rec.fields, rec.buf)) => {
                    rec.number(a.field)
                }
                _ => Decimal::ZERO,
            };
            // Record key: key fields joined by `|`, with `|` and `\\` escaped so
            // that two different field tuples never give one key.
            self.record_key.clear();
            for (n, (i, f)) in def
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.record_key)
                .enumerate()
            {
                if n > 0 {
                    self.record_key.push('|');
                }
                let start = self.record_key.len();
                push_key_text(f, rec, i, &mut self.record_key, &mut self.scratch);
                if self.record_key[start..].contains(['|', '\\']) {
                    let part = self.record_key.split_off(start);
                    for c in part.chars() {
                        if c == '|' || c == '\\' {
                            self.record_key.push('\\');
                        }
                        self.record_key.push(c);
                    }
                }
            }
            let record = DataRecord {
                number,
                offset,
                record_key: &self.record_key,
                amount,
                rec,
            };
            if sink.record(&record).is_break() {
                return Err(invalid(
                    Some(number),
                    Some(offset),
                    None,
                    "stopped by the record consumer",
                ));
            }
        }
        if def.has_drill_flags {
            self.drill_check(def);
        }
        Ok(())
    }

    /// Compare the trailer's control fields with what the data added up to.
    fn trailer(&mut self, def: &RecordDef, number: u64, offset: u64) -> Result<(), Stop> {
        let rec = RecordRef {
            def,
            fields: &self.values,
            buf: &self.buf,
        };
        for (c, computed) in self.spec.controls.iter().zip(&self.controls) {
            let Some(i) = c.trailer_field else { continue };
            let stated = rec.number(i);
            let computed = computed.value();
            if stated != computed {
                let f = &def.fields[i];
                return Err(invalid(
                    Some(number),
                    Some(offset + f.offset as u64),
                    Some(&f.name),
                    format!(
                        "control total {}: the trailer says {stated}, the data records add up to {computed}",
                        c.name
                    ),
                ));
            }
        }
        self.fingerprint.add_ordered("trailer", rec);
        self.drill_check(def);
        Ok(())
    }
}

/// Canonical text of a key field: N digits as written (zero-padded), dates
/// as `YYYY-MM-DD`, text trimmed.
/// `canon` is a reusable buffer (this runs for every record fed).
fn push_key_text(
    f: &FieldDef,
    rec: RecordRef<'_>,
    i: usize,
    out: &mut String,
    canon: &mut Vec<u8>,
) {
    match (&rec.fields[i].value, f.ty) {
        (Value::Number(_), FieldType::Digits) | (Value::Text, _) => out.push_str(rec.text(i)),
        (v, _) => {
            canon.clear();
            codec::canonical(v, rec.text(i), false, canon);
            // Built from text, so it is text (borrowed, never replaced).
            out.push_str(&String::from_utf8_lossy(canon));
        }
    }
}

fn key_text(f: &FieldDef, rec: RecordRef<'_>, i: usize) -> String {
    let mut s = String::new();
    push_key_text(f, rec, i, &mut s, &mut Vec::new());
    s
}

fn field_error(record: u64, offset: u64, f: &FieldDef, e: FieldError) -> Stop {
    invalid(Some(record), Some(offset), Some(&f.name), e.to_string())
}

// ---------------------------------------------------------------------------
// Fixed-width
// ---------------------------------------------------------------------------

fn verify_fixed<R: Read>(
    spec: &FormatSpec,
    layout: &FixedLayout,
    input: &mut R,
    ctx: &FileContext<'_>,
    state: &mut State<'_>,
    sink: &mut dyn RecordSink,
) -> Result<(), Stop> {
    state.read_name(ctx.name)?;
    let len = layout.record_length;
    // Room for a chunk plus one partial record (and its terminator): what
    // `fixed_records` leaves unconsumed is always shorter than that.
    let mut buf = vec![0u8; CHUNK + len + 2];
    let mut end = 0usize;
    // File offset of buf[0].
    let mut base: u64 = 0;
    loop {
        let want = buf.len() - end;
        let n = read_full(input, &mut buf[end..])?;
        end += n;
        let eof = n < want;
        let consumed = fixed_records(spec, layout, state, &buf[..end], base, eof, sink)?;
        if eof {
            return fixed_end(state, base + end as u64);
        }
        buf.copy_within(consumed..end, 0);
        base += consumed as u64;
        end -= consumed;
    }
}

/// After the last record: the file must have ended with its trailer.
fn fixed_end(state: &State<'_>, size: u64) -> Result<(), Stop> {
    if state.phase == Phase::Done {
        return Ok(());
    }
    let what = match state.phase {
        Phase::ExpectHeader => "missing header: the file has no records",
        _ => "missing trailer: the file ends without its trailer record",
    };
    Err(invalid(Some(state.record_no + 1), Some(size), None, what))
}

/// Frame and check the records in `bytes`, which starts on a record boundary
/// at file offset `base`. Returns the bytes consumed: all of them at end of
/// file (`eof`), otherwise up to a partial record left for the next call.
fn fixed_records(
    spec: &FormatSpec,
    layout: &FixedLayout,
    state: &mut State<'_>,
    bytes: &[u8],
    base: u64,
    eof: bool,
    sink: &mut dyn RecordSink,
) -> Result<usize, Stop> {
    let len = layout.record_length;
    let mut start = 0usize;
    while start < bytes.len() {
        let offset = base + start as u64;
        let number = state.record_no + 1;
        let avail = &bytes[start..];
        let (record, consumed) = match layout.terminator {
            Terminator::None if avail.len() >= len => (&avail[..len], len),
            Terminator::None if !eof => break,
            Terminator::None => {
                return Err(invalid(
                    Some(number),
                    Some(offset),
                    None,
                    format!(
                        "the file size ({} bytes) is not a multiple of {len}: the last record has only {} bytes",
                        offset + avail.len() as u64,
                        avail.len()
                    ),
                ));
            }
            Terminator::Line => {
                let window = &avail[..avail.len().min(len + 2)];
                match memchr::memchr(b'\n', window) {
                    Some(nl) => {
                        let line = &avail[..nl];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        if line.len() != len {
                            return Err(length_error(number, offset, len, line.len()));
                        }
                        (line, nl + 1)
                    }
                    None if avail.len() > len + 1 => {
                        return Err(length_error(number, offset, len, len + 2));
                    }
                    None if !eof => break,
                    // The last record may end at end of file without a terminator.
                    None => {
                        let line = avail.strip_suffix(b"\r").unwrap_or(avail);
                        if line.len() != len {
                            return Err(length_error(number, offset, len, line.len()));
                        }
                        (line, avail.len())
                    }
                }
            }
        };
        state.record_no = number;
        fixed_record(spec, layout, state, record, number, offset, sink)?;
        start += consumed;
    }
    Ok(start)
}

fn length_error(number: u64, offset: u64, len: usize, found: usize) -> Stop {
    let found = if found > len {
        format!("more than {len}")
    } else {
        found.to_string()
    };
    invalid(
        Some(number),
        Some(offset),
        None,
        format!("expected {len} bytes before the line end, found {found}"),
    )
}

/// Fill `buf` as far as the input allows (short reads are not end of file).
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = input.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn fixed_record(
    spec: &FormatSpec,
    layout: &FixedLayout,
    state: &mut State<'_>,
    record: &[u8],
    number: u64,
    offset: u64,
    sink: &mut dyn RecordSink,
) -> Result<(), Stop> {
    let code = &record[layout.type_offset..layout.type_offset + layout.type_len];
    // Codes are a byte or two: compare the first byte before the slices.
    let Some(def_index) = layout
        .records
        .iter()
        .position(|r| r.code.first() == code.first() && r.code == code)
    else {
        let known: Vec<String> = layout
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.code).into_owned())
            .collect();
        return Err(invalid(
            Some(number),
            Some(offset + layout.type_offset as u64),
            None,
            format!(
                "unknown record type {:?}: expected one of {}",
                String::from_utf8_lossy(code),
                known.join(", ")
            ),
        ));
    };
    let def = &layout.records[def_index];
    if state.chunk && def.role != Role::Data {
        // Only the in-order pass can place a header or trailer.
        return Err(invalid(
            Some(number),
            Some(offset),
            None,
            "not a data record",
        ));
    }
    let code_text = || String::from_utf8_lossy(&def.code).into_owned();
    match (state.phase, def.role) {
        (Phase::ExpectHeader, Role::Header) | (Phase::Body, Role::Data | Role::Trailer) => {}
        (Phase::ExpectHeader, _) => {
            let header = spec
                .header()
                .map(|h| String::from_utf8_lossy(&h.code).into_owned());
            return Err(invalid(
                Some(number),
                Some(offset),
                None,
                format!(
                    "expected the header record ({}) first, found {}",
                    header.unwrap_or_default(),
                    code_text()
                ),
            ));
        }
        (Phase::Body, Role::Header) => {
            return Err(invalid(
                Some(number),
                Some(offset),
                None,
                "a second header record",
            ));
        }
        (Phase::Done, _) => {
            return Err(invalid(
                Some(number),
                Some(offset),
                None,
                format!(
                    "record {} after the trailer: the trailer must be the last record",
                    code_text()
                ),
            ));
        }
    }
    if def.role == Role::Data
        && let Some(Some(plan)) = state.plans.get(def_index)
        && plan.accept(record, def_index, state)
    {
        return Ok(());
    }
    state.decode_fixed(def, record, number, offset)?;
    match def.role {
        Role::Header => {
            state.header(def);
            state.phase = Phase::Body;
        }
        Role::Data => state.data(def_index, def, number, offset, sink)?,
        Role::Trailer => {
            state.trailer(def, number, offset)?;
            state.phase = Phase::Done;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

fn verify_csv<R: Read>(
    spec: &FormatSpec,
    layout: &CsvLayout,
    input: &mut R,
    ctx: &FileContext<'_>,
    state: &mut State<'_>,
    sink: &mut dyn RecordSink,
) -> Result<(), Stop> {
    state.read_name(ctx.name)?;
    if spec.sidecar.is_some() && ctx.sidecar.is_none() {
        let name = spec.sidecar_name(ctx.name).unwrap_or_default();
        return Err(invalid(
            None,
            None,
            None,
            format!("control file {name} is missing: the data file is not complete without it"),
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(layout.delimiter)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(CHUNK)
        .from_reader(input);
    let row = &layout.row;
    let mut record = csv::ByteRecord::new();
    let mut first = true;
    state.phase = Phase::Body;
    loop {
        let more = match reader.read_byte_record(&mut record) {
            Ok(m) => m,
            Err(e) => return Err(csv_error(e, state.record_no)),
        };
        if !more {
            break;
        }
        let offset = record.position().map_or(0, |p| p.byte());
        if first {
            first = false;
            // A UTF-8 BOM is accepted before the first row.
            if record
                .get(0)
                .is_some_and(|f| f.starts_with(b"\xEF\xBB\xBF"))
            {
                let mut stripped = csv::ByteRecord::new();
                for (i, f) in record.iter().enumerate() {
                    stripped.push_field(if i == 0 { &f[3..] } else { f });
                }
                stripped.set_position(record.position().cloned());
                record = stripped;
            }
            if layout.header {
                check_header_row(row, &record, offset)?;
                continue;
            }
        }
        let number = state.record_no + 1;
        if record.len() != row.fields.len() {
            return Err(invalid(
                Some(number),
                Some(offset),
                None,
                format!(
                    "expected {} fields, found {}",
                    row.fields.len(),
                    record.len()
                ),
            ));
        }
        state.record_no = number;
        state.decode_fields(row, record.iter().map(|f| (f, offset)), number)?;
        state.data(0, row, number, offset, sink)?;
    }
    if layout.header && first {
        return Err(invalid(
            Some(0),
            Some(0),
            None,
            "the file is empty: expected the header row",
        ));
    }
    state.phase = Phase::Done;
    Ok(())
}

fn check_header_row(row: &RecordDef, record: &csv::ByteRecord, offset: u64) -> Result<(), Stop> {
    let expected: Vec<&str> = row.fields.iter().map(|f| f.name.as_str()).collect();
    let found: Vec<String> = record
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    if found != expected {
        return Err(invalid(
            Some(0),
            Some(offset),
            None,
            format!(
                "expected the header row {:?}, found {:?}",
                expected.join(","),
                found.join(",")
            ),
        ));
    }
    Ok(())
}

fn csv_error(e: csv::Error, rows: u64) -> Stop {
    let offset = e.position().map(|p| p.byte());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Stop::Io(io),
        other => invalid(Some(rows + 1), offset, None, format!("{other:?}")),
    }
}

/// Compare the sidecar control file with what the data file gave.
fn check_sidecar(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_data_record_type_adds_its_own_amount() {
        let text = include_str!("../../tests/specs/two-data-types.toml");
        let spec =
            FormatSpec::from_toml(text, std::path::Path::new("two-data-types.toml")).unwrap();
        // D has its amount at byte 10, C at byte 1: 100 + 50.
        let file = |total: &str| {
            format!(
                "H20261121           \nDR0001note0000000100\nC0000000050R0002    \nT{total}       \n"
            )
        };
        let ctx = FileContext::default();
        let mut every = |_: &DataRecord<'_>| ControlFlow::Continue(());
        let good = file("000000000150");
        let facts = verify_with(
            &spec,
            good.as_bytes(),
            ctx,
            &mut (),
            Parallelism::SEQUENTIAL,
        )
        .unwrap();
        assert_eq!(facts.error, None);
        assert_eq!(
            facts.totals,
            vec![("total".to_string(), Decimal::from(150))]
        );
        let chunked = Parallelism {
            workers: 3,
            chunk_bytes: 21,
        };
        assert_eq!(
            verify_with(&spec, good.as_bytes(), ctx, &mut (), chunked).unwrap(),
            facts
        );
        let decoded = verify_with(
            &spec,
            good.as_bytes(),
            ctx,
            &mut every,
            Parallelism::SEQUENTIAL,
        );
        assert_eq!(decoded.unwrap(), facts);
        let off = verify_with(
            &spec,
            file("000000000151").as_bytes(),
            ctx,
            &mut (),
            chunked,
        );
        let error = off.unwrap().error.unwrap();
        assert!(
            error.message.contains("the data records add up to 150"),
            "{error}"
        );
    }

    #[test]
    fn short_messages_hash_as_sha256() {
        let mut short = ShortSha256::default();
        let message: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=message.len() {
            let expected: [u8; 32] = Sha256::digest(&message[..len]).into();
            assert_eq!(short.digest(&message[..len]), expected, "length {len}");
        }
    }

    #[test]
    fn whole_totals_overflow_where_decimals_do() {
        let max = Total::ZERO.add(Decimal::MAX).unwrap();
        assert_eq!(max.value(), Decimal::MAX);
        assert_eq!(max.add_whole(1), None);
        assert_eq!(Decimal::MAX.checked_add(Decimal::ONE), None);
        let min = Total::ZERO.add(Decimal::MIN).unwrap();
        assert_eq!(min.add_whole(-1), None);
        assert_eq!(
            min.add_whole(1).map(Total::value),
            Decimal::MIN.checked_add(Decimal::ONE)
        );
        // A failed add leaves the total as it was.
        let mut t = max;
        assert!(!t.add_whole_in_place(1));
        assert_eq!(t, max);
    }

    #[test]
    fn a_decimal_addend_makes_a_decimal_total() {
        let t = Total::Whole(5).add(Decimal::new(150, 2)).unwrap();
        assert_eq!(t.value().to_string(), "6.50");
        assert_eq!(t.add_whole(-7).unwrap().value().to_string(), "-0.50");
        // Whole addends written as decimals stay whole.
        let w = Total::Whole(5).add(Decimal::from(-7)).unwrap();
        assert_eq!(w, Total::Whole(-2));
        assert_eq!(
            w.add_total(Total::Whole(2)).unwrap().value().to_string(),
            "0"
        );
    }
}
