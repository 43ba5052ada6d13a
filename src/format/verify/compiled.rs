//! Data records checked by a plan compiled from their record definition,
//! for plain verification (no record sink). It is the same check as the
//! general path's (decode every field, type it, then sequence, rules,
//! controls and fingerprint) without building the decoded record: fields are
//! read straight from the record's bytes, numbers stay machine integers (and
//! so do control totals of whole amounts, see `Total`), and the canonical
//! form is written as the fields are read.
//!
//! The plan only ever accepts. A record it cannot accept — any field that
//! does not read, a rule or a sequence number that does not hold, a total
//! that would overflow — is left untouched for the general path, which finds
//! and words the error; so errors are only ever worded in one place, and a
//! record the plan accepts has exactly the effect the general path would
//! have given it (the tests compare the two on every fixture and on random
//! edits). A record definition the plan does not cover (decimal fields, date
//! or text rules, drill flags, …) always takes the general path.

use std::ops::Range;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::super::codec::{self, Canon};
use super::super::rules::{Comparison, Condition, Operand};
use super::super::spec::{FieldType, FormatSpec, Layout, Measure, RecordDef, Role};
use super::State;

/// How one field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// `N` of at most 19 digits (a `u64`).
    Digits,
    Date,
    DateTime,
    /// Read before the other fields (a number may come before its sign).
    Sign,
}

/// One field's reading; a plan's steps are its fields, in order.
#[derive(Debug)]
struct Step {
    range: Range<usize>,
    kind: Kind,
    /// How it enters the fingerprint; `None` for a volatile field.
    canon: Option<Canon>,
    required: bool,
    values: Option<Vec<String>>,
    /// The sign field that signs this number.
    sign: Option<usize>,
    /// Conditions on this field: (bit, condition).
    conditions: Vec<(u32, Condition)>,
}

/// `lhs op ±term ±term… [if condition]` over whole numbers.
#[derive(Debug)]
struct NumberRule {
    when: Option<u32>,
    lhs: usize,
    op: Comparison,
    rhs: Vec<(bool, Term)>,
}

#[derive(Debug, Clone, Copy)]
enum Term {
    Field(usize),
    Whole(i128),
}

/// What a data record adds to one control total.
#[derive(Debug, Clone, Copy)]
enum Addend {
    /// A checksum control: nothing.
    Nothing,
    Count {
        when: Option<u32>,
    },
    Sum {
        when: Option<u32>,
        field: usize,
    },
}

/// A data record definition compiled for the plain check.
#[derive(Debug)]
pub(super) struct RecordPlan {
    /// The canonical form's start: the record code and U+001E.
    lead: Vec<u8>,
    signs: Vec<(usize, Range<usize>)>,
    steps: Vec<Step>,
    sequence: Option<usize>,
    rules: Vec<NumberRule>,
    controls: Vec<Addend>,
}

/// Reusable buffers for [`RecordPlan::accept`].
#[derive(Debug, Default)]
pub(super) struct Scratch {
    canon: Vec<u8>,
    decoded: String,
    /// By field index: a number's value as written, unsigned.
    numbers: Vec<u64>,
    /// By field index: a sign field says `-`.
    negative: Vec<bool>,
    /// By control: what this record adds.
    adds: Vec<i128>,
}

/// A plan for each record definition of a fixed-width spec (`None` where
/// the general path must do: not a data record, or not covered).
pub(super) fn compile(spec: &FormatSpec) -> Vec<Option<RecordPlan>> {
    match &spec.layout {
        Layout::Fixed(layout) => layout
            .records
            .iter()
            .enumerate()
            .map(|(i, def)| RecordPlan::compile(spec, i, def))
            .collect(),
        Layout::Csv(_) => Vec::new(),
    }
}

/// Rule literals up to this size keep whole-number arithmetic as exact, and
/// as free of overflow, as the general path's decimals.
const LARGEST_LITERAL: i128 = 10i128.pow(20);
const MOST_TERMS: usize = 1000;

impl RecordPlan {
    fn compile(spec: &FormatSpec, index: usize, def: &RecordDef) -> Option<RecordPlan> {
        if def.role != Role::Data || def.has_drill_flags || def.has_scale_rules {
            return None;
        }
        let lead = [&def.code[..], &[0x1e]].concat();
        let mut steps = Vec::with_capacity(def.fields.len());
        let mut signs = Vec::new();
        for (i, f) in def.fields.iter().enumerate() {
            let kind = match f.ty {
                FieldType::Text => Kind::Text,
                FieldType::Digits if (1..=19).contains(&f.len) => Kind::Digits,
                FieldType::Date => Kind::Date,
                FieldType::DateTime => Kind::DateTime,
                FieldType::Sign => Kind::Sign,
                _ => return None,
            };
            if kind == Kind::Sign {
                signs.push((i, f.offset..f.offset + f.len));
            }
            let canon = match kind {
                Kind::Text | Kind::Sign => Canon::Text,
                Kind::Digits => Canon::Digits,
                Kind::Date => Canon::Date,
                Kind::DateTime => Canon::DateTime,
            };
            steps.push(Step {
                range: f.offset..f.offset + f.len,
                kind,
                canon: (!f.volatile).then_some(canon),
                required: f.required,
                values: f.values.clone(),
                sign: f.sign,
                conditions: Vec::new(),
            });
        }
        let mut bits = 0u32;
        let mut condition = |c: &Option<Condition>, steps: &mut Vec<Step>| -> Option<Option<u32>> {
            let Some(c) = c else { return Some(None) };
            let step = steps.get_mut(c.field)?;
            let bit = bits;
            bits += 1;
            (bit < 64).then_some(())?;
            step.conditions.push((bit, c.clone()));
            Some(Some(bit))
        };
        let number = |i: usize, steps: &[Step]| -> Option<usize> {
            (steps.get(i)?.kind == Kind::Digits).then_some(i)
        };
        let mut rules = Vec::with_capacity(def.rules.len());
        for rule in &def.rules {
            if !rule.is_numeric() || rule.rhs.len() > MOST_TERMS {
                return None;
            }
            let mut rhs = Vec::with_capacity(rule.rhs.len());
            for (minus, operand) in &rule.rhs {
                let term = match operand {
                    Operand::Field(i) => Term::Field(number(*i, &steps)?),
                    Operand::Literal(d) if d.fract().is_zero() => {
                        let whole = d.to_i128()?;
                        (whole.abs() <= LARGEST_LITERAL).then_some(Term::Whole(whole))?
                    }
                    _ => return None,
                };
                rhs.push((*minus, term));
            }
            rules.push(NumberRule {
                when: condition(&rule.when, &mut steps)?,
                lhs: number(rule.lhs, &steps)?,
                op: rule.op,
                rhs,
            });
        }
        let mut controls = Vec::with_capacity(spec.controls.len());
        for c in &spec.controls {
            let on = c.on(index)?;
            controls.push(match (c.measure, on.field) {
                (Measure::Count, _) => Addend::Count {
                    when: condition(&on.when, &mut steps)?,
                },
                (Measure::Sum, Some(i)) => Addend::Sum {
                    when: condition(&on.when, &mut steps)?,
                    field: number(i, &steps)?,
                },
                _ => Addend::Nothing,
            });
        }
        // The sequence number is read as a number.
        if let Some(q) = def.sequence {
            number(q, &steps)?;
        }
        Some(RecordPlan {
            lead,
            signs,
            steps,
            sequence: def.sequence,
            rules,
            controls,
        })
    }

    /// Check data record `record` (of definition `def_index`) and, when it
    /// passes, take it into `state` as the general path would. Returns
    /// `false`, with `state` untouched, when the general path must decide.
    pub(super) fn accept(&self, record: &[u8], def_index: usize, state: &mut State<'_>) -> bool {
        let State {
            planned,
            dates,
            next_seq,
            first_seq,
            controls,
            fingerprint,
            data_records,
            spec,
            ..
        } = state;
        let Scratch {
            canon,
            decoded,
            numbers,
            negative,
            adds,
        } = planned;
        let fields = self.steps.len();
        if numbers.len() < fields {
            numbers.resize(fields, 0);
            negative.resize(fields, false);
        }
        // Printable ASCII is the same text in every supported encoding, so
        // such a record is read as it is.
        let ascii = codec::is_printable_ascii(record);
        for (i, range) in &self.signs {
            negative[*i] = match trimmed(&record[range.clone()]) {
                b"-" => true,
                b"+" => false,
                _ => return false,
            };
        }
        canon.clear();
        canon.extend_from_slice(&self.lead);
        decoded.clear();
        let mut held = 0u64;
        for (field, step) in self.steps.iter().enumerate() {
            let raw = &record[step.range.clone()];
            // Numbers and compact dates fill their field: read as they are
            // (a byte that is not a digit, padding included, fails them).
            let (text, ok) = match step.kind {
                Kind::Digits => match codec::digits_u64(raw) {
                    Some(n) => {
                        numbers[field] = n;
                        (raw, true)
                    }
                    None => (raw, false),
                },
                Kind::Date if raw.len() == 8 => (raw, dates.compact_date(raw).is_ok()),
                _ => {
                    let text = if ascii || codec::is_printable_ascii(raw) {
                        raw
                    } else if step.kind == Kind::Text {
                        // Only text may hold other characters; decoded strictly.
                        // A space byte is a space in both encodings (never
                        // part of a CP949 or UTF-8 sequence), so the padding
                        // is left out before decoding: what decodes, and to
                        // what once trimmed, is the same.
                        let start = decoded.len();
                        if codec::decode_checked(trimmed(raw), spec.encoding, decoded).is_err() {
                            return false;
                        }
                        &decoded.as_bytes()[start..]
                    } else {
                        return false;
                    };
                    let text = &text[..codec::trimmed_len(text)];
                    let ok = match step.kind {
                        Kind::Date => dates.compact_date(text).is_ok(),
                        Kind::DateTime => std::str::from_utf8(text)
                            .is_ok_and(|t| codec::parse_datetime(t).is_ok()),
                        _ => true,
                    };
                    (text, ok)
                }
            };
            if !ok
                || (step.required && text.is_empty())
                || step
                    .values
                    .as_ref()
                    .is_some_and(|v| !v.iter().any(|v| v.as_bytes() == text))
            {
                return false;
            }
            for (bit, c) in &step.conditions {
                if (text == c.literal.as_bytes()) != c.negated {
                    held |= 1 << bit;
                }
            }
            if let Some(kind) = step.canon {
                let minus = step.sign.is_some_and(|s| negative[s]);
                codec::canonical_as(kind, text, minus, canon);
                canon.push(0x1f);
            }
        }
        let holds = |when: Option<u32>| when.is_none_or(|bit| held & (1 << bit) != 0);
        let signed = |i: usize| -> i128 {
            let n = i128::from(numbers[i]);
            match self.steps[i].sign {
                Some(s) if negative[s] => -n,
                _ => n,
            }
        };
        let mut seq = None;
        if let Some(q) = self.sequence {
            let found = Decimal::from(numbers[q]);
            match next_seq[def_index] {
                Some(expected) if expected != found => return false,
                expected => seq = Some((expected.is_none(), found)),
            }
        }
        for rule in &self.rules {
            if !holds(rule.when) {
                continue;
            }
            let rhs: i128 = rule
                .rhs
                .iter()
                .map(|(minus, term)| {
                    let v = match *term {
                        Term::Field(i) => signed(i),
                        Term::Whole(w) => w,
                    };
                    if *minus { -v } else { v }
                })
                .sum();
            if !rule.op.holds(signed(rule.lhs).cmp(&rhs)) {
                return false;
            }
        }
        adds.clear();
        for (addend, total) in self.controls.iter().zip(controls.iter()) {
            let add = match *addend {
                Addend::Count { when } if holds(when) => 1,
                Addend::Sum { when, field } if holds(when) => signed(field),
                _ => 0,
            };
            if !total.fits_whole(add) {
                return false;
            }
            adds.push(add);
        }
        // Everything holds: take the record.
        for (total, add) in controls.iter_mut().zip(adds.iter()) {
            if *add != 0 {
                total.add_whole_in_place(*add);
            }
        }
        if let Some((first, found)) = seq {
            if first {
                first_seq[def_index] = Some(found);
            }
            next_seq[def_index] = Some(found + Decimal::ONE);
        }
        fingerprint.add_canonical(canon);
        *data_records += 1;
        true
    }
}

/// `raw` without its right padding of spaces.
fn trimmed(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
    &raw[..end]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::NaiveDate;

    use super::super::super::generate::{CardFile, CardRecord};
    use super::super::super::spec::FixedLayout;
    use super::super::fixed::fixed_record;
    use super::super::{Phase, Total};
    use super::*;

    fn spec(id: &str) -> FormatSpec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
        FormatSpec::load(&dir.join(format!("{id}.toml"))).unwrap()
    }

    fn fixed(spec: &FormatSpec) -> &FixedLayout {
        match &spec.layout {
            Layout::Fixed(layout) => layout,
            Layout::Csv(_) => panic!("{} is not fixed-width", spec.id),
        }
    }

    /// What a data record changes in the pass's state.
    type Effect = (
        u64,
        Vec<Total>,
        Vec<Option<Decimal>>,
        Vec<Option<Decimal>>,
        [u64; 4],
        u64,
    );

    fn effect(s: &State<'_>) -> Effect {
        (
            s.data_records,
            s.controls.clone(),
            s.next_seq.clone(),
            s.first_seq.clone(),
            s.fingerprint.sum,
            s.fingerprint.count,
        )
    }

    fn in_body<'s>(spec: &'s FormatSpec, plans: &'s [Option<RecordPlan>]) -> State<'s> {
        let mut state = State::new(spec);
        state.plans = plans;
        state.phase = Phase::Body;
        state
    }

    /// A change to a record's bytes.
    type Edit = fn(&mut [u8]);

    fn card_record(i: u64) -> Vec<u8> {
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let mut out = Vec::new();
        CardFile::record_bytes(&CardRecord::synthetic(i, day), i + 1, &mut out);
        out
    }

    #[test]
    fn the_shipped_fixed_layouts_have_plans_for_their_data_records() {
        for id in ["card-settlement", "bank-transfer-result"] {
            let spec = spec(id);
            let plans = compile(&spec);
            let layout = fixed(&spec);
            for (def, plan) in layout.records.iter().zip(&plans) {
                assert_eq!(
                    plan.is_some(),
                    def.role == Role::Data,
                    "{id} {:?}",
                    def.role
                );
            }
        }
        assert!(compile(&spec("pg-settlement-csv")).is_empty());
    }

    /// The card layout, its plans and the index of its data record.
    fn card_plans() -> (FormatSpec, Vec<Option<RecordPlan>>, usize) {
        let spec = spec("card-settlement");
        let plans = compile(&spec);
        let layout = fixed(&spec);
        let data = layout.records.iter().position(|r| r.role == Role::Data);
        (spec, plans, data.unwrap())
    }

    #[test]
    fn a_record_taken_by_the_plan_has_the_general_paths_effect() {
        let (spec, plans, data) = card_plans();
        let layout = fixed(&spec);
        let plan = plans[data].as_ref().unwrap();
        let mut planned = in_body(&spec, &plans);
        let mut general = in_body(&spec, &[]);
        // Hangul names every third record, a cancel (negative) every 17th.
        for i in 0..60 {
            let record = card_record(i);
            assert!(plan.accept(&record, data, &mut planned), "record {i}");
            fixed_record(&spec, layout, &mut general, &record, i + 2, 0, &mut ()).unwrap();
            assert_eq!(effect(&planned), effect(&general), "record {i}");
        }
        assert_eq!(planned.data_records, 60);
    }

    #[test]
    fn a_record_the_plan_does_not_take_is_left_to_the_general_path() {
        let (spec, plans, data) = card_plans();
        let layout = fixed(&spec);
        let plan = plans[data].as_ref().unwrap();
        let good = card_record(0);
        let edits: [(&str, Edit); 9] = [
            ("a letter in fee_amount", |r| r[115] = b'x'),
            ("a sequence gap", |r| r[7] = b'9'),
            ("settle_amount off by one", |r| r[134] ^= 1),
            ("txn_type not 01 or 02", |r| r[96] = b'3'),
            ("a bad sign", |r| r[121] = b'*'),
            ("an impossible date", |r| r[67..71].copy_from_slice(b"1332")),
            ("an empty approval_no", |r| r[71..79].fill(b' ')),
            // The name's last byte made a lead byte: a split character.
            ("a split character", |r| r[62] = 0xB0),
            ("a control character", |r| r[30] = 0x07),
        ];
        for (what, edit) in edits {
            let mut planned = in_body(&spec, &plans);
            let mut general = in_body(&spec, &[]);
            assert!(plan.accept(&good, data, &mut planned), "{what}");
            fixed_record(&spec, layout, &mut general, &good, 2, 0, &mut ()).unwrap();
            let before = effect(&planned);
            let mut bad = card_record(1);
            edit(&mut bad);
            assert!(!plan.accept(&bad, data, &mut planned), "{what}");
            assert_eq!(effect(&planned), before, "{what}");
            // And it is an error there, not a gap in the plan.
            assert!(
                fixed_record(&spec, layout, &mut general, &bad, 3, 200, &mut ()).is_err(),
                "{what}"
            );
        }
    }
}
