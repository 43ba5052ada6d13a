//! CSV files: RFC 4180 rows read by the `csv` crate, an optional header
//! row that must name the columns, a BOM accepted before the first row, and
//! each cell decoded and typed as a field. A file with a sidecar is not
//! read until its control file is there.

use std::io::Read;

use super::super::codec;
use super::super::spec::{CsvLayout, FormatSpec, RecordDef};
use super::{CHUNK, FileContext, Phase, RecordSink, State, Stop, field_error, invalid};

/// Check a CSV file row by row.
pub(super) fn verify_csv<R: Read>(
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

impl State<'_> {
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
