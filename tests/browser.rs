//! End to end in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`)
//! driven over WebDriver, with axe-core (npm, `tests/browser/`) checking each page.
//!
//! A pass sends mail to the loopback SMTP server; the test takes the link out of the team
//! manager's message, fills in the case file audit (one Inadequate thread, one action), submits,
//! takes the line manager's moderation link out of *their* message, records a disagreement, and
//! checks the auditor's page shows it. Then the same with JavaScript disabled. Screenshots of the
//! main pages go to `target/screenshots/` (to `docs/` with `QALOOP_UPDATE_SCREENSHOTS=1`).
//!
//! Skips with a notice when Chromium, chromedriver or axe-core are missing — except with
//! `CI=true`, where that fails. Run alone with `cargo test --locked --test browser`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use jiff::civil::{Date, date};
use qaloop::clock::FixedClock;
use qaloop::domain::{ActionState, UrgentSettings};
use qaloop::engine::{Context, import_staff, reconcile};
use qaloop::links::{Key, LinkKeys, Purpose};
use qaloop::notify::dispatcher::{Dispatcher, RetryPolicy};
use qaloop::notify::router::Router;
use qaloop::notify::settings::{NotifyConfig, Preference};
use qaloop::notify::templates::Templates;
use qaloop::notify::{Channel, ChannelSettings};
use qaloop::store::{AssignmentFilter, Store};
use qaloop::web::{AppState, app, serve, templates};
use serde_json::{Value, json};
use support::org::{at, context, small_org};
use support::smtp::{Options, SmtpServer};
use support::store::TestDb;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/axe-core/axe.min.js")
}

/// Where screenshots go: `docs/` (shown in the README) with `QALOOP_UPDATE_SCREENSHOTS=1`, else
/// `target/screenshots/`, so an ordinary run leaves the working tree clean.
fn docs() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::env::var("QALOOP_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        root.join("docs")
    } else {
        root.join("target/screenshots")
    }
}

/// Whether the browser test can run here; a notice (or, in CI, a failure) when not.
fn available() -> bool {
    let missing: Vec<String> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .map(PathBuf::from)
        .chain([axe_path()])
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let what = format!(
        "browser test needs {} (apt-get install chromium chromium-driver; npm ci in tests/browser)",
        missing.join(", ")
    );
    assert!(!ci, "CI=true but the {what}");
    eprintln!("NOTICE: skipping the {what}");
    false
}

/// A chromedriver process on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    /// Kills chromedriver and every browser it started (they share its process group), also
    /// when the test panics before closing its session.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(CHROMEDRIVER);
        // Its own process group, so dropping the driver can end the browsers too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        // Wait for the external process to answer (not a sleep standing in for our own time).
        for _ in 0..200 {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                && r.status().is_success()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not start");
    }

    async fn session(&self, javascript: bool, profile: &Path) -> Session<'_> {
        let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--disable-crash-reporter", "--disable-breakpad",
                "--lang=en-US", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if !javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let created = self
            .call(
                "POST",
                "/session",
                json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome", "goog:chromeOptions": options } } }),
            )
            .await;
        Session {
            driver: self,
            id: created["sessionId"].as_str().unwrap().to_owned(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.url);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }
}

/// One browser session.
struct Session<'d> {
    driver: &'d Driver,
    id: String,
}

impl Session<'_> {
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
            .await
    }

    async fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    async fn source(&self) -> String {
        self.call("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The page source once it contains `needle` (a click's navigation may still be under
    /// way when WebDriver answers); panics with the page after 10 s.
    async fn wait_for(&self, needle: &str) -> String {
        let mut page = String::new();
        for _ in 0..200 {
            page = self.source().await;
            if page.contains(needle) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("page never contained {needle:?}:\n{page}");
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call("POST", &format!("/element/{e}/click"), json!({}))
            .await;
    }

    async fn choose(&self, name: &str, value: &str) {
        self.click(&format!("input[name=\"{name}\"][value=\"{value}\"]"))
            .await;
    }

    async fn type_into(&self, name: &str, text: &str) {
        let e = self.find(&format!("[name=\"{name}\"]")).await;
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(docs()).unwrap();
        std::fs::write(docs().join(name), bytes).unwrap();
    }

    /// Injects axe-core and fails on serious or critical violations.
    async fn axe(&self, page: &str) {
        let source = std::fs::read_to_string(axe_path()).unwrap();
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": format!("{source}\nreturn true;"), "args": [] }),
        )
        .await;
        let result = self
            .call(
                "POST",
                "/execute/async",
                json!({
                    "script": "const done = arguments[arguments.length - 1]; \
                        axe.run(document, { resultTypes: ['violations'] }) \
                          .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, \
                            help: v.help, nodes: v.nodes.map(n => n.target.join(' ')) })))) \
                          .catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e) }]));",
                    "args": []
                }),
            )
            .await;
        let bad: Vec<&Value> = result
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(bad.is_empty(), "axe on {page}: {bad:#?}");
    }

    /// Whether pages in this session run script: a page whose script renames it (WebDriver's
    /// own scripts run whatever the page's settings, so they cannot tell).
    async fn pages_run_script(&self) -> bool {
        self.open("data:text/html,<title>off</title><script>document.title='on'</script>")
            .await;
        self.call("GET", "/title", Value::Null).await == json!("on")
    }

    async fn close(self) {
        self.call("DELETE", "", Value::Null).await;
    }
}

/// The links in `staff_id`'s mail (quoted-printable undone), newest message last.
fn links_for(smtp: &SmtpServer, address: &str) -> Vec<String> {
    let mut links = Vec::new();
    for m in smtp.received() {
        if !m.rcpt_to.iter().any(|r| r == address) {
            continue;
        }
        let text = m
            .data
            .replace("=\r\n", "")
            .replace("=3D", "=")
            .replace("&amp;", "&");
        for part in text.split("http://").skip(1) {
            let end = part
                .find(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
                .unwrap_or(part.len());
            links.push(format!("http://{}", &part[..end]));
        }
    }
    links
}

async fn assignment(store: &Store, activity: &str, assignee: &str) -> qaloop::domain::Assignment {
    store
        .assignments(&AssignmentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .rfind(|a| a.activity_id == activity && a.assignee == assignee)
        .unwrap()
}

/// The engine, its SMTP channel and the web server, as `serve` wires them, on one test database:
/// messages link to this server, the pages read a clock the test moves.
struct Harness {
    store: Store,
    smtp: SmtpServer,
    base: String,
    keys: LinkKeys,
    ctx: Arc<Context>,
    dispatcher: Dispatcher,
    clock: Arc<FixedClock>,
    urgent: UrgentSettings,
}

impl Harness {
    /// Starts it with go-live on 1 June 2027 and these delivery times, preferences and `[urgent]`.
    async fn start(
        store: Store,
        deliver_at: &[&str],
        preferences: Vec<Preference>,
        urgent: UrgentSettings,
    ) -> Harness {
        let smtp = SmtpServer::start(Options::default()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let keys = LinkKeys::new(Key::new(vec![5; 32]).unwrap(), None, 30);
        let channel: ChannelSettings = toml::from_str(&format!(
            "kind = \"email\"\nname = \"email\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             from = \"QA schedule <qa@example-council.test>\"\ntimeout_seconds = 5\n",
            smtp.port()
        ))
        .unwrap();
        let config = NotifyConfig {
            base_url: base.clone(),
            deliver_at: deliver_at.iter().map(|t| (*t).to_owned()).collect(),
            ..NotifyConfig::default()
        };
        let mut ctx = context();
        ctx.start_date = Some(date(2027, 6, 1));
        ctx.announcer = Some(Arc::new(
            Router::new(
                &config,
                std::slice::from_ref(&channel),
                "Example Council",
                ctx.tz.clone(),
                preferences,
            )
            .with_links(keys.clone()),
        ));
        let ChannelSettings::Email(email) = &channel else {
            unreachable!()
        };
        let smtp_channel: Arc<dyn Channel> =
            Arc::new(qaloop::notify::email::SmtpChannel::new(email, Path::new(".")).unwrap());
        let dispatcher = Dispatcher::new(
            [("email".to_owned(), smtp_channel)].into(),
            Arc::new(Templates::load(None).unwrap()),
            RetryPolicy::from_config(&config),
            None,
        )
        .with_working_hours_of(&ctx);
        let ctx = Arc::new(ctx);
        let clock = Arc::new(FixedClock::new(at("2027-06-01T08:00:00Z")));
        let state = Arc::new(AppState {
            store: store.clone(),
            ctx: ctx.clone(),
            keys: keys.clone(),
            clock: clock.clone(),
            pages: templates::load(None).unwrap(),
            organisation: "Example Council".into(),
            urgent: urgent.clone(),
        });
        tokio::spawn(serve(
            listener,
            app(state, 64 * 1024),
            std::future::pending(),
        ));
        Harness {
            store,
            smtp,
            base,
            keys,
            ctx,
            dispatcher,
            clock,
            urgent,
        }
    }

    /// `hour:minute` in the council's time zone on `day`.
    fn local(&self, day: Date, hour: i8, minute: i8) -> Timestamp {
        day.at(hour, minute, 0, 0)
            .to_zoned(self.ctx.tz.clone())
            .unwrap()
            .timestamp()
    }

    /// Staff and the month's work on go-live morning (1 June 2027, `hour`:00), and the first
    /// messages.
    async fn go_live(&self, hour: i8) {
        let now = self.local(date(2027, 6, 1), hour, 0);
        import_staff(
            &self.store,
            &self.ctx,
            &small_org(),
            "test",
            self.ctx.today(now),
            now,
        )
        .await
        .unwrap();
        self.morning(now).await;
    }

    /// A daemon's pass at `now`: the schedule, the daily messages, urgent alerts, dispatch.
    async fn morning(&self, now: Timestamp) {
        reconcile(&self.store, &self.ctx, now).await.unwrap();
        qaloop::notify::daily::decide(&self.store, &self.ctx, now)
            .await
            .unwrap();
        self.between_passes(now).await;
    }

    /// What `serve` does between passes: urgent alerts that fell due, then whatever is ready.
    async fn between_passes(&self, now: Timestamp) {
        qaloop::notify::urgent::decide(&self.store, &self.ctx, &self.urgent, now)
            .await
            .unwrap();
        self.dispatcher.dispatch(&self.store, now).await.unwrap();
    }

    /// Links to `path_prefix` (e.g. `/a/12`) in the mail of `staff_id`, oldest first.
    fn links(&self, staff_id: &str, path_prefix: &str) -> Vec<String> {
        let address = format!("{}@example-council.test", staff_id.to_lowercase());
        let wanted = format!("{}{path_prefix}?t=", self.base);
        links_for(&self.smtp, &address)
            .into_iter()
            .filter(|l| l.starts_with(&wanted))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_records_an_audit_and_its_moderation_in_a_real_browser() {
    if !available() {
        return;
    }
    let db = TestDb::sqlite().await;
    // Deliveries at 09:00 (the morning's pass) and 10:00 (when the page's clock completes the
    // audit), so the moderator's notice goes out within the one simulated morning; and the
    // moderator hears of new moderations at once rather than in the next morning's daily
    // message, so one simulated morning covers the whole path.
    let h = Harness::start(
        db.store.clone(),
        &["09:00", "10:00"],
        vec![Preference {
            staff_id: "SL1".into(),
            daily_digest: Some(false),
            channels: None,
        }],
        UrgentSettings::default(),
    )
    .await;
    let (store, smtp, base, dispatcher, clock) =
        (&h.store, &h.smtp, &h.base, &h.dispatcher, &h.clock);
    let page_keys = h.keys.clone();

    // Tuesday 1 June 2027, 09:00 London: the month's work is created and people are told.
    h.go_live(9).await;
    clock.set(at("2027-06-10T09:00:00Z"));

    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().unwrap();
    for (javascript, auditor) in [(true, "TM1"), (false, "TM2")] {
        let session = driver
            .session(javascript, &profiles.path().join(auditor))
            .await;
        let audit = assignment(store, "file-audit", auditor).await;

        // The link out of the auditor's own message.
        let address = format!("{}@example-council.test", auditor.to_lowercase());
        let link = links_for(smtp, &address)
            .into_iter()
            .find(|l| l.starts_with(&format!("{base}/a/{}?t=", audit.id)))
            .unwrap_or_else(|| panic!("no link to {} in {auditor}'s mail", audit.id));
        assert_eq!(session.pages_run_script().await, javascript);
        session.open(&link).await;
        session.wait_for("<h1>Case file audit</h1>").await;
        if javascript {
            session.axe("the audit form").await;
            session.screenshot("audit-form.png").await;
        }

        // Submitting half a form shows the error summary.
        session.type_into("case_reference", "CIN-004512").await;
        session.click("button[type=submit]").await;
        session.wait_for("There is a problem").await;
        if javascript {
            session.axe("the audit form with errors").await;
            session.screenshot("audit-errors.png").await;
        }

        for (field, grade) in [
            ("overall_grade", "Requires Improvement"),
            ("thread_assessment", "Good"),
            ("thread_planning", "Inadequate"),
            ("thread_chronology", "Good"),
            ("thread_supervision", "Good"),
            ("thread_childs_voice", "Requires Improvement"),
            ("thread_parent_engagement", "Good"),
        ] {
            session.choose(field, grade).await;
        }
        for (field, value) in [
            ("child_asked", "yes"),
            ("family_asked", "yes"),
            ("feedback_given", "no"),
            ("urgent_concern", "no"),
            ("health_concern", "no"),
        ] {
            session.choose(field, value).await;
        }
        session
            .type_into("child_view", "Wants to see the worker more")
            .await;
        session.type_into("went_well", "Visits on time").await;
        session
            .type_into("to_improve", "The plan is out of date")
            .await;
        session
            .type_into("actions.0.description", "Update the plan")
            .await;
        session.type_into("actions.0.owner", "P1").await;
        // A date input takes the digits in the browser's locale order (en-US: MMDDYYYY).
        session.type_into("actions.0.due", "07012027").await;
        session.click("button[type=submit]").await;
        session.wait_for("Case file audit completed").await;
        if javascript {
            session.axe("the confirmation").await;
            session.screenshot("audit-done.png").await;
        }
        let record = store.record(audit.id).await.unwrap().unwrap();
        assert_eq!(record.fields["thread_planning"], "Inadequate");
        assert_eq!(record.fields["actions"][0]["due"], "2027-07-01");

        // The line manager is told about the moderation; their link opens it.
        let moderation = assignment(store, "audit-moderation", "SL1").await;
        assert_eq!(moderation.trigger_id, Some(audit.id));
        dispatcher
            .dispatch(store, at("2027-06-10T09:00:00Z"))
            .await
            .unwrap();
        let link = links_for(smtp, "sl1@example-council.test")
            .into_iter()
            .find(|l| l.starts_with(&format!("{base}/a/{}?t=", moderation.id)))
            .expect("the moderator's message links to the moderation");
        session.open(&link).await;
        let page = session.wait_for("The audit being moderated").await;
        assert!(page.contains("CIN-004512"));
        if javascript {
            session.axe("the moderation form").await;
            session.screenshot("moderation.png").await;
        }
        for thread in [
            "overall_grade",
            "thread_assessment",
            "thread_chronology",
            "thread_supervision",
            "thread_childs_voice",
            "thread_parent_engagement",
        ] {
            session.choose(&format!("agree_{thread}"), "yes").await;
        }
        session.choose("agree_thread_planning", "no").await;
        session
            .choose("grade_thread_planning", "Requires Improvement")
            .await;
        session
            .type_into("feedback", "Planning is weak but not inadequate")
            .await;
        session.click("button[type=submit]").await;
        session
            .wait_for("Moderation of a case file audit completed")
            .await;
        let planning = store
            .moderation_outcomes(audit.id)
            .await
            .unwrap()
            .into_iter()
            .find(|o| o.field == "thread_planning")
            .unwrap();
        assert_eq!(
            (planning.agreed, planning.moderated_grade.as_deref()),
            (false, Some("Requires Improvement"))
        );

        // The auditor's page shows the outcome.
        let own = links_for(smtp, &address)
            .into_iter()
            .find(|l| l.starts_with(&format!("{base}/a/{}?t=", audit.id)))
            .unwrap();
        session.open(&own).await;
        let page = session
            .wait_for("Planning is weak but not inadequate")
            .await;
        assert!(page.contains("<td>Inadequate</td><td>Requires Improvement</td>"));
        if javascript {
            session.axe("the moderated audit").await;
            session.screenshot("audit-moderated.png").await;
        }
        session.close().await;
    }

    // Senior leadership's closing-the-loop tracker (the audits above raised actions), then a
    // health concern's page as its head of service opens it from the alert.
    let session = driver.session(true, &profiles.path().join("DIR")).await;
    let now = qaloop::clock::Clock::now(clock.as_ref());
    let tracker = page_keys.sign_from("DIR", Purpose::Tracker, None, now);
    session.open(&format!("{base}/tracker?t={tracker}")).await;
    session.wait_for("Actions by service and team").await;
    session.axe("the tracker").await;
    session.screenshot("tracker.png").await;

    let audit = assignment(store, "file-audit", "TM1").await;
    store
        .raise_concerns(
            &[qaloop::domain::NewConcern {
                assignment_id: audit.id,
                case_reference: "CIN-004512".into(),
                kind: qaloop::domain::ConcernKind::Health,
            }],
            &qaloop::domain::Actor::new("TM1", qaloop::domain::Via::Link),
            at("2027-06-10T08:30:00Z"),
        )
        .await
        .unwrap();
    let concern = store
        .concerns(false)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.kind == qaloop::domain::ConcernKind::Health)
        .unwrap();
    let token = page_keys.sign_from("HOS", Purpose::Concern, Some(concern.id), now);
    session
        .open(&format!("{base}/concerns/{}?t={token}", concern.id))
        .await;
    session
        .wait_for("Has it been raised with the health service?")
        .await;
    session.axe("the concern page").await;
    session.screenshot("concern.png").await;
    session.close().await;
}

both_backends!(an_urgent_concern_and_an_action_are_handled_from_their_messages_in_a_real_browser);

/// Issue 8 end to end: an urgent concern recorded in the browser at 17:55 on a Friday is alerted
/// at once and out of hours until its head of service acknowledges it through the alert's link;
/// the action the same audit raised is marked done by its owner from their daily message and
/// verified by the auditor from theirs; the senior-leadership digest that follows is rendered
/// as its reader sees it (`slt-digest.png`).
async fn an_urgent_concern_and_an_action_are_handled_from_their_messages_in_a_real_browser(
    db: TestDb,
) {
    if !available() {
        return;
    }
    let sqlite = matches!(db.target, support::store::Target::Sqlite(_));
    let urgent = UrgentSettings {
        notify_roles: vec!["directorate_lead".into()],
        ..UrgentSettings::default()
    };
    let h = Harness::start(db.store.clone(), &["08:00"], vec![], urgent).await;
    h.go_live(8).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let session = driver.session(true, &profiles.path().join("all")).await;

    // Friday 11 June 2027, 17:55 in London: TM1 records the month's audit with an urgent concern.
    let friday = date(2027, 6, 11);
    h.clock.set(h.local(friday, 17, 55));
    let audit = assignment(&h.store, "file-audit", "TM1").await;
    let link = h.links("TM1", &format!("/a/{}", audit.id)).remove(0);
    session.open(&link).await;
    session.wait_for("<h1>Case file audit</h1>").await;
    session.type_into("case_reference", "CIN-007731").await;
    for (field, value) in [
        ("overall_grade", "Good"),
        ("thread_assessment", "Good"),
        ("thread_planning", "Good"),
        ("thread_chronology", "Requires Improvement"),
        ("thread_supervision", "Good"),
        ("thread_childs_voice", "Good"),
        ("thread_parent_engagement", "Good"),
        ("child_asked", "yes"),
        ("family_asked", "yes"),
        ("feedback_given", "yes"),
        ("urgent_concern", "yes"),
        ("health_concern", "no"),
    ] {
        session.choose(field, value).await;
    }
    session.type_into("child_view", "Feels listened to").await;
    session.type_into("went_well", "Regular visits").await;
    session
        .type_into("to_improve", "The chronology has gaps")
        .await;
    session
        .type_into("actions.0.description", "Bring the chronology up to date")
        .await;
    session.type_into("actions.0.owner", "P1").await;
    session.type_into("actions.0.due", "07092027").await;
    session.click("button[type=submit]").await;
    session.wait_for("Case file audit completed").await;

    // The next dispatch, a minute later, alerts the head of service and the directorate lead.
    let subjects = |h: &Harness| -> Vec<(String, String)> {
        support::notify::mail(&h.smtp)
            .into_iter()
            .filter(|(_, subject, _)| subject.to_lowercase().contains("urgent concern"))
            .map(|(to, subject, _)| (to, subject))
            .collect()
    };
    h.between_passes(h.local(friday, 17, 56)).await;
    let alerts = subjects(&h);
    assert_eq!(
        alerts,
        [
            (
                "dir@example-council.test".to_owned(),
                "Urgent concern: case CIN-007731".to_owned()
            ),
            (
                "hos@example-council.test".to_owned(),
                "Urgent concern: case CIN-007731".to_owned()
            ),
        ],
        "alerted at once, to the head of service and the configured role"
    );
    // 18:56, after working hours: re-alerted, not held for Monday.
    h.between_passes(h.local(friday, 18, 56)).await;
    assert_eq!(subjects(&h).len(), 4, "{:?}", subjects(&h));

    // 19:10: the head of service acknowledges through the link in their alert.
    h.clock.set(h.local(friday, 19, 10));
    let concern = h.store.concerns(true).await.unwrap().remove(0);
    let link = h
        .links("HOS", &format!("/concerns/{}", concern.id))
        .pop()
        .expect("the alert links to the concern");
    session.open(&link).await;
    session.wait_for("Acknowledge the concern").await;
    session.axe("the concern before acknowledgement").await;
    session
        .type_into(
            "what_next",
            "Called the allocated worker; strategy meeting on Monday",
        )
        .await;
    session.click("button[type=submit]").await;
    session.wait_for("Concern acknowledged").await;
    session.axe("the acknowledged concern").await;
    let concern = h
        .store
        .concerns(false)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == concern.id)
        .unwrap();
    assert_eq!(concern.acknowledged_by.as_deref(), Some("HOS"));
    assert_eq!(concern.acknowledged_at, Some(h.local(friday, 19, 10)));

    // Nothing re-alerts or escalates afterwards, all weekend.
    let before = subjects(&h).len();
    for (day, hour) in [
        (friday, 19),
        (friday, 21),
        (friday, 23),
        (date(2027, 6, 12), 9),
    ] {
        h.between_passes(h.local(day, hour, 56)).await;
    }
    assert_eq!(subjects(&h).len(), before, "{:?}", subjects(&h));

    // Monday's daily message tells P1 of the action; P1 marks it done from the link.
    let monday = date(2027, 6, 14);
    h.morning(h.local(monday, 8, 0)).await;
    let action = h
        .store
        .actions(&qaloop::store::ActionFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.description == "Bring the chronology up to date")
        .unwrap();
    let link = h
        .links("P1", &format!("/actions/{}", action.id))
        .pop()
        .expect("P1's message links to the action");
    h.clock.set(h.local(monday, 10, 0));
    session.open(&link).await;
    session.wait_for("Mark it as done").await;
    session.axe("the action, open").await;
    if sqlite {
        session.screenshot("action.png").await;
    }
    session
        .type_into("done_note", "Chronology updated to the end of May")
        .await;
    session.click("button[type=submit]").await;
    session.wait_for("Action marked as done").await;

    // Five working days on, TM1's daily message asks them to verify it; they do, from the link.
    let mut day = monday;
    let verify = loop {
        day = day.tomorrow().unwrap();
        h.morning(h.local(day, 8, 0)).await;
        if let Some(link) = h.links("TM1", &format!("/actions/{}", action.id)).pop() {
            break (day, link);
        }
        assert!(day < date(2027, 6, 30), "TM1 was never asked to verify");
    };
    assert_eq!(
        verify.0,
        date(2027, 6, 21),
        "verify_within = 5 working days"
    );
    h.clock.set(h.local(verify.0, 10, 0));
    session.open(&verify.1).await;
    session.wait_for("Verify it").await;
    session.axe("the action to verify").await;
    if sqlite {
        session.screenshot("action-verify.png").await;
    }
    session
        .type_into("verify_note", "Checked the file: the chronology is current")
        .await;
    session
        .click("input[name=\"change\"][value=\"verify\"] ~ button")
        .await;
    session.wait_for("Action verified").await;
    let verified = h
        .store
        .actions(&qaloop::store::ActionFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.id == action.id)
        .unwrap();
    assert_eq!(verified.state, ActionState::Verified);

    // TM2 raises an action by hand that P2 lets slip; then on to the senior-leadership digest
    // before the June–July closing-the-loop review.
    qaloop::engine::actions::raise(
        &h.store,
        &h.ctx,
        &[qaloop::domain::NewAction {
            source: qaloop::domain::ActionSource::Manual,
            assignment_id: None,
            description: "Hold the overdue supervision".into(),
            owner: "P2".into(),
            raised_by: "TM2".into(),
            due: date(2027, 7, 1),
            inadequate: false,
        }],
        &qaloop::domain::Actor::new("TM2", qaloop::domain::Via::Cli),
        h.local(verify.0, 11, 0),
    )
    .await
    .unwrap();
    let digest = loop {
        day = day.tomorrow().unwrap();
        h.morning(h.local(day, 8, 0)).await;
        if let Some(html) = html_of(&h.smtp, "dir@example-council.test", "Senior leadership") {
            break html;
        }
        assert!(day < date(2027, 8, 31), "no digest reached DIR");
    };
    assert!(
        digest.contains("<strong>1 action overdue</strong>")
            && digest.contains("<strong>0 done but not yet verified</strong>"),
        "the verified action is closed, the slipped one overdue: {digest}"
    );
    let file = profiles.path().join("slt-digest.html");
    std::fs::write(&file, &digest).unwrap();
    session.open(&format!("file://{}", file.display())).await;
    session.wait_for("Closing the loop").await;
    session
        .axe("the senior-leadership digest (HTML email)")
        .await;
    if sqlite {
        session.screenshot("slt-digest.png").await;
    }
    session.close().await;
}

/// The decoded HTML part of the newest message to `address` whose subject contains `subject`.
fn html_of(smtp: &SmtpServer, address: &str, subject: &str) -> Option<String> {
    let message = smtp.received().into_iter().rev().find(|m| {
        m.rcpt_to.iter().any(|r| r == address)
            && m.data
                .lines()
                .any(|l| l.starts_with("Subject: ") && l.contains(subject))
    })?;
    let part = message.data.split("Content-Type: text/html").nth(1)?;
    let (headers, body) = part.split_once("\r\n\r\n")?;
    let body = &body[..body.find("\r\n--").unwrap_or(body.len())];
    let bytes = if headers.contains("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(body.replace("\r\n", ""))
            .unwrap()
    } else if headers.contains("quoted-printable") {
        quoted_printable::decode(body, quoted_printable::ParseMode::Robust).unwrap()
    } else {
        body.as_bytes().to_vec()
    };
    Some(String::from_utf8(bytes).unwrap())
}
