//! Patient data to look for: the names, identifiers and birth dates of a message's PID
//! segments, read with plain string splitting (not the parser under test).

use std::collections::BTreeSet;

/// Names, identifiers and birth dates of the PID segments of `raw`.
pub fn patient_tokens(raw: &[u8], out: &mut BTreeSet<String>) {
    let text = String::from_utf8_lossy(raw);
    for seg in text.split(['\r', '\n']) {
        let Some(rest) = seg.strip_prefix("PID") else {
            continue;
        };
        let Some(sep) = rest.chars().next() else {
            continue;
        };
        if sep.is_alphanumeric() {
            continue;
        }
        let fields: Vec<&str> = rest[sep.len_utf8()..].split(sep).collect();
        let field = |n: usize| fields.get(n - 1).copied().unwrap_or("");
        // PID-2, PID-3, PID-4 (identifiers, health numbers), PID-19 (SSN / PHN).
        for n in [2, 3, 4, 19] {
            for rep in field(n).split('~') {
                let id = rep.split('^').next().unwrap_or("").trim();
                if id.chars().filter(char::is_ascii_alphanumeric).count() >= 6 {
                    out.insert(id.to_string());
                }
            }
        }
        // PID-5 names: family, given, middle.
        for rep in field(5).split('~') {
            for part in rep.split('^').take(3) {
                let name = part.split('&').next().unwrap_or("").trim();
                if name.chars().filter(|c| c.is_alphabetic()).count() >= 4 {
                    out.insert(name.to_string());
                }
            }
        }
        // PID-7 date of birth, as sent and as a log or page would format it.
        let dob = field(7).trim();
        if dob.len() >= 8 && dob[..8].chars().all(|c| c.is_ascii_digit()) {
            out.insert(dob[..8].to_string());
            out.insert(format!("{}-{}-{}", &dob[..4], &dob[4..6], &dob[6..8]));
        }
    }
}
