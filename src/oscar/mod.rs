//! OSCAR table knowledge: how OSCAR's own lab uploader fills its tables.
//!
//! - [`handlers`]: what OSCAR's parser for each lab type (PATHL7, CML, MEDITECH, IHAPOI,
//!   CLS) reads where — accession, order status, dates, discipline, practitioner numbers.
//! - [`info`]: the `hl7TextInfo` row for a lab message (IMPORT-SPEC §2.5), in the Open-O or
//!   OSCAR 19 flavour ([`Flavour`]).
//! - [`matching`]: OSCAR's patient-match predicates (§2.6) with bound parameters — health
//!   number required, never a name-only match, more than one row = unmatched, merged charts
//!   followed to their head.
//! - [`routing`]: provider inbox routing (§2.8): practitioner numbers → providers, else the
//!   MRP, else the unclaimed inbox `'0'`; `incomingLabRules` status and forwards.
//! - [`import`]: one file, or a group of files, = one transaction: `fileUploadCheck`,
//!   `hl7TextMessage`, `hl7TextInfo`, `patientLabRouting`, `providerLabRouting`, each table's
//!   rows for the whole group in one multi-row statement ([`rows`]).
//! - [`charset`]: OSCAR's `utf8mb3` columns and the replacement of characters they cannot
//!   hold.
//! - [`fax`]: received faxes filed as OSCAR's `FaxImporter` files them (§3.3).
//! - [`appointment`]: scheduling messages (SIU) into OSCAR's appointment book as its SIU
//!   handler and appointment screens write it, with a correct conflict check.

pub mod appointment;
pub mod charset;
pub mod contact;
pub mod fax;
pub mod handlers;
pub mod import;
pub mod info;
pub mod log;
pub mod matching;
pub mod measurements;
pub mod routing;

/// Which OSCAR the target database belongs to. They differ in `hl7TextInfo.obr_date`,
/// `report_status`, `label` and `sending_facility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// Open-O (current OpenOSP fork): obr_date from OBR-7, report status in words.
    #[default]
    OpenO,
    /// OSCAR 19: obr_date from the first OBX-14, report status as the OBR-25 letter.
    Oscar19,
}

/// The `oscar_flavour` setting: a flavour, or `auto` to read it from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlavourSetting {
    /// Open-O's `document.report_media` column (added by Open-O, absent from OSCAR 19)
    /// decides; a database without OSCAR's `document` table (the embedded store) is Open-O.
    #[default]
    Auto,
    OpenO,
    Oscar19,
}

/// Reads the flavour from the schema (see [`FlavourSetting::Auto`]).
pub async fn detect_flavour(
    store: &crate::store::Store,
) -> Result<Flavour, crate::store::StoreError> {
    if !store.table_exists("document").await? {
        return Ok(Flavour::OpenO);
    }
    if store.column_exists("document", "report_media").await? {
        Ok(Flavour::OpenO)
    } else {
        Ok(Flavour::Oscar19)
    }
}

/// The flavour to write for `setting` (reading the schema for `auto`); a database that
/// cannot be read is a transient error.
pub async fn resolve_flavour(
    setting: FlavourSetting,
    store: &crate::store::Store,
) -> Result<Flavour, crate::component::ProcessError> {
    match setting {
        FlavourSetting::OpenO => Ok(Flavour::OpenO),
        FlavourSetting::Oscar19 => Ok(Flavour::Oscar19),
        FlavourSetting::Auto => detect_flavour(store).await.map_err(|e| {
            crate::component::ProcessError::transient(format!("flavour detection: {e}"))
        }),
    }
}

/// The auto-increment id of the row just inserted into `table` in `tx`.
pub(crate) async fn generated_id(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    reported: Option<i64>,
    table: &'static str,
) -> Result<i64, crate::component::ProcessError> {
    use crate::component::ProcessError;
    match crate::store::last_insert_id(tx, reported).await {
        Ok(id) if id > 0 => Ok(id),
        Ok(_) => Err(ProcessError::fatal(format!(
            "insert {table}: no generated id"
        ))),
        Err(e) => Err(ProcessError::from_sqlx("read generated id", &e)),
    }
}
