//! Exact running control totals ([`Total`]): whole numbers while the data
//! is whole, a `Decimal` from the first addend with decimal places, and an
//! overflow exactly where a `Decimal` sum would overflow.

use rust_decimal::Decimal;

/// A running control total, exact. Whole-number addends (won amounts,
/// counts) are added as integers, and the total becomes a `Decimal` at the
/// first addend with decimal places. The sum is the same either way and
/// overflows exactly where a `Decimal` sum would (beyond 96 bits), but the
/// common case costs an integer add instead of a decimal one per record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Total {
    /// `|value| <= Decimal::MAX`.
    Whole(i128),
    Decimal(Decimal),
}

/// The largest magnitude of a whole-number `Decimal`: 2^96 - 1.
const WHOLE_MAX: u128 = (1 << 96) - 1;

impl Total {
    pub(super) const ZERO: Total = Total::Whole(0);

    pub(super) fn value(self) -> Decimal {
        match self {
            // In range by the invariant; `from_i128_with_scale` would panic
            // only beyond it.
            Total::Whole(n) => Decimal::try_from_i128_with_scale(n, 0).unwrap_or(Decimal::MAX),
            Total::Decimal(d) => d,
        }
    }

    /// `self + n`, or `None` when it overflows.
    pub(super) fn add_whole(self, n: i128) -> Option<Total> {
        let mut sum = self;
        sum.add_whole_in_place(n).then_some(sum)
    }

    /// Add `n` in place; `false`, and unchanged, when the sum overflows.
    /// (In place: a returned total would go through memory on every record.)
    #[inline(always)]
    pub(super) fn add_whole_in_place(&mut self, n: i128) -> bool {
        match self {
            Total::Whole(t) => match t.checked_add(n) {
                Some(s) if s.unsigned_abs() <= WHOLE_MAX => {
                    *t = s;
                    true
                }
                _ => false,
            },
            Total::Decimal(d) => {
                match Decimal::try_from_i128_with_scale(n, 0)
                    .ok()
                    .and_then(|n| d.checked_add(n))
                {
                    Some(s) => {
                        *d = s;
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Whether `n` can be added without overflow.
    #[inline(always)]
    pub(super) fn fits_whole(&self, n: i128) -> bool {
        self.clone().add_whole_in_place(n)
    }

    /// `self + d`, or `None` when it overflows.
    pub(super) fn add(self, d: Decimal) -> Option<Total> {
        if d.scale() == 0 {
            return self.add_whole(d.mantissa());
        }
        self.value().checked_add(d).map(Total::Decimal)
    }

    pub(super) fn add_total(self, other: Total) -> Option<Total> {
        match other {
            Total::Whole(n) => self.add_whole(n),
            Total::Decimal(d) => self.add(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_totals_overflow_where_decimals_do() {
        let max = Total::ZERO.add(Decimal::MAX).unwrap();
        assert_eq!(max.value(), Decimal::MAX);
        assert_eq!(max.add_whole(1), None);
        assert_eq!(Decimal::MAX.checked_add(Decimal::ONE), None);
        let min = Total::ZERO.add(Decimal::MIN).unwrap();
        assert_eq!(min.add_whole(-1), None);
        assert_eq!(
            min.add_whole(1).map(Total::value),
            Decimal::MIN.checked_add(Decimal::ONE)
        );
        // A failed add leaves the total as it was.
        let mut t = max;
        assert!(!t.add_whole_in_place(1));
        assert_eq!(t, max);
    }

    #[test]
    fn a_decimal_addend_makes_a_decimal_total() {
        let t = Total::Whole(5).add(Decimal::new(150, 2)).unwrap();
        assert_eq!(t.value().to_string(), "6.50");
        assert_eq!(t.add_whole(-7).unwrap().value().to_string(), "-0.50");
        // Whole addends written as decimals stay whole.
        let w = Total::Whole(5).add(Decimal::from(-7)).unwrap();
        assert_eq!(w, Total::Whole(-2));
        assert_eq!(
            w.add_total(Total::Whole(2)).unwrap().value().to_string(),
            "0"
        );
    }
}
