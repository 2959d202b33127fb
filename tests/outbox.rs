//! The outbox's promises with more than one dispatcher, on SQLite and PostgreSQL, through a
//! real SMTP server on loopback: leases that hold while a slow relay works, and outcome writes
//! that never overwrite a row someone else changed.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use qaloop::domain::{Actor, Via};
use qaloop::engine::{complete, import_staff, reconcile};
use qaloop::notify::dispatcher::{Dispatcher, RetryPolicy};
use qaloop::notify::email::SmtpChannel;
use qaloop::notify::settings::NotifyConfig;
use qaloop::notify::templates::Templates;
use qaloop::notify::{Channel, ChannelSettings, DeliverFuture};
use qaloop::store::OutboxStatus;
use support::notify::{mail, smtp_channel, start};
use support::org::{at, small_org};
use support::smtp::{Options, SmtpServer};
use support::store::TestDb;

both_backends!(
    two_dispatchers_and_a_slow_relay_send_each_message_once,
    a_reminder_cancelled_while_it_is_failing_is_never_sent,
    a_relay_down_over_a_weekend_loses_nothing_with_default_settings,
    a_daily_message_held_by_an_outage_drops_what_was_done_meanwhile,
    each_delivery_is_noted_before_the_next_send,
    each_delivery_is_noted_in_a_configured_sent_journal_before_the_next_send,
    a_claim_skips_a_row_about_work_completed_before_it_was_queued,
);

/// What the kill bound on PostgreSQL rests on (`DeliveryNotes`): once
/// `DeliveryNotes::start` returns, the note is on the server's side of the wire, and it is
/// committed though the client never reads the answer nor touches the connection again (here
/// the note, its connection and the runtime that ran it are abandoned, as a killed process
/// abandons them). If sqlx ever stopped writing a prepared statement in its first poll, the
/// row would stay unsent and this fails.
#[tokio::test]
async fn a_started_delivery_note_commits_though_its_client_vanishes() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let now = at(MORNING);
    let row = |i: usize| qaloop::store::NewOutbox {
        key: format!("note-test-{i}"),
        kind: "new_assignment".into(),
        channel: "email".into(),
        recipient: "S0001".into(),
        assignment_id: None,
        context: "{}".into(),
        not_before: now,
        suppressed: false,
    };
    db.store.enqueue(&[row(1), row(2)], now).await.unwrap();
    let claimed = db
        .store
        .claim(now, now + SignedDuration::from_mins(5), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let claim = claimed[0].claim.clone().unwrap();
    let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();

    // Another "process": a store and a runtime of its own on a thread of its own. The first
    // note is answered (it also takes the connection and prepares the statement); the second
    // is only started, then everything is abandoned.
    let target = db.target.clone();
    let (first, second) = (ids[0], ids[1]);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let support::store::Target::Postgres { url, schema } = target else {
                unreachable!()
            };
            let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url)
                .unwrap()
                .options([("search_path", schema.as_str())]);
            let store = qaloop::store::Store::connect_postgres(options, 2)
                .await
                .unwrap();
            let notes = store.delivery_notes();
            let (notes, answered) = notes.start(first, &claim, now).await.answer().await;
            answered.unwrap();
            let started = notes.start(second, &claim, now).await;
            std::mem::forget(started);
            std::mem::forget(store);
        });
        std::mem::forget(runtime);
    })
    .join()
    .unwrap();

    let sent = |rows: &[qaloop::store::OutboxRow], id: i64| {
        rows.iter()
            .any(|r| r.id == id && r.status == OutboxStatus::Sent)
    };
    let patience = std::time::Instant::now();
    loop {
        let rows = db.store.outbox(None, 10).await.unwrap();
        assert!(sent(&rows, first), "the answered note is recorded");
        if sent(&rows, second) {
            break;
        }
        assert!(
            patience.elapsed() < Duration::from_secs(10),
            "the note started before its client vanished was never committed"
        );
        tokio::task::yield_now().await;
    }
}

/// A channel that, before each delivery, checks that every message it delivered before is
/// noted where a killed dispatch's successor would find it (the sent journal, `journal.rs`):
/// recorded as sent in the outbox, or a line in the sent journal file. Delivers to a real relay.
struct Watching {
    /// The channel that sends.
    inner: Arc<dyn Channel>,
    /// The outbox to look in, on a pool of its own.
    store: qaloop::store::Store,
    /// The sent journal file, when there is one.
    journal: Option<std::path::PathBuf>,
    /// Keys delivered so far, and every key found un-noted at a later send.
    seen: std::sync::Mutex<(Vec<String>, Vec<String>)>,
}

impl Channel for Watching {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn reaches(&self, recipient: &qaloop::notify::Recipient) -> bool {
        self.inner.reaches(recipient)
    }

    fn deliver<'a>(&'a self, message: &'a qaloop::notify::Message) -> DeliverFuture<'a> {
        Box::pin(async move {
            // On PostgreSQL the last delivery's note is on its way when the next send starts
            // (written to the server, its answer not yet read: `DeliveryNotes`), so its commit
            // is waited for here, up to ten seconds; the file's line is there at once.
            let patience = std::time::Instant::now();
            let missing = loop {
                let rows = self.store.outbox(None, 100_000).await.unwrap();
                let journal = self
                    .journal
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                let noted = |key: &String| {
                    rows.iter().any(|r| {
                        &r.key == key
                            && (r.status == OutboxStatus::Sent
                                || journal
                                    .lines()
                                    .any(|l| l.split(' ').next() == Some(&r.id.to_string())))
                    })
                };
                let delivered = self.seen.lock().unwrap().0.clone();
                let missing: Vec<String> = delivered.into_iter().filter(|k| !noted(k)).collect();
                if missing.is_empty()
                    || self.journal.is_some()
                    || patience.elapsed() > Duration::from_secs(10)
                {
                    break missing;
                }
                tokio::task::yield_now().await;
            };
            self.seen.lock().unwrap().1.extend(missing);
            self.inner.deliver(message).await?;
            self.seen.lock().unwrap().0.push(message.key.clone());
            Ok(())
        })
    }
}

/// The sent journal's invariant, on both backends: a delivery is noted before the next message
/// on its channel goes out, so a dispatch killed at any moment resends at most the one in
/// flight.
async fn each_delivery_is_noted_before_the_next_send(db: TestDb) {
    // Where the daemon puts it without `notify.sent_journal`: beside a SQLite file; none on
    // PostgreSQL, where each note is the outbox row's own update.
    let journal = match &db.target {
        support::store::Target::Sqlite(url) => qaloop::notify::journal::path_for(url),
        support::store::Target::Postgres { .. } => None,
    };
    deliveries_are_noted_before_the_next_send(db, journal.clone(), journal).await;
}

/// The same with `notify.sent_journal` set: on PostgreSQL each note is then a line in the
/// node's own file, recorded in the outbox in groups, as on SQLite.
async fn each_delivery_is_noted_in_a_configured_sent_journal_before_the_next_send(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("qaloop.sent");
    deliveries_are_noted_before_the_next_send(db, Some(journal.clone()), Some(journal)).await;
}

/// On PostgreSQL, a journal file held by another process on the machine (a `tick` while
/// `serve` dispatches) is left alone, and the dispatch notes each delivery in the database
/// instead, still before the next send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_file_held_by_another_process_falls_back_to_notes_in_the_database() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qaloop.sent");
    let held = qaloop::notify::journal::FileJournal::open(&path)
        .unwrap()
        .expect("the journal is free");
    // The channel looks for notes in the database (no file given), waiting for each commit.
    deliveries_are_noted_before_the_next_send(db, Some(path.clone()), None).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "",
        "nothing written"
    );
    drop(held);
}

/// Dispatches a morning's messages with the sent journal at `journal` (`None`: none set) and
/// checks each delivery was noted before the next send, the channel looking in `noted_in` (a
/// journal file) and in the outbox.
async fn deliveries_are_noted_before_the_next_send(
    db: TestDb,
    journal: Option<std::path::PathBuf>,
    noted_in: Option<std::path::PathBuf>,
) {
    let smtp = SmtpServer::start(Options::default()).await;
    let config = at_nine();
    let (ctx, _) = start(smtp.port(), &config);
    let now = morning_work(&db, &ctx).await;
    let ChannelSettings::Email(email) = smtp_channel(smtp.port()) else {
        unreachable!()
    };
    let watching = Arc::new(Watching {
        inner: Arc::new(SmtpChannel::new(&email, std::path::Path::new(".")).unwrap()),
        store: db.second_store().await,
        journal: noted_in,
        seen: Default::default(),
    });
    let dispatcher = Dispatcher::new(
        [("email".to_owned(), watching.clone() as Arc<dyn Channel>)].into(),
        Arc::new(Templates::load(None).unwrap()),
        RetryPolicy::from_config(&config),
        None,
    )
    .with_working_hours_of(&ctx)
    .with_journal(journal);

    let report = dispatcher.dispatch(&db.store, now).await.unwrap();

    let (delivered, missing) = watching.seen.lock().unwrap().clone();
    assert!(delivered.len() >= 6, "enough to see: {}", delivered.len());
    assert_eq!(report.sent, delivered.len());
    assert!(
        missing.is_empty(),
        "delivered, not noted before the next send: {missing:?}"
    );
    // And at the end every delivery is recorded in the outbox, the journal's lines spent.
    let rows = db.store.outbox(None, 100_000).await.unwrap();
    let unrecorded: Vec<&String> = delivered
        .iter()
        .filter(|k| {
            !rows
                .iter()
                .any(|r| &r.key == *k && r.status == OutboxStatus::Sent)
        })
        .collect();
    assert!(unrecorded.is_empty(), "not recorded: {unrecorded:?}");
    if let Some(journal) = &watching.journal {
        assert_eq!(std::fs::read_to_string(journal).unwrap(), "");
    }
}

/// A daily message held by a relay outage re-checks its items when it finally goes out: work
/// completed meanwhile drops out, and a message with nothing left is withdrawn, not sent.
async fn a_daily_message_held_by_an_outage_drops_what_was_done_meanwhile(db: TestDb) {
    let mut smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) =
        support::notify::start_with(smtp.port(), &NotifyConfig::default(), vec![]);
    let local = |hour: i8| {
        jiff::civil::date(2027, 6, 1)
            .at(hour, 0, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp()
    };
    import_staff(
        &db.store,
        &ctx,
        &small_org(),
        "test",
        ctx.today(local(6)),
        local(6),
    )
    .await
    .unwrap();
    reconcile(&db.store, &ctx, local(6)).await.unwrap();
    smtp.stop().await;
    qaloop::notify::daily::decide(&db.store, &ctx, local(7))
        .await
        .unwrap();
    dispatcher.dispatch(&db.store, local(8)).await.unwrap();
    let open = |who: &'static str| {
        let store = db.store.clone();
        async move {
            store
                .assignments(&qaloop::store::AssignmentFilter {
                    statuses: vec![qaloop::domain::Status::Open],
                    assignees: vec![qaloop::domain::Assignee::parse(who)],
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    // While the relay is down, TM1 does all their work and TM2 their case file audit.
    for a in open("TM1").await {
        complete(
            &db.store,
            &ctx,
            a.id,
            &Actor::new("TM1", Via::Link),
            None,
            local(9),
        )
        .await
        .unwrap();
    }
    let tm2 = open("TM2").await;
    assert!(tm2.len() > 1, "TM2 has more than the audit: {tm2:?}");
    let audit = tm2.iter().find(|a| a.activity_id == "file-audit").unwrap();
    complete(
        &db.store,
        &ctx,
        audit.id,
        &Actor::new("TM2", Via::Link),
        None,
        local(9),
    )
    .await
    .unwrap();
    smtp.restart().await;
    dispatcher.dispatch(&db.store, local(10)).await.unwrap();

    let to = |address: &str| {
        smtp.received()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == address))
            .map(|m| m.data.replace("=\r\n", ""))
            .collect::<Vec<_>>()
    };
    assert!(
        to("tm1@example-council.test").is_empty(),
        "nothing left for TM1"
    );
    let tm2 = to("tm2@example-council.test");
    assert_eq!(tm2.len(), 1);
    assert!(!tm2[0].contains("Case file audit"), "{}", tm2[0]);
    let withdrawn = db
        .store
        .outbox(Some(OutboxStatus::Cancelled), 1000)
        .await
        .unwrap();
    assert!(
        withdrawn.iter().any(|r| r.recipient == "TM1"
            && ["digest", "catch_up", "welcome"].contains(&r.kind.as_str())),
        "{withdrawn:?}"
    );
}

/// Work created on Tuesday 1 June 2027 at 09:00 London: new-work notices due at once (with a
/// 09:00 delivery time, see [`at_nine`]).
const MORNING: &str = "2027-06-01T08:00:00Z";

/// Default settings with a delivery at 09:00, so work created at [`MORNING`] is announced at once.
fn at_nine() -> NotifyConfig {
    NotifyConfig {
        deliver_at: vec!["09:00".into()],
        ..NotifyConfig::default()
    }
}

/// The small organisation imported, live since April, and [`MORNING`]'s work created (and,
/// with channels, its notices queued). Returns that moment.
async fn morning_work(db: &TestDb, ctx: &qaloop::engine::Context) -> Timestamp {
    let now = at(MORNING);
    import_staff(&db.store, ctx, &small_org(), "test", ctx.today(now), now)
        .await
        .unwrap();
    live_since_april(db).await;
    reconcile(&db.store, ctx, now).await.unwrap();
    now
}

/// qaloop went live before the work these cases follow (go-live itself announces no work item by
/// item: see tests/messages.rs).
async fn live_since_april(db: &TestDb) {
    db.store
        .set_meta(qaloop::engine::reconcile::GO_LIVE_KEY, "2027-04-01")
        .await
        .unwrap();
}

async fn two_dispatchers_and_a_slow_relay_send_each_message_once(db: TestDb) {
    // Each message takes longer to answer than a lease lasts. The lease is renewed every third
    // of it; 600 ms leaves a loaded CI machine 400 ms of stall before a renewal is late (with
    // 200 ms this test failed now and then under load, not for a fault of the product).
    let smtp = SmtpServer::start(Options {
        answer_after: Duration::from_millis(700),
        ..Options::default()
    })
    .await;
    let config = at_nine();
    let lease = SignedDuration::from_millis(600);
    let (ctx, first) = start(smtp.port(), &config);
    let first = first.with_lease(lease);
    let (_, second) = start(smtp.port(), &config);
    let second = second.with_lease(lease);
    let now = morning_work(&db, &ctx).await;
    let queued = db
        .store
        .outbox(Some(OutboxStatus::Pending), 1000)
        .await
        .unwrap()
        .len();
    assert!(queued >= 6, "enough to outlive several leases: {queued}");
    let other = db.second_store().await;

    // The first sends; the second, on its own connection pool, keeps trying to claim meanwhile.
    let busy = std::sync::atomic::AtomicBool::new(true);
    let sender = async {
        first.dispatch(&db.store, now).await.unwrap();
        busy.store(false, std::sync::atomic::Ordering::SeqCst);
    };
    let started = std::time::Instant::now();
    let rival = async {
        while busy.load(std::sync::atomic::Ordering::SeqCst) {
            // The real time since the start, as the daemon's clock would give it.
            let later = now + SignedDuration::try_from(started.elapsed()).unwrap();
            second.dispatch(&other, later).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Without leases that hold, the two steal each other's rows and never finish.
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(sender, rival)
    })
    .await
    .expect("both dispatchers finished within a minute");

    let received = mail(&smtp);
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for (_, _, id) in &received {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "sent twice: {doubled:?}");
    assert_eq!(received.len(), queued, "every message once");
    let sent = db
        .store
        .outbox(Some(OutboxStatus::Sent), 1000)
        .await
        .unwrap();
    assert_eq!(sent.len(), queued);
}

async fn a_reminder_cancelled_while_it_is_failing_is_never_sent(db: TestDb) {
    let smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start(smtp.port(), &at_nine());
    let now = morning_work(&db, &ctx).await;
    let tm1 = |rows: &[qaloop::store::OutboxRow]| -> Vec<i64> {
        rows.iter()
            .filter(|r| r.recipient == "TM1")
            .map(|r| r.id)
            .collect()
    };

    // A dispatcher has claimed TM1's notices and is trying to send them to a relay that
    // answers "452 mailbox full" for now…
    let claimed = db
        .store
        .claim(now, now + SignedDuration::from_mins(5), 1000)
        .await
        .unwrap();
    let mine: Vec<_> = claimed.iter().filter(|r| r.recipient == "TM1").collect();
    assert!(!mine.is_empty());
    // …when TM1 completes the work they are about, which cancels them…
    for row in &mine {
        if let Some(id) = row.assignment_id {
            complete(
                &db.store,
                &ctx,
                id,
                &Actor::new("TM1", Via::Link),
                None,
                now,
            )
            .await
            .unwrap();
        }
    }
    // …and only then does the dispatcher record its failures.
    let retry_at: Timestamp = now + SignedDuration::from_mins(1);
    for row in &mine {
        db.store
            .mark_failed(
                row.id,
                row.claim.as_deref().unwrap(),
                retry_at,
                "452 mailbox full",
            )
            .await
            .unwrap();
    }

    let cancelled = db
        .store
        .outbox(Some(OutboxStatus::Cancelled), 1000)
        .await
        .unwrap();
    let failed = db
        .store
        .outbox(Some(OutboxStatus::Failed), 1000)
        .await
        .unwrap();
    for row in &mine {
        assert!(
            tm1(&cancelled).contains(&row.id),
            "row {} stays cancelled",
            row.id
        );
        assert!(!tm1(&failed).contains(&row.id));
    }
    // The relay accepts mail again later: nothing about the completed work goes out.
    dispatcher
        .dispatch(&db.store, now + SignedDuration::from_hours(2))
        .await
        .unwrap();
    assert!(
        !mail(&smtp)
            .iter()
            .any(|(to, _, _)| to == "tm1@example-council.test"),
        "never sent"
    );
}

async fn a_relay_down_over_a_weekend_loses_nothing_with_default_settings(db: TestDb) {
    let mut smtp = SmtpServer::start(Options::default()).await;
    let (ctx, dispatcher) = start(smtp.port(), &NotifyConfig::default());
    let local = |day: jiff::civil::Date, hour: i8| {
        day.at(hour, 0, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp()
    };
    // Friday 1 October 2027: a month and a quarter begin, so there is new work to announce.
    let friday = jiff::civil::date(2027, 10, 1);
    let monday = jiff::civil::date(2027, 10, 4);
    let start_at = local(friday, 15);
    import_staff(
        &db.store,
        &ctx,
        &small_org(),
        "test",
        ctx.today(start_at),
        start_at,
    )
    .await
    .unwrap();
    live_since_april(&db).await;
    // The relay goes down at 16:00 on Friday; the work (and its notices) appear then.
    smtp.stop().await;
    reconcile(&db.store, &ctx, local(friday, 16)).await.unwrap();
    let queued = db
        .store
        .outbox(Some(OutboxStatus::Pending), 1000)
        .await
        .unwrap()
        .len();
    assert!(queued > 0);

    // The daemon keeps dispatching every ten minutes all weekend and into Monday morning.
    let mut now = local(friday, 16);
    while now < local(monday, 10) {
        dispatcher.dispatch(&db.store, now).await.unwrap();
        now += SignedDuration::from_mins(10);
    }
    smtp.restart().await;
    while now < local(monday, 18) {
        dispatcher.dispatch(&db.store, now).await.unwrap();
        now += SignedDuration::from_mins(10);
    }

    assert!(
        db.store
            .outbox(Some(OutboxStatus::Dead), 1000)
            .await
            .unwrap()
            .is_empty(),
        "nothing dead"
    );
    let sent = db
        .store
        .outbox(Some(OutboxStatus::Sent), 1000)
        .await
        .unwrap();
    assert_eq!(sent.len(), queued, "everything delivered");
    assert!(
        sent.iter()
            .all(|r| r.sent_at.is_some_and(|t| ctx.today(t) == monday)),
        "on Monday"
    );
    let received = mail(&smtp);
    let ids: std::collections::HashSet<_> = received.iter().map(|(_, _, id)| id).collect();
    assert_eq!(ids.len(), received.len(), "once each");
}

/// A decision that read an assignment as open, then queued its notice after the completion had
/// committed (and cancelled what was queued then), leaves a pending row about finished work.
/// The claim leaves it behind; a row about no assignment, and one about open work, are claimed.
async fn a_claim_skips_a_row_about_work_completed_before_it_was_queued(db: TestDb) {
    // No channels: reconcile queues nothing, so the three rows below are all that is pending.
    let ctx = support::org::context();
    let now = morning_work(&db, &ctx).await;
    let open = db
        .store
        .assignments(&qaloop::store::AssignmentFilter {
            statuses: vec![qaloop::domain::Status::Open],
            assignees: vec![qaloop::domain::Assignee::Person("TM1".into())],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        open.len() >= 2,
        "TM1 has work to complete and work left open"
    );
    let (done, still_open) = (&open[0], &open[1]);
    complete(
        &db.store,
        &ctx,
        done.id,
        &Actor::new("TM1", Via::Link),
        None,
        now,
    )
    .await
    .unwrap();
    let row = |key: &str, assignment_id: Option<i64>| qaloop::store::NewOutbox {
        key: key.to_owned(),
        kind: "reminder".to_owned(),
        channel: "email".to_owned(),
        recipient: "TM1".to_owned(),
        assignment_id,
        context: "{}".to_owned(),
        not_before: now,
        suppressed: false,
    };
    db.store
        .enqueue(
            &[
                row("late:done", Some(done.id)),
                row("late:open", Some(still_open.id)),
                row("late:none", None),
            ],
            now,
        )
        .await
        .unwrap();

    let claimed = db
        .store
        .claim(now, now + SignedDuration::from_mins(5), 10)
        .await
        .unwrap();
    let mut keys: Vec<&str> = claimed.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["late:none", "late:open"]);
}
