//! `MatchPatientConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::oscar::matching::MatchSettings;
use serde::Deserialize;

/// `[stages.<id>] type = "match_patient"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MatchPatientConfig {
    /// OSCAR's `LAB_NOMATCH_NAMES` (default true): names are not compared. When false, the
    /// initials of last and first name must match as well.
    pub nomatch_names: bool,
    /// OSCAR 19's relaxation: charts whose sex is neither F nor M match any lab sex.
    pub relax_sex_for_non_binary: bool,
    /// Parallel match calls.
    pub concurrency: usize,
    /// What it matches: `lab_file` (the default: every lab of a parsed file) or
    /// `appointment` (a scheduling message from `parse_siu`). The rules are the same.
    pub payload: MatchPayload,
}

/// The payload a `match_patient` stage takes and gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchPayload {
    #[default]
    LabFile,
    Appointment,
}

impl Default for MatchPatientConfig {
    fn default() -> Self {
        let s = MatchSettings::default();
        Self {
            nomatch_names: s.nomatch_names,
            relax_sex_for_non_binary: s.relax_sex_for_non_binary,
            concurrency: 2,
            payload: MatchPayload::LabFile,
        }
    }
}
