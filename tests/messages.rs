//! Messages people act on, on SQLite and PostgreSQL through a real SMTP server on loopback: a
//! quiet go-live with one welcome per person, work already late at go-live never chased, a
//! joiner welcomed, A → B → A telling A twice, new work waiting for the next delivery time, and
//! a rendered year of messages with no staff id or `role:` spelling in any subject or body.

mod support;

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::{Date, date};
use qaloop::domain::{Actor, Status, Via};
use qaloop::engine::{complete, import_staff, reassign, reconcile};
use qaloop::notify::Kind;
use qaloop::notify::context::TemplateContext;
use qaloop::notify::settings::NotifyConfig;
use qaloop::notify::templates::Templates;
use qaloop::store::{AssignmentFilter, OutboxStatus};
use support::notify::{start, start_with};
use support::org::{config_dir, context, person, small_org};
use support::smtp::{Options, SmtpServer};
use support::store::TestDb;

both_backends!(
    a_go_live_mid_month_welcomes_everyone_once_and_never_chases_earlier_work,
    a_joiner_is_welcomed_and_their_first_message_is_the_welcome,
    reassigning_a_to_b_to_a_tells_a_twice,
    work_created_in_the_afternoon_waits_for_the_next_delivery,
    a_rendered_year_prints_no_staff_id_and_no_role_spelling,
);

fn local(ctx: &qaloop::engine::Context, day: Date, hour: i8, minute: i8) -> Timestamp {
    day.at(hour, minute, 0, 0)
        .to_zoned(ctx.tz.clone())
        .unwrap()
        .timestamp()
}

/// The kind of a received message, from its Message-ID (`<kind-…>`).
fn kind_of(data: &str) -> String {
    header(data, "Message-ID")
        .unwrap_or_default()
        .trim_start_matches('<')
        .split('-')
        .next()
        .unwrap_or("")
        .to_owned()
}

fn header(data: &str, name: &str) -> Option<String> {
    data.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_owned)
}

/// The body with quoted-printable soft line breaks joined.
fn body(data: &str) -> String {
    data.replace("=\r\n", "")
}

async fn a_go_live_mid_month_welcomes_everyone_once_and_never_chases_earlier_work(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    // Go-live on Wednesday 16 June 2027 at 07:30: June's performance data pack (due on the 5th
    // working day, 7 June) is already late; June's file audits are not.
    let go_live = local(&ctx, date(2027, 6, 16), 7, 30);
    import_staff(
        &db.store,
        &ctx,
        &small_org(),
        "test",
        ctx.today(go_live),
        go_live,
    )
    .await
    .unwrap();

    let report = reconcile(&db.store, &ctx, go_live).await.unwrap();

    assert!(report.created > 0);
    assert_eq!(report.created_late, 0, "late means late, not first run");
    let all = db
        .store
        .assignments(&AssignmentFilter::default())
        .await
        .unwrap();
    assert!(all.iter().all(|a| !a.created_late));
    let early: Vec<_> = all.iter().filter(|a| a.before_go_live).collect();
    assert!(!early.is_empty(), "work already due before go-live exists");
    for a in &all {
        assert_eq!(a.before_go_live, a.due < date(2027, 6, 16), "{a:?}");
    }
    let pack = all
        .iter()
        .find(|a| a.activity_id == "performance-data")
        .unwrap();
    assert!(pack.before_go_live);
    assert!(
        db.store
            .outbox(None, 1000)
            .await
            .unwrap()
            .iter()
            .all(|r| r.kind != "new_assignment"),
        "no message per piece of work at go-live"
    );

    // Three weeks of mornings.
    let mut day = date(2027, 6, 16);
    while day <= date(2027, 7, 7) {
        let morning = local(&ctx, day, 7, 30);
        reconcile(&db.store, &ctx, morning).await.unwrap();
        qaloop::notify::daily::decide(&db.store, &ctx, morning)
            .await
            .unwrap();
        dispatcher
            .dispatch(&db.store, local(&ctx, day, 8, 0))
            .await
            .unwrap();
        day = day.tomorrow().unwrap();
    }

    let received = smtp.received();
    let mut first_kind: BTreeMap<String, String> = BTreeMap::new();
    let mut welcomes: BTreeMap<String, usize> = BTreeMap::new();
    for m in &received {
        let to = m.rcpt_to.join(",");
        let kind = kind_of(&m.data);
        first_kind.entry(to.clone()).or_insert(kind.clone());
        if kind == "welcome" {
            *welcomes.entry(to).or_default() += 1;
        }
    }
    assert!(first_kind.len() > 5, "{first_kind:?}");
    for (to, kind) in &first_kind {
        assert_eq!(kind, "welcome", "{to}'s first message");
    }
    assert!(welcomes.values().all(|&n| n == 1), "{welcomes:?}");
    // On go-live day the welcome is everyone's only message.
    let go_live_mail: Vec<_> = received
        .iter()
        .filter(|m| {
            header(&m.data, "Date")
                .and_then(|d| jiff::fmt::rfc2822::parse(&d).ok())
                .is_some_and(|z| z.date() == date(2027, 6, 16))
        })
        .collect();
    assert!(go_live_mail.iter().all(|m| kind_of(&m.data) == "welcome"));

    // PU's welcome lists the data pack, once, as late before go-live; nothing after it
    // mentions the pack again (no chase, no escalation to PU's manager).
    let pack_link = format!("/a/{}", pack.id);
    let pu_welcome = received
        .iter()
        .find(|m| m.rcpt_to == ["pu@example-council.test"] && kind_of(&m.data) == "welcome")
        .expect("PU is welcomed");
    let text = body(&pu_welcome.data);
    assert!(
        text.contains("Monthly performance data pack, June 2027"),
        "{text}"
    );
    assert!(
        text.contains("already overdue when qaloop started"),
        "{text}"
    );
    assert!(text.contains(&pack_link), "{text}");
    let later: Vec<_> = received
        .iter()
        .filter(|m| body(&m.data).contains(&pack_link))
        .map(|m| (m.rcpt_to.join(","), kind_of(&m.data)))
        .collect();
    assert_eq!(
        later,
        [("pu@example-council.test".to_owned(), "welcome".to_owned())]
    );
    // Work not late at go-live is still chased: TM1's June audit (due 30 June) is in TM1's
    // message on 1 July.
    let tm1_july: Vec<_> = received
        .iter()
        .filter(|m| m.rcpt_to == ["tm1@example-council.test"] && kind_of(&m.data) == "digest")
        .collect();
    assert!(
        tm1_july
            .iter()
            .any(|m| body(&m.data).contains("Case file audit, June 2027")),
        "TM1 is chased about work that fell due after go-live"
    );
}

async fn a_joiner_is_welcomed_and_their_first_message_is_the_welcome(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    let begin = local(&ctx, date(2027, 5, 4), 7, 0);
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
    let mut day = date(2027, 5, 4);
    let joined = date(2027, 5, 20);
    while day <= date(2027, 6, 30) {
        let morning = local(&ctx, day, 7, 30);
        if day == joined {
            let mut staff = small_org();
            staff.push(person("TM3", &["team_manager"], Some("SL1")));
            import_staff(&db.store, &ctx, &staff, "test", day, morning)
                .await
                .unwrap();
        }
        reconcile(&db.store, &ctx, morning).await.unwrap();
        qaloop::notify::daily::decide(&db.store, &ctx, morning)
            .await
            .unwrap();
        dispatcher
            .dispatch(&db.store, local(&ctx, day, 8, 0))
            .await
            .unwrap();
        day = day.tomorrow().unwrap();
    }

    let tm3: Vec<String> = smtp
        .received()
        .iter()
        .filter(|m| m.rcpt_to == ["tm3@example-council.test"])
        .map(|m| kind_of(&m.data))
        .collect();
    assert_eq!(tm3.first().map(String::as_str), Some("welcome"), "{tm3:?}");
    assert_eq!(tm3.iter().filter(|k| *k == "welcome").count(), 1, "{tm3:?}");
    assert!(tm3.len() > 1, "daily messages follow the welcome: {tm3:?}");
    let welcome = smtp
        .received()
        .into_iter()
        .find(|m| m.rcpt_to == ["tm3@example-council.test"])
        .unwrap();
    let text = body(&welcome.data);
    assert!(text.contains("Dear Person TM3,"), "{text}");
    assert!(text.contains("Your current work"), "{text}");
}

async fn reassigning_a_to_b_to_a_tells_a_twice(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    // Everyone on single messages: reassigned work is announced at once.
    let (ctx, dispatcher) = start(smtp.port(), &NotifyConfig::default());
    // Live since April; May's work is created at 00:30 on Saturday 1 May (not late), and
    // announced at the first delivery, 08:00 on Tuesday 4 May (3 May is a bank holiday).
    let begin = local(&ctx, date(2027, 5, 1), 0, 30);
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
    db.store
        .set_meta(qaloop::engine::reconcile::GO_LIVE_KEY, "2027-04-01")
        .await
        .unwrap();
    reconcile(&db.store, &ctx, begin).await.unwrap();
    let audit = db
        .store
        .assignments(&AssignmentFilter {
            statuses: vec![Status::Open],
            activity_id: Some("file-audit".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.assignee == "TM1")
        .unwrap();
    let qa = Actor::new("QA", Via::Cli);
    dispatcher
        .dispatch(&db.store, local(&ctx, date(2027, 5, 4), 8, 0))
        .await
        .unwrap();

    reassign(
        &db.store,
        &ctx,
        audit.id,
        "TM2",
        &qa,
        local(&ctx, date(2027, 5, 4), 9, 0),
    )
    .await
    .unwrap();
    dispatcher
        .dispatch(&db.store, local(&ctx, date(2027, 5, 5), 8, 0))
        .await
        .unwrap();
    reassign(
        &db.store,
        &ctx,
        audit.id,
        "TM1",
        &qa,
        local(&ctx, date(2027, 5, 5), 9, 0),
    )
    .await
    .unwrap();
    dispatcher
        .dispatch(&db.store, local(&ctx, date(2027, 5, 6), 8, 0))
        .await
        .unwrap();

    let link = format!("/a/{}", audit.id);
    let told = |to: &str| {
        smtp.received()
            .iter()
            .filter(|m| {
                m.rcpt_to == [to]
                    && kind_of(&m.data) == "new_assignment"
                    && body(&m.data).contains(&link)
            })
            .count()
    };
    assert_eq!(
        told("tm1@example-council.test"),
        2,
        "created for TM1, then back to TM1"
    );
    assert_eq!(told("tm2@example-council.test"), 1);
}

async fn work_created_in_the_afternoon_waits_for_the_next_delivery(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start(smtp.port(), &NotifyConfig::default());
    let begin = local(&ctx, date(2027, 5, 4), 7, 0);
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
    db.store
        .set_meta(qaloop::engine::reconcile::GO_LIVE_KEY, "2027-04-01")
        .await
        .unwrap();
    reconcile(&db.store, &ctx, begin).await.unwrap();
    dispatcher
        .dispatch(&db.store, local(&ctx, date(2027, 5, 4), 8, 0))
        .await
        .unwrap();
    let audit = db
        .store
        .assignments(&AssignmentFilter {
            statuses: vec![Status::Open],
            activity_id: Some("file-audit".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.assignee == "TM1")
        .unwrap();
    let before = smtp.received().len();

    // Completed at 14:00 on Tuesday: SL1's moderation is created then.
    complete(
        &db.store,
        &ctx,
        audit.id,
        &Actor::new("TM1", Via::Link),
        None,
        local(&ctx, date(2027, 5, 4), 14, 0),
    )
    .await
    .unwrap();
    for hour in 14..18 {
        dispatcher
            .dispatch(&db.store, local(&ctx, date(2027, 5, 4), hour, 30))
            .await
            .unwrap();
    }
    let same_day = smtp.received().len() - before;
    dispatcher
        .dispatch(&db.store, local(&ctx, date(2027, 5, 5), 7, 59))
        .await
        .unwrap();
    let before_eight = smtp.received().len() - before;
    dispatcher
        .dispatch(&db.store, local(&ctx, date(2027, 5, 5), 8, 0))
        .await
        .unwrap();

    assert_eq!(same_day, 0, "nothing until the next delivery time");
    assert_eq!(before_eight, 0, "the delivery time is 08:00");
    let next: Vec<_> = smtp.received().into_iter().skip(before).collect();
    assert!(
        next.iter()
            .any(|m| m.rcpt_to == ["sl1@example-council.test"]
                && kind_of(&m.data) == "new_assignment"),
        "the moderation is announced at the next delivery"
    );
}

async fn a_rendered_year_prints_no_staff_id_and_no_role_spelling(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    // Half the example organisation on single messages, half on the daily message, so every
    // routine kind is rendered.
    let path = config_dir().join("example-staff.csv");
    let (ctx, dispatcher) = {
        let staff = qaloop::org::csv::parse_staff(
            &std::fs::read_to_string(&path).unwrap(),
            &path,
            &context().schedule,
        )
        .unwrap();
        let preferences = staff
            .iter()
            .enumerate()
            .map(|(i, p)| qaloop::notify::settings::Preference {
                staff_id: p.staff_id.clone(),
                daily_digest: Some(i % 2 == 0),
                channels: None,
            })
            .collect();
        start_with(smtp.port(), &NotifyConfig::default(), preferences)
    };
    let staff = qaloop::org::csv::parse_staff(
        &std::fs::read_to_string(&path).unwrap(),
        &path,
        &ctx.schedule,
    )
    .unwrap();
    let begin = local(&ctx, date(2027, 4, 1), 7, 0);
    import_staff(&db.store, &ctx, &staff, "test", ctx.today(begin), begin)
        .await
        .unwrap();
    // Nobody completes anything: every reminder, chase, escalation and digest is rendered.
    let mut day = date(2027, 4, 1);
    while day <= date(2028, 3, 31) {
        if ctx.calendar.is_working_day(day) {
            let morning = local(&ctx, day, 7, 30);
            reconcile(&db.store, &ctx, morning).await.unwrap();
            qaloop::notify::daily::decide(&db.store, &ctx, morning)
                .await
                .unwrap();
            dispatcher
                .dispatch(&db.store, local(&ctx, day, 8, 0))
                .await
                .unwrap();
        }
        day = day.tomorrow().unwrap();
    }

    let templates = Templates::load(None).unwrap();
    let sent = db
        .store
        .outbox(Some(OutboxStatus::Sent), 1_000_000)
        .await
        .unwrap();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for row in &sent {
        let context: TemplateContext = serde_json::from_str(&row.context).unwrap();
        let out = templates
            .render(Kind::parse(&row.kind).unwrap(), &context)
            .unwrap();
        for (part, text) in [
            ("subject", &out.subject),
            ("text", &out.text),
            ("html", &out.html),
        ] {
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| {
                    // A staff id (`S0012`), or the `role:name` spelling ("Work owned by a
                    // role: 3 overdue" is words, not an id).
                    l.contains("S0")
                        || l.split("role:")
                            .skip(1)
                            .any(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()))
                })
                .collect();
            assert!(bad.is_empty(), "{} {part} prints ids: {bad:#?}", row.key);
        }
        *kinds.entry(row.kind.clone()).or_default() += 1;
    }
    for kind in [
        "welcome",
        "new_assignment",
        "reminder",
        "due_today",
        "chase",
        "escalation",
        "digest",
        "slt_digest",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} in a year: {kinds:?}");
    }
    // What was delivered over SMTP is what was rendered: subjects carry no id either.
    let mail = smtp.received();
    assert_eq!(mail.len(), sent.len());
    for m in &mail {
        let subject = header(&m.data, "Subject").unwrap_or_default();
        assert!(
            !subject.contains("S0") && !subject.contains("role:"),
            "{subject}"
        );
    }
}
