//! The adversarial matching suite on the embedded store (the same suite runs on MariaDB in
//! `tests/mariadb.rs`): zero wrong-patient matches, every case's exact outcome.

mod common;
mod matching_suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_matching_cases_produce_no_wrong_patient_match() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    matching_suite::assert_no_wrong_patient_match(&store).await;
}
