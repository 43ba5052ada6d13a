//! Conditions and per-record rules from format specs, e.g.
//! `net = amount - fee`, `settle_date = name.business_date`,
//! `amount < 0 if txn_type = REFUND`. Parsed once at spec load; evaluated per
//! record without allocation on the success path.

use std::cmp::Ordering;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::codec::{FieldValue, Value};
use super::spec::{FieldType, RecordDef};

/// `field = literal` or `field != literal`, on the field's trimmed text.
#[derive(Debug, Clone)]
pub struct Condition {
    pub field: usize,
    pub negated: bool,
    pub literal: String,
}

impl Condition {
    pub fn parse(text: &str, record: &RecordDef) -> Result<Condition, String> {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        match tokens.as_slice() {
            [field, op @ ("=" | "!="), literal] => {
                let i = record
                    .field_index(field)
                    .ok_or_else(|| format!("no field named {field:?}"))?;
                Ok(Condition {
                    field: i,
                    negated: *op == "!=",
                    literal: (*literal).to_string(),
                })
            }
            _ => Err("expected `<field> = <value>` or `<field> != <value>`".into()),
        }
    }

    pub fn holds(&self, fields: &[FieldValue], buf: &str) -> bool {
        let text = &buf[fields[self.field].text.clone()];
        (text == self.literal) != self.negated
    }
}

/// Where a rule operand comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// A field of the record being checked.
    Field(usize),
    /// A typed capture of the file name.
    Name(usize),
    /// A number written in the rule.
    Literal(Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    pub(crate) fn holds(self, ord: Ordering) -> bool {
        match self {
            Comparison::Eq => ord == Ordering::Equal,
            Comparison::Ne => ord != Ordering::Equal,
            Comparison::Lt => ord == Ordering::Less,
            Comparison::Le => ord != Ordering::Greater,
            Comparison::Gt => ord == Ordering::Greater,
            Comparison::Ge => ord != Ordering::Less,
        }
    }
}

/// What kind of values a rule compares, fixed at load from the field types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Date,
    Text,
}

/// `lhs op term (± term)* [if condition]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule as written, for messages.
    pub text: String,
    /// The field the rule is about (named in errors).
    pub lhs: usize,
    pub op: Comparison,
    /// Terms with their sign (`true` = subtract).
    pub rhs: Vec<(bool, Operand)>,
    pub when: Option<Condition>,
    kind: Kind,
}

/// A failed rule: the message after `field X:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    pub field: usize,
    pub message: String,
}

fn kind_of(ty: FieldType) -> Kind {
    match ty {
        FieldType::Digits | FieldType::Decimal => Kind::Number,
        FieldType::Date | FieldType::IsoDate => Kind::Date,
        _ => Kind::Text,
    }
}

impl Rule {
    /// Parse a rule against the record it applies to; `name` is the file-name
    /// capture record, when the spec has one.
    pub fn parse(text: &str, record: &RecordDef, name: Option<&RecordDef>) -> Result<Rule, String> {
        let (body, when) = match text.split_once(" if ") {
            Some((b, c)) => (b, Some(Condition::parse(c, record)?)),
            None => (text, None),
        };
        let tokens: Vec<&str> = body.split_whitespace().collect();
        if tokens.len() < 3 || tokens.len().is_multiple_of(2) {
            return Err(
                "expected `<field> <op> <term> [(+|-) <term>]… [if <field> = <value>]`".into(),
            );
        }
        let lhs = record
            .field_index(tokens[0])
            .ok_or_else(|| format!("no field named {:?}", tokens[0]))?;
        let op = match tokens[1] {
            "=" => Comparison::Eq,
            "!=" => Comparison::Ne,
            "<" => Comparison::Lt,
            "<=" => Comparison::Le,
            ">" => Comparison::Gt,
            ">=" => Comparison::Ge,
            other => return Err(format!("unknown comparison {other:?}")),
        };
        let kind = kind_of(record.fields[lhs].ty);
        let operand = |tok: &str| -> Result<(Operand, Kind), String> {
            if let Some(cap) = tok.strip_prefix("name.") {
                let name = name.ok_or("this format has no file-name fields")?;
                let i = name
                    .field_index(cap)
                    .ok_or_else(|| format!("the file name has no field {cap:?}"))?;
                return Ok((Operand::Name(i), kind_of(name.fields[i].ty)));
            }
            if let Some(i) = record.field_index(tok) {
                return Ok((Operand::Field(i), kind_of(record.fields[i].ty)));
            }
            tok.parse::<Decimal>()
                .map(|d| (Operand::Literal(d), Kind::Number))
                .map_err(|_| format!("{tok:?} is neither a field nor a number"))
        };
        let mut rhs = Vec::new();
        let (first, first_kind) = operand(tokens[2])?;
        rhs.push((false, first));
        let mut kinds = vec![first_kind];
        for pair in tokens[3..].chunks(2) {
            let negative = match pair[0] {
                "+" => false,
                "-" => true,
                other => return Err(format!("expected + or -, found {other:?}")),
            };
            let (op_, k) = operand(pair[1])?;
            rhs.push((negative, op_));
            kinds.push(k);
        }
        if kinds.iter().any(|k| *k != kind) {
            return Err("all operands must be of one kind (numbers, dates or text)".into());
        }
        if kind != Kind::Number && rhs.len() != 1 {
            return Err("only numbers can be added or subtracted".into());
        }
        if kind != Kind::Number && !matches!(op, Comparison::Eq | Comparison::Ne) {
            return Err("dates and text can only be compared with = or !=".into());
        }
        Ok(Rule {
            text: text.to_string(),
            lhs,
            op,
            rhs,
            when,
            kind,
        })
    }

    /// Whether the rule compares numbers (rather than dates or text).
    pub(crate) fn is_numeric(&self) -> bool {
        self.kind == Kind::Number
    }

    /// Check the rule on one decoded record. `signed(i)` gives field i's
    /// numeric value with its sign field applied.
    pub fn check(
        &self,
        rec: RecordRef<'_>,
        name: Option<RecordRef<'_>>,
    ) -> Result<(), RuleFailure> {
        if let Some(c) = &self.when
            && !c.holds(rec.fields, rec.buf)
        {
            return Ok(());
        }
        let ok = match self.kind {
            Kind::Number => {
                let lhs = rec.number(self.lhs);
                let mut rhs = Some(Decimal::ZERO);
                for (neg, op) in &self.rhs {
                    let v = self.number(*op, rec, name);
                    rhs = rhs.and_then(|r| {
                        if *neg {
                            r.checked_sub(v)
                        } else {
                            r.checked_add(v)
                        }
                    });
                }
                let Some(rhs) = rhs else {
                    return Err(RuleFailure {
                        field: self.lhs,
                        message: format!("rule \"{}\" failed: the arithmetic overflows", self.text),
                    });
                };
                if self.op.holds(lhs.cmp(&rhs)) {
                    return Ok(());
                }
                let rhs_text = self.rhs_text();
                let shown = if self.rhs.len() == 1 && matches!(self.rhs[0].1, Operand::Literal(_)) {
                    String::new()
                } else {
                    format!(", {rhs_text} is {rhs}")
                };
                return Err(RuleFailure {
                    field: self.lhs,
                    message: format!(
                        "rule \"{}\" failed: {} is {lhs}{shown}",
                        self.text,
                        self.lhs_name(rec)
                    ),
                });
            }
            Kind::Date => {
                let l = rec.date(self.lhs);
                let r = match self.rhs[0].1 {
                    Operand::Field(i) => rec.date(i),
                    Operand::Name(i) => name.and_then(|n| n.date(i)),
                    Operand::Literal(_) => None,
                };
                self.op.holds(l.cmp(&r))
            }
            Kind::Text => {
                let l = rec.text(self.lhs);
                let r = match self.rhs[0].1 {
                    Operand::Field(i) => Some(rec.text(i)),
                    Operand::Name(i) => name.map(|n| n.text(i)),
                    Operand::Literal(_) => None,
                };
                self.op.holds(Some(l).cmp(&r))
            }
        };
        if ok {
            return Ok(());
        }
        let rhs_value = match self.rhs[0].1 {
            Operand::Field(i) => rec.text(i).to_string(),
            Operand::Name(i) => name.map(|n| n.text(i).to_string()).unwrap_or_default(),
            Operand::Literal(d) => d.to_string(),
        };
        Err(RuleFailure {
            field: self.lhs,
            message: format!(
                "rule \"{}\" failed: {} is {:?}, {} is {:?}",
                self.text,
                self.lhs_name(rec),
                rec.text(self.lhs),
                self.rhs_text(),
                rhs_value
            ),
        })
    }

    fn lhs_name<'a>(&self, rec: RecordRef<'a>) -> &'a str {
        &rec.def.fields[self.lhs].name
    }

    fn rhs_text(&self) -> String {
        let body = self.text.split(" if ").next().unwrap_or(&self.text);
        let mut parts = body.split_whitespace().skip(2);
        let mut s = String::new();
        if let Some(first) = parts.next() {
            s.push_str(first);
        }
        for p in parts {
            s.push(' ');
            s.push_str(p);
        }
        s
    }

    fn number(&self, op: Operand, rec: RecordRef<'_>, name: Option<RecordRef<'_>>) -> Decimal {
        match op {
            Operand::Field(i) => rec.number(i),
            Operand::Name(i) => name.map(|n| n.number(i)).unwrap_or_default(),
            Operand::Literal(d) => d,
        }
    }
}

/// A decoded record as rules see it.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    pub def: &'a RecordDef,
    pub fields: &'a [FieldValue],
    pub buf: &'a str,
}

impl<'a> RecordRef<'a> {
    pub fn text(&self, i: usize) -> &'a str {
        &self.buf[self.fields[i].text.clone()]
    }

    /// The numeric value of field `i` with its sign field applied (0 if not a number).
    pub fn number(&self, i: usize) -> Decimal {
        let v = match self.fields[i].value {
            Value::Number(n) => n,
            _ => return Decimal::ZERO,
        };
        match self.def.fields[i].sign.map(|s| &self.fields[s].value) {
            Some(Value::Sign(true)) => -v,
            _ => v,
        }
    }

    pub fn date(&self, i: usize) -> Option<NaiveDate> {
        match self.fields[i].value {
            Value::Date(d) => Some(d),
            _ => None,
        }
    }
}
