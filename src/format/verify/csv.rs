//! CSV files: RFC 4180 rows read by the `csv` crate, an optional header
//! row that must name the columns, a BOM accepted before the first row, and
//! each cell decoded and typed as a field. A quoted field may span lines:
//! the row is one record, numbered as a data row, at the byte where it
//! starts, and its line breaks are read as LF. A file with a sidecar is not
//! read until its control file is there.

use std::collections::VecDeque;
use std::io::{self, Read};

use super::super::codec::{self, Controls};
use super::super::spec::{CsvLayout, FieldType, FormatSpec, RecordDef};
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
        .from_reader(LineEnds::new(input));
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
        let offset = reader
            .get_mut()
            .row_start(record.position().map_or(0, |p| p.byte()));
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
            return Err(field_count_error(
                &record,
                row.fields.len(),
                layout.delimiter,
                number,
                offset,
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
    /// Decode every field of a CSV row into `self.values`. Text fields may
    /// hold line breaks (a quoted field spans lines), read as LF; no other
    /// control character, and none in a field of another type.
    fn decode_fields<'a>(
        &mut self,
        def: &RecordDef,
        slices: impl Iterator<Item = (&'a [u8], u64)>,
        record: u64,
    ) -> Result<(), Stop> {
        self.values.clear();
        self.buf.clear();
        for (f, (raw, offset)) in def.fields.iter().zip(slices) {
            let controls = match f.ty {
                FieldType::Text => Controls::LineBreaks,
                _ => Controls::Refused,
            };
            let value = codec::parse_field(
                f,
                raw,
                self.spec.encoding,
                controls,
                &mut self.buf,
                &mut self.dates,
            );
            match value {
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

/// The reader under the CSV parser. It notes where runs of two or more
/// line-end bytes (CR, LF) lie, so that a row's offset is where the row
/// starts: the parser reports a row as starting right after the first byte
/// of the line end before it, which is the LF of a CRLF, or a blank line.
/// (A run of one byte is a line end the parser has passed whole.)
struct LineEnds<R> {
    inner: R,
    /// File offset of the next byte read.
    offset: u64,
    /// Runs not yet passed, as file offsets `start..end`, in file order.
    runs: VecDeque<(u64, u64)>,
    /// Where a run of line ends that reached the end of the last read began.
    open: Option<u64>,
}

impl<R: Read> LineEnds<R> {
    fn new(inner: R) -> Self {
        LineEnds {
            inner,
            offset: 0,
            runs: VecDeque::new(),
            open: None,
        }
    }

    /// Where the row the parser says starts at `reported` starts: after the
    /// run of line ends it is in, if any. Rows are asked for in file order.
    fn row_start(&mut self, reported: u64) -> u64 {
        while let Some(&(start, end)) = self.runs.front() {
            if end <= reported {
                self.runs.pop_front();
            } else {
                return if start <= reported { end } else { reported };
            }
        }
        reported
    }

    fn close_run(&mut self, end: u64) {
        if let Some(start) = self.open.take()
            && end - start >= 2
        {
            self.runs.push_back((start, end));
        }
    }
}

impl<R: Read> Read for LineEnds<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let bytes = &buf[..n];
        let mut at = 0;
        while at < n {
            if self.open.is_none() {
                match memchr::memchr2(b'\r', b'\n', &bytes[at..]) {
                    Some(i) => {
                        at += i;
                        self.open = Some(self.offset + at as u64);
                    }
                    None => break,
                }
            }
            match bytes[at..].iter().position(|b| !matches!(b, b'\r' | b'\n')) {
                Some(i) => {
                    at += i;
                    self.close_run(self.offset + at as u64);
                }
                None => at = n,
            }
        }
        self.offset += n as u64;
        if n == 0 {
            self.close_run(self.offset);
        }
        Ok(n)
    }
}

/// A row with the wrong number of fields, and the likely reason: a row
/// ends at a line break outside quotes, and a delimiter outside quotes
/// separates fields.
fn field_count_error(
    record: &csv::ByteRecord,
    expected: usize,
    delimiter: u8,
    number: u64,
    offset: u64,
) -> Stop {
    let found = record.len();
    let spans_lines = record
        .iter()
        .position(|f| f.iter().any(|b| matches!(b, b'\r' | b'\n')));
    let why = match spans_lines {
        Some(i) => format!(
            "the quoted field in column {} runs over a line break; is its closing quote missing?",
            i + 1
        ),
        None if found < expected => "a line break outside quotes ends the row early; \
             quote fields that contain line breaks"
            .to_string(),
        None => format!(
            "a {:?} outside quotes separates fields; quote fields that contain it",
            char::from(delimiter)
        ),
    };
    invalid(
        Some(number),
        Some(offset),
        None,
        format!("expected {expected} fields, found {found}: {why}"),
    )
}

fn csv_error(e: csv::Error, rows: u64) -> Stop {
    let offset = e.position().map(|p| p.byte());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Stop::Io(io),
        other => invalid(Some(rows + 1), offset, None, format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives at most `step` bytes a time.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Each row's offset as the parser reports it and as `row_start` corrects it.
    fn row_starts(bytes: &[u8], step: usize) -> Vec<u64> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(LineEnds::new(Trickle { bytes, step }));
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            let reported = record.position().unwrap().byte();
            out.push(reader.get_mut().row_start(reported));
        }
        out
    }

    #[test]
    fn a_row_starts_after_the_line_ends_before_it() {
        for (bytes, starts) in [
            (&b"a,b\nc,d\n"[..], vec![0, 4]),
            (b"a,b\r\nc,d\r\n", vec![0, 5]),
            (b"a,b\rc,d\r", vec![0, 4]),
            // Blank lines are skipped.
            (b"\r\n\na,b\r\n\r\n\nc,d", vec![3, 11]),
            // Line breaks inside quotes are part of the row.
            (b"\"a\r\n\r\nb\",c\r\nd,e\r\n", vec![0, 12]),
            (b"x\n\"\n\n\",y\n\n\nz\n", vec![0, 2, 11]),
        ] {
            for step in [1, 2, 3, 1000] {
                assert_eq!(row_starts(bytes, step), starts, "{bytes:?} by {step}");
            }
        }
    }

    #[test]
    fn a_row_with_the_wrong_field_count_says_why() {
        let why = |fields: Vec<&str>| match field_count_error(
            &csv::ByteRecord::from(fields),
            4,
            b',',
            2,
            30,
        ) {
            Stop::Invalid(e) => e.to_string(),
            Stop::Io(e) => panic!("{e}"),
        };
        assert_eq!(
            why(vec!["a", "b"]),
            "record 2 (byte 30): expected 4 fields, found 2: a line break outside quotes \
             ends the row early; quote fields that contain line breaks"
        );
        assert_eq!(
            why(vec!["a", "b", "c", "d", "e"]),
            "record 2 (byte 30): expected 4 fields, found 5: a ',' outside quotes \
             separates fields; quote fields that contain it"
        );
        assert_eq!(
            why(vec!["a", "b\nc,d\ne", "f"]),
            "record 2 (byte 30): expected 4 fields, found 3: the quoted field in column 2 \
             runs over a line break; is its closing quote missing?"
        );
    }
}
