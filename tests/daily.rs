//! The default daily message over a simulated two months on SQLite and PostgreSQL, through a real
//! SMTP server on loopback: at most one routine message per person per working day, work
//! created in the afternoon in the next morning's message, and managers told of their reports'
//! escalated work inside their own daily message.

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
    two_months_of_daily_messages_one_per_person_per_day,
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
        body.contains(&format!("/a/{}", audit.id))
            || body.contains(&format!("/assignments/{}", audit.id)),
        "{body}"
    );
}

async fn two_months_of_daily_messages_one_per_person_per_day(db: TestDb) {
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
    while day <= date(2027, 6, 30) {
        let morning = local(day, 7, 30);
        reconcile(&db.store, &ctx, morning).await.unwrap();
        qaloop::notify::daily::decide(&db.store, &ctx, morning)
            .await
            .unwrap();
        for hour in 8..18 {
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
    assert!(received.len() > 20, "a real two months: {}", received.len());
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
        .expect("a senior-leadership digest in two months");
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
}

fn header(data: &str, name: &str) -> Option<String> {
    data.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_owned)
}
