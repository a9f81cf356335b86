//! The component harness: runs a component inside a real pipeline over a list of inputs and
//! checks the two promises every component makes.
//!
//! 1. **Every ack resolves.** Each input the source emitted settles exactly once (`Settled`),
//!    with the status the case expects (`Delivered`, `DeadLettered` or `Failed`), and the
//!    pipeline's in-flight count returns to zero. An input is released only when its batch
//!    was delivered or dead-lettered.
//! 2. **Metrics are emitted.** A capturing `metrics` recorder (installed once per test binary)
//!    sees the counters each event implies, labelled with the pipeline and component, and
//!    the counts agree with the cases: received = inputs; settled by status (delivered,
//!    dead-lettered, failed) = the expected statuses; released = the releasable inputs.
//!
//! Each harness run uses its own pipeline name, so runs in parallel do not mix their counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use oscarflow::ack::BatchStatus;
use oscarflow::config::PipelineConfig;
use oscarflow::sources::list::{ListItem, ListSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;
use oscarflow::telemetry::{Event, Observer, Observers};
use oscarflow::topology::{build, BuildOptions};

// ---------------------------------------------------------------------------------------------
// A capturing metrics recorder
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Cell(AtomicU64);

impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl metrics::GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for Cell {
    /// Histograms count their observations.
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A metric series: name and sorted labels.
type SeriesKey = (String, Vec<(String, String)>);

/// Every metric seen: series → value (counters) or observations (histograms).
#[derive(Default)]
pub struct Captured {
    cells: Mutex<HashMap<SeriesKey, Arc<Cell>>>,
}

impl Captured {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        labels.sort();
        self.cells
            .lock()
            .unwrap()
            .entry((key.name().to_string(), labels))
            .or_default()
            .clone()
    }

    /// The sum of `name` over the series whose labels include all of `having`.
    pub fn sum(&self, name: &str, having: &[(&str, &str)]) -> u64 {
        self.cells
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && having
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, c)| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Every series of a pipeline: name → labels → value (for failure messages).
    pub fn of_pipeline(&self, pipeline: &str) -> BTreeMap<String, u64> {
        self.cells
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, l), _)| l.iter().any(|(k, v)| k == "pipeline" && v == pipeline))
            .map(|((n, l), c)| (format!("{n}{l:?}"), c.0.load(Ordering::Relaxed)))
            .collect()
    }
}

struct CapturingRecorder(&'static Captured);

impl Recorder for CapturingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.0.cell(key))
    }
}

/// The metrics captured in this test binary (installs the recorder on first use).
pub fn metrics() -> &'static Captured {
    static CAPTURED: OnceLock<&'static Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured: &'static Captured = Box::leak(Box::default());
        metrics::set_global_recorder(CapturingRecorder(captured))
            .expect("no other metrics recorder in a harness test binary");
        captured
    })
}

// ---------------------------------------------------------------------------------------------
// The ack ledger
// ---------------------------------------------------------------------------------------------

/// What happened to one input, from the events.
#[derive(Debug, Clone, Default)]
pub struct InputLedger {
    pub received: u32,
    pub settled: Vec<(BatchStatus, bool)>,
    pub imported: u32,
    pub duplicate_messages: u32,
    pub dead_lettered: u32,
    pub retries: u32,
    pub not_delivered: u32,
}

/// Records events per input (by content hash).
#[derive(Default)]
pub struct Ledger {
    inputs: Mutex<BTreeMap<String, InputLedger>>,
}

impl Observer for Ledger {
    fn observe(&self, e: &Event<'_>) {
        type Update = Box<dyn Fn(&mut InputLedger)>;
        let (prov, f): (_, Update) = match e {
            Event::Received { prov, .. } => (prov, Box::new(|l| l.received += 1)),
            Event::Imported { prov, .. } => (prov, Box::new(|l| l.imported += 1)),
            Event::Duplicate { prov, messages, .. } => {
                let m = *messages;
                (prov, Box::new(move |l| l.duplicate_messages += m))
            }
            Event::DeadLettered { prov, .. } => (prov, Box::new(|l| l.dead_lettered += 1)),
            Event::Retrying { prov, .. } => (prov, Box::new(|l| l.retries += 1)),
            Event::NotDelivered { prov, .. } => (prov, Box::new(|l| l.not_delivered += 1)),
            Event::Settled {
                prov,
                status,
                released,
            } => {
                let (s, r) = (*status, *released);
                (prov, Box::new(move |l| l.settled.push((s, r))))
            }
            _ => return,
        };
        let mut inputs = self.inputs.lock().unwrap();
        f(inputs.entry(prov.sha256_hex()).or_default());
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// One input and the batch status it must settle with.
pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expect: BatchStatus,
}

/// The outcome of a harness run, after its checks passed.
pub struct Outcome {
    pub pipeline: String,
    pub ledger: BTreeMap<String, InputLedger>,
}

impl Outcome {
    pub fn total(&self, f: impl Fn(&InputLedger) -> u32) -> u64 {
        self.ledger.values().map(|l| u64::from(f(l))).sum()
    }
}

/// Runs `cases` through `cfg` (renamed `pipeline`) on `store`; asserts every ack resolved as
/// expected, the in-flight count is back to zero, and the source metrics were emitted.
pub async fn run(
    mut cfg: PipelineConfig,
    pipeline: &str,
    store: &Store,
    cases: Vec<Case>,
) -> Outcome {
    let _ = metrics();
    cfg.name = pipeline.to_string();
    cfg.settings.name = Some(pipeline.to_string());
    let items: Vec<ListItem> = cases
        .iter()
        .map(|c| ListItem::Bytes {
            origin: oscarflow::envelope::Origin::Memory {
                label: c.name.to_string(),
            },
            name: c.name.to_string(),
            bytes: c.bytes.clone().into(),
            attempt: 1,
        })
        .collect();
    let source: Box<dyn Source> = Box::new(ListSource::new(items, "harness"));
    run_with_source(cfg, pipeline, store, source, cases, false, None).await
}

/// Drives a long-running source (a listener): sends the cases, then returns; the harness
/// then stops the pipeline's intake and waits for it to drain.
pub type Driver = futures::future::BoxFuture<'static, ()>;

/// Runs `source` (which must emit exactly the bytes of `cases`) through `cfg` (renamed
/// `pipeline`) on `store`. Asserts that every input's ack resolved exactly once with the
/// expected status, that inputs were released exactly when delivered or dead-lettered (when
/// the source `releases` at all), that the in-flight count is back to zero, and that the
/// received/released counters were emitted.
pub async fn run_with_source(
    mut cfg: PipelineConfig,
    pipeline: &str,
    store: &Store,
    source: Box<dyn Source>,
    cases: Vec<Case>,
    releases: bool,
    driver: Option<Driver>,
) -> Outcome {
    let _ = metrics();
    cfg.name = pipeline.to_string();
    cfg.settings.name = Some(pipeline.to_string());
    let ledger = Arc::new(Ledger::default());
    let mut running = build(
        &cfg,
        store,
        BuildOptions {
            // The pipeline adds the standard telemetry (logs, metrics) itself.
            observers: Observers::none().with(ledger.clone()),
            one_shot: driver.is_none(),
            source_override: Some(Arc::new(Mutex::new(Some(source)))),
            ..Default::default()
        },
    )
    .expect("build");
    if let Some(d) = driver {
        d.await;
        running.stop_intake();
    }
    running
        .wait()
        .await
        .expect("the pipeline ran without a fatal error");
    assert_eq!(
        running.in_flight.current(),
        0,
        "every batch left the in-flight count"
    );

    let ledger = ledger.inputs.lock().unwrap().clone();
    for case in &cases {
        let sha = hex::encode(oscarflow::envelope::sha256(&case.bytes));
        let l = ledger
            .get(&sha)
            .unwrap_or_else(|| panic!("{}: the source never emitted it", case.name));
        assert_eq!(l.received, 1, "{}: received once", case.name);
        assert_eq!(
            l.settled.len(),
            1,
            "{}: its ack resolved exactly once: {l:?}",
            case.name
        );
        let (status, released) = l.settled[0];
        assert_eq!(
            status, case.expect,
            "{}: settled as expected: {l:?}",
            case.name
        );
        assert_eq!(
            released,
            releases && status != BatchStatus::Failed,
            "{}: released exactly when delivered or dead-lettered",
            case.name
        );
    }
    let m = metrics();
    let p = [("pipeline", pipeline)];
    assert_eq!(
        m.sum("oscarflow_inputs_received_total", &p),
        cases.len() as u64,
        "received counter: {:#?}",
        m.of_pipeline(pipeline)
    );
    for (status, label) in [
        (BatchStatus::Delivered, "delivered"),
        (BatchStatus::DeadLettered, "dead_lettered"),
        (BatchStatus::Failed, "failed"),
    ] {
        let want = cases.iter().filter(|c| c.expect == status).count() as u64;
        assert_eq!(
            m.sum(
                "oscarflow_inputs_settled_total",
                &[("pipeline", pipeline), ("status", label)]
            ),
            want,
            "settled counter ({label}): {:#?}",
            m.of_pipeline(pipeline)
        );
    }
    let released = if releases {
        cases
            .iter()
            .filter(|c| c.expect != BatchStatus::Failed)
            .count() as u64
    } else {
        0
    };
    assert_eq!(
        m.sum("oscarflow_inputs_released_total", &p),
        released,
        "released counter: {:#?}",
        m.of_pipeline(pipeline)
    );
    Outcome {
        pipeline: pipeline.to_string(),
        ledger,
    }
}
