//! The judge: a pure function from a file's facts, its drill signals and what
//! the ledger already holds to a verdict. No IO, no clock (the caller passes
//! "now"), no database: table-tested.

use chrono::{DateTime, FixedOffset, Utc};

use crate::config::Partner;
use crate::format::FileFacts;
use crate::model::{Channel, DrillSignal, DrillSource, FileState, drill_by_arrival_only};

pub use crate::model::Verdict;

/// An earlier file, as the ledger describes it (for reasons operators read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorFile {
    pub id: i64,
    pub name: String,
    /// Where it stands (`received` while still being judged).
    pub state: FileState,
    pub channel: Channel,
    pub received_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl PriorFile {
    /// `file 17 (CSTL_031_20261121_0001.dat, fed 2026-11-22 02:10 via sftp-pull)`.
    /// A file still being judged is described as it was at that moment
    /// (the reason is kept; `show` tells what became of it since).
    pub fn describe(&self, tz: FixedOffset) -> String {
        let when = self
            .decided_at
            .unwrap_or(self.received_at)
            .with_timezone(&tz);
        let what = match self.state {
            FileState::Received => "received, still being judged at that time".to_string(),
            s => s.to_string(),
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
    pub drill_signals: &'a [DrillSignal],
    /// The earliest earlier arrival with the same bytes that a copy is a
    /// duplicate of: fed, judged on its content, or still pending — not one
    /// quarantined as a drill only for how it arrived (see
    /// [`quarantined_for_arrival`]).
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
///
/// | verdict | when |
/// |---|---|
/// | invalid | the facts carry an error |
/// | drill | any drill signal |
/// | duplicate | same bytes as an earlier arrival that counts (see below), or same fingerprint as a fed file |
/// | conflict | same business key as a fed file, other content |
/// | overlap | record keys already fed from other files |
/// | fed | none of the above |
///
/// Two kinds of earlier file count for nothing, so that the production file
/// following a drill copy is judged on its own: a file with the same
/// fingerprint that is only quarantined (the caller looks up fed files
/// only), and a file with the same bytes quarantined as a drill only for
/// how it arrived — a DR endpoint, a drill channel, an announced window, a
/// file-name pattern ([`quarantined_for_arrival`]; the ledger leaves such
/// files out of `same_checksum`). The same bytes as a file fed, pending, or
/// quarantined for its content (a content drill flag, a business date
/// outside the window, invalid) stay a duplicate.
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
        let texts: Vec<&str> = e.drill_signals.iter().map(|s| s.text.as_str()).collect();
        return j(
            Verdict::Drill,
            format!("drill signals: {}", texts.join(", ")),
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

/// Whether a file judged `verdict` with these signals is quarantined only
/// for how it arrived: then another arrival of the same bytes (by a
/// production route) is judged on its own, not as its duplicate.
pub fn quarantined_for_arrival(verdict: Verdict, signals: &[DrillSignal]) -> bool {
    verdict == Verdict::Drill && drill_by_arrival_only(signals)
}

/// How an arrival came in, for channel and endpoint drill signals.
#[derive(Debug, Clone, Copy)]
pub struct ArrivalContext<'a> {
    pub name: &'a str,
    pub channel: Channel,
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
) -> Vec<DrillSignal> {
    let mut signals: Vec<DrillSignal> = facts
        .drill_signals
        .iter()
        .map(|s| DrillSignal::new(DrillSource::Content, s.clone()))
        .collect();
    for p in &partner.drill_name_patterns {
        if p.is_match(arrival.name) {
            signals.push(DrillSignal::new(
                DrillSource::Name,
                format!("file name matches {}", p.as_str()),
            ));
        }
    }
    if partner.drill_channels.contains(&arrival.channel) {
        signals.push(DrillSignal::new(
            DrillSource::Channel,
            format!("channel {} is a drill channel", arrival.channel),
        ));
    }
    if let Some(ep) = arrival.endpoint
        && partner.drill_endpoints.iter().any(|d| d == ep)
    {
        signals.push(DrillSignal::new(
            DrillSource::Endpoint,
            format!("endpoint {ep} is a drill/DR site"),
        ));
    }
    for w in &partner.drill_windows {
        if arrival.received_at >= w.start && arrival.received_at < w.end {
            signals.push(DrillSignal::new(
                DrillSource::Window,
                format!(
                    "received inside the announced drill window {} – {}",
                    w.start, w.end
                ),
            ));
        }
    }
    if let (Some(window), Some(date)) = (partner.business_date_window, facts.business_date) {
        let today = now.with_timezone(&tz).date_naive();
        let earliest = today - chrono::Days::new(u64::from(window.days_before));
        let latest = today + chrono::Days::new(u64::from(window.days_after));
        if date < earliest || date > latest {
            signals.push(DrillSignal::new(
                DrillSource::BusinessDate,
                format!("business date {date} is outside {earliest} … {latest} (today {today})"),
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

    fn prior(id: i64, state: &str) -> PriorFile {
        PriorFile {
            id,
            name: format!("CSTL_031_20261121_{id:04}.dat"),
            state: FileState::parse(state).unwrap(),
            channel: Channel::SftpPull,
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
        let signal = [DrillSignal::new(DrillSource::Content, "run_mode=D")];
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
            drill_name_patterns: vec![regex::Regex::new("(?i)drill").unwrap()],
            drill_channels: vec![Channel::SftpPush],
            drill_endpoints: vec!["dr".into()],
            drill_windows: vec![DrillWindow {
                start: kst().with_ymd_and_hms(2026, 11, 28, 22, 0, 0).unwrap(),
                end: kst().with_ymd_and_hms(2026, 11, 29, 6, 0, 0).unwrap(),
            }],
            business_date_window: Some(DateWindow {
                days_before: 7,
                days_after: 1,
            }),
            ..Partner::for_tests("cardco", &["card-settlement"])
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
            Channel,
            Option<&'a str>,
            DateTime<Utc>,
            bool,
            DateTime<Utc>,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                "CSTL_031_20261121_0001.dat",
                Channel::Manual,
                None,
                normal,
                false,
                normal,
                0,
            ),
            (
                "CSTL_031_20261121_0001_DRILL.dat",
                Channel::Manual,
                None,
                normal,
                false,
                normal,
                1,
            ),
            (
                "cstl_drill.dat",
                Channel::Manual,
                None,
                normal,
                false,
                normal,
                1,
            ),
            (
                "CSTL_031_20261121_0001.dat",
                Channel::SftpPush,
                None,
                normal,
                false,
                normal,
                1,
            ),
            (
                "CSTL_031_20261121_0001.dat",
                Channel::SftpPull,
                Some("dr"),
                normal,
                false,
                normal,
                1,
            ),
            (
                "CSTL_031_20261121_0001.dat",
                Channel::SftpPull,
                Some("primary"),
                normal,
                false,
                normal,
                0,
            ),
            // 2026-11-28 23:00 KST = 14:00 UTC: inside the window.
            (
                "CSTL_031_20261121_0001.dat",
                Channel::Manual,
                None,
                t(2026, 11, 28, 14),
                false,
                normal,
                1,
            ),
            // 2026-11-29 06:00 KST = 21:00 UTC on the 28th: the window has ended.
            (
                "CSTL_031_20261121_0001.dat",
                Channel::Manual,
                None,
                t(2026, 11, 28, 21),
                false,
                normal,
                0,
            ),
            (
                "CSTL_031_20261121_0001.dat",
                Channel::Manual,
                None,
                normal,
                true,
                normal,
                1,
            ),
            // business date 2026-11-21; today (KST) 2026-11-29 is 8 days later: outside.
            (
                "CSTL_031_20261121_0001.dat",
                Channel::Manual,
                None,
                normal,
                false,
                t(2026, 11, 29, 1),
                1,
            ),
            // today 2026-11-28: 7 days, inside.
            (
                "CSTL_031_20261121_0001.dat",
                Channel::Manual,
                None,
                normal,
                false,
                t(2026, 11, 28, 1),
                0,
            ),
            // today 2026-11-19: the date is 2 days ahead, outside (1 allowed).
            (
                "CSTL_031_20261121_0001.dat",
                Channel::Manual,
                None,
                normal,
                false,
                t(2026, 11, 19, 1),
                1,
            ),
            (
                "drill.dat",
                Channel::SftpPush,
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
            channel: Channel::Manual,
            endpoint: None,
            received_at: Utc.with_ymd_and_hms(2026, 11, 22, 1, 0, 0).unwrap(),
        };
        let far = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        assert!(drill_signals(&p, &a, &f, far, kst()).is_empty());
    }

    /// Every kind of drill signal, and whether a file quarantined for it
    /// alone blocks a later copy of the same bytes (a duplicate) or leaves
    /// that copy to be judged on its own.
    #[test]
    fn which_drill_copies_block_their_twin() {
        let p = partner();
        let t = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        let normal = t(2026, 11, 22, 1);
        let arrive = |name, channel, endpoint, received| ArrivalContext {
            name,
            channel,
            endpoint,
            received_at: received,
        };
        let mut content = facts(true);
        content.drill_signals = vec!["run_mode=D".into()];
        let plain = facts(true);
        let ok = "CSTL_031_20261121_0001.dat";
        // (what raised it, the signals the gateway derives, blocks a twin?)
        let cases = [
            (
                DrillSource::Content,
                drill_signals(
                    &p,
                    &arrive(ok, Channel::Manual, None, normal),
                    &content,
                    normal,
                    kst(),
                ),
                true,
            ),
            (
                DrillSource::BusinessDate,
                drill_signals(
                    &p,
                    &arrive(ok, Channel::Manual, None, normal),
                    &plain,
                    t(2026, 12, 20, 1),
                    kst(),
                ),
                true,
            ),
            (
                DrillSource::Name,
                drill_signals(
                    &p,
                    &arrive("x_DRILL.dat", Channel::Manual, None, normal),
                    &plain,
                    normal,
                    kst(),
                ),
                false,
            ),
            (
                DrillSource::Channel,
                drill_signals(
                    &p,
                    &arrive(ok, Channel::SftpPush, None, normal),
                    &plain,
                    normal,
                    kst(),
                ),
                false,
            ),
            (
                DrillSource::Endpoint,
                drill_signals(
                    &p,
                    &arrive(ok, Channel::SftpPull, Some("dr"), normal),
                    &plain,
                    normal,
                    kst(),
                ),
                false,
            ),
            (
                DrillSource::Window,
                drill_signals(
                    &p,
                    &arrive(ok, Channel::Manual, None, t(2026, 11, 28, 14)),
                    &plain,
                    normal,
                    kst(),
                ),
                false,
            ),
        ];
        let kinds: std::collections::HashSet<DrillSource> = cases.iter().map(|c| c.0).collect();
        assert_eq!(kinds.len(), DrillSource::ALL.len(), "every kind is covered");
        for (source, signals, blocks) in &cases {
            assert_eq!(signals.len(), 1, "{source}: {signals:?}");
            assert_eq!(signals[0].source, *source, "{signals:?}");
            assert_eq!(
                quarantined_for_arrival(Verdict::Drill, signals),
                !blocks,
                "{source}"
            );
        }
        // Arrival signals beside a content signal: quarantined for the content.
        let mixed: Vec<DrillSignal> = cases.iter().flat_map(|c| c.1.clone()).collect();
        assert!(!quarantined_for_arrival(Verdict::Drill, &mixed));
        // Only a drill verdict is ever left out; no signals is not a drill.
        let endpoint = &cases[4].1;
        for v in Verdict::ALL {
            assert_eq!(
                quarantined_for_arrival(*v, endpoint),
                *v == Verdict::Drill,
                "{v}"
            );
        }
        assert!(!quarantined_for_arrival(Verdict::Drill, &[]));
    }
}
