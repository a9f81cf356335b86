//! `oscarflow inspect FILE`: what the HL7 layer sees in a file — each message's type,
//! control id, segment count and lab model — or, with `--field PATH`, one decoded value per
//! message. It prints message content (PHI) to stdout on purpose: it is a tool for the
//! person who already holds the file. Nothing is logged.
//!
//! `--lab N` and `--dead-letter ID` inspect a message oscarflow stored (OSCAR's
//! `hl7TextMessage` of lab N, a dead letter's original bytes) instead of a file. That is a
//! read of patient data through oscarflow: it is recorded in the audit trail of that
//! database (the OS user, and what was shown) before anything is printed, or refused.

use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;

use super::fail;
use crate::hl7::framing::frame;
use crate::hl7::lab::{LabMessage, LabType};
use crate::hl7::text::{decode, sniff_msh18, Fallback};
use crate::hl7::Message;

/// Arguments of `inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// An HL7 file (plain, batch, Excelleris or POI XML).
    #[arg(required_unless_present_any = ["lab", "dead_letter"])]
    pub file: Option<PathBuf>,
    /// Inspect lab N as OSCAR stores it (`hl7TextMessage.lab_id`), from the database
    /// (recorded in the audit trail).
    #[arg(long, conflicts_with_all = ["file", "dead_letter"])]
    pub lab: Option<i64>,
    /// Inspect a dead letter's original bytes, from the database (recorded in the audit
    /// trail).
    #[arg(long, conflicts_with = "file")]
    pub dead_letter: Option<String>,
    #[command(flatten)]
    pub db: super::DbArgs,
    /// Print only this field of each message, decoded (e.g. `PID-5.1`, `OBX[3]-5`).
    #[arg(long)]
    pub field: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Read every message as this OSCAR lab type (`PATHL7`, `IHA`/`IHAPOI`, `HL7`, …), as a
    /// pipeline with `lab_type` would; without it the detection rules decide and `inspect`
    /// names the rule that did.
    #[arg(long, value_parser = parse_lab_type)]
    pub lab_type: Option<LabType>,
}

fn parse_lab_type(s: &str) -> Result<LabType, String> {
    LabType::from_name(s).ok_or_else(|| format!("unknown lab type `{s}`"))
}

#[derive(Serialize)]
struct Found {
    index: u32,
    line: usize,
    message_type: Option<String>,
    control_id: Option<String>,
    segments: Option<usize>,
    error: Option<String>,
    lab: Option<LabMessage>,
}

/// The bytes of a stored message, after its read is recorded in the audit trail.
async fn stored(a: &InspectArgs) -> Result<Bytes, String> {
    let store = crate::store::Store::open(&a.db.url()?)
        .await
        .map_err(|e| e.to_string())?;
    let not_recorded = |e: sqlx::Error| {
        format!(
            "the read could not be recorded in the audit trail, so nothing is shown: {}",
            crate::error::describe_sqlx(&e)
        )
    };
    if let Some(id) = &a.dead_letter {
        let dl = crate::dead_letter::DeadLetterStore::new(store);
        let d = dl
            .list_one(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no dead letter with id {id}"))?;
        dl.record_reveal(
            &d,
            &crate::audit::os_user(),
            "`oscarflow inspect --dead-letter`",
        )
        .await
        .map_err(not_recorded)?;
        let mut raw = Vec::new();
        dl.write_raw(id, &mut raw)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Bytes::from(raw));
    }
    let lab_no = a.lab.unwrap_or_default();
    let row = sqlx::query("SELECT message FROM hl7TextMessage WHERE lab_id = ?")
        .bind(lab_no)
        .fetch_optional(&store.pool)
        .await
        .map_err(|e| crate::error::describe_sqlx(&e))?
        .ok_or_else(|| format!("OSCAR has no lab {lab_no}"))?;
    let text = crate::store::text_column(&row, 0)
        .map_err(|e| crate::error::describe_sqlx(&e))?
        .unwrap_or_default();
    let mut r = crate::audit::read(
        crate::audit::os_user(),
        format!("`oscarflow inspect --lab {lab_no}`: the lab's message as OSCAR stores it"),
    );
    r.about.lab_no = Some(lab_no);
    crate::audit::record_read(&store, r)
        .await
        .map_err(not_recorded)?;
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(Bytes::from)
        .map_err(|_| format!("lab {lab_no}: its stored message is not Base64"))
}

pub async fn run(a: InspectArgs) -> i32 {
    let bytes = match &a.file {
        Some(file) => match std::fs::read(file) {
            Ok(b) => Bytes::from(b),
            Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
        },
        None => match stored(&a).await {
            Ok(b) => b,
            Err(e) => return fail(e),
        },
    };
    if let Some(f) = &a.field {
        if crate::hl7::message::FieldPath::parse(f).is_none() {
            return fail(format!(
                "`{f}` is not a field path (e.g. PID-5.1, OBX[3]-5, PID-3[2].1)"
            ));
        }
    }
    let framed = frame(&bytes);
    let mut found = Vec::new();
    for r in &framed.rejected {
        found.push(Found {
            index: r.index,
            line: 0,
            message_type: None,
            control_id: None,
            segments: None,
            error: Some(r.error.to_string()),
            lab: None,
        });
    }
    for m in &framed.messages {
        let joined = m.joined(b"\r");
        let msh18 = sniff_msh18(&joined);
        let (text, _) = decode(&joined, Fallback::Windows1252, msh18.as_deref());
        match Message::parse_framed(&text) {
            Ok(msg) => {
                if let Some(f) = &a.field {
                    println!("{}", msg.get(f).replace(['\r', '\n'], " "));
                    continue;
                }
                let lab = LabMessage::from_message_as(&msg, a.lab_type);
                found.push(Found {
                    index: m.index,
                    line: m.line,
                    message_type: Some(msg.get("MSH-9").into_owned()),
                    control_id: Some(msg.get("MSH-10").into_owned()),
                    segments: Some(msg.segment_count()),
                    error: lab.as_ref().err().map(|e| e.to_string()),
                    lab: lab.ok(),
                });
            }
            Err(e) => {
                if a.field.is_some() {
                    println!();
                    continue;
                }
                found.push(Found {
                    index: m.index,
                    line: m.line,
                    message_type: None,
                    control_id: None,
                    segments: Some(m.segments.len()),
                    error: Some(e.to_string()),
                    lab: None,
                });
            }
        }
    }
    if a.field.is_some() {
        return 0;
    }
    found.sort_by_key(|f| f.index);
    if a.json {
        let out = serde_json::json!({ "container": framed.container, "messages": found });
        match serde_json::to_string_pretty(&out) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(e),
        }
        return 0;
    }
    println!(
        "{} message(s), container {:?}",
        found.len(),
        framed.container
    );
    for f in &found {
        match &f.error {
            Some(e) if f.lab.is_none() => {
                println!("#{} line {}: rejected: {e}", f.index + 1, f.line)
            }
            _ => {
                println!(
                    "#{} line {}: {} control {} segments {}",
                    f.index + 1,
                    f.line,
                    f.message_type.as_deref().unwrap_or("?"),
                    f.control_id.as_deref().unwrap_or("?"),
                    f.segments.unwrap_or(0)
                );
                if let Some(l) = &f.lab {
                    println!(
                        "    lab type {} ({}) facility {} accession {} orders {} observations {}",
                        l.lab_type.as_str(),
                        l.typed_by.describe(),
                        l.sending_facility,
                        crate::oscar::handlers::accession(l),
                        l.orders.len(),
                        l.orders.iter().map(|o| o.observations.len()).sum::<usize>()
                    );
                }
            }
        }
    }
    0
}
