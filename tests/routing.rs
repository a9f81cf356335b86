//! Provider inbox routing with `incomingLabRules` (IMPORT-SPEC §2.8), on the embedded SQLite
//! store and on OSCAR's MariaDB schema: which rule gives a provider's status, which rules
//! forward, and that forwards are followed transitively, each provider once.
//!
//! OSCAR reads a provider's rules with two queries (the status of the first rule with
//! `archive = '0'`; the forwards of every rule with `archive IS NULL OR archive <> '1'` to a
//! provider that exists); oscarflow reads them in one. These cases pin the two readings to
//! each other, NULLs included.

mod common;

use oscarflow::hl7::lab::LabType;
use oscarflow::oscar::routing::{routes, Route};
use oscarflow::store::Store;
use sqlx::AnyConnection;

/// An `incomingLabRules` row: (provider_no, status, frwdProvider_no, archive).
type Rule = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// Rules of the synthetic clinic's providers (`fixtures/sql/bc_clinic.sql`: 100001–100006,
/// MSP numbers 91001–91005).
const RULES: &[Rule] = &[
    // 100001 auto-files; its archived forward to 100004 counts for nothing.
    ("100001", Some("F"), None, Some("0")),
    ("100001", Some("N"), Some("100004"), Some("1")),
    // 100002: a rule with a NULL archive gives no status; the first rule with archive '0'
    // has a NULL status, so the status is N and the later 'F' is not used. Both of those
    // rules forward.
    ("100002", Some("F"), None, None),
    ("100002", None, Some("100003"), Some("0")),
    ("100002", Some("F"), Some("100005"), Some("0")),
    // 100003 auto-files; its forward to a provider that does not exist is dropped.
    ("100003", Some("F"), Some("ZZNONE"), Some("0")),
    // 100005 forwards (NULL archive) back to 100001, who is routed once.
    ("100005", None, Some("100001"), None),
    // 100006: a blank status is N.
    ("100006", Some(" "), None, Some("0")),
];

async fn routed(conn: &mut AnyConnection, nums: &[&str], mrp: Option<&str>) -> Vec<Route> {
    let nums: Vec<String> = nums.iter().map(|n| n.to_string()).collect();
    routes(conn, LabType::Pathl7, &nums, mrp)
        .await
        .expect("routing queries")
}

fn route(provider: &str, status: &str) -> Route {
    Route {
        provider_no: provider.into(),
        status: status.into(),
    }
}

async fn check_rules(store: &Store) {
    sqlx::query("DELETE FROM incomingLabRules")
        .execute(&store.pool)
        .await
        .expect("clear the clinic's rules");
    for (provider, status, forward, archive) in RULES {
        sqlx::query("INSERT INTO incomingLabRules (provider_no, status, frwdProvider_no, archive) VALUES (?, ?, ?, ?)")
            .bind(*provider)
            .bind(*status)
            .bind(*forward)
            .bind(*archive)
            .execute(&store.pool)
            .await
            .expect("insert a rule");
    }
    let mut conn = store.pool.acquire().await.expect("a connection");
    let conn: &mut AnyConnection = &mut conn;
    assert_eq!(
        routed(conn, &["91002"], None).await,
        vec![
            route("100002", "N"),
            route("100003", "F"),
            route("100005", "N"),
            route("100001", "F"),
        ],
        "status from the first rule with archive '0'; forwards from rules not archived, \
         to providers that exist, followed transitively"
    );
    assert_eq!(
        routed(conn, &["91001"], None).await,
        vec![route("100001", "F")],
        "an archived rule neither forwards nor gives the status"
    );
    assert_eq!(
        routed(conn, &["91003", "91001"], None).await,
        vec![route("100003", "F"), route("100001", "F")],
        "each practitioner's provider, in the lab's order"
    );
    assert_eq!(
        routed(conn, &["99999"], Some("100006")).await,
        vec![route("100006", "N")],
        "no provider found: the MRP; a blank status is N"
    );
    assert_eq!(
        routed(conn, &["99999"], None).await,
        vec![route("0", "N")],
        "no provider and no MRP: the unclaimed inbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_rules_give_status_and_forwards_as_oscar_reads_them_on_sqlite() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = common::seeded_store(tmp.path()).await;
    check_rules(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_rules_give_status_and_forwards_as_oscar_reads_them_on_oscars_mariadb_schema() {
    common::mariadb::with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open the test database");
        check_rules(&store).await;
        store.pool.close().await;
    })
    .await;
}
