//! iCalendar (RFC 5545) text for a due date, attached to emails as `due.ics`.
//!
//! One all-day `VEVENT` per [`CalendarEvent`], published with `METHOD:PUBLISH`: `REQUEST` would make
//! Outlook treat it as a meeting invitation. The `UID` is the event's stable id, so a later
//! reminder for the same assignment updates the entry already in the recipient's calendar
//! instead of adding a second one; the newer `DTSTAMP` tells the client which copy wins.
//!
//! Pure: the caller passes the stamp in, so the output is a function of its inputs.

use jiff::Timestamp;
use jiff::civil::Date;

use super::CalendarEvent;

/// The longest content line RFC 5545 allows, in octets, before it must be folded.
const LINE_OCTETS: usize = 75;

/// The iCalendar object for `event`, CRLF-terminated and folded at 75 octets.
///
/// `stamp` becomes `DTSTAMP`: when this copy was made. Clients keep the copy with the newest
/// stamp for a `UID`, so pass the time the message is built, not a fixed value.
pub fn calendar(event: &CalendarEvent, stamp: Timestamp) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//qaloop//EN".to_owned(),
        "METHOD:PUBLISH".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{}", escape_text(&event.uid)),
        format!("DTSTAMP:{}", stamp.strftime("%Y%m%dT%H%M%SZ")),
        format!("DTSTART;VALUE=DATE:{}", ical_date(event.date)),
    ];
    // An all-day event ends (exclusively) the next day. The last representable date has no next
    // day; RFC 5545 says a DATE start without an end lasts one day, so leaving it out is the same.
    if let Ok(next) = event.date.tomorrow() {
        lines.push(format!("DTEND;VALUE=DATE:{}", ical_date(next)));
    }
    lines.push(format!("SUMMARY:{}", escape_text(&event.summary)));
    if let Some(url) = &event.url {
        // A URI value is not TEXT-escaped; only control characters (which could start a new
        // property) are dropped.
        lines.push(format!("URL:{}", strip_controls(url)));
    }
    // A due date is not a meeting: it must not mark the person busy all day.
    lines.push("TRANSP:TRANSPARENT".to_owned());
    lines.push("END:VEVENT".to_owned());
    lines.push("END:VCALENDAR".to_owned());

    let mut out = String::new();
    for line in &lines {
        push_folded(&mut out, line);
    }
    out
}

/// `YYYYMMDD`, the RFC 5545 DATE form.
fn ical_date(date: Date) -> String {
    format!("{:04}{:02}{:02}", date.year(), date.month(), date.day())
}

/// Escapes a TEXT value (RFC 5545 §3.3.11): backslash, semicolon, comma and newlines; other
/// control characters are not allowed in TEXT and are dropped.
fn escape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                // CRLF and a lone CR are both one line break.
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Drops control characters, so a value cannot break out of its content line.
fn strip_controls(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

/// Appends `line` with CRLF, folded so that no physical line exceeds 75 octets (RFC 5545 §3.1):
/// each continuation starts with one space, and a UTF-8 character is never split.
fn push_folded(out: &mut String, line: &str) {
    let mut limit = LINE_OCTETS;
    let mut start = 0;
    for (index, ch) in line.char_indices() {
        if index + ch.len_utf8() - start > limit {
            out.push_str(&line[start..index]);
            out.push_str("\r\n ");
            start = index;
            // The leading space of a continuation line counts towards its 75 octets.
            limit = LINE_OCTETS - 1;
        }
    }
    out.push_str(&line[start..]);
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn event() -> CalendarEvent {
        CalendarEvent {
            uid: "assignment-42@qaloop".to_owned(),
            date: date(2026, 3, 31),
            summary: "Case file audit, Q1 2026".to_owned(),
            url: Some("https://qa.example.gov.uk/work/42?x=1,2".to_owned()),
        }
    }

    fn stamp() -> Timestamp {
        "2026-03-20T09:30:05Z".parse().unwrap()
    }

    #[test]
    fn an_event_is_a_published_all_day_vevent_with_crlf_lines() {
        let text = calendar(&event(), stamp());

        assert_eq!(
            text,
            "BEGIN:VCALENDAR\r\n\
             VERSION:2.0\r\n\
             PRODID:-//qaloop//EN\r\n\
             METHOD:PUBLISH\r\n\
             BEGIN:VEVENT\r\n\
             UID:assignment-42@qaloop\r\n\
             DTSTAMP:20260320T093005Z\r\n\
             DTSTART;VALUE=DATE:20260331\r\n\
             DTEND;VALUE=DATE:20260401\r\n\
             SUMMARY:Case file audit\\, Q1 2026\r\n\
             URL:https://qa.example.gov.uk/work/42?x=1,2\r\n\
             TRANSP:TRANSPARENT\r\n\
             END:VEVENT\r\n\
             END:VCALENDAR\r\n"
        );
    }

    #[test]
    fn the_end_is_the_next_day_across_a_year_end() {
        let event = CalendarEvent {
            date: date(2026, 12, 31),
            ..event()
        };

        let text = calendar(&event, stamp());

        assert!(text.contains("DTSTART;VALUE=DATE:20261231\r\n"));
        assert!(text.contains("DTEND;VALUE=DATE:20270101\r\n"));
    }

    #[test]
    fn the_last_representable_date_has_a_start_and_no_end() {
        let event = CalendarEvent {
            date: Date::MAX,
            ..event()
        };

        let text = calendar(&event, stamp());

        assert!(text.contains("DTSTART;VALUE=DATE:99991231\r\n"));
        assert!(!text.contains("DTEND"));
    }

    #[test]
    fn no_url_means_no_url_line() {
        let event = CalendarEvent {
            url: None,
            ..event()
        };

        assert!(!calendar(&event, stamp()).contains("URL:"));
    }

    #[test]
    fn text_values_are_escaped() {
        assert_eq!(
            escape_text("a\\b;c,d\ne\r\nf\rg\u{7}h\ti"),
            "a\\\\b\\;c\\,d\\ne\\nf\\ngh\ti"
        );
    }

    #[test]
    fn a_summary_cannot_inject_a_property() {
        let event = CalendarEvent {
            summary: "Audit\r\nMETHOD:REQUEST".to_owned(),
            url: Some("https://x.example/\r\nATTENDEE:evil".to_owned()),
            ..event()
        };

        let text = calendar(&event, stamp());

        assert!(text.contains("SUMMARY:Audit\\nMETHOD:REQUEST\r\n"));
        assert!(text.contains("URL:https://x.example/ATTENDEE:evil\r\n"));
        assert_eq!(text.matches("METHOD:").count(), 2, "one real, one escaped");
    }

    #[test]
    fn long_lines_fold_at_75_octets_without_splitting_characters() {
        // 'é' is two octets, so a naive byte split would land inside one.
        let summary = "é".repeat(100);
        let event = CalendarEvent {
            summary: summary.clone(),
            ..event()
        };

        let text = calendar(&event, stamp());

        for line in text.split("\r\n") {
            assert!(line.len() <= 75, "{} octets: {line:?}", line.len());
        }
        let unfolded = text.replace("\r\n ", "");
        assert!(unfolded.contains(&format!("SUMMARY:{summary}\r\n")));
    }

    #[test]
    fn a_line_of_exactly_75_octets_is_not_folded() {
        let mut out = String::new();
        let line = "x".repeat(75);

        push_folded(&mut out, &line);

        assert_eq!(out, format!("{line}\r\n"));
    }

    #[test]
    fn continuation_lines_hold_74_octets_after_their_space() {
        let mut out = String::new();

        push_folded(&mut out, &"x".repeat(75 + 74 + 1));

        let lines: Vec<&str> = out.trim_end_matches("\r\n").split("\r\n").collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), 75);
        assert_eq!(lines[1], format!(" {}", "x".repeat(74)));
        assert_eq!(lines[2], " x");
    }
}
