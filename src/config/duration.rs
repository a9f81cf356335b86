//! Human durations in config (`"250ms"`, `"5s"`, `"2m"`), via `humantime`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes `"5s"`-style strings (or an integer number of seconds).
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Secs(u64),
    }
    match Repr::deserialize(d)? {
        Repr::Secs(s) => Ok(Duration::from_secs(s)),
        Repr::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{t}` ({e}); use e.g. \"250ms\", \"5s\", \"2m\""
            ))
        }),
    }
}
