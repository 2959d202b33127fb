//! Urgent concerns end to end on SQLite and PostgreSQL, through a real SMTP server on loopback:
//! alerted at once whatever the hour, re-alerted hourly, escalated, silenced by the
//! acknowledgement, and nothing lost or doubled by a restart.

mod support;

use std::sync::Arc;

use jiff::Timestamp;
use qaloop::domain::{Actor, ConcernKind, UrgentSettings, Via};
use qaloop::engine::{Context, import_staff, reconcile};
use qaloop::notify::dispatcher::{Dispatcher, RetryPolicy};
use qaloop::notify::router::Router;
use qaloop::notify::settings::NotifyConfig;
use qaloop::notify::templates::Templates;
use qaloop::notify::{Channel, ChannelSettings};
use qaloop::store::{Acknowledged, AssignmentFilter, NewConcern};
use support::org::{at, context, small_org};
use support::smtp::{Options, SmtpServer};
use support::store::TestDb;

both_backends!(an_urgent_concern_on_a_friday_evening_is_alerted_until_acknowledged);

/// The daemon's parts as a start builds them: the engine context with its router, and a
/// dispatcher holding routine mail to working hours (the default).
fn start(port: u16) -> (Context, Dispatcher) {
    let settings: ChannelSettings = toml::from_str(&format!(
        "kind = \"email\"\nname = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         security = \"none\"\nfrom = \"qa@example-council.test\"\ntimeout_seconds = 5\n"
    ))
    .unwrap();
    let config = NotifyConfig::default();
    let mut ctx = context();
    ctx.announcer = Some(Arc::new(Router::new(
        &config,
        std::slice::from_ref(&settings),
        "Example Council",
        ctx.tz.clone(),
        vec![],
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
        None,
    )
    .with_working_hours_of(&ctx);
    (ctx, dispatcher)
}

/// Received mail as (recipient address, subject).
fn mail(smtp: &SmtpServer) -> Vec<(String, String)> {
    smtp.received()
        .iter()
        .map(|m| {
            let subject = m
                .data
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_owned();
            (m.rcpt_to.join(","), subject)
        })
        .collect()
}

async fn an_urgent_concern_on_a_friday_evening_is_alerted_until_acknowledged(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start(smtp.port());
    let urgent = UrgentSettings {
        notify_roles: vec!["directorate_lead".into()],
        ..UrgentSettings::default()
    };
    let june = at("2027-06-01T06:00:00Z");
    import_staff(&db.store, &ctx, &small_org(), "test", ctx.today(june), june)
        .await
        .unwrap();
    reconcile(&db.store, &ctx, june).await.unwrap();
    dispatcher
        .dispatch(&db.store, at("2027-06-01T09:00:00Z"))
        .await
        .unwrap();
    let before = smtp.received().len();
    let audit = db
        .store
        .assignments(&AssignmentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.activity_id == "file-audit" && a.assignee == "TM1")
        .unwrap();

    // TM1 records it at 17:55 on Friday 11 June 2027 (BST), five minutes before hours end.
    let pass = |now: Timestamp| {
        let (ctx, dispatcher, store, urgent) = (&ctx, &dispatcher, &db.store, &urgent);
        async move {
            qaloop::notify::urgent::decide(store, ctx, urgent, now)
                .await
                .unwrap();
            dispatcher.dispatch(store, now).await.unwrap();
        }
    };
    db.store
        .raise_concerns(
            &[NewConcern {
                assignment_id: audit.id,
                case_reference: "CR-0042".into(),
                kind: ConcernKind::Urgent,
            }],
            &Actor::new("TM1", Via::Link),
            at("2027-06-11T16:55:00Z"),
        )
        .await
        .unwrap();
    pass(at("2027-06-11T16:56:00Z")).await;
    let first: Vec<_> = mail(&smtp).split_off(before);
    let to: Vec<&str> = first.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(
        to,
        ["dir@example-council.test", "hos@example-council.test"],
        "the auditor's head of service and the configured role, at once"
    );
    assert!(
        first
            .iter()
            .all(|(_, s)| s == "Urgent concern: case CR-0042"),
        "{first:?}"
    );

    // 19:00 and 19:30, outside working hours: one re-alert each hour, even after a restart.
    pass(at("2027-06-11T18:00:00Z")).await;
    let (ctx2, dispatcher2) = start(smtp.port());
    qaloop::notify::urgent::decide(&db.store, &ctx2, &urgent, at("2027-06-11T18:30:00Z"))
        .await
        .unwrap();
    dispatcher2
        .dispatch(&db.store, at("2027-06-11T18:30:00Z"))
        .await
        .unwrap();
    let evening = mail(&smtp).split_off(before + 2);
    assert_eq!(
        evening.len(),
        2,
        "round 1 once to each, nothing else: {evening:?}"
    );
    assert!(
        evening
            .iter()
            .all(|(_, s)| s.starts_with("Reminder 1: urgent concern"))
    );

    // 21:55: four hours without acknowledgement escalates to senior leadership.
    pass(at("2027-06-11T20:55:00Z")).await;
    let late = mail(&smtp).split_off(before + 4);
    assert!(
        late.iter().any(|(to, s)| to == "dir@example-council.test"
            && s == "Unacknowledged urgent concern: case CR-0042"),
        "{late:?}"
    );

    // The head of service acknowledges; nothing is sent again, all weekend.
    let concern = db.store.concerns(true).await.unwrap().remove(0);
    let ack = db
        .store
        .acknowledge_concern(
            concern.id,
            &Actor::new("HOS", Via::Link),
            "Spoke to the allocated worker; strategy discussion booked",
            None,
            at("2027-06-11T21:05:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(ack, Acknowledged::Now);
    let total = smtp.received().len();
    for now in [
        "2027-06-11T22:00:00Z",
        "2027-06-12T09:00:00Z",
        "2027-06-13T20:00:00Z",
    ] {
        pass(at(now)).await;
    }
    assert_eq!(
        smtp.received().len(),
        total,
        "silenced by the acknowledgement"
    );
    let again = db
        .store
        .acknowledge_concern(
            concern.id,
            &Actor::new("DIR", Via::Link),
            "x",
            None,
            at("2027-06-11T22:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(again, Acknowledged::Already("HOS".into()));
    let stored = db.store.concern(concern.id).await.unwrap();
    assert_eq!(
        stored.minutes_to_acknowledge(at("2027-06-14T00:00:00Z")),
        250
    );
}
