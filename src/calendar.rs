//! Working days: Monday to Friday, minus the bank holidays of one division of GOV.UK's
//! `bank-holidays.json`.
//!
//! Pure: the file's text is parsed here, but reading it is the caller's job, and nothing here reads
//! the clock. Dates are civil dates (`jiff::civil::Date`), never instants, so a clock change cannot
//! move a working day.

use std::collections::BTreeSet;

use jiff::ToSpan;
use jiff::civil::{Date, Weekday};
use serde::Deserialize;

/// The GOV.UK division whose holidays apply unless configured otherwise.
pub const DEFAULT_DIVISION: &str = "england-and-wales";

/// A set of bank holidays and the years the data covers.
///
/// Holidays are data, not rules: one-off holidays are proclaimed (3 June 2022, 19 September 2022,
/// 8 May 2023), so rule-based calculators get years wrong.
#[derive(Debug, Clone)]
pub struct Calendar {
    /// The holidays, sorted, so lookups and "what years do we know" are cheap.
    holidays: BTreeSet<Date>,
    /// The holidays that fall on a weekday, as day numbers ([`day_number`]), sorted: counting
    /// working days between two dates is then arithmetic on weeks and two binary searches, not
    /// a walk day by day (the daily decision counts for every piece of open work).
    weekday_holidays: Vec<i64>,
    /// First year with at least one holiday in the data; `None` for an empty calendar.
    first_year: Option<i16>,
    /// Last year with at least one holiday in the data.
    last_year: Option<i16>,
}

/// Why a bank-holiday file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The text is not JSON of the GOV.UK shape.
    #[error("not a GOV.UK bank-holidays.json file: {0}")]
    Format(#[from] serde_json::Error),
    /// The requested division is not in the file.
    #[error(
        "division `{0}` is not in the file (GOV.UK uses england-and-wales, scotland, northern-ireland)"
    )]
    MissingDivision(String),
    /// An event date is not a valid `YYYY-MM-DD`.
    #[error("event `{title}` has an invalid date `{date}`")]
    BadDate {
        /// The event's title, to find it in the file.
        title: String,
        /// The text that failed to parse.
        date: String,
    },
}

#[derive(Deserialize)]
struct Division {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    title: String,
    date: String,
}

impl Calendar {
    /// A calendar with no bank holidays: every weekday is a working day.
    pub fn weekdays_only() -> Self {
        Self::from_holidays(std::iter::empty())
    }

    /// A calendar from an explicit list of holidays.
    pub fn from_holidays(holidays: impl IntoIterator<Item = Date>) -> Self {
        let holidays: BTreeSet<Date> = holidays.into_iter().collect();
        let first_year = holidays.first().map(|d| d.year());
        let last_year = holidays.last().map(|d| d.year());
        let weekday_holidays = holidays
            .iter()
            .filter(|d| !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday))
            .map(|&d| day_number(d))
            .collect();
        Self {
            holidays,
            weekday_holidays,
            first_year,
            last_year,
        }
    }

    /// Parses GOV.UK's `bank-holidays.json` and keeps one division's events.
    pub fn from_govuk_json(text: &str, division: &str) -> Result<Self, CalendarError> {
        let mut divisions: std::collections::HashMap<String, Division> =
            serde_json::from_str(text)?;
        let division = divisions
            .remove(division)
            .ok_or_else(|| CalendarError::MissingDivision(division.to_owned()))?;
        let mut dates = Vec::with_capacity(division.events.len());
        for event in division.events {
            let date: Date = event.date.parse().map_err(|_| CalendarError::BadDate {
                title: event.title.clone(),
                date: event.date.clone(),
            })?;
            dates.push(date);
        }
        Ok(Self::from_holidays(dates))
    }

    /// Whether `date` is a working day: a weekday that is not a bank holiday.
    pub fn is_working_day(&self, date: Date) -> bool {
        !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
            && !self.holidays.contains(&date)
    }

    /// Whether `date` is a bank holiday in the data.
    pub fn is_holiday(&self, date: Date) -> bool {
        self.holidays.contains(&date)
    }

    /// Whether the data has holidays for `year`; outside that range the calendar silently treats
    /// every weekday as working, which `qaloop check` warns about.
    pub fn covers_year(&self, year: i16) -> bool {
        matches!((self.first_year, self.last_year), (Some(a), Some(b)) if a <= year && year <= b)
    }

    /// The last year the data covers, for warnings.
    pub fn last_year(&self) -> Option<i16> {
        self.last_year
    }

    /// The `n`th working day on or after `start` (`n` counts from 1; `start` itself counts when
    /// it is a working day). `n == 0` is treated as 1.
    pub fn nth_working_day_from(&self, start: Date, n: u32) -> Date {
        let mut remaining = n.max(1);
        let mut day = start;
        loop {
            if self.is_working_day(day) {
                remaining -= 1;
                if remaining == 0 {
                    return day;
                }
            }
            day = next_day(day);
        }
    }

    /// The `n`th working day strictly after `date`: counting starts the next day.
    pub fn nth_working_day_after(&self, date: Date, n: u32) -> Date {
        self.nth_working_day_from(next_day(date), n)
    }

    /// The last working day on or before `date`.
    pub fn last_working_day_on_or_before(&self, date: Date) -> Date {
        let mut day = date;
        while !self.is_working_day(day) {
            day = day
                .yesterday()
                .expect("dates far from the supported range's edges");
        }
        day
    }

    /// The `n`th working day strictly before `date` (`n` from 1).
    pub fn nth_working_day_before(&self, date: Date, n: u32) -> Date {
        let mut remaining = n.max(1);
        let mut day = date;
        loop {
            day = day
                .yesterday()
                .expect("dates far from the supported range's edges");
            if self.is_working_day(day) {
                remaining -= 1;
                if remaining == 0 {
                    return day;
                }
            }
        }
    }

    /// Working days strictly after `from` up to and including `to` (0 when `to <= from`).
    ///
    /// Constant time: weekdays by arithmetic, minus the weekday holidays in between (two
    /// binary searches).
    pub fn working_days_between(&self, from: Date, to: Date) -> u32 {
        if to <= from {
            return 0;
        }
        let (from, to) = (day_number(from), day_number(to));
        let weekdays = weekdays_before(to + 1) - weekdays_before(from + 1);
        let holidays = self.weekday_holidays.partition_point(|&h| h <= to)
            - self.weekday_holidays.partition_point(|&h| h <= from);
        u32::try_from(weekdays - holidays as i64).unwrap_or(u32::MAX)
    }
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (negative before it): Howard
/// Hinnant's `days_from_civil`.
fn day_number(date: Date) -> i64 {
    let (y, m, d) = (
        i64::from(date.year()),
        i64::from(date.month()),
        i64::from(date.day()),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Monday to Friday among the days numbered below `n`, counted from Monday 1970-01-05 (day 4);
/// only differences of it mean anything.
fn weekdays_before(n: i64) -> i64 {
    let since_monday = n - 4;
    let (weeks, rest) = (since_monday.div_euclid(7), since_monday.rem_euclid(7));
    weeks * 5 + rest.min(5)
}

/// The shipped England-and-Wales calendar (`config/bank-holidays.json`), for unit tests.
#[cfg(test)]
pub(crate) fn shipped_for_tests() -> Calendar {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/bank-holidays.json"
    ))
    .unwrap();
    Calendar::from_govuk_json(&text, DEFAULT_DIVISION).unwrap()
}

/// The day after `date`.
pub fn next_day(date: Date) -> Date {
    date.checked_add(1.day())
        .expect("dates far from the supported range's edges")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn england() -> Calendar {
        shipped_for_tests()
    }

    #[test]
    fn christmas_2026_counts_from_the_next_day_and_skips_three_holidays() {
        let cal = england();
        // Issue example: completed Mon 21 Dec 2026, 10th working day after is Thu 7 Jan 2027.
        assert_eq!(
            cal.nth_working_day_after(date(2026, 12, 21), 10),
            date(2027, 1, 7)
        );
    }

    #[test]
    fn the_first_day_counts_when_it_is_a_working_day() {
        let cal = england();
        assert_eq!(
            cal.nth_working_day_from(date(2027, 6, 1), 1),
            date(2027, 6, 1)
        );
        // 1 May 2027 is a Saturday and 3 May the Early May bank holiday.
        assert_eq!(
            cal.nth_working_day_from(date(2027, 5, 1), 1),
            date(2027, 5, 4)
        );
    }

    #[test]
    fn bank_holidays_and_weekends_are_not_working_days() {
        let cal = england();
        assert!(!cal.is_working_day(date(2027, 8, 30)));
        assert!(!cal.is_working_day(date(2027, 8, 28)));
        assert!(cal.is_working_day(date(2027, 8, 31)));
        assert!(cal.covers_year(2028));
        assert!(!cal.covers_year(2040));
    }

    /// The count the constant-time version replaces: a walk day by day.
    fn walked(cal: &Calendar, from: Date, to: Date) -> u32 {
        let mut count = 0;
        let mut day = from;
        while day < to {
            day = next_day(day);
            if cal.is_working_day(day) {
                count += 1;
            }
        }
        count
    }

    #[test]
    fn day_numbers_count_days() {
        assert_eq!(day_number(date(1970, 1, 1)), 0);
        assert_eq!(day_number(date(1970, 1, 5)), 4);
        assert_eq!(day_number(date(1969, 12, 31)), -1);
        assert_eq!(
            day_number(date(2000, 3, 1)) - day_number(date(2000, 2, 28)),
            2
        );
        assert_eq!(day_number(date(2027, 4, 1)), 20_909);
    }

    proptest::proptest! {
        /// Every pair of dates from 2018 to 2031 (inside and outside the shipped data, across
        /// weekends, holidays and years, in either order) counts as the walk counts.
        #[test]
        fn working_days_between_counts_as_a_walk_does(a in 0i64..5_000, b in 0i64..5_000) {
            let cal = england();
            let first = date(2018, 1, 1);
            let (from, to) = (
                first.checked_add(a.days()).unwrap(),
                first.checked_add(b.days()).unwrap(),
            );
            proptest::prop_assert_eq!(cal.working_days_between(from, to), walked(&cal, from, to));
        }
    }

    #[test]
    fn working_days_between_skips_weekends_and_holidays() {
        let cal = england();
        // Thu 23 Dec 2027 to Tue 4 Jan 2028: 24, 29, 30, 31 Dec and 4 Jan are working days
        // (25-28 Dec are the weekend and three holidays, 3 Jan is New Year's Day in lieu).
        assert_eq!(
            cal.working_days_between(date(2027, 12, 23), date(2028, 1, 4)),
            5
        );
        assert_eq!(
            cal.working_days_between(date(2027, 12, 23), date(2027, 12, 23)),
            0
        );
        assert_eq!(
            cal.working_days_between(date(2028, 1, 4), date(2027, 12, 23)),
            0
        );
        let weekdays = Calendar::weekdays_only();
        // Fri 5 to Mon 8 March 2027: one working day (the Monday).
        assert_eq!(
            weekdays.working_days_between(date(2027, 3, 5), date(2027, 3, 8)),
            1
        );
    }

    #[test]
    fn a_missing_division_is_named() {
        let err = Calendar::from_govuk_json(r#"{"scotland": {"events": []}}"#, "england-and-wales")
            .unwrap_err();
        assert!(err.to_string().contains("england-and-wales"));
    }
}
