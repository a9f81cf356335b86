//! Outbound queues: work that starts as rows in OSCAR's own queue tables and leaves through
//! RingCentral.
//!
//! - [`sms`]: appointment reminders and lab-ready notices from OSCAR's tables → our outbox
//!   table → RingCentral SMS, each exactly once, opted-out patients never.

pub mod sms;

pub use crate::jobs::{OutboundError, OutboundReason};
