//! Pipeline files: [`PipelineConfig`] and the three loading phases.
//!
//! One pipeline per file under `pipelines/`. Components are tables keyed by id with a `type`
//! (`[sources.inbox] type = "folder"`), wired by `inputs`. Loading is (1) *parse*: TOML with
//! spans, each component deserialized into its closed config struct with
//! `deny_unknown_fields`; (2) *validate*: pure checks over the whole file — wiring, port
//! types, environment variables named by `*_env` fields — collecting **every** problem as a
//! [`Diagnostic`] with `file:line:col`; (3) *build* (in [`crate::topology`]) does the I/O.
//! `oscarflow check` runs phases 1 and 2 only.

pub mod daemon;
pub mod diagnostics;
pub mod duration;
pub mod legacy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::IntoDeserializer;
use serde::Deserialize;
use serde_spanned::Spanned;

pub use diagnostics::Diagnostic;
pub use duration::deserialize_duration;

use crate::archive::ArchiveConfig;
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::stages::StageConfig;

pub use crate::payload::PortType;

pub use crate::component::{unknown_type, ComponentKind, RawComponent};
pub use crate::retry::RetrySettings;

/// The `[pipeline]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Pipeline name; defaults to the file stem. Appears in dead letters and metrics.
    pub name: Option<String>,
    /// `false`: the file is loaded and checked but the daemon does not start the pipeline
    /// (`/pipelines` lists it as disabled). Outbound examples ship with `enabled = false`.
    pub enabled: bool,
    /// Capacity of each bounded channel between components. Memory is bounded by
    /// (capacity + concurrency) × maximum input size per edge.
    pub channel_capacity: usize,
    /// The most raw bytes of inputs in flight (taken by the sources, not yet settled) across
    /// the whole pipeline: a source waits before sending on an input that does not fit.
    /// Memory is bounded by this (times what parsing adds), whatever the file size; an
    /// input larger than the budget goes alone. 0: bounded by counts only.
    pub max_in_flight_bytes: u64,
    /// Environment variable holding a database URL for this pipeline (its OSCAR database and
    /// its own tables). Without it the daemon's database is used.
    pub database_url_env: Option<Spanned<String>>,
    pub retry: RetrySettings,
    /// A source whose polls keep failing for longer than this makes the daemon unready
    /// (`/readyz`).
    #[serde(deserialize_with = "deserialize_duration")]
    pub unready_after: Duration,
}

/// The default byte budget of a pipeline's inputs in flight: sized for a small clinic
/// server. A parsed lab file takes about 15–17 times its raw bytes in memory (measured with
/// `scripts/bench-memory --per-file 1000`: 16 MiB of raw input in flight peaked at 278 MB,
/// 4 MiB at 104 MB for a million messages; BENCHMARKS.md). A lab file is a few KiB; an
/// `hl7pull` batch or a day's POI file a few hundred.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: u64 = 2 * 1024 * 1024;

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            name: None,
            enabled: true,
            channel_capacity: 16,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            database_url_env: None,
            retry: RetrySettings::default(),
            unready_after: Duration::from_secs(15 * 60),
        }
    }
}

/// A component with its id and wiring.
#[derive(Debug, Clone)]
pub struct Component<C> {
    pub id: String,
    /// Ids of the components feeding this one, with their spans.
    pub inputs: Vec<Spanned<String>>,
    pub config: C,
    /// Byte span of the component's key, for diagnostics.
    pub span: Option<Range<usize>>,
    /// 1-based line and column of the component's key (diagnostics across files).
    pub position: (usize, usize),
}

/// A loaded and validated pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub name: String,
    pub path: PathBuf,
    pub settings: PipelineSettings,
    pub sources: Vec<Component<SourceConfig>>,
    pub stages: Vec<Component<StageConfig>>,
    pub sinks: Vec<Component<SinkConfig>>,
    /// The `[archive]` table: every raw input is kept in S3 before it enters the pipeline.
    pub archive: Option<ArchiveConfig>,
}

impl PipelineConfig {
    /// Makes every relative path in the file (folders, spool and document directories, key,
    /// certificate and trust files) absolute against `base`: the daemon's state directory,
    /// so that a pipeline means the same under systemd (whose working directory is `/`) as
    /// in a terminal. Done once, where pipeline files are loaded for a daemon (`run`, and
    /// `check`/`replay`/`dlq` given `--config`), not in each component.
    pub fn resolve_paths(&mut self, base: &Path) {
        for c in &mut self.sources {
            c.config.resolve_paths(base);
        }
        for c in &mut self.sinks {
            c.config.resolve_paths(base);
        }
    }

    /// The database URL named by `database_url_env`, if set and present.
    pub fn database_url_override(&self) -> Option<String> {
        self.settings
            .database_url_env
            .as_ref()
            .and_then(|v| std::env::var(v.get_ref()).ok())
    }
}

struct Loader<'a> {
    path: &'a Path,
    text: &'a str,
    diags: Vec<Diagnostic>,
    /// Components that exist but failed to load: references to them are not reported again.
    failed: HashSet<String>,
    /// Inputs named by components that failed to load (they still consume those inputs).
    failed_inputs: Vec<String>,
    /// Sections present in the file (even if every component in them failed).
    sections: HashSet<&'static str>,
}

impl Loader<'_> {
    fn err(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(
            self.path,
            self.text,
            span,
            format!("error: {}", message.into()),
        ));
    }
}

/// Loads and validates one pipeline file. All problems are returned, sorted by position.
pub fn load_file(path: &Path) -> Result<PipelineConfig, Vec<Diagnostic>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diagnostic {
                path: path.to_path_buf(),
                line: 1,
                col: 1,
                message: format!("error: cannot read file: {e}"),
            }])
        }
    };
    load_str(path, &text)
}

/// Loads and validates pipeline text as if read from `path`.
pub fn load_str(path: &Path, text: &str) -> Result<PipelineConfig, Vec<Diagnostic>> {
    let mut l = Loader {
        path,
        text,
        diags: Vec::new(),
        failed: HashSet::new(),
        failed_inputs: Vec::new(),
        sections: HashSet::new(),
    };
    let doc = match toml_edit::ImDocument::parse(text.to_string()) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().to_string();
            l.err(e.span(), format!("invalid TOML: {msg}"));
            return Err(l.diags);
        }
    };
    let root = doc.as_table();

    let mut settings = PipelineSettings::default();
    let mut sources = Vec::new();
    let mut stages = Vec::new();
    let mut sinks = Vec::new();
    let mut archive = None;
    for (key, item) in root.iter() {
        let kspan = root.key(key).and_then(|k| k.span());
        match key {
            "pipeline" => {
                if let Some(v) = table_value(item) {
                    match PipelineSettings::deserialize(v.into_deserializer()) {
                        Ok(s) => settings = s,
                        Err(e) => l.err(e.span().or(kspan), format!("[pipeline]: {}", e.message())),
                    }
                } else {
                    l.err(kspan, "`pipeline` must be a table");
                }
            }
            "sources" => load_components(
                &mut l,
                item,
                "sources",
                &mut sources,
                false,
                SourceConfig::from_table,
            ),
            "stages" => load_components(
                &mut l,
                item,
                "stages",
                &mut stages,
                true,
                StageConfig::from_table,
            ),
            "sinks" => load_components(
                &mut l,
                item,
                "sinks",
                &mut sinks,
                true,
                SinkConfig::from_table,
            ),
            "archive" => {
                if let Some(v) = table_value(item) {
                    match ArchiveConfig::deserialize(v.into_deserializer()) {
                        Ok(a) => archive = Some(a),
                        Err(e) => l.err(e.span().or(kspan), format!("[archive]: {}", e.message())),
                    }
                } else {
                    l.err(kspan, "`archive` must be a table");
                }
            }
            other => l.err(
                kspan,
                format!(
                    "unknown top-level key `{other}` (expected pipeline, sources, stages, sinks, archive)"
                ),
            ),
        }
    }

    let name = settings.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    let cfg = PipelineConfig {
        name,
        path: path.to_path_buf(),
        settings,
        sources,
        stages,
        sinks,
        archive,
    };
    validate(&mut l, &cfg);
    if l.diags.is_empty() {
        Ok(cfg)
    } else {
        l.diags.sort_by_key(|d| (d.line, d.col));
        Err(l.diags)
    }
}

fn table_value(item: &toml_edit::Item) -> Option<toml_edit::Value> {
    match item {
        toml_edit::Item::Table(t) => {
            Some(toml_edit::Value::InlineTable(t.clone().into_inline_table()))
        }
        toml_edit::Item::Value(v @ toml_edit::Value::InlineTable(_)) => Some(v.clone()),
        _ => None,
    }
}

type FromTable<C> = fn(RawComponent, &'static str) -> Result<C, (String, Option<Range<usize>>)>;

fn load_components<C>(
    l: &mut Loader<'_>,
    item: &toml_edit::Item,
    section: &'static str,
    out: &mut Vec<Component<C>>,
    wants_inputs: bool,
    from_table: FromTable<C>,
) {
    let Some(table) = item.as_table_like() else {
        l.err(
            item.span(),
            format!("`{section}` must be a table of components"),
        );
        return;
    };
    if table.iter().next().is_some() {
        l.sections.insert(section);
    }
    for (id, comp) in table.iter() {
        let kspan = table.key(id).and_then(|k| k.span());
        let Some(toml_edit::Value::InlineTable(mut fields)) = table_value(comp) else {
            l.err(
                kspan.clone(),
                format!("{section}.{id}: a component must be a table"),
            );
            l.failed.insert(id.to_string());
            continue;
        };
        if !valid_id(id) {
            l.err(
                kspan.clone(),
                format!("{section}.{id}: component ids use a-z, 0-9, `_` and `-`"),
            );
        }
        let type_item = fields.remove("type");
        let type_name = match type_item {
            Some(toml_edit::Value::String(s)) => {
                Spanned::new(s.span().unwrap_or(0..0), s.value().clone())
            }
            Some(other) => {
                l.err(
                    other.span(),
                    format!("{section}.{id}: `type` must be a string"),
                );
                l.failed.insert(id.to_string());
                continue;
            }
            None => {
                l.err(kspan.clone(), format!("{section}.{id}: missing `type`"));
                l.failed.insert(id.to_string());
                continue;
            }
        };
        let mut inputs = Vec::new();
        match fields.remove("inputs") {
            Some(toml_edit::Value::Array(a)) if wants_inputs => {
                for v in a.iter() {
                    match v {
                        toml_edit::Value::String(s) => {
                            inputs.push(Spanned::new(s.span().unwrap_or(0..0), s.value().clone()))
                        }
                        other => l.err(
                            other.span(),
                            format!("{section}.{id}: `inputs` holds component ids (strings)"),
                        ),
                    }
                }
                if a.is_empty() {
                    l.err(kspan.clone(), format!("{section}.{id}: `inputs` is empty"));
                }
            }
            Some(other) if wants_inputs => l.err(
                other.span(),
                format!("{section}.{id}: `inputs` must be an array of component ids"),
            ),
            Some(other) => l.err(
                other.span(),
                format!("{section}.{id}: a source has no `inputs`"),
            ),
            None if wants_inputs => {
                l.err(kspan.clone(), format!("{section}.{id}: missing `inputs`"))
            }
            None => {}
        }
        let raw = RawComponent {
            type_name,
            fields: toml_edit::Value::InlineTable(fields),
        };
        match from_table(raw, section) {
            Ok(config) => {
                let position = kspan
                    .as_ref()
                    .map(|s| diagnostics::line_col(l.text, s.start))
                    .unwrap_or((1, 1));
                out.push(Component {
                    id: id.to_string(),
                    inputs,
                    config,
                    span: kspan,
                    position,
                });
            }
            Err((msg, span)) => {
                l.failed.insert(id.to_string());
                l.failed_inputs
                    .extend(inputs.iter().map(|i| i.get_ref().clone()));
                l.err(span.or(kspan), format!("{section}.{id}: {msg}"))
            }
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

struct Node<'a> {
    section: &'static str,
    id: &'a str,
    output: Option<PortType>,
    span: Option<Range<usize>>,
    /// The lab type the component fixes, if any.
    lab_type: Option<crate::hl7::lab::LabType>,
}

fn validate(l: &mut Loader<'_>, cfg: &PipelineConfig) {
    let mut nodes: BTreeMap<&str, Node<'_>> = BTreeMap::new();
    let mut duplicates = false;
    type Entry<'a> = (
        &'static str,
        &'a str,
        &'a dyn ComponentKind,
        Option<Range<usize>>,
        &'a [Spanned<String>],
    );
    let mut all: Vec<Entry<'_>> = Vec::new();
    for c in &cfg.sources {
        all.push(("sources", &c.id, &c.config, c.span.clone(), &c.inputs));
    }
    for c in &cfg.stages {
        all.push(("stages", &c.id, &c.config, c.span.clone(), &c.inputs));
    }
    for c in &cfg.sinks {
        all.push(("sinks", &c.id, &c.config, c.span.clone(), &c.inputs));
    }
    for (section, id, kind, span, _) in &all {
        if let Some(prev) = nodes.get(id) {
            duplicates = true;
            l.err(
                span.clone(),
                format!(
                    "{section}.{id}: duplicate component id (already used in {})",
                    prev.section
                ),
            );
            continue;
        }
        nodes.insert(
            id,
            Node {
                section,
                id,
                output: kind.output_port(),
                span: span.clone(),
                lab_type: kind.lab_type(),
            },
        );
        for (field, var) in kind.env_refs() {
            if std::env::var_os(var.get_ref()).is_none() {
                l.err(
                    Some(var.span()),
                    format!(
                        "{section}.{id}.{field}: {}",
                        crate::secrets::unset(var.get_ref())
                    ),
                );
            }
        }
        for (msg, s) in kind.validate() {
            l.err(s.or(span.clone()), format!("{section}.{id}: {msg}"));
        }
    }
    if let Some(var) = &cfg.settings.database_url_env {
        if std::env::var_os(var.get_ref()).is_none() {
            l.err(
                Some(var.span()),
                format!(
                    "pipeline.database_url_env: {}",
                    crate::secrets::unset(var.get_ref())
                ),
            );
        }
    }
    if let Some(a) = &cfg.archive {
        for (field, var) in a.env_refs() {
            if std::env::var_os(var.get_ref()).is_none() {
                l.err(
                    Some(var.span()),
                    format!("archive.{field}: {}", crate::secrets::unset(var.get_ref())),
                );
            }
        }
        for (msg, s) in a.validate() {
            l.err(s, format!("archive: {msg}"));
        }
    }
    if cfg.settings.channel_capacity == 0 {
        l.err(None, "pipeline.channel_capacity must be at least 1");
    }
    if cfg.settings.retry.max_attempts == 0 {
        l.err(None, "pipeline.retry.max_attempts must be at least 1");
    }

    // Wiring: every input exists, types line up, no fan-out, everything is consumed.
    let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut edges: Vec<(&str, &str)> = Vec::new();
    for (section, id, kind, _, entries) in &all {
        let mut seen = HashSet::new();
        for input in entries.iter() {
            let name = input.get_ref().as_str();
            if !seen.insert(name) {
                l.err(
                    Some(input.span()),
                    format!("{section}.{id}: input `{name}` listed twice"),
                );
                continue;
            }
            match nodes.get(name) {
                None if l.failed.contains(name) => {}
                None => {
                    let mut known: Vec<&str> = nodes
                        .values()
                        .filter(|n| n.output.is_some() && n.id != *id)
                        .map(|n| n.id)
                        .chain(l.failed.iter().map(String::as_str))
                        .collect();
                    known.sort_unstable();
                    l.err(
                        Some(input.span()),
                        format!(
                            "{section}.{id}: unknown input `{name}` (known: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
                Some(src) => match (src.output, kind.input_port()) {
                    _ if matches!((src.lab_type, kind.lab_type()), (Some(a), Some(b)) if a != b) => {
                        l.err(
                            Some(input.span()),
                            format!(
                                "{section}.{id}: lab_type `{}` contradicts its input `{name}`, whose feed is `{}` (set the source's lab_type to say otherwise)",
                                kind.lab_type().map(|t| t.as_str()).unwrap_or_default(),
                                src.lab_type.map(|t| t.as_str()).unwrap_or_default(),
                            ),
                        );
                        consumers.entry(src.id).or_default().push(id);
                    }
                    (None, _) => l.err(
                        Some(input.span()),
                        format!("{section}.{id}: input `{name}` is a sink and produces nothing"),
                    ),
                    (Some(out), Some(inp)) if out != inp => l.err(
                        Some(input.span()),
                        format!(
                            "{section}.{id}: input `{name}` produces {} but `{}` consumes {}",
                            out.as_str(),
                            kind.type_name(),
                            inp.as_str()
                        ),
                    ),
                    _ => {
                        consumers.entry(src.id).or_default().push(id);
                        edges.push((src.id, id));
                    }
                },
            }
        }
    }
    for n in nodes.values() {
        let consumed_by_failed = l.failed_inputs.iter().any(|i| i == n.id);
        match (n.output, consumers.get(n.id)) {
            (Some(_), None) if consumed_by_failed => {}
            (Some(_), None) => l.err(
                n.span.clone(),
                format!(
                    "{}.{}: its output is not consumed by any stage or sink (messages would go nowhere)",
                    n.section, n.id
                ),
            ),
            (Some(_), Some(c)) if c.len() > 1 => l.err(
                n.span.clone(),
                format!(
                    "{}.{}: is an input of more than one component ({}); fan-out is not supported",
                    n.section,
                    n.id,
                    c.join(", ")
                ),
            ),
            _ => {}
        }
    }
    if !l.sections.contains("sources") {
        l.err(None, "the pipeline has no [sources]");
    }
    if !l.sections.contains("sinks") {
        l.err(None, "the pipeline has no [sinks]");
    }
    if duplicates {
        // Wiring through a duplicated id is ambiguous; cycle analysis would only add noise.
        return;
    }
    // Cycles among stages.
    let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from, to) in &edges {
        adj.entry(from).or_default().push(to);
    }
    for start in nodes.keys() {
        let mut stack = vec![(*start, 0usize)];
        let mut visiting: HashSet<&str> = HashSet::new();
        while let Some((node, depth)) = stack.pop() {
            if depth > nodes.len() {
                let span = nodes.get(start).and_then(|n| n.span.clone());
                l.err(span, format!("component `{start}` is part of a cycle"));
                break;
            }
            visiting.insert(node);
            for next in adj.get(node).into_iter().flatten() {
                stack.push((next, depth + 1));
            }
        }
    }
}

/// Expands files and directories (their `*.toml`, sorted) into pipeline file paths.
pub fn pipeline_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Loads every pipeline file under `paths`; returns the good ones and all diagnostics.
/// Relative paths in them stay relative (to the working directory).
pub fn load_all(paths: &[PathBuf]) -> (Vec<PipelineConfig>, Vec<Diagnostic>) {
    load_all_in(paths, None)
}

/// As [`load_all`], with relative paths resolved against `base` when given (the daemon's
/// state directory: [`PipelineConfig::resolve_paths`]).
pub fn load_all_in(
    paths: &[PathBuf],
    base: Option<&Path>,
) -> (Vec<PipelineConfig>, Vec<Diagnostic>) {
    let mut ok = Vec::new();
    let mut diags = Vec::new();
    match pipeline_files(paths) {
        Ok(files) => {
            for f in files {
                match load_file(&f) {
                    Ok(mut c) => {
                        if let Some(b) = base {
                            c.resolve_paths(b);
                        }
                        ok.push(c)
                    }
                    Err(d) => diags.extend(d),
                }
            }
        }
        Err(e) => diags.push(Diagnostic {
            path: paths.first().cloned().unwrap_or_default(),
            line: 1,
            col: 1,
            message: format!("error: cannot list pipeline files: {e}"),
        }),
    }
    // Two files with the same pipeline name would share dead letters and metrics.
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for c in &ok {
        if let Some(prev) = names.insert(c.name.clone(), c.path.clone()) {
            diags.push(Diagnostic {
                path: c.path.clone(),
                line: 1,
                col: 1,
                message: format!(
                    "error: pipeline name `{}` is also used by {}",
                    c.name,
                    prev.display()
                ),
            });
        }
    }
    diags.extend(conflicts(&ok));
    (ok, diags)
}

/// Sources of different pipelines (or of one) that consume the same outside input: each
/// would release (move, delete, acknowledge) inputs the other has not committed. Reported
/// at every consumer after the first, naming the first with its position.
pub fn conflicts(pipelines: &[PipelineConfig]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut seen: HashMap<String, (PathBuf, usize, usize, String)> = HashMap::new();
    for p in pipelines {
        for s in &p.sources {
            let (line, col) = s.position;
            let (what, key) = s.config.consumes();
            let here = format!("{}.sources.{}", p.name, s.id);
            match seen.get(&format!("{what}\u{0}{key}")) {
                Some((path, l, c, first)) => diags.push(Diagnostic {
                    path: p.path.clone(),
                    line,
                    col,
                    message: format!(
                        "error: sources.{}: reads the same {what} as {} ({}:{l}:{c}); two consumers of one input would release each other's inputs",
                        s.id,
                        first,
                        path.display()
                    ),
                }),
                None => {
                    seen.insert(
                        format!("{what}\u{0}{key}"),
                        (p.path.clone(), line, col, here),
                    );
                }
            }
        }
    }
    diags
}

impl<C> Component<C> {
    /// The ids of this component's inputs.
    pub fn input_ids(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|s| s.get_ref().as_str())
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use crate::sources::SourceConfig;

    #[test]
    fn relative_paths_of_a_pipeline_resolve_against_the_base_and_absolute_ones_stay() {
        let text = "[pipeline]\nname = \"labs\"\n\
            [sources.inbox]\ntype = \"folder\"\npath = \"drop/labs\"\nprocessed_dir = \"/srv/done\"\n\
            [stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n\
            [sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n";
        let mut cfg = load_str(Path::new("labs.toml"), text).unwrap();
        cfg.resolve_paths(Path::new("/var/lib/oscarflow"));
        let SourceConfig::Folder(f) = &cfg.sources[0].config else {
            panic!("a folder source");
        };
        assert_eq!(f.path, PathBuf::from("/var/lib/oscarflow/drop/labs"));
        assert_eq!(f.processed_dir, Some(PathBuf::from("/srv/done")));
    }
}
