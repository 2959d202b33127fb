//! The domain: what a piece of work is, who holds it, and who may act on it.
//!
//! Every edge (the CLI, signed-link pages, later an API) and every inner module (engine,
//! notify, store) speaks these types. The store maps them to and from rows; nothing here knows
//! about SQL, HTTP or the clock.
//!
//! **Invariant:** pure — no IO, never reads the clock. Authorisation is decided here and only
//! here ([`authorise`]), so the CLI and the web cannot disagree about who may do what.

pub mod action;
pub mod assignee;
pub mod assignment;
pub mod authz;
pub mod concern;
pub mod record;

pub use action::{
    Action, ActionChange, ActionError, ActionSource, ActionState, NewAction, may_raise_from,
};
pub use assignee::Assignee;
pub use assignment::{Assignment, HistoryEntry, NewAssignment, Status};
pub use authz::{Actor, Operation, Refusal, Via, authorise};
pub use concern::{AlertRound, Concern, ConcernKind, NewConcern, UrgentSettings};
pub use record::{ModerationOutcome, NewRecord, Record, RecordEffects};
