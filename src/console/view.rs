//! How the console shows figures: exact amounts with thousands separators
//! (whole won without decimals), ages, and the chart's geometry. Pure.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// `1234567` → `1,234,567`; `-1234.50` → `-1,234.50`. Whole amounts (KRW)
/// have no decimals; others keep the digits they have.
pub fn amount(d: Decimal) -> String {
    let d = if d.fract().is_zero() { d.trunc() } else { d };
    let text = d.abs().to_string();
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text.as_str(), None),
    };
    let mut grouped = String::with_capacity(int.len() + int.len() / 3 + 2);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if d.is_sign_negative() && !d.is_zero() {
        "-"
    } else {
        ""
    };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// How long ago, in words an operator reads at a glance.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// One partner's line in the chart.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Series {
    pub partner: String,
    pub colour: &'static str,
    /// SVG polyline points.
    pub points: String,
    /// The last date's total, shown in the legend.
    pub last: String,
}

/// The chart: dates on x, totals on y, one polyline per partner.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub series: Vec<Series>,
    /// The largest total, labelled at the top of the axis.
    pub max: String,
    pub first_date: String,
    pub last_date: String,
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// Lay out `totals` (partner → total per date, in `dates` order) in a
/// `width` × `height` box. Amounts are scaled exactly, then rounded to a
/// pixel.
pub fn chart(
    dates: &[NaiveDate],
    totals: &[(String, Vec<Decimal>)],
    width: u32,
    height: u32,
) -> Chart {
    let max = totals
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(Decimal::ZERO, Decimal::max);
    let (left, right, top, bottom) = (10i64, 10i64, 10i64, 10i64);
    let w = i64::from(width) - left - right;
    let h = i64::from(height) - top - bottom;
    let steps = dates.len().saturating_sub(1).max(1) as i64;
    let series = totals
        .iter()
        .enumerate()
        .map(|(i, (partner, values))| {
            let points = values
                .iter()
                .enumerate()
                .map(|(x, v)| {
                    let px = left + w * x as i64 / steps;
                    let scaled = if max.is_zero() {
                        Decimal::ZERO
                    } else {
                        ((*v).max(Decimal::ZERO) * Decimal::from(h) / max).round()
                    };
                    let py = top + h - scaled.to_i64().unwrap_or(0);
                    format!("{px},{py}")
                })
                .collect::<Vec<_>>()
                .join(" ");
            Series {
                partner: partner.clone(),
                colour: PALETTE[i % PALETTE.len()],
                points,
                last: values.last().copied().map(amount).unwrap_or_default(),
            }
        })
        .collect();
    Chart {
        width,
        height,
        series,
        max: amount(max),
        first_date: dates.first().map(|d| d.to_string()).unwrap_or_default(),
        last_date: dates.last().map(|d| d.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amounts_are_exact_and_grouped() {
        for (input, shown) in [
            ("0", "0"),
            ("999", "999"),
            ("1000", "1,000"),
            ("2100000000", "2,100,000,000"),
            ("-2100000000", "-2,100,000,000"),
            ("1234567.00", "1,234,567"),
            ("1234.5", "1,234.5"),
            ("-0.05", "-0.05"),
            (
                "123456789012345678901234.5",
                "123,456,789,012,345,678,901,234.5",
            ),
        ] {
            assert_eq!(amount(d(input)), shown, "{input}");
        }
    }

    #[test]
    fn ages_read_at_a_glance() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z")
            .unwrap()
            .to_utc();
        let s = chrono::Duration::seconds;
        assert_eq!(age(t, t + s(5)), "5 s");
        assert_eq!(age(t, t + s(125)), "2 min");
        assert_eq!(age(t, t + s(3 * 3600 + 720)), "3 h 12 min");
        assert_eq!(age(t, t + s(2 * 86_400 + 3600)), "2 d 1 h");
        assert_eq!(age(t + s(10), t), "0 s");
    }

    #[test]
    fn the_chart_scales_to_the_largest_total() {
        let dates: Vec<NaiveDate> = (1..=3)
            .map(|i| NaiveDate::from_ymd_opt(2026, 11, i).unwrap())
            .collect();
        let c = chart(
            &dates,
            &[
                ("a".into(), vec![d("0"), d("50"), d("100")]),
                ("b".into(), vec![d("25"), d("0"), d("-10")]),
            ],
            120,
            120,
        );
        // 100 × 100 plot inside a 10-pixel margin.
        assert_eq!(c.series[0].points, "10,110 60,60 110,10");
        assert_eq!(c.series[1].points, "10,85 60,110 110,110");
        assert_eq!(c.max, "100");
        assert_eq!(c.series[1].last, "-10");
        assert_ne!(c.series[0].colour, c.series[1].colour);
        // Nothing fed: a flat line, no division by zero.
        let flat = chart(&dates, &[("a".into(), vec![d("0"); 3])], 120, 120);
        assert_eq!(flat.series[0].points, "10,110 60,110 110,110");
    }
}
