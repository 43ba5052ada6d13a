//! Fixed-width files, in order: framing by record length and terminator,
//! record types and their header → data → trailer order, and decoding each
//! field strictly from its byte slice (a multi-byte character split by a
//! field boundary is an error where it happens). Data records go by their
//! compiled plan when they have one. `parallel` reuses the framing for its
//! chunks.

use std::io::{self, Read};

use super::super::codec::{self, FieldValue};
use super::super::spec::{FixedLayout, FormatSpec, RecordDef, Role, Terminator};
use super::{CHUNK, FileContext, Phase, RecordSink, State, Stop, field_error, invalid};

/// Bytes of the first read of a file checked in order.
const FIRST_READ: usize = 16 << 10;

/// Check a fixed-width file in order, record by record.
pub(super) fn verify_fixed<R: Read>(
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
    // `fixed_records` leaves unconsumed is always shorter than that. It
    // starts small and grows while reads fill it, so a small file does not
    // pay for a chunk's buffer.
    let full = CHUNK + len + 2;
    let mut buf = vec![0u8; full.min(FIRST_READ + len + 2)];
    let mut end = 0usize;
    // File offset of buf[0].
    let mut base: u64 = 0;
    loop {
        let want = buf.len() - end;
        let n = read_full(input, &mut buf[end..])?;
        end += n;
        let eof = n < want;
        if !eof && buf.len() < full {
            buf.resize(full.min(buf.len() * 4), 0);
        }
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
pub(super) fn fixed_end(state: &State<'_>, size: u64) -> Result<(), Stop> {
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
pub(super) fn fixed_records(
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
pub(super) fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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

pub(super) fn fixed_record(
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

impl State<'_> {
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
}
