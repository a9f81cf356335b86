//! `ParseHl7Config`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::hl7::text::Fallback;
use serde::Deserialize;

/// `[stages.<id>] type = "parse_hl7"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ParseHl7Config {
    /// Inputs larger than this are rejected whole (`too_large`).
    pub max_input_bytes: usize,
    /// Single messages larger than this are rejected (`too_large`).
    pub max_message_bytes: usize,
    /// Decoding of input that is not valid UTF-8: `windows-1252` or `latin1`.
    pub encoding_fallback: Fallback,
    /// MSH-9.1 values this pipeline imports (empty: all). Others are rejected as
    /// `unsupported_message`.
    pub message_types: Vec<String>,
    /// Parallel parse calls.
    pub concurrency: usize,
    /// OSCAR's lab type for every message of this pipeline (`PATHL7`, `IHAPOI` or OSCAR's
    /// and Expedius' `IHA`, `CML`, `GDML`, `MDS`, `MEDITECH`, `CLS`, `EPSILON`, `HL7`), as
    /// OSCAR's upload configuration sets it. Absent: the type the source's feed fixes
    /// (`excelleris`: PATHL7, `iha_poi`: IHAPOI), else detected per message from
    /// MSH-3/MSH-4 ([`crate::hl7::lab::LabType::detect_with_rule`]). `check` refuses a
    /// value that contradicts the source's feed.
    pub lab_type: Option<crate::hl7::lab::LabType>,
}

impl Default for ParseHl7Config {
    fn default() -> Self {
        Self {
            max_input_bytes: 64 * 1024 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            encoding_fallback: Fallback::Windows1252,
            message_types: vec!["ORU".to_string()],
            concurrency: 2,
            lab_type: None,
        }
    }
}
