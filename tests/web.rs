//! The pages over real loopback HTTP, on SQLite and PostgreSQL: signed links, forms, CSRF,
//! headers, moderation, and that every write goes through the engine with `via = link`.

mod support;

use std::sync::Arc;

use jiff::Timestamp;
use qaloop::clock::FixedClock;
use qaloop::domain::{Actor, NewRecord, Via};
use qaloop::engine::{Context, complete_with_record, import_staff, reconcile};
use qaloop::links::{Key, LinkKeys, Purpose};
use qaloop::notify::ChannelSettings;
use qaloop::notify::router::Router;
use qaloop::notify::settings::NotifyConfig;
use qaloop::store::{AssignmentFilter, Store};
use qaloop::web::{AppState, app, serve, templates};
use reqwest::StatusCode;
use serde_json::json;
use support::org::{at, context, small_org};
use support::store::TestDb;

both_backends!(
    an_audit_is_recorded_through_its_link_once,
    required_fields_and_bad_values_come_back_with_an_error_summary,
    bad_links_are_refused_and_nothing_is_written,
    forms_need_their_csrf_token_and_get_never_writes,
    every_response_carries_the_security_headers,
    managers_and_admins_may_complete_peers_may_not,
    a_moderation_is_refused_to_its_auditor_and_its_outcome_reaches_the_auditor,
    my_work_shows_open_work_and_reports_overdue_work,
    a_fresh_link_is_queued_only_for_real_people_and_the_answer_is_the_same,
    a_concern_is_acknowledged_through_its_link_once,
    a_health_concern_needs_the_health_service_answer,
    the_tracker_is_scoped_to_the_viewers_service,
    the_tracker_csv_is_spreadsheet_safe_and_an_attachment,
    the_concern_and_tracker_pages_carry_the_security_headers,
);

/// A running app on a loopback port over a fresh database.
struct App {
    base: String,
    store: Store,
    ctx: Arc<Context>,
    keys: LinkKeys,
    clock: Arc<FixedClock>,
    http: reqwest::Client,
    _db: TestDb,
}

fn keys() -> LinkKeys {
    LinkKeys::new(Key::new(vec![42; 32]).unwrap(), None, 30)
}

/// Imports the small organisation, creates June 2027's work, and serves the pages at
/// 10 June 2027 (the clock is fixed; tests move it).
async fn spawn_app(db: TestDb) -> App {
    let mut ctx = context();
    let channel: ChannelSettings = toml::from_str(
        "kind = \"file\"\nname = \"mail\"\ndir = \"out\"\nfrom = \"qa@example-council.test\"\n",
    )
    .unwrap();
    ctx.announcer = Some(Arc::new(
        Router::new(
            &NotifyConfig::default(),
            &[channel],
            "Test Council",
            ctx.tz.clone(),
            vec![],
        )
        .with_links(keys()),
    ));
    let now = at("2027-06-01T06:00:00Z");
    import_staff(&db.store, &ctx, &small_org(), "test", ctx.today(now), now)
        .await
        .unwrap();
    reconcile(&db.store, &ctx, at("2027-06-01T07:00:00Z"))
        .await
        .unwrap();
    let ctx = Arc::new(ctx);
    let clock = Arc::new(FixedClock::new(at("2027-06-10T10:00:00Z")));
    let state = Arc::new(AppState {
        store: db.store.clone(),
        ctx: ctx.clone(),
        keys: keys(),
        clock: clock.clone(),
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
    App {
        base,
        store: db.store.clone(),
        ctx,
        keys: keys(),
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap(),
        _db: db,
    }
}

/// `application/x-www-form-urlencoded` without another dependency.
fn encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl App {
    fn now(&self) -> Timestamp {
        qaloop::clock::Clock::now(self.clock.as_ref())
    }

    async fn work_of(&self, activity: &str, assignee: &str) -> qaloop::domain::Assignment {
        self.store
            .assignments(&AssignmentFilter::default())
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.activity_id == activity && a.assignee == assignee)
            .unwrap()
    }

    fn item_url(&self, staff: &str, id: i64) -> (String, String) {
        let token = self
            .keys
            .sign_from(staff, Purpose::Item, Some(id), self.now());
        (format!("{}/a/{id}?t={token}", self.base), token)
    }

    async fn get(&self, url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let r = self.http.get(url).send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, headers, r.text().await.unwrap())
    }

    async fn post(&self, url: &str, pairs: &[(&str, &str)]) -> (StatusCode, String) {
        let r = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(pairs))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// A complete, valid case file audit (one Inadequate thread, one action).
fn audit_answers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("case_reference", "CIN-004512"),
        ("overall_grade", "Good"),
        ("thread_assessment", "Good"),
        ("thread_planning", "Inadequate"),
        ("thread_chronology", "Good"),
        ("thread_supervision", "Outstanding"),
        ("thread_childs_voice", "Requires Improvement"),
        ("thread_parent_engagement", "Good"),
        ("child_asked", "yes"),
        ("child_view", "Wants more time with the worker"),
        ("family_asked", "no"),
        ("went_well", "<script>alert('x')</script> & timely visits"),
        ("to_improve", "The plan"),
        ("feedback_given", "yes"),
        ("feedback_date", "2027-06-09"),
        ("urgent_concern", "no"),
        ("health_concern", "no"),
        ("actions.0.description", "Update the plan"),
        ("actions.0.owner", "P1"),
        ("actions.0.due", "2027-07-01"),
    ]
}

fn with_csrf<'a>(csrf: &'a str, answers: Vec<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("csrf", csrf)];
    all.extend(answers);
    all
}

async fn an_audit_is_recorded_through_its_link_once(db: TestDb) {
    let app = spawn_app(db).await;
    let audit = app.work_of("file-audit", "TM1").await;
    let (url, token) = app.item_url("TM1", audit.id);

    let (status, _, page) = app.get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<html lang=\"en-GB\">"));
    assert!(page.contains("Never type a child's name"));
    assert!(page.contains("<label class=\"label\" for=\"case_reference\">"));
    let csrf = app.keys.csrf(&token);
    assert!(page.contains(&csrf), "the form carries its CSRF token");

    let (status, page) = app.post(&url, &with_csrf(&csrf, audit_answers())).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Case file audit completed"));
    assert!(page.contains("asked to moderate"));

    let record = app.store.record(audit.id).await.unwrap().unwrap();
    assert_eq!(
        record.fields["went_well"], "<script>alert('x')</script> & timely visits",
        "stored verbatim"
    );
    assert_eq!(record.fields["actions"][0]["owner"], "P1");
    assert_eq!(
        (record.via, record.submitted_by.as_str()),
        (Via::Link, "TM1")
    );
    let history = app.store.history(audit.id).await.unwrap();
    let done = history.iter().find(|h| h.event == "completed").unwrap();
    assert_eq!((done.via, done.actor.as_str()), (Via::Link, "TM1"));
    let moderation = app.work_of("audit-moderation", "SL1").await;
    assert_eq!(moderation.trigger_id, Some(audit.id));

    // The page now shows who did it and the record, escaped.
    let (_, _, page) = app.get(&url).await;
    assert!(
        page.contains("Completed by TM1 on 10 June 2027 at 11:00"),
        "{page}"
    );
    assert!(page.contains("&lt;script&gt;alert("), "escaped");
    assert!(!page.contains("<script>"), "never raw");
    assert!(!page.contains("name=\"csrf\""), "no form on done work");

    // A second submission changes nothing.
    let mut second = audit_answers();
    second[1] = ("overall_grade", "Inadequate");
    let (status, page) = app.post(&url, &with_csrf(&csrf, second)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("already completed"));
    assert_eq!(
        app.store.record(audit.id).await.unwrap().unwrap().fields["overall_grade"],
        "Good"
    );
}

async fn required_fields_and_bad_values_come_back_with_an_error_summary(db: TestDb) {
    let app = spawn_app(db).await;
    let audit = app.work_of("file-audit", "TM1").await;
    let (url, token) = app.item_url("TM1", audit.id);
    let csrf = app.keys.csrf(&token);
    let mut answers: Vec<_> = audit_answers()
        .into_iter()
        .filter(|(k, _)| *k != "went_well")
        .collect();
    answers[0] = ("case_reference", "Jane Smith");
    answers[1] = ("overall_grade", "Brilliant");

    let (status, page) = app.post(&url, &with_csrf(&csrf, answers)).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("<title>Error: "));
    assert!(page.contains("There is a problem"));
    for field in ["case_reference", "overall_grade", "went_well"] {
        assert!(
            page.contains(&format!("href=\"#{field}\"")),
            "{field}: {page}"
        );
    }
    assert!(page.contains("Enter what went well"));
    assert!(
        page.contains("value=\"Requires Improvement\" checked"),
        "answers kept"
    );
    assert_eq!(
        app.store.assignment(audit.id).await.unwrap().status,
        qaloop::domain::Status::Open
    );
    assert!(app.store.record(audit.id).await.unwrap().is_none());
}

async fn bad_links_are_refused_and_nothing_is_written(db: TestDb) {
    let app = spawn_app(db).await;
    let audit = app.work_of("file-audit", "TM1").await;
    let other = app.work_of("file-audit", "TM2").await;
    let now = app.now();
    let good = app
        .keys
        .sign_from("TM1", Purpose::Item, Some(audit.id), now);
    let (payload, tag) = good.split_once('.').unwrap();
    let flipped = if tag.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{payload}.{flipped}{}", &tag[1..]);
    let expired = app.keys.sign(
        "TM1",
        Purpose::Item,
        Some(audit.id),
        now - jiff::SignedDuration::from_secs(1),
    );
    let my_work = app.keys.sign_from("TM1", Purpose::MyWork, None, now);
    let other_item = app
        .keys
        .sign_from("TM1", Purpose::Item, Some(other.id), now);
    let foreign = LinkKeys::new(Key::new(vec![1; 32]).unwrap(), None, 30).sign_from(
        "TM1",
        Purpose::Item,
        Some(audit.id),
        now,
    );

    for (what, token) in [
        ("tampered", tampered.as_str()),
        ("expired", &expired),
        ("wrong purpose", &my_work),
        ("another item", &other_item),
        ("another key", &foreign),
        ("missing", ""),
    ] {
        let url = format!("{}/a/{}?t={token}", app.base, audit.id);
        let (status, _, page) = app.get(&url).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
        assert!(page.contains("This link does not work"), "{what}");
        assert_eq!(
            page.contains("Email me a fresh link"),
            !token.is_empty(),
            "{what}"
        );
        assert!(!page.contains("CIN-"), "{what}");
        let csrf = app.keys.csrf(token);
        let (status, _) = app.post(&url, &with_csrf(&csrf, audit_answers())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
    }

    // A genuine link of someone who may not see the work.
    let (url, token) = app.item_url("TM2", audit.id);
    let (status, _, page) = app.get(&url).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("not for this work"));
    let csrf = app.keys.csrf(&token);
    let (status, _) = app.post(&url, &with_csrf(&csrf, audit_answers())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    assert!(app.store.record(audit.id).await.unwrap().is_none());
    assert_eq!(
        app.store.assignment(audit.id).await.unwrap().status,
        qaloop::domain::Status::Open
    );
}

async fn forms_need_their_csrf_token_and_get_never_writes(db: TestDb) {
    let app = spawn_app(db).await;
    let audit = app.work_of("file-audit", "TM1").await;
    let (url, _) = app.item_url("TM1", audit.id);
    let (_, other_token) = app.item_url("TM1", app.work_of("file-audit", "TM2").await.id);

    let (status, page) = app.post(&url, &audit_answers()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "missing");
    assert!(page.contains("This form has expired"));
    let wrong = app.keys.csrf(&other_token);
    let (status, _) = app.post(&url, &with_csrf(&wrong, audit_answers())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another link's token");
    let (status, _) = app
        .post(&url, &with_csrf("bm90IGl0", audit_answers()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "made up");

    // Everything a completion needs, as a GET query: still nothing written.
    let query = encode(&audit_answers());
    let (status, _, _) = app.get(&format!("{url}&{query}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(app.store.record(audit.id).await.unwrap().is_none());
    assert_eq!(
        app.store.assignment(audit.id).await.unwrap().status,
        qaloop::domain::Status::Open
    );
    let (_, history) = app.store.counts().await.unwrap();
    assert!(history > 0);
    assert!(
        app.store
            .history(audit.id)
            .await
            .unwrap()
            .iter()
            .all(|h| h.event == "created")
    );
}

async fn every_response_carries_the_security_headers(db: TestDb) {
    let app = spawn_app(db).await;
    let audit = app.work_of("file-audit", "TM1").await;
    let (url, token) = app.item_url("TM1", audit.id);
    let big = "x".repeat(64 * 1024);
    let csrf = app.keys.csrf(&token);
    let requests = vec![
        app.http.get(&url),
        app.http
            .get(format!("{}/a/{}?t=nonsense", app.base, audit.id)),
        app.http.get(format!("{}/a/not-a-number", app.base)),
        app.http.get(format!("{}/nowhere", app.base)),
        app.http.get(format!("{}/", app.base)),
        app.http.get(format!("{}/static/qaloop.css", app.base)),
        app.http.get(format!("{}/me", app.base)),
        app.http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&[("csrf", &csrf), ("went_well", &big)])),
        app.http.post(format!("{}/link", app.base)),
    ];
    let mut statuses = Vec::new();
    for request in requests {
        let r = request.send().await.unwrap();
        statuses.push(r.status().as_u16());
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("script-src 'none'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    assert_eq!(statuses, [200, 403, 400, 404, 200, 200, 403, 413, 415]);
    assert!(app.store.record(audit.id).await.unwrap().is_none());
}

async fn managers_and_admins_may_complete_peers_may_not(db: TestDb) {
    let app = spawn_app(db).await;
    for (who, assignee, expected) in [
        ("TM2", "TM1", StatusCode::FORBIDDEN),
        ("SL1", "TM1", StatusCode::OK),
        ("QA", "TM2", StatusCode::OK),
        ("PU", "role:performance_unit", StatusCode::OK),
    ] {
        let activity = if assignee.starts_with("role:") {
            "performance-data"
        } else {
            "file-audit"
        };
        let work = app.work_of(activity, assignee).await;
        let (url, token) = app.item_url(who, work.id);
        let csrf = app.keys.csrf(&token);
        let answers = if activity == "file-audit" {
            audit_answers()
        } else {
            vec![("note", "sent to SLT")]
        };
        let (status, page) = app.post(&url, &with_csrf(&csrf, answers)).await;
        assert_eq!(status, expected, "{who} on {assignee}'s work: {page}");
        let done = app.store.assignment(work.id).await.unwrap();
        if expected == StatusCode::OK {
            assert_eq!(done.completed_by.as_deref(), Some(who));
            let last = app.store.history(work.id).await.unwrap().pop().unwrap();
            assert_eq!((last.via, last.actor.as_str()), (Via::Link, who));
        } else {
            assert_eq!(done.status, qaloop::domain::Status::Open);
        }
    }
    let data = app
        .work_of("performance-data", "role:performance_unit")
        .await;
    assert_eq!(data.note.as_deref(), Some("sent to SLT"));
    assert!(app.store.record(data.id).await.unwrap().is_none());
}

async fn a_moderation_is_refused_to_its_auditor_and_its_outcome_reaches_the_auditor(db: TestDb) {
    let app = spawn_app(db).await;
    // QA (an admin, so able to open anything) audits TM2's file: the moderation goes to QA's
    // manager DIR, about QA.
    let qa_audit = app.work_of("file-audit", "TM2").await;
    let record = NewRecord {
        form_id: "case-file-audit".into(),
        fields: json!({ "overall_grade": "Good", "thread_planning": "Good" }),
        outcomes: vec![],
    };
    let (_, triggered) = complete_with_record(
        &app.store,
        &app.ctx,
        qa_audit.id,
        &Actor::new("QA", Via::Cli),
        None,
        Some(&record),
        app.now(),
    )
    .await
    .unwrap();
    let (url, token) = app.item_url("QA", triggered[0]);
    let (status, _, page) = app.get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("someone else must"), "{page}");
    assert!(!page.contains("name=\"csrf\""), "no form for the auditor");
    let (status, page) = app
        .post(
            &url,
            &[("csrf", &app.keys.csrf(&token)), ("feedback", "mine")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("someone else must"));

    // TM1's audit, through the page; SL1 moderates and disagrees on one thread.
    let audit = app.work_of("file-audit", "TM1").await;
    let (url, token) = app.item_url("TM1", audit.id);
    let (status, _) = app
        .post(&url, &with_csrf(&app.keys.csrf(&token), audit_answers()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let moderation = app.work_of("audit-moderation", "SL1").await;
    let (murl, mtoken) = app.item_url("SL1", moderation.id);
    let (_, _, page) = app.get(&murl).await;
    assert!(page.contains("The audit being moderated"));
    assert!(page.contains("CIN-004512"));
    let mcsrf = app.keys.csrf(&mtoken);
    let mut answers = vec![("csrf", mcsrf.as_str()), ("feedback", "Planning is RI")];
    for f in [
        "overall_grade",
        "thread_assessment",
        "thread_chronology",
        "thread_supervision",
        "thread_childs_voice",
        "thread_parent_engagement",
    ] {
        answers.push((Box::leak(format!("agree_{f}").into_boxed_str()), "yes"));
    }
    answers.push(("agree_thread_planning", "no"));
    let (status, page) = app.post(&murl, &answers).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a disagreement needs a grade"
    );
    assert!(page.contains("href=\"#grade_thread_planning\""));
    answers.push(("grade_thread_planning", "Requires Improvement"));
    let (status, page) = app.post(&murl, &answers).await;
    assert_eq!(status, StatusCode::OK, "{page}");

    let outcomes = app.store.moderation_outcomes(audit.id).await.unwrap();
    assert_eq!(outcomes.len(), 7);
    let planning = outcomes
        .iter()
        .find(|o| o.field == "thread_planning")
        .unwrap();
    assert!(!planning.agreed);
    assert_eq!(
        planning.moderated_grade.as_deref(),
        Some("Requires Improvement")
    );
    // The auditor's page shows the outcome.
    let (_, _, page) = app.get(&url).await;
    assert!(page.contains("<h2>Moderation</h2>"), "{page}");
    assert!(page.contains("<td>Inadequate</td><td>Requires Improvement</td>"));
    assert!(page.contains("Planning is RI"));
}

async fn my_work_shows_open_work_and_reports_overdue_work(db: TestDb) {
    let app = spawn_app(db).await;
    // 2 July 2027: June's file audits are overdue.
    app.clock.set(at("2027-07-02T09:00:00Z"));
    let token = app.keys.sign_from("SL1", Purpose::MyWork, None, app.now());
    let (status, _, page) = app.get(&format!("{}/me?t={token}", app.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Your work"));
    assert!(page.contains("Overdue work of people you manage"), "{page}");
    assert!(page.contains("<td>TM1</td>") && page.contains("<td>TM2</td>"));
    // Each link on the page is SL1's own, for that item.
    let tm1 = app.work_of("file-audit", "TM1").await;
    // minijinja escapes `/` in attributes as `&#x2f;`, which browsers read as `/`.
    let link = format!("&#x2f;a&#x2f;{}?t=", tm1.id);
    let start = page.find(&link).unwrap() + link.len();
    let token = &page[start..page[start..].find('"').unwrap() + start];
    let grant = app.keys.verify(token, app.now()).unwrap();
    assert_eq!((grant.staff_id.as_str(), grant.item), ("SL1", Some(tm1.id)));
    // A practitioner sees only their own (none) and no reports section.
    let token = app.keys.sign_from("P1", Purpose::MyWork, None, app.now());
    let (_, _, page) = app.get(&format!("{}/me?t={token}", app.base)).await;
    assert!(!page.contains("people you manage"));
    // An item link is not a my-work link.
    let item = app
        .keys
        .sign_from("SL1", Purpose::Item, Some(tm1.id), app.now());
    let (status, _, _) = app.get(&format!("{}/me?t={item}", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn a_fresh_link_is_queued_only_for_real_people_and_the_answer_is_the_same(db: TestDb) {
    let app = spawn_app(db).await;
    let before = app.store.outbox(None, 1000).await.unwrap().len();
    let now = app.now();
    let expired = app.keys.sign(
        "TM1",
        Purpose::MyWork,
        None,
        now - jiff::SignedDuration::from_secs(60),
    );
    let ghost = app.keys.sign_from("GHOST", Purpose::MyWork, None, now);
    let url = format!("{}/link", app.base);

    let (status, _) = app.post(&url, &[("t", &expired), ("csrf", "nope")]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the form needs its CSRF token"
    );

    let (s1, known) = app
        .post(&url, &[("t", &expired), ("csrf", &app.keys.csrf(&expired))])
        .await;
    let (s2, unknown) = app
        .post(&url, &[("t", &ghost), ("csrf", &app.keys.csrf(&ghost))])
        .await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(known, unknown, "the answer reveals nothing");
    // Asking again the same day queues nothing more.
    app.post(&url, &[("t", &expired), ("csrf", &app.keys.csrf(&expired))])
        .await;

    let rows = app.store.outbox(None, 1000).await.unwrap();
    let fresh: Vec<_> = rows
        .iter()
        .filter(|r| r.key.contains("fresh-link"))
        .collect();
    assert_eq!(rows.len() - before, 1, "{fresh:?}");
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].recipient, "TM1");
    // Its links are TM1's own and work now.
    let context: serde_json::Value = serde_json::from_str(&fresh[0].context).unwrap();
    let link = context["items"][0]["link"].as_str().unwrap();
    let token = link.split("?t=").nth(1).unwrap();
    assert_eq!(app.keys.verify(token, now).unwrap().staff_id, "TM1");
}

/// Each recipient of a notice gets links signed for themselves: an escalation about TM1's work
/// reaches SL1 with SL1's link; without a key, links stay plain.
#[test]
fn routed_messages_carry_links_signed_for_each_recipient() {
    use qaloop::notify::Kind;
    use qaloop::notify::context::Item;
    use qaloop::notify::router::Notice;

    let ctx = context();
    let channel: ChannelSettings = toml::from_str(
        "kind = \"file\"\nname = \"mail\"\ndir = \"out\"\nfrom = \"qa@example-council.test\"\n",
    )
    .unwrap();
    let plain = Router::new(
        &NotifyConfig::default(),
        std::slice::from_ref(&channel),
        "Test Council",
        ctx.tz.clone(),
        vec![],
    );
    let signed = plain.clone().with_links(keys());
    let org = qaloop::org::Org::from_records(small_org());
    let now = at("2027-07-09T09:00:00Z");
    let today = ctx.today(now);
    let notice = |recipient: &str| {
        let mut context = signed.context(Kind::Escalation, recipient, today);
        context.items = vec![Item {
            id: 7,
            link: signed.link("TM1", 7, today),
            ..Item::default()
        }];
        Notice {
            kind: Kind::Escalation,
            reference: "a7:L1".into(),
            date: Some(today),
            recipient: recipient.into(),
            post_as: None,
            assignment_id: Some(7),
            immediate: false,
            suppressed: false,
            context,
        }
    };

    let rows = signed.route(&[notice("SL1")], &org, &ctx.calendar, now);

    let context: serde_json::Value = serde_json::from_str(&rows[0].context).unwrap();
    let link = context["items"][0]["link"].as_str().unwrap();
    assert!(link.starts_with("http://localhost:8080/a/7?t="), "{link}");
    let grant = keys()
        .verify(link.split("?t=").nth(1).unwrap(), now)
        .unwrap();
    assert_eq!(
        (grant.staff_id.as_str(), grant.purpose, grant.item),
        ("SL1", Purpose::Item, Some(7))
    );
    assert_eq!(plain.link("SL1", 7, today), "http://localhost:8080/a/7");
    // The same notice to a shared chat channel carries no personal link.
    let teams: ChannelSettings = toml::from_str(
        "kind = \"teams\"\nname = \"slt-teams\"\nurl = \"https://example.test/hook\"\n",
    )
    .unwrap();
    let routes: NotifyConfig =
        toml::from_str("[[routes]]\nkinds = [\"*\"]\nchannels = [\"slt-teams\"]\n").unwrap();
    let chat =
        Router::new(&routes, &[teams], "Test Council", ctx.tz.clone(), vec![]).with_links(keys());
    let rows = chat.route(&[notice("SL1")], &org, &ctx.calendar, now);
    let context: serde_json::Value = serde_json::from_str(&rows[0].context).unwrap();
    assert_eq!(context["items"][0]["link"], "http://localhost:8080/a/7");
    assert_eq!(
        signed.link("role:slt", 7, today),
        "http://localhost:8080/a/7",
        "a role's chat post cannot carry a personal link"
    );
}

impl App {
    /// A concern of `kind` recorded by TM1 on TM1's file audit at 17:55 on Friday 11 June 2027;
    /// returns its id.
    async fn concern(&self, kind: qaloop::domain::ConcernKind) -> i64 {
        let audit = self.work_of("file-audit", "TM1").await;
        self.store
            .raise_concerns(
                &[qaloop::domain::NewConcern {
                    assignment_id: audit.id,
                    case_reference: "CR-0042".into(),
                    kind,
                }],
                &Actor::new("TM1", Via::Link),
                at("2027-06-11T16:55:00Z"),
            )
            .await
            .unwrap();
        self.store
            .concerns(false)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.kind == kind)
            .unwrap()
            .id
    }

    fn concern_url(&self, staff: &str, id: i64) -> (String, String) {
        let token = self
            .keys
            .sign_from(staff, Purpose::Concern, Some(id), self.now());
        (format!("{}/concerns/{id}?t={token}", self.base), token)
    }

    fn tracker_url(&self, staff: &str, query: &str) -> String {
        let token = self
            .keys
            .sign_from(staff, Purpose::Tracker, None, self.now());
        format!("{}/tracker?t={token}{query}", self.base)
    }

    /// Actions owned by P1 (Children in Need) and P2 (moved to Fostering), raised by their
    /// team managers on 1 June 2027: one overdue, one on time, one whose description starts
    /// with a formula.
    async fn actions(&self) {
        use qaloop::domain::{ActionSource, NewAction};
        let mut staff = small_org();
        for p in &mut staff {
            if p.staff_id == "P2" || p.staff_id == "TM2" {
                p.service = "Fostering".into();
            }
        }
        let now = at("2027-06-01T08:00:00Z");
        import_staff(
            &self.store,
            &self.ctx,
            &staff,
            "test",
            self.ctx.today(now),
            now,
        )
        .await
        .unwrap();
        let new = |description: &str, owner: &str, raised_by: &str, due: &str| NewAction {
            source: ActionSource::Audit,
            assignment_id: None,
            description: description.into(),
            owner: owner.into(),
            raised_by: raised_by.into(),
            due: due.parse().unwrap(),
            inadequate: false,
        };
        self.store
            .raise_actions(
                &[
                    new(
                        "Update the chronology <b>now</b>",
                        "P1",
                        "TM1",
                        "2027-06-04",
                    ),
                    new(
                        "=HYPERLINK(\"http://evil.test\")",
                        "P1",
                        "TM1",
                        "2027-06-30",
                    ),
                    new("Review the fostering plan", "P2", "TM2", "2027-06-30"),
                ],
                &Actor::new("TM1", Via::Cli),
                now,
            )
            .await
            .unwrap();
    }
}

async fn a_concern_is_acknowledged_through_its_link_once(db: TestDb) {
    let app = spawn_app(db).await;
    app.clock.set(at("2027-06-11T17:10:00Z"));
    let id = app.concern(qaloop::domain::ConcernKind::Urgent).await;
    let (url, token) = app.concern_url("HOS", id);
    let csrf = app.keys.csrf(&token);

    let (status, _, page) = app.get(&url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("CR-0042"));
    assert!(page.contains("Not yet"));
    assert!(page.contains("What did you do next?"));
    assert!(!page.contains("health service?"), "not a health concern");

    // Someone who was not alerted (SL1 is not a head of service, senior leader or admin).
    let (other, other_token) = app.concern_url("SL1", id);
    let (status, _, page) = app.get(&other).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!page.contains("CR-0042"), "nothing shown to them");
    let other_csrf = app.keys.csrf(&other_token);
    let (status, _) = app
        .post(&other, &[("csrf", &other_csrf), ("what_next", "Nothing")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing without the form's token, and nothing left blank.
    let (status, _) = app.post(&url, &[("what_next", "Called")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page) = app.post(&url, &[("csrf", &csrf), ("what_next", " ")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Enter what you did next"));
    assert!(app.store.concern(id).await.unwrap().is_open());

    let (status, page) = app
        .post(
            &url,
            &[
                ("csrf", &csrf),
                ("what_next", "Called the duty team; visit today"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Concern acknowledged"));
    let c = app.store.concern(id).await.unwrap();
    assert_eq!(c.acknowledged_by.as_deref(), Some("HOS"));
    assert_eq!(c.acknowledged_at, Some(at("2027-06-11T17:10:00Z")));
    assert_eq!(
        c.acknowledgement.as_deref(),
        Some("Called the duty team; visit today")
    );
    assert_eq!(c.health_informed, None);

    // The director's acknowledgement comes second: they learn who was first.
    let (dir, dir_token) = app.concern_url("DIR", id);
    let dir_csrf = app.keys.csrf(&dir_token);
    let (status, page) = app
        .post(&dir, &[("csrf", &dir_csrf), ("what_next", "Phoned HOS")])
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(page.contains("already acknowledged by HOS"));
    let after = app.store.concern(id).await.unwrap();
    assert_eq!(after, c, "the first acknowledgement stands");
    let (status, _, page) = app.get(&dir).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("By HOS on 11 June 2027 at 18:10"), "{page}");
    assert!(
        !page.contains("<form method=\"post\""),
        "no form once acknowledged"
    );
}

async fn a_health_concern_needs_the_health_service_answer(db: TestDb) {
    let app = spawn_app(db).await;
    app.clock.set(at("2027-06-11T17:30:00Z"));
    let id = app.concern(qaloop::domain::ConcernKind::Health).await;
    // The QA admin may acknowledge too.
    let (url, token) = app.concern_url("QA", id);
    let csrf = app.keys.csrf(&token);
    let (status, _, page) = app.get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Has it been raised with the health service?"));

    let (status, page) = app
        .post(&url, &[("csrf", &csrf), ("what_next", "Told the GP")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Select yes if it has been raised with the health service"));
    assert!(page.contains("Told the GP"), "what was typed comes back");
    assert!(app.store.concern(id).await.unwrap().is_open());

    let (status, page) = app
        .post(
            &url,
            &[
                ("csrf", &csrf),
                ("what_next", "Told the GP"),
                ("health_informed", "yes"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let c = app.store.concern(id).await.unwrap();
    assert_eq!(c.acknowledged_by.as_deref(), Some("QA"));
    assert_eq!(c.health_informed, Some(true));
}

async fn the_tracker_is_scoped_to_the_viewers_service(db: TestDb) {
    let app = spawn_app(db).await;
    app.actions().await;

    // Senior leadership sees both services.
    let (status, _, page) = app.get(&app.tracker_url("DIR", "")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Children in Need"));
    assert!(page.contains("Fostering"));
    assert!(page.contains("Review the fostering plan"));
    assert!(
        page.contains("Update the chronology &lt;b&gt;now&lt;&#x2f;b&gt;")
            || page.contains("Update the chronology &lt;b&gt;now&lt;/b&gt;"),
        "descriptions are escaped"
    );
    // On 10 June the first action is 4 working days overdue (4 June was due; 7–10 June).
    assert!(page.contains("4 overdue"), "{page}");

    // The head of service (Children in Need) sees only their own service.
    let (status, _, page) = app.get(&app.tracker_url("HOS", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Update the chronology"));
    assert!(!page.contains("Review the fostering plan"));
    assert!(!page.contains("Fostering"));
    // Asking for another service shows nothing of it.
    let (status, _, page) = app.get(&app.tracker_url("HOS", "&service=Fostering")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("Review the fostering plan"));

    // Filters: overdue only.
    let (_, _, page) = app.get(&app.tracker_url("DIR", "&state=overdue")).await;
    assert!(page.contains("Update the chronology"));
    assert!(!page.contains("Review the fostering plan"));

    // A team manager's tracker link is refused; so is a link for another purpose.
    let (status, _, page) = app.get(&app.tracker_url("TM1", "")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!page.contains("Update the chronology"));
    let mywork = app.keys.sign_from("DIR", Purpose::MyWork, None, app.now());
    let (status, _, _) = app.get(&format!("{}/tracker?t={mywork}", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn the_tracker_csv_is_spreadsheet_safe_and_an_attachment(db: TestDb) {
    let app = spawn_app(db).await;
    app.actions().await;
    let url = app
        .tracker_url("DIR", "")
        .replace("/tracker?", "/tracker.csv?");

    let (status, headers, body) = app.get(&url).await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3, "{body}");
    for row in &rows {
        for cell in row {
            assert!(!cell.starts_with(['=', '+', '@']), "{cell}");
        }
    }
    assert!(
        rows.iter()
            .any(|r| r.iter().any(|c| c == "'=HYPERLINK(\"http://evil.test\")"))
    );
    // The head of service's download holds only their service.
    let hos = app
        .tracker_url("HOS", "")
        .replace("/tracker?", "/tracker.csv?");
    let (_, _, body) = app.get(&hos).await;
    assert!(!body.contains("Fostering"));
    assert_eq!(body.lines().count(), 3, "header and P1's two actions");
}

async fn the_concern_and_tracker_pages_carry_the_security_headers(db: TestDb) {
    let app = spawn_app(db).await;
    let id = app.concern(qaloop::domain::ConcernKind::Urgent).await;
    let (concern, _) = app.concern_url("HOS", id);
    let tracker = app.tracker_url("DIR", "");
    let urls = [
        concern.clone(),
        format!("{}/concerns/{id}?t=nonsense", app.base),
        format!("{}/concerns/{id}", app.base),
        tracker.clone(),
        tracker.replace("/tracker?", "/tracker.csv?"),
        format!("{}/tracker", app.base),
        format!("{}/tracker.csv?t=nonsense", app.base),
    ];
    let mut statuses = Vec::new();
    for url in urls {
        let r = app.http.get(&url).send().await.unwrap();
        statuses.push(r.status().as_u16());
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'none'"), "{csp}");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
    }
    assert_eq!(statuses, [200, 403, 403, 200, 200, 403, 403]);
    // A concern link for the wrong concern is refused.
    let (wrong, _) = app.concern_url("HOS", id + 1);
    let (status, _, _) = app
        .get(&wrong.replace(&format!("/concerns/{}", id + 1), &format!("/concerns/{id}")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// An urgent alert reaches each recipient with a concern link signed for them; a shared chat
/// post carries the plain link.
#[test]
fn urgent_alerts_carry_concern_links_signed_for_each_recipient() {
    use qaloop::domain::{Concern, ConcernKind, UrgentSettings};

    let ctx = context();
    let channel: ChannelSettings = toml::from_str(
        "kind = \"file\"\nname = \"mail\"\ndir = \"out\"\nfrom = \"qa@example-council.test\"\n",
    )
    .unwrap();
    let router = Router::new(
        &NotifyConfig::default(),
        std::slice::from_ref(&channel),
        "Test Council",
        ctx.tz.clone(),
        vec![],
    )
    .with_links(keys());
    let org = qaloop::org::Org::from_records(small_org());
    let now = at("2027-06-11T17:00:00Z");
    let concern = Concern {
        id: 5,
        assignment_id: 9,
        case_reference: "CR-0042".into(),
        kind: ConcernKind::Urgent,
        raised_by: "TM1".into(),
        raised_at: at("2027-06-11T16:55:00Z"),
        acknowledged_by: None,
        acknowledged_at: None,
        acknowledgement: None,
        health_informed: None,
    };
    let notices = qaloop::notify::urgent::urgent_notices(
        &ctx,
        &router,
        &org,
        &[concern],
        &UrgentSettings::default(),
        now,
    );

    let rows = router.route(&notices, &org, &ctx.calendar, now);

    assert_eq!(rows.len(), 1, "the head of service, by email");
    let context: serde_json::Value = serde_json::from_str(&rows[0].context).unwrap();
    let link = context["concern"]["link"].as_str().unwrap();
    assert!(
        link.starts_with("http://localhost:8080/concerns/5?t="),
        "{link}"
    );
    let grant = keys()
        .verify(link.split("?t=").nth(1).unwrap(), now)
        .unwrap();
    assert_eq!(
        (grant.staff_id.as_str(), grant.purpose, grant.item),
        ("HOS", Purpose::Concern, Some(5))
    );
    assert_eq!(
        router.tracker_link("role:slt", ctx.today(now)),
        "http://localhost:8080/tracker"
    );
}
