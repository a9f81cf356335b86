//! Differential test: every decoded leaf value of every public-corpus message, ours against
//! the `er7` crate. Values agree, or the disagreement falls under a documented reason why
//! ours is right (or deliberately different):
//!
//! - `formatting`: `\.br\`, `\.sp\`, `\H\`, `\N\` and other formatting escapes. er7 keeps
//!   them as written; we apply the documented rule in `src/hl7/escape.rs` (line breaks for
//!   `\.br\`/`\.sp\`, highlighting removed), which is what OSCAR's display expects.
//! - `local_escape`: `\Z…\`, `\C…\`, `\M…\` (locally defined / character-set switches):
//!   er7 keeps them; we drop them, by the same documented rule.
//! - `null`: the HL7 explicit null `""`. er7 reads it as empty; we keep the two quotes so
//!   that "delete this value" stays distinguishable from "not sent" for the importer.
//!
//! Anything else is a bug in one of the two and fails the test.

use std::collections::BTreeMap;

mod common;

use bytes::Bytes;
use oscarflow::hl7::escape::unescape;
use oscarflow::hl7::text::{decode, Fallback};
use oscarflow::hl7::{frame, Message};

fn reason(raw: &str) -> Option<&'static str> {
    if raw == "\"\"" {
        return Some("null");
    }
    let formatting = [
        "\\.br\\", "\\.sp", "\\.in", "\\.ti", "\\.sk", "\\.ce", "\\.fi\\", "\\.nf\\", "\\H\\",
        "\\N\\",
    ];
    if formatting.iter().any(|f| raw.contains(f)) {
        return Some("formatting");
    }
    if raw.contains("\\Z") || raw.contains("\\C") || raw.contains("\\M") {
        return Some("local_escape");
    }
    None
}

#[test]
fn every_corpus_value_agrees_with_er7_or_differs_for_a_documented_reason() {
    let Some(dir) = common::shared_dir("corpus/public") else {
        return;
    };
    let files = oscarflow::sources::list::ListSource::expand(&[dir]).unwrap();
    let (mut messages, mut compared, mut ours_rejected, mut theirs_rejected) = (0, 0usize, 0, 0);
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for f in files
        .iter()
        .filter(|f| !f.to_string_lossy().contains("BadInputs"))
    {
        let bytes = Bytes::from(std::fs::read(f).unwrap());
        for fr in frame(&bytes).messages {
            let joined = fr.joined(b"\r");
            let (text, _) = decode(&joined, Fallback::Windows1252, None);
            let Ok(ours) = Message::parse_framed(&text) else {
                ours_rejected += 1;
                continue;
            };
            let Ok(theirs) = er7::parse(&text) else {
                theirs_rejected += 1;
                continue;
            };
            messages += 1;
            assert_eq!(
                ours.segment_count(),
                theirs.segments.len(),
                "{}: segment count",
                f.display()
            );
            let mut mine: BTreeMap<(usize, usize, usize, usize, usize), &str> = BTreeMap::new();
            ours.for_each_leaf(|p, raw| {
                if p.field > 2 || ours.segments()[p.segment].name != "MSH" {
                    mine.insert(
                        (
                            p.segment,
                            p.field,
                            p.repetition,
                            p.component,
                            p.subcomponent,
                        ),
                        raw,
                    );
                }
            });
            let mut seen = 0usize;
            for (si, seg) in theirs.segments.iter().enumerate() {
                let header = seg.name == "MSH";
                for (fi, field) in seg.fields.iter().enumerate() {
                    if header && fi < 2 {
                        continue;
                    }
                    for (ri, rep) in field.repetitions.iter().enumerate() {
                        for (ci, comp) in rep.components.iter().enumerate() {
                            for (ki, sub) in comp.subcomponents.iter().enumerate() {
                                let theirs_v = sub.value(&theirs.separators);
                                let key = (si, fi + 1, ri + 1, ci + 1, ki + 1);
                                let raw = mine.get(&key).copied().unwrap_or("");
                                if !raw.is_empty() {
                                    seen += 1;
                                }
                                let ours_v = unescape(raw, &ours.seps);
                                compared += 1;
                                if ours_v != theirs_v {
                                    match reason(raw) {
                                        Some(r) => *reasons.entry(r).or_default() += 1,
                                        None => unexplained.push(format!(
                                            "{} {}-{}[{}].{}.{}: ours {:?} er7 {:?}",
                                            f.display(),
                                            seg.name,
                                            fi + 1,
                                            ri + 1,
                                            ci + 1,
                                            ki + 1,
                                            ours_v,
                                            theirs_v
                                        )),
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // Every non-empty value of ours was visited from er7's side too.
            let non_empty = mine.values().filter(|v| !v.is_empty()).count();
            assert_eq!(seen, non_empty, "{}: values er7 does not have", f.display());
        }
    }
    eprintln!(
        "differential: {messages} messages, {compared} values compared, documented differences {reasons:?}, rejected by us {ours_rejected} (documented: non-segment lines), by er7 {theirs_rejected}"
    );
    assert!(messages > 300, "only {messages} messages compared");
    assert!(
        unexplained.is_empty(),
        "{} unexplained differences:\n{}",
        unexplained.len(),
        unexplained
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
