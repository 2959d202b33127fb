//! Shared test support: fresh stores on both backends, a fixed organisation, the shipped config,
//! and loopback peers that speak real protocols.
//!
//! Each test binary uses only some of them, hence `dead_code` allowed.
#![allow(dead_code)]

pub mod notify;
pub mod org;
pub mod smtp;
pub mod store;
