//! [`NarrowColumns`]: OSCAR's text columns that cannot hold every character, and the
//! replacement that lets a lab reach the inbox anyway.
//!
//! OSCAR's tables are `utf8` (= `utf8mb3`) in MySQL/MariaDB: three bytes per character at
//! most, so a 4-byte UTF-8 character (an emoji, a rare CJK ideograph) in a patient name or a
//! result fails the insert under a strict `sql_mode` (error 1366) — OSCAR's own upload then
//! drops the whole file — or is mangled silently under a permissive one. oscarflow reads
//! which columns of the tables it writes are `utf8mb3` from the target's
//! `information_schema` once, and replaces each such character in those columns only with
//! U+FFFD (one character for one, so column widths are unaffected), naming the columns in a
//! warning (never the value). The original message stays intact, byte for byte, in
//! `hl7TextMessage` (Base64, which any column holds), where OSCAR's lab display reads it.
//! The embedded SQLite store holds any character and has no narrow columns.

use std::borrow::Cow;
use std::collections::HashSet;

/// The OSCAR tables whose text columns the lab import writes.
pub const LAB_TABLES: &[&str] = &[
    "fileUploadCheck",
    "hl7TextMessage",
    "hl7TextInfo",
    "measurements",
    "measurementsExt",
];

/// `table.column` (lower case) of the columns that hold at most 3-byte UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NarrowColumns {
    columns: HashSet<String>,
}

impl NarrowColumns {
    /// From `(table, column)` pairs read from the schema.
    pub fn from_schema<I, S>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (S, S)>,
        S: AsRef<str>,
    {
        Self {
            columns: pairs
                .into_iter()
                .map(|(t, c)| key(t.as_ref(), c.as_ref()))
                .collect(),
        }
    }

    /// Whether `table.column` cannot hold 4-byte characters.
    pub fn is_narrow(&self, table: &str, column: &str) -> bool {
        self.columns.contains(&key(table, column))
    }

    /// `value` as `table.column` can hold it; a replacement records `table.column` in
    /// `replaced` (once).
    pub fn fit<'a>(
        &self,
        table: &str,
        column: &str,
        value: &'a str,
        replaced: &mut Vec<String>,
    ) -> Cow<'a, str> {
        if !has_supplementary(value) || !self.is_narrow(table, column) {
            return Cow::Borrowed(value);
        }
        let name = format!("{table}.{column}");
        if !replaced.contains(&name) {
            replaced.push(name);
        }
        Cow::Owned(replace_supplementary(value))
    }
}

fn key(table: &str, column: &str) -> String {
    format!(
        "{}.{}",
        table.to_ascii_lowercase(),
        column.to_ascii_lowercase()
    )
}

/// Whether `s` holds a character outside the Basic Multilingual Plane (4 bytes in UTF-8).
pub fn has_supplementary(s: &str) -> bool {
    s.chars().any(|c| c.len_utf8() == 4)
}

/// `s` with every character outside the Basic Multilingual Plane replaced by U+FFFD.
pub fn replace_supplementary(s: &str) -> String {
    s.chars()
        .map(|c| if c.len_utf8() == 4 { '\u{FFFD}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_narrow_columns_are_changed_and_each_is_named_once() {
        let n = NarrowColumns::from_schema([("hl7TextInfo", "last_name")]);
        let mut replaced = Vec::new();
        assert_eq!(
            n.fit("hl7TextInfo", "last_name", "ZZ\u{1F600}TEST", &mut replaced),
            "ZZ\u{FFFD}TEST"
        );
        assert_eq!(
            n.fit("hl7TextInfo", "last_name", "\u{1F9EA}", &mut replaced),
            "\u{FFFD}"
        );
        assert_eq!(
            n.fit("hl7TextInfo", "first_name", "\u{1F600}", &mut replaced),
            "\u{1F600}"
        );
        assert_eq!(
            n.fit("hl7TextInfo", "last_name", "ÉLODIE", &mut replaced),
            "ÉLODIE"
        );
        assert_eq!(replaced, vec!["hl7TextInfo.last_name".to_string()]);
        // The schema's names compare without case.
        assert!(n.is_narrow("HL7TEXTINFO", "LAST_NAME"));
    }

    proptest! {
        #[test]
        fn replacement_keeps_the_character_count_and_fits_three_bytes(s in ".*") {
            let r = replace_supplementary(&s);
            prop_assert_eq!(r.chars().count(), s.chars().count());
            prop_assert!(r.chars().all(|c| c.len_utf8() <= 3));
            prop_assert_eq!(has_supplementary(&s), r != s);
        }
    }
}
