//! The streaming verifier: one pass over a file's bytes that checks every
//! record against its spec and yields the file's facts — checksum, content
//! fingerprint, business key, record keys (through a [`RecordSink`]), drill
//! signals and recomputed control totals.
//!
//! It reads from any `Read` in fixed-size chunks and never holds the whole
//! file; it does no file-system, network or clock access, so it is tested with
//! byte fixtures and property tests alone.
//!
//! Its parts, one concern each: `facts` (what a pass yields — the facts,
//! the error, the records handed to a sink), `checksum` (SHA-256 of the raw
//! bytes, on its own thread), `fingerprint` (the order-insensitive content
//! fingerprint), `totals` (exact control totals), `records` (the checks
//! every record goes through whatever the layout), `fixed` and `csv`
//! (framing and decoding of each layout), `sidecar` (the control file),
//! `compiled` (data record plans for plain verification) and `parallel`
//! (fixed-width files in chunks over threads). This module holds the entry
//! points and the state one pass carries.

use std::io::{self, Read};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::codec::{self, FieldError, FieldValue};
use super::rules::RecordRef;
use super::spec::{FieldDef, FormatSpec, Layout, Measure, RecordDef};

mod checksum;
mod compiled;
mod csv;
mod facts;
mod fingerprint;
mod fixed;
mod parallel;
mod records;
mod sidecar;
mod totals;

pub use facts::{DataRecord, FileContext, FileFacts, RecordSink, VerifyError};
pub use parallel::Parallelism;

use self::csv::verify_csv;
use checksum::{Block, HashingReader};
use fingerprint::Fingerprint;
use fixed::verify_fixed;
use sidecar::check_sidecar;
use totals::Total;

/// Bytes read from the input at a time.
const CHUNK: usize = 1 << 20;

/// Bytes read at a time past the point where a pass stopped.
const DRAIN: usize = 256 * 1024;

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

/// [`verify`] of a whole file held in memory, in order, on the calling
/// thread: for small files, which a checksum thread and chunk buffers
/// would slow down. The facts are those of [`verify`].
pub fn verify_whole(
    spec: &FormatSpec,
    bytes: &[u8],
    ctx: FileContext<'_>,
    sink: &mut dyn RecordSink,
) -> io::Result<FileFacts> {
    let plans = plans_for(spec, sink);
    let mut state = State::new(spec);
    state.plans = &plans;
    let mut input = bytes;
    let result = match &spec.layout {
        Layout::Fixed(layout) => verify_fixed(spec, layout, &mut input, &ctx, &mut state, sink),
        Layout::Csv(layout) => verify_csv(spec, layout, &mut input, &ctx, &mut state, sink),
    };
    let checksum = <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    conclude(spec, &ctx, state, result, (checksum, bytes.len() as u64))
}

/// Plain verification checks data records by their compiled plans; a sink
/// gets every record decoded by the general path.
fn plans_for(spec: &FormatSpec, sink: &dyn RecordSink) -> Vec<Option<compiled::RecordPlan>> {
    if sink.wants_records() {
        Vec::new()
    } else {
        compiled::compile(spec)
    }
}

/// The facts of a finished pass: its state, how it stopped, and the
/// checksum and size of what it read.
fn conclude(
    spec: &FormatSpec,
    ctx: &FileContext<'_>,
    state: State<'_>,
    result: Result<(), Stop>,
    (checksum, size): ([u8; 32], u64),
) -> io::Result<FileFacts> {
    let error = match result {
        Ok(()) => None,
        Err(Stop::Io(e)) => return Err(e),
        Err(Stop::Invalid(e)) => Some(e),
    };
    let mut facts = state.into_facts(spec, checksum, size, error);
    if facts.error.is_none()
        && let Some(e) = check_sidecar(spec, ctx, &facts)
    {
        facts.error = Some(e);
        facts.fingerprint = None;
    }
    Ok(facts)
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
        let hasher = scope.spawn(move || checksum::of_blocks(rx));
        let plans = plans_for(spec, sink);
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
                // Read what is left so the checksum always covers the whole
                // file, in large reads: each read is a block for the
                // checksum thread, and `io::copy`'s 8 KiB would make a
                // hand-off of every 8 KiB of an invalid file's rest.
                if !matches!(result, Err(Stop::Io(_))) {
                    let mut rest = vec![0u8; DRAIN];
                    while input.read(&mut rest)? > 0 {}
                }
                result
            }
        };
        if let Err(Stop::Io(e)) = result {
            return Err(e);
        }
        let hashed = hasher
            .join()
            .map_err(|_| io::Error::other("the checksum thread failed"))?;
        conclude(spec, &ctx, state, result, hashed)
    })
}

/// Why a pass stopped early: the input could not be read, or the file is invalid.
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

fn field_error(record: u64, offset: u64, f: &FieldDef, e: FieldError) -> Stop {
    invalid(Some(record), Some(offset), Some(&f.name), e.to_string())
}

/// Where the pass is in the header → data → trailer order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ExpectHeader,
    Body,
    Done,
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
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;

    #[test]
    fn each_data_record_type_adds_its_own_amount() {
        let text = include_str!("../../../tests/specs/two-data-types.toml");
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
}
