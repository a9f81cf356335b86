//! Tables of `oscarflow.toml` that earlier versions read and this one does not: the outbound
//! workers (`[[fax_outbox]]`, `[[sms]]`), which are pipelines now. Such a table is refused — by `check`
//! and by the daemon at start — with the pipeline file that does the same work, so the
//! operator moves it by copying, not by reading documentation.
//!
//! Why refuse rather than translate: a translated table would be a second, hidden way to
//! configure a pipeline that `check`, `dlq retry` (which finds pipelines by file) and the
//! console would each have to know about; one place for every setting is the point.

use toml_edit::{value, Array, DocumentMut, Item, Table};

/// A table that is no longer read, with its replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The table's header as written (`[[fax_outbox]]`).
    pub table: &'static str,
    /// What it configured (`an outbound fax line`).
    pub what: &'static str,
    /// Its index among tables of that name.
    pub index: usize,
    /// Byte offset of its header in the file (for the diagnostic's position).
    pub offset: usize,
    /// The file name the replacement should get under `pipelines_dir`.
    pub file_name: String,
    /// The replacement pipeline file.
    pub pipeline: String,
}

impl Retired {
    /// The operator's message: what to do, with the whole replacement file.
    pub fn message(&self) -> String {
        format!(
            "{}[{}] is no longer read: {} is a pipeline now. Remove the table and put this in <pipelines_dir>/{}:\n{}",
            self.table.trim_matches(|c| c == '[' || c == ']'),
            self.index,
            self.what,
            self.file_name,
            self.pipeline
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

/// Keys of `[[fax_outbox]]` that belong to the queue source.
const FAX_SOURCE_KEYS: &[&str] = &[
    "name",
    "fax_line",
    "poll_interval",
    "batch",
    "claim_timeout",
    "unknown_settle_after",
];
/// Keys that belong to the RingCentral sink.
const FAX_SINK_KEYS: &[&str] = &["document_dir", "cover_index", "ringcentral"];

/// Keys of `[[sms]]` that belong to each text-message source.
const SMS_SOURCE_KEYS: &[&str] = &[
    "name",
    "clinic",
    "poll_interval",
    "batch",
    "claim_timeout",
    "unknown_settle_after",
    "opt_out_ext_key",
    "cell_ext_key",
    "fallback_to_phone",
    "status_poll_for",
    "send_between",
];
/// Keys that belong to the RingCentral SMS sink.
const SMS_SINK_KEYS: &[&str] = &["from", "ringcentral"];

/// Every retired table in `text` (a daemon config file), with its replacement.
pub fn retired_tables(text: &str) -> Vec<Retired> {
    let Ok(doc) = text.parse::<DocumentMut>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    type Make = fn(&str, &Table) -> String;
    let kinds: [(&str, &'static str, &'static str, &str, Make); 2] = [
        (
            "fax_outbox",
            "[[fax_outbox]]",
            "an outbound fax line",
            "fax_out",
            fax_pipeline,
        ),
        (
            "sms",
            "[[sms]]",
            "sending text messages",
            "texts",
            sms_pipeline,
        ),
    ];
    for (key, table, what, prefix, make) in kinds {
        let Some(tables) = doc.get(key).and_then(Item::as_array_of_tables) else {
            continue;
        };
        let mut headers = text.match_indices(table).map(|(i, _)| i);
        for (index, t) in tables.iter().enumerate() {
            let name = t.get("name").and_then(Item::as_str).unwrap_or("clinic");
            let slug: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            out.push(Retired {
                table,
                what,
                index,
                offset: headers.next().unwrap_or(0),
                file_name: format!("{prefix}_{slug}.toml"),
                pipeline: make(&format!("{prefix}_{slug}"), t),
            });
        }
    }
    out.sort_by_key(|r| r.offset);
    out
}

/// The `[pipeline]` table of a replacement, with the worker's attempts as retries.
fn pipeline_table(pipeline_name: &str, t: &Table) -> Item {
    let mut pipeline = Table::new();
    pipeline.insert("name", value(pipeline_name));
    if let Some(n) = t.get("max_attempts") {
        // Attempts per message are the runner's retries now.
        let mut retry = Table::new();
        retry.insert("max_attempts", plain(n));
        pipeline.insert("retry", Item::Table(retry));
    }
    Item::Table(pipeline)
}

/// A component table of `type`, with `keys` copied from `t` and `inputs`.
fn component(type_name: &str, inputs: &[&str], t: &Table, keys: &[&str]) -> Table {
    let mut c = Table::new();
    c.insert("type", value(type_name));
    if !inputs.is_empty() {
        let mut a = Array::new();
        for i in inputs {
            a.push(*i);
        }
        c.insert("inputs", value(a));
    }
    for k in keys {
        if let Some(v) = t.get(k) {
            c.insert(k, plain(v));
        }
    }
    c
}

/// The pipeline file equivalent to one `[[sms]]` table: a source per producer it had
/// (`[sms.reminders]` → `oscar_appointments`, `[sms.lab_ready]` → `oscar_lab_ready`), one
/// RingCentral SMS sink.
fn sms_pipeline(pipeline_name: &str, t: &Table) -> String {
    let mut doc = DocumentMut::new();
    doc.insert("pipeline", pipeline_table(pipeline_name, t));
    let mut sources = Table::new();
    sources.set_implicit(true);
    let mut ids = Vec::new();
    for (sub, type_name) in [
        ("reminders", "oscar_appointments"),
        ("lab_ready", "oscar_lab_ready"),
    ] {
        if t.contains_key(sub) {
            let keys = [SMS_SOURCE_KEYS, &[sub]].concat();
            sources.insert(sub, Item::Table(component(type_name, &[], t, &keys)));
            ids.push(sub);
        }
    }
    doc.insert("sources", Item::Table(sources));
    let mut sinks = Table::new();
    sinks.set_implicit(true);
    sinks.insert(
        "send",
        Item::Table(component("ringcentral_sms", &ids, t, SMS_SINK_KEYS)),
    );
    doc.insert("sinks", Item::Table(sinks));
    doc.to_string()
}

/// The pipeline file equivalent to one `[[fax_outbox]]` table.
fn fax_pipeline(pipeline_name: &str, t: &Table) -> String {
    let mut doc = DocumentMut::new();
    doc.insert("pipeline", pipeline_table(pipeline_name, t));
    let mut sources = Table::new();
    sources.set_implicit(true);
    sources.insert(
        "outbox",
        Item::Table(component("oscar_fax_queue", &[], t, FAX_SOURCE_KEYS)),
    );
    doc.insert("sources", Item::Table(sources));
    let mut sinks = Table::new();
    sinks.set_implicit(true);
    sinks.insert(
        "send",
        Item::Table(component("ringcentral_fax", &["outbox"], t, FAX_SINK_KEYS)),
    );
    doc.insert("sinks", Item::Table(sinks));
    doc.to_string()
}

/// `item` without the decoration and position it had in the old file, so it prints in
/// order in the new one.
fn plain(item: &Item) -> Item {
    match item {
        Item::Table(t) => {
            let mut n = Table::new();
            for (k, v) in t.iter() {
                n.insert(k, plain(v));
            }
            Item::Table(n)
        }
        Item::Value(v) => {
            let mut v = v.clone();
            v.decor_mut().clear();
            Item::Value(v)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replacements name these variables; loading checks that they are set.
    fn set_secrets() {
        for v in ["ID", "SECRET", "JWT"] {
            std::env::set_var(format!("OSCARFLOW_T_LEGACY_RC_{v}"), "set");
        }
    }

    const OLD: &str = r#"
listen = "off"

[[fax_outbox]]
name = "Main Line"
fax_line = "6045550100"   # the clinic's number
document_dir = "/var/lib/OscarDocument/oscar/document"
poll_interval = "30s"
max_attempts = 4

[fax_outbox.ringcentral]
client_id_env = "OSCARFLOW_T_LEGACY_RC_ID"
client_secret_env = "OSCARFLOW_T_LEGACY_RC_SECRET"
jwt_env = "OSCARFLOW_T_LEGACY_RC_JWT"

[fax_outbox.ringcentral.limits.heavy]
requests = 10
window = "1m"
"#;

    #[test]
    fn a_fax_outbox_table_is_replaced_by_an_equivalent_pipeline_file_that_loads() {
        set_secrets();
        let r = retired_tables(OLD);
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(r.file_name, "fax_out_main_line.toml");
        assert_eq!(&OLD[r.offset..r.offset + 14], "[[fax_outbox]]");
        let p = crate::config::load_str(std::path::Path::new(&r.file_name), &r.pipeline)
            .unwrap_or_else(|e| panic!("{e:?}\n{}", r.pipeline));
        assert_eq!(p.name, "fax_out_main_line");
        assert_eq!(p.settings.retry.max_attempts, 4);
        let crate::sources::SourceConfig::OscarFaxQueue(q) = &p.sources[0].config else {
            panic!("{:?}", p.sources[0].config)
        };
        assert_eq!(
            (q.name.as_str(), q.fax_line.as_str()),
            ("Main Line", "6045550100")
        );
        assert_eq!(q.poll_interval, std::time::Duration::from_secs(30));
        let crate::sinks::SinkConfig::RingCentralFax(s) = &p.sinks[0].config else {
            panic!("{:?}", p.sinks[0].config)
        };
        assert_eq!(s.ringcentral.jwt_env.get_ref(), "OSCARFLOW_T_LEGACY_RC_JWT");
        assert_eq!(s.ringcentral.limits.heavy.requests, 10);
        assert!(r
            .message()
            .contains("put this in <pipelines_dir>/fax_out_main_line.toml"));
    }

    #[test]
    fn an_sms_table_is_replaced_by_a_source_per_producer_and_one_sms_sink() {
        let old = r#"
[[sms]]
name = "clinic"
from = "+16045550100"
clinic = "Testville Clinic"
send_between = ["08:00", "20:00"]
max_attempts = 3

[sms.ringcentral]
client_id_env = "OSCARFLOW_T_LEGACY_RC_ID"
client_secret_env = "OSCARFLOW_T_LEGACY_RC_SECRET"
jwt_env = "OSCARFLOW_T_LEGACY_RC_JWT"

[sms.reminders]
lead_time = "24h"

[sms.lab_ready]
when = "acknowledged"
"#;
        set_secrets();
        let r = retired_tables(old);
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(r.file_name, "texts_clinic.toml");
        let p = crate::config::load_str(std::path::Path::new(&r.file_name), &r.pipeline)
            .unwrap_or_else(|e| panic!("{e:?}\n{}", r.pipeline));
        assert_eq!(p.settings.retry.max_attempts, 3);
        let types: Vec<&str> = p
            .sources
            .iter()
            .map(|s| crate::config::ComponentKind::type_name(&s.config))
            .collect();
        assert_eq!(types, vec!["oscar_appointments", "oscar_lab_ready"]);
        let crate::sources::SourceConfig::OscarAppointments(a) = &p.sources[0].config else {
            panic!()
        };
        assert_eq!(a.0.send_between, vec!["08:00", "20:00"]);
        assert_eq!(
            a.0.reminders().lead_time,
            std::time::Duration::from_secs(24 * 3600)
        );
        assert_eq!(p.sinks[0].inputs.len(), 2);
        assert!(r
            .message()
            .contains("sending text messages is a pipeline now"));
    }

    #[test]
    fn a_file_without_retired_tables_has_none() {
        assert!(retired_tables("listen = \"off\"\n").is_empty());
        assert!(retired_tables("not toml [").is_empty());
    }
}
