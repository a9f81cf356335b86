//! Every message file of the public corpus (nHapi's BadInputs aside) parses with a segment
//! count equal to its non-blank segment lines. The exceptions are listed here with the
//! reason, and for each of them the test checks that the difference is a **rejection with a
//! reason** — never a silently shortened message (hl7-parser 0.3's failure mode).

mod common;

use bytes::Bytes;
use oscarflow::hl7::text::{decode, Fallback};
use oscarflow::hl7::{frame, Message};

/// Files whose lines are not all segments of a readable message, and why.
const EXCEPTIONS: &[(&str, &str)] = &[
    ("mirth-oie/simplesender/hl7.txt", "starts with a `[SOM]` marker: no line-start MSH, rejected as not_hl7"),
    ("hapi/uuencoded_escaped.txt", "no line-start MSH: rejected as not_hl7"),
    ("hapi/messages.txt", "`//` comment lines between messages become part of the previous message: those messages are rejected as malformed (a non-segment line), the others parse"),
    ("node-hl7-complete/valid/remote-operations/mdm-example.hl7", "copy-paste mangled: segments joined by spaces, wrapped lines: rejected as malformed"),
    ("node-hl7-complete/valid/catalyze-io/orm-example.hl7", "a wrapped OBR line: rejected as malformed rather than guessed"),
    ("cdc-ti/Test/Message/msh_present_but_missing_msh-2.hl7", "no encoding characters: rejected as malformed"),
    ("cdc-ti/Test/Message/msh_present_but_missing_all_fields.hl7", "`MSH|` only: rejected as malformed"),
    ("cdc-ti/Test/Message/empty.hl7", "empty file: rejected as empty_input"),
];

/// Lines that look like segments: a 3-character name and a field separator, after a BOM,
/// an MLLP start byte or a CDATA opener; batch header/trailer lines are not message segments.
fn segment_lines(bytes: &[u8]) -> usize {
    bytes
        .split(|b| *b == b'\r' || *b == b'\n')
        .filter(|l| {
            let l = l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l);
            let l = l.strip_prefix(b"\x0b").unwrap_or(l);
            let l = match l.windows(9).position(|w| w == b"<![CDATA[") {
                Some(p) => &l[p + 9..],
                None => l,
            };
            l.len() >= 4
                && l[..3]
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && !l[3].is_ascii_alphanumeric()
                && !matches!(&l[..3], b"FHS" | b"BHS" | b"BTS" | b"FTS")
        })
        .count()
}

#[test]
fn corpus_segment_counts_match_their_segment_lines_with_documented_exceptions_only() {
    let Some(dir) = common::shared_dir("corpus/public") else {
        return;
    };
    let files = oscarflow::sources::list::ListSource::expand(std::slice::from_ref(&dir)).unwrap();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for f in files
        .iter()
        .filter(|f| !f.to_string_lossy().contains("BadInputs"))
    {
        let rel = f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
        if rel.ends_with(".md") {
            continue;
        }
        let bytes = Bytes::from(std::fs::read(f).unwrap());
        let framed = frame(&bytes);
        let mut parsed = 0;
        let mut rejected = framed.rejected.len();
        for m in &framed.messages {
            let joined = m.joined(b"\r");
            let (text, _) = decode(&joined, Fallback::Windows1252, None);
            match Message::parse_framed(&text) {
                Ok(msg) => parsed += msg.segment_count(),
                Err(_) => rejected += 1,
            }
        }
        let expected = segment_lines(&bytes);
        match EXCEPTIONS.iter().find(|(p, _)| *p == rel) {
            Some(_) => assert!(
                rejected > 0,
                "{rel}: listed as an exception but nothing was rejected"
            ),
            None => {
                checked += 1;
                if parsed != expected || rejected > 0 {
                    mismatches.push(format!("{rel}: {parsed} segments parsed, {expected} segment lines, {rejected} rejected"));
                }
            }
        }
    }
    assert!(checked > 150, "only {checked} files checked");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
