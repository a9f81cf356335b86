//! What journal codes mean, in words a medical office assistant understands. Identifiers
//! only: the words never carry a name, health number or birth date.

/// A patient match outcome (`oscarflow_journal.match_outcome`) in words.
pub fn match_outcome(code: &str, candidates: Option<i64>) -> String {
    let n = candidates.unwrap_or(0);
    match code {
        "matched" => "Filed to the patient's chart: the health number, birth date, sex and name on the lab agree with exactly one chart.".into(),
        "no_health_number" => "Not filed to a chart: the lab carries no health number. It is in OSCAR's unmatched labs, where someone picks the patient.".into(),
        "invalid_birth_date" => "Not filed to a chart: the birth date on the lab is not a real date. It is in OSCAR's unmatched labs.".into(),
        "not_found" => "Not filed to a chart: no chart in OSCAR has this health number (a new patient, or a typing error at the lab). It is in OSCAR's unmatched labs.".into(),
        "birth_date_mismatch" => format!("Not filed to a chart: {n} chart(s) have this health number, but the birth date differs. Check the chart before filing it by hand."),
        "sex_mismatch" => format!("Not filed to a chart: {n} chart(s) have this health number, but the sex differs. Check the chart before filing it by hand."),
        "name_mismatch" => format!("Not filed to a chart: {n} chart(s) have this health number, but the name differs. Check the chart before filing it by hand."),
        "ambiguous" => format!("Not filed to a chart: {n} charts fit this lab equally well, so none was chosen. Pick the right one in OSCAR's unmatched labs."),
        other => format!("Match outcome `{other}`."),
    }
}

/// A short label for a match outcome (tables).
pub fn match_short(code: &str) -> &'static str {
    match code {
        "matched" => "matched",
        "no_health_number" => "unmatched: no health number",
        "invalid_birth_date" => "unmatched: bad birth date",
        "not_found" => "unmatched: no such chart",
        "birth_date_mismatch" => "unmatched: birth date differs",
        "sex_mismatch" => "unmatched: sex differs",
        "name_mismatch" => "unmatched: name differs",
        "ambiguous" => "unmatched: several charts fit",
        _ => "unmatched",
    }
}

/// A dead-letter reason code in words.
pub fn reason(code: &str) -> &'static str {
    match code {
        "empty_input" => "The file was empty.",
        "not_hl7" => "The file is not an HL7 message (another kind of file was dropped, or it was cut off at the start).",
        "malformed" => "The message is damaged: its HL7 structure cannot be read.",
        "missing_segment" => "The message lacks a part every lab must have (the patient, or the order).",
        "too_large" => "The message is larger than the limit set for this source or than the database takes in one piece.",
        "unsupported_message" => "This kind of message is not a lab result oscarflow files.",
        "import_rejected" => "OSCAR's tables refused a value of this message (too long for its column).",
        "retries_exhausted" => "The database kept failing while this was written; it was kept after the last try.",
        "invalid_phone" => "The phone or fax number is not a valid number.",
        "document_unavailable" => "The document to fax is missing, empty or unreadable.",
        "refused" => "RingCentral refused to take it.",
        "delivery_failed" => "RingCentral took it but could not deliver it.",
        "patient_unmatched" => "The appointment's patient matched no chart, or several: it was not booked to anyone.",
        "provider_unknown" => "The appointment names a provider OSCAR does not know (or several match).",
        "conflict" => "The slot overlaps another appointment of the provider that is not cancelled or a no-show.",
        "appointment_unknown" => "The message changes an appointment that was not booked yet (its booking has not arrived) or was deleted.",
        _ => "Kept aside for a person to look at.",
    }
}

/// One journal row's outcome in words (what happened, without the match).
pub fn outcome(kind: &str, outcome: &str) -> &'static str {
    match (kind, outcome) {
        ("lab", "imported") => "Filed into OSCAR",
        ("fax_in", "imported") => "Filed into OSCAR's incoming documents",
        ("appointment", "imported") => "Applied to OSCAR's appointment book",
        (_, "duplicate") => "Already in OSCAR: the same file arrived before, nothing written",
        (_, "dead_lettered") => "Kept as a dead letter (not in OSCAR)",
        (_, "revealed") => "Its bytes were shown in the console",
        (_, "sent") => "Handed to RingCentral",
        (_, "adopted") => "Found at RingCentral, sent earlier",
        (_, "completed") | (_, "delivered") => "Delivered",
        (_, "failed") => "RingCentral could not deliver it",
        (_, "unknown") | (_, "not_found") => "Not found at RingCentral",
        (_, "claim_lost") => "Taken by another oscarflow process",
        (_, "gone") => "No longer in the queue",
        _ => "Recorded",
    }
}

/// A dead-letter reason code in a few words (tables).
pub fn reason_short(code: &str) -> &'static str {
    match code {
        "empty_input" => "empty file",
        "not_hl7" => "not HL7",
        "malformed" => "damaged message",
        "missing_segment" => "a required part is missing",
        "too_large" => "too large",
        "unsupported_message" => "not a lab result",
        "import_rejected" => "a value too long for OSCAR",
        "retries_exhausted" => "the database kept failing",
        "invalid_phone" => "bad phone or fax number",
        "document_unavailable" => "document missing",
        "refused" => "refused by RingCentral",
        "delivery_failed" => "not delivered",
        "patient_unmatched" => "patient not matched",
        "provider_unknown" => "unknown provider",
        "conflict" => "slot taken",
        "appointment_unknown" => "appointment not booked yet",
        _ => "kept aside",
    }
}

/// What a re-drive did (the `dlq retry` line), in words.
pub fn redriven(outcome: &str) -> (&'static str, &'static str) {
    if outcome.starts_with("rejected again") {
        (
            "bad",
            "Rejected again: the cause is not fixed yet (see its details).",
        )
    } else if outcome.starts_with("not delivered") || outcome.starts_with("not queued") {
        (
            "warn",
            "Not delivered now (the database or pipeline was busy); it is still open, try again.",
        )
    } else if outcome.contains("already filed")
        || outcome.contains("imported 0, duplicates") && !outcome.contains("duplicates 0")
    {
        ("ok", "Resolved: it was already in OSCAR.")
    } else if outcome.starts_with("resolved (queued again)") {
        ("ok", "Resolved: queued again; the running daemon sends it.")
    } else if outcome.starts_with("resolved") {
        ("ok", "Resolved: filed into OSCAR.")
    } else {
        ("", "Done.")
    }
}
