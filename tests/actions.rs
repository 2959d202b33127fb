//! The actions tracker on SQLite and PostgreSQL: raising, the lifecycle, refusals that write
//! nothing, a leaver's hand-over, and history the database will not let anyone rewrite.

mod support;

use jiff::civil::{Date, date};
use qaloop::domain::{ActionChange, ActionError, ActionSource, ActionState, Actor, NewAction, Via};
use qaloop::engine::actions::{ActionsError, change, default_due, raise};
use qaloop::engine::import_staff;
use qaloop::store::{ActionFilter, Store};
use support::org::{at, context, small_org};
use support::store::TestDb;

both_backends!(
    an_action_goes_open_done_reopened_done_verified_with_history,
    bad_actions_are_refused_and_nothing_is_written,
    a_leavers_unverified_actions_go_to_their_manager,
    action_history_is_append_only,
);

fn cli(id: &str) -> Actor {
    Actor::new(id, Via::Cli)
}

fn new(owner: &str, raised_by: &str, due: Date) -> NewAction {
    NewAction {
        source: ActionSource::Audit,
        assignment_id: None,
        description: "Update the chronology and share it with the family".into(),
        owner: owner.into(),
        raised_by: raised_by.into(),
        due,
        inadequate: false,
    }
}

async fn import(store: &Store, now: &str) {
    let ctx = context();
    let now = at(now);
    import_staff(store, &ctx, &small_org(), "test", ctx.today(now), now)
        .await
        .unwrap();
}

async fn an_action_goes_open_done_reopened_done_verified_with_history(db: TestDb) {
    let ctx = context();
    import(&db.store, "2027-06-01T06:00:00Z").await;
    let now = at("2027-06-10T10:00:00Z");
    let ids = raise(
        &db.store,
        &ctx,
        &[new("P1", "TM1", date(2027, 6, 30))],
        &cli("TM1"),
        now,
    )
    .await
    .unwrap();
    let id = ids[0];

    // The raiser cannot verify what is not done; the owner says it is done.
    let early = change(
        &db.store,
        &ctx,
        id,
        &ActionChange::Verify { note: "ok".into() },
        &cli("TM1"),
        now,
    )
    .await;
    assert!(
        matches!(
            early,
            Err(ActionsError::Refused {
                error: ActionError::WrongState { .. },
                ..
            })
        ),
        "{early:?}"
    );
    let done = change(
        &db.store,
        &ctx,
        id,
        &ActionChange::Done {
            note: "Chronology updated".into(),
        },
        &cli("P1"),
        now,
    )
    .await
    .unwrap();
    assert_eq!(done.state, ActionState::Done);

    // The owner may not verify it; the raiser reopens it with a new date.
    let own = change(
        &db.store,
        &ctx,
        id,
        &ActionChange::Verify {
            note: "fine".into(),
        },
        &cli("P1"),
        now,
    )
    .await;
    assert!(
        matches!(
            own,
            Err(ActionsError::Refused {
                error: ActionError::NotAllowed { .. },
                ..
            })
        ),
        "{own:?}"
    );
    let reopened = change(
        &db.store,
        &ctx,
        id,
        &ActionChange::Reopen {
            due: date(2027, 7, 15),
            reason: "Not shared with the family".into(),
        },
        &cli("TM1"),
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        (reopened.state, reopened.due, reopened.reopened),
        (ActionState::Open, date(2027, 7, 15), 1)
    );

    // Done again; the raiser's manager verifies it.
    let later = at("2027-07-01T10:00:00Z");
    change(
        &db.store,
        &ctx,
        id,
        &ActionChange::Done {
            note: "Shared at the visit".into(),
        },
        &cli("P1"),
        later,
    )
    .await
    .unwrap();
    let verified = change(
        &db.store,
        &ctx,
        id,
        &ActionChange::Verify {
            note: "Seen on file".into(),
        },
        &cli("SL1"),
        later,
    )
    .await
    .unwrap();
    assert_eq!(verified.state, ActionState::Verified);
    assert_eq!(verified.verified_by.as_deref(), Some("SL1"));
    assert_eq!(verified.verified_at, Some(later));

    let history = db.store.action_history(id).await.unwrap();
    let lines: Vec<(&str, &str, Via)> = history
        .iter()
        .map(|h| (h.event.as_str(), h.actor.as_str(), h.via))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("raised", "TM1", Via::Cli),
            ("done", "P1", Via::Cli),
            ("reopened", "TM1", Via::Cli),
            ("done", "P1", Via::Cli),
            ("verified", "SL1", Via::Cli),
        ]
    );
    assert_eq!(
        history[2].detail,
        "due 2027-07-15: Not shared with the family"
    );

    // The tracker's filters.
    let unclosed = db
        .store
        .actions(&ActionFilter {
            states: vec![ActionState::Open, ActionState::Done],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(unclosed.is_empty());
}

async fn bad_actions_are_refused_and_nothing_is_written(db: TestDb) {
    let ctx = context();
    import(&db.store, "2027-06-01T06:00:00Z").await;
    let now = at("2027-06-10T10:00:00Z");
    let good = new("P1", "TM1", date(2027, 6, 30));

    for (bad, expected) in [
        (new("", "TM1", date(2027, 6, 30)), "an owner is required"),
        (
            new("GHOST", "TM1", date(2027, 6, 30)),
            "`GHOST` is not a current member of staff",
        ),
        (
            new("P1", "TM1", date(2027, 6, 9)),
            "the due date 2027-06-09 is in the past",
        ),
    ] {
        // A good action alongside a bad one: all or nothing.
        let result = raise(&db.store, &ctx, &[good.clone(), bad], &cli("TM1"), now).await;
        let message = result.unwrap_err().to_string();
        assert!(message.starts_with("action 2: "), "{message}");
        assert!(message.contains(expected), "{message}");
    }
    let all = db.store.actions(&ActionFilter::default()).await.unwrap();
    assert!(all.is_empty(), "nothing was written");
}

async fn a_leavers_unverified_actions_go_to_their_manager(db: TestDb) {
    let ctx = context();
    import(&db.store, "2027-06-01T06:00:00Z").await;
    let now = at("2027-06-10T10:00:00Z");
    let ids = raise(
        &db.store,
        &ctx,
        &[
            new("TM2", "SL1", date(2027, 6, 30)),
            new("TM2", "SL1", date(2027, 7, 30)),
        ],
        &cli("SL1"),
        now,
    )
    .await
    .unwrap();
    change(
        &db.store,
        &ctx,
        ids[1],
        &ActionChange::Done {
            note: "Done".into(),
        },
        &cli("TM2"),
        now,
    )
    .await
    .unwrap();
    change(
        &db.store,
        &ctx,
        ids[1],
        &ActionChange::Verify {
            note: "Checked".into(),
        },
        &cli("SL1"),
        now,
    )
    .await
    .unwrap();

    // TM2 leaves: the open action moves to SL1; the verified one stays as a record of who did it.
    let staff: Vec<_> = small_org()
        .into_iter()
        .filter(|p| p.staff_id != "TM2")
        .collect();
    let later = at("2027-06-20T09:00:00Z");
    import_staff(&db.store, &ctx, &staff, "test", ctx.today(later), later)
        .await
        .unwrap();

    assert_eq!(db.store.action(ids[0]).await.unwrap().owner, "SL1");
    assert_eq!(db.store.action(ids[1]).await.unwrap().owner, "TM2");
    let history = db.store.action_history(ids[0]).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.via, last.detail.as_str()),
        ("reassigned", Via::System, "from TM2 to SL1 (leaver)")
    );
}

async fn action_history_is_append_only(db: TestDb) {
    let ctx = context();
    import(&db.store, "2027-06-01T06:00:00Z").await;
    raise(
        &db.store,
        &ctx,
        &[new("P1", "TM1", date(2027, 6, 30))],
        &cli("TM1"),
        at("2027-06-10T10:00:00Z"),
    )
    .await
    .unwrap();
    assert!(
        db.execute_raw("UPDATE action_history SET actor = 'someone-else'")
            .await
            .is_err()
    );
    assert!(db.execute_raw("DELETE FROM action_history").await.is_err());
    assert_eq!(db.store.action_history(1).await.unwrap()[0].actor, "TM1");
}

#[test]
fn inadequate_audits_get_shorter_default_due_dates() {
    let ctx = context();
    // Thursday 10 June 2027: 20 working days is 8 July; 10 is 24 June.
    let today = date(2027, 6, 10);
    assert_eq!(default_due(&ctx, today, false), date(2027, 7, 8));
    assert_eq!(default_due(&ctx, today, true), date(2027, 6, 24));
}
