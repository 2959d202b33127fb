//! Records kept with completed work (audits, moderations), on SQLite and PostgreSQL.

mod support;

use qaloop::domain::{Actor, ModerationOutcome, NewRecord, Refusal, Via};
use qaloop::engine::{CompleteError, complete_with_record, import_staff, reconcile};
use qaloop::store::AssignmentFilter;
use serde_json::json;
use support::org::{at, context, small_org};
use support::store::TestDb;

both_backends!(
    an_audits_actions_and_concerns_commit_with_it,
    an_audit_record_commits_with_its_completion_and_moderation,
    the_auditor_may_not_moderate_and_a_moderation_records_each_thread,
);

fn link(staff_id: &str) -> Actor {
    Actor::new(staff_id, Via::Link)
}

async fn audit_of_tm1(db: &TestDb) -> i64 {
    let ctx = context();
    let now = at("2027-06-01T06:00:00Z");
    import_staff(&db.store, &ctx, &small_org(), "test", ctx.today(now), now)
        .await
        .unwrap();
    reconcile(&db.store, &ctx, at("2027-06-01T07:00:00Z"))
        .await
        .unwrap();
    db.store
        .assignments(&AssignmentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.activity_id == "file-audit" && a.assignee == "TM1")
        .unwrap()
        .id
}

fn audit_record() -> NewRecord {
    NewRecord {
        form_id: "case-file-audit".into(),
        fields: json!({
            "case_reference": "CIN-0001",
            "overall_grade": "Good",
            "thread_planning": "Inadequate",
            "to_improve": "<script>alert('x')</script>",
        }),
        outcomes: vec![],
    }
}

async fn an_audit_record_commits_with_its_completion_and_moderation(db: TestDb) {
    let ctx = context();
    let id = audit_of_tm1(&db).await;
    let now = at("2027-06-10T10:00:00Z");

    let (done, triggered) = complete_with_record(
        &db.store,
        &ctx,
        id,
        &link("TM1"),
        None,
        Some(&audit_record()),
        now,
    )
    .await
    .unwrap();

    assert_eq!(done.completed_by.as_deref(), Some("TM1"));
    assert_eq!(triggered.len(), 1, "the moderation");
    let record = db.store.record(id).await.unwrap().unwrap();
    assert_eq!(record.form_id, "case-file-audit");
    assert_eq!(
        record.fields["to_improve"], "<script>alert('x')</script>",
        "stored verbatim"
    );
    assert_eq!(record.submitted_by, "TM1");
    assert_eq!(record.via, Via::Link);
    assert_eq!(record.submitted_at, now);
    let history = db.store.history(id).await.unwrap();
    let completed = history.iter().find(|h| h.event == "completed").unwrap();
    assert_eq!(completed.via, Via::Link);
    assert_eq!(completed.actor, "TM1");

    // A second submission is refused and changes nothing.
    let mut other = audit_record();
    other.fields = json!({ "overall_grade": "Outstanding" });
    let again = complete_with_record(
        &db.store,
        &ctx,
        id,
        &link("TM1"),
        None,
        Some(&other),
        at("2027-06-11T10:00:00Z"),
    )
    .await;
    assert!(
        matches!(again, Err(CompleteError::Refused(Refusal::NotOpen { .. }))),
        "{again:?}"
    );
    assert_eq!(
        db.store.record(id).await.unwrap().unwrap().fields["overall_grade"],
        "Good"
    );

    // Records are evidence: the database refuses to change them.
    assert!(
        db.execute_raw("UPDATE records SET fields = '{}'")
            .await
            .is_err()
    );
    assert!(db.execute_raw("DELETE FROM records").await.is_err());
}

async fn the_auditor_may_not_moderate_and_a_moderation_records_each_thread(db: TestDb) {
    let ctx = context();
    let id = audit_of_tm1(&db).await;
    let (_, triggered) = complete_with_record(
        &db.store,
        &ctx,
        id,
        &link("TM1"),
        None,
        Some(&audit_record()),
        at("2027-06-10T10:00:00Z"),
    )
    .await
    .unwrap();
    let moderation = triggered[0];
    let outcomes = vec![
        ModerationOutcome {
            moderation_id: moderation,
            audit_id: id,
            field: "overall_grade".into(),
            audit_grade: "Good".into(),
            agreed: true,
            moderated_grade: None,
        },
        ModerationOutcome {
            moderation_id: moderation,
            audit_id: id,
            field: "thread_planning".into(),
            audit_grade: "Inadequate".into(),
            agreed: false,
            moderated_grade: Some("Requires Improvement".into()),
        },
    ];
    let record = NewRecord {
        form_id: "moderation".into(),
        fields: json!({ "feedback": "Planning is better than that" }),
        outcomes: outcomes.clone(),
    };

    let own = complete_with_record(
        &db.store,
        &ctx,
        moderation,
        &link("TM1"),
        None,
        Some(&record),
        at("2027-06-11T10:00:00Z"),
    )
    .await;
    assert!(
        matches!(own, Err(CompleteError::Refused(Refusal::OwnWork { .. }))),
        "{own:?}"
    );
    assert!(own.unwrap_err().to_string().contains("own audit"));

    complete_with_record(
        &db.store,
        &ctx,
        moderation,
        &link("SL1"),
        None,
        Some(&record),
        at("2027-06-11T10:00:00Z"),
    )
    .await
    .unwrap();
    let mut stored = db.store.moderation_outcomes(id).await.unwrap();
    stored.sort_by(|a, b| a.field.cmp(&b.field));
    assert_eq!(stored, outcomes);
    assert!(
        db.execute_raw("DELETE FROM moderation_outcomes")
            .await
            .is_err()
    );
}

async fn an_audits_actions_and_concerns_commit_with_it(db: TestDb) {
    let ctx = context();
    let id = audit_of_tm1(&db).await;
    let mut record = audit_record();
    record.fields["urgent_concern"] = json!("yes");
    record.fields["health_concern"] = json!("no");
    record.fields["actions"] = json!([
        { "description": "Update the chronology", "owner": "P1", "due": "2027-06-24" },
        { "description": "Share the plan with the family", "owner": "TM1", "due": "2027-06-30" },
    ]);

    complete_with_record(
        &db.store,
        &ctx,
        id,
        &link("TM1"),
        None,
        Some(&record),
        at("2027-06-10T16:55:00Z"),
    )
    .await
    .unwrap();

    let actions = db
        .store
        .actions(&qaloop::store::ActionFilter {
            assignment_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap();
    let owners: Vec<(&str, &str, bool)> = actions
        .iter()
        .map(|a| (a.owner.as_str(), a.raised_by.as_str(), a.inadequate))
        .collect();
    assert_eq!(
        owners,
        [("P1", "TM1", true), ("TM1", "TM1", true)],
        "raised by the auditor; a thread graded Inadequate marks them"
    );
    let history = db.store.action_history(actions[0].id).await.unwrap();
    assert_eq!(
        (history[0].event.as_str(), history[0].via),
        ("raised", Via::Link)
    );

    let concerns = db.store.concerns(true).await.unwrap();
    assert_eq!(concerns.len(), 1, "urgent yes, health no");
    assert_eq!(concerns[0].case_reference, "CIN-0001");
    assert_eq!(concerns[0].kind, qaloop::domain::ConcernKind::Urgent);
    assert_eq!(concerns[0].raised_by, "TM1");
}
