//! The `qaloop` binary as operators use it: exit codes, messages, output formats, the daemon.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::org::config_dir;

/// A temp folder holding a copy of the shipped config with a SQLite database inside it.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "schedule.toml",
            "bank-holidays.json",
            "example-staff.csv",
            "example.toml",
        ] {
            std::fs::copy(config_dir().join(file), dir.path().join(file)).unwrap();
        }
        std::fs::rename(
            dir.path().join("example.toml"),
            dir.path().join("qaloop.toml"),
        )
        .unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn edit(&self, name: &str, f: impl FnOnce(String) -> String) {
        let path = self.path(name);
        std::fs::write(&path, f(std::fs::read_to_string(&path).unwrap())).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qaloop"));
        cmd.arg("--config").arg(self.path("qaloop.toml")).args(args);
        cmd.env_remove("QALOOP_CONFIG").env_remove("RUST_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_the_shipped_configuration_and_summarises_it() {
    let s = Setup::new();

    let out = s.run(&["check", "--now", "2027-05-10T09:00:00Z"]);

    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("schedule: 16 activities"), "{text}");
    assert!(text.contains("team_manager"), "{text}");
    assert!(text.contains("next 12 months"), "{text}");
}

#[test]
fn check_lists_every_problem_with_file_and_key_and_exits_78() {
    let s = Setup::new();
    s.edit("schedule.toml", |t| {
        t.replacen(
            "owner_role = \"team_manager\"",
            "owner_role = \"team_manger\"",
            1,
        )
        .replacen(
            "due = { rule = \"nth_working_day\", n = 5 }",
            "due = { rule = \"nth_working_day\", n = 0 }",
            1,
        )
    });
    s.edit("example-staff.csv", |t| {
        t.replacen("@example-council.test", "-at-example", 1)
    });

    let out = s.run(&["check"]);

    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains(
            "schedule.toml: activity[1] (file-audit).owner_role: unknown role `team_manger`"
        ),
        "{err}"
    );
    assert!(
        err.contains("activity[0] (performance-data).due.n"),
        "{err}"
    );
}

#[test]
fn check_names_a_sent_journal_that_cannot_be_written() {
    let s = Setup::new();
    std::fs::create_dir(s.dir.path().join("state")).unwrap();
    // Each setting is made on the shipped text, so the last one made is the only one.
    let shipped = std::fs::read_to_string(s.path("qaloop.toml")).unwrap();
    let set = |path: &str| {
        s.edit("qaloop.toml", |_| {
            shipped.replacen(
                "[notify]\n",
                &format!("[notify]\nsent_journal = \"{path}\"\n"),
                1,
            )
        })
    };
    set("state/qaloop.sent");
    let out = s.run(&["check"]);
    assert!(
        out.status.success(),
        "a writable journal passes: {}",
        stderr(&out)
    );
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "sent journal: {}",
            s.dir.path().join("state/qaloop.sent").display()
        )),
        "{said}"
    );

    // A folder in which no file can be created, not even by root (tests may run as root,
    // for whom file permissions do not bind).
    set("/proc/qaloop.sent");
    let out = s.run(&["check"]);

    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("notify.sent_journal: /proc/qaloop.sent cannot be written"),
        "{err}"
    );
}

#[test]
fn a_staff_file_problem_fails_check_with_its_row() {
    let s = Setup::new();
    s.edit("example-staff.csv", |t| {
        t.replacen("@example-council.test", "-at-example", 1)
    });

    let out = s.run(&["check"]);

    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("example-staff.csv: row 2, column email"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_config_keys_and_missing_files_are_config_errors() {
    let s = Setup::new();
    s.edit("qaloop.toml", |t| {
        t.replace("every_minutes = 60", "every_minuts = 60")
    });
    let typo = s.run(&["check"]);
    assert_eq!(typo.status.code(), Some(78));
    assert!(stderr(&typo).contains("every_minuts"), "{}", stderr(&typo));

    let missing = Command::new(env!("CARGO_BIN_EXE_qaloop"))
        .args(["--config", "/nonexistent/qaloop.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
    assert!(stderr(&missing).contains("/nonexistent/qaloop.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let s = Setup::new();
    assert_eq!(
        s.run(&["plan", "--from", "yesterday"]).status.code(),
        Some(2)
    );
    assert_eq!(s.run(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn a_bad_staff_import_changes_nothing_and_exits_65() {
    let s = Setup::new();
    assert!(
        s.run(&[
            "staff",
            "import",
            s.path("example-staff.csv").to_str().unwrap(),
            "--now",
            "2027-05-10T09:00:00Z"
        ])
        .status
        .success()
    );
    let bad = s.path("bad.csv");
    let good = std::fs::read_to_string(s.path("example-staff.csv")).unwrap();
    // Drop one person (would make them a leaver) and break another row.
    let mut lines: Vec<&str> = good.lines().collect();
    lines.remove(5);
    let broken = lines[7].replacen(",S0", ",S9", 1);
    lines[7] = &broken;
    std::fs::write(&bad, lines.join("\n")).unwrap();

    let out = s.run(&[
        "staff",
        "import",
        bad.to_str().unwrap(),
        "--now",
        "2027-05-11T09:00:00Z",
    ]);

    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown line manager"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("nothing was imported"));
    let again = s.run(&[
        "staff",
        "import",
        s.path("example-staff.csv").to_str().unwrap(),
        "--now",
        "2027-05-12T09:00:00Z",
    ]);
    assert!(
        stdout(&again).contains("0 joined, 0 changed, 0 left"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn tick_assignments_and_completion_from_the_command_line() {
    let s = Setup::new();

    let tick = s.run(&["tick", "--now", "2027-05-04T07:30:00Z"]);
    assert!(tick.status.success(), "{}", stderr(&tick));
    assert!(
        stdout(&tick).contains("file-audit 2027-05: 36"),
        "{}",
        stdout(&tick)
    );
    let again = s.run(&["tick", "--now", "2027-05-04T08:30:00Z"]);
    assert!(stdout(&again).contains("created 0 assignments"));

    let list = s.run(&[
        "assignments",
        "list",
        "--activity",
        "file-audit",
        "--format",
        "json",
        "--now",
        "2027-06-01T09:00:00Z",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.len(), 36);
    let first = &rows[0];
    for key in [
        "id",
        "activity",
        "period",
        "period_start",
        "period_end",
        "assignee",
        "subject",
        "due",
        "status",
        "overdue",
        "created_late",
        "before_go_live",
        "completed_at",
        "completed_by",
    ] {
        assert!(first.get(key).is_some(), "missing {key}");
    }
    assert_eq!(first["period"], "2027-05");
    assert_eq!(first["due"], "2027-05-28");
    assert_eq!(first["overdue"], true);
    assert_eq!(
        first["created_late"], false,
        "the first pass is go-live: late means late, not first run"
    );
    assert_eq!(first["before_go_live"], false, "due 28 May, after go-live");
    let id = first["id"].as_i64().unwrap().to_string();
    let assignee = first["assignee"].as_str().unwrap().to_owned();

    let refused = s.run(&[
        "assignments",
        "complete",
        &id,
        "--by",
        "S0100",
        "--now",
        "2027-05-20T10:00:00Z",
    ]);
    assert_eq!(refused.status.code(), Some(77), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("may not complete"));

    let done = s.run(&[
        "assignments",
        "complete",
        &id,
        "--by",
        &assignee,
        "--now",
        "2027-05-20T10:00:00Z",
    ]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(
        stdout(&done).contains("created assignment"),
        "moderation created: {}",
        stdout(&done)
    );

    let csv = s.run(&["assignments", "list", "--status", "done", "--format", "csv"]);
    let text = stdout(&csv);
    assert!(text.starts_with("id,activity,period,"), "{text}");
    assert_eq!(text.lines().count(), 2);

    let history = s.run(&["assignments", "history", &id, "--format", "json"]);
    let events: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["event"], "completed");
    assert_eq!(events[1]["actor"], assignee.as_str());

    let overdue = s.run(&[
        "assignments",
        "list",
        "--status",
        "overdue",
        "--person",
        &assignee,
        "--format",
        "json",
        "--now",
        "2027-06-01T09:00:00Z",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&overdue.stdout).unwrap();
    assert!(
        rows.iter()
            .all(|r| r["overdue"] == true && r["assignee"] == assignee.as_str())
    );
    assert!(rows.iter().any(|r| r["activity"] == "direct-observation"));
}

#[test]
fn plan_writes_nothing_and_prints_json() {
    let s = Setup::new();

    let out = s.run(&[
        "plan",
        "--from",
        "2027-04-01",
        "--to",
        "2027-06-30",
        "--format",
        "json",
    ]);

    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let audits = rows
        .iter()
        .filter(|r| r["activity"] == "file-audit")
        .count();
    assert_eq!(audits, 36 * 3);
    let q1 = rows
        .iter()
        .find(|r| r["activity"] == "supervision-audit")
        .unwrap();
    assert_eq!(q1["period"], "2027-28 Q1");
    assert_eq!(q1["due"], "2027-06-30");
    assert!(
        !s.path("qaloop-example.db").exists(),
        "plan must not create the database"
    );
}

#[test]
fn environment_overrides_the_database_url() {
    let s = Setup::new();
    let elsewhere = s.path("elsewhere.db");

    let out = s
        .command(&["tick", "--now", "2027-05-04T07:30:00Z"])
        .env(
            "QALOOP__DATABASE__URL",
            format!("sqlite://{}", elsewhere.display()),
        )
        .output()
        .unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(elsewhere.exists());
    assert!(!s.path("qaloop-example.db").exists());
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn db_has_assignments(path: &Path) -> bool {
    let Ok(out) = Command::new(env!("CARGO_BIN_EXE_qaloop"))
        .arg("--config")
        .arg(path)
        .args(["assignments", "list", "--status", "all", "--format", "json"])
        .output()
    else {
        return false;
    };
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).is_ok_and(|rows| !rows.is_empty())
}

#[test]
fn serve_catches_up_at_start_refuses_a_second_copy_and_stops_on_sigterm() {
    let s = Setup::new();
    let log = std::fs::File::create(s.path("serve.log")).unwrap();
    // stderr to a file, not a pipe nobody reads: a full pipe would block the daemon.
    let mut daemon = s
        .command(&["serve"])
        // Any free loopback port: tests must not depend on 8080 being free.
        .env("QALOOP__WEB__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("the start-up pass", Duration::from_secs(120), || {
        if let Some(status) = daemon.try_wait().unwrap() {
            let err = std::fs::read_to_string(s.path("serve.log")).unwrap_or_default();
            panic!("serve exited early ({status}): {err}");
        }
        db_has_assignments(&s.path("qaloop.toml"))
    });

    let second = s.run(&["serve"]);
    assert_eq!(second.status.code(), Some(75), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("already using"),
        "{}",
        stderr(&second)
    );

    let sent = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "serve exit status {status:?}");
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_example_configuration_writes_real_messages_as_eml_files() {
    let s = Setup::new();

    let out = s.run(&["tick", "--now", "2027-05-04T09:00:00Z"]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("sent "), "{}", stdout(&out));
    let files = eml_files(&s.path("outbox"));
    assert!(!files.is_empty(), "no .eml files written");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Auto-Submitted: auto-generated"));
    assert!(text.contains("Message-ID: <"));
    assert!(text.contains("multipart/alternative"));

    // A second tick on the same day sends nothing again.
    let again = s.run(&["tick", "--now", "2027-05-04T10:00:00Z"]);
    assert!(stdout(&again).contains("sent 0,"), "{}", stdout(&again));
    assert_eq!(eml_files(&s.path("outbox")).len(), files.len());
}

#[test]
fn a_malformed_channel_or_template_is_a_config_error_naming_it() {
    let s = Setup::new();
    s.edit("qaloop.toml", |t| {
        t + "\n[[channels]]\nname = \"slt-teams\"\nkind = \"teams\"\n"
    });
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("slt-teams"), "{}", stderr(&out));

    let s = Setup::new();
    std::fs::create_dir(s.path("templates")).unwrap();
    std::fs::write(
        s.path("templates/reminder.subject.j2"),
        "Reminder: {{ items[0].title ",
    )
    .unwrap();
    s.edit("qaloop.toml", |t| {
        t.replace(
            "# templates_dir = \"templates\"",
            "templates_dir = \"templates\"",
        )
    });
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("reminder.subject.j2"),
        "{}",
        stderr(&out)
    );
    let tick = s.run(&["tick", "--now", "2027-05-04T09:00:00Z"]);
    assert_eq!(
        tick.status.code(),
        Some(78),
        "tick refuses to start with a broken template"
    );

    let s = Setup::new();
    s.edit("qaloop.toml", |t| {
        t.replace("channels = [\"mail-files\"]", "channels = [\"mail-flies\"]")
    });
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("notify.routes[0].channels: no channel is named `mail-flies`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn operators_list_and_retry_the_outbox_and_send_test_messages() {
    let s = Setup::new();
    assert!(
        s.run(&["tick", "--now", "2027-05-04T09:00:00Z"])
            .status
            .success()
    );

    let list = s.run(&[
        "outbox", "list", "--status", "sent", "--format", "json", "--limit", "5",
    ]);
    assert!(list.status.success(), "{}", stderr(&list));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "sent" && r["channel"] == "mail-files")
    );

    let id = rows[0]["id"].as_i64().unwrap().to_string();
    let refused = s.run(&["outbox", "retry", &id]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("only dead or failed rows"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        s.run(&["outbox", "retry", "999999"]).status.code(),
        Some(65)
    );

    let test = s.run(&["notify", "test", "--to", "S0010"]);
    assert!(test.status.success(), "{}", stderr(&test));
    assert!(
        stdout(&test).contains("mail-files: sent"),
        "{}",
        stdout(&test)
    );
    let unknown = s.run(&["notify", "test", "--to", "NOBODY"]);
    assert_eq!(unknown.status.code(), Some(65));
}

#[test]
fn a_preferences_file_is_read_and_its_mistakes_named() {
    let s = Setup::new();
    s.edit("qaloop.toml", |t| {
        t.replace(
            "# preferences_file = \"preferences.toml\"",
            "preferences_file = \"preferences.toml\"",
        )
    });
    std::fs::write(
        s.path("preferences.toml"),
        "[[person]]\nstaff_id = \"S0010\"\ndaily_digest = true\n",
    )
    .unwrap();
    let ok = s.run(&["check"]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    std::fs::write(
        s.path("preferences.toml"),
        "[[person]]\nstaff_id = \"S0010\"\ndaily_digets = true\n",
    )
    .unwrap();
    let bad = s.run(&["check"]);
    assert_eq!(bad.status.code(), Some(78));
    let err = stderr(&bad);
    assert!(err.contains("preferences.toml: line 3"), "{err}");
    assert!(err.contains("daily_digets"), "{err}");
}

#[test]
fn actions_are_raised_tracked_and_exported_safely_from_the_command_line() {
    let s = Setup::new();
    let tick = s.run(&["tick", "--now", "2027-05-04T07:30:00Z"]);
    assert!(tick.status.success(), "{}", stderr(&tick));
    let now = ["--now", "2027-05-10T10:00:00Z"];

    // A team manager raises an action for their practitioner; a description that looks like a
    // spreadsheet formula is stored as typed and exported as text.
    let add = s.run(
        &[
            &[
                "actions",
                "add",
                "--description",
                "=HYPERLINK(\"x\")",
                "--owner",
                "S0008",
            ],
            &["--by", "S0007", "--due", "2027-05-28"][..],
            &now[..],
        ]
        .concat(),
    );
    assert!(add.status.success(), "{}", stderr(&add));
    assert!(stdout(&add).contains("action 1 raised for S0008, due 2027-05-28"));

    let bad = s.run(
        &[
            &[
                "actions",
                "add",
                "--description",
                "x",
                "--owner",
                "NOBODY",
                "--by",
                "S0007",
            ][..],
            &now[..],
        ]
        .concat(),
    );
    assert_eq!(bad.status.code(), Some(65), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("`NOBODY` is not a current member of staff"));

    let csv = s.run(&[&["actions", "list", "--format", "csv"][..], &now[..]].concat());
    let text = stdout(&csv);
    assert!(text.contains("'=HYPERLINK"), "{text}");
    assert!(text.contains("Early Help"), "the owner's service: {text}");

    // The owner may not verify; the raiser may, once it is done.
    let done = s.run(
        &[
            &["actions", "done", "1", "--by", "S0008", "--note", "Updated"][..],
            &now[..],
        ]
        .concat(),
    );
    assert!(done.status.success(), "{}", stderr(&done));
    let own = s.run(
        &[
            &["actions", "verify", "1", "--by", "S0008", "--note", "ok"][..],
            &now[..],
        ]
        .concat(),
    );
    assert_eq!(own.status.code(), Some(77), "{}", stderr(&own));
    let verify = s.run(
        &[
            &["actions", "verify", "1", "--by", "S0007", "--note", "Seen"][..],
            &now[..],
        ]
        .concat(),
    );
    assert!(
        stdout(&verify).contains("action 1 is now verified"),
        "{}",
        stderr(&verify)
    );

    let history = s.run(&["actions", "history", "1", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    let events: Vec<&str> = rows.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["raised", "done", "verified"]);
    assert!(rows.iter().all(|r| r["via"] == "cli"));
}

#[test]
fn a_bad_form_definition_is_a_config_error_naming_its_key() {
    let s = Setup::new();
    s.edit("schedule.toml", |t| {
        t.replacen(
            "type = \"grade\", scale = \"ofsted\"",
            "type = \"grade\", scale = \"ofstead\"",
            1,
        )
        .replacen("form = \"direct-observation\"", "form = \"observation\"", 1)
    });

    let out = s.run(&["check"]);

    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains(
            "forms.case-file-audit.fields[1] (overall_grade).scale: no scale `ofstead` in [scales]"
        ),
        "{err}"
    );
    assert!(
        err.contains("(direct-observation).form: no form `observation`"),
        "{err}"
    );
}

#[test]
fn messages_carry_signed_links_and_link_prints_one() {
    let s = Setup::new();

    let out = s.run(&["tick", "--now", "2027-05-04T09:00:00Z"]);

    assert!(out.status.success(), "{}", stderr(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.path("link.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the example's key is private");
    }
    let files = eml_files(&s.path("outbox"));
    // Quoted-printable may fold long lines; undo soft breaks before looking.
    let text = std::fs::read_to_string(&files[0])
        .unwrap()
        .replace("=\r\n", "")
        .replace("=\n", "");
    assert!(text.contains("http://127.0.0.1:8080/a/"), "{text}");
    assert!(text.contains("?t=") || text.contains("?t=3D"), "{text}");

    let link = s.run(&["link", "--for", "S0007", "--now", "2027-05-04T09:00:00Z"]);
    assert!(link.status.success(), "{}", stderr(&link));
    assert!(
        stdout(&link).starts_with("http://127.0.0.1:8080/me?t="),
        "{}",
        stdout(&link)
    );
    let ghost = s.run(&["link", "--for", "GHOST", "--item", "1"]);
    assert_eq!(ghost.status.code(), Some(65), "{}", stderr(&ghost));
    let tracker = s.run(&["link", "--for", "S0007", "--tracker"]);
    assert!(tracker.status.success(), "{}", stderr(&tracker));
    assert!(
        stdout(&tracker).starts_with("http://127.0.0.1:8080/tracker?t="),
        "{}",
        stdout(&tracker)
    );
    let no_concern = s.run(&["link", "--for", "S0007", "--concern", "999999"]);
    assert_eq!(
        no_concern.status.code(),
        Some(65),
        "{}",
        stderr(&no_concern)
    );
    assert!(stderr(&no_concern).contains("no concern has id 999999"));

    let show = s.run(&["assignments", "show", "1", "--format", "json"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let json: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(json["assignment"]["id"], 1);
    assert!(json["record"].is_null());
    assert_eq!(json["moderation"], serde_json::json!([]));
    let missing = s.run(&["assignments", "show", "999999"]);
    assert_eq!(missing.status.code(), Some(65));
}
