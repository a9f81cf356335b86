//! `OscarLabConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::lab_file::OrderKey;
use crate::oscar::import::Overflow;
use crate::oscar::FlavourSetting;
use serde::Deserialize;

/// `[sinks.<id>] type = "oscar_lab"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OscarLabConfig {
    /// `hl7TextMessage.serviceName`.
    pub service_name: String,
    /// `fileUploadCheck.provider_no` (OSCAR uses `'0'` for automated uploads).
    pub upload_provider_no: String,
    /// Which OSCAR reads the database: `open_o`, `oscar19`, or `auto` (read from the
    /// schema on first use: Open-O has `document.report_media`).
    pub oscar_flavour: FlavourSetting,
    /// Files committed in parallel (different ordering keys only).
    pub concurrency: usize,
    /// Files sharing this key are committed in arrival order.
    pub order_by: OrderKey,
    /// A value longer than its OSCAR column: `truncate` (with a warning naming the column)
    /// or `reject` (the file goes to the dead-letter store).
    pub on_overflow: Overflow,
    /// Group commit: the most files one transaction takes (1: a transaction per file).
    /// Groups form only under load, from files already waiting; a lone file commits at once.
    pub group_max_files: usize,
    /// Group commit: the most raw bytes of files one transaction takes (a single larger
    /// file still goes, alone).
    pub group_max_bytes: usize,
}

impl Default for OscarLabConfig {
    fn default() -> Self {
        Self {
            service_name: "oscarflow".into(),
            upload_provider_no: "0".into(),
            oscar_flavour: FlavourSetting::Auto,
            concurrency: 4,
            order_by: OrderKey::Accession,
            on_overflow: Overflow::Truncate,
            group_max_files: 64,
            group_max_bytes: 8 * 1024 * 1024,
        }
    }
}
