//! The email channels against a real SMTP server on 127.0.0.1 (`support::smtp`), and the file
//! channel against a temporary folder. Nothing here contacts any other host.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::civil::date;
use qaloop::notify::email::{FileChannel, FileSettings, SmtpChannel, SmtpSecurity, SmtpSettings};
use qaloop::notify::{CalendarEvent, Channel, DeliveryError, Kind, Message, Recipient};
use support::smtp::{Options, SmtpServer};

const TO: &str = "pat.jones@council.example";

fn message(key: &str) -> Message {
    Message {
        key: key.to_owned(),
        kind: Kind::Reminder,
        recipient: Recipient {
            staff_id: "S100".to_owned(),
            email: Some(TO.to_owned()),
            chat_id: None,
        },
        subject: "Case file audit due 31 March".to_owned(),
        text: "Your case file audit is due on 31 March.\n.A line that starts with a dot."
            .to_owned(),
        html: "<p>Your case file audit is due on <b>31 March</b>.</p>".to_owned(),
        link: Some("https://qa.example/work/7".to_owned()),
        calendar: None,
        composed_at: jiff::Timestamp::from_second(1_780_000_000).unwrap(),
    }
}

fn with_due_date(mut message: Message) -> Message {
    message.calendar = Some(CalendarEvent {
        uid: "assignment-7@qaloop".to_owned(),
        date: date(2026, 3, 31),
        summary: "Case file audit".to_owned(),
        url: Some("https://qa.example/work/7".to_owned()),
    });
    message
}

/// A plain (no TLS, no AUTH) channel to `server`, with a 5 s bound so a broken test fails fast.
fn plain_settings(server: &SmtpServer) -> SmtpSettings {
    SmtpSettings {
        name: "relay".to_owned(),
        host: "127.0.0.1".to_owned(),
        port: Some(server.port()),
        security: SmtpSecurity::None,
        username: None,
        password: None,
        password_file: None,
        from: "QA schedule <qa@council.example>".to_owned(),
        reply_to: Some("qa-team@council.example".to_owned()),
        timeout_seconds: 5,
        pool_size: 2,
        connections: 1,
        ca_file: None,
    }
}

fn plain_channel(server: &SmtpServer) -> SmtpChannel {
    SmtpChannel::new(&plain_settings(server), Path::new(".")).unwrap()
}

/// The value of header `name` in a raw message (first occurrence, unfolded lines only).
fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    data.split("\r\n")
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

fn temporary_reason(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Temporary { reason, .. }) => reason,
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

fn permanent_reason(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Permanent { reason }) => reason,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_delivery_carries_text_and_html_alternatives() {
    let server = SmtpServer::start(Options::default()).await;
    let channel = plain_channel(&server);

    channel.deliver(&message("k1")).await.unwrap();

    let received = server.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(mail.mail_from, "qa@council.example");
    assert_eq!(mail.rcpt_to, [TO]);
    assert!(!mail.tls);
    assert_eq!(header(&mail.data, "To"), Some(TO));
    assert_eq!(
        header(&mail.data, "Subject"),
        Some("Case file audit due 31 March")
    );
    assert_eq!(
        header(&mail.data, "Reply-To"),
        Some("qa-team@council.example")
    );
    assert!(
        header(&mail.data, "Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    assert!(
        mail.data
            .contains("Content-Type: text/plain; charset=utf-8\r\n")
    );
    assert!(
        mail.data
            .contains("Content-Type: text/html; charset=utf-8\r\n")
    );
    assert!(
        mail.data
            .contains("Your case file audit is due on 31 March.")
    );
    assert!(
        mail.data.contains("\r\n.A line that starts with a dot."),
        "dot-unstuffed"
    );
    assert!(mail.data.contains("<b>31 March</b>"));
}

#[tokio::test]
async fn every_email_says_it_was_auto_generated() {
    let server = SmtpServer::start(Options::default()).await;
    let channel = plain_channel(&server);

    channel.deliver(&message("k1")).await.unwrap();

    assert_eq!(
        header(&server.received()[0].data, "Auto-Submitted"),
        Some("auto-generated")
    );
}

#[tokio::test]
async fn the_message_id_is_the_same_when_the_same_key_is_delivered_again() {
    let server = SmtpServer::start(Options::default()).await;
    let channel = plain_channel(&server);

    channel
        .deliver(&message("reminder:A-7:S100"))
        .await
        .unwrap();
    channel
        .deliver(&message("reminder:A-7:S100"))
        .await
        .unwrap();
    channel
        .deliver(&message("reminder:A-8:S100"))
        .await
        .unwrap();

    let received = server.received();
    let ids: Vec<&str> = received
        .iter()
        .map(|mail| header(&mail.data, "Message-ID").unwrap())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    assert!(ids[0].starts_with("<reminder-A-7-S100-") && ids[0].ends_with("@qaloop>"));
}

#[tokio::test]
async fn a_due_date_arrives_as_a_published_ics_attachment() {
    let server = SmtpServer::start(Options::default()).await;
    let channel = plain_channel(&server);

    channel
        .deliver(&with_due_date(message("k1")))
        .await
        .unwrap();

    let data = &server.received()[0].data;
    assert!(
        header(data, "Content-Type")
            .unwrap()
            .starts_with("multipart/mixed")
    );
    assert!(data.contains("Content-Type: text/calendar; method=PUBLISH; charset=utf-8\r\n"));
    assert!(data.contains("filename=\"due.ics\""));
    assert!(data.contains("\r\nMETHOD:PUBLISH\r\n"));
    assert!(data.contains("\r\nUID:assignment-7@qaloop\r\n"));
    assert!(data.contains("\r\nDTSTART;VALUE=DATE:20260331\r\n"));
    assert!(data.contains("\r\nDTEND;VALUE=DATE:20260401\r\n"));
    assert!(data.contains("\r\nSUMMARY:Case file audit\r\n"));
}

/// A STARTTLS + AUTH server, and settings that trust its CA and read the password from a file.
async fn secure_server_and_settings(options: Options, dir: &Path) -> (SmtpServer, SmtpSettings) {
    let server = SmtpServer::start(Options {
        starttls: true,
        login: Some(("qaloop".to_owned(), "s3cret".to_owned())),
        ..options
    })
    .await;
    std::fs::write(dir.join("ca.pem"), server.ca_pem()).unwrap();
    std::fs::write(dir.join("smtp-password"), "s3cret\n").unwrap();
    let settings = SmtpSettings {
        security: SmtpSecurity::Starttls,
        username: Some("qaloop".to_owned()),
        password_file: Some("smtp-password".into()),
        ca_file: Some("ca.pem".into()),
        ..plain_settings(&server)
    };
    (server, settings)
}

#[tokio::test]
async fn starttls_and_auth_plain_with_a_trusted_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (server, settings) = secure_server_and_settings(Options::default(), dir.path()).await;
    let channel = SmtpChannel::new(&settings, dir.path()).unwrap();

    channel.deliver(&message("k1")).await.unwrap();

    let received = server.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].tls, "sent under TLS");
    assert_eq!(received[0].auth_user.as_deref(), Some("qaloop"));
}

#[tokio::test]
async fn auth_login_when_it_is_the_only_mechanism_offered() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        auth_mechanisms: vec!["LOGIN"],
        ..Options::default()
    };
    let (server, settings) = secure_server_and_settings(options, dir.path()).await;
    let channel = SmtpChannel::new(&settings, dir.path()).unwrap();

    channel.deliver(&message("k1")).await.unwrap();

    assert_eq!(server.received()[0].auth_user.as_deref(), Some("qaloop"));
}

#[tokio::test]
async fn a_wrong_password_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let (server, settings) = secure_server_and_settings(Options::default(), dir.path()).await;
    std::fs::write(dir.path().join("smtp-password"), "wrong").unwrap();
    let channel = SmtpChannel::new(&settings, dir.path()).unwrap();

    let reason = permanent_reason(channel.deliver(&message("k1")).await);

    assert!(reason.contains("535"), "{reason}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_temporary_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (server, settings) = secure_server_and_settings(Options::default(), dir.path()).await;
    let settings = SmtpSettings {
        ca_file: None,
        ..settings
    };
    let channel = SmtpChannel::new(&settings, dir.path()).unwrap();

    temporary_reason(channel.deliver(&message("k1")).await);

    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_relay_without_starttls_gets_nothing_when_starttls_is_required() {
    let server = SmtpServer::start(Options::default()).await;
    let settings = SmtpSettings {
        security: SmtpSecurity::Starttls,
        ..plain_settings(&server)
    };
    let channel = SmtpChannel::new(&settings, Path::new(".")).unwrap();

    temporary_reason(channel.deliver(&message("k1")).await);

    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_rejected_recipient_is_permanent_and_the_error_names_no_address() {
    let server = SmtpServer::start(Options {
        rcpt_replies: vec![(TO.to_owned(), 550)],
        ..Options::default()
    })
    .await;
    let channel = plain_channel(&server);

    let reason = permanent_reason(channel.deliver(&message("k1")).await);

    assert!(reason.contains("550"), "{reason}");
    assert!(!reason.contains('@'), "no address in {reason:?}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_greylisted_recipient_is_temporary() {
    let server = SmtpServer::start(Options {
        rcpt_replies: vec![(TO.to_owned(), 451)],
        ..Options::default()
    })
    .await;
    let channel = plain_channel(&server);

    let reason = temporary_reason(channel.deliver(&message("k1")).await);

    assert!(reason.contains("451"), "{reason}");
    assert!(!reason.contains('@'), "no address in {reason:?}");
}

#[tokio::test]
async fn a_relay_refusing_service_is_temporary() {
    let server = SmtpServer::start(Options {
        greeting: 421,
        ..Options::default()
    })
    .await;
    let channel = plain_channel(&server);

    let reason = temporary_reason(channel.deliver(&message("k1")).await);

    assert!(reason.contains("421"), "{reason}");
}

#[tokio::test]
async fn a_relay_that_is_down_is_temporary_and_delivery_resumes_when_it_is_back() {
    let mut server = SmtpServer::start(Options::default()).await;
    let channel = plain_channel(&server);
    // A first send leaves a pooled connection that the relay's going down will break.
    channel.deliver(&message("k1")).await.unwrap();

    server.stop().await;
    let down = channel.deliver(&message("k2")).await;
    server.restart().await;
    let back = channel.deliver(&message("k3")).await;

    temporary_reason(down);
    back.unwrap();
    let keys: Vec<String> = server
        .received()
        .iter()
        .map(|mail| header(&mail.data, "Message-ID").unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["<k1@qaloop>", "<k3@qaloop>"]);
}

#[tokio::test]
async fn a_relay_that_never_answers_is_temporary_within_the_timeout() {
    let server = SmtpServer::start(Options {
        silent: true,
        ..Options::default()
    })
    .await;
    let settings = SmtpSettings {
        timeout_seconds: 1,
        ..plain_settings(&server)
    };
    let channel = SmtpChannel::new(&settings, Path::new(".")).unwrap();
    let started = Instant::now();

    let reason = temporary_reason(channel.deliver(&message("k1")).await);

    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert!(reason.contains("1 s"), "{reason}");
}

#[tokio::test]
async fn after_a_send_times_out_the_next_one_does_not_reuse_its_connection() {
    // The relay takes the first message and then goes quiet on that connection for good; a new
    // connection is served normally. Keeping the stalled connection for the next send would
    // hang that send too.
    let server = SmtpServer::start(Options {
        stall_after_data: 1,
        ..Options::default()
    })
    .await;
    let settings = SmtpSettings {
        timeout_seconds: 1,
        ..plain_settings(&server)
    };
    let channel = SmtpChannel::new(&settings, Path::new(".")).unwrap();

    let stalled = channel.deliver(&message("k1")).await;
    let next = channel.deliver(&message("k2")).await;

    temporary_reason(stalled);
    next.unwrap();
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn messages_sent_back_to_back_share_one_connection_with_no_noop_between() {
    let server = SmtpServer::start(Options::default()).await;
    let channel = plain_channel(&server);

    for key in ["k1", "k2", "k3"] {
        channel.deliver(&message(key)).await.unwrap();
    }

    assert_eq!(server.received().len(), 3);
    assert_eq!(server.sessions(), 1);
    assert_eq!(server.noops(), 0);
}

#[tokio::test]
async fn after_a_refused_message_the_next_one_goes_over_a_new_connection() {
    // A refused recipient ends the dialogue on that connection (lettre quits it); the channel
    // must not keep it for the next message.
    let server = SmtpServer::start(Options {
        rcpt_replies: vec![(TO.to_owned(), 550)],
        ..Options::default()
    })
    .await;
    let channel = plain_channel(&server);

    let refused = channel.deliver(&message("k1")).await;
    let again = channel.deliver(&message("k2")).await;

    permanent_reason(refused);
    permanent_reason(again);
    assert_eq!(server.sessions(), 2);
}

#[test]
fn a_channel_that_outlives_its_runtime_drops_quietly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, channel) = runtime.block_on(async {
        let server = SmtpServer::start(Options::default()).await;
        let channel = plain_channel(&server);
        // Leaves a connection open in the channel, kept for the next send.
        channel.deliver(&message("k1")).await.unwrap();
        (server, channel)
    });
    drop(runtime);

    drop(channel);
    drop(server);
}

fn file_channel(base: &Path) -> FileChannel {
    let settings = FileSettings {
        name: "files".to_owned(),
        dir: "outbox/mail".into(),
        from: "qa@council.example".to_owned(),
        reply_to: None,
    };
    FileChannel::new(&settings, base).unwrap()
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_file_channel_writes_one_eml_per_key_and_overwrites_on_redelivery() {
    let base = tempfile::tempdir().unwrap();
    let channel = file_channel(base.path());
    let mut changed = message("k1");
    changed.subject = "Case file audit due 1 April".to_owned();

    channel.deliver(&message("k1")).await.unwrap();
    channel
        .deliver(&with_due_date(message("k2")))
        .await
        .unwrap();
    channel.deliver(&changed).await.unwrap();

    let dir = base.path().join("outbox/mail");
    assert_eq!(
        file_names(&dir),
        ["k1.eml", "k2.eml"],
        "no temporary files left"
    );
    assert_eq!(channel.path_for("k1"), dir.join("k1.eml"));
    let k1 = std::fs::read_to_string(dir.join("k1.eml")).unwrap();
    assert_eq!(header(&k1, "Subject"), Some("Case file audit due 1 April"));
    assert_eq!(header(&k1, "Message-ID"), Some("<k1@qaloop>"));
    assert_eq!(header(&k1, "Auto-Submitted"), Some("auto-generated"));
    let k2 = std::fs::read_to_string(dir.join("k2.eml")).unwrap();
    assert!(k2.contains("DTSTART;VALUE=DATE:20260331"));
}

#[tokio::test]
async fn the_file_channel_cannot_reach_or_deliver_to_someone_without_an_address() {
    let base = tempfile::tempdir().unwrap();
    let channel = file_channel(base.path());
    let mut message = message("k1");
    message.recipient.email = None;

    let reaches = channel.reaches(&message.recipient);
    let reason = permanent_reason(channel.deliver(&message).await);

    assert!(!reaches);
    assert!(reason.contains("S100"), "{reason}");
    assert!(!base.path().join("outbox/mail/k1.eml").exists());
}
