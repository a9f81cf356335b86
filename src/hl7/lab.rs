//! The typed lab model: [`LabMessage`] built from a parsed ORU^R01.
//!
//! Holds what the OSCAR import needs — message header, patient, orders (OBR) with their
//! observations (OBX) and notes — as owned, decoded strings. Lab-type detection follows
//! OSCAR's handler names (`PATHL7`, `IHAPOI`, `CML`, …; see [`LabType`]).
//!
//! Validation here is structural: a lab message needs MSH, PID and at least one OBR. A
//! message missing one of them is typically truncated and is rejected with the segment's
//! name as the reason's detail.

use serde::Serialize;

use super::message::{Message, Segment};

/// OSCAR's lab handler name, stored in `hl7TextMessage.type`.
///
/// Configuration accepts OSCAR's and Expedius' own names as well (see [`LabType::from_name`]):
/// Expedius uploads Interior Health's feed as `IHA`, the name Open-O's `message_config.xml`
/// gives its `IHAPOIHandler`; oscarflow stores it as `IHAPOI`, as OSCAR's own rows have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LabType {
    /// Excelleris / LifeLabs BC.
    #[serde(rename = "PATHL7")]
    Pathl7,
    /// Interior Health POI.
    #[serde(rename = "IHAPOI")]
    IhaPoi,
    #[serde(rename = "CML")]
    Cml,
    #[serde(rename = "GDML")]
    Gdml,
    #[serde(rename = "MDS")]
    Mds,
    #[serde(rename = "MEDITECH")]
    Meditech,
    #[serde(rename = "CLS")]
    Cls,
    #[serde(rename = "EPSILON")]
    Epsilon,
    /// No specific handler: OSCAR's `DefaultGenericHandler`.
    #[serde(rename = "HL7")]
    Generic,
}

/// Which rule of [`LabType::detect`] typed a message, or who fixed its type instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TypedBy {
    /// The pipeline's `lab_type` (the parse stage's, or the source's own setting).
    Pipeline,
    /// The source serves one feed and fixes its type (`excelleris`: PATHL7, `iha_poi`:
    /// IHAPOI).
    Source,
    /// MSH-3 is `PATHL7` (Excelleris).
    Msh3Pathl7,
    /// MSH-3 starts with `IHA` (`IHALAB`, `IHAOE`, `IHARAD`, …: Interior Health POI).
    Msh3Iha,
    /// MSH-3 is `LAB`, `RAD` or `OE` and MSH-4 an Interior Health facility (`KGH`, `IH…`).
    IhFacility,
    /// MSH-3 or MSH-4 is `CML`.
    Cml,
    /// MSH-3 or MSH-4 is `GDML`.
    Gdml,
    /// MSH-3 starts with `MEDITECH`.
    Meditech,
    /// MSH-3 or MSH-4 is `CLS`.
    Cls,
    /// MSH-3 or MSH-4 contains `EPSILON`, or MSH-3 starts with `MDH` (MedHealth).
    Epsilon,
    /// No rule applies: OSCAR's generic handler.
    NoRule,
}

impl TypedBy {
    /// The bounded code stored and reported (`pipeline`, `source`, `msh3_iha`, …).
    pub fn code(self) -> &'static str {
        match self {
            TypedBy::Pipeline => "pipeline",
            TypedBy::Source => "source",
            TypedBy::Msh3Pathl7 => "msh3_pathl7",
            TypedBy::Msh3Iha => "msh3_iha",
            TypedBy::IhFacility => "ih_facility",
            TypedBy::Cml => "cml",
            TypedBy::Gdml => "gdml",
            TypedBy::Meditech => "meditech",
            TypedBy::Cls => "cls",
            TypedBy::Epsilon => "epsilon",
            TypedBy::NoRule => "no_rule",
        }
    }

    /// A short description for `inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            TypedBy::Pipeline => "the pipeline's lab_type",
            TypedBy::Source => "the source's feed",
            TypedBy::Msh3Pathl7 => "MSH-3 is PATHL7",
            TypedBy::Msh3Iha => "MSH-3 starts with IHA",
            TypedBy::IhFacility => "MSH-3 LAB/RAD/OE from an Interior Health facility (MSH-4)",
            TypedBy::Cml => "MSH-3 or MSH-4 is CML",
            TypedBy::Gdml => "MSH-3 or MSH-4 is GDML",
            TypedBy::Meditech => "MSH-3 starts with MEDITECH",
            TypedBy::Cls => "MSH-3 or MSH-4 is CLS",
            TypedBy::Epsilon => "MSH-3/MSH-4 names Epsilon or MedHealth (MDH)",
            TypedBy::NoRule => "no rule applies: generic HL7",
        }
    }
}

/// OSCAR's and Expedius' type names and what they mean here: each of Open-O's
/// `message_config.xml` names whose handler oscarflow implements, plus our own spellings.
const NAMES: &[(&str, LabType)] = &[
    ("PATHL7", LabType::Pathl7),
    ("IHAPOI", LabType::IhaPoi),
    ("IHA", LabType::IhaPoi),
    ("CML", LabType::Cml),
    ("GDML", LabType::Gdml),
    ("MDS", LabType::Mds),
    ("MEDITECH", LabType::Meditech),
    ("CLS", LabType::Cls),
    ("EPSILON", LabType::Epsilon),
    ("HL7", LabType::Generic),
];

impl<'de> serde::Deserialize<'de> for LabType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LabType::from_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown lab type `{}`, expected one of {}",
                s.chars().take(24).collect::<String>(),
                NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

impl LabType {
    pub fn as_str(self) -> &'static str {
        match self {
            LabType::Pathl7 => "PATHL7",
            LabType::IhaPoi => "IHAPOI",
            LabType::Cml => "CML",
            LabType::Gdml => "GDML",
            LabType::Mds => "MDS",
            LabType::Meditech => "MEDITECH",
            LabType::Cls => "CLS",
            LabType::Epsilon => "EPSILON",
            LabType::Generic => "HL7",
        }
    }

    /// The type an OSCAR or Expedius type name means (case-insensitive): `IHA` and `IHAPOI`
    /// are Interior Health's POI, `HL7` the generic handler.
    pub fn from_name(name: &str) -> Option<LabType> {
        let n = name.trim();
        NAMES
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, t)| *t)
    }

    /// Detects the type from MSH-3 / MSH-4 the way feeds identify themselves.
    pub fn detect(msg: &Message<'_>) -> LabType {
        Self::detect_with_rule(msg).0
    }

    /// [`LabType::detect`] and the rule that decided. Interior Health's POI sends under
    /// many applications (`IHALAB`, `IHAOE`, `IHARAD` with version `^2.1`; `LAB`, `RAD`,
    /// `OE` with `^2.0` from `KGH`) and facilities (`IHKGH`, `IHKLH`, `IHCMH`, … and `KGH`):
    /// every one of them is IHAPOI, as Expedius uploads the whole feed as OSCAR's `IHA`.
    pub fn detect_with_rule(msg: &Message<'_>) -> (LabType, TypedBy) {
        let app = msg.get("MSH-3.1").trim().to_ascii_uppercase();
        let fac = msg.get("MSH-4.1").trim().to_ascii_uppercase();
        let ih_facility = fac == "KGH" || fac.starts_with("IH");
        match app.as_str() {
            "PATHL7" => (LabType::Pathl7, TypedBy::Msh3Pathl7),
            _ if app.starts_with("IHA") => (LabType::IhaPoi, TypedBy::Msh3Iha),
            "LAB" | "RAD" | "OE" if ih_facility => (LabType::IhaPoi, TypedBy::IhFacility),
            _ if fac == "CML" || app == "CML" => (LabType::Cml, TypedBy::Cml),
            _ if fac == "GDML" || app == "GDML" => (LabType::Gdml, TypedBy::Gdml),
            _ if app.starts_with("MEDITECH") => (LabType::Meditech, TypedBy::Meditech),
            _ if fac == "CLS" || app == "CLS" => (LabType::Cls, TypedBy::Cls),
            _ if app.contains("EPSILON") || fac.contains("EPSILON") || app.starts_with("MDH") => {
                (LabType::Epsilon, TypedBy::Epsilon)
            }
            _ => (LabType::Generic, TypedBy::NoRule),
        }
    }
}

/// An extended person name/id (XCN): ordering and copy-to providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderRef {
    pub id: String,
    pub family: String,
    pub given: String,
    pub middle: String,
    pub suffix: String,
    pub prefix: String,
    pub degree: String,
}

impl ProviderRef {
    /// OSCAR's display form: `prefix given middle family suffix degree`, blanks skipped.
    pub fn display_name(&self) -> String {
        [
            &self.prefix,
            &self.given,
            &self.middle,
            &self.family,
            &self.suffix,
            &self.degree,
        ]
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim())
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// One OBX.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub value_type: String,
    /// OBX-4 components 1–3 (sub-ID; CML puts the section heading there).
    pub sub_id: [String; 3],
    pub identifier: String,
    pub name: String,
    pub value: String,
    pub units: String,
    pub reference_range: String,
    pub abnormal_flag: String,
    pub status: String,
    pub observed_at: String,
    /// For value type `ED`: the encapsulated data (e.g. a Base64 PDF); `value` then holds
    /// the data (ED.5), as OSCAR's `getOBXResult` returns it.
    pub embedded: Option<Embedded>,
}

/// Encapsulated data (ED) of an OBX.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Embedded {
    pub source_application: String,
    pub data_type: String,
    pub subtype: String,
    pub encoding: String,
    #[serde(skip)]
    pub data: String,
    pub data_len: usize,
}

/// One OBR with its OBX and NTE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Order {
    pub placer_order: String,
    pub filler_order: String,
    pub service_id: String,
    pub service_text: String,
    pub requested_at: String,
    pub observed_at: String,
    pub ordering: Vec<ProviderRef>,
    pub copy_to: Vec<ProviderRef>,
    pub section: String,
    pub result_status: String,
    /// OBR-4.5 (alternate text; Interior Health's header).
    pub service_alt_text: String,
    /// OBR-14.1 (specimen received).
    pub received_at: String,
    /// OBR-20.1 (filler field 1; CLS keeps the accession there).
    pub filler_field1: String,
    pub observations: Vec<Observation>,
    pub notes: Vec<String>,
}

/// The first ORC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CommonOrder {
    /// ORC-2.1.
    pub placer_order: String,
    /// ORC-3.1.
    pub filler_order: String,
    /// ORC-4.1.
    pub placer_group: String,
    /// ORC-5.
    pub status: String,
    /// ORC-15.1.
    pub effective_at: String,
}

/// The visit (PV1): where the patient was seen and by whom.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Visit {
    /// PV1-3.1 (point of care).
    pub location: String,
    /// PV1-3.4.1 (facility).
    pub facility: String,
    /// PV1-7 (attending doctors).
    pub attending: Vec<ProviderRef>,
    /// PV1-17 (admitting doctors).
    pub admitting: Vec<ProviderRef>,
    /// PV1-52 (other healthcare providers).
    pub other: Vec<ProviderRef>,
}

/// The patient (PID).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Patient {
    pub last_name: String,
    pub first_name: String,
    /// Health number as the feed carries it (PATHL7: PID-2; IHA POI: PID-4).
    pub health_number: String,
    /// Assigning authority of the health number (CX.4), e.g. `BC`.
    pub health_number_authority: String,
    pub middle_name: String,
    pub dob: String,
    pub sex: String,
    /// First home phone (PID-13.1).
    pub phone: String,
}

/// A lab result message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabMessage {
    pub lab_type: LabType,
    /// Who fixed the type, or the detection rule that decided it.
    pub typed_by: TypedBy,
    pub sending_application: String,
    pub sending_facility: String,
    pub control_id: String,
    pub message_date: String,
    pub message_type: String,
    pub version: String,
    pub patient: Patient,
    /// ORC-3.1 of the first ORC (OSCAR derives `accessionNum` from it).
    pub first_orc_filler: String,
    /// The first ORC, when there is one.
    pub first_orc: Option<CommonOrder>,
    /// The first PV1, when there is one.
    pub visit: Option<Visit>,
    /// Component 1 of each field of the last `ZDR` segment (Interior Health's doctor list).
    pub zdr_ids: Vec<String>,
    pub orders: Vec<Order>,
}

/// Why a message cannot be a lab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabError {
    #[error("required segment {0} is missing")]
    MissingSegment(&'static str),
}

fn xcn(m: &Message<'_>, seg: &Segment<'_>, field: usize, rep: usize) -> ProviderRef {
    let c = |n| m.value(seg, field, rep, Some(n)).trim().to_string();
    ProviderRef {
        id: c(1),
        family: c(2),
        given: c(3),
        middle: c(4),
        suffix: c(5),
        prefix: c(6),
        degree: c(7),
    }
}

impl LabMessage {
    /// Builds the model from a parsed message, detecting the lab type.
    pub fn from_message(m: &Message<'_>) -> Result<LabMessage, LabError> {
        Self::from_message_as(m, None)
    }

    /// Builds the model; `lab_type` overrides detection (OSCAR takes the type from the
    /// upload's configuration, not from the message).
    pub fn from_message_as(
        m: &Message<'_>,
        lab_type: Option<LabType>,
    ) -> Result<LabMessage, LabError> {
        Self::from_message_typed(m, lab_type, None)
    }

    /// Builds the model with the type from, in this order: the pipeline's `configured`
    /// type, the type its source's feed fixes (`source`), the detection rules.
    pub fn from_message_typed(
        m: &Message<'_>,
        configured: Option<LabType>,
        source: Option<LabType>,
    ) -> Result<LabMessage, LabError> {
        let Some(pid) = m.segments_named("PID").next() else {
            return Err(LabError::MissingSegment("PID"));
        };
        if !m.has("OBR") {
            return Err(LabError::MissingSegment("OBR"));
        }
        let (lab_type, typed_by) = match (configured, source) {
            (Some(t), _) => (t, TypedBy::Pipeline),
            (None, Some(t)) => (t, TypedBy::Source),
            (None, None) => LabType::detect_with_rule(m),
        };
        let t = |s: std::borrow::Cow<'_, str>| s.trim().to_string();
        // Where each OSCAR parser reads the health number (`getHealthNum`).
        let hin_field = match lab_type {
            LabType::IhaPoi | LabType::Cml | LabType::Epsilon => 4,
            _ => 2,
        };
        let mut health_number = t(m.value(pid, hin_field, 1, Some(1)));
        let mut hin_from = hin_field;
        if lab_type == LabType::Cml && health_number.is_empty() {
            // CMLHandler: an empty PID-4 falls back to a PID-2 of the form `MU<number>`.
            let alt = t(m.value(pid, 2, 1, Some(1)));
            if let Some(n) = alt.strip_prefix("MU") {
                health_number = n.trim().to_string();
                hin_from = 2;
            }
        }
        let (mut last_name, mut first_name) = (
            t(m.value(pid, 5, 1, Some(1))),
            t(m.value(pid, 5, 1, Some(2))),
        );
        if lab_type == LabType::Cls {
            // CLSHandler: PID-5.1 holds `Last, First Middle`.
            (last_name, first_name) = split_cls_name(&last_name);
        }
        let patient = Patient {
            last_name,
            first_name,
            middle_name: t(m.value(pid, 5, 1, Some(3))),
            health_number,
            health_number_authority: t(m.value(pid, hin_from, 1, Some(4))),
            dob: t(m.value(pid, 7, 1, Some(1))),
            sex: t(m.value(pid, 8, 1, Some(1))),
            phone: t(m.value(pid, 13, 1, Some(1))),
        };
        let first_orc = m.segments_named("ORC").next().map(|orc| CommonOrder {
            placer_order: t(m.value(orc, 2, 1, Some(1))),
            filler_order: t(m.value(orc, 3, 1, Some(1))),
            placer_group: t(m.value(orc, 4, 1, Some(1))),
            status: t(m.value(orc, 5, 1, None)),
            effective_at: t(m.value(orc, 15, 1, Some(1))),
        });
        let first_orc_filler = first_orc
            .as_ref()
            .map(|o| o.filler_order.clone())
            .unwrap_or_default();
        let xcns = |seg: &Segment<'_>, field: usize| -> Vec<ProviderRef> {
            (1..=m.repetitions(seg, field).max(1))
                .map(|r| xcn(m, seg, field, r))
                .filter(|p| p != &ProviderRef::default())
                .collect()
        };
        let visit = m.segments_named("PV1").next().map(|pv1| Visit {
            location: t(m.value(pv1, 3, 1, Some(1))),
            facility: t(m.sub_value(pv1, 3, 1, 4, 1)),
            attending: xcns(pv1, 7),
            admitting: xcns(pv1, 17),
            other: xcns(pv1, 52),
        });
        let zdr_ids = m
            .segments_named("ZDR")
            .last()
            .map(|zdr| {
                (1..=m.field_count(zdr))
                    .map(|f| t(m.value(zdr, f, 1, Some(1))))
                    .collect()
            })
            .unwrap_or_default();
        let mut orders: Vec<Order> = Vec::new();
        for seg in m.segments() {
            match seg.name {
                "OBR" => {
                    let reps = |f| m.repetitions(seg, f).max(1);
                    orders.push(Order {
                        placer_order: t(m.value(seg, 2, 1, Some(1))),
                        filler_order: t(m.value(seg, 3, 1, Some(1))),
                        service_id: t(m.value(seg, 4, 1, Some(1))),
                        service_text: t(m.value(seg, 4, 1, Some(2))),
                        requested_at: t(m.value(seg, 6, 1, Some(1))),
                        observed_at: t(m.value(seg, 7, 1, Some(1))),
                        ordering: (1..=reps(16))
                            .map(|r| xcn(m, seg, 16, r))
                            .filter(|p| p != &ProviderRef::default())
                            .collect(),
                        copy_to: (1..=reps(28))
                            .map(|r| xcn(m, seg, 28, r))
                            .filter(|p| p != &ProviderRef::default())
                            .collect(),
                        service_alt_text: t(m.value(seg, 4, 1, Some(5))),
                        received_at: t(m.value(seg, 14, 1, Some(1))),
                        filler_field1: t(m.value(seg, 20, 1, Some(1))),
                        section: t(m.value(seg, 24, 1, None)),
                        result_status: t(m.value(seg, 25, 1, None)),
                        observations: Vec::new(),
                        notes: Vec::new(),
                    });
                }
                "OBX" => {
                    if let Some(o) = orders.last_mut() {
                        let value_type = t(m.value(seg, 2, 1, None));
                        let embedded = value_type.eq_ignore_ascii_case("ED").then(|| {
                            let c = |n| m.value(seg, 5, 1, Some(n)).trim().to_string();
                            let data = c(5);
                            Embedded {
                                source_application: c(1),
                                data_type: c(2),
                                subtype: c(3),
                                encoding: c(4),
                                data_len: data.len(),
                                data,
                            }
                        });
                        let value = match &embedded {
                            Some(e) if !e.data.is_empty() => e.data.clone(),
                            _ => m.value(seg, 5, 1, None).trim().to_string(),
                        };
                        o.observations.push(Observation {
                            sub_id: [1, 2, 3].map(|c| t(m.value(seg, 4, 1, Some(c)))),
                            embedded,
                            value,
                            value_type,
                            identifier: t(m.value(seg, 3, 1, Some(1))),
                            name: t(m.value(seg, 3, 1, Some(2))),
                            units: t(m.value(seg, 6, 1, Some(1))),
                            reference_range: t(m.value(seg, 7, 1, None)),
                            abnormal_flag: t(m.value(seg, 8, 1, None)),
                            status: t(m.value(seg, 11, 1, None)),
                            observed_at: t(m.value(seg, 14, 1, Some(1))),
                        });
                    }
                }
                "NTE" => {
                    if let Some(o) = orders.last_mut() {
                        o.notes.push(m.value(seg, 3, 1, None).into_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(LabMessage {
            lab_type,
            typed_by,
            sending_application: t(m.get("MSH-3.1")),
            sending_facility: t(m.get("MSH-4.1")),
            control_id: t(m.get("MSH-10")),
            message_date: t(m.get("MSH-7.1")),
            message_type: format!("{}^{}", m.get("MSH-9.1").trim(), m.get("MSH-9.2").trim()),
            version: t(m.get("MSH-12.1")),
            patient,
            first_orc_filler,
            first_orc,
            visit,
            zdr_ids,
            orders,
        })
    }
}

/// CLSHandler's name split: `Last, First Middle` → (`Last`, `First`): the text before the
/// comma, and the rest cut at its last space. Without a comma, all of it is the last name.
fn split_cls_name(full: &str) -> (String, String) {
    match full.split_once(',') {
        Some((last, rest)) => {
            let rest = rest.trim();
            let first = match rest.rfind(' ') {
                Some(i) => &rest[..i],
                None => rest,
            };
            (last.trim().to_string(), first.trim().to_string())
        }
        None => (full.trim().to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(text: &str) -> LabMessage {
        LabMessage::from_message(&Message::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn builds_pathl7_model() {
        let l = lab("MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ACC|20260101120000||ORU^R01|C1|P|2.3\rPID||9000000011|||ZZTEST^ALPHA||19800102|F\rORC|RE||26-100000001-HP-1\rOBR|1||26-100000001-HP-1|HP^Haem Profile|||20260101090000|||||||||91001^TESTDOC^ALPHA||||||||HAEM1|F|||91002^COPY^BETA~91003^COPY^GAMMA\rOBX|1|NM|718-7^Hemoglobin||135|g/L|120-160|N|||F|||20260101100000\rNTE|||a note");
        assert_eq!(l.lab_type, LabType::Pathl7);
        assert_eq!(l.patient.health_number, "9000000011");
        assert_eq!(l.patient.dob, "19800102");
        assert_eq!(l.orders[0].ordering[0].id, "91001");
        assert_eq!(l.orders[0].copy_to.len(), 2);
        assert_eq!(l.orders[0].copy_to[1].id, "91003");
        assert_eq!(l.orders[0].observations[0].observed_at, "20260101100000");
        assert_eq!(l.orders[0].notes, vec!["a note".to_string()]);
        assert_eq!(l.message_type, "ORU^R01");
    }

    #[test]
    fn embedded_pdf_is_read_from_ed_components() {
        let l = lab("MSH|^~\\&|PATHL7|X\rPID||9000000011^^^BC|||ZZTEST^A^B||19800102|F|||||604-555-0100\rOBR|1\rOBX|1|ED|PDF^Report||LAB^Application^PDF^Base64^JVBERi0xLjQK||||||F");
        let o = &l.orders[0].observations[0];
        let e = o.embedded.as_ref().unwrap();
        assert_eq!(
            (
                e.data_type.as_str(),
                e.subtype.as_str(),
                e.encoding.as_str()
            ),
            ("Application", "PDF", "Base64")
        );
        assert_eq!(o.value, "JVBERi0xLjQK");
        assert_eq!(l.patient.health_number_authority, "BC");
        assert_eq!(l.patient.middle_name, "B");
        assert_eq!(l.patient.phone, "604-555-0100");
    }

    #[test]
    fn configured_lab_type_overrides_detection_and_picks_the_health_number_field() {
        let m = Message::parse("MSH|^~\\&|LAB^2.0|KGH\rPID|1|A1|KB2|9879597977\rOBR|1").unwrap();
        assert_eq!(
            LabMessage::from_message(&m).unwrap().lab_type,
            LabType::IhaPoi
        );
        assert_eq!(
            LabMessage::from_message(&m).unwrap().patient.health_number,
            "9879597977"
        );
        let forced = LabMessage::from_message_as(&m, Some(LabType::Pathl7)).unwrap();
        assert_eq!(forced.patient.health_number, "A1");
    }

    #[test]
    fn every_interior_health_application_and_facility_is_typed_ihapoi_by_a_named_rule() {
        for (msh, rule) in [
            ("IHAOE^2.1|IHKLH", TypedBy::Msh3Iha),
            ("IHARAD^2.1|IHKGH", TypedBy::Msh3Iha),
            ("IHALAB^2.1|KGH", TypedBy::Msh3Iha),
            ("LAB^2.0|KGH", TypedBy::IhFacility),
            ("RAD^2.0|KGH", TypedBy::IhFacility),
            ("OE^2.0|IHKGH", TypedBy::IhFacility),
        ] {
            let text = format!("MSH|^~\\&|{msh}\rPID|1|A1||9879597977\rOBR|1");
            let m = Message::parse(&text).unwrap();
            let l = LabMessage::from_message(&m).unwrap();
            assert_eq!((l.lab_type, l.typed_by), (LabType::IhaPoi, rule), "{msh}");
            // PID-4, not the account number in PID-2.
            assert_eq!(l.patient.health_number, "9879597977", "{msh}");
        }
        // LAB from a facility that is not Interior Health's is not POI.
        let m = Message::parse("MSH|^~\\&|LAB|0826^LWH\rPID|1\rOBR|1").unwrap();
        assert_eq!(
            LabType::detect_with_rule(&m),
            (LabType::Generic, TypedBy::NoRule)
        );
    }

    #[test]
    fn oscar_and_expedius_type_names_are_accepted_and_unknown_ones_refused() {
        assert_eq!(LabType::from_name("IHA"), Some(LabType::IhaPoi));
        assert_eq!(LabType::from_name("ihapoi"), Some(LabType::IhaPoi));
        assert_eq!(LabType::from_name("PATHL7"), Some(LabType::Pathl7));
        assert_eq!(LabType::from_name("HL7"), Some(LabType::Generic));
        assert_eq!(LabType::from_name("OLIS_HL7"), None);
        let t: LabType = serde_json::from_str("\"IHA\"").unwrap();
        assert_eq!(t.as_str(), "IHAPOI");
        let e = serde_json::from_str::<LabType>("\"NOPE\"").unwrap_err();
        assert!(e.to_string().contains("unknown lab type `NOPE`"), "{e}");
    }

    #[test]
    fn the_pipelines_type_wins_over_the_sources_which_wins_over_detection() {
        let m = Message::parse("MSH|^~\\&|IHAOE^2.1|IHKLH\rPID|1|A1||9879597977\rOBR|1").unwrap();
        let l = LabMessage::from_message_typed(&m, None, Some(LabType::Pathl7)).unwrap();
        assert_eq!((l.lab_type, l.typed_by), (LabType::Pathl7, TypedBy::Source));
        let l =
            LabMessage::from_message_typed(&m, Some(LabType::Cml), Some(LabType::Pathl7)).unwrap();
        assert_eq!((l.lab_type, l.typed_by), (LabType::Cml, TypedBy::Pipeline));
    }

    #[test]
    fn missing_pid_or_obr_is_an_error() {
        let m = Message::parse("MSH|^~\\&|A\rOBR|1").unwrap();
        assert_eq!(
            LabMessage::from_message(&m).unwrap_err(),
            LabError::MissingSegment("PID")
        );
        let m = Message::parse("MSH|^~\\&|A\rPID|1").unwrap();
        assert_eq!(
            LabMessage::from_message(&m).unwrap_err(),
            LabError::MissingSegment("OBR")
        );
    }
}
