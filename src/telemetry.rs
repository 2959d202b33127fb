//! Logging via `tracing`: readable lines on a terminal, JSON when configured. `RUST_LOG`
//! overrides the level. Logs carry staff ids and assignment ids, never names or emails.
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) text lines start with a syslog priority
//! prefix (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug/trace), which journald strips and
//! turns into the entry's priority, so `journalctl -p err` finds errors. Without `RUST_LOG`,
//! chatty dependencies (the cron trigger, sqlx, HTTP and SMTP stacks) log warnings only.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Dependencies whose INFO lines are noise to an operator; `RUST_LOG` can bring them back.
const QUIET: &[&str] = &[
    "tokio_cron_scheduler",
    "sqlx",
    "hyper",
    "hyper_util",
    "reqwest",
    "lettre",
    "rustls",
    "h2",
    "axum",
    "tower",
];

/// The filter used when `RUST_LOG` is unset: `default_level` for qaloop, at most warnings from
/// [`QUIET`] crates.
pub fn default_filter(default_level: &str) -> String {
    let mut filter = default_level.to_owned();
    for target in QUIET {
        filter.push_str(&format!(",{target}=warn"));
    }
    filter
}

/// The syslog priority of a level (sd-daemon(3)).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`) names this process's stderr, as systemd.exec(5)
/// says to check: a child that inherited the variable but writes elsewhere gets plain lines.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some((dev, ino)) = value.split_once(':') else {
            return false;
        };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
            return false;
        };
        std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
    }
    #[cfg(not(unix))]
    {
        let _ = value;
        false
    }
}

/// Wraps a formatter, writing `<N>` (the syslog priority) before each line.
struct SyslogPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber; `default_level` applies when `RUST_LOG` is unset. Logs go to
/// stderr so command output on stdout stays machine-readable.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(default_level)));
    let journal = stderr_is_journal();
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match (format, journal) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        // journald timestamps every entry itself.
        (LogFormat::Text, true) => builder
            .event_format(SyslogPrefix(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn the_default_filter_quietens_dependencies_but_not_qaloop() {
        let f = default_filter("info");
        assert!(f.starts_with("info,"), "{f}");
        assert!(f.contains("tokio_cron_scheduler=warn"), "{f}");
        assert!(f.contains("sqlx=warn"), "{f}");
        EnvFilter::new(&f); // parses
    }
}
