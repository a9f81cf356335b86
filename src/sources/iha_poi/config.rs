//! `IhaPoiConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use super::super::pull::{default_poll_interval, default_timeout, validate_pull, yes};
use crate::config::duration::deserialize_duration;
use crate::hl7::lab::LabType;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// `[sources.<id>] type = "iha_poi"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IhaPoiConfig {
    /// The `interface.aspx` address.
    pub url: String,
    pub user_env: Spanned<String>,
    pub password_env: Spanned<String>,
    /// PEM bundle of CAs to trust instead of the system roots.
    #[serde(default)]
    pub trust_store: Option<PathBuf>,
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub poll_interval: Duration,
    #[serde(default)]
    pub times_of_day: Vec<String>,
    /// Acknowledge committed messages (`false`: never, for testing).
    #[serde(default = "yes")]
    pub acknowledge: bool,
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// OSCAR's lab type of every message this source delivers: the feed is Interior
    /// Health's POI, so `IHAPOI` (Expedius' `IHA`) whatever a message's MSH-3 says, unless
    /// set otherwise here.
    #[serde(default = "ihapoi")]
    pub lab_type: LabType,
    /// An answer larger than this is refused while it is read (the round fails and nothing
    /// is acknowledged; the feed keeps the messages). Default 64 MiB.
    #[serde(default = "crate::sources::oversize::default_max_input_bytes")]
    pub max_input_bytes: usize,
}

fn ihapoi() -> LabType {
    LabType::IhaPoi
}

impl IhaPoiConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        validate_pull(&self.url, self.poll_interval, &self.times_of_day)
    }

    pub(crate) fn env_refs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        vec![
            ("user_env", &self.user_env),
            ("password_env", &self.password_env),
        ]
    }
}
