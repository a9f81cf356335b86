//! PHI-safe logs: every file of the public corpus (`../shared/corpus/public`) and of
//! `fixtures/hl7` goes through the lab pipeline into a seeded clinic (so that some match a
//! chart, some are unmatched, some are dead-lettered) with every log line captured at debug
//! level, `sqlx` included. None of the patients' names, health numbers or birth dates, read
//! from the files' PID segments with plain string splitting, may appear in the logs.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use oscarflow::sources::list::{ListItem, ListSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_name_health_number_or_birth_date_of_the_corpus_reaches_the_debug_logs() {
    let Some(corpus) = common::shared_dir("corpus/public") else {
        return;
    };
    let mut files = ListSource::expand(&[corpus, common::repo().join("fixtures/hl7")]).unwrap();
    files.retain(|p| p.extension().is_none_or(|e| e != "md"));
    files.sort();
    let mut tokens = BTreeSet::new();
    for f in &files {
        common::phi::patient_tokens(&std::fs::read(f).unwrap(), &mut tokens);
    }
    assert!(
        tokens.len() > 100,
        "the corpus yields patient data to look for"
    );

    // The clinic is seeded before the capture starts: the seed scripts themselves hold the
    // synthetic charts' names.
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let corpus_clinic =
        std::fs::read_to_string(common::repo().join("fixtures/sql/corpus_clinic.sql")).unwrap();
    store.execute_script(&corpus_clinic).await.unwrap();
    let _ = common::logs::captured();
    tracing::debug!("capture started");

    // Files under neutral names: a file name is not patient data we must hide, and some
    // corpus names carry dates.
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let mut items = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let p: PathBuf = inputs.join(format!("in{i:04}.hl7"));
        std::fs::copy(f, &p).unwrap();
        items.push(ListItem::File(p));
    }
    let cfg = common::lab_pipeline();
    common::run_items(&cfg, &store, items, None).await;

    let imported = common::count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
    let matched = common::count(&store, "SELECT COUNT(*) FROM patientLabRouting").await;
    let dead = common::count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await;
    let logs = common::logs::text();
    let found: Vec<&String> = tokens
        .iter()
        .filter(|t| logs.contains(t.as_str()))
        .collect();
    println!(
        "phi logs: {} files, {} imported, {} matched, {} dead-lettered, {} log lines, {} patient tokens looked for, {} found",
        files.len(),
        imported,
        matched,
        dead,
        logs.lines().count(),
        tokens.len(),
        found.len()
    );
    assert!(
        imported > 50 && matched > 0 && dead > 0,
        "the run covered every path"
    );
    assert!(
        logs.lines().count() > files.len(),
        "debug logs were captured"
    );
    // The count only: printing the tokens would put them in the CI log.
    assert!(
        found.is_empty(),
        "{} patient tokens are in the logs",
        found.len()
    );

    // The one way to get bodies into the logs is the explicit switch, which says so loudly;
    // with it on, the same search finds the patients (so the search above can fail).
    oscarflow::telemetry::set_log_bodies(true);
    let again: Vec<ListItem> = files
        .iter()
        .take(20)
        .enumerate()
        .map(|(i, _)| ListItem::File(inputs.join(format!("in{i:04}.hl7"))))
        .collect();
    common::run_items(&cfg, &store, again, None).await;
    oscarflow::telemetry::set_log_bodies(false);
    let logs = common::logs::text();
    let with_bodies = tokens.iter().filter(|t| logs.contains(t.as_str())).count();
    println!("phi logs with --log-bodies on: {with_bodies} patient tokens found");
    assert!(logs.contains("PHI WARNING: --log-bodies is on"));
    assert!(with_bodies > 0, "bodies are logged only with the switch");
}
