//! Helpers shared by the integration tests: loopback peers that speak real protocols.
//!
//! Each test binary uses only some of them, hence `dead_code` allowed per module.

#[allow(dead_code)]
pub mod smtp;
