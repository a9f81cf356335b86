//! `ParseSiuConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`StageConfig::build`).

use crate::hl7::siu::HealthNumberAt;
use crate::hl7::text::Fallback;
use serde::Deserialize;

/// `[stages.<id>] type = "parse_siu"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ParseSiuConfig {
    /// Inputs larger than this are rejected whole (`too_large`).
    pub max_input_bytes: usize,
    /// Single messages larger than this are rejected (`too_large`).
    pub max_message_bytes: usize,
    /// Decoding of input that is not valid UTF-8: `windows-1252` or `latin1`.
    pub encoding_fallback: Fallback,
    /// Where the feed puts the patient's health number: `pid3` (the `PID-3` repetition
    /// whose identifier type is one of `health_number_types`; the default), or `pid2`,
    /// `pid4`, `pid19` (component 1 of that field).
    pub health_number_field: String,
    /// Identifier types (`PID-3`'s CX.5) that mark the health number with `pid3`.
    pub health_number_types: Vec<String>,
    /// Parallel parse calls.
    pub concurrency: usize,
}

impl Default for ParseSiuConfig {
    fn default() -> Self {
        Self {
            max_input_bytes: 16 * 1024 * 1024,
            max_message_bytes: 1024 * 1024,
            encoding_fallback: Fallback::Windows1252,
            health_number_field: "pid3".into(),
            health_number_types: vec!["JHN".into(), "PHN".into()],
            concurrency: 2,
        }
    }
}

impl ParseSiuConfig {
    /// Where the health number is read; `None` for a field name this does not know.
    pub fn health_number_at(&self) -> Option<HealthNumberAt> {
        Some(
            match self.health_number_field.to_ascii_lowercase().as_str() {
                "pid3" => HealthNumberAt::Pid3Types(
                    self.health_number_types
                        .iter()
                        .map(|t| t.trim().to_ascii_uppercase())
                        .collect(),
                ),
                "pid2" => HealthNumberAt::Field(2),
                "pid4" => HealthNumberAt::Field(4),
                "pid19" => HealthNumberAt::Field(19),
                _ => return None,
            },
        )
    }

    pub(super) fn validate(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        let mut v = Vec::new();
        if self.max_message_bytes == 0 || self.max_input_bytes == 0 {
            v.push(("size limits must be at least 1 byte".to_string(), None));
        }
        if self.concurrency == 0 {
            v.push(("concurrency must be at least 1".to_string(), None));
        }
        match self.health_number_at() {
            None => v.push((
                "health_number_field must be pid3, pid2, pid4 or pid19".to_string(),
                None,
            )),
            Some(HealthNumberAt::Pid3Types(t)) if t.iter().all(|x| x.is_empty()) => v.push((
                "health_number_types must name at least one identifier type (JHN)".to_string(),
                None,
            )),
            Some(_) => {}
        }
        v
    }
}
