//! Running qaloop as a service: what an operator and systemd see.
//!
//! - [`backup`]: SQLite backups (`VACUUM INTO` + integrity check), nightly with retention, restore.
//! - [`check`]: what `qaloop check` verifies beyond the files (database, folders, secrets).
//! - [`load`]: everything `serve` needs, read and validated together — used at start, by
//!   `qaloop check` and by SIGHUP reloads, so the three cannot disagree.
//! - [`vitals`]: the daemon's liveness facts (main loop ticks, database answers, last pass),
//!   shared by the watchdog, `STATUS=` lines and `/readyz`.
//! - [`memory`]: after a pass, freed heap goes back to the system (`malloc_trim`).
//! - [`systemd`]: `sd_notify(3)`: `READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1` and the
//!   watchdog, all no-ops outside systemd.

pub mod backup;
pub mod check;
pub mod health;
pub mod http;
pub mod load;
pub mod memory;
pub mod metrics;
pub mod settings;
pub mod systemd;
pub mod vitals;
