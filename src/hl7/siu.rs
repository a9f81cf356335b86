//! The typed scheduling model: [`SiuMessage`] built from a parsed `SIU^S12`…`S26`.
//!
//! Holds what an appointment book needs, as owned, decoded strings: the trigger event, the
//! appointment's ids (SCH-1 placer, SCH-2 filler), its timing, reason, type and filler
//! status, the patient (PID) and the resources (AIP providers, AIL locations, AIS services).
//! Pure: no I/O, no clock, no time zone — times stay as the message's wall-clock values with
//! the offset it carried, and the sink decides what they are in the clinic.
//!
//! **Timing**, in the order HL7's versions put it:
//! - start: `TQ1-7` (v2.5 and later), else `SCH-11.4` (TQ's start, v2.3–2.4), else the
//!   first `AIS-4`/`AIP-6`/`AIL-6` (a resource's own start);
//! - end: `TQ1-8`, else `SCH-11.5`, else start + duration, the duration from `SCH-9`/`SCH-10`
//!   (units `MIN` by default; `S`, `H`, `D` understood), else from the first resource's
//!   duration (`AIS-7`/`AIS-8`, `AIP-9`/`AIP-10`, `AIL-9`/`AIL-10`).
//!
//! A message without a start, or without any end or duration, is refused with the field
//! that is missing: an appointment is never guessed a length.
//!
//! **The patient's health number** is taken from `PID-3` by identifier type (`CX.5`, default
//! `JHN`, HL7's "jurisdictional health number", and `PHN`), or from a fixed field
//! (`PID-2`/`PID-4`/`PID-19`, component 1) when a feed is configured so. Never from a name:
//! matching rules are the lab path's ([`crate::oscar::matching`]).
//!
//! **ORM^O01** (an order with a scheduled time) is *not* mapped: the feeds this was built
//! for (hospital and imaging schedulers) send SIU for the booking and ORM for the order
//! itself, and an order's `TQ1`/`OBR-27` time is a requested time, not a booked slot. A feed
//! that books by ORM would need its own mapping; the parse stage refuses ORM with
//! `unsupported_message`, so nothing is lost.
//!
//! Errors name fields (`SCH-2`, `TQ1-7`), never values: message content is PHI.

use serde::Serialize;

use super::message::{Message, Segment};

/// The trigger events oscarflow applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SiuEvent {
    /// New appointment (booked).
    S12,
    /// Rescheduled appointment.
    S13,
    /// Modified appointment.
    S14,
    /// Cancelled appointment.
    S15,
    /// Deleted appointment.
    S17,
    /// The patient did not show up.
    S26,
}

impl SiuEvent {
    pub fn parse(s: &str) -> Option<SiuEvent> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "S12" => SiuEvent::S12,
            "S13" => SiuEvent::S13,
            "S14" => SiuEvent::S14,
            "S15" => SiuEvent::S15,
            "S17" => SiuEvent::S17,
            "S26" => SiuEvent::S26,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SiuEvent::S12 => "S12",
            SiuEvent::S13 => "S13",
            SiuEvent::S14 => "S14",
            SiuEvent::S15 => "S15",
            SiuEvent::S17 => "S17",
            SiuEvent::S26 => "S26",
        }
    }

    /// Whether the event sets the appointment's time, provider and details (S12, S13, S14),
    /// rather than only its status or existence.
    pub fn carries_slot(self) -> bool {
        matches!(self, SiuEvent::S12 | SiuEvent::S13 | SiuEvent::S14)
    }
}

/// A date and time as the message wrote it: the wall-clock value and, when the message
/// carried one, its UTC offset in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub at: chrono::NaiveDateTime,
    pub offset_minutes: Option<i32>,
}

impl Stamp {
    /// Parses an HL7 `DTM`/`TS` value: `YYYYMMDD[HH[MM[SS[.S+]]]][+/-ZZZZ]` (component 1).
    /// `None` when it is not one (a date alone has no time of day: `None` too, as an
    /// appointment needs one).
    pub fn parse(s: &str) -> Option<Stamp> {
        let s = s.trim();
        let (body, offset) = match s.find(['+', '-']) {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let digits = body.split('.').next().unwrap_or("");
        if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = |a: usize, b: usize| digits.get(a..b).and_then(|x| x.parse::<u32>().ok());
        let date = chrono::NaiveDate::from_ymd_opt(n(0, 4)? as i32, n(4, 6)?, n(6, 8)?)?;
        let sec = if digits.len() >= 14 { n(12, 14)? } else { 0 };
        let time = chrono::NaiveTime::from_hms_opt(n(8, 10)?, n(10, 12)?, sec)?;
        let offset_minutes = match offset {
            None => None,
            Some(o) => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let d = &o[1..];
                if d.len() != 4 || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let h: i32 = d[..2].parse().ok()?;
                let m: i32 = d[2..].parse().ok()?;
                if h > 14 || m > 59 {
                    return None;
                }
                Some(sign * (h * 60 + m))
            }
        };
        Some(Stamp {
            at: date.and_time(time),
            offset_minutes,
        })
    }
}

/// A scheduled resource: an AIP provider, an AIL location or an AIS service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// Component 1 of the resource's id field (AIP-3, AIL-3, AIS-3).
    pub id: String,
    /// A readable name: AIP-3 family and given name, AIL-3.9 (the location's description,
    /// else its point of care AIL-3.1), AIS-3.2.
    pub name: String,
}

/// Where the health number is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthNumberAt {
    /// The `PID-3` repetition whose identifier type (`CX.5`) is one of these (upper case).
    Pid3Types(Vec<String>),
    /// Component 1 of `PID-<n>` (2, 4 or 19).
    Field(usize),
}

impl Default for HealthNumberAt {
    fn default() -> Self {
        HealthNumberAt::Pid3Types(vec!["JHN".into(), "PHN".into()])
    }
}

/// One scheduling message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiuMessage {
    pub event: SiuEvent,
    pub control_id: String,
    /// MSH-7, as written (the order of versions of one appointment).
    pub message_time: String,
    pub sending_application: String,
    pub sending_facility: String,
    /// SCH-1.1.
    pub placer_id: String,
    /// SCH-2.1: the filler's (the scheduling system's) appointment id, the key of every
    /// later message about it.
    pub filler_id: String,
    /// Start and end: see the module docs. `None` for an event that carries no slot and a
    /// message that gave none.
    pub start: Option<Stamp>,
    pub end: Option<Stamp>,
    /// SCH-6 (event reason) text, else its identifier; else SCH-7 (appointment reason).
    pub reason: String,
    /// SCH-8 (appointment type): text, else identifier.
    pub appointment_type: String,
    /// SCH-25: the filler's status (`Booked`, `Cancelled`, …), informational.
    pub filler_status: String,
    pub patient: super::lab::Patient,
    pub providers: Vec<Resource>,
    pub locations: Vec<Resource>,
    pub services: Vec<Resource>,
}

/// Why a message cannot be applied to an appointment book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiuError {
    #[error("not a scheduling message (MSH-9.1 is not SIU)")]
    NotSiu,
    #[error("trigger event MSH-9.2 is not one oscarflow applies (S12, S13, S14, S15, S17, S26)")]
    UnsupportedEvent,
    #[error("segment {0} is missing")]
    MissingSegment(&'static str),
    #[error("{0} is empty: the appointment has no filler id")]
    MissingFillerId(&'static str),
    #[error("no start time (TQ1-7, SCH-11.4 or a resource's start)")]
    MissingStart,
    #[error("{0} is not a date and time")]
    BadTime(&'static str),
    #[error("no end time or duration (TQ1-8, SCH-11.5, SCH-9 or a resource's duration)")]
    MissingDuration,
    #[error("{0} is not a duration in units oscarflow reads (MIN, S, H, D)")]
    BadDuration(&'static str),
    #[error("the appointment ends before it starts, or lasts less than a minute")]
    EmptySlot,
}

impl SiuError {
    /// Whether the message is of a kind this model does not take (as opposed to a broken
    /// scheduling message).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, SiuError::NotSiu | SiuError::UnsupportedEvent)
    }
}

fn t(s: std::borrow::Cow<'_, str>) -> String {
    s.trim().to_string()
}

/// Minutes of `amount` in `units` (CE.1: `MIN`, `M`, `S`, `H`, `D`…; empty = minutes).
fn minutes(amount: &str, units: &str) -> Option<i64> {
    let a: f64 = amount.trim().parse().ok()?;
    if !a.is_finite() || a < 0.0 {
        return None;
    }
    let per = match units.trim().to_ascii_uppercase().as_str() {
        "" | "MIN" | "M" | "MINS" | "MINUTE" | "MINUTES" => 1.0,
        "S" | "SEC" | "SECS" | "SECOND" | "SECONDS" => 1.0 / 60.0,
        "H" | "HR" | "HRS" | "HOUR" | "HOURS" => 60.0,
        "D" | "DAY" | "DAYS" => 1440.0,
        _ => return None,
    };
    let m = (a * per).round();
    (m <= 10.0 * 1440.0).then_some(m as i64)
}

impl SiuMessage {
    /// Builds the model from a parsed message, the health number read at `hn`.
    pub fn from_message(m: &Message<'_>, hn: &HealthNumberAt) -> Result<SiuMessage, SiuError> {
        if !m.get("MSH-9.1").trim().eq_ignore_ascii_case("SIU") {
            return Err(SiuError::NotSiu);
        }
        let event = SiuEvent::parse(&m.get("MSH-9.2")).ok_or(SiuError::UnsupportedEvent)?;
        let Some(sch) = m.segments_named("SCH").next() else {
            return Err(SiuError::MissingSegment("SCH"));
        };
        let Some(pid) = m.segments_named("PID").next() else {
            return Err(SiuError::MissingSegment("PID"));
        };
        let filler_id = t(m.value(sch, 2, 1, Some(1)));
        if filler_id.is_empty() {
            return Err(SiuError::MissingFillerId("SCH-2.1"));
        }
        let ce_text = |seg: &Segment<'_>, f: usize| {
            let text = t(m.value(seg, f, 1, Some(2)));
            if text.is_empty() {
                t(m.value(seg, f, 1, Some(1)))
            } else {
                text
            }
        };
        let resources = |name: &str, id_field: usize, name_of: &dyn Fn(&Segment<'_>) -> String| {
            m.segments_named(name)
                .map(|s| Resource {
                    id: t(m.value(s, id_field, 1, Some(1))),
                    name: name_of(s),
                })
                .filter(|r| !r.id.is_empty() || !r.name.is_empty())
                .collect::<Vec<_>>()
        };
        let providers = resources("AIP", 3, &|s| {
            let family = t(m.value(s, 3, 1, Some(2)));
            let given = t(m.value(s, 3, 1, Some(3)));
            [given, family]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        });
        let locations = resources("AIL", 3, &|s| {
            let desc = t(m.value(s, 3, 1, Some(9)));
            if desc.is_empty() {
                t(m.value(s, 3, 1, Some(1)))
            } else {
                desc
            }
        });
        let services = resources("AIS", 3, &|s| t(m.value(s, 3, 1, Some(2))));

        let (start, end) = if event.carries_slot() {
            let (s, e) = timing(m, sch)?;
            (Some(s), Some(e))
        } else {
            // A cancel, delete or no-show names the appointment; its timing, when given, is
            // kept for the record but not required.
            match timing(m, sch) {
                Ok((s, e)) => (Some(s), Some(e)),
                Err(_) => (None, None),
            }
        };
        let reason = {
            let r = ce_text(sch, 6);
            if r.is_empty() {
                ce_text(sch, 7)
            } else {
                r
            }
        };
        // The field (and repetition) holding the health number.
        let at = match hn {
            HealthNumberAt::Field(n) => Some((*n, 1)),
            HealthNumberAt::Pid3Types(types) => (1..=m.repetitions(pid, 3))
                .find(|r| types.contains(&t(m.value(pid, 3, *r, Some(5))).to_ascii_uppercase()))
                .map(|r| (3, r)),
        };
        let (health_number, authority) = match at {
            Some((f, r)) => (
                t(m.value(pid, f, r, Some(1))),
                t(m.value(pid, f, r, Some(4))),
            ),
            None => (String::new(), String::new()),
        };
        let patient = super::lab::Patient {
            last_name: t(m.value(pid, 5, 1, Some(1))),
            first_name: t(m.value(pid, 5, 1, Some(2))),
            middle_name: t(m.value(pid, 5, 1, Some(3))),
            health_number,
            health_number_authority: authority,
            dob: t(m.value(pid, 7, 1, Some(1))),
            sex: t(m.value(pid, 8, 1, Some(1))),
            phone: t(m.value(pid, 13, 1, Some(1))),
        };
        Ok(SiuMessage {
            event,
            control_id: t(m.get("MSH-10")),
            message_time: t(m.get("MSH-7.1")),
            sending_application: t(m.get("MSH-3.1")),
            sending_facility: t(m.get("MSH-4.1")),
            placer_id: t(m.value(sch, 1, 1, Some(1))),
            filler_id,
            start,
            end,
            reason,
            appointment_type: ce_text(sch, 8),
            filler_status: ce_text(sch, 25),
            patient,
            providers,
            locations,
            services,
        })
    }

    /// The slot's length in whole minutes, when it has one.
    pub fn minutes(&self) -> Option<i64> {
        let (s, e) = (self.start?, self.end?);
        Some((e.at - s.at).num_minutes())
    }
}

/// Start and end of the slot: see the module docs.
fn timing(m: &Message<'_>, sch: &Segment<'_>) -> Result<(Stamp, Stamp), SiuError> {
    let stamp = |v: String, what: &'static str| -> Result<Option<Stamp>, SiuError> {
        if v.is_empty() {
            return Ok(None);
        }
        Stamp::parse(&v).map(Some).ok_or(SiuError::BadTime(what))
    };
    let tq1 = m.segments_named("TQ1").next();
    let resource_segs: Vec<(&Segment<'_>, usize, usize, usize)> = m
        .segments()
        .iter()
        .filter_map(|s| match s.name {
            // (segment, start field, duration field, units field)
            "AIS" => Some((s, 4, 7, 8)),
            "AIP" | "AIL" => Some((s, 6, 9, 10)),
            _ => None,
        })
        .collect();
    let mut start = match tq1 {
        Some(q) => stamp(t(m.value(q, 7, 1, Some(1))), "TQ1-7")?,
        None => None,
    };
    if start.is_none() {
        start = stamp(t(m.value(sch, 11, 1, Some(4))), "SCH-11.4")?;
    }
    if start.is_none() {
        for (s, f, _, _) in &resource_segs {
            if let Some(x) = stamp(t(m.value(s, *f, 1, Some(1))), "a resource's start")? {
                start = Some(x);
                break;
            }
        }
    }
    let start = start.ok_or(SiuError::MissingStart)?;
    let mut end = match tq1 {
        Some(q) => stamp(t(m.value(q, 8, 1, Some(1))), "TQ1-8")?,
        None => None,
    };
    if end.is_none() {
        end = stamp(t(m.value(sch, 11, 1, Some(5))), "SCH-11.5")?;
    }
    if end.is_none() {
        let amount = t(m.value(sch, 9, 1, None));
        let mut dur = None;
        if !amount.is_empty() {
            let units = t(m.value(sch, 10, 1, Some(1)));
            dur = Some(minutes(&amount, &units).ok_or(SiuError::BadDuration("SCH-9/SCH-10"))?);
        } else {
            for (s, _, d, u) in &resource_segs {
                let amount = t(m.value(s, *d, 1, None));
                if amount.is_empty() {
                    continue;
                }
                let units = t(m.value(s, *u, 1, Some(1)));
                dur = Some(
                    minutes(&amount, &units)
                        .ok_or(SiuError::BadDuration("a resource's duration"))?,
                );
                break;
            }
        }
        let dur = dur.ok_or(SiuError::MissingDuration)?;
        end = Some(Stamp {
            at: start.at + chrono::Duration::minutes(dur),
            offset_minutes: start.offset_minutes,
        });
    }
    let end = end.ok_or(SiuError::MissingDuration)?;
    // Compare in one frame: the end's offset may differ from the start's.
    let utc =
        |s: &Stamp| s.at - chrono::Duration::minutes(i64::from(s.offset_minutes.unwrap_or(0)));
    let end = if end.offset_minutes != start.offset_minutes {
        Stamp {
            at: utc(&end) + chrono::Duration::minutes(i64::from(start.offset_minutes.unwrap_or(0))),
            offset_minutes: start.offset_minutes,
        }
    } else {
        end
    };
    if (end.at - start.at).num_minutes() < 1 {
        return Err(SiuError::EmptySlot);
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SiuMessage, SiuError> {
        let m = Message::parse(text).unwrap();
        SiuMessage::from_message(&m, &HealthNumberAt::default())
    }

    const S12: &str = "MSH|^~\\&|RADSCHED|KGH|OSCAR|CLINIC|20261201083000||SIU^S12|C100|P|2.5\rSCH|P55|F-9001||||ROUTINE^Routine follow-up|FU^Follow-up^L|OFFICE^Office visit|15|MIN|^^^20261215093000\rPID|1||MRN77^^^KGH^MR~9876543210^^^BC^JHN||ZZTEST^ALPHA||19800101|F\rRGS|1\rAIS|1||US-ABD^Ultrasound abdomen\rAIL|1||RAD1^^^KGH^^^^^Radiology 1\rAIP|1||12345^ZZDOC^BETA|D^Doctor";

    #[test]
    fn an_s12_gives_its_ids_slot_patient_and_resources() {
        let s = parse(S12).unwrap();
        assert_eq!(s.event, SiuEvent::S12);
        assert_eq!(
            (s.placer_id.as_str(), s.filler_id.as_str()),
            ("P55", "F-9001")
        );
        assert_eq!(s.control_id, "C100");
        assert_eq!(s.message_time, "20261201083000");
        let start = s.start.unwrap();
        assert_eq!(start.at.to_string(), "2026-12-15 09:30:00");
        assert_eq!(s.minutes(), Some(15));
        assert_eq!(s.reason, "Routine follow-up");
        assert_eq!(s.appointment_type, "Office visit");
        assert_eq!(s.patient.health_number, "9876543210");
        assert_eq!(s.patient.health_number_authority, "BC");
        assert_eq!(s.patient.dob, "19800101");
        assert_eq!(s.patient.sex, "F");
        assert_eq!(
            s.providers,
            vec![Resource {
                id: "12345".into(),
                name: "BETA ZZDOC".into()
            }]
        );
        assert_eq!(s.locations[0].name, "Radiology 1");
        assert_eq!(s.services[0].id, "US-ABD");
    }

    #[test]
    fn tq1_times_win_over_sch_11_and_offsets_are_kept() {
        let text = S12.replace(
            "RGS|1",
            "TQ1|||||||202612151000-0800|202612151045-0800\rRGS|1",
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.start.unwrap().at.to_string(), "2026-12-15 10:00:00");
        assert_eq!(s.start.unwrap().offset_minutes, Some(-480));
        assert_eq!(s.minutes(), Some(45));
    }

    #[test]
    fn durations_in_seconds_hours_and_resource_segments_are_read() {
        let secs = S12.replace("|15|MIN|", "|1800|S|");
        assert_eq!(parse(&secs).unwrap().minutes(), Some(30));
        let hours = S12.replace("|15|MIN|", "|1|H|");
        assert_eq!(parse(&hours).unwrap().minutes(), Some(60));
        let from_ais = S12.replace("|15|MIN|", "|||").replace(
            "AIS|1||US-ABD^Ultrasound abdomen",
            "AIS|1||US-ABD^Ultrasound abdomen||||20|MIN",
        );
        assert_eq!(parse(&from_ais).unwrap().minutes(), Some(20));
    }

    #[test]
    fn a_slot_without_start_or_length_is_refused_by_field_never_guessed() {
        let no_start = S12.replace("^^^20261215093000", "");
        assert_eq!(parse(&no_start), Err(SiuError::MissingStart));
        let no_len = S12.replace("|15|MIN|", "|||");
        assert_eq!(parse(&no_len), Err(SiuError::MissingDuration));
        let bad = S12.replace("|15|MIN|", "|15|FORTNIGHT|");
        assert!(matches!(parse(&bad), Err(SiuError::BadDuration(_))));
        let bad_time = S12.replace("^^^20261215093000", "^^^2026121509");
        assert_eq!(parse(&bad_time), Err(SiuError::BadTime("SCH-11.4")));
        let zero = S12.replace("|15|MIN|", "|0|MIN|");
        assert_eq!(parse(&zero), Err(SiuError::EmptySlot));
    }

    #[test]
    fn a_cancel_needs_no_slot_but_every_event_needs_a_filler_id() {
        let cancel = "MSH|^~\\&|RADSCHED|KGH|OSCAR|CLINIC|20261202||SIU^S15|C101|P|2.5\rSCH|P55|F-9001\rPID|1||9876543210^^^BC^JHN";
        let s = parse(cancel).unwrap();
        assert_eq!(s.event, SiuEvent::S15);
        assert_eq!(s.start, None);
        let no_filler = cancel.replace("|F-9001", "|");
        assert_eq!(parse(&no_filler), Err(SiuError::MissingFillerId("SCH-2.1")));
    }

    #[test]
    fn other_messages_and_events_are_unsupported_not_broken() {
        let orm = S12.replace("SIU^S12", "ORM^O01");
        assert!(parse(&orm).unwrap_err().is_unsupported());
        let s18 = S12.replace("SIU^S12", "SIU^S18");
        assert_eq!(parse(&s18), Err(SiuError::UnsupportedEvent));
        let no_sch = "MSH|^~\\&|A|B|C|D|20261201||SIU^S12|X|P|2.5\rPID|1";
        assert_eq!(parse(no_sch), Err(SiuError::MissingSegment("SCH")));
    }

    #[test]
    fn the_health_number_comes_from_its_identifier_type_or_a_configured_field_only() {
        let no_jhn = S12.replace("^^^BC^JHN", "^^^BC^MR");
        assert_eq!(parse(&no_jhn).unwrap().patient.health_number, "");
        let m = Message::parse(S12).unwrap();
        let pid2 = SiuMessage::from_message(&m, &HealthNumberAt::Field(2)).unwrap();
        assert_eq!(pid2.patient.health_number, "");
    }

    #[test]
    fn stamps_parse_dates_times_and_offsets_and_refuse_the_rest() {
        let s = Stamp::parse("20261215093000.123+0130").unwrap();
        assert_eq!(s.at.to_string(), "2026-12-15 09:30:00");
        assert_eq!(s.offset_minutes, Some(90));
        assert_eq!(
            Stamp::parse("202612150930").unwrap().at.to_string(),
            "2026-12-15 09:30:00"
        );
        for bad in [
            "",
            "20261215",
            "20261345093000",
            "2026121509300x",
            "202612150930+99",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_after_an_siu_header_gives_a_model_or_an_error_never_a_panic(body in "[ -~\r]{0,300}") {
            let text = format!("MSH|^~\\&|A|B|C|D|20261201||SIU^S12|X|P|2.5\r{body}");
            if let Ok(m) = Message::parse(&text) {
                let _ = SiuMessage::from_message(&m, &HealthNumberAt::default());
                let _ = SiuMessage::from_message(&m, &HealthNumberAt::Field(2));
            }
        }
    }
}
