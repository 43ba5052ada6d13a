//! The judge: a pure function from a file's facts, its drill signals and what
//! the ledger already holds to a verdict. No IO, no clock (the caller passes
//! "now"), no database: table-tested.

use std::fmt;

use chrono::{DateTime, FixedOffset, Utc};

use crate::config::Partner;
use crate::format::FileFacts;

/// What became of a file. The order of the variants is the precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Cannot be decoded or parsed, or control totals disagree. Quarantined.
    Invalid,
    /// A drill/test file. Quarantined, never fed.
    Drill,
    /// Same bytes as an earlier arrival, or same content as a fed file. Refused.
    Duplicate,
    /// Same business key as a fed file, different content. Quarantined.
    Conflict,
    /// Some record keys were already fed from another file. Quarantined.
    Overlap,
    /// Fed into settlement.
    Fed,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Invalid,
        Verdict::Drill,
        Verdict::Duplicate,
        Verdict::Conflict,
        Verdict::Overlap,
        Verdict::Fed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Invalid => "invalid",
            Verdict::Drill => "drill",
            Verdict::Duplicate => "duplicate",
            Verdict::Conflict => "conflict",
            Verdict::Overlap => "overlap",
            Verdict::Fed => "fed",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The exit code of `ingest` for this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Fed => 0,
            Verdict::Duplicate => 10,
            Verdict::Drill => 11,
            Verdict::Conflict => 12,
            Verdict::Overlap => 13,
            Verdict::Invalid => 14,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An earlier file, as the ledger describes it (for reasons operators read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorFile {
    pub id: i64,
    pub name: String,
    /// Its verdict (`received` while still being judged).
    pub verdict: String,
    pub channel: String,
    pub received_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl PriorFile {
    /// `file 17 (CSTL_031_20261121_0001.dat, fed 2026-11-22 02:10 via sftp-pull)`
    pub fn describe(&self, tz: FixedOffset) -> String {
        let when = self
            .decided_at
            .unwrap_or(self.received_at)
            .with_timezone(&tz);
        let what = if self.verdict == "received" {
            "received, not yet judged".to_string()
        } else {
            self.verdict.clone()
        };
        format!(
            "file {} ({}, {what} {} via {})",
            self.id,
            self.name,
            when.format("%Y-%m-%d %H:%M"),
            self.channel
        )
    }
}

/// Record keys of this file already fed from another file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub file: PriorFile,
    pub records: u64,
}

/// Everything the judge looks at.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    pub facts: &'a FileFacts,
    /// Drill signals from content, name, channel, endpoint, windows and dates.
    pub drill_signals: &'a [String],
    /// The earliest earlier arrival with the same checksum, whatever its verdict.
    pub same_checksum: Option<&'a PriorFile>,
    /// The fed file with the same fingerprint.
    pub fed_same_fingerprint: Option<&'a PriorFile>,
    /// The fed file with the same business key.
    pub fed_same_business_key: Option<&'a PriorFile>,
    /// Fed files sharing record keys with this one.
    pub overlaps: &'a [Overlap],
    /// The time zone reasons are written in.
    pub tz: FixedOffset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: String,
    /// The earlier file the verdict refers to.
    pub related: Option<i64>,
}

/// Judge a file. Precedence: invalid, drill, duplicate, conflict, overlap, fed.
/// A fingerprint that matches only a quarantined file counts for nothing
/// here: the caller looks up fed files only, so the production file that
/// follows a quarantined drill copy of the same data is judged on its own.
pub fn judge(e: &Evidence<'_>) -> Judgement {
    let j = |verdict, reason: String, related| Judgement {
        verdict,
        reason,
        related,
    };
    if let Some(err) = &e.facts.error {
        return j(Verdict::Invalid, err.to_string(), None);
    }
    if !e.drill_signals.is_empty() {
        return j(
            Verdict::Drill,
            format!("drill signals: {}", e.drill_signals.join(", ")),
            None,
        );
    }
    if let Some(p) = e.same_checksum {
        return j(
            Verdict::Duplicate,
            format!("same bytes (checksum) as {}", p.describe(e.tz)),
            Some(p.id),
        );
    }
    if let Some(p) = e.fed_same_fingerprint {
        return j(
            Verdict::Duplicate,
            format!("same fingerprint as {}", p.describe(e.tz)),
            Some(p.id),
        );
    }
    if let Some(p) = e.fed_same_business_key {
        return j(
            Verdict::Conflict,
            format!(
                "same business key ({}) as {} but different content; an operator must supersede or reject",
                e.facts.business_key_text(),
                p.describe(e.tz)
            ),
            Some(p.id),
        );
    }
    if let Some(first) = e.overlaps.first() {
        let total: u64 = e.overlaps.iter().map(|o| o.records).sum();
        let files: Vec<String> = e
            .overlaps
            .iter()
            .map(|o| format!("{} record(s) from {}", o.records, o.file.describe(e.tz)))
            .collect();
        return j(
            Verdict::Overlap,
            format!("{total} record key(s) already fed: {}", files.join("; ")),
            Some(first.file.id),
        );
    }
    j(
        Verdict::Fed,
        format!("fed {} record(s)", e.facts.records),
        None,
    )
}

/// How an arrival came in, for channel and endpoint drill signals.
#[derive(Debug, Clone, Copy)]
pub struct ArrivalContext<'a> {
    pub name: &'a str,
    pub channel: &'a str,
    pub endpoint: Option<&'a str>,
    pub received_at: DateTime<Utc>,
}

/// All drill signals for an arrival: the content's own (from the verifier)
/// plus the partner's configured name patterns, drill channels and endpoints,
/// announced drill windows and the business-date window around today.
pub fn drill_signals(
    partner: &Partner,
    arrival: &ArrivalContext<'_>,
    facts: &FileFacts,
    now: DateTime<Utc>,
    tz: FixedOffset,
) -> Vec<String> {
    let mut signals: Vec<String> = facts.drill_signals.clone();
    for p in &partner.drill_name_patterns {
        if p.is_match(arrival.name) {
            signals.push(format!("file name matches {}", p.as_str()));
        }
    }
    if partner.drill_channels.iter().any(|c| c == arrival.channel) {
        signals.push(format!("channel {} is a drill channel", arrival.channel));
    }
    if let Some(ep) = arrival.endpoint
        && partner.drill_endpoints.iter().any(|d| d == ep)
    {
        signals.push(format!("endpoint {ep} is a drill/DR site"));
    }
    for w in &partner.drill_windows {
        if arrival.received_at >= w.start && arrival.received_at < w.end {
            signals.push(format!(
                "received inside the announced drill window {} – {}",
                w.start, w.end
            ));
        }
    }
    if let (Some(window), Some(date)) = (partner.business_date_window, facts.business_date) {
        let today = now.with_timezone(&tz).date_naive();
        let earliest = today - chrono::Days::new(u64::from(window.days_before));
        let latest = today + chrono::Days::new(u64::from(window.days_after));
        if date < earliest || date > latest {
            signals.push(format!(
                "business date {date} is outside {earliest} … {latest} (today {today})"
            ));
        }
    }
    signals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DateWindow, DrillWindow};
    use crate::format::VerifyError;
    use chrono::{NaiveDate, TimeZone};

    fn kst() -> FixedOffset {
        FixedOffset::east_opt(9 * 3600).unwrap()
    }

    fn facts(valid: bool) -> FileFacts {
        FileFacts {
            format: "card-settlement".into(),
            checksum: [1; 32],
            size: 606,
            records: 1,
            fingerprint: valid.then_some([2; 32]),
            business_key: vec![("business_date".into(), "2026-11-21".into())],
            business_date: NaiveDate::from_ymd_opt(2026, 11, 21),
            totals: vec![],
            drill_signals: vec![],
            error: (!valid).then(|| VerifyError {
                record: Some(3),
                offset: Some(420),
                field: Some("fee_amount".into()),
                message: "expected digits, found \"1,2\"".into(),
            }),
        }
    }

    fn prior(id: i64, verdict: &str) -> PriorFile {
        PriorFile {
            id,
            name: format!("CSTL_031_20261121_{id:04}.dat"),
            verdict: verdict.into(),
            channel: "sftp-pull".into(),
            received_at: Utc.with_ymd_and_hms(2026, 11, 21, 17, 0, 0).unwrap(),
            decided_at: Some(Utc.with_ymd_and_hms(2026, 11, 21, 17, 10, 0).unwrap()),
        }
    }

    /// Every combination of the six conditions gives the verdict of the
    /// highest-precedence condition present.
    #[test]
    fn precedence_is_exhaustive() {
        let p = prior(17, "fed");
        let overlap = [Overlap {
            file: prior(18, "fed"),
            records: 2,
        }];
        let signal = ["run_mode=D".to_string()];
        for mask in 0u32..32 {
            let invalid = mask & 1 != 0;
            let drill = mask & 2 != 0;
            let dup_checksum = mask & 4 != 0;
            let conflict = mask & 8 != 0;
            let overlaps = mask & 16 != 0;
            for dup_fingerprint in [false, true] {
                let f = facts(!invalid);
                let e = Evidence {
                    facts: &f,
                    drill_signals: if drill { &signal } else { &[] },
                    same_checksum: dup_checksum.then_some(&p),
                    fed_same_fingerprint: dup_fingerprint.then_some(&p),
                    fed_same_business_key: conflict.then_some(&p),
                    overlaps: if overlaps { &overlap } else { &[] },
                    tz: kst(),
                };
                let want = if invalid {
                    Verdict::Invalid
                } else if drill {
                    Verdict::Drill
                } else if dup_checksum || dup_fingerprint {
                    Verdict::Duplicate
                } else if conflict {
                    Verdict::Conflict
                } else if overlaps {
                    Verdict::Overlap
                } else {
                    Verdict::Fed
                };
                let got = judge(&e);
                assert_eq!(got.verdict, want, "mask {mask:05b} fp {dup_fingerprint}");
                let related_expected = matches!(
                    want,
                    Verdict::Duplicate | Verdict::Conflict | Verdict::Overlap
                );
                assert_eq!(got.related.is_some(), related_expected, "{got:?}");
            }
        }
    }

    #[test]
    fn reasons_name_the_earlier_file() {
        let f = facts(true);
        let p = prior(17, "fed");
        let e = Evidence {
            facts: &f,
            drill_signals: &[],
            same_checksum: None,
            fed_same_fingerprint: Some(&p),
            fed_same_business_key: Some(&p),
            overlaps: &[],
            tz: kst(),
        };
        let j = judge(&e);
        assert_eq!(
            j.reason,
            "same fingerprint as file 17 (CSTL_031_20261121_0017.dat, fed 2026-11-22 02:10 via sftp-pull)"
        );
        assert_eq!(j.related, Some(17));
        let f = facts(false);
        let j = judge(&Evidence { facts: &f, ..e });
        assert_eq!(
            j.reason,
            "record 3 (byte 420), field fee_amount: expected digits, found \"1,2\""
        );
    }

    #[test]
    fn overlap_reason_counts_records_per_file() {
        let f = facts(true);
        let o = [
            Overlap {
                file: prior(3, "fed"),
                records: 2,
            },
            Overlap {
                file: prior(4, "fed"),
                records: 5,
            },
        ];
        let e = Evidence {
            facts: &f,
            drill_signals: &[],
            same_checksum: None,
            fed_same_fingerprint: None,
            fed_same_business_key: None,
            overlaps: &o,
            tz: kst(),
        };
        let j = judge(&e);
        assert_eq!(j.verdict, Verdict::Overlap);
        assert!(
            j.reason
                .starts_with("7 record key(s) already fed: 2 record(s) from file 3"),
            "{}",
            j.reason
        );
    }

    fn partner() -> Partner {
        Partner {
            id: "cardco".into(),
            formats: vec!["card-settlement".into()],
            drill_name_patterns: vec![regex::Regex::new("(?i)drill").unwrap()],
            drill_channels: vec!["sftp-push".into()],
            drill_endpoints: vec!["dr".into()],
            drill_windows: vec![DrillWindow {
                start: kst().with_ymd_and_hms(2026, 11, 28, 22, 0, 0).unwrap(),
                end: kst().with_ymd_and_hms(2026, 11, 29, 6, 0, 0).unwrap(),
            }],
            business_date_window: Some(DateWindow {
                days_before: 7,
                days_after: 1,
            }),
            inbox: None,
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn drill_signal_table() {
        let p = partner();
        let t = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        let normal = t(2026, 11, 22, 1);
        // (name, channel, endpoint, received, content signal, now) → signals expected
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            DateTime<Utc>,
            bool,
            DateTime<Utc>,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                "CSTL_031_20261121_0001.dat",
                "manual",
                None,
                normal,
                false,
                normal,
                0,
            ),
            (
                "CSTL_031_20261121_0001_DRILL.dat",
                "manual",
                None,
                normal,
                false,
                normal,
                1,
            ),
            ("cstl_drill.dat", "manual", None, normal, false, normal, 1),
            (
                "CSTL_031_20261121_0001.dat",
                "sftp-push",
                None,
                normal,
                false,
                normal,
                1,
            ),
            (
                "CSTL_031_20261121_0001.dat",
                "sftp-pull",
                Some("dr"),
                normal,
                false,
                normal,
                1,
            ),
            (
                "CSTL_031_20261121_0001.dat",
                "sftp-pull",
                Some("primary"),
                normal,
                false,
                normal,
                0,
            ),
            // 2026-11-28 23:00 KST = 14:00 UTC: inside the window.
            (
                "CSTL_031_20261121_0001.dat",
                "manual",
                None,
                t(2026, 11, 28, 14),
                false,
                normal,
                1,
            ),
            // 2026-11-29 06:00 KST = 21:00 UTC on the 28th: the window has ended.
            (
                "CSTL_031_20261121_0001.dat",
                "manual",
                None,
                t(2026, 11, 28, 21),
                false,
                normal,
                0,
            ),
            (
                "CSTL_031_20261121_0001.dat",
                "manual",
                None,
                normal,
                true,
                normal,
                1,
            ),
            // business date 2026-11-21; today (KST) 2026-11-29 is 8 days later: outside.
            (
                "CSTL_031_20261121_0001.dat",
                "manual",
                None,
                normal,
                false,
                t(2026, 11, 29, 1),
                1,
            ),
            // today 2026-11-28: 7 days, inside.
            (
                "CSTL_031_20261121_0001.dat",
                "manual",
                None,
                normal,
                false,
                t(2026, 11, 28, 1),
                0,
            ),
            // today 2026-11-19: the date is 2 days ahead, outside (1 allowed).
            (
                "CSTL_031_20261121_0001.dat",
                "manual",
                None,
                normal,
                false,
                t(2026, 11, 19, 1),
                1,
            ),
            (
                "drill.dat",
                "sftp-push",
                Some("dr"),
                t(2026, 11, 28, 14),
                true,
                t(2026, 12, 20, 1),
                6,
            ),
        ];
        for (i, (name, channel, endpoint, received, content, now, want)) in
            cases.into_iter().enumerate()
        {
            let mut f = facts(true);
            if content {
                f.drill_signals = vec!["run_mode=D".into()];
            }
            let a = ArrivalContext {
                name,
                channel,
                endpoint,
                received_at: received,
            };
            let s = drill_signals(&p, &a, &f, now, kst());
            assert_eq!(s.len(), want, "case {i}: {s:?}");
        }
    }

    #[test]
    fn no_date_window_means_off() {
        let mut p = partner();
        p.business_date_window = None;
        let f = facts(true);
        let a = ArrivalContext {
            name: "x.dat",
            channel: "manual",
            endpoint: None,
            received_at: Utc.with_ymd_and_hms(2026, 11, 22, 1, 0, 0).unwrap(),
        };
        let far = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        assert!(drill_signals(&p, &a, &f, far, kst()).is_empty());
    }
}
