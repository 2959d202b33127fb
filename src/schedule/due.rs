//! Due-date rules: when an assignment must be done, as a function of its period (or the moment
//! its trigger was completed) and the working-day calendar.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::period::Period;
use crate::calendar::Calendar;

/// When an assignment is due. Written in the schedule file as an inline table, e.g.
/// `due = { rule = "working_days_after_period_end", n = 10 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum DueRule {
    /// The last working day of the period.
    LastWorkingDay,
    /// The `n`th working day of the period; its first day counts when it is a working day.
    NthWorkingDay {
        /// Which working day, from 1.
        n: u32,
    },
    /// The `n`th working day after the period ends; counting starts the day after it ends.
    WorkingDaysAfterPeriodEnd {
        /// How many working days, from 1.
        n: u32,
    },
    /// The `n`th working day after the triggering assignment was completed; counting starts the
    /// day after completion. Only for triggered activities.
    WorkingDaysAfterTrigger {
        /// How many working days, from 1.
        n: u32,
    },
}

impl DueRule {
    /// Whether this rule needs a trigger's completion date rather than a period.
    pub fn is_trigger_relative(self) -> bool {
        matches!(self, DueRule::WorkingDaysAfterTrigger { .. })
    }

    /// The `n` of a counting rule, for validation.
    pub fn count(self) -> Option<u32> {
        match self {
            DueRule::LastWorkingDay => None,
            DueRule::NthWorkingDay { n }
            | DueRule::WorkingDaysAfterPeriodEnd { n }
            | DueRule::WorkingDaysAfterTrigger { n } => Some(n),
        }
    }

    /// The due date for a period-based assignment. A trigger-relative rule falls back to the
    /// period's last working day (validation keeps it from happening).
    pub fn due_for_period(self, period: &Period, calendar: &Calendar) -> Date {
        match self {
            DueRule::LastWorkingDay | DueRule::WorkingDaysAfterTrigger { .. } => {
                calendar.last_working_day_on_or_before(period.end)
            }
            DueRule::NthWorkingDay { n } => calendar.nth_working_day_from(period.start, n),
            DueRule::WorkingDaysAfterPeriodEnd { n } => {
                calendar.nth_working_day_after(period.end, n)
            }
        }
    }

    /// The due date for an assignment triggered by a completion on `completed_on` (a local date).
    pub fn due_after_trigger(self, completed_on: Date, calendar: &Calendar) -> Date {
        match self {
            DueRule::WorkingDaysAfterTrigger { n } => {
                calendar.nth_working_day_after(completed_on, n)
            }
            // Validation rejects these for triggered activities; count from completion anyway.
            DueRule::NthWorkingDay { n } | DueRule::WorkingDaysAfterPeriodEnd { n } => {
                calendar.nth_working_day_after(completed_on, n)
            }
            DueRule::LastWorkingDay => calendar.nth_working_day_after(completed_on, 1),
        }
    }

    /// A short English description for `plan` and `check`.
    pub fn describe(self) -> String {
        match self {
            DueRule::LastWorkingDay => "last working day of the period".into(),
            DueRule::NthWorkingDay { n } => format!("working day {n} of the period"),
            DueRule::WorkingDaysAfterPeriodEnd { n } => {
                format!("{n} working days after the period ends")
            }
            DueRule::WorkingDaysAfterTrigger { n } => {
                format!("{n} working days after the trigger is completed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::period::{Cadence, FinancialYear};
    use jiff::ToSpan;
    use jiff::civil::date;
    use proptest::prelude::*;

    fn england() -> Calendar {
        crate::calendar::shipped_for_tests()
    }

    fn month(y: i16, m: i8) -> Period {
        Period::containing(
            Cadence::Monthly,
            FinancialYear::starting_in(4).unwrap(),
            date(y, m, 1),
        )
    }

    #[test]
    fn last_working_day_skips_a_bank_holiday_at_month_end() {
        // 31 May 2027 is the Spring bank holiday (a Monday); 29–30 May are the weekend.
        assert_eq!(
            DueRule::LastWorkingDay.due_for_period(&month(2027, 5), &england()),
            date(2027, 5, 28)
        );
        // August 2026: the 31st is the Summer bank holiday.
        assert_eq!(
            DueRule::LastWorkingDay.due_for_period(&month(2026, 8), &england()),
            date(2026, 8, 28)
        );
        // December 2027: 27 and 28 are substitute holidays, 31 is a Friday.
        assert_eq!(
            DueRule::LastWorkingDay.due_for_period(&month(2027, 12), &england()),
            date(2027, 12, 31)
        );
    }

    #[test]
    fn nth_working_day_of_a_month_that_starts_with_holidays() {
        // January 2027: Fri 1 is New Year's Day; 5th working day is Fri 8.
        assert_eq!(
            DueRule::NthWorkingDay { n: 5 }.due_for_period(&month(2027, 1), &england()),
            date(2027, 1, 8)
        );
        // April 2026: 3 Good Friday, 6 Easter Monday; 1,2,7,8,9 → 9 April.
        assert_eq!(
            DueRule::NthWorkingDay { n: 5 }.due_for_period(&month(2026, 4), &england()),
            date(2026, 4, 9)
        );
    }

    #[test]
    fn working_days_after_period_end_counts_from_the_next_day() {
        // December 2026 ends Thu 31; 1 Jan holiday; 4..8, 11..15 → 10th is Fri 15 Jan.
        assert_eq!(
            DueRule::WorkingDaysAfterPeriodEnd { n: 10 }
                .due_for_period(&month(2026, 12), &england()),
            date(2027, 1, 15)
        );
        // March 2027 ends Wed 31; Easter 2027 is early (26 and 29 March), so April is clear:
        // 1,2,5,6,7 → 5th is Wed 7 April.
        assert_eq!(
            DueRule::WorkingDaysAfterPeriodEnd { n: 5 }.due_for_period(&month(2027, 3), &england()),
            date(2027, 4, 7)
        );
    }

    #[test]
    fn trigger_rule_matches_the_issue_example() {
        assert_eq!(
            DueRule::WorkingDaysAfterTrigger { n: 10 }
                .due_after_trigger(date(2026, 12, 21), &england()),
            date(2027, 1, 7)
        );
    }

    proptest! {
        /// Every rule yields a working day, for every month of the data's range.
        #[test]
        fn due_dates_are_working_days(months in 0i64..60, n in 1u32..15, rule_n in 0usize..3) {
            let cal = england();
            let start = date(2024, 1, 1).checked_add(months.months()).unwrap();
            let period = month(start.year(), start.month());
            let rule = [DueRule::LastWorkingDay, DueRule::NthWorkingDay { n }, DueRule::WorkingDaysAfterPeriodEnd { n }][rule_n];
            let due = rule.due_for_period(&period, &cal);
            prop_assert!(cal.is_working_day(due));
            prop_assert!(due >= period.start);
        }
    }
}
