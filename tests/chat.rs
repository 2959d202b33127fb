//! The chat channels against a real HTTP server on loopback (wiremock's `MockServer` listens on
//! 127.0.0.1): what each flavour posts, and how each kind of answer, or no answer, is classified.
//! Nothing here talks to anything but 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use qaloop::notify::chat::{
    SignedWebhookSettings, WebhookChannel, WebhookSettings, http_client, verify,
};
use qaloop::notify::{
    CalendarEvent, Channel, ChannelSettings, DeliveryError, Kind, Message, Recipient, Secret,
};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The path part of every webhook URL: stands in for the token a real webhook URL carries, so
/// tests can check it never leaks into an error.
const HOOK_PATH: &str = "/hooks/SECRET-TOKEN";
const SIGNING_KEY: &str = "signing-key";
const EMAIL: &str = "sam.worker@council.example";

fn message() -> Message {
    Message {
        key: "assignment-42/chase/2025-03-03".into(),
        kind: Kind::Chase,
        recipient: Recipient {
            staff_id: "S1234".into(),
            email: Some(EMAIL.into()),
            chat_id: Some("U0123ABCD".into()),
        },
        subject: "Overdue: case file audit".into(),
        text: "The case file audit was due on 28 February.".into(),
        html: "<p>The case file audit was due on 28 February.</p>".into(),
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

/// A channel of `kind` posting to `url`, built the way the daemon builds it, but with its own
/// HTTP client: each test has its own Tokio runtime, and a pooled connection must not outlive
/// the runtime that opened it.
fn channel(kind: &str, url: &str, timeout_seconds: u64) -> WebhookChannel {
    let plain = || WebhookSettings {
        name: format!("test-{kind}"),
        url: Some(Secret::new(url)),
        url_file: None,
        timeout_seconds,
        connections: 1,
    };
    let settings = match kind {
        "teams" => ChannelSettings::Teams(plain()),
        "slack" => ChannelSettings::Slack(plain()),
        "google_chat" => ChannelSettings::GoogleChat(plain()),
        "webhook" => ChannelSettings::Webhook(SignedWebhookSettings {
            name: "test-webhook".into(),
            url: Some(Secret::new(url)),
            url_file: None,
            secret: Some(Secret::new(SIGNING_KEY)),
            secret_file: None,
            timeout_seconds,
            connections: 1,
        }),
        other => panic!("no such kind {other}"),
    };
    WebhookChannel::from_settings(&settings, Path::new("."))
        .expect("valid settings")
        .expect("a webhook kind")
        .with_client(http_client().expect("HTTP client"))
}

/// A server that answers every POST to the hook with `response`.
async fn server_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

fn hook_url(server: &MockServer) -> String {
    format!("{}{HOOK_PATH}", server.uri())
}

/// The one request the server received.
async fn only_request(server: &MockServer) -> Request {
    let mut requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 1, "expected exactly one request");
    requests.remove(0)
}

fn json_body(request: &Request) -> Value {
    assert_eq!(request.headers["content-type"], "application/json");
    let body = String::from_utf8(request.body.clone()).expect("UTF-8 body");
    assert!(!body.contains(EMAIL), "the email address leaked: {body}");
    assert!(!body.contains("<p>"), "the HTML body leaked: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

fn temporary(result: Result<(), DeliveryError>) -> (String, Option<Duration>) {
    match result {
        Err(DeliveryError::Temporary {
            reason,
            retry_after,
        }) => {
            assert!(!reason.contains("SECRET-TOKEN"), "URL leaked: {reason}");
            (reason, retry_after)
        }
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

fn permanent(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Permanent { reason }) => {
            assert!(!reason.contains("SECRET-TOKEN"), "URL leaked: {reason}");
            reason
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn teams_posts_an_adaptive_card_and_202_is_success() {
    let server = server_answering(ResponseTemplate::new(202)).await;
    let channel = channel("teams", &hook_url(&server), 5);

    let result = channel.deliver(&message()).await;

    assert_eq!(result, Ok(()));
    let body = json_body(&only_request(&server).await);
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["body"][0]["text"], "Overdue: case file audit");
    assert_eq!(
        card["body"][1]["text"],
        "The case file audit was due on 28 February."
    );
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(
        card["actions"][0]["url"],
        "https://qaloop.example/assignments/42"
    );
}

#[tokio::test]
async fn slack_posts_blocks_with_a_text_fallback_and_a_mention() {
    let server = server_answering(ResponseTemplate::new(200).set_body_string("ok")).await;
    let channel = channel("slack", &hook_url(&server), 5);

    let result = channel.deliver(&message()).await;

    assert_eq!(result, Ok(()));
    let body = json_body(&only_request(&server).await);
    let text = body["text"].as_str().expect("text fallback");
    assert!(
        text.starts_with("<@U0123ABCD> Overdue: case file audit"),
        "{text}"
    );
    let blocks = body["blocks"].as_array().expect("blocks");
    let first = blocks[0]["text"]["text"].as_str().unwrap();
    assert!(first.starts_with("<@U0123ABCD> "), "{first}");
    assert!(first.contains("Overdue: case file audit"), "{first}");
    assert_eq!(
        blocks[1]["text"]["text"],
        "The case file audit was due on 28 February."
    );
    assert_eq!(
        blocks[2]["elements"][0]["url"],
        "https://qaloop.example/assignments/42"
    );
}

#[tokio::test]
async fn google_chat_posts_a_card_with_a_text_fallback() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(json!({}))).await;
    let channel = channel("google_chat", &hook_url(&server), 5);

    let result = channel.deliver(&message()).await;

    assert_eq!(result, Ok(()));
    let body = json_body(&only_request(&server).await);
    assert_eq!(body["text"], "Overdue: case file audit");
    let card = &body["cardsV2"][0];
    assert_eq!(card["cardId"], "assignment-42/chase/2025-03-03");
    assert_eq!(card["card"]["header"]["title"], "Overdue: case file audit");
    let widgets = &card["card"]["sections"][0]["widgets"];
    assert_eq!(
        widgets[0]["textParagraph"]["text"],
        "The case file audit was due on 28 February."
    );
    assert_eq!(
        widgets[1]["buttonList"]["buttons"][0]["onClick"]["openLink"]["url"],
        "https://qaloop.example/assignments/42"
    );
}

#[tokio::test]
async fn generic_webhook_is_signed_and_carries_only_the_documented_fields() {
    let server = server_answering(ResponseTemplate::new(204)).await;
    let now: Timestamp = "2025-03-03T09:00:00Z".parse().unwrap();
    let channel = channel("webhook", &hook_url(&server), 5);
    let message = Message {
        composed_at: now,
        ..message()
    };

    let result = channel.deliver(&message).await;

    assert_eq!(result, Ok(()));
    let request = only_request(&server).await;
    let timestamp: i64 = request.headers["x-qaloop-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .expect("unix seconds");
    assert_eq!(timestamp, now.as_second());
    let signature = request.headers["x-qaloop-signature"].to_str().unwrap();
    assert!(verify(
        SIGNING_KEY.as_bytes(),
        timestamp,
        &request.body,
        signature
    ));
    assert!(!verify(b"wrong-key", timestamp, &request.body, signature));
    assert_eq!(
        request.headers["idempotency-key"],
        "assignment-42/chase/2025-03-03"
    );
    assert_eq!(
        json_body(&request),
        json!({
            "version": 1,
            "id": "assignment-42/chase/2025-03-03",
            "kind": "chase",
            "recipient": { "staff_id": "S1234" },
            "subject": "Overdue: case file audit",
            "text": "The case file audit was due on 28 February.",
            "link": "https://qaloop.example/assignments/42",
            "due": "2025-02-28",
        })
    );
}

#[tokio::test]
async fn rate_limit_is_temporary_and_honours_retry_after() {
    let server = server_answering(
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "7")
            .set_body_string("rate_limited"),
    )
    .await;
    let channel = channel("slack", &hook_url(&server), 5);

    let result = channel.deliver(&message()).await;

    let (reason, retry_after) = temporary(result);
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
    assert!(reason.contains("429"), "{reason}");
    assert!(reason.contains("test-slack"), "{reason}");
}

#[tokio::test]
async fn server_error_is_temporary_and_the_next_attempt_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let channel = channel("google_chat", &hook_url(&server), 5);

    let first = channel.deliver(&message()).await;
    let second = channel.deliver(&message()).await;

    let (reason, retry_after) = temporary(first);
    assert!(reason.contains("500"), "{reason}");
    assert_eq!(retry_after, None);
    assert_eq!(second, Ok(()));
}

#[tokio::test]
async fn bad_request_is_permanent_and_quotes_the_body() {
    let server =
        server_answering(ResponseTemplate::new(400).set_body_string("invalid_payload\n")).await;
    let channel = channel("slack", &hook_url(&server), 5);

    let result = channel.deliver(&message()).await;

    let reason = permanent(result);
    assert!(reason.contains("400"), "{reason}");
    assert!(reason.contains("invalid_payload"), "{reason}");
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_temporary() {
    let server =
        server_answering(ResponseTemplate::new(200).set_delay(Duration::from_secs(5))).await;
    let channel = channel("teams", &hook_url(&server), 1);

    let result = channel.deliver(&message()).await;

    let (reason, _) = temporary(result);
    assert!(reason.contains("no answer within 1 s"), "{reason}");
}

#[tokio::test]
async fn connection_refused_is_temporary() {
    // Bind then drop a listener: the port is now (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = channel("webhook", &format!("http://127.0.0.1:{port}{HOOK_PATH}"), 5);

    let result = channel.deliver(&message()).await;

    let (reason, retry_after) = temporary(result);
    assert!(reason.contains("cannot connect"), "{reason}");
    assert_eq!(retry_after, None);
}

#[tokio::test]
async fn redirect_is_permanent_and_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .respond_with(
            ResponseTemplate::new(301).insert_header("Location", "http://127.0.0.1:9/elsewhere"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let channel = channel("webhook", &hook_url(&server), 5);

    let result = channel.deliver(&message()).await;

    let reason = permanent(result);
    assert!(reason.contains("redirect"), "{reason}");
    assert!(reason.contains("301"), "{reason}");
}

#[tokio::test]
async fn only_the_generic_webhook_sends_signature_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let channel = channel("slack", &hook_url(&server), 5);

    channel.deliver(&message()).await.unwrap();

    let request = only_request(&server).await;
    assert!(request.headers.get("x-qaloop-signature").is_none());
    assert!(request.headers.get("x-qaloop-timestamp").is_none());
}
