//! HL7 escape sequences, decoded on access.
//!
//! Rule (documented for QA and integrators):
//! - `\F\ \S\ \T\ \R\ \E\` → the message's field, component, subcomponent, repetition and
//!   escape characters;
//! - `\Xhh…\` → the bytes `hh…`, read as UTF-8 when valid, else as Windows-1252;
//! - `\.br\` → a line break (`\n`); `\.sp\` and `\.sp n\` → `n` line breaks (default 1);
//!   other formatting commands (`\.in\ \.ti\ \.sk\ \.ce\ \.fi\ \.nf\`) → removed;
//! - `\H\ \N\` (highlight on/off) → removed; `\Zxx\` (locally defined) → removed;
//!   `\Cxxyy\ \Mxxyyzz\` (character-set switches) → removed;
//! - anything else, and an escape character with no closing one, is kept literally.
//!
//! Works on characters, never on byte offsets, so it is correct next to any UTF-8 text.

use std::borrow::Cow;

use super::message::Separators;

/// Decodes the escape sequences of `s`.
pub fn unescape<'a>(s: &'a str, seps: &Separators) -> Cow<'a, str> {
    let Some(esc) = seps.escape else {
        return Cow::Borrowed(s);
    };
    if !s.contains(esc) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            // Unterminated: keep literally.
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let seq = &after[..end];
        if !decode_sequence(seq, seps, &mut out) {
            // Unknown: keep the whole sequence literally, including both escape characters.
            out.push(esc);
            out.push_str(seq);
            out.push(esc);
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn decode_sequence(seq: &str, seps: &Separators, out: &mut String) -> bool {
    match seq {
        "F" => out.push(seps.field),
        "S" => out.push(seps.component),
        "T" => match seps.subcomponent {
            Some(c) => out.push(c),
            None => out.push('&'),
        },
        "R" => out.push(seps.repetition),
        "E" => match seps.escape {
            Some(c) => out.push(c),
            None => return false,
        },
        "H" | "N" => {}
        ".br" => out.push('\n'),
        _ if seq.starts_with(".sp") => {
            let n = seq[3..].trim().parse::<usize>().unwrap_or(1).min(100);
            out.extend(std::iter::repeat_n('\n', n.max(1)));
        }
        _ if [".in", ".ti", ".sk", ".ce", ".fi", ".nf"]
            .iter()
            .any(|p| seq.starts_with(p)) => {}
        _ if seq.starts_with('Z') || seq.starts_with('C') || seq.starts_with('M') => {}
        _ if seq.starts_with('X') => {
            let hex = &seq[1..];
            if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return false;
            }
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                .collect();
            let (text, _) = super::text::decode(&bytes, super::text::Fallback::Windows1252, None);
            out.push_str(&text);
        }
        _ => return false,
    }
    true
}

/// Escapes `s` so that it can stand in a field: the inverse of [`unescape`] for plain text.
pub fn escape(s: &str, seps: &Separators) -> String {
    let esc = seps.escape.unwrap_or('\\');
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let code = if c == seps.field {
            Some('F')
        } else if c == seps.component {
            Some('S')
        } else if Some(c) == seps.subcomponent {
            Some('T')
        } else if c == seps.repetition {
            Some('R')
        } else if c == esc {
            Some('E')
        } else {
            None
        };
        match code {
            Some(k) => {
                out.push(esc);
                out.push(k);
                out.push(esc);
            }
            None if c == '\r' || c == '\n' => {
                out.push(esc);
                out.push_str(".br");
                out.push(esc);
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d() -> Separators {
        Separators::default()
    }

    #[test]
    fn escape_probes() {
        assert_eq!(unescape("Müller\\T\\Co", &d()), "Müller&Co");
        assert_eq!(unescape("éé\\T\\", &d()), "éé&");
        assert_eq!(unescape("a\\X41\\b", &d()), "aAb");
        assert_eq!(unescape("\\XC3A9\\", &d()), "é");
        assert_eq!(unescape("a\\F\\b\\S\\c\\R\\d\\E\\e", &d()), "a|b^c~d\\e");
        assert_eq!(unescape("line\\.br\\next", &d()), "line\nnext");
        assert_eq!(unescape("\\H\\bold\\N\\", &d()), "bold");
    }

    #[test]
    fn unterminated_and_unknown_escapes_are_kept() {
        assert_eq!(unescape("50\\%", &d()), "50\\%");
        assert_eq!(unescape("a\\Q\\b", &d()), "a\\Q\\b");
        assert_eq!(unescape("a\\Xzz\\b", &d()), "a\\Xzz\\b");
    }

    proptest! {
        #[test]
        fn escape_round_trips(s in "\\PC{0,40}") {
            let seps = d();
            let plain: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            let escaped = escape(&plain, &seps);
            prop_assert_eq!(unescape(&escaped, &seps).into_owned(), plain);
        }

        #[test]
        fn unescape_never_panics(s in "\\PC{0,60}") {
            let _ = unescape(&s, &d());
        }
    }
}
