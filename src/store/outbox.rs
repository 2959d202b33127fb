//! The outbox's SQL: enqueueing notifications inside the transaction that caused them, claiming
//! rows to send, recording outcomes.
//!
//! Claiming is the one place the backends differ: PostgreSQL claims with `FOR UPDATE SKIP LOCKED`
//! so several dispatchers share the work; SQLite has a single writer, so a plain `UPDATE …
//! RETURNING` inside `BEGIN IMMEDIATE` is already exclusive. A claim is a lease
//! (`claimed_until`): a dispatcher killed mid-send leaves the rows whose outcome it had not yet
//! recorded to be sent again when the lease expires — at most one duplicate each, never a loss.

use jiff::Timestamp;
use serde::Serialize;
use sqlx::{FromRow, QueryBuilder, Transaction};

use super::{Backend, BeginWrite, Store, StoreError, format_instant, instant};

/// Claims skip rows about work that is no longer open: the completion that cancelled them may
/// have committed after they were decided. A lookup by key for each row the claim walks past,
/// not `assignment_id IN (SELECT id … WHERE status = 'open')`: that form read every open
/// assignment (19,000 on a national morning) into a hash or a temporary index on every claim,
/// about 5 ms each (BENCHMARKS.md, "Claims on a national morning").
const OPEN_WORK: &str = " AND (assignment_id IS NULL OR EXISTS (SELECT 1 FROM assignments a \
    WHERE a.id = outbox.assignment_id AND a.status = 'open'))";

/// Before a PostgreSQL claim, in its transaction: walk `outbox_pending_id` in id order and stop
/// at the batch size, as SQLite's `INDEXED BY` does. Without statistics on the rows just queued
/// (a morning's burst, before autovacuum has analysed them) the planner reads every queued row
/// by a bitmap scan and sorts them all on every claim: 17–26 ms against 7–11 ms for 500 of
/// 9,000 rows.
const CLAIM_PLAN: &str = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off";

/// A fresh claim token: random, so two dispatchers (or two rounds of one) never share one.
fn new_claim_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Rows per multi-row INSERT.
const CHUNK: usize = 1000;

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbox {
    /// Deterministic key (`kind:ref:date:recipient:channel`): the same decision made twice —
    /// by a re-run, a catch-up or a second instance — is queued once.
    pub key: String,
    /// Notification kind (`reminder`).
    pub kind: String,
    /// Channel name from `[[channels]]`.
    pub channel: String,
    /// Staff id, `role:NAME` for one post on behalf of a role, or `admin`.
    pub recipient: String,
    /// The assignment it is about, so completing or reassigning it cancels the notice.
    pub assignment_id: Option<i64>,
    /// JSON of the template context.
    pub context: String,
    /// Not before this instant (working hours).
    pub not_before: Timestamp,
    /// Queue it as already cancelled: decided and deliberately not sent (folded into a catch-up
    /// summary), so the same decision is not made again.
    pub suppressed: bool,
}

impl Store {
    /// Of `staff_ids`, those qaloop has ever queued a message for, in any state: a person not
    /// among them gets a welcome first.
    pub async fn recipients_heard(
        &self,
        staff_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut heard = std::collections::HashSet::new();
        for chunk in staff_ids.chunks(CHUNK) {
            let found: Vec<String> = on_pool!(self, |pool| {
                let mut qb =
                    QueryBuilder::new("SELECT DISTINCT recipient FROM outbox WHERE recipient IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                qb.push(")");
                qb.build_query_scalar().fetch_all(pool).await?
            });
            heard.extend(found);
        }
        Ok(heard)
    }
}

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Waiting to be sent (or held until working hours).
    Pending,
    /// Failed at least once; will be retried.
    Failed,
    /// Delivered.
    Sent,
    /// Gave up after the configured attempts, or failed permanently; an admin alert was raised.
    Dead,
    /// No longer wanted (the work was completed, cancelled or reassigned).
    Cancelled,
}

impl OutboxStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Failed => "failed",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Dead => "dead",
            OutboxStatus::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> OutboxStatus {
        match text {
            "failed" => OutboxStatus::Failed,
            "sent" => OutboxStatus::Sent,
            "dead" => OutboxStatus::Dead,
            "cancelled" => OutboxStatus::Cancelled,
            _ => OutboxStatus::Pending,
        }
    }
}

/// A stored outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxRow {
    /// Row id (what `qaloop outbox retry` takes).
    pub id: i64,
    /// Deterministic key.
    pub key: String,
    /// Notification kind.
    pub kind: String,
    /// Channel name.
    pub channel: String,
    /// Staff id, `role:NAME` or `admin`.
    pub recipient: String,
    /// The assignment it is about.
    pub assignment_id: Option<i64>,
    /// JSON template context.
    #[serde(skip)]
    pub context: String,
    /// Where it stands.
    pub status: OutboxStatus,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Held until.
    pub not_before: Timestamp,
    /// Next attempt no earlier than.
    pub next_attempt_at: Timestamp,
    /// The last error (no personal data).
    pub last_error: Option<String>,
    /// Queued at.
    pub created_at: Timestamp,
    /// Delivered at.
    pub sent_at: Option<Timestamp>,
    /// The claim this row was taken under (set by [`Store::claim`]); outcome writes name it.
    #[serde(skip)]
    pub claim: Option<String>,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    key: String,
    kind: String,
    channel: String,
    recipient: String,
    assignment_id: Option<i64>,
    context: String,
    status: String,
    attempts: i64,
    not_before: String,
    next_attempt_at: String,
    last_error: Option<String>,
    created_at: String,
    sent_at: Option<String>,
    claim: Option<String>,
}

const COLUMNS: &str = "id, key, kind, channel, recipient, assignment_id, context, status, \
    CAST(attempts AS BIGINT) AS attempts, not_before, next_attempt_at, last_error, created_at, sent_at, \
    claim";

impl TryFrom<Row> for OutboxRow {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self, StoreError> {
        Ok(OutboxRow {
            not_before: instant("not_before", &r.not_before)?,
            next_attempt_at: instant("next_attempt_at", &r.next_attempt_at)?,
            created_at: instant("created_at", &r.created_at)?,
            sent_at: r
                .sent_at
                .as_deref()
                .map(|t| instant("sent_at", t))
                .transpose()?,
            status: OutboxStatus::parse(&r.status),
            id: r.id,
            key: r.key,
            kind: r.kind,
            channel: r.channel,
            recipient: r.recipient,
            assignment_id: r.assignment_id,
            context: r.context,
            attempts: r.attempts,
            last_error: r.last_error,
            claim: r.claim,
        })
    }
}

/// Queues notifications inside `tx`; rows whose key already exists are skipped. Returns how
/// many were queued.
pub(super) async fn insert<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    rows: &[NewOutbox],
    now: &str,
) -> Result<u64, sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Decode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut queued = 0;
    for chunk in rows.chunks(CHUNK) {
        let mut qb: QueryBuilder<DB> = QueryBuilder::new(
            "INSERT INTO outbox (key, kind, channel, recipient, assignment_id, context, status, \
             not_before, next_attempt_at, created_at, last_error) ",
        );
        qb.push_values(chunk, |mut b, r| {
            let not_before = format_instant(r.not_before);
            b.push_bind(r.key.clone())
                .push_bind(r.kind.clone())
                .push_bind(r.channel.clone())
                .push_bind(r.recipient.clone())
                .push_bind(r.assignment_id)
                .push_bind(r.context.clone())
                .push_bind(if r.suppressed { "cancelled" } else { "pending" }.to_owned())
                .push_bind(not_before.clone())
                .push_bind(not_before)
                .push_bind(now.to_owned())
                .push_bind(
                    r.suppressed
                        .then(|| "folded into a catch-up summary".to_owned()),
                );
        });
        qb.push(" ON CONFLICT (key) DO NOTHING RETURNING id");
        let ids: Vec<(i64,)> = qb.build_query_as().fetch_all(&mut **tx).await?;
        queued += ids.len() as u64;
    }
    Ok(queued)
}

/// Cancels the unsent notifications about an assignment inside `tx` (it was completed,
/// cancelled or reassigned).
pub(super) async fn cancel_for_assignment<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    assignment_id: i64,
    reason: &str,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "UPDATE outbox SET status = 'cancelled', last_error = $1 \
         WHERE assignment_id = $2 AND status IN ('pending', 'failed')",
    )
    .bind(reason.to_owned())
    .bind(assignment_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Queues time-driven notifications (reminders, chases, digests) in one transaction.
    pub async fn enqueue(&self, rows: &[NewOutbox], now: Timestamp) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let at = format_instant(now);
        Ok(on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = insert(&mut tx, rows, &at).await?;
            tx.commit().await?;
            n
        }))
    }

    /// Claims up to `limit` rows ready to send at `now`, leasing them until `lease_until`.
    pub async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.claim_kinds(now, lease_until, limit, None).await
    }

    /// [`Store::claim`], limited to rows of `kinds` when given: outside working hours the
    /// dispatcher still sends what is never held (urgent concerns, admin alerts).
    pub async fn claim_kinds(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
        kinds: Option<&[&str]>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let (now, until) = (format_instant(now), format_instant(lease_until));
        let token = new_claim_token();
        // Kinds are qaloop's own snake_case names, never user input; checked to be sure.
        let kind_filter = match kinds {
            None => String::new(),
            Some(kinds) => {
                if kinds
                    .iter()
                    .any(|k| !k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                {
                    return Ok(Vec::new());
                }
                let list: Vec<String> = kinds.iter().map(|k| format!("'{k}'")).collect();
                format!(" AND kind IN ({})", list.join(", "))
            }
        };
        let rows: Vec<Row> = match &self.backend {
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::raw_sql(CLAIM_PLAN).execute(&mut *tx).await?;
                let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE outbox SET claimed_until = $1, claim = $4 WHERE id IN ( \
                       SELECT id FROM outbox WHERE status IN ('pending', 'failed') \
                       AND next_attempt_at <= $2 AND not_before <= $2 \
                       AND (claimed_until IS NULL OR claimed_until <= $2){kind_filter}{OPEN_WORK} \
                       ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING {COLUMNS}"
                )))
                .bind(&until)
                .bind(&now)
                .bind(limit)
                .bind(&token)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows
            }
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                // `INDEXED BY`: walk the pending rows in id order and stop at the batch size;
                // left to itself the planner may read every pending row by another index and
                // sort them all, on every claim.
                let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE outbox SET claimed_until = $1, claim = $4 WHERE id IN ( \
                       SELECT id FROM outbox INDEXED BY outbox_pending_id \
                       WHERE status IN ('pending', 'failed') \
                       AND next_attempt_at <= $2 AND not_before <= $2 \
                       AND (claimed_until IS NULL OR claimed_until <= $2){kind_filter}{OPEN_WORK} \
                       ORDER BY id LIMIT $3) \
                     RETURNING {COLUMNS}"
                )))
                .bind(&until)
                .bind(&now)
                .bind(limit)
                .bind(&token)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows
            }
        };
        let mut rows: Vec<OutboxRow> = rows
            .into_iter()
            .map(OutboxRow::try_from)
            .collect::<Result<_, _>>()?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Extends the lease of every row still held under `claims` to `until`: a dispatcher renews
    /// while it sends, so a slow relay never outlives the lease of rows it still means to send.
    pub async fn renew_claims(
        &self,
        claims: &[String],
        until: Timestamp,
    ) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let until = format_instant(until);
        on_pool!(self, |pool| {
            let mut qb = QueryBuilder::new("UPDATE outbox SET claimed_until = ");
            qb.push_bind(&until)
                .push(" WHERE status IN ('pending', 'failed') AND claim IN (");
            let mut list = qb.separated(", ");
            for claim in claims {
                list.push_bind(claim);
            }
            qb.push(")");
            qb.build().execute(pool).await?;
        });
        Ok(())
    }

    /// Records deliveries made under `claim`: one statement (so one commit) for up to a thousand
    /// rows, which is what lets the dispatcher record a group of sends for the price of one.
    /// Guarded: a row cancelled meanwhile, or re-claimed by another dispatcher, is left alone.
    pub async fn mark_sent(
        &self,
        ids: &[i64],
        claim: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let at = format_instant(now);
        for chunk in ids.chunks(CHUNK) {
            on_pool!(self, |pool| {
                let mut qb = QueryBuilder::new("UPDATE outbox SET status = 'sent', sent_at = ");
                qb.push_bind(&at).push(
                    ", attempts = attempts + 1, claimed_until = NULL, last_error = NULL \
                     WHERE status IN ('pending', 'failed') AND claim = ",
                );
                qb.push_bind(claim).push(" AND id IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Where one dispatch lane records each delivery at once (see [`DeliveryNotes`]).
    pub fn delivery_notes(&self) -> DeliveryNotes {
        DeliveryNotes {
            store: self.clone(),
            held: None,
        }
    }

    /// Records a temporary failure under `claim`; the row is retried at `next_attempt_at`.
    /// Guarded like [`Store::mark_sent`]: a reminder cancelled while it was failing stays
    /// cancelled.
    pub async fn mark_failed(
        &self,
        id: i64,
        claim: &str,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<(), StoreError> {
        let next = format_instant(next_attempt_at);
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE outbox SET status = 'failed', attempts = attempts + 1, next_attempt_at = $1, \
                 claimed_until = NULL, last_error = $2 \
                 WHERE id = $3 AND claim = $4 AND status IN ('pending', 'failed')",
            )
            .bind(&next)
            .bind(error)
            .bind(id)
            .bind(claim)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Withdraws a row held under `claim` that should no longer be sent (its recipient left).
    pub async fn mark_cancelled(
        &self,
        id: i64,
        claim: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE outbox SET status = 'cancelled', claimed_until = NULL, last_error = $1 \
                 WHERE id = $2 AND claim = $3 AND status IN ('pending', 'failed')",
            )
            .bind(reason)
            .bind(id)
            .bind(claim)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Gives up on a row held under `claim` and queues the admin alert about it, in one
    /// transaction — only if the row was still this claim's to give up on.
    pub async fn mark_dead(
        &self,
        id: i64,
        claim: &str,
        error: &str,
        alert: &[NewOutbox],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let at = format_instant(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, claimed_until = NULL, \
                 last_error = $1 WHERE id = $2 AND claim = $3 AND status IN ('pending', 'failed')",
            )
            .bind(error)
            .bind(id)
            .bind(claim)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated > 0 {
                insert(&mut tx, alert, &at).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Outbox rows, optionally of one status, newest first.
    pub async fn outbox(
        &self,
        status: Option<OutboxStatus>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows: Vec<Row> = on_pool!(self, |pool| {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM outbox"));
            if let Some(status) = status {
                qb.push(" WHERE status = ").push_bind(status.as_str());
            }
            qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(OutboxRow::try_from).collect()
    }

    /// One outbox row.
    pub async fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let row: Option<Row> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM outbox WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(OutboxRow::try_from).transpose()
    }

    /// Re-queues a dead or failed row for immediate sending, with a fresh attempt count.
    pub async fn retry(&self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
        let at = format_instant(now);
        Ok(on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, \
                 not_before = $1, claimed_until = NULL WHERE id = $2 AND status IN ('dead', 'failed')",
            )
            .bind(&at)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
                > 0
        }))
    }
}

/// One dispatch lane's way of recording each delivery at once, guarded like
/// [`Store::mark_sent`]: the dispatcher's note on PostgreSQL without a sent journal file, before
/// the lane's next message goes out (`notify::journal`). One statement per delivery, over a
/// connection the lane holds from its first note to its end: a pooled statement would also pay
/// for the pool's hand-back, which pings the server (a second round trip, in a task of its
/// own) every time.
///
/// **On the wire, not answered.** [`DeliveryNotes::start`] returns once the note's statement is
/// written to the connection's socket, without waiting for the server's answer, so that the
/// lane's next send overlaps the round trip (a loopback round trip is 0.15–0.25 ms on a small
/// VM, as long as a loopback webhook post). That is enough for the kill bound: a statement the
/// server has received is executed and committed even when the client is killed a moment
/// later (PostgreSQL reads what it was sent before it sees the disconnect, and an
/// autocommitted `UPDATE` does not look at the client), so a kill still resends only the
/// message in flight. It rests on how sqlx 0.9 runs a prepared statement on a ready connection:
/// the first poll writes and flushes it, then waits for the answer. The connection is made
/// ready (taken, the statement prepared, the last note answered) before each note, and
/// `tests/outbox.rs` (`a_started_delivery_note_commits_though_its_client_vanishes`) holds sqlx
/// to it. On PostgreSQL the commit does not wait for the WAL to reach disk
/// (`synchronous_commit` off for this transaction only): only a crash of the database server
/// within a fraction of a second (`wal_writer_delay`) can lose it, and then the row is sent
/// once more, never lost.
pub struct DeliveryNotes {
    /// The store, for the connection and for SQLite.
    store: Store,
    /// The lane's connection, taken and its statement prepared before the first note, with
    /// the permit to hold it (`Store::lane_holds`); dropped after an error, so that a broken
    /// one is not used again (the next note takes another).
    held: Option<(
        sqlx::pool::PoolConnection<sqlx::Postgres>,
        tokio::sync::OwnedSemaphorePermit,
    )>,
}

/// The note's statement (PostgreSQL). `set_config(…, true)` lasts to the end of this
/// statement's own transaction, and its commit reads the setting.
const NOTE_DELIVERY: &str = "UPDATE outbox SET status = 'sent', sent_at = $1, \
     attempts = attempts + 1, claimed_until = NULL, last_error = NULL \
     FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
     WHERE id = $2 AND claim = $3 AND status IN ('pending', 'failed')";

/// A delivery note on its way: written, its answer not yet read. [`NoteInFlight::answer`] waits
/// for it and gives the lane's notes back for the next one.
pub struct NoteInFlight(NoteState);

/// A note's answer, with the lane's notes to give back.
type Answer = (DeliveryNotes, Result<(), StoreError>);

enum NoteState {
    Answered(Answer),
    Waiting(std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>),
}

impl DeliveryNotes {
    /// Puts the note that row `id`, claimed under `claim`, was delivered at `now` on the wire
    /// and returns without its answer (see the type's docs).
    pub async fn start(mut self, id: i64, claim: &str, now: Timestamp) -> NoteInFlight {
        let pool = match &self.store.backend {
            Backend::Postgres(pool) => pool.clone(),
            // SQLite commits are local and cheap: the ordinary guarded write.
            Backend::Sqlite(_) => {
                let result = self.store.mark_sent(&[id], claim, now).await;
                return NoteInFlight(NoteState::Answered((self, result)));
            }
        };
        if self.held.is_none() {
            // When other lanes hold all the pool may lend, this note waits for its answer on
            // a connection of the pool's, as every note did before, and the bound still holds.
            let Ok(permit) = std::sync::Arc::clone(&self.store.lane_holds).try_acquire_owned()
            else {
                let result = note_statement(id, claim.to_owned(), now)
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::from);
                return NoteInFlight(NoteState::Answered((self, result)));
            };
            let ready = async {
                let mut connection = pool.acquire().await?;
                // With the types its binds will have, as sqlx would prepare it itself.
                let text = <String as sqlx::Type<sqlx::Postgres>>::type_info();
                let id = <i64 as sqlx::Type<sqlx::Postgres>>::type_info();
                let sql = sqlx::SqlSafeStr::into_sql_str(NOTE_DELIVERY);
                sqlx::Executor::prepare_with(&mut *connection, sql, &[text.clone(), id, text])
                    .await?;
                Ok::<_, StoreError>(connection)
            };
            match ready.await {
                Ok(connection) => self.held = Some((connection, permit)),
                Err(e) => return NoteInFlight(NoteState::Answered((self, Err(e)))),
            }
        }
        let claim = claim.to_owned();
        let mut note = Box::pin(async move {
            let Some((connection, _)) = self.held.as_mut() else {
                unreachable!("the connection was taken above")
            };
            let result = note_statement(id, claim, now)
                .execute(&mut **connection)
                .await;
            if result.is_err() {
                self.held = None;
            }
            (self, result.map(|_| ()).map_err(StoreError::from))
        });
        // The first poll writes and flushes the statement on the ready connection.
        match futures_util::poll!(note.as_mut()) {
            std::task::Poll::Ready(answer) => NoteInFlight(NoteState::Answered(answer)),
            std::task::Poll::Pending => NoteInFlight(NoteState::Waiting(note)),
        }
    }
}

/// The note's statement with its binds: row `id`, claimed under `claim`, delivered at `now`.
fn note_statement(
    id: i64,
    claim: String,
    now: Timestamp,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(NOTE_DELIVERY)
        .bind(format_instant(now))
        .bind(id)
        .bind(claim)
}

impl NoteInFlight {
    /// A note already made (or failed), with the lane's notes to give back.
    pub fn answered(notes: DeliveryNotes, result: Result<(), StoreError>) -> Self {
        NoteInFlight(NoteState::Answered((notes, result)))
    }

    /// Waits for the server's answer; gives back the lane's notes with it.
    pub async fn answer(self) -> Answer {
        match self.0 {
            NoteState::Answered(answer) => answer,
            NoteState::Waiting(note) => note.await,
        }
    }
}
