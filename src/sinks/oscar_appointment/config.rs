//! `OscarAppointmentConfig`: the configuration of this component (serde, `deny_unknown_fields`,
//! a pure `validate`); the component is built from it (`SinkConfig::build`).

use serde::Deserialize;

use crate::oscar::appointment::{BookOptions, OnConflict, ProviderBy};
use crate::payload::capabilities::OrderKey;

/// `[sinks.<id>] type = "oscar_appointment"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OscarAppointmentConfig {
    /// How AIP-3.1 names an OSCAR provider: `ohip_no` (the default: in BC, the MSP billing
    /// number), `provider_no`, `practitioner_no`, or `other_id` (an `other_id` row of the
    /// provider under `provider_other_key`, as Open-O's SIU handler links its ids).
    pub provider_by: ProviderBy,
    /// The `other_id` key of providers with `provider_by = "other_id"` (Open-O: `STAR`).
    pub provider_other_key: String,
    /// The provider of a message that names none (no AIP-3.1); unset: such a message is a
    /// dead letter (`provider_unknown`).
    pub default_provider_no: Option<String>,
    /// The `other_id` key the filler's appointment id is kept under (Open-O's SIU handler:
    /// `patbooking_id`).
    pub other_key: String,
    /// `refuse` (the default: a dead letter `conflict`, MLLP `AR`) or `book_and_flag` (booked,
    /// with a note naming the appointments it overlaps).
    pub on_conflict: OnConflict,
    /// OSCAR's status of a new appointment (`t`, To Do, as OSCAR's SIU handler sets).
    pub booked_status: String,
    /// `appointment.creator`.
    pub creator: String,
    /// Record, for the `oscar_appointment_confirmations` text source, what the patient should
    /// be told: booked, rescheduled (a new time or provider), cancelled.
    pub confirmations: bool,
    /// Parallel writes (messages of one appointment stay in order).
    pub concurrency: usize,
    /// Which messages keep their order: by appointment (`accession`, the default: the filler
    /// id), also by patient (`health_number`), or none.
    pub order_by: OrderKey,
}

impl Default for OscarAppointmentConfig {
    fn default() -> Self {
        Self {
            provider_by: ProviderBy::default(),
            provider_other_key: "STAR".into(),
            default_provider_no: None,
            other_key: "patbooking_id".into(),
            on_conflict: OnConflict::default(),
            booked_status: "t".into(),
            creator: "oscarflow".into(),
            confirmations: true,
            concurrency: 2,
            order_by: OrderKey::Accession,
        }
    }
}

impl OscarAppointmentConfig {
    pub fn options(&self) -> BookOptions {
        BookOptions {
            provider_by: self.provider_by,
            provider_other_key: self.provider_other_key.clone(),
            default_provider_no: self.default_provider_no.clone(),
            other_key: self.other_key.clone(),
            on_conflict: self.on_conflict,
            booked_status: self.booked_status.clone(),
            creator: self.creator.clone(),
            confirmations: self.confirmations,
        }
    }

    pub(super) fn validate(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        let mut v = Vec::new();
        if self.concurrency == 0 {
            v.push("concurrency must be at least 1".to_string());
        }
        if self.other_key.trim().is_empty() || self.other_key.chars().count() > 30 {
            v.push("other_key must be 1 to 30 characters (other_id.other_key)".to_string());
        }
        if self.provider_other_key.trim().is_empty() || self.provider_other_key.chars().count() > 30
        {
            v.push("provider_other_key must be 1 to 30 characters".to_string());
        }
        if self.booked_status.is_empty() || self.booked_status.chars().count() > 2 {
            v.push("booked_status must be OSCAR's status code: 1 or 2 characters".to_string());
        } else if crate::oscar::appointment::frees_slot(&self.booked_status) {
            v.push("booked_status must not be a cancelled (C) or no-show (N) status".to_string());
        }
        if self.creator.is_empty() || self.creator.chars().count() > 50 {
            v.push("creator must be 1 to 50 characters".to_string());
        }
        if let Some(p) = &self.default_provider_no {
            if p.is_empty() || p.chars().count() > 6 {
                v.push(
                    "default_provider_no must be OSCAR's provider_no: 1 to 6 characters"
                        .to_string(),
                );
            }
        }
        v.into_iter().map(|m| (m, None)).collect()
    }
}
