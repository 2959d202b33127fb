//! A small but real RFC 5321 SMTP server on 127.0.0.1, for the email channel tests.
//!
//! It speaks the protocol over TCP: greeting, EHLO/HELO, STARTTLS (RFC 3207, with a certificate
//! from a throwaway CA made by rcgen), AUTH PLAIN and LOGIN (RFC 4954), MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP and QUIT. It records every accepted message with its envelope.
//! It can refuse recipients with a chosen reply (550 permanent, 451 temporary), greet with 421,
//! say nothing at all or go quiet after a message (stalled relays), and be stopped and started again on the same port (a
//! relay that goes down and comes back).
//!
//! Self-contained: only tokio, tokio-rustls, rustls and rcgen.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The longest command or data line accepted, in octets (RFC 5321 allows 1000 with CRLF).
const MAX_LINE: usize = 4096;

/// How the server behaves. `Options::default()` is a plain relay that accepts everything.
#[derive(Debug, Clone)]
pub struct Options {
    /// Offer STARTTLS, and refuse MAIL until the client has used it.
    pub starttls: bool,
    /// Require AUTH with this user and password before MAIL.
    pub login: Option<(String, String)>,
    /// The AUTH mechanisms offered when `login` is set.
    pub auth_mechanisms: Vec<&'static str>,
    /// Replies to RCPT TO for these addresses instead of 250, e.g. `(address, 550)`.
    pub rcpt_replies: Vec<(String, u16)>,
    /// The greeting code: 220 to serve, 421 to refuse service and close.
    pub greeting: u16,
    /// Accept connections and then never send a byte (a stalled relay).
    pub silent: bool,
    /// For this many messages, read the data and then never answer on that connection again
    /// (a relay that stalls mid-dialogue). The message is not recorded.
    pub stall_after_data: usize,
    /// Take this long to answer each message's data (a slow relay).
    pub answer_after: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            starttls: false,
            login: None,
            auth_mechanisms: vec!["PLAIN", "LOGIN"],
            rcpt_replies: Vec::new(),
            greeting: 220,
            silent: false,
            stall_after_data: 0,
            answer_after: std::time::Duration::ZERO,
        }
    }
}

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The MAIL FROM address.
    pub mail_from: String,
    /// The accepted RCPT TO addresses.
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA, dot-unstuffed, CRLF line endings, without the final `.`.
    pub data: String,
    /// Whether the session was under TLS when the message was sent.
    pub tls: bool,
    /// The user that authenticated, if any.
    pub auth_user: Option<String>,
}

/// What every session of one server shares.
struct Shared {
    options: Options,
    /// Present when `options.starttls`.
    acceptor: Option<TlsAcceptor>,
    /// Accepted messages, in order. A `std` mutex: held only to push or clone.
    received: Mutex<Vec<Received>>,
    /// How many more messages to stall after (counts `options.stall_after_data` down).
    stalls_left: AtomicUsize,
    /// Sessions open now, and the most open at once (a client sending in parallel).
    open: AtomicUsize,
    most_open: AtomicUsize,
    /// Sessions opened in all, and `NOOP`s received in all (a client reusing connections).
    sessions: AtomicUsize,
    noops: AtomicUsize,
}

/// A running (or stopped) test SMTP server. Dropping it stops it.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The CA that signed the server certificate, PEM, when STARTTLS is offered.
    ca_pem: Option<String>,
    /// The accept loop; aborting it also aborts every open session.
    task: Option<JoinHandle<()>>,
}

impl SmtpServer {
    /// Starts a server on 127.0.0.1 on a free port.
    pub async fn start(options: Options) -> SmtpServer {
        let (ca_pem, acceptor) = if options.starttls {
            let (ca_pem, acceptor) = test_tls();
            (Some(ca_pem), Some(acceptor))
        } else {
            (None, None)
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("binding the test SMTP server");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            acceptor,
            received: Mutex::new(Vec::new()),
            stalls_left: AtomicUsize::new(options.stall_after_data),
            open: AtomicUsize::new(0),
            most_open: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            noops: AtomicUsize::new(0),
            options,
        });
        let task = Some(tokio::spawn(accept_loop(listener, Arc::clone(&shared))));
        SmtpServer {
            addr,
            shared,
            ca_pem,
            task,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA certificate (PEM) a client must trust for STARTTLS.
    pub fn ca_pem(&self) -> &str {
        self.ca_pem
            .as_deref()
            .expect("the server was started without STARTTLS")
    }

    /// The most client sessions that were open at once.
    pub fn most_sessions_at_once(&self) -> usize {
        self.shared.most_open.load(Ordering::SeqCst)
    }

    /// How many client sessions were opened, in all.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// How many `NOOP`s clients sent, in all.
    pub fn noops(&self) -> usize {
        self.shared.noops.load(Ordering::SeqCst)
    }

    /// Every message accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops listening and drops every open session, as a relay that goes down.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port, with the same options and the same record.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = bind(self.addr).expect("rebinding the test SMTP server's port");
        self.task = Some(tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.shared),
        )));
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A listener with `SO_REUSEADDR`, so a restart can take the port back while old connections
/// are still in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here so that aborting this task drops, and so aborts, every session.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    // Answer each command at once: with Nagle's algorithm on both ends a small
                    // reply can wait for a delayed ACK (~40 ms) on every round trip.
                    let _ = stream.set_nodelay(true);
                    sessions.spawn(session(stream, Arc::clone(&shared)));
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// A byte stream the session can read and write: TCP at first, TLS after STARTTLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One client connection.
struct Session {
    io: BufReader<Box<dyn Stream>>,
    /// The TCP socket under `io`, to re-arm quick ACKs after each read (see `read_line`).
    fd: std::os::fd::RawFd,
    shared: Arc<Shared>,
    tls: bool,
    auth_user: Option<String>,
    /// MAIL FROM and the accepted RCPT TOs of the transaction in progress.
    envelope: Option<(String, Vec<String>)>,
}

/// Counts a session as open while it lives.
struct OpenSession(Arc<Shared>);

impl OpenSession {
    fn new(shared: &Arc<Shared>) -> OpenSession {
        shared.sessions.fetch_add(1, Ordering::SeqCst);
        let now = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_open.fetch_max(now, Ordering::SeqCst);
        OpenSession(Arc::clone(shared))
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let _open = OpenSession::new(&shared);
    if shared.options.silent {
        // Keep the connection open and say nothing, until the server is stopped.
        let _held = stream;
        match std::future::pending::<Infallible>().await {}
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let mut session = Session {
        fd,
        io: BufReader::new(Box::new(stream)),
        shared,
        tls: false,
        auth_user: None,
        envelope: None,
    };
    session.run().await
}

impl Session {
    async fn run(&mut self) -> io::Result<()> {
        let greeting = self.shared.options.greeting;
        if greeting != 220 {
            return self
                .reply(greeting, "localhost service not available")
                .await;
        }
        self.reply(220, "localhost ESMTP qaloop test server")
            .await?;

        while let Some(line) = self.read_line().await? {
            let (verb, argument) = match line.split_once(' ') {
                Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
                None => (line.to_ascii_uppercase(), ""),
            };
            match verb.as_str() {
                "EHLO" => self.ehlo().await?,
                "HELO" => self.reply(250, "localhost").await?,
                "STARTTLS" => self.starttls().await?,
                "AUTH" => self.auth(argument).await?,
                "MAIL" => self.mail(argument).await?,
                "RCPT" => self.rcpt(argument).await?,
                "DATA" => self.data().await?,
                "RSET" => {
                    self.envelope = None;
                    self.reply(250, "2.0.0 OK").await?;
                }
                "NOOP" => {
                    self.shared.noops.fetch_add(1, Ordering::SeqCst);
                    self.reply(250, "2.0.0 OK").await?;
                }
                "QUIT" => return self.reply(221, "2.0.0 Bye").await,
                _ => self.reply(500, "5.5.2 Command not recognised").await?,
            }
        }
        Ok(())
    }

    async fn ehlo(&mut self) -> io::Result<()> {
        self.envelope = None;
        let options = &self.shared.options;
        let mut lines = vec!["localhost".to_owned(), "8BITMIME".to_owned()];
        if options.starttls && !self.tls {
            lines.push("STARTTLS".to_owned());
        }
        if options.login.is_some() && (self.tls || !options.starttls) {
            lines.push(format!("AUTH {}", options.auth_mechanisms.join(" ")));
        }
        let last = lines.len() - 1;
        let mut text = String::new();
        for (index, line) in lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            text.push_str(&format!("250{separator}{line}\r\n"));
        }
        self.write(&text).await
    }

    async fn starttls(&mut self) -> io::Result<()> {
        let Some(acceptor) = self.shared.acceptor.clone().filter(|_| !self.tls) else {
            return self.reply(454, "4.7.0 TLS not available").await;
        };
        self.reply(220, "2.0.0 Ready to start TLS").await?;
        // RFC 3207: anything the client sent before the handshake is discarded, with the buffer.
        let plain = std::mem::replace(&mut self.io, BufReader::new(Box::new(tokio::io::empty())));
        let tls = acceptor.accept(plain.into_inner()).await?;
        self.io = BufReader::new(Box::new(tls));
        // RFC 3207: the session starts over; the client must EHLO again.
        self.tls = true;
        self.auth_user = None;
        self.envelope = None;
        Ok(())
    }

    async fn auth(&mut self, argument: &str) -> io::Result<()> {
        let Some((user, password)) = self.shared.options.login.clone() else {
            return self.reply(502, "5.5.1 AUTH not offered").await;
        };
        if self.shared.options.starttls && !self.tls {
            return self.reply(538, "5.7.11 Encryption required").await;
        }
        let (mechanism, initial) = match argument.split_once(' ') {
            Some((mechanism, initial)) => (mechanism.to_ascii_uppercase(), Some(initial.trim())),
            None => (argument.to_ascii_uppercase(), None),
        };
        if !self
            .shared
            .options
            .auth_mechanisms
            .contains(&mechanism.as_str())
        {
            return self.reply(504, "5.5.4 Mechanism not supported").await;
        }
        let given = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(initial) => initial.to_owned(),
                    None => self.challenge("").await?,
                };
                decode_base64(&response).and_then(|bytes| {
                    // authzid NUL authcid NUL password
                    let mut parts = bytes.split(|b| *b == 0).skip(1);
                    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
                    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
                    Some((user, password))
                })
            }
            _ => {
                // LOGIN: "Username:" and "Password:" challenges, base64 both ways.
                let user_b64 = match initial {
                    Some(initial) => initial.to_owned(),
                    None => self.challenge("VXNlcm5hbWU6").await?,
                };
                let password_b64 = self.challenge("UGFzc3dvcmQ6").await?;
                let text = |b64: &str| String::from_utf8(decode_base64(b64)?).ok();
                text(&user_b64).zip(text(&password_b64))
            }
        };
        if given == Some((user.clone(), password)) {
            self.auth_user = Some(user);
            self.reply(235, "2.7.0 Authentication successful").await
        } else {
            self.reply(535, "5.7.8 Authentication credentials invalid")
                .await
        }
    }

    /// Sends a 334 challenge and returns the client's answer.
    async fn challenge(&mut self, text: &str) -> io::Result<String> {
        self.reply(334, text).await?;
        Ok(self.read_line().await?.unwrap_or_default())
    }

    async fn mail(&mut self, argument: &str) -> io::Result<()> {
        let options = &self.shared.options;
        if options.starttls && !self.tls {
            return self
                .reply(530, "5.7.0 Must issue a STARTTLS command first")
                .await;
        }
        if options.login.is_some() && self.auth_user.is_none() {
            return self.reply(530, "5.7.0 Authentication required").await;
        }
        if self.envelope.is_some() {
            return self.reply(503, "5.5.1 Nested MAIL command").await;
        }
        let Some(from) = path_argument(argument, "FROM:") else {
            return self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        self.envelope = Some((from, Vec::new()));
        self.reply(250, "2.1.0 OK").await
    }

    async fn rcpt(&mut self, argument: &str) -> io::Result<()> {
        if self.envelope.is_none() {
            return self.reply(503, "5.5.1 Need MAIL first").await;
        }
        let Some(to) = path_argument(argument, "TO:") else {
            return self.reply(501, "5.5.4 Syntax: RCPT TO:<address>").await;
        };
        let configured = self
            .shared
            .options
            .rcpt_replies
            .iter()
            .find(|(address, _)| address.eq_ignore_ascii_case(&to))
            .map(|(_, code)| *code);
        match configured {
            Some(code @ 500..=599) => {
                self.reply(code, &format!("5.1.1 <{to}>: Recipient address rejected"))
                    .await
            }
            Some(code) => {
                self.reply(code, &format!("4.7.1 <{to}>: Try again later"))
                    .await
            }
            None => {
                if let Some((_, recipients)) = &mut self.envelope {
                    recipients.push(to);
                }
                self.reply(250, "2.1.5 OK").await
            }
        }
    }

    async fn data(&mut self) -> io::Result<()> {
        let Some((mail_from, rcpt_to)) = self.envelope.take() else {
            return self.reply(503, "5.5.1 Need MAIL first").await;
        };
        if rcpt_to.is_empty() {
            return self.reply(554, "5.5.1 No valid recipients").await;
        }
        self.reply(354, "End data with <CR><LF>.<CR><LF>").await?;
        let mut data = String::new();
        loop {
            let Some(line) = self.read_line().await? else {
                return Ok(()); // the client went away mid-message: nothing is recorded
            };
            if line == "." {
                break;
            }
            // RFC 5321 §4.5.2: a leading dot was doubled by the client.
            data.push_str(line.strip_prefix('.').unwrap_or(&line));
            data.push_str("\r\n");
        }
        let stall = self
            .shared
            .stalls_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if stall {
            // Hold the connection open and never answer again, until the server is stopped.
            match std::future::pending::<Infallible>().await {}
        }
        if !self.shared.options.answer_after.is_zero() {
            tokio::time::sleep(self.shared.options.answer_after).await;
        }
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Received {
                mail_from,
                rcpt_to,
                data,
                tls: self.tls,
                auth_user: self.auth_user.clone(),
            });
        self.reply(250, "2.0.0 OK queued").await
    }

    /// Acknowledges received data at once instead of after Linux's delayed-ACK timer. lettre
    /// writes a message's body and its final `.` separately, so with Nagle's algorithm on the
    /// client each message would otherwise wait ~40 ms for our ACK. (The option resets itself,
    /// hence once per read.)
    fn quick_ack(&self) {
        // SAFETY: `fd` belongs to the TCP stream inside `self.io`, which lives as long as `self`.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ = socket2::SockRef::from(&fd).set_tcp_quickack(true);
    }

    /// Reads one line without its CRLF; `None` when the client closed the connection.
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut bytes = Vec::new();
        let read = (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut bytes)
            .await?;
        if read == 0 {
            return Ok(None);
        }
        self.quick_ack();
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        self.write(&format!("{code} {text}\r\n")).await
    }

    async fn write(&mut self, text: &str) -> io::Result<()> {
        let stream = self.io.get_mut();
        stream.write_all(text.as_bytes()).await?;
        stream.flush().await
    }
}

/// The address in `FROM:<a@b> PARAMS` / `TO:<a@b>` (prefix case-insensitive).
fn path_argument(argument: &str, prefix: &str) -> Option<String> {
    let head = argument.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = argument[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// Standard base64 (RFC 4648), padding optional; `None` for anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.trim().bytes().filter(|b| *b != b'=') {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// A throwaway CA and a server certificate it signed for `localhost` and `127.0.0.1`: the CA's
/// PEM (for the client to trust) and a TLS acceptor with the server's certificate.
fn test_tls() -> (String, TlsAcceptor) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "qaloop test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    (ca_cert.pem(), TlsAcceptor::from(Arc::new(config)))
}
