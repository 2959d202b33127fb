//! Shared test support: fresh stores on both backends, a fixed organisation, the shipped config.
#![allow(dead_code)]

pub mod org;
pub mod store;
