//! The dispatcher: sends what the outbox holds, records each outcome, retries with backoff.
//!
//! **Invariant:** the only caller of [`Channel::deliver`]; it reads the outbox and nothing else
//! decides what is sent. Rows are claimed with a lease, sent one at a time per channel in queue
//! order (channels run side by side), and nothing is lost: a row whose outcome was not recorded
//! is sent again when its lease runs out. A channel with `connections` n > 1 (SMTP or webhook)
//! runs n lanes side by side, each dealt every nth row of a batch and working exactly as a
//! channel's single lane does (its own order, journal notes and recorded groups). Each lane
//! runs as a Tokio task of its own, so that lanes can use every core of a multi-threaded
//! runtime (their rendering and bookkeeping are CPU work; joined in one task they shared one
//! core), and a lane sends while the dispatch's own task claims the next batch. (`serve` runs
//! two worker threads; on a current-thread runtime the tasks would share its one thread and
//! overlap only their waiting, as the joined futures did.)
//!
//! # Recording outcomes
//! Each channel's sends and the recording of their outcomes run side by side: while one write
//! records a group of outcomes (all the deliveries in one statement, so one commit), the next
//! rows are sent. A group is [`RECORD_BATCH`] outcomes, or fewer when the lane ends or the
//! group's first outcome has waited [`RECORD_WITHIN`]; when a full group is waiting behind the
//! one being written, sending waits for the write.
//!
//! **Bound:** up to `2 × RECORD_BATCH + 1` = 65 rows per channel would be unrecorded in the
//! database at any moment (a group being written, a group waiting, the message being sent).
//! So that a process killed mid-dispatch (a crash, `kill -9`; a shutdown signal waits for the
//! pass) does not resend them all, each delivery is first noted in the sent journal
//! (`journal.rs`) before the next message on its channel goes out: on SQLite a line in a local
//! file (one `write`, no commit) that the next dispatch records before it claims anything; on
//! PostgreSQL, where another node may claim a dead node's rows, the outbox row itself, at once
//! (one `UPDATE` whose commit does not wait for `fsync`, written to the server before the next
//! send and answered while it is in flight; deliveries it recorded skip the recorder). Either
//! way a kill resends at most the message in flight on each channel lane (one per SMTP
//! connection): accepted by the peer, not yet noted. Recording every
//! outcome with a commit that waits for `fsync` before the next send would cost milliseconds
//! per message on PostgreSQL, longer than the send itself (`benches/dispatch.rs`,
//! BENCHMARKS.md). Power loss is not covered: neither note waits for the disk, so the last
//! moments' notes can be lost, and their messages sent again (never lost).
//!
//! While a batch is being sent, the next one is claimed (its recipients looked up with it, its
//! daily messages' contexts parsed and re-checked once), so the database works while the
//! network does. Its rows come after the current batch's in queue
//! order and wait until that batch is done, so the order per channel holds; if the dispatch
//! stops early they stay leased, and go out when the lease runs out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::context::{Failure, TemplateContext};
use super::journal::{FileJournal, Journal};
use super::settings::NotifyConfig;
use super::templates::Templates;
use super::{CalendarEvent, Channel, DeliveryError, Kind, Message, Recipient};
use crate::org::Org;
use crate::store::{DeliveryNotes, NewOutbox, NoteInFlight, OutboxRow, Store, StoreError};

/// How long a claimed row is reserved for the dispatcher that claimed it.
const LEASE: SignedDuration = SignedDuration::from_secs(300);
/// Rows claimed per round.
const BATCH: i64 = 500;
/// The most outcomes one write records, and the most that wait to be written (see the module
/// docs for the bound on duplicates this gives).
const RECORD_BATCH: usize = 32;
/// The longest an outcome waits for others to be recorded with it.
const RECORD_WITHIN: Duration = Duration::from_millis(100);

/// Kinds sent at any hour: working hours hold routine mail, never these.
const NEVER_HELD: [&str; 2] = ["urgent_concern", "admin_alert"];

/// Retry policy, from `[notify]`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// A cap on attempts; 0: none (messages are given up by age).
    pub max_attempts: u32,
    /// Give up on a message this many working days after it was queued.
    pub give_up_after_working_days: u32,
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// From settings.
    pub fn from_config(config: &NotifyConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            give_up_after_working_days: config.give_up_after_working_days,
            base: Duration::from_secs(config.backoff_base_seconds),
            max: Duration::from_secs(config.backoff_max_seconds),
        }
    }

    /// The delay before retry number `attempt` (1 for the first retry): exponential, capped,
    /// with "equal jitter" (half fixed, half random) so a relay that comes back is not hit by
    /// every message at once; never shorter than the peer's `Retry-After`, which is honoured
    /// as given (a message whose retry would fall after it is too old is given up instead).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        let capped = exp.min(self.max);
        let jittered = capped / 2 + capped.mul_f64(fastrand::f64() / 2.0);
        jittered.max(retry_after.unwrap_or_default())
    }
}

/// Waits for a delivery's note to be answered: the lane's notes back, and the outcome for the
/// recorder, `true` when the note recorded it in the database already.
async fn settle(
    journal: Option<&Journal>,
    (row, outcome, note): (OutboxRow, Outcome, NoteInFlight),
) -> (DeliveryNotes, (OutboxRow, Outcome, bool)) {
    let (notes, result) = note.answer().await;
    let recorded = match result {
        Ok(()) => journal.is_some_and(Journal::records),
        Err(e) => {
            tracing::warn!(error = %e, "a crash now may resend this message");
            false
        }
    };
    (notes, (row, outcome, recorded))
}

/// What a dispatch run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchReport {
    /// Delivered.
    pub sent: usize,
    /// Failed temporarily; will be retried.
    pub retrying: usize,
    /// Given up on (an admin alert was queued).
    pub dead: usize,
}

/// Sends outbox rows through the configured channels.
///
/// Cheap to clone (its channels and templates are shared): each claimed batch's lanes run as
/// tasks of their own over a clone, so that they can use every core.
#[derive(Clone)]
pub struct Dispatcher {
    /// Channels by name.
    channels: HashMap<String, Arc<dyn Channel>>,
    /// Rendering.
    templates: Arc<Templates>,
    /// Retries.
    policy: RetryPolicy,
    /// Admin alerts: (channel, address for email channels).
    admin: Option<(String, Option<String>)>,
    /// Nothing is sent outside these (and the calendar's working days); `None`: any time.
    hours: Option<(super::router::WorkingHours, crate::calendar::Calendar)>,
    /// How long a claim reserves its rows; renewed every third of it while sending.
    lease: SignedDuration,
    /// The sent journal's file (SQLite): each delivery is noted there before its group is
    /// recorded, so a kill resends at most the message in flight (`journal.rs`). Unused on
    /// PostgreSQL, where the journal is the database itself.
    journal: Option<std::path::PathBuf>,
}

enum Outcome {
    Sent,
    Retry(Timestamp, String),
    Dead(String),
    Cancelled,
    /// No longer useful (a reminder whose due date passed): withdrawn, no admin alert.
    Expired(String),
}

/// Until when a failing message is still worth retrying.
enum Expiry {
    /// A reminder or due-today notice: until the end of the latest due date it names.
    DueDatePassed(Timestamp),
    /// Anything else: `give_up_after_working_days` after it was queued.
    TooOld(Timestamp),
}

impl Dispatcher {
    /// A dispatcher over `channels`.
    pub fn new(
        channels: HashMap<String, Arc<dyn Channel>>,
        templates: Arc<Templates>,
        policy: RetryPolicy,
        admin: Option<(String, Option<String>)>,
    ) -> Self {
        Self {
            channels,
            templates,
            policy,
            admin,
            hours: None,
            lease: LEASE,
            journal: None,
        }
    }

    /// Notes every delivery in the sent journal at `path` (`None`: no journal) before it is
    /// recorded in the database, and replays it at the start of each dispatch.
    pub fn with_journal(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.journal = path;
        self
    }

    /// The journal for one dispatch (`journal.rs`): the file, when there is one, once it has
    /// recorded what an interrupted dispatch left in it. Without it — none configured, it
    /// cannot be opened (a warning), or another process on this machine is dispatching (it
    /// holds the file) — the database on PostgreSQL, and nothing on SQLite.
    async fn open_journal(&self, store: &Store) -> Result<Option<Journal>, StoreError> {
        let without_file = || (store.backend_name() == "postgres").then_some(Journal::Database);
        let Some(path) = &self.journal else {
            return Ok(without_file());
        };
        match FileJournal::open(path) {
            Ok(Some(journal)) => {
                journal.replay(store).await?;
                Ok(Some(Journal::File(journal)))
            }
            Ok(None) => Ok(without_file()),
            Err(e) => {
                let fallback = without_file();
                if fallback.is_some() {
                    tracing::warn!(journal = %path.display(), error = %e, "cannot open the sent journal; recording each delivery in the database instead (slower)");
                } else {
                    tracing::warn!(journal = %path.display(), error = %e, "cannot open the sent journal; a crash now may resend up to a group of messages");
                }
                Ok(fallback)
            }
        }
    }

    /// Sends nothing outside working hours: rows queued in hours but not yet sent when they end
    /// (a pass late in the day, a retry) wait for the next working morning.
    pub fn with_working_hours(
        mut self,
        hours: super::router::WorkingHours,
        calendar: crate::calendar::Calendar,
    ) -> Self {
        self.hours = Some((hours, calendar));
        self
    }

    /// Sends everything ready at `now`, round after round until nothing is ready.
    pub async fn dispatch(
        &self,
        store: &Store,
        now: Timestamp,
    ) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        let journal = self.open_journal(store).await?.map(Arc::new);
        let journal = journal.as_ref();
        // Outside working hours only what is never held goes out.
        let kinds: Option<&[&str]> = match &self.hours {
            Some((hours, calendar)) if !hours.contains(now, calendar) => Some(&NEVER_HELD),
            _ => None,
        };
        // The moment by the caller's clock plus the time since: a lease starts when its claim
        // is made, not when the dispatch began, and no clock is read here.
        let started = std::time::Instant::now();
        let at = || now + SignedDuration::try_from(started.elapsed()).unwrap_or_default();
        // The claims this dispatch holds (the batch being sent and the one claimed ahead), kept
        // leased while it works.
        let held = std::sync::Mutex::new(Vec::<String>::new());
        let hold = |batch: &Option<(Vec<OutboxRow>, Arc<Looked>)>| {
            if let Some(claim) = batch.as_ref().and_then(|(rows, _)| rows[0].claim.clone()) {
                held.lock().unwrap_or_else(|e| e.into_inner()).push(claim);
            }
        };
        let release = |claim: Option<String>| {
            if let Some(claim) = claim {
                held.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|c| *c != claim);
            }
        };
        let work = async {
            let mut batch = claim_batch(store, at(), self.lease, kinds).await?;
            hold(&batch);
            while let Some((rows, recipients)) = batch {
                let claim = rows[0].claim.clone();
                let (sent, next) = tokio::join!(
                    self.send_batch(store, recipients, rows, now, journal),
                    claim_batch(store, at(), self.lease, kinds)
                );
                release(claim);
                let sent = sent?;
                report.sent += sent.sent;
                report.retrying += sent.retrying;
                report.dead += sent.dead;
                batch = match next? {
                    Some(next) => Some(next),
                    // That claim ran while this batch was sent, so it could not see what
                    // recording the batch queued (admin alerts) or released: look once more.
                    None => claim_batch(store, at(), self.lease, kinds).await?,
                };
                hold(&batch);
            }
            Ok::<(), StoreError>(())
        };
        let renew = async {
            let every = self.lease.unsigned_abs() / 3;
            loop {
                tokio::time::sleep(every).await;
                let claims = held.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Err(e) = store.renew_claims(&claims, at() + self.lease).await {
                    tracing::warn!(error = %e, "could not renew the outbox lease; rows may be sent twice if this dispatch outlives it");
                }
            }
        };
        tokio::select! {
            result = work => result?,
            () = renew => {}
        }
        // Every delivery is recorded in the database now: the journal's lines are spent.
        if let Some(journal) = journal {
            journal.spent()?;
        }
        Ok(report)
    }

    /// Leases claims for `lease` instead of the default five minutes (tests with slow peers).
    pub fn with_lease(mut self, lease: SignedDuration) -> Self {
        self.lease = lease;
        self
    }

    /// One claimed batch: each channel's rows in order, channels (and a channel's lanes) side
    /// by side, each lane a task of its own so that lanes can run on different cores.
    async fn send_batch(
        &self,
        store: &Store,
        recipients: Arc<Looked>,
        rows: Vec<OutboxRow>,
        now: Timestamp,
        journal: Option<&Arc<Journal>>,
    ) -> Result<DispatchReport, StoreError> {
        let mut by_channel: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
        for row in rows {
            by_channel.entry(row.channel.clone()).or_default().push(row);
        }
        // A channel that sends over several connections gets that many lanes, dealt its rows
        // in turn (row i to lane i mod n), so the queue's front still goes out first.
        let mut lanes_rows = Vec::new();
        for (name, rows) in by_channel {
            let n = self
                .channels
                .get(&name)
                .map_or(1, |c| c.connections().max(1));
            let mut dealt: Vec<Vec<OutboxRow>> =
                (0..n.min(rows.len())).map(|_| Vec::new()).collect();
            for (i, row) in rows.into_iter().enumerate() {
                dealt[i % n].push(row);
            }
            lanes_rows.extend(dealt);
        }
        // Each lane is a task of its own (dropping this future aborts them, as it would cut
        // off futures joined here): lanes use every core, and even a single lane sends while
        // this task claims and reads the next batch.
        let this = Arc::new(self.clone());
        let mut lanes = tokio::task::JoinSet::new();
        for (i, rows) in lanes_rows.into_iter().enumerate() {
            let (this, store, org) = (Arc::clone(&this), store.clone(), Arc::clone(&recipients));
            let journal = journal.cloned();
            lanes.spawn(async move {
                let journal = journal.as_deref();
                (i, this.run_lane(&store, &org, rows, now, journal).await)
            });
        }
        let mut results = Vec::with_capacity(lanes.len());
        while let Some(joined) = lanes.join_next().await {
            match joined {
                Ok(lane) => results.push(lane),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("a dispatch lane was cancelled: {e}"),
            }
        }
        results.sort_by_key(|(i, _)| *i);
        let results = results.into_iter().map(|(_, lane)| lane);
        let mut report = DispatchReport::default();
        for lane in results {
            let lane = lane?;
            report.sent += lane.sent;
            report.retrying += lane.retrying;
            report.dead += lane.dead;
        }
        Ok(report)
    }

    /// One channel's rows, sent in order while their outcomes are recorded (module docs).
    async fn run_lane(
        &self,
        store: &Store,
        looked: &Looked,
        rows: Vec<OutboxRow>,
        now: Timestamp,
        journal: Option<&Journal>,
    ) -> Result<DispatchReport, StoreError> {
        let (queue, mut outcomes) = tokio::sync::mpsc::channel(RECORD_BATCH);
        let send = async move {
            let mut rows = rows.into_iter();
            let prepare = |row: OutboxRow| {
                let prepared = self.prepare(&row, looked, now);
                (row, prepared)
            };
            let mut next = rows.next().map(prepare);
            // Deliveries the notes recorded already (PostgreSQL) are counted here; the rest go
            // to the recorder. `false`: the recorder has stopped on an error.
            let mut recorded = DispatchReport::default();
            let pass_on = async |settled: (OutboxRow, Outcome, bool),
                                 recorded: &mut DispatchReport| {
                if let (row, Outcome::Sent, true) = &settled {
                    crate::ops::metrics::record_send(&row.channel, "sent");
                    recorded.sent += 1;
                    return true;
                }
                queue.send(settled).await.is_ok()
            };
            // The lane's way of noting deliveries, lent to the note in flight.
            let mut notes = Some(store.delivery_notes());
            // The last delivery, its note on its way (module docs): answered while the next
            // message is sent, then handed to the recorder.
            let mut in_flight: Option<(OutboxRow, Outcome, NoteInFlight)> = None;
            while let Some((row, prepared)) = next.take() {
                let noted = async {
                    match in_flight.take() {
                        Some(note) => Some(settle(journal, note).await),
                        None => None,
                    }
                };
                let (outcome, noted) = match prepared {
                    Ok((channel, message)) => {
                        let mut delivery = pin!(self.deliver(channel, &message, &row, now));
                        // Put this message on the wire, then render the next while it is in
                        // flight: rendering is pure, so this moves work into time otherwise
                        // spent waiting, and the sends stay one at a time, in order.
                        let started = futures_util::poll!(delivery.as_mut());
                        next = rows.next().map(prepare);
                        match started {
                            Poll::Ready(outcome) => (outcome, noted.await),
                            Poll::Pending => tokio::join!(delivery, noted),
                        }
                    }
                    Err(outcome) => {
                        next = rows.next().map(prepare);
                        (outcome, noted.await)
                    }
                };
                if let Some((lent, settled)) = noted {
                    notes = Some(lent);
                    if !pass_on(settled, &mut recorded).await {
                        // Recording failed and returned its error: stop here. Nothing is cut
                        // off mid-send; the rows not sent stay leased and go out later.
                        return recorded;
                    }
                }
                // Delivered: note it before the next message goes out (on PostgreSQL that
                // records it), so a kill from here on does not send it again.
                match (&outcome, journal, notes.take()) {
                    (Outcome::Sent, Some(journal), Some(lent)) => {
                        let claim = row.claim.as_deref().unwrap_or("");
                        let note = journal.delivered(lent, row.id, now, claim).await;
                        in_flight = Some((row, outcome, note));
                    }
                    (_, _, lent) => {
                        notes = lent;
                        if !pass_on((row, outcome, false), &mut recorded).await {
                            return recorded;
                        }
                    }
                }
            }
            if let Some(note) = in_flight {
                let (_, settled) = settle(journal, note).await;
                pass_on(settled, &mut recorded).await;
            }
            recorded
        };
        let record = async move {
            let mut report = DispatchReport::default();
            let mut batch = Vec::with_capacity(RECORD_BATCH);
            while outcomes.recv_many(&mut batch, RECORD_BATCH).await > 0 {
                // Gather a group for a moment: a write per group of sends, not one per send.
                let deadline = tokio::time::Instant::now() + RECORD_WITHIN;
                while batch.len() < RECORD_BATCH {
                    let more = RECORD_BATCH - batch.len();
                    match tokio::time::timeout_at(deadline, outcomes.recv_many(&mut batch, more))
                        .await
                    {
                        Ok(0) | Err(_) => break, // the lane is done, or time is up
                        Ok(_) => {}
                    }
                }
                self.record(store, &batch, now, &mut report).await?;
                batch.clear();
            }
            Ok::<_, StoreError>(report)
        };
        let (recorded, report) = tokio::join!(send, record);
        let mut report = report?;
        report.sent += recorded.sent;
        Ok(report)
    }

    /// Records a group of outcomes: the deliveries in one statement (but those the journal
    /// recorded already, `true`), anything else row by row.
    async fn record(
        &self,
        store: &Store,
        outcomes: &[(OutboxRow, Outcome, bool)],
        now: Timestamp,
        report: &mut DispatchReport,
    ) -> Result<(), StoreError> {
        // A lane's rows come from one claim; grouped by claim all the same, to be exact.
        let mut sent_by_claim: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for (row, outcome, recorded) in outcomes {
            if matches!(outcome, Outcome::Sent) && *recorded {
                report.sent += 1;
            } else if matches!(outcome, Outcome::Sent) {
                sent_by_claim
                    .entry(row.claim.as_deref().unwrap_or(""))
                    .or_default()
                    .push(row.id);
            }
        }
        for (claim, ids) in &sent_by_claim {
            store.mark_sent(ids, claim, now).await?;
            report.sent += ids.len();
        }
        for (row, outcome, _) in outcomes {
            let claim = row.claim.as_deref().unwrap_or("");
            let result = match outcome {
                Outcome::Sent => "sent",
                Outcome::Retry(..) => "retry",
                Outcome::Dead(_) => "dead",
                Outcome::Cancelled => "cancelled",
                Outcome::Expired(_) => "expired",
            };
            crate::ops::metrics::record_send(&row.channel, result);
            match outcome {
                Outcome::Sent => {}
                Outcome::Retry(at, error) => {
                    tracing::warn!(outbox_id = row.id, channel = %row.channel, recipient = %row.recipient, attempt = row.attempts + 1, %error, "delivery failed; will retry");
                    store.mark_failed(row.id, claim, *at, error).await?;
                    report.retrying += 1;
                }
                Outcome::Dead(error) => {
                    tracing::error!(outbox_id = row.id, channel = %row.channel, recipient = %row.recipient, %error, "delivery abandoned");
                    let alert = self.alert_for(row, error, now);
                    store.mark_dead(row.id, claim, error, &alert, now).await?;
                    report.dead += 1;
                }
                Outcome::Cancelled => {
                    store
                        .mark_cancelled(row.id, claim, "recipient is no longer on the staff list")
                        .await?;
                }
                Outcome::Expired(reason) => {
                    tracing::warn!(outbox_id = row.id, channel = %row.channel, recipient = %row.recipient, %reason, "undelivered notice withdrawn");
                    store.mark_cancelled(row.id, claim, reason).await?;
                }
            }
        }
        Ok(())
    }

    /// The channel and the rendered message for a row, or the outcome that makes sending moot
    /// (no such channel, a recipient who left or cannot be reached, a template that fails).
    fn prepare(
        &self,
        row: &OutboxRow,
        looked: &Looked,
        now: Timestamp,
    ) -> Result<(&dyn Channel, Message), Outcome> {
        let Some(channel) = self.channels.get(&row.channel) else {
            return Err(Outcome::Dead(format!(
                "channel `{}` is not configured",
                row.channel
            )));
        };
        let message = self.message(row, looked, now, channel.sends_html())?;
        if !channel.reaches(&message.recipient) {
            return Err(Outcome::Dead(format!(
                "channel `{}` cannot reach {} (no address)",
                row.channel, row.recipient
            )));
        }
        Ok((channel.as_ref(), message))
    }

    /// Sends a prepared message and sorts the answer into an outcome.
    async fn deliver(
        &self,
        channel: &dyn Channel,
        message: &Message,
        row: &OutboxRow,
        now: Timestamp,
    ) -> Outcome {
        match channel.deliver(message).await {
            Ok(()) => Outcome::Sent,
            Err(DeliveryError::Permanent { reason }) => Outcome::Dead(reason),
            Err(DeliveryError::Temporary {
                reason,
                retry_after,
            }) => {
                let attempt = u32::try_from(row.attempts)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                let delay = self.policy.delay(attempt, retry_after);
                let retry_at = SignedDuration::try_from(delay)
                    .ok()
                    .and_then(|d| now.checked_add(d).ok())
                    .unwrap_or(Timestamp::MAX);
                match self.expiry(row, message) {
                    _ if self.policy.max_attempts > 0 && attempt >= self.policy.max_attempts => {
                        Outcome::Dead(format!("gave up after {attempt} attempts: {reason}"))
                    }
                    Expiry::DueDatePassed(end) if retry_at >= end => Outcome::Expired(format!(
                        "withdrawn undelivered: its due date has passed (last error: {reason})"
                    )),
                    Expiry::TooOld(end) if retry_at >= end => Outcome::Dead(format!(
                        "gave up after {} working days undelivered ({attempt} attempts): {reason}",
                        self.policy.give_up_after_working_days
                    )),
                    _ => Outcome::Retry(retry_at, reason),
                }
            }
        }
    }

    /// Until when a failing row is worth retrying (see [`Expiry`]), in the organisation's zone
    /// and working days; without them (no routing configured), in calendar days.
    fn expiry(&self, row: &OutboxRow, message: &Message) -> Expiry {
        let days = self.policy.give_up_after_working_days;
        // Counted from when it could first go out (a message queued on a Saturday waits for
        // Monday's working hours, and its three working days start then).
        let queued = row.created_at.max(row.not_before);
        let Some((hours, calendar)) = &self.hours else {
            let span = SignedDuration::from_hours(24 * i64::from(days));
            return Expiry::TooOld(queued.checked_add(span).unwrap_or(Timestamp::MAX));
        };
        let at_start_of = |day: jiff::civil::Date| {
            day.to_zoned(hours.tz.clone())
                .map(|z| z.timestamp())
                .unwrap_or(Timestamp::MAX)
        };
        match (message.kind, &message.calendar) {
            (Kind::Reminder | Kind::DueToday, Some(event)) => {
                Expiry::DueDatePassed(at_start_of(event.date.tomorrow().unwrap_or(event.date)))
            }
            _ => {
                // Through the whole of the last of those working days.
                let queued = queued.to_zoned(hours.tz.clone());
                let last = calendar.nth_working_day_after(queued.date(), days);
                Expiry::TooOld(at_start_of(last.tomorrow().unwrap_or(last)))
            }
        }
    }

    /// Renders a row into a message (its HTML only when `html`), or the outcome that makes it
    /// moot: `Cancelled` when its recipient has left, `Expired` for a bundled message with
    /// nothing left in it, `Dead` for an unknown kind or a template that fails.
    fn message(
        &self,
        row: &OutboxRow,
        looked: &Looked,
        now: Timestamp,
        html: bool,
    ) -> Result<Message, Outcome> {
        let kind = Kind::parse(&row.kind)
            .ok_or_else(|| Outcome::Dead(format!("unknown kind `{}`", row.kind)))?;
        let org = &looked.org;
        let parsed;
        let context: &TemplateContext = match looked.contexts.get(&row.id) {
            Some(context) => context,
            None => {
                parsed = serde_json::from_str(&row.context)
                    .map_err(|e| Outcome::Dead(format!("unreadable context: {e}")))?;
                &parsed
            }
        };
        if let Some(reason) = nothing_left(kind, context) {
            return Err(Outcome::Expired(reason));
        }
        let recipient = if matches!(
            crate::domain::Assignee::parse(&row.recipient),
            crate::domain::Assignee::Role(_)
        ) {
            Recipient {
                staff_id: row.recipient.clone(),
                email: None,
                chat_id: None,
            }
        } else if row.recipient == "admin" {
            Recipient {
                staff_id: "admin".into(),
                email: self.admin.as_ref().and_then(|(_, address)| address.clone()),
                chat_id: None,
            }
        } else {
            match org.get(&row.recipient) {
                Some(p) if p.is_current() => Recipient {
                    staff_id: p.record.staff_id.clone(),
                    email: Some(p.record.email.clone()),
                    chat_id: p.record.chat_id.clone(),
                },
                _ => return Err(Outcome::Cancelled),
            }
        };
        let rendered = if html {
            self.templates.render(kind, context)
        } else {
            self.templates.render_without_html(kind, context)
        }
        .map_err(|e| Outcome::Dead(e.to_string()))?;
        let first = context.items.first();
        let calendar = match (kind, first, context.items.len()) {
            (Kind::NewAssignment | Kind::Reminder, Some(item), 1)
                if item.work == super::context::Work::Assignment =>
            {
                item.due.parse().ok().map(|date| CalendarEvent {
                    uid: format!("qaloop-assignment-{}", item.id),
                    date,
                    summary: format!("Due: {} ({})", item.title, item.period),
                    url: Some(item.link.clone()),
                })
            }
            _ => None,
        };
        Ok(Message {
            key: row.key.clone(),
            kind,
            recipient,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            // The button of a chat card: the first thing to act on, whichever list it is in.
            link: first
                .or(context.action_items.first())
                .or(context.verify_items.first())
                .or(context.team_items.first())
                .map(|i| i.link.clone()),
            calendar,
            composed_at: now,
        })
    }

    /// `qaloop notify test`: renders a test message for `recipient` and sends it through each
    /// channel (or the one named) at once, bypassing the outbox so the operator sees each
    /// channel's answer. Returns (channel, outcome) pairs in name order.
    pub async fn send_test(
        &self,
        recipient: Recipient,
        context: &TemplateContext,
        only: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<(String, Result<(), DeliveryError>)>, String> {
        let rendered = self
            .templates
            .render(Kind::Test, context)
            .map_err(|e| e.to_string())?;
        let mut names: Vec<&String> = self
            .channels
            .keys()
            .filter(|n| only.is_none_or(|o| o == n.as_str()))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(match only {
                Some(name) => format!("no channel is named `{name}`"),
                None => "no channels are configured".to_owned(),
            });
        }
        let mut results = Vec::new();
        for name in names {
            let channel = &self.channels[name];
            let message = Message {
                key: format!(
                    "test:{}:{}:{name}",
                    now.as_millisecond(),
                    recipient.staff_id
                ),
                kind: Kind::Test,
                recipient: recipient.clone(),
                subject: rendered.subject.clone(),
                text: rendered.text.clone(),
                html: rendered.html.clone(),
                link: Some(context.base_url.clone()),
                calendar: None,
                composed_at: now,
            };
            let outcome = if channel.reaches(&recipient) {
                channel.deliver(&message).await
            } else {
                Err(DeliveryError::Permanent {
                    reason: format!("channel cannot reach {} (no address)", recipient.staff_id),
                })
            };
            results.push((name.clone(), outcome));
        }
        Ok(results)
    }

    /// The admin alert about a dead row (none for alerts themselves: no loops).
    fn alert_for(&self, row: &OutboxRow, error: &str, now: Timestamp) -> Vec<NewOutbox> {
        let Some((channel, _)) = &self.admin else {
            return Vec::new();
        };
        if row.kind == Kind::AdminAlert.as_str() {
            return Vec::new();
        }
        let mut context = TemplateContext::new(Kind::AdminAlert);
        context.recipient = "admin".into();
        context.failure = Some(Failure {
            outbox_id: row.id,
            kind: row.kind.clone(),
            channel: row.channel.clone(),
            recipient: row.recipient.clone(),
            // The name the undelivered message was addressed to (set when it was routed).
            recipient_name: serde_json::from_str::<TemplateContext>(&row.context)
                .ok()
                .and_then(|c| c.recipient_name)
                .unwrap_or_else(|| "a shared channel or a former member of staff".to_owned()),
            attempts: u32::try_from(row.attempts + 1).unwrap_or(u32::MAX),
            error: error.to_owned(),
        });
        vec![NewOutbox {
            key: format!("admin_alert:{}:{channel}", row.id),
            kind: Kind::AdminAlert.as_str().to_owned(),
            channel: channel.clone(),
            recipient: "admin".into(),
            assignment_id: None,
            context: serde_json::to_string(&context).unwrap_or_default(),
            not_before: now,
            suppressed: false,
        }]
    }
}

/// Claims the next rows ready at `now`, with their recipients from the staff list; `None` when
/// nothing is ready. Only the batch's recipients are read: the cost follows the batch, not the
/// size of the staff list, and a leaver is noticed from the next batch on.
async fn claim_batch(
    store: &Store,
    now: Timestamp,
    lease: SignedDuration,
    kinds: Option<&[&str]>,
) -> Result<Option<(Vec<OutboxRow>, Arc<Looked>)>, StoreError> {
    let rows = store.claim_kinds(now, now + lease, BATCH, kinds).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let ids: BTreeSet<&str> = rows
        .iter()
        .map(|row| row.recipient.as_str())
        .filter(|id| {
            *id != "admin"
                && matches!(
                    crate::domain::Assignee::parse(id),
                    crate::domain::Assignee::Person(_)
                )
        })
        .collect();
    let people = store
        .people_by_id(&ids.into_iter().collect::<Vec<_>>())
        .await?;
    let contexts = still_open_items(store, &rows).await?;
    let looked = Looked {
        org: Org::new(people),
        contexts,
    };
    Ok(Some((rows, Arc::new(looked))))
}

/// What a claimed batch needs looked up once, shared by its lanes: its recipients, and the
/// daily messages' contexts, read (and re-checked) when claimed, so not parsed again to render.
struct Looked {
    /// The batch's recipients, from the staff list.
    org: Org,
    /// By row id, the parsed context of each bundled message, with what was done since it was
    /// decided taken out ([`still_open_items`]); it stands for the row's `context`.
    contexts: HashMap<i64, TemplateContext>,
}

/// The kinds that bundle a day's items, re-checked when they go out.
const BUNDLED: [Kind; 3] = [Kind::Digest, Kind::CatchUp, Kind::Welcome];

/// Why a daily message is no longer worth sending: everything in it was done meanwhile (see
/// [`still_open_items`]).
fn nothing_left(kind: Kind, c: &TemplateContext) -> Option<String> {
    if !BUNDLED.contains(&kind) {
        return None;
    }
    let empty = c.items.is_empty()
        && c.team_items.is_empty()
        && c.action_items.is_empty()
        && c.verify_items.is_empty()
        && c.moderated.is_empty();
    empty.then(|| "withdrawn unsent: everything in it was done before it could go out".to_owned())
}

/// A daily message re-checks its items when it goes out: work completed and actions done or
/// verified since it was decided (while a relay was down, say) drop out, so nobody is chased
/// for what they have already done. A message left with nothing is withdrawn when prepared.
/// Two reads per claimed batch, whatever its size. Returns the bundled rows' contexts, parsed
/// and re-checked, by row id (one that cannot be parsed is left out, and fails when prepared).
async fn still_open_items(
    store: &Store,
    rows: &[OutboxRow],
) -> Result<HashMap<i64, TemplateContext>, StoreError> {
    use super::context::Work;
    let bundled = |row: &OutboxRow| BUNDLED.iter().any(|k| row.kind == k.as_str());
    let mut contexts: HashMap<i64, TemplateContext> = rows
        .iter()
        .filter(|row| bundled(row))
        .filter_map(|row| Some((row.id, serde_json::from_str(&row.context).ok()?)))
        .collect();
    if contexts.is_empty() {
        return Ok(contexts);
    }
    let lists = |c: &TemplateContext| {
        [&c.items, &c.team_items, &c.action_items, &c.verify_items]
            .into_iter()
            .flatten()
            .map(|i| (i.work, i.id))
            .collect::<Vec<_>>()
    };
    let mut assignment_ids = BTreeSet::new();
    let mut action_ids = BTreeSet::new();
    for context in contexts.values() {
        for (work, id) in lists(context) {
            if work.is_action() {
                action_ids.insert(id);
            } else {
                assignment_ids.insert(id);
            }
        }
    }
    let open_assignments: BTreeSet<i64> = store
        .assignments_with_ids(
            &assignment_ids.into_iter().collect::<Vec<_>>(),
            &[crate::domain::Status::Open],
        )
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let action_states: BTreeMap<i64, crate::domain::ActionState> = store
        .actions_with_ids(&action_ids.into_iter().collect::<Vec<_>>())
        .await?
        .into_iter()
        .map(|a| (a.id, a.state))
        .collect();
    let still_open = |item: &super::context::Item| match item.work {
        Work::Assignment => open_assignments.contains(&item.id),
        Work::Action => action_states.get(&item.id) == Some(&crate::domain::ActionState::Open),
        Work::Verify => action_states.get(&item.id) == Some(&crate::domain::ActionState::Done),
    };
    for context in contexts.values_mut() {
        for list in [
            &mut context.items,
            &mut context.team_items,
            &mut context.action_items,
            &mut context.verify_items,
        ] {
            list.retain(still_open);
        }
    }
    Ok(contexts)
}
