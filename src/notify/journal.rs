//! The sent journal: where the dispatcher notes "delivered" the moment a channel accepts a
//! message, before the next message on that channel goes out.
//!
//! The dispatcher records outcomes in the database in groups (one commit per group, not per
//! message: see `dispatcher.rs`), so a process killed mid-dispatch would otherwise leave a
//! group's worth of delivered rows unrecorded, each sent again after its lease. With a
//! journal, a kill resends at most the message in flight on each channel: accepted by the
//! peer, not yet noted. It takes one of two forms:
//!
//! - **A file on the node's own disk** (`<db>.sent` beside a SQLite file, or where
//!   `notify.sent_journal` puts it). Every delivery is appended as a line (one `write`, no
//!   `fsync`: the kernel keeps it when the process is killed), and the next dispatch, before
//!   it claims anything, records what the file holds as sent (the same guarded write as
//!   usual: `WHERE claim = … AND status IN ('pending', 'failed')`), then empties it. A dispatch
//!   holds an exclusive `flock` on the file while it works, so two processes never empty each
//!   other's lines; one that cannot take the lock (another process on this machine is
//!   dispatching) runs without the file. The process that restarts on this machine is the one
//!   that replays, well inside the 5-minute lease when systemd restarts it.
//! - **PostgreSQL without the file: the database itself.** Several nodes share the outbox,
//!   and a killed node's rows are claimed by another once their lease runs out: a file on the
//!   dead node's disk is not read if the node never comes back (a replacement machine, a node
//!   taken out of service), and the survivor resends up to a group per channel connection
//!   (2 × 32 + 1). Where that matters more than throughput, each delivery is recorded in the
//!   outbox at once ([`DeliveryNotes`]: one guarded `UPDATE` over a connection the lane holds,
//!   committed without waiting for `fsync`), which every node sees. The lane does not wait
//!   for its answer before the next send, only for it to be written to the server: a
//!   statement the server has received is committed even if the client dies a moment later,
//!   so the bound holds, and the round trip overlaps the next send instead of preceding it
//!   (the store's docs say what this rests on, and a test holds sqlx to it). Even so a round
//!   trip per message costs a third of webhook throughput against loopback peers on a 2-core
//!   machine (0.56–0.59 of a bare send loop, against 0.76–0.92 with the file; BENCHMARKS.md,
//!   "Dispatch"), so the file is the recommended setting and the database the fallback: the
//!   default without the setting, and what a dispatch uses when the file is held by another
//!   process or cannot be opened.
//!
//! **Invariant:** a delivery is noted only after the channel accepted the message, and before
//! the next message on its channel is sent (on PostgreSQL without the file: written to the
//! server); the file is emptied only after every line in it was recorded in the database.
//! What neither form survives: power loss (neither the file nor an asynchronous PostgreSQL
//! commit waits for the disk; on PostgreSQL, up to three `wal_writer_delay`s, 0.6 s by
//! default, of notes), which resends those messages, never loses one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;

use crate::store::{DeliveryNotes, NoteInFlight, Store, StoreError};

/// Where this node's journal lives: `notify.sent_journal` when set, else beside a SQLite
/// database; `None` on PostgreSQL without the setting (deliveries are then recorded in the
/// database at once).
pub fn configured(settings: &crate::config::Settings) -> Option<PathBuf> {
    settings
        .notify
        .sent_journal
        .clone()
        .or_else(|| path_for(&settings.database.url))
}

/// Where a SQLite database's journal lives by default (beside its file); `None` for any other
/// database.
pub fn path_for(database_url: &str) -> Option<PathBuf> {
    crate::config::sqlite_file(database_url).map(|(path, _)| PathBuf::from(format!("{path}.sent")))
}

/// Where one dispatch notes its deliveries (module docs).
#[derive(Debug)]
pub enum Journal {
    /// A file on this machine's disk, locked for this dispatch.
    File(FileJournal),
    /// PostgreSQL without the file: each delivery recorded in the outbox at once.
    Database,
}

/// The journal's file, locked for one dispatch.
#[derive(Debug)]
pub struct FileJournal {
    /// The file, opened for appending; a `std` mutex: writes are one short syscall.
    file: Mutex<File>,
    /// For messages.
    path: PathBuf,
}

impl Journal {
    /// Notes that row `id` (claimed under `claim`) was delivered by the dispatch at `at`, and
    /// returns once the note is made (a line in the file) or on its way (on PostgreSQL:
    /// written to the server, its answer read with [`NoteInFlight::answer`] while the lane's
    /// next message is sent; see [`DeliveryNotes`]). `notes` are the lane's, given back with
    /// the answer.
    pub async fn delivered(
        &self,
        notes: DeliveryNotes,
        id: i64,
        at: Timestamp,
        claim: &str,
    ) -> NoteInFlight {
        match self {
            Journal::File(file) => NoteInFlight::answered(notes, file.delivered(id, at, claim)),
            Journal::Database => notes.start(id, claim, at).await,
        }
    }

    /// Whether a noted delivery is already recorded in the database (nothing left to write).
    pub fn records(&self) -> bool {
        matches!(self, Journal::Database)
    }

    /// Called once every delivery of the dispatch is recorded in the database: empties the
    /// file.
    pub fn spent(&self) -> Result<(), StoreError> {
        match self {
            Journal::File(file) => file.clear(),
            Journal::Database => Ok(()),
        }
    }
}

/// A journal line: the row, when it was sent (the dispatch's `now`), under which claim.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: i64,
    at: Timestamp,
    claim: String,
}

impl FileJournal {
    /// Opens and locks the journal at `path`; `Ok(None)` when another process holds it.
    pub fn open(path: &Path) -> std::io::Result<Option<FileJournal>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileJournal {
                file: Mutex::new(file),
                path: path.to_owned(),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Records in the database every delivery a previous dispatch journalled but did not
    /// record (it was killed, or the database failed), then empties the journal. Returns how
    /// many lines it replayed.
    pub async fn replay(&self, store: &Store) -> Result<usize, StoreError> {
        let text = {
            let mut file = self.lock();
            let mut text = String::new();
            file.rewind()
                .and_then(|()| file.read_to_string(&mut text))
                .map_err(|e| self.io_error("reading", e))?;
            text
        };
        if text.is_empty() {
            return Ok(0);
        }
        let entries: Vec<Entry> = text.lines().filter_map(parse).collect();
        let mut groups: BTreeMap<(&str, Timestamp), Vec<i64>> = BTreeMap::new();
        for e in &entries {
            groups.entry((&e.claim, e.at)).or_default().push(e.id);
        }
        for ((claim, at), ids) in groups {
            store.mark_sent(&ids, claim, at).await?;
        }
        if !entries.is_empty() {
            tracing::info!(
                rows = entries.len(),
                journal = %self.path.display(),
                "recorded deliveries an interrupted dispatch had not recorded"
            );
        }
        self.clear()?;
        Ok(entries.len())
    }

    /// Notes that row `id` (claimed under `claim`) was delivered by the dispatch at `at`.
    pub fn delivered(&self, id: i64, at: Timestamp, claim: &str) -> Result<(), StoreError> {
        let line = format!("{id} {at} {claim}\n");
        self.lock()
            .write_all(line.as_bytes())
            .map_err(|e| self.io_error("writing", e))
    }

    /// Empties the journal: call only once every line is recorded in the database.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.lock()
            .set_len(0)
            .map_err(|e| self.io_error("emptying", e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io_error(&self, doing: &str, e: std::io::Error) -> StoreError {
        StoreError::Journal(format!(
            "{doing} the sent journal {}: {e}",
            self.path.display()
        ))
    }
}

/// One line, or `None` for a line a crash cut short.
fn parse(line: &str) -> Option<Entry> {
    let mut parts = line.splitn(3, ' ');
    let id = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    let claim = parts.next().filter(|c| !c.is_empty())?.to_owned();
    Some(Entry { id, at, claim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_cut_line_is_skipped() {
        let at: Timestamp = "2027-06-01T08:00:00.123456Z".parse().unwrap();
        let line = format!("42 {at} 7f3a-b");
        assert_eq!(
            parse(&line),
            Some(Entry {
                id: 42,
                at,
                claim: "7f3a-b".into()
            })
        );
        assert_eq!(parse("42 2027-06-01T08:0"), None);
        assert_eq!(parse("42"), None);
    }

    #[test]
    fn a_second_process_cannot_take_a_held_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sent");
        let held = FileJournal::open(&path).unwrap();
        assert!(held.is_some());
        // flock is per open file description: a second open stands in for another process.
        assert!(FileJournal::open(&path).unwrap().is_none());
        drop(held);
        assert!(FileJournal::open(&path).unwrap().is_some());
    }
}
