//! `oscar_flavour = "auto"` reads the flavour from the schema: Open-O's
//! `document.report_media` column means Open-O; a `document` table without it, OSCAR 19; no
//! `document` table at all, Open-O. (The embedded store carries Open-O's `document` table
//! for the fax import; these tests replace it with an OSCAR 19 shape.)

mod common;

use oscarflow::oscar::{detect_flavour, Flavour};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flavour_is_read_from_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    assert_eq!(detect_flavour(&store).await.unwrap(), Flavour::OpenO);
    sqlx::query("DROP TABLE document")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(detect_flavour(&store).await.unwrap(), Flavour::OpenO);
    sqlx::query("CREATE TABLE document (document_no INTEGER PRIMARY KEY, doctype varchar(60))")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(detect_flavour(&store).await.unwrap(), Flavour::Oscar19);
    sqlx::query("ALTER TABLE document ADD COLUMN report_media int")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(detect_flavour(&store).await.unwrap(), Flavour::OpenO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oscar19_database_gets_oscar19_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    sqlx::query("DROP TABLE document")
        .execute(&store.pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE document (document_no INTEGER PRIMARY KEY, doctype varchar(60))")
        .execute(&store.pool)
        .await
        .unwrap();
    let items = vec![oscarflow::sources::list::ListItem::File(
        common::repo().join("fixtures/hl7/versions/accession_26-200000001_3_corrected.hl7"),
    )];
    common::run_items(&common::lab_pipeline(), &store, items, None).await;
    let (status, facility): (String, Option<String>) =
        sqlx::query_as("SELECT report_status, sending_facility FROM hl7TextInfo")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(status, "C", "OSCAR 19 stores the OBR-25 letter");
    assert_eq!(facility, None, "OSCAR 19 leaves sending_facility empty");
}

/// An older OSCAR whose `report_status` is narrower than Open-O's `varchar(20)`: the width is
/// read from the target's schema, so "corrected" is cut to fit (truncate) or the file is
/// refused (reject) instead of failing on a strict server or being stored too long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_widths_are_read_from_the_target_schema() {
    for reject in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let store = common::seeded_store(tmp.path()).await;
        let ddl: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'hl7TextInfo'",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        let narrowed = ddl.replace("report_status varchar(20)", "report_status varchar(4)");
        assert_ne!(
            ddl, narrowed,
            "the embedded schema declares report_status varchar(20)"
        );
        store
            .execute_script(&format!("DROP TABLE hl7TextInfo;\n{narrowed};\n"))
            .await
            .unwrap();
        let cfg = common::lab_pipeline_with(|c| {
            c.on_overflow = if reject {
                oscarflow::oscar::import::Overflow::Reject
            } else {
                oscarflow::oscar::import::Overflow::Truncate
            }
        });
        let items = vec![oscarflow::sources::list::ListItem::File(
            common::repo().join("fixtures/hl7/versions/accession_26-200000001_3_corrected.hl7"),
        )];
        common::run_items(&cfg, &store, items, None).await;
        let stored: Vec<String> = sqlx::query_scalar("SELECT report_status FROM hl7TextInfo")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        let dead = common::count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await;
        if reject {
            assert!(stored.is_empty(), "a rejected file writes no row");
            assert_eq!(dead, 1);
        } else {
            assert_eq!(
                stored,
                vec!["corr".to_string()],
                "cut to the schema's 4 characters"
            );
            assert_eq!(dead, 0);
        }
    }
}
