//! Notification templates (minijinja). (Being built.)
