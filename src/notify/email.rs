//! Email channels: SMTP submission through lettre ([`SmtpChannel`]), and `.eml` files in a folder
//! ([`FileChannel`]). Both send the same message, built by [`build_email`].
//!
//! Every email is `multipart/alternative` (text and HTML from one template), carries a
//! `Message-ID` derived from the outbox key (so a retry is recognisably the same message),
//! `Auto-Submitted: auto-generated` (RFC 3834, so auto-responders stay quiet), and, for a due
//! date, a `due.ics` attachment built by [`super::ics`].
//!
//! **Invariant:** errors and logs name staff ids, never email addresses; an SMTP reply quoted in
//! an error has its addresses replaced by `[address]`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lettre::Address;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Channel, DeliverFuture, DeliveryError, Message, Recipient, Secret};

/// `kind = "email"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Channel name, for routing.
    pub name: String,
    /// Relay host.
    pub host: String,
    /// Relay port [default by security: 587 starttls, 465 tls, 25 none].
    pub port: Option<u16>,
    /// `starttls`, `tls` (implicit) or `none` (loopback relays only).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// SMTP AUTH user.
    pub username: Option<String>,
    /// SMTP AUTH password, inline.
    pub password: Option<Secret>,
    /// SMTP AUTH password, from a file.
    pub password_file: Option<PathBuf>,
    /// `From:` mailbox, e.g. `QA schedule <qa@council.gov.uk>`.
    pub from: String,
    /// `Reply-To:` mailbox.
    pub reply_to: Option<String>,
    /// Upper bound on one whole SMTP dialogue, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Idle connections kept open between sends (at least `connections`; one idle for a minute
    /// is closed when next needed).
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// Messages sent at once, each over a connection of its own (1: one at a time, in queue
    /// order). A big morning (7,000 daily messages at national size) goes out in about
    /// 1/`connections` of the time when the relay allows that many connections from one client.
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// A PEM file of CA certificates to trust for the relay besides the system's: a council's
    /// private CA, or a test server's own. Relative paths resolve against the config folder.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS: only for a relay on loopback.
    None,
}

/// `kind = "file"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Channel name, for routing.
    pub name: String,
    /// Folder the `.eml` files go to (created if missing).
    pub dir: PathBuf,
    /// `From:` mailbox.
    pub from: String,
    /// `Reply-To:` mailbox.
    pub reply_to: Option<String>,
}

fn default_timeout() -> u64 {
    30
}
fn default_pool() -> u32 {
    4
}
fn default_connections() -> u32 {
    1
}
/// The most `connections` allowed: a relay sees these as one client's parallel sessions.
const MAX_CONNECTIONS: u32 = 16;

/// Builds the email for `message`: text and HTML alternatives, a `Message-ID` stable per
/// outbox key, `Auto-Submitted`, and a `due.ics` attachment when the message has a due date.
///
/// A recipient without an address, or with one that does not parse, is
/// [`DeliveryError::Permanent`] naming the staff id: retrying cannot fix the staff file.
/// `from` and `reply_to` are mailboxes such as `QA schedule <qa@council.gov.uk>`.
pub fn build_email(
    message: &Message,
    from: &str,
    reply_to: Option<&str>,
) -> Result<lettre::Message, DeliveryError> {
    let sender =
        Sender::parse(from, reply_to).map_err(|reason| DeliveryError::Permanent { reason })?;
    compose(message, &sender)
}

/// Who an email is from: a channel's `from` and `reply_to`, parsed once when it is built.
#[derive(Debug)]
struct Sender {
    /// `From:`.
    from: Mailbox,
    /// `Reply-To:`.
    reply_to: Option<Mailbox>,
}

impl Sender {
    /// Parses both mailboxes; the error starts with the bad setting's key (`from`, `reply_to`)
    /// and does not echo the text.
    fn parse(from: &str, reply_to: Option<&str>) -> Result<Self, String> {
        let mailbox = |key: &str, text: &str| {
            text.parse::<Mailbox>()
                .map_err(|error| format!("{key}: not a valid mailbox ({error})"))
        };
        Ok(Self {
            from: mailbox("from", from)?,
            reply_to: reply_to.map(|text| mailbox("reply_to", text)).transpose()?,
        })
    }
}

/// [`build_email`] with the sender already parsed.
fn compose(message: &Message, sender: &Sender) -> Result<lettre::Message, DeliveryError> {
    let to = recipient_mailbox(&message.recipient)?;

    let mut builder = lettre::Message::builder()
        .from(sender.from.clone())
        .to(to)
        .subject(message.subject.as_str())
        .message_id(Some(message_id(&message.key)))
        .date(std::time::SystemTime::from(message.composed_at))
        .header(AutoSubmitted);
    if let Some(reply_to) = &sender.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }

    let alternative = MultiPart::alternative_plain_html(message.text.clone(), message.html.clone());
    let body = match &message.calendar {
        None => alternative,
        Some(event) => {
            // DTSTAMP says when this copy was made, so a calendar keeps the newest copy.
            let ics = super::ics::calendar(event, message.composed_at);
            MultiPart::mixed()
                .multipart(alternative)
                .singlepart(Attachment::new("due.ics".to_owned()).body(ics, calendar_type()))
        }
    };

    builder
        .multipart(body)
        .map_err(|error| DeliveryError::Permanent {
            reason: format!(
                "cannot build the email for staff {}: {error}",
                message.recipient.staff_id
            ),
        })
}

/// The recipient's address as a `To:` mailbox, or a permanent error naming only the staff id.
fn recipient_mailbox(recipient: &Recipient) -> Result<Mailbox, DeliveryError> {
    let Some(email) = recipient.email.as_deref() else {
        return Err(DeliveryError::Permanent {
            reason: format!("staff {} has no email address", recipient.staff_id),
        });
    };
    let address: Address = email.trim().parse().map_err(|_| DeliveryError::Permanent {
        reason: format!(
            "staff {} has an email address that is not valid",
            recipient.staff_id
        ),
    })?;
    Ok(Mailbox::new(None, address))
}

/// `text/calendar; method=PUBLISH`: `REQUEST` would make Outlook treat it as an invitation.
fn calendar_type() -> ContentType {
    ContentType::parse("text/calendar; method=PUBLISH; charset=utf-8")
        .expect("a constant, valid content type")
}

/// `<{key token}@qaloop>`: the same outbox key always gives the same id, so a retry that reaches
/// the recipient twice is recognisably one message.
fn message_id(key: &str) -> String {
    format!("<{}@qaloop>", key_token(key))
}

/// The longest part of a key kept readable in ids and file names.
const TOKEN_MAX: usize = 100;

/// A key reduced to `[A-Za-z0-9_-]`, safe as a `Message-ID` left part and as a file name.
///
/// A key that is already safe (and not too long) is used as it is. Otherwise unsafe characters
/// become `-` and a short hash of the whole key is appended, so two keys that differ only in
/// what was replaced still get different tokens.
fn key_token(key: &str) -> String {
    let mut token: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if token == key && !token.is_empty() && token.len() <= TOKEN_MAX {
        return token;
    }
    // Only ASCII is left, so truncating by bytes cannot split a character.
    token.truncate(TOKEN_MAX);
    token.push('-');
    for byte in &Sha256::digest(key.as_bytes())[..8] {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

/// `Auto-Submitted: auto-generated` (RFC 3834): tells auto-responders (out-of-office, "this
/// mailbox is not monitored") not to answer. lettre has no type for it, and a typed header
/// cannot be misspelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        if text.trim().eq_ignore_ascii_case("auto-generated") {
            Ok(AutoSubmitted)
        } else {
            Err(format!("unsupported Auto-Submitted value {text:?}").into())
        }
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// Sends through an SMTP relay, keeping connections open between sends.
///
/// lettre's own timeout bounds only the TCP connect; a relay that accepts and then stalls would
/// hang a send forever, so every send is also bounded by `timeout_seconds` as a whole.
///
/// The channel keeps its own few idle connections ([`lettre`]'s [`AsyncSmtpConnection`], each
/// made as lettre's transport makes one: connect, implicit TLS or STARTTLS, EHLO, AUTH) instead
/// of lettre's pooled transport, because that pool sends a `NOOP` before every reuse: one round
/// trip of the five a message takes. Here a connection used within the last
/// [`REUSE_UNCHECKED`] is reused as it is (a dispatch's lane sends back to back); one idle for
/// longer is checked with a `NOOP` first, as lettre did, and one idle for [`IDLE_TIMEOUT`] or
/// more is closed and replaced. A connection on which anything failed, or whose send ran out of
/// time mid-dialogue, is never reused.
pub struct SmtpChannel {
    /// `[[channels]] name`.
    name: String,
    /// `From:` and `Reply-To:`.
    sender: Sender,
    /// Bound on one whole send: connect, TLS, AUTH, envelope and data.
    timeout: Duration,
    /// `connections`: messages the dispatcher may send at once.
    connections: usize,
    /// Where and how to open a connection.
    relay: Relay,
    /// Open connections not in use, the most recently used last. A `std` mutex, held only to
    /// push or pop.
    idle: Mutex<Vec<Parked>>,
    /// The most idle connections kept: `pool_size`, and at least `connections`, so that every
    /// lane finds its connection again.
    keep: usize,
}

/// How to reach the relay.
struct Relay {
    /// Host name or address.
    host: String,
    /// Port.
    port: u16,
    /// `security`.
    security: SmtpSecurity,
    /// TLS settings, unless `security = "none"`.
    tls: Option<TlsParameters>,
    /// SMTP AUTH, tried with lettre's default mechanisms (PLAIN, LOGIN).
    credentials: Option<Credentials>,
    /// The `EHLO` name: this host's, as lettre's transport sends.
    hello: ClientId,
}

/// An idle connection and when it was last used.
struct Parked {
    /// The connection, between messages.
    connection: AsyncSmtpConnection,
    /// When its last send finished.
    since: tokio::time::Instant,
}

/// A connection used at most this long ago is reused without a `NOOP` first.
const REUSE_UNCHECKED: Duration = Duration::from_secs(1);
/// A connection idle this long is closed, not reused (lettre's pool's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl SmtpChannel {
    /// Builds the channel from its settings, reading the password and CA files now so a bad
    /// setting fails at start-up. The error names the setting: `channels.<name>.<key>: …`.
    /// Relative files resolve against `base_dir` (the config file's folder).
    pub fn new(settings: &SmtpSettings, base_dir: &Path) -> Result<Self, String> {
        super::install_crypto_provider();
        let name = &settings.name;
        let bad = |key: &str, problem: String| format!("channels.{name}.{key}: {problem}");

        let sender = Sender::parse(&settings.from, settings.reply_to.as_deref())
            .map_err(|e| format!("channels.{name}.{e}"))?;
        if settings.timeout_seconds == 0 {
            return Err(bad("timeout_seconds", "must be at least 1".to_owned()));
        }
        let timeout = Duration::from_secs(settings.timeout_seconds);
        if !(1..=MAX_CONNECTIONS).contains(&settings.connections) {
            return Err(bad(
                "connections",
                format!("must be from 1 to {MAX_CONNECTIONS}"),
            ));
        }

        let password_key = if settings.password.is_none() && settings.password_file.is_some() {
            "password_file"
        } else {
            "password"
        };
        let password = super::settings::resolve_secret(
            settings.password.as_ref(),
            settings.password_file.as_ref(),
            base_dir,
        )
        .map_err(|e| bad(password_key, e))?;
        let credentials = match (&settings.username, password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad("password", "a username needs a password".to_owned()));
            }
            (None, Some(_)) => {
                return Err(bad("username", "a password needs a username".to_owned()));
            }
        };

        let tls = match settings.security {
            SmtpSecurity::None => None,
            SmtpSecurity::Starttls | SmtpSecurity::Tls => Some(tls_parameters(settings, base_dir)?),
        };
        let port = settings.port.unwrap_or(match settings.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        });

        Ok(Self {
            name: name.clone(),
            sender,
            timeout,
            connections: settings.connections as usize,
            relay: Relay {
                host: settings.host.clone(),
                port,
                security: settings.security,
                tls,
                credentials,
                hello: ClientId::default(),
            },
            idle: Mutex::new(Vec::new()),
            keep: settings.pool_size.max(settings.connections) as usize,
        })
    }

    /// A new connection, made as lettre's transport makes one: TCP (bounded by the timeout),
    /// TLS from the first byte or STARTTLS (required), EHLO, then AUTH when configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let relay = &self.relay;
        let wrapper = match relay.security {
            SmtpSecurity::Tls => relay.tls.clone(),
            SmtpSecurity::Starttls | SmtpSecurity::None => None,
        };
        let mut connection = AsyncSmtpConnection::connect_tokio1(
            (relay.host.as_str(), relay.port),
            Some(self.timeout),
            &relay.hello,
            wrapper,
            None,
        )
        .await?;
        if let (SmtpSecurity::Starttls, Some(tls)) = (relay.security, &relay.tls) {
            connection.starttls(tls.clone(), &relay.hello).await?;
        }
        if let Some(credentials) = &relay.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(connection)
    }

    /// A connection to send on: an idle one (checked with a `NOOP` if idle for a while), or a
    /// new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        while let Some(Parked {
            mut connection,
            since,
        }) = self.take_idle()
        {
            let idle = since.elapsed();
            if idle < IDLE_TIMEOUT && (idle < REUSE_UNCHECKED || connection.test_connected().await)
            {
                return Ok(connection);
            }
            connection.abort().await;
        }
        self.connect().await
    }

    /// The most recently used idle connection, if any.
    fn take_idle(&self) -> Option<Parked> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Keeps `connection`, just used, for the next send (unless enough are kept already: then
    /// it is dropped, which closes it).
    fn park(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep && !connection.has_broken() {
            idle.push(Parked {
                connection,
                since: tokio::time::Instant::now(),
            });
        }
    }
}

/// TLS for the relay: the system's roots, plus `ca_file` when given.
fn tls_parameters(settings: &SmtpSettings, base_dir: &Path) -> Result<TlsParameters, String> {
    let name = &settings.name;
    let mut builder = TlsParameters::builder(settings.host.clone());
    if let Some(ca_file) = &settings.ca_file {
        let path = base_dir.join(ca_file);
        let pem = std::fs::read(&path).map_err(|e| {
            format!(
                "channels.{name}.ca_file: cannot read {}: {e}",
                path.display()
            )
        })?;
        let certificate = Certificate::from_pem(&pem).map_err(|e| {
            format!(
                "channels.{name}.ca_file: {} is not a PEM certificate: {e}",
                path.display()
            )
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| format!("channels.{name}.security: cannot set up TLS: {e}"))
}

impl Channel for SmtpChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn reaches(&self, recipient: &Recipient) -> bool {
        recipient.email.is_some()
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn deliver<'a>(&'a self, message: &'a Message) -> DeliverFuture<'a> {
        Box::pin(async move {
            let email = compose(message, &self.sender)?;
            let bytes = email.formatted();
            let send = async {
                let mut connection = self.checkout().await?;
                let response = connection.send(email.envelope(), &bytes).await?;
                // Only a connection whose whole dialogue succeeded is reused (lettre closes
                // one on which a command failed).
                self.park(connection);
                Ok::<_, lettre::transport::smtp::Error>(response)
            };
            // A send cut off here drops its connection mid-dialogue with it: never reused.
            match tokio::time::timeout(self.timeout, send).await {
                Ok(Ok(_response)) => Ok(()),
                Ok(Err(error)) => Err(classify(&error)),
                Err(_elapsed) => Err(DeliveryError::Temporary {
                    reason: format!(
                        "the relay did not complete the send within {} s",
                        self.timeout.as_secs()
                    ),
                    retry_after: None,
                }),
            }
        })
    }
}

impl fmt::Debug for SmtpChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Sorts an SMTP failure into permanent (a 5xx reply: the relay refused, and will refuse again)
/// and temporary (everything else: 4xx replies, refused or reset connections, TLS failures,
/// timeouts, a reply cut short by a closed pooled connection, a relay that lacks STARTTLS or a
/// common AUTH mechanism until someone fixes its configuration).
fn classify(error: &lettre::transport::smtp::Error) -> DeliveryError {
    let reason = format!("SMTP relay: {}", redact_addresses(&error.to_string()));
    if error.is_permanent() {
        DeliveryError::Permanent { reason }
    } else {
        DeliveryError::Temporary {
            reason,
            retry_after: None,
        }
    }
}

/// Replaces every word containing `@` with `[address]`: relays quote the recipient in replies
/// ("550 5.1.1 <someone@example.org>: unknown user"), and errors must not carry addresses.
fn redact_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                "[address]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes each message as `<dir>/<key token>.eml`, for trying qaloop out and for relays that
/// pick up files. Delivering the same key again overwrites the same file. Before its first
/// write a channel removes the temporary files that writers no longer running left behind
/// (a `kill -9` between create and rename), so crashes do not accumulate them.
#[derive(Debug)]
pub struct FileChannel {
    /// `[[channels]] name`.
    name: String,
    /// The folder, already resolved against the config folder.
    dir: PathBuf,
    /// `From:` and `Reply-To:`.
    sender: Sender,
    /// Set once the folder has been swept of dead writers' temporary files: once per process
    /// is enough, since files this process leaves are swept by the next one.
    swept: std::sync::atomic::AtomicBool,
}

impl FileChannel {
    /// Builds the channel; a relative `dir` resolves against `base_dir` (the config file's
    /// folder). Creates nothing yet: the folder is made when the first message is written. The
    /// error names the setting: `channels.<name>.<key>: …`.
    pub fn new(settings: &FileSettings, base_dir: &Path) -> Result<Self, String> {
        let name = &settings.name;
        let sender = Sender::parse(&settings.from, settings.reply_to.as_deref())
            .map_err(|e| format!("channels.{name}.{e}"))?;
        Ok(Self {
            name: name.clone(),
            dir: base_dir.join(&settings.dir),
            sender,
            swept: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The file a message with this outbox key is written to.
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.eml", key_token(key)))
    }
}

impl Channel for FileChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn reaches(&self, recipient: &Recipient) -> bool {
        recipient.email.is_some()
    }

    fn deliver<'a>(&'a self, message: &'a Message) -> DeliverFuture<'a> {
        Box::pin(async move {
            let bytes = compose(message, &self.sender)?.formatted();
            let path = self.path_for(&message.key);
            let sweep = !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed);
            tokio::task::spawn_blocking(move || {
                if sweep && let Some(dir) = path.parent() {
                    sweep_stale_temps(dir, std::time::SystemTime::now());
                }
                write_atomically(&path, &bytes)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|written| written.map_err(|e| e.to_string()))
            .map_err(|problem| DeliveryError::Temporary {
                reason: format!("cannot write to {}: {problem}", self.dir.display()),
                retry_after: None,
            })
        })
    }
}

/// Writes `bytes` to `path` through a synced temporary file in the same folder and a rename, so
/// a reader (or a crash) sees the old file or the whole new one, never half of one. The
/// temporary name, `.<file>.<pid>-<random>.tmp`, starts with `.` and does not end in `.eml`, so
/// pickers of `*.eml` skip it, and names its writer, so [`sweep_stale_temps`] can tell a
/// dead writer's leftover from a live writer's file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;

    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{file_name}.{}-{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        // Best effort: the write already failed, and that is the error worth reporting.
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// How old a temporary file without a writer's pid (written before names carried one) must be
/// before [`sweep_stale_temps`] removes it.
const UNOWNED_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Removes the temporary files in `dir` whose writer is no longer running (its pid has no
/// `/proc` entry), and those without a pid older than [`UNOWNED_TEMP_AGE`]. Best effort: a file
/// that cannot be read or removed is left. Where `/proc` is missing nothing is removed. A live
/// writer on another host sharing the folder could lose its file; its rename then fails, the
/// delivery is temporary and retried, so nothing is lost.
fn sweep_stale_temps(dir: &Path, now: std::time::SystemTime) -> usize {
    if !Path::new("/proc/self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .filter(|n| n.contains(".eml."))
        else {
            continue;
        };
        let owner = stem.rsplit('.').next().unwrap_or_default();
        let stale = match owner.split_once('-') {
            Some((pid, _)) if pid.parse::<u32>().is_ok() => !Path::new("/proc").join(pid).exists(),
            _ => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() > UNOWNED_TEMP_AGE),
        };
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed temporary files left by writers that stopped");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{CalendarEvent, Kind};
    use jiff::civil::date;

    fn message() -> Message {
        Message {
            key: "reminder:A-7:2026-03-31:S100".to_owned(),
            kind: Kind::Reminder,
            recipient: Recipient {
                staff_id: "S100".to_owned(),
                email: Some("pat.jones@council.example".to_owned()),
                chat_id: None,
            },
            subject: "Case file audit due 31 March".to_owned(),
            text: "Your case file audit is due on 31 March.".to_owned(),
            html: "<p>Your case file audit is due on 31 March.</p>".to_owned(),
            link: Some("https://qa.example/work/7".to_owned()),
            calendar: None,
            composed_at: jiff::Timestamp::from_second(1_780_000_000).unwrap(),
        }
    }

    fn formatted(email: &lettre::Message) -> String {
        String::from_utf8(email.formatted()).unwrap()
    }

    #[test]
    fn an_email_has_both_alternatives_and_the_headers() {
        let email = build_email(
            &message(),
            "QA schedule <qa@council.example>",
            Some("qa-team@council.example"),
        )
        .unwrap();

        let text = formatted(&email);
        assert!(
            text.contains("From: \"QA schedule\" <qa@council.example>\r\n"),
            "{text}"
        );
        assert!(text.contains("To: pat.jones@council.example\r\n"), "{text}");
        assert!(
            text.contains("Reply-To: qa-team@council.example\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Subject: Case file audit due 31 March\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Auto-Submitted: auto-generated\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: multipart/alternative"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/html; charset=utf-8"),
            "{text}"
        );
        assert!(text.contains("Your case file audit is due on 31 March."));
        assert!(!text.contains("text/calendar"));
        assert_eq!(
            email.envelope().to(),
            ["pat.jones@council.example".parse::<Address>().unwrap()]
        );
    }

    #[test]
    fn the_message_id_is_the_same_for_the_same_key() {
        let first = build_email(&message(), "qa@council.example", None).unwrap();
        let second = build_email(&message(), "qa@council.example", None).unwrap();

        let id =
            |email: &lettre::Message| email.headers().get_raw("Message-ID").unwrap().to_owned();
        assert_eq!(id(&first), id(&second));
        assert!(id(&first).starts_with("<reminder-A-7-2026-03-31-S100-"));
        assert!(id(&first).ends_with("@qaloop>"));
    }

    #[test]
    fn a_due_date_adds_a_published_calendar_attachment() {
        let mut message = message();
        message.calendar = Some(CalendarEvent {
            uid: "assignment-7@qaloop".to_owned(),
            date: date(2026, 3, 31),
            summary: "Case file audit".to_owned(),
            url: None,
        });

        let text = formatted(&build_email(&message, "qa@council.example", None).unwrap());

        assert!(text.contains("Content-Type: multipart/mixed"), "{text}");
        assert!(
            text.contains("Content-Type: multipart/alternative"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/calendar; method=PUBLISH; charset=utf-8"),
            "{text}"
        );
        assert!(text.contains("filename=\"due.ics\""), "{text}");
        assert!(text.contains("DTSTART;VALUE=DATE:20260331"), "{text}");
    }

    #[test]
    fn no_address_is_permanent_and_names_only_the_staff_id() {
        let mut message = message();
        message.recipient.email = None;

        let error = build_email(&message, "qa@council.example", None).unwrap_err();

        assert_eq!(
            error,
            DeliveryError::Permanent {
                reason: "staff S100 has no email address".to_owned()
            }
        );
    }

    #[test]
    fn a_bad_address_is_permanent_and_does_not_echo_it() {
        let mut message = message();
        message.recipient.email = Some("pat.jones at council".to_owned());

        let error = build_email(&message, "qa@council.example", None).unwrap_err();

        let DeliveryError::Permanent { reason } = error else {
            panic!("expected a permanent error, got {error:?}");
        };
        assert!(reason.contains("S100"), "{reason}");
        assert!(!reason.contains("pat.jones"), "{reason}");
    }

    #[test]
    fn a_safe_key_is_its_own_token() {
        assert_eq!(key_token("reminder_A-7_S100"), "reminder_A-7_S100");
    }

    #[test]
    fn keys_that_differ_only_in_replaced_characters_get_different_tokens() {
        let colon = key_token("a:b");
        let slash = key_token("a/b");

        assert_ne!(colon, slash);
        assert!(colon.starts_with("a-b-"));
        assert_ne!(key_token("a:b"), key_token("a-b"));
        assert_eq!(key_token("a:b"), colon, "stable");
    }

    #[test]
    fn a_token_is_safe_as_a_file_name_whatever_the_key() {
        for key in ["", "../../etc/passwd", ".hidden", "é/ü", &"x".repeat(500)] {
            let token = key_token(key);

            assert!(!token.is_empty());
            assert!(token.len() <= TOKEN_MAX + 17, "{token}");
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{token}"
            );
        }
    }

    #[test]
    fn addresses_in_relay_replies_are_redacted() {
        assert_eq!(
            redact_addresses("permanent error (550): 5.1.1 <pat@council.example>: unknown user"),
            "permanent error (550): 5.1.1 [address] unknown user"
        );
    }

    #[test]
    fn the_auto_submitted_header_round_trips() {
        let value = AutoSubmitted.display();

        assert_eq!(AutoSubmitted::name().to_string(), "Auto-Submitted");
        assert!(AutoSubmitted::parse("auto-generated").is_ok());
        assert!(AutoSubmitted::parse("no").is_err());
        assert_eq!(
            value,
            HeaderValue::new(AutoSubmitted::name(), "auto-generated".to_owned())
        );
    }

    #[test]
    fn calendar_type_is_valid() {
        assert_eq!(
            calendar_type(),
            ContentType::parse("text/calendar; method=PUBLISH; charset=utf-8").unwrap()
        );
    }

    fn smtp_settings() -> SmtpSettings {
        SmtpSettings {
            name: "relay".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: Some(2525),
            security: SmtpSecurity::None,
            username: None,
            password: None,
            password_file: None,
            from: "qa@council.example".to_owned(),
            reply_to: None,
            timeout_seconds: 5,
            pool_size: 1,
            connections: 1,
            ca_file: None,
        }
    }

    #[test]
    fn settings_read_from_toml_take_their_defaults() {
        let settings: SmtpSettings = toml::from_str(
            r#"
            name = "relay"
            host = "smtp.council.example"
            from = "QA schedule <qa@council.example>"
            "#,
        )
        .unwrap();

        assert_eq!(settings.security, SmtpSecurity::Starttls);
        assert_eq!(settings.timeout_seconds, 30);
        assert_eq!(settings.pool_size, 4);
        assert_eq!(settings.connections, 1);
        assert_eq!(settings.ca_file, None);
    }

    #[test]
    fn settings_errors_name_the_setting() {
        let dir = Path::new("/nonexistent-qaloop-test");
        let cases = [
            (
                SmtpSettings {
                    from: "not a mailbox".to_owned(),
                    ..smtp_settings()
                },
                "channels.relay.from: ",
            ),
            (
                SmtpSettings {
                    username: Some("qa".to_owned()),
                    password_file: Some("smtp-password".into()),
                    ..smtp_settings()
                },
                "channels.relay.password_file: cannot read /nonexistent-qaloop-test/smtp-password",
            ),
            (
                SmtpSettings {
                    username: Some("qa".to_owned()),
                    ..smtp_settings()
                },
                "channels.relay.password: ",
            ),
            (
                SmtpSettings {
                    security: SmtpSecurity::Starttls,
                    ca_file: Some("ca.pem".into()),
                    ..smtp_settings()
                },
                "channels.relay.ca_file: cannot read /nonexistent-qaloop-test/ca.pem",
            ),
            (
                SmtpSettings {
                    timeout_seconds: 0,
                    ..smtp_settings()
                },
                "channels.relay.timeout_seconds: ",
            ),
            (
                SmtpSettings {
                    connections: 0,
                    ..smtp_settings()
                },
                "channels.relay.connections: must be from 1 to 16",
            ),
        ];

        for (settings, expected) in cases {
            let error = SmtpChannel::new(&settings, dir).unwrap_err();

            assert!(
                error.starts_with(expected),
                "{error:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn a_channel_can_be_built_and_dropped_outside_a_runtime() {
        let channel = SmtpChannel::new(&smtp_settings(), Path::new(".")).unwrap();

        drop(channel);
    }

    #[test]
    fn a_sweep_removes_dead_writers_temporary_files_and_keeps_live_ones_and_mail() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            child.id()
        };
        let me = std::process::id();
        let write = |name: &str| {
            std::fs::write(dir.join(name), b"x").unwrap();
            dir.join(name)
        };
        write("a.eml");
        write(&format!(".a.eml.{dead}-00000000000000ff.tmp"));
        let live = write(&format!(".b.eml.{me}-00000000000000ff.tmp"));
        let fresh = write(".c.eml.00000000000000ff.tmp");
        let old = write(".d.eml.00000000000000ff.tmp");
        let hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();

        assert_eq!(sweep_stale_temps(&dir, std::time::SystemTime::now()), 2);

        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let mut want = vec![dir.join("a.eml"), live, fresh];
        want.sort();
        assert_eq!(left, want);
    }
}
