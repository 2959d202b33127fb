//! Notifications end to end: the engine decides, the outbox holds, the dispatcher sends to a
//! real SMTP server (or HTTP server) on loopback. Every case runs on SQLite and PostgreSQL.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use jiff::civil::{Date, date};
use jiff::{Timestamp, ToSpan};
use qaloop::domain::{Actor, Assignee, Status, Via};
use qaloop::engine::{Context, complete, import_staff, reconcile};
use qaloop::notify::dispatcher::{Dispatcher, RetryPolicy};
use qaloop::notify::router::Router;
use qaloop::notify::settings::NotifyConfig;
use qaloop::notify::templates::Templates;
use qaloop::notify::{Channel, ChannelSettings};
use qaloop::store::{AssignmentFilter, OutboxStatus};
use support::org::{at, context, small_org};
use support::smtp::{Options, SmtpServer};
use support::store::TestDb;

/// A store, the engine configured with one SMTP channel, and the loopback SMTP server.
struct Harness {
    db: TestDb,
    ctx: Context,
    dispatcher: Dispatcher,
    smtp: SmtpServer,
}

fn smtp_channel(port: u16) -> ChannelSettings {
    smtp_channel_with(port, "")
}

/// The test relay's channel with `extra` settings (TOML lines).
fn smtp_channel_with(port: u16, extra: &str) -> ChannelSettings {
    toml::from_str(&format!(
        "kind = \"email\"\nname = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n\
         from = \"QA schedule <qa@example-council.test>\"\ntimeout_seconds = 5\n{extra}"
    ))
    .unwrap()
}

async fn harness(db: TestDb, options: Options, config: NotifyConfig, start: Date) -> Harness {
    harness_with(db, options, config, start, "").await
}

/// [`harness`] with `extra` settings for the email channel.
async fn harness_with(
    db: TestDb,
    options: Options,
    config: NotifyConfig,
    start: Date,
    extra: &str,
) -> Harness {
    let smtp = SmtpServer::start(options).await;
    let settings = smtp_channel_with(smtp.port(), extra);
    let mut ctx = context();
    ctx.start_date = Some(start);
    ctx.announcer = Some(Arc::new(Router::new(
        &config,
        std::slice::from_ref(&settings),
        "Example Council",
        ctx.tz.clone(),
        support::org::single_messages(),
    )));
    let ChannelSettings::Email(email) = &settings else {
        unreachable!()
    };
    let channel: Arc<dyn Channel> = Arc::new(
        qaloop::notify::email::SmtpChannel::new(email, std::path::Path::new(".")).unwrap(),
    );
    let dispatcher = Dispatcher::new(
        [("email".to_owned(), channel)].into(),
        Arc::new(Templates::load(None).unwrap()),
        RetryPolicy::from_config(&config),
        config
            .admin_channel
            .clone()
            .map(|c| (c, config.admin_address.clone())),
    )
    .with_working_hours_of(&ctx);
    let now = at("2027-03-31T12:00:00Z");
    import_staff(&db.store, &ctx, &small_org(), "test", ctx.today(now), now)
        .await
        .unwrap();
    // These cases follow the rules after go-live: qaloop went live when the staff list was
    // first imported, before the work they follow (go-live itself: tests/messages.rs).
    db.store
        .set_meta(qaloop::engine::reconcile::GO_LIVE_KEY, "2027-03-31")
        .await
        .unwrap();
    Harness {
        db,
        ctx,
        dispatcher,
        smtp,
    }
}

/// The default set-up most cases use: a plain relay, default settings, work from May 2027.
async fn may_2027(db: TestDb) -> Harness {
    harness(
        db,
        Options::default(),
        NotifyConfig::default(),
        date(2027, 5, 1),
    )
    .await
}

impl Harness {
    /// One daemon pass at `now`: reconcile, decide today's notices, send.
    async fn pass(&self, now: Timestamp) {
        reconcile(&self.db.store, &self.ctx, now).await.unwrap();
        qaloop::notify::daily::decide(&self.db.store, &self.ctx, now)
            .await
            .unwrap();
        self.dispatcher.dispatch(&self.db.store, now).await.unwrap();
    }

    fn local(&self, day: Date, hour: i8) -> Timestamp {
        day.at(hour, 0, 0, 0)
            .to_zoned(self.ctx.tz.clone())
            .unwrap()
            .timestamp()
    }

    /// Received mail as (to, kind, Message-ID).
    fn mail(&self) -> Vec<(String, String, String)> {
        self.smtp
            .received()
            .iter()
            .map(|m| {
                let id = header(&m.data, "Message-ID").unwrap_or_default();
                let kind = id
                    .trim_start_matches('<')
                    .split([':', '.', '-'])
                    .next()
                    .unwrap_or("")
                    .to_owned();
                (m.rcpt_to.join(","), kind, id)
            })
            .collect()
    }

    async fn outbox(&self, status: OutboxStatus) -> Vec<qaloop::store::OutboxRow> {
        self.db.store.outbox(Some(status), 100_000).await.unwrap()
    }
}

fn header(data: &str, name: &str) -> Option<String> {
    let prefix = format!("{}:", name.to_lowercase());
    data.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_owned())
}

/// The start of the `Message-ID` the email channel derives from an outbox key.
fn id_prefix(key: &str) -> String {
    format!("<{}-", key.replace(':', "-"))
}

fn email(id: &str) -> String {
    format!("{}@example-council.test", id.to_lowercase())
}

/// `n` queued new-work emails, the `i`th for `recipient(i)`, in queue order.
fn new_work_rows(
    n: usize,
    recipient: impl Fn(usize) -> String,
    now: Timestamp,
) -> Vec<qaloop::store::NewOutbox> {
    (0..n)
        .map(|i| {
            let who = recipient(i);
            let mut context =
                qaloop::notify::context::TemplateContext::new(qaloop::notify::Kind::NewAssignment);
            context.recipient = who.clone();
            context.items = vec![qaloop::notify::context::Item {
                id: i as i64 + 1,
                title: "Case file audit".into(),
                period: "2027-05".into(),
                due: "2027-05-28".into(),
                due_long: "Friday 28 May 2027".into(),
                link: format!("http://localhost:8080/assignments/{}", i + 1),
                ..Default::default()
            }];
            qaloop::store::NewOutbox {
                key: format!("new_assignment:a{}:{who}::{who}:email", i + 1),
                kind: "new_assignment".into(),
                channel: "email".into(),
                recipient: who,
                assignment_id: None,
                context: serde_json::to_string(&context).unwrap(),
                not_before: now,
                suppressed: false,
            }
        })
        .collect()
}

both_backends!(
    a_year_of_notifications_matches_the_schedule_exactly,
    mail_waits_for_working_hours,
    a_relay_down_for_three_days_delivers_everything_once_in_order,
    a_permanent_rejection_goes_dead_and_alerts_the_admin,
    a_crash_between_sending_and_recording_duplicates_at_most_once,
    completing_or_reassigning_work_cancels_its_pending_notices,
    downtime_produces_one_summary_per_person_not_a_burst,
    webhook_rate_limits_and_errors_are_retried_as_the_peer_asks,
    a_queue_of_several_batches_goes_out_once_in_order_with_every_outcome_recorded,
    a_queue_sent_over_several_connections_goes_out_once_with_every_outcome_recorded,
    more_lanes_than_the_pool_can_lend_still_record_every_outcome,
);

async fn a_year_of_notifications_matches_the_schedule_exactly(db: TestDb) {
    let h = harness(
        db,
        Options::default(),
        NotifyConfig::default(),
        date(2027, 4, 1),
    )
    .await;
    let cal = &h.ctx.calendar;
    let end = date(2028, 3, 31);

    // TM1 completes each file audit at noon on the day of its first reminder; nobody else
    // completes anything.
    let mut day = date(2027, 4, 1);
    while day <= end {
        for hour in [10] {
            h.pass(h.local(day, hour)).await;
            {
                let open =
                    h.db.store
                        .assignments(&AssignmentFilter {
                            statuses: vec![Status::Open],
                            assignees: vec![Assignee::person("TM1")],
                            activity_id: Some("file-audit".into()),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                for a in open
                    .iter()
                    .filter(|a| cal.nth_working_day_before(a.due, 5) == day)
                {
                    complete(
                        &h.db.store,
                        &h.ctx,
                        a.id,
                        &Actor::new("TM1", Via::Cli),
                        None,
                        h.local(day, 12),
                    )
                    .await
                    .unwrap();
                }
            }
        }
        day = day.tomorrow().unwrap();
    }

    // Nothing twice: every Message-ID is unique.
    let mail = h.mail();
    let ids: HashSet<&str> = mail.iter().map(|(_, _, id)| id.as_str()).collect();
    assert_eq!(ids.len(), mail.len(), "a message arrived twice");

    // Nothing outside working hours on working days.
    for row in h.outbox(OutboxStatus::Sent).await {
        let local = row.sent_at.unwrap().to_zoned(h.ctx.tz.clone());
        assert!(
            cal.is_working_day(local.date()),
            "sent on a non-working day: {}",
            row.key
        );
        assert!(
            (8..18).contains(&local.hour()),
            "sent at {local}: {}",
            row.key
        );
    }

    let count = |to: &str, kind: &str| {
        mail.iter()
            .filter(|(t, k, _)| t == &email(to) && k == kind)
            .count()
    };
    // An independent count of what the defaults promise, from the final state.
    let all =
        h.db.store
            .assignments(&AssignmentFilter::default())
            .await
            .unwrap();
    let overdue_days = |due: Date| cal.working_days_between(due, end);
    let tm1_observations: Vec<_> = all
        .iter()
        .filter(|a| a.assignee == "TM1" && a.activity_id == "direct-observation")
        .collect();
    let expected_chases: usize = tm1_observations
        .iter()
        .map(|a| overdue_days(a.due).div_ceil(3) as usize)
        .sum();
    assert_eq!(
        count("TM1", "new_assignment"),
        24,
        "12 audits + 12 observations"
    );
    assert_eq!(
        count("TM1", "reminder"),
        12 + 24,
        "audits: 5 days before only (then done); observations: 5 and 1"
    );
    assert_eq!(count("TM1", "due_today"), 12, "observations only");
    assert_eq!(count("TM1", "chase"), expected_chases);
    assert_eq!(count("TM1", "digest") + count("TM1", "catch_up"), 0);
    // TM1 manages P1, the practitioner rep: the practitioner forum (owned by that role) escalates
    // to TM1 once five working days overdue, and to SL1 at ten.
    let forums: Vec<_> = all
        .iter()
        .filter(|a| a.activity_id == "practitioner-forum")
        .collect();
    assert_eq!(
        count("TM1", "escalation"),
        forums.iter().filter(|a| overdue_days(a.due) >= 5).count()
    );

    // SL1: its own quarterly work and one moderation per completed audit; an escalation for
    // each of its team managers' items five or more working days overdue.
    let moderations = all
        .iter()
        .filter(|a| a.activity_id == "audit-moderation")
        .count();
    assert_eq!(moderations, 12);
    assert_eq!(count("SL1", "new_assignment"), 8 + 12);
    let escalated = all
        .iter()
        .filter(|a| {
            (a.assignee == "TM1" || a.assignee == "TM2")
                && a.status == Status::Open
                && overdue_days(a.due) >= 5
        })
        .count();
    let second_level = forums.iter().filter(|a| overdue_days(a.due) >= 10).count();
    assert_eq!(count("SL1", "escalation"), escalated + second_level);
    // The director (slt) gets the six bi-monthly closing-the-loop digests.
    assert_eq!(count("DIR", "slt_digest"), 6);
}

async fn mail_waits_for_working_hours(db: TestDb) {
    let h = may_2027(db).await;

    // Saturday 1 May 2027, 00:30: May's work is created; Monday 3 May is a bank holiday.
    h.pass(h.local(date(2027, 5, 1), 0) + 30.minutes()).await;
    h.pass(h.local(date(2027, 5, 3), 12)).await;
    assert!(
        h.smtp.received().is_empty(),
        "held over the weekend and the bank holiday"
    );
    h.pass(h.local(date(2027, 5, 4), 7)).await;
    assert!(h.smtp.received().is_empty(), "held until 08:00");

    h.pass(h.local(date(2027, 5, 4), 8)).await;

    // May's new work, and (the quarter having begun in April) one summary of existing work each.
    let mail = h.mail();
    let tm1: Vec<&str> = mail
        .iter()
        .filter(|(to, _, _)| to == &email("TM1"))
        .map(|(_, k, _)| k.as_str())
        .collect();
    assert_eq!(tm1, vec!["new_assignment", "new_assignment", "catch_up"]);
    // People whose first message this is (no new work of their own in May) are welcomed
    // instead of summarised, once.
    assert!(
        mail.iter().all(|(_, kind, _)| kind == "new_assignment"
            || kind == "catch_up"
            || kind == "welcome"),
        "{mail:?}"
    );
    let welcomed: Vec<&str> = mail
        .iter()
        .filter(|(_, kind, _)| kind == "welcome")
        .map(|(to, _, _)| to.as_str())
        .collect();
    assert!(!welcomed.is_empty());
    for to in &welcomed {
        assert_eq!(
            mail.iter().filter(|(t, _, _)| t == to).count(),
            1,
            "{to}: the welcome replaces the summary"
        );
    }
}

async fn a_relay_down_for_three_days_delivers_everything_once_in_order(db: TestDb) {
    // Default settings: nothing is given up while it is still useful.
    let mut h = harness(
        db,
        Options::default(),
        NotifyConfig::default(),
        date(2027, 5, 1),
    )
    .await;
    h.smtp.stop().await;

    // Down from Tuesday 4 May to Thursday 6 May; passes every hour in working hours.
    for day in [date(2027, 5, 4), date(2027, 5, 5), date(2027, 5, 6)] {
        for hour in 8..18 {
            h.pass(h.local(day, hour)).await;
        }
    }
    let failed = h.outbox(OutboxStatus::Failed).await;
    assert!(!failed.is_empty());
    assert!(failed.iter().all(|r| r.attempts >= 2), "retried while down");
    assert!(
        h.outbox(OutboxStatus::Dead).await.is_empty(),
        "nothing given up"
    );

    h.smtp.restart().await;
    h.pass(h.local(date(2027, 5, 7), 10)).await;

    let sent = h.outbox(OutboxStatus::Sent).await;
    let sent_ids: HashSet<i64> = sent.iter().map(|r| r.id).collect();
    assert!(
        failed.iter().all(|r| sent_ids.contains(&r.id)),
        "everything held back was delivered"
    );
    let received = h.mail();
    assert_eq!(received.len(), sent.len(), "each delivered once");
    let mut by_id: Vec<_> = sent.iter().map(|r| (r.id, id_prefix(&r.key))).collect();
    by_id.sort();
    let received_ids: Vec<String> = h
        .smtp
        .received()
        .iter()
        .map(|m| header(&m.data, "Message-ID").unwrap())
        .collect();
    for ((_, prefix), id) in by_id.iter().zip(&received_ids) {
        assert!(
            id.starts_with(prefix.as_str()),
            "delivered out of queue order: {id} is not {prefix}…"
        );
    }
}

async fn a_permanent_rejection_goes_dead_and_alerts_the_admin(db: TestDb) {
    let options = Options {
        rcpt_replies: vec![(email("TM2"), 550)],
        ..Options::default()
    };
    let config = NotifyConfig {
        admin_channel: Some("email".into()),
        admin_address: Some("qa-team@example-council.test".into()),
        ..NotifyConfig::default()
    };
    let h = harness(db, options, config, date(2027, 5, 1)).await;
    h.pass(h.local(date(2027, 5, 1), 0) + 30.minutes()).await;

    h.pass(h.local(date(2027, 5, 4), 9)).await;

    let dead = h.outbox(OutboxStatus::Dead).await;
    assert_eq!(
        dead.len(),
        3,
        "TM2's two new-assignment mails and a summary"
    );
    assert!(
        dead.iter().all(|r| r.recipient == "TM2" && r.attempts == 1),
        "permanent: no retries"
    );
    assert!(
        dead[0].last_error.as_deref().unwrap_or("").contains("550"),
        "{:?}",
        dead[0].last_error
    );
    let alerts: Vec<_> = h
        .mail()
        .into_iter()
        .filter(|(_, kind, _)| kind == "admin_alert")
        .collect();
    assert_eq!(alerts.len(), 3, "one alert per dead message");
    assert!(
        alerts
            .iter()
            .all(|(to, _, _)| to == "qa-team@example-council.test")
    );

    // The operator fixes the address and retries one.
    assert!(
        h.db.store
            .retry(dead[0].id, h.local(date(2027, 5, 4), 10))
            .await
            .unwrap()
    );
    let row = h.db.store.outbox_row(dead[0].id).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (OutboxStatus::Pending, 0));
}

async fn a_crash_between_sending_and_recording_duplicates_at_most_once(db: TestDb) {
    let h = may_2027(db).await;
    h.pass(h.local(date(2027, 5, 1), 0) + 30.minutes()).await;
    let now = h.local(date(2027, 5, 4), 9);
    // A dispatcher claims the rows and sends the first, then dies before recording it.
    let claimed = h.db.store.claim(now, now + 5.minutes(), 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let channel = qaloop::notify::email::SmtpChannel::new(
        match &smtp_channel(h.smtp.port()) {
            ChannelSettings::Email(e) => e,
            _ => unreachable!(),
        },
        std::path::Path::new("."),
    )
    .unwrap();
    let message = qaloop::notify::Message {
        key: claimed[0].key.clone(),
        kind: qaloop::notify::Kind::NewAssignment,
        recipient: qaloop::notify::Recipient {
            staff_id: claimed[0].recipient.clone(),
            email: Some(email(&claimed[0].recipient)),
            chat_id: None,
        },
        subject: "s".into(),
        text: "t".into(),
        html: "<p>h</p>".into(),
        link: None,
        calendar: None,
        composed_at: jiff::Timestamp::from_second(1_780_000_000).unwrap(),
    };
    channel.deliver(&message).await.unwrap();

    // Before the lease runs out nobody resends it; after, it is sent once more.
    h.dispatcher
        .dispatch(&h.db.store, now + 1.minute())
        .await
        .unwrap();
    let total = h.outbox(OutboxStatus::Sent).await.len() + 1;
    h.dispatcher
        .dispatch(&h.db.store, now + 6.minutes())
        .await
        .unwrap();

    let sent = h.outbox(OutboxStatus::Sent).await;
    assert_eq!(sent.len(), total, "nothing lost");
    let prefix = id_prefix(&claimed[0].key);
    let copies = h
        .mail()
        .iter()
        .filter(|(_, _, id)| id.starts_with(&prefix))
        .count();
    assert!(copies <= 2, "at most one duplicate, got {copies}");
    assert_eq!(h.mail().len(), sent.len() + 1);
}

async fn completing_or_reassigning_work_cancels_its_pending_notices(db: TestDb) {
    let h = may_2027(db).await;
    // Created on Saturday: held until Tuesday.
    h.pass(h.local(date(2027, 5, 1), 9)).await;
    let pending = h.outbox(OutboxStatus::Pending).await;
    let mut audit = None;
    for row in pending.iter().filter(|r| r.recipient == "TM1") {
        let a =
            h.db.store
                .assignment(row.assignment_id.unwrap())
                .await
                .unwrap();
        if a.activity_id == "file-audit" {
            audit = Some(row);
        }
    }
    let audit = audit.expect("TM1's file audit was announced");
    let id = audit.assignment_id.unwrap();

    complete(
        &h.db.store,
        &h.ctx,
        id,
        &Actor::new("TM1", Via::Cli),
        None,
        h.local(date(2027, 5, 1), 10),
    )
    .await
    .unwrap();

    let row = h.db.store.outbox_row(audit.id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Cancelled);
    // The moderation it triggered is announced to the line manager.
    let sl1: Vec<_> = h
        .outbox(OutboxStatus::Pending)
        .await
        .into_iter()
        .filter(|r| r.recipient == "SL1")
        .collect();
    assert!(sl1.iter().any(|r| r.kind == "new_assignment"));
    let by_assignment: BTreeMap<i64, usize> = h
        .outbox(OutboxStatus::Pending)
        .await
        .into_iter()
        .filter_map(|r| r.assignment_id)
        .fold(BTreeMap::new(), |mut m, id| {
            *m.entry(id).or_default() += 1;
            m
        });
    assert!(!by_assignment.contains_key(&id));
}

async fn downtime_produces_one_summary_per_person_not_a_burst(db: TestDb) {
    let h = may_2027(db).await;
    h.pass(h.local(date(2027, 5, 4), 9)).await;
    let before = h.mail().len();

    // Off from 5 May to 21 June: June's work is created late and much is overdue.
    h.pass(h.local(date(2027, 6, 21), 9)).await;

    let after: Vec<_> = h.mail().into_iter().skip(before).collect();
    let tm1: Vec<_> = after
        .iter()
        .filter(|(to, _, _)| to == &email("TM1"))
        .collect();
    assert_eq!(tm1.len(), 1, "one summary, not a burst: {tm1:?}");
    assert_eq!(tm1[0].1, "catch_up");
    // The Apr–May review's senior-leadership digest fell in the downtime: it comes now, once,
    // beside DIR's summary; everything else is a summary.
    let (digests, summaries): (Vec<_>, Vec<_>) =
        after.iter().partition(|(_, kind, _)| kind == "slt_digest");
    assert_eq!(digests.len(), 1, "{after:?}");
    assert_eq!(digests[0].0, email("DIR"));
    // Someone qaloop had never written to (QA) is welcomed instead of summarised.
    assert!(
        summaries
            .iter()
            .all(|(to, kind, _)| kind == "catch_up" || (kind == "welcome" && to == &email("QA"))),
        "{after:?}"
    );
    let per_person: HashSet<&str> = summaries.iter().map(|(to, _, _)| to.as_str()).collect();
    assert_eq!(per_person.len(), summaries.len());
}

async fn webhook_rate_limits_and_errors_are_retried_as_the_peer_asks(db: TestDb) {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7200"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(3)
        .mount(&server)
        .await;
    let settings: ChannelSettings = toml::from_str(&format!(
        "kind = \"slack\"\nname = \"team-slack\"\nurl = \"{}/hook\"\n",
        server.uri()
    ))
    .unwrap();
    let config: NotifyConfig =
        toml::from_str("[[routes]]\nkinds = [\"*\"]\nchannels = [\"team-slack\"]\n").unwrap();
    let mut ctx = context();
    ctx.start_date = Some(date(2027, 5, 1));
    ctx.announcer = Some(Arc::new(Router::new(
        &config,
        std::slice::from_ref(&settings),
        "Example Council",
        ctx.tz.clone(),
        support::org::single_messages(),
    )));
    let channel: Arc<dyn Channel> = Arc::new(
        qaloop::notify::chat::WebhookChannel::from_settings(&settings, std::path::Path::new("."))
            .unwrap()
            .unwrap(),
    );
    let dispatcher = Dispatcher::new(
        [("team-slack".to_owned(), channel)].into(),
        Arc::new(Templates::load(None).unwrap()),
        RetryPolicy::from_config(&config),
        None,
    )
    .with_working_hours_of(&ctx);
    let start = at("2027-04-30T12:00:00Z");
    import_staff(
        &db.store,
        &ctx,
        &small_org(),
        "test",
        ctx.today(start),
        start,
    )
    .await
    .unwrap();
    // Live since before May (go-live itself sends no per-item notices: tests/messages.rs).
    db.store
        .set_meta(qaloop::engine::reconcile::GO_LIVE_KEY, "2027-03-31")
        .await
        .unwrap();
    let saturday = at("2027-04-30T23:30:00Z");
    reconcile(&db.store, &ctx, saturday).await.unwrap();
    let queued = db
        .store
        .outbox(Some(OutboxStatus::Pending), 1000)
        .await
        .unwrap()
        .len();
    assert!(queued > 2);

    // Tuesday 4 May, 09:00 BST: the first post is rate-limited, the second meets a 500.
    let nine = at("2027-05-04T08:00:00Z");
    let first = dispatcher.dispatch(&db.store, nine).await.unwrap();
    assert_eq!((first.sent, first.retrying, first.dead), (queued - 2, 2, 0));
    let failed = db
        .store
        .outbox(Some(OutboxStatus::Failed), 10)
        .await
        .unwrap();
    let limited = failed
        .iter()
        .find(|r| r.last_error.as_deref().unwrap_or("").contains("429"))
        .unwrap();
    assert!(
        limited.next_attempt_at >= nine + 7200.seconds(),
        "Retry-After honoured as given, two hours, not cut to one"
    );

    // A minute later the 500 has waited out its backoff (30–60 s for a first retry) but the
    // rate-limited post waits its two hours, through passes at every hour; then it goes too.
    assert_eq!(
        dispatcher
            .dispatch(&db.store, nine + 1.minute())
            .await
            .unwrap()
            .sent,
        1
    );
    for later in [nine + 1.hour(), nine + 119.minutes()] {
        let report = dispatcher.dispatch(&db.store, later).await.unwrap();
        assert_eq!(report.sent, 0, "not retried sooner than Retry-After");
    }
    let row = db.store.outbox_row(limited.id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Failed);
    assert_eq!(
        dispatcher
            .dispatch(&db.store, nine + 2.hours())
            .await
            .unwrap()
            .sent,
        1
    );
    assert_eq!(server.received_requests().await.unwrap().len(), queued + 2);
    assert!(
        db.store
            .outbox(Some(OutboxStatus::Failed), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_queue_of_several_batches_goes_out_once_in_order_with_every_outcome_recorded(db: TestDb) {
    // More rows than one claim takes, so batches are claimed while others are sent and outcomes
    // are recorded in groups; among them one the relay refuses (dead, with an admin alert) and
    // one for someone who is not on the staff list (cancelled), both in the last batch.
    let options = Options {
        rcpt_replies: vec![(email("TM2"), 550)],
        ..Options::default()
    };
    let config = NotifyConfig {
        admin_channel: Some("email".into()),
        admin_address: Some("qa-team@example-council.test".into()),
        ..NotifyConfig::default()
    };
    let h = harness(db, options, config, date(2027, 5, 1)).await;
    let now = h.local(date(2027, 5, 4), 10);
    let staff: Vec<String> = small_org()
        .into_iter()
        .map(|p| p.staff_id)
        .filter(|id| id != "TM2")
        .collect();
    let recipient = |i: usize| match i {
        1100 => "TM2".to_owned(),
        1150 => "LEFT".to_owned(),
        _ => staff[i % staff.len()].clone(),
    };
    let rows = new_work_rows(1200, recipient, now);
    h.db.store.enqueue(&rows, now).await.unwrap();

    let report = h.dispatcher.dispatch(&h.db.store, now).await.unwrap();

    assert_eq!((report.sent, report.dead), (1198 + 1, 1), "{report:?}");
    let status: BTreeMap<String, OutboxStatus> =
        h.db.store
            .outbox(None, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.status))
            .collect();
    assert_eq!(status[&rows[1100].key], OutboxStatus::Dead);
    assert_eq!(status[&rows[1150].key], OutboxStatus::Cancelled);
    assert!(h.outbox(OutboxStatus::Pending).await.is_empty());
    assert!(h.outbox(OutboxStatus::Failed).await.is_empty());
    let expected: Vec<String> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| ![1100, 1150].contains(i))
        .map(|(_, r)| id_prefix(&r.key))
        .collect();
    let received: Vec<String> = h
        .smtp
        .received()
        .iter()
        .map(|m| header(&m.data, "Message-ID").unwrap())
        .collect();
    assert_eq!(
        received.len(),
        expected.len() + 1,
        "each once, and the alert"
    );
    for (prefix, id) in expected.iter().zip(&received) {
        assert!(
            id.starts_with(prefix.as_str()),
            "delivered out of queue order: {id} is not {prefix}…"
        );
    }
    assert!(
        received[expected.len()].starts_with("<admin_alert-"),
        "the alert about the dead row went out in the same dispatch: {}",
        received[expected.len()]
    );
}

async fn a_queue_sent_over_several_connections_goes_out_once_with_every_outcome_recorded(
    db: TestDb,
) {
    // More than one claim's worth, over three connections (`connections = 3`).
    let h = harness_with(
        db,
        Options::default(),
        NotifyConfig::default(),
        date(2027, 5, 1),
        "connections = 3\n",
    )
    .await;
    let now = h.local(date(2027, 5, 4), 10);
    let staff: Vec<String> = small_org().into_iter().map(|p| p.staff_id).collect();
    let rows = new_work_rows(700, |i| staff[i % staff.len()].clone(), now);
    h.db.store.enqueue(&rows, now).await.unwrap();

    let report = h.dispatcher.dispatch(&h.db.store, now).await.unwrap();

    assert_eq!((report.sent, report.retrying, report.dead), (700, 0, 0));
    assert_eq!(h.outbox(OutboxStatus::Sent).await.len(), 700);
    let mut received: Vec<String> = h
        .smtp
        .received()
        .iter()
        .map(|m| header(&m.data, "Message-ID").unwrap())
        .collect();
    received.sort();
    let mut expected: Vec<String> = rows.iter().map(|r| id_prefix(&r.key)).collect();
    expected.sort();
    assert_eq!(received.len(), 700, "each once");
    for (prefix, id) in expected.iter().zip(&received) {
        assert!(id.starts_with(prefix.as_str()), "{id} is not {prefix}…");
    }
    // Three at once at least (lettre may open a fourth while a finished send's connection
    // is on its way back to its pool).
    assert!(
        h.smtp.most_sessions_at_once() >= 3,
        "sent over {} connection(s) at once",
        h.smtp.most_sessions_at_once()
    );
}

/// On PostgreSQL each lane holds a pooled connection for its delivery notes, and a lane waits
/// for its outcomes to be recorded when 32 are queued: lanes must never hold every connection
/// the recording needs. Six lanes on a pool of five (the tests' pool), each with one delivery
/// (which takes a connection) and then seventy rows for people no longer on the staff list (each
/// cancelled, a write; more than the 64 a lane can have waiting): all of them recorded, in one
/// dispatch. (With every lane holding a
/// connection, the recording waited for the pool until it timed out.)
async fn more_lanes_than_the_pool_can_lend_still_record_every_outcome(db: TestDb) {
    let h = harness_with(
        db,
        Options::default(),
        NotifyConfig::default(),
        date(2027, 5, 1),
        "connections = 6\n",
    )
    .await;
    let now = h.local(date(2027, 5, 4), 10);
    let staff: Vec<String> = small_org().into_iter().map(|p| p.staff_id).collect();
    // Dealt in turn: each lane's first row goes out, the rest are for someone who left.
    let rows = new_work_rows(
        426,
        |i| {
            if i < 6 {
                staff[i].clone()
            } else {
                "S9999".to_owned()
            }
        },
        now,
    );
    h.db.store.enqueue(&rows, now).await.unwrap();

    let report = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        h.dispatcher.dispatch(&h.db.store, now),
    )
    .await
    .expect("the dispatch finished")
    .unwrap();

    assert_eq!((report.sent, report.retrying, report.dead), (6, 0, 0));
    assert_eq!(h.outbox(OutboxStatus::Sent).await.len(), 6);
    assert_eq!(h.outbox(OutboxStatus::Cancelled).await.len(), 420);
    assert_eq!(h.smtp.received().len(), 6);
}
