//! The default daily message over simulated months (and a year of audit actions) on SQLite and
//! PostgreSQL, through a real SMTP server on loopback: at most one routine message per person
//! per working day, work created in the afternoon in the next morning's message, managers told
//! of their reports' escalated work inside their own daily message, and actions chased,
//! verified, reopened and handed over by the same machinery.

mod support;

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::{Date, date};
use qaloop::domain::{Actor, Via};
use qaloop::engine::{complete, import_staff, reconcile};
use qaloop::notify::settings::NotifyConfig;
use qaloop::store::AssignmentFilter;
use support::notify::start_with;
use support::org::{at, small_org};
use support::smtp::{Options, SmtpServer};
use support::store::TestDb;

both_backends!(
    a_year_of_audit_actions_is_chased_verified_reopened_and_handed_over,
    actions_are_chased_in_the_same_daily_message,
    a_digest_missed_during_downtime_is_sent_late_once,
    a_year_of_daily_messages_one_per_person_per_day,
    the_auditor_hears_the_moderation_outcome_in_the_next_daily_message,
);

async fn the_auditor_hears_the_moderation_outcome_in_the_next_daily_message(db: TestDb) {
    use qaloop::domain::{ModerationOutcome, NewRecord};
    use qaloop::engine::complete_with_record;
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    let june = at("2027-06-01T06:00:00Z");
    import_staff(&db.store, &ctx, &small_org(), "test", ctx.today(june), june)
        .await
        .unwrap();
    reconcile(&db.store, &ctx, june).await.unwrap();
    qaloop::notify::daily::decide(&db.store, &ctx, at("2027-06-09T06:30:00Z"))
        .await
        .unwrap();
    let audit = db
        .store
        .assignments(&AssignmentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.activity_id == "file-audit" && a.assignee == "TM1")
        .unwrap();
    let record = NewRecord {
        form_id: "case-file-audit".into(),
        fields: serde_json::json!({ "overall_grade": "Good", "thread_planning": "Inadequate" }),
        outcomes: vec![],
    };
    let (_, triggered) = complete_with_record(
        &db.store,
        &ctx,
        audit.id,
        &Actor::new("TM1", Via::Link),
        None,
        Some(&record),
        at("2027-06-09T09:00:00Z"),
    )
    .await
    .unwrap();
    let moderation = triggered[0];
    let outcome = |field: &str, grade: &str, agreed: bool| ModerationOutcome {
        moderation_id: moderation,
        audit_id: audit.id,
        field: field.into(),
        audit_grade: grade.into(),
        agreed,
        moderated_grade: (!agreed).then(|| "Requires Improvement".into()),
    };
    let moderated = NewRecord {
        form_id: "moderation".into(),
        fields: serde_json::json!({ "feedback": "Planning is better than that" }),
        outcomes: vec![
            outcome("overall_grade", "Good", true),
            outcome("thread_planning", "Inadequate", false),
        ],
    };
    complete_with_record(
        &db.store,
        &ctx,
        moderation,
        &Actor::new("SL1", Via::Link),
        None,
        Some(&moderated),
        at("2027-06-09T14:00:00Z"),
    )
    .await
    .unwrap();

    // The next morning's message to TM1 carries it.
    let next = at("2027-06-10T06:30:00Z");
    qaloop::notify::daily::decide(&db.store, &ctx, next)
        .await
        .unwrap();
    dispatcher
        .dispatch(&db.store, at("2027-06-10T08:00:00Z"))
        .await
        .unwrap();
    let tm1 = smtp
        .received()
        .into_iter()
        .rev()
        .find(|m| m.rcpt_to.iter().any(|r| r == "tm1@example-council.test"))
        .expect("TM1 has a message");
    let body = tm1.data.replace("=\r\n", "");
    assert!(body.contains("Your audits moderated (1)"), "{body}");
    assert!(
        body.contains("Person SL1 agreed with 1 of 2 grades"),
        "{body}"
    );
    assert!(
        body.contains(&format!("/a/{}", audit.id)) || body.contains(&format!("/a/{}", audit.id)),
        "{body}"
    );
}

/// A year (May 2027 to April 2028) in which TM1 falls behind and never completes anything and
/// TM2 completes each audit in the middle of a day.
async fn a_year_of_daily_messages_one_per_person_per_day(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (mut ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    ctx.start_date = Some(date(2027, 5, 1));
    let local = |day: Date, hour: i8, minute: i8| -> Timestamp {
        day.at(hour, minute, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp()
    };
    let begin = at("2027-04-30T12:00:00Z");
    import_staff(
        &db.store,
        &ctx,
        &small_org(),
        "test",
        ctx.today(begin),
        begin,
    )
    .await
    .unwrap();

    // TM1 falls behind and does nothing; TM2 completes each file audit on the 10th at 14:00,
    // which creates a moderation for SL1 in the middle of the day.
    let mut day = date(2027, 5, 1);
    let mut moderations_created: Vec<Date> = Vec::new();
    while day <= date(2028, 4, 30) {
        let morning = local(day, 7, 30);
        reconcile(&db.store, &ctx, morning).await.unwrap();
        qaloop::notify::daily::decide(&db.store, &ctx, morning)
            .await
            .unwrap();
        let hours = if ctx.calendar.is_working_day(day) {
            8..18
        } else {
            8..9
        };
        for hour in hours {
            dispatcher
                .dispatch(&db.store, local(day, hour, 0))
                .await
                .unwrap();
            if hour == 14 && day.day() == 10 && ctx.calendar.is_working_day(day) {
                let open = db
                    .store
                    .assignments(&AssignmentFilter::default())
                    .await
                    .unwrap();
                for a in open
                    .iter()
                    .filter(|a| a.activity_id == "file-audit" && a.assignee == "TM2" && a.is_open())
                {
                    let (_, triggered) = complete(
                        &db.store,
                        &ctx,
                        a.id,
                        &Actor::new("TM2", Via::Link),
                        None,
                        local(day, 14, 0),
                    )
                    .await
                    .unwrap();
                    if !triggered.is_empty() {
                        moderations_created.push(day);
                    }
                }
            }
        }
        day = day.tomorrow().unwrap();
    }

    // Messages by (recipient, local day): never more than one routine message (the daily one,
    // or the catch-up summary of the first day).
    let received = support::notify::mail(&smtp);
    let mut per_day: BTreeMap<(String, Date), Vec<String>> = BTreeMap::new();
    for m in smtp.received() {
        let sent: Timestamp = header(&m.data, "Date")
            .and_then(|d| jiff::fmt::rfc2822::parse(&d).ok())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let id = header(&m.data, "Message-ID").unwrap_or_default();
        let kind = id
            .trim_start_matches('<')
            .split('-')
            .next()
            .unwrap_or("")
            .to_owned();
        per_day
            .entry((m.rcpt_to.join(","), ctx.today(sent)))
            .or_default()
            .push(kind);
    }
    assert!(received.len() > 200, "a real year: {}", received.len());
    for ((who, day), kinds) in &per_day {
        // The senior-leadership digest comes on its own, on its bi-monthly day.
        let kinds: Vec<&String> = kinds.iter().filter(|k| *k != "slt_digest").collect();
        assert!(
            kinds.len() <= 1,
            "{who} got {} messages on {day}: {kinds:?}",
            kinds.len()
        );
        assert!(
            kinds
                .iter()
                .all(|k| *k == "digest" || *k == "catch_up" || *k == "welcome"),
            "only the daily message: {kinds:?}"
        );
    }

    // The senior-leadership digest leads with the closing-the-loop tracker.
    let digest = smtp
        .received()
        .into_iter()
        .find(|m| header(&m.data, "Message-ID").is_some_and(|id| id.starts_with("<slt_digest")))
        .expect("a senior-leadership digest in the year");
    let body = digest.data.replace("=\r\n", "");
    assert!(
        body.contains("Closing the loop: 0 actions overdue"),
        "{body}"
    );

    // The moderation created at 14:00 on 10 May is in SL1's message the next morning, as new.
    let first = moderations_created[0];
    let next = ctx.calendar.nth_working_day_after(first, 1);
    let sl1_next = smtp
        .received()
        .into_iter()
        .find(|m| {
            m.rcpt_to.iter().any(|r| r == "sl1@example-council.test")
                && header(&m.data, "Date")
                    .and_then(|d| jiff::fmt::rfc2822::parse(&d).ok())
                    .is_some_and(|z| z.date() == next)
        })
        .expect("SL1 has a message the next working day");
    let body = sl1_next.data.replace("=\r\n", "");
    assert!(body.contains("New for you"), "{body}");
    assert!(body.contains("Moderation"), "{body}");

    // TM1's May audit (due 28 May) is 5 working days late on 7 June (31 May is a bank
    // holiday): SL1's message that day has it under their team's overdue work, by name.
    let escalation_day = date(2027, 6, 7);
    let sl1 = smtp
        .received()
        .into_iter()
        .find(|m| {
            m.rcpt_to.iter().any(|r| r == "sl1@example-council.test")
                && header(&m.data, "Date")
                    .and_then(|d| jiff::fmt::rfc2822::parse(&d).ok())
                    .is_some_and(|z| z.date() == escalation_day)
        })
        .expect("SL1 is told on the day TM1's audit escalates");
    let body = sl1.data.replace("=\r\n", "");
    assert!(body.contains("Your team's overdue work"), "{body}");
    assert!(body.contains("Person TM1's case file audit"), "{body}");

    // The timing rules, checked against every one of TM1's case file audits over the year:
    // each is in TM1's message on its reminder days (5 and 1 working days before), its due
    // date and every third working day overdue (the 1st, 4th, 7th …), once in that message, and
    // on no other day; and in SL1's message on the 5th working day overdue, HOS's on the 10th.
    let audits: Vec<_> = db
        .store
        .assignments(&AssignmentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.activity_id == "file-audit" && a.assignee == "TM1")
        .collect();
    assert_eq!(audits.len(), 12, "one a month");
    let cal = &ctx.calendar;
    let end = date(2028, 4, 30);
    let days_of = |address: &str, id: i64| -> Vec<Date> {
        smtp.received()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == address))
            .filter_map(|m| {
                let text = m.data.replace("=\r\n", "");
                // The plain-text part lists each item once (the HTML part repeats it).
                let plain = text
                    .split("Content-Type: text/html")
                    .next()
                    .unwrap()
                    .to_owned();
                let n = plain
                    .split("/a/")
                    .skip(1)
                    .filter(|rest| {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits == id.to_string()
                    })
                    .count();
                assert!(
                    n <= 1,
                    "{address}: assignment {id} listed {n} times in one message"
                );
                (n == 1).then(|| {
                    jiff::fmt::rfc2822::parse(&header(&m.data, "Date").unwrap())
                        .unwrap()
                        .date()
                })
            })
            .collect()
    };
    for audit in audits.iter().filter(|a| a.due <= end) {
        let due = audit.due;
        let mut expected: Vec<Date> = [5, 1]
            .into_iter()
            .map(|n| cal.nth_working_day_before(due, n))
            .filter(|d| *d >= audit.period_start && *d > date(2027, 5, 1))
            .collect();
        expected.push(due);
        let mut n = 1;
        while cal.nth_working_day_after(due, n) <= end {
            expected.push(cal.nth_working_day_after(due, n));
            n += 3;
        }
        // The first day of a month's work is its "new" day (its message lists it too).
        let new_day = cal.nth_working_day_from(audit.period_start.max(date(2027, 5, 1)), 1);
        if !expected.contains(&new_day) {
            expected.push(new_day);
        }
        expected.sort();
        assert_eq!(
            days_of("tm1@example-council.test", audit.id),
            expected,
            "TM1's audit for {} (due {due})",
            audit.period_label
        );
        let sl1 = days_of("sl1@example-council.test", audit.id);
        assert_eq!(
            sl1.first(),
            Some(&cal.nth_working_day_after(due, 5)).filter(|d| **d <= end),
            "SL1 on the 5th working day overdue"
        );
        let hos = days_of("hos@example-council.test", audit.id);
        assert_eq!(
            hos.first(),
            Some(&cal.nth_working_day_after(due, 10)).filter(|d| **d <= end),
            "HOS on the 10th working day overdue"
        );
    }
}

/// The bodies of the messages `address` received with a `Date:` on `day` (soft line breaks
/// undone).
fn bodies_on(smtp: &SmtpServer, address: &str, day: Date) -> Vec<String> {
    smtp.received()
        .into_iter()
        .filter(|m| {
            m.rcpt_to.iter().any(|r| r == address)
                && header(&m.data, "Date")
                    .and_then(|d| jiff::fmt::rfc2822::parse(&d).ok())
                    .is_some_and(|z| z.date() == day)
        })
        .map(|m| m.data.replace("=\r\n", ""))
        .collect()
}

/// Actions go through the same rules and the same daily message as assignments: the owner is
/// told of a new action, reminded, told on the due date and chased; the owner's manager is told
/// when it escalates — on the first overdue day for an action from an Inadequate audit, after
/// `escalate_after` otherwise; a done action unverified for `verify_within` working days goes
/// to whoever raised it; nothing more once it is verified.
async fn actions_are_chased_in_the_same_daily_message(db: TestDb) {
    use qaloop::domain::{ActionChange, ActionSource, NewAction};
    use qaloop::engine::actions::{change, raise};
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    let local = |day: Date, hour: i8| -> Timestamp {
        day.at(hour, 0, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp()
    };
    let first = date(2027, 6, 1);
    import_staff(
        &db.store,
        &ctx,
        &small_org(),
        "test",
        first,
        local(first, 6),
    )
    .await
    .unwrap();
    qaloop::notify::daily::decide(&db.store, &ctx, local(first, 7))
        .await
        .unwrap();
    let action = |owner: &str, raised_by: &str, inadequate: bool| NewAction {
        source: ActionSource::Manual,
        assignment_id: None,
        description: "Update the chronology".into(),
        owner: owner.into(),
        raised_by: raised_by.into(),
        due: date(2027, 6, 11),
        inadequate,
    };
    let ids = raise(
        &db.store,
        &ctx,
        &[action("P1", "TM1", false), action("P2", "TM2", true)],
        &Actor::new("TM1", Via::Cli),
        local(first, 10),
    )
    .await
    .unwrap();

    let mut day = date(2027, 6, 2);
    while day <= date(2027, 7, 9) {
        if day == date(2027, 6, 21) {
            let done = ActionChange::Done {
                note: "Chronology brought up to date".into(),
            };
            change(
                &db.store,
                &ctx,
                ids[0],
                &done,
                &Actor::new("P1", Via::Link),
                local(day, 7),
            )
            .await
            .unwrap();
        }
        if day == date(2027, 6, 29) {
            let verified = ActionChange::Verify {
                note: "Read it in supervision".into(),
            };
            change(
                &db.store,
                &ctx,
                ids[0],
                &verified,
                &Actor::new("TM1", Via::Link),
                local(day, 7),
            )
            .await
            .unwrap();
        }
        qaloop::notify::daily::decide(&db.store, &ctx, local(day, 8))
            .await
            .unwrap();
        dispatcher.dispatch(&db.store, local(day, 9)).await.unwrap();
        day = day.tomorrow().unwrap();
    }

    let mentions = |address: &str, day: Date, text: &str| {
        bodies_on(&smtp, address, day)
            .iter()
            .any(|body| body.contains(text))
    };
    let p1 = "p1@example-council.test";
    // New in the next morning's message; reminded 5 and 1 working days before; due today;
    // chased on overdue days 1 and 4 — and nothing on the days between.
    assert!(mentions(p1, date(2027, 6, 2), "Your actions (1)"));
    assert!(mentions(p1, date(2027, 6, 2), "New."));
    for reminded in [(6, 4), (6, 10), (6, 11), (6, 14), (6, 17)] {
        let day = date(2027, reminded.0, reminded.1);
        assert!(mentions(p1, day, "Your actions (1)"), "P1 on {day}");
    }
    for quiet in [(6, 3), (6, 7), (6, 15), (6, 16)] {
        let day = date(2027, quiet.0, quiet.1);
        assert!(
            bodies_on(&smtp, p1, day).is_empty(),
            "nothing for P1 on {day}"
        );
    }
    // Done on 21 June: the chase due on 22 June (7 working days overdue) never comes.
    assert!(bodies_on(&smtp, p1, date(2027, 6, 22)).is_empty());

    // P2's action came from an Inadequate audit: TM2 hears on the first overdue day, SL1 on
    // the fifth; P1's action reaches TM1 only on the fifth overdue day (18 June).
    let tm1 = "tm1@example-council.test";
    let tm2 = "tm2@example-council.test";
    let sl1 = "sl1@example-council.test";
    assert!(mentions(tm2, date(2027, 6, 14), "Person P2's action"));
    assert!(!mentions(tm1, date(2027, 6, 14), "Person P1's action"));
    assert!(mentions(tm1, date(2027, 6, 18), "Person P1's action"));
    assert!(mentions(sl1, date(2027, 6, 18), "Person P2's action"));
    // P1's would have reached SL1 on 25 June (10 working days overdue) but was done by then.
    assert!(!mentions(sl1, date(2027, 6, 25), "Person P1's action"));

    // Done on 21 June, not verified after 5 working days (28 June): TM1, who raised it, is
    // asked to verify it; verified on 29 June, it is never mentioned again.
    assert!(mentions(tm1, date(2027, 6, 28), "Actions to verify (1)"));
    assert!(!mentions(tm1, date(2027, 6, 25), "Actions to verify"));
    for day in [date(2027, 7, 1), date(2027, 7, 6), date(2027, 7, 9)] {
        assert!(!mentions(tm1, day, "Person P1's action"), "{day}");
        assert!(!mentions(tm1, day, "Actions to verify"), "{day}");
    }
    // P2 never did theirs: still chased at the end.
    assert!(mentions(
        "p2@example-council.test",
        date(2027, 7, 8),
        "Your actions (1)"
    ));
}

/// The senior-leadership digest whose day fell while qaloop was down goes out at the first
/// decision afterwards, once, saying it is late.
async fn a_digest_missed_during_downtime_is_sent_late_once(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    let local = |day: Date, hour: i8| -> Timestamp {
        day.at(hour, 0, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp()
    };
    let begin = date(2027, 7, 19);
    import_staff(
        &db.store,
        &ctx,
        &small_org(),
        "test",
        begin,
        local(begin, 6),
    )
    .await
    .unwrap();
    // Up on Monday 19 July; down from Tuesday to Monday 26 July. The Jun–Jul review's digest
    // was due on Friday 23 July.
    for day in [date(2027, 7, 19), date(2027, 7, 26), date(2027, 7, 27)] {
        qaloop::notify::daily::decide(&db.store, &ctx, local(day, 8))
            .await
            .unwrap();
        dispatcher.dispatch(&db.store, local(day, 9)).await.unwrap();
    }
    let digests: Vec<String> = smtp
        .received()
        .into_iter()
        .filter(|m| header(&m.data, "Message-ID").is_some_and(|id| id.starts_with("<slt_digest")))
        .map(|m| m.data.replace("=\r\n", ""))
        .collect();
    assert_eq!(digests.len(), 1, "one digest for DIR, the one slt holder");
    assert!(
        digests[0].contains("Senior leadership digest (late)"),
        "{}",
        digests[0]
    );
    assert!(
        digests[0].contains("This digest was due on Friday 23 July 2027"),
        "{}",
        digests[0]
    );
}

fn header(data: &str, name: &str) -> Option<String> {
    data.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_owned)
}

/// What one simulated person did to an action, and when.
#[derive(Default)]
struct Story {
    raised: Option<Date>,
    done: Vec<Date>,
    verified: Option<Date>,
    reopened: Option<Date>,
}

/// Issue 8's year: every month TM1's and TM2's case file audits raise an action each (TM2's
/// audits are graded Inadequate every other month: shorter due dates, escalation a level
/// sooner). P1 does theirs three working days early and TM1 verifies two days later — except
/// once, in September, when TM1 reopens it first. TM2's team lets theirs slip eight working days
/// and TM2 verifies a week after. P2 leaves on 1 November (their unverified actions go to TM2,
/// whose manager SL1 then verifies them) and P3 joins in their place. Checked from the mail:
/// one routine message per person per working day; each action's link reaches the owner's
/// manager first on the escalation day the rules give, the next manager up only for Inadequate
/// audits' actions, the raiser on the verification reminder day; nobody hears of an action once
/// it is verified, and the leaver hears nothing after leaving.
async fn a_year_of_audit_actions_is_chased_verified_reopened_and_handed_over(db: TestDb) {
    use qaloop::domain::{ActionChange, ActionState, NewRecord};
    use qaloop::engine::actions::{change, default_due};
    use qaloop::engine::complete_with_record;
    use qaloop::store::ActionFilter;
    use std::collections::{BTreeSet, HashMap};

    let smtp = SmtpServer::start(Options::default()).await;
    let (mut ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    ctx.start_date = Some(date(2027, 4, 1));
    let local = |day: Date, hour: i8| -> Timestamp {
        day.at(hour, 0, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp()
    };
    let cal = ctx.calendar.clone();
    let leaves = date(2027, 11, 1);
    let after_leaving = {
        let mut staff = small_org();
        let p2 = staff.iter().position(|p| p.staff_id == "P2").unwrap();
        let mut p3 = staff.remove(p2);
        p3.staff_id = "P3".into();
        p3.name = "Person P3".into();
        p3.email = "p3@example-council.test".into();
        staff.push(p3);
        staff
    };
    let by = |id: &str| Actor::new(id, Via::Link);
    let mut stories: BTreeMap<i64, Story> = BTreeMap::new();
    let mut audited: BTreeSet<(String, String)> = BTreeSet::new();

    let mut day = date(2027, 4, 1);
    while day <= date(2028, 3, 31) {
        if !cal.is_working_day(day) {
            day = day.tomorrow().unwrap();
            continue;
        }
        let staff = if day < leaves {
            small_org()
        } else {
            after_leaving.clone()
        };
        import_staff(&db.store, &ctx, &staff, "test", day, local(day, 6))
            .await
            .unwrap();
        reconcile(&db.store, &ctx, local(day, 7)).await.unwrap();
        qaloop::notify::daily::decide(&db.store, &ctx, local(day, 8))
            .await
            .unwrap();
        dispatcher.dispatch(&db.store, local(day, 9)).await.unwrap();

        // The month's audits, on its fifth working day.
        let month_start = day.first_of_month();
        let nth = cal.working_days_between(month_start.yesterday().unwrap(), day);
        let actions = db.store.actions(&ActionFilter::default()).await.unwrap();
        let before: BTreeSet<i64> = actions.iter().map(|a| a.id).collect();
        if nth >= 5 {
            for (auditor, owner) in [
                ("TM1", "P1"),
                ("TM2", if day < leaves { "P2" } else { "P3" }),
            ] {
                let key = (auditor.to_owned(), format!("{}", month_start));
                if audited.contains(&key) {
                    continue;
                }
                let audit = db
                    .store
                    .assignments(&AssignmentFilter {
                        statuses: vec![qaloop::domain::Status::Open],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|a| a.activity_id == "file-audit" && a.assignee == auditor)
                    .unwrap_or_else(|| panic!("{auditor} has no open audit on {day}"));
                let inadequate = auditor == "TM2" && day.month() % 2 == 1;
                let record = NewRecord {
                    form_id: "case-file-audit".into(),
                    fields: serde_json::json!({
                        "case_reference": format!("CIN-{:06}", audit.id),
                        "overall_grade": if inadequate { "Inadequate" } else { "Good" },
                        "actions": [{
                            "description": "Update the plan",
                            "owner": owner,
                            "due": default_due(&ctx, day, inadequate).to_string(),
                        }],
                    }),
                    outcomes: vec![],
                };
                complete_with_record(
                    &db.store,
                    &ctx,
                    audit.id,
                    &by(auditor),
                    None,
                    Some(&record),
                    local(day, 10),
                )
                .await
                .unwrap();
                audited.insert(key);
            }
            let now = db.store.actions(&ActionFilter::default()).await.unwrap();
            for a in now.iter().filter(|a| !before.contains(&a.id)) {
                stories.entry(a.id).or_default().raised = Some(day);
            }
        }

        // What people do about their actions, at 11:00 (tomorrow's message shows it).
        for a in actions {
            let story = stories.entry(a.id).or_default();
            let ago = |d: Option<&Date>| d.map(|d| cal.working_days_between(*d, day));
            let step = match a.state {
                ActionState::Open if a.raised_by == "TM1" => {
                    (cal.working_days_between(day, a.due) == 3 && day < a.due).then(|| {
                        (
                            a.owner.clone(),
                            ActionChange::Done {
                                note: "Done".into(),
                            },
                        )
                    })
                }
                ActionState::Open => (a.due < day && cal.working_days_between(a.due, day) == 8)
                    .then(|| {
                        (
                            a.owner.clone(),
                            ActionChange::Done {
                                note: "Done".into(),
                            },
                        )
                    }),
                ActionState::Done if a.raised_by == "TM1" => (ago(story.done.last()) == Some(2))
                    .then(|| {
                        (
                            "TM1".to_owned(),
                            ActionChange::Verify {
                                note: "Seen".into(),
                            },
                        )
                    }),
                ActionState::Done => (ago(story.done.last()) == Some(7)).then(|| {
                    let verifier = if a.owner == a.raised_by { "SL1" } else { "TM2" };
                    (
                        verifier.to_owned(),
                        ActionChange::Verify {
                            note: "Seen".into(),
                        },
                    )
                }),
                _ => None,
            };
            let Some((actor, mut asked)) = step else {
                continue;
            };
            // Once, in September, TM1 reopens P1's action instead of verifying it.
            if matches!(asked, ActionChange::Verify { .. })
                && a.raised_by == "TM1"
                && day.month() == 9
                && !stories.values().any(|s| s.reopened.is_some())
            {
                asked = ActionChange::Reopen {
                    due: cal.nth_working_day_after(day, 10),
                    reason: "Not in the file yet".into(),
                };
            }
            change(&db.store, &ctx, a.id, &asked, &by(&actor), local(day, 11))
                .await
                .unwrap_or_else(|e| panic!("{actor} {asked:?} action {} on {day}: {e}", a.id));
            let story = stories.get_mut(&a.id).unwrap();
            match asked {
                ActionChange::Done { .. } => story.done.push(day),
                ActionChange::Verify { .. } => story.verified = Some(day),
                ActionChange::Reopen { .. } => story.reopened = Some(day),
            }
        }
        day = day.tomorrow().unwrap();
    }

    // Every message as (recipient, day, action ids it links to, whether it is the SLT digest).
    let messages: Vec<(String, Date, BTreeSet<i64>, bool)> = smtp
        .received()
        .into_iter()
        .map(|m| {
            let day = header(&m.data, "Date")
                .and_then(|d| jiff::fmt::rfc2822::parse(&d).ok())
                .map(|z| z.date())
                .expect("a Date header");
            let body = m.data.replace("=\r\n", "");
            let ids = body
                .split("/actions/")
                .skip(1)
                .filter_map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                })
                .collect();
            let digest = header(&m.data, "Message-ID").is_some_and(|id| id.contains("slt_digest"));
            (m.rcpt_to.join(","), day, ids, digest)
        })
        .collect();
    let mut per_day: HashMap<(&str, Date), usize> = HashMap::new();
    for (to, day, _, digest) in &messages {
        assert!(cal.is_working_day(*day), "mail to {to} on {day}");
        if !digest {
            *per_day.entry((to.as_str(), *day)).or_default() += 1;
        }
    }
    let worst = per_day.iter().max_by_key(|(_, n)| **n).unwrap();
    assert_eq!(*worst.1, 1, "routine messages on one day: {worst:?}");
    // The days on which `who` was told of action `id`.
    let told = |who: &str, id: i64| -> Vec<Date> {
        let address = format!("{}@example-council.test", who.to_lowercase());
        messages
            .iter()
            .filter(|(to, _, ids, _)| *to == address && ids.contains(&id))
            .map(|(_, day, _, _)| *day)
            .collect()
    };

    let actions = db.store.actions(&ActionFilter::default()).await.unwrap();
    assert_eq!(actions.len(), 24, "two audits a month, one action each");
    let mut escalated = 0;
    for a in &actions {
        let story = &stories[&a.id];
        let verified = story.verified;
        // Nobody hears of it once it is verified.
        for who in ["P1", "P2", "P3", "TM1", "TM2", "SL1", "HOS"] {
            let late: Vec<_> = told(who, a.id)
                .into_iter()
                .filter(|d| verified.is_some_and(|v| *d > v))
                .collect();
            assert!(
                late.is_empty(),
                "{who} told of verified action {} on {late:?}",
                a.id
            );
        }
        if a.raised_by != "TM2" {
            // P1's, done early: their manager TM1 never hears of them as overdue, nor SL1.
            assert!(told("SL1", a.id).is_empty(), "action {}", a.id);
            continue;
        }
        // TM2's team's, eight working days late: TM2 hears first on the escalation day (the
        // first overdue day for an Inadequate audit's, the fifth otherwise); SL1 only for an
        // Inadequate audit's (its fifth overdue day), as the others are done by the tenth.
        let due = a.due;
        let first_overdue = cal.nth_working_day_after(due, 1);
        let escalation = if a.inadequate {
            first_overdue
        } else {
            cal.nth_working_day_after(due, 5)
        };
        if a.owner == "TM2" {
            continue; // handed over: TM2 owns it, checked below
        }
        let to_tm2 = told("TM2", a.id);
        if escalation < story.done[0] {
            assert_eq!(
                to_tm2.first(),
                Some(&escalation),
                "action {} (due {due})",
                a.id
            );
            escalated += 1;
        }
        let to_sl1 = told("SL1", a.id);
        if a.inadequate && cal.nth_working_day_after(due, 5) < story.done[0] {
            assert_eq!(
                to_sl1.first(),
                Some(&cal.nth_working_day_after(due, 5)),
                "action {}",
                a.id
            );
        } else {
            assert!(
                to_sl1.is_empty(),
                "SL1 told of action {} on {to_sl1:?}",
                a.id
            );
        }
        // Done, then unverified for five working days: TM2 is asked to verify it.
        let remind = cal.nth_working_day_after(story.done[0], 5);
        if verified.is_some_and(|v| v > remind) {
            assert!(
                to_tm2.contains(&remind),
                "verify reminder for action {}",
                a.id
            );
        }
    }
    assert!(escalated >= 8, "only {escalated} actions escalated to TM2");

    // The September reopen: done again after it, then verified.
    let reopened: Vec<_> = actions.iter().filter(|a| a.reopened == 1).collect();
    assert_eq!(reopened.len(), 1);
    assert_eq!(stories[&reopened[0].id].done.len(), 2);
    assert_eq!(reopened[0].state, ActionState::Verified);

    // The leaver: whatever P2 had not had verified went to TM2 on 1 November, with a history
    // row; P2 heard nothing from then on; P3 took over the monthly actions.
    let handed: Vec<_> = actions
        .iter()
        .filter(|a| a.owner == "TM2" && a.raised_by == "TM2")
        .collect();
    assert!(!handed.is_empty(), "P2 left with nothing open");
    for a in &handed {
        let history = db.store.action_history(a.id).await.unwrap();
        assert!(
            history
                .iter()
                .any(|h| h.event == "reassigned" && h.detail == "from P2 to TM2 (leaver)"),
            "{history:?}"
        );
    }
    assert!(
        messages
            .iter()
            .all(|(to, d, _, _)| to != "p2@example-council.test" || *d < leaves),
        "P2 had mail after leaving"
    );
    assert!(actions.iter().any(|a| a.owner == "P3"));
    // Everything raised before February is verified by the end of March.
    let open_old: Vec<_> = actions
        .iter()
        .filter(|a| {
            stories[&a.id].raised.unwrap() < date(2028, 2, 1) && a.state != ActionState::Verified
        })
        .map(|a| (a.id, a.owner.clone(), a.state))
        .collect();
    assert!(open_old.is_empty(), "{open_old:?}");
}
