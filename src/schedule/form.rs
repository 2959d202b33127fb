//! Forms: what completing an activity records (a case file audit, a direct observation, …),
//! defined in the schedule file, and the pure validator for what someone submitted.
//!
//! ```toml
//! [scales]
//! ofsted = ["Outstanding", "Good", "Requires Improvement", "Inadequate"]
//!
//! [forms.case-file-audit]
//! title = "Case file audit"
//! fields = [
//!   { id = "case_reference", type = "case_reference", label = "Case reference", required = true },
//!   { id = "overall_grade", type = "grade", scale = "ofsted", label = "Overall grade", required = true },
//! ]
//! ```
//!
//! **Invariant:** pure. Values are validated here, once, at the edge; what is stored is exactly
//! what was submitted (trimmed), never rewritten or escaped (escaping is the page's job).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::problem::{Problem, Problems};

/// Blank action rows a form page offers (pages work without JavaScript, so rows cannot be
/// added on the fly; more actions go in a second record or the tracker).
pub const ACTION_ROWS: usize = 3;

/// The case-reference pattern when a field does not set one: letters/digits/`-`/`/`, 3–20.
pub const DEFAULT_CASE_REFERENCE_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9/-]{2,19}$";

/// Longest accepted short text, in characters.
const SHORT_TEXT_MAX: usize = 200;
/// Longest accepted long text, in characters.
const LONG_TEXT_MAX: usize = 10_000;

/// A validated form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// Its id in `[forms.<id>]`.
    pub id: String,
    /// Heading on the page.
    pub title: String,
    /// Fields in page order.
    pub fields: Vec<Field>,
}

/// One question on a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Key of the value in the stored record and the HTML name (lower-case, digits, `_`).
    pub id: String,
    /// The question, as the page's label.
    pub label: String,
    /// Hint under the label.
    pub help: Option<String>,
    /// Whether it must be answered.
    pub required: bool,
    /// What kind of answer.
    pub kind: FieldKind,
}

/// The kinds of answer a field takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// One grade of a named scale (best first).
    Grade {
        /// The scale's name.
        scale: String,
        /// Its grades, best first.
        options: Vec<String>,
    },
    /// One of the listed options.
    Choice {
        /// The options.
        options: Vec<String>,
    },
    /// Yes or no.
    YesNo,
    /// One line of text.
    ShortText,
    /// Paragraphs.
    LongText,
    /// A case reference matching a pattern (never a child's name).
    CaseReference {
        /// The compiled pattern.
        pattern: Pattern,
    },
    /// A date (`YYYY-MM-DD`).
    Date,
    /// Actions raised: description, owner (staff id) and due date each.
    Actions,
}

impl FieldKind {
    /// The schedule-file spelling (`grade`, `yes_no`, …), also what templates switch on.
    pub fn as_str(&self) -> &'static str {
        match self {
            FieldKind::Grade { .. } => "grade",
            FieldKind::Choice { .. } => "choice",
            FieldKind::YesNo => "yes_no",
            FieldKind::ShortText => "short_text",
            FieldKind::LongText => "long_text",
            FieldKind::CaseReference { .. } => "case_reference",
            FieldKind::Date => "date",
            FieldKind::Actions => "actions",
        }
    }

    /// The options a page offers (grades, choices, yes/no); empty for free answers.
    pub fn options(&self) -> Vec<String> {
        match self {
            FieldKind::Grade { options, .. } | FieldKind::Choice { options } => options.clone(),
            FieldKind::YesNo => vec!["yes".into(), "no".into()],
            _ => Vec::new(),
        }
    }
}

/// A compiled case-reference pattern; equal when the source text is.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// A problem with one submitted field; `field` is the HTML id the error summary links to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The input's id (`overall_grade`, `actions.0.owner`).
    pub field: String,
    /// What to do, in the GOV.UK style ("Enter …", "Select …").
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForm {
    title: String,
    #[serde(default)]
    fields: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    label: String,
    #[serde(default)]
    help: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    scale: Option<String>,
    #[serde(default)]
    options: Option<Vec<String>>,
    #[serde(default)]
    pattern: Option<String>,
}

fn valid_field_id(id: &str) -> bool {
    !id.is_empty()
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Validates `[scales]` and `[forms.*]`, reporting every problem with its key.
pub(super) fn parse_forms(
    raw_scales: BTreeMap<String, Vec<String>>,
    raw_forms: BTreeMap<String, RawForm>,
    file: &Path,
    problems: &mut Problems,
) -> BTreeMap<String, Form> {
    for (name, grades) in &raw_scales {
        let unique: HashSet<&String> = grades.iter().collect();
        if grades.len() < 2 || unique.len() != grades.len() {
            problems.push(Problem::new(
                file,
                format!("scales.{name}"),
                "a scale lists two or more different grades, best first",
            ));
        }
    }
    let mut forms = BTreeMap::new();
    for (form_id, raw) in raw_forms {
        let mut fields = Vec::with_capacity(raw.fields.len());
        let mut seen = HashSet::new();
        if raw.fields.is_empty() {
            problems.push(Problem::new(
                file,
                format!("forms.{form_id}.fields"),
                "a form has at least one field",
            ));
        }
        for (i, f) in raw.fields.into_iter().enumerate() {
            let at = |key: &str| format!("forms.{form_id}.fields[{i}] ({}).{key}", f.id);
            if !valid_field_id(&f.id) {
                problems.push(Problem::new(
                    file,
                    at("id"),
                    "field ids start with a lower-case letter and use lower-case letters, digits and `_`",
                ));
            }
            if !seen.insert(f.id.clone()) {
                problems.push(Problem::new(
                    file,
                    at("id"),
                    "duplicate field id in this form",
                ));
            }
            if f.label.trim().is_empty() {
                problems.push(Problem::new(file, at("label"), "every field needs a label"));
            }
            let unused = |key: &str, present: bool, problems: &mut Problems| {
                if present {
                    problems.push(Problem::new(
                        file,
                        at(key),
                        format!("`{key}` does not apply to type `{}`", f.kind),
                    ));
                }
            };
            let kind = match f.kind.as_str() {
                "grade" => {
                    unused("options", f.options.is_some(), problems);
                    unused("pattern", f.pattern.is_some(), problems);
                    match f.scale.as_deref() {
                        None => {
                            problems.push(Problem::new(
                                file,
                                at("scale"),
                                "a grade field names its scale (a key of [scales])",
                            ));
                            None
                        }
                        Some(scale) => match raw_scales.get(scale) {
                            None => {
                                problems.push(Problem::new(
                                    file,
                                    at("scale"),
                                    format!("no scale `{scale}` in [scales]"),
                                ));
                                None
                            }
                            Some(options) => Some(FieldKind::Grade {
                                scale: scale.to_owned(),
                                options: options.clone(),
                            }),
                        },
                    }
                }
                "choice" => {
                    unused("scale", f.scale.is_some(), problems);
                    unused("pattern", f.pattern.is_some(), problems);
                    match &f.options {
                        Some(options) if !options.is_empty() => Some(FieldKind::Choice {
                            options: options.clone(),
                        }),
                        _ => {
                            problems.push(Problem::new(
                                file,
                                at("options"),
                                "a choice field lists its options",
                            ));
                            None
                        }
                    }
                }
                "case_reference" => {
                    unused("scale", f.scale.is_some(), problems);
                    unused("options", f.options.is_some(), problems);
                    let text = f
                        .pattern
                        .as_deref()
                        .unwrap_or(DEFAULT_CASE_REFERENCE_PATTERN);
                    match regex::Regex::new(text) {
                        Ok(pattern) => Some(FieldKind::CaseReference {
                            pattern: Pattern(pattern),
                        }),
                        Err(e) => {
                            problems.push(Problem::new(
                                file,
                                at("pattern"),
                                format!("not a valid regular expression: {e}"),
                            ));
                            None
                        }
                    }
                }
                other => {
                    unused("scale", f.scale.is_some(), problems);
                    unused("options", f.options.is_some(), problems);
                    unused("pattern", f.pattern.is_some(), problems);
                    match other {
                        "yes_no" => Some(FieldKind::YesNo),
                        "short_text" => Some(FieldKind::ShortText),
                        "long_text" => Some(FieldKind::LongText),
                        "date" => Some(FieldKind::Date),
                        "actions" => Some(FieldKind::Actions),
                        _ => {
                            problems.push(Problem::new(
                                file,
                                at("type"),
                                format!(
                                    "unknown type `{other}`: use grade, choice, yes_no, short_text, long_text, case_reference, date or actions"
                                ),
                            ));
                            None
                        }
                    }
                }
            };
            if let Some(kind) = kind {
                fields.push(Field {
                    id: f.id,
                    label: f.label,
                    help: f.help,
                    required: f.required,
                    kind,
                });
            }
        }
        forms.insert(
            form_id.clone(),
            Form {
                id: form_id,
                title: raw.title,
                fields,
            },
        );
    }
    forms
}

/// Validates what someone submitted (`input`: the form's name → value pairs) against `form`.
/// `is_staff` says whether an action owner is a current member of staff. Returns the record's
/// values (a JSON object keyed by field id; unanswered optional fields left out) or every
/// problem, in page order.
pub fn validate(
    form: &Form,
    input: &HashMap<String, String>,
    is_staff: &dyn Fn(&str) -> bool,
) -> Result<Value, Vec<FieldError>> {
    let mut values = Map::new();
    let mut errors = Vec::new();
    let get = |name: &str| input.get(name).map(|v| v.trim()).unwrap_or("");
    for field in &form.fields {
        let label = field.label.trim_end_matches('?').to_lowercase();
        let mut error = |message: String| {
            errors.push(FieldError {
                field: field.id.clone(),
                message,
            })
        };
        if let FieldKind::Actions = field.kind {
            let mut actions = Vec::new();
            for n in 0..ACTION_ROWS {
                let name = |part: &str| format!("{}.{n}.{part}", field.id);
                let (description, owner, due) = (
                    get(&name("description")),
                    get(&name("owner")),
                    get(&name("due")),
                );
                if description.is_empty() && owner.is_empty() && due.is_empty() {
                    continue;
                }
                let mut row_error = |part: &str, message: String| {
                    errors.push(FieldError {
                        field: name(part),
                        message,
                    })
                };
                if description.is_empty() {
                    row_error("description", format!("Describe action {}", n + 1));
                } else if description.chars().count() > SHORT_TEXT_MAX * 5 {
                    row_error(
                        "description",
                        format!("Action {} must be 1,000 characters or fewer", n + 1),
                    );
                }
                if owner.is_empty() {
                    row_error(
                        "owner",
                        format!("Enter the staff id of who owns action {}", n + 1),
                    );
                } else if !is_staff(owner) {
                    row_error(
                        "owner",
                        format!(
                            "Action {}: `{owner}` is not a current staff id; enter the owner's staff id",
                            n + 1
                        ),
                    );
                }
                if due.parse::<jiff::civil::Date>().is_err() {
                    row_error(
                        "due",
                        format!(
                            "Enter a due date for action {} (for example 2027-06-30)",
                            n + 1
                        ),
                    );
                }
                actions.push(json!({ "description": description, "owner": owner, "due": due }));
            }
            if actions.is_empty() {
                if field.required {
                    errors.push(FieldError {
                        field: format!("{}.0.description", field.id),
                        message: format!("Enter at least one action for {label}"),
                    });
                }
            } else {
                values.insert(field.id.clone(), Value::Array(actions));
            }
            continue;
        }
        let value = get(&field.id);
        if value.is_empty() {
            if field.required {
                error(match field.kind {
                    FieldKind::YesNo => format!("Select yes or no: {}", field.label),
                    FieldKind::Grade { .. } | FieldKind::Choice { .. } => format!("Select {label}"),
                    _ => format!("Enter {label}"),
                });
            }
            continue;
        }
        let ok = match &field.kind {
            FieldKind::Grade { options, .. } | FieldKind::Choice { options } => {
                options.iter().any(|o| o == value) || {
                    error(format!("Select one of the listed options for {label}"));
                    false
                }
            }
            FieldKind::YesNo => {
                value == "yes" || value == "no" || {
                    error(format!("Select yes or no for {label}"));
                    false
                }
            }
            FieldKind::ShortText => {
                value.chars().count() <= SHORT_TEXT_MAX || {
                    error(format!(
                        "{} must be {SHORT_TEXT_MAX} characters or fewer",
                        field.label
                    ));
                    false
                }
            }
            FieldKind::LongText => {
                value.chars().count() <= LONG_TEXT_MAX || {
                    error(format!(
                        "{} must be 10,000 characters or fewer",
                        field.label
                    ));
                    false
                }
            }
            FieldKind::CaseReference { pattern } => {
                pattern.0.is_match(value) || {
                    error(
                        "Enter the case reference as it appears in the case record (never a name)"
                            .to_owned(),
                    );
                    false
                }
            }
            FieldKind::Date => {
                value.parse::<jiff::civil::Date>().is_ok() || {
                    error(format!("Enter {label} as a date, for example 2027-06-30"));
                    false
                }
            }
            FieldKind::Actions => unreachable!("handled above"),
        };
        if ok {
            values.insert(field.id.clone(), Value::String(value.to_owned()));
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(values))
    } else {
        Err(errors)
    }
}

/// The form a moderator fills in for an audit recorded on `audit`: for each graded field,
/// "do you agree?" and the grade they would give instead; then feedback for the auditor.
pub fn moderation_form(audit: &Form) -> Form {
    let mut fields = Vec::new();
    for f in audit.grade_fields() {
        fields.push(Field {
            id: format!("agree_{}", f.id),
            label: format!(
                "Do you agree with the grade for {}?",
                f.label.to_lowercase()
            ),
            help: None,
            required: true,
            kind: FieldKind::YesNo,
        });
        fields.push(Field {
            id: format!("grade_{}", f.id),
            label: format!(
                "Your grade for {} (if you disagree)",
                f.label.to_lowercase()
            ),
            help: None,
            required: false,
            kind: f.kind.clone(),
        });
    }
    fields.push(Field {
        id: "feedback".into(),
        label: "Feedback for the auditor".into(),
        help: Some("The auditor sees this with your grades.".into()),
        required: true,
        kind: FieldKind::LongText,
    });
    Form {
        id: "moderation".into(),
        title: format!("Moderation of a {}", audit.title.to_lowercase()),
        fields,
    }
}

/// One graded field's moderation: (field id, the audit's grade, agreed, the moderated grade).
pub type Judgement = (String, String, bool, Option<String>);

/// Checks a validated moderation (`values` of [`moderation_form`]) against the audit's values:
/// disagreeing needs a different grade. Returns the judgement on each graded field.
pub fn judge(
    audit: &Form,
    audit_values: &Value,
    values: &Value,
) -> Result<Vec<Judgement>, Vec<FieldError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in audit.grade_fields() {
        let Some(audit_grade) = audit_values.get(&f.id).and_then(Value::as_str) else {
            continue; // not graded by the auditor: nothing to moderate
        };
        let agreed = values
            .get(format!("agree_{}", f.id))
            .and_then(Value::as_str)
            == Some("yes");
        let grade = values
            .get(format!("grade_{}", f.id))
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (agreed, grade) {
            (true, _) => out.push((f.id.clone(), audit_grade.to_owned(), true, None)),
            (false, Some(g)) if g != audit_grade => {
                out.push((f.id.clone(), audit_grade.to_owned(), false, Some(g)))
            }
            (false, _) => errors.push(FieldError {
                field: format!("grade_{}", f.id),
                message: format!(
                    "Select the grade you would give for {} (different from {audit_grade})",
                    f.label.to_lowercase()
                ),
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

impl Form {
    /// The graded fields (overall and each golden thread): what a moderation judges.
    pub fn grade_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields
            .iter()
            .filter(|f| matches!(f.kind, FieldKind::Grade { .. }))
    }

    /// The field with `id`.
    pub fn field(&self, id: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.id == id)
    }
}

/// The built-in form of activities without one: done, with an optional note.
pub fn note_form() -> Form {
    Form {
        id: "note".into(),
        title: String::new(),
        fields: vec![Field {
            id: "note".into(),
            label: "Note (optional)".into(),
            help: Some("Anything the QA team should know. Never a child's name.".into()),
            required: false,
            kind: FieldKind::LongText,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;

    fn shipped() -> Schedule {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/schedule.toml");
        Schedule::parse(&std::fs::read_to_string(path).unwrap(), Path::new(path)).unwrap()
    }

    fn audit_input() -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("case_reference", "CIN-004512"),
            ("overall_grade", "Good"),
            ("thread_assessment", "Good"),
            ("thread_planning", "Inadequate"),
            ("thread_chronology", "Good"),
            ("thread_supervision", "Outstanding"),
            ("thread_childs_voice", "Requires Improvement"),
            ("thread_parent_engagement", "Good"),
            ("child_asked", "yes"),
            ("family_asked", "no"),
            ("went_well", "Visits on time"),
            ("to_improve", "<script>alert(1)</script> plan"),
            ("feedback_given", "yes"),
            ("feedback_date", "2027-06-10"),
            ("urgent_concern", "no"),
            ("health_concern", "no"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        m.insert("actions.0.description".into(), "Update the plan".into());
        m.insert("actions.0.owner".into(), "P1".into());
        m.insert("actions.0.due".into(), "2027-07-01".into());
        m
    }

    #[test]
    fn the_shipped_audit_has_the_six_golden_threads_on_the_ofsted_scale() {
        let s = shipped();
        let audit = s.form_of(s.activity("file-audit").unwrap()).unwrap();
        let threads: Vec<&str> = audit
            .grade_fields()
            .map(|f| f.label.as_str())
            .filter(|l| *l != "Overall grade")
            .collect();
        assert_eq!(
            threads,
            [
                "Quality of assessment",
                "Quality of planning",
                "The use of chronologies",
                "Management supervision",
                "The child's voice",
                "Parent/carer engagement"
            ]
        );
        assert_eq!(
            audit.field("overall_grade").unwrap().kind.options(),
            ["Outstanding", "Good", "Requires Improvement", "Inadequate"]
        );
        let moderation = s.activity("audit-moderation").unwrap();
        assert_eq!(s.moderated_form(moderation).unwrap().id, "case-file-audit");
        assert!(
            s.form_of(s.activity("direct-observation").unwrap())
                .is_some()
        );
        assert!(
            s.form_of(s.activity("supervision-audit").unwrap())
                .is_some()
        );
    }

    #[test]
    fn a_complete_audit_is_stored_verbatim() {
        let s = shipped();
        let audit = &s.forms["case-file-audit"];
        let values = validate(audit, &audit_input(), &|id| id == "P1").unwrap();
        assert_eq!(values["to_improve"], "<script>alert(1)</script> plan");
        assert_eq!(values["thread_planning"], "Inadequate");
        assert_eq!(values["actions"][0]["owner"], "P1");
        assert!(values.get("child_view").is_none());
    }

    #[test]
    fn every_bad_value_is_reported_against_its_field() {
        let s = shipped();
        let audit = &s.forms["case-file-audit"];
        let mut input = audit_input();
        input.remove("went_well");
        input.insert("overall_grade".into(), "Brilliant".into());
        input.insert("case_reference".into(), "Jane Smith".into());
        input.insert("feedback_date".into(), "next week".into());
        input.insert("actions.1.description".into(), "Another".into());
        input.insert("actions.0.owner".into(), "NOBODY".into());
        let errors = validate(audit, &input, &|id| id == "P1").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "case_reference",
                "overall_grade",
                "went_well",
                "feedback_date",
                "actions.0.owner",
                "actions.1.owner",
                "actions.1.due"
            ],
            "{errors:?}"
        );
        assert!(errors[0].message.contains("never a name"), "{errors:?}");
        assert_eq!(errors[2].message, "Enter what went well");
    }

    #[test]
    fn a_moderator_who_disagrees_gives_a_different_grade() {
        let s = shipped();
        let audit = &s.forms["case-file-audit"];
        let audit_values = validate(audit, &audit_input(), &|_| true).unwrap();
        let form = moderation_form(audit);
        let mut input: HashMap<String, String> = audit
            .grade_fields()
            .map(|f| (format!("agree_{}", f.id), "yes".to_owned()))
            .collect();
        input.insert("feedback".into(), "Sound audit".into());
        input.insert("agree_thread_planning".into(), "no".into());
        let values = validate(&form, &input, &|_| true).unwrap();
        let errors = judge(audit, &audit_values, &values).unwrap_err();
        assert_eq!(errors[0].field, "grade_thread_planning");

        input.insert(
            "grade_thread_planning".into(),
            "Requires Improvement".into(),
        );
        let values = validate(&form, &input, &|_| true).unwrap();
        let judged = judge(audit, &audit_values, &values).unwrap();
        assert_eq!(judged.len(), 7);
        assert!(judged.contains(&(
            "thread_planning".into(),
            "Inadequate".into(),
            false,
            Some("Requires Improvement".into())
        )));
    }

    #[test]
    fn a_bad_form_definition_names_each_key() {
        let text = r#"
roles = ["slt", "team_manager", "service_lead", "qa_admin"]
[scales]
ofsted = ["Good"]
[forms.audit]
title = "Audit"
fields = [
  { id = "Grade", type = "grade", scale = "nope", label = "G" },
  { id = "ref", type = "case_reference", label = "Ref", pattern = "([" },
  { id = "pick", type = "choice", label = "Pick" },
  { id = "x", type = "colour", label = "X" },
]
[[activity]]
id = "closing-the-loop-review"
title = "R"
owner_role = "slt"
cadence = "monthly"
fan_out = "role"
due = { rule = "last_working_day" }
form = "missing"
"#;
        let problems = Schedule::parse(text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        for key in [
            "scales.ofsted",
            "forms.audit.fields[0] (Grade).id",
            "forms.audit.fields[0] (Grade).scale: no scale `nope`",
            "forms.audit.fields[1] (ref).pattern",
            "forms.audit.fields[2] (pick).options",
            "forms.audit.fields[3] (x).type: unknown type `colour`",
            "activity[0] (closing-the-loop-review).form: no form `missing`",
        ] {
            assert!(problems.contains(key), "{key} missing in:\n{problems}");
        }
    }
}
