//! `MllpConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::config::duration::deserialize_duration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

/// MLLP start block.
pub const START: u8 = 0x0B;
/// MLLP end block (followed by a carriage return).
pub const END: u8 = 0x1C;

/// `[sources.<id>] type = "mllp"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// Address to listen on, e.g. `127.0.0.1:2575`.
    pub listen: String,
    /// Largest accepted frame (bytes between the start and end blocks).
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub idle_timeout: Duration,
    /// Connections handled at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TLS: the server certificate chain (PEM). With `tls_key_file`, every connection must
    /// speak TLS.
    #[serde(default)]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// TLS: the private key (PEM, PKCS#8).
    #[serde(default)]
    pub tls_key_file: Option<std::path::PathBuf>,
}

fn default_max_frame() -> usize {
    16 * 1024 * 1024
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_max_connections() -> usize {
    32
}

impl MllpConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            v.push((
                format!(
                    "listen `{}` is not an address like 127.0.0.1:2575",
                    self.listen
                ),
                None,
            ));
        }
        if self.max_frame_bytes == 0 {
            v.push(("max_frame_bytes must be above zero".into(), None));
        }
        if self.max_connections == 0 {
            v.push(("max_connections must be at least 1".into(), None));
        }
        if self.idle_timeout.is_zero() {
            v.push(("idle_timeout must be above zero".into(), None));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            v.push((
                "set both tls_cert_file and tls_key_file, or neither".into(),
                None,
            ));
        }
        v
    }
}
