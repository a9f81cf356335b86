//! Outbound queues: work that starts as rows in OSCAR's own queue tables and leaves through
//! RingCentral.
//!
//! - [`fax`]: OSCAR's `faxes` rows `WAITING` on a line oscarflow handles → RingCentral fax,
//!   with OSCAR's status kept up to date and no fax ever sent twice.
//! - [`sms`]: appointment reminders and lab-ready notices from OSCAR's tables → our outbox
//!   table → RingCentral SMS, each exactly once, opted-out patients never.

mod claim;
pub mod fax;
pub mod sms;
