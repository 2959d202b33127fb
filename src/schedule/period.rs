//! Periods: the months, two-month blocks, quarters and years that activities recur in, aligned to
//! the financial year (quarters Apr–Jun, Jul–Sep, Oct–Dec, Jan–Mar by default).
//!
//! Occurrence `n` is computed as `anchor + n × length` from a month index, never by chaining from
//! the previous period, so nothing drifts (31 Jan → 29 Feb → 29 Mar is the classic trap).

use std::fmt;

use jiff::ToSpan;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

/// How often an activity recurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cadence {
    /// Every calendar month.
    Monthly,
    /// Every two months, from the financial year's start (Apr–May, Jun–Jul, …, Feb–Mar).
    Bimonthly,
    /// Every financial quarter.
    Quarterly,
    /// Every financial year.
    Annually,
}

impl Cadence {
    /// Length of one period in months.
    pub fn months(self) -> i32 {
        match self {
            Cadence::Monthly => 1,
            Cadence::Bimonthly => 2,
            Cadence::Quarterly => 3,
            Cadence::Annually => 12,
        }
    }

    /// The name used in the schedule file.
    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::Monthly => "monthly",
            Cadence::Bimonthly => "bimonthly",
            Cadence::Quarterly => "quarterly",
            Cadence::Annually => "annually",
        }
    }
}

/// How periods line up with the calendar: which month the financial year starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinancialYear {
    /// 1–12; 4 (April) in English local government.
    start_month: i8,
}

impl FinancialYear {
    /// A financial year starting in `start_month` (1–12); `None` outside that range.
    pub fn starting_in(start_month: i8) -> Option<Self> {
        (1..=12)
            .contains(&start_month)
            .then_some(Self { start_month })
    }

    /// The month (1–12) the financial year starts in.
    pub fn start_month(self) -> i8 {
        self.start_month
    }

    /// The label of the financial year that contains `date`: `2027-28`, or `2027` when the
    /// financial year is the calendar year.
    pub fn label(self, date: Date) -> String {
        let start_year = if date.month() >= self.start_month {
            date.year()
        } else {
            date.year() - 1
        };
        if self.start_month == 1 {
            format!("{start_year}")
        } else {
            format!("{start_year}-{:02}", (start_year + 1).rem_euclid(100))
        }
    }
}

/// One occurrence of a cadence: a span of whole days, first and last inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    /// First day; the period opens at 00:00 local time on it.
    pub start: Date,
    /// Last day, inclusive.
    pub end: Date,
    /// The cadence it belongs to, for labels.
    pub cadence: Cadence,
    /// The financial year alignment, for labels.
    fy_start_month: i8,
}

/// Months since year 0, so period arithmetic is integer arithmetic.
fn month_index(date: Date) -> i32 {
    i32::from(date.year()) * 12 + i32::from(date.month()) - 1
}

fn first_of_month_index(index: i32) -> Date {
    let year = index.div_euclid(12);
    let month = index.rem_euclid(12) + 1;
    Date::new(year as i16, month as i8, 1).expect("month index within jiff's range")
}

impl Period {
    /// The period of `cadence` that contains `date`.
    pub fn containing(cadence: Cadence, fy: FinancialYear, date: Date) -> Self {
        let offset = i32::from(fy.start_month) - 1;
        let len = cadence.months();
        let n = (month_index(date) - offset).div_euclid(len);
        Self::nth(cadence, fy, n)
    }

    /// Period number `n` counted from the financial-year-aligned anchor.
    fn nth(cadence: Cadence, fy: FinancialYear, n: i32) -> Self {
        let offset = i32::from(fy.start_month) - 1;
        let len = cadence.months();
        let start = first_of_month_index(n * len + offset);
        let next = first_of_month_index((n + 1) * len + offset);
        let end = next.checked_sub(1.day()).expect("within range");
        Self {
            start,
            end,
            cadence,
            fy_start_month: fy.start_month,
        }
    }

    fn number(&self) -> i32 {
        let offset = i32::from(self.fy_start_month) - 1;
        (month_index(self.start) - offset).div_euclid(self.cadence.months())
    }

    /// The period straight after this one.
    pub fn next(&self) -> Self {
        Self::nth(self.cadence, self.financial_year(), self.number() + 1)
    }

    /// The period straight before this one.
    pub fn previous(&self) -> Self {
        Self::nth(self.cadence, self.financial_year(), self.number() - 1)
    }

    /// The financial-year alignment this period was built with.
    pub fn financial_year(&self) -> FinancialYear {
        FinancialYear {
            start_month: self.fy_start_month,
        }
    }

    /// Whether `date` falls inside the period.
    pub fn contains(&self, date: Date) -> bool {
        self.start <= date && date <= self.end
    }

    /// A label people recognise: `2027-05`, `2027-28 B3`, `2027-28 Q3`, `2027-28`.
    pub fn label(&self) -> String {
        let fy = self.financial_year();
        let fy_label = fy.label(self.start);
        let months_into_year =
            (i32::from(self.start.month()) - i32::from(self.fy_start_month)).rem_euclid(12);
        match self.cadence {
            Cadence::Monthly => format!("{}-{:02}", self.start.year(), self.start.month()),
            Cadence::Bimonthly => format!("{fy_label} B{}", months_into_year / 2 + 1),
            Cadence::Quarterly => format!("{fy_label} Q{}", months_into_year / 3 + 1),
            Cadence::Annually => fy_label,
        }
    }

    /// The period in words, for messages: `June 2027`, `April–May 2027`,
    /// `December 2027–January 2028`, `Quarter 3 2027/28`, `2027/28`. Links and JSON keep
    /// [`Period::label`].
    pub fn long_label(&self) -> String {
        describe(self.start, self.end, self.financial_year())
    }

    /// Every period whose first day lies in `from..=to`, in order.
    pub fn starting_between(
        cadence: Cadence,
        fy: FinancialYear,
        from: Date,
        to: Date,
    ) -> impl Iterator<Item = Period> {
        let mut period = Self::containing(cadence, fy, from);
        if period.start < from {
            period = period.next();
        }
        std::iter::successors(Some(period), |p| Some(p.next())).take_while(move |p| p.start <= to)
    }
}

/// A span of whole months `start..=end` in words (see [`Period::long_label`]): one month, two
/// months, a financial quarter or a financial year; anything else as its first and last month.
pub fn describe(start: Date, end: Date, fy: FinancialYear) -> String {
    let month = |d: Date| d.strftime("%B").to_string();
    let months = month_index(end) - month_index(start) + 1;
    let into_year = (i32::from(start.month()) - i32::from(fy.start_month)).rem_euclid(12);
    let fy_words = || fy.label(start).replace('-', "/");
    match months {
        1 => format!("{} {}", month(start), start.year()),
        3 if into_year % 3 == 0 => format!("Quarter {} {}", into_year / 3 + 1, fy_words()),
        12 if into_year == 0 => fy_words(),
        _ if start.year() == end.year() => {
            format!("{}–{} {}", month(start), month(end), end.year())
        }
        _ => format!(
            "{} {}–{} {}",
            month(start),
            start.year(),
            month(end),
            end.year()
        ),
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    fn april() -> FinancialYear {
        FinancialYear::starting_in(4).unwrap()
    }

    #[test]
    fn quarters_follow_the_financial_year() {
        let q = Period::containing(Cadence::Quarterly, april(), date(2027, 11, 15));
        assert_eq!((q.start, q.end), (date(2027, 10, 1), date(2027, 12, 31)));
        assert_eq!(q.label(), "2027-28 Q3");
        let q4 = Period::containing(Cadence::Quarterly, april(), date(2028, 2, 29));
        assert_eq!((q4.start, q4.end), (date(2028, 1, 1), date(2028, 3, 31)));
        assert_eq!(q4.label(), "2027-28 Q4");
    }

    #[test]
    fn bimonthly_periods_run_april_may_to_february_march() {
        let b = Period::containing(Cadence::Bimonthly, april(), date(2027, 3, 10));
        assert_eq!((b.start, b.end), (date(2027, 2, 1), date(2027, 3, 31)));
        assert_eq!(b.label(), "2026-27 B6");
        let b1 = Period::containing(Cadence::Bimonthly, april(), date(2027, 4, 1));
        assert_eq!(
            (b1.start, b1.end, b1.label().as_str()),
            (date(2027, 4, 1), date(2027, 5, 31), "2027-28 B1")
        );
    }

    #[test]
    fn monthly_and_annual_labels() {
        let m = Period::containing(Cadence::Monthly, april(), date(2028, 2, 10));
        assert_eq!((m.end, m.label().as_str()), (date(2028, 2, 29), "2028-02"));
        let y = Period::containing(Cadence::Annually, april(), date(2027, 3, 31));
        assert_eq!(
            (y.start, y.end, y.label().as_str()),
            (date(2026, 4, 1), date(2027, 3, 31), "2026-27")
        );
    }

    #[test]
    fn periods_in_words() {
        let words = |cadence, day| Period::containing(cadence, april(), day).long_label();
        assert_eq!(words(Cadence::Monthly, date(2027, 6, 9)), "June 2027");
        assert_eq!(
            words(Cadence::Bimonthly, date(2027, 4, 9)),
            "April–May 2027"
        );
        assert_eq!(
            words(Cadence::Bimonthly, date(2027, 12, 9)),
            "December 2027–January 2028"
        );
        assert_eq!(
            words(Cadence::Quarterly, date(2027, 11, 9)),
            "Quarter 3 2027/28"
        );
        assert_eq!(words(Cadence::Annually, date(2027, 11, 9)), "2027/28");
        let calendar_year = FinancialYear::starting_in(1).unwrap();
        let y = Period::containing(Cadence::Annually, calendar_year, date(2027, 11, 9));
        assert_eq!(y.long_label(), "2027");
    }

    proptest! {
        /// Periods tile time: each starts the day after the previous one ends, and contains the
        /// date it was looked up by.
        #[test]
        fn periods_tile_the_year(days in 0i64..20_000, cadence_n in 0usize..4, fy_month in 1i8..=12) {
            let cadence = [Cadence::Monthly, Cadence::Bimonthly, Cadence::Quarterly, Cadence::Annually][cadence_n];
            let fy = FinancialYear::starting_in(fy_month).unwrap();
            let day = date(2000, 1, 1).checked_add(days.days()).unwrap();
            let p = Period::containing(cadence, fy, day);
            prop_assert!(p.contains(day));
            prop_assert_eq!(p.start.day(), 1);
            let next = p.next();
            prop_assert_eq!(next.start, p.end.checked_add(1.day()).unwrap());
            prop_assert_eq!(Period::containing(cadence, fy, next.start), next);
        }
    }
}
