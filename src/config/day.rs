//! The settlement day's settings: `[calendar]` (business days),
//! `[[partners.expect]]` (files expected and their deadlines),
//! `[operators]` (four-eyes) and `[metrics]` (the HTTP side of `serve`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use chrono::{Datelike, FixedOffset, NaiveDate, NaiveTime, Weekday};
use serde::Deserialize;

use crate::model::OverrideAction;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCalendar {
    /// Days of the week that are never business days. Default
    /// `["saturday", "sunday"]`.
    weekends: Option<Vec<String>>,
    /// Holidays, `YYYY-MM-DD`.
    #[serde(default)]
    holidays: Vec<String>,
    /// A file of holidays, one `YYYY-MM-DD` a line (`#` starts a comment),
    /// relative to the config file. Added to `holidays`.
    holidays_file: Option<String>,
}

/// Which dates are business days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub weekends: Vec<Weekday>,
    pub holidays: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    fn default() -> Calendar {
        Calendar {
            weekends: vec![Weekday::Sat, Weekday::Sun],
            holidays: BTreeSet::new(),
        }
    }
}

impl Calendar {
    pub fn is_business_day(&self, d: NaiveDate) -> bool {
        !self.weekends.contains(&d.weekday()) && !self.holidays.contains(&d)
    }

    /// The business day `n` business days after `d` (`d` itself need not
    /// be one). Gives up after ten years of holidays.
    pub fn add_business_days(&self, d: NaiveDate, n: u32) -> Option<NaiveDate> {
        let mut day = d;
        let mut left = n;
        let mut steps = 0u32;
        while left > 0 {
            day = day.succ_opt()?;
            steps += 1;
            if steps > 3660 {
                return None;
            }
            if self.is_business_day(day) {
                left -= 1;
            }
        }
        Some(day)
    }
}

fn weekday(s: &str) -> Result<Weekday, String> {
    s.parse::<Weekday>()
        .map_err(|_| format!("weekends: {s:?} is not a day of the week (e.g. \"saturday\")"))
}

fn date(s: &str, whence: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("{whence}: {s:?} is not a date YYYY-MM-DD ({e})"))
}

pub(super) fn build_calendar(raw: RawCalendar, base: &Path) -> Result<Calendar, String> {
    let weekends = match raw.weekends {
        None => Calendar::default().weekends,
        Some(w) => w.iter().map(|d| weekday(d)).collect::<Result<_, _>>()?,
    };
    let mut holidays = BTreeSet::new();
    for h in &raw.holidays {
        holidays.insert(date(h, "holidays")?);
    }
    if let Some(file) = raw.holidays_file {
        let path = base.join(&file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("holidays_file {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            holidays.insert(date(
                line,
                &format!("holidays_file {} line {}", path.display(), n + 1),
            )?);
        }
    }
    Ok(Calendar { weekends, holidays })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    /// The format of the expected file (one of the partner's formats).
    format: String,
    /// `business` (business days only) or `every` (every date). Default `business`.
    days: Option<String>,
    /// Files expected per business date. Default 1.
    count: Option<u32>,
    /// Deadline time of day, `HH:MM`, in `timezone`.
    by: String,
    /// UTC offset of the deadline. Default: the top-level `timezone`.
    timezone: Option<String>,
    /// Days after the business date the deadline falls on (business days
    /// when `days = "business"`). Default 1.
    lag_days: Option<u32>,
}

/// Which dates a file is expected for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectDays {
    Business,
    Every,
}

/// One expected file (or several) per business date from a partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub format: String,
    pub days: ExpectDays,
    pub count: u32,
    pub by: NaiveTime,
    pub timezone: FixedOffset,
    pub lag_days: u32,
}

pub(super) fn build_expect(
    raw: RawExpect,
    formats: &[String],
    default_tz: FixedOffset,
) -> Result<Expectation, String> {
    let ctx = format!("expect {}", raw.format);
    if !formats.contains(&raw.format) {
        return Err(format!(
            "{ctx}: format {:?} is not one of the partner's formats ({})",
            raw.format,
            formats.join(", ")
        ));
    }
    let days = match raw.days.as_deref() {
        None | Some("business") => ExpectDays::Business,
        Some("every") => ExpectDays::Every,
        Some(other) => {
            return Err(format!(
                "{ctx}: days {other:?} is not \"business\" or \"every\""
            ));
        }
    };
    let count = raw.count.unwrap_or(1);
    if count == 0 {
        return Err(format!(
            "{ctx}: count must be at least 1 (remove the expectation instead)"
        ));
    }
    let by = NaiveTime::parse_from_str(&raw.by, "%H:%M")
        .map_err(|e| format!("{ctx}: by {:?} is not a time HH:MM ({e})", raw.by))?;
    let timezone = match &raw.timezone {
        None => default_tz,
        Some(t) => t.parse::<FixedOffset>().map_err(|e| {
            format!("{ctx}: timezone {t:?} is not a UTC offset such as +09:00 ({e})")
        })?,
    };
    let lag_days = raw.lag_days.unwrap_or(1);
    if lag_days > 366 {
        return Err(format!("{ctx}: lag_days {lag_days} is more than a year"));
    }
    Ok(Expectation {
        format: raw.format,
        days,
        count,
        by,
        timezone,
        lag_days,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperators {
    /// Actions that need a second operator's approval: any of `release`,
    /// `supersede`, `reject`, `redeliver`, `resend`. Default none.
    #[serde(default)]
    four_eyes: Vec<String>,
    /// Hours a request waits for approval before it expires. Default 24.
    request_ttl_hours: Option<u32>,
}

/// Operators' rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operators {
    pub four_eyes: Vec<OverrideAction>,
    pub request_ttl_hours: u32,
}

impl Default for Operators {
    fn default() -> Operators {
        Operators {
            four_eyes: Vec::new(),
            request_ttl_hours: 24,
        }
    }
}

impl Operators {
    pub fn needs_second(&self, action: OverrideAction) -> bool {
        self.four_eyes.contains(&action)
    }
}

pub(super) fn build_operators(raw: RawOperators) -> Result<Operators, String> {
    let four_eyes = raw
        .four_eyes
        .iter()
        .map(|a| OverrideAction::parse(a).map_err(|e| format!("four_eyes: {e}")))
        .collect::<Result<_, _>>()?;
    let request_ttl_hours = raw.request_ttl_hours.unwrap_or(24);
    if request_ttl_hours == 0 || request_ttl_hours > 24 * 31 {
        return Err(format!(
            "request_ttl_hours: {request_ttl_hours} is not from 1 to 744 (31 days)"
        ));
    }
    Ok(Operators {
        four_eyes,
        request_ttl_hours,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// Address `serve` answers `GET /metrics` and `GET /healthz` on, e.g.
    /// `127.0.0.1:9464`.
    listen: String,
}

/// The HTTP side of `serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub listen: SocketAddr,
}

pub(super) fn build_metrics(raw: RawMetrics) -> Result<Metrics, String> {
    let listen = raw.listen.parse::<SocketAddr>().map_err(|e| {
        format!(
            "listen {:?} is not an address such as 127.0.0.1:9464 ({e})",
            raw.listen
        )
    })?;
    Ok(Metrics { listen })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        let mut c = Calendar::default();
        c.holidays.insert(d("2026-11-30"));
        // Friday 2026-11-27 → Monday is a holiday → Tuesday.
        assert!(c.is_business_day(d("2026-11-27")));
        assert!(!c.is_business_day(d("2026-11-28")));
        assert!(!c.is_business_day(d("2026-11-30")));
        assert_eq!(
            c.add_business_days(d("2026-11-27"), 1),
            Some(d("2026-12-01"))
        );
        assert_eq!(
            c.add_business_days(d("2026-11-26"), 1),
            Some(d("2026-11-27"))
        );
        assert_eq!(
            c.add_business_days(d("2026-11-26"), 0),
            Some(d("2026-11-26"))
        );
        let never = Calendar {
            weekends: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ],
            holidays: BTreeSet::new(),
        };
        assert_eq!(never.add_business_days(d("2026-11-26"), 1), None);
    }

    #[test]
    fn holidays_file_lines_are_named_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("h.txt"),
            "# KR 2026\n2026-12-25\n\n2026-13-01\n",
        )
        .unwrap();
        let e = build_calendar(
            RawCalendar {
                weekends: None,
                holidays: vec![],
                holidays_file: Some("h.txt".into()),
            },
            dir.path(),
        )
        .unwrap_err();
        assert!(e.contains("line 4") && e.contains("2026-13-01"), "{e}");
        std::fs::write(dir.path().join("h.txt"), "2026-12-25 # Christmas\n").unwrap();
        let c = build_calendar(
            RawCalendar {
                weekends: Some(vec!["friday".into()]),
                holidays: vec!["2027-01-01".into()],
                holidays_file: Some("h.txt".into()),
            },
            dir.path(),
        )
        .unwrap();
        assert_eq!(c.weekends, vec![Weekday::Fri]);
        assert_eq!(c.holidays.len(), 2);
    }
}
