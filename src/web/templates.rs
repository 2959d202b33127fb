//! The page templates: compiled in from `config/templates/web/`, each overridable by a file of
//! the same name in `[web] templates_dir` (like the message templates).

use std::path::Path;

use minijinja::Environment;

use crate::problem::{Problem, Problems};

/// (name, shipped source) of every page template.
const SHIPPED: &[(&str, &str)] = &[
    (
        "layout.html",
        include_str!("../../config/templates/web/layout.html"),
    ),
    (
        "fields.html",
        include_str!("../../config/templates/web/fields.html"),
    ),
    (
        "work.html",
        include_str!("../../config/templates/web/work.html"),
    ),
    (
        "mywork.html",
        include_str!("../../config/templates/web/mywork.html"),
    ),
    (
        "link_problem.html",
        include_str!("../../config/templates/web/link_problem.html"),
    ),
    (
        "concern.html",
        include_str!("../../config/templates/web/concern.html"),
    ),
    (
        "tracker.html",
        include_str!("../../config/templates/web/tracker.html"),
    ),
    (
        "action.html",
        include_str!("../../config/templates/web/action.html"),
    ),
    (
        "action_new.html",
        include_str!("../../config/templates/web/action_new.html"),
    ),
    (
        "action_raised.html",
        include_str!("../../config/templates/web/action_raised.html"),
    ),
    (
        "message.html",
        include_str!("../../config/templates/web/message.html"),
    ),
];

/// The one stylesheet, served from `/static/qaloop.css`.
pub const CSS: &str = include_str!("../../config/templates/web/qaloop.css");

/// Loads the page templates (HTML auto-escaping on: every value is escaped unless a template
/// says otherwise), reporting every override that does not parse.
pub fn load(dir: Option<&Path>) -> Result<Environment<'static>, Problems> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    let mut problems = Problems::default();
    for (name, shipped) in SHIPPED {
        let (source, file) = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => (text, path),
                Err(e) => {
                    problems.push(Problem::new(&path, "", format!("cannot read: {e}")));
                    continue;
                }
            },
            None => ((*shipped).to_owned(), Path::new(name).to_owned()),
        };
        if let Err(e) = env.add_template_owned(*name, source) {
            problems.push(Problem::new(&file, "", format!("{e:#}")));
        }
    }
    problems.into_result(env)
}
