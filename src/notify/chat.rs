//! Chat channels: Teams Workflows, Slack, Google Chat, and a signed generic webhook.
//!
//! One type, [`WebhookChannel`], posts JSON to a URL; its [`Flavour`] decides the payload and,
//! for the generic webhook, the signature headers. The payload builders ([`teams_payload`],
//! [`slack_payload`], [`google_chat_payload`], [`generic_payload`]) are pure functions of a
//! [`Message`], so the shape of what leaves qaloop is tested without a network.
//!
//! A webhook posts to a channel or space, not to a person: everyone in it sees the post. So
//! payloads carry the subject, the text, the link and (generic webhook) the staff id and due
//! date, and never an email address or the HTML body. Templates must keep names and case detail
//! out of subject and text (FIELD-NOTES: "nothing but ids, dates and links").
//!
//! # Outcomes
//! - 2xx: delivered (Teams Workflows answers 202 and runs the flow later, so a flow that fails
//!   afterwards is invisible here).
//! - 429, 408 and 5xx: [`DeliveryError::Temporary`], with the peer's `Retry-After` (seconds or
//!   HTTP-date, honoured as given) when it gave one.
//! - 3xx: permanent. Redirects are never followed: the URL is a secret and a redirect could
//!   carry the post (and, for the generic webhook, its signature) to another host.
//! - Other 4xx: permanent, with the status and the start of the body (Slack answers
//!   `invalid_payload`, `channel_not_found`, … as plain text).
//! - Connection refused, DNS failure, timeout, broken body: temporary.
//!
//! **Invariant:** the webhook URL is a secret (anyone holding it can post). It is never logged,
//! never printed by `Debug`, and never put into an error; errors name the channel instead.
//!
//! # The generic webhook (`kind = "webhook"`)
//! qaloop POSTs one JSON object per message, `Content-Type: application/json`:
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "assignment-42/chase/2025-03-03",
//!   "kind": "chase",
//!   "recipient": { "staff_id": "S1234" },
//!   "subject": "Overdue: case file audit, February",
//!   "text": "The case file audit for February was due on 28 February.",
//!   "link": "https://qaloop.example.gov.uk/assignments/42",
//!   "due": "2025-02-28"
//! }
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `version` | integer | Schema version, `1`. A change that breaks receivers bumps it. |
//! | `id` | string | The message's outbox key: the same on every retry of the same message. |
//! | `kind` | string | `new_assignment`, `reminder`, `due_today`, `chase`, `escalation`, `digest`, `slt_digest`, `catch_up`, `test` or `admin_alert`. |
//! | `recipient.staff_id` | string | Staff id from the staff file (or a label such as `admin`). |
//! | `subject` | string | One-line title. |
//! | `text` | string | Plain-text body. |
//! | `link` | string or null | The one link the message carries. |
//! | `due` | string or null | Due date, `YYYY-MM-DD`, when the message is about dated work. |
//!
//! Email addresses, chat handles, names and the HTML body are never sent.
//!
//! Headers:
//! - `X-Qaloop-Timestamp: <unix seconds>`: when the request was signed.
//! - `X-Qaloop-Signature: sha256=<hex>`: lowercase hex HMAC-SHA256, keyed by the channel's
//!   `secret`, over the bytes `<timestamp>.<body>` (the timestamp header's value, a full stop,
//!   then the raw request body exactly as received).
//! - `Idempotency-Key: <id>`: the same as `id`; a retry repeats it, so receivers can drop
//!   duplicates.
//!
//! A receiver should recompute the signature over the raw body (before parsing it), compare in
//! constant time ([`verify`] does both), and reject timestamps more than five minutes from its
//! own clock, so a captured request cannot be replayed later. Any 2xx answer means "accepted";
//! 429 and 5xx mean "try again later" (`Retry-After` is honoured); any other answer means "do
//! not try again".

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::settings::resolve_secret;
use super::{Channel, ChannelSettings, DeliverFuture, DeliveryError, Message, Recipient, Secret};

/// `kind = "teams" | "slack" | "google_chat"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Channel name, for routing.
    pub name: String,
    /// The webhook URL, inline (it is a secret: anyone with it can post).
    pub url: Option<Secret>,
    /// The webhook URL, from a file.
    pub url_file: Option<PathBuf>,
    /// Upper bound on one request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Posts in flight at once, each on a lane of its own in queue order (1: one at a time, in
    /// queue order). As for email: a kill resends at most one post per lane.
    #[serde(default = "default_connections")]
    pub connections: u32,
}

/// `kind = "webhook"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedWebhookSettings {
    /// Channel name, for routing.
    pub name: String,
    /// The endpoint URL.
    pub url: Option<Secret>,
    /// The endpoint URL, from a file.
    pub url_file: Option<PathBuf>,
    /// HMAC-SHA256 key, inline.
    pub secret: Option<Secret>,
    /// HMAC-SHA256 key, from a file.
    pub secret_file: Option<PathBuf>,
    /// Upper bound on one request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Posts in flight at once, each on a lane of its own in queue order (1: one at a time, in
    /// queue order). As for email: a kill resends at most one post per lane.
    #[serde(default = "default_connections")]
    pub connections: u32,
}

fn default_timeout() -> u64 {
    10
}
fn default_connections() -> u32 {
    1
}
/// The most `connections` allowed for a webhook.
const MAX_CONNECTIONS: u32 = 16;

/// Teams Workflows accepts about 28 KB per post; the whole JSON body is kept under this.
pub const TEAMS_MAX_BYTES: usize = 28_000;
/// Google Chat accepts 32,000 bytes per message; the whole JSON body is kept under this.
pub const GOOGLE_CHAT_MAX_BYTES: usize = 32_000;
/// Slack rejects a section whose text is longer than 3,000 characters (`invalid_blocks`).
const SLACK_TEXT_MAX_CHARS: usize = 3_000;
/// Card titles are one line; a longer subject is cut (Slack sections, Teams and Chat headers).
const TITLE_MAX_CHARS: usize = 250;
/// Appended where text was cut to fit a peer's limit, so a reader knows there is more.
pub const TRUNCATED: &str = "… (truncated)";
/// How much of an error body is read, and how much of it goes into the error reason.
const BODY_READ_BYTES: usize = 1024;
const BODY_REASON_CHARS: usize = 200;

/// Which peer a [`WebhookChannel`] talks to: decides the payload and any signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavour {
    /// Microsoft Teams through a Workflows (Power Automate) webhook: an Adaptive Card.
    Teams,
    /// Slack incoming webhook: Block Kit with a `text` fallback.
    Slack,
    /// Google Chat space webhook: a `cardsV2` card with a `text` line.
    GoogleChat,
    /// The documented generic JSON, signed with HMAC-SHA256 (see the module docs).
    Generic {
        /// The HMAC key. A [`Secret`], so `Debug` of a channel never prints it.
        secret: Secret,
    },
}

impl Flavour {
    /// The `kind` this flavour is configured as, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Flavour::Teams => "teams",
            Flavour::Slack => "slack",
            Flavour::GoogleChat => "google_chat",
            Flavour::Generic { .. } => "webhook",
        }
    }

    /// The JSON this flavour posts for `message`.
    pub fn payload(&self, message: &Message) -> Value {
        match self {
            Flavour::Teams => teams_payload(message),
            Flavour::Slack => slack_payload(message),
            Flavour::GoogleChat => google_chat_payload(message),
            Flavour::Generic { .. } => generic_payload(message),
        }
    }
}

// ----- payloads -------------------------------------------------------------------------------

/// A Teams Workflows post: one Adaptive Card 1.4 with the subject as a bold title, the text,
/// and an "Open" button when the message has a link. The text is cut (marked [`TRUNCATED`]) so
/// the whole body stays under [`TEAMS_MAX_BYTES`]. The old Office 365 connector `MessageCard`
/// format is not supported: those connectors are retired.
pub fn teams_payload(message: &Message) -> Value {
    let title = title(message);
    fit_bytes(TEAMS_MAX_BYTES, &message.text, |text| {
        let mut content = json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                { "type": "TextBlock", "text": title, "weight": "Bolder", "wrap": true },
                { "type": "TextBlock", "text": text, "wrap": true },
            ],
        });
        if let Some(link) = &message.link {
            content["actions"] =
                json!([{ "type": "Action.OpenUrl", "title": "Open", "url": link }]);
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": content,
            }],
        })
    })
}

/// A Slack incoming-webhook post: `text` (always sent: it is what notifications and screen
/// readers use) and Block Kit blocks: a section with the bold title, a section with the text,
/// and an "Open" button when the message has a link.
///
/// When the recipient's `chat_id` looks like a Slack member id (`U…` or `W…`), the fallback
/// and the first block start with a mention, `<@U0123ABCD>`, so that person is notified. Text
/// is escaped for Slack (`&`, `<`, `>`) and cut to Slack's 3,000-character section limit.
pub fn slack_payload(message: &Message) -> Value {
    let mention = slack_member_id(&message.recipient)
        .map(|id| format!("<@{id}> "))
        .unwrap_or_default();
    let title = slack_escape_within(&title(message), SLACK_TEXT_MAX_CHARS);
    let fallback = slack_escape_within(
        &format!("{}\n{}", message.subject, message.text),
        SLACK_TEXT_MAX_CHARS,
    );
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": format!("{mention}*{title}*") },
    })];
    if !message.text.trim().is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": slack_escape_within(&message.text, SLACK_TEXT_MAX_CHARS),
            },
        }));
    }
    if let Some(link) = &message.link {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": "Open" },
                "url": link,
            }],
        }));
    }
    json!({ "text": format!("{mention}{fallback}"), "blocks": blocks })
}

/// A Google Chat post: `text` (the subject, shown as a line above the card, and what
/// notifications show) and one `cardsV2` card whose id is the message key, with the subject as
/// its header, the text as a paragraph and an "Open" button when the message has a link.
///
/// The `text` line is the subject only, not the whole body: Chat shows both the text and the
/// card, so a full fallback would print the body twice. The paragraph is HTML-escaped (card
/// text is a small HTML subset) and cut so the body stays under [`GOOGLE_CHAT_MAX_BYTES`].
pub fn google_chat_payload(message: &Message) -> Value {
    let title = title(message);
    fit_bytes(GOOGLE_CHAT_MAX_BYTES, &message.text, |text| {
        let mut widgets = Vec::new();
        if !text.trim().is_empty() {
            widgets.push(json!({ "textParagraph": { "text": html_escape(text) } }));
        }
        if let Some(link) = &message.link {
            widgets.push(json!({
                "buttonList": {
                    "buttons": [{ "text": "Open", "onClick": { "openLink": { "url": link } } }],
                },
            }));
        }
        let mut card = json!({ "header": { "title": title } });
        if !widgets.is_empty() {
            card["sections"] = json!([{ "widgets": widgets }]);
        }
        json!({
            "text": title,
            "cardsV2": [{ "cardId": message.key, "card": card }],
        })
    })
}

/// The generic webhook's JSON, version 1 (the schema is in the module docs). Only the staff id
/// leaves qaloop: no email address, chat handle, name or HTML.
pub fn generic_payload(message: &Message) -> Value {
    json!({
        "version": 1,
        "id": message.key,
        "kind": message.kind.as_str(),
        "recipient": { "staff_id": message.recipient.staff_id },
        "subject": message.subject,
        "text": message.text,
        "link": message.link,
        "due": message.calendar.as_ref().map(|event| event.date.to_string()),
    })
}

/// The subject, cut to one sensible card title.
fn title(message: &Message) -> Cow<'_, str> {
    truncate_chars(&message.subject, TITLE_MAX_CHARS)
}

/// `text` cut to at most `max` characters, the cut marked with [`TRUNCATED`].
fn truncate_chars(text: &str, max: usize) -> Cow<'_, str> {
    if text.chars().count() <= max {
        return Cow::Borrowed(text);
    }
    let keep = max.saturating_sub(TRUNCATED.chars().count());
    let cut: String = text.chars().take(keep).collect();
    Cow::Owned(format!("{cut}{TRUNCATED}"))
}

/// Builds a payload around `text`, cutting `text` (and marking the cut) as little as needed for
/// the serialized payload to be at most `limit` bytes. A binary search over the kept length:
/// escaping makes the JSON size of text hard to predict (a quote costs two bytes, a control
/// character six), and a search costs a few dozen serializations at most.
fn fit_bytes(limit: usize, text: &str, build: impl Fn(&str) -> Value) -> Value {
    let whole = build(text);
    if serialized_len(&whole) <= limit {
        return whole;
    }
    let cut = |keep: usize| build(&format!("{}{TRUNCATED}", &text[..keep]));
    // Invariant: keeping `low` bytes fits (or `low` is 0); keeping `high` bytes does not.
    let (mut low, mut high) = (0, text.len());
    while high - low > 1 {
        let half = low + (high - low) / 2;
        let mut middle = text.floor_char_boundary(half);
        if middle == low {
            middle = text.ceil_char_boundary(half);
            if middle >= high {
                break;
            }
        }
        if serialized_len(&cut(middle)) <= limit {
            low = middle;
        } else {
            high = middle;
        }
    }
    cut(low)
}

fn serialized_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// The recipient's chat id, when it looks like a Slack member id (`U`/`W` then upper-case
/// letters and digits). Anything else (a Teams UPN, a name) is not a Slack mention and is never
/// put in a post.
fn slack_member_id(recipient: &Recipient) -> Option<&str> {
    let id = recipient.chat_id.as_deref()?.trim();
    let plausible = (id.starts_with('U') || id.starts_with('W'))
        && (8..=24).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    plausible.then_some(id)
}

/// Escapes text for Slack (`&`, `<`, `>`; Slack's only control characters) and cuts it so the
/// escaped form has at most `max` characters, never splitting an escape.
fn slack_escape_within(text: &str, max: usize) -> String {
    let budget = max - TRUNCATED.chars().count();
    let mut out = String::with_capacity(text.len().min(max * 4));
    let mut count = 0;
    let mut fits_whole = true;
    let mut cut_at = None;
    for c in text.chars() {
        let piece = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => "",
        };
        let width = if piece.is_empty() { 1 } else { piece.len() };
        if count + width > budget && cut_at.is_none() {
            cut_at = Some(out.len());
        }
        if count + width > max {
            fits_whole = false;
            break;
        }
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
        count += width;
    }
    if !fits_whole {
        out.truncate(cut_at.unwrap_or(out.len()));
        out.push_str(TRUNCATED);
    }
    out
}

/// Escapes text for Google Chat card paragraphs, which read a small subset of HTML.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

// ----- signature ------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

/// The `X-Qaloop-Signature` value for a body sent at `timestamp` (unix seconds):
/// `sha256=` then the lowercase hex HMAC-SHA256, keyed by `secret`, of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = signed_mac(secret, timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex(&tag))
}

/// Whether `signature` (an `X-Qaloop-Signature` value) is right for `body` sent at
/// `timestamp`. The comparison is constant-time. It does not judge the timestamp's age: a
/// receiver should also reject timestamps far from its own clock (five minutes is usual).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(tag) = signature.trim().strip_prefix("sha256=").and_then(unhex) else {
        return false;
    };
    signed_mac(secret, timestamp, body)
        .verify_slice(&tag)
        .is_ok()
}

fn signed_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

// ----- the channel ----------------------------------------------------------------------------

/// Builds an HTTP client for webhooks: no redirects (see the module docs), a `qaloop/<version>`
/// user agent, TLS by rustls with the platform's trust store. Proxies in `HTTPS_PROXY` /
/// `NO_PROXY` are honoured. Timeouts are set per request, by each channel.
pub fn http_client() -> Result<reqwest::Client, String> {
    super::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("qaloop/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// The client every channel made by [`WebhookChannel::from_settings`] shares: one connection
/// pool per process.
fn shared_client() -> Result<reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = http_client()?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// A chat or generic webhook: posts each message as one JSON request to a secret URL.
pub struct WebhookChannel {
    /// `[[channels]] name`: what logs and errors call this channel, since the URL is secret.
    name: String,
    /// Which peer: decides the payload and the signature.
    flavour: Flavour,
    /// The webhook URL. Private, and left out of `Debug`: it is the credential.
    url: reqwest::Url,
    /// Upper bound on one request, connect to last byte of the answer.
    timeout: Duration,
    /// `connections`: posts the dispatcher may have in flight at once.
    connections: usize,
    /// Cheap to clone (an `Arc` inside); shared by all channels so they share one pool.
    client: reqwest::Client,
}

impl fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("flavour", &self.flavour)
            .field("url", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookChannel {
    /// Builds the channel a `[[channels]]` entry describes, or `None` for email and file
    /// channels. Reads `url_file` / `secret_file` (relative to `base_dir`). Errors name the key,
    /// e.g. `channels.slt-teams.url: missing (give url or url_file)`, and never show the URL.
    pub fn from_settings(
        settings: &ChannelSettings,
        base_dir: &Path,
    ) -> Result<Option<WebhookChannel>, String> {
        let (name, url, url_file, timeout_seconds, connections) = match settings {
            ChannelSettings::Email(_) | ChannelSettings::File(_) => return Ok(None),
            ChannelSettings::Teams(s)
            | ChannelSettings::Slack(s)
            | ChannelSettings::GoogleChat(s) => (
                &s.name,
                &s.url,
                &s.url_file,
                s.timeout_seconds,
                s.connections,
            ),
            ChannelSettings::Webhook(s) => (
                &s.name,
                &s.url,
                &s.url_file,
                s.timeout_seconds,
                s.connections,
            ),
        };
        let url = webhook_url(name, url.as_ref(), url_file.as_ref(), base_dir)?;
        let flavour = match settings {
            ChannelSettings::Teams(_) => Flavour::Teams,
            ChannelSettings::Slack(_) => Flavour::Slack,
            ChannelSettings::GoogleChat(_) => Flavour::GoogleChat,
            ChannelSettings::Webhook(s) => Flavour::Generic {
                secret: signing_secret(s, base_dir)?,
            },
            ChannelSettings::Email(_) | ChannelSettings::File(_) => return Ok(None),
        };
        if timeout_seconds == 0 {
            return Err(format!(
                "channels.{name}.timeout_seconds: must be at least 1"
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&connections) {
            return Err(format!(
                "channels.{name}.connections: must be from 1 to {MAX_CONNECTIONS}"
            ));
        }
        let client = shared_client().map_err(|e| format!("channels.{name}: {e}"))?;
        Ok(Some(WebhookChannel {
            name: name.clone(),
            flavour,
            url,
            timeout: Duration::from_secs(timeout_seconds),
            connections: connections as usize,
            client,
        }))
    }

    /// Uses `client` instead of the process-wide one (a test with its own runtime, or a
    /// daemon that builds one client with [`http_client`] and hands it to every channel).
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// Which peer this channel talks to.
    pub fn flavour(&self) -> &Flavour {
        &self.flavour
    }

    /// Posts one message and classifies the answer (see the module docs).
    async fn post(&self, message: &Message) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(&self.flavour.payload(message)).map_err(|e| {
            DeliveryError::Permanent {
                reason: format!("{}: cannot encode the payload: {e}", self.name),
            }
        })?;
        let mut request = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json");
        if let Flavour::Generic { secret } = &self.flavour {
            let timestamp = message.composed_at.as_second();
            request = request
                .header("X-Qaloop-Timestamp", timestamp.to_string())
                .header(
                    "X-Qaloop-Signature",
                    sign(secret.expose().as_bytes(), timestamp, &body),
                )
                .header("Idempotency-Key", message.key.as_str());
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        tracing::debug!(channel = %self.name, key = %message.key, status = status.as_u16(), "webhook answered");
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, message.composed_at));
        let body = read_snippet(response).await;
        classify(&self.name, status, retry_after, &body)
    }

    /// A request that got no answer: temporary, unless the request itself could not be built.
    fn transport_error(&self, error: reqwest::Error) -> DeliveryError {
        let error = error.without_url();
        let cause = self.redact(&error_chain(&error));
        if error.is_builder() {
            return DeliveryError::Permanent {
                reason: format!("{}: cannot build the request: {cause}", self.name),
            };
        }
        let what = if error.is_timeout() {
            format!("no answer within {} s", self.timeout.as_secs())
        } else if error.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        DeliveryError::Temporary {
            reason: format!("{}: {what}: {cause}", self.name),
            retry_after: None,
        }
    }

    /// Belt and braces: reqwest's copy of the URL is stripped with `without_url`, but a cause
    /// deeper in the chain could still mention the URL or its host.
    fn redact(&self, text: &str) -> String {
        let mut text = text.replace(self.url.as_str(), "[webhook url]");
        if let Some(host) = self.url.host_str().filter(|host| !host.is_empty()) {
            text = text.replace(host, "[webhook host]");
        }
        text
    }
}

impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    /// A webhook posts to a channel or space, not to a person: it reaches everyone.
    fn reaches(&self, _recipient: &Recipient) -> bool {
        true
    }

    fn deliver<'a>(&'a self, message: &'a Message) -> DeliverFuture<'a> {
        Box::pin(self.post(message))
    }

    /// Cards and posts are made of the subject and the text.
    fn sends_html(&self) -> bool {
        false
    }

    fn connections(&self) -> usize {
        self.connections
    }
}

/// The webhook URL from `url` or `url_file`: present, and http(s).
fn webhook_url(
    name: &str,
    url: Option<&Secret>,
    url_file: Option<&PathBuf>,
    base_dir: &Path,
) -> Result<reqwest::Url, String> {
    let key = if url.is_none() && url_file.is_some() {
        "url_file"
    } else {
        "url"
    };
    let secret = resolve_secret(url, url_file, base_dir)
        .map_err(|e| format!("channels.{name}.{key}: {e}"))?
        .ok_or_else(|| format!("channels.{name}.url: missing (give url or url_file)"))?;
    // The parse error is dropped on purpose: it can quote the URL.
    reqwest::Url::parse(secret.expose().trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
        .ok_or_else(|| format!("channels.{name}.{key}: not an http(s) URL"))
}

/// The generic webhook's HMAC key from `secret` or `secret_file`: present and not empty.
fn signing_secret(settings: &SignedWebhookSettings, base_dir: &Path) -> Result<Secret, String> {
    let name = &settings.name;
    let key = if settings.secret.is_none() && settings.secret_file.is_some() {
        "secret_file"
    } else {
        "secret"
    };
    let secret = resolve_secret(
        settings.secret.as_ref(),
        settings.secret_file.as_ref(),
        base_dir,
    )
    .map_err(|e| format!("channels.{name}.{key}: {e}"))?
    .ok_or_else(|| format!("channels.{name}.secret: missing (give secret or secret_file)"))?;
    if secret.expose().is_empty() {
        return Err(format!("channels.{name}.{key}: empty"));
    }
    Ok(secret)
}

/// What a non-2xx answer means: 429, 408 and 5xx are worth retrying; redirects and other 4xx
/// are not. 408 (the peer gave up waiting for our request) is a transient, like a timeout.
fn classify(
    channel: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> Result<(), DeliveryError> {
    if status.is_success() {
        return Ok(());
    }
    let mut reason = format!("{channel}: HTTP {status}");
    if !body.is_empty() {
        reason = format!("{reason}: {body}");
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(DeliveryError::Temporary {
            reason,
            retry_after,
        })
    } else if status.is_redirection() {
        Err(DeliveryError::Permanent {
            reason: format!(
                "{channel}: unexpected redirect (HTTP {status}), not followed; check the URL"
            ),
        })
    } else {
        Err(DeliveryError::Permanent { reason })
    }
}

/// A `Retry-After` value as a delay from `now`: either seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`; a date in the past means "now"), as given: the dispatcher
/// gives a message up if the peer asks it to wait past the point where it is still useful.
/// `None` when it is neither.
fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(value)
            .ok()?;
        let seconds = at.as_second().saturating_sub(now.as_second());
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    };
    Some(delay)
}

/// The start of an error answer's body, on one line, for the error reason. Reads at most
/// [`BODY_READ_BYTES`], so a huge error page costs nothing; a body that breaks off is fine.
async fn read_snippet(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_READ_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(BODY_READ_BYTES);
    snippet(&String::from_utf8_lossy(&bytes))
}

/// `text` on one line (whitespace runs become one space), cut to [`BODY_REASON_CHARS`].
fn snippet(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= BODY_REASON_CHARS {
        return line;
    }
    let cut: String = line.chars().take(BODY_REASON_CHARS).collect();
    format!("{cut}…")
}

/// An error and its causes, `outer: inner: innermost`, skipping repeats.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{CalendarEvent, Kind};

    fn message() -> Message {
        Message {
            key: "assignment-42/chase/2025-03-03".into(),
            kind: Kind::Chase,
            recipient: Recipient {
                staff_id: "S1234".into(),
                email: Some("sam.worker@council.example".into()),
                chat_id: Some("U0123ABCD".into()),
            },
            subject: "Overdue: case file audit".into(),
            text: "Due on 28 February.".into(),
            html: "<p>Due on 28 February.</p>".into(),
            link: Some("https://qaloop.example/assignments/42".into()),
            calendar: Some(CalendarEvent {
                uid: "assignment-42".into(),
                date: jiff::civil::date(2025, 2, 28),
                summary: "Case file audit".into(),
                url: None,
            }),
            composed_at: jiff::Timestamp::from_second(1_780_000_000).unwrap(),
        }
    }

    #[test]
    fn teams_payload_is_an_adaptive_card_with_an_open_action() {
        let payload = teams_payload(&message());

        assert_eq!(
            payload,
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            { "type": "TextBlock", "text": "Overdue: case file audit", "weight": "Bolder", "wrap": true },
                            { "type": "TextBlock", "text": "Due on 28 February.", "wrap": true },
                        ],
                        "actions": [{ "type": "Action.OpenUrl", "title": "Open", "url": "https://qaloop.example/assignments/42" }],
                    },
                }],
            })
        );
    }

    #[test]
    fn teams_payload_without_a_link_has_no_actions() {
        let mut message = message();
        message.link = None;

        let payload = teams_payload(&message);

        assert!(
            payload["attachments"][0]["content"]
                .get("actions")
                .is_none()
        );
    }

    #[test]
    fn teams_payload_cuts_long_text_to_fit_and_says_so() {
        let mut message = message();
        message.text = "\"quoted\" ".repeat(10_000);

        let payload = teams_payload(&message);

        let size = serde_json::to_vec(&payload).unwrap().len();
        assert!(size <= TEAMS_MAX_BYTES, "{size} bytes");
        assert!(
            size > TEAMS_MAX_BYTES - 500,
            "cut far too much: {size} bytes"
        );
        let text = payload["attachments"][0]["content"]["body"][1]["text"]
            .as_str()
            .unwrap();
        assert!(text.ends_with(TRUNCATED));
    }

    #[test]
    fn slack_payload_mentions_a_member_and_escapes_text() {
        let mut message = message();
        message.text = "Audit <A&B> due".into();

        let payload = slack_payload(&message);

        assert_eq!(
            payload,
            json!({
                "text": "<@U0123ABCD> Overdue: case file audit\nAudit &lt;A&amp;B&gt; due",
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": "<@U0123ABCD> *Overdue: case file audit*" } },
                    { "type": "section", "text": { "type": "mrkdwn", "text": "Audit &lt;A&amp;B&gt; due" } },
                    { "type": "actions", "elements": [{
                        "type": "button",
                        "text": { "type": "plain_text", "text": "Open" },
                        "url": "https://qaloop.example/assignments/42",
                    }] },
                ],
            })
        );
    }

    #[test]
    fn slack_payload_never_mentions_a_chat_id_that_is_not_a_member_id() {
        for chat_id in [
            "sam.worker@council.example",
            "Una Smith",
            "C0123ABCD",
            "U12",
        ] {
            let mut message = message();
            message.recipient.chat_id = Some(chat_id.into());
            message.link = None;

            let payload = slack_payload(&message);

            assert_eq!(
                payload["text"],
                "Overdue: case file audit\nDue on 28 February."
            );
            assert_eq!(
                payload["blocks"][0]["text"]["text"],
                "*Overdue: case file audit*"
            );
            assert_eq!(payload["blocks"].as_array().unwrap().len(), 2, "{chat_id}");
        }
    }

    #[test]
    fn slack_payload_keeps_sections_within_slack_limits() {
        let mut message = message();
        message.text = "<&>".repeat(5_000);

        let payload = slack_payload(&message);

        let section = payload["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= SLACK_TEXT_MAX_CHARS);
        assert!(section.ends_with(TRUNCATED));
        assert!(
            section.trim_end_matches(TRUNCATED).ends_with(';'),
            "cut inside an escape"
        );
        let fallback = payload["text"].as_str().unwrap();
        assert!(fallback.chars().count() <= SLACK_TEXT_MAX_CHARS + "<@U0123ABCD> ".len());
    }

    #[test]
    fn google_chat_payload_is_a_card_with_a_subject_line() {
        let mut message = message();
        message.text = "Audit <b>now</b>".into();

        let payload = google_chat_payload(&message);

        assert_eq!(
            payload,
            json!({
                "text": "Overdue: case file audit",
                "cardsV2": [{
                    "cardId": "assignment-42/chase/2025-03-03",
                    "card": {
                        "header": { "title": "Overdue: case file audit" },
                        "sections": [{ "widgets": [
                            { "textParagraph": { "text": "Audit &lt;b&gt;now&lt;/b&gt;" } },
                            { "buttonList": { "buttons": [{
                                "text": "Open",
                                "onClick": { "openLink": { "url": "https://qaloop.example/assignments/42" } },
                            }] } },
                        ] }],
                    },
                }],
            })
        );
    }

    #[test]
    fn google_chat_payload_fits_in_32000_bytes() {
        let mut message = message();
        message.text = "é<".repeat(20_000);

        let payload = google_chat_payload(&message);

        assert!(serde_json::to_vec(&payload).unwrap().len() <= GOOGLE_CHAT_MAX_BYTES);
    }

    #[test]
    fn generic_payload_follows_the_documented_schema() {
        let payload = generic_payload(&message());

        assert_eq!(
            payload,
            json!({
                "version": 1,
                "id": "assignment-42/chase/2025-03-03",
                "kind": "chase",
                "recipient": { "staff_id": "S1234" },
                "subject": "Overdue: case file audit",
                "text": "Due on 28 February.",
                "link": "https://qaloop.example/assignments/42",
                "due": "2025-02-28",
            })
        );
    }

    #[test]
    fn generic_payload_has_nulls_for_no_link_and_no_date() {
        let mut message = message();
        message.link = None;
        message.calendar = None;

        let payload = generic_payload(&message);

        assert_eq!(payload["link"], Value::Null);
        assert_eq!(payload["due"], Value::Null);
    }

    #[test]
    fn no_payload_carries_the_email_address_or_html() {
        let message = message();
        for flavour in [
            Flavour::Teams,
            Flavour::Slack,
            Flavour::GoogleChat,
            Flavour::Generic {
                secret: Secret::new("k"),
            },
        ] {
            let body = flavour.payload(&message).to_string();

            assert!(!body.contains("council.example"), "{}", flavour.kind());
            assert!(!body.contains("<p>"), "{}", flavour.kind());
        }
    }

    #[test]
    fn signature_matches_a_known_vector_and_verifies() {
        let signature = sign(b"key", 1_700_000_000, b"{}");

        // Independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature,
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        assert!(verify(b"key", 1_700_000_000, b"{}", &signature));
    }

    #[test]
    fn verify_rejects_a_changed_body_timestamp_key_or_malformed_signature() {
        let signature = sign(b"key", 1_700_000_000, b"{}");

        assert!(!verify(b"key", 1_700_000_000, b"{ }", &signature));
        assert!(!verify(b"key", 1_700_000_001, b"{}", &signature));
        assert!(!verify(b"other", 1_700_000_000, b"{}", &signature));
        assert!(!verify(b"key", 1_700_000_000, b"{}", "sha256=zz"));
        assert!(!verify(
            b"key",
            1_700_000_000,
            b"{}",
            signature.trim_start_matches("sha256=")
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_caps_them() {
        let now: Timestamp = "2015-10-21T07:27:00Z".parse().unwrap();

        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("86400", now),
            Some(Duration::from_secs(86_400)),
            "honoured as given, not capped"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn answers_are_classified_by_status() {
        let seven = Some(Duration::from_secs(7));

        assert_eq!(classify("c", StatusCode::ACCEPTED, None, ""), Ok(()));
        assert_eq!(
            classify("c", StatusCode::TOO_MANY_REQUESTS, seven, "rate_limited"),
            Err(DeliveryError::Temporary {
                reason: "c: HTTP 429 Too Many Requests: rate_limited".into(),
                retry_after: seven,
            })
        );
        assert!(matches!(
            classify("c", StatusCode::BAD_GATEWAY, None, ""),
            Err(DeliveryError::Temporary { .. })
        ));
        assert!(matches!(
            classify("c", StatusCode::REQUEST_TIMEOUT, None, ""),
            Err(DeliveryError::Temporary { .. })
        ));
        assert_eq!(
            classify("c", StatusCode::NOT_FOUND, None, "channel_not_found"),
            Err(DeliveryError::Permanent {
                reason: "c: HTTP 404 Not Found: channel_not_found".into(),
            })
        );
        assert!(matches!(
            classify("c", StatusCode::MOVED_PERMANENTLY, None, ""),
            Err(DeliveryError::Permanent { reason }) if reason.contains("redirect")
        ));
    }

    #[test]
    fn error_bodies_are_cut_to_one_short_line() {
        assert_eq!(snippet("  invalid_payload\n"), "invalid_payload");
        assert_eq!(snippet("a\n\n  b"), "a b");
        assert_eq!(
            snippet(&"x".repeat(500)).chars().count(),
            BODY_REASON_CHARS + 1
        );
    }

    fn slack(url: Option<&str>, url_file: Option<&str>) -> ChannelSettings {
        ChannelSettings::Slack(WebhookSettings {
            name: "team-slack".into(),
            url: url.map(Secret::new),
            url_file: url_file.map(PathBuf::from),
            timeout_seconds: 10,
            connections: 1,
        })
    }

    #[test]
    fn from_settings_reads_the_url_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("slack.url"),
            "https://hooks.example/T/B/x\n",
        )
        .unwrap();

        let channel = WebhookChannel::from_settings(&slack(None, Some("slack.url")), dir.path())
            .unwrap()
            .unwrap();

        assert_eq!(channel.name(), "team-slack");
        assert_eq!(channel.flavour(), &Flavour::Slack);
        assert_eq!(channel.url.as_str(), "https://hooks.example/T/B/x");
    }

    #[test]
    fn from_settings_errors_name_the_key_and_never_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();

        let missing = WebhookChannel::from_settings(&slack(None, None), base).unwrap_err();
        let bad = WebhookChannel::from_settings(&slack(Some("ftp://secret-token"), None), base)
            .unwrap_err();
        let unreadable =
            WebhookChannel::from_settings(&slack(None, Some("nope.url")), base).unwrap_err();
        let both =
            WebhookChannel::from_settings(&slack(Some("https://a"), Some("b")), base).unwrap_err();

        assert_eq!(
            missing,
            "channels.team-slack.url: missing (give url or url_file)"
        );
        assert_eq!(bad, "channels.team-slack.url: not an http(s) URL");
        assert!(
            unreadable.starts_with("channels.team-slack.url_file: cannot read "),
            "{unreadable}"
        );
        assert!(both.starts_with("channels.team-slack.url: "), "{both}");
        assert!(!bad.contains("secret-token"));
    }

    #[test]
    fn from_settings_requires_a_signing_secret_and_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let webhook = |secret: Option<&str>, timeout_seconds| {
            ChannelSettings::Webhook(SignedWebhookSettings {
                name: "hook".into(),
                url: Some(Secret::new("https://receiver.example/qaloop")),
                url_file: None,
                secret: secret.map(Secret::new),
                secret_file: None,
                timeout_seconds,
                connections: 1,
            })
        };

        let no_secret = WebhookChannel::from_settings(&webhook(None, 10), dir.path()).unwrap_err();
        let empty = WebhookChannel::from_settings(&webhook(Some(""), 10), dir.path()).unwrap_err();
        let zero = WebhookChannel::from_settings(&webhook(Some("k"), 0), dir.path()).unwrap_err();

        assert_eq!(
            no_secret,
            "channels.hook.secret: missing (give secret or secret_file)"
        );
        assert_eq!(empty, "channels.hook.secret: empty");
        assert_eq!(zero, "channels.hook.timeout_seconds: must be at least 1");
    }

    #[test]
    fn connections_run_from_1_to_16_and_default_to_1() {
        let dir = tempfile::tempdir().unwrap();
        let with = |connections| {
            let ChannelSettings::Slack(settings) = slack(Some("https://hooks.example/x"), None)
            else {
                unreachable!()
            };
            ChannelSettings::Slack(WebhookSettings {
                connections,
                ..settings
            })
        };
        let read: ChannelSettings =
            toml::from_str("kind = \"slack\"\nname = \"s\"\nurl = \"https://hooks.example/x\"\n")
                .unwrap();

        let default = WebhookChannel::from_settings(&read, dir.path())
            .unwrap()
            .unwrap();
        let sixteen = WebhookChannel::from_settings(&with(16), dir.path())
            .unwrap()
            .unwrap();
        let zero = WebhookChannel::from_settings(&with(0), dir.path()).unwrap_err();
        let seventeen = WebhookChannel::from_settings(&with(17), dir.path()).unwrap_err();

        assert_eq!(default.connections(), 1);
        assert_eq!(sixteen.connections(), 16);
        assert_eq!(
            zero,
            "channels.team-slack.connections: must be from 1 to 16"
        );
        assert_eq!(seventeen, zero);
    }

    #[test]
    fn debug_never_prints_the_url_or_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ChannelSettings::Webhook(SignedWebhookSettings {
            name: "hook".into(),
            url: Some(Secret::new("https://receiver.example/secret-path")),
            url_file: None,
            secret: Some(Secret::new("signing-key")),
            secret_file: None,
            timeout_seconds: 10,
            connections: 1,
        });

        let channel = WebhookChannel::from_settings(&settings, dir.path())
            .unwrap()
            .unwrap();
        let debug = format!("{channel:?}");

        assert!(!debug.contains("secret-path"), "{debug}");
        assert!(!debug.contains("signing-key"), "{debug}");
    }
}
