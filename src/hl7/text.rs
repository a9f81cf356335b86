//! Bytes to text: UTF-8 when valid, otherwise the configured single-byte fallback.
//!
//! HL7 v2 feeds in Canada are mostly ASCII or UTF-8, with Windows-1252 from older systems
//! (accented names). A message that is not valid UTF-8 is decoded with the fallback; MSH-18
//! naming an ISO 8859-1 character set selects Latin-1. The raw bytes are always kept
//! alongside (the dead-letter store and the content hashes use them).

use std::borrow::Cow;

/// Single-byte fallback for input that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Windows-1252 (a superset of Latin-1 for printable characters): the common case.
    #[default]
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// ISO 8859-1.
    #[serde(rename = "latin1")]
    Latin1,
}

/// How the text was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    Utf8,
    Windows1252,
    Latin1,
}

const CP1252_80_9F: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

/// Decodes `bytes`: UTF-8 if valid, else by `fallback` (or Latin-1 when `msh18` says so).
pub fn decode<'a>(
    bytes: &'a [u8],
    fallback: Fallback,
    msh18: Option<&str>,
) -> (Cow<'a, str>, Encoding) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (Cow::Borrowed(s), Encoding::Utf8);
    }
    let latin1 = msh18.is_some_and(|c| {
        let c = c.to_ascii_uppercase();
        c.contains("8859/1") || c.contains("8859-1") || c == "LATIN1"
    }) || fallback == Fallback::Latin1;
    let s: String = if latin1 {
        bytes.iter().map(|&b| b as char).collect()
    } else {
        bytes
            .iter()
            .map(|&b| match b {
                0x80..=0x9F => CP1252_80_9F[(b - 0x80) as usize],
                _ => b as char,
            })
            .collect()
    };
    (
        Cow::Owned(s),
        if latin1 {
            Encoding::Latin1
        } else {
            Encoding::Windows1252
        },
    )
}

/// Finds MSH-18 in raw bytes without decoding them (it is ASCII by definition).
pub fn sniff_msh18(bytes: &[u8]) -> Option<String> {
    let start = find(bytes, b"MSH")?;
    let line_end = bytes[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|p| start + p)
        .unwrap_or(bytes.len());
    let line = &bytes[start..line_end];
    let sep = *line.get(3)?;
    // MSH-1 is the separator itself, so MSH-18 is the 17th field after "MSH".
    let field = line.split(|&b| b == sep).nth(17)?;
    let s = std::str::from_utf8(field).ok()?.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_falls_back_to_windows_1252() {
        let (s, e) = decode(b"M\xfcller \x80", Fallback::Windows1252, None);
        assert_eq!(s, "Müller €");
        assert_eq!(e, Encoding::Windows1252);
    }

    #[test]
    fn msh18_latin1_selects_latin1() {
        let (s, e) = decode(b"\x80", Fallback::Windows1252, Some("8859/1"));
        assert_eq!(s, "\u{80}");
        assert_eq!(e, Encoding::Latin1);
    }

    #[test]
    fn utf8_is_borrowed() {
        let (s, e) = decode("Bélanger".as_bytes(), Fallback::Windows1252, None);
        assert!(matches!(s, Cow::Borrowed(_)));
        assert_eq!(e, Encoding::Utf8);
    }

    #[test]
    fn sniffs_msh18() {
        let m = b"MSH|^~\\&|A|B|C|D|20200101||ORU^R01|1|P|2.3||||||8859/1\rPID|";
        assert_eq!(sniff_msh18(m).as_deref(), Some("8859/1"));
    }
}
