//! One parsed HL7 v2 message: [`Message`], borrowing every value from its text.
//!
//! Separators come from MSH-1 and MSH-2 (non-default ones and truncated MSH-2 included: a
//! missing subcomponent or escape character means "none"). Values are addressed by path,
//! `SEG[n]-F[r].C.S` — `PID-5.1`, `OBX[3]-5`, `PID-3[2].1` — all indexes 1-based, `[n]` the
//! n-th segment of that name, `[r]` the repetition. [`Message::raw`] returns the escaped text,
//! [`Message::get`] the decoded value. MSH numbering follows the standard: MSH-1 is the field
//! separator, MSH-2 the encoding characters, MSH-3 the first field after them.

use std::borrow::Cow;

use super::escape::unescape;

/// The delimiters of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: Option<char>,
    pub subcomponent: Option<char>,
    /// v2.7 truncation character (fifth MSH-2 character), recognised and otherwise ignored.
    pub truncation: Option<char>,
}

impl Default for Separators {
    fn default() -> Self {
        Separators {
            field: '|',
            component: '^',
            repetition: '~',
            escape: Some('\\'),
            subcomponent: Some('&'),
            truncation: None,
        }
    }
}

/// Why a frame is not a readable message. Positions only, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-1/MSH-2 do not define usable separators")]
    BadSeparators,
    #[error("segment {index} has no valid segment name")]
    BadSegmentName { index: usize },
}

/// A segment: its name and its whole line (name included).
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub name: &'a str,
    pub line: &'a str,
    /// Index of this segment's first entry in the message's field-boundary table.
    first: u32,
    /// Number of separator-delimited parts of the line (the name is part 0).
    parts: u32,
}

/// A parsed message.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub text: &'a str,
    pub seps: Separators,
    segments: Vec<Segment<'a>>,
    /// Byte ranges (start, end) of every part of every segment line, relative to the line:
    /// field access is an index lookup, not a re-split of the line.
    bounds: Vec<(u32, u32)>,
}

/// Where a leaf value sits: segment index (0-based, in message order) and the 1-based
/// field, repetition, component and subcomponent numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafPos {
    pub segment: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
    pub subcomponent: usize,
}

/// A parsed value address (`SEG[n]-F[r].C.S`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPath<'p> {
    pub segment: &'p str,
    pub occurrence: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

impl<'p> FieldPath<'p> {
    /// Parses `PID-5.1`, `OBX[3]-5`, `PID-3[2].1`, `MSH-9.2`. `None` when malformed.
    pub fn parse(p: &'p str) -> Option<Self> {
        let (seg_part, rest) = p.split_once('-')?;
        let (segment, occurrence) = split_index(seg_part)?;
        if segment.len() != 3 || !segment.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let mut parts = rest.split('.');
        let (field, repetition) = split_index(parts.next()?)?;
        let field: usize = field.parse().ok().filter(|f| *f >= 1)?;
        let component = match parts.next() {
            Some(c) => Some(c.parse::<usize>().ok().filter(|c| *c >= 1)?),
            None => None,
        };
        let subcomponent = match parts.next() {
            Some(s) => Some(s.parse::<usize>().ok().filter(|s| *s >= 1)?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(FieldPath {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

fn split_index(s: &str) -> Option<(&str, usize)> {
    match s.find('[') {
        None => Some((s, 1)),
        Some(i) => {
            let inner = s[i + 1..].strip_suffix(']')?;
            let n: usize = inner.parse().ok().filter(|n| *n >= 1)?;
            Some((&s[..i], n))
        }
    }
}

impl<'a> Message<'a> {
    /// Parses `text`, whose segments are separated by `\r` (as [`super::Frame::joined`]
    /// makes it); `\n` is accepted too.
    pub fn parse(text: &'a str) -> Result<Message<'a>, ParseError> {
        Self::parse_lines(text, true)
    }

    /// Parses a framed message ([`super::Frame::joined`] with `\r`): only `\r` ends a
    /// segment, so an LF that framing kept inside a field (a lone LF in a CR-terminated
    /// message) stays in its value, as python-hl7 and HAPI read it.
    pub fn parse_framed(text: &'a str) -> Result<Message<'a>, ParseError> {
        Self::parse_lines(text, false)
    }

    fn parse_lines(text: &'a str, lf_ends_segments: bool) -> Result<Message<'a>, ParseError> {
        if !text.starts_with("MSH") {
            return Err(ParseError::NoMsh);
        }
        let mut chars = text[3..].chars();
        let field = chars.next().ok_or(ParseError::BadSeparators)?;
        if field.is_alphanumeric() || field == '\r' || field == '\n' {
            return Err(ParseError::BadSeparators);
        }
        let enc: Vec<char> = text[3 + field.len_utf8()..]
            .chars()
            .take_while(|c| *c != field && *c != '\r' && *c != '\n')
            .collect();
        if enc.is_empty() || enc.len() > 5 {
            return Err(ParseError::BadSeparators);
        }
        let seps = Separators {
            field,
            component: enc[0],
            repetition: enc.get(1).copied().unwrap_or('\u{0}'),
            escape: enc.get(2).copied(),
            subcomponent: enc.get(3).copied(),
            truncation: enc.get(4).copied(),
        };
        let mut distinct = vec![field, seps.component];
        distinct.extend(enc.iter().skip(1).copied());
        let mut sorted = distinct.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != distinct.len() || enc.iter().any(|c| c.is_alphanumeric()) {
            return Err(ParseError::BadSeparators);
        }
        let mut segments = Vec::with_capacity(16);
        let mut bounds: Vec<(u32, u32)> = Vec::with_capacity(text.len() / 8);
        let mut fb = [0u8; 4];
        let field_bytes = field.encode_utf8(&mut fb).as_bytes().to_vec();
        let bytes = text.as_bytes();
        // One pass over the text: CR and LF end lines (each terminator ends one line, so
        // CRLF yields an empty line, skipped like any blank line), the field separator ends
        // parts. Line numbers in errors count every terminator.
        let mut line_no = 0usize;
        let mut pos = 0usize;
        while pos <= bytes.len() {
            let end = bytes[pos..]
                .iter()
                .position(|b| *b == b'\r' || (lf_ends_segments && *b == b'\n'))
                .map_or(bytes.len(), |p| pos + p);
            line_no += 1;
            let line = &text[pos..end];
            pos = end + 1;
            // Blank lines are skipped; a segment line starts with its name, so only a line
            // that starts with whitespace needs the full check.
            if line
                .as_bytes()
                .first()
                .is_none_or(|b| b.is_ascii_whitespace())
                && line.bytes().all(|b| b.is_ascii_whitespace())
            {
                continue;
            }
            let first = bounds.len() as u32;
            let lb = line.as_bytes();
            let mut start = 0usize;
            if field_bytes.len() == 1 {
                let f = field_bytes[0];
                for (p, b) in lb.iter().enumerate() {
                    if *b == f {
                        bounds.push((start as u32, p as u32));
                        start = p + 1;
                    }
                }
            } else {
                for (p, _) in line.match_indices(field) {
                    bounds.push((start as u32, p as u32));
                    start = p + field_bytes.len();
                }
            }
            bounds.push((start as u32, lb.len() as u32));
            let (ns, ne) = bounds[first as usize];
            let name = &line[ns as usize..ne as usize];
            if name.len() != 3
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Err(ParseError::BadSegmentName { index: line_no });
            }
            let parts = bounds.len() as u32 - first;
            segments.push(Segment {
                name,
                line,
                first,
                parts,
            });
        }
        Ok(Message {
            text,
            seps,
            segments,
            bounds,
        })
    }

    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Segments named `name`, in order.
    pub fn segments_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Segment<'a>> + 's {
        self.segments.iter().filter(move |s| s.name == name)
    }

    /// True when a segment named `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.segments.iter().any(|s| s.name == name)
    }

    /// The escaped text at `path`, `None` when the path is malformed or absent.
    pub fn raw(&self, path: &str) -> Option<&'a str> {
        let p = FieldPath::parse(path)?;
        let seg = self.segments_named(p.segment).nth(p.occurrence - 1)?;
        self.select(seg, p.field, p.repetition, p.component, p.subcomponent)
    }

    /// The decoded value at `path`; empty when absent.
    pub fn get(&self, path: &str) -> Cow<'a, str> {
        match self.raw(path) {
            Some(r) => unescape(r, &self.seps),
            None => Cow::Borrowed(""),
        }
    }

    fn whole_field(&self, seg: &Segment<'a>, field: usize) -> Option<&'a str> {
        if seg.name == "MSH" {
            return match field {
                0 => None,
                1 => {
                    let start = 3;
                    seg.line.get(start..start + self.seps.field.len_utf8())
                }
                n => self.part(seg, n - 1),
            };
        }
        if field == 0 {
            return None;
        }
        self.part(seg, field)
    }

    /// Part `i` of a segment line (part 0 is the name).
    fn part(&self, seg: &Segment<'a>, i: usize) -> Option<&'a str> {
        if i >= seg.parts as usize {
            return None;
        }
        let (s, e) = *self.bounds.get(seg.first as usize + i)?;
        seg.line.get(s as usize..e as usize)
    }

    /// The piece of `seg` at field/repetition/component/subcomponent (1-based).
    pub fn select(
        &self,
        seg: &Segment<'a>,
        field: usize,
        repetition: usize,
        component: Option<usize>,
        subcomponent: Option<usize>,
    ) -> Option<&'a str> {
        let f = self.whole_field(seg, field)?;
        // MSH-1 and MSH-2 are not split further.
        if seg.name == "MSH" && field <= 2 {
            return (repetition == 1 && component.unwrap_or(1) == 1).then_some(f);
        }
        let r = f.split(self.seps.repetition).nth(repetition - 1)?;
        let Some(c) = component else {
            return Some(r);
        };
        let comp = r.split(self.seps.component).nth(c - 1)?;
        match (subcomponent, self.seps.subcomponent) {
            (None, _) => Some(comp),
            (Some(1), None) => Some(comp),
            (Some(_), None) => None,
            (Some(s), Some(sc)) => comp.split(sc).nth(s - 1),
        }
    }

    /// Number of fields of `seg` (for MSH, counting MSH-1 and MSH-2).
    pub fn field_count(&self, seg: &Segment<'a>) -> usize {
        if seg.name == "MSH" {
            seg.parts as usize
        } else {
            seg.parts.saturating_sub(1) as usize
        }
    }

    /// Calls `f` with the position and **escaped** text of every leaf value (subcomponent)
    /// of the message, in order. MSH-1 and MSH-2 are single leaves. Empty leaves are
    /// included, so the walk mirrors the message's structure exactly.
    pub fn for_each_leaf(&self, mut f: impl FnMut(LeafPos, &'a str)) {
        self.walk(|p, raw, _| f(p, raw));
    }

    /// Like [`Message::for_each_leaf`], with each value decoded (escapes applied). Values
    /// without an escape character are borrowed, not copied.
    pub fn for_each_value(&self, mut f: impl FnMut(LeafPos, Cow<'a, str>)) {
        let seps = self.seps;
        self.walk(|p, raw, has_escape| {
            if has_escape {
                f(p, unescape(raw, &seps))
            } else {
                f(p, Cow::Borrowed(raw))
            }
        });
    }

    /// The walk behind both: one pass over each field's bytes when the delimiters are ASCII
    /// (always in practice), noting whether a leaf contains the escape character.
    fn walk(&self, mut f: impl FnMut(LeafPos, &'a str, bool)) {
        let s = self.seps;
        let ascii = s.repetition.is_ascii()
            && s.component.is_ascii()
            && s.subcomponent.is_none_or(|c| c.is_ascii())
            && s.escape.is_none_or(|c| c.is_ascii());
        let (rep, comp) = (s.repetition as u8, s.component as u8);
        let sub = s.subcomponent.map(|c| c as u8);
        let esc = s.escape.map(|c| c as u8);
        for (si, seg) in self.segments.iter().enumerate() {
            for field in 1..=self.field_count(seg) {
                let Some(raw) = self.whole_field(seg, field) else {
                    continue;
                };
                let mut pos = LeafPos {
                    segment: si,
                    field,
                    repetition: 1,
                    component: 1,
                    subcomponent: 1,
                };
                if seg.name == "MSH" && field <= 2 {
                    f(pos, raw, false);
                    continue;
                }
                if !ascii {
                    for (ri, r) in raw.split(s.repetition).enumerate() {
                        for (ci, c) in r.split(s.component).enumerate() {
                            let subs: Vec<&str> = match s.subcomponent {
                                Some(sc) => c.split(sc).collect(),
                                None => vec![c],
                            };
                            for (ki, v) in subs.into_iter().enumerate() {
                                pos.repetition = ri + 1;
                                pos.component = ci + 1;
                                pos.subcomponent = ki + 1;
                                f(pos, v, s.escape.is_some_and(|e| v.contains(e)));
                            }
                        }
                    }
                    continue;
                }
                let b = raw.as_bytes();
                let mut start = 0;
                let mut has_esc = false;
                for (i, &x) in b.iter().enumerate() {
                    if x == rep || x == comp || Some(x) == sub {
                        // Delimiters are ASCII, so `start..i` are char boundaries.
                        f(pos, &raw[start..i], has_esc);
                        has_esc = false;
                        start = i + 1;
                        if x == rep {
                            pos.repetition += 1;
                            pos.component = 1;
                            pos.subcomponent = 1;
                        } else if x == comp {
                            pos.component += 1;
                            pos.subcomponent = 1;
                        } else {
                            pos.subcomponent += 1;
                        }
                    } else if Some(x) == esc {
                        has_esc = true;
                    }
                }
                f(pos, &raw[start..], has_esc);
            }
        }
    }

    /// Number of repetitions of a field (0 when empty or absent).
    pub fn repetitions(&self, seg: &Segment<'a>, field: usize) -> usize {
        match self.whole_field(seg, field) {
            None | Some("") => 0,
            Some(f) => f.split(self.seps.repetition).count(),
        }
    }

    /// Decoded value of one subcomponent of `seg`; empty when absent.
    pub fn sub_value(
        &self,
        seg: &Segment<'a>,
        field: usize,
        repetition: usize,
        component: usize,
        subcomponent: usize,
    ) -> Cow<'a, str> {
        match self.select(seg, field, repetition, Some(component), Some(subcomponent)) {
            Some(r) => unescape(r, &self.seps),
            None => Cow::Borrowed(""),
        }
    }

    /// Decoded value of a piece of `seg`; empty when absent.
    pub fn value(
        &self,
        seg: &Segment<'a>,
        field: usize,
        repetition: usize,
        component: Option<usize>,
    ) -> Cow<'a, str> {
        match self.select(seg, field, repetition, component, None) {
            Some(r) => unescape(r, &self.seps),
            None => Cow::Borrowed(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ACC1|20130927130551||ORU^R01|CTRL1|P|2.3\rPID||9000000011|MRN1~PHN2^^^BC||TESTPATIENT^ALPHA^Q||19770726|F\rOBX|1|NM|718-7^Hemoglobin||135|g/L|120-160|N|||F\rOBX|2|ST|X^Note||a\\T\\b|||A|||F";

    #[test]
    fn addresses_fields_repetitions_and_components() {
        let m = Message::parse(M).unwrap();
        assert_eq!(m.get("MSH-3"), "PATHL7");
        assert_eq!(m.get("MSH-9.2"), "R01");
        assert_eq!(m.get("MSH-10"), "CTRL1");
        assert_eq!(m.get("MSH-1"), "|");
        assert_eq!(m.get("MSH-2"), "^~\\&");
        assert_eq!(m.get("PID-5.1"), "TESTPATIENT");
        assert_eq!(m.get("PID-5.2"), "ALPHA");
        assert_eq!(m.get("PID-3[2].1"), "PHN2");
        assert_eq!(m.get("PID-3[2].4"), "BC");
        assert_eq!(m.get("OBX[2]-5"), "a&b");
        assert_eq!(m.raw("OBX[2]-5"), Some("a\\T\\b"));
        assert_eq!(m.get("OBX[3]-5"), "");
        assert_eq!(m.get("PID-99"), "");
        assert_eq!(m.segment_count(), 4);
    }

    #[test]
    fn non_default_and_truncated_separators() {
        let m = Message::parse("MSH#!@$%#A#B\rPID#1#x!y@z").unwrap();
        assert_eq!(m.seps.field, '#');
        assert_eq!(m.get("PID-2.2"), "y");
        assert_eq!(m.get("PID-2[2]"), "z");
        let t = Message::parse("MSH|^~|A\rPID|1|a&b^c").unwrap();
        assert_eq!(t.seps.escape, None);
        assert_eq!(t.get("PID-2.1"), "a&b");
        let v27 = Message::parse("MSH|^~\\&#|SENDER|FAC\rPID|1").unwrap();
        assert_eq!(v27.seps.truncation, Some('#'));
        assert_eq!(v27.get("MSH-3"), "SENDER");
        assert_eq!(v27.get("MSH-4"), "FAC");
    }

    #[test]
    fn rejects_bad_headers_and_segment_names() {
        assert_eq!(Message::parse("PID|1").unwrap_err(), ParseError::NoMsh);
        assert_eq!(
            Message::parse("MSHA").unwrap_err(),
            ParseError::BadSeparators
        );
        assert_eq!(
            Message::parse("MSH||").unwrap_err(),
            ParseError::BadSeparators
        );
        assert_eq!(
            Message::parse("MSH|^~\\&|A\rthis is text").unwrap_err(),
            ParseError::BadSegmentName { index: 2 }
        );
    }

    #[test]
    fn leaf_walk_visits_every_value_in_order() {
        let m = Message::parse("MSH|^~\\&|A\rPID|1|a^b&c~d||e").unwrap();
        let mut leaves = Vec::new();
        m.for_each_leaf(|p, v| {
            leaves.push((
                m.segments()[p.segment].name,
                p.field,
                p.repetition,
                p.component,
                p.subcomponent,
                v,
            ))
        });
        assert_eq!(
            leaves,
            vec![
                ("MSH", 1, 1, 1, 1, "|"),
                ("MSH", 2, 1, 1, 1, "^~\\&"),
                ("MSH", 3, 1, 1, 1, "A"),
                ("PID", 1, 1, 1, 1, "1"),
                ("PID", 2, 1, 1, 1, "a"),
                ("PID", 2, 1, 2, 1, "b"),
                ("PID", 2, 1, 2, 2, "c"),
                ("PID", 2, 2, 1, 1, "d"),
                ("PID", 3, 1, 1, 1, ""),
                ("PID", 4, 1, 1, 1, "e"),
            ]
        );
    }

    #[test]
    fn field_paths_parse() {
        let p = FieldPath::parse("OBX[3]-5[2].1.2").unwrap();
        assert_eq!(
            (
                p.segment,
                p.occurrence,
                p.field,
                p.repetition,
                p.component,
                p.subcomponent
            ),
            ("OBX", 3, 5, 2, Some(1), Some(2))
        );
        assert!(FieldPath::parse("PID").is_none());
        assert!(FieldPath::parse("PID-0").is_none());
        assert!(FieldPath::parse("PID-x").is_none());
    }
}
