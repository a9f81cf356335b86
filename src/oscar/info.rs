//! [`Hl7TextInfo`]: the searchable summary row OSCAR's inbox lists, computed from a
//! [`LabMessage`] exactly as IMPORT-SPEC §2.5 describes (PATHL7 getters).
//!
//! Values longer than OSCAR's columns are truncated deliberately (at a character boundary)
//! and the truncation is reported by column name, never by value; we never leave it to the
//! server's `sql_mode`. The widths come from the target's own schema ([`ColumnWidths`],
//! read once by the import sink): OSCAR versions and local schema edits differ —
//! `report_status` is `varchar(20)` in Open-O and narrower in older OSCARs — and a width
//! guessed wrong either fails the insert under strict mode or cuts a value that would fit.

use crate::hl7::lab::{LabMessage, LabType};

use super::handlers;

use super::Flavour;

/// One `hl7TextInfo` row (without `id` and `lab_no`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hl7TextInfo {
    pub sex: Option<String>,
    pub health_no: Option<String>,
    pub result_status: Option<String>,
    pub final_result_count: i64,
    pub obr_date: Option<String>,
    pub priority: Option<String>,
    pub requesting_client: Option<String>,
    pub discipline: Option<String>,
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    pub report_status: String,
    pub accession_num: Option<String>,
    pub filler_order_num: String,
    pub sending_facility: Option<String>,
    pub label: Option<String>,
    /// Columns whose value was cut to fit (names only).
    #[serde(skip)]
    pub truncated: Vec<&'static str>,
}

/// Maximum lengths (characters) of `hl7TextInfo`'s character columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnWidths {
    widths: std::collections::HashMap<String, usize>,
}

/// Open-O's `hl7TextInfo` (the schema `load-open-o-bc.sh` builds).
const OPEN_O_WIDTHS: &[(&str, usize)] = &[
    ("sex", 1),
    ("health_no", 12),
    ("result_status", 1),
    ("obr_date", 20),
    ("priority", 1),
    ("requesting_client", 100),
    ("discipline", 100),
    ("last_name", 30),
    ("first_name", 30),
    ("report_status", 20),
    ("accessionnum", 255),
    ("filler_order_num", 50),
    ("sending_facility", 50),
    ("label", 255),
];

impl Default for ColumnWidths {
    /// Open-O's widths.
    fn default() -> Self {
        Self::from_schema(Default::default())
    }
}

impl ColumnWidths {
    /// Widths read from the target schema (lower-case column name → characters); a column
    /// the schema does not report keeps Open-O's width.
    pub fn from_schema(read: std::collections::HashMap<String, usize>) -> Self {
        let mut widths: std::collections::HashMap<String, usize> = OPEN_O_WIDTHS
            .iter()
            .map(|(c, w)| (c.to_string(), *w))
            .collect();
        for (c, w) in read {
            widths.insert(c.to_ascii_lowercase(), w);
        }
        Self { widths }
    }

    /// The width of `column` (case-insensitive); unknown columns are unlimited.
    pub fn of(&self, column: &str) -> usize {
        self.widths
            .get(&column.to_ascii_lowercase())
            .copied()
            .unwrap_or(usize::MAX)
    }
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Cuts `s` to at most `max` characters, recording `column` when it had to.
fn fit(
    s: Option<String>,
    max: usize,
    column: &'static str,
    truncated: &mut Vec<&'static str>,
) -> Option<String> {
    s.map(|v| {
        if v.chars().count() > max {
            truncated.push(column);
            v.chars().take(max).collect()
        } else {
            v
        }
    })
}

/// HL7 TS (`YYYYMMDD[HH[MM[SS[.S…]]]][±ZZZZ]`) → `YYYY-MM-DD HH:MM:SS`. `None` when the
/// value does not start with a valid date.
pub fn format_hl7_ts(ts: &str) -> Option<String> {
    let digits: String = ts
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if digits.len() < 8 {
        return None;
    }
    let g = |a: usize, b: usize| digits.get(a..b).unwrap_or("00");
    let (y, mo, d) = (g(0, 4), g(4, 6), g(6, 8));
    let (mo_n, d_n): (u32, u32) = (mo.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&mo_n) || !(1..=31).contains(&d_n) {
        return None;
    }
    let (h, mi, s) = (g(8, 10), g(10, 12), g(12, 14));
    Some(format!("{y}-{mo}-{d} {h}:{mi}:{s}"))
}

/// OSCAR 19's `report_status`: the lab type's order status letter (see [`handlers`]).
pub fn report_status_letter(lab: &LabMessage) -> String {
    handlers::order_status(lab)
}

/// Open-O's `report_status`: the order status in words.
fn open_o_status_word(lab: &LabMessage) -> String {
    match report_status_letter(lab).as_str() {
        "C" => "corrected",
        "P" => "preliminary",
        "I" => "pending",
        "A" => "partial results",
        "F" => "complete",
        "R" => "retransmitted",
        "X" => "deleted",
        _ => "N/A",
    }
    .to_string()
}

pub use handlers::{discipline, doc_nums, final_result_count};

impl Hl7TextInfo {
    /// Computes the row for `lab` in `flavour`, with Open-O's column widths.
    pub fn from_lab(lab: &LabMessage, flavour: Flavour) -> Hl7TextInfo {
        Self::from_lab_with(lab, flavour, &ColumnWidths::default())
    }

    /// Computes the row for `lab` in `flavour`, cutting values to `widths`.
    pub fn from_lab_with(lab: &LabMessage, flavour: Flavour, widths: &ColumnWidths) -> Hl7TextInfo {
        let mut truncated = Vec::new();
        let fit = |s: Option<String>, column: &'static str, truncated: &mut Vec<&'static str>| {
            fit(s, widths.of(column), column, truncated)
        };
        let obr_date = match flavour {
            // OSCAR 19 fails the whole upload when this is empty (a PATHL7 lab without
            // results, or whose first OBX has no OBX-14); we fall back as Open-O does.
            Flavour::Oscar19 => handlers::first_time_stamp(lab)
                .or_else(|| handlers::service_date(lab))
                .or_else(|| handlers::message_date(lab)),
            Flavour::OpenO => handlers::service_date(lab).or_else(|| handlers::message_date(lab)),
        };
        let requesting_client = handlers::doc_name(lab);
        // Open-O writes words for PATHL7 only: its other parsers' getOrderStatus (MEDITECH,
        // IHAPOI, CML, CLS, …) still return the letter, and the generic one "".
        let report_status = match (flavour, lab.lab_type) {
            (Flavour::OpenO, LabType::Pathl7) => open_o_status_word(lab),
            _ => report_status_letter(lab),
        };
        // Open-O's label is PATHL7Handler.getLabel(): the distinct OBR-4.2 texts.
        let label = match (flavour, lab.lab_type) {
            (Flavour::OpenO, LabType::Pathl7) => {
                let mut seen: Vec<&str> = Vec::new();
                for o in &lab.orders {
                    let t = o.service_text.trim();
                    if !t.is_empty() && !seen.contains(&t) {
                        seen.push(t);
                    }
                }
                non_empty(seen.join(" | "))
            }
            // Open-O merges the generic handler's empty label into '' (not NULL).
            (Flavour::OpenO, LabType::Generic) => Some(String::new()),
            _ => None,
        };
        let sending_facility = match flavour {
            Flavour::Oscar19 => None,
            Flavour::OpenO => Some(handlers::patient_location(lab)),
        };
        let sex = non_empty(lab.patient.sex.clone());
        let mut info = Hl7TextInfo {
            sex: fit(sex, "sex", &mut truncated),
            health_no: fit(
                non_empty(lab.patient.health_number.clone()),
                "health_no",
                &mut truncated,
            ),
            result_status: handlers::any_abnormal(lab).then(|| "A".to_string()),
            final_result_count: final_result_count(lab),
            obr_date,
            priority: None,
            requesting_client: fit(
                non_empty(requesting_client),
                "requesting_client",
                &mut truncated,
            ),
            discipline: fit(non_empty(discipline(lab)), "discipline", &mut truncated),
            last_name: fit(
                non_empty(lab.patient.last_name.clone()),
                "last_name",
                &mut truncated,
            ),
            first_name: fit(
                non_empty(lab.patient.first_name.clone()),
                "first_name",
                &mut truncated,
            ),
            report_status: String::new(),
            accession_num: fit(
                non_empty(handlers::accession(lab)),
                "accessionNum",
                &mut truncated,
            ),
            filler_order_num: fit(
                Some(handlers::filler_order_num(lab)),
                "filler_order_num",
                &mut truncated,
            )
            .unwrap_or_default(),
            sending_facility: fit(sending_facility, "sending_facility", &mut truncated),
            label: fit(label, "label", &mut truncated),
            truncated: Vec::new(),
        };
        info.report_status =
            fit(Some(report_status), "report_status", &mut truncated).unwrap_or_default();
        info.truncated = truncated;
        info
    }
}

impl Hl7TextInfo {
    /// Replaces, in every column the target keeps as `utf8mb3`, the characters it cannot
    /// hold ([`super::charset`]); the columns changed are added to `replaced`.
    pub fn fit_charset(
        &mut self,
        narrow: &super::charset::NarrowColumns,
        replaced: &mut Vec<String>,
    ) {
        let mut one = |column: &str, v: &mut String| {
            if let std::borrow::Cow::Owned(o) = narrow.fit("hl7TextInfo", column, v, replaced) {
                *v = o;
            }
        };
        for (column, v) in [
            ("sex", &mut self.sex),
            ("health_no", &mut self.health_no),
            ("result_status", &mut self.result_status),
            ("obr_date", &mut self.obr_date),
            ("priority", &mut self.priority),
            ("requesting_client", &mut self.requesting_client),
            ("discipline", &mut self.discipline),
            ("last_name", &mut self.last_name),
            ("first_name", &mut self.first_name),
            ("accessionNum", &mut self.accession_num),
            ("sending_facility", &mut self.sending_facility),
            ("label", &mut self.label),
        ] {
            if let Some(v) = v.as_mut() {
                one(column, v);
            }
        }
        one("report_status", &mut self.report_status);
        one("filler_order_num", &mut self.filler_order_num);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::Message;

    fn lab(t: &str) -> LabMessage {
        LabMessage::from_message(&Message::parse(t).unwrap()).unwrap()
    }

    const CORRECTED: &str = "MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|A|20260105080000||ORU^R01|C3|P|2.3\rPID||9000000029|||TESTPATIENT^BOB||19750630|M\rORC|RE||26-200000001-LYTE-2\rOBR|1||26-200000001-LYTE-2|LYTE^Electrolytes||20260104070000|20260104073000|||||||||91004^TESTDOC^DELTA^^^DR||||||||CHEM1|C|||91005^TESTDOC^ECHO\rOBX|1|NM|2951-2^Sodium||140|mmol/L|135-145|N|||C|||20260104090000\rOBX|2|NM|2823-3^Potassium||5.9|mmol/L|3.5-5.0|H|||F|||20260104090000\rOBR|2||26-200000001-X-2|X^Other||||||||||||||||||||CHEM1|F\rOBR|3||26-200000001-Y-2|Y^Third||||||||||||||||||||HAEM1|F";

    #[test]
    fn open_o_row_for_a_corrected_report() {
        let i = Hl7TextInfo::from_lab(&lab(CORRECTED), Flavour::OpenO);
        assert_eq!(i.report_status, "corrected");
        assert_eq!(i.final_result_count, 152);
        assert_eq!(i.result_status.as_deref(), Some("A"));
        assert_eq!(i.obr_date.as_deref(), Some("2026-01-04 07:30:00"));
        assert_eq!(i.accession_num.as_deref(), Some("26-200000001"));
        assert_eq!(i.discipline.as_deref(), Some("CHEM1/HAEM1"));
        assert_eq!(i.requesting_client.as_deref(), Some("DR DELTA TESTDOC"));
        assert_eq!(i.sending_facility.as_deref(), Some("LIFELABS"));
        assert_eq!(i.label.as_deref(), Some("Electrolytes | Other | Third"));
        assert_eq!(i.health_no.as_deref(), Some("9000000029"));
        assert_eq!(i.filler_order_num, "");
    }

    #[test]
    fn oscar19_row_uses_obx_time_and_letters() {
        let i = Hl7TextInfo::from_lab(&lab(CORRECTED), Flavour::Oscar19);
        assert_eq!(i.report_status, "C");
        assert_eq!(i.obr_date.as_deref(), Some("2026-01-04 09:00:00"));
        assert_eq!(i.sending_facility, None);
        assert_eq!(i.label, None);
    }

    /// A sender no rule recognises: DefaultGenericHandler's display, as OSCAR 19 reads it.
    const GENERIC: &str = "MSH|^~\\&|ACMELAB|ACME HOSP|OSCAR|CLINIC|20260105080000||ORU^R01|G1|P|2.5\rPID|1|9000000029|MRN1234567||TESTPATIENT^BOB||19750630|M\rORC|RE||26-300000001-HP-1\rOBR|1||26-300000001-HP-1|HP^Haem Profile||20260104070000|20260104073000|||||||||91004^TESTDOC^DELTA^^^DR~91006^TESTDOC^FOX||||||||HAEM1|C|||91005^TESTDOC^ECHO\rOBX|1|NM|718-7^Hemoglobin||135|g/L|120-160|n|||f|||20260104090000\rOBX|2|NM|789-8^RBC||4.1|x10E12/L|4.2-5.4|L|||C|||20260104090000";

    #[test]
    fn a_generic_lab_is_written_as_oscars_default_generic_handler_displays_it() {
        let l = lab(GENERIC);
        assert_eq!(l.lab_type, LabType::Generic);
        for flavour in [Flavour::Oscar19, Flavour::OpenO] {
            let i = Hl7TextInfo::from_lab(&l, flavour);
            // No accession, order status or headers in DefaultGenericHandler.
            assert_eq!(i.accession_num, None, "{flavour:?}");
            assert_eq!(i.report_status, "", "{flavour:?}");
            assert_eq!(i.discipline, None, "{flavour:?}");
            // Results whose OBX-11 starts with F or f, no bonus; `n` is not `N`.
            assert_eq!(i.final_result_count, 1, "{flavour:?}");
            assert_eq!(i.result_status.as_deref(), Some("A"), "{flavour:?}");
            // The first ordering provider only.
            assert_eq!(
                i.requesting_client.as_deref(),
                Some("DR DELTA TESTDOC"),
                "{flavour:?}"
            );
            // The health number is PID-2 only (OSCAR would also try PID-4, PID-3 and
            // PID-19: not health numbers, never matched on here).
            assert_eq!(i.health_no.as_deref(), Some("9000000029"), "{flavour:?}");
        }
        let o19 = Hl7TextInfo::from_lab(&l, Flavour::Oscar19);
        assert_eq!(
            o19.obr_date.as_deref(),
            Some("2026-01-04 07:30:00"),
            "OBR-7"
        );
        assert_eq!(o19.label, None);
        let oo = Hl7TextInfo::from_lab(&l, Flavour::OpenO);
        assert_eq!(oo.obr_date.as_deref(), Some("2026-01-05 08:00:00"), "MSH-7");
        assert_eq!(oo.label.as_deref(), Some(""));
        assert_eq!(oo.sending_facility.as_deref(), Some("ACME HOSP"));
        // A PID-2 that is not there is no health number, whatever PID-3 holds.
        let none = lab(&GENERIC.replace("PID|1|9000000029|", "PID|1||"));
        assert_eq!(none.patient.health_number, "");
    }

    #[test]
    fn a_lab_without_results_is_dated_by_obr7_in_both_flavours() {
        let l = lab("MSH|^~\\&|PATHL7|LIFELABS|||20260105080000||ORU^R01|N1|P|2.3\rPID||9000000029\rOBR|1||26-1-HP-1|HP^X||20260104070000|20260104073000");
        for flavour in [Flavour::Oscar19, Flavour::OpenO] {
            let i = Hl7TextInfo::from_lab(&l, flavour);
            assert_eq!(
                i.obr_date.as_deref(),
                Some("2026-01-04 07:30:00"),
                "{flavour:?}"
            );
        }
        let bare = lab(
            "MSH|^~\\&|PATHL7|LIFELABS|||20260105080000||ORU^R01|N1|P|2.3\rPID||9000000029\rOBR|1",
        );
        let i = Hl7TextInfo::from_lab(&bare, Flavour::Oscar19);
        assert_eq!(i.obr_date.as_deref(), Some("2026-01-05 08:00:00"), "MSH-7");
    }

    #[test]
    fn open_o_writes_report_status_words_for_pathl7_only() {
        let meditech = "MSH|^~\\&|LAB|0826^LWH\rPID|1|9000000029\rOBR|1||X||||||||||||||||||||||F\rOBX|1|NM|K||4|||||F";
        let mut l = lab(meditech);
        l.lab_type = LabType::Meditech;
        assert_eq!(Hl7TextInfo::from_lab(&l, Flavour::OpenO).report_status, "F");
        l.lab_type = LabType::Pathl7;
        assert_eq!(
            Hl7TextInfo::from_lab(&l, Flavour::OpenO).report_status,
            "complete"
        );
    }

    #[test]
    fn over_long_values_are_truncated_and_named() {
        let long = "X".repeat(40);
        let i = Hl7TextInfo::from_lab(
            &lab(&format!("MSH|^~\\&|PATHL7|L\rPID||1|||{long}^A\rOBR|1")),
            Flavour::OpenO,
        );
        assert_eq!(i.last_name.as_deref().map(|s| s.len()), Some(30));
        assert_eq!(i.truncated, vec!["last_name"]);
    }

    #[test]
    fn doc_nums_dedupes_ordering_and_copy_to() {
        let mut obr = vec![""; 29];
        obr[0] = "OBR";
        obr[1] = "1";
        obr[16] = "91001^A";
        obr[25] = "F";
        obr[28] = "91001^A~91002^B~ ^C";
        let l = lab(&format!("MSH|^~\\&|PATHL7|L\rPID||1\r{}", obr.join("|")));
        assert_eq!(doc_nums(&l), vec!["91001", "91002"]);
    }

    #[test]
    fn hl7_timestamps_format_like_oscar() {
        assert_eq!(
            format_hl7_ts("20130927130551").as_deref(),
            Some("2013-09-27 13:05:51")
        );
        assert_eq!(
            format_hl7_ts("201309271305").as_deref(),
            Some("2013-09-27 13:05:00")
        );
        assert_eq!(
            format_hl7_ts("20130927").as_deref(),
            Some("2013-09-27 00:00:00")
        );
        assert_eq!(format_hl7_ts("2013"), None);
        assert_eq!(format_hl7_ts("20131399"), None);
    }
}
