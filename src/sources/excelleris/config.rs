//! `ExcellerisConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use super::super::pull::{default_poll_interval, default_timeout, validate_pull, yes};
use crate::config::duration::deserialize_duration;
use crate::hl7::lab::LabType;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// `[sources.<id>] type = "excelleris"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExcellerisConfig {
    /// The `hl7pull.aspx` address, e.g. `https://api.bc.excelleris.com/hl7pull.aspx`
    /// (test service: `https://api.bctest.excelleris.com/hl7pull.aspx`).
    pub url: String,
    /// Environment variable holding the Excelleris user id.
    pub user_env: Spanned<String>,
    /// Environment variable holding the password.
    pub password_env: Spanned<String>,
    /// The client certificate Excelleris issued: a PKCS#12 file (`.p12`/`.pfx`) or a PEM file
    /// with the certificate chain and its PKCS#8 private key.
    pub client_identity: PathBuf,
    /// Environment variable holding the PKCS#12 password (PKCS#12 only).
    #[serde(default)]
    pub client_identity_password_env: Option<Spanned<String>>,
    /// PEM file of the CA certificates that may sign the server's certificate. Only these are
    /// trusted (the system roots are not).
    pub trust_store: PathBuf,
    /// Time between polls (Expedius' default: 2 h).
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub poll_interval: Duration,
    /// Fixed local times (`HH:MM`) to poll at instead of the interval.
    #[serde(default)]
    pub times_of_day: Vec<String>,
    /// Send the positive acknowledgement after a committed batch (`false`: never).
    #[serde(default = "yes")]
    pub acknowledge: bool,
    /// Timeout of each HTTP request.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// OSCAR's lab type of every message this source delivers: the feed is Excelleris', so
    /// `PATHL7` whatever a message's MSH-3 says, unless set otherwise here.
    #[serde(default = "pathl7")]
    pub lab_type: LabType,
    /// An answer larger than this is refused while it is read (the round fails and nothing
    /// is acknowledged; the feed keeps the messages). Default 64 MiB.
    #[serde(default = "crate::sources::oversize::default_max_input_bytes")]
    pub max_input_bytes: usize,
}

fn pathl7() -> LabType {
    LabType::Pathl7
}

impl ExcellerisConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        validate_pull(&self.url, self.poll_interval, &self.times_of_day)
    }

    pub(crate) fn env_refs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        let mut v = vec![
            ("user_env", &self.user_env),
            ("password_env", &self.password_env),
        ];
        if let Some(p) = &self.client_identity_password_env {
            v.push(("client_identity_password_env", p));
        }
        v
    }
}
