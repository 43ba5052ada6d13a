//! Whether a settlement day is ready: a pure function of what each partner
//! is expected to send ([`Expectation`]), the business calendar, what the
//! ledger holds for the business date, and the time now. `settlegate
//! report` and the `settlegate_expected_files_late` metric both read it.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::config::{Calendar, ExpectDays, Expectation, Partner};
use crate::model::{FileState, Verdict};

/// A file the ledger holds for the business date, as the report needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct DayFile {
    pub id: i64,
    pub partner: String,
    /// `None`: the file could not be read far enough to know.
    pub format: Option<String>,
    pub name: String,
    pub state: FileState,
    pub reason: Option<String>,
}

/// A file waiting in quarantine, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub file_id: i64,
    pub verdict: Verdict,
    pub name: String,
    pub reason: Option<String>,
}

/// Where one partner's format stands for the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every expected file fed, nothing waiting.
    Ok,
    /// Files missing, the deadline not passed yet.
    Waiting,
    /// Files missing after the deadline.
    Late,
    /// A file waits in quarantine for an operator.
    Quarantined,
}

/// One row of the report: a partner and format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub partner: String,
    /// `-` for quarantined files whose format is unknown.
    pub format: String,
    pub expected: u32,
    /// Arrivals for the date, whatever became of them.
    pub received: u32,
    pub fed: u32,
    /// Files waiting in quarantine (drill, conflict, overlap, invalid).
    pub quarantined: Vec<Waiting>,
    /// Arrivals refused as duplicates.
    pub refused: u32,
    pub missing: u32,
    /// `None` when nothing is expected.
    pub deadline: Option<DateTime<FixedOffset>>,
    pub status: Status,
    /// What settlement pays for the date (fed entries, reversals included).
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
}

/// The report for one business date.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayReport {
    pub date: NaiveDate,
    pub business_day: bool,
    /// Every row is `ok`.
    pub ready: bool,
    pub rows: Vec<Row>,
}

/// The deadline of an expectation for business date `date`; `None` when
/// no file is expected that date (not a business day, for `business`).
pub fn deadline(
    e: &Expectation,
    calendar: &Calendar,
    date: NaiveDate,
) -> Option<DateTime<FixedOffset>> {
    let due = match e.days {
        ExpectDays::Business => {
            if !calendar.is_business_day(date) {
                return None;
            }
            calendar.add_business_days(date, e.lag_days)?
        }
        ExpectDays::Every => date.checked_add_days(chrono::Days::new(u64::from(e.lag_days)))?,
    };
    due.and_time(e.by).and_local_timezone(e.timezone).single()
}

/// The report for `date`: `files` are the ledger's files for the date,
/// `totals` what it pays per (partner, format).
pub fn report(
    date: NaiveDate,
    partners: &[Partner],
    calendar: &Calendar,
    files: &[DayFile],
    totals: &BTreeMap<(String, String), Decimal>,
    now: DateTime<Utc>,
) -> DayReport {
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let blank = |partner: &str, format: &str| Row {
        partner: partner.to_string(),
        format: format.to_string(),
        expected: 0,
        received: 0,
        fed: 0,
        quarantined: Vec::new(),
        refused: 0,
        missing: 0,
        deadline: None,
        status: Status::Ok,
        total: Decimal::ZERO,
    };
    for p in partners {
        for e in &p.expect {
            let mut row = blank(&p.id, &e.format);
            row.deadline = deadline(e, calendar, date);
            if row.deadline.is_some() {
                row.expected = e.count;
            }
            rows.insert((p.id.clone(), e.format.clone()), row);
        }
    }
    for f in files {
        let format = f.format.clone().unwrap_or_else(|| "-".into());
        let row = rows
            .entry((f.partner.clone(), format.clone()))
            .or_insert_with(|| blank(&f.partner, &format));
        row.received += 1;
        match f.state {
            FileState::Judged(Verdict::Fed) => row.fed += 1,
            FileState::Judged(Verdict::Duplicate) => row.refused += 1,
            FileState::Judged(v) if v.is_quarantine() => row.quarantined.push(Waiting {
                file_id: f.id,
                verdict: v,
                name: f.name.clone(),
                reason: f.reason.clone(),
            }),
            // Received (being judged), superseded (its replacement is the
            // fed one), rejected (closed for good): neither fed nor waiting.
            _ => {}
        }
    }
    for ((partner, format), row) in rows.iter_mut() {
        row.total = totals
            .get(&(partner.clone(), format.clone()))
            .copied()
            .unwrap_or_default();
        row.missing = row.expected.saturating_sub(row.fed);
        row.status = if !row.quarantined.is_empty() {
            Status::Quarantined
        } else if row.missing == 0 {
            Status::Ok
        } else if row.deadline.is_some_and(|d| now > d) {
            Status::Late
        } else {
            Status::Waiting
        };
    }
    let rows: Vec<Row> = rows.into_values().collect();
    DayReport {
        date,
        business_day: calendar.is_business_day(date),
        ready: rows.iter().all(|r| r.status == Status::Ok),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveTime, TimeZone};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn kst() -> FixedOffset {
        FixedOffset::east_opt(9 * 3600).unwrap()
    }

    fn bankco(days: ExpectDays, count: u32) -> Partner {
        let mut p = Partner::for_tests("bankco", &["bank-transfer-result"]);
        p.expect = vec![Expectation {
            format: "bank-transfer-result".into(),
            days,
            count,
            by: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            timezone: kst(),
            lag_days: 1,
        }];
        p
    }

    fn file(id: i64, state: FileState) -> DayFile {
        DayFile {
            id,
            partner: "bankco".into(),
            format: Some("bank-transfer-result".into()),
            name: format!("f{id}"),
            state,
            reason: Some(format!("r{id}")),
        }
    }

    /// 09:00 KST on `date`, plus `minutes`.
    fn at(date: &str, minutes: i64) -> DateTime<Utc> {
        kst()
            .from_local_datetime(&d(date).and_hms_opt(9, 0, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::minutes(minutes)
    }

    fn one(p: &Partner, date: &str, files: &[DayFile], now: DateTime<Utc>) -> (bool, Status, Row) {
        let r = report(
            d(date),
            std::slice::from_ref(p),
            &Calendar::default(),
            files,
            &BTreeMap::new(),
            now,
        );
        (r.ready, r.rows[0].status, r.rows[0].clone())
    }

    #[test]
    fn missing_is_waiting_before_the_deadline_and_late_after() {
        let p = bankco(ExpectDays::Business, 1);
        // Thursday 2026-11-26, due Friday 09:00 KST.
        let (ready, status, row) = one(&p, "2026-11-26", &[], at("2026-11-27", -1));
        assert_eq!((ready, status, row.missing), (false, Status::Waiting, 1));
        assert_eq!(
            row.deadline.map(|d| d.to_rfc3339()),
            Some("2026-11-27T09:00:00+09:00".into())
        );
        let (ready, status, _) = one(&p, "2026-11-26", &[], at("2026-11-27", 1));
        assert_eq!((ready, status), (false, Status::Late));
        // Fed: ok whenever.
        let fed = [file(1, FileState::FED)];
        let (ready, status, row) = one(&p, "2026-11-26", &fed, at("2026-11-27", 600));
        assert_eq!(
            (ready, status, row.fed, row.missing),
            (true, Status::Ok, 1, 0)
        );
    }

    #[test]
    fn friday_is_due_monday_and_weekends_expect_nothing() {
        let p = bankco(ExpectDays::Business, 1);
        let (_, status, row) = one(&p, "2026-11-27", &[], at("2026-11-28", 600));
        assert_eq!(status, Status::Waiting, "due Monday, not Saturday");
        assert_eq!(row.deadline.map(|d| d.date_naive()), Some(d("2026-11-30")));
        let (ready, status, row) = one(&p, "2026-11-28", &[], at("2026-12-05", 0));
        assert_eq!((ready, status, row.expected), (true, Status::Ok, 0));
        assert_eq!(row.deadline, None);
        // `every`: Saturday expects one, due Sunday.
        let every = bankco(ExpectDays::Every, 1);
        let (ready, status, _) = one(&every, "2026-11-28", &[], at("2026-11-29", 1));
        assert_eq!((ready, status), (false, Status::Late));
    }

    #[test]
    fn quarantine_keeps_the_day_not_ready_whatever_was_fed() {
        let p = bankco(ExpectDays::Business, 1);
        let files = [
            file(1, FileState::FED),
            file(2, FileState::Judged(Verdict::Drill)),
        ];
        let (ready, status, row) = one(&p, "2026-11-26", &files, at("2026-11-26", 0));
        assert_eq!((ready, status), (false, Status::Quarantined));
        assert_eq!(row.quarantined.len(), 1);
        assert_eq!(row.quarantined[0].file_id, 2);
        assert_eq!(row.quarantined[0].reason.as_deref(), Some("r2"));
        assert_eq!((row.received, row.fed, row.missing), (2, 1, 0));
        // Rejected: no longer waiting.
        let files = [file(1, FileState::FED), file(2, FileState::Rejected)];
        let (ready, status, _) = one(&p, "2026-11-26", &files, at("2026-11-26", 0));
        assert_eq!((ready, status), (true, Status::Ok));
    }

    #[test]
    fn duplicates_are_counted_as_refused_and_count_needs_each_file() {
        let p = bankco(ExpectDays::Business, 2);
        let files = [
            file(1, FileState::FED),
            file(2, FileState::Judged(Verdict::Duplicate)),
            file(3, FileState::Superseded),
        ];
        let (ready, status, row) = one(&p, "2026-11-26", &files, at("2026-11-27", 1));
        assert_eq!((ready, status), (false, Status::Late));
        assert_eq!(
            (row.received, row.fed, row.refused, row.missing),
            (3, 1, 1, 1)
        );
    }

    #[test]
    fn unexpected_files_have_rows_and_quarantine_them_too() {
        let p = Partner::for_tests("pgco", &["pg-settlement-csv"]);
        let mut f = file(9, FileState::Judged(Verdict::Invalid));
        f.partner = "pgco".into();
        f.format = None;
        let r = report(
            d("2026-11-26"),
            &[p],
            &Calendar::default(),
            &[f],
            &BTreeMap::new(),
            at("2026-11-26", 0),
        );
        assert!(!r.ready);
        assert_eq!(r.rows.len(), 1);
        assert_eq!((r.rows[0].format.as_str(), r.rows[0].expected), ("-", 0));
        assert_eq!(r.rows[0].status, Status::Quarantined);
    }

    #[test]
    fn totals_are_the_ledgers_exact_figures() {
        let p = bankco(ExpectDays::Business, 1);
        let mut totals = BTreeMap::new();
        totals.insert(
            ("bankco".to_string(), "bank-transfer-result".to_string()),
            Decimal::new(123_456_789_012_345, 2),
        );
        let r = report(
            d("2026-11-26"),
            &[p],
            &Calendar::default(),
            &[file(1, FileState::FED)],
            &totals,
            at("2026-11-26", 0),
        );
        assert_eq!(r.rows[0].total.to_string(), "1234567890123.45");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rows"][0]["total"], "1234567890123.45");
        assert_eq!(json["rows"][0]["status"], "ok");
    }
}
