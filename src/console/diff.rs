//! What a conflicting re-send changes against the fed file of the same
//! business key: records added, removed, and those whose amount changed,
//! matched by record key. Pure.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::ledger::EntryAmount;

/// A record in one file only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneSide {
    pub record_key: String,
    pub record_no: i64,
    pub amount: Decimal,
}

/// A record in both files with another amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub record_key: String,
    /// Record number in the fed file and in the re-send.
    pub fed_no: i64,
    pub new_no: i64,
    pub fed_amount: Decimal,
    pub new_amount: Decimal,
}

/// The differences, each list in record-key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordDiff {
    /// In the re-send, not in the fed file.
    pub added: Vec<OneSide>,
    /// In the fed file, not in the re-send.
    pub removed: Vec<OneSide>,
    pub changed: Vec<Changed>,
    /// Records with the same key and amount in both.
    pub same: usize,
    /// What the re-send pays minus what the fed file paid; `None` when
    /// the sums are beyond what a decimal holds (no amount is made up).
    pub net: Option<Decimal>,
}

/// Compare `fed` (what was fed) with `new` (the re-send). A key repeated
/// within one file is compared occurrence by occurrence.
pub fn diff(fed: &[EntryAmount], new: &[EntryAmount]) -> RecordDiff {
    let mut by_key: BTreeMap<&str, (Vec<&EntryAmount>, Vec<&EntryAmount>)> = BTreeMap::new();
    for e in fed {
        by_key.entry(&e.record_key).or_default().0.push(e);
    }
    for e in new {
        by_key.entry(&e.record_key).or_default().1.push(e);
    }
    let mut out = RecordDiff::default();
    let side = |e: &EntryAmount| OneSide {
        record_key: e.record_key.clone(),
        record_no: e.record_no,
        amount: e.amount,
    };
    for (_, (olds, news)) in by_key {
        let n = olds.len().max(news.len());
        for i in 0..n {
            match (olds.get(i), news.get(i)) {
                (Some(o), Some(n)) if o.amount == n.amount => out.same += 1,
                (Some(o), Some(n)) => out.changed.push(Changed {
                    record_key: o.record_key.clone(),
                    fed_no: o.record_no,
                    new_no: n.record_no,
                    fed_amount: o.amount,
                    new_amount: n.amount,
                }),
                (Some(o), None) => out.removed.push(side(o)),
                (None, Some(n)) => out.added.push(side(n)),
                (None, None) => {}
            }
        }
    }
    let sum = |v: &[EntryAmount]| {
        v.iter()
            .try_fold(Decimal::ZERO, |s, e| s.checked_add(e.amount))
    };
    out.net = sum(new).zip(sum(fed)).and_then(|(n, f)| n.checked_sub(f));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(no: i64, key: &str, amount: i64) -> EntryAmount {
        EntryAmount {
            record_no: no,
            record_key: key.into(),
            amount: Decimal::from(amount),
        }
    }

    #[test]
    fn added_removed_and_changed_by_key() {
        let fed = [e(2, "A", 100), e(3, "B", 200), e(4, "C", 300)];
        let new = [e(2, "C", 300), e(3, "B", 250), e(4, "D", 50)];
        let d = diff(&fed, &new);
        assert_eq!(
            d.added,
            vec![OneSide {
                record_key: "D".into(),
                record_no: 4,
                amount: Decimal::from(50)
            }]
        );
        assert_eq!(
            d.removed,
            vec![OneSide {
                record_key: "A".into(),
                record_no: 2,
                amount: Decimal::from(100)
            }]
        );
        assert_eq!(
            d.changed,
            vec![Changed {
                record_key: "B".into(),
                fed_no: 3,
                new_no: 3,
                fed_amount: Decimal::from(200),
                new_amount: Decimal::from(250),
            }]
        );
        assert_eq!(d.same, 1, "C moved but did not change");
        assert_eq!(d.net, Some(Decimal::from(600 - 600)));
    }

    #[test]
    fn identical_and_empty_files() {
        let fed = [e(2, "A", 100), e(3, "B", 200)];
        let d = diff(&fed, &fed);
        assert!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
        assert_eq!((d.same, d.net), (2, Some(Decimal::ZERO)));
        let d = diff(&fed, &[]);
        assert_eq!(d.removed.len(), 2);
        assert_eq!(d.net, Some(Decimal::from(-300)));
        let d = diff(&[], &fed);
        assert_eq!(d.added.len(), 2);
    }

    #[test]
    fn a_repeated_key_is_compared_occurrence_by_occurrence() {
        let fed = [e(2, "A", 100)];
        let new = [e(2, "A", 100), e(3, "A", 100)];
        let d = diff(&fed, &new);
        assert_eq!((d.same, d.added.len()), (1, 1));
        assert_eq!(d.added[0].record_no, 3);
    }

    #[test]
    fn sums_beyond_a_decimal_are_no_net_not_a_panic() {
        let big = |no: i64, key: &str| EntryAmount {
            record_no: no,
            record_key: key.into(),
            amount: Decimal::MAX,
        };
        let d = diff(&[e(2, "A", -1)], &[big(2, "A"), big(3, "B")]);
        assert_eq!(d.net, None);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.added.len(), 1);
    }
}
