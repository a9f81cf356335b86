//! What OSCAR's per-lab-type parsers return: the getters `MessageUploader.routeReport` reads
//! (IMPORT-SPEC §2.4 step 2) for each `hl7TextMessage.type`.
//!
//! OSCAR picks a parser class by the upload's type string, and the classes disagree on where
//! things live. `PATHL7` (Excelleris, §2.5) is the reference; every other type here differs
//! from it as read from OSCAR 19's `oscar.oscarLab.ca.all.parsers` (and Open-O's copies):
//!
//! | getter | CML | MEDITECH | IHAPOI (extends MEDITECH) | CLS | generic `HL7` (DefaultGenericHandler) |
//! |---|---|---|---|---|---|
//! | health number | PID-4 (or PID-2 `MU…`) | PID-2 | PID-4 | PID-2 | PID-2 (see below) |
//! | accession | ORC-2 + `", "` + ORC-3 | first OBR-3 | OBR-2, else ORC-2, else ORC-4 | first OBR-20 | none (no versions linked) |
//! | filler order number | `""` | first OBR-3 | first OBR-3 | first OBR-3 | `""` |
//! | order status | first ORC-5 | OBR-25 (`F` when empty/`S` and the last OBX is final; `C` when any OBX is) | as MEDITECH | ORC-5, else OBR-25 | `""` |
//! | service date (Open-O `obr_date`) | ORC-15 | OBR-7, else OBR-14 | as MEDITECH | ORC-15, else OBR-14 | none (so MSH-7) |
//! | message date (fallback) | first OBR-7 | MSH-7 | as MEDITECH | first OBR-7 | MSH-7 |
//! | first time stamp (OSCAR 19 `obr_date`) | first OBR-7 | first OBR-7 | as MEDITECH | first OBR-7 | first OBR-7 |
//! | patient location (Open-O `sending_facility`) | MSH-4 | PV1-3.1 + `" "` + PV1-3.4 | as MEDITECH | MSH-4 | MSH-4 |
//! | discipline | OBX-4 headings | OBR-4 texts joined by `/` | `<section>:<OBR-4.5 or 4.2>` | OBR-4.2 per OBR | none |
//! | abnormal result | OBX-8 = `A` | OBX-8 not empty, not `N` | as MEDITECH | OBX-8 ∈ {C, H, L, A} | OBX-8 not empty, not `N` (case-sensitive) |
//! | final result count | OBX-11 = F, no bonus | F/C, +100 final, +150 corrected | as MEDITECH | F/C, no bonus | OBX-11 starting with F/f, no bonus |
//! | requesting client | OBR-16, all | OBR-16, all | OBR-16, else PV1-7 | OBR-16, all | the first OBR-16 only |
//! | practitioner numbers | OBR-16 + OBR-28 | PV1-17, PV1-7, PV1-52, OBR-16, OBR-28 | the last `ZDR` segment, else as MEDITECH | OBR-16 + OBR-28 | OBR-16 + OBR-28 |
//!
//! Open-O writes `report_status` in words (`complete`, `corrected`, …) for PATHL7 only: its
//! other parsers still return the letter, and the generic one `""`.
//!
//! **The generic type** (any sender no rule of [`LabType::detect_with_rule`] recognises, or
//! `lab_type = "HL7"`) follows OSCAR 19's `DefaultGenericHandler`, with these deliberate
//! differences:
//! - the health number is PID-2 only. OSCAR takes the first value of exactly 10 characters
//!   among PID-2, PID-4, PID-3 and PID-19: PID-3 is a medical record number and PID-19 a
//!   social security number, and matching a chart on either would be matching on a value
//!   that is not a health number. A lab without PID-2 is unmatched (`no_health_number`).
//!   A PID-2 of another length is still matched (OSCAR's 12-to-10 cut applies);
//! - Open-O's copy of the handler no longer strips `R01` before parsing, so it finds no OBX
//!   in any ORU^R01 (no results count, no abnormal flag, no measurements) and cuts the last
//!   segment short: we read the results as OSCAR 19 does;
//! - OSCAR stops reading OBR-28 at its first empty repetition; we skip blanks and go on.
//!
//! `obr_date` is OBR-7 (OSCAR 19) or MSH-7 (Open-O), `label` NULL (OSCAR 19) or `''`
//! (Open-O), as each writes them.
//!
//! **An ORU without results** (MSH, PID, OBR and no OBX or NTE) is stored as Open-O's upload
//! stores it: the lab with its `hl7TextInfo` (a results count of the status bonus alone) and
//! its routing, no measurements, dated by the service date, else the message date. OSCAR 19
//! instead fails such an upload and cleans the whole file when its date comes from the
//! (absent) first OBX-14 — PATHL7 — so in the OSCAR 19 flavour `obr_date` falls back the
//! same way: a lab without results (a cancelled test, a "see report" notice) still reaches
//! the chart and the inbox.
//!
//! Names, DOB and sex are PID-5.1/5.2, PID-7 and PID-8 everywhere except CLS, whose PID-5.1
//! holds `Last, First Middle` (split in [`crate::hl7::lab`]). Types without an entry
//! (`GDML`, `MDS`, `EPSILON`) use the PATHL7 rules; EPSILON reads its health
//! number from PID-4 like CML, but its other getters are not reproduced (Open-O's Epsilon
//! parser fails on every message, OSCAR 19's differs again) — configure such feeds
//! deliberately.
//!
//! Deliberate differences: where OSCAR throws and cleans the whole file (an Interior Health
//! section code outside its list; an unparseable date), we store the value as read (or NULL)
//! and import the lab — losing a result is worse than an unusual discipline text. Where
//! OSCAR's order is a `HashMap`'s (MEDITECH practitioner numbers), ours is the message's.
//! OSCAR's CLS (and BIOTEST/CDL) uploader skips a final message whose accession number is
//! already on file (IMPORT-SPEC §2.9); we import it as a new version of that accession
//! instead: in OSCAR's own CLS sample a later message of one accession carries 13 results
//! where the earlier one had 8, and skipping it would silently drop five results. The
//! versions are linked by `accessionNum` and OSCAR shows the latest as current.
//! Open-O's `hl7TextInfo.label` is `PATHL7Handler.getLabel()`; other types get NULL.

use crate::hl7::lab::{LabMessage, LabType, Observation, ProviderRef};

use super::info::format_hl7_ts;

/// OSCAR's `getAccessionNum`.
pub fn accession(lab: &LabMessage) -> String {
    let first = lab.orders.first();
    let orc = lab.first_orc.as_ref();
    match lab.lab_type {
        LabType::Cml => {
            let placer = orc.map(|o| o.placer_order.as_str()).unwrap_or("");
            let filler = orc.map(|o| o.filler_order.as_str()).unwrap_or("");
            if filler.is_empty() {
                placer.to_string()
            } else {
                format!("{placer}, {filler}")
            }
        }
        LabType::Meditech => first.map(|o| o.filler_order.clone()).unwrap_or_default(),
        LabType::IhaPoi => [
            first.map(|o| o.placer_order.as_str()),
            orc.map(|o| o.placer_order.as_str()),
            orc.map(|o| o.placer_group.as_str()),
        ]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string(),
        LabType::Cls => first.map(|o| o.filler_field1.clone()).unwrap_or_default(),
        // DefaultGenericHandler: no accession, so no versions are linked.
        LabType::Generic => String::new(),
        _ => pathl7_accession(lab),
    }
}

/// PATHL7: ORC-3.1 of the first ORC split on `-`: 3 parts → part 1; 5 parts → parts 1–3;
/// otherwise with >1 part → parts 1–2; else "". Without an ORC, the first OBR-3.1 is used
/// the same way.
fn pathl7_accession(lab: &LabMessage) -> String {
    let src = if lab.first_orc_filler.is_empty() {
        lab.orders
            .first()
            .map(|o| o.filler_order.as_str())
            .unwrap_or("")
    } else {
        lab.first_orc_filler.as_str()
    };
    let parts: Vec<&str> = src.split('-').collect();
    match parts.len() {
        3 => parts[0].to_string(),
        5 => parts[..3].join("-"),
        n if n > 1 => parts[..2].join("-"),
        _ => String::new(),
    }
}

/// OSCAR's `getFillerOrderNumber` (`hl7TextInfo.filler_order_num`, stored as given).
pub fn filler_order_num(lab: &LabMessage) -> String {
    match lab.lab_type {
        LabType::Meditech | LabType::IhaPoi | LabType::Cls => lab
            .orders
            .first()
            .map(|o| o.filler_order.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn any_obx_status(lab: &LabMessage, status: &str) -> bool {
    lab.orders
        .iter()
        .flat_map(|o| &o.observations)
        .any(|x| x.status.trim().eq_ignore_ascii_case(status))
}

/// OSCAR's `getOrderStatus` as a letter (upper case).
pub fn order_status(lab: &LabMessage) -> String {
    let first_obr = || {
        lab.orders
            .first()
            .map(|o| o.result_status.trim().to_string())
            .unwrap_or_default()
    };
    let orc_status = || {
        lab.first_orc
            .as_ref()
            .map(|o| o.status.trim().to_string())
            .unwrap_or_default()
    };
    let s = match lab.lab_type {
        LabType::Cml => orc_status(),
        LabType::Cls => Some(orc_status())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(first_obr),
        LabType::Meditech | LabType::IhaPoi => {
            let mut s = first_obr();
            let last_final = lab
                .orders
                .last()
                .and_then(|o| o.observations.last())
                .is_some_and(|x| x.status.trim().eq_ignore_ascii_case("F"));
            if (s.is_empty() || s.eq_ignore_ascii_case("S")) && last_final {
                s = "F".into();
            }
            if any_obx_status(lab, "C") {
                s = "C".into();
            }
            s
        }
        // DefaultGenericHandler has no order status.
        LabType::Generic => String::new(),
        _ => {
            if any_obx_status(lab, "C") {
                "C".into()
            } else {
                first_obr()
            }
        }
    };
    s.to_ascii_uppercase()
}

/// `getServiceDate`, formatted (Open-O's `obr_date`, before the message-date fallback).
pub fn service_date(lab: &LabMessage) -> Option<String> {
    let first = lab.orders.first();
    let obr7 = || first.and_then(|o| format_hl7_ts(&o.observed_at));
    let obr14 = || first.and_then(|o| format_hl7_ts(&o.received_at));
    let orc15 = || {
        lab.first_orc
            .as_ref()
            .and_then(|o| format_hl7_ts(&o.effective_at))
    };
    match lab.lab_type {
        LabType::Cml => orc15(),
        LabType::Meditech | LabType::IhaPoi => obr7().or_else(obr14),
        LabType::Cls => orc15().or_else(obr14),
        // Open-O's DefaultGenericHandler: none, so `obr_date` is the message date (MSH-7).
        LabType::Generic => None,
        _ => obr7(),
    }
}

/// `getMsgDate`, formatted.
pub fn message_date(lab: &LabMessage) -> Option<String> {
    match lab.lab_type {
        LabType::Cml | LabType::Cls => lab
            .orders
            .first()
            .and_then(|o| format_hl7_ts(&o.observed_at)),
        _ => format_hl7_ts(&lab.message_date),
    }
}

/// `getTimeStamp(0, 0)`, formatted (OSCAR 19's `obr_date`).
pub fn first_time_stamp(lab: &LabMessage) -> Option<String> {
    let first = lab.orders.first();
    match lab.lab_type {
        LabType::Cml | LabType::Cls | LabType::Meditech | LabType::IhaPoi | LabType::Generic => {
            first.and_then(|o| format_hl7_ts(&o.observed_at))
        }
        _ => first
            .and_then(|o| o.observations.first())
            .and_then(|x| format_hl7_ts(&x.observed_at)),
    }
}

/// `getPatientLocation` (Open-O's `sending_facility`).
pub fn patient_location(lab: &LabMessage) -> String {
    match lab.lab_type {
        LabType::Meditech | LabType::IhaPoi => {
            let (loc, fac) = lab
                .visit
                .as_ref()
                .map(|v| (v.location.as_str(), v.facility.as_str()))
                .unwrap_or(("", ""));
            format!("{loc} {fac}")
        }
        _ => lab.sending_facility.clone(),
    }
}

/// `isOBXAbnormal` for one result.
pub fn is_abnormal(lab_type: LabType, x: &Observation) -> bool {
    let flag = x.abnormal_flag.split('~').next().unwrap_or("").trim();
    match lab_type {
        LabType::Cml => flag == "A",
        LabType::Cls => matches!(flag, "C" | "H" | "L" | "A"),
        // DefaultGenericHandler compares with "N" exactly (an `n` counts as abnormal).
        LabType::Generic => !flag.is_empty() && flag != "N",
        _ => !flag.is_empty() && !flag.eq_ignore_ascii_case("N"),
    }
}

/// True when any result is abnormal (`hl7TextInfo.result_status = 'A'`).
pub fn any_abnormal(lab: &LabMessage) -> bool {
    lab.orders
        .iter()
        .flat_map(|o| &o.observations)
        .any(|x| is_abnormal(lab.lab_type, x))
}

/// `getOBXFinalResultCount`.
pub fn final_result_count(lab: &LabMessage) -> i64 {
    let counted = |x: &&Observation| {
        let s = x.status.trim();
        match lab.lab_type {
            LabType::Cml => s.eq_ignore_ascii_case("F"),
            // DefaultGenericHandler: OBX-11 starting with F or f.
            LabType::Generic => s.starts_with(['F', 'f']),
            _ => s.eq_ignore_ascii_case("F") || s.eq_ignore_ascii_case("C"),
        }
    };
    let count = lab
        .orders
        .iter()
        .flat_map(|o| &o.observations)
        .filter(counted)
        .count() as i64;
    let bonus = match lab.lab_type {
        LabType::Cml | LabType::Cls | LabType::Generic => 0,
        _ => match order_status(lab).as_str() {
            "F" => 100,
            "C" => 150,
            _ => 0,
        },
    };
    count + bonus
}

/// The discipline rule of `MessageUploader` (§2.4 step 5) over `getHeaders`: the first
/// header's first word, then `/` + the first word of each further non-blank header.
fn discipline_of_headers(headers: &[String]) -> String {
    let mut out = String::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.split("<br />").next().unwrap_or("");
        let first_word = h.split_whitespace().next().unwrap_or("");
        if i == 0 {
            out.push_str(first_word);
        } else if !first_word.is_empty() {
            out.push('/');
            out.push_str(first_word);
        }
    }
    out
}

fn dedupe(items: impl IntoIterator<Item = String>, consecutive_only: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in items {
        let seen = if consecutive_only {
            out.last() == Some(&h)
        } else {
            out.contains(&h)
        };
        if !seen {
            out.push(h);
        }
    }
    out
}

/// `hl7TextInfo.discipline`.
pub fn discipline(lab: &LabMessage) -> String {
    match lab.lab_type {
        LabType::Cml => {
            let headers = lab
                .orders
                .iter()
                .flat_map(|o| &o.observations)
                .filter(|x| !x.name.is_empty())
                .map(|x| x.sub_id.join(" ").trim().to_string());
            discipline_of_headers(&dedupe(headers, false))
        }
        LabType::Cls => {
            let headers = lab.orders.iter().map(|o| o.service_text.trim().to_string());
            discipline_of_headers(&dedupe(headers, false))
        }
        LabType::Meditech => lab
            .orders
            .iter()
            .enumerate()
            .map(|(i, o)| meditech_header(o, i))
            .collect::<Vec<_>>()
            .join("/"),
        LabType::IhaPoi => {
            let first = lab.orders.first();
            let section = first
                .map(|o| o.section.trim())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| lab.sending_application.trim());
            let key = match section.to_ascii_uppercase().as_str() {
                "IHARAD" => "RAD".to_string(),
                "OE" => "HR".to_string(),
                other => other.to_string(),
            };
            let test = first
                .map(|o| {
                    if o.service_alt_text.is_empty() {
                        o.service_text.as_str()
                    } else {
                        o.service_alt_text.as_str()
                    }
                })
                .unwrap_or("");
            format!("{key}:{test}")
        }
        // DefaultGenericHandler has no headers.
        LabType::Generic => String::new(),
        _ => {
            let headers = lab.orders.iter().map(|o| o.section.trim().to_string());
            discipline_of_headers(&dedupe(headers, true))
        }
    }
}

fn meditech_header(o: &crate::hl7::lab::Order, i: usize) -> String {
    if !o.service_text.is_empty() {
        o.service_text.clone()
    } else if !o.service_id.is_empty() {
        o.service_id.clone()
    } else {
        format!("No Headings Found [{i}]")
    }
}

/// `getDocName` (`hl7TextInfo.requesting_client`): the first OBR's ordering providers, each
/// `prefix given middle family suffix degree`, joined with `", "`. MEDITECH falls back to
/// the attending doctors (PV1-7).
pub fn doc_name(lab: &LabMessage) -> String {
    let names = |ps: &[ProviderRef]| {
        ps.iter()
            .map(|p| p.display_name())
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ordering = lab
        .orders
        .first()
        .map(|o| names(&o.ordering))
        .unwrap_or_default();
    match lab.lab_type {
        LabType::Meditech | LabType::IhaPoi if ordering.is_empty() => lab
            .visit
            .as_ref()
            .map(|v| names(&v.attending))
            .unwrap_or_default(),
        // DefaultGenericHandler: the first OBR-16 repetition only.
        LabType::Generic => lab
            .orders
            .first()
            .and_then(|o| o.ordering.first())
            .map(|p| p.display_name())
            .unwrap_or_default(),
        _ => ordering,
    }
}

/// `getDocNums`: practitioner numbers to route to, blanks skipped, duplicates removed.
pub fn doc_nums(lab: &LabMessage) -> Vec<String> {
    let first = lab.orders.first();
    let ids: Vec<String> = match lab.lab_type {
        LabType::IhaPoi if lab.zdr_ids.iter().any(|i| !i.trim().is_empty()) => lab.zdr_ids.clone(),
        LabType::Meditech | LabType::IhaPoi => {
            let named = |p: &&ProviderRef| {
                !(p.family.is_empty() && p.given.is_empty() && p.prefix.is_empty())
            };
            let visit = lab.visit.clone().unwrap_or_default();
            visit
                .admitting
                .iter()
                .chain(&visit.attending)
                .chain(&visit.other)
                .chain(first.map(|o| o.ordering.as_slice()).unwrap_or(&[]))
                .chain(first.map(|o| o.copy_to.as_slice()).unwrap_or(&[]))
                .filter(named)
                .map(|p| p.id.clone())
                .collect()
        }
        _ => first
            .map(|o| {
                o.ordering
                    .iter()
                    .take(1)
                    .chain(o.copy_to.iter())
                    .map(|p| p.id.clone())
                    .collect()
            })
            .unwrap_or_default(),
    };
    dedupe(
        ids.into_iter()
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty()),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::Message;

    fn lab(text: &str) -> LabMessage {
        LabMessage::from_message(&Message::parse(text).unwrap()).unwrap()
    }

    fn lab_as(text: &str, t: LabType) -> LabMessage {
        LabMessage::from_message_as(&Message::parse(text).unwrap(), Some(t)).unwrap()
    }

    #[test]
    fn pathl7_accession_split_rule() {
        let mk = |orc: &str| {
            accession(&lab(&format!(
                "MSH|^~\\&|PATHL7|X\rPID||1\rORC|RE||{orc}\rOBR|1"
            )))
        };
        assert_eq!(mk("14-999936014-HP-1"), "14-999936014");
        assert_eq!(mk("X99961-28380311-RESPC"), "X99961");
        assert_eq!(mk("14-999-999968-TVOL-0"), "14-999-999968");
        assert_eq!(mk("149993763"), "");
    }

    const CML: &str = "MSH|^~\\&|Reports|CML||28662|200507141114-500||ORU^R01||1|2.3\rPID|1|||9000000011^LG^ON|ZZTEST^ALPHA||19410619|F\rORC|NW|HT05038|||F|||||||287683^DOC^A|||20040713\rOBR|1|HT05038||3670^MICROALB||20040713|20040714|||||||||287683^DOC^A|||||||||P\rOBX|1|ST|3534^CREATININE|CHEMISTRY^^URINE CHEMISTRY:|14.7|MMOL/L|3.0-11.0|A|||F\rOBX|2|ST|3536^RATIO|CHEMISTRY^^URINE CHEMISTRY:|1.5||< 2.8|H|||C";

    #[test]
    fn cml_reads_pid4_orc_and_counts_finals_without_bonus() {
        let l = lab_as(CML, LabType::Cml);
        assert_eq!(l.patient.health_number, "9000000011");
        assert_eq!(accession(&l), "HT05038");
        assert_eq!(order_status(&l), "F", "ORC-5, not OBR-25");
        assert_eq!(service_date(&l).as_deref(), Some("2004-07-13 00:00:00"));
        assert_eq!(message_date(&l).as_deref(), Some("2004-07-14 00:00:00"));
        assert_eq!(final_result_count(&l), 1, "only F counts, no +100");
        assert!(any_abnormal(&l), "A is abnormal");
        let mut only_h = l.clone();
        only_h.orders[0].observations.remove(0);
        assert!(!any_abnormal(&only_h), "CML: only A is abnormal");
        assert_eq!(discipline(&l), "CHEMISTRY");
        assert_eq!(filler_order_num(&l), "");
        let with_filler = lab_as(
            &CML.replace("ORC|NW|HT05038|", "ORC|NW|HT05038|F1"),
            LabType::Cml,
        );
        assert_eq!(accession(&with_filler), "HT05038, F1");
    }

    const MEDITECH: &str = "MSH|^~\\&|LAB|0826^LWH|P&P|0029|201408271511||ORU^R01|1602.1|D|2.3\rPID|1|9000000029^BO^^ON^|X||ZZTEST^BETA||19500101|F\rPV1|1|O|LW CHE^^^LWH||||84908^RETSON^J|||||||||||RCR|||||||||||||||||||||||||||||||LW99||57641^BOW^B~84908^RETSON^J|\rOBR|1||14:CS2708:C00005R^LWH|GLU^RANDOM GLUCOSE||201408271510|201408271510|||||||201408271500|99UNK^Unknown^|73452^LAF^N||||LWH||201408271511||LAB^CHEM^CHEMISTRY|S|||57641^BOW^B~84908^RETSON^J\rOBX|1|NM|GLU^RANDOM GLUCOSE|1.1|8.2|mmol/L|4.1-5.9|H|||F|||201408271511\rOBR|2||14:X||^^||||||||||||||||||||||F\rOBX|1|NM|K^POTASSIUM||4.1|mmol/L|||||F";

    #[test]
    fn meditech_reads_obr3_pv1_and_promotes_a_final_order_status() {
        let l = lab_as(MEDITECH, LabType::Meditech);
        assert_eq!(l.patient.health_number, "9000000029");
        assert_eq!(accession(&l), "14:CS2708:C00005R");
        assert_eq!(filler_order_num(&l), "14:CS2708:C00005R");
        assert_eq!(
            order_status(&l),
            "F",
            "S with a final last result becomes F"
        );
        assert_eq!(final_result_count(&l), 102);
        assert_eq!(patient_location(&l), "LW CHE LWH");
        assert_eq!(discipline(&l), "RANDOM GLUCOSE/No Headings Found [1]");
        assert_eq!(doc_name(&l), "N LAF", "given before family");
        assert_eq!(
            doc_nums(&l),
            vec!["84908".to_string(), "73452".into(), "57641".into()],
            "PV1-7, PV1-52, OBR-16, OBR-28; each once"
        );
    }

    #[test]
    fn iha_poi_reads_pid4_obr2_and_the_zdr_doctor_list() {
        let text = "MSH|^~\\&|LAB^2.0|KGH|IIM||20100510101933||ORU^R01|952769973.6.L31007|D|2.3\rPID|1||0000001140|9000000037|ZZTEST^GAMMA||19971020|M\rPV1|1|I|2E^H2E^D^KGH|U|||BAKA^BAK^ADRIAN\rORC|SC|1005:C00001R201.2800|||CM\rOBR|6|1005:C00001R201.2800|1005:C00001R|L201.2800^ALT^00025570^1742-6^Alanine Aminotransferase^pCLOCD|||201005101014|||||||201005101014||BAKA^BAK^ADRIAN||||||201005101019||LAB|F\rOBX|1|ST|L201.2800^ALT||13|U/L|10-55|N|||F\rZDR|GABLEER^Gable^Eric|BAKA^Bak^Adrian|~~~|DIEHLCH^Diehl^Chris|DIEHLCH^Diehl^Chris";
        let l = lab_as(text, LabType::IhaPoi);
        assert_eq!(l.patient.health_number, "9000000037");
        assert_eq!(accession(&l), "1005:C00001R201.2800");
        assert_eq!(discipline(&l), "LAB:Alanine Aminotransferase");
        assert_eq!(patient_location(&l), "2E KGH");
        assert_eq!(
            doc_nums(&l),
            vec!["GABLEER".to_string(), "BAKA".into(), "DIEHLCH".into()]
        );
        assert_eq!(final_result_count(&l), 101);
    }

    #[test]
    fn cls_splits_the_name_and_reads_obr20() {
        let text = "MSH|^~\\&|OPEN ENGINE|CLS|Egate|POSP|20101203122425||ORU^R01|Q1|P|2.3\rPID|1|9000000045^^^AB|2250008675||ZZTEST, DELTA MARIE||19701027|F\rPV1|1|E\rOBR|1||0176439413^101LA|4356952^URINALYSIS^L01N|||20101203122200|||||||20101203122300|^^|1001745^Test, Physician||||10-337-300046||20101203122421||LA|F||1^^^x^^RT\rOBX|1|ST|4669021^COLOR^L01N||Yellow|||H|||F\rOBX|2|ST|4668985^APPEARANCE^L01N||Clear|||N|||C";
        let l = lab_as(text, LabType::Cls);
        assert_eq!(
            (l.patient.last_name.as_str(), l.patient.first_name.as_str()),
            ("ZZTEST", "DELTA")
        );
        assert_eq!(l.patient.health_number, "9000000045");
        assert_eq!(accession(&l), "10-337-300046");
        assert_eq!(filler_order_num(&l), "0176439413");
        assert_eq!(order_status(&l), "F", "OBR-25 when ORC-5 is absent");
        assert_eq!(final_result_count(&l), 2, "F and C, no bonus");
        assert_eq!(service_date(&l).as_deref(), Some("2010-12-03 12:23:00"));
        assert_eq!(discipline(&l), "URINALYSIS");
        assert_eq!(doc_nums(&l), vec!["1001745".to_string()]);
        assert!(any_abnormal(&l));
    }
}
