//! Notification templates: the words of every message, as minijinja templates a council can
//! override file by file.
//!
//! Each [`Kind`] has three templates: `{kind}.subject.j2` (one line; whitespace is collapsed and
//! it is cut at 150 characters), `{kind}.txt.j2` (plain text, also the chat fallback) and
//! `{kind}.html.j2` (HTML; values are escaped automatically). The defaults ship in
//! `config/templates/` and are compiled into the binary, so qaloop works without that folder. A
//! folder of overrides replaces the default of the same file name and nothing else; a file there
//! that is not one of the thirty-six names is reported, since a misspelt override would otherwise be
//! ignored in silence.
//!
//! [`Templates::load`] reports every syntax error with its file and line; [`Templates::check`]
//! renders every template against [`sample_context`] so that a template that names a missing
//! variable is a configuration error at start (`qaloop check`), not a failed notification later.
//!
//! # Template variables
//!
//! Every template sees the same variables, whatever its kind; those a kind does not use are empty
//! lists or `none`. A misspelt variable is an error, not an empty string.
//!
//! | Variable | Meaning |
//! |---|---|
//! | `kind` | the kind's name: `new_assignment`, `reminder`, `due_today`, `chase`, `escalation`, `digest`, `slt_digest`, `catch_up`, `test`, `admin_alert`, `urgent_concern`, `welcome` |
//! | `organisation` | the organisation's name from `qaloop.toml` |
//! | `base_url` | qaloop's web address, without a trailing slash |
//! | `recipient` | the recipient's staff id (or the channel name for a channel post): for links, not for printing |
//! | `recipient_name` | the recipient's name from the staff file (`none` for a shared channel post) |
//! | `replies_to_qa` | `true` when replies reach the QA team (the email channel has a `reply_to`) |
//! | `today` | the date the notification was decided on, `YYYY-MM-DD` |
//! | `items` | the work it is about: one item for single notices, several for digests |
//! | `about` | escalations: the staff id whose work is overdue (not for printing) |
//! | `about_name` | escalations: their name (or the role's title) |
//! | `level` | escalations: `1` for the line manager, `2` for the next manager up |
//! | `groups` | senior-leadership digest: overdue work by service, each with `service`, `count` and `teams`; each team has `team` and `items`, oldest first |
//! | `total` | senior-leadership digest: overdue items now |
//! | `previous_total` | senior-leadership digest: overdue items at the previous digest; `none` for the first |
//! | `failure` | admin alerts: `outbox_id`, `kind`, `channel`, `recipient` (staff id), `attempts`, `error` |
//!
//! Each item has `id`, `activity` (its id, `file-audit`), `title` (`Case file audit`), `period`
//! (the label, `2027-05`), `period_long` (`May 2027`, `April–May 2027`, `Quarter 3 2027/28`,
//! `2027/28`), `due` (`2027-05-28`), `due_long` (`Friday 28 May 2027`), `days_until_due`
//! (working days, `0` on the day, `none` once overdue), `days_overdue` (working days, `none` while
//! not overdue), `assignee` (a staff id or `role:NAME`) and `assignee_name` (their name, or the
//! role's title from the schedule's `[roles]`), `subject` and `subject_name` (whose work a
//! moderation is about, or `none`), `manager_name` (escalated items: the holder's manager),
//! `before_go_live` (already late when qaloop went live: never chased), `new` and `link`. The
//! shipped templates print names and `period_long`, never a staff id or a `role:` spelling.
//!
//! Besides minijinja's built-in filters there is `plural`: `{{ n|plural("working day") }}` gives
//! `1 working day` or `3 working days`; a second argument gives an irregular plural. Block tags on
//! a line of their own leave no blank line behind (`trim_blocks` and `lstrip_blocks` are on), and
//! runs of blank lines in the plain text are collapsed to one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, Error, Output, State, UndefinedBehavior, Value};

use super::Kind;
use super::context::{ConcernAlert, Failure, Group, Item, TeamGroup, TemplateContext};
use crate::problem::{Problem, Problems};

/// The longest subject, in characters; longer ones are cut with an ellipsis.
const SUBJECT_MAX_CHARS: usize = 150;

/// `(file name, source)` of each shipped template, for every kind and part.
macro_rules! built_in {
    ($($kind:literal),* $(,)?) => {
        [$(
            (
                concat!($kind, ".subject.j2"),
                include_str!(concat!("../../config/templates/", $kind, ".subject.j2")),
            ),
            (
                concat!($kind, ".txt.j2"),
                include_str!(concat!("../../config/templates/", $kind, ".txt.j2")),
            ),
            (
                concat!($kind, ".html.j2"),
                include_str!(concat!("../../config/templates/", $kind, ".html.j2")),
            ),
        )*]
    };
}

/// The shipped templates, compiled in so a missing `config/templates/` folder still works.
const BUILT_IN: [(&str, &str); 36] = built_in!(
    "new_assignment",
    "reminder",
    "due_today",
    "chase",
    "escalation",
    "digest",
    "slt_digest",
    "catch_up",
    "test",
    "admin_alert",
    "urgent_concern",
    "welcome",
);

/// The three templates of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    /// The template's file name for `kind`: `reminder.subject.j2`.
    fn file_name(self, kind: Kind) -> String {
        let suffix = match self {
            Part::Subject => "subject",
            Part::Text => "txt",
            Part::Html => "html",
        };
        format!("{}.{suffix}.j2", kind.as_str())
    }

    /// Turns raw template output into what a channel sends.
    fn tidy(self, raw: &str) -> String {
        match self {
            Part::Subject => tidy_subject(raw),
            Part::Text => tidy_text(raw),
            Part::Html => raw.trim().to_owned() + "\n",
        }
    }
}

/// A message's words, ready to put in a [`super::Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, at most 150 characters.
    pub subject: String,
    /// Plain text, ending in one newline.
    pub text: String,
    /// An HTML document.
    pub html: String,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template failed while rendering: an undefined variable, a filter given the wrong type.
    #[error("cannot render template {}: {error}", .template.display())]
    Render {
        /// The override file, or the built-in template's name.
        template: PathBuf,
        /// What minijinja reported, with the line.
        error: minijinja::Error,
    },
}

/// Every notification template, compiled, with a council's overrides in place of the defaults.
#[derive(Debug)]
pub struct Templates {
    /// The compiled templates. `'static` because every source is either compiled in or owned.
    env: Environment<'static>,
    /// Where each overridden template was read from, so errors name the council's file; a name
    /// missing here is a built-in template.
    overrides: BTreeMap<String, PathBuf>,
}

impl Templates {
    /// Compiles the built-in templates, each replaced by the file of the same name in `dir` when
    /// there is one. Reports every syntax error (file and line), unreadable file, and file in
    /// `dir` that is not a template qaloop uses. `dir`, when given, must exist: a configured
    /// folder that is missing means the council's wording would silently not be used.
    pub fn load(dir: Option<&Path>) -> Result<Templates, Problems> {
        let mut problems = Problems::default();
        let mut sources: BTreeMap<String, String> = BUILT_IN
            .iter()
            .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
            .collect();
        let mut overrides = BTreeMap::new();
        if let Some(dir) = dir {
            for (name, path, read) in read_overrides(dir, &mut problems) {
                match read {
                    Ok(source) => {
                        sources.insert(name.clone(), source);
                        overrides.insert(name, path);
                    }
                    Err(error) => problems.push(Problem::new(
                        &path,
                        "",
                        format!("cannot read the template: {error}"),
                    )),
                }
            }
        }

        let mut env = environment();
        for (name, source) in sources {
            if let Err(error) = env.add_template_owned(name.clone(), source) {
                let file = origin(&overrides, &name);
                problems.push(problem_at(
                    &file,
                    &error,
                    format!("template syntax error: {}", describe(&error)),
                ));
            }
        }
        problems.into_result(Templates { env, overrides })
    }

    /// Renders the subject, text and HTML of a `kind` message.
    pub fn render(&self, kind: Kind, ctx: &TemplateContext) -> Result<Rendered, TemplateError> {
        Ok(Rendered {
            subject: self.render_part(kind, Part::Subject, ctx)?,
            text: self.render_part(kind, Part::Text, ctx)?,
            html: self.render_part(kind, Part::Html, ctx)?,
        })
    }

    /// [`Templates::render`] without the HTML part (left empty), for channels that never send
    /// it: the dispatcher renders a message per send, and the HTML is the largest part.
    pub fn render_without_html(
        &self,
        kind: Kind,
        ctx: &TemplateContext,
    ) -> Result<Rendered, TemplateError> {
        Ok(Rendered {
            subject: self.render_part(kind, Part::Subject, ctx)?,
            text: self.render_part(kind, Part::Text, ctx)?,
            html: String::new(),
        })
    }

    /// Renders every template against [`sample_context`] for its kind, and reports each one that
    /// fails, or whose subject or text comes out empty, as a problem naming the template's file.
    pub fn check(&self) -> Problems {
        let mut problems = Problems::default();
        for kind in Kind::ALL {
            let ctx = sample_context(kind);
            for part in Part::ALL {
                match self.render_part(kind, part, &ctx) {
                    Err(TemplateError::Render { template, error }) => {
                        problems.push(problem_at(
                            &template,
                            &error,
                            format!(
                                "cannot render the sample {} message: {}",
                                kind.as_str(),
                                describe(&error)
                            ),
                        ));
                    }
                    Ok(out) if part != Part::Html && out.trim().is_empty() => {
                        let what = if part == Part::Subject {
                            "subject"
                        } else {
                            "text"
                        };
                        problems.push(Problem::new(
                            &origin(&self.overrides, &part.file_name(kind)),
                            "",
                            format!(
                                "the {what} of the sample {} message is empty; every message \
                                 needs a {what}",
                                kind.as_str()
                            ),
                        ));
                    }
                    Ok(_) => {}
                }
            }
        }
        problems
    }

    /// Renders one template and tidies its output.
    fn render_part(
        &self,
        kind: Kind,
        part: Part,
        ctx: &TemplateContext,
    ) -> Result<String, TemplateError> {
        let name = part.file_name(kind);
        self.env
            .get_template(&name)
            .and_then(|template| template.render(ctx))
            .map(|raw| part.tidy(&raw))
            .map_err(|error| TemplateError::Render {
                template: origin(&self.overrides, &name),
                error,
            })
    }
}

/// The environment every template is compiled in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html.j2") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(mail_formatter);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("plural", plural);
    env.add_filter("long_date", long_date);
    env
}

/// Writes a value into a template: in HTML, text with `&`, `<`, `>`, `"` and `'` as entities
/// and `/` as it is. minijinja's own escaping also writes `/` as `&#x2f;` (not needed in text or
/// in a quoted attribute), which made every link of a message `http:&#x2f;&#x2f;…`: mail
/// clients decode it, but to a link scanner or anyone reading the source it looks like a
/// disguised address. Everything else (plain text, values marked safe, non-strings) is
/// minijinja's default.
fn mail_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(text) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            out.write_str(&escape_html(text)).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// `text` safe in HTML element content and in quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `{{ today|long_date }}`: `2027-07-23` as people read it, `Friday 23 July 2027`. The context
/// keeps ISO dates (links, JSON, overrides that want them); text that people read uses this.
/// Anything that is not an ISO date is left as it is.
fn long_date(text: &str) -> String {
    text.parse::<jiff::civil::Date>()
        .map(super::planner::long_date)
        .unwrap_or_else(|_| text.to_owned())
}

/// `{{ n|plural("working day") }}`: `1 working day`, `3 working days`.
fn plural(n: i64, singular: &str, plural: Option<&str>) -> String {
    if n == 1 {
        format!("{n} {singular}")
    } else {
        match plural {
            Some(plural) => format!("{n} {plural}"),
            None => format!("{n} {singular}s"),
        }
    }
}

/// The override files in `dir`: `(template name, path, contents)` for each known name found.
/// Reports a missing folder and any `.j2` file that is not a known template name.
fn read_overrides(
    dir: &Path,
    problems: &mut Problems,
) -> Vec<(String, PathBuf, std::io::Result<String>)> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(Problem::new(
                dir,
                "",
                format!(
                    "cannot read the templates folder: {error}; create it, or remove the setting \
                     to use the built-in templates"
                ),
            ));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .collect();
    paths.sort();

    let mut found = Vec::new();
    for path in paths {
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if !name.ends_with(".j2") {
            continue;
        }
        if BUILT_IN.iter().any(|(known, _)| *known == name) {
            let read = fs::read_to_string(&path);
            found.push((name.to_owned(), path, read));
        } else {
            problems.push(Problem::new(
                &path,
                "",
                "not a template qaloop uses, so it would be ignored; name it KIND.subject.j2, \
                 KIND.txt.j2 or KIND.html.j2, where KIND is one of new_assignment, reminder, \
                 due_today, chase, escalation, digest, slt_digest, catch_up, test, admin_alert, \
                 urgent_concern, welcome",
            ));
        }
    }
    found
}

/// The file a template came from: the override's path, or the built-in template's name.
fn origin(overrides: &BTreeMap<String, PathBuf>, name: &str) -> PathBuf {
    overrides
        .get(name)
        .cloned()
        .unwrap_or_else(|| PathBuf::from(format!("built-in {name}")))
}

/// A problem in `file` at the line minijinja reported.
fn problem_at(file: &Path, error: &minijinja::Error, message: String) -> Problem {
    let location = error
        .line()
        .map(|line| format!("line {line}"))
        .unwrap_or_default();
    Problem::new(file, location, message)
}

/// What went wrong, without minijinja's `(in file:line)` suffix (the problem carries those).
fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

/// One line, whitespace collapsed, at most [`SUBJECT_MAX_CHARS`] characters.
fn tidy_subject(raw: &str) -> String {
    let line = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= SUBJECT_MAX_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(SUBJECT_MAX_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Trailing spaces removed, runs of blank lines collapsed to one, one final newline.
fn tidy_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = false;
    for line in raw.trim().lines().map(str::trim_end) {
        if line.is_empty() {
            if !blank_run {
                out.push('\n');
            }
            blank_run = true;
        } else {
            out.push_str(line);
            out.push('\n');
            blank_run = false;
        }
    }
    out
}

/// A realistic but fictional context of `kind`, for [`Templates::check`] and previews: fictional
/// staff ids and names, activity titles from the default schedule, May 2027 dates. No email
/// addresses.
pub fn sample_context(kind: Kind) -> TemplateContext {
    const BASE_URL: &str = "https://qaloop.council.example";
    let item = |id: i64, activity: &str, title: &str, period: &str, due: (&str, &str)| Item {
        id,
        activity: activity.to_owned(),
        title: title.to_owned(),
        period: period.to_owned(),
        period_long: match period {
            "2027-04" => "April 2027",
            "2027-05" => "May 2027",
            _ => period,
        }
        .to_owned(),
        assignee_name: "Sam Jones".to_owned(),
        due: due.0.to_owned(),
        due_long: due.1.to_owned(),
        assignee: "S0012".to_owned(),
        link: format!("{BASE_URL}/a/{id}"),
        ..Item::default()
    };
    let due_soon = Item {
        days_until_due: Some(4),
        ..item(
            101,
            "file-audit",
            "Case file audit",
            "2027-05",
            ("2027-05-28", "Friday 28 May 2027"),
        )
    };
    let due_today = Item {
        days_until_due: Some(0),
        subject: Some("S0031".to_owned()),
        subject_name: Some("Alex Brown".to_owned()),
        ..item(
            102,
            "audit-moderation",
            "Moderation of a case file audit",
            "2027-04",
            ("2027-05-24", "Monday 24 May 2027"),
        )
    };
    let overdue = Item {
        days_overdue: Some(15),
        ..item(
            95,
            "direct-observation",
            "Direct observation of practice",
            "2027-04",
            ("2027-04-30", "Friday 30 April 2027"),
        )
    };
    let escalated = Item {
        days_overdue: Some(5),
        subject: Some("S0031".to_owned()),
        subject_name: Some("Alex Brown".to_owned()),
        ..item(
            97,
            "audit-moderation",
            "Moderation of a case file audit",
            "2027-04",
            ("2027-05-17", "Monday 17 May 2027"),
        )
    };
    let held_by = |assignee: &str, name: &str, item: &Item| Item {
        assignee: assignee.to_owned(),
        assignee_name: name.to_owned(),
        ..item.clone()
    };

    let mut ctx = TemplateContext {
        organisation: "Example Council Children's Services".to_owned(),
        base_url: BASE_URL.to_owned(),
        recipient: "S0012".to_owned(),
        today: "2027-05-24".to_owned(),
        ..TemplateContext::new(kind)
    };
    match kind {
        Kind::NewAssignment | Kind::Reminder => ctx.items = vec![due_soon],
        Kind::DueToday => ctx.items = vec![due_today],
        Kind::Chase => ctx.items = vec![overdue],
        Kind::Escalation => {
            ctx.recipient = "S0007".to_owned();
            ctx.recipient_name = Some("Priya Shah".to_owned());
            ctx.about = Some("S0012".to_owned());
            ctx.about_name = Some("Sam Jones".to_owned());
            ctx.level = Some(1);
            ctx.items = vec![escalated];
        }
        Kind::Welcome => {
            ctx.recipient_name = Some("Sam Jones".to_owned());
            ctx.items = vec![
                Item {
                    before_go_live: true,
                    ..overdue
                },
                due_soon,
            ];
        }
        Kind::Digest => {
            ctx.recipient_name = Some("Priya Shah".to_owned());
            ctx.items = vec![
                overdue,
                due_today,
                Item {
                    new: true,
                    ..due_soon
                },
            ];
            ctx.moderated = vec![super::context::Moderated {
                title: "Case file audit".to_owned(),
                period: "2027-04".to_owned(),
                period_long: "April 2027".to_owned(),
                moderator_name: "Uma Barker".to_owned(),
                agreed: 6,
                total: 7,
                link: format!("{BASE_URL}/a/90"),
            }];
            ctx.team_items = vec![Item {
                assignee_name: "Sam Jones".to_owned(),
                manager_name: Some("Priya Shah".to_owned()),
                days_overdue: Some(10),
                ..escalated
            }];
        }
        Kind::CatchUp => ctx.items = vec![overdue, due_soon],
        Kind::SltDigest => {
            let data_pack = Item {
                days_overdue: Some(10),
                assignee: "role:performance_unit".to_owned(),
                assignee_name: "Performance Unit".to_owned(),
                ..item(
                    98,
                    "performance-data",
                    "Monthly performance data pack",
                    "2027-05",
                    ("2027-05-10", "Monday 10 May 2027"),
                )
            };
            ctx.recipient = "S0001".to_owned();
            ctx.groups = vec![
                Group {
                    service: "Child Protection".to_owned(),
                    count: 2,
                    teams: vec![
                        TeamGroup {
                            team: "South Child Protection 1".to_owned(),
                            items: vec![held_by("S0012", "Sam Jones", &overdue)],
                        },
                        TeamGroup {
                            team: "South Child Protection 3".to_owned(),
                            items: vec![held_by("S0020", "Kim Patel", &escalated)],
                        },
                    ],
                },
                Group {
                    service: "Directorate".to_owned(),
                    count: 1,
                    teams: vec![TeamGroup {
                        team: "Performance Unit".to_owned(),
                        items: vec![data_pack],
                    }],
                },
            ];
            ctx.total = Some(3);
            ctx.previous_total = Some(5);
            ctx.actions = Some(super::tracker::ActionsSection {
                overdue: 2,
                unverified: 1,
                previous_overdue: Some(4),
                previous_unverified: Some(1),
                groups: vec![super::tracker::ActionGroup {
                    service: "Child Protection".to_owned(),
                    count: 2,
                    teams: vec![super::tracker::ActionTeam {
                        team: "South Child Protection 1".to_owned(),
                        lines: vec![
                            super::tracker::ActionLine {
                                id: 12,
                                owner: "S0031".to_owned(),
                                owner_name: "Alex Brown".to_owned(),
                                status: "overdue".to_owned(),
                                due: "2027-05-10".to_owned(),
                                days: 9,
                                inadequate: true,
                                reopened: 1,
                            },
                            super::tracker::ActionLine {
                                id: 15,
                                owner: "S0012".to_owned(),
                                owner_name: "Sam Jones".to_owned(),
                                status: "unverified".to_owned(),
                                due: "2027-05-31".to_owned(),
                                days: 6,
                                inadequate: false,
                                reopened: 0,
                            },
                        ],
                    }],
                }],
                inadequate_without_plan: vec![super::tracker::AuditLine {
                    assignment_id: 88,
                    auditor: "S0012".to_owned(),
                    auditor_name: "Sam Jones".to_owned(),
                    actions: 2,
                    verified: 1,
                    link: format!("{BASE_URL}/a/88"),
                }],
                tracker_link: format!("{BASE_URL}/tracker"),
            });
        }
        Kind::Test => {}
        Kind::UrgentConcern => {
            ctx.recipient = "S0005".to_owned();
            ctx.concern = Some(ConcernAlert {
                id: 4,
                case_reference: "CR-123456".to_owned(),
                health: true,
                raised_by: "S0012".to_owned(),
                raised_by_name: "Sam Jones".to_owned(),
                raised_at_long: "Friday 11 June 2027 at 17:55".to_owned(),
                round: 2,
                escalation: false,
                link: format!("{BASE_URL}/concerns/4"),
            });
        }
        Kind::AdminAlert => {
            ctx.recipient = "admin".to_owned();
            ctx.failure = Some(Failure {
                outbox_id: 4711,
                kind: "chase".to_owned(),
                channel: "council-smtp".to_owned(),
                recipient: "S0012".to_owned(),
                recipient_name: "Sam Jones".to_owned(),
                attempts: 8,
                error: "temporary failure: connection refused by smtp.council.example:587"
                    .to_owned(),
            });
        }
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOOTER: &str =
        "This is an automated message from qaloop for Example Council Children's Services.";

    fn built_in() -> Templates {
        Templates::load(None).expect("the shipped templates compile")
    }

    /// A folder holding `files`, for override tests.
    fn override_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, source) in files {
            fs::write(dir.path().join(name), source).unwrap();
        }
        dir
    }

    #[test]
    fn every_kind_has_its_three_shipped_templates() {
        for kind in Kind::ALL {
            for part in Part::ALL {
                let name = part.file_name(kind);
                assert!(
                    BUILT_IN.iter().any(|(known, _)| *known == name),
                    "{name} is not shipped"
                );
            }
        }
    }

    #[test]
    fn every_shipped_template_renders_for_every_kind_sample() {
        let templates = built_in();

        let problems = templates.check();

        assert!(problems.is_empty(), "{problems}");
        for kind in Kind::ALL {
            let out = templates.render(kind, &sample_context(kind)).unwrap();
            assert!(!out.subject.is_empty(), "{kind:?} subject");
            assert!(!out.subject.contains('\n'), "{kind:?} subject");
            assert!(out.text.ends_with(&format!("{FOOTER}\n")), "{kind:?} text");
            assert!(out.html.starts_with("<!DOCTYPE html>"), "{kind:?} html");
            assert!(
                out.html.contains(
                    "This is an automated message from qaloop for Example \
                     Council Children&#x27;s Services."
                ),
                "{kind:?} html"
            );
        }
    }

    #[test]
    fn html_links_keep_their_slashes_and_text_is_still_escaped() {
        let templates = built_in();
        let mut context = sample_context(Kind::Digest);
        context.recipient_name = Some("Sam <b>\"Jones\"</b> & O'Neil".to_owned());
        context.items[0].link = "https://qaloop.council.example/a/101?t=x&y=<z>".to_owned();

        let out = templates.render(Kind::Digest, &context).unwrap();

        assert!(
            out.html
                .contains("href=\"https://qaloop.council.example/a/101?t=x&amp;y=&lt;z&gt;\""),
            "{}",
            out.html
        );
        assert!(!out.html.contains("&#x2f;"), "{}", out.html);
        assert!(!out.html.contains("<b>"), "{}", out.html);
        assert!(
            out.html
                .contains("Dear Sam &lt;b&gt;&quot;Jones&quot;&lt;/b&gt; &amp; O&#x27;Neil,"),
            "{}",
            out.html
        );
        // Plain text is not escaped.
        assert!(
            out.text
                .contains("https://qaloop.council.example/a/101?t=x&y=<z>")
        );
    }

    #[test]
    fn single_notices_say_what_and_when_and_end_with_the_link_then_the_footer() {
        let templates = built_in();

        let reminder = templates
            .render(Kind::Reminder, &sample_context(Kind::Reminder))
            .unwrap();
        let chase = templates
            .render(Kind::Chase, &sample_context(Kind::Chase))
            .unwrap();

        assert_eq!(
            reminder.subject,
            "Reminder: Case file audit, May 2027, due Friday 28 May 2027"
        );
        assert!(reminder.text.ends_with(&format!(
            "Open it in qaloop: https://qaloop.council.example/a/101\n\n{FOOTER}\n"
        )));
        assert!(reminder.text.contains("in 4 working days"));
        assert_eq!(
            chase.subject,
            "Overdue: Direct observation of practice, April 2027, was due Friday 30 April 2027, \
             15 working days ago"
        );
    }

    #[test]
    fn escalation_says_why_the_recipient_is_told() {
        let templates = built_in();
        let mut ctx = sample_context(Kind::Escalation);

        let first = templates.render(Kind::Escalation, &ctx).unwrap();
        ctx.level = Some(2);
        let second = templates.render(Kind::Escalation, &ctx).unwrap();

        assert_eq!(
            first.subject,
            "Escalation: Sam Jones's moderation of a case file audit for April 2027 is \
             5 working days late"
        );
        assert!(first.text.starts_with("Dear Priya Shah,"), "{}", first.text);
        assert!(first.text.contains("it is about the work of Alex Brown"));
        assert!(
            !first.text.contains("has been told"),
            "level 1 is the first told"
        );
        assert!(first.text.contains("as their line manager"));
        assert!(second.text.contains("as the next manager up"));
        ctx.items[0].manager_name = Some("Priya Shah".to_owned());
        ctx.recipient_name = Some("Uma Barker".to_owned());
        let named = templates.render(Kind::Escalation, &ctx).unwrap();
        assert!(
            named.text.contains(
                "Sam Jones's moderation of a case file audit for April 2027 is 5 working days late \
             (it was due Monday 17 May 2027); it is about the work of Alex Brown. Their manager \
             Priya Shah has been told."
            ),
            "{}",
            named.text
        );
        assert!(second.html.contains("as the next manager up"));
    }

    #[test]
    fn digest_lists_overdue_and_due_soon_work_in_sections() {
        let out = built_in()
            .render(Kind::Digest, &sample_context(Kind::Digest))
            .unwrap();

        assert_eq!(
            out.subject,
            "Your QA work today: 1 new, 1 overdue, 1 due soon, 1 in your team overdue, 1 moderated"
        );
        let text = &out.text;
        assert!(text.starts_with("Dear Priya Shah,"), "{text}");
        let new = text.find("New for you (1)").unwrap();
        let audit = text.find("Case file audit, May 2027").unwrap();
        let overdue = text.find("Overdue (1)").unwrap();
        let observation = text.find("Direct observation of practice").unwrap();
        let soon = text.find("Due soon (1)").unwrap();
        let team = text.find("Your team's overdue work (1)").unwrap();
        assert!(new < audit && audit < overdue && overdue < observation);
        assert!(observation < soon && soon < team);
        assert!(text.contains(
            "Sam Jones's moderation of a case file audit for April 2027 is 10 working days late"
        ));
        assert!(out.html.contains("Your team's overdue work (1)"));
        assert!(out.html.contains("Sam Jones&#x27;s") || out.html.contains("Sam Jones's"));
    }

    #[test]
    fn admin_alert_names_the_failure_and_the_retry_command() {
        let out = built_in()
            .render(Kind::AdminAlert, &sample_context(Kind::AdminAlert))
            .unwrap();

        for expected in [
            "Outbox id: 4711",
            "Kind: chase",
            "Channel: council-smtp",
            "Recipient: Sam Jones",
            "Attempts: 8",
            "Error: temporary failure: connection refused",
            "qaloop outbox retry 4711",
        ] {
            assert!(out.text.contains(expected), "missing {expected:?}");
        }
        assert!(out.html.contains("qaloop outbox retry 4711"));
    }

    #[test]
    fn slt_digest_shows_services_teams_counts_and_the_change() {
        let templates = built_in();
        let mut ctx = sample_context(Kind::SltDigest);

        let out = templates.render(Kind::SltDigest, &ctx).unwrap();
        ctx.previous_total = None;
        let first = templates.render(Kind::SltDigest, &ctx).unwrap();

        assert_eq!(
            out.subject,
            "Senior leadership digest: 3 overdue items, down 2 since the last digest; \
             2 actions overdue, 1 unverified"
        );
        for expected in [
            "Total overdue: 3",
            "Down 2 since the last digest",
            "Child Protection: 2 overdue",
            "South Child Protection 1: 1 overdue",
            "South Child Protection 3: 1 overdue",
            "Directorate: 1 overdue",
            "Performance Unit: 1 overdue",
            "held by Performance Unit",
            // The closing-the-loop section leads, before the overdue work.
            "Closing the loop: 2 actions overdue (was 4), 1 done but not yet verified (was 1), \
             1 Inadequate audit without a verified action plan.",
            "- Audit 88 by Sam Jones: 1 of 2 actions verified.",
            "- Action 12 (owner Alex Brown): 9 working days overdue (due Monday 10 May 2027); from an \
             Inadequate audit; reopened 1x.",
            "- Action 15 (owner Sam Jones): done, waiting 6 working days for verification.",
        ] {
            assert!(out.text.contains(expected), "text lacks {expected:?}");
        }
        assert!(
            out.text.find("Closing the loop").unwrap() < out.text.find("Total overdue").unwrap()
        );
        for expected in [
            "Child Protection: 2 overdue",
            "South Child Protection 3: 1 overdue",
        ] {
            assert!(out.html.contains(expected), "html lacks {expected:?}");
        }
        assert!(first.subject.contains("(first digest)"));
        assert!(first.text.contains("This is the first digest"));
    }

    #[test]
    fn no_rendered_sample_prints_a_staff_id_or_a_role_spelling() {
        let templates = built_in();

        for kind in Kind::ALL {
            let out = templates.render(kind, &sample_context(kind)).unwrap();

            for (part, body) in [
                ("subject", &out.subject),
                ("text", &out.text),
                ("html", &out.html),
            ] {
                assert!(
                    !body.contains("S0"),
                    "{kind:?} {part} prints a staff id:\n{body}"
                );
                assert!(
                    !body.contains("role:"),
                    "{kind:?} {part} prints a role:\n{body}"
                );
            }
        }
    }

    #[test]
    fn the_welcome_says_what_qaloop_is_and_lists_work_late_before_go_live_once() {
        let out = built_in()
            .render(Kind::Welcome, &sample_context(Kind::Welcome))
            .unwrap();

        assert_eq!(
            out.subject,
            "Welcome to qaloop: your quality assurance work (2 open)"
        );
        let text = &out.text;
        assert!(text.starts_with("Dear Sam Jones,"), "{text}");
        assert!(text.contains("quality assurance scheduler"), "{text}");
        assert!(
            text.contains("at most one message on a working day"),
            "{text}"
        );
        assert!(text.contains("- Direct observation of practice, April 2027: was due"));
        assert_eq!(
            text.matches("already overdue when qaloop started").count(),
            1,
            "only the before-go-live item says so: {text}"
        );
        assert!(text.contains("https://qaloop.council.example/a/101"));
    }

    #[test]
    fn replies_go_to_the_qa_team_only_when_reply_to_is_set() {
        let templates = built_in();
        let mut ctx = sample_context(Kind::Digest);

        let without = templates.render(Kind::Digest, &ctx).unwrap();
        ctx.replies_to_qa = true;
        let with = templates.render(Kind::Digest, &ctx).unwrap();

        assert!(
            !without
                .text
                .contains("Replies to this message go to the QA team.")
        );
        assert!(
            with.text
                .contains("Replies to this message go to the QA team.")
        );
        assert!(
            with.html
                .contains("Replies to this message go to the QA team.")
        );
    }

    #[test]
    fn no_rendered_sample_contains_an_at_sign() {
        let templates = built_in();

        for kind in Kind::ALL {
            let out = templates.render(kind, &sample_context(kind)).unwrap();

            for (part, body) in [
                ("subject", &out.subject),
                ("text", &out.text),
                ("html", &out.html),
            ] {
                assert!(!body.contains('@'), "{kind:?} {part} contains an @");
            }
        }
    }

    #[test]
    fn html_escapes_a_value_and_text_does_not() {
        let mut ctx = sample_context(Kind::Reminder);
        ctx.items[0].title = "<script>alert(1)</script>".to_owned();

        let out = built_in().render(Kind::Reminder, &ctx).unwrap();

        assert!(out.html.contains("&lt;script&gt;"));
        assert!(!out.html.contains("<script>"));
        assert!(out.text.contains("<script>alert(1)</script>"));
        assert!(out.subject.contains("<script>alert(1)</script>"));
    }

    #[test]
    fn syntax_errors_in_overrides_are_all_reported_with_file_and_line() {
        let dir = override_dir(&[
            ("reminder.txt.j2", "Hello\n\nDue {{ items[0].due_long \n"),
            ("chase.html.j2", "<p>\n{% if %}\n</p>\n"),
        ]);

        let problems = Templates::load(Some(dir.path())).unwrap_err();

        assert_eq!(problems.0.len(), 2, "{problems}");
        let chase = &problems.0[0];
        assert_eq!(chase.file, dir.path().join("chase.html.j2"));
        assert_eq!(chase.location, "line 2");
        assert!(chase.message.starts_with("template syntax error"));
        let reminder = &problems.0[1];
        assert_eq!(reminder.file, dir.path().join("reminder.txt.j2"));
        assert_eq!(reminder.location, "line 3");
    }

    #[test]
    fn an_override_replaces_only_its_own_template() {
        let dir = override_dir(&[(
            "reminder.subject.j2",
            "Please do {{ items[0].title }} by {{ items[0].due_long }}",
        )]);
        let ctx = sample_context(Kind::Reminder);

        let custom = Templates::load(Some(dir.path())).unwrap();
        let out = custom.render(Kind::Reminder, &ctx).unwrap();
        let default = built_in().render(Kind::Reminder, &ctx).unwrap();

        assert_eq!(
            out.subject,
            "Please do Case file audit by Friday 28 May 2027"
        );
        assert_eq!(out.text, default.text);
        assert_eq!(out.html, default.html);
        assert!(custom.check().is_empty());
    }

    #[test]
    fn strict_undefined_makes_a_misspelt_variable_an_error() {
        let dir = override_dir(&[("reminder.txt.j2", "{% for item in itemz %}{% endfor %}\n")]);
        let templates = Templates::load(Some(dir.path())).unwrap();

        let problems = templates.check();
        let rendered = templates.render(Kind::Reminder, &sample_context(Kind::Reminder));

        assert_eq!(problems.0.len(), 1, "{problems}");
        assert_eq!(problems.0[0].file, dir.path().join("reminder.txt.j2"));
        assert_eq!(problems.0[0].location, "line 1");
        assert!(problems.0[0].message.contains("undefined"));
        let Err(TemplateError::Render { template, .. }) = rendered else {
            panic!("rendered {rendered:?}");
        };
        assert_eq!(template, dir.path().join("reminder.txt.j2"));
    }

    #[test]
    fn printing_a_misspelt_variable_is_an_error() {
        let dir = override_dir(&[("test.subject.j2", "Hello {{ itemz }}")]);
        let templates = Templates::load(Some(dir.path())).unwrap();

        let problems = templates.check();

        assert_eq!(problems.0.len(), 1, "{problems}");
        assert_eq!(problems.0[0].file, dir.path().join("test.subject.j2"));
    }

    #[test]
    fn an_empty_subject_or_text_is_a_problem() {
        let dir = override_dir(&[("chase.subject.j2", "  \n"), ("digest.txt.j2", "")]);
        let templates = Templates::load(Some(dir.path())).unwrap();

        let problems = templates.check();

        let files: Vec<_> = problems.0.iter().map(|p| p.file.clone()).collect();
        assert_eq!(
            files,
            [
                dir.path().join("chase.subject.j2"),
                dir.path().join("digest.txt.j2")
            ]
        );
    }

    #[test]
    fn an_unknown_file_or_a_missing_folder_is_a_problem() {
        let dir = override_dir(&[("remider.txt.j2", "typo"), ("README.md", "notes")]);
        let missing = dir.path().join("nowhere");

        let unknown = Templates::load(Some(dir.path())).unwrap_err();
        let absent = Templates::load(Some(&missing)).unwrap_err();

        assert_eq!(unknown.0.len(), 1, "{unknown}");
        assert_eq!(unknown.0[0].file, dir.path().join("remider.txt.j2"));
        assert_eq!(absent.0.len(), 1);
        assert_eq!(absent.0[0].file, missing);
    }

    #[test]
    fn a_subject_is_one_line_of_at_most_150_characters() {
        let dir = override_dir(&[(
            "test.subject.j2",
            "  Line one\n  line   two {% for _ in range(40) %} word{% endfor %}\n",
        )]);
        let templates = Templates::load(Some(dir.path())).unwrap();

        let out = templates
            .render(Kind::Test, &sample_context(Kind::Test))
            .unwrap();

        assert!(out.subject.starts_with("Line one line two word word"));
        assert!(out.subject.chars().count() <= 150);
        assert!(out.subject.ends_with(" w…"));
    }

    #[test]
    fn templates_can_be_shared_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Templates>();
    }

    #[test]
    fn plain_text_keeps_at_most_one_blank_line() {
        assert_eq!(tidy_text("\n\na  \n\n\n\nb\n\n"), "a\n\nb\n");
    }
}
