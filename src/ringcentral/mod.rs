//! RingCentral (CONTRACTS.md §1–§9): the REST client every fax and SMS component shares.
//!
//! - [`client`]: authentication (JWT bearer grant, cached token, proactive renewal, one retry
//!   on 401), client-side throttling of the four usage-plan groups, `Retry-After`, retries,
//!   and error mapping to `Data | Transient | Fatal`.
//! - [`messages`]: the message store: inbound faxes from a watermark, every page.
//! - [`fax`]: sending faxes, reading their status, finding a sent fax again.
//! - [`phone`]: North American numbers as OSCAR stores them → E.164, with PHI-free refusals.

pub mod client;
pub mod fax;
pub mod messages;
pub mod phone;

pub use client::{Body, Group, Limits, RcClient, RcConfig, RcError, RcResponse};
