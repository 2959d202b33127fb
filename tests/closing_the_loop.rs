//! One hand-computed fixture of actions, read two ways on SQLite and PostgreSQL: the senior
//! leadership digest's closing-the-loop section (through real SMTP on loopback) and the tracker
//! page's CSV (through the real web server on loopback) must show the same figures.
//!
//! The fixture, as it stands on Friday 23 July 2027 (the digest day before the Jun–Jul review):
//!
//! | action | owner | due | story | counts as |
//! |---|---|---|---|---|
//! | 1 | P1 | 1 Jul | open | overdue |
//! | 2 | P1 | 31 Aug | open | open, not overdue |
//! | 3 | P2 | 9 Jul | open | overdue |
//! | 4 | P2 | 30 Jul | done 5 Jul | done, not verified |
//! | 5 | TM1 | 15 Jul | done 1 Jul, verified 2 Jul by SL1 | verified |
//! | 6 | P1 | 30 Jun | done 15 Jun, reopened 21 Jun to 20 Jul | overdue, reopened |
//! | 7 | P1 | 24 Jun | raised by TM1's June audit, graded Inadequate | overdue, Inadequate |
//!
//! So: 4 overdue, 1 done but not verified, 1 verified, 1 reopened, and one Inadequate audit
//! (TM1's) without a verified action plan.

mod support;

use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::{Date, date};
use qaloop::clock::FixedClock;
use qaloop::domain::{ActionChange, ActionSource, Actor, NewAction, NewRecord, Via};
use qaloop::engine::actions::{change, raise};
use qaloop::engine::{complete_with_record, import_staff, reconcile};
use qaloop::links::{Key, LinkKeys, Purpose};
use qaloop::notify::settings::NotifyConfig;
use qaloop::store::AssignmentFilter;
use qaloop::web::{AppState, app, serve, templates};
use support::notify::start_with;
use support::org::small_org;
use support::smtp::{Options, SmtpServer};
use support::store::TestDb;

both_backends!(the_digest_and_the_tracker_agree_on_a_hand_computed_fixture);

async fn the_digest_and_the_tracker_agree_on_a_hand_computed_fixture(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (mut ctx, dispatcher) = start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    ctx.start_date = Some(date(2027, 6, 1));
    let local = |day: Date, hour: i8| -> Timestamp {
        day.at(hour, 0, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp()
    };
    let june = date(2027, 6, 1);
    import_staff(&db.store, &ctx, &small_org(), "test", june, local(june, 6))
        .await
        .unwrap();
    reconcile(&db.store, &ctx, local(june, 7)).await.unwrap();

    let by = |id: &str| Actor::new(id, Via::Cli);
    let new = |owner: &str, raised_by: &str, due: Date| NewAction {
        source: ActionSource::Manual,
        assignment_id: None,
        description: "Update the chronology".into(),
        owner: owner.into(),
        raised_by: raised_by.into(),
        due,
        inadequate: false,
    };
    let mut ids = Vec::new();
    for (owner, raised_by, due) in [
        ("P1", "TM1", date(2027, 7, 1)),
        ("P1", "TM1", date(2027, 8, 31)),
        ("P2", "TM2", date(2027, 7, 9)),
        ("P2", "TM2", date(2027, 7, 30)),
        ("TM1", "SL1", date(2027, 7, 15)),
        ("P1", "TM1", date(2027, 6, 30)),
    ] {
        let raised = raise(
            &db.store,
            &ctx,
            &[new(owner, raised_by, due)],
            &by(raised_by),
            local(june, 9),
        )
        .await
        .unwrap();
        ids.push(raised[0]);
    }
    let step = |id: i64, change_to: ActionChange, who: &'static str, day: Date| {
        let (store, ctx) = (db.store.clone(), ctx.clone());
        async move {
            change(&store, &ctx, id, &change_to, &by(who), local(day, 10))
                .await
                .unwrap();
        }
    };
    let done = || ActionChange::Done {
        note: "Done".into(),
    };
    step(ids[3], done(), "P2", date(2027, 7, 5)).await;
    step(ids[4], done(), "TM1", date(2027, 7, 1)).await;
    step(
        ids[4],
        ActionChange::Verify {
            note: "Seen in supervision".into(),
        },
        "SL1",
        date(2027, 7, 2),
    )
    .await;
    step(ids[5], done(), "P1", date(2027, 6, 15)).await;
    step(
        ids[5],
        ActionChange::Reopen {
            due: date(2027, 7, 20),
            reason: "Not yet in the record".into(),
        },
        "TM1",
        date(2027, 6, 21),
    )
    .await;
    // TM1's June case file audit, graded Inadequate, raises the seventh action (due 10
    // working days later, 24 June).
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
        fields: serde_json::json!({
            "case_reference": "CIN-004512",
            "overall_grade": "Inadequate",
            "actions": [{ "description": "Write a plan", "owner": "P1", "due": "2027-06-24" }],
        }),
        outcomes: vec![],
    };
    complete_with_record(
        &db.store,
        &ctx,
        audit.id,
        &Actor::new("TM1", Via::Link),
        None,
        Some(&record),
        local(date(2027, 6, 10), 11),
    )
    .await
    .unwrap();

    // The digest day.
    let day = date(2027, 7, 23);
    qaloop::notify::daily::decide(&db.store, &ctx, local(day, 8))
        .await
        .unwrap();
    dispatcher.dispatch(&db.store, local(day, 9)).await.unwrap();
    let digest = smtp
        .received()
        .into_iter()
        .find(|m| m.data.contains("Message-ID: <slt_digest"))
        .expect("the digest went to DIR")
        .data
        .replace("=\r\n", "");
    assert!(
        digest.contains(
            "Closing the loop: 4 actions overdue, 1 done but not yet verified, \
             1 Inadequate audit without a verified action plan."
        ),
        "{digest}"
    );

    // The tracker's CSV, for the same senior leader on the same day.
    let keys = LinkKeys::new(Key::new(vec![42; 32]).unwrap(), None, 30);
    let now = local(day, 10);
    let state = Arc::new(AppState {
        store: db.store.clone(),
        ctx: Arc::new(ctx.clone()),
        keys: keys.clone(),
        clock: Arc::new(FixedClock::new(now)),
        pages: templates::load(None).unwrap(),
        organisation: "Test Council".into(),
        urgent: qaloop::domain::UrgentSettings::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        app(state, 16 * 1024),
        std::future::pending(),
    ));
    let token = keys.sign_from("DIR", Purpose::Tracker, None, now);
    let csv = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/tracker.csv?t={token}&state=all"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let count = |f: &dyn Fn(&csv::StringRecord) -> bool| rows.iter().filter(|r| f(r)).count();
    assert_eq!(rows.len(), 7, "{csv}");
    assert_eq!(count(&|r| &r[column("overdue")] == "true"), 4, "{csv}");
    assert_eq!(count(&|r| &r[column("state")] == "done"), 1, "{csv}");
    assert_eq!(count(&|r| &r[column("state")] == "verified"), 1, "{csv}");
    assert_eq!(count(&|r| &r[column("reopened")] != "0"), 1, "{csv}");
    assert_eq!(count(&|r| &r[column("inadequate")] == "true"), 1, "{csv}");
}
