//! The engine's one question to the notification layer: what should people be told about this
//! change? Asked inside the change's transaction, so notices commit with their cause.
//!
//! The trait lives here and `notify` implements it, so the engine never imports `notify`
//! (notify depends on the engine, not the other way round).

use std::any::Any;

use jiff::Timestamp;

use super::Context;
use crate::domain::{Assignment, NewAssignment};
use crate::org::Org;
use crate::store::NewOutbox;

/// Decides the outbox rows an engine change causes. Pure: no IO, no clock (`now` is given).
///
/// `Any` is a supertrait so the notification layer can recover its own concrete type from the
/// [`Context`] it is handed (see `notify::router::Router::of`).
pub trait Announcer: Any + Send + Sync {
    /// Notices about freshly created work: each new row's id and what was planned.
    fn new_work(
        &self,
        ctx: &Context,
        org: &Org,
        created: &[(i64, &NewAssignment)],
        now: Timestamp,
    ) -> Vec<NewOutbox>;

    /// Notices telling the new holder of `moved` about it (a reassignment or a leaver's work);
    /// `moved.assignee` is already the new holder.
    fn moved(&self, ctx: &Context, org: &Org, moved: &Assignment, now: Timestamp)
    -> Vec<NewOutbox>;
}
