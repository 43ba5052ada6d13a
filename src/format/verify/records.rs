//! The checks every record goes through once decoded, whatever the layout:
//! the file name's captures, the header's keys and date, a data record's
//! sequence number, rules, control totals, fingerprint and record key (then
//! the sink), and the trailer's control totals.

use rust_decimal::Decimal;

use super::super::codec::{self, Controls, Value};
use super::super::rules::RecordRef;
use super::super::spec::{FieldDef, FieldRef, FieldType, Measure, RecordDef, ScaleRule};
use super::{DataRecord, RecordSink, State, Stop, field_error, invalid};

impl State<'_> {
    /// Match the file name against the spec's pattern and decode its captures.
    pub(super) fn read_name(&mut self, name: &str) -> Result<(), Stop> {
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
                Controls::Refused,
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

    pub(super) fn check_scales(&self, def: &RecordDef, record: u64) -> Result<(), Stop> {
        if !def.has_scale_rules {
            return Ok(());
        }
        // Scales may depend on other fields (a currency), so check them last.
        for (i, f) in def.fields.iter().enumerate() {
            if matches!(f.scale, ScaleRule::Any) {
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

    pub(super) fn header(&mut self, def: &RecordDef) {
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
    pub(super) fn data(
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
    pub(super) fn trailer(
        &mut self,
        def: &RecordDef,
        number: u64,
        offset: u64,
    ) -> Result<(), Stop> {
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
