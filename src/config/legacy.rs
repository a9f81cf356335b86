//! Tables of `oscarflow.toml` that earlier versions read and this one does not: the outbound
//! workers (`[[fax_outbox]]`), which are pipelines now. Such a table is refused — by `check`
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
            "{}[{}] is no longer read: an outbound fax line is a pipeline now. Remove the table and put this in <pipelines_dir>/{}:\n{}",
            self.table.trim_matches(|c| c == '[' || c == ']'),
            self.index,
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

/// Every retired table in `text` (a daemon config file), with its replacement.
pub fn retired_tables(text: &str) -> Vec<Retired> {
    let Ok(doc) = text.parse::<DocumentMut>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(tables) = doc.get("fax_outbox").and_then(Item::as_array_of_tables) {
        let mut headers = text.match_indices("[[fax_outbox]]").map(|(i, _)| i);
        for (index, t) in tables.iter().enumerate() {
            let name = t
                .get("name")
                .and_then(Item::as_str)
                .unwrap_or("clinic")
                .to_string();
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
                table: "[[fax_outbox]]",
                index,
                offset: headers.next().unwrap_or(0),
                file_name: format!("fax_out_{slug}.toml"),
                pipeline: fax_pipeline(&format!("fax_out_{slug}"), t),
            });
        }
    }
    out
}

/// The pipeline file equivalent to one `[[fax_outbox]]` table.
fn fax_pipeline(pipeline_name: &str, t: &Table) -> String {
    let mut doc = DocumentMut::new();
    let mut pipeline = Table::new();
    pipeline.insert("name", value(pipeline_name));
    if let Some(n) = t.get("max_attempts") {
        // Attempts per fax are the runner's retries now.
        let mut retry = Table::new();
        retry.insert("max_attempts", n.clone());
        pipeline.insert("retry", Item::Table(retry));
    }
    doc.insert("pipeline", Item::Table(pipeline));

    let mut source = Table::new();
    source.insert("type", value("oscar_fax_queue"));
    for k in FAX_SOURCE_KEYS {
        if let Some(v) = t.get(k) {
            source.insert(k, plain(v));
        }
    }
    let mut sources = Table::new();
    sources.set_implicit(true);
    sources.insert("outbox", Item::Table(source));
    doc.insert("sources", Item::Table(sources));

    let mut sink = Table::new();
    sink.insert("type", value("ringcentral_fax"));
    let mut inputs = Array::new();
    inputs.push("outbox");
    sink.insert("inputs", value(inputs));
    for k in FAX_SINK_KEYS {
        if let Some(v) = t.get(k) {
            sink.insert(k, plain(v));
        }
    }
    let mut sinks = Table::new();
    sinks.set_implicit(true);
    sinks.insert("send", Item::Table(sink));
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

    const OLD: &str = r#"
listen = "off"

[[fax_outbox]]
name = "Main Line"
fax_line = "6045550100"   # the clinic's number
document_dir = "/var/lib/OscarDocument/oscar/document"
poll_interval = "30s"
max_attempts = 4

[fax_outbox.ringcentral]
client_id_env = "RC_ID"
client_secret_env = "RC_SECRET"
jwt_env = "RC_JWT"

[fax_outbox.ringcentral.limits.heavy]
requests = 10
window = "1m"
"#;

    #[test]
    fn a_fax_outbox_table_is_replaced_by_an_equivalent_pipeline_file_that_loads() {
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
        assert_eq!(s.ringcentral.jwt_env.get_ref(), "RC_JWT");
        assert_eq!(s.ringcentral.limits.heavy.requests, 10);
        assert!(r
            .message()
            .contains("put this in <pipelines_dir>/fax_out_main_line.toml"));
    }

    #[test]
    fn a_file_without_retired_tables_has_none() {
        assert!(retired_tables("listen = \"off\"\n").is_empty());
        assert!(retired_tables("not toml [").is_empty());
    }
}
