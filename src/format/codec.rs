//! Field codec: strict decoding of byte slices in the file's encoding and
//! typing of the decoded text. Pure functions over bytes.
//!
//! Fixed-width files are sliced first and decoded field by field, so a
//! multi-byte character split across a field boundary is caught where it
//! happens (a field that ends on a CP949 lead byte), instead of being decoded
//! into a different, valid-looking syllable.

use std::ops::Range;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rust_decimal::Decimal;

use super::spec::{FieldDef, FieldType, ScaleRule};

/// The character encodings a spec may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Windows-949 (the superset of EUC-KR Korean institutions use); the WHATWG
    /// `euc-kr` decoder of `encoding_rs` is exactly this.
    Cp949,
    Utf8,
}

impl Encoding {
    /// Map a label to an encoding. `encoding_rs`' label lookup does not know
    /// `cp949`/`ms949`, so they are mapped here.
    pub fn from_label(label: &str) -> Option<Encoding> {
        match label.trim().to_ascii_lowercase().as_str() {
            "cp949" | "ms949" | "windows-949" | "uhc" | "euc-kr" | "euckr" => Some(Encoding::Cp949),
            "utf-8" | "utf8" => Some(Encoding::Utf8),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Encoding::Cp949 => "cp949",
            Encoding::Utf8 => "utf-8",
        }
    }

    /// Decode `bytes` strictly, appending to `out`. No replacement characters,
    /// no BOM sniffing.
    pub fn decode_into(self, bytes: &[u8], out: &mut String) -> Result<(), DecodeError> {
        if bytes.is_ascii() {
            // ASCII is ASCII in both encodings; the common case stays cheap.
            // `is_ascii` guarantees valid UTF-8.
            out.push_str(std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid { at: 0 })?);
            return Ok(());
        }
        match self {
            Encoding::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Err(e) if e.error_len().is_none() => Err(DecodeError::SplitCharacter {
                    at: e.valid_up_to(),
                }),
                Err(e) => Err(DecodeError::Invalid {
                    at: e.valid_up_to(),
                }),
            },
            Encoding::Cp949 => {
                let mut decoder = encoding_rs::EUC_KR.new_decoder_without_bom_handling();
                let need = decoder
                    .max_utf8_buffer_length_without_replacement(bytes.len())
                    .unwrap_or(bytes.len() * 3);
                out.reserve(need);
                let (result, read) = decoder.decode_to_string_without_replacement(bytes, out, true);
                match result {
                    encoding_rs::DecoderResult::InputEmpty => Ok(()),
                    encoding_rs::DecoderResult::Malformed(bad, extra) => {
                        let at = read.saturating_sub(bad as usize + extra as usize);
                        // A lead byte at the very end with nothing after it: the
                        // character was cut by the field boundary.
                        if at + 1 == bytes.len() && (0x81..=0xFE).contains(&bytes[at]) {
                            Err(DecodeError::SplitCharacter { at })
                        } else {
                            Err(DecodeError::Invalid { at })
                        }
                    }
                    encoding_rs::DecoderResult::OutputFull => {
                        Err(DecodeError::Invalid { at: read })
                    }
                }
            }
        }
    }
}

/// The 2 350 Hangul syllables of KS X 1001, the ones CP949 text is nearly
/// all made of (lead bytes B0–C8, trail bytes A1–FE), by
/// `(lead - 0xB0) * 94 + (trail - 0xA1)`. Filled once from `encoding_rs`,
/// so the table cannot disagree with the decoder it stands in for.
static KSX1001_HANGUL: std::sync::LazyLock<Vec<Option<char>>> = std::sync::LazyLock::new(|| {
    let mut table = Vec::with_capacity(25 * 94);
    for lead in 0xB0u8..=0xC8 {
        for trail in 0xA1u8..=0xFE {
            let pair = [lead, trail];
            let text =
                encoding_rs::EUC_KR.decode_without_bom_handling_and_without_replacement(&pair);
            let mut chars = text.as_deref().unwrap_or_default().chars();
            let one = match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => None,
            };
            table.push(one);
        }
    }
    table
});

/// Decode CP949 text made only of printable ASCII, the common Hangul
/// syllables and the ideographic space (A1 A1), appending to `out`: the
/// common case of Korean names without the general decoder's per-call setup.
/// Anything else (a control character, a rarer character, a byte that does
/// not decode, a character cut at the end) returns `false` with `out` as it
/// was, for `encoding_rs` to decode or word the error.
#[inline]
fn cp949_common_into(bytes: &[u8], out: &mut String) -> bool {
    let table = &*KSX1001_HANGUL;
    let start = out.len();
    out.reserve(bytes.len() * 3 / 2);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.wrapping_sub(0x20) < 0x5f {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let c = match (b, bytes.get(i + 1)) {
            (0xB0..=0xC8, Some(&t @ 0xA1..=0xFE)) => {
                table[usize::from(b - 0xB0) * 94 + usize::from(t - 0xA1)]
            }
            (0xA1, Some(0xA1)) => Some('\u{3000}'),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                i += 2;
            }
            None => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The slice ends inside a multi-byte character (byte `at` starts it).
    SplitCharacter { at: usize },
    /// Byte `at` starts a sequence that is not valid in the encoding.
    Invalid { at: usize },
}

/// A typed field value. Text lives in the record's text buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text,
    /// `N` (unsigned, as written) or `decimal` (signed).
    Number(Decimal),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    /// `true` for `-`.
    Sign(bool),
}

/// One decoded field: its value and where its trimmed text sits in the buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    pub value: Value,
    pub text: Range<usize>,
}

/// Why a field's text is not a value of its type. Rendered as the message
/// after `field X:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("the field ends inside a multi-byte character (byte {at} of the field starts it)")]
    SplitCharacter { at: usize },
    #[error("not valid {encoding} at byte {at} of the field")]
    Encoding { encoding: &'static str, at: usize },
    #[error("expected digits, found {found:?}")]
    Digits { found: String },
    #[error("expected a date {pattern}, found {found:?}")]
    Date {
        pattern: &'static str,
        found: String,
    },
    #[error("expected a date-time YYYYMMDDHHMMSS, found {found:?}")]
    DateTime { found: String },
    #[error("expected a sign + or -, found {found:?}")]
    Sign { found: String },
    #[error("expected a decimal number, found {found:?}")]
    Decimal { found: String },
    #[error("expected at most {max} decimal places{context}, found {found:?}")]
    Scale {
        max: u32,
        context: String,
        found: String,
    },
    #[error("expected one of {expected}, found {found:?}")]
    NotAllowed { expected: String, found: String },
    #[error("expected a value, found an empty field")]
    Empty,
    #[error("unexpected control character U+{code:04X}")]
    Control { code: u32 },
}

/// The control characters a field's text may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controls {
    /// None: in a fixed-width record or a file name a CR, LF, TAB or NUL is
    /// corruption.
    Refused,
    /// Line breaks, which a quoted CSV field may hold (RFC 4180 §2.6); every
    /// other control character is refused. A line break is read as one LF,
    /// whether written CRLF, LF or a lone CR (which the CSV reader also takes
    /// as a row's end), so the value, and the record key and fingerprint
    /// built from it, do not depend on the sender's line endings.
    LineBreaks,
}

impl Controls {
    #[inline(always)]
    fn allows(self, c: char) -> bool {
        matches!((self, c), (Controls::LineBreaks, '\r' | '\n'))
    }
}

/// Decode and type one field. `raw` is the field's bytes (fixed) or cell (CSV);
/// the trimmed text is appended to `buf`.
pub fn parse_field(
    def: &FieldDef,
    raw: &[u8],
    encoding: Encoding,
    controls: Controls,
    buf: &mut String,
    dates: &mut DateMemo,
) -> Result<FieldValue, FieldError> {
    let start = buf.len();
    // Printable ASCII is the same text in every supported encoding: the
    // common case skips the decoder and the control-character scan.
    let ascii = if is_printable_ascii(raw) {
        std::str::from_utf8(raw).ok()
    } else {
        None
    };
    match ascii {
        Some(s) => buf.push_str(s),
        None => decode_text(raw, encoding, controls, buf)?,
    }
    let end = start + trimmed_len(&buf.as_bytes()[start..]);
    buf.truncate(end);
    let value = type_value(def, &buf[start..end], raw.len(), dates)?;
    Ok(FieldValue {
        value,
        text: start..end,
    })
}

/// Whether every byte is printable ASCII (0x20..=0x7E). Written without an
/// early exit so the compiler vectorises it.
pub fn is_printable_ascii(raw: &[u8]) -> bool {
    raw.iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x20) < 0x5f))
}

/// Type an already decoded and trimmed field text. `width` is the raw
/// field's length in bytes.
#[inline(always)]
pub fn type_value(
    def: &FieldDef,
    text: &str,
    width: usize,
    dates: &mut DateMemo,
) -> Result<Value, FieldError> {
    let value = match def.ty {
        FieldType::Text => Value::Text,
        FieldType::Digits => Value::Number(parse_digits(text, width)?),
        FieldType::Date => Value::Date(dates.compact_date(text.as_bytes())?),
        FieldType::DateTime => Value::DateTime(parse_datetime(text)?),
        FieldType::Sign => match text {
            "+" => Value::Sign(false),
            "-" => Value::Sign(true),
            other => {
                return Err(FieldError::Sign {
                    found: other.to_string(),
                });
            }
        },
        FieldType::IsoDate => Value::Date(parse_iso_date(text)?),
        FieldType::Decimal => Value::Number(parse_decimal(text)?),
    };
    if def.required && text.is_empty() {
        return Err(FieldError::Empty);
    }
    if let Some(values) = &def.values
        && !values.iter().any(|v| v == text)
    {
        return Err(FieldError::NotAllowed {
            expected: values
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            found: text.to_string(),
        });
    }
    Ok(value)
}

/// Strict decode of a field that is not plain printable ASCII, refusing
/// control characters (a stray CR, LF or NUL inside a record is corruption).
pub fn decode_checked(raw: &[u8], encoding: Encoding, buf: &mut String) -> Result<(), FieldError> {
    decode_text(raw, encoding, Controls::Refused, buf)
}

/// Strict decode of a field that is not plain printable ASCII, refusing the
/// control characters `controls` does not allow; line breaks it allows are
/// appended as LF.
#[inline(always)]
pub fn decode_text(
    raw: &[u8],
    encoding: Encoding,
    controls: Controls,
    buf: &mut String,
) -> Result<(), FieldError> {
    let start = buf.len();
    // Hangul text takes the common syllables' table: it holds no control
    // character and no line break, so there is nothing left to check.
    if encoding == Encoding::Cp949 && cp949_common_into(raw, buf) {
        return Ok(());
    }
    if let Err(e) = encoding.decode_into(raw, buf) {
        buf.truncate(start);
        return Err(match e {
            DecodeError::SplitCharacter { at } => FieldError::SplitCharacter { at },
            DecodeError::Invalid { at } => FieldError::Encoding {
                encoding: encoding.label(),
                at,
            },
        });
    }
    if let Some(c) = buf[start..]
        .chars()
        .find(|&c| c.is_control() && !controls.allows(c))
    {
        buf.truncate(start);
        return Err(FieldError::Control { code: c as u32 });
    }
    if controls == Controls::LineBreaks && buf[start..].contains('\r') {
        line_breaks_as_lf(buf, start);
    }
    Ok(())
}

/// Rewrite `buf[start..]`'s line breaks as LF: CRLF and a lone CR alike.
fn line_breaks_as_lf(buf: &mut String, start: usize) {
    let text = buf.split_off(start);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            chars.next_if_eq(&'\n');
            buf.push('\n');
        } else {
            buf.push(c);
        }
    }
}

/// Length of `b` (text in UTF-8) without its right padding: spaces and U+3000 (ideographic space).
/// Runs for every field of every record, so it compares words and bytes,
/// never slices (a slice comparison is a call).
pub fn trimmed_len(b: &[u8]) -> usize {
    const SPACES: u64 = u64::from_ne_bytes(*b"        ");
    let mut end = b.len();
    // Long space fillers are common: skip them eight bytes at a time.
    while let Some(word) = end.checked_sub(8).and_then(|start| b.get(start..end)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if u64::from_ne_bytes(w) != SPACES {
            break;
        }
        end -= 8;
    }
    loop {
        match b[..end] {
            [.., b' '] => end -= 1,
            // U+3000 in UTF-8.
            [.., 0xE3, 0x80, 0x80] => end -= 3,
            _ => return end,
        }
    }
}

/// `N`: digits only, the full width (zero-padded; trailing spaces are not digits).
#[inline]
fn parse_digits(text: &str, width: usize) -> Result<Decimal, FieldError> {
    let bytes = text.as_bytes();
    // `width` is the raw field's length: trailing padding trimmed away means
    // the field was not zero-padded digits.
    let value = if bytes.is_empty() || bytes.len() != width {
        None
    } else if bytes.len() <= 19 {
        digits_u64(bytes).map(Decimal::from)
    } else if bytes.len() <= 28 && bytes.iter().all(u8::is_ascii_digit) {
        let n = bytes
            .iter()
            .fold(0i128, |n, b| n * 10 + i128::from(b - b'0'));
        Decimal::try_from_i128_with_scale(n, 0).ok()
    } else {
        None
    };
    value.ok_or_else(|| FieldError::Digits {
        found: text.to_string(),
    })
}

/// The value of up to 19 ASCII digits (`None` if any byte is not a digit).
/// Amount fields are read eight digits at a time: this runs for every
/// number of every record.
#[inline(always)]
pub(crate) fn digits_u64(bytes: &[u8]) -> Option<u64> {
    let (head, rest) = bytes.split_at(bytes.len() % 8);
    let mut n = 0u64;
    for &b in head {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    for group in rest.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(group);
        n = n.checked_mul(100_000_000)? + eight_digits(u64::from_le_bytes(word))?;
    }
    Some(n)
}

/// Eight ASCII digits, first digit in the lowest byte, as a number.
fn eight_digits(word: u64) -> Option<u64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    // Every byte 0x30..=0x39: high nibble 3, and adding 6 does not carry out of
    // the low nibble.
    if word & HIGH != ZEROS || (word + 0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    let d = word - ZEROS;
    // Pairs, then quads, then the whole: each step multiplies the more
    // significant (lower-addressed) half by its power of ten.
    let d = (d & 0x000F_000F_000F_000F) * 10 + ((d >> 8) & 0x000F_000F_000F_000F);
    let d = (d & 0x0000_00FF_0000_00FF) * 100 + ((d >> 16) & 0x0000_00FF_0000_00FF);
    Some((d & 0x0000_0000_0000_FFFF) * 10_000 + ((d >> 32) & 0x0000_0000_0000_FFFF))
}

/// Split `text` into runs of digits of the given lengths (e.g. 4, 2, 2).
fn digit_groups<const N: usize>(text: &[u8], layout: [usize; N]) -> Option<[u32; N]> {
    let mut out = [0u32; N];
    let mut pos = 0;
    for (slot, len) in out.iter_mut().zip(layout) {
        let part = text.get(pos..pos + len)?;
        let mut n = 0u32;
        for d in part {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(d - b'0');
        }
        *slot = n;
        pos += len;
    }
    (pos == text.len()).then_some(out)
}

/// The compact dates read last, by their text. A file's records repeat a
/// handful of dates, and comparing eight bytes is cheaper than checking a
/// calendar date again.
#[derive(Debug, Clone, Default)]
pub struct DateMemo {
    slots: [(u64, Option<NaiveDate>); 8],
}

impl DateMemo {
    /// `YYYYMMDD`, a real calendar date (see [`parse_compact_date`]).
    pub fn compact_date(&mut self, text: &[u8]) -> Result<NaiveDate, FieldError> {
        let read = || parse_compact_date(&String::from_utf8_lossy(text));
        let Ok(bytes) = <[u8; 8]>::try_from(text) else {
            return read();
        };
        let key = u64::from_le_bytes(bytes);
        let slot = &mut self.slots[(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as usize];
        if slot.0 == key
            && let Some(date) = slot.1
        {
            return Ok(date);
        }
        let date = read()?;
        *slot = (key, Some(date));
        Ok(date)
    }
}

/// `YYYYMMDD`, a real calendar date.
pub fn parse_compact_date(text: &str) -> Result<NaiveDate, FieldError> {
    digit_groups(text.as_bytes(), [4, 2, 2])
        .and_then(|p| NaiveDate::from_ymd_opt(p[0] as i32, p[1], p[2]))
        .ok_or_else(|| FieldError::Date {
            pattern: "YYYYMMDD",
            found: text.to_string(),
        })
}

/// `YYYY-MM-DD`, a real calendar date.
pub fn parse_iso_date(text: &str) -> Result<NaiveDate, FieldError> {
    let b = text.as_bytes();
    let ok = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
    ok.then(|| {
        let compact = [b[0], b[1], b[2], b[3], b[5], b[6], b[8], b[9]];
        digit_groups(&compact, [4, 2, 2])
    })
    .flatten()
    .and_then(|p| NaiveDate::from_ymd_opt(p[0] as i32, p[1], p[2]))
    .ok_or_else(|| FieldError::Date {
        pattern: "YYYY-MM-DD",
        found: text.to_string(),
    })
}

pub(crate) fn parse_datetime(text: &str) -> Result<NaiveDateTime, FieldError> {
    digit_groups(text.as_bytes(), [4, 2, 2, 2, 2, 2])
        .and_then(|p| {
            let d = NaiveDate::from_ymd_opt(p[0] as i32, p[1], p[2])?;
            let t = NaiveTime::from_hms_opt(p[3], p[4], p[5])?;
            Some(NaiveDateTime::new(d, t))
        })
        .ok_or_else(|| FieldError::DateTime {
            found: text.to_string(),
        })
}

/// A plain decimal: optional `-`, digits, optional `.` and digits. No exponent,
/// no thousands separators, no spaces: an amount must be unambiguous.
pub fn parse_decimal(text: &str) -> Result<Decimal, FieldError> {
    let bad = || FieldError::Decimal {
        found: text.to_string(),
    };
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    Decimal::from_str_exact(text).map_err(|_| bad())
}

/// Check a decimal's scale against its rule once the whole record is decoded
/// (the allowed scale may depend on another field, e.g. the currency).
pub fn check_scale(
    rule: &ScaleRule,
    value: &Decimal,
    text: &str,
    fields: &[FieldValue],
    buf: &str,
) -> Result<(), FieldError> {
    let scale = decimal_places(text);
    let (max, context) = match rule {
        ScaleRule::Any => return Ok(()),
        ScaleRule::Max(m) => (*m, String::new()),
        ScaleRule::By { field, scales } => {
            let key = &buf[fields[*field].text.clone()];
            match scales.get(key) {
                Some(m) => (*m, format!(" for {key}")),
                // An unknown key is reported by that field's own `values`.
                None => return Ok(()),
            }
        }
    };
    let _ = value;
    if scale > max {
        return Err(FieldError::Scale {
            max,
            context,
            found: text.to_string(),
        });
    }
    Ok(())
}

fn decimal_places(text: &str) -> u32 {
    text.split_once('.').map_or(0, |(_, f)| f.len() as u32)
}

/// What a field's canonical text is built as (see [`canonical_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    /// As written, trimmed (text, and a sign field's `+`/`-`).
    Text,
    Number,
    /// A number written as digits only (an `N` field): the same text as
    /// `Number` gives it, without looking for a sign or a point.
    Digits,
    Date,
    DateTime,
}

impl Canon {
    pub fn of(value: &Value) -> Canon {
        match value {
            Value::Text | Value::Sign(_) => Canon::Text,
            Value::Number(_) => Canon::Number,
            Value::Date(_) => Canon::Date,
            Value::DateTime(_) => Canon::DateTime,
        }
    }
}

/// Canonical text of a value for fingerprints: independent of padding,
/// zero-padding, trailing decimal zeros and the file's encoding. Built from
/// the field's text (already checked against its type), so it costs no
/// number or date formatting. `negative` applies a separate sign field.
#[inline]
pub fn canonical(value: &Value, text: &str, negative: bool, out: &mut Vec<u8>) {
    canonical_as(Canon::of(value), text.as_bytes(), negative, out);
}

/// [`canonical`] by the kind of value alone: the text (UTF-8, checked
/// against its type) says the rest; a sign field's trimmed text is its
/// value, `+` or `-`.
#[inline(always)]
pub fn canonical_as(kind: Canon, text: &[u8], negative: bool, out: &mut Vec<u8>) {
    match kind {
        Canon::Text => out.extend_from_slice(text),
        Canon::Number => {
            let (neg, body) = match text.strip_prefix(b"-") {
                Some(rest) => (!negative, rest),
                None => (negative, text),
            };
            let dot = body.iter().position(|&c| c == b'.').unwrap_or(body.len());
            let frac = body.get(dot + 1..).unwrap_or(&[]);
            let frac = &frac[..frac.iter().rposition(|&c| c != b'0').map_or(0, |p| p + 1)];
            push_number(neg, &body[..dot], frac, out);
        }
        Canon::Digits => push_number(negative, text, &[], out),
        Canon::Date => push_iso_date(text, out),
        Canon::DateTime => {
            // YYYYMMDDHHMMSS → YYYY-MM-DDTHH:MM:SS
            let (date, time) = text.split_at(text.len().min(8));
            push_iso_date(date, out);
            out.push(b'T');
            for (i, pair) in time.chunks(2).enumerate() {
                if i > 0 {
                    out.push(b':');
                }
                out.extend_from_slice(pair);
            }
        }
    }
}

/// A number's canonical text from its digits: the integer part without
/// leading zeros (`0` when none is left), the fraction (already without
/// trailing zeros) after a `.`, and a `-` unless the value is zero.
#[inline(always)]
fn push_number(negative: bool, int: &[u8], frac: &[u8], out: &mut Vec<u8>) {
    let int = &int[int.iter().position(|&c| c != b'0').unwrap_or(int.len())..];
    if int.is_empty() && frac.is_empty() {
        out.push(b'0');
        return;
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(if int.is_empty() { b"0" } else { int });
    if !frac.is_empty() {
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

/// `YYYYMMDD` or `YYYY-MM-DD` → `YYYY-MM-DD`.
fn push_iso_date(text: &[u8], out: &mut Vec<u8>) {
    if let [y0, y1, y2, y3, m0, m1, d0, d1] = *text {
        out.extend_from_slice(&[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1]);
    } else {
        out.extend_from_slice(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(ty: FieldType) -> FieldDef {
        FieldDef {
            name: "f".into(),
            offset: 0,
            len: 0,
            ty,
            key: false,
            record_key: false,
            volatile: false,
            required: false,
            values: None,
            drill_unless: None,
            sign: None,
            scale: ScaleRule::Any,
        }
    }

    fn parse(def: &FieldDef, raw: &[u8], buf: &mut String) -> Result<FieldValue, FieldError> {
        parse_field(
            def,
            raw,
            Encoding::Cp949,
            Controls::Refused,
            buf,
            &mut DateMemo::default(),
        )
    }

    fn cp949(s: &str) -> Vec<u8> {
        let (b, _, bad) = encoding_rs::EUC_KR.encode(s);
        assert!(!bad, "{s} not encodable");
        b.into_owned()
    }

    #[test]
    fn cp949_only_syllables_round_trip() {
        // 똠 (8C 63) and 햏 (C1 64) are outside KS X 1001; only CP949 has them.
        let bytes = cp949("똠햏");
        assert_eq!(bytes, vec![0x8C, 0x63, 0xC1, 0x64]);
        let mut out = String::new();
        Encoding::Cp949.decode_into(&bytes, &mut out).unwrap();
        assert_eq!(out, "똠햏");
    }

    /// The common syllables' table and `encoding_rs` give the same text, or
    /// the table leaves the field to `encoding_rs`: every one- and two-byte
    /// field, and every two-byte pair after a syllable and before ASCII.
    #[test]
    fn the_common_syllables_decode_as_encoding_rs_does() {
        let whole = |bytes: &[u8]| {
            let mut out = String::new();
            Encoding::Cp949.decode_into(bytes, &mut out).map(|()| out)
        };
        let mut taken = 0;
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for bytes in [vec![a], vec![a, b], vec![0xB0, 0xA1, a, b, b'x']] {
                    let mut fast = String::from("kept");
                    if cp949_common_into(&bytes, &mut fast) {
                        taken += 1;
                        assert_eq!(Ok(fast[4..].to_string()), whole(&bytes), "{bytes:02X?}");
                        assert!(!fast.chars().any(char::is_control), "{bytes:02X?}");
                    } else {
                        assert_eq!(fast, "kept", "{bytes:02X?}");
                    }
                }
            }
        }
        // Printable ASCII pairs, the syllables, the ideographic space.
        assert!(taken > 2 * 2350 + 95 * 95, "{taken}");
        let mut out = String::new();
        assert!(cp949_common_into(
            &cp949("홍길동\u{3000}상회 A-1"),
            &mut out
        ));
        assert_eq!(out, "홍길동\u{3000}상회 A-1");
        // CP949-only syllables take the general decoder.
        assert!(!cp949_common_into(&cp949("똠"), &mut out));
        assert!(!cp949_common_into(&cp949("햏"), &mut out));
    }

    #[test]
    fn a_field_ending_on_a_lead_byte_is_a_split_character() {
        let mut bytes = b"AB".to_vec();
        bytes.extend(cp949("홍"));
        bytes.pop(); // cut the trail byte off
        let mut out = String::new();
        assert_eq!(
            Encoding::Cp949.decode_into(&bytes, &mut out),
            Err(DecodeError::SplitCharacter { at: 2 })
        );
        let e = parse(&field(FieldType::Text), &bytes, &mut out).unwrap_err();
        assert!(e.to_string().contains("multi-byte character"), "{e}");
    }

    #[test]
    fn invalid_cp949_is_refused_not_replaced() {
        let mut out = String::new();
        // 0xFF is never a valid CP949 byte.
        assert_eq!(
            Encoding::Cp949.decode_into(b"A\xFFB", &mut out),
            Err(DecodeError::Invalid { at: 1 })
        );
    }

    #[test]
    fn utf8_split_and_invalid() {
        let mut out = String::new();
        let bytes = "가".as_bytes();
        assert_eq!(
            Encoding::Utf8.decode_into(&bytes[..2], &mut out),
            Err(DecodeError::SplitCharacter { at: 0 })
        );
        assert_eq!(
            Encoding::Utf8.decode_into(b"a\xC0b", &mut out),
            Err(DecodeError::Invalid { at: 1 })
        );
    }

    #[test]
    fn labels_include_cp949_aliases() {
        for l in ["cp949", "CP949", "ms949", "euc-kr", "windows-949"] {
            assert_eq!(Encoding::from_label(l), Some(Encoding::Cp949), "{l}");
        }
        assert_eq!(Encoding::from_label("UTF-8"), Some(Encoding::Utf8));
        assert_eq!(Encoding::from_label("latin1"), None);
    }

    #[test]
    fn text_trims_spaces_and_ideographic_spaces() {
        let mut buf = String::new();
        let mut raw = cp949("가");
        raw.extend_from_slice(&[0xA1, 0xA1, b' ', 0xA1, 0xA1]);
        let v = parse(&field(FieldType::Text), &raw, &mut buf).unwrap();
        assert_eq!(&buf[v.text], "가");
    }

    #[test]
    fn digits_are_digits_only() {
        let mut buf = String::new();
        let d = field(FieldType::Digits);
        let v = parse(&d, b"0001200", &mut buf).unwrap();
        assert_eq!(v.value, Value::Number(Decimal::from(1200)));
        for bad in [&b"00 1200"[..], b"1,2", b"-12", b"       ", b"12 "] {
            let e = parse(&d, bad, &mut buf).unwrap_err();
            assert!(matches!(e, FieldError::Digits { .. }), "{bad:?}: {e}");
        }
        let e = parse(&d, b"1,2", &mut buf).unwrap_err();
        assert_eq!(e.to_string(), r#"expected digits, found "1,2""#);
    }

    #[test]
    fn digits_match_the_plain_reading() {
        let plain = |b: &[u8]| -> Option<u64> {
            b.iter().try_fold(0u64, |n, d| {
                d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
            })
        };
        let mut cases: Vec<Vec<u8>> = vec![
            b"0".to_vec(),
            b"00000000".to_vec(),
            b"99999999".to_vec(),
            b"12345678".to_vec(),
            b"1234567890123".to_vec(),
            b"9999999999999999999".to_vec(),
            b"0000000000000000001".to_vec(),
        ];
        // Every byte value at every place of an 8- and a 13-digit number.
        for len in [8usize, 13] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = b"1234567890123"[..len].to_vec();
                    v[at] = b;
                    cases.push(v);
                }
            }
        }
        for case in cases {
            assert_eq!(digits_u64(&case), plain(&case), "{case:?}");
        }
    }

    #[test]
    fn remembered_dates_are_the_dates_read() {
        let mut memo = DateMemo::default();
        for _ in 0..2 {
            for text in ["20261121", "20240229", "20261122", "19991231", "20000101"] {
                assert_eq!(
                    memo.compact_date(text.as_bytes()),
                    parse_compact_date(text),
                    "{text}"
                );
            }
            // Invalid dates are never remembered.
            for bad in ["20230229", "2026112", "abcdefgh"] {
                assert!(memo.compact_date(bad.as_bytes()).is_err(), "{bad}");
            }
        }
    }

    #[test]
    fn dates_must_exist() {
        assert!(parse_compact_date("20240229").is_ok());
        for bad in [
            "20230229",
            "20261131",
            "20261301",
            "2026113",
            "2026-11-3",
            "abcdefgh",
        ] {
            assert!(parse_compact_date(bad).is_err(), "{bad}");
        }
        assert!(parse_iso_date("2026-11-21").is_ok());
        for bad in ["2026-11-31", "20261121", "2026/11/21", "2026-1-021"] {
            assert!(parse_iso_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decimals_are_plain() {
        assert_eq!(parse_decimal("-12.30").unwrap(), Decimal::new(-1230, 2));
        assert_eq!(parse_decimal("0").unwrap(), Decimal::ZERO);
        for bad in [
            "", "-", "1.", ".5", "1e3", "1,000", " 1", "+1", "1.2.3", "--1",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn control_characters_are_refused() {
        let mut buf = String::new();
        let e = parse(&field(FieldType::Text), b"ab\0", &mut buf).unwrap_err();
        assert_eq!(e, FieldError::Control { code: 0 });
        for raw in [&b"ab\ncd"[..], b"ab\r\ncd", b"ab\rcd"] {
            let e = parse(&field(FieldType::Text), raw, &mut buf).unwrap_err();
            assert!(
                matches!(e, FieldError::Control { code: 0x0a | 0x0d }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn csv_text_may_hold_line_breaks_read_as_lf() {
        let text = field(FieldType::Text);
        let cell = |raw: &[u8], buf: &mut String| {
            let mut memo = DateMemo::default();
            parse_field(
                &text,
                raw,
                Encoding::Utf8,
                Controls::LineBreaks,
                buf,
                &mut memo,
            )
            .map(|v| buf[v.text].to_string())
        };
        let mut buf = String::new();
        for raw in [
            &b"Kim\nLee"[..],
            b"Kim\r\nLee",
            b"Kim\rLee",
            b"Kim\r\nLee  ",
        ] {
            assert_eq!(cell(raw, &mut buf).as_deref(), Ok("Kim\nLee"), "{raw:?}");
        }
        // Each break is one LF: an LF after a CRLF, or a CR after an LF, is another.
        assert_eq!(
            cell(b"a\r\n\nb\n\rc", &mut buf).as_deref(),
            Ok("a\n\nb\n\nc")
        );
        assert_eq!(
            cell("서울\r\n문구".as_bytes(), &mut buf).as_deref(),
            Ok("서울\n문구")
        );
        // Other control characters are still refused.
        for (raw, code) in [(&b"a\tb"[..], 9), (b"a\0b", 0), (b"a\x1bb", 0x1b)] {
            assert_eq!(
                cell(raw, &mut buf),
                Err(FieldError::Control { code }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn canonical_normalises_numbers() {
        let mut s = Vec::new();
        let n = Value::Number(Decimal::ZERO);
        for (text, neg, want) in [
            ("15.00", false, "15"),
            ("0001500", false, "1500"),
            ("0001500", true, "-1500"),
            ("0000000", true, "0"),
            ("-0.50", false, "-0.5"),
            ("-0.00", false, "0"),
            ("007.10", false, "7.1"),
        ] {
            s.clear();
            canonical(&n, text, neg, &mut s);
            assert_eq!(s, want.as_bytes(), "{text} {neg}");
        }
        for text in ["0000000", "0001500", "1", "9000000000000", "0"] {
            for neg in [false, true] {
                let (mut number, mut digits) = (Vec::new(), Vec::new());
                canonical_as(Canon::Number, text.as_bytes(), neg, &mut number);
                canonical_as(Canon::Digits, text.as_bytes(), neg, &mut digits);
                assert_eq!(number, digits, "{text} {neg}");
            }
        }
        s.clear();
        canonical(&Value::Date(NaiveDate::MIN), "20261121", false, &mut s);
        assert_eq!(s, b"2026-11-21");
        s.clear();
        let at = NaiveDate::MIN.and_hms_opt(0, 0, 0).unwrap();
        canonical(&Value::DateTime(at), "20261121093005", false, &mut s);
        assert_eq!(s, b"2026-11-21T09:30:05");
    }
}
