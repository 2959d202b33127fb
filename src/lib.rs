//! qaloop runs a children's services Quality Assurance schedule: it assigns the work the schedule
//! table says is due each period, exactly once, and keeps an append-only history of every change.
//!
//! # Layout
//! - [`config`]: `qaloop.toml` and environment overrides.
//! - [`clock`]: the clock, read once at the edge.
//! - [`calendar`]: working days and bank holidays (pure).
//! - [`schedule`]: activities, cadences, periods, due rules (pure).
//! - [`org`]: staff, roles, line management, the staff CSV (pure).
//! - [`domain`]: assignments, who holds them, who may act on them (pure).
//! - [`engine`]: plan (pure) and reconcile (plan + store).
//! - [`store`]: SQLite and PostgreSQL behind one type; the only module that writes SQL.
//! - [`cli`]: the `qaloop` commands; [`daemon`]: `qaloop serve`.
//! - [`ops`]: running as a service: validated loading, systemd, liveness.
//!
//! # Data flow
//! settings → (schedule, calendar, staff) → `engine::plan(now)` → desired assignments →
//! `store` inserts the missing ones under a unique key → history. Completion → store → triggered
//! work in the same transaction.

pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod engine;
pub mod inputs;
pub mod links;
pub mod notify;
pub mod ops;
pub mod org;
pub mod pass;
pub mod problem;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod web;
