//! Outbound queues: work that starts as rows in OSCAR's own queue tables and leaves through
//! RingCentral.
//!
//! - [`fax`]: OSCAR's `faxes` rows `WAITING` on a line oscarflow handles → RingCentral fax,
//!   with OSCAR's status kept up to date and no fax ever sent twice.

pub mod fax;
