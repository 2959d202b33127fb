//! Engine and storage behaviour, each case run on SQLite and PostgreSQL.

mod support;

use jiff::civil::date;
use qaloop::domain::{Actor, Refusal, Status, Via};
use qaloop::engine::{CompleteError, cancel, complete, import_staff, reassign, reconcile};
use qaloop::store::{AssignmentFilter, Store};
use support::org::{at, context, person, small_org};
use support::store::TestDb;

/// Someone acting through the CLI.
fn cli(staff_id: &str) -> Actor {
    Actor::new(staff_id, Via::Cli)
}

/// Imports the small organisation at `now`.
async fn import(store: &Store, records: &[qaloop::org::StaffRecord], now: &str) {
    let ctx = context();
    let now = at(now);
    import_staff(store, &ctx, records, "test", ctx.today(now), now)
        .await
        .unwrap();
}

async fn all(store: &Store) -> Vec<qaloop::domain::Assignment> {
    store
        .assignments(&AssignmentFilter::default())
        .await
        .unwrap()
}

fn keys(rows: &[qaloop::domain::Assignment]) -> Vec<(String, String, String)> {
    let mut k: Vec<_> = rows
        .iter()
        .map(|a| {
            (
                a.activity_id.clone(),
                a.period_label.clone(),
                a.slot.clone(),
            )
        })
        .collect();
    k.sort();
    k
}

both_backends!(
    reconcile_is_idempotent,
    first_run_starts_from_the_current_periods,
    catch_up_after_downtime_creates_missed_work_once,
    configured_start_date_backfills_from_there,
    concurrent_reconciles_create_no_duplicates,
    leavers_work_moves_up_and_starters_wait_for_the_next_period,
    completing_a_file_audit_creates_its_moderation,
    only_the_right_people_may_complete,
    periods_open_at_local_midnight_across_clock_changes,
    a_year_of_daily_ticks_creates_exactly_the_schedule,
    history_is_append_only,
    work_created_late_for_a_leaver_goes_to_their_manager_with_a_reason,
    reassign_and_cancel_follow_the_rules_and_record_who_and_how,
    concurrent_staff_imports_apply_each_change_once,
);

async fn concurrent_staff_imports_apply_each_change_once(db: TestDb) {
    // Three `tick`s started together on a new database, each with its own connection pool.
    let ctx = context();
    let (second, third) = (db.second_store().await, db.second_store().await);
    let now = at("2027-06-01T06:00:00Z");
    let today = ctx.today(now);
    let staff = small_org();
    let (a, b, c) = tokio::join!(
        import_staff(&db.store, &ctx, &staff, "tick-1", today, now),
        import_staff(&second, &ctx, &staff, "tick-2", today, now),
        import_staff(&third, &ctx, &staff, "tick-3", today, now),
    );
    let joined: usize = [a, b, c]
        .into_iter()
        .map(|report| report.unwrap().joined.len())
        .sum();
    assert_eq!(
        joined,
        staff.len(),
        "each person joined once, by one of them"
    );

    let history = db.store.staff_history().await.unwrap();
    assert_eq!(
        history.len(),
        staff.len(),
        "one history row each: {history:?}"
    );
    assert!(history.iter().all(|(_, event, _, _)| event == "joined"));

    // A leaver imported twice at once moves their work once.
    reconcile(&db.store, &ctx, at("2027-06-01T07:00:00Z"))
        .await
        .unwrap();
    let without_tm2: Vec<_> = staff.into_iter().filter(|p| p.staff_id != "TM2").collect();
    let later = at("2027-06-10T06:00:00Z");
    let (a, b) = tokio::join!(
        import_staff(
            &db.store,
            &ctx,
            &without_tm2,
            "tick-1",
            ctx.today(later),
            later
        ),
        import_staff(
            &second,
            &ctx,
            &without_tm2,
            "tick-2",
            ctx.today(later),
            later
        ),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.left.len() + b.left.len(), 1);
    assert_eq!(
        a.reassigned.len() + b.reassigned.len(),
        all(&db.store)
            .await
            .iter()
            .filter(|x| x.slot == "TM2")
            .count(),
        "TM2's work moved once"
    );
}

async fn reassign_and_cancel_follow_the_rules_and_record_who_and_how(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-06-01T06:00:00Z").await;
    reconcile(&db.store, &ctx, at("2027-06-01T07:00:00Z"))
        .await
        .unwrap();
    let audit = all(&db.store)
        .await
        .into_iter()
        .find(|a| a.activity_id == "file-audit" && a.assignee == "TM1")
        .unwrap();
    let now = at("2027-06-10T10:00:00Z");

    // A peer may not take it; nobody can be given work who is not on the staff list.
    let peer = reassign(&db.store, &ctx, audit.id, "TM2", &cli("TM2"), now).await;
    assert!(
        matches!(
            peer,
            Err(CompleteError::Refused(Refusal::NotAllowed { .. }))
        ),
        "{peer:?}"
    );
    let ghost = reassign(&db.store, &ctx, audit.id, "GHOST", &cli("SL1"), now).await;
    assert!(
        matches!(
            ghost,
            Err(CompleteError::Refused(Refusal::UnknownPerson(_)))
        ),
        "{ghost:?}"
    );

    // The line manager moves it to a peer; only an admin may cancel it.
    let moved = reassign(&db.store, &ctx, audit.id, "TM2", &cli("SL1"), now)
        .await
        .unwrap();
    assert_eq!(moved.assignee, "TM2");
    assert_eq!(moved.slot, "TM1", "the slot never changes");
    let not_admin = cancel(
        &db.store,
        &ctx,
        audit.id,
        &cli("SL1"),
        "no longer needed",
        now,
    )
    .await;
    assert!(matches!(
        not_admin,
        Err(CompleteError::Refused(Refusal::NotAllowed { .. }))
    ));
    let cancelled = cancel(&db.store, &ctx, audit.id, &cli("QA"), "case closed", now)
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    let again = cancel(&db.store, &ctx, audit.id, &cli("QA"), "twice", now).await;
    assert!(matches!(
        again,
        Err(CompleteError::Refused(Refusal::NotOpen { .. }))
    ));

    let history = db.store.history(audit.id).await.unwrap();
    let lines: Vec<(&str, &str, Via)> = history
        .iter()
        .map(|h| (h.event.as_str(), h.actor.as_str(), h.via))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("created", "system:reconcile", Via::System),
            ("reassigned", "SL1", Via::Cli),
            ("cancelled", "QA", Via::Cli),
        ]
    );
    assert_eq!(history[1].detail, "from TM1 to TM2");

    // Reconcile does not recreate moved or cancelled work.
    reconcile(&db.store, &ctx, at("2027-06-11T07:00:00Z"))
        .await
        .unwrap();
    let audits = all(&db.store)
        .await
        .into_iter()
        .filter(|a| a.activity_id == "file-audit" && a.period_label == "2027-06")
        .count();
    assert_eq!(audits, 2);
}

async fn reconcile_is_idempotent(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-06-15T09:00:00Z").await;

    let first = reconcile(&db.store, &ctx, at("2027-06-15T09:00:00Z"))
        .await
        .unwrap();
    let again = reconcile(&db.store, &ctx, at("2027-06-15T09:00:00Z"))
        .await
        .unwrap();
    let later = reconcile(&db.store, &ctx, at("2027-06-15T10:00:00Z"))
        .await
        .unwrap();

    assert!(first.created > 0);
    assert_eq!((again.created, later.created), (0, 0));
    let (assignments, history) = db.store.counts().await.unwrap();
    assert_eq!(assignments as usize, first.created);
    assert_eq!(
        history, assignments,
        "one `created` history row per assignment"
    );
}

async fn first_run_starts_from_the_current_periods(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-06-15T09:00:00Z").await;

    reconcile(&db.store, &ctx, at("2027-06-15T09:00:00Z"))
        .await
        .unwrap();

    let rows = all(&db.store).await;
    let periods: std::collections::BTreeSet<&str> =
        rows.iter().map(|a| a.period_label.as_str()).collect();
    // June 2027 (monthly), Apr–Jun (Q1), Jun–Jul (B2), the 2027-28 year: nothing from May.
    assert_eq!(
        periods.into_iter().collect::<Vec<_>>(),
        vec!["2027-06", "2027-28", "2027-28 B2", "2027-28 Q1"]
    );
    let file_audits: Vec<_> = rows
        .iter()
        .filter(|a| a.activity_id == "file-audit")
        .collect();
    assert_eq!(file_audits.len(), 2, "one per team manager");
    assert!(file_audits.iter().all(|a| a.due == date(2027, 6, 30)));
    let perf = rows
        .iter()
        .find(|a| a.activity_id == "performance-data")
        .unwrap();
    assert_eq!(perf.assignee, "role:performance_unit");
    assert_eq!(perf.due, date(2027, 6, 7), "5th working day of June 2027");
}

async fn catch_up_after_downtime_creates_missed_work_once(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-06-15T09:00:00Z").await;
    reconcile(&db.store, &ctx, at("2027-06-15T09:00:00Z"))
        .await
        .unwrap();

    // Down from mid-June to 20 August.
    let catch_up = reconcile(&db.store, &ctx, at("2027-08-20T09:00:00Z"))
        .await
        .unwrap();
    let again = reconcile(&db.store, &ctx, at("2027-08-20T09:05:00Z"))
        .await
        .unwrap();

    assert_eq!(again.created, 0);
    let rows = all(&db.store).await;
    let audits: Vec<&str> = {
        let mut v: Vec<&str> = rows
            .iter()
            .filter(|a| a.activity_id == "file-audit" && a.slot == "TM1")
            .map(|a| a.period_label.as_str())
            .collect();
        v.sort();
        v
    };
    assert_eq!(audits, vec!["2027-06", "2027-07", "2027-08"]);
    let july = rows
        .iter()
        .find(|a| a.activity_id == "file-audit" && a.period_label == "2027-07" && a.slot == "TM1")
        .unwrap();
    assert!(july.created_late);
    assert_eq!(catch_up.created, catch_up.created_late);
    // Q2 (Jul–Sep) supervision audits arrive once.
    let q2 = rows
        .iter()
        .filter(|a| a.activity_id == "supervision-audit" && a.period_label == "2027-28 Q2")
        .count();
    assert_eq!(q2, 1);
}

async fn configured_start_date_backfills_from_there(db: TestDb) {
    let mut ctx = context();
    ctx.start_date = Some(date(2027, 4, 1));
    import(&db.store, &small_org(), "2027-06-15T09:00:00Z").await;

    reconcile(&db.store, &ctx, at("2027-06-15T09:00:00Z"))
        .await
        .unwrap();

    let months: std::collections::BTreeSet<String> = all(&db.store)
        .await
        .into_iter()
        .filter(|a| a.activity_id == "file-audit")
        .map(|a| a.period_label)
        .collect();
    assert_eq!(
        months.into_iter().collect::<Vec<_>>(),
        vec!["2027-04", "2027-05", "2027-06"]
    );
}

async fn concurrent_reconciles_create_no_duplicates(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-04-01T06:00:00Z").await;
    let other = db.second_store().await;

    for day in [
        "2027-04-01T07:30:00Z",
        "2027-05-03T07:30:00Z",
        "2027-07-01T07:30:00Z",
        "2027-10-01T07:30:00Z",
    ] {
        let (a, b) = tokio::join!(
            reconcile(&db.store, &ctx, at(day)),
            reconcile(&other, &ctx, at(day))
        );
        a.unwrap();
        b.unwrap();
    }

    let rows = all(&db.store).await;
    let unique: std::collections::HashSet<_> = keys(&rows).into_iter().collect();
    assert_eq!(
        unique.len(),
        rows.len(),
        "no duplicate (activity, period, slot)"
    );
    let (assignments, history) = db.store.counts().await.unwrap();
    assert_eq!(
        history, assignments,
        "history written once per assignment created"
    );

    // The same sequence on one process gives the same rows.
    let single = TestDb::sqlite().await;
    import(&single.store, &small_org(), "2027-04-01T06:00:00Z").await;
    for day in [
        "2027-04-01T07:30:00Z",
        "2027-05-03T07:30:00Z",
        "2027-07-01T07:30:00Z",
        "2027-10-01T07:30:00Z",
    ] {
        reconcile(&single.store, &ctx, at(day)).await.unwrap();
    }
    assert_eq!(keys(&all(&single.store).await), keys(&rows));
}

async fn leavers_work_moves_up_and_starters_wait_for_the_next_period(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-06-01T06:00:00Z").await;
    reconcile(&db.store, &ctx, at("2027-06-01T07:00:00Z"))
        .await
        .unwrap();

    // 20 June: TM2 leaves, TM3 starts (no start date given).
    let mut staff: Vec<_> = small_org()
        .into_iter()
        .filter(|p| p.staff_id != "TM2")
        .collect();
    staff.push(person("TM3", &["team_manager"], Some("SL1")));
    let now = at("2027-06-20T09:00:00Z");
    let report = import_staff(&db.store, &ctx, &staff, "test", ctx.today(now), now)
        .await
        .unwrap();

    assert_eq!(report.left, vec!["TM2"]);
    assert_eq!(report.joined, vec!["TM3"]);
    assert_eq!(
        report.reassigned.len(),
        2,
        "TM2's file audit and direct observation"
    );
    assert!(
        report
            .reassigned
            .iter()
            .all(|(_, from, to)| from == "TM2" && to == "SL1")
    );
    let moved = db.store.assignment(report.reassigned[0].0).await.unwrap();
    assert_eq!(
        (moved.slot.as_str(), moved.assignee.to_string().as_str()),
        ("TM2", "SL1")
    );
    let history = db.store.history(moved.id).await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.event.as_str()).collect::<Vec<_>>(),
        vec!["created", "reassigned"]
    );
    assert_eq!(history[1].actor, "test");

    // Nothing for TM3 in June; July work for TM1 and TM3, none for TM2.
    reconcile(&db.store, &ctx, at("2027-06-25T09:00:00Z"))
        .await
        .unwrap();
    reconcile(&db.store, &ctx, at("2027-07-01T07:00:00Z"))
        .await
        .unwrap();
    let audits: Vec<(String, String)> = all(&db.store)
        .await
        .into_iter()
        .filter(|a| a.activity_id == "file-audit")
        .map(|a| (a.period_label, a.assignee.to_string()))
        .collect();
    assert!(!audits.contains(&("2027-06".into(), "TM3".into())));
    assert!(audits.contains(&("2027-07".into(), "TM3".into())));
    assert!(audits.contains(&("2027-07".into(), "TM1".into())));
    assert!(
        !audits
            .iter()
            .any(|(p, a)| p == "2027-07" && (a == "TM2" || a == "SL1"))
    );
}

async fn completing_a_file_audit_creates_its_moderation(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2026-12-01T06:00:00Z").await;
    reconcile(&db.store, &ctx, at("2026-12-01T07:00:00Z"))
        .await
        .unwrap();
    let audit = all(&db.store)
        .await
        .into_iter()
        .find(|a| a.activity_id == "file-audit" && a.assignee == "TM1")
        .unwrap();

    // Completed Monday 21 December 2026, 15:00 London.
    let (done, triggered) = complete(
        &db.store,
        &ctx,
        audit.id,
        &cli("TM1"),
        Some("graded good"),
        at("2026-12-21T15:00:00Z"),
    )
    .await
    .unwrap();

    assert_eq!(done.status, Status::Done);
    assert_eq!(done.completed_by.as_deref(), Some("TM1"));
    assert_eq!(triggered.len(), 1);
    let moderation = db.store.assignment(triggered[0]).await.unwrap();
    assert_eq!(moderation.activity_id, "audit-moderation");
    assert_eq!(moderation.assignee, "SL1", "the completer's line manager");
    assert_eq!(moderation.subject.as_deref(), Some("TM1"));
    assert_eq!(moderation.trigger_id, Some(audit.id));
    assert_eq!(moderation.period_label, "2026-12");
    assert_eq!(
        moderation.due,
        date(2027, 1, 7),
        "10th working day after, skipping 25, 28 Dec and 1 Jan"
    );

    // Completing again is refused; reconcile does not duplicate the moderation.
    let again = complete(
        &db.store,
        &ctx,
        audit.id,
        &cli("TM1"),
        None,
        at("2026-12-21T15:05:00Z"),
    )
    .await;
    assert!(matches!(
        again,
        Err(CompleteError::Refused(Refusal::NotOpen {
            status: Status::Done,
            ..
        }))
    ));
    reconcile(&db.store, &ctx, at("2026-12-22T07:00:00Z"))
        .await
        .unwrap();
    let moderations = all(&db.store)
        .await
        .into_iter()
        .filter(|a| a.activity_id == "audit-moderation")
        .count();
    assert_eq!(moderations, 1);
}

async fn only_the_right_people_may_complete(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-06-01T06:00:00Z").await;
    reconcile(&db.store, &ctx, at("2027-06-01T07:00:00Z"))
        .await
        .unwrap();
    let rows = all(&db.store).await;
    let find = |activity: &str, assignee: &str| {
        rows.iter()
            .find(|a| a.activity_id == activity && a.assignee == assignee)
            .unwrap()
            .id
    };
    let now = at("2027-06-10T10:00:00Z");

    // A peer may not; a practitioner may not; someone unknown may not.
    let peer = complete(
        &db.store,
        &ctx,
        find("file-audit", "TM1"),
        &cli("TM2"),
        None,
        now,
    )
    .await;
    assert!(
        matches!(
            peer,
            Err(CompleteError::Refused(Refusal::NotAllowed { .. }))
        ),
        "{peer:?}"
    );
    let junior = complete(
        &db.store,
        &ctx,
        find("file-audit", "TM1"),
        &cli("P1"),
        None,
        now,
    )
    .await;
    assert!(matches!(
        junior,
        Err(CompleteError::Refused(Refusal::NotAllowed { .. }))
    ));
    let stranger = complete(
        &db.store,
        &ctx,
        find("file-audit", "TM1"),
        &cli("NOBODY"),
        None,
        now,
    )
    .await;
    assert!(matches!(
        stranger,
        Err(CompleteError::Refused(Refusal::UnknownPerson(_)))
    ));

    // The manager's manager may; a QA admin may; any holder of a role may complete role work.
    complete(
        &db.store,
        &ctx,
        find("file-audit", "TM1"),
        &cli("HOS"),
        None,
        now,
    )
    .await
    .unwrap();
    complete(
        &db.store,
        &ctx,
        find("direct-observation", "TM2"),
        &cli("QA"),
        None,
        now,
    )
    .await
    .unwrap();
    complete(
        &db.store,
        &ctx,
        find("performance-data", "role:performance_unit"),
        &cli("PU"),
        None,
        now,
    )
    .await
    .unwrap();
    let not_holder = complete(
        &db.store,
        &ctx,
        find("complaints-report", "role:directorate_lead"),
        &cli("PU"),
        None,
        now,
    )
    .await;
    assert!(matches!(
        not_holder,
        Err(CompleteError::Refused(Refusal::NotAllowed { .. }))
    ));
}

async fn periods_open_at_local_midnight_across_clock_changes(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-03-01T06:00:00Z").await;
    reconcile(&db.store, &ctx, at("2027-03-01T07:00:00Z"))
        .await
        .unwrap();
    let april =
        |rows: &[qaloop::domain::Assignment]| rows.iter().any(|a| a.period_label == "2027-04");
    let november =
        |rows: &[qaloop::domain::Assignment]| rows.iter().any(|a| a.period_label == "2027-11");

    // 1 April 2027 is in BST (clocks went forward 28 March): midnight local is 23:00 UTC.
    reconcile(&db.store, &ctx, at("2027-03-31T22:59:59Z"))
        .await
        .unwrap();
    assert!(!april(&all(&db.store).await), "still 31 March in London");
    reconcile(&db.store, &ctx, at("2027-03-31T23:00:00Z"))
        .await
        .unwrap();
    assert!(april(&all(&db.store).await), "00:00 BST on 1 April");

    // 1 November 2027 is in GMT again (clocks went back 31 October): midnight local is 00:00 UTC.
    reconcile(&db.store, &ctx, at("2027-10-31T23:59:59Z"))
        .await
        .unwrap();
    assert!(!november(&all(&db.store).await));
    reconcile(&db.store, &ctx, at("2027-11-01T00:00:00Z"))
        .await
        .unwrap();
    assert!(november(&all(&db.store).await));

    // Overdue from 00:00 local after the due date: October's file audit is due Friday 29
    // October, still in BST, so it turns overdue at 23:00 UTC.
    let overdue_at = |now: &str| {
        let filter = AssignmentFilter {
            overdue_on: Some(ctx.today(at(now))),
            activity_id: Some("file-audit".into()),
            ..Default::default()
        };
        let store = db.store.clone();
        async move {
            store
                .assignments(&filter)
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.period_label == "2027-10")
                .count()
        }
    };
    assert_eq!(overdue_at("2027-10-29T22:59:59Z").await, 0);
    assert_eq!(overdue_at("2027-10-29T23:00:00Z").await, 2);
}

async fn a_year_of_daily_ticks_creates_exactly_the_schedule(db: TestDb) {
    let mut ctx = context();
    ctx.start_date = Some(date(2027, 4, 1));
    import(&db.store, &small_org(), "2027-03-31T12:00:00Z").await;

    let mut day = date(2027, 4, 1);
    while day <= date(2028, 3, 31) {
        let now = day
            .at(7, 30, 0, 0)
            .to_zoned(ctx.tz.clone())
            .unwrap()
            .timestamp();
        reconcile(&db.store, &ctx, now).await.unwrap();
        day = day.tomorrow().unwrap();
    }

    let rows = all(&db.store).await;
    let count = |id: &str| rows.iter().filter(|a| a.activity_id == id).count();
    assert_eq!(count("file-audit"), 24, "2 team managers × 12 months");
    assert_eq!(count("performance-data"), 12);
    assert_eq!(count("locality-overview-report"), 12);
    assert_eq!(count("closing-the-loop-review"), 6);
    assert_eq!(count("supervision-audit"), 4);
    assert_eq!(count("dip-sampling"), 4);
    assert_eq!(count("private-fostering-review"), 1);
    assert!(
        rows.iter().all(|a| !a.created_late),
        "a daemon ticking daily is never late"
    );
    assert!(
        rows.iter().all(|a| ctx.calendar.is_working_day(a.due)),
        "every due date is a working day"
    );
}

async fn history_is_append_only(db: TestDb) {
    let ctx = context();
    import(&db.store, &small_org(), "2027-06-01T06:00:00Z").await;
    reconcile(&db.store, &ctx, at("2027-06-01T07:00:00Z"))
        .await
        .unwrap();

    let update = db
        .execute_raw("UPDATE assignment_history SET actor = 'someone-else'")
        .await;
    let delete = db.execute_raw("DELETE FROM assignment_history").await;

    assert!(update.is_err(), "the database refuses to change history");
    assert!(delete.is_err(), "the database refuses to delete history");
    let (assignments, history) = db.store.counts().await.unwrap();
    assert_eq!(history, assignments);
}

async fn work_created_late_for_a_leaver_goes_to_their_manager_with_a_reason(db: TestDb) {
    let mut ctx = context();
    ctx.start_date = Some(date(2027, 6, 1));
    import(&db.store, &small_org(), "2027-05-20T09:00:00Z").await;
    // TM2 leaves on 20 June; qaloop was not running in June until the 25th.
    let staff: Vec<_> = small_org()
        .into_iter()
        .filter(|p| p.staff_id != "TM2")
        .collect();
    import(&db.store, &staff, "2027-06-20T09:00:00Z").await;

    reconcile(&db.store, &ctx, at("2027-06-25T09:00:00Z"))
        .await
        .unwrap();

    let june = all(&db.store)
        .await
        .into_iter()
        .find(|a| a.activity_id == "file-audit" && a.slot == "TM2")
        .expect("TM2 was active when June began");
    assert_eq!(june.assignee, "SL1");
    assert!(
        !june.created_late,
        "the database's first pass is its go-live, and late means late, not first run"
    );
    let history = db.store.history(june.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].detail, "TM2 has left; assigned to SL1");
}
