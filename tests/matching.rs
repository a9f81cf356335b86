//! The adversarial matching suite on the embedded store (the same suite runs on MariaDB in
//! `tests/mariadb.rs`): zero wrong-patient matches, every case's exact outcome.

mod common;
mod matching_suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_matching_cases_produce_no_wrong_patient_match() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    let (n, failures) = matching_suite::run(&store).await;
    assert!(n >= 30, "only {n} cases");
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
