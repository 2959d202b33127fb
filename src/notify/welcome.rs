//! The welcome: a person's first message ever says what qaloop is, what they will receive, and
//! lists their current work — including work that was already late when qaloop went live
//! (`before_go_live`), which appears here once and is never chased.
//!
//! A welcome replaces that day's daily message (or catch-up summary, or single routine notices)
//! for someone qaloop has never queued a message for: at go-live everyone with work, later
//! anyone who joins through a staff import. Its key (`welcome:welcome::STAFF:CHANNEL`) has no
//! date, so it is queued once per person and channel, ever.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::Date;

use super::Kind;
use super::context::Item;
use super::planner::item;
use super::router::{Notice, Router};
use crate::domain::Assignment;
use crate::engine::Context;
use crate::org::Org;
use crate::store::{Store, StoreError};

/// Kinds a welcome stands in for on the day it is sent.
const REPLACED: [Kind; 5] = [
    Kind::Digest,
    Kind::CatchUp,
    Kind::Reminder,
    Kind::DueToday,
    Kind::Chase,
];

/// Turns today's routine notices for people qaloop has never messaged into one welcome each.
/// `open` is every open assignment (before-go-live work included).
pub async fn add_welcomes(
    store: &Store,
    ctx: &Context,
    router: &Router,
    org: &Org,
    open: &[Assignment],
    notices: &mut Vec<Notice>,
    today: Date,
) -> Result<(), StoreError> {
    let holders = holders_of(org, open);
    let candidates: BTreeSet<String> = notices
        .iter()
        .filter(|n| REPLACED.contains(&n.kind))
        .map(|n| n.recipient.clone())
        .chain(holders.keys().map(|id| (*id).to_owned()))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let candidates: Vec<String> = candidates.into_iter().collect();
    let heard = store.recipients_heard(&candidates).await?;
    let new: BTreeSet<&String> = candidates.iter().filter(|c| !heard.contains(*c)).collect();
    if new.is_empty() {
        return Ok(());
    }
    // Items (names, signed links) only for the people being welcomed: on most days nobody is,
    // and there are tens of thousands of open assignments at national size.
    let work = new
        .iter()
        .filter_map(|person| {
            let theirs = holders.get(person.as_str())?;
            let mut items: Vec<Item> = theirs
                .iter()
                .map(|a| item(ctx, router, org, a, today))
                .collect();
            items.sort_by(|a, b| (&a.due, a.id).cmp(&(&b.due, b.id)));
            Some(((*person).clone(), items))
        })
        .collect();
    let (welcomes, rest) =
        welcome_notices(router, org, &work, std::mem::take(notices), &new, today);
    *notices = rest;
    notices.extend(welcomes);
    Ok(())
}

/// Each current person's open work (their own and their roles').
fn holders_of<'a>(org: &'a Org, open: &'a [Assignment]) -> BTreeMap<&'a str, Vec<&'a Assignment>> {
    let mut work: BTreeMap<&str, Vec<&Assignment>> = BTreeMap::new();
    for a in open {
        for person in a.assignee.current_holders(org) {
            work.entry(person.record.staff_id.as_str())
                .or_default()
                .push(a);
        }
    }
    work
}

/// Pure: the welcome for each of `new`, built from their work and the routine notices it
/// replaces (whose team section and moderation outcomes it keeps); returns (welcomes, the
/// notices left).
fn welcome_notices(
    router: &Router,
    org: &Org,
    work: &BTreeMap<String, Vec<Item>>,
    notices: Vec<Notice>,
    new: &BTreeSet<&String>,
    today: Date,
) -> (Vec<Notice>, Vec<Notice>) {
    let mut replaced: BTreeMap<String, Vec<Notice>> = BTreeMap::new();
    let mut rest = Vec::with_capacity(notices.len());
    for notice in notices {
        if REPLACED.contains(&notice.kind) && new.contains(&notice.recipient) {
            replaced
                .entry(notice.recipient.clone())
                .or_default()
                .push(notice);
        } else {
            rest.push(notice);
        }
    }
    let welcomes = new
        .iter()
        .map(|person| {
            let mut context = router.context(Kind::Welcome, person, today);
            context.recipient_name = org.get(person).map(|p| p.record.name.clone());
            context.items = work.get(*person).cloned().unwrap_or_default();
            for old in replaced.remove(*person).unwrap_or_default() {
                context.team_items.extend(old.context.team_items);
                context.action_items.extend(old.context.action_items);
                context.verify_items.extend(old.context.verify_items);
                context.moderated.extend(old.context.moderated);
            }
            context.team_items.dedup_by_key(|i| (i.work, i.id));
            context.action_items.dedup_by_key(|i| i.id);
            context.verify_items.dedup_by_key(|i| i.id);
            Notice {
                kind: Kind::Welcome,
                reference: Kind::Welcome.as_str().to_owned(),
                date: None,
                recipient: (*person).clone(),
                post_as: None,
                assignment_id: None,
                immediate: false,
                suppressed: false,
                context,
            }
        })
        .filter(|n| {
            let c = &n.context;
            !(c.items.is_empty()
                && c.team_items.is_empty()
                && c.action_items.is_empty()
                && c.verify_items.is_empty())
        })
        .collect();
    (welcomes, rest)
}
